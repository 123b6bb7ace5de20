/*
 * ferry-bench: end-to-end load generator on the public client library
 * (include/ferry/client.h), for producers and pull consumers against real
 * brokers. bench/e2e_bench.sh drives it and writes docs/BENCHMARKS.md;
 * other scripts call it with this exact command line:
 *
 *   ferry-bench produce -n NAMESRV -t TOPIC [--size BYTES=128] [--batch N=1]
 *       [--inflight N=1024] [--threads N=1] [--duration-s S=10] [--warmup-s S=1]
 *       [--rate MSGS_PER_S=0] [--tick-us US=0] [--queue-id Q] [--timeout-ms MS=3000]
 *   ferry-bench consume -n NAMESRV -t TOPIC -g GROUP [--from first|last] [--count N]
 *       [--duration-s S=10] [--threads N=1] [--broker-id ID]
 *   ferry-bench deliver -n NAMESRV -t TOPIC -g GROUP [--rate MSGS_PER_S=100] [--size BYTES=128]
 *       [--duration-s S=10] [--warmup-s S=1] [--queue-id Q] [--suspend-ms MS=15000]
 *
 * Why it is shaped this way:
 *  - Each thread has its own client (its own client thread and broker
 *    connection), producer or consumer, histogram and counters, so threads
 *    share nothing but a few atomic totals for the progress line.
 *  - Produce, closed loop (--rate 0): a sender thread keeps --inflight
 *    messages in flight (as sends of --batch messages, asynchronous, so no
 *    thread waits for a round trip); latency is from the actual send to the
 *    SEND_OK callback.
 *  - Produce, open loop (--rate R): message k of a thread is due at
 *    start + k / (R / threads); the sender sends whatever is due and sleeps
 *    until the next one is. Latency is measured from the INTENDED send time,
 *    so a stall that delays sends is counted in full for every message it
 *    delayed (no coordinated omission). --inflight still bounds the window;
 *    when it is full the sender falls behind schedule and the lateness shows
 *    up in the latencies. --tick-us T makes the sender wake at most every
 *    T us and send what is due by then: each wake-up costs two context
 *    switches (sender, then the client thread it hands the sends to), which
 *    on the 2-vCPU benchmark VM took a third of the client's core at 185k
 *    msgs/s and pushed it into queueing. The wait is counted: latency still
 *    runs from the intended time.
 *  - The sender sleeps while the window is full and is woken only once an
 *    eighth of it is free again, not per completion: one wake-up per many
 *    messages instead of a thread ping-pong per message.
 *  - Only completions inside the measurement window (after the warm-up,
 *    before the end) count towards msgs, msgs/s and the latency percentiles;
 *    sends still in flight at the end are waited for (up to their timeout)
 *    and counted as errors if they fail.
 *  - Deliver: how soon a consumer waiting in a long poll gets a new message.
 *    One consumer pulls one queue with the broker holding each empty pull
 *    (--suspend-ms, RocketMQ's 15 s by default); the main thread sends one
 *    message every 1 / --rate s to that queue, synchronously, noting when
 *    each send started; the body carries its sequence number. Latency runs
 *    from the start of the send to the consumer's pull returning it: the
 *    producer's request, the store, the broker waking the held pull, and
 *    its response. At a low rate every message finds the consumer waiting.
 *    A message sent in the window and never received counts as an error.
 *
 * Output: a progress line per second on stderr; on stdout, in an open-loop
 * produce run, a "SENDER" line (how late the sender issued the messages
 * measured, from their intended time: late_p50_us, late_p99_us,
 * late_p999_us; the rest of each latency is the send's own round trip), a
 * "CPU" line (this process's CPU time) and, last, exactly one line
 *   RESULT mode=produce msgs=N errors=N secs=F msgs_per_s=F mb_per_s=F p50_us=N p99_us=N
 *          p999_us=N max_us=N
 * (consume: latencies are 0). Exit status 0 when the run worked (errors are
 * reported, not fatal), 1 when it could not run, 2 for usage errors.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "common/hist.h"
#include "common/heap.h"
#include "ferry/client.h"

#define EXIT_USAGE 2
#define THREADS_MAX 64
#define INFLIGHT_MAX 1000000
#define BATCH_MAX 1024
#define SIZE_MAX_BYTES (4u << 20)
#define ERR_KINDS_MAX 16     /* distinct error codes counted by name */
#define QUEUES_MAX 4096      /* queues one consume run reads */
#define PULL_BATCH_DEFAULT 32

/* ---------------------------------------------------------------- options */

