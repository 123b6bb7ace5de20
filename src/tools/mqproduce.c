/*
 * mqproduce: sends each line of stdin as one message and prints one result
 * line per input line, in input order:
 *
 *   STATUS MSGID BROKERNAME QUEUEID QUEUEOFFSET
 *
 * STATUS is SEND_OK, a "stored, but not confirmed durable or replicated"
 * status (FLUSH_DISK_TIMEOUT, FLUSH_SLAVE_TIMEOUT, SLAVE_NOT_AVAILABLE), or
 * SEND_FAILED (not stored; the reason goes to stderr, as
 * "mqproduce: line N: not sent: TOPIC_NOT_EXIST: ..."). Unknown fields are
 * "-". A failed send never stops the others; the exit status is 1 if any
 * message was not SEND_OK, 2 for usage errors.
 *
 * Why it is shaped this way: to be fast, many sends are in flight at once
 * (asynchronous sends, or --batch batches on a few sender threads), bounded
 * by a window of --inflight lines. The window is a ring of slots in input
 * order: the reader (main thread) fills a slot per line and waits while
 * the ring is full; completions (on the client thread, or the batch
 * threads) mark their slot done; a printer thread prints the oldest slot as
 * soon as it is done and flushes whenever it has caught up, so a result is
 * on stdout as soon as it and every result before it are known.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/heap.h"
#include "common/log.h"
#include "ferry/client.h"

#define EXIT_USAGE 2
#define LINE_MAX_BYTES (4u << 20)  /* the client's maxMessageSize default */
#define INFLIGHT_DEFAULT 1024
#define INFLIGHT_MAX 65536
#define BATCH_MAX 1024
#define BATCH_THREADS_MAX 32
#define STDERR_DETAILS_MAX 100     /* failure lines explained on stderr; then a count */

enum slot_state { SLOT_FREE = 0, SLOT_PENDING, SLOT_DONE };

struct slot {
  enum slot_state state;
  uint64_t lineno;
  /* the line, kept for batch sends (single sends copy it at once) */
  char *body;
  size_t body_len;
  /* the outcome */
  int err;
  fy_send_status status;
  char msg_id[FY_CLIENT_MSGID_MAX];
  char broker_name[FY_CLIENT_NAME_MAX];
  uint32_t queue_id;
  uint64_t queue_offset;
  char error[256];
};

struct batch_job {
  uint64_t first; /* sequence number of its first slot */
  uint32_t n;
};

static struct {
  /* options */
  const char *namesrv, *topic, *tag, *key, *group;
  uint32_t batch, timeout_ms, inflight;
  /* the window: slots [head, tail) are in use, seq % cap is the index */
  pthread_mutex_t mu;
  pthread_cond_t space_cv, ready_cv, job_cv;
  struct slot *ring;
  uint32_t cap;
  uint64_t head, tail;
  bool eof;
  /* batch jobs waiting for a sender thread (mu) */
  struct batch_job *jobs;
  uint32_t jobs_cap, jobs_head, jobs_count;
  bool jobs_closed;
  /* results (printer thread only) */
  uint64_t sent_ok, not_ok, explained;
  fy_producer *producer;
} g = {.mu = PTHREAD_MUTEX_INITIALIZER,
       .space_cv = PTHREAD_COND_INITIALIZER,
       .ready_cv = PTHREAD_COND_INITIALIZER,
       .job_cv = PTHREAD_COND_INITIALIZER};

static struct slot *slot_of(uint64_t seq) { return &g.ring[seq % g.cap]; }

static const char *status_name(fy_send_status s) {
  switch (s) {
  case FY_SEND_OK: return "SEND_OK";
  case FY_SEND_FLUSH_DISK_TIMEOUT: return "FLUSH_DISK_TIMEOUT";
  case FY_SEND_FLUSH_SLAVE_TIMEOUT: return "FLUSH_SLAVE_TIMEOUT";
  case FY_SEND_SLAVE_NOT_AVAILABLE: return "SLAVE_NOT_AVAILABLE";
  }
  return "SEND_FAILED";
}

