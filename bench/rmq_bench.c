/*
 * ferry-rmq-bench: produce and consume load through RocketMQ 4.x's remoting
 * protocol, the bytes an unchanged RocketMQ client sends, against one broker
 * (no name server: the broker address is given). bench/rmq_bench.sh runs it
 * next to ferry-bench (Ferry's native protocol) and writes its section of
 * docs/BENCHMARKS.md.
 *
 *   ferry-rmq-bench produce --broker HOST:PORT -t TOPIC [--size 128] [--inflight 1024]
 *       [--duration-s 10] [--warmup-s 1] [--batch 1] [--header json|binary] [--conns 1]
 *       [--queues 4] [--tag TagA]
 *   ferry-rmq-bench consume --broker HOST:PORT -t TOPIC -g GROUP [--queues 4]
 *       [--duration-s 10] [--count N] [--header json|binary] [--conns 1]
 *
 * Why it is shaped this way:
 *  - One thread, one epoll loop, non-blocking sockets: the client must cost
 *    far less than the broker it loads, so that the broker is what is
 *    measured. --conns spreads the window over several connections.
 *  - Produce: SEND_MESSAGE_V2 (or SEND_BATCH_MESSAGE when --batch > 1) with
 *    the header fields a Java 4.9 producer sends (a..k, m; l,
 *    maxReconsumeTimes, is null on ordinary sends and so absent) and
 *    properties TAGS and UNIQ_KEY, queues round-robin. Each queue's request
 *    is encoded once with the fy_remoting codec (JSON or binary header);
 *    per request only the fixed-width fields are patched in place: opaque
 *    (10 digits in JSON: opaques stay in [1e9, 2e9)), bornTimestamp (13
 *    digits) and each message's UNIQ_KEY (32 hex digits). The broker sees
 *    exactly what a fresh encoding would give.
 *  - A window of --inflight outstanding requests (not messages) split over
 *    the connections: each response frees a slot that is refilled at once.
 *    Latency per request, from queuing the request to parsing its response,
 *    goes into src/common/hist.h. Only responses inside the measurement window
 *    (after --warmup-s, before --duration-s ends) count; requests still
 *    outstanding 5 s after the end are errors.
 *  - Consume: PULL_MESSAGE (32 per pull, RocketMQ's default pullBatchSize)
 *    from offset 0 of queues 0..N-1, one outstanding pull per queue,
 *    without long polling: a queue is done at PULL_NOT_FOUND (its end). The
 *    bodies are decoded with fy_rmq_msg_decode (which checks each message's
 *    body CRC). Stops when every queue is done, --count messages were read,
 *    or --duration-s passed; secs is up to the last message.
 *
 * Output: a progress line per second on stderr; on stdout a "CPU" line (this
 * process's CPU time) and, last, exactly one line (ferry-bench's format)
 *   RESULT mode=produce msgs=N errors=N secs=F msgs_per_s=F mb_per_s=F p50_us=N p99_us=N
 *          p999_us=N max_us=N
 * (consume: the latencies are those of the pulls). mb_per_s counts message
 * bodies. Exit status 0 when the run worked (errors are reported, not
 * fatal), 1 when it could not run, 2 for usage errors.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/hist.h"
#include "common/record.h"
#include "remoting/remoting.h"

#define EXIT_USAGE 2
#define CONNS_MAX 64
#define INFLIGHT_MAX 100000
#define QUEUES_MAX 1024
#define BATCH_MAX 1024
#define SIZE_MAX_BYTES (1u << 20)
#define FRAME_MAX (64u << 20)     /* largest response accepted */
#define IN_BUF_MIN (256u << 10)
#define PULL_BATCH 32
#define DRAIN_MS 5000             /* wait for outstanding requests after the end */
#define OPAQUE_BASE 1000000000    /* opaques in [1e9, 2e9): always 10 digits */
#define OPAQUE_SPAN 1000000000
#define OPAQUE_PH 1234567890      /* placeholders in the encoded template */
#define BORN_PH "1999999999999"
#define UNIQ_PH "PLACEHOLDERFORUNIQKEY00000000000"
#define UNIQ_LEN 32
#define PRODUCER_GROUP "ferry-rmq-bench"

/* ---------------------------------------------------------------- options */

static struct {
  const char *mode, *broker, *topic, *group, *tag;
  uint32_t size, inflight, batch, conns, queues;
  double duration_s, warmup_s;
  uint64_t count;
  uint8_t serialize;
} opt = {.size = 128, .inflight = 1024, .batch = 1, .conns = 1, .queues = 4, .duration_s = 10,
         .warmup_s = -1, .tag = "TagA", .serialize = FY_RMQ_JSON};

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME_COARSE, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* ---------------------------------------------------------------- connections */