static struct {
  const char *mode, *namesrv, *topic, *group;
  uint32_t size, batch, inflight, threads, timeout_ms, tick_us;
  double duration_s, warmup_s, rate;
  bool queue_fixed;
  uint32_t queue_id;
  /* consume */
  bool from_first;
  uint64_t count;
  bool pin_broker;
  uint64_t broker_id;
  uint32_t pull_batch;
  /* deliver */
  uint32_t suspend_ms;
} opt;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_until_ns(uint64_t t) {
  struct timespec ts = {.tv_sec = (time_t)(t / 1000000000u), .tv_nsec = (long)(t % 1000000000u)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
    ;
}

static void cond_init_monotonic(pthread_cond_t *cv) {
  pthread_condattr_t a;
  pthread_condattr_init(&a);
  pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
  pthread_cond_init(cv, &a);
  pthread_condattr_destroy(&a);
}

/* Run phases, shared by all threads. */
static uint64_t t_start_ns, t_measure_ns, t_end_ns;
static atomic_uint_fast64_t total_msgs;   /* completed OK in the window (progress) */
static atomic_uint_fast64_t total_errors;
static atomic_bool stop_all;              /* --count reached (every sender done) */
static atomic_uint senders_done;

/* Errors by kind: a status (stored, not SEND_OK) or an error code. */
struct err_count {
  int code;          /* < 0: error code; >= 0: fy_send_status */
  uint64_t n;
};

static void err_add(struct err_count *tab, size_t *ntab, int code, uint64_t n) {
  for (size_t i = 0; i < *ntab; i++)
    if (tab[i].code == code) {
      tab[i].n += n;
      return;
    }
  if (*ntab < ERR_KINDS_MAX)
    tab[(*ntab)++] = (struct err_count){code, n};
  else
    tab[ERR_KINDS_MAX - 1].n += n; /* lumped with the last kind; the total stays exact */
}

static const char *status_name(int s) {
  switch (s) {
  case FY_SEND_OK: return "SEND_OK";
  case FY_SEND_FLUSH_DISK_TIMEOUT: return "FLUSH_DISK_TIMEOUT";
  case FY_SEND_FLUSH_SLAVE_TIMEOUT: return "FLUSH_SLAVE_TIMEOUT";
  case FY_SEND_SLAVE_NOT_AVAILABLE: return "SLAVE_NOT_AVAILABLE";
  }
  return "?";
}

/* ----------------------------------------------------------------- produce */

struct pslot {
  uint64_t t0_ns; /* intended (open loop) or actual (closed loop) send time */
  uint64_t issued_ns; /* open loop: when the sender issued it */
  struct pthr *t;
};

struct pthr {
  uint32_t idx;
  pthread_t thread;
  fy_client *cl;
  fy_producer *p;
  /* window, in sends (a send is --batch messages) (mu) */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  uint32_t inflight, cap, wake_at;
  bool waiting;
  struct pslot *slots;   /* cap entries; a free list through free_idx */
  uint32_t *free_idx;
  uint32_t nfree;
  /* results: written on the client thread only, read after the run */
  struct fy_hist hist;
  struct fy_hist late; /* open loop: intended send time to issue, per message */
  uint64_t ok_msgs;
  uint64_t err_msgs;
  struct err_count errs[ERR_KINDS_MAX];
  size_t nerrs;
  char first_error[512];
  int fatal;
};

static struct pthr *pthreads;
static char *body;
static fy_message *batch_msgs; /* opt.batch copies of one message (read-only) */

static size_t fixed_queue(const char *topic, size_t nqueues, void *arg) {
  (void)topic;
  (void)arg;
  return opt.queue_id % nqueues;
}

/* Client thread: one send (of opt.batch messages) is done. The counters
 * are under t->mu because a send that fails to start is counted by the
 * sender thread. */
static void send_done(struct pslot *s, int err, const fy_send_result *res, size_t n) {
  struct pthr *t = s->t;
  uint64_t now = now_ns();
  bool in_window = now >= t_measure_ns && now <= t_end_ns;
  uint64_t ok = 0, bad = 0;
  pthread_mutex_lock(&t->mu);
  if (err) {
    bad = n;
    err_add(t->errs, &t->nerrs, err, n);
    if (!t->first_error[0])
      snprintf(t->first_error, sizeof t->first_error, "%s: %s", fy_errname(err),
               res && res->error[0] ? res->error : fy_client_strerror(err));
  } else {
    for (size_t i = 0; i < n; i++) {
      if (res[i].status == FY_SEND_OK) {
        ok++;
        continue;
      }
      bad++;
      err_add(t->errs, &t->nerrs, (int)res[i].status, 1);
    }
  }
  t->err_msgs += bad;
  if (in_window && ok) {
    uint64_t lat_us = now > s->t0_ns ? (now - s->t0_ns) / 1000u : 0;
    uint64_t late_us = s->issued_ns > s->t0_ns ? (s->issued_ns - s->t0_ns) / 1000u : 0;
    for (uint64_t i = 0; i < ok; i++) {
      fy_hist_record(&t->hist, lat_us);
      if (opt.rate > 0)
        fy_hist_record(&t->late, late_us);
    }
    t->ok_msgs += ok;
  }
  t->free_idx[t->nfree++] = (uint32_t)(s - t->slots);
  t->inflight--;
  bool wake = t->waiting && t->inflight <= t->wake_at;
  pthread_mutex_unlock(&t->mu);
  if (bad)
    atomic_fetch_add_explicit(&total_errors, bad, memory_order_relaxed);
  if (in_window && ok)
    atomic_fetch_add_explicit(&total_msgs, ok, memory_order_relaxed);
  if (wake)
    pthread_cond_signal(&t->cv);
}

static void on_sent(int err, const fy_send_result *res, void *arg) {
  send_done(arg, err, res, 1);
}

static void on_batch_sent(int err, const fy_send_result *res, size_t n, void *arg) {
  send_done(arg, err, res, n);
}

/* Waits for a free slot until deadline_ns; NULL at the deadline. */
static struct pslot *slot_take(struct pthr *t, uint64_t deadline_ns) {
  pthread_mutex_lock(&t->mu);
  while (t->inflight >= t->cap) {
    if (now_ns() >= deadline_ns) {
      pthread_mutex_unlock(&t->mu);
      return NULL;
    }
    struct timespec ts = {.tv_sec = (time_t)(deadline_ns / 1000000000u),
                          .tv_nsec = (long)(deadline_ns % 1000000000u)};
    t->waiting = true;
    pthread_cond_timedwait(&t->cv, &t->mu, &ts);
    t->waiting = false;
  }
  t->inflight++;
  struct pslot *s = &t->slots[t->free_idx[--t->nfree]];
  pthread_mutex_unlock(&t->mu);
  return s;
}

static void slot_give_back(struct pthr *t, struct pslot *s) {
  pthread_mutex_lock(&t->mu);
  t->free_idx[t->nfree++] = (uint32_t)(s - t->slots);
  t->inflight--;
  pthread_mutex_unlock(&t->mu);
}

/* Issues one send; false if it could not be issued (counted as an error). */
static bool issue(struct pthr *t, struct pslot *s, const fy_send_options *so) {
  int err = opt.batch == 1
                ? fy_producer_send_async(t->p, &batch_msgs[0], so, on_sent, s)
                : fy_producer_send_batch_async(t->p, batch_msgs, opt.batch, so, on_batch_sent, s);
  if (!err)
    return true;
  slot_give_back(t, s);
  pthread_mutex_lock(&t->mu);
  t->err_msgs += opt.batch;
  err_add(t->errs, &t->nerrs, err, opt.batch);
  if (!t->first_error[0])
    snprintf(t->first_error, sizeof t->first_error, "%s: %s", fy_errname(err),
             fy_client_last_error());
  pthread_mutex_unlock(&t->mu);
  atomic_fetch_add_explicit(&total_errors, opt.batch, memory_order_relaxed);
  return false;
}

static void *produce_main(void *arg) {
  struct pthr *t = arg;
  fy_send_options so = {.timeout_ms = opt.timeout_ms};
  if (opt.queue_fixed)
    so.selector = fixed_queue;
  double per_thread_rate = opt.rate / opt.threads;
  /* interval between sends (of opt.batch messages) in ns */
  double interval_ns = opt.rate > 0 ? 1e9 * opt.batch / per_thread_rate : 0;
  uint64_t k = 0;
  /* --count: this thread's share, in sends */
  uint64_t sends_max = UINT64_MAX;
  if (opt.count) {
    uint64_t mine = opt.count / opt.threads + (t->idx < opt.count % opt.threads);
    sends_max = (mine + opt.batch - 1) / opt.batch;
  }
  for (;;) {
    uint64_t now = now_ns();
    if (now >= t_end_ns || k >= sends_max)
      break;
    if (interval_ns > 0) {
      /* Open loop: everything due by now, then sleep until the next. */
      uint64_t due = t_start_ns + (uint64_t)((double)k * interval_ns);
      if (due > now) {
        uint64_t wake = now + (uint64_t)opt.tick_us * 1000u; /* --tick-us: not before */
        if (wake < due)
          wake = due;
        sleep_until_ns(wake < t_end_ns ? wake : t_end_ns);
        continue;
      }
      struct pslot *s = slot_take(t, t_end_ns);
      if (!s)
        break;
      s->t0_ns = due;
      s->issued_ns = now_ns();
      k++;
      issue(t, s, &so);
    } else {
      struct pslot *s = slot_take(t, t_end_ns);
      if (!s)
        break;
      s->t0_ns = now_ns();
      k++;
      issue(t, s, &so);
    }
  }
  if (atomic_fetch_add(&senders_done, 1) + 1 == opt.threads && k >= sends_max)
    atomic_store(&stop_all, true);
  return NULL;
}

/* Waits until every send of t has called back (each has its deadline). */
static void produce_drain(struct pthr *t) {
  uint64_t deadline = now_ns() + (uint64_t)(opt.timeout_ms + 5000) * 1000000u;
  pthread_mutex_lock(&t->mu);
  t->wake_at = 0;
  while (t->inflight > 0 && now_ns() < deadline) {
    struct timespec ts = {.tv_sec = (time_t)(deadline / 1000000000u),
                          .tv_nsec = (long)(deadline % 1000000000u)};
    t->waiting = true;
    pthread_cond_timedwait(&t->cv, &t->mu, &ts);
    t->waiting = false;
  }
  if (t->inflight > 0)
    fprintf(stderr, "ferry-bench: thread %u: %u sends never called back\n", t->idx, t->inflight);
  pthread_mutex_unlock(&t->mu);
}

static int produce_setup(struct pthr *t) {
  fy_client_config cc = {.namesrv_addr = opt.namesrv, .timeout_ms = opt.timeout_ms,
                         .queue_max = 65536};
  int err = fy_client_new(&cc, &t->cl);
  if (err) {
    fprintf(stderr, "ferry-bench: client: %s: %s\n", fy_client_strerror(err),
            fy_client_last_error());
    return err;
  }
  /* The library's own window never binds: ours is the one that counts. */
  fy_producer_config pc = {.group = "ferry-bench", .send_timeout_ms = opt.timeout_ms,
                           .max_inflight = t->cap + 1};
  err = fy_producer_new(t->cl, &pc, &t->p);
  if (err) {
    fprintf(stderr, "ferry-bench: producer: %s: %s\n", fy_client_strerror(err),
            fy_client_last_error());
    return err;
  }
  /* Fetch the route before the clock starts (the first send would). */
  fy_queue_list *ql = NULL;
  err = fy_client_topic_queues(t->cl, opt.topic, true, 0, &ql);
  if (err) {
    fprintf(stderr, "ferry-bench: topic %s: %s: %s\n", opt.topic, fy_client_strerror(err),
            fy_client_last_error());
    return err;
  }
  fy_result_free(ql);
  return 0;
}

/* ----------------------------------------------------------------- consume */

struct cthr {
  uint32_t idx;
  pthread_t thread;
  fy_client *cl;
  fy_pull_consumer *c;
  fy_queue *queues;
  uint64_t *offsets;
  size_t nq;
  uint64_t msgs, bytes, errors;
  uint64_t last_msg_ns;
  char first_error[512];
};

static struct cthr *cthreads;

static void *consume_main(void *arg) {
  struct cthr *t = arg;
  fy_pull_options po = {.max_msgs = opt.pull_batch, .pin_broker_id = opt.pin_broker,
                        .broker_id = opt.broker_id};
  size_t qi = 0;
  uint32_t empty_in_row = 0;
  while (!atomic_load(&stop_all) && now_ns() < t_end_ns && t->nq > 0) {
    /* A round of the queues found nothing: long-poll briefly. */
    po.suspend_timeout_ms = empty_in_row >= t->nq ? 100 : 0;
    po.timeout_ms = po.suspend_timeout_ms ? 100 + opt.timeout_ms : opt.timeout_ms;
    fy_pull_result *r = NULL;
    int err = fy_pull_consumer_pull(t->c, &t->queues[qi], t->offsets[qi], &po, &r);
    if (err) {
      t->errors++;
      atomic_fetch_add_explicit(&total_errors, 1, memory_order_relaxed);
      if (!t->first_error[0])
        snprintf(t->first_error, sizeof t->first_error, "%s: %s", fy_errname(err),
                 fy_client_last_error());
      qi = (qi + 1) % t->nq;
      continue;
    }
    if (r->status != FY_PULL_NO_NEW_MSG)
      t->offsets[qi] = r->next_offset;
    if (r->nmsgs) {
      uint64_t now = now_ns();
      t->msgs += r->nmsgs;
      for (size_t i = 0; i < r->nmsgs; i++)
        t->bytes += r->msgs[i].body_len;
      t->last_msg_ns = now;
      empty_in_row = 0;
      uint64_t tot =
          atomic_fetch_add_explicit(&total_msgs, r->nmsgs, memory_order_relaxed) + r->nmsgs;
      if (opt.count && tot >= opt.count)
        atomic_store(&stop_all, true);
      /* Stay on a queue while it has more: a full answer says so. */
      if (r->nmsgs < opt.pull_batch)
        qi = (qi + 1) % t->nq;
    } else {
      if (empty_in_row < UINT32_MAX)
        empty_in_row++;
      qi = (qi + 1) % t->nq;
    }
    fy_result_free(r);
  }
  return NULL;
}

static int consume_setup(struct cthr *t, const fy_queue_list *all) {
  fy_client_config cc = {.namesrv_addr = opt.namesrv, .timeout_ms = opt.timeout_ms};
  int err = fy_client_new(&cc, &t->cl);
  if (!err)
    err = fy_pull_consumer_new(t->cl, opt.group, &t->c);
  if (err) {
    fprintf(stderr, "ferry-bench: consumer: %s: %s\n", fy_client_strerror(err),
            fy_client_last_error());
    return err;
  }
  /* Queues i, i + threads, i + 2 threads, ... */
  size_t n = 0;
  for (size_t i = t->idx; i < all->n; i += opt.threads)
    n++;
  t->queues = calloc(n ? n : 1, sizeof *t->queues);
  t->offsets = calloc(n ? n : 1, sizeof *t->offsets);
  if (!t->queues || !t->offsets)
    return -ENOMEM;
  for (size_t i = t->idx; i < all->n; i += opt.threads) {
    fy_queue *q = &t->queues[t->nq];
    *q = all->queues[i];
    uint64_t off = 0;
    err = opt.from_first ? fy_client_min_offset(t->cl, q, 0, &off)
                         : fy_client_max_offset(t->cl, q, 0, &off);
    if (err) {
      fprintf(stderr, "ferry-bench: offsets of %s/%u: %s: %s\n", q->broker_name, q->queue_id,
              fy_client_strerror(err), fy_client_last_error());
      return err;
    }
    t->offsets[t->nq++] = off;
  }
  return 0;
}

/* ------------------------------------------------------------------- main */

static void usage(FILE *out) {
  fprintf(out,
          "usage: ferry-bench produce -n NAMESRV -t TOPIC [--size BYTES=128] [--batch N=1]\n"
          "           [--inflight N=1024] [--threads N=1] [--duration-s S=10] [--warmup-s S=1]\n"
          "           [--rate MSGS_PER_S=0] [--tick-us US=0] [--queue-id Q] [--timeout-ms MS=3000]\n"
          "           [--count N]\n"
          "       ferry-bench consume -n NAMESRV -t TOPIC -g GROUP [--from first|last]\n"
          "           [--count N] [--duration-s S=10] [--threads N=1] [--broker-id ID]\n"
          "           [--pull-batch N=%d] [--timeout-ms MS=3000]\n"
          "       ferry-bench deliver -n NAMESRV -t TOPIC -g GROUP [--rate MSGS_PER_S=100]\n"
          "           [--size BYTES=128] [--duration-s S=10] [--warmup-s S=1] [--queue-id Q]\n"
          "           [--suspend-ms MS=15000] [--timeout-ms MS=3000]\n"
          "produce: --inflight messages in flight per thread (asynchronous sends of --batch\n"
          "  messages); --rate 0 is a closed loop, otherwise sends are scheduled at that total\n"
          "  rate and latency runs from each message's intended send time; --tick-us T wakes\n"
          "  the sender at most every T us to send what is due (the wait counts). --count N stops\n"
          "  after N messages (rounded up to whole batches), e.g. to fill a backlog.\n"
          "consume: pulls the topic's queues (split across threads) from the first or last\n"
          "  offset until --count messages or --duration-s; --broker-id pulls from that broker\n"
          "  (1: the slave) instead of as routed.\n"
          "deliver: one message every 1/--rate s to one queue, synchronously, while one\n"
          "  consumer waits for them in long polls (the broker holds each empty pull up to\n"
          "  --suspend-ms); latency runs from a send's start to the consumer receiving it.\n"
          "An option the mode does not read is a usage error (exit 2).\n"
          "The last line on stdout is: RESULT mode=M msgs=N errors=N secs=F msgs_per_s=F\n"
          "  mb_per_s=F p50_us=N p99_us=N p999_us=N max_us=N\n",
          PULL_BATCH_DEFAULT);
}

/* Which modes read an option: one given to a mode that would ignore it is a
 * usage error, so a command line never seems to ask for what it does not get. */
enum { M_PRODUCE = 1, M_CONSUME = 2, M_DELIVER = 4 };
static const struct {
  int opt;
  const char *name;
  int modes;
} option_modes[] = {
    {'g', "-g", M_CONSUME | M_DELIVER},
    {'S', "--size", M_PRODUCE | M_DELIVER},
    {'B', "--batch", M_PRODUCE},
    {'I', "--inflight", M_PRODUCE},
    {'T', "--threads", M_PRODUCE | M_CONSUME},
    {'W', "--warmup-s", M_PRODUCE | M_DELIVER},
    {'R', "--rate", M_PRODUCE | M_DELIVER},
    {'K', "--tick-us", M_PRODUCE},
    {'Q', "--queue-id", M_PRODUCE | M_DELIVER},
    {'F', "--from", M_CONSUME},
    {'C', "--count", M_PRODUCE | M_CONSUME},
    {'b', "--broker-id", M_CONSUME},
    {'P', "--pull-batch", M_CONSUME},
    {'U', "--suspend-ms", M_DELIVER},
};

/* 0, or the name of an option in given[] that mode does not read. */
static const char *option_unused(const bool *given, int mode) {
  for (size_t i = 0; i < sizeof option_modes / sizeof option_modes[0]; i++)
    if (given[option_modes[i].opt] && !(option_modes[i].modes & mode))
      return option_modes[i].name;
  return NULL;
}

static int num_arg(const char *name, const char *s, double min, double max, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || v < min || v > max) {
    fprintf(stderr, "ferry-bench: %s must be a number from %g to %g, got '%s'\n", name, min, max,
            s);
    return -1;
  }
  *out = v;
  return 0;
}

