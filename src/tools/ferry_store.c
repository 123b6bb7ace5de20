/*
 * ferry-store: offline tool for a broker's store directory.
 *
 *   ferry-store verify -d DIR [--acked FILE]
 *       Opens the store (running recovery exactly as the broker would),
 *       walks the whole commit log validating every record, checks that
 *       every consume-queue entry points at the record it describes and that
 *       the queues and the log agree, and, with --acked, that every record
 *       listed in FILE (lines "ACK seq queueId queueOffset phys", as printed
 *       by `write`) is present and intact. Exit 0 when all holds.
 *
 *   ferry-store write -d DIR [--sync] [--count N] [--size BYTES]
 *                     [--inflight N] [--queues N] [--segment-size BYTES] [--start-seq N]
 *       Appends numbered test messages to topic FerryStoreTest and prints one
 *       "ACK seq queueId queueOffset phys" line per message as soon as it is
 *       acknowledged (after fdatasync with --sync). Used by the crash tests.
 *
 * Message bodies are derived from their sequence number, so verify can tell
 * an intact body from a damaged one without any other record.
 *
 * Retention never runs here: the tool checks that records survive, so it
 * must not delete any itself, however full the disk under DIR is (a broker
 * with cleanFileForciblyEnable=true deletes unexpired segments from 85% used).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/err.h"
#include "common/log.h"
#include "store/consumequeue.h"
#include "store/store.h"

#define TOPIC "FerryStoreTest"
#define MAX_SIZE (1024 * 1024)

struct opts {
  struct fy_store_config cfg;
  const char *acked;
  uint64_t count;
  uint32_t size;
  uint32_t inflight;
  uint32_t queues;
  uint64_t start_seq;
};

static void usage(void) {
  fprintf(stderr,
          "usage: ferry-store verify -d DIR [--acked FILE]\n"
          "       ferry-store write -d DIR [--sync] [--count N] [--size BYTES] [--inflight N]\n"
          "                         [--queues N] [--segment-size BYTES] [--start-seq N]\n");
}

static uint64_t parse_u64(const char *name, const char *v) {
  char *end;
  errno = 0;
  unsigned long long x = strtoull(v, &end, 10);
  if (errno || *end || end == v) {
    fprintf(stderr, "ferry-store: bad value for %s: '%s'\n", name, v);
    exit(2);
  }
  return x;
}

static int parse(int argc, char **argv, struct opts *o) {
  static const struct option longopts[] = {
      {"dir", required_argument, 0, 'd'},      {"acked", required_argument, 0, 'a'},
      {"sync", no_argument, 0, 's'},           {"count", required_argument, 0, 'n'},
      {"size", required_argument, 0, 'z'},     {"inflight", required_argument, 0, 'i'},
      {"queues", required_argument, 0, 'q'},   {"segment-size", required_argument, 0, 'g'},
      {"start-seq", required_argument, 0, 'S'}, {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0}};
  fy_store_config_defaults(&o->cfg);
  o->cfg.commitlog_segment_size = 64ull * 1024 * 1024;
  o->cfg.cq_file_size = 100000 * FY_CQ_ENTRY_SIZE;
  o->cfg.index_slots = 100003;
  o->cfg.index_entries = 400000;
  o->cfg.max_message_size = MAX_SIZE;
  o->cfg.write_buffer_size = 4 * 1024 * 1024;
  o->cfg.clean_interval_ms = 60000;
  o->cfg.file_reserved_hours = 24 * 365 * 10;
  o->cfg.clean_forcibly = false;
  o->count = UINT64_MAX;
  o->size = 128;
  o->inflight = 64;
  o->queues = 4;
  bool have_dir = false;
  int c;
  while ((c = getopt_long(argc, argv, "d:h", longopts, NULL)) != -1) {
    switch (c) {
    case 'd':
      snprintf(o->cfg.root_dir, sizeof o->cfg.root_dir, "%s", optarg);
      have_dir = true;
      break;
    case 'a': o->acked = optarg; break;
    case 's': o->cfg.flush_disk_type = FY_SYNC_FLUSH; break;
    case 'n': o->count = parse_u64("--count", optarg); break;
    case 'z': o->size = (uint32_t)parse_u64("--size", optarg); break;
    case 'i': o->inflight = (uint32_t)parse_u64("--inflight", optarg); break;
    case 'q': o->queues = (uint32_t)parse_u64("--queues", optarg); break;
    case 'g': o->cfg.commitlog_segment_size = parse_u64("--segment-size", optarg); break;
    case 'S': o->start_seq = parse_u64("--start-seq", optarg); break;
    default: usage(); return -1;
    }
  }
  if (!have_dir || o->size < 16 || o->size > MAX_SIZE || o->queues == 0 || o->inflight == 0) {
    usage();
    return -1;
  }
  return 0;
}

/* Deterministic body for a sequence number: "seq=<n>;" then a byte pattern. */
static uint32_t make_body(uint64_t seq, uint8_t *buf, uint32_t size) {
  int n = snprintf((char *)buf, size, "seq=%" PRIu64 ";", seq);
  for (uint32_t i = (uint32_t)n; i < size; i++)
    buf[i] = (uint8_t)('a' + (seq * 31 + i) % 26);
  return size;
}