/* Records an outcome in s (the caller holds g.mu) and wakes the printer. */
static void slot_finish_locked(struct slot *s, int err, const fy_send_result *res) {
  s->err = err;
  if (res) {
    s->status = res->status;
    snprintf(s->msg_id, sizeof s->msg_id, "%s", res->msg_id);
    snprintf(s->broker_name, sizeof s->broker_name, "%s", res->broker_name);
    s->queue_id = res->queue_id;
    s->queue_offset = res->queue_offset;
    if (err)
      snprintf(s->error, sizeof s->error, "%s", res->error);
  }
  s->state = SLOT_DONE;
  pthread_cond_signal(&g.ready_cv);
}

static void slot_fail(struct slot *s, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void slot_fail(struct slot *s, int err, const char *fmt, ...) {
  pthread_mutex_lock(&g.mu);
  slot_finish_locked(s, err, NULL);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->error, sizeof s->error, fmt, ap);
  va_end(ap);
  pthread_mutex_unlock(&g.mu);
}

/* ------------------------------------------------------------------ printer */

static void explain(const struct slot *s) {
  if (g.explained == STDERR_DETAILS_MAX) {
    fprintf(stderr, "mqproduce: more messages not SEND_OK; not shown (see the count at the end)\n");
    g.explained++;
    return;
  }
  if (g.explained > STDERR_DETAILS_MAX)
    return;
  g.explained++;
  if (s->err)
    fprintf(stderr, "mqproduce: line %" PRIu64 ": not sent: %s: %s\n", s->lineno,
            fy_errname(s->err), s->error[0] ? s->error : fy_client_strerror(s->err));
  else
    fprintf(stderr, "mqproduce: line %" PRIu64 ": %s: stored on the master only\n", s->lineno,
            status_name(s->status));
}

static void *printer_main(void *arg) {
  (void)arg;
  pthread_mutex_lock(&g.mu);
  for (;;) {
    while (g.head < g.tail && slot_of(g.head)->state != SLOT_DONE)
      pthread_cond_wait(&g.ready_cv, &g.mu);
    if (g.head == g.tail) {
      if (g.eof)
        break;
      pthread_cond_wait(&g.ready_cv, &g.mu);
      continue;
    }
    struct slot s = *slot_of(g.head);
    pthread_mutex_unlock(&g.mu);

    bool ok = s.err == 0 && s.status == FY_SEND_OK;
    if (s.err)
      printf("SEND_FAILED %s %s - -\n", s.msg_id[0] ? s.msg_id : "-",
             s.broker_name[0] ? s.broker_name : "-");
    else
      printf("%s %s %s %u %" PRIu64 "\n", status_name(s.status), s.msg_id, s.broker_name,
             s.queue_id, s.queue_offset);
    if (ok) {
      g.sent_ok++;
    } else {
      g.not_ok++;
      explain(&s);
    }

    pthread_mutex_lock(&g.mu);
    struct slot *sp = slot_of(g.head);
    free(sp->body);
    memset(sp, 0, sizeof *sp);
    g.head++;
    pthread_cond_signal(&g.space_cv);
    bool caught_up = g.head == g.tail || slot_of(g.head)->state != SLOT_DONE;
    if (caught_up) {
      pthread_mutex_unlock(&g.mu);
      fflush(stdout);
      pthread_mutex_lock(&g.mu);
    }
  }
  pthread_mutex_unlock(&g.mu);
  fflush(stdout);
  return NULL;
}

/* ------------------------------------------------------------ single sends */

static void on_sent(int err, const fy_send_result *res, void *arg) {
  struct slot *s = arg;
  pthread_mutex_lock(&g.mu);
  slot_finish_locked(s, err, res);
  if (err && !res)
    snprintf(s->error, sizeof s->error, "%s", fy_client_strerror(err));
  pthread_mutex_unlock(&g.mu);
}

static fy_message message_of(const char *body, size_t len) {
  fy_message m;
  memset(&m, 0, sizeof m);
  m.topic = g.topic;
  m.body = body;
  m.body_len = len;
  m.tags = g.tag;
  m.keys = g.key;
  return m;
}

static void send_one(struct slot *s, const char *line, size_t len) {
  fy_message m = message_of(line, len);
  fy_send_options so = {.timeout_ms = g.timeout_ms};
  int err = fy_producer_send_async(g.producer, &m, &so, on_sent, s);
  if (err)
    slot_fail(s, err, "%s", fy_client_last_error()[0] ? fy_client_last_error()
                                                      : fy_client_strerror(err));
}