static int u32_arg(const char *name, const char *s, uint32_t min, uint32_t max, uint32_t *out) {
  double v;
  if (num_arg(name, s, min, max, &v))
    return -1;
  if (v != (double)(uint32_t)v) {
    fprintf(stderr, "ferry-bench: %s must be a whole number, got '%s'\n", name, s);
    return -1;
  }
  *out = (uint32_t)v;
  return 0;
}

static double cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
         ru.ru_stime.tv_usec / 1e6;
}

/* Progress once a second on stderr until the end (or stop_all); samples
 * this process's CPU time at the end of the warm-up and at the end. */
static double cpu_at_measure, cpu_at_end;

static void progress_until_end(void) {
  uint64_t last = 0, tick = t_start_ns + 1000000000u;
  bool sampled = false;
  cpu_at_measure = cpu_seconds();
  while (!atomic_load(&stop_all)) {
    uint64_t now = now_ns();
    if (!sampled && now >= t_measure_ns) {
      cpu_at_measure = cpu_seconds();
      sampled = true;
    }
    if (now >= t_end_ns)
      break;
    uint64_t wake = tick;
    if (!sampled && t_measure_ns < wake)
      wake = t_measure_ns;
    if (t_end_ns < wake)
      wake = t_end_ns;
    sleep_until_ns(wake);
    if (now_ns() < tick)
      continue;
    tick += 1000000000u;
    uint64_t m = atomic_load(&total_msgs), e = atomic_load(&total_errors);
    double el = (double)(now_ns() - t_start_ns) / 1e9;
    fprintf(stderr, "ferry-bench: %s %.0fs: %" PRIu64 " msgs/s, %" PRIu64 " total, %" PRIu64
            " errors%s\n", opt.mode, el, m - last, m, e,
            now_ns() < t_measure_ns ? " (warm-up)" : "");
    last = m;
  }
  cpu_at_end = cpu_seconds();
}

