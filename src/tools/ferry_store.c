/*
 * ferry-store: offline tool for a broker's store directory.
 *
 *   ferry-store verify [-c broker.conf] [-d DIR] [--segment-size BYTES]
 *                      [--acked FILE] [--quiet]
 *       Checks the store of a stopped broker: DIR, or the config file's
 *       storePathRootDir (-d wins). A DIR without commitlog/ is refused,
 *       never created.
 *
 *       Sizes. With -c, the broker's own parser reads the file and the
 *       store keys apply (mappedFileSizeCommitLog, mappedFileSizeConsumeQueue,
 *       messageIndexEnable, maxMessageSize, ...); --segment-size overrides
 *       mappedFileSizeCommitLog. Without -c, the sizes come from the files:
 *       segments are named by their start offset, so two of them give the
 *       segment size, and consume-queue files all have the same size (an
 *       empty one, left by a crash while it was created, tells nothing).
 *       The index is used if index/ exists. Files that disagree with each
 *       other, or with the config, stop verify before the store is opened:
 *       opening would resize a consume-queue file (losing entries) or
 *       extend short segments. Neither happens because of a wrong size: a
 *       lone segment, or none of the segment size, is refused too.
 *
 *       Recovery. The store is opened as the broker's next start would open
 *       it, as an ASYNC_MASTER: a torn tail after a crash is cut off
 *       (dropped_bytes), queues are cut back and re-dispatched, and the
 *       checkpoint is written on close. On a SYNC_MASTER's store this makes
 *       records no slave acknowledged visible. Retention never runs here.
 *
 *       Checks.
 *       - Every entry from the log's min to its end is a valid record or
 *         end-of-segment marker (magic, length, CRC, offset).
 *       - Every consume queue on disk (consumequeue/<topic>/<queueId>): each
 *         entry whose record is still in the log points at a valid record
 *         of that topic, queue id and queue offset, of the entry's size and
 *         tag hash, after the previous entry's record; no entry is missing
 *         in between. Entries below the log's min are counted as expired
 *         (retention deleted their segments).
 *       - Every record that dispatch puts in a queue (all but a
 *         transaction's prepared or rolled-back messages; a delayed message
 *         is stored under SCHEDULE_TOPIC_XXXX and queued there) has its
 *         entry: per queue, the entries and the log's records agree one to
 *         one. Records of a topic without a consume queue on disk, or older
 *         than their queue's first entry (a deleted topic, perhaps created
 *         again), cannot be checked against a queue: they are counted as
 *         unqueued, and do not fail verify.
 *       - With --acked FILE (the crash tests): every record listed in FILE
 *         (lines "ACK seq queueId queueOffset phys", as `write` prints them)
 *         is present and intact, and every record of topic FerryStoreTest
 *         carries the body `write` derives from its sequence number. Without
 *         it, bodies are opaque (the CRC covers them).
 *       Prints one line per topic (not with --quiet), then
 *         verify: OK|FAILED records=N acked_checked=N end=OFFSET
 *                 dropped_bytes=N redispatched=N unclean=0|1
 *       Problems go to stderr, naming the topic, queue and offset. Exit 0
 *       when everything holds, 1 when a check fails (or the store cannot be
 *       opened: a running broker holds its lock), 2 for usage errors, a
 *       config file that does not load, or a DIR that holds no store.
 *
 *   ferry-store write -d DIR [--sync] [--count N] [--size BYTES]
 *                     [--inflight N] [--queues N] [--segment-size BYTES] [--start-seq N]
 *       Appends numbered test messages to topic FerryStoreTest and prints one
 *       "ACK seq queueId queueOffset phys" line per message as soon as it is
 *       acknowledged (after fdatasync with --sync). Used by the crash tests.
 *       Segments are 64 MiB unless --segment-size says otherwise.
 *
 * Message bodies written by `write` are derived from their sequence number,
 * so verify --acked can tell an intact body from a damaged one without any
 * other record.
 *
 * Retention never runs here: the tool checks that records survive, so it
 * must not delete any itself, however full the disk under DIR is (a broker
 * with cleanFileForciblyEnable=true deletes unexpired segments from 85% used).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "broker/broker_config.h"
#include "common/err.h"
#include "common/log.h"
#include "common/strmap.h"
#include "store/consumequeue.h"
#include "store/store.h"

#define TOPIC "FerryStoreTest"
#define MAX_SIZE (1024 * 1024)
#define WRITE_SEGMENT_SIZE (64ull * 1024 * 1024)
#define PROBLEMS_SHOWN_MAX 100 /* problems printed; the rest are only counted */

enum { EXIT_OK = 0, EXIT_FAILED = 1, EXIT_USAGE = 2 };

struct opts {
  const char *cmd;
  const char *dir;       /* -d */
  const char *conf;      /* -c, verify only */
  uint64_t segment_size; /* --segment-size; 0 if not given */
  const char *acked;
  bool quiet;
  bool sync;
  bool write_only;       /* an option only write takes was given */
  uint64_t count;
  uint32_t size;
  uint32_t inflight;
  uint32_t queues;
  uint64_t start_seq;
  struct fy_store_config cfg; /* write's store config, made by cmd_write */
};

