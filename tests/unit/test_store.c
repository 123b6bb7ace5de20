/* The store glue (src/store/store.c) with small segments: put and get with
 * queue offsets, tag filters, atomic batches, time and key lookups,
 * retention, sticky errors, the disk guard, clean reopen, SYNC_MASTER
 * visibility across restarts, and a crash at the Nth fdatasync in the style
 * of SQLite's crash tests. The whole suite runs once per fy_aio backend
 * (FERRY_AIO_BACKEND). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "common/crc32c.h"
#include "common/err.h"
#include "store/aio.h"
#include "store/commitlog.h"
#include "store/consumequeue.h"
#include "store/fileops.h"
#include "store/store.h"
#include "testutil.h"

#define DEADLINE_MS 20000
#define SEG (64u * 1024u)
#define TOPIC "T"
#define BODY_MAX 4096u
#define RETRIES_MAX 100000

struct fx {
  uv_loop_t loop;
  fy_store *s;
  struct fy_store_config cfg;
  struct fy_store_recovery rec;
  char root[512];
};

/* ---- harness ------------------------------------------------------------ */

static int setup(void **state) {
  struct fx *fx = calloc(1, sizeof *fx);
  assert_non_null(fx);
  assert_int_equal(uv_loop_init(&fx->loop), 0);
  snprintf(fx->root, sizeof fx->root, "%s", fy_test_mkdtemp("store"));
  struct fy_store_config *c = &fx->cfg;
  fy_store_config_defaults(c);
  snprintf(c->root_dir, sizeof c->root_dir, "%s", fx->root);
  c->commitlog_segment_size = SEG;
  c->cq_file_size = 16 * FY_CQ_ENTRY_SIZE; /* many consume-queue files */
  c->flush_interval_ms = 20;
  c->flush_cq_interval_ms = 20;
  c->max_message_size = 8 * 1024;
  c->index_slots = 101;
  c->index_entries = 400;
  c->write_buffer_size = 128 * 1024;
  c->write_buffers = 4;
  c->max_pending_puts = 4096;
  c->delete_when[0] = '\0'; /* retention only when a test asks for it */
  c->clean_interval_ms = 3600000;
  *state = fx;
  return 0;
}

static void open_store(struct fx *fx) {
  assert_int_equal(fy_store_open(&fx->loop, &fx->cfg, &fx->s, &fx->rec), 0);
}

static void on_closed(void *arg) { *(bool *)arg = true; }

static void close_store(struct fx *fx) {
  bool done = false;
  fy_store_close(fx->s, on_closed, &done);
  assert_true(fy_test_run_until(&fx->loop, &done, DEADLINE_MS));
  fy_store_free(fx->s);
  fx->s = NULL;
}

static void reopen(struct fx *fx) {
  close_store(fx);
  open_store(fx);
}

static int teardown(void **state) {
  struct fx *fx = *state;
  if (fx->s)
    close_store(fx);
  assert_int_equal(fy_test_loop_finish(&fx->loop), 0);
  fy_test_rmtree(fx->root);
  free(fx);
  return 0;
}

struct pred {
  bool (*fn)(void *);
  void *arg;
  bool flag;
};

static void on_check(uv_check_t *c) {
  struct pred *p = c->data;
  if (p->fn(p->arg))
    p->flag = true;
}

static void on_tick(uv_timer_t *t) { (void)t; }

