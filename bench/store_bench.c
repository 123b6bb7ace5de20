/*
 * ferry-store-bench: append throughput and acknowledgement latency of the
 * store, measured through the same calls the broker makes.
 *
 * Why it looks like this: a broker has many producers, so many sends are in
 * flight at once, and group commit only shows when they are. The benchmark
 * keeps a window of `--window` appends in flight on one event loop: every
 * acknowledgement frees a slot, which is refilled at once from inside the
 * callback. What it measures:
 *
 *   path store      fy_store_put: queue-offset assignment, record encoding,
 *                   the commit-log write (and fdatasync under SYNC_FLUSH),
 *                   dispatch into the consume queue and the key index;
 *   path commitlog  fy_commitlog_append alone, to separate the log's cost
 *                   from dispatch.
 *
 * Each message has a body of --size bytes and, unless --no-keys, the
 * properties a RocketMQ producer sets (TAGS and a 32-character UNIQ_KEY), so
 * the index is exercised. Reported over the measured interval (after
 * --warmup): messages/s, MB/s of log written, CPU time of the whole process
 * (getrusage: the loop thread, libuv's pool threads and io_uring's workers),
 * the log's writes and fdatasyncs (fy_commitlog_stats) and ack latency
 * percentiles (src/common/hist.h) of every 8th append (reading the clock twice
 * per append would cost ~10 % of the CPU measured). The last line of output is machine-readable:
 * "RESULT key=value ...".
 *
 * --smoke runs three tiny configurations (about a second in all), checks
 * that every put was acknowledged, dispatched and survives a clean reopen,
 * and exits 0; ctest runs it so the benchmark cannot rot.
 */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/hist.h"
#include "common/err.h"
#include "common/log.h"
#include "store/consumequeue.h"
#include "store/store.h"

#define TOPIC "BenchTopic"
#define BODY_MAX (4u * 1024 * 1024)
#define WINDOW_MAX 1000000u
#define QUEUES_MAX 1024u
#define UNIQ_KEY_LEN 32
#define SETS_MAX 16
#define LATENCY_SAMPLE 8u /* one append in this many is timed */

struct opts {
  char dir[512];        /* parent of the scratch store directory */
  uint32_t body_size;
  bool sync;
  uint32_t window;      /* appends in flight */
  double duration_s;    /* measured time, after warmup (when count == 0) */
  double warmup_s;
  uint64_t count;       /* puts in all, warmup included; 0: run for duration_s */
  uint32_t queues;
  enum fy_aio_backend backend;
  bool raw;             /* commit log only */
  bool keys;            /* TAGS and UNIQ_KEY properties */
  uint64_t segment_size;
  bool keep;            /* leave the store directory behind */
  bool smoke;
  const char *sets[SETS_MAX]; /* "key=value" store config overrides (conf/broker.conf keys) */
  unsigned nsets;
};

struct slot {
  struct bench *b;
  uint64_t t0_ns;
  uint32_t idx;
};

/* What is sampled at the start and the end of the measured interval. */
struct sample {
  uint64_t ns;
  uint64_t acked;
  double cpu_s;
  struct fy_cl_stats cl;
  uint64_t log_end;
};

struct bench {
  const struct opts *o;
  uv_loop_t loop;
  fy_store *store;  /* path store */
  fy_aio *aio;      /* path commitlog */
  fy_commitlog *cl; /* both: the log whose counters are reported */
  uint64_t *next_qoff; /* path commitlog: queue offsets are the caller's */
  char store_dir[600];

  struct slot *slots;
  uint32_t *free_idx;
  uint32_t nfree;
  uv_timer_t retry; /* only when every slot is free and the log is busy */

  struct fy_msg tmpl;
  uint8_t *body;
  char props[128];
  size_t uniq_at; /* offset of the UNIQ_KEY value in props */

  uint64_t issued, acked, failed, busy;
  int error;
  bool stopping, measuring, done;
  uint64_t warmup_end_ns, deadline_ns;
  struct sample s0, s1;
  struct fy_hist hist;
  char backend[16];
  struct fy_store_stats st; /* path store: taken before close */
  bool closed;
};

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void take_sample(struct bench *b, struct sample *s, uint64_t ns) {
  s->ns = ns;
  s->acked = b->acked;
  s->cpu_s = cpu_seconds();
  fy_commitlog_stats(b->cl, &s->cl);
  s->log_end = fy_commitlog_written(b->cl);
}