static void usage(void) {
  fprintf(stderr,
          "usage: ferry-store verify [-c broker.conf] [-d DIR] [--segment-size BYTES]\n"
          "                          [--acked FILE] [--quiet]\n"
          "       ferry-store write -d DIR [--sync] [--count N] [--size BYTES] [--inflight N]\n"
          "                         [--queues N] [--segment-size BYTES] [--start-seq N]\n"
          "verify checks a stopped broker's store: DIR, or storePathRootDir of the config\n"
          "file (-d wins). Without -c the segment and consume-queue file sizes are read off\n"
          "the files. It first runs recovery as the broker's next start would: a torn tail\n"
          "left by a crash is cut off (dropped_bytes), and a SYNC_MASTER's unacknowledged\n"
          "records become visible. Then it checks every record, every consume-queue entry,\n"
          "and that each queue holds exactly the log's records of it. Exit 0: all holds;\n"
          "1: a check failed; 2: usage error, bad config, or no store in DIR.\n");
}

static uint64_t parse_u64(const char *name, const char *v) {
  char *end;
  errno = 0;
  unsigned long long x = strtoull(v, &end, 10);
  if (errno || *end || end == v || v[0] == '-') {
    fprintf(stderr, "ferry-store: bad value for %s: '%s'\n", name, v);
    exit(EXIT_USAGE);
  }
  return x;
}