/* Runs the loop until fn(arg) holds (checked every iteration) or the deadline. */
static bool run_until(uv_loop_t *loop, bool (*fn)(void *), void *arg) {
  struct pred p = {fn, arg, fn(arg)};
  uv_check_t check;
  uv_check_init(loop, &check);
  check.data = &p;
  uv_check_start(&check, on_check);
  /* A timer keeps the loop turning while the predicate waits on the clock. */
  uv_timer_t tick;
  uv_timer_init(loop, &tick);
  uv_timer_start(&tick, on_tick, 1, 1);
  bool ok = fy_test_run_until(loop, &p.flag, DEADLINE_MS);
  uv_close((uv_handle_t *)&check, NULL);
  uv_close((uv_handle_t *)&tick, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
  return ok;
}

static bool file_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

static const char *root_path(const struct fx *fx, const char *name) {
  static char p[700];
  snprintf(p, sizeof p, "%s/%s", fx->root, name);
  return p;
}

/* ---- messages ------------------------------------------------------------ */

/* Bodies are derived from a sequence number so any record can be checked. */
static uint32_t make_body(uint64_t seq, uint8_t *buf, uint32_t size) {
  for (uint32_t i = 0; i < size; i++)
    buf[i] = (uint8_t)(seq * 131 + i * 7 + (i >> 8));
  if (size >= 8)
    memcpy(buf, &seq, 8);
  return size;
}

struct msgbuf {
  struct fy_msg m;
  uint8_t body[BODY_MAX];
  char props[256];
  char topic[64];
};

/* A message of topic/queue with a seq-derived body; tags, keys (KEYS) and
 * uniq (UNIQ_KEY) may be NULL. */
static struct fy_msg *make_msg(struct msgbuf *b, const char *topic, uint32_t qid, uint64_t seq,
                               uint32_t body_len, const char *tags, const char *keys,
                               const char *uniq) {
  memset(&b->m, 0, sizeof b->m);
  snprintf(b->topic, sizeof b->topic, "%s", topic);
  size_t plen = 0;
  if (tags)
    assert_int_equal(fy_props_add(b->props, sizeof b->props, &plen, FY_PROP_TAGS, tags,
                                  strlen(tags)), 0);
  if (keys)
    assert_int_equal(fy_props_add(b->props, sizeof b->props, &plen, FY_PROP_KEYS, keys,
                                  strlen(keys)), 0);
  if (uniq)
    assert_int_equal(fy_props_add(b->props, sizeof b->props, &plen, FY_PROP_UNIQ_KEY, uniq,
                                  strlen(uniq)), 0);
  assert_true(body_len <= BODY_MAX);
  b->m.topic = b->topic;
  b->m.topic_len = (uint16_t)strlen(b->topic);
  b->m.queue_id = qid;
  b->m.body = b->body;
  b->m.body_len = make_body(seq, b->body, body_len);
  b->m.props = b->props;
  b->m.props_len = (uint16_t)plen;
  b->m.flag = (uint32_t)seq;
  b->m.born_ts_ms = 1764096000000;
  b->m.born_host.ip[0] = 127;
  b->m.born_host.ip[3] = 1;
  b->m.store_host = b->m.born_host;
  return &b->m;
}

struct ack {
  bool called;
  int status;
  uint64_t phys, size;
};

static void on_ack(void *arg, int status, uint64_t phys, uint64_t size) {
  struct ack *a = arg;
  assert_false(a->called);
  a->called = true;
  a->status = status;
  a->phys = phys;
  a->size = size;
}

/* Puts, running the loop while the log is busy. */
static int put_retry(struct fx *fx, struct fy_msg *msgs, size_t n, struct ack *a) {
  for (int i = 0; i < RETRIES_MAX; i++) {
    int r = fy_store_put(fx->s, msgs, n, a ? on_ack : NULL, a);
    if (r != -FY_EBUSY)
      return r;
    uv_run(&fx->loop, UV_RUN_ONCE);
  }
  fail_msg("put stayed busy");
  return -1;
}

/* Puts one message and waits for its acknowledgement; returns its queue offset. */
static uint64_t put_wait(struct fx *fx, struct fy_msg *m) {
  struct ack a = {0};
  assert_int_equal(put_retry(fx, m, 1, &a), 0);
  assert_true(fy_test_run_until(&fx->loop, &a.called, DEADLINE_MS));
  assert_int_equal(a.status, 0);
  assert_int_equal(a.phys, m->phys_offset);
  return m->queue_offset;
}

/* Checks that the record in slice is message seq of topic/qid at qoff. */
static void check_record(const struct fy_cl_slice *sl, const char *topic, uint32_t qid,
                         uint64_t qoff, uint64_t seq, uint32_t body_len) {
  enum fy_record_kind kind;
  struct fy_msg m;
  assert_true(fy_record_decode(sl->data, sl->len, sl->offset, &kind, &m) > 0);
  assert_int_equal(kind, FY_REC_MSG);
  assert_int_equal(m.topic_len, strlen(topic));
  assert_memory_equal(m.topic, topic, m.topic_len);
  assert_int_equal(m.queue_id, qid);
  assert_int_equal(m.queue_offset, qoff);
  assert_int_equal(m.phys_offset, sl->offset);
  assert_int_equal(m.flag, (uint32_t)seq);
  uint8_t expect[BODY_MAX];
  assert_int_equal(m.body_len, body_len);
  make_body(seq, expect, body_len);
  assert_memory_equal(m.body, expect, body_len);
}

/* Gets exactly one message at qoff and checks it. */
static void check_get(struct fx *fx, const char *topic, uint32_t qid, uint64_t qoff, uint64_t seq,
                      uint32_t body_len, uint64_t phys) {
  struct fy_get_msg g;
  struct fy_get_result res;
  assert_int_equal(fy_store_get(fx->s, topic, qid, qoff, 1, 1 << 20, NULL, 0, &g, &res), 0);
  assert_int_equal(res.status, FY_GET_FOUND);
  assert_int_equal(res.count, 1);
  assert_int_equal(g.queue_offset, qoff);
  assert_int_equal(g.slice.offset, phys);
  check_record(&g.slice, topic, qid, qoff, seq, body_len);
  fy_store_get_release(&g, 1);
}

static struct fy_store_stats stats(struct fx *fx) {
  struct fy_store_stats st;
  fy_store_stats(fx->s, &st);
  return st;
}

/* ---- put and get ----------------------------------------------------------- */

static void test_put_get_round_trip(void **state) {
  struct fx *fx = *state;
  open_store(fx);
  assert_false(fx->rec.unclean);
  enum { N = 30 };
  static struct msgbuf b[N];
  struct ack acks[N] = {0};
  uint64_t qoff[N], phys[N];
  for (uint32_t i = 0; i < N; i++) { /* queue 0 gets 2 of every 3 */
    uint32_t qid = i % 3 == 2 ? 1 : 0;
    struct fy_msg *m = make_msg(&b[i], TOPIC, qid, i, 50 + i * 13, NULL, NULL, NULL);
    assert_int_equal(put_retry(fx, m, 1, &acks[i]), 0);
    qoff[i] = m->queue_offset;
    phys[i] = m->phys_offset;
    assert_false(acks[i].called); /* never from inside put */
  }
  uint64_t next[2] = {0, 0};
  for (uint32_t i = 0; i < N; i++) {
    uint32_t qid = i % 3 == 2 ? 1 : 0;
    assert_int_equal(qoff[i], next[qid]++); /* consecutive per queue */
  }
  assert_true(fy_test_run_until(&fx->loop, &acks[N - 1].called, DEADLINE_MS));
  for (uint32_t i = 0; i < N; i++) {
    assert_true(acks[i].called);
    assert_int_equal(acks[i].status, 0);
    assert_int_equal(acks[i].phys, phys[i]);
  }
  assert_int_equal(fy_store_min_offset(fx->s, TOPIC, 0), 0);
  assert_int_equal(fy_store_max_offset(fx->s, TOPIC, 0), next[0]);
  assert_int_equal(fy_store_max_offset(fx->s, TOPIC, 1), next[1]);
  /* Everything in one get, in order. */
  struct fy_get_msg g[64];
  struct fy_get_result res;
  assert_int_equal(fy_store_get(fx->s, TOPIC, 0, 0, 64, 1 << 20, NULL, 0, g, &res), 0);
  assert_int_equal(res.status, FY_GET_FOUND);
  assert_int_equal(res.count, next[0]);
  assert_int_equal(res.next_offset, next[0]);
  assert_int_equal(res.min_offset, 0);
  assert_int_equal(res.max_offset, next[0]);
  for (uint32_t i = 0, k = 0; i < N; i++) {
    if (i % 3 == 2)
      continue;
    assert_int_equal(g[k].queue_offset, qoff[i]);
    assert_int_equal(g[k].slice.offset, phys[i]);
    check_record(&g[k].slice, TOPIC, 0, qoff[i], i, 50 + i * 13);
    k++;
  }
  fy_store_get_release(g, res.count);
  /* Bounded by count and by bytes (but at least one message). */
  assert_int_equal(fy_store_get(fx->s, TOPIC, 0, 4, 3, 1 << 20, NULL, 0, g, &res), 0);
  assert_int_equal(res.count, 3);
  assert_int_equal(res.next_offset, 7);
  assert_int_equal(g[0].queue_offset, 4);
  fy_store_get_release(g, res.count);
  assert_int_equal(fy_store_get(fx->s, TOPIC, 0, 4, 32, 1, NULL, 0, g, &res), 0);
  assert_int_equal(res.status, FY_GET_FOUND);
  assert_int_equal(res.count, 1);
  assert_int_equal(res.next_offset, 5);
  fy_store_get_release(g, res.count);
  /* The edges. */
  assert_int_equal(fy_store_get(fx->s, TOPIC, 0, next[0], 8, 1 << 20, NULL, 0, g, &res), 0);
  assert_int_equal(res.status, FY_GET_NO_NEW);
  assert_int_equal(res.next_offset, next[0]);
  assert_int_equal(fy_store_get(fx->s, TOPIC, 0, next[0] + 5, 8, 1 << 20, NULL, 0, g, &res), 0);
  assert_int_equal(res.status, FY_GET_OFFSET_OVERFLOW);
  assert_int_equal(res.next_offset, next[0]);
  assert_int_equal(fy_store_get(fx->s, TOPIC, 7, 0, 8, 1 << 20, NULL, 0, g, &res), 0);
  assert_int_equal(res.status, FY_GET_NO_QUEUE);
  assert_int_equal(fy_store_get(fx->s, "Other", 0, 0, 8, 1 << 20, NULL, 0, g, &res), 0);
  assert_int_equal(res.status, FY_GET_NO_QUEUE);
  /* By physical offset. */
  struct fy_cl_slice sl;
  struct fy_msg m;
  assert_int_equal(fy_store_read_msg(fx->s, phys[2], &sl, &m), 0);
  assert_int_equal(m.queue_id, 1);
  check_record(&sl, TOPIC, 1, qoff[2], 2, 50 + 2 * 13);
  fy_cl_slice_release(&sl);
  assert_int_equal(fy_store_read_msg(fx->s, fy_commitlog_written(fy_store_commitlog(fx->s)), &sl,
                                     &m),
                   -FY_ENOT_FOUND);
  struct fy_store_stats st = stats(fx);
  assert_int_equal(st.puts, N);
  assert_int_equal(st.queues, 2);
  assert_int_equal(st.dispatched, st.cl_written);
  assert_int_equal(st.error, 0);
}

static void test_tag_filter(void **state) {
  struct fx *fx = *state;
  open_store(fx);
  const char *tags[] = {"A", "B", "A", "C", NULL, "A", "B"};
  enum { N = sizeof tags / sizeof tags[0] };
  static struct msgbuf b[N];
  for (uint32_t i = 0; i < N; i++)
    put_wait(fx, make_msg(&b[i], TOPIC, 0, i, 40, tags[i], NULL, NULL));
  struct fy_get_msg g[16];
  struct fy_get_result res;
  int64_t a = fy_tag_hash("A", 1), bc[2] = {fy_tag_hash("B", 1), fy_tag_hash("C", 1)};
  assert_int_equal(fy_store_get(fx->s, TOPIC, 0, 0, 16, 1 << 20, &a, 1, g, &res), 0);
  assert_int_equal(res.status, FY_GET_FOUND);
  assert_int_equal(res.count, 3);
  assert_int_equal(g[0].queue_offset, 0);
  assert_int_equal(g[1].queue_offset, 2);
  assert_int_equal(g[2].queue_offset, 5);
  check_record(&g[1].slice, TOPIC, 0, 2, 2, 40);
  assert_int_equal(res.next_offset, N);
  fy_store_get_release(g, res.count);
  assert_int_equal(fy_store_get(fx->s, TOPIC, 0, 0, 16, 1 << 20, bc, 2, g, &res), 0);
  assert_int_equal(res.count, 3);
  assert_int_equal(g[0].queue_offset, 1);
  assert_int_equal(g[1].queue_offset, 3);
  assert_int_equal(g[2].queue_offset, 6);
  fy_store_get_release(g, res.count);
  /* From the middle, and a limit that stops before the end. */
  assert_int_equal(fy_store_get(fx->s, TOPIC, 0, 3, 1, 1 << 20, &a, 1, g, &res), 0);
  assert_int_equal(res.count, 1);
  assert_int_equal(g[0].queue_offset, 5);
  assert_int_equal(res.next_offset, 6);
  fy_store_get_release(g, res.count);
  /* No match: the scan still moves the consumer forward. */
  int64_t z = fy_tag_hash("Z", 1);
  assert_int_equal(fy_store_get(fx->s, TOPIC, 0, 0, 16, 1 << 20, &z, 1, g, &res), 0);
  assert_int_equal(res.status, FY_GET_NO_MATCHED);
  assert_int_equal(res.count, 0);
  assert_int_equal(res.next_offset, N);
}

static void test_batch_put_atomic(void **state) {
  struct fx *fx = *state;
  open_store(fx);
  static struct msgbuf b[4];
  struct fy_msg batch[3] = {*make_msg(&b[0], TOPIC, 0, 0, 100, NULL, NULL, NULL),
                            *make_msg(&b[1], TOPIC, 1, 1, 200, NULL, NULL, NULL),
                            *make_msg(&b[2], TOPIC, 0, 2, 300, NULL, NULL, NULL)};
  struct ack a = {0};
  assert_int_equal(put_retry(fx, batch, 3, &a), 0);
  assert_int_equal(batch[0].queue_offset, 0);
  assert_int_equal(batch[1].queue_offset, 0);
  assert_int_equal(batch[2].queue_offset, 1);
  assert_int_equal(batch[1].phys_offset, batch[0].phys_offset + batch[0].total_size);
  assert_int_equal(batch[2].phys_offset, batch[1].phys_offset + batch[1].total_size);
  assert_true(fy_test_run_until(&fx->loop, &a.called, DEADLINE_MS));
  assert_int_equal(a.status, 0);
  assert_int_equal(a.phys, batch[0].phys_offset);
  assert_int_equal(a.size, batch[0].total_size + batch[1].total_size + batch[2].total_size);
  check_get(fx, TOPIC, 0, 1, 2, 300, batch[2].phys_offset);
  check_get(fx, TOPIC, 1, 0, 1, 200, batch[1].phys_offset);

  /* A batch with one bad message stores nothing and assigns nothing. */
  fy_commitlog *cl = fy_store_commitlog(fx->s);
  uint64_t end = fy_commitlog_end(cl);
  uint32_t queues = stats(fx).queues;
  struct fy_msg bad[3] = {*make_msg(&b[0], TOPIC, 0, 3, 100, NULL, NULL, NULL),
                          *make_msg(&b[1], "Fresh", 0, 4, 100, NULL, NULL, NULL),
                          *make_msg(&b[2], TOPIC, 0, 5, 100, NULL, NULL, NULL)};
  bad[2].body_len = fx->cfg.max_message_size + 1;
  bad[2].body = malloc(bad[2].body_len);
  memset((void *)bad[2].body, 'x', bad[2].body_len);
  assert_int_equal(fy_store_put(fx->s, bad, 3, on_ack, &a), -FY_ETOO_BIG);
  free((void *)bad[2].body);
  bad[2] = *make_msg(&b[2], TOPIC, 0, 5, 100, NULL, NULL, NULL);
  bad[2].topic_len = 0; /* the log refuses it: the queue offsets taken are given back */
  assert_int_equal(fy_store_put(fx->s, bad, 3, on_ack, &a), -EINVAL);
  bad[2].topic = "a/b"; /* a topic no consume queue can hold */
  bad[2].topic_len = 3;
  assert_int_equal(fy_store_put(fx->s, bad, 3, on_ack, &a), -EINVAL);
  assert_int_equal(fy_commitlog_end(cl), end);
  assert_int_equal(stats(fx).queues, queues); /* no queue appeared for "Fresh" */
  assert_int_equal(fy_store_max_offset(fx->s, TOPIC, 0), 2);
  assert_int_equal(fy_store_max_offset(fx->s, "Fresh", 0), 0);
  /* The next put continues where the good batch left off. */
  struct fy_msg *m = make_msg(&b[3], TOPIC, 0, 6, 100, NULL, NULL, NULL);
  assert_int_equal(put_wait(fx, m), 2);
  check_get(fx, TOPIC, 0, 2, 6, 100, m->phys_offset);
  assert_int_equal(stats(fx).error, 0);
}

/* Waits until the wall clock (ms) has moved past t. */
static bool clock_past(void *arg) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 > *(int64_t *)arg;
}

