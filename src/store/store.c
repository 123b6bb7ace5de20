/*
 * The message store: glue between the commit log and what is derived from
 * it. It owns
 *   - the queue table: (topic, queueId) -> next queue offset and consume queue;
 *   - dispatch: every record that reaches `written` in the commit log is put
 *     into its consume queue and the index (idempotently, so recovery can
 *     replay a range);
 *   - the flush cycle: every flush_cq_interval_ms the dirty consume queues
 *     and the index are fdatasynced, then the checkpoint records
 *     min(dispatched-at-start, commit-log flushed) as the safe offset, and,
 *     under SYNC_MASTER, the confirmed offset;
 *   - SYNC_MASTER visibility (store.h): dispatch stops at the confirmed
 *     offset, during recovery as well as at run time;
 *   - recovery: validate the log from the checkpoint, cut queues and index
 *     back to the recovered end (or the checkpoint's confirmed offset),
 *     re-dispatch the rest, and reserve the queue offsets of records that
 *     stay hidden;
 *   - retention and the disk guard on a timer.
 *
 * Close sequence (state machine, see enum close_state): the commit log
 * drains and flushes, then queues and index flush, then the checkpoint is
 * written with safe == end and the abort marker is removed.
 */
#include "store/store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"
#include "common/strmap.h"
#include "store/checkpoint.h"
#include "store/consumequeue.h"
#include "store/fileops.h"
#include "store/index.h"

#define MOD "store"
#define MAX_KEYS_PER_MSG 32
#define MAX_KEY_LEN 512
#define DISPATCH_BATCH 32 /* records read (and their index slots prefetched) at once */
#define CLEAN_FILES_PER_PASS 10
#define FORCE_CLEAN_SLACK_PCT 5
#define QCACHE_SIZE 64 /* queue-table cache slots (a power of two) */
#define INDEX_FLUSH_CYCLES 10u /* the index is flushed every this many flush cycles */
#define PEND_MAX 32768u   /* put-time dispatch facts kept (a power of two); 2 MiB */
#define PEND_KEYS 4       /* index keys a kept record may have (more: read back) */

struct queue {
  char *topic;
  size_t topic_len;
  uint32_t queue_id;
  fy_cq *cq;            /* NULL until the first message is dispatched */
  uint64_t next_offset; /* next queue offset to assign on put */
  bool flushing;
  /* queue_min's answer, valid while the log's and the queue's mins are these */
  bool min_cached;
  uint64_t min, min_for_cl, min_for_cq;
};

/*
 * What dispatch needs of a record fy_store_put appended, kept from the put
 * so dispatch does not read the record back from the commit log and parse
 * it again (that re-read was the largest single cost of a put). Only a
 * cache: a record without one (the ring was full, more than PEND_KEYS keys,
 * a slave's raw append, recovery) is read from the log as before, and the
 * ring is emptied whenever a queue it may point at is freed.
 */
struct pend {
  struct queue *q; /* never NULL: transactions are not kept */
  uint64_t phys, queue_offset;
  int64_t tag_hash, store_ts_ms;
  uint32_t size;
  uint32_t nhashes;
  uint32_t hashes[PEND_KEYS];
};

enum close_state { OPEN, CLOSING_LOG, CLOSING_QUEUES, CLOSING_CHECKPOINT, CLOSED };

struct fy_store {
  struct fy_store_config cfg;
  uint32_t delete_hours; /* deleteWhen: bit h for hour h */
  uv_loop_t *loop;
  fy_aio *aio;
  fy_commitlog *cl;
  fy_index *index;
  fy_ckpt_file *ckpt;
  fy_strmap *queues;
  /* Recently used queues, in front of the table: every put and every
   * dispatched record looks its queue up. Cleared when a queue is removed. */
  struct queue *qcache[QCACHE_SIZE];
  int lock_fd;
  char path[600];

  uint64_t dispatched;
  struct pend *pend; /* ring of PEND_MAX, allocated at the first put */
  uint32_t pend_head, pend_count;
  bool confirm_required;
  uint64_t confirmed;
  int error;

  /* flush cycle */
  uv_timer_t flush_timer;
  bool flush_inflight;
  unsigned flush_pending;
  int flush_status;
  uint64_t flush_target;
  bool ckpt_inflight;
  /* The index is flushed every INDEX_FLUSH_CYCLES cycles, not every cycle:
   * with random keys every flush rewrote most of its 20 MB slot table, and
   * that copy and its writeback were the broker's largest stall. The
   * checkpoint stays at or below index_safe, the dispatch position at the
   * start of the last cycle that left the index durable, so recovery
   * re-dispatches (at most about that many cycles of) records into it. */
  unsigned index_cycles_skipped;
  bool cycle_covers_index;
  uint64_t index_safe;

  /* retention and disk guard */
  uv_timer_t clean_timer;
  uv_fs_t statfs_req;
  bool statfs_inflight;
  int disk_used_pct;
  bool disk_full;

  void (*arrival_cb)(void *, const char *, size_t, uint32_t, uint64_t);
  void *arrival_arg;

  enum close_state close_state;
  bool log_closed;
  void (*close_done)(void *);
  void *close_arg;
  unsigned handles_open;

  uint64_t puts, put_bytes, gets;
};