static int parse(int argc, char **argv, struct opts *o) {
  static const struct option longopts[] = {
      {"dir", required_argument, 0, 'd'},       {"config", required_argument, 0, 'c'},
      {"acked", required_argument, 0, 'a'},     {"quiet", no_argument, 0, 'q'},
      {"sync", no_argument, 0, 's'},            {"count", required_argument, 0, 'n'},
      {"size", required_argument, 0, 'z'},      {"inflight", required_argument, 0, 'i'},
      {"queues", required_argument, 0, 'Q'},    {"segment-size", required_argument, 0, 'g'},
      {"start-seq", required_argument, 0, 'S'}, {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0}};
  o->count = UINT64_MAX;
  o->size = 128;
  o->inflight = 64;
  o->queues = 4;
  int c;
  while ((c = getopt_long(argc, argv, "c:d:hq", longopts, NULL)) != -1) {
    switch (c) {
    case 'd': o->dir = optarg; break;
    case 'c': o->conf = optarg; break;
    case 'a': o->acked = optarg; break;
    case 'q': o->quiet = true; break;
    case 'g': o->segment_size = parse_u64("--segment-size", optarg); break;
    case 's': o->sync = o->write_only = true; break;
    case 'n': o->count = parse_u64("--count", optarg), o->write_only = true; break;
    case 'z': o->size = (uint32_t)parse_u64("--size", optarg), o->write_only = true; break;
    case 'i': o->inflight = (uint32_t)parse_u64("--inflight", optarg), o->write_only = true; break;
    case 'Q': o->queues = (uint32_t)parse_u64("--queues", optarg), o->write_only = true; break;
    case 'S': o->start_seq = parse_u64("--start-seq", optarg), o->write_only = true; break;
    default: usage(); return -1;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "ferry-store: unexpected argument '%s'\n", argv[optind]);
    usage();
    return -1;
  }
  if (o->dir && strlen(o->dir) >= sizeof o->cfg.root_dir) {
    fprintf(stderr, "ferry-store: -d: path longer than %zu bytes\n", sizeof o->cfg.root_dir - 1);
    return -1;
  }
  bool ok;
  if (strcmp(o->cmd, "verify") == 0)
    ok = (o->dir || o->conf) && !o->write_only;
  else
    ok = o->dir && !o->conf && !o->acked && !o->quiet && o->size >= 16 && o->size <= MAX_SIZE &&
         o->queues > 0 && o->inflight > 0;
  if (!ok) {
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
  if (m->body_len > MAX_SIZE)
    return false;
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

/* The store config write runs with: small files, retention off. */
static void write_config(struct opts *o) {
  struct fy_store_config *c = &o->cfg;
  fy_store_config_defaults(c);
  snprintf(c->root_dir, sizeof c->root_dir, "%s", o->dir);
  c->commitlog_segment_size = o->segment_size ? o->segment_size : WRITE_SEGMENT_SIZE;
  c->cq_file_size = 100000 * FY_CQ_ENTRY_SIZE;
  c->index_slots = 100003;
  c->index_entries = 400000;
  c->max_message_size = MAX_SIZE;
  c->write_buffer_size = 4 * 1024 * 1024;
  c->clean_interval_ms = 60000;
  c->file_reserved_hours = 24 * 365 * 10;
  c->clean_forcibly = false;
  if (o->sync)
    c->flush_disk_type = FY_SYNC_FLUSH;
}

static int cmd_write(struct opts *o) {
  write_config(o);
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

/* ---- verify: the store's layout, read before anything is opened ---- */

static bool is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* A file name of 20 decimal digits (segments and consume-queue files). */
static bool name20(const char *name, uint64_t *v_out) {
  uint64_t v = 0;
  for (int i = 0; i < 20; i++) {
    if (name[i] < '0' || name[i] > '9')
      return false;
    uint64_t d = (uint64_t)(name[i] - '0');
    if (v > (UINT64_MAX - d) / 10)
      return false;
    v = v * 10 + d;
  }
  if (name[20] != '\0')
    return false;
  *v_out = v;
  return true;
}

struct seg_file {
  uint64_t start, size;
};

static int cmp_seg(const void *a, const void *b) {
  uint64_t x = ((const struct seg_file *)a)->start, y = ((const struct seg_file *)b)->start;
  return x < y ? -1 : x > y;
}

/* The commit log's segment files, sorted by start offset (names the log
 * would ignore are ignored). Returns 0, or a negative errno. */
static int list_segments(const char *dir, struct seg_file **out, size_t *n_out) {
  DIR *d = opendir(dir);
  if (!d)
    return -errno;
  struct seg_file *f = NULL;
  size_t n = 0, cap = 0;
  int err = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) { /* bounded by the directory */
    uint64_t start;
    if (!name20(e->d_name, &start))
      continue;
    struct stat st;
    if (fstatat(dirfd(d), e->d_name, &st, 0) != 0) {
      err = -errno;
      break;
    }
    if (n == cap) {
      cap = cap ? cap * 2 : 64;
      struct seg_file *g = realloc(f, cap * sizeof *g);
      if (!g) {
        err = -ENOMEM;
        break;
      }
      f = g;
    }
    f[n++] = (struct seg_file){start, (uint64_t)st.st_size};
  }
  closedir(d);
  if (err) {
    free(f);
    return err;
  }
  qsort(f, n, sizeof *f, cmp_seg);
  *out = f;
  *n_out = n;
  return 0;
}

/*
 * Settles the segment size: *size if given (config or --segment-size),
 * else the distance between the first two segments. The files must agree
 * with it as fy_commitlog_open expects (names on the grid without gaps, none
 * larger), and at least one must have exactly that size: the log extends
 * short segments at the tail, which must not happen on a wrong size.
 * Returns an exit status.
 */
static int settle_segment_size(const char *root, bool given, uint64_t *size, bool *has_data) {
  char dir[600];
  snprintf(dir, sizeof dir, "%s/commitlog", root);
  struct seg_file *f = NULL;
  size_t n = 0;
  int err = list_segments(dir, &f, &n);
  if (err) {
    fprintf(stderr, "ferry-store: cannot list %s: %s\n", dir, fy_strerror(err));
    return EXIT_FAILED;
  }
  int rc = EXIT_OK;
  if (n == 0) {
    fprintf(stderr, "ferry-store: %s holds no segment file: no store to verify\n", dir);
    rc = EXIT_USAGE;
    goto out;
  }
  if (!given && n == 1) {
    fprintf(stderr,
            "ferry-store: %s holds one segment file (%020" PRIu64 ", %" PRIu64 " bytes): "
            "its size does not tell the segment size; pass -c broker.conf or --segment-size\n",
            dir, f[0].start, f[0].size);
    rc = EXIT_FAILED;
    goto out;
  }
  uint64_t seg = given ? *size : f[1].start - f[0].start;
  if (seg < 4096 || seg % 4096 != 0 || seg > (UINT64_C(1) << 40)) {
    if (given)
      fprintf(stderr, "ferry-store: segment size %" PRIu64 " is not a multiple of 4096 "
              "between 4096 and 1 TiB\n", seg);
    else
      fprintf(stderr, "ferry-store: %s: segments %020" PRIu64 " and %020" PRIu64
              " are not one segment size apart\n", dir, f[0].start, f[1].start);
    rc = given ? EXIT_USAGE : EXIT_FAILED;
    goto out;
  }
  const char *why = given ? "the log was not written with segments of" : "segments disagree on";
  bool full_seen = false;
  for (size_t i = 0; i < n && rc == EXIT_OK; i++) {
    full_seen |= f[i].size == seg;
    const char *bad = NULL;
    if (f[i].start % seg != 0)
      bad = "starts off the segment grid";
    else if (i > 0 && f[i].start != f[i - 1].start + seg)
      bad = "does not follow the previous segment (a gap)";
    else if (f[i].size > seg)
      bad = "is larger than a segment";
    if (bad) {
      fprintf(stderr,
              "ferry-store: %s/%020" PRIu64 " (%" PRIu64 " bytes) %s: %s %" PRIu64
              " bytes (%s); nothing was changed\n",
              dir, f[i].start, f[i].size, bad, why, seg,
              given ? "mappedFileSizeCommitLog or --segment-size" : "detected from the names");
      rc = EXIT_FAILED;
    }
  }
  if (rc == EXIT_OK && !full_seen) {
    fprintf(stderr, "ferry-store: %s: no segment file is %" PRIu64 " bytes (%s), and opening "
            "would extend the shorter ones; nothing was changed\n", dir, seg,
            given ? "mappedFileSizeCommitLog or --segment-size" : "detected from the names");
    rc = EXIT_FAILED;
  }
  *size = seg;
  /* A written segment never starts with zero bytes. */
  char path[640];
  snprintf(path, sizeof path, "%s/%020" PRIu64, dir, f[0].start);
  static const uint8_t zeros[FY_BLANK_SIZE];
  uint8_t head[FY_BLANK_SIZE] = {0};
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    *has_data = pread(fd, head, sizeof head, 0) > 0 && memcmp(head, zeros, sizeof head) != 0;
    close(fd);
  }
out:
  free(f);
  return rc;
}

struct queue_dir {
  char *topic;
  uint32_t queue_id;
};

struct layout {
  struct queue_dir *queues; /* every consumequeue/<topic>/<queueId>, as the store loads them */
  size_t nqueues, cap;
  uint32_t cq_file_size;    /* 0 until a file shows it */
  char cq_ref[1500];        /* the file that showed it */
  int rc;                   /* exit status so far */
};

static int cmp_queue_dir(const void *a, const void *b) {
  const struct queue_dir *x = a, *y = b;
  int c = strcmp(x->topic, y->topic);
  return c ? c : (x->queue_id > y->queue_id) - (x->queue_id < y->queue_id);
}

static bool all_digits(const char *s, size_t max_len) {
  size_t n = strlen(s);
  if (n == 0 || n > max_len)
    return false;
  for (size_t i = 0; i < n; i++)
    if (s[i] < '0' || s[i] > '9')
      return false;
  return true;
}

/* Checks the sizes of one queue's files against l->cq_file_size (set from
 * the first nonempty file when not given). Empty files tell nothing: a
 * crash between creating and sizing one leaves it so, and the queue sizes
 * it when opened. */
static void scan_queue_files(struct layout *l, const char *qdir, bool given) {
  DIR *d = opendir(qdir);
  if (!d)
    return; /* the store's open reports it */
  struct dirent *e;
  while ((e = readdir(d)) != NULL && l->rc == EXIT_OK) { /* bounded by the directory */
    uint64_t off;
    struct stat st;
    if (!name20(e->d_name, &off) || fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
        !S_ISREG(st.st_mode) || st.st_size == 0)
      continue;
    uint64_t size = (uint64_t)st.st_size;
    if (!l->cq_file_size) {
      if (size % FY_CQ_ENTRY_SIZE != 0 || size < 16 * FY_CQ_ENTRY_SIZE ||
          size > (uint64_t)FY_CQ_ENTRIES_PER_FILE_MAX * FY_CQ_ENTRY_SIZE) {
        fprintf(stderr, "ferry-store: %s/%s is %" PRIu64 " bytes: not a consume-queue file "
                "size; pass -c broker.conf\n", qdir, e->d_name, size);
        l->rc = EXIT_FAILED;
        break;
      }
      l->cq_file_size = (uint32_t)size;
      snprintf(l->cq_ref, sizeof l->cq_ref, "%s/%s", qdir, e->d_name);
    }
    if (size == l->cq_file_size && off % size == 0)
      continue;
    if (given)
      fprintf(stderr,
              "ferry-store: %s/%s is %" PRIu64 " bytes, but mappedFileSizeConsumeQueue is %" PRIu32
              " (files of that size, named by multiples of it): the queue was written with "
              "another size, or the file was damaged (opening would resize it and lose "
              "entries); nothing was changed\n",
              qdir, e->d_name, size, l->cq_file_size);
    else
      fprintf(stderr,
              "ferry-store: consume-queue files disagree: %s/%s is %" PRIu64
              " bytes, %s is %" PRIu32 " bytes (or a name is not a multiple of the size): "
              "cannot tell mappedFileSizeConsumeQueue; pass -c broker.conf; nothing was changed\n",
              qdir, e->d_name, size, l->cq_ref, l->cq_file_size);
    l->rc = EXIT_FAILED;
  }
  closedir(d);
}

/* Lists every consume queue under root (the directories the store loads:
 * topics of at most FY_TOPIC_MAX bytes not starting with '.', queue ids of
 * at most 9 digits) and checks their file sizes. */
static void scan_queues(struct layout *l, const char *root, bool given) {
  char dir[600];
  snprintf(dir, sizeof dir, "%s/consumequeue", root);
  DIR *d = opendir(dir);
  if (!d) {
    if (errno != ENOENT) {
      fprintf(stderr, "ferry-store: cannot list %s: %s\n", dir, strerror(errno));
      l->rc = EXIT_FAILED;
    }
    return;
  }
  struct dirent *te;
  while ((te = readdir(d)) != NULL && l->rc == EXIT_OK) { /* bounded by the directory */
    if (te->d_name[0] == '.' || strlen(te->d_name) > FY_TOPIC_MAX)
      continue;
    char tdir[900];
    snprintf(tdir, sizeof tdir, "%s/%s", dir, te->d_name);
    DIR *qd = opendir(tdir);
    if (!qd)
      continue;
    struct dirent *qe;
    while ((qe = readdir(qd)) != NULL && l->rc == EXIT_OK) { /* bounded by the directory */
      if (!all_digits(qe->d_name, 9))
        continue;
      if (l->nqueues == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        struct queue_dir *q = realloc(l->queues, cap * sizeof *q);
        if (!q) {
          l->rc = EXIT_FAILED;
          break;
        }
        l->queues = q;
        l->cap = cap;
      }
      struct queue_dir *q = &l->queues[l->nqueues];
      q->topic = strdup(te->d_name);
      q->queue_id = (uint32_t)strtoul(qe->d_name, NULL, 10);
      if (!q->topic) {
        l->rc = EXIT_FAILED;
        break;
      }
      l->nqueues++;
      char qdir[1200];
      snprintf(qdir, sizeof qdir, "%s/%s", tdir, qe->d_name);
      scan_queue_files(l, qdir, given);
    }
    closedir(qd);
  }
  closedir(d);
  qsort(l->queues, l->nqueues, sizeof *l->queues, cmp_queue_dir);
}

static void layout_free(struct layout *l) {
  for (size_t i = 0; i < l->nqueues; i++)
    free(l->queues[i].topic);
  free(l->queues);
}

/*
 * The store config verify opens DIR with: the broker's (-c) or the
 * defaults, the sizes settled against the files, retention off. Fills l
 * with the consume queues found. Returns an exit status.
 */
static int verify_config(const struct opts *o, struct fy_store_config *cfg, struct layout *l) {
  bool sizes_given = o->conf != NULL;
  if (o->conf) {
    struct fy_broker_settings bs;
    struct fy_config_section sec[2];
    char err[512];
    fy_broker_settings_defaults(&bs);
    fy_broker_settings_sections(&bs, sec);
    if (fy_config_load(sec, 2, o->conf, err, sizeof err) ||
        fy_broker_settings_check(&bs, err, sizeof err)) {
      fprintf(stderr, "ferry-store: %s\n", err);
      return EXIT_USAGE;
    }
    *cfg = bs.store;
  } else {
    fy_store_config_defaults(cfg);
  }
  if (o->dir)
    snprintf(cfg->root_dir, sizeof cfg->root_dir, "%s", o->dir);
  char path[600];
  snprintf(path, sizeof path, "%s/commitlog", cfg->root_dir);
  if (!is_dir(cfg->root_dir) || !is_dir(path)) {
    fprintf(stderr, "ferry-store: no store in %s (no commitlog/ directory); nothing was created\n",
            cfg->root_dir);
    return EXIT_USAGE;
  }
  if (!o->conf) {
    snprintf(path, sizeof path, "%s/index", cfg->root_dir);
    cfg->index_enable = is_dir(path); /* as the broker had it, not a new index */
  }
  if (o->segment_size)
    cfg->commitlog_segment_size = o->segment_size;
  bool has_data = false;
  int rc = settle_segment_size(cfg->root_dir, o->conf || o->segment_size,
                               &cfg->commitlog_segment_size, &has_data);
  if (rc)
    return rc;
  if (sizes_given) /* the queues use whole entries of it */
    l->cq_file_size = cfg->cq_file_size / FY_CQ_ENTRY_SIZE * FY_CQ_ENTRY_SIZE;
  scan_queues(l, cfg->root_dir, sizes_given);
  if (l->rc)
    return l->rc;
  if (!l->cq_file_size && has_data) {
    /* Recovery may dispatch records into new files: their size must be right. */
    fprintf(stderr, "ferry-store: no consume-queue file in %s/consumequeue tells "
            "mappedFileSizeConsumeQueue, and recovery may create some; pass -c broker.conf\n",
            cfg->root_dir);
    return EXIT_FAILED;
  }
  if (l->cq_file_size)
    cfg->cq_file_size = l->cq_file_size;
  /* Never delete anything: no deletion hour, nothing expires, no forced cleaning. */
  cfg->delete_when[0] = '\0';
  cfg->file_reserved_hours = 24 * 365 * 10;
  cfg->clean_forcibly = false;
  cfg->clean_interval_ms = 3600000;
  cfg->confirm_required = false;
  return EXIT_OK;
}

/* ---- verify: the checks ---- */

/* One (topic, queue id): from its consume queue, or only from the log. */
struct vqueue {
  char *topic;
  size_t topic_len;
  uint32_t queue_id;
  bool has_cq;          /* a consume queue on disk */
  uint64_t first_phys;  /* record of its first written entry; UINT64_MAX if none */
  uint64_t live_min;    /* first entry whose record is in the log (the queue's min) */
  uint64_t max;         /* one past the last entry */
  uint64_t live;        /* entries whose record is in the log */
  uint64_t expired;     /* entries below the log's min (and unwritten ones among them) */
  uint64_t next_qoff;   /* log walk: the queue offset the next record must carry */
  uint32_t gaps_seen;   /* log walk: gaps (struct verify) before its last record */
  uint64_t records;     /* log walk: records at or after first_phys */
  uint64_t unqueued;    /* log walk: records before first_phys, or without a queue */
};

struct verify {
  const struct opts *o;
  const struct fy_store_config *cfg;
  fy_store *s;
  fy_commitlog *cl;
  fy_strmap *map;          /* queue_key -> struct vqueue */
  struct vqueue **queues;  /* the same, in order of creation */
  size_t nqueues, cap;
  uint64_t problems;
  uint64_t records;        /* valid records in the log */
  uint32_t gaps;           /* log walk: damaged records, each skipping the rest of a segment */
  uint64_t not_queued_tx;  /* prepared or rolled-back transaction messages */
};

__attribute__((format(printf, 2, 3))) static void problem(struct verify *v, const char *fmt, ...) {
  if (v->problems++ >= PROBLEMS_SHOWN_MAX)
    return;
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  fprintf(stderr, "verify: %s\n", line);
}

static size_t queue_key(char *buf, const char *topic, size_t topic_len, uint32_t queue_id) {
  memcpy(buf, topic, topic_len);
  buf[topic_len] = '\0';
  memcpy(buf + topic_len + 1, &queue_id, 4);
  return topic_len + 5;
}

static struct vqueue *vqueue_get(struct verify *v, const char *topic, size_t topic_len,
                                 uint32_t queue_id) {
  char key[FY_TOPIC_MAX + 8];
  if (topic_len > FY_TOPIC_MAX)
    return NULL;
  size_t klen = queue_key(key, topic, topic_len, queue_id);
  struct vqueue *q = fy_strmap_get(v->map, key, klen);
  if (q)
    return q;
  if (v->nqueues == v->cap) {
    size_t cap = v->cap ? v->cap * 2 : 64;
    struct vqueue **a = realloc(v->queues, cap * sizeof *a);
    if (!a)
      return NULL;
    v->queues = a;
    v->cap = cap;
  }
  q = calloc(1, sizeof *q);
  if (!q || !(q->topic = strndup(topic, topic_len)) || fy_strmap_put(v->map, key, klen, q)) {
    if (q)
      free(q->topic);
    free(q);
    return NULL;
  }
  q->topic_len = topic_len;
  q->queue_id = queue_id;
  q->first_phys = UINT64_MAX;
  v->queues[v->nqueues++] = q;
  return q;
}


/* The tag hash dispatch stores: of the first TAGS property, 0 if none or empty. */
static int64_t tag_hash_of(const struct fy_msg *m) {
  const char *v;
  size_t len;
  if (!fy_props_get(m->props, m->props_len, FY_PROP_TAGS, &v, &len) || len == 0)
    return 0;
  return fy_tag_hash(v, len);
}

/* Entry qoff of q, whose record is in the log: the record it points at must
 * be the one it describes. */
static void check_entry(struct verify *v, const struct vqueue *q, uint64_t qoff,
                        const struct fy_cq_entry *e) {
  uint64_t end = fy_commitlog_written(v->cl);
  if (e->phys >= end || e->size > end - e->phys) {
    problem(v, "topic %s queue %" PRIu32 " offset %" PRIu64 ": entry (phys %" PRIu64
            ", size %" PRIu32 ") points past the end of the log (%" PRIu64 ")",
            q->topic, q->queue_id, qoff, e->phys, e->size, end);
    return;
  }
  struct fy_cl_slice sl;
  enum fy_record_kind kind;
  struct fy_msg m;
  int64_t r = fy_commitlog_read_record(v->cl, e->phys, &sl, &kind, &m);
  if (r < 0) {
    problem(v, "topic %s queue %" PRIu32 " offset %" PRIu64 ": entry points at phys %" PRIu64
            ", where no valid record starts (%s)",
            q->topic, q->queue_id, qoff, e->phys, fy_strerror((int)r));
    return;
  }
  const char *what = NULL;
  char detail[FY_TOPIC_MAX + 96];
  if (kind == FY_REC_BLANK) {
    what = "an end-of-segment marker";
  } else if (m.topic_len != q->topic_len || memcmp(m.topic, q->topic, q->topic_len) != 0) {
    snprintf(detail, sizeof detail, "a record of topic %.*s", (int)m.topic_len, m.topic);
    what = detail;
  } else if (m.queue_id != q->queue_id) {
    snprintf(detail, sizeof detail, "a record of queue %" PRIu32, m.queue_id);
    what = detail;
  } else if (m.queue_offset != qoff) {
    snprintf(detail, sizeof detail, "a record with queue offset %" PRIu64, m.queue_offset);
    what = detail;
  } else if ((uint64_t)r != e->size) {
    snprintf(detail, sizeof detail, "a record of %" PRId64 " bytes, not the entry's %" PRIu32,
             r, e->size);
    what = detail;
  } else if (!fy_sysflag_queued(m.sys_flag)) {
    what = "a prepared or rolled-back transaction message, which is never queued";
  } else if (tag_hash_of(&m) != e->tag_hash) {
    snprintf(detail, sizeof detail,
             "a record whose tags hash to %" PRId64 ", not the entry's %" PRId64, tag_hash_of(&m),
             e->tag_hash);
    what = detail;
  }
  if (what)
    problem(v, "topic %s queue %" PRIu32 " offset %" PRIu64 ": entry (phys %" PRIu64
            ") points at %s", q->topic, q->queue_id, qoff, e->phys, what);
  fy_cl_slice_release(&sl);
}

/* Walks every entry of one consume queue on disk. */
static void check_queue(struct verify *v, const struct queue_dir *qd) {
  struct vqueue *q = vqueue_get(v, qd->topic, strlen(qd->topic), qd->queue_id);
  if (!q) {
    problem(v, "topic %s queue %" PRIu32 ": out of memory", qd->topic, qd->queue_id);
    return;
  }
  q->has_cq = true;
  fy_cq *cq;
  int err = fy_cq_open(v->cfg->root_dir, qd->topic, qd->queue_id,
                       v->cfg->cq_file_size / FY_CQ_ENTRY_SIZE, &cq);
  if (err) {
    problem(v, "topic %s queue %" PRIu32 ": cannot open its consume queue: %s", qd->topic,
            qd->queue_id, fy_strerror(err));
    return;
  }
  uint64_t cl_min = fy_commitlog_min(v->cl), prev_phys = 0;
  q->max = q->live_min = fy_cq_max(cq);
  bool any = false;
  for (uint64_t qoff = fy_cq_min(cq); qoff < q->max; qoff++) { /* bounded by the queue */
    struct fy_cq_entry e;
    err = fy_cq_get(cq, qoff, &e);
    if (err == -FY_ENOT_FOUND && q->live == 0) {
      q->expired++; /* among expired entries: unreadable as they are */
      continue;
    }
    if (err) {
      problem(v, "topic %s queue %" PRIu32 " offset %" PRIu64 ": %s", q->topic, q->queue_id, qoff,
              err == -FY_ENOT_FOUND ? "entry not written (a hole in the queue)" : fy_strerror(err));
      continue;
    }
    if (any && e.phys <= prev_phys)
      problem(v, "topic %s queue %" PRIu32 " offset %" PRIu64 ": entry points at phys %" PRIu64
              ", not after the previous entry's %" PRIu64,
              q->topic, q->queue_id, qoff, e.phys, prev_phys);
    if (!any)
      q->first_phys = e.phys;
    any = true;
    prev_phys = e.phys;
    if (e.phys < cl_min) {
      if (q->live == 0)
        q->expired++; /* its segment went to retention */
      continue;         /* else reported above: not after the previous entry */
    }
    if (q->live++ == 0)
      q->live_min = qoff;
    check_entry(v, q, qoff, &e);
  }
  q->next_qoff = q->live_min;
  fy_cq_close(cq);
}

/* A record of the log that dispatch queues: it must be the next entry of
 * its queue. */
static void account_record(struct verify *v, const struct fy_msg *m, uint64_t phys) {
  struct vqueue *q = vqueue_get(v, m->topic, m->topic_len, m->queue_id);
  if (!q) {
    problem(v, "commit log offset %" PRIu64 ": out of memory", phys);
    return;
  }
  if (!q->has_cq || phys < q->first_phys) {
    q->unqueued++;
    return;
  }
  q->records++;
  if (q->gaps_seen != v->gaps) { /* records were skipped: start the sequence again */
    q->gaps_seen = v->gaps;
    q->next_qoff = m->queue_offset;
  }
  if (m->queue_offset >= q->max)
    problem(v, "commit log offset %" PRIu64 ": record of topic %s queue %" PRIu32 " offset %" PRIu64
            " has no consume-queue entry (the queue ends at %" PRIu64 ")",
            phys, q->topic, q->queue_id, m->queue_offset, q->max);
  else if (m->queue_offset != q->next_qoff)
    problem(v, "commit log offset %" PRIu64 ": record of topic %s queue %" PRIu32 " offset %" PRIu64
            ": the queue's next record should have offset %" PRIu64
            " (an entry or a record is missing, or an entry points elsewhere)",
            phys, q->topic, q->queue_id, m->queue_offset, q->next_qoff);
  q->next_qoff = m->queue_offset + 1;
}

/* Walks the log from min to written: every entry must be a valid record or
 * a blank marker, ending exactly at written. A damaged record is reported
 * and the walk goes on at the next segment. */
static void check_log(struct verify *v) {
  uint64_t off = fy_commitlog_min(v->cl), end = fy_commitlog_written(v->cl);
  while (off < end) { /* bounded: off moves forward every round */
    struct fy_cl_slice sl;
    enum fy_record_kind kind;
    struct fy_msg m;
    int64_t r = fy_commitlog_read_record(v->cl, off, &sl, &kind, &m);
    if (r < 0) {
      problem(v, "commit log offset %" PRIu64 ": no valid record (%s); the rest of its segment "
              "is not checked", off, fy_strerror((int)r));
      v->gaps++;
      off = fy_commitlog_next_segment(v->cl, off);
      continue;
    }
    if (kind == FY_REC_BLANK) {
      fy_cl_slice_release(&sl);
      off = fy_commitlog_next_segment(v->cl, off);
      continue;
    }
    v->records++;
    uint64_t seq;
    if (v->o->acked && m.topic_len == strlen(TOPIC) && memcmp(m.topic, TOPIC, m.topic_len) == 0 &&
        !body_ok(&m, &seq))
      problem(v, "commit log offset %" PRIu64 ": topic " TOPIC " queue %" PRIu32 " offset %" PRIu64
              ": body is not the one `write` gives it", off, m.queue_id, m.queue_offset);
    if (!fy_sysflag_queued(m.sys_flag))
      v->not_queued_tx++;
    else
      account_record(v, &m, off);
    fy_cl_slice_release(&sl);
    off += (uint64_t)r;
  }
}

/* After the walk: each queue's entries and the log's records of it agree. */
static void check_counts(struct verify *v) {
  if (v->gaps) {
    fprintf(stderr, "verify: note: queues not counted against the log, part of which could not "
            "be read\n");
    return;
  }
  for (size_t i = 0; i < v->nqueues; i++) {
    const struct vqueue *q = v->queues[i];
    if (!q->has_cq)
      continue;
    if (q->records != q->live || q->next_qoff != q->max)
      problem(v, "topic %s queue %" PRIu32 ": %" PRIu64 " entries (offsets %" PRIu64 "..%" PRIu64
              ") point into the log, which holds %" PRIu64 " records of the queue from its first "
              "entry on",
              q->topic, q->queue_id, q->live, q->live_min, q->max, q->records);
  }
}

/* Every record listed in the file `write`'s output went to is there, intact. */
static void check_acked(struct verify *v, const char *path, uint64_t *n) {
  FILE *f = fopen(path, "r");
  if (!f) {
    problem(v, "cannot open %s: %s", path, strerror(errno));
    return;
  }
  char line[256];
  bool missing = false;
  while (!missing && fgets(line, sizeof line, f)) { /* bounded by the file */
    uint64_t seq, qoff, phys;
    unsigned q;
    if (sscanf(line, "ACK %" SCNu64 " %u %" SCNu64 " %" SCNu64, &seq, &q, &qoff, &phys) != 4)
      continue; /* a line cut by the kill */
    struct fy_get_msg msg;
    struct fy_get_result res;
    fy_store_get(v->s, TOPIC, q, qoff, 1, 1 << 30, NULL, 0, &msg, &res);
    if (res.status != FY_GET_FOUND || res.count != 1) {
      problem(v, "acknowledged seq %" PRIu64 " (queue %u offset %" PRIu64 ") is missing", seq, q,
              qoff);
      missing = true;
      break;
    }
    enum fy_record_kind kind;
    struct fy_msg m;
    uint64_t got;
    if (fy_record_decode(msg.slice.data, msg.slice.len, msg.slice.offset, &kind, &m) <= 0 ||
        !body_ok(&m, &got) || got != seq || msg.slice.offset != phys)
      problem(v, "acknowledged seq %" PRIu64 " is damaged or moved (phys %" PRIu64 ")", seq, phys);
    fy_store_get_release(&msg, 1);
    (*n)++;
  }
  fclose(f);
}

static int cmp_vqueue(const void *a, const void *b) {
  const struct vqueue *x = *(struct vqueue *const *)a, *y = *(struct vqueue *const *)b;
  int c = strcmp(x->topic, y->topic);
  return c ? c : (x->queue_id > y->queue_id) - (x->queue_id < y->queue_id);
}

/* One line per topic: queues on disk, entries in the log, expired entries,
 * and records not checked against a queue. */
static void print_summary(struct verify *v) {
  qsort(v->queues, v->nqueues, sizeof *v->queues, cmp_vqueue);
  uint64_t unqueued_all = 0;
  for (size_t i = 0; i < v->nqueues;) {
    const char *topic = v->queues[i]->topic;
    uint64_t queues = 0, entries = 0, expired = 0, unqueued = 0;
    for (; i < v->nqueues && strcmp(v->queues[i]->topic, topic) == 0; i++) {
      const struct vqueue *q = v->queues[i];
      queues += q->has_cq;
      entries += q->live;
      expired += q->expired;
      unqueued += q->unqueued;
    }
    unqueued_all += unqueued;
    if (!v->o->quiet) {
      printf("topic %s queues=%" PRIu64 " entries=%" PRIu64 " expired=%" PRIu64, topic, queues,
             entries, expired);
      if (unqueued)
        printf(" unqueued=%" PRIu64, unqueued);
      printf("\n");
    }
  }
  if (unqueued_all)
    fprintf(stderr, "verify: note: %" PRIu64 " records have no consume queue, or are older than "
            "their queue's first entry (a deleted topic?); they were checked as records only\n",
            unqueued_all);
  if (v->not_queued_tx)
    fprintf(stderr, "verify: note: %" PRIu64 " prepared or rolled-back transaction messages "
            "(never queued)\n", v->not_queued_tx);
}

static void verify_free(struct verify *v) {
  for (size_t i = 0; i < v->nqueues; i++) {
    free(v->queues[i]->topic);
    free(v->queues[i]);
  }
  free(v->queues);
  fy_strmap_free(v->map);
}

static void on_verify_closed(void *arg) { *(bool *)arg = true; }

static int cmd_verify(struct opts *o) {
  struct fy_store_config cfg;
  struct layout l = {0};
  int rc = verify_config(o, &cfg, &l);
  if (rc) {
    layout_free(&l);
    return rc;
  }
  uv_loop_t loop;
  uv_loop_init(&loop);
  fy_store *s;
  struct fy_store_recovery rec;
  int err = fy_store_open(&loop, &cfg, &s, &rec);
  if (err) {
    fprintf(stderr, "ferry-store: cannot open the store in %s: %s%s\n", cfg.root_dir,
            fy_strerror(err), err == -FY_ELOCKED ? " (stop the broker first)" : "");
    layout_free(&l);
    uv_loop_close(&loop);
    return EXIT_FAILED;
  }
  if (rec.cl.dropped_bytes)
    fprintf(stderr, "verify: note: recovery cut the log at %" PRIu64 ", zeroing %" PRIu64
            " bytes that were not valid records (the torn tail a crash leaves)\n",
            rec.cl.end, rec.cl.dropped_bytes);
  struct verify v = {.o = o, .cfg = &cfg, .s = s, .cl = fy_store_commitlog(s),
                     .map = fy_strmap_new()};
  uint64_t acked = 0;
  /* Listed again: recovery may have dispatched records into new queues. */
  layout_free(&l);
  l = (struct layout){.cq_file_size = cfg.cq_file_size / FY_CQ_ENTRY_SIZE * FY_CQ_ENTRY_SIZE};
  scan_queues(&l, cfg.root_dir, true);
  if (!v.map || l.rc) {
    problem(&v, "cannot list the consume queues again after recovery");
  } else {
    for (size_t i = 0; i < l.nqueues; i++)
      check_queue(&v, &l.queues[i]);
    check_log(&v);
    check_counts(&v);
    if (o->acked)
      check_acked(&v, o->acked, &acked);
    print_summary(&v);
  }
  if (v.problems > PROBLEMS_SHOWN_MAX)
    fprintf(stderr, "verify: %" PRIu64 " problems in all (the first %d shown)\n", v.problems,
            PROBLEMS_SHOWN_MAX);
  printf("verify: %s records=%" PRIu64 " acked_checked=%" PRIu64 " end=%" PRIu64
         " dropped_bytes=%" PRIu64 " redispatched=%" PRIu64 " unclean=%d\n",
         v.problems ? "FAILED" : "OK", v.records, acked, rec.cl.end, rec.cl.dropped_bytes,
         rec.redispatched, rec.unclean);
  rc = v.problems ? EXIT_FAILED : EXIT_OK;
  verify_free(&v);
  layout_free(&l);
  bool closed = false;
  fy_store_close(s, on_verify_closed, &closed);
  uv_run(&loop, UV_RUN_DEFAULT);
  fy_store_free(s);
  if (uv_loop_close(&loop) != 0) {
    fprintf(stderr, "ferry-store: handles left open at exit\n");
    rc = EXIT_FAILED;
  }
  return rc;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage();
    return EXIT_USAGE;
  }
  struct opts o = {.cmd = argv[1]};
  if (strcmp(o.cmd, "write") != 0 && strcmp(o.cmd, "verify") != 0) {
    usage();
    return EXIT_USAGE;
  }
  if (parse(argc - 1, argv + 1, &o))
    return EXIT_USAGE;
  setvbuf(stdout, NULL, _IOFBF, 1 << 16);
  return strcmp(o.cmd, "write") == 0 ? cmd_write(&o) : cmd_verify(&o);
}