struct slot {
  bool busy;
  int32_t opaque;
  uint32_t queue;  /* consume: the queue this pull reads */
  uint64_t t0_ns;
};

struct conn {
  int fd;
  bool want_out;  /* EPOLLOUT armed */
  uint8_t *in;
  size_t in_len, in_cap;
  uint8_t *out;
  size_t out_off, out_len, out_cap;
  struct slot *slots;
  uint32_t nslots, nbusy;
  uint32_t *free_idx;
  uint32_t nfree;
  uint32_t gen;   /* opaque = OPAQUE_BASE + (gen * nslots + slot) % span */
};

static struct conn conns[CONNS_MAX];
static int epfd = -1;

/* Run state. */
static uint64_t t_start_ns, t_measure_ns, t_end_ns, t_last_msg_ns;
static bool stopping;  /* no new requests */
static uint64_t msgs, bytes, errors, total_seen;
static struct fy_hist hist;
static char first_error[512];

static void note_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note_error(const char *fmt, ...) {
  if (first_error[0])
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(first_error, sizeof first_error, fmt, ap);
  va_end(ap);
}

static int conn_open(struct conn *c, const struct sockaddr_in *sa, uint32_t nslots) {
  memset(c, 0, sizeof *c);
  c->fd = socket(AF_INET, SOCK_STREAM, 0);
  if (c->fd < 0)
    return -errno;
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(c->fd, (const struct sockaddr *)sa, sizeof *sa) != 0)
    return -errno;
  if (fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK) != 0)
    return -errno;
  c->in_cap = IN_BUF_MIN;
  c->in = malloc(c->in_cap);
  c->out_cap = 64u << 10;
  c->out = malloc(c->out_cap);
  c->nslots = nslots;
  c->slots = calloc(nslots, sizeof *c->slots);
  c->free_idx = calloc(nslots, sizeof *c->free_idx);
  if (!c->in || !c->out || !c->slots || !c->free_idx)
    return -ENOMEM;
  for (uint32_t i = 0; i < nslots; i++)
    c->free_idx[c->nfree++] = nslots - 1 - i;
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0)
    return -errno;
  return 0;
}

static void conn_close(struct conn *c) {
  if (c->fd > 0)
    close(c->fd);
  free(c->in);
  free(c->out);
  free(c->slots);
  free(c->free_idx);
  memset(c, 0, sizeof *c);
}

/* Room for n more output bytes; the buffer is bounded by the window. */
static uint8_t *out_reserve(struct conn *c, size_t n) {
  if (c->out_off > 0 && c->out_off == c->out_len)
    c->out_off = c->out_len = 0;
  if (c->out_len + n > c->out_cap) {
    if (c->out_off > 0) {
      memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
      c->out_len -= c->out_off;
      c->out_off = 0;
    }
    size_t cap = c->out_cap;
    while (c->out_len + n > cap)
      cap *= 2;
    if (cap != c->out_cap) {
      uint8_t *p = realloc(c->out, cap);
      if (!p)
        return NULL;
      c->out = p;
      c->out_cap = cap;
    }
  }
  uint8_t *p = c->out + c->out_len;
  c->out_len += n;
  return p;
}

static struct slot *slot_take(struct conn *c) {
  if (c->nfree == 0)
    return NULL;
  uint32_t i = c->free_idx[--c->nfree];
  struct slot *s = &c->slots[i];
  s->busy = true;
  s->opaque = (int32_t)(OPAQUE_BASE + ((uint64_t)c->gen * c->nslots + i) % OPAQUE_SPAN);
  c->gen = (uint32_t)(((uint64_t)c->gen + 1) % (OPAQUE_SPAN / c->nslots));
  c->nbusy++;
  return s;
}

static struct slot *slot_find(struct conn *c, int32_t opaque) {
  if (opaque < OPAQUE_BASE)
    return NULL;
  uint32_t i = (uint32_t)(((uint64_t)opaque - OPAQUE_BASE) % c->nslots);
  struct slot *s = &c->slots[i];
  return s->busy && s->opaque == opaque ? s : NULL;
}

static void slot_give_back(struct conn *c, struct slot *s) {
  s->busy = false;
  c->free_idx[c->nfree++] = (uint32_t)(s - c->slots);
  c->nbusy--;
}