/* ---- messages ------------------------------------------------------------ */

static void build_template(struct bench *b) {
  const struct opts *o = b->o;
  b->body = malloc(o->body_size ? o->body_size : 1);
  fy_assert(b->body != NULL);
  for (uint32_t i = 0; i < o->body_size; i++)
    b->body[i] = (uint8_t)('a' + i % 26);
  size_t plen = 0;
  if (o->keys) {
    char uniq[UNIQ_KEY_LEN + 1];
    memset(uniq, '0', UNIQ_KEY_LEN);
    uniq[UNIQ_KEY_LEN] = '\0';
    fy_assert(fy_props_add(b->props, sizeof b->props, &plen, FY_PROP_TAGS, "TagA", 4) == 0);
    b->uniq_at = plen + strlen(FY_PROP_UNIQ_KEY) + 1;
    fy_assert(fy_props_add(b->props, sizeof b->props, &plen, FY_PROP_UNIQ_KEY, uniq,
                           UNIQ_KEY_LEN) == 0);
  }
  struct fy_msg *m = &b->tmpl;
  memset(m, 0, sizeof *m);
  m->topic = TOPIC;
  m->topic_len = (uint16_t)strlen(TOPIC);
  m->body = b->body;
  m->body_len = o->body_size;
  m->props = b->props;
  m->props_len = (uint16_t)plen;
  m->born_host.ip[0] = 10;
  m->born_host.ip[3] = 7;
  m->born_host.port = 53211;
  m->store_host.ip[0] = 10;
  m->store_host.ip[3] = 1;
  m->store_host.port = 10911;
}

/* The UNIQ_KEY's last 16 characters carry the sequence number in hex. */
static void stamp_uniq(struct bench *b, uint64_t seq) {
  static const char hex[] = "0123456789ABCDEF";
  char *p = b->props + b->uniq_at + UNIQ_KEY_LEN;
  for (int i = 0; i < 16; i++, seq >>= 4)
    *--p = hex[seq & 15];
}

/* ---- the window ---------------------------------------------------------- */

static void finish(struct bench *b);
static void fill(struct bench *b);

static void on_ack(void *arg, int status, uint64_t phys, uint64_t size) {
  (void)phys;
  (void)size;
  struct slot *sl = arg;
  struct bench *b = sl->b;
  b->free_idx[b->nfree++] = sl->idx;
  if (status) {
    b->failed++;
    if (!b->error)
      b->error = status;
    b->stopping = true;
  } else {
    b->acked++;
  }
  if (sl->t0_ns) { /* a sampled append: the clock is read for these only */
    uint64_t now = now_ns();
    if (!status && b->measuring)
      fy_hist_record(&b->hist, now - sl->t0_ns);
    if (!b->measuring && now >= b->warmup_end_ns) {
      b->measuring = true;
      take_sample(b, &b->s0, now);
      if (b->o->count == 0)
        b->deadline_ns = now + (uint64_t)(b->o->duration_s * 1e9);
    }
    if (b->o->count == 0 && b->measuring && now >= b->deadline_ns)
      b->stopping = true;
  }
  if (!b->stopping)
    fill(b);
  if (b->nfree == b->o->window && (b->stopping || b->issued == b->o->count))
    finish(b);
}

static int issue(struct bench *b) {
  uint32_t idx = b->free_idx[b->nfree - 1];
  struct slot *sl = &b->slots[idx];
  struct fy_msg m = b->tmpl;
  m.queue_id = (uint32_t)(b->issued % b->o->queues);
  m.born_ts_ms = (int64_t)(b->issued + 1);
  if (b->o->keys)
    stamp_uniq(b, b->issued);
  /* Latency is sampled (every LATENCY_SAMPLE-th append): two clock reads
   * per append cost ~10 % of the CPU being measured in a VM. */
  sl->t0_ns = b->issued % LATENCY_SAMPLE == 0 ? now_ns() : 0;
  int r;
  if (b->o->raw) {
    m.queue_offset = b->next_qoff[m.queue_id];
    r = fy_commitlog_append(b->cl, &m, 1, NULL, on_ack, sl);
    if (r == 0)
      b->next_qoff[m.queue_id]++;
  } else {
    r = fy_store_put(b->store, &m, 1, on_ack, sl);
  }
  if (r == 0) {
    b->nfree--;
    b->issued++;
  }
  return r;
}