static void print_result(uint64_t msgs, uint64_t errors, double secs, uint64_t bytes,
                         const struct fy_hist *h, double cpu_s) {
  double rate = secs > 0 ? (double)msgs / secs : 0;
  printf("CPU mode=%s cpu_s=%.3f cpu_s_per_1m=%.3f\n", opt.mode, cpu_s,
         msgs ? cpu_s * 1e6 / (double)msgs : 0);
  printf("RESULT mode=%s msgs=%" PRIu64 " errors=%" PRIu64 " secs=%.3f msgs_per_s=%.1f "
         "mb_per_s=%.3f p50_us=%" PRIu64 " p99_us=%" PRIu64 " p999_us=%" PRIu64 " max_us=%"
         PRIu64 "\n",
         opt.mode, msgs, errors, secs, rate, secs > 0 ? (double)bytes / 1e6 / secs : 0,
         h ? fy_hist_percentile(h, 50) : 0, h ? fy_hist_percentile(h, 99) : 0,
         h ? fy_hist_percentile(h, 99.9) : 0, h && h->count ? h->max : 0);
  fflush(stdout);
}

static int run_produce(void) {
  body = malloc(opt.size ? opt.size : 1);
  batch_msgs = calloc(opt.batch, sizeof *batch_msgs);
  pthreads = calloc(opt.threads, sizeof *pthreads);
  if (!body || !batch_msgs || !pthreads)
    return 1;
  for (uint32_t i = 0; i < opt.size; i++)
    body[i] = (char)('a' + i % 26);
  for (uint32_t i = 0; i < opt.batch; i++)
    batch_msgs[i] = (fy_message){.topic = opt.topic, .body = body, .body_len = opt.size};
  uint32_t sends = opt.inflight / opt.batch ? opt.inflight / opt.batch : 1;
  int rc = 0;
  for (uint32_t i = 0; i < opt.threads; i++) {
    struct pthr *t = &pthreads[i];
    t->idx = i;
    t->cap = sends;
    t->wake_at = sends - (sends + 7) / 8;
    pthread_mutex_init(&t->mu, NULL);
    cond_init_monotonic(&t->cv);
    fy_hist_init(&t->hist);
    fy_hist_init(&t->late);
    t->slots = calloc(sends, sizeof *t->slots);
    t->free_idx = calloc(sends, sizeof *t->free_idx);
    if (!t->slots || !t->free_idx)
      return 1;
    for (uint32_t j = 0; j < sends; j++) {
      t->slots[j].t = t;
      t->free_idx[j] = j;
    }
    t->nfree = sends;
    if (produce_setup(t)) {
      rc = 1;
      break;
    }
  }
  if (rc == 0) {
    t_start_ns = now_ns();
    t_measure_ns = t_start_ns + (uint64_t)(opt.warmup_s * 1e9);
    t_end_ns = t_measure_ns + (uint64_t)(opt.duration_s * 1e9);
    for (uint32_t i = 0; i < opt.threads; i++)
      pthread_create(&pthreads[i].thread, NULL, produce_main, &pthreads[i]);
    progress_until_end();
    for (uint32_t i = 0; i < opt.threads; i++)
      pthread_join(pthreads[i].thread, NULL);
    for (uint32_t i = 0; i < opt.threads; i++)
      produce_drain(&pthreads[i]);
    /* Every callback has run (or never will): the counters are final. */
    struct fy_hist *h = calloc(1, sizeof *h);
    struct fy_hist *late = calloc(1, sizeof *late);
    if (!h || !late)
      return 1;
    fy_hist_init(h);
    fy_hist_init(late);
    uint64_t msgs = 0, errors = 0;
    struct err_count errs[ERR_KINDS_MAX];
    size_t nerrs = 0;
    for (uint32_t i = 0; i < opt.threads; i++) {
      struct pthr *t = &pthreads[i];
      pthread_mutex_lock(&t->mu); /* pairs with the callbacks' last unlock */
      fy_hist_merge(h, &t->hist);
      fy_hist_merge(late, &t->late);
      msgs += t->ok_msgs;
      errors += t->err_msgs;
      for (size_t j = 0; j < t->nerrs; j++)
        err_add(errs, &nerrs, t->errs[j].code, t->errs[j].n);
      if (t->first_error[0])
        fprintf(stderr, "ferry-bench: thread %u: first error: %s\n", i, t->first_error);
      pthread_mutex_unlock(&t->mu);
    }
    for (size_t j = 0; j < nerrs; j++)
      fprintf(stderr, "ferry-bench: errors: %s x %" PRIu64 "\n",
              errs[j].code < 0 ? fy_errname(errs[j].code) : status_name(errs[j].code),
              errs[j].n);
    /* The whole window, or until the last sender stopped at --count. */
    double secs = opt.duration_s;
    if (atomic_load(&stop_all)) {
      uint64_t end = now_ns();
      secs = end > t_measure_ns ? (double)(end - t_measure_ns) / 1e9 : 0;
      if (secs > opt.duration_s)
        secs = opt.duration_s;
    }
    if (opt.rate > 0)
      printf("SENDER mode=produce late_p50_us=%" PRIu64 " late_p99_us=%" PRIu64
             " late_p999_us=%" PRIu64 "\n",
             fy_hist_percentile(late, 50), fy_hist_percentile(late, 99),
             fy_hist_percentile(late, 99.9));
    print_result(msgs, errors, secs, msgs * (uint64_t)opt.size, h, cpu_at_end - cpu_at_measure);
    free(h);
    free(late);
  }
  for (uint32_t i = 0; i < opt.threads; i++) {
    struct pthr *t = &pthreads[i];
    if (t->p)
      fy_producer_close(t->p);
    if (t->cl)
      fy_client_close(t->cl);
    free(t->slots);
    free(t->free_idx);
  }
  free(pthreads);
  free(batch_msgs);
  free(body);
  return rc;
}