/* ------------------------------------------------------------ batch sends */

static void *batch_main(void *arg) {
  (void)arg;
  fy_message *msgs = calloc(g.batch, sizeof *msgs);
  fy_send_result *res = calloc(g.batch, sizeof *res);
  struct slot **slots = calloc(g.batch, sizeof *slots);
  if (!msgs || !res || !slots) {
    fprintf(stderr, "mqproduce: out of memory\n");
    exit(1);
  }
  pthread_mutex_lock(&g.mu);
  for (;;) {
    while (g.jobs_count == 0 && !g.jobs_closed)
      pthread_cond_wait(&g.job_cv, &g.mu);
    if (g.jobs_count == 0)
      break;
    struct batch_job job = g.jobs[g.jobs_head];
    g.jobs_head = (g.jobs_head + 1) % g.jobs_cap;
    g.jobs_count--;
    for (uint32_t i = 0; i < job.n; i++) {
      slots[i] = slot_of(job.first + i);
      msgs[i] = message_of(slots[i]->body, slots[i]->body_len);
    }
    pthread_mutex_unlock(&g.mu);

    memset(res, 0, job.n * sizeof *res);
    fy_send_options so = {.timeout_ms = g.timeout_ms};
    int err = fy_producer_send_batch(g.producer, msgs, job.n, &so, res);
    const char *detail = err ? fy_client_last_error() : "";

    pthread_mutex_lock(&g.mu);
    for (uint32_t i = 0; i < job.n; i++) {
      slot_finish_locked(slots[i], err, &res[i]);
      if (err && !slots[i]->error[0])
        snprintf(slots[i]->error, sizeof slots[i]->error, "%s",
                 detail[0] ? detail : fy_client_strerror(err));
    }
  }
  pthread_mutex_unlock(&g.mu);
  free(msgs);
  free(res);
  free(slots);
  return NULL;
}

static void queue_batch(uint64_t first, uint32_t n) {
  if (n == 0)
    return;
  pthread_mutex_lock(&g.mu);
  /* Cannot overflow: every queued job holds at least one of the cap slots. */
  g.jobs[(g.jobs_head + g.jobs_count) % g.jobs_cap] = (struct batch_job){first, n};
  g.jobs_count++;
  pthread_cond_signal(&g.job_cv);
  pthread_mutex_unlock(&g.mu);
}

/* ------------------------------------------------------------------ input */

/* Reads one line without its '\n' into *buf (grown as needed, up to
 * LINE_MAX_BYTES + 1 bytes kept). Returns false at the end of input. A
 * longer line is consumed to its end; *len is its full length and
 * *too_long is set. */
static bool read_line(FILE *in, char **buf, size_t *cap, size_t *len, bool *too_long) {
  size_t n = 0;
  bool any = false;
  *too_long = false;
  int c;
  while ((c = getc_unlocked(in)) != EOF) {
    any = true;
    if (c == '\n')
      break;
    if (n >= LINE_MAX_BYTES) {
      *too_long = true;
      n++;
      continue;
    }
    if (n + 1 >= *cap) {
      size_t ncap = *cap ? *cap * 2 : 4096;
      char *nb = realloc(*buf, ncap);
      if (!nb) {
        fprintf(stderr, "mqproduce: out of memory reading a line\n");
        exit(1);
      }
      *buf = nb;
      *cap = ncap;
    }
    (*buf)[n++] = (char)c;
  }
  *len = n;
  return any;
}

/* ------------------------------------------------------------------ main */

static void usage(FILE *out) {
  fprintf(out,
          "usage: mqproduce -n NAMESRV_ADDR -t TOPIC [--tag TAG] [--key KEY] [--batch N]\n"
          "                 [--timeout-ms MS] [--group GROUP] [--inflight N]\n"
          "Sends each line of stdin as one message; prints one line per input line, in order:\n"
          "  STATUS MSGID BROKERNAME QUEUEID QUEUEOFFSET\n"
          "  -n ADDR          name servers, host:port[;host:port] (default: $NAMESRV_ADDR)\n"
          "  -t TOPIC         topic\n"
          "  --tag TAG        tag of every message\n"
          "  --key KEY        key(s) of every message, space-separated\n"
          "  --batch N        send N lines per batch (stored together on one queue; max %d)\n"
          "  --timeout-ms MS  send timeout, all attempts together (default 3000)\n"
          "  --group GROUP    producer group (default mqproduce)\n"
          "  --inflight N     lines in flight at once (default %d, max %d)\n"
          "Exits 1 if any message was not SEND_OK.\n",
          BATCH_MAX, INFLIGHT_DEFAULT, INFLIGHT_MAX);
}