static void on_retry(uv_timer_t *t) { fill(t->data); }

static void fill(struct bench *b) {
  while (!b->stopping && b->nfree > 0 && (b->o->count == 0 || b->issued < b->o->count)) {
    int r = issue(b);
    if (r == -FY_EBUSY) {
      b->busy++;
      /* An ack will refill; with nothing in flight, try again shortly. */
      if (b->nfree == b->o->window)
        uv_timer_start(&b->retry, on_retry, 1, 0);
      return;
    }
    if (r) {
      fprintf(stderr, "ferry-store-bench: put failed: %s\n", fy_strerror(r));
      b->error = r;
      b->stopping = true;
      if (b->nfree == b->o->window)
        finish(b);
      return;
    }
  }
}

static void on_closed(void *arg) {
  struct bench *b = arg;
  b->closed = true;
  uv_close((uv_handle_t *)&b->retry, NULL);
}

static void on_log_closed(void *arg) {
  struct bench *b = arg;
  fy_aio_close(b->aio);
  on_closed(b);
}

/* Every slot is back: the measured interval ends at the last ack. */
static void finish(struct bench *b) {
  if (b->done)
    return;
  b->done = true;
  uint64_t now = now_ns();
  if (!b->measuring) { /* ended inside the warmup: measure everything */
    b->measuring = true;
    b->s0 = (struct sample){0};
  }
  take_sample(b, &b->s1, now);
  uv_timer_stop(&b->retry);
  fy_aio *aio = b->o->raw ? b->aio : fy_store_aio(b->store);
  snprintf(b->backend, sizeof b->backend, "%s", fy_aio_backend_name(fy_aio_backend_of(aio)));
  if (!b->o->raw)
    fy_store_stats(b->store, &b->st); /* before close: its fields outlive the store's aio */
  if (b->o->raw)
    fy_commitlog_close(b->cl, on_log_closed, b);
  else
    fy_store_close(b->store, on_closed, b);
}

/* ---- one run ------------------------------------------------------------- */

static void store_config(const struct opts *o, const char *dir, struct fy_store_config *c) {
  fy_store_config_defaults(c);
  size_t n = strlen(dir);
  fy_assert(n < sizeof c->root_dir); /* make_scratch checked */
  memcpy(c->root_dir, dir, n + 1);
  c->flush_disk_type = o->sync ? FY_SYNC_FLUSH : FY_ASYNC_FLUSH;
  c->commitlog_segment_size = o->segment_size;
  c->io_backend = o->backend;
  if (o->smoke) {
    c->cq_file_size = 1000 * FY_CQ_ENTRY_SIZE;
    c->index_slots = 1021;
    c->index_entries = 20000;
    c->flush_cq_interval_ms = 50;
    c->write_buffer_size = 1024 * 1024 + 64 * 1024; /* small buffers: more group commits */
    c->max_message_size = 1024 * 1024;
  }
  if (c->max_pending_puts < o->window)
    c->max_pending_puts = o->window;
  struct fy_config_section sec = {fy_store_config_keys, c};
  for (unsigned i = 0; i < o->nsets; i++) {
    char key[128], err[256];
    const char *eq = strchr(o->sets[i], '=');
    size_t klen = eq ? (size_t)(eq - o->sets[i]) : 0;
    if (klen == 0 || klen >= sizeof key) {
      fprintf(stderr, "ferry-store-bench: --set wants key=value, not '%s'\n", o->sets[i]);
      exit(2);
    }
    memcpy(key, o->sets[i], klen);
    key[klen] = '\0';
    if (strcmp(key, "storePathRootDir") == 0 || strcmp(key, "flushDiskType") == 0 ||
        strcmp(key, "mappedFileSizeCommitLog") == 0 || strcmp(key, "ioBackend") == 0) {
      fprintf(stderr, "ferry-store-bench: set %s with its own option (-d, --flush, "
              "--segment-size, --backend)\n", key);
      exit(2);
    }
    if (fy_config_set(&sec, 1, key, eq + 1, err, sizeof err) != 0) {
      fprintf(stderr, "ferry-store-bench: --set %s: %s\n", o->sets[i], err);
      exit(2);
    }
  }
}