static void test_offset_for_time(void **state) {
  struct fx *fx = *state;
  open_store(fx);
  enum { GROUPS = 4, PER = 5 };
  static struct msgbuf b[GROUPS * PER];
  int64_t ts[GROUPS * PER];
  for (uint32_t g = 0; g < GROUPS; g++) {
    for (uint32_t i = 0; i < PER; i++) {
      uint32_t k = g * PER + i;
      struct fy_msg *m = make_msg(&b[k], TOPIC, 0, k, 60, NULL, NULL, NULL);
      assert_int_equal(put_wait(fx, m), k);
      ts[k] = m->store_ts_ms;
    }
    assert_true(run_until(&fx->loop, clock_past, &ts[g * PER + PER - 1]));
  }
  for (uint32_t k = 1; k < GROUPS * PER; k++)
    assert_true(ts[k] >= ts[k - 1]);
  /* For every stored timestamp: the first offset stored at or after it. */
  for (uint32_t k = 0; k < GROUPS * PER; k++) {
    uint64_t first = k;
    while (first > 0 && ts[first - 1] >= ts[k])
      first--;
    assert_int_equal(fy_store_offset_for_time(fx->s, TOPIC, 0, ts[k]), first);
  }
  for (uint32_t g = 1; g < GROUPS; g++) /* between groups: the group's first */
    assert_int_equal(fy_store_offset_for_time(fx->s, TOPIC, 0, ts[g * PER - 1] + 1), g * PER);
  assert_int_equal(fy_store_offset_for_time(fx->s, TOPIC, 0, 0), 0);
  assert_int_equal(fy_store_offset_for_time(fx->s, TOPIC, 0, ts[GROUPS * PER - 1] + 1),
                   GROUPS * PER);
  assert_int_equal(fy_store_offset_for_time(fx->s, TOPIC, 5, 0), 0); /* no such queue */
}

/* The index's key hash of "topic#key": the low 32 bits of XXH3-64. */
static uint32_t ix_hash(const char *s) { return (uint32_t)XXH3_64bits(s, strlen(s)); }

static void test_query_key(void **state) {
  struct fx *fx = *state;
  open_store(fx);
  static struct msgbuf b[4];
  /* The last two keys' full 32-bit hashes collide: the index hands back the
   * record for either key; the store must return it only for its own key. */
  assert_int_equal(ix_hash("Kc#key84960"), ix_hash("Kc#key125588"));
  put_wait(fx, make_msg(&b[0], "Kc", 0, 0, 30, NULL, "k1 k2", "U-1"));
  put_wait(fx, make_msg(&b[1], "Kc", 1, 1, 30, "tag", "k2", "U-2"));
  put_wait(fx, make_msg(&b[2], "Other", 0, 2, 30, NULL, "k1", "U-1"));
  put_wait(fx, make_msg(&b[3], "Kc", 0, 3, 30, NULL, "key84960", NULL));
  uint64_t p[4];
  for (int i = 0; i < 4; i++)
    p[i] = b[i].m.phys_offset;
  struct fy_cl_slice out[8];
  size_t n = fy_store_query_key(fx->s, "Kc", "k1", 0, INT64_MAX, out, 8);
  assert_int_equal(n, 1); /* not the record of topic Other */
  assert_int_equal(out[0].offset, p[0]);
  check_record(&out[0], "Kc", 0, 0, 0, 30);
  fy_cl_slice_release(&out[0]);
  n = fy_store_query_key(fx->s, "Kc", "k2", 0, INT64_MAX, out, 8);
  assert_int_equal(n, 2);
  assert_int_equal(out[0].offset, p[1]); /* newest first */
  assert_int_equal(out[1].offset, p[0]);
  for (size_t i = 0; i < n; i++)
    fy_cl_slice_release(&out[i]);
  n = fy_store_query_key(fx->s, "Kc", "k2", 0, INT64_MAX, out, 1); /* bounded */
  assert_int_equal(n, 1);
  assert_int_equal(out[0].offset, p[1]);
  fy_cl_slice_release(&out[0]);
  n = fy_store_query_key(fx->s, "Kc", "U-1", 0, INT64_MAX, out, 8); /* UNIQ_KEY */
  assert_int_equal(n, 1);
  assert_int_equal(out[0].offset, p[0]);
  fy_cl_slice_release(&out[0]);
  n = fy_store_query_key(fx->s, "Other", "U-1", 0, INT64_MAX, out, 8);
  assert_int_equal(n, 1);
  assert_int_equal(out[0].offset, p[2]);
  fy_cl_slice_release(&out[0]);
  n = fy_store_query_key(fx->s, "Kc", "key84960", 0, INT64_MAX, out, 8);
  assert_int_equal(n, 1);
  assert_int_equal(out[0].offset, p[3]);
  fy_cl_slice_release(&out[0]);
  assert_int_equal(fy_store_query_key(fx->s, "Kc", "key125588", 0, INT64_MAX, out, 8), 0);
  assert_int_equal(fy_store_query_key(fx->s, "Kc", "k3", 0, INT64_MAX, out, 8), 0);
  assert_int_equal(fy_store_query_key(fx->s, "Kc", "k", 0, INT64_MAX, out, 8), 0); /* no prefix match */
  /* Outside the time window. */
  assert_int_equal(fy_store_query_key(fx->s, "Kc", "k1", 0, b[0].m.store_ts_ms - 5000, out, 8),
                   0);
  /* Still found after a reopen (from the index files). */
  reopen(fx);
  n = fy_store_query_key(fx->s, "Kc", "k2", 0, INT64_MAX, out, 8);
  assert_int_equal(n, 2);
  for (size_t i = 0; i < n; i++)
    fy_cl_slice_release(&out[i]);
}