/* Writes what is queued; arms EPOLLOUT while something is left. */
static int conn_flush(struct conn *c) {
  while (c->out_off < c->out_len) {
    ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN)
        break;
      return -errno;
    }
    c->out_off += (size_t)n;
  }
  bool want = c->out_off < c->out_len;
  if (want != c->want_out) {
    struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = want;
  }
  return 0;
}

/* ---------------------------------------------------------------- produce */

/* A request encoded once per queue; the offsets of the fields patched per request. */
struct tmpl {
  uint8_t *bytes;
  size_t len;            /* frame prefix + header + body */
  size_t opaque_at, born_at;
  size_t uniq_at[BATCH_MAX];
  uint32_t nuniq;
};

static struct tmpl *tmpls; /* one per queue */
static char uniq_prefix[21];
static uint64_t uniq_counter;

static const char hexd[] = "0123456789ABCDEF";

/* Java's layout: ip(4) pid(2) hash(4) as 20 hex digits, then 12 of a counter. */
static void uniq_next(uint8_t *dst) {
  memcpy(dst, uniq_prefix, 20);
  uint64_t v = uniq_counter++;
  for (int i = 11; i >= 0; i--, v >>= 4)
    dst[20 + i] = (uint8_t)hexd[v & 0xF];
}

static void put_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

static bool find_once(const uint8_t *hay, size_t len, const void *needle, size_t nlen,
                      size_t *at) {
  const uint8_t *p = memmem(hay, len, needle, nlen);
  if (!p || memmem(p + 1, len - (size_t)(p - hay) - 1, needle, nlen))
    return false;
  *at = (size_t)(p - hay);
  return true;
}