static const char *store_path(fy_store *s, const char *name) {
  snprintf(s->path, sizeof s->path, "%s/%s", s->cfg.root_dir, name);
  return s->path;
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- queue table ---- */

static void pend_reset(fy_store *s);

static size_t queue_key(char *buf, const char *topic, size_t topic_len, uint32_t queue_id) {
  memcpy(buf, topic, topic_len);
  buf[topic_len] = '\0';
  memcpy(buf + topic_len + 1, &queue_id, 4);
  return topic_len + 5;
}

static struct queue **qcache_slot(fy_store *s, const char *topic, size_t topic_len,
                                  uint32_t queue_id) {
  uint32_t h = queue_id * 2654435761u ^ (uint32_t)topic_len * 40503u ^
               (topic_len ? (uint8_t)topic[topic_len - 1] : 0u);
  return &s->qcache[(h >> 7) & (QCACHE_SIZE - 1)];
}

static struct queue *queue_find(fy_store *s, const char *topic, size_t topic_len,
                                uint32_t queue_id) {
  char key[FY_TOPIC_MAX + 8];
  if (topic_len > FY_TOPIC_MAX)
    return NULL;
  struct queue **c = qcache_slot(s, topic, topic_len, queue_id);
  struct queue *q = *c;
  if (q && q->queue_id == queue_id && q->topic_len == topic_len &&
      memcmp(q->topic, topic, topic_len) == 0)
    return q;
  q = fy_strmap_get(s->queues, key, queue_key(key, topic, topic_len, queue_id));
  if (q)
    *c = q;
  return q;
}

static struct queue *queue_get(fy_store *s, const char *topic, size_t topic_len,
                               uint32_t queue_id) {
  struct queue *q = queue_find(s, topic, topic_len, queue_id);
  if (q)
    return q;
  q = calloc(1, sizeof *q);
  if (!q)
    return NULL;
  q->topic = strndup(topic, topic_len);
  q->topic_len = topic_len;
  q->queue_id = queue_id;
  char key[FY_TOPIC_MAX + 8];
  if (!q->topic || fy_strmap_put(s->queues, key, queue_key(key, topic, topic_len, queue_id), q)) {
    free(q->topic);
    free(q);
    return NULL;
  }
  return q;
}

static int queue_open_cq(fy_store *s, struct queue *q) {
  if (q->cq)
    return 0;
  int err = fy_cq_open(s->cfg.root_dir, q->topic, q->queue_id,
                       s->cfg.cq_file_size / FY_CQ_ENTRY_SIZE, &q->cq);
  if (!err)
    fy_cq_use_loop(q->cq, s->loop);
  if (err)
    fy_error(MOD, "cannot open consume queue %s/%u: %s", q->topic, q->queue_id, fy_strerror(err));
  return err;
}

static void queue_free(struct queue *q) {
  if (q->cq)
    fy_cq_close(q->cq);
  free(q->topic);
  free(q);
}

/* Removes a queue that fy_store_put created for a put it then refused. */
static void queue_forget(fy_store *s, struct queue *q) {
  fy_assert(q->cq == NULL && q->next_offset == 0);
  memset(s->qcache, 0, sizeof s->qcache);
  pend_reset(s);
  char key[FY_TOPIC_MAX + 8];
  fy_strmap_del(s->queues, key, queue_key(key, q->topic, q->topic_len, q->queue_id));
  queue_free(q);
}

/* A topic the consume queues can hold (fy_cq_open's rule): 1..FY_TOPIC_MAX
 * bytes, no '/' or NUL, not "." or "..". A record whose topic is not would
 * be written and then fail dispatch, failing the store now and every
 * recovery after. */
static bool topic_ok(const char *t, size_t len) {
  if (len == 0 || len > FY_TOPIC_MAX || memchr(t, '/', len) || memchr(t, '\0', len))
    return false;
  return !(len == 1 && t[0] == '.') && !(len == 2 && t[0] == '.' && t[1] == '.');
}

/*
 * The first queue offset whose record is still in the commit log. Retention
 * deletes consume-queue files only when all their entries are below the log's
 * min, so the first file left may begin with entries of deleted segments;
 * entries are in log order, so a binary search finds the first one at or
 * above the log's min. Cached until either min moves.
 */
static uint64_t queue_min(fy_store *s, struct queue *q) {
  uint64_t lo = fy_cq_min(q->cq), hi = fy_cq_max(q->cq);
  uint64_t cl_min = fy_commitlog_min(s->cl);
  if (q->min_cached && q->min_for_cl == cl_min && q->min_for_cq == lo)
    return q->min < hi ? q->min : hi;
  q->min_for_cl = cl_min;
  q->min_for_cq = lo;
  q->min_cached = true;
  for (unsigned probes = 0; lo < hi && probes < 64; probes++) { /* bounded: halves each round */
    uint64_t mid = lo + (hi - lo) / 2;
    struct fy_cq_entry e;
    if (fy_cq_get(q->cq, mid, &e) != 0 || e.phys < cl_min)
      lo = mid + 1;
    else
      hi = mid;
  }
  q->min = lo;
  return lo;
}

/* ---- dispatch ---- */

/* The properties dispatch reads, found in one pass over a message's. */
struct dispatch_props {
  const char *tags, *keys, *uniq;
  size_t tags_len, keys_len, uniq_len;
};

static bool prop_is(const char *k, size_t klen, const char *name, size_t name_len) {
  return klen == name_len && memcmp(k, name, klen) == 0;
}

static void dispatch_props_of(const struct fy_msg *m, struct dispatch_props *d) {
  *d = (struct dispatch_props){0};
  const char *pos = m->props, *end = m->props + m->props_len, *k, *v;
  size_t kl, vl;
  while (fy_props_next(&pos, end, &k, &kl, &v, &vl)) { /* the first of each counts */
    if (!d->tags && prop_is(k, kl, FY_PROP_TAGS, sizeof FY_PROP_TAGS - 1)) {
      d->tags = v;
      d->tags_len = vl;
    } else if (!d->keys && prop_is(k, kl, FY_PROP_KEYS, sizeof FY_PROP_KEYS - 1)) {
      d->keys = v;
      d->keys_len = vl;
    } else if (!d->uniq && prop_is(k, kl, FY_PROP_UNIQ_KEY, sizeof FY_PROP_UNIQ_KEY - 1)) {
      d->uniq = v;
      d->uniq_len = vl;
    }
  }
}

static int64_t tag_hash_of(const struct dispatch_props *d) {
  return d->tags && d->tags_len ? fy_tag_hash(d->tags, d->tags_len) : 0;
}

/* Hashes of the index keys "topic#key" of m: each KEYS word and the
 * UNIQ_KEY (at most MAX_KEYS_PER_MSG; keys longer than MAX_KEY_LEN skipped). */
static size_t index_hashes(const struct fy_msg *m, const struct dispatch_props *d,
                           uint32_t *hashes) {
  size_t n = 0;
  const char *vals[] = {d->keys, d->uniq};
  const size_t lens[] = {d->keys_len, d->uniq_len};
  for (size_t k = 0; k < 2; k++) {
    if (!vals[k])
      continue;
    const char *p = vals[k], *end = vals[k] + lens[k];
    while (p < end && n < MAX_KEYS_PER_MSG) {
      while (p < end && *p == ' ')
        p++;
      const char *w = p;
      while (p < end && *p != ' ')
        p++;
      size_t wlen = (size_t)(p - w);
      if (wlen == 0 || m->topic_len + 1 + wlen > MAX_KEY_LEN)
        continue;
      hashes[n++] = fy_index_key_hash(m->topic, m->topic_len, w, wlen);
      if (k == 1)
        break; /* UNIQ_KEY is one key, spaces and all are not split */
    }
  }
  return n;
}

/* A record to dispatch: kept at its put (struct pend) or read back. */
struct dispatch_item {
  struct fy_cl_slice sl; /* the record read back; empty for a kept one */
  struct queue *q;       /* its queue when known, else looked up by topic */
  const char *topic;
  size_t topic_len;
  uint32_t queue_id;
  bool blank;
  bool to_cq; /* false for blanks and prepared or rolled-back transactions */
  uint64_t phys, queue_offset;
  uint32_t size;
  int64_t tag_hash, store_ts_ms;
  uint64_t next; /* where dispatch continues after it */
  size_t nhashes;
  uint32_t hashes[MAX_KEYS_PER_MSG];
};

static int dispatch_one(fy_store *s, const struct dispatch_item *it) {
  if (it->to_cq) {
    struct queue *q = it->q ? it->q : queue_get(s, it->topic, it->topic_len, it->queue_id);
    if (!q)
      return -ENOMEM;
    int err = queue_open_cq(s, q);
    if (err)
      return err;
    struct fy_cq_entry e = {.phys = it->phys, .size = it->size, .tag_hash = it->tag_hash};
    err = fy_cq_put(q->cq, it->queue_offset, &e);
    if (err) {
      fy_error(MOD, "consume queue %s/%u rejected offset %" PRIu64 " (phys %" PRIu64 "): %s",
               q->topic, q->queue_id, it->queue_offset, it->phys, fy_strerror(err));
      return err;
    }
    if (q->next_offset < it->queue_offset + 1)
      q->next_offset = it->queue_offset + 1;
  }
  if (s->index) {
    int err = fy_index_put_hashed(s->index, it->hashes, it->nhashes, it->phys, it->size,
                                  it->store_ts_ms);
    if (err) {
      fy_error(MOD, "index rejected record at %" PRIu64 ": %s", it->phys, fy_strerror(err));
      return err;
    }
  }
  return 0;
}

/* ---- put-time dispatch facts (struct pend) ---- */

static void pend_reset(fy_store *s) { s->pend_head = s->pend_count = 0; }

static void pend_pop(fy_store *s) {
  s->pend_head = (s->pend_head + 1) & (PEND_MAX - 1);
  s->pend_count--;
}

/* Keeps what dispatch will need of m, appended by fy_store_put into q. */
static void pend_keep(fy_store *s, const struct fy_msg *m, struct queue *q) {
  if (!q || s->pend_count == PEND_MAX)
    return;
  if (!s->pend && !(s->pend = malloc(PEND_MAX * sizeof *s->pend)))
    return; /* dispatch reads the records back instead */
  struct dispatch_props d;
  dispatch_props_of(m, &d);
  uint32_t hashes[MAX_KEYS_PER_MSG];
  size_t nh = s->index ? index_hashes(m, &d, hashes) : 0;
  if (nh > PEND_KEYS)
    return;
  struct pend *p = &s->pend[(s->pend_head + s->pend_count) & (PEND_MAX - 1)];
  *p = (struct pend){.q = q, .phys = m->phys_offset, .queue_offset = m->queue_offset,
                     .tag_hash = tag_hash_of(&d), .store_ts_ms = m->store_ts_ms,
                     .size = m->total_size, .nhashes = (uint32_t)nh};
  memcpy(p->hashes, hashes, nh * sizeof *hashes);
  s->pend_count++;
}

/* The kept facts of the record at from, if any; drops older ones (records
 * dispatched by reading them back, e.g. after a dispatch error). */
static const struct pend *pend_at(fy_store *s, uint64_t from) {
  while (s->pend_count) {
    const struct pend *p = &s->pend[s->pend_head];
    if (p->phys >= from)
      return p->phys == from ? p : NULL;
    pend_pop(s);
  }
  return NULL;
}

#ifdef FY_EXPENSIVE_CHECKS
/* Debug builds (the sanitizer suite) check every kept record against the
 * record in the log, so the two paths cannot drift apart unnoticed. */
static void pend_verify(fy_store *s, const struct dispatch_item *it) {
  struct fy_cl_slice sl;
  enum fy_record_kind kind;
  struct fy_msg m;
  int64_t r = fy_commitlog_read_record(s->cl, it->phys, &sl, &kind, &m);
  fy_assert(r == (int64_t)it->size && kind == FY_REC_MSG);
  struct dispatch_props d;
  dispatch_props_of(&m, &d);
  fy_assert(m.queue_offset == it->queue_offset && m.queue_id == it->queue_id &&
            m.topic_len == it->topic_len && memcmp(m.topic, it->topic, m.topic_len) == 0 &&
            m.store_ts_ms == it->store_ts_ms && tag_hash_of(&d) == it->tag_hash &&
            fy_sysflag_queued(m.sys_flag));
  uint32_t hashes[MAX_KEYS_PER_MSG];
  size_t nh = s->index ? index_hashes(&m, &d, hashes) : 0;
  fy_assert(nh == it->nhashes && memcmp(hashes, it->hashes, nh * sizeof *hashes) == 0);
  fy_cl_slice_release(&sl);
}
#endif

/* Fills it from kept facts; false if p's record is not all below end. */
static bool item_from_pend(fy_store *s, struct dispatch_item *it, const struct pend *p,
                           uint64_t end) {
  if (p->phys + p->size > end)
    return false;
  *it = (struct dispatch_item){.q = p->q, .topic = p->q->topic, .topic_len = p->q->topic_len,
                               .queue_id = p->q->queue_id, .to_cq = true, .phys = p->phys,
                               .queue_offset = p->queue_offset, .size = p->size,
                               .tag_hash = p->tag_hash, .store_ts_ms = p->store_ts_ms,
                               .next = p->phys + p->size, .nhashes = p->nhashes};
  memcpy(it->hashes, p->hashes, p->nhashes * sizeof *p->hashes);
#ifdef FY_EXPENSIVE_CHECKS
  pend_verify(s, it);
#endif
  pend_pop(s);
  return true;
}

/* Reads the record at from back from the log into it: 1 when read, 0 when
 * it is not complete below end yet, or the validation error. */
static int item_from_log(fy_store *s, struct dispatch_item *it, uint64_t from, uint64_t end) {
  enum fy_record_kind kind;
  struct fy_msg m;
  int64_t r = fy_commitlog_read_record_own(s->cl, from, &it->sl, &kind, &m);
  if (r == -EAGAIN)
    return 0;
  if (r < 0) {
    fy_error(MOD, "record at %" PRIu64 " failed validation during dispatch: %s", from,
             fy_strerror((int)r));
    return (int)r;
  }
  it->blank = kind == FY_REC_BLANK;
  if (it->blank) {
    it->next = fy_commitlog_next_segment(s->cl, from);
    it->to_cq = false;
    it->nhashes = 0;
    return 1;
  }
  if (from + (uint64_t)r > end) { /* a slave confirmed only part of it */
    fy_cl_slice_release(&it->sl);
    return 0;
  }
  it->next = from + (uint64_t)r;
  it->q = NULL;
  it->topic = m.topic;
  it->topic_len = m.topic_len;
  it->queue_id = m.queue_id;
  it->to_cq = fy_sysflag_queued(m.sys_flag);
  it->phys = from;
  it->queue_offset = m.queue_offset;
  it->size = m.total_size;
  struct dispatch_props d;
  dispatch_props_of(&m, &d);
  it->tag_hash = it->to_cq ? tag_hash_of(&d) : 0;
  it->store_ts_ms = m.store_ts_ms;
  it->nhashes = s->index ? index_hashes(&m, &d, it->hashes) : 0;
  return 1;
}

/*
 * Gathers up to DISPATCH_BATCH records from `from` (below end) into items,
 * prefetching the index slots they will hit: the slots are random cache
 * lines in a table of many MB, and loading a batch's lines at once instead
 * of one after the other is most of the index's cost. Stops at the first
 * record that is incomplete (*stop = 0) or invalid (*stop = the error).
 * Returns the number gathered.
 */
static size_t read_batch(fy_store *s, uint64_t from, uint64_t end, struct dispatch_item *items,
                         int *stop) {
  size_t n = 0;
  *stop = 0;
  while (n < DISPATCH_BATCH && from < end) {
    struct dispatch_item *it = &items[n];
    const struct pend *p = pend_at(s, from);
    if (p) {
      if (!item_from_pend(s, it, p, end))
        break;
    } else {
      int r = item_from_log(s, it, from, end);
      if (r <= 0) {
        *stop = r;
        break;
      }
    }
    for (size_t k = 0; k < it->nhashes; k++)
      fy_index_prefetch(s->index, it->hashes[k]);
    from = it->next;
    n++;
  }
  return n;
}

/* Dispatches records in [dispatched, end). Stops early (returning 0) at a
 * record that is not complete yet (a slave's log can end mid-record). */
static int dispatch_to(fy_store *s, uint64_t end, uint64_t *count, bool notify) {
  struct dispatch_item items[DISPATCH_BATCH];
  while (s->dispatched < end) { /* bounded: each round dispatches >= 1 record or returns */
    int stop;
    size_t n = read_batch(s, s->dispatched, end, items, &stop);
    int err = 0;
    size_t i = 0;
    for (; i < n && !err; i++) {
      struct dispatch_item *it = &items[i];
      if (!it->blank) {
        err = dispatch_one(s, it);
        if (!err && notify && s->arrival_cb)
          s->arrival_cb(s->arrival_arg, it->topic, it->topic_len, it->queue_id,
                        it->queue_offset + 1);
      }
      fy_cl_slice_release(&it->sl);
      if (err)
        break;
      s->dispatched = it->next;
      if (count && !it->blank)
        (*count)++;
    }
    for (size_t k = i + (err ? 1 : 0); k < n; k++)
      fy_cl_slice_release(&items[k].sl);
    if (err)
      return err;
    if (stop)
      return stop;
    if (n < DISPATCH_BATCH)
      return 0; /* reached end, or an incomplete record */
  }
  return 0;
}

static void fail_store(fy_store *s, int err) {
  if (s->error)
    return;
  s->error = err;
  fy_error(MOD, "store failed: %s; writes are refused until restart", fy_strerror(err));
}

static void on_written(void *arg, uint64_t written) {
  fy_store *s = arg;
  if (s->error)
    return;
  if (s->confirm_required && s->confirmed < written)
    written = s->confirmed;
  int err = dispatch_to(s, written, NULL, true);
  if (err)
    fail_store(s, err);
}

/* ---- flush cycle and checkpoint ---- */

static void close_step(fy_store *s);

static void on_ckpt_written(void *arg, int status) {
  fy_store *s = arg;
  s->ckpt_inflight = false;
  if (status)
    fail_store(s, status);
  if (s->close_state == CLOSING_LOG)
    close_step(s);
}

/* The checkpoint to write for safe offset `safe`. The confirmed offset is
 * never below the dispatch position (dispatch stops at it), so never below
 * safe either, except past a blank, which holds nothing to see. */
static struct fy_checkpoint checkpoint_at(fy_store *s, uint64_t safe) {
  struct fy_checkpoint cp = {.safe_offset = safe, .cl_flushed = fy_commitlog_flushed(s->cl),
                             .written_at_ms = now_ms(), .has_confirmed = s->confirm_required,
                             .confirmed_offset = s->confirm_required ? s->confirmed : 0};
  return cp;
}

static void maybe_checkpoint(fy_store *s, uint64_t safe) {
  if (s->ckpt_inflight || s->error || safe <= fy_ckpt_last(s->ckpt)->safe_offset)
    return;
  struct fy_checkpoint cp = checkpoint_at(s, safe);
  if (fy_ckpt_write(s->ckpt, s->aio, &cp, on_ckpt_written, s) == 0)
    s->ckpt_inflight = true;
}

static void flush_finished(fy_store *s) {
  s->flush_inflight = false;
  if (s->flush_status)
    fail_store(s, s->flush_status);
  if (s->close_state != OPEN) {
    close_step(s);
    return;
  }
  if (s->cycle_covers_index && !s->flush_status)
    s->index_safe = s->flush_target;
  uint64_t safe = fy_commitlog_flushed(s->cl);
  if (s->flush_target < safe)
    safe = s->flush_target;
  if (s->index && s->index_safe < safe)
    safe = s->index_safe;
  maybe_checkpoint(s, safe);
}

static void on_part_flushed(void *arg, int status) {
  fy_store *s = arg;
  if (status && !s->flush_status)
    s->flush_status = status;
  if (--s->flush_pending == 0)
    flush_finished(s);
}

/* Starts flushing every dirty queue, and the index every INDEX_FLUSH_CYCLES
 * cycles; flush_finished runs when all are done. Returns false if nothing
 * needed flushing. */
static bool start_flush(fy_store *s) {
  s->flush_inflight = true;
  s->flush_pending = 1; /* held until every part is queued */
  s->flush_status = 0;
  s->flush_target = s->dispatched;
  size_t pos = 0, klen;
  const char *key;
  void *v;
  while (fy_strmap_next(s->queues, &pos, &key, &klen, &v)) {
    struct queue *q = v;
    if (!q->cq || !fy_cq_dirty(q->cq))
      continue;
    if (fy_cq_flush(q->cq, s->aio, on_part_flushed, s) == 0)
      s->flush_pending++;
  }
  s->cycle_covers_index = true; /* a clean index is durable as it is */
  if (s->index && fy_index_dirty(s->index)) {
    if (++s->index_cycles_skipped < INDEX_FLUSH_CYCLES) {
      s->cycle_covers_index = false;
    } else if (fy_index_flush(s->index, s->aio, on_part_flushed, s) == 0) {
      s->flush_pending++;
      s->index_cycles_skipped = 0;
    } else {
      s->cycle_covers_index = false;
    }
  }
  bool any = s->flush_pending > 1;
  on_part_flushed(s, 0);
  return any;
}

static void on_flush_timer(uv_timer_t *t) {
  fy_store *s = t->data;
  if (!s->flush_inflight && !s->error)
    start_flush(s);
}

/* ---- retention and disk guard ---- */

static int clean_pass(fy_store *s, bool force) {
  time_t t = time(NULL);
  struct tm tm;
  localtime_r(&t, &tm);
  bool in_window = s->delete_hours & (1u << tm.tm_hour);
  bool disk_high = s->disk_used_pct >= (int)s->cfg.disk_max_used_ratio;
  bool disk_critical = s->cfg.clean_forcibly &&
                       s->disk_used_pct >= (int)s->cfg.disk_full_ratio - FORCE_CLEAN_SLACK_PCT;
  if (!force && !in_window && !disk_high && !disk_critical)
    return 0;
  uint64_t starts[CLEAN_FILES_PER_PASS];
  int64_t mtimes[CLEAN_FILES_PER_PASS];
  size_t n = fy_commitlog_old_segments(s->cl, starts, mtimes, CLEAN_FILES_PER_PASS);
  int64_t reserved_ms = (int64_t)s->cfg.file_reserved_hours * 3600 * 1000;
  uint64_t seg = fy_commitlog_segment_size(s->cl);
  uint64_t safe = fy_ckpt_last(s->ckpt)->safe_offset;
  int deleted = 0;
  for (size_t i = 0; i < n; i++) {
    bool expired = now_ms() - mtimes[i] >= reserved_ms;
    /* Never drop what is not yet dispatched and checkpointed. */
    if (starts[i] + seg > s->dispatched || starts[i] + seg > safe)
      break;
    if (!expired && !disk_critical)
      break;
    if (fy_commitlog_drop_oldest(s->cl) != 0)
      break;
    if (expired)
      fy_info(MOD, "retention: deleted commit-log segment %020" PRIu64 " (expired)", starts[i]);
    else
      fy_warn(MOD,
              "retention: deleted commit-log segment %020" PRIu64
              " before it expired: disk %d%% used (cleanFileForciblyEnable=true, limit %u%%)",
              starts[i], s->disk_used_pct, s->cfg.disk_full_ratio - FORCE_CLEAN_SLACK_PCT);
    deleted++;
  }
  /* Trim every pass, not only when a segment went: trims are capped per call. */
  uint64_t min = fy_commitlog_min(s->cl);
  size_t pos = 0, klen;
  const char *key;
  void *v;
  while (fy_strmap_next(s->queues, &pos, &key, &klen, &v)) {
    struct queue *q = v;
    if (q->cq)
      fy_cq_trim_below(q->cq, min);
  }
  if (s->index)
    fy_index_trim_below(s->index, min);
  return deleted;
}

/* Used percent as df(1) shows it: used / (used + available to users), so
 * blocks reserved for root (or held back by the host) do not count. */
static void set_disk_usage(fy_store *s, uint64_t blocks, uint64_t bfree, uint64_t bavail) {
  uint64_t used = blocks > bfree ? blocks - bfree : 0;
  if (used + bavail == 0)
    return;
  s->disk_used_pct = (int)((used * 100 + used + bavail - 1) / (used + bavail));
  bool full = s->disk_used_pct >= (int)s->cfg.disk_full_ratio;
  if (full != s->disk_full) {
    if (full)
      fy_error(MOD, "disk %d%% used (limit diskSpaceWarningLevelRatio=%u%%): refusing writes",
               s->disk_used_pct, s->cfg.disk_full_ratio);
    else
      fy_info(MOD, "disk %d%% used: accepting writes again", s->disk_used_pct);
    s->disk_full = full;
    fy_commitlog_set_disk_full(s->cl, full);
  }
}

static void on_statfs(uv_fs_t *req) {
  fy_store *s = req->data;
  s->statfs_inflight = false;
  if (req->result == 0) {
    const uv_statfs_t *st = req->ptr;
    set_disk_usage(s, st->f_blocks, st->f_bfree, st->f_bavail);
  }
  uv_fs_req_cleanup(req);
  if (s->close_state != OPEN)
    close_step(s);
  else if (!s->error)
    clean_pass(s, false);
}

static void on_clean_timer(uv_timer_t *t) {
  fy_store *s = t->data;
  if (s->statfs_inflight)
    return;
  s->statfs_req.data = s;
  if (uv_fs_statfs(s->loop, &s->statfs_req, s->cfg.root_dir, on_statfs) == 0)
    s->statfs_inflight = true;
}

int fy_store_clean_now(fy_store *s, bool force) { return clean_pass(s, force); }

/* ---- open and recovery ---- */

static bool all_digits(const char *s) {
  if (!*s)
    return false;
  for (; *s; s++)
    if (*s < '0' || *s > '9')
      return false;
  return true;
}

/* Opens every consume queue found under consumequeue/. */
static int load_queues(fy_store *s, uint32_t *count) {
  char dir[600];
  snprintf(dir, sizeof dir, "%s/consumequeue", s->cfg.root_dir);
  DIR *d = opendir(dir);
  if (!d)
    return errno == ENOENT ? 0 : -errno;
  int err = 0;
  struct dirent *te;
  while (!err && (te = readdir(d))) {
    if (te->d_name[0] == '.' || strlen(te->d_name) > FY_TOPIC_MAX)
      continue;
    char tdir[900];
    snprintf(tdir, sizeof tdir, "%s/%s", dir, te->d_name);
    DIR *qd = opendir(tdir);
    if (!qd)
      continue;
    struct dirent *qe;
    while (!err && (qe = readdir(qd))) {
      if (!all_digits(qe->d_name) || strlen(qe->d_name) > 9)
        continue;
      struct queue *q = queue_get(s, te->d_name, strlen(te->d_name), (uint32_t)atol(qe->d_name));
      err = q ? queue_open_cq(s, q) : -ENOMEM;
      if (!err)
        (*count)++;
    }
    closedir(qd);
  }
  closedir(d);
  return err;
}

static int lock_store(fy_store *s) {
  s->lock_fd = open(store_path(s, "lock"), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (s->lock_fd < 0)
    return -errno;
  if (flock(s->lock_fd, LOCK_EX | LOCK_NB) < 0) {
    int err = errno == EWOULDBLOCK ? -FY_ELOCKED : -errno;
    fy_error(MOD, "%s: %s", store_path(s, "lock"), fy_strerror(err));
    return err;
  }
  return 0;
}

/*
 * Records in [s->dispatched, end) stay hidden (SYNC_MASTER: no slave had
 * acknowledged them). Their queue offsets are taken all the same: each
 * queue's next offset moves past them, so puts after the restart continue
 * the queues and the hidden records fit in when they are confirmed.
 */
static int reserve_hidden(fy_store *s, uint64_t end, uint64_t *count) {
  uint64_t off = s->dispatched;
  while (off < end) { /* bounded: each round moves off forward */
    struct fy_cl_slice sl;
    enum fy_record_kind kind;
    struct fy_msg m;
    int64_t r = fy_commitlog_read_record(s->cl, off, &sl, &kind, &m);
    if (r < 0)
      return r == -EAGAIN ? 0 : (int)r;
    if (kind == FY_REC_BLANK) {
      fy_cl_slice_release(&sl);
      off = fy_commitlog_next_segment(s->cl, off);
      continue;
    }
    bool queued = fy_sysflag_queued(m.sys_flag);
    struct queue *q = queued ? queue_get(s, m.topic, m.topic_len, m.queue_id) : NULL;
    if (q && q->next_offset < m.queue_offset + 1)
      q->next_offset = m.queue_offset + 1;
    fy_cl_slice_release(&sl); /* after queue_get copied the topic out of it */
    if (queued && !q)
      return -ENOMEM;
    (*count)++;
    off += (uint64_t)r;
  }
  return 0;
}

static int recover(fy_store *s, struct fy_store_recovery *rec) {
  struct fy_checkpoint cp;
  int err = fy_ckpt_open(store_path(s, "checkpoint"), &s->ckpt, &cp, &rec->checkpoint_found);
  if (err)
    return err;
  struct stat st;
  bool have_queues = stat(store_path(s, "consumequeue"), &st) == 0;
  /* Without consume queues (first start, or deleted by an operator to
   * rebuild them) everything is dispatched again from the start of the log. */
  uint64_t from = have_queues ? cp.safe_offset : 0;
  rec->checkpoint = from;

  struct fy_commitlog_config clc = {
      .segment_size = s->cfg.commitlog_segment_size,
      .sync_flush = s->cfg.flush_disk_type == FY_SYNC_FLUSH,
      .flush_interval_ms = s->cfg.flush_interval_ms,
      .write_buffer_size = s->cfg.write_buffer_size,
      .write_buffers = s->cfg.write_buffers,
      .max_waiters = s->cfg.max_pending_puts,
      .page_cache_max = s->cfg.page_cache_max,
      .writeback_bytes = s->cfg.writeback_bytes,
  };
  char cldir[600];
  snprintf(cldir, sizeof cldir, "%s/commitlog", s->cfg.root_dir);
  clc.dir = cldir;
  err = fy_commitlog_open(s->loop, s->aio, &clc, from, &s->cl, &rec->cl);
  if (err)
    return err;
  uint64_t end = rec->cl.end;
  uint64_t min = fy_commitlog_min(s->cl);
  /* Re-dispatch from the checkpoint, clamped into the log that survived. */
  uint64_t start = from > min ? from : min;
  if (start > end)
    start = end;
  /* SYNC_MASTER: visible only up to what a slave had acknowledged; the
   * queues and the index are cut back to there (entries past it may have
   * reached their files before a crash). */
  uint64_t visible = end;
  if (s->cfg.confirm_required && cp.has_confirmed && cp.confirmed_offset < end)
    visible = cp.confirmed_offset > start ? cp.confirmed_offset : start;

  if (s->cfg.index_enable) {
    char ixdir[600];
    snprintf(ixdir, sizeof ixdir, "%s/index", s->cfg.root_dir);
    err = fy_index_open(ixdir, s->cfg.index_slots, s->cfg.index_entries, &s->index);
    if (!err)
      err = fy_index_truncate_phys(s->index, visible);
    if (!err)
      fy_index_use_loop(s->index, s->loop);
    if (err)
      return err;
  }
  err = load_queues(s, &rec->queues);
  if (err)
    return err;
  size_t pos = 0, klen;
  const char *key;
  void *v;
  while (fy_strmap_next(s->queues, &pos, &key, &klen, &v)) {
    struct queue *q = v;
    err = fy_cq_truncate_phys(q->cq, visible);
    if (err)
      return err;
  }
  s->dispatched = start;
  err = dispatch_to(s, visible, &rec->redispatched, false);
  if (err)
    return err;
  pos = 0;
  while (fy_strmap_next(s->queues, &pos, &key, &klen, &v)) {
    struct queue *q = v;
    q->next_offset = fy_cq_max(q->cq);
  }
  s->confirmed = visible;
  rec->visible_end = s->dispatched < end ? s->dispatched : end;
  return reserve_hidden(s, end, &rec->hidden);
}

static void log_recovery(const struct fy_store_recovery *r) {
  fy_info(MOD,
          "recovery: %s shutdown; validated %" PRIu64 " records from offset %" PRIu64
          " to %" PRIu64 "; dropped %" PRIu64 " invalid bytes; re-dispatched %" PRIu64
          " records; %u consume queues",
          r->unclean ? "UNCLEAN" : "clean", r->cl.records_scanned, r->cl.scanned_from, r->cl.end,
          r->cl.dropped_bytes, r->redispatched, r->queues);
  if (r->hidden)
    fy_warn(MOD,
            "recovery: %" PRIu64 " records (%" PRIu64 " bytes from offset %" PRIu64
            ") stay hidden from consumers until a slave acknowledges them (SYNC_MASTER)",
            r->hidden, r->cl.end - r->visible_end, r->visible_end);
}

static void close_resources(fy_store *s) {
  if (s->queues) {
    size_t pos = 0, klen;
    const char *key;
    void *v;
    while (fy_strmap_next(s->queues, &pos, &key, &klen, &v))
      queue_free(v);
    fy_strmap_free(s->queues);
    s->queues = NULL;
  }
  if (s->index)
    fy_index_close(s->index);
  s->index = NULL;
  if (s->ckpt)
    fy_ckpt_close(s->ckpt);
  s->ckpt = NULL;
  if (s->lock_fd >= 0)
    close(s->lock_fd);
  s->lock_fd = -1;
}

int fy_store_open(uv_loop_t *loop, const struct fy_store_config *cfg, fy_store **out,
                  struct fy_store_recovery *rec) {
  struct fy_store_recovery local;
  if (!rec)
    rec = &local;
  memset(rec, 0, sizeof *rec);
  if (cfg->write_buffer_size < cfg->max_message_size + 64 * 1024) {
    fy_error(MOD, "writeBufferSize (%u) must exceed maxMessageSize (%u) by at least 64 KiB",
             cfg->write_buffer_size, cfg->max_message_size);
    return -FY_ECONFIG;
  }
  uint32_t delete_hours;
  if (fy_store_parse_hours(cfg->delete_when, &delete_hours)) {
    fy_error(MOD, "deleteWhen: '%s' is not hours 0-23 separated by ';' (like \"04\" or \"04;16\")",
             cfg->delete_when);
    return -FY_ECONFIG;
  }
  fy_store *s = calloc(1, sizeof *s);
  if (!s)
    return -ENOMEM;
  s->cfg = *cfg;
  s->delete_hours = delete_hours;
  s->confirm_required = cfg->confirm_required;
  s->loop = loop;
  s->lock_fd = -1;
  s->disk_used_pct = -1;
  s->queues = fy_strmap_new();
  int err = s->queues ? fy_mkdir_p(cfg->root_dir, NULL) : -ENOMEM;
  if (!err)
    err = lock_store(s);
  if (err)
    goto out_free;
  struct stat st;
  rec->unclean = stat(store_path(s, "abort"), &st) == 0;
  err = fy_aio_init(loop, cfg->io_backend, 256, &s->aio);
  if (err)
    goto out_free;
  err = recover(s, rec);
  if (err) {
    fy_error(MOD, "recovery failed: %s", fy_strerror(err));
    goto out_close_log;
  }
  log_recovery(rec);
  s->index_safe = fy_ckpt_last(s->ckpt)->safe_offset; /* what recovery found durable */
  int fd = open(store_path(s, "abort"), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd >= 0)
    close(fd);

  fy_commitlog_on_written(s->cl, on_written, s);
  uv_timer_init(loop, &s->flush_timer);
  s->flush_timer.data = s;
  uv_timer_start(&s->flush_timer, on_flush_timer, cfg->flush_cq_interval_ms,
                 cfg->flush_cq_interval_ms);
  uv_timer_init(loop, &s->clean_timer);
  s->clean_timer.data = s;
  uv_timer_start(&s->clean_timer, on_clean_timer, 0, cfg->clean_interval_ms);
  s->handles_open = 2;
  *out = s;
  return 0;

out_close_log:
  if (s->cl)
    fy_commitlog_free(s->cl);
  fy_aio_close(s->aio);
out_free:
  close_resources(s);
  free(s->pend);
  free(s);
  return err;
}

/* ---- close ---- */

static void on_close_ckpt(void *arg, int status) {
  fy_store *s = arg;
  s->ckpt_inflight = false;
  if (status)
    fail_store(s, status);
  close_step(s);
}

static void on_close_queues(void *arg, int status) {
  fy_store *s = arg;
  if (status && !s->flush_status)
    s->flush_status = status;
  if (--s->flush_pending == 0) {
    s->flush_inflight = false;
    if (s->flush_status)
      fail_store(s, s->flush_status);
    close_step(s);
  }
}

static void on_log_closed(void *arg) {
  fy_store *s = arg;
  s->log_closed = true;
  close_step(s);
}

static void on_handle_closed(uv_handle_t *h) {
  fy_store *s = h->data;
  if (--s->handles_open == 0)
    close_step(s);
}

/* Advances the close state machine one step; each step's completion calls
 * back in here. */
static void close_step(fy_store *s) {
  switch (s->close_state) {
  case OPEN:
    s->close_state = CLOSING_LOG;
    uv_timer_stop(&s->flush_timer);
    uv_timer_stop(&s->clean_timer);
    fy_commitlog_close(s->cl, on_log_closed, s);
    return;
  case CLOSING_LOG:
    if (!s->log_closed)
      return;
    if (!s->error && fy_commitlog_written(s->cl) > s->dispatched)
      on_written(s, fy_commitlog_written(s->cl));
    if (s->flush_inflight || s->ckpt_inflight || s->statfs_inflight)
      return; /* the in-flight completion will call back */
    s->close_state = CLOSING_QUEUES;
    s->flush_inflight = true;
    s->flush_pending = 1;
    s->flush_status = 0;
    {
      size_t pos = 0, klen;
      const char *key;
      void *v;
      while (fy_strmap_next(s->queues, &pos, &key, &klen, &v)) {
        struct queue *q = v;
        if (q->cq && fy_cq_dirty(q->cq) && fy_cq_flush(q->cq, s->aio, on_close_queues, s) == 0)
          s->flush_pending++;
      }
      if (s->index && fy_index_dirty(s->index) &&
          fy_index_flush(s->index, s->aio, on_close_queues, s) == 0)
        s->flush_pending++;
    }
    on_close_queues(s, 0);
    return;
  case CLOSING_QUEUES: {
    s->close_state = CLOSING_CHECKPOINT;
    uint64_t safe = s->dispatched < fy_commitlog_flushed(s->cl) ? s->dispatched
                                                                 : fy_commitlog_flushed(s->cl);
    struct fy_checkpoint cp = checkpoint_at(s, safe);
    if (!s->error && fy_ckpt_write(s->ckpt, s->aio, &cp, on_close_ckpt, s) == 0) {
      s->ckpt_inflight = true;
      return;
    }
    close_step(s);
    return;
  }
  case CLOSING_CHECKPOINT:
    s->close_state = CLOSED;
    /* A store that failed keeps its abort marker: the next start recovers. */
    if (!s->error && fy_commitlog_error(s->cl) == 0)
      unlink(store_path(s, "abort"));
    uv_close((uv_handle_t *)&s->flush_timer, on_handle_closed);
    uv_close((uv_handle_t *)&s->clean_timer, on_handle_closed);
    return;
  case CLOSED:
    fy_aio_close(s->aio);
    s->aio = NULL;
    s->close_done(s->close_arg);
    return;
  }
}

void fy_store_close(fy_store *s, void (*done)(void *arg), void *arg) {
  fy_assert(s->close_state == OPEN);
  s->close_done = done;
  s->close_arg = arg;
  close_step(s);
}

void fy_store_free(fy_store *s) {
  if (!s)
    return;
  if (s->cl)
    fy_commitlog_free(s->cl);
  close_resources(s);
  free(s->pend);
  free(s);
}

/* ---- put ---- */

int fy_store_put(fy_store *s, struct fy_msg *msgs, size_t n, fy_append_cb cb, void *arg) {
  return fy_store_put_timed(s, msgs, n, 0, cb, arg);
}

int fy_store_put_timed(fy_store *s, struct fy_msg *msgs, size_t n, uint32_t flush_timeout_ms,
                       fy_append_cb cb, void *arg) {
  if (s->close_state != OPEN)
    return -FY_ESHUTDOWN;
  if (s->error)
    return -FY_ESTORE_FAILED;
  uint64_t bytes = 0;
  for (size_t i = 0; i < n; i++) {
    if ((uint64_t)msgs[i].body_len + msgs[i].props_len > s->cfg.max_message_size)
      return -FY_ETOO_BIG;
    if (!topic_ok(msgs[i].topic, msgs[i].topic_len))
      return -EINVAL;
    bytes += msgs[i].body_len;
  }
  /* Assign queue offsets; undone (and queues made here forgotten) if the
   * append is refused. */
  struct queue *qs[n ? n : 1];
  bool made[n ? n : 1];
  size_t i;
  int err = 0;
  for (i = 0; i < n; i++) {
    qs[i] = NULL;
    made[i] = false;
    if (!fy_sysflag_queued(msgs[i].sys_flag)) {
      msgs[i].queue_offset = 0;
      continue;
    }
    qs[i] = queue_find(s, msgs[i].topic, msgs[i].topic_len, msgs[i].queue_id);
    if (!qs[i]) {
      qs[i] = queue_get(s, msgs[i].topic, msgs[i].topic_len, msgs[i].queue_id);
      made[i] = true;
    }
    if (!qs[i]) {
      err = -ENOMEM;
      break;
    }
    msgs[i].queue_offset = qs[i]->next_offset++;
  }
  uint64_t phys[n ? n : 1];
  if (!err)
    err = fy_commitlog_append_timed(s->cl, msgs, n, phys, flush_timeout_ms, cb, arg);
  if (err) {
    for (size_t j = i; j-- > 0;)
      if (qs[j])
        qs[j]->next_offset--;
    for (size_t j = i; j-- > 0;)
      if (made[j])
        queue_forget(s, qs[j]);
    return err;
  }
  for (size_t j = 0; j < n; j++) {
    msgs[j].phys_offset = phys[j];
    pend_keep(s, &msgs[j], qs[j]);
  }
  s->puts += n;
  s->put_bytes += bytes;
  return 0;
}

/* ---- reads ---- */

const char *fy_get_status_name(enum fy_get_status st) {
  static const char *const names[] = {"FOUND", "NO_MATCHED_MESSAGE", "NO_MESSAGE_IN_QUEUE",
                                      "OFFSET_TOO_SMALL", "OFFSET_OVERFLOW", "NO_MATCHED_LOGIC_QUEUE"};
  return (unsigned)st < sizeof names / sizeof names[0] ? names[st] : "UNKNOWN";
}

static struct queue *queue_lookup(fy_store *s, const char *topic, uint32_t queue_id) {
  struct queue *q = queue_find(s, topic, strlen(topic), queue_id);
  return q && q->cq ? q : NULL;
}

uint64_t fy_store_min_offset(fy_store *s, const char *topic, uint32_t queue_id) {
  struct queue *q = queue_lookup(s, topic, queue_id);
  return q ? queue_min(s, q) : 0;
}

uint64_t fy_store_max_offset(fy_store *s, const char *topic, uint32_t queue_id) {
  struct queue *q = queue_lookup(s, topic, queue_id);
  return q ? fy_cq_max(q->cq) : 0;
}

/* Pins the record an entry points at, checking it is the record the entry
 * describes (cheap checks: the full CRC was checked when it was dispatched). */
static int pin_entry(fy_store *s, const struct fy_cq_entry *e, struct fy_cl_slice *sl) {
  int err = fy_commitlog_read(s->cl, e->phys, e->size, sl);
  if (err)
    return err;
  uint32_t total, magic;
  uint64_t phys;
  if (sl->len != e->size || e->size < FY_RECORD_FIXED_V4) {
    fy_cl_slice_release(sl);
    return -FY_ENOT_FOUND;
  }
  memcpy(&total, sl->data, 4);
  memcpy(&magic, sl->data + 4, 4);
  memcpy(&phys, sl->data + 28, 8);
  if (total != e->size || magic != FY_RECORD_MAGIC || phys != e->phys) {
    fy_cl_slice_release(sl);
    return -FY_ECORRUPT;
  }
  return 0;
}

int fy_store_get(fy_store *s, const char *topic, uint32_t queue_id, uint64_t offset,
                 uint32_t max_msgs, uint32_t max_bytes, const int64_t *tags, size_t ntags,
                 struct fy_get_msg *out, struct fy_get_result *res) {
  memset(res, 0, sizeof *res);
  struct queue *q = queue_lookup(s, topic, queue_id);
  if (!q) {
    res->status = FY_GET_NO_QUEUE;
    res->next_offset = 0;
    return 0;
  }
  res->min_offset = queue_min(s, q);
  res->max_offset = fy_cq_max(q->cq);
  if (offset < res->min_offset) {
    res->status = FY_GET_OFFSET_TOO_SMALL;
    res->next_offset = res->min_offset;
    return 0;
  }
  if (offset >= res->max_offset) {
    res->status = offset == res->max_offset ? FY_GET_NO_NEW : FY_GET_OFFSET_OVERFLOW;
    res->next_offset = res->max_offset;
    return 0;
  }
  if (max_msgs == 0)
    max_msgs = 1;
  struct fy_cq_entry entries[64];
  uint64_t qoffs[64];
  uint64_t from = offset;
  size_t scan_budget = (size_t)max_msgs * 4 + 256;
  uint64_t last_end = 0;
  res->status = FY_GET_NO_MATCHED;
  while (res->count < max_msgs && scan_budget > 0 && from < res->max_offset) {
    size_t want = max_msgs - res->count;
    if (want > 64)
      want = 64;
    uint64_t next;
    size_t got = fy_cq_scan(q->cq, from, want, scan_budget < 4096 ? scan_budget : 4096, tags,
                            ntags, entries, qoffs, &next);
    scan_budget = next - from >= scan_budget ? 0 : scan_budget - (size_t)(next - from);
    for (size_t i = 0; i < got; i++) {
      if (res->count > 0 && res->bytes + entries[i].size > max_bytes) {
        next = qoffs[i];
        scan_budget = 0;
        break;
      }
      struct fy_cl_slice sl;
      if (pin_entry(s, &entries[i], &sl) != 0)
        continue; /* gone to retention: skip */
      out[res->count].slice = sl;
      out[res->count].queue_offset = qoffs[i];
      res->count++;
      res->bytes += entries[i].size;
      last_end = entries[i].phys + entries[i].size;
    }
    if (next == from)
      break;
    from = next;
  }
  res->next_offset = from;
  if (res->count) {
    res->status = FY_GET_FOUND;
    uint64_t w = fy_commitlog_written(s->cl);
    res->behind_bytes = w > last_end ? w - last_end : 0;
  }
  s->gets += res->count;
  return 0;
}

void fy_store_get_release(struct fy_get_msg *msgs, size_t count) {
  for (size_t i = 0; i < count; i++)
    fy_cl_slice_release(&msgs[i].slice);
}

int fy_store_read_msg(fy_store *s, uint64_t phys, struct fy_cl_slice *slice, struct fy_msg *m) {
  uint64_t end = s->confirm_required ? s->dispatched : fy_commitlog_written(s->cl);
  if (phys < fy_commitlog_min(s->cl) || phys >= end)
    return -FY_ENOT_FOUND;
  enum fy_record_kind kind;
  int64_t r = fy_commitlog_read_record(s->cl, phys, slice, &kind, m);
  if (r < 0)
    return r == -EAGAIN ? -FY_ENOT_FOUND : (int)r;
  if (kind != FY_REC_MSG) {
    fy_cl_slice_release(slice);
    return -FY_ENOT_FOUND;
  }
  return 0;
}

static int64_t entry_store_ts(void *arg, const struct fy_cq_entry *e) {
  fy_store *s = arg;
  struct fy_cl_slice sl;
  struct fy_msg m;
  if (fy_store_read_msg(s, e->phys, &sl, &m) != 0)
    return -1;
  fy_cl_slice_release(&sl);
  return m.store_ts_ms;
}

uint64_t fy_store_offset_for_time(fy_store *s, const char *topic, uint32_t queue_id,
                                  int64_t ts_ms) {
  struct queue *q = queue_lookup(s, topic, queue_id);
  return q ? fy_cq_offset_for_time(q->cq, ts_ms, entry_store_ts, s) : 0;
}

static bool has_key(const struct fy_msg *m, const char *key) {
  size_t klen = strlen(key);
  const char *v;
  size_t vlen;
  if (fy_props_get(m->props, m->props_len, FY_PROP_UNIQ_KEY, &v, &vlen) && vlen == klen &&
      memcmp(v, key, klen) == 0)
    return true;
  if (!fy_props_get(m->props, m->props_len, FY_PROP_KEYS, &v, &vlen))
    return false;
  for (const char *p = v, *end = v + vlen; p < end;) {
    const char *sp = memchr(p, ' ', (size_t)(end - p));
    const char *wend = sp ? sp : end;
    if ((size_t)(wend - p) == klen && memcmp(p, key, klen) == 0)
      return true;
    p = wend + 1;
  }
  return false;
}

size_t fy_store_query_key(fy_store *s, const char *topic, const char *key, int64_t begin_ms,
                          int64_t end_ms, struct fy_cl_slice *out, size_t max) {
  if (!s->index || max == 0)
    return 0;
  char full[MAX_KEY_LEN];
  int n = snprintf(full, sizeof full, "%s#%s", topic, key);
  if (n < 0 || (size_t)n >= sizeof full)
    return 0;
  uint64_t cand[256];
  size_t ncand = fy_index_query(s->index, full, (size_t)n, begin_ms, end_ms, cand,
                                max * 4 < 256 ? max * 4 : 256);
  size_t found = 0;
  size_t tlen = strlen(topic);
  for (size_t i = 0; i < ncand && found < max; i++) {
    struct fy_msg m;
    if (fy_store_read_msg(s, cand[i], &out[found], &m) != 0)
      continue;
    if (m.topic_len == tlen && memcmp(m.topic, topic, tlen) == 0 && has_key(&m, key))
      found++;
    else
      fy_cl_slice_release(&out[found]);
  }
  return found;
}

void fy_store_on_arrival(fy_store *s,
                         void (*cb)(void *arg, const char *topic, size_t topic_len,
                                    uint32_t queue_id, uint64_t max_offset),
                         void *arg) {
  s->arrival_cb = cb;
  s->arrival_arg = arg;
}

int fy_store_delete_topic(fy_store *s, const char *topic) {
  size_t tlen = strlen(topic);
  struct queue *victims[1024];
  size_t nv = 0;
  size_t pos = 0, klen;
  const char *key;
  void *v;
  while (fy_strmap_next(s->queues, &pos, &key, &klen, &v) && nv < 1024) {
    struct queue *q = v;
    if (q->topic_len == tlen && memcmp(q->topic, topic, tlen) == 0)
      victims[nv++] = q;
  }
  int err = 0;
  memset(s->qcache, 0, sizeof s->qcache);
  pend_reset(s);
  for (size_t i = 0; i < nv; i++) {
    struct queue *q = victims[i];
    char k[FY_TOPIC_MAX + 8];
    fy_strmap_del(s->queues, k, queue_key(k, q->topic, q->topic_len, q->queue_id));
    if (q->cq) {
      int e = fy_cq_destroy(q->cq);
      if (e && !err)
        err = e;
      q->cq = NULL;
    }
    queue_free(q);
  }
  return err;
}

void fy_store_stats(fy_store *s, struct fy_store_stats *st) {
  memset(st, 0, sizeof *st);
  st->puts = s->puts;
  st->put_bytes = s->put_bytes;
  st->gets = s->gets;
  st->cl_min = fy_commitlog_min(s->cl);
  st->cl_end = fy_commitlog_end(s->cl);
  st->cl_written = fy_commitlog_written(s->cl);
  st->cl_flushed = fy_commitlog_flushed(s->cl);
  struct fy_cl_stats cls;
  fy_commitlog_stats(s->cl, &cls);
  st->cl_cache_dropped_to = cls.cache_dropped_to;
  st->cl_writeback_to = cls.writeback_to;
  st->dispatched = s->dispatched;
  st->checkpoint = fy_ckpt_last(s->ckpt)->safe_offset;
  if (s->confirm_required) {
    uint64_t visible = s->dispatched > s->confirmed ? s->dispatched : s->confirmed;
    st->confirm_required = true;
    st->confirmed = s->confirmed;
    st->unconfirmed_bytes = st->cl_written > visible ? st->cl_written - visible : 0;
  }
  st->queues = (uint32_t)fy_strmap_size(s->queues);
  st->disk_used_pct = s->disk_used_pct;
  st->disk_full = s->disk_full;
  st->error = s->error ? s->error : fy_commitlog_error(s->cl);
  st->io_backend = fy_aio_backend_name(fy_aio_backend_of(s->aio));
}

void fy_store_set_confirm_required(fy_store *s, bool required) {
  if (required && !s->confirm_required && s->confirmed < s->dispatched)
    s->confirmed = s->dispatched; /* what is visible stays visible */
  s->confirm_required = required;
  if (!required)
    on_written(s, fy_commitlog_written(s->cl));
}

void fy_store_confirm(fy_store *s, uint64_t offset) {
  if (offset <= s->confirmed)
    return;
  s->confirmed = offset;
  if (s->confirm_required && s->close_state == OPEN)
    on_written(s, fy_commitlog_written(s->cl));
}

fy_commitlog *fy_store_commitlog(fy_store *s) { return s->cl; }
fy_aio *fy_store_aio(fy_store *s) { return s->aio; }