static int run_consume(void) {
  cthreads = calloc(opt.threads, sizeof *cthreads);
  if (!cthreads)
    return 1;
  int rc = 0;
  fy_client *cl0 = NULL;
  fy_queue_list *ql = NULL;
  fy_client_config cc = {.namesrv_addr = opt.namesrv, .timeout_ms = opt.timeout_ms};
  int err = fy_client_new(&cc, &cl0);
  if (!err)
    err = fy_client_topic_queues(cl0, opt.topic, false, 0, &ql);
  if (err) {
    fprintf(stderr, "ferry-bench: topic %s: %s: %s\n", opt.topic, fy_client_strerror(err),
            fy_client_last_error());
    rc = 1;
  } else if (ql->n > QUEUES_MAX) {
    fprintf(stderr, "ferry-bench: topic %s has %zu queues; at most %d\n", opt.topic, ql->n,
            QUEUES_MAX);
    rc = 1;
  }
  for (uint32_t i = 0; rc == 0 && i < opt.threads; i++) {
    cthreads[i].idx = i;
    if (consume_setup(&cthreads[i], ql))
      rc = 1;
  }
  if (rc == 0) {
    t_start_ns = t_measure_ns = now_ns();
    t_end_ns = t_start_ns + (uint64_t)(opt.duration_s * 1e9);
    for (uint32_t i = 0; i < opt.threads; i++)
      pthread_create(&cthreads[i].thread, NULL, consume_main, &cthreads[i]);
    progress_until_end();
    for (uint32_t i = 0; i < opt.threads; i++)
      pthread_join(cthreads[i].thread, NULL);
    double cpu_s = cpu_seconds() - cpu_at_measure;
    uint64_t msgs = 0, bytes = 0, errors = 0, last = t_start_ns;
    for (uint32_t i = 0; i < opt.threads; i++) {
      struct cthr *t = &cthreads[i];
      msgs += t->msgs;
      bytes += t->bytes;
      errors += t->errors;
      if (t->last_msg_ns > last)
        last = t->last_msg_ns;
      if (t->first_error[0])
        fprintf(stderr, "ferry-bench: thread %u: first error: %s\n", i, t->first_error);
    }
    /* Until the last message when --count ended the run, else the whole run. */
    uint64_t end = atomic_load(&stop_all) ? last : now_ns();
    if (end > t_end_ns && !atomic_load(&stop_all))
      end = t_end_ns;
    double secs = (double)(end - t_start_ns) / 1e9;
    print_result(msgs, errors, secs, bytes, NULL, cpu_s);
  }
  for (uint32_t i = 0; i < opt.threads; i++) {
    struct cthr *t = &cthreads[i];
    if (t->c)
      fy_pull_consumer_close(t->c);
    if (t->cl)
      fy_client_close(t->cl);
    free(t->queues);
    free(t->offsets);
  }
  fy_result_free(ql);
  if (cl0)
    fy_client_close(cl0);
  free(cthreads);
  return rc;
}