static int open_target(struct bench *b, const struct fy_store_config *c) {
  if (!b->o->raw) {
    struct fy_store_recovery rec;
    int r = fy_store_open(&b->loop, c, &b->store, &rec);
    if (r == 0)
      b->cl = fy_store_commitlog(b->store);
    return r;
  }
  int r = fy_aio_init(&b->loop, c->io_backend, 256, &b->aio);
  if (r)
    return r;
  char dir[700];
  snprintf(dir, sizeof dir, "%s/commitlog", c->root_dir);
  struct fy_commitlog_config cc = {
      .dir = dir,
      .segment_size = c->commitlog_segment_size,
      .sync_flush = b->o->sync,
      .flush_interval_ms = c->flush_interval_ms,
      .write_buffer_size = c->write_buffer_size,
      .write_buffers = c->write_buffers,
      .max_waiters = c->max_pending_puts,
  };
  r = fy_commitlog_open(&b->loop, b->aio, &cc, 0, &b->cl, NULL);
  if (r) {
    fy_aio_close(b->aio);
    uv_run(&b->loop, UV_RUN_DEFAULT);
  }
  return r;
}

struct result {
  uint64_t acked, failed, busy;
  int error;
  double secs, msgs_per_s, mb_per_s, cpu_s, cpu_s_per_1m, cpu_util;
  uint64_t writes, write_bytes, syncs;
  double avg_write, bytes_per_sync, writes_per_sync;
  uint32_t record_size;
  uint64_t p50_ns, p99_ns, p999_ns, max_ns;
  double mean_ns;
  char backend[16];
  struct fy_store_stats st; /* path store: taken before close */
};

static void summarize(struct bench *b, struct result *r) {
  memset(r, 0, sizeof *r);
  const struct sample *s0 = &b->s0, *s1 = &b->s1;
  r->acked = s1->acked - s0->acked;
  r->failed = b->failed;
  r->busy = b->busy;
  r->error = b->error;
  r->secs = s0->ns ? (double)(s1->ns - s0->ns) / 1e9 : 0;
  r->cpu_s = s1->cpu_s - s0->cpu_s;
  r->writes = s1->cl.writes - s0->cl.writes;
  r->write_bytes = s1->cl.write_bytes - s0->cl.write_bytes;
  r->syncs = s1->cl.syncs - s0->cl.syncs;
  if (r->secs > 0) {
    r->msgs_per_s = (double)r->acked / r->secs;
    r->mb_per_s = (double)(s1->log_end - s0->log_end) / 1e6 / r->secs;
    r->cpu_util = r->cpu_s / r->secs;
  }
  if (r->acked)
    r->cpu_s_per_1m = r->cpu_s / (double)r->acked * 1e6;
  if (r->writes)
    r->avg_write = (double)r->write_bytes / (double)r->writes;
  if (r->syncs) {
    r->bytes_per_sync = (double)r->write_bytes / (double)r->syncs;
    r->writes_per_sync = (double)r->writes / (double)r->syncs;
  }
  struct fy_msg m = b->tmpl;
  r->record_size = fy_record_size(&m);
  r->p50_ns = fy_hist_percentile(&b->hist, 50);
  r->p99_ns = fy_hist_percentile(&b->hist, 99);
  r->p999_ns = fy_hist_percentile(&b->hist, 99.9);
  r->max_ns = b->hist.count ? b->hist.max : 0;
  r->mean_ns = fy_hist_mean(&b->hist);
  snprintf(r->backend, sizeof r->backend, "%s", b->backend);
  r->st = b->st;
}