/* Runs the loop until topic/qid's max offset reaches want (or fails). */
static void run_until_max(struct fx *fx, const char *topic, uint32_t qid, uint64_t want) {
  uint64_t deadline = uv_hrtime() + (uint64_t)DEADLINE_MS * 1000000u;
  while (fy_store_max_offset(fx->s, topic, qid) < want && uv_hrtime() < deadline)
    uv_run(&fx->loop, UV_RUN_ONCE);
  assert_int_equal(fy_store_max_offset(fx->s, topic, qid), want);
}

static void expect_key(struct fx *fx, const char *topic, const char *key, uint64_t phys) {
  struct fy_cl_slice out[4];
  size_t n = fy_store_query_key(fx->s, topic, key, 0, INT64_MAX, out, 4);
  assert_int_equal(n, 1);
  assert_int_equal(out[0].offset, phys);
  fy_cl_slice_release(&out[0]);
}

/*
 * Dispatch takes most records from what fy_store_put kept and reads the
 * others back from the log: more records than the store keeps before one is
 * dispatched, a record with more keys than it keeps, a prepared
 * transaction, and records of a topic deleted before their dispatch. Every
 * record must land in its queue and the index, in order, either way (debug
 * builds also check each kept record against the log).
 */
static void test_dispatch_kept_and_read_back(void **state) {
  struct fx *fx = *state;
  open_store(fx);
  enum { N = 40000 }; /* more than the store keeps (32768) */
  static struct msgbuf b;
  char uniq[32];
  uint64_t phys[N];
  for (uint64_t i = 0; i < N; i++) {
    snprintf(uniq, sizeof uniq, "U-%" PRIu64, i);
    make_msg(&b, "Dk", (uint32_t)(i % 3), i, 20, i % 2 ? "odd" : "even", NULL, uniq);
    assert_int_equal(put_retry(fx, &b.m, 1, NULL), 0);
    phys[i] = b.m.phys_offset;
  }
  uint64_t many_phys, prepared_phys;
  make_msg(&b, "Dk", 0, N, 20, NULL, "a1 a2 a3 a4 a5 a6", "U-many");
  assert_int_equal(put_retry(fx, &b.m, 1, NULL), 0);
  many_phys = b.m.phys_offset;
  make_msg(&b, "Dk", 1, N + 1, 20, NULL, "prep", NULL);
  b.m.sys_flag = FY_SYSFLAG_TRANS_PREPARED;
  assert_int_equal(put_retry(fx, &b.m, 1, NULL), 0);
  prepared_phys = b.m.phys_offset;
  make_msg(&b, "Gone", 0, 0, 20, NULL, NULL, "U-gone");
  assert_int_equal(put_retry(fx, &b.m, 1, NULL), 0);
  assert_int_equal(fy_store_delete_topic(fx->s, "Gone"), 0); /* its kept facts are dropped */

  uint64_t per_q[3] = {(N + 2) / 3 + 1, (N + 1) / 3, N / 3}; /* + the many-keys record */
  for (uint32_t q = 0; q < 3; q++)
    run_until_max(fx, "Dk", q, per_q[q]);
  static const uint64_t probe[] = {0, 1, 32766, 32767, 32768, 32769, N - 1};
  for (size_t k = 0; k < sizeof probe / sizeof probe[0]; k++) {
    uint64_t i = probe[k];
    check_get(fx, "Dk", (uint32_t)(i % 3), i / 3, i, 20, phys[i]);
    snprintf(uniq, sizeof uniq, "U-%" PRIu64, i);
    expect_key(fx, "Dk", uniq, phys[i]);
  }
  check_get(fx, "Dk", 0, per_q[0] - 1, N, 20, many_phys);
  expect_key(fx, "Dk", "a1", many_phys);
  expect_key(fx, "Dk", "a6", many_phys);
  expect_key(fx, "Dk", "U-many", many_phys);
  expect_key(fx, "Dk", "prep", prepared_phys); /* indexed, not queued */
  assert_int_equal(fy_store_max_offset(fx->s, "Dk", 1), per_q[1]);
  /* Tags kept at the put filter as well as tags read back. */
  struct fy_get_msg g[8];
  struct fy_get_result res;
  int64_t odd = fy_tag_hash("odd", 3);
  assert_int_equal(fy_store_get(fx->s, "Dk", 1, 0, 4, 1 << 20, &odd, 1, g, &res), 0);
  assert_int_equal(res.status, FY_GET_FOUND);
  assert_true(res.count > 0);
  for (uint32_t k = 0; k < res.count; k++) {
    enum fy_record_kind kind;
    struct fy_msg m;
    assert_true(fy_record_decode(g[k].slice.data, g[k].slice.len, g[k].slice.offset, &kind, &m) > 0);
    assert_int_equal(m.flag % 2, 1);
  }
  fy_store_get_release(g, res.count);
}

/* ---- retention --------------------------------------------------------------- */

static bool seg_gone(void *arg) { return !file_exists(arg); }

static void test_retention(void **state) {
  struct fx *fx = *state;
  fx->cfg.file_reserved_hours = 0;
  fx->cfg.flush_cq_interval_ms = 60000; /* the checkpoint cannot move on its own */
  open_store(fx);
  enum { N = 300, BODY = 1000 };
  static struct msgbuf b;
  uint64_t phys[N];
  for (uint32_t i = 0; i < N; i++) {
    assert_int_equal(put_wait(fx, make_msg(&b, TOPIC, 0, i, BODY, NULL, NULL, NULL)), i);
    phys[i] = b.m.phys_offset;
  }
  fy_commitlog *cl = fy_store_commitlog(fx->s);
  uint64_t end = fy_commitlog_end(cl);
  assert_true(end > 4 * SEG);
  /* Never beyond the checkpoint: a fresh store's is 0. */
  assert_int_equal(stats(fx).checkpoint, 0);
  assert_int_equal(fy_store_clean_now(fx->s, true), 0);
  assert_int_equal(fy_commitlog_min(cl), 0);
  /* A clean close checkpoints everything. */
  reopen(fx);
  cl = fy_store_commitlog(fx->s);
  assert_int_equal(stats(fx).checkpoint, end);
  int deleted = 0;
  for (int pass = 0; pass < 10; pass++) {
    int d = fy_store_clean_now(fx->s, true);
    assert_true(d >= 0);
    if (d == 0)
      break;
    deleted += d;
  }
  uint64_t active = end / SEG * SEG;
  assert_int_equal(deleted, active / SEG); /* all but the active one */
  assert_int_equal(fy_commitlog_min(cl), active);
  char path[700];
  snprintf(path, sizeof path, "%s/commitlog/%020" PRIu64, fx->root, active);
  assert_true(file_exists(path));
  snprintf(path, sizeof path, "%s/commitlog/%020" PRIu64, fx->root, (uint64_t)0);
  assert_true(run_until(&fx->loop, seg_gone, path)); /* unlinked off the loop */
  /* The consume queue starts at the first message still in the log. */
  uint64_t first = 0;
  while (phys[first] < active)
    first++;
  uint64_t min = fy_store_min_offset(fx->s, TOPIC, 0);
  assert_int_equal(min, first);
  assert_int_equal(fy_store_max_offset(fx->s, TOPIC, 0), N);
  struct fy_get_msg g[4];
  struct fy_get_result res;
  for (uint64_t q = 0; q < min; q += 7) {
    assert_int_equal(fy_store_get(fx->s, TOPIC, 0, q, 4, 1 << 20, NULL, 0, g, &res), 0);
    assert_int_equal(res.status, FY_GET_OFFSET_TOO_SMALL);
    assert_int_equal(res.next_offset, min);
    assert_int_equal(res.min_offset, min);
  }
  for (uint64_t q = min; q < N; q++)
    check_get(fx, TOPIC, 0, q, q, BODY, phys[q]);
  /* Consume-queue files wholly below the new minimum are gone. */
  snprintf(path, sizeof path, "%s/consumequeue/%s/0/%020" PRIu64, fx->root, TOPIC, (uint64_t)0);
  assert_true(run_until(&fx->loop, seg_gone, path)); /* unlinked off the loop too */
  /* Records of deleted segments are not found by key or offset. */
  struct fy_cl_slice sl;
  struct fy_msg m;
  assert_int_equal(fy_store_read_msg(fx->s, phys[0], &sl, &m), -FY_ENOT_FOUND);
  /* The store keeps working, and reopens with the same bounds. */
  assert_int_equal(put_wait(fx, make_msg(&b, TOPIC, 0, N, BODY, NULL, NULL, NULL)), N);
  reopen(fx);
  assert_false(fx->rec.unclean);
  assert_int_equal(fy_store_min_offset(fx->s, TOPIC, 0), first);
  assert_int_equal(fy_store_max_offset(fx->s, TOPIC, 0), N + 1);
  check_get(fx, TOPIC, 0, N, N, BODY, b.m.phys_offset);
}