/* Properties "TAGS\1tag\2UNIQ_KEY\1<32>\2" as RocketMQ's messageProperties2String writes them. */
static size_t props_of(char *buf, size_t cap) {
  int n = opt.tag[0] ? snprintf(buf, cap, "TAGS\x01%s\x02UNIQ_KEY\x01%s\x02", opt.tag, UNIQ_PH)
                     : snprintf(buf, cap, "UNIQ_KEY\x01%s\x02", UNIQ_PH);
  return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

static int tmpl_build(struct tmpl *t, uint32_t queue) {
  char props[512];
  size_t plen = props_of(props, sizeof props);
  if (!plen)
    return -EINVAL;
  /* The body: one message, or a batch of entries (MessageDecoder.encodeMessage). */
  size_t body_len = opt.batch == 1 ? opt.size
                                   : (size_t)opt.batch * (4 + 4 + 4 + 4 + 4 + opt.size + 2 + plen);
  uint8_t *body = calloc(1, body_len ? body_len : 1);
  if (!body)
    return -ENOMEM;
  if (opt.batch == 1) {
    memset(body, 'x', opt.size);
  } else {
    uint8_t *p = body;
    for (uint32_t i = 0; i < opt.batch; i++) {
      put_be32(p, (uint32_t)(20 + opt.size + 2 + plen));
      put_be32(p + 4, 0); /* MAGIC and BODYCRC: 4.9 clients send 0 */
      put_be32(p + 8, 0);
      put_be32(p + 12, 0); /* FLAG */
      put_be32(p + 16, opt.size);
      memset(p + 20, 'x', opt.size);
      p += 20 + opt.size;
      p[0] = (uint8_t)(plen >> 8);
      p[1] = (uint8_t)plen;
      memcpy(p + 2, props, plen);
      p += 2 + plen;
    }
  }
  fy_rmq_out o;
  int32_t code = opt.batch == 1 ? FY_RMQ_REQ_SEND_MESSAGE_V2 : FY_RMQ_REQ_SEND_BATCH_MESSAGE;
  fy_rmq_out_request(&o, code, OPAQUE_PH, opt.serialize, false);
  int err = 0;
  err |= fy_rmq_out_str(&o, "a", PRODUCER_GROUP);
  err |= fy_rmq_out_str(&o, "b", opt.topic);
  err |= fy_rmq_out_str(&o, "c", "TBW102");
  err |= fy_rmq_out_i64(&o, "d", 4);
  err |= fy_rmq_out_i64(&o, "e", queue);
  err |= fy_rmq_out_i64(&o, "f", 0);
  err |= fy_rmq_out_str(&o, "g", BORN_PH);
  err |= fy_rmq_out_i64(&o, "h", 0);
  /* A batch's own properties carry no UNIQ_KEY (each entry has one). */
  err |= fy_rmq_out_str(&o, "i", opt.batch == 1 ? props : "");
  err |= fy_rmq_out_i64(&o, "j", 0);
  err |= fy_rmq_out_str(&o, "k", "false");
  err |= fy_rmq_out_str(&o, "m", opt.batch == 1 ? "false" : "true");
  uint8_t *hdr = NULL;
  size_t hlen = 0;
  if (!err)
    err = fy_rmq_out_encode(&o, (uint32_t)body_len, &hdr, &hlen);
  fy_rmq_out_free(&o);
  if (err) {
    free(body);
    return err;
  }
  t->len = hlen + body_len;
  t->bytes = malloc(t->len);
  if (!t->bytes) {
    free(hdr);
    free(body);
    return -ENOMEM;
  }
  memcpy(t->bytes, hdr, hlen);
  memcpy(t->bytes + hlen, body, body_len);
  free(hdr);
  free(body);
  /* Locate the placeholders. */
  bool ok;
  if (opt.serialize == FY_RMQ_JSON) {
    char ph[16];
    snprintf(ph, sizeof ph, "%d", OPAQUE_PH);
    ok = find_once(t->bytes, hlen, ph, 10, &t->opaque_at);
  } else {
    uint8_t ph[4];
    put_be32(ph, OPAQUE_PH);
    ok = find_once(t->bytes, hlen, ph, 4, &t->opaque_at);
  }
  ok = ok && find_once(t->bytes, hlen, BORN_PH, 13, &t->born_at);
  t->nuniq = 0;
  size_t from = 0;
  const uint8_t *p;
  while (ok && (p = memmem(t->bytes + from, t->len - from, UNIQ_PH, UNIQ_LEN)) != NULL &&
         t->nuniq < BATCH_MAX) {
    t->uniq_at[t->nuniq++] = (size_t)(p - t->bytes);
    from = (size_t)(p - t->bytes) + UNIQ_LEN;
  }
  if (!ok || t->nuniq != opt.batch) {
    fprintf(stderr, "ferry-rmq-bench: internal: placeholders not found in the encoded request\n");
    return -EINVAL;
  }
  return 0;
}

static uint32_t rr_queue;

static void write_digits(uint8_t *p, uint64_t v, int n) {
  for (int i = n - 1; i >= 0; i--, v /= 10)
    p[i] = (uint8_t)('0' + v % 10);
}

/* Queues one send on c; false when nothing is free or on out of memory. */
static bool produce_issue(struct conn *c) {
  struct slot *s = slot_take(c);
  if (!s)
    return false;
  const struct tmpl *t = &tmpls[rr_queue++ % opt.queues];
  uint8_t *p = out_reserve(c, t->len);
  if (!p) {
    slot_give_back(c, s);
    note_error("out of memory");
    return false;
  }
  memcpy(p, t->bytes, t->len);
  if (opt.serialize == FY_RMQ_JSON)
    write_digits(p + t->opaque_at, (uint64_t)s->opaque, 10);
  else
    put_be32(p + t->opaque_at, (uint32_t)s->opaque);
  write_digits(p + t->born_at, (uint64_t)wall_ms(), 13);
  for (uint32_t i = 0; i < t->nuniq; i++)
    uniq_next(p + t->uniq_at[i]);
  s->t0_ns = now_ns();
  return true;
}

static void produce_on_response(struct conn *c, const fy_rmq_cmd *cmd, uint64_t now) {
  struct slot *s = slot_find(c, cmd->opaque);
  if (!s) {
    errors++;
    note_error("response to unknown opaque %d", cmd->opaque);
    return;
  }
  bool in_window = now >= t_measure_ns && now <= t_end_ns;
  if (cmd->code != FY_RMQ_RESP_SUCCESS) {
    errors += opt.batch;
    const char *name = fy_rmq_resp_name(cmd->code);
    note_error("%s (%d): %s", name ? name : "?", cmd->code, cmd->remark ? cmd->remark : "");
  } else if (in_window) {
    msgs += opt.batch;
    bytes += (uint64_t)opt.batch * opt.size;
    fy_hist_record(&hist, (now - s->t0_ns) / 1000);
  }
  total_seen += opt.batch;
  slot_give_back(c, s);
  if (!stopping)
    produce_issue(c);
}

/* ---------------------------------------------------------------- consume */

struct queue {
  uint64_t offset;
  bool done;
};
static struct queue *queues;
static uint32_t queues_done;

static int consume_issue(struct conn *c, uint32_t q) {
  struct slot *s = slot_take(c);
  if (!s)
    return -ENOSPC;
  s->queue = q;
  fy_rmq_out o;
  fy_rmq_out_request(&o, FY_RMQ_REQ_PULL_MESSAGE, s->opaque, opt.serialize, false);
  int err = 0;
  err |= fy_rmq_out_str(&o, "consumerGroup", opt.group);
  err |= fy_rmq_out_str(&o, "topic", opt.topic);
  err |= fy_rmq_out_i64(&o, "queueId", q);
  err |= fy_rmq_out_i64(&o, "queueOffset", (int64_t)queues[q].offset);
  err |= fy_rmq_out_i64(&o, "maxMsgNums", PULL_BATCH);
  err |= fy_rmq_out_i64(&o, "sysFlag", 0); /* no commit, no suspend, no subscription */
  err |= fy_rmq_out_i64(&o, "commitOffset", 0);
  err |= fy_rmq_out_i64(&o, "suspendTimeoutMillis", 0);
  err |= fy_rmq_out_i64(&o, "subVersion", 0);
  uint8_t *hdr = NULL;
  size_t hlen = 0;
  if (!err)
    err = fy_rmq_out_encode(&o, 0, &hdr, &hlen);
  fy_rmq_out_free(&o);
  uint8_t *p = err ? NULL : out_reserve(c, hlen);
  if (!p) {
    free(hdr);
    slot_give_back(c, s);
    return err ? err : -ENOMEM;
  }
  memcpy(p, hdr, hlen);
  free(hdr);
  s->t0_ns = now_ns();
  return 0;
}

static void queue_done(uint32_t q) {
  if (!queues[q].done) {
    queues[q].done = true;
    queues_done++;
  }
}

static void consume_on_response(struct conn *c, const fy_rmq_cmd *cmd, uint64_t now) {
  struct slot *s = slot_find(c, cmd->opaque);
  if (!s) {
    errors++;
    note_error("response to unknown opaque %d", cmd->opaque);
    return;
  }
  uint32_t q = s->queue;
  fy_hist_record(&hist, (now - s->t0_ns) / 1000);
  slot_give_back(c, s);
  int64_t next = -1;
  fy_rmq_ext_i64(cmd, "nextBeginOffset", &next);
  switch (cmd->code) {
  case FY_RMQ_RESP_SUCCESS: {
    const uint8_t *p = cmd->body;
    size_t left = cmd->body_len;
    uint32_t n = 0;
    for (uint32_t i = 0; i < PULL_BATCH * 64 && left > 0; i++) {
      struct fy_msg m;
      int64_t used = fy_rmq_msg_decode(p, left, &m);
      if (used <= 0) {
        errors++;
        note_error("pull body of queue %u does not decode: %" PRId64, q, used);
        break;
      }
      n++;
      bytes += m.body_len;
      p += used;
      left -= (size_t)used;
    }
    msgs += n;
    if (n)
      t_last_msg_ns = now;
    if (next < 0 || (uint64_t)next <= queues[q].offset) {
      errors++;
      note_error("pull of queue %u: nextBeginOffset %" PRId64 " does not advance", q, next);
      queue_done(q);
    } else {
      queues[q].offset = (uint64_t)next;
    }
    break;
  }
  case FY_RMQ_RESP_PULL_NOT_FOUND: queue_done(q); break;
  case FY_RMQ_RESP_PULL_RETRY_IMMEDIATELY:
  case FY_RMQ_RESP_PULL_OFFSET_MOVED:
    if (next >= 0 && (uint64_t)next != queues[q].offset) {
      queues[q].offset = (uint64_t)next;
      break;
    }
    __attribute__((fallthrough)); /* no progress possible */
  default: {
    errors++;
    const char *name = fy_rmq_resp_name(cmd->code);
    note_error("pull of queue %u: %s (%d): %s", q, name ? name : "?", cmd->code,
               cmd->remark ? cmd->remark : "");
    queue_done(q);
    break;
  }
  }
  if (opt.count && msgs >= opt.count)
    stopping = true;
  if (!stopping && !queues[q].done) {
    int err = consume_issue(c, q);
    if (err) {
      errors++;
      note_error("pull of queue %u not sent: %s", q, strerror(-err));
      queue_done(q);
    }
  }
}

/* ---------------------------------------------------------------- the loop */

static bool is_produce(void) { return strcmp(opt.mode, "produce") == 0; }

/* Reads what is there and handles every complete frame. 0, or < 0 to stop. */
static int conn_read(struct conn *c) {
  for (;;) {
    if (c->in_len == c->in_cap) {
      size_t need = c->in_cap * 2;
      if (c->in_len >= 4) {
        uint32_t total = (uint32_t)c->in[0] << 24 | (uint32_t)c->in[1] << 16 |
                         (uint32_t)c->in[2] << 8 | c->in[3];
        if (total > FRAME_MAX)
          return -EMSGSIZE;
        if (need < (size_t)total + 4)
          need = (size_t)total + 4;
      }
      uint8_t *p = realloc(c->in, need);
      if (!p)
        return -ENOMEM;
      c->in = p;
      c->in_cap = need;
    }
    ssize_t n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN)
        break;
      return -errno;
    }
    if (n == 0)
      return -ECONNRESET;
    c->in_len += (size_t)n;
    if (c->in_len < c->in_cap)
      break;
  }
  size_t used = 0;
  uint64_t now = now_ns();
  for (;;) {
    fy_rmq_cmd cmd;
    ssize_t n = fy_rmq_parse(c->in + used, c->in_len - used, FRAME_MAX, &cmd);
    if (n == 0)
      break;
    if (n < 0)
      return (int)n;
    used += (size_t)n;
    if (cmd.flag & FY_RMQ_FLAG_RESPONSE) {
      if (is_produce())
        produce_on_response(c, &cmd, now);
      else
        consume_on_response(c, &cmd, now);
    }
    fy_rmq_cmd_free(&cmd);
  }
  if (used) {
    memmove(c->in, c->in + used, c->in_len - used);
    c->in_len -= used;
  }
  return 0;
}