/* Runs one configuration in store_dir (created fresh by the caller). */
static int run_one(const struct opts *o, const char *store_dir, struct result *res) {
  memset(res, 0, sizeof *res);
  struct bench *b = calloc(1, sizeof *b);
  if (!b)
    return -ENOMEM;
  b->o = o;
  snprintf(b->store_dir, sizeof b->store_dir, "%s", store_dir);
  fy_hist_init(&b->hist);
  build_template(b);
  b->slots = calloc(o->window, sizeof *b->slots);
  b->free_idx = calloc(o->window, sizeof *b->free_idx);
  b->next_qoff = calloc(o->queues, sizeof *b->next_qoff);
  fy_assert(b->slots && b->free_idx && b->next_qoff);
  for (uint32_t i = 0; i < o->window; i++) {
    b->slots[i] = (struct slot){.b = b, .idx = i};
    b->free_idx[i] = o->window - 1 - i;
  }
  b->nfree = o->window;
  uv_loop_init(&b->loop);
  struct fy_store_config c;
  store_config(o, store_dir, &c);
  int err = open_target(b, &c);
  if (err) {
    fprintf(stderr, "ferry-store-bench: cannot open %s: %s\n", store_dir, fy_strerror(err));
    goto out_free;
  }
  uv_timer_init(&b->loop, &b->retry);
  b->retry.data = b;
  uint64_t start = now_ns();
  b->warmup_end_ns = start + (uint64_t)(o->warmup_s * 1e9);
  if (o->warmup_s <= 0) {
    b->measuring = true;
    take_sample(b, &b->s0, start);
    b->deadline_ns = start + (uint64_t)(o->duration_s * 1e9);
  }
  fill(b);
  if (b->nfree == o->window && !b->done)
    finish(b); /* nothing could be issued */
  uv_run(&b->loop, UV_RUN_DEFAULT);
  fy_assert(b->closed);
  summarize(b, res);
  if (!o->raw) {
    fy_store_free(b->store);
  } else {
    fy_commitlog_free(b->cl);
  }
  if (uv_loop_close(&b->loop) != 0) {
    fprintf(stderr, "ferry-store-bench: handles left open\n");
    err = -EBUSY;
  }
  if (!err)
    err = b->error;
out_free:
  free(b->slots);
  free(b->free_idx);
  free(b->next_qoff);
  free(b->body);
  free(b);
  return err;
}

static void print_result(const struct opts *o, const struct result *r) {
  const char *path = o->raw ? "commitlog" : "store";
  const char *flush = o->sync ? "SYNC_FLUSH" : "ASYNC_FLUSH";
  printf("%s %s body=%uB record=%uB window=%u queues=%u backend=%s\n", path, flush, o->body_size,
         r->record_size, o->window, o->queues, r->backend);
  printf("  %.0f msgs/s  %.1f MB/s  (%" PRIu64 " msgs in %.2f s)\n", r->msgs_per_s, r->mb_per_s,
         r->acked, r->secs);
  printf("  CPU %.2f s (%.0f%% of one core), %.3f s per 1M msgs\n", r->cpu_s, r->cpu_util * 100,
         r->cpu_s_per_1m);
  printf("  writes %" PRIu64 " (avg %.0f B), fdatasyncs %" PRIu64 " (avg %.0f B, %.1f writes each)\n",
         r->writes, r->avg_write, r->syncs, r->bytes_per_sync, r->writes_per_sync);
  printf("  ack latency us: p50 %.1f  p99 %.1f  p99.9 %.1f  max %.1f  mean %.1f\n",
         (double)r->p50_ns / 1e3, (double)r->p99_ns / 1e3, (double)r->p999_ns / 1e3,
         (double)r->max_ns / 1e3, r->mean_ns / 1e3);
  if (r->busy)
    printf("  the log was busy (buffers or waiters full) %" PRIu64 " times\n", r->busy);
  printf("RESULT path=%s flush=%s body=%u record=%u window=%u queues=%u backend=%s msgs=%" PRIu64
         " secs=%.3f msgs_per_s=%.0f mb_per_s=%.2f cpu_s=%.3f cpu_s_per_1m=%.4f cpu_util=%.3f"
         " writes=%" PRIu64 " write_bytes=%" PRIu64 " avg_write=%.0f syncs=%" PRIu64
         " bytes_per_sync=%.0f writes_per_sync=%.2f p50_us=%.1f p99_us=%.1f p999_us=%.1f"
         " max_us=%.1f failed=%" PRIu64 " error=%d\n",
         path, flush, o->body_size, r->record_size, o->window, o->queues, r->backend, r->acked,
         r->secs, r->msgs_per_s, r->mb_per_s, r->cpu_s, r->cpu_s_per_1m, r->cpu_util, r->writes,
         r->write_bytes, r->avg_write, r->syncs, r->bytes_per_sync, r->writes_per_sync,
         (double)r->p50_ns / 1e3, (double)r->p99_ns / 1e3, (double)r->p999_ns / 1e3,
         (double)r->max_ns / 1e3, r->failed, r->error);
  fflush(stdout);
}