/* ----------------------------------------------------------------- deliver */

#define DELIVER_RATE_DEFAULT 100
#define DELIVER_RATE_MAX 100000
#define DELIVER_SUSPEND_DEFAULT_MS 15000
#define SEQ_BYTES 8 /* the body starts with the message's sequence number */

static struct {
  fy_client *pcl, *ccl;
  fy_producer *p;
  fy_pull_consumer *c;
  fy_queue q;
  uint64_t offset;           /* the consumer's next offset */
  atomic_uint_fast64_t *sent_ns; /* by sequence number: when its send started; 0 not sent */
  uint64_t cap;              /* sequence numbers available */
  atomic_uint_fast64_t nsent;     /* sends that succeeded */
  atomic_bool sending_done;
  struct fy_hist hist;       /* consumer thread only */
  atomic_uint_fast64_t got;  /* ours received (the main thread waits on it) */
  uint64_t got_in_window, pull_errors, foreign;
  char first_error[512];
} dv;

static uint64_t seq_of(const fy_message_view *m) {
  uint64_t seq = UINT64_MAX;
  if (m->body_len >= SEQ_BYTES)
    memcpy(&seq, m->body, SEQ_BYTES);
  return seq;
}

static void *deliver_consume(void *arg) {
  (void)arg;
  fy_pull_options po = {.max_msgs = opt.pull_batch, .suspend_timeout_ms = opt.suspend_ms};
  for (;;) {
    if (atomic_load(&dv.sending_done) && atomic_load(&dv.got) >= atomic_load(&dv.nsent))
      break; /* everything sent has arrived */
    if (atomic_load(&stop_all))
      break; /* the main thread gave up waiting */
    fy_pull_result *r = NULL;
    int err = fy_pull_consumer_pull(dv.c, &dv.q, dv.offset, &po, &r);
    uint64_t now = now_ns();
    if (err) {
      dv.pull_errors++;
      if (!dv.first_error[0])
        snprintf(dv.first_error, sizeof dv.first_error, "pull: %s: %s", fy_errname(err),
                 fy_client_last_error());
      sleep_until_ns(now + 10000000u); /* a broker that answers at once with an error */
      continue;
    }
    if (r->status != FY_PULL_NO_NEW_MSG)
      dv.offset = r->next_offset;
    for (size_t i = 0; i < r->nmsgs; i++) {
      uint64_t seq = seq_of(&r->msgs[i]);
      uint64_t t0 = seq < dv.cap ? atomic_load(&dv.sent_ns[seq]) : 0;
      if (!t0) {
        dv.foreign++; /* not one of ours (another writer of the queue) */
        continue;
      }
      atomic_fetch_add(&dv.got, 1);
      if (t0 >= t_measure_ns && t0 <= t_end_ns) {
        dv.got_in_window++;
        fy_hist_record(&dv.hist, now > t0 ? (now - t0) / 1000u : 0);
        atomic_fetch_add_explicit(&total_msgs, 1, memory_order_relaxed);
      }
    }
    fy_result_free(r);
  }
  return NULL;
}