/* ---- errors and the disk guard ------------------------------------------------ */

static void sticky_error(struct fx *fx, enum fy_aio_op op) {
  fx->cfg.flush_disk_type = FY_SYNC_FLUSH;
  fx->cfg.flush_cq_interval_ms = 60000; /* only the commit log syncs: the fault hits it */
  open_store(fx);
  static struct msgbuf b;
  put_wait(fx, make_msg(&b, TOPIC, 0, 0, 100, NULL, "key0", NULL));
  uint64_t p0 = b.m.phys_offset;
  fy_aio_inject_fault(fy_store_aio(fx->s), op, 0, 1, -EIO);
  struct ack a = {0};
  assert_int_equal(put_retry(fx, make_msg(&b, TOPIC, 0, 1, 100, NULL, NULL, NULL), 1, &a), 0);
  assert_true(fy_test_run_until(&fx->loop, &a.called, DEADLINE_MS));
  assert_int_equal(a.status, -EIO);
  assert_int_equal(stats(fx).error, -EIO);
  assert_int_equal(fy_store_put(fx->s, make_msg(&b, TOPIC, 0, 2, 100, NULL, NULL, NULL), 1,
                                on_ack, &a),
                   -FY_ESTORE_FAILED);
  assert_int_equal(fy_store_put(fx->s, make_msg(&b, "Else", 0, 3, 100, NULL, NULL, NULL), 1, NULL,
                                NULL),
                   -FY_ESTORE_FAILED);
  /* Reads go on. */
  check_get(fx, TOPIC, 0, 0, 0, 100, p0);
  struct fy_cl_slice out[2];
  assert_int_equal(fy_store_query_key(fx->s, TOPIC, "key0", 0, INT64_MAX, out, 2), 1);
  fy_cl_slice_release(&out[0]);
  /* Closing a failed store completes and keeps the abort marker. */
  close_store(fx);
  assert_true(file_exists(root_path(fx, "abort")));
  open_store(fx);
  assert_true(fx->rec.unclean);
  check_get(fx, TOPIC, 0, 0, 0, 100, p0);
  struct fy_msg *m = make_msg(&b, TOPIC, 0, 4, 100, NULL, NULL, NULL);
  uint64_t q = put_wait(fx, m); /* writes are accepted again */
  /* A failed write never reached the file; a failed fdatasync's record did
   * (it was never acknowledged, so it may or may not survive; here it does). */
  assert_int_equal(q, op == FY_AIO_WRITE ? 1 : 2);
  check_get(fx, TOPIC, 0, q, 4, 100, m->phys_offset);
  close_store(fx);
  assert_false(file_exists(root_path(fx, "abort")));
}

static void test_sticky_write_error(void **state) { sticky_error(*state, FY_AIO_WRITE); }
static void test_sticky_fdatasync_error(void **state) { sticky_error(*state, FY_AIO_FDATASYNC); }

static bool disk_full(void *arg) { return stats(arg).disk_full; }

static void test_disk_guard(void **state) {
  struct fx *fx = *state;
  struct statvfs sv;
  assert_int_equal(statvfs(fx->root, &sv), 0);
  /* As df shows it (and as the store measures it): used / (used + available). */
  uint64_t used_blocks = sv.f_blocks - sv.f_bfree;
  int used = (int)(used_blocks * 100 / (used_blocks + sv.f_bavail));
  if (used < 10) {
    fprintf(stderr, "disk guard: %s is only %d%% used; skipped\n", fx->root, used);
    skip();
  }
  fx->cfg.disk_full_ratio = (uint32_t)(used / 2); /* well below the current usage */
  fx->cfg.clean_interval_ms = 100;
  open_store(fx);
  assert_true(run_until(&fx->loop, disk_full, fx)); /* after the first statfs tick */
  struct fy_store_stats st = stats(fx);
  assert_true(st.disk_used_pct >= used / 2);
  static struct msgbuf b;
  assert_int_equal(fy_store_put(fx->s, make_msg(&b, TOPIC, 0, 0, 100, NULL, NULL, NULL), 1, NULL,
                                NULL),
                   -FY_EDISK_FULL);
  assert_int_equal(fy_store_max_offset(fx->s, TOPIC, 0), 0);
  assert_int_equal(stats(fx).error, 0); /* not sticky: the store itself is fine */
  close_store(fx);
  assert_false(file_exists(root_path(fx, "abort")));
}

/* Near a full disk (5 points below diskSpaceWarningLevelRatio), segments that
 * have not expired are deleted only with cleanFileForciblyEnable. */
static bool usage_known(void *arg) { return stats(arg).disk_used_pct > 0; }
static bool log_trimmed(void *arg) {
  return fy_commitlog_min(fy_store_commitlog(((struct fx *)arg)->s)) > 0;
}

static void forced_clean(struct fx *fx, bool forcibly) {
  struct statvfs sv;
  assert_int_equal(statvfs(fx->root, &sv), 0);
  uint64_t used_blocks = sv.f_blocks - sv.f_bfree;
  int used = (int)(used_blocks * 100 / (used_blocks + sv.f_bavail));
  if (used < 1 || used > 95) {
    fprintf(stderr, "forced clean: %s is %d%% used; skipped\n", fx->root, used);
    skip();
  }
  /* Nearly full (within 5 points of the limit) but not full: writes go on. */
  fx->cfg.disk_full_ratio = (uint32_t)used + 3;
  fx->cfg.clean_forcibly = forcibly;
  fx->cfg.clean_interval_ms = 100;
  fx->cfg.flush_cq_interval_ms = 60000;
  open_store(fx);
  static struct msgbuf b;
  for (uint32_t i = 0; i < 300; i++)
    assert_int_equal(put_wait(fx, make_msg(&b, TOPIC, 0, i, 1000, NULL, NULL, NULL)), i);
  reopen(fx); /* checkpoints everything: only expiry or the disk hold the segments now */
  fy_commitlog *cl = fy_store_commitlog(fx->s);
  assert_true(fy_commitlog_end(cl) > 4 * SEG);
  if (forcibly) {
    assert_true(run_until(&fx->loop, log_trimmed, fx)); /* on the retention timer */
    assert_true(fy_store_min_offset(fx->s, TOPIC, 0) > 0);
  } else {
    assert_true(run_until(&fx->loop, usage_known, fx));
    assert_int_equal(fy_store_clean_now(fx->s, true), 0);
    assert_int_equal(fy_commitlog_min(cl), 0);
    assert_int_equal(fy_store_min_offset(fx->s, TOPIC, 0), 0);
  }
  assert_false(stats(fx).disk_full);
  close_store(fx);
}

static void test_forced_clean_enabled(void **state) { forced_clean(*state, true); }
static void test_forced_clean_disabled(void **state) { forced_clean(*state, false); }

/* ---- reopen ----------------------------------------------------------------------- */