/* ---- scratch directories --------------------------------------------------- */

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(p);
}

static void rmtree(const char *path) { nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS); }

/* A fresh directory under parent (created if missing); only it is removed later. */
static int make_scratch(const char *parent, char *out, size_t cap) {
  if (mkdir(parent, 0755) != 0 && errno != EEXIST) {
    fprintf(stderr, "ferry-store-bench: mkdir %s: %s\n", parent, strerror(errno));
    return -1;
  }
  if ((size_t)snprintf(out, cap, "%s/ferry-bench-XXXXXX", parent) >=
      sizeof ((struct fy_store_config *)0)->root_dir) {
    fprintf(stderr, "ferry-store-bench: directory name too long: %s\n", parent);
    return -1;
  }
  if (!mkdtemp(out)) {
    fprintf(stderr, "ferry-store-bench: mkdtemp in %s: %s\n", parent, strerror(errno));
    return -1;
  }
  return 0;
}

/* ---- smoke ----------------------------------------------------------------- */

static void on_smoke_closed(void *arg) { *(bool *)arg = true; }

/* Reopens the store: a clean recovery with nothing to re-dispatch, and every
 * acknowledged message in its consume queue. */
static int smoke_reopen(const struct opts *o, const char *dir, uint64_t expect) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  struct fy_store_config c;
  store_config(o, dir, &c);
  fy_store *s;
  struct fy_store_recovery rec;
  int err = fy_store_open(&loop, &c, &s, &rec);
  if (err) {
    fprintf(stderr, "smoke: reopen failed: %s\n", fy_strerror(err));
    return 1;
  }
  uint64_t total = 0;
  for (uint32_t q = 0; q < o->queues; q++)
    total += fy_store_max_offset(s, TOPIC, q) - fy_store_min_offset(s, TOPIC, q);
  int rc = 0;
  if (rec.unclean || rec.redispatched != 0 || total != expect) {
    fprintf(stderr, "smoke: after reopen unclean=%d redispatched=%" PRIu64 " messages=%" PRIu64
            " (expected %" PRIu64 ")\n", rec.unclean, rec.redispatched, total, expect);
    rc = 1;
  }
  bool closed = false;
  fy_store_close(s, on_smoke_closed, &closed);
  uv_run(&loop, UV_RUN_DEFAULT);
  fy_store_free(s);
  if (!closed || uv_loop_close(&loop) != 0)
    rc = 1;
  return rc;
}