static uint32_t outstanding(void) {
  uint32_t n = 0;
  for (uint32_t i = 0; i < opt.conns; i++)
    n += conns[i].nbusy;
  return n;
}

static double cpu_at_measure = -1;

/* Runs until the end (or every queue is done) and the outstanding requests are answered. */
static int loop(void) {
  struct epoll_event evs[CONNS_MAX];
  uint64_t tick = t_start_ns + 1000000000u, last_seen = 0;
  uint64_t drain_end = 0;
  for (;;) {
    for (uint32_t i = 0; i < opt.conns; i++) {
      int err = conn_flush(&conns[i]);
      if (err)
        return err;
    }
    uint64_t now = now_ns();
    if (cpu_at_measure < 0 && now >= t_measure_ns)
      cpu_at_measure = cpu_seconds();
    if (!stopping && (now >= t_end_ns || (!is_produce() && queues_done == opt.queues)))
      stopping = true;
    if (stopping) {
      if (!drain_end)
        drain_end = now + (uint64_t)DRAIN_MS * 1000000u;
      if (outstanding() == 0 || now >= drain_end)
        return 0;
    }
    if (now >= tick) {
      tick += 1000000000u;
      uint64_t seen = is_produce() ? total_seen : msgs;
      fprintf(stderr, "ferry-rmq-bench: %s %.0fs: %" PRIu64 " msgs/s, %" PRIu64 " errors%s\n",
              opt.mode, (double)(now - t_start_ns) / 1e9, seen - last_seen, errors,
              now < t_measure_ns ? " (warm-up)" : "");
      last_seen = seen;
    }
    int n = epoll_wait(epfd, evs, CONNS_MAX, 10);
    if (n < 0 && errno != EINTR)
      return -errno;
    for (int i = 0; i < n; i++) {
      struct conn *c = evs[i].data.ptr;
      if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        int err = conn_read(c);
        if (err) {
          fprintf(stderr, "ferry-rmq-bench: connection: %s\n", strerror(-err));
          return err;
        }
      }
    }
  }
}