static void test_clean_reopen(void **state) {
  struct fx *fx = *state;
  open_store(fx);
  assert_false(fx->rec.checkpoint_found);
  enum { N = 200 };
  static struct msgbuf b;
  uint64_t phys[N], qoff[N];
  for (uint32_t i = 0; i < N; i++) {
    char key[16];
    snprintf(key, sizeof key, "k%u", i);
    struct fy_msg *m = make_msg(&b, i % 2 ? TOPIC : "U", i % 4, i, 300 + i * 5, "t", key, NULL);
    qoff[i] = put_wait(fx, m);
    phys[i] = m->phys_offset;
  }
  struct fy_store_stats before = stats(fx);
  assert_true(before.cl_end > 2 * SEG);
  reopen(fx);
  assert_false(fx->rec.unclean);
  assert_true(fx->rec.checkpoint_found);
  assert_int_equal(fx->rec.checkpoint, before.cl_end);
  assert_int_equal(fx->rec.cl.end, before.cl_end);
  assert_int_equal(fx->rec.cl.dropped_bytes, 0);
  assert_int_equal(fx->rec.redispatched, 0);
  assert_int_equal(fx->rec.queues, 4);
  struct fy_store_stats after = stats(fx);
  assert_int_equal(after.cl_end, before.cl_end);
  assert_int_equal(after.dispatched, before.cl_end);
  for (uint32_t i = 0; i < N; i++)
    check_get(fx, i % 2 ? TOPIC : "U", i % 4, qoff[i], i, 300 + i * 5, phys[i]);
  struct fy_cl_slice out[2];
  assert_int_equal(fy_store_query_key(fx->s, TOPIC, "k77", 0, INT64_MAX, out, 2), 1);
  assert_int_equal(out[0].offset, phys[77]);
  fy_cl_slice_release(&out[0]);
  /* New puts continue each queue. */
  struct fy_msg *m = make_msg(&b, TOPIC, 1, N, 50, NULL, NULL, NULL);
  assert_int_equal(put_wait(fx, m), N / 4);
  check_get(fx, TOPIC, 1, N / 4, N, 50, m->phys_offset);
}

/* ---- SYNC_MASTER visibility across restarts ------------------------------------------ */

static uint64_t log_written(struct fx *fx) { return fy_commitlog_written(fy_store_commitlog(fx->s)); }

/* Queue q of TOPIC shows exactly `max` messages and nothing after them. */
static void assert_visible(struct fx *fx, uint32_t q, uint64_t max) {
  assert_int_equal(fy_store_max_offset(fx->s, TOPIC, q), max);
  struct fy_get_msg g;
  struct fy_get_result res;
  assert_int_equal(fy_store_get(fx->s, TOPIC, q, max, 1, 1 << 20, NULL, 0, &g, &res), 0);
  assert_true(res.status == FY_GET_NO_NEW || res.status == FY_GET_NO_QUEUE);
}

static bool checkpoint_reached(void *arg) {
  struct fx *fx = arg;
  return stats(fx).checkpoint >= log_written(fx);
}

/* Keys whose entries the index files' headers count (entry_count - 1 each):
 * what an index flush has stored, as a crash would find it. */
static uint32_t index_keys_on_file(struct fx *fx) {
  char dir[700];
  snprintf(dir, sizeof dir, "%s/index", fx->root);
  DIR *d = opendir(dir);
  if (!d)
    return 0;
  uint32_t keys = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.')
      continue;
    char path[1000];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    uint32_t count = 0;
    assert_int_equal(pread(fd, &count, 4, 48), 4); /* entry_count (STORE.md) */
    close(fd);
    keys += count ? count - 1 : 0;
  }
  closedir(d);
  return keys;
}

struct ckpt_watch {
  struct fx *fx;
  uint64_t end;      /* the keyed records end here */
  uint32_t keys;     /* ...and carry this many keys */
  bool ahead;        /* the checkpoint covered them before the index held them */
};

static bool checkpoint_covers_keys(void *arg) {
  struct ckpt_watch *w = arg;
  if (stats(w->fx).checkpoint < w->end)
    return false;
  if (index_keys_on_file(w->fx) < w->keys)
    w->ahead = true;
  return true;
}

/* The index is flushed only every tenth flush cycle; the checkpoint (where
 * recovery starts re-dispatching) must wait for it, or a crash would lose
 * keys of records below the checkpoint. */
static void test_checkpoint_waits_for_index(void **state) {
  struct fx *fx = *state;
  open_store(fx);
  static struct msgbuf b;
  char uniq[16];
  for (int round = 0; round < 3; round++) {
    for (int i = 0; i < 5; i++) {
      snprintf(uniq, sizeof uniq, "R%d-%d", round, i);
      put_wait(fx, make_msg(&b, TOPIC, 0, (uint64_t)i, 30, NULL, NULL, uniq));
    }
    struct ckpt_watch w = {fx, log_written(fx), (uint32_t)(round + 1) * 5, false};
    assert_true(run_until(&fx->loop, checkpoint_covers_keys, &w));
    assert_false(w.ahead);
  }
}

static void test_confirm_hides_until_acknowledged(void **state) {
  struct fx *fx = *state;
  fx->cfg.confirm_required = true;
  fx->cfg.file_reserved_hours = 0; /* retention may take any segment it is allowed to */
  open_store(fx);
  enum { A = 3, B = 300, BODY = 500 };
  static struct msgbuf b;
  static uint64_t phys[A + B];
  char key[16];
  for (uint32_t i = 0; i < A; i++) {
    snprintf(key, sizeof key, "a%u", i);
    assert_int_equal(put_wait(fx, make_msg(&b, TOPIC, 0, i, 100, NULL, key, NULL)), i);
    phys[i] = b.m.phys_offset;
  }
  uint64_t end_a = log_written(fx);
  assert_visible(fx, 0, 0); /* stored and acknowledged by the disk, but no slave has it */
  assert_int_equal(stats(fx).unconfirmed_bytes, end_a);
  fy_store_confirm(fx->s, end_a);
  assert_visible(fx, 0, A);
  for (uint32_t i = 0; i < A; i++)
    check_get(fx, TOPIC, 0, i, i, 100, phys[i]);
  /* B spans several segments and stays hidden: a confirmed offset that falls
   * inside its first record shows none of it. */
  for (uint32_t i = 0; i < B; i++) {
    snprintf(key, sizeof key, "b%u", i);
    put_wait(fx, make_msg(&b, TOPIC, i % 2, A + i, BODY, NULL, key, NULL));
    phys[A + i] = b.m.phys_offset;
  }
  uint64_t end_b = log_written(fx);
  assert_true(end_b - end_a > 2 * SEG);
  fy_store_confirm(fx->s, phys[A] + 10);
  assert_visible(fx, 0, A);
  assert_visible(fx, 1, 0);
  struct fy_cl_slice sl[2];
  struct fy_msg m;
  assert_int_equal(fy_store_query_key(fx->s, TOPIC, "b0", 0, INT64_MAX, sl, 2), 0);
  assert_int_equal(fy_store_read_msg(fx->s, phys[A], &sl[0], &m), -FY_ENOT_FOUND);
  assert_int_equal(fy_store_clean_now(fx->s, true), 0); /* hidden data is never deleted */

  reopen(fx); /* the rule holds across a restart */
  assert_false(fx->rec.unclean);
  assert_int_equal(fx->rec.visible_end, end_a);
  assert_int_equal(fx->rec.hidden, B);
  assert_visible(fx, 0, A);
  assert_visible(fx, 1, 0);
  assert_int_equal(fy_store_query_key(fx->s, TOPIC, "b0", 0, INT64_MAX, sl, 2), 0);
  assert_int_equal(stats(fx).unconfirmed_bytes, end_b - phys[A] - 10);
  assert_int_equal(fy_store_clean_now(fx->s, true), 0);
  /* A put after the restart continues its queue after the hidden records. */
  uint64_t qoff = put_wait(fx, make_msg(&b, TOPIC, 0, 999, 64, NULL, NULL, NULL));
  uint64_t last_phys = b.m.phys_offset;
  assert_int_equal(qoff, A + B / 2);
  assert_visible(fx, 0, A);

  /* The slave acknowledges everything: all of it shows, nothing lost. */
  fy_store_confirm(fx->s, log_written(fx));
  assert_visible(fx, 0, A + B / 2 + 1);
  assert_visible(fx, 1, B / 2);
  for (uint32_t i = 0; i < B; i++)
    check_get(fx, TOPIC, i % 2, (i % 2 ? 0 : A) + i / 2, A + i, BODY, phys[A + i]);
  check_get(fx, TOPIC, 0, qoff, 999, 64, last_phys);
  assert_int_equal(fy_store_query_key(fx->s, TOPIC, "b7", 0, INT64_MAX, sl, 2), 1);
  assert_int_equal(sl[0].offset, phys[A + 7]);
  fy_cl_slice_release(&sl[0]);
  assert_int_equal(fy_store_read_msg(fx->s, phys[A], &sl[0], &m), 0);
  fy_cl_slice_release(&sl[0]);
  assert_int_equal(stats(fx).unconfirmed_bytes, 0);
  /* Once checkpointed, retention may delete what was hidden. */
  assert_true(run_until(&fx->loop, checkpoint_reached, fx));
  assert_true(fy_store_clean_now(fx->s, true) > 0);
  reopen(fx);
  assert_int_equal(fx->rec.hidden, 0);
  assert_int_equal(fx->rec.redispatched, 0);
  assert_visible(fx, 0, A + B / 2 + 1);
}