static bool body_ok(const struct fy_msg *m, uint64_t *seq_out) {
  char head[32];
  size_t n = m->body_len < sizeof head - 1 ? m->body_len : sizeof head - 1;
  memcpy(head, m->body, n);
  head[n] = '\0';
  uint64_t seq;
  if (sscanf(head, "seq=%" SCNu64 ";", &seq) != 1)
    return false;
  static uint8_t expect[MAX_SIZE];
  make_body(seq, expect, m->body_len);
  *seq_out = seq;
  return memcmp(expect, m->body, m->body_len) == 0;
}

/* ---- write ---- */

struct writer {
  struct opts *o;
  fy_store *store;
  uv_loop_t *loop;
  uv_timer_t retry;
  uint64_t next_seq, acked, end_seq;
  uint32_t inflight;
  uint8_t *body;
  bool stopping;
  int status;
};

struct put {
  struct writer *w;
  uint64_t seq;
  uint32_t queue_id;
  uint64_t queue_offset;
};

static void pump(struct writer *w);

static void on_closed(void *arg) {
  struct writer *w = arg;
  uv_close((uv_handle_t *)&w->retry, NULL);
}

static void finish(struct writer *w) {
  if (w->stopping)
    return;
  w->stopping = true;
  uv_timer_stop(&w->retry);
  fy_store_close(w->store, on_closed, w);
}

static void on_ack(void *arg, int status, uint64_t phys, uint64_t size) {
  struct put *p = arg;
  struct writer *w = p->w;
  w->inflight--;
  if (status) {
    fprintf(stderr, "ferry-store: put of seq %" PRIu64 " failed: %s\n", p->seq,
            fy_strerror(status));
    w->status = 1;
    free(p);
    finish(w);
    return;
  }
  (void)size;
  printf("ACK %" PRIu64 " %u %" PRIu64 " %" PRIu64 "\n", p->seq, p->queue_id, p->queue_offset,
         phys);
  fflush(stdout);
  w->acked++;
  free(p);
  if (w->acked == w->end_seq - w->o->start_seq)
    finish(w);
  else
    pump(w);
}

static void on_retry(uv_timer_t *t) { pump(t->data); }

static void pump(struct writer *w) {
  while (!w->stopping && w->inflight < w->o->inflight && w->next_seq < w->end_seq) {
    struct put *p = malloc(sizeof *p);
    p->w = w;
    p->seq = w->next_seq;
    p->queue_id = (uint32_t)(p->seq % w->o->queues);
    char props[64];
    size_t plen = 0;
    char tag[16], key[32];
    int tl = snprintf(tag, sizeof tag, "T%" PRIu64, p->seq % 3);
    int kl = snprintf(key, sizeof key, "k%" PRIu64, p->seq);
    fy_props_add(props, sizeof props, &plen, FY_PROP_TAGS, tag, (size_t)tl);
    fy_props_add(props, sizeof props, &plen, FY_PROP_KEYS, key, (size_t)kl);
    struct fy_msg m = {0};
    m.topic = TOPIC;
    m.topic_len = (uint16_t)strlen(TOPIC);
    m.queue_id = p->queue_id;
    m.body = w->body;
    m.body_len = make_body(p->seq, w->body, w->o->size);
    m.props = props;
    m.props_len = (uint16_t)plen;
    m.born_ts_ms = (int64_t)time(NULL) * 1000;
    m.born_host.ip[0] = 127;
    m.born_host.ip[3] = 1;
    m.store_host = m.born_host;
    int err = fy_store_put(w->store, &m, 1, on_ack, p);
    if (err == -FY_EBUSY) {
      free(p);
      uv_timer_start(&w->retry, on_retry, 1, 0);
      return;
    }
    if (err) {
      fprintf(stderr, "ferry-store: put failed: %s\n", fy_strerror(err));
      free(p);
      w->status = 1;
      finish(w);
      return;
    }
    p->queue_offset = m.queue_offset;
    w->next_seq++;
    w->inflight++;
  }
}