static int smoke(const struct opts *base) {
  char parent[512];
  if (base->dir[0]) {
    snprintf(parent, sizeof parent, "%s", base->dir);
  } else {
    const char *tmp = getenv("TMPDIR");
    snprintf(parent, sizeof parent, "%s", tmp && *tmp ? tmp : "/tmp");
  }
  struct {
    bool raw, sync;
    uint32_t size;
  } cases[] = {{false, false, 128}, {false, true, 1024}, {true, false, 128}};
  int rc = 0;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0] && rc == 0; i++) {
    struct opts o = *base;
    o.raw = cases[i].raw;
    o.sync = cases[i].sync;
    o.body_size = cases[i].size;
    o.count = 20000;
    o.window = 512;
    o.queues = 4;
    o.warmup_s = 0;
    o.segment_size = 1024 * 1024; /* several segment rolls per case */
    char dir[600];
    if (make_scratch(parent, dir, sizeof dir))
      return 1;
    struct result r;
    int err = run_one(&o, dir, &r);
    print_result(&o, &r);
    if (err || r.acked != o.count || r.failed || r.error) {
      fprintf(stderr, "smoke: case %zu: %s, %" PRIu64 " of %" PRIu64 " acknowledged\n", i,
              fy_strerror(err ? err : r.error), r.acked, o.count);
      rc = 1;
    } else if (r.writes == 0 || r.write_bytes < o.count * (uint64_t)r.record_size ||
               (o.sync && (r.syncs == 0 || r.syncs > r.writes + 1))) {
      fprintf(stderr, "smoke: case %zu: implausible counters writes=%" PRIu64 " bytes=%" PRIu64
              " syncs=%" PRIu64 "\n", i, r.writes, r.write_bytes, r.syncs);
      rc = 1;
    } else if (!o.raw && (r.st.dispatched != r.st.cl_written || r.st.puts != o.count ||
                          r.st.error != 0)) {
      fprintf(stderr, "smoke: case %zu: dispatched %" PRIu64 " of %" PRIu64 " bytes, puts %" PRIu64
              "\n", i, r.st.dispatched, r.st.cl_written, r.st.puts);
      rc = 1;
    } else if (!o.raw) {
      rc = smoke_reopen(&o, dir, o.count);
    }
    if (!base->keep)
      rmtree(dir);
  }
  printf("smoke: %s\n", rc ? "FAILED" : "OK");
  return rc;
}

/* ---- command line ------------------------------------------------------------ */

static void usage(void) {
  fprintf(stderr,
          "usage: ferry-store-bench -d DIR [--size BYTES] [--flush async|sync] [--window N]\n"
          "                         [--duration SEC | --count N] [--warmup SEC] [--queues N]\n"
          "                         [--backend auto|uring|threads] [--path store|commitlog]\n"
          "                         [--no-keys] [--segment-size BYTES] [--keep]\n"
          "                         [--set KEY=VALUE]... (store keys of conf/broker.conf)\n"
          "       ferry-store-bench --smoke [-d DIR]\n"
          "The store is created in a fresh directory under DIR (on the file system to\n"
          "measure) and removed afterwards unless --keep.\n");
}

static int parse_u64(const char *name, const char *v, uint64_t lo, uint64_t hi, uint64_t *out) {
  char *end;
  errno = 0;
  unsigned long long x = strtoull(v, &end, 10);
  if (errno || *end || end == v || x < lo || x > hi) {
    fprintf(stderr, "ferry-store-bench: %s must be a number in [%" PRIu64 ", %" PRIu64 "], not '%s'\n",
            name, lo, hi, v);
    return -1;
  }
  *out = x;
  return 0;
}

static int parse_secs(const char *name, const char *v, double *out) {
  char *end;
  errno = 0;
  double x = strtod(v, &end);
  if (errno || *end || end == v || !(x >= 0 && x <= 86400)) {
    fprintf(stderr, "ferry-store-bench: %s must be seconds in [0, 86400], not '%s'\n", name, v);
    return -1;
  }
  *out = x;
  return 0;
}