static int deliver_setup(char *buf) {
  fy_client_config cc = {.namesrv_addr = opt.namesrv, .timeout_ms = opt.timeout_ms};
  int err = fy_client_new(&cc, &dv.pcl);
  if (!err) {
    fy_producer_config pc = {.group = "ferry-bench", .send_timeout_ms = opt.timeout_ms};
    err = fy_producer_new(dv.pcl, &pc, &dv.p);
  }
  if (!err)
    err = fy_client_new(&cc, &dv.ccl);
  if (!err)
    err = fy_pull_consumer_new(dv.ccl, opt.group, &dv.c);
  if (err) {
    fprintf(stderr, "ferry-bench: client: %s: %s\n", fy_client_strerror(err),
            fy_client_last_error());
    return err;
  }
  /* A first message (not measured) says which queue the sends go to and
   * where the consumer starts: right after it. */
  uint64_t none = UINT64_MAX;
  memcpy(buf, &none, SEQ_BYTES);
  fy_message m = {.topic = opt.topic, .body = buf, .body_len = opt.size};
  fy_send_options so = {.timeout_ms = opt.timeout_ms, .selector = fixed_queue};
  fy_send_result res;
  err = fy_producer_send(dv.p, &m, &so, &res);
  if (err) {
    fprintf(stderr, "ferry-bench: first send to %s: %s: %s\n", opt.topic, fy_client_strerror(err),
            res.error);
    return err;
  }
  snprintf(dv.q.topic, sizeof dv.q.topic, "%s", opt.topic);
  snprintf(dv.q.broker_name, sizeof dv.q.broker_name, "%s", res.broker_name);
  dv.q.queue_id = res.queue_id;
  dv.offset = res.queue_offset + 1;
  return 0;
}

static int run_deliver(void) {
  /* One sequence number per send over the whole run, with room to spare. */
  dv.cap = (uint64_t)(opt.rate * (opt.warmup_s + opt.duration_s)) + 16;
  dv.sent_ns = calloc(dv.cap, sizeof *dv.sent_ns);
  char *buf = malloc(opt.size);
  if (!dv.sent_ns || !buf)
    return 1;
  memset(buf, 'd', opt.size);
  fy_hist_init(&dv.hist);
  int rc = deliver_setup(buf) ? 1 : 0;
  pthread_t consumer;
  if (rc == 0) {
    t_start_ns = now_ns();
    t_measure_ns = t_start_ns + (uint64_t)(opt.warmup_s * 1e9);
    t_end_ns = t_measure_ns + (uint64_t)(opt.duration_s * 1e9);
    cpu_at_measure = cpu_seconds();
    pthread_create(&consumer, NULL, deliver_consume, NULL);
    double interval_ns = 1e9 / opt.rate;
    fy_message m = {.topic = opt.topic, .body = buf, .body_len = opt.size};
    fy_send_options so = {.timeout_ms = opt.timeout_ms, .selector = fixed_queue};
    uint64_t send_errors = 0, sent_in_window = 0;
    bool sampled = false;
    for (uint64_t seq = 0; seq < dv.cap; seq++) {
      uint64_t due = t_start_ns + (uint64_t)(seq * interval_ns);
      if (due >= t_end_ns)
        break;
      sleep_until_ns(due);
      uint64_t t0 = now_ns();
      if (!sampled && t0 >= t_measure_ns) {
        cpu_at_measure = cpu_seconds();
        sampled = true;
      }
      memcpy(buf, &seq, SEQ_BYTES);
      atomic_store(&dv.sent_ns[seq], t0);
      fy_send_result res;
      int err = fy_producer_send(dv.p, &m, &so, &res);
      bool in_window = t0 >= t_measure_ns && t0 <= t_end_ns; /* as the consumer counts */
      if (err || res.queue_id != dv.q.queue_id || strcmp(res.broker_name, dv.q.broker_name)) {
        /* Not on the queue the consumer waits on: it will never arrive. */
        send_errors += in_window;
        if (!err)
          fprintf(stderr, "ferry-bench: message %" PRIu64 " went to %s/%u\n", seq,
                  res.broker_name, res.queue_id);
        else if (!dv.first_error[0])
          snprintf(dv.first_error, sizeof dv.first_error, "send: %s: %s", fy_errname(err),
                   res.error);
        atomic_store(&dv.sent_ns[seq], 0);
        atomic_fetch_add_explicit(&total_errors, 1, memory_order_relaxed);
        continue;
      }
      sent_in_window += in_window;
      atomic_fetch_add(&dv.nsent, 1);
    }
    atomic_store(&dv.sending_done, true);
    /* The last messages arrive within a round trip; a lost one never does. */
    uint64_t deadline = now_ns() + (uint64_t)opt.timeout_ms * 1000000u;
    while (atomic_load(&dv.got) < atomic_load(&dv.nsent) && now_ns() < deadline)
      sleep_until_ns(now_ns() + 1000000u);
    atomic_store(&stop_all, true);
    pthread_join(consumer, NULL); /* at most one long poll later */
    cpu_at_end = cpu_seconds();
    if (dv.first_error[0])
      fprintf(stderr, "ferry-bench: first error: %s\n", dv.first_error);
    if (dv.foreign)
      fprintf(stderr, "ferry-bench: %" PRIu64 " messages on the queue were not ours\n",
              dv.foreign);
    uint64_t lost = sent_in_window > dv.got_in_window ? sent_in_window - dv.got_in_window : 0;
    if (lost)
      fprintf(stderr, "ferry-bench: %" PRIu64 " messages sent were never received\n", lost);
    print_result(dv.got_in_window, send_errors + lost + dv.pull_errors, opt.duration_s,
                 dv.got_in_window * opt.size, &dv.hist, cpu_at_end - cpu_at_measure);
  }
  if (dv.c)
    fy_pull_consumer_close(dv.c);
  if (dv.p)
    fy_producer_close(dv.p);
  if (dv.ccl)
    fy_client_close(dv.ccl);
  if (dv.pcl)
    fy_client_close(dv.pcl);
  free(dv.sent_ns);
  free(buf);
  return rc;
}