/* ---------------------------------------------------------------- main */

static void usage(FILE *out) {
  fprintf(out,
          "usage: ferry-rmq-bench produce --broker HOST:PORT -t TOPIC [--size BYTES=128]\n"
          "           [--inflight REQUESTS=1024] [--duration-s S=10] [--warmup-s S=1]\n"
          "           [--batch N=1] [--header json|binary] [--conns N=1] [--queues N=4]\n"
          "           [--tag TAG=TagA ('' for none)]\n"
          "       ferry-rmq-bench consume --broker HOST:PORT -t TOPIC -g GROUP [--queues N=4]\n"
          "           [--duration-s S=10] [--count N] [--header json|binary] [--conns N=1]\n"
          "Load through RocketMQ 4.x's remoting protocol (SEND_MESSAGE_V2 /\n"
          "SEND_BATCH_MESSAGE, PULL_MESSAGE from offset 0). The last line on stdout is:\n"
          "RESULT mode=M msgs=N errors=N secs=F msgs_per_s=F mb_per_s=F p50_us=N p99_us=N\n"
          "p999_us=N max_us=N\n");
}

static bool parse_u32(const char *s, uint32_t lo, uint32_t hi, uint32_t *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || *end || end == s || v < lo || v > hi)
    return false;
  *out = (uint32_t)v;
  return true;
}