static void read_file_exact(const char *path, char *buf, size_t len) {
  int fd = open(path, O_RDONLY);
  assert_true(fd >= 0);
  assert_int_equal(pread(fd, buf, len, 0), (ssize_t)len);
  close(fd);
}

static void write_file_exact(const char *path, const void *buf, size_t len) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  assert_true(fd >= 0);
  assert_int_equal(pwrite(fd, buf, len, 0), (ssize_t)len);
  close(fd);
}

/* A crash whose checkpoint lags: the consume-queue files already hold
 * entries of records confirmed after the checkpoint was written. Recovery
 * cuts them back to the checkpoint's confirmed offset (hiding more than
 * needed is allowed) and they show again once a slave acknowledges them. */
static void test_confirm_crash_with_lagging_checkpoint(void **state) {
  struct fx *fx = *state;
  fx->cfg.confirm_required = true;
  open_store(fx);
  enum { A = 5, B = 5, C = 3 };
  static struct msgbuf b;
  uint64_t phys[A + B + C];
  char saved[1024];
  for (uint32_t i = 0; i < A + B + C; i++) {
    if (i == A) { /* the checkpoint that covers A, as a crash would find it */
      fy_store_confirm(fx->s, log_written(fx));
      assert_true(run_until(&fx->loop, checkpoint_reached, fx));
      read_file_exact(root_path(fx, "checkpoint"), saved, sizeof saved);
    }
    if (i == A + B)
      fy_store_confirm(fx->s, log_written(fx));
    assert_int_equal(put_wait(fx, make_msg(&b, TOPIC, 0, i, 200, NULL, NULL, NULL)), i);
    phys[i] = b.m.phys_offset;
  }
  uint64_t end = log_written(fx);
  assert_visible(fx, 0, A + B);
  close_store(fx); /* B's entries are in the consume-queue file now */
  write_file_exact(root_path(fx, "checkpoint"), saved, sizeof saved);
  write_file_exact(root_path(fx, "abort"), "", 0);

  open_store(fx);
  assert_true(fx->rec.unclean);
  assert_int_equal(fx->rec.checkpoint, phys[A]);
  assert_int_equal(fx->rec.visible_end, phys[A]);
  assert_int_equal(fx->rec.hidden, B + C);
  assert_visible(fx, 0, A);
  fy_store_confirm(fx->s, phys[A + B]);
  assert_visible(fx, 0, A + B);
  fy_store_confirm(fx->s, end);
  assert_visible(fx, 0, A + B + C);
  for (uint32_t i = 0; i < A + B + C; i++)
    check_get(fx, TOPIC, 0, i, i, 200, phys[i]);
}

/* A checkpoint written before the confirmed offset existed (flags and
 * confirmed_offset zero) opens, and means "everything confirmed": the old
 * behaviour. */
static void test_confirm_old_checkpoint_format(void **state) {
  struct fx *fx = *state;
  fx->cfg.confirm_required = true;
  open_store(fx);
  enum { N = 4 };
  static struct msgbuf b;
  uint64_t phys[N];
  for (uint32_t i = 0; i < N; i++) {
    put_wait(fx, make_msg(&b, TOPIC, 0, i, 80, NULL, NULL, NULL));
    phys[i] = b.m.phys_offset;
  }
  assert_visible(fx, 0, 0);
  close_store(fx);
  /* A version-1 slot as Ferry wrote it before: safe offset 0. */
  uint8_t file[1024] = {0}, *slot = file + 512;
  uint32_t magic = 0xFE4D43C0u, version = 1;
  uint64_t seq = 7, safe = 0, flushed = 0;
  int64_t at_ms = 1764096000000;
  memcpy(slot, &magic, 4);
  memcpy(slot + 4, &version, 4);
  memcpy(slot + 8, &seq, 8);
  memcpy(slot + 16, &safe, 8);
  memcpy(slot + 24, &flushed, 8);
  memcpy(slot + 32, &at_ms, 8);
  uint32_t crc = fy_crc32c(0, slot, 508);
  memcpy(slot + 508, &crc, 4);
  write_file_exact(root_path(fx, "checkpoint"), file, sizeof file);

  open_store(fx);
  assert_true(fx->rec.checkpoint_found);
  assert_int_equal(fx->rec.checkpoint, 0);
  assert_int_equal(fx->rec.hidden, 0);
  assert_int_equal(fx->rec.redispatched, N);
  assert_visible(fx, 0, N);
  for (uint32_t i = 0; i < N; i++)
    check_get(fx, TOPIC, 0, i, i, 80, phys[i]);
  /* From here on the rule holds again. */
  uint64_t qoff = put_wait(fx, make_msg(&b, TOPIC, 0, N, 80, NULL, NULL, NULL));
  assert_int_equal(qoff, N);
  assert_visible(fx, 0, N);
  fy_store_confirm(fx->s, log_written(fx));
  assert_visible(fx, 0, N + 1);
}

/* brokerRole changes between restarts: a store opened without the rule
 * (ASYNC_MASTER) shows everything, and its checkpoint records no limit, so
 * back under the rule what ASYNC showed stays shown. */
static void test_confirm_role_change(void **state) {
  struct fx *fx = *state;
  fx->cfg.confirm_required = true;
  open_store(fx);
  static struct msgbuf b;
  for (uint32_t i = 0; i < 3; i++)
    put_wait(fx, make_msg(&b, TOPIC, 0, i, 80, NULL, NULL, NULL));
  assert_visible(fx, 0, 0);

  fx->cfg.confirm_required = false; /* SYNC -> ASYNC */
  reopen(fx);
  assert_int_equal(fx->rec.hidden, 0);
  assert_visible(fx, 0, 3);
  assert_false(stats(fx).confirm_required);
  assert_int_equal(stats(fx).unconfirmed_bytes, 0);
  put_wait(fx, make_msg(&b, TOPIC, 0, 3, 80, NULL, NULL, NULL));
  assert_visible(fx, 0, 4);

  fx->cfg.confirm_required = true; /* ASYNC -> SYNC */
  reopen(fx);
  assert_int_equal(fx->rec.hidden, 0);
  assert_visible(fx, 0, 4);
  put_wait(fx, make_msg(&b, TOPIC, 0, 4, 80, NULL, NULL, NULL));
  assert_visible(fx, 0, 4);
  assert_true(stats(fx).unconfirmed_bytes > 0);

  /* Switched off at run time, everything written shows at once. */
  fy_store_set_confirm_required(fx->s, false);
  assert_visible(fx, 0, 5);
}

/* ---- crash at the Nth fdatasync ---------------------------------------------------- */

#define CRASH_WINDOW 16
#define CRASH_PUTS_MAX 3000

struct crash_put {
  struct crash *c;
  struct ack ack;
  uint64_t seq;
  uint32_t qid, body_len;
  uint64_t qoff, phys;
};

struct crash {
  struct fx *fx;
  struct crash_put *puts; /* one per seq */
  uint64_t issued, done;
  uint32_t inflight;
  bool refused; /* a put returned an error: the store failed */
};

static void crash_pump(struct crash *c);

static void on_crash_ack(void *arg, int status, uint64_t phys, uint64_t size) {
  struct crash_put *p = arg;
  on_ack(&p->ack, status, phys, size);
  p->c->inflight--;
  p->c->done++;
  crash_pump(p->c);
}

/* Keeps CRASH_WINDOW puts in flight until the store refuses one. */
static void crash_pump(struct crash *c) {
  while (!c->refused && c->inflight < CRASH_WINDOW && c->issued < CRASH_PUTS_MAX) {
    struct crash_put *p = &c->puts[c->issued];
    static struct msgbuf b;
    char key[24];
    snprintf(key, sizeof key, "c%" PRIu64, c->issued);
    p->c = c;
    p->seq = c->issued;
    p->qid = (uint32_t)(p->seq % 3);
    p->body_len = (uint32_t)(p->seq * 37 % 1500 + 1);
    struct fy_msg *m = make_msg(&b, TOPIC, p->qid, p->seq, p->body_len, "t", key, NULL);
    int r = fy_store_put(c->fx->s, m, 1, on_crash_ack, p);
    if (r == -FY_EBUSY)
      return; /* an ack will call back */
    if (r != 0) {
      assert_true(r == -FY_ESTORE_FAILED);
      c->refused = true;
      return;
    }
    p->qoff = m->queue_offset;
    p->phys = m->phys_offset;
    c->issued++;
    c->inflight++;
  }
}