int main(int argc, char **argv) {
  fy_heap_keep_freed();
  static const struct option longopts[] = {
      {"size", required_argument, NULL, 'S'},       {"batch", required_argument, NULL, 'B'},
      {"inflight", required_argument, NULL, 'I'},   {"threads", required_argument, NULL, 'T'},
      {"duration-s", required_argument, NULL, 'D'}, {"warmup-s", required_argument, NULL, 'W'},
      {"rate", required_argument, NULL, 'R'},       {"queue-id", required_argument, NULL, 'Q'},
      {"timeout-ms", required_argument, NULL, 'O'}, {"from", required_argument, NULL, 'F'},
      {"count", required_argument, NULL, 'C'},      {"broker-id", required_argument, NULL, 'b'},
      {"pull-batch", required_argument, NULL, 'P'}, {"help", no_argument, NULL, 'h'},
      {"tick-us", required_argument, NULL, 'K'},    {"suspend-ms", required_argument, NULL, 'U'},
      {NULL, 0, NULL, 0}};
  if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? EXIT_USAGE : 0;
  }
  opt.mode = argv[1];
  bool produce = !strcmp(opt.mode, "produce");
  bool deliver = !strcmp(opt.mode, "deliver");
  if (!produce && !deliver && strcmp(opt.mode, "consume")) {
    fprintf(stderr, "ferry-bench: unknown mode '%s' (produce, consume or deliver)\n", opt.mode);
    usage(stderr);
    return EXIT_USAGE;
  }
  opt.size = 128;
  opt.batch = 1;
  opt.inflight = 1024;
  opt.threads = 1;
  opt.duration_s = 10;
  opt.warmup_s = 1;
  opt.timeout_ms = 3000;
  opt.from_first = true;
  opt.pull_batch = PULL_BATCH_DEFAULT;
  opt.suspend_ms = DELIVER_SUSPEND_DEFAULT_MS;
  if (deliver)
    opt.rate = DELIVER_RATE_DEFAULT;
  optind = 2;
  opterr = 0;
  int c;
  double v;
  uint32_t u;
  bool given[128] = {false};
  while ((c = getopt_long(argc, argv, "n:t:g:h", longopts, NULL)) != -1) {
    int bad = 0;
    if (c > 0 && c < 128)
      given[c] = true;
    switch (c) {
    case 'n': opt.namesrv = optarg; break;
    case 't': opt.topic = optarg; break;
    case 'g': opt.group = optarg; break;
    case 'S': bad = u32_arg("--size", optarg, 0, SIZE_MAX_BYTES, &opt.size); break;
    case 'B': bad = u32_arg("--batch", optarg, 1, BATCH_MAX, &opt.batch); break;
    case 'I': bad = u32_arg("--inflight", optarg, 1, INFLIGHT_MAX, &opt.inflight); break;
    case 'T': bad = u32_arg("--threads", optarg, 1, THREADS_MAX, &opt.threads); break;
    case 'D': bad = num_arg("--duration-s", optarg, 0.001, 86400, &opt.duration_s); break;
    case 'W': bad = num_arg("--warmup-s", optarg, 0, 3600, &opt.warmup_s); break;
    case 'R': bad = num_arg("--rate", optarg, 0, 1e9, &opt.rate); break;
    case 'K': bad = u32_arg("--tick-us", optarg, 0, 1000000, &opt.tick_us); break;
    case 'Q':
      bad = u32_arg("--queue-id", optarg, 0, UINT32_MAX, &opt.queue_id);
      opt.queue_fixed = true;
      break;
    case 'O': bad = u32_arg("--timeout-ms", optarg, 1, 3600000, &opt.timeout_ms); break;
    case 'F':
      if (!strcmp(optarg, "first") || !strcmp(optarg, "last")) {
        opt.from_first = !strcmp(optarg, "first");
      } else {
        fprintf(stderr, "ferry-bench: --from is first or last, got '%s'\n", optarg);
        bad = 1;
      }
      break;
    case 'C':
      bad = num_arg("--count", optarg, 1, 1e15, &v);
      opt.count = (uint64_t)v;
      break;
    case 'b':
      bad = u32_arg("--broker-id", optarg, 0, UINT32_MAX, &u);
      opt.broker_id = u;
      opt.pin_broker = true;
      break;
    case 'P': bad = u32_arg("--pull-batch", optarg, 1, 4096, &opt.pull_batch); break;
    case 'U': bad = u32_arg("--suspend-ms", optarg, 1, 60000, &opt.suspend_ms); break;
    case 'h': usage(stdout); return 0;
    default:
      fprintf(stderr, "ferry-bench: %s '%s'\n",
              optopt ? "option needs a value or is unknown:" : "unknown option",
              argv[optind - 1]);
      usage(stderr);
      return EXIT_USAGE;
    }
    if (bad)
      return EXIT_USAGE;
  }
  if (optind < argc) {
    fprintf(stderr, "ferry-bench: unexpected argument '%s'\n", argv[optind]);
    return EXIT_USAGE;
  }
  const char *unused = option_unused(given, produce ? M_PRODUCE : deliver ? M_DELIVER : M_CONSUME);
  if (unused) {
    fprintf(stderr, "ferry-bench: %s does not apply to %s (see --help)\n", unused, opt.mode);
    return EXIT_USAGE;
  }
  if (!opt.namesrv || !*opt.namesrv || !opt.topic || !*opt.topic ||
      (!produce && (!opt.group || !*opt.group))) {
    fprintf(stderr, "ferry-bench: -n NAMESRV and -t TOPIC are required%s\n",
            produce ? "" : ", and -g GROUP to consume or deliver");
    usage(stderr);
    return EXIT_USAGE;
  }
  if (produce && (uint64_t)opt.batch * opt.size > SIZE_MAX_BYTES) {
    fprintf(stderr, "ferry-bench: a batch of %u x %u bytes is over %u bytes\n", opt.batch,
            opt.size, SIZE_MAX_BYTES);
    return EXIT_USAGE;
  }
  if (deliver && (opt.size < SEQ_BYTES || opt.rate < 1 || opt.rate > DELIVER_RATE_MAX)) {
    fprintf(stderr, "ferry-bench: deliver needs --size of at least %d and --rate from 1 to %d\n",
            SEQ_BYTES, DELIVER_RATE_MAX);
    return EXIT_USAGE;
  }
  if (produce)
    return run_produce();
  return deliver ? run_deliver() : run_consume();
}