static int parse_u32_arg(const char *name, const char *s, uint32_t min, uint32_t max,
                         uint32_t *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *end || s[0] == '-' || v < min || v > max) {
    fprintf(stderr, "mqproduce: %s must be a number from %u to %u, got '%s'\n", name, min, max, s);
    return -1;
  }
  *out = (uint32_t)v;
  return 0;
}

int main(int argc, char **argv) {
  fy_heap_keep_freed();
  static const struct option longopts[] = {
      {"tag", required_argument, NULL, 'T'},        {"key", required_argument, NULL, 'K'},
      {"batch", required_argument, NULL, 'B'},      {"timeout-ms", required_argument, NULL, 'O'},
      {"group", required_argument, NULL, 'G'},      {"inflight", required_argument, NULL, 'I'},
      {"help", no_argument, NULL, 'h'},             {NULL, 0, NULL, 0}};
  g.group = "mqproduce";
  g.inflight = INFLIGHT_DEFAULT;
  g.batch = 0;
  int c;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "n:t:h", longopts, NULL)) != -1) {
    switch (c) {
    case 'n': g.namesrv = optarg; break;
    case 't': g.topic = optarg; break;
    case 'T': g.tag = optarg; break;
    case 'K': g.key = optarg; break;
    case 'G': g.group = optarg; break;
    case 'B':
      if (parse_u32_arg("--batch", optarg, 1, BATCH_MAX, &g.batch))
        return EXIT_USAGE;
      break;
    case 'O':
      if (parse_u32_arg("--timeout-ms", optarg, 1, 3600000, &g.timeout_ms))
        return EXIT_USAGE;
      break;
    case 'I':
      if (parse_u32_arg("--inflight", optarg, 1, INFLIGHT_MAX, &g.inflight))
        return EXIT_USAGE;
      break;
    case 'h': usage(stdout); return 0;
    default:
      fprintf(stderr, "mqproduce: %s '%s'\n",
              optopt ? "option needs a value or is unknown:" : "unknown option",
              argv[optind - 1]);
      usage(stderr);
      return EXIT_USAGE;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "mqproduce: unexpected argument '%s'\n", argv[optind]);
    usage(stderr);
    return EXIT_USAGE;
  }
  if (!g.namesrv || !*g.namesrv)
    g.namesrv = getenv("NAMESRV_ADDR");
  if (!g.namesrv || !*g.namesrv || !g.topic || !*g.topic) {
    fprintf(stderr, "mqproduce: -n NAMESRV_ADDR (or $NAMESRV_ADDR) and -t TOPIC are required\n");
    usage(stderr);
    return EXIT_USAGE;
  }
  if (g.tag && !*g.tag)
    g.tag = NULL;
  if (g.key && !*g.key)
    g.key = NULL;
  signal(SIGPIPE, SIG_IGN);
  fy_log_set_level(FY_LOG_WARN); /* failures are reported per line */

  g.cap = g.batch > g.inflight ? g.batch : g.inflight;
  g.ring = calloc(g.cap, sizeof *g.ring);
  g.jobs_cap = g.cap;
  g.jobs = calloc(g.jobs_cap, sizeof *g.jobs);
  if (!g.ring || !g.jobs) {
    fprintf(stderr, "mqproduce: out of memory\n");
    return 1;
  }

  fy_client_config cc;
  memset(&cc, 0, sizeof cc);
  cc.namesrv_addr = g.namesrv;
  fy_client *cl;
  int err = fy_client_new(&cc, &cl);
  if (err) {
    fprintf(stderr, "mqproduce: cannot start the client: %s\n",
            err == -EINVAL ? "bad name server address (expected host:port[;host:port])"
                           : fy_client_strerror(err));
    return err == -EINVAL ? EXIT_USAGE : 1;
  }
  fy_producer_config pc;
  memset(&pc, 0, sizeof pc);
  pc.group = g.group;
  pc.send_timeout_ms = g.timeout_ms;
  pc.max_inflight = g.cap + 64;
  err = fy_producer_new(cl, &pc, &g.producer);
  if (err) {
    fprintf(stderr, "mqproduce: cannot create the producer: %s\n",
            fy_client_last_error()[0] ? fy_client_last_error() : fy_client_strerror(err));
    fy_client_close(cl);
    return 1;
  }

  pthread_t printer, senders[BATCH_THREADS_MAX];
  uint32_t nsenders = 0;
  if (pthread_create(&printer, NULL, printer_main, NULL) != 0) {
    fprintf(stderr, "mqproduce: cannot start a thread\n");
    return 1;
  }
  if (g.batch) {
    nsenders = g.cap / g.batch;
    nsenders = nsenders < 1 ? 1 : nsenders > BATCH_THREADS_MAX ? BATCH_THREADS_MAX : nsenders;
    for (uint32_t i = 0; i < nsenders; i++)
      if (pthread_create(&senders[i], NULL, batch_main, NULL) != 0) {
        fprintf(stderr, "mqproduce: cannot start a thread\n");
        return 1;
      }
  }

  char *line = NULL;
  size_t line_cap = 0, len;
  bool too_long;
  uint64_t lineno = 0, batch_first = 0;
  uint32_t batch_n = 0;
  while (read_line(stdin, &line, &line_cap, &len, &too_long)) {
    lineno++;
    pthread_mutex_lock(&g.mu);
    while (g.tail - g.head >= g.cap)
      pthread_cond_wait(&g.space_cv, &g.mu);
    uint64_t seq = g.tail++;
    struct slot *s = slot_of(seq);
    s->state = SLOT_PENDING;
    s->lineno = lineno;
    pthread_mutex_unlock(&g.mu);

    if (too_long) {
      if (g.batch) { /* a batch holds consecutive slots: end it before this one */
        queue_batch(batch_first, batch_n);
        batch_n = 0;
      }
      slot_fail(s, -FY_EMSG_ILLEGAL,
                "line of %zu bytes is larger than maxMessageSize (%u bytes); not sent", len,
                LINE_MAX_BYTES);
      continue;
    }
    if (!g.batch) {
      send_one(s, line ? line : "", len);
      continue;
    }
    s->body = malloc(len ? len : 1);
    if (!s->body) {
      fprintf(stderr, "mqproduce: out of memory\n");
      exit(1);
    }
    if (len)
      memcpy(s->body, line, len);
    s->body_len = len;
    if (batch_n == 0)
      batch_first = seq;
    if (++batch_n == g.batch) {
      queue_batch(batch_first, batch_n);
      batch_n = 0;
    }
  }
  if (ferror(stdin))
    fprintf(stderr, "mqproduce: error reading stdin: %s\n", strerror(errno));
  queue_batch(batch_first, batch_n);
  free(line);

  pthread_mutex_lock(&g.mu);
  g.jobs_closed = true;
  pthread_cond_broadcast(&g.job_cv);
  pthread_mutex_unlock(&g.mu);
  for (uint32_t i = 0; i < nsenders; i++)
    pthread_join(senders[i], NULL);
  /* Every async send calls back within its deadline; then the printer ends. */
  err = fy_producer_close(g.producer);
  if (err)
    fprintf(stderr, "mqproduce: closing the producer: %s\n", fy_client_strerror(err));
  pthread_mutex_lock(&g.mu);
  g.eof = true;
  pthread_cond_signal(&g.ready_cv);
  pthread_mutex_unlock(&g.mu);
  pthread_join(printer, NULL);
  fy_client_close(cl);

  int rc = 0;
  if (fflush(stdout) != 0 || ferror(stdout)) {
    fprintf(stderr, "mqproduce: cannot write the results: %s\n", strerror(errno));
    rc = 1;
  }
  if (g.not_ok) {
    fprintf(stderr, "mqproduce: %" PRIu64 " of %" PRIu64 " messages not SEND_OK\n", g.not_ok,
            g.not_ok + g.sent_ok);
    rc = 1;
  }
  free(g.ring);
  free(g.jobs);
  return rc;
}