static void on_flushed(void *arg, uint64_t flushed) {
  uint64_t *max = arg;
  if (flushed > *max)
    *max = flushed;
}

/* Power loss after the crash: every commit-log byte not covered by a
 * successful fdatasync reads back as zeros. */
static void lose_unsynced_log(struct fx *fx, uint64_t flushed) {
  char dir[700];
  snprintf(dir, sizeof dir, "%s/commitlog", fx->root);
  DIR *d = opendir(dir);
  assert_non_null(d);
  static const uint8_t zeros[SEG];
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (strlen(e->d_name) != 20)
      continue;
    uint64_t start = strtoull(e->d_name, NULL, 10);
    if (start + SEG <= flushed)
      continue;
    uint64_t from = flushed > start ? flushed - start : 0;
    char path[1000];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, zeros, SEG - from, (off_t)from), (ssize_t)(SEG - from));
    close(fd);
  }
  closedir(d);
}

static bool crash_settled(void *arg) {
  struct crash *c = arg;
  return (c->refused || c->issued == CRASH_PUTS_MAX) && c->inflight == 0;
}

static void crash_at(struct fx *fx, unsigned n) {
  fx->cfg.flush_disk_type = FY_SYNC_FLUSH;
  open_store(fx);
  assert_false(fx->rec.unclean);
  struct crash c = {.fx = fx, .puts = calloc(CRASH_PUTS_MAX, sizeof *c.puts)};
  uint64_t flushed = 0;
  fy_commitlog_on_flushed(fy_store_commitlog(fx->s), on_flushed, &flushed);
  /* From the Nth fdatasync on, every one fails, whoever issued it: the commit
   * log, a segment's preallocation, a consume queue, the index or the
   * checkpoint. */
  fy_aio_inject_fault(fy_store_aio(fx->s), FY_AIO_FDATASYNC, n - 1, UINT32_MAX, -EIO);
  crash_pump(&c);
  assert_true(run_until(&fx->loop, crash_settled, &c));
  assert_true(c.refused); /* the fault was reached */
  assert_int_not_equal(stats(fx).error, 0);
  close_store(fx);
  assert_true(file_exists(root_path(fx, "abort")));
  lose_unsynced_log(fx, flushed);

  open_store(fx);
  assert_true(fx->rec.unclean);
  assert_true(fx->rec.cl.end >= flushed);
  uint64_t acked = 0, max[3] = {0, 0, 0};
  for (uint64_t i = 0; i < c.issued; i++) {
    struct crash_put *p = &c.puts[i];
    assert_true(p->ack.called);
    if (p->ack.status != 0) {
      assert_int_equal(p->ack.status, -EIO);
      continue;
    }
    acked++;
    assert_true(p->phys < flushed); /* SYNC_FLUSH: acknowledged once flushed */
    check_get(fx, TOPIC, p->qid, p->qoff, p->seq, p->body_len, p->phys);
    if (p->qoff + 1 > max[p->qid])
      max[p->qid] = p->qoff + 1;
  }
  for (uint32_t q = 0; q < 3; q++)
    assert_true(fy_store_max_offset(fx->s, TOPIC, q) >= max[q]);
  /* The log is valid end to end and the queues agree with it. */
  fy_commitlog *cl = fy_store_commitlog(fx->s);
  uint64_t off = fy_commitlog_min(cl), records = 0;
  while (off < fy_commitlog_written(cl)) {
    struct fy_cl_slice sl;
    enum fy_record_kind kind;
    int64_t size = fy_commitlog_read_record(cl, off, &sl, &kind, NULL);
    assert_true(size > 0);
    fy_cl_slice_release(&sl);
    if (kind == FY_REC_BLANK) {
      off = fy_commitlog_next_segment(cl, off);
    } else {
      off += (uint64_t)size;
      records++;
    }
  }
  uint64_t queued = 0;
  for (uint32_t q = 0; q < 3; q++)
    queued += fy_store_max_offset(fx->s, TOPIC, q) - fy_store_min_offset(fx->s, TOPIC, q);
  assert_int_equal(queued, records);
  assert_true(records >= acked);
  /* Writes are accepted again, after everything that survived. */
  static struct msgbuf b;
  struct fy_msg *m = make_msg(&b, TOPIC, 0, 999999, 64, NULL, NULL, NULL);
  uint64_t before = fy_store_max_offset(fx->s, TOPIC, 0);
  assert_int_equal(put_wait(fx, m), before);
  check_get(fx, TOPIC, 0, before, 999999, 64, m->phys_offset);
  close_store(fx);
  assert_false(file_exists(root_path(fx, "abort")));
  open_store(fx);
  assert_false(fx->rec.unclean);
  assert_int_equal(fx->rec.redispatched, 0);
  close_store(fx);
  free(c.puts);
}

static void test_crash_at_nth_fdatasync(void **state) {
  struct fx *fx = *state;
  for (unsigned n = 1; n <= 10; n++) {
    fy_test_rmtree(fx->root); /* each N from an empty store */
    assert_int_equal(mkdir(fx->root, 0700), 0);
    crash_at(fx, n);
  }
}

/* fy_mkdir_p, which the log, the queues, the index and the store open with. */
static void test_mkdir_p(void **state) {
  struct fx *fx = *state;
  char path[700], file[700];
  snprintf(path, sizeof path, "%s/a/b/c/", fx->root);
  bool created = false;
  assert_int_equal(fy_mkdir_p(path, &created), 0);
  assert_true(created);
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_true(S_ISDIR(st.st_mode));
  created = false;
  assert_int_equal(fy_mkdir_p(path, &created), 0); /* all there: nothing made */
  assert_false(created);
  assert_int_equal(fy_mkdir_p(path, NULL), 0);
  snprintf(file, sizeof file, "%s/a/f", fx->root);
  int fd = open(file, O_CREAT | O_WRONLY, 0644);
  assert_true(fd >= 0);
  close(fd);
  snprintf(path, sizeof path, "%s/a/f/g", fx->root); /* a component is a file */
  assert_int_equal(fy_mkdir_p(path, &created), -ENOTDIR);
  assert_false(created);
  assert_int_equal(fy_mkdir_p("", NULL), -ENAMETOOLONG);
  char *big = malloc(PATH_MAX + 2);
  assert_non_null(big);
  memset(big, 'x', PATH_MAX + 1);
  big[PATH_MAX + 1] = '\0';
  assert_int_equal(fy_mkdir_p(big, NULL), -ENAMETOOLONG);
  free(big);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

static const struct CMUnitTest tests[] = {
    T(test_put_get_round_trip),
    T(test_tag_filter),
    T(test_batch_put_atomic),
    T(test_offset_for_time),
    T(test_query_key),
    T(test_checkpoint_waits_for_index),
    T(test_dispatch_kept_and_read_back),
    T(test_retention),
    T(test_sticky_write_error),
    T(test_sticky_fdatasync_error),
    T(test_disk_guard),
    T(test_forced_clean_enabled),
    T(test_forced_clean_disabled),
    T(test_clean_reopen),
    T(test_confirm_hides_until_acknowledged),
    T(test_confirm_crash_with_lagging_checkpoint),
    T(test_confirm_old_checkpoint_format),
    T(test_confirm_role_change),
    T(test_crash_at_nth_fdatasync),
    T(test_mkdir_p),
};

static bool uring_available(void) {
  uv_loop_t loop;
  fy_aio *aio;
  uv_loop_init(&loop);
  int r = fy_aio_init(&loop, FY_AIO_URING, 4, &aio);
  if (r == 0)
    fy_aio_close(aio);
  fy_test_loop_finish(&loop);
  return r == 0;
}

int main(void) {
  if (getenv("FY_TEST_FILTER"))
    cmocka_set_test_filter(getenv("FY_TEST_FILTER"));
  int failures = 0;
  if (uring_available()) {
    setenv("FERRY_AIO_BACKEND", "uring", 1);
    failures += _cmocka_run_group_tests("store/io_uring", tests, sizeof tests / sizeof tests[0],
                                        NULL, NULL);
  } else {
    fprintf(stderr, "io_uring unavailable: the io_uring pass is skipped\n");
  }
  setenv("FERRY_AIO_BACKEND", "threads", 1);
  failures += _cmocka_run_group_tests("store/threads", tests, sizeof tests / sizeof tests[0], NULL,
                                      NULL);
  return failures;
}