static int cmd_write(struct opts *o) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  struct writer w = {.o = o, .loop = &loop};
  struct fy_store_recovery rec;
  int err = fy_store_open(&loop, &o->cfg, &w.store, &rec);
  if (err) {
    fprintf(stderr, "ferry-store: cannot open %s: %s\n", o->cfg.root_dir, fy_strerror(err));
    return 1;
  }
  w.body = malloc(o->size);
  w.next_seq = o->start_seq;
  w.end_seq = o->count == UINT64_MAX ? UINT64_MAX : o->start_seq + o->count;
  uv_timer_init(&loop, &w.retry);
  w.retry.data = &w;
  if (w.end_seq == w.next_seq)
    finish(&w);
  else
    pump(&w);
  uv_run(&loop, UV_RUN_DEFAULT);
  fy_store_free(w.store);
  free(w.body);
  if (uv_loop_close(&loop) != 0) {
    fprintf(stderr, "ferry-store: handles left open at exit\n");
    return 1;
  }
  return w.status;
}

/* ---- verify ---- */

static void on_verify_closed(void *arg) { *(bool *)arg = true; }

static int fail(const char *fmt, uint64_t a, uint64_t b) {
  fprintf(stderr, "verify: ");
  fprintf(stderr, fmt, a, b);
  fprintf(stderr, "\n");
  return 1;
}

/* Walks the log from min to written: every entry must be a valid record or
 * a blank marker, ending exactly at written. Counts records per queue. */
static int check_log(fy_store *s, uint64_t *per_queue, uint32_t nqueues, uint64_t *records) {
  fy_commitlog *cl = fy_store_commitlog(s);
  uint64_t off = fy_commitlog_min(cl), end = fy_commitlog_written(cl);
  while (off < end) {
    struct fy_cl_slice sl;
    enum fy_record_kind kind;
    struct fy_msg m;
    int64_t r = fy_commitlog_read_record(cl, off, &sl, &kind, &m);
    if (r < 0)
      return fail("invalid record at %" PRIu64 " (error %" PRId64 ")", off, (uint64_t)r);
    if (kind == FY_REC_BLANK) {
      fy_cl_slice_release(&sl);
      off = fy_commitlog_next_segment(cl, off);
      continue;
    }
    uint64_t seq;
    if (!body_ok(&m, &seq)) {
      fy_cl_slice_release(&sl);
      return fail("damaged body at %" PRIu64 "%.0" PRIu64, off, 0);
    }
    if (m.queue_id < nqueues && m.topic_len == strlen(TOPIC))
      per_queue[m.queue_id]++;
    fy_cl_slice_release(&sl);
    off += (uint64_t)r;
    (*records)++;
  }
  if (off != end)
    return fail("log walk ended at %" PRIu64 ", written is %" PRIu64, off, end);
  return 0;
}