static int parse(int argc, char **argv, struct opts *o) {
  static const struct option longopts[] = {
      {"dir", required_argument, 0, 'd'},      {"size", required_argument, 0, 'z'},
      {"flush", required_argument, 0, 'f'},    {"window", required_argument, 0, 'w'},
      {"duration", required_argument, 0, 't'}, {"count", required_argument, 0, 'n'},
      {"warmup", required_argument, 0, 'W'},   {"queues", required_argument, 0, 'q'},
      {"backend", required_argument, 0, 'b'},  {"path", required_argument, 0, 'p'},
      {"no-keys", no_argument, 0, 'K'},        {"segment-size", required_argument, 0, 'g'},
      {"keep", no_argument, 0, 'k'},           {"smoke", no_argument, 0, 'S'},
      {"set", required_argument, 0, 's'},      {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0}};
  *o = (struct opts){.body_size = 128, .window = 4096, .duration_s = 10, .warmup_s = 1,
                     .queues = 8, .backend = FY_AIO_AUTO, .keys = true,
                     .segment_size = 1024ull * 1024 * 1024};
  uint64_t v;
  int c;
  while ((c = getopt_long(argc, argv, "d:h", longopts, NULL)) != -1) {
    switch (c) {
    case 'd': snprintf(o->dir, sizeof o->dir, "%s", optarg); break;
    case 'z':
      if (parse_u64("--size", optarg, 0, BODY_MAX, &v))
        return -1;
      o->body_size = (uint32_t)v;
      break;
    case 'f':
      if (strcmp(optarg, "async") && strcmp(optarg, "sync") && strcmp(optarg, "ASYNC_FLUSH") &&
          strcmp(optarg, "SYNC_FLUSH")) {
        fprintf(stderr, "ferry-store-bench: --flush is async or sync\n");
        return -1;
      }
      o->sync = strcmp(optarg, "sync") == 0 || strcmp(optarg, "SYNC_FLUSH") == 0;
      break;
    case 'w':
      if (parse_u64("--window", optarg, 1, WINDOW_MAX, &v))
        return -1;
      o->window = (uint32_t)v;
      break;
    case 't':
      if (parse_secs("--duration", optarg, &o->duration_s))
        return -1;
      break;
    case 'n':
      if (parse_u64("--count", optarg, 1, UINT64_MAX, &o->count))
        return -1;
      break;
    case 'W':
      if (parse_secs("--warmup", optarg, &o->warmup_s))
        return -1;
      break;
    case 'q':
      if (parse_u64("--queues", optarg, 1, QUEUES_MAX, &v))
        return -1;
      o->queues = (uint32_t)v;
      break;
    case 'b':
      if (strcmp(optarg, "auto") == 0)
        o->backend = FY_AIO_AUTO;
      else if (strcmp(optarg, "uring") == 0 || strcmp(optarg, "io_uring") == 0)
        o->backend = FY_AIO_URING;
      else if (strcmp(optarg, "threads") == 0)
        o->backend = FY_AIO_THREADS;
      else {
        fprintf(stderr, "ferry-store-bench: --backend is auto, uring or threads\n");
        return -1;
      }
      break;
    case 'p':
      if (strcmp(optarg, "store") && strcmp(optarg, "commitlog")) {
        fprintf(stderr, "ferry-store-bench: --path is store or commitlog\n");
        return -1;
      }
      o->raw = strcmp(optarg, "commitlog") == 0;
      break;
    case 'K': o->keys = false; break;
    case 'g':
      if (parse_u64("--segment-size", optarg, 64 * 1024, UINT64_C(1) << 36, &o->segment_size))
        return -1;
      break;
    case 'k': o->keep = true; break;
    case 'S': o->smoke = true; break;
    case 's':
      if (o->nsets == SETS_MAX) {
        fprintf(stderr, "ferry-store-bench: at most %d --set options\n", SETS_MAX);
        return -1;
      }
      o->sets[o->nsets++] = optarg;
      break;
    default: usage(); return -1;
    }
  }
  if (optind != argc || (!o->smoke && !o->dir[0])) {
    usage();
    return -1;
  }
  if (o->segment_size % 4096) {
    fprintf(stderr, "ferry-store-bench: --segment-size must be a multiple of 4096\n");
    return -1;
  }
  return 0;
}

int main(int argc, char **argv) {
  struct opts o;
  if (parse(argc, argv, &o))
    return 2;
  fy_log_set_level(FY_LOG_WARN);
  if (o.smoke)
    return smoke(&o);
  char dir[600];
  if (make_scratch(o.dir, dir, sizeof dir))
    return 1;
  struct result r;
  int err = run_one(&o, dir, &r);
  if (!o.keep)
    rmtree(dir);
  else
    fprintf(stderr, "ferry-store-bench: store kept in %s\n", dir);
  print_result(&o, &r);
  if (err) {
    fprintf(stderr, "ferry-store-bench: %s\n", fy_strerror(err));
    return 1;
  }
  return 0;
}