static bool parse_secs(const char *s, double *out) {
  char *end;
  double v = strtod(s, &end);
  if (*end || end == s || v < 0 || v > 86400)
    return false;
  *out = v;
  return true;
}

static int parse_opts(int argc, char **argv) {
  static const struct option longs[] = {
      {"broker", required_argument, NULL, 'b'},  {"topic", required_argument, NULL, 't'},
      {"group", required_argument, NULL, 'g'},   {"size", required_argument, NULL, 's'},
      {"inflight", required_argument, NULL, 'i'}, {"duration-s", required_argument, NULL, 'd'},
      {"warmup-s", required_argument, NULL, 'w'}, {"batch", required_argument, NULL, 'B'},
      {"header", required_argument, NULL, 'H'},  {"conns", required_argument, NULL, 'c'},
      {"queues", required_argument, NULL, 'q'},  {"count", required_argument, NULL, 'n'},
      {"tag", required_argument, NULL, 'T'},     {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  if (argc < 2 || (strcmp(argv[1], "produce") && strcmp(argv[1], "consume"))) {
    usage(stderr);
    return -1;
  }
  opt.mode = argv[1];
  optind = 2;
  int ch;
  bool ok = true;
  while (ok && (ch = getopt_long(argc, argv, "b:t:g:h", longs, NULL)) != -1) {
    switch (ch) {
    case 'b': opt.broker = optarg; break;
    case 't': opt.topic = optarg; break;
    case 'g': opt.group = optarg; break;
    case 's': ok = parse_u32(optarg, 0, SIZE_MAX_BYTES, &opt.size); break;
    case 'i': ok = parse_u32(optarg, 1, INFLIGHT_MAX, &opt.inflight); break;
    case 'd': ok = parse_secs(optarg, &opt.duration_s); break;
    case 'w': ok = parse_secs(optarg, &opt.warmup_s); break;
    case 'B': ok = parse_u32(optarg, 1, BATCH_MAX, &opt.batch); break;
    case 'c': ok = parse_u32(optarg, 1, CONNS_MAX, &opt.conns); break;
    case 'q': ok = parse_u32(optarg, 1, QUEUES_MAX, &opt.queues); break;
    case 'T': opt.tag = optarg; ok = strlen(optarg) < 128 && !strpbrk(optarg, "\x01\x02"); break;
    case 'n': {
      char *end;
      errno = 0;
      opt.count = strtoull(optarg, &end, 10);
      ok = !errno && !*end && end != optarg;
      break;
    }
    case 'H':
      ok = strcmp(optarg, "json") == 0 || strcmp(optarg, "binary") == 0;
      opt.serialize = strcmp(optarg, "binary") == 0 ? FY_RMQ_ROCKETMQ : FY_RMQ_JSON;
      break;
    case 'h': usage(stdout); exit(0);
    default: ok = false; break;
    }
  }
  if (!ok || optind != argc || !opt.broker || !opt.topic || (!is_produce() && !opt.group)) {
    if (ok)
      fprintf(stderr, "ferry-rmq-bench: --broker, -t%s are required\n",
              is_produce() ? "" : " and -g");
    else
      fprintf(stderr, "ferry-rmq-bench: bad option or value\n");
    usage(stderr);
    return -1;
  }
  if (opt.warmup_s < 0)
    opt.warmup_s = is_produce() ? 1 : 0;
  if (!is_produce() && opt.conns > opt.queues)
    opt.conns = opt.queues;
  return 0;
}

static int resolve(const char *addr, struct sockaddr_in *sa) {
  char host[64];
  const char *colon = strrchr(addr, ':');
  uint32_t port;
  if (!colon || (size_t)(colon - addr) >= sizeof host || !parse_u32(colon + 1, 1, 65535, &port))
    return -EINVAL;
  memcpy(host, addr, (size_t)(colon - addr));
  host[colon - addr] = '\0';
  memset(sa, 0, sizeof *sa);
  sa->sin_family = AF_INET;
  sa->sin_port = htons((uint16_t)port);
  if (strcmp(host, "localhost") == 0)
    snprintf(host, sizeof host, "127.0.0.1");
  return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -EINVAL;
}

static void print_result(double secs, double cpu_s) {
  double rate = secs > 0 ? (double)msgs / secs : 0;
  printf("CPU mode=%s cpu_s=%.3f cpu_s_per_1m=%.3f\n", opt.mode, cpu_s,
         msgs ? cpu_s * 1e6 / (double)msgs : 0);
  printf("RESULT mode=%s msgs=%" PRIu64 " errors=%" PRIu64 " secs=%.3f msgs_per_s=%.1f "
         "mb_per_s=%.3f p50_us=%" PRIu64 " p99_us=%" PRIu64 " p999_us=%" PRIu64 " max_us=%" PRIu64
         "\n",
         opt.mode, msgs, errors, secs, rate, secs > 0 ? (double)bytes / 1e6 / secs : 0,
         fy_hist_percentile(&hist, 50), fy_hist_percentile(&hist, 99),
         fy_hist_percentile(&hist, 99.9), hist.count ? hist.max : 0);
  fflush(stdout);
}

int main(int argc, char **argv) {
  if (parse_opts(argc, argv))
    return EXIT_USAGE;
  signal(SIGPIPE, SIG_IGN);
  struct sockaddr_in sa;
  if (resolve(opt.broker, &sa)) {
    fprintf(stderr, "ferry-rmq-bench: --broker %s: expected IPv4:PORT\n", opt.broker);
    return EXIT_USAGE;
  }
  fy_hist_init(&hist);
  snprintf(uniq_prefix, sizeof uniq_prefix, "7F000001%04X%08X", (unsigned)getpid() & 0xFFFF,
           (unsigned)(now_ns() & 0xFFFFFFFF));
  int rc = 1;
  epfd = epoll_create1(0);
  if (epfd < 0)
    return 1;
  if (is_produce()) {
    tmpls = calloc(opt.queues, sizeof *tmpls);
    if (!tmpls)
      goto out;
    for (uint32_t q = 0; q < opt.queues; q++)
      if (tmpl_build(&tmpls[q], q)) {
        fprintf(stderr, "ferry-rmq-bench: could not encode the request\n");
        goto out;
      }
  } else {
    queues = calloc(opt.queues, sizeof *queues);
    if (!queues)
      goto out;
  }
  /* The window (produce) or the queues (consume), split over the connections. */
  uint32_t total = is_produce() ? opt.inflight : opt.queues;
  if (opt.conns > total)
    opt.conns = total;
  for (uint32_t i = 0; i < opt.conns; i++) {
    uint32_t share = total / opt.conns + (i < total % opt.conns);
    int err = conn_open(&conns[i], &sa, share);
    if (err) {
      fprintf(stderr, "ferry-rmq-bench: connect %s: %s\n", opt.broker, strerror(-err));
      goto out;
    }
  }
  t_start_ns = now_ns();
  t_measure_ns = t_start_ns + (uint64_t)(opt.warmup_s * 1e9);
  t_end_ns = t_measure_ns + (uint64_t)(opt.duration_s * 1e9);
  for (uint32_t i = 0; i < opt.conns; i++) {
    struct conn *c = &conns[i];
    if (is_produce()) {
      while (produce_issue(c))
        ;
    } else {
      for (uint32_t q = i; q < opt.queues; q += opt.conns)
        if (consume_issue(c, q)) {
          fprintf(stderr, "ferry-rmq-bench: could not encode a pull\n");
          goto out;
        }
    }
  }
  int err = loop();
  uint64_t end = now_ns();
  double cpu_s = cpu_seconds() - (cpu_at_measure < 0 ? 0 : cpu_at_measure);
  if (err) {
    fprintf(stderr, "ferry-rmq-bench: stopped: %s\n", strerror(-err));
    goto out;
  }
  uint32_t left = outstanding();
  if (left) {
    errors += (uint64_t)left * (is_produce() ? opt.batch : 1);
    note_error("%u requests unanswered %d ms after the end", left, DRAIN_MS);
  }
  double secs = opt.duration_s;
  if (!is_produce()) {
    uint64_t last = t_last_msg_ns ? t_last_msg_ns : end;
    secs = last > t_measure_ns ? (double)(last - t_measure_ns) / 1e9 : 0;
    if (secs > opt.duration_s)
      secs = opt.duration_s;
  }
  if (first_error[0])
    fprintf(stderr, "ferry-rmq-bench: %" PRIu64 " errors; first: %s\n", errors, first_error);
  print_result(secs, cpu_s);
  rc = 0;
out:
  for (uint32_t i = 0; i < CONNS_MAX; i++)
    if (conns[i].fd)
      conn_close(&conns[i]);
  if (tmpls)
    for (uint32_t q = 0; q < opt.queues; q++)
      free(tmpls[q].bytes);
  free(tmpls);
  free(queues);
  close(epfd);
  return rc;
}