/* Every consume-queue entry must point at its own record. */
static int check_queue(fy_store *s, uint32_t q, uint64_t expect_count) {
  uint64_t min = fy_store_min_offset(s, TOPIC, q), max = fy_store_max_offset(s, TOPIC, q);
  if (max - min != expect_count)
    return fail("queue %" PRIu64 " has %" PRIu64 " entries, log disagrees", q, max - min);
  struct fy_get_msg msgs[32];
  for (uint64_t off = min; off < max;) {
    struct fy_get_result res;
    fy_store_get(s, TOPIC, q, off, 32, 1 << 30, NULL, 0, msgs, &res);
    if (res.status != FY_GET_FOUND || res.count == 0)
      return fail("queue entry %" PRIu64 " of queue %" PRIu64 " not readable", off, q);
    for (size_t i = 0; i < res.count; i++) {
      enum fy_record_kind kind;
      struct fy_msg m;
      if (fy_record_decode(msgs[i].slice.data, msgs[i].slice.len, msgs[i].slice.offset, &kind,
                           &m) <= 0 ||
          m.queue_id != q || m.queue_offset != msgs[i].queue_offset ||
          msgs[i].queue_offset != off + i) {
        fy_store_get_release(msgs, res.count);
        return fail("queue %" PRIu64 " entry %" PRIu64 " points at the wrong record", q, off + i);
      }
    }
    fy_store_get_release(msgs, res.count);
    off = res.next_offset;
  }
  return 0;
}

static int check_acked(fy_store *s, const char *path, uint64_t *n) {
  FILE *f = fopen(path, "r");
  if (!f)
    return fail("cannot open acked file%.0" PRIu64 "%.0" PRIu64, 0, 0);
  char line[256];
  int rc = 0;
  while (!rc && fgets(line, sizeof line, f)) {
    uint64_t seq, qoff, phys;
    unsigned q;
    if (sscanf(line, "ACK %" SCNu64 " %u %" SCNu64 " %" SCNu64, &seq, &q, &qoff, &phys) != 4)
      continue; /* a line cut by the kill */
    struct fy_get_msg msg;
    struct fy_get_result res;
    fy_store_get(s, TOPIC, q, qoff, 1, 1 << 30, NULL, 0, &msg, &res);
    if (res.status != FY_GET_FOUND || res.count != 1) {
      rc = fail("acknowledged seq %" PRIu64 " (queue offset %" PRIu64 ") is missing", seq, qoff);
      break;
    }
    enum fy_record_kind kind;
    struct fy_msg m;
    uint64_t got;
    if (fy_record_decode(msg.slice.data, msg.slice.len, msg.slice.offset, &kind, &m) <= 0 ||
        !body_ok(&m, &got) || got != seq || msg.slice.offset != phys)
      rc = fail("acknowledged seq %" PRIu64 " is damaged or moved (phys %" PRIu64 ")", seq, phys);
    fy_store_get_release(&msg, 1);
    (*n)++;
  }
  fclose(f);
  return rc;
}

static int cmd_verify(struct opts *o) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  fy_store *s;
  struct fy_store_recovery rec;
  int err = fy_store_open(&loop, &o->cfg, &s, &rec);
  if (err) {
    fprintf(stderr, "ferry-store: cannot open %s: %s\n", o->cfg.root_dir, fy_strerror(err));
    return 1;
  }
  uint64_t per_queue[256] = {0}, records = 0, acked = 0;
  uint32_t nq = o->queues > 256 ? 256 : o->queues;
  int rc = check_log(s, per_queue, nq, &records);
  for (uint32_t q = 0; !rc && q < nq; q++)
    rc = check_queue(s, q, per_queue[q]);
  if (!rc && o->acked)
    rc = check_acked(s, o->acked, &acked);
  printf("verify: %s records=%" PRIu64 " acked_checked=%" PRIu64 " end=%" PRIu64
         " dropped_bytes=%" PRIu64 " redispatched=%" PRIu64 " unclean=%d\n",
         rc ? "FAILED" : "OK", records, acked, rec.cl.end, rec.cl.dropped_bytes,
         rec.redispatched, rec.unclean);
  bool closed = false;
  fy_store_close(s, on_verify_closed, &closed);
  uv_run(&loop, UV_RUN_DEFAULT);
  fy_store_free(s);
  if (uv_loop_close(&loop) != 0)
    rc = 1;
  return rc;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage();
    return 2;
  }
  const char *cmd = argv[1];
  struct opts o = {0};
  if (parse(argc - 1, argv + 1, &o))
    return 2;
  setvbuf(stdout, NULL, _IOFBF, 1 << 16);
  if (strcmp(cmd, "write") == 0)
    return cmd_write(&o);
  if (strcmp(cmd, "verify") == 0)
    return cmd_verify(&o);
  usage();
  return 2;
}
