/* The commit log: appends and reads, segment roll-over at the exact
 * boundary, flush rules, back-pressure, sticky errors, recovery of damaged
 * tails, replication appends, truncation and retention. The whole suite runs
 * once per fy_aio backend (FERRY_AIO_BACKEND). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "common/err.h"
#include "store/aio.h"
#include "store/commitlog.h"
#include "testutil.h"

#define DEADLINE_MS 20000
#define SEG (64u * 1024u)
#define TOPIC "T"
#define RETRIES_MAX 100000

struct fx {
  uv_loop_t loop;
  fy_aio *aio;
  fy_commitlog *cl;
  char dir[512];
  struct fy_commitlog_config cfg;
  struct fy_cl_recovery rep;
};

/* ---- harness ------------------------------------------------------------ */

static struct fy_commitlog_config default_cfg(const char *dir) {
  return (struct fy_commitlog_config){
      .dir = dir,
      .segment_size = SEG,
      .sync_flush = false,
      .flush_interval_ms = 20,
      .write_buffer_size = 8192,
      .write_buffers = 4,
      .max_waiters = 1024,
  };
}

static int open_log(struct fx *fx, uint64_t check_from) {
  return fy_commitlog_open(&fx->loop, fx->aio, &fx->cfg, check_from, &fx->cl, &fx->rep);
}

static int setup(void **state) {
  struct fx *fx = calloc(1, sizeof *fx);
  assert_non_null(fx);
  assert_int_equal(uv_loop_init(&fx->loop), 0);
  assert_int_equal(fy_aio_init(&fx->loop, FY_AIO_AUTO, 64, &fx->aio), 0);
  snprintf(fx->dir, sizeof fx->dir, "%s/commitlog", fy_test_mkdtemp("cl"));
  fx->cfg = default_cfg(fx->dir);
  *state = fx;
  return 0;
}

static void on_closed(void *arg) { *(bool *)arg = true; }

static void close_log(struct fx *fx) {
  bool done = false;
  fy_commitlog_close(fx->cl, on_closed, &done);
  assert_true(fy_test_run_until(&fx->loop, &done, DEADLINE_MS));
  fy_commitlog_free(fx->cl);
  fx->cl = NULL;
}

static void reopen(struct fx *fx, uint64_t check_from) {
  close_log(fx);
  assert_int_equal(open_log(fx, check_from), 0);
}

/* Closes everything; the loop must close with no handle left. */
static int teardown(void **state) {
  struct fx *fx = *state;
  if (fx->cl)
    close_log(fx);
  assert_int_equal(fy_aio_pending(fx->aio), 0);
  fy_aio_close(fx->aio);
  assert_int_equal(fy_test_loop_finish(&fx->loop), 0);
  char *slash = strrchr(fx->dir, '/');
  *slash = '\0';
  fy_test_rmtree(fx->dir);
  free(fx);
  return 0;
}

/* Runs the loop until pred(arg) holds (checked once per iteration). */
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

static bool run_until(uv_loop_t *loop, bool (*fn)(void *), void *arg) {
  struct pred p = {fn, arg, fn(arg)};
  uv_check_t check;
  uv_check_init(loop, &check);
  check.data = &p;
  uv_check_start(&check, on_check);
  bool ok = fy_test_run_until(loop, &p.flag, DEADLINE_MS);
  uv_close((uv_handle_t *)&check, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
  return ok;
}

static bool all_written(void *arg) {
  fy_commitlog *cl = arg;
  return fy_commitlog_written(cl) == fy_commitlog_end(cl);
}

static bool all_flushed(void *arg) {
  fy_commitlog *cl = arg;
  return fy_commitlog_flushed(cl) == fy_commitlog_end(cl);
}

static bool failed(void *arg) { return fy_commitlog_error(arg) != 0; }

/* ---- messages ------------------------------------------------------------ */

static uint8_t body_buf[80 * 1024];

static struct fy_msg make_msg(uint32_t body_len, uint32_t tag) {
  struct fy_msg m = {0};
  m.queue_id = tag % 8;
  m.flag = tag;
  m.queue_offset = tag;
  m.born_ts_ms = 1764096000000 + tag;
  m.born_host.ip[0] = 127;
  m.born_host.ip[3] = 1;
  m.born_host.port = 40000;
  m.store_host.ip[0] = 10;
  m.store_host.port = 10911;
  m.body = body_buf + tag % 64;
  m.body_len = body_len;
  m.topic = TOPIC;
  m.topic_len = 1;
  return m;
}

static uint32_t size_for_body(uint32_t body_len) {
  struct fy_msg m = make_msg(body_len, 0);
  return fy_record_size(&m);
}

static uint32_t body_for_size(uint32_t size) {
  uint32_t overhead = size_for_body(0);
  assert_true(size >= overhead);
  return size - overhead;
}

/* Appends to cl, running the loop while the buffers are full. */
static int append_to(uv_loop_t *loop, fy_commitlog *cl, struct fy_msg *msgs, size_t n,
                     uint64_t *phys, fy_append_cb cb, void *arg) {
  for (int i = 0; i < RETRIES_MAX; i++) {
    int r = fy_commitlog_append(cl, msgs, n, phys, cb, arg);
    if (r != -FY_EBUSY)
      return r;
    uv_run(loop, UV_RUN_ONCE);
  }
  fail_msg("append stayed busy");
  return -1;
}

static int append_retry(struct fx *fx, struct fy_msg *msgs, size_t n, uint64_t *phys,
                        fy_append_cb cb, void *arg) {
  return append_to(&fx->loop, fx->cl, msgs, n, phys, cb, arg);
}

/* Truncates once nothing is in flight (a timer fdatasync may be). */
static int truncate_retry(struct fx *fx, uint64_t offset) {
  for (int i = 0; i < RETRIES_MAX; i++) {
    int r = fy_commitlog_truncate(fx->cl, offset);
    if (r != -FY_EBUSY)
      return r;
    uv_run(&fx->loop, UV_RUN_ONCE);
  }
  fail_msg("truncate stayed busy");
  return -1;
}

static uint64_t append_one(struct fx *fx, uint32_t body_len, uint32_t tag) {
  struct fy_msg m = make_msg(body_len, tag);
  uint64_t phys;
  assert_int_equal(append_retry(fx, &m, 1, &phys, NULL, NULL), 0);
  return phys;
}

/* Checks the record at phys is the message append_one(body_len, tag) made. */
static void check_record(fy_commitlog *cl, uint64_t phys, uint32_t body_len, uint32_t tag) {
  struct fy_cl_slice s;
  enum fy_record_kind kind;
  struct fy_msg m;
  int64_t size = fy_commitlog_read_record(cl, phys, &s, &kind, &m);
  assert_int_equal(size, size_for_body(body_len));
  assert_int_equal(kind, FY_REC_MSG);
  assert_int_equal(m.phys_offset, phys);
  assert_int_equal(m.flag, tag);
  assert_int_equal(m.queue_id, tag % 8);
  assert_int_equal(m.body_len, body_len);
  assert_memory_equal(m.body, body_buf + tag % 64, body_len);
  assert_true(m.store_ts_ms > 1700000000000);
  assert_int_equal(s.len, size);
  fy_cl_slice_release(&s);
}

/* Walks the log from min to written; every entry must be valid. Returns
 * the number of records. */
static uint64_t walk(fy_commitlog *cl) {
  uint64_t off = fy_commitlog_min(cl), n = 0;
  while (off < fy_commitlog_written(cl)) {
    struct fy_cl_slice s;
    enum fy_record_kind kind;
    int64_t size = fy_commitlog_read_record(cl, off, &s, &kind, NULL);
    assert_true(size > 0);
    fy_cl_slice_release(&s);
    if (kind == FY_REC_BLANK) {
      assert_int_equal(off + (uint64_t)size, fy_commitlog_next_segment(cl, off));
      off = fy_commitlog_next_segment(cl, off);
    } else {
      n++;
      off += (uint64_t)size;
    }
  }
  assert_int_equal(off, fy_commitlog_written(cl));
  return n;
}

static void seg_path(const struct fx *fx, uint64_t start, char *out, size_t cap) {
  snprintf(out, cap, "%s/%020" PRIu64, fx->dir, start);
}

static bool file_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

/* ---- append acknowledgements ---------------------------------------------- */

struct ack {
  bool called;
  int status;
  uint64_t phys, size;
  uint64_t written_at, flushed_at;
  fy_commitlog *cl;
};

static void on_ack(void *arg, int status, uint64_t phys, uint64_t size) {
  struct ack *a = arg;
  assert_false(a->called);
  a->called = true;
  a->status = status;
  a->phys = phys;
  a->size = size;
  a->written_at = fy_commitlog_written(a->cl);
  a->flushed_at = fy_commitlog_flushed(a->cl);
}

/* ---- tests ---------------------------------------------------------------- */

static void test_append_read_back(void **state) {
  struct fx *fx = *state;
  assert_int_equal(open_log(fx, 0), 0);
  assert_int_equal(fx->rep.end, 0);
  assert_int_equal(fy_commitlog_end(fx->cl), 0);
  enum { N = 300 };
  uint64_t phys[N];
  uint32_t len[N];
  struct ack acks[N] = {0};
  for (uint32_t i = 0; i < N; i++) {
    len[i] = (i * 37) % 700;
    struct fy_msg m = make_msg(len[i], i);
    acks[i].cl = fx->cl;
    assert_int_equal(append_retry(fx, &m, 1, &phys[i], on_ack, &acks[i]), 0);
    assert_int_equal(m.phys_offset, phys[i]);
    assert_int_equal(m.total_size, size_for_body(len[i]));
    assert_false(acks[i].called); /* never from inside append */
  }
  /* A batch: consecutive offsets, one callback. */
  struct fy_msg batch[3] = {make_msg(10, 1000), make_msg(20, 1001), make_msg(30, 1002)};
  uint64_t bphys[3];
  struct ack back = {.cl = fx->cl};
  assert_int_equal(append_retry(fx, batch, 3, bphys, on_ack, &back), 0);
  assert_true(fy_test_run_until(&fx->loop, &back.called, DEADLINE_MS));
  assert_int_equal(back.status, 0);
  assert_int_equal(back.phys, bphys[0]);
  assert_int_equal(back.size, batch[0].total_size + batch[1].total_size + batch[2].total_size);
  assert_true(back.written_at >= bphys[2] + batch[2].total_size);
  for (int i = 0; i < 2; i++)
    assert_true(bphys[i + 1] == bphys[i] + batch[i].total_size ||
                bphys[i + 1] == fy_commitlog_next_segment(fx->cl, bphys[i]));
  for (uint32_t i = 0; i < N; i++) {
    assert_true(acks[i].called); /* in order: all earlier ones are done */
    assert_int_equal(acks[i].status, 0);
    assert_int_equal(acks[i].phys, phys[i]);
    assert_true(acks[i].written_at >= phys[i] + size_for_body(len[i]));
    check_record(fx->cl, phys[i], len[i], i);
  }
  assert_int_equal(walk(fx->cl), N + 3);
  /* Reads stop at written and at the end of the segment. */
  struct fy_cl_slice s;
  assert_int_equal(fy_commitlog_read(fx->cl, fy_commitlog_written(fx->cl), 100, &s), 0);
  assert_int_equal(s.len, 0);
  fy_cl_slice_release(&s);
  assert_int_equal(fy_commitlog_read(fx->cl, SEG - 10, 100, &s), 0);
  assert_int_equal(s.len, 10);
  fy_cl_slice_release(&s);
}

/* Appends records until exactly `left` bytes remain in the current segment
 * (left >= FY_BLANK_SIZE, and at least 2000 bytes must be free beyond it). */
static uint32_t fill_segment_to(struct fx *fx, uint64_t left, uint32_t tag) {
  uint64_t seg_end = fy_commitlog_next_segment(fx->cl, fy_commitlog_end(fx->cl));
  assert_true(seg_end - fy_commitlog_end(fx->cl) >= left + 2000);
  for (int i = 0; i < 1000 && seg_end - fy_commitlog_end(fx->cl) - left > 2000; i++)
    append_one(fx, body_for_size(1000), tag++);
  uint64_t gap = seg_end - fy_commitlog_end(fx->cl) - left; /* in (1000, 2000] */
  append_one(fx, body_for_size((uint32_t)gap), tag++);
  assert_int_equal(seg_end - fy_commitlog_end(fx->cl), left);
  return tag;
}

static void test_segment_boundary(void **state) {
  struct fx *fx = *state;
  assert_int_equal(open_log(fx, 0), 0);
  /* A record that leaves exactly FY_BLANK_SIZE bytes fits; the next record
   * goes to the next segment behind an 8-byte blank. */
  uint32_t tag = fill_segment_to(fx, 1500, 1);
  uint64_t at = fy_commitlog_end(fx->cl);
  uint32_t p_tag = tag;
  uint64_t p = append_one(fx, body_for_size(1500 - FY_BLANK_SIZE), tag++);
  assert_int_equal(p, at);
  assert_int_equal(fy_commitlog_end(fx->cl), SEG - FY_BLANK_SIZE);
  uint32_t q_tag = tag;
  uint64_t q = append_one(fx, 50, tag++);
  assert_int_equal(q, SEG);
  /* One byte more does not fit: blank of the whole remainder. */
  tag = fill_segment_to(fx, 1500, tag);
  at = fy_commitlog_end(fx->cl);
  uint32_t r_tag = tag;
  uint64_t r = append_one(fx, body_for_size(1500 - FY_BLANK_SIZE + 1), tag++);
  assert_int_equal(r, 2 * SEG);
  assert_true(run_until(&fx->loop, all_written, fx->cl));
  struct fy_cl_slice s;
  enum fy_record_kind kind;
  assert_int_equal(fy_commitlog_read_record(fx->cl, SEG - FY_BLANK_SIZE, &s, &kind, NULL),
                   FY_BLANK_SIZE);
  assert_int_equal(kind, FY_REC_BLANK);
  fy_cl_slice_release(&s);
  assert_int_equal(fy_commitlog_read_record(fx->cl, at, &s, &kind, NULL), 1500);
  assert_int_equal(kind, FY_REC_BLANK);
  fy_cl_slice_release(&s);
  check_record(fx->cl, p, body_for_size(1500 - FY_BLANK_SIZE), p_tag);
  check_record(fx->cl, q, 50, q_tag);
  check_record(fx->cl, r, body_for_size(1500 - FY_BLANK_SIZE + 1), r_tag);
  assert_int_equal(walk(fx->cl), tag - 1);
  reopen(fx, 0);
  assert_int_equal(fx->rep.records_scanned, tag - 1);
  assert_int_equal(fx->rep.end, r + size_for_body(body_for_size(1500 - FY_BLANK_SIZE + 1)));
}

static void many_rollovers(struct fx *fx) {
  assert_int_equal(open_log(fx, 0), 0);
  enum { N = 3000 };
  uint64_t *phys = calloc(N, sizeof *phys);
  uint32_t *len = calloc(N, sizeof *len);
  uint32_t seed = 12345;
  for (uint32_t i = 0; i < N; i++) {
    seed = seed * 1103515245 + 12345;
    len[i] = (seed >> 8) % 2000; /* up to ~2 KiB records: many roll-overs */
    phys[i] = append_one(fx, len[i], i);
    uint64_t seg_end = fy_commitlog_next_segment(fx->cl, phys[i]);
    assert_true(phys[i] + size_for_body(len[i]) + FY_BLANK_SIZE <= seg_end);
  }
  assert_true(fy_commitlog_end(fx->cl) > 15 * SEG);
  assert_true(run_until(&fx->loop, all_written, fx->cl));
  for (uint32_t i = 0; i < N; i++)
    check_record(fx->cl, phys[i], len[i], i);
  assert_int_equal(walk(fx->cl), N);
  reopen(fx, 0);
  assert_int_equal(fx->rep.records_scanned, N);
  assert_int_equal(fx->rep.dropped_bytes, 0);
  assert_int_equal(walk(fx->cl), N);
  free(phys);
  free(len);
}

static void test_many_rollovers(void **state) { many_rollovers(*state); }

/* Buffers larger than a segment: each still holds one segment's bytes. */
static void test_buffers_larger_than_segments(void **state) {
  struct fx *fx = *state;
  fx->cfg.write_buffer_size = 4 * SEG;
  fx->cfg.write_buffers = 3;
  many_rollovers(fx);
  struct fy_msg m = make_msg(SEG - size_for_body(0) - FY_BLANK_SIZE + 1, 1);
  assert_int_equal(fy_commitlog_append(fx->cl, &m, 1, NULL, NULL, NULL), -FY_ETOO_BIG);
}

static void on_flushed_check(void *arg, uint64_t flushed) {
  uint64_t *last = arg;
  assert_true(flushed > *last); /* only forward */
  *last = flushed;
}

static void test_sync_flush_acks_after_flush(void **state) {
  struct fx *fx = *state;
  fx->cfg.sync_flush = true;
  assert_int_equal(open_log(fx, 0), 0);
  uint64_t last_flushed = 0;
  fy_commitlog_on_flushed(fx->cl, on_flushed_check, &last_flushed);
  enum { N = 400 };
  struct ack *acks = calloc(N, sizeof *acks);
  uint64_t *phys = calloc(N, sizeof *phys);
  for (uint32_t i = 0; i < N; i++) {
    struct fy_msg m = make_msg(500, i);
    acks[i].cl = fx->cl;
    assert_int_equal(append_retry(fx, &m, 1, &phys[i], on_ack, &acks[i]), 0);
    if (i % 50 == 0)
      uv_run(&fx->loop, UV_RUN_NOWAIT);
  }
  assert_true(fy_commitlog_end(fx->cl) > 3 * SEG); /* syncs across segment rolls */
  assert_true(fy_test_run_until(&fx->loop, &acks[N - 1].called, DEADLINE_MS));
  for (uint32_t i = 0; i < N; i++) {
    assert_true(acks[i].called);
    assert_int_equal(acks[i].status, 0);
    assert_true(acks[i].flushed_at >= phys[i] + size_for_body(500)); /* durable when acked */
  }
  assert_int_equal(last_flushed, fy_commitlog_flushed(fx->cl));
  assert_int_equal(fy_commitlog_flushed(fx->cl), fy_commitlog_end(fx->cl));
  free(acks);
  free(phys);
}

/* SYNC_FLUSH with a slow fdatasync: a timed append is answered -FY_ETIMEOUT
 * once its timeout has passed (its record written and readable), exactly
 * once; an untimed one keeps waiting; when the fdatasync completes the
 * untimed one gets 0, the timed-out ones are not called again, and later
 * timed appends are answered 0. */
static void test_sync_flush_timeout(void **state) {
  struct fx *fx = *state;
  fx->cfg.sync_flush = true;
  assert_int_equal(open_log(fx, 0), 0);
  enum { N = 40, TIMEOUT_MS = 100 };
  struct ack timed[N] = {0}, plain = {.cl = fx->cl}, later = {.cl = fx->cl};
  uint64_t phys[N], plain_phys, later_phys;
  fy_aio_inject_delay(fx->aio, FY_AIO_FDATASYNC, FY_AIO_HOLD_UNTIL_RELEASED);
  uv_update_time(&fx->loop);
  uint64_t t0 = uv_now(&fx->loop);
  for (uint32_t i = 0; i < N; i++) {
    struct fy_msg m = make_msg(100, i);
    timed[i].cl = fx->cl;
    assert_int_equal(
        fy_commitlog_append_timed(fx->cl, &m, 1, &phys[i], TIMEOUT_MS, on_ack, &timed[i]), 0);
    if (i == N / 2) { /* an untimed waiter among the timed ones */
      struct fy_msg p = make_msg(100, 1000);
      assert_int_equal(fy_commitlog_append(fx->cl, &p, 1, &plain_phys, on_ack, &plain), 0);
      uv_run(&fx->loop, UV_RUN_NOWAIT);
    }
  }
  assert_true(fy_test_run_until(&fx->loop, &timed[N - 1].called, DEADLINE_MS));
  assert_true(uv_now(&fx->loop) - t0 >= TIMEOUT_MS); /* not answered early */
  for (uint32_t i = 0; i < N; i++) {
    assert_true(timed[i].called);
    assert_int_equal(timed[i].status, -FY_ETIMEOUT);
    assert_int_equal(timed[i].phys, phys[i]);
    assert_true(timed[i].flushed_at < phys[i] + size_for_body(100)); /* not durable yet */
  }
  assert_false(plain.called);
  assert_true(run_until(&fx->loop, all_written, fx->cl));
  for (uint32_t i = 0; i < N; i++)
    check_record(fx->cl, phys[i], 100, i); /* stored and readable */
  assert_true(fy_commitlog_flushed(fx->cl) < fy_commitlog_end(fx->cl));

  fy_aio_inject_delay(fx->aio, FY_AIO_FDATASYNC, 0);
  assert_true(fy_test_run_until(&fx->loop, &plain.called, DEADLINE_MS));
  assert_int_equal(plain.status, 0);
  assert_true(plain.flushed_at >= plain_phys + size_for_body(100));
  assert_true(run_until(&fx->loop, all_flushed, fx->cl)); /* on_ack asserts one call each */

  /* Nothing waits now, so a new timeout applies at once: one long enough
   * for any real fdatasync. */
  struct fy_msg m = make_msg(100, 7);
  assert_int_equal(fy_commitlog_append_timed(fx->cl, &m, 1, &later_phys, 60000, on_ack, &later),
                   0);
  assert_true(fy_test_run_until(&fx->loop, &later.called, DEADLINE_MS));
  assert_int_equal(later.status, 0);
  assert_true(later.flushed_at >= later_phys + size_for_body(100));
}

/* Counters: one group commit is one write and one fdatasync; failures are
 * not counted. */
static void test_stats(void **state) {
  struct fx *fx = *state;
  fx->cfg.sync_flush = true;
  assert_int_equal(open_log(fx, 0), 0);
  struct fy_cl_stats st;
  fy_commitlog_stats(fx->cl, &st);
  assert_int_equal(st.writes, 0);
  assert_int_equal(st.write_bytes, 0);
  assert_int_equal(st.syncs, 0);
  enum { N = 10 };
  struct ack acks[N] = {0};
  for (uint32_t i = 0; i < N; i++) { /* one loop iteration: one buffer, one write */
    struct fy_msg m = make_msg(100, i);
    acks[i].cl = fx->cl;
    assert_int_equal(fy_commitlog_append(fx->cl, &m, 1, NULL, on_ack, &acks[i]), 0);
  }
  assert_true(fy_test_run_until(&fx->loop, &acks[N - 1].called, DEADLINE_MS));
  fy_commitlog_stats(fx->cl, &st);
  assert_int_equal(st.writes, 1);
  assert_int_equal(st.write_bytes, fy_commitlog_end(fx->cl));
  assert_int_equal(st.syncs, 1);
  struct ack a = {.cl = fx->cl};
  struct fy_msg m = make_msg(100, N);
  assert_int_equal(fy_commitlog_append(fx->cl, &m, 1, NULL, on_ack, &a), 0);
  assert_true(fy_test_run_until(&fx->loop, &a.called, DEADLINE_MS));
  fy_commitlog_stats(fx->cl, &st);
  assert_int_equal(st.writes, 2);
  assert_int_equal(st.write_bytes, fy_commitlog_end(fx->cl));
  assert_int_equal(st.syncs, 2);
  fy_aio_inject_fault(fx->aio, FY_AIO_WRITE, 0, 1, -EIO);
  struct ack b = {.cl = fx->cl};
  assert_int_equal(fy_commitlog_append(fx->cl, &m, 1, NULL, on_ack, &b), 0);
  assert_true(fy_test_run_until(&fx->loop, &b.called, DEADLINE_MS));
  assert_int_equal(b.status, -EIO);
  struct fy_cl_stats after;
  fy_commitlog_stats(fx->cl, &after);
  assert_int_equal(after.writes, st.writes);
  assert_int_equal(after.write_bytes, st.write_bytes);
  assert_int_equal(after.syncs, st.syncs);
}

struct written_probe {
  fy_aio *aio;
  unsigned calls;
  unsigned pending_min;
};

static void on_written_probe(void *arg, uint64_t written) {
  struct written_probe *p = arg;
  (void)written;
  p->calls++;
  if (fy_aio_pending(p->aio) < p->pending_min)
    p->pending_min = fy_aio_pending(p->aio);
}

/* Under SYNC_FLUSH the fdatasync is already queued (and, on io_uring, handed
 * to the kernel) when on_written runs, so the store's dispatch overlaps it
 * instead of delaying it. */
static void test_sync_queued_before_on_written(void **state) {
  struct fx *fx = *state;
  fx->cfg.sync_flush = true;
  assert_int_equal(open_log(fx, 0), 0);
  struct written_probe p = {.aio = fx->aio, .pending_min = UINT32_MAX};
  fy_commitlog_on_written(fx->cl, on_written_probe, &p);
  for (uint32_t round = 0; round < 3; round++) {
    struct ack a = {.cl = fx->cl};
    struct fy_msg m = make_msg(300, round);
    assert_int_equal(fy_commitlog_append(fx->cl, &m, 1, NULL, on_ack, &a), 0);
    assert_true(fy_test_run_until(&fx->loop, &a.called, DEADLINE_MS));
    assert_int_equal(a.status, 0);
  }
  assert_int_equal(p.calls, 3);
  assert_true(p.pending_min >= 1);
}

struct flush_watch {
  uint64_t target;
  bool reached;
};

static void on_flushed_watch(void *arg, uint64_t flushed) {
  struct flush_watch *w = arg;
  if (flushed >= w->target)
    w->reached = true;
}

static void test_async_flush_timer(void **state) {
  struct fx *fx = *state;
  fx->cfg.flush_interval_ms = 30;
  assert_int_equal(open_log(fx, 0), 0);
  struct ack a = {.cl = fx->cl};
  struct fy_msg m = make_msg(100, 7);
  uint64_t phys;
  assert_int_equal(fy_commitlog_append(fx->cl, &m, 1, &phys, on_ack, &a), 0);
  struct flush_watch w = {.target = phys + m.total_size};
  fy_commitlog_on_flushed(fx->cl, on_flushed_watch, &w);
  assert_true(fy_test_run_until(&fx->loop, &a.called, DEADLINE_MS));
  assert_int_equal(a.status, 0);
  assert_true(a.written_at >= w.target); /* acked once written */
  assert_true(fy_test_run_until(&fx->loop, &w.reached, DEADLINE_MS)); /* the timer syncs */
  assert_int_equal(fy_commitlog_flushed(fx->cl), w.target);
  /* Across a roll: every segment gets synced. */
  for (uint32_t i = 0; i < 200; i++)
    append_one(fx, 900, i);
  w.target = fy_commitlog_end(fx->cl);
  w.reached = false;
  assert_true(w.target > 2 * SEG);
  assert_true(fy_test_run_until(&fx->loop, &w.reached, DEADLINE_MS));
  assert_int_equal(fy_commitlog_flushed(fx->cl), w.target);
}

static void test_close_flushes(void **state) {
  struct fx *fx = *state;
  fx->cfg.flush_interval_ms = 3600 * 1000; /* the timer never fires in this test */
  assert_int_equal(open_log(fx, 0), 0);
  struct ack a = {.cl = fx->cl};
  struct fy_msg m = make_msg(100, 7);
  assert_int_equal(fy_commitlog_append(fx->cl, &m, 1, NULL, on_ack, &a), 0);
  uint64_t end = fy_commitlog_end(fx->cl);
  bool done = false;
  fy_commitlog_close(fx->cl, on_closed, &done);
  assert_int_equal(fy_commitlog_append(fx->cl, &m, 1, NULL, NULL, NULL), -FY_ESHUTDOWN);
  assert_true(fy_test_run_until(&fx->loop, &done, DEADLINE_MS));
  assert_true(a.called);
  assert_int_equal(a.status, 0);
  assert_int_equal(fy_commitlog_written(fx->cl), end);
  assert_int_equal(fy_commitlog_flushed(fx->cl), end); /* the final fdatasync */
  fy_commitlog_free(fx->cl);
  fx->cl = NULL;
}

static void test_busy_when_full(void **state) {
  struct fx *fx = *state;
  fx->cfg.write_buffer_size = 4096;
  fx->cfg.write_buffers = 2;
  fx->cfg.max_waiters = 4;
  assert_int_equal(open_log(fx, 0), 0);
  /* Without running the loop nothing is written: the buffers fill up. */
  int r = 0, n = 0;
  for (; n < 100; n++) {
    struct fy_msg m = make_msg(400, (uint32_t)n);
    r = fy_commitlog_append(fx->cl, &m, 1, NULL, NULL, NULL);
    if (r < 0)
      break;
  }
  assert_int_equal(r, -FY_EBUSY);
  assert_int_equal(n, 2 * (4096 / size_for_body(400))); /* two buffers' worth */
  uint64_t end = fy_commitlog_end(fx->cl);
  assert_int_equal(fy_commitlog_written(fx->cl), 0);
  assert_true(run_until(&fx->loop, all_written, fx->cl));
  assert_int_equal(fy_commitlog_written(fx->cl), end);
  /* All or none: a batch larger than the free space changes nothing. */
  struct fy_msg batch[12];
  for (int i = 0; i < 12; i++)
    batch[i] = make_msg(600, (uint32_t)i);
  assert_int_equal(fy_commitlog_append(fx->cl, batch, 12, NULL, NULL, NULL), -FY_EBUSY);
  assert_int_equal(fy_commitlog_end(fx->cl), end);
  assert_int_equal(fy_commitlog_append(fx->cl, batch, 6, NULL, NULL, NULL), 0);
  /* Waiters are bounded too. */
  struct ack acks[5] = {0};
  assert_true(run_until(&fx->loop, all_written, fx->cl));
  for (int i = 0; i < 4; i++) {
    struct fy_msg m = make_msg(10, (uint32_t)i);
    acks[i].cl = fx->cl;
    assert_int_equal(fy_commitlog_append(fx->cl, &m, 1, NULL, on_ack, &acks[i]), 0);
  }
  struct fy_msg m = make_msg(10, 99);
  assert_int_equal(fy_commitlog_append(fx->cl, &m, 1, NULL, on_ack, &acks[4]), -FY_EBUSY);
  assert_int_equal(fy_commitlog_append(fx->cl, &m, 1, NULL, NULL, NULL), 0);
  assert_true(fy_test_run_until(&fx->loop, &acks[3].called, DEADLINE_MS));
  acks[4].cl = fx->cl;
  assert_int_equal(fy_commitlog_append(fx->cl, &m, 1, NULL, on_ack, &acks[4]), 0);
  assert_true(fy_test_run_until(&fx->loop, &acks[4].called, DEADLINE_MS));
  assert_int_equal(acks[4].status, 0);
}

static void test_rejects(void **state) {
  struct fx *fx = *state;
  assert_int_equal(open_log(fx, 0), 0);
  struct fy_msg m = make_msg(8192, 1); /* larger than a write buffer */
  assert_int_equal(fy_commitlog_append(fx->cl, &m, 1, NULL, NULL, NULL), -FY_ETOO_BIG);
  m = make_msg(8192 - FY_BLANK_SIZE - size_for_body(0), 1); /* the largest that fits */
  assert_int_equal(fy_commitlog_append(fx->cl, &m, 1, NULL, NULL, NULL), 0);
  m = make_msg(10, 1);
  m.topic_len = 0;
  assert_int_equal(fy_commitlog_append(fx->cl, &m, 1, NULL, NULL, NULL), -EINVAL);
  assert_int_equal(fy_commitlog_append(fx->cl, &m, 0, NULL, NULL, NULL), -EINVAL);
  fy_commitlog_set_disk_full(fx->cl, true);
  m = make_msg(10, 1);
  assert_int_equal(fy_commitlog_append(fx->cl, &m, 1, NULL, NULL, NULL), -FY_EDISK_FULL);
  fy_commitlog_set_disk_full(fx->cl, false); /* not sticky */
  assert_int_equal(fy_commitlog_append(fx->cl, &m, 1, NULL, NULL, NULL), 0);
  assert_int_equal(fy_commitlog_error(fx->cl), 0);
  /* Bad configurations. */
  fy_commitlog *cl;
  struct fy_commitlog_config bad = fx->cfg;
  bad.segment_size = 5000;
  assert_int_equal(fy_commitlog_open(&fx->loop, fx->aio, &bad, 0, &cl, NULL), -FY_ECONFIG);
  bad = fx->cfg;
  bad.write_buffers = 1;
  assert_int_equal(fy_commitlog_open(&fx->loop, fx->aio, &bad, 0, &cl, NULL), -FY_ECONFIG);
}

static void test_write_error_sticky(void **state) {
  struct fx *fx = *state;
  assert_int_equal(open_log(fx, 0), 0);
  uint64_t p0 = append_one(fx, 100, 1);
  assert_true(run_until(&fx->loop, all_written, fx->cl));
  uint64_t written = fy_commitlog_written(fx->cl);
  fy_aio_inject_fault(fx->aio, FY_AIO_WRITE, 0, 1, -EIO);
  struct ack a = {.cl = fx->cl}, b = {.cl = fx->cl};
  struct fy_msg m = make_msg(100, 2);
  assert_int_equal(fy_commitlog_append(fx->cl, &m, 1, NULL, on_ack, &a), 0);
  assert_int_equal(fy_commitlog_append(fx->cl, &m, 1, NULL, on_ack, &b), 0);
  assert_true(fy_test_run_until(&fx->loop, &b.called, DEADLINE_MS));
  assert_true(a.called);
  assert_int_equal(a.status, -EIO);
  assert_int_equal(b.status, -EIO);
  assert_int_equal(fy_commitlog_error(fx->cl), -EIO);
  assert_int_equal(fy_commitlog_written(fx->cl), written); /* never advanced on failure */
  assert_int_equal(fy_commitlog_append(fx->cl, &m, 1, NULL, NULL, NULL), -FY_ESTORE_FAILED);
  check_record(fx->cl, p0, 100, 1); /* reads go on up to written */
  /* Still failed a while later: nothing retries behind our back. */
  for (int i = 0; i < 5; i++)
    uv_run(&fx->loop, UV_RUN_NOWAIT);
  assert_int_equal(fy_commitlog_written(fx->cl), written);
  assert_int_equal(fy_commitlog_append(fx->cl, &m, 1, NULL, NULL, NULL), -FY_ESTORE_FAILED);
}

static void test_fsync_error_sticky(void **state) {
  struct fx *fx = *state;
  fx->cfg.sync_flush = true;
  assert_int_equal(open_log(fx, 0), 0);
  struct ack ok = {.cl = fx->cl};
  struct fy_msg m = make_msg(100, 1);
  assert_int_equal(fy_commitlog_append(fx->cl, &m, 1, NULL, on_ack, &ok), 0);
  assert_true(fy_test_run_until(&fx->loop, &ok.called, DEADLINE_MS));
  assert_int_equal(ok.status, 0);
  uint64_t flushed = fy_commitlog_flushed(fx->cl);
  fy_aio_inject_fault(fx->aio, FY_AIO_FDATASYNC, 0, 1, -EIO);
  struct ack a = {.cl = fx->cl};
  uint64_t phys;
  m = make_msg(200, 2);
  assert_int_equal(fy_commitlog_append(fx->cl, &m, 1, &phys, on_ack, &a), 0);
  assert_true(fy_test_run_until(&fx->loop, &a.called, DEADLINE_MS));
  assert_int_equal(a.status, -EIO);
  assert_int_equal(fy_commitlog_error(fx->cl), -EIO);
  assert_int_equal(fy_commitlog_flushed(fx->cl), flushed);
  /* The write itself went through: the record is readable up to written. */
  assert_int_equal(fy_commitlog_written(fx->cl), phys + m.total_size);
  check_record(fx->cl, phys, 200, 2);
  assert_int_equal(fy_commitlog_append(fx->cl, &m, 1, NULL, NULL, NULL), -FY_ESTORE_FAILED);
}

static void test_async_fsync_error_sticky(void **state) {
  struct fx *fx = *state;
  assert_int_equal(open_log(fx, 0), 0);
  fy_aio_inject_fault(fx->aio, FY_AIO_FDATASYNC, 0, 1, -EIO);
  append_one(fx, 100, 1);
  assert_true(run_until(&fx->loop, failed, fx->cl)); /* the timer's fdatasync fails */
  assert_int_equal(fy_commitlog_error(fx->cl), -EIO);
  assert_int_equal(fy_commitlog_flushed(fx->cl), 0);
  struct fy_msg m = make_msg(100, 2);
  assert_int_equal(fy_commitlog_append(fx->cl, &m, 1, NULL, NULL, NULL), -FY_ESTORE_FAILED);
}

static void test_prealloc_error_sticky(void **state) {
  struct fx *fx = *state;
  assert_int_equal(open_log(fx, 0), 0);
  fy_aio_inject_fault(fx->aio, FY_AIO_FALLOCATE, 0, 1, -ENOSPC);
  /* Rolling into segment 1 makes the log preallocate segment 2. */
  for (uint32_t i = 0; i < 100 && fy_commitlog_error(fx->cl) == 0; i++) {
    struct fy_msg m = make_msg(1000, i);
    int r = append_retry(fx, &m, 1, NULL, NULL, NULL);
    assert_true(r == 0 || r == -FY_ESTORE_FAILED);
  }
  assert_true(run_until(&fx->loop, failed, fx->cl));
  assert_int_equal(fy_commitlog_error(fx->cl), -ENOSPC);
  struct fy_msg m = make_msg(100, 2);
  assert_int_equal(fy_commitlog_append(fx->cl, &m, 1, NULL, NULL, NULL), -FY_ESTORE_FAILED);
}

static void test_reopen_clean(void **state) {
  struct fx *fx = *state;
  assert_int_equal(open_log(fx, 0), 0);
  enum { N = 500 };
  uint64_t phys[N];
  for (uint32_t i = 0; i < N; i++)
    phys[i] = append_one(fx, 300 + i % 50, i);
  uint64_t end = fy_commitlog_end(fx->cl);
  reopen(fx, 0);
  assert_int_equal(fx->rep.scanned_from, 0);
  assert_int_equal(fx->rep.end, end);
  assert_int_equal(fx->rep.records_scanned, N);
  assert_int_equal(fx->rep.dropped_bytes, 0);
  assert_int_equal(fy_commitlog_end(fx->cl), end);
  assert_int_equal(fy_commitlog_written(fx->cl), end);
  assert_int_equal(fy_commitlog_flushed(fx->cl), end);
  assert_true(fx->rep.segments >= end / SEG + 1);
  for (uint32_t i = 0; i < N; i++)
    check_record(fx->cl, phys[i], 300 + i % 50, i);
  /* From a checkpoint: its segment and what follows are scanned. */
  reopen(fx, phys[400]);
  uint64_t seg_start = phys[400] / SEG * SEG;
  uint32_t first_in_seg = 400;
  while (first_in_seg > 0 && phys[first_in_seg - 1] >= seg_start)
    first_in_seg--;
  assert_true(first_in_seg < 400);
  assert_int_equal(fx->rep.scanned_from, seg_start);
  assert_int_equal(fx->rep.records_scanned, N - first_in_seg);
  assert_int_equal(fx->rep.end, end);
  /* Past the end: the last segment is scanned. */
  reopen(fx, end + 10 * SEG);
  assert_int_equal(fx->rep.scanned_from, end / SEG * SEG);
  assert_int_equal(fx->rep.end, end);
  /* Appends continue where the log ended. */
  uint64_t p = append_one(fx, 100, 9999);
  assert_int_equal(p, end);
  assert_true(run_until(&fx->loop, all_written, fx->cl));
  check_record(fx->cl, p, 100, 9999);
  assert_int_equal(walk(fx->cl), N + 1);
}

/* Damage written straight into a segment file. */
static void damage(struct fx *fx, uint64_t offset, const void *bytes, size_t len) {
  char path[600];
  seg_path(fx, offset / SEG * SEG, path, sizeof path);
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  assert_true(fd >= 0);
  assert_int_equal(pwrite(fd, bytes, len, (off_t)(offset % SEG)), (ssize_t)len);
  close(fd);
}

static void expect_zeros(struct fx *fx, uint64_t offset, size_t len) {
  char path[600];
  seg_path(fx, offset / SEG * SEG, path, sizeof path);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  assert_true(fd >= 0);
  uint8_t *got = malloc(len), *zero = calloc(1, len);
  assert_int_equal(pread(fd, got, len, (off_t)(offset % SEG)), (ssize_t)len);
  assert_memory_equal(got, zero, len);
  free(got);
  free(zero);
  close(fd);
}

/* Writes N records (ending past the first segment) and closes the log.
 * Returns the phys of the last one. */
static uint64_t prepare_log(struct fx *fx, uint32_t n, uint64_t *end) {
  assert_int_equal(open_log(fx, 0), 0);
  uint64_t last = 0;
  for (uint32_t i = 0; i < n; i++)
    last = append_one(fx, 500, i);
  *end = fy_commitlog_end(fx->cl);
  close_log(fx);
  return last;
}

/* After recovery the log ends at `end` and takes appends there. */
static void expect_recovered(struct fx *fx, uint64_t end, uint64_t records) {
  assert_int_equal(fx->rep.end, end);
  assert_int_equal(fy_commitlog_end(fx->cl), end);
  assert_int_equal(walk(fx->cl), records);
  uint64_t p = append_one(fx, 77, 4242);
  assert_int_equal(p, end);
  assert_true(run_until(&fx->loop, all_written, fx->cl));
  reopen(fx, 0);
  assert_int_equal(fx->rep.dropped_bytes, 0);
  assert_int_equal(walk(fx->cl), records + 1);
  check_record(fx->cl, p, 77, 4242);
}

static void test_recover_garbage_tail(void **state) {
  struct fx *fx = *state;
  uint64_t end;
  prepare_log(fx, 200, &end);
  uint8_t junk[300];
  for (size_t i = 0; i < sizeof junk; i++)
    junk[i] = (uint8_t)(i * 13 + 5);
  damage(fx, end, junk, sizeof junk);
  assert_int_equal(open_log(fx, 0), 0);
  assert_int_equal(fx->rep.dropped_bytes, sizeof junk);
  assert_int_equal(fx->rep.records_scanned, 200);
  expect_zeros(fx, end, sizeof junk);
  expect_recovered(fx, end, 200);
}

static void test_recover_zeroed_record(void **state) {
  struct fx *fx = *state;
  uint64_t end;
  uint64_t last = prepare_log(fx, 200, &end);
  uint8_t zero[60] = {0};
  damage(fx, end - sizeof zero, zero, sizeof zero); /* the tail of the last record */
  assert_int_equal(open_log(fx, 0), 0);
  assert_int_equal(fx->rep.dropped_bytes, end - sizeof zero - last);
  expect_zeros(fx, last, end - last);
  expect_recovered(fx, last, 199);
}

static void test_recover_torn_record(void **state) {
  struct fx *fx = *state;
  uint64_t end;
  uint64_t last = prepare_log(fx, 200, &end);
  uint8_t flip = 0x5a;
  damage(fx, last + 150, &flip, 1); /* CRC no longer matches */
  assert_int_equal(open_log(fx, 0), 0);
  assert_int_equal(fx->rep.records_scanned, 199);
  expect_recovered(fx, last, 199);
}

static void test_recover_truncated_file(void **state) {
  struct fx *fx = *state;
  uint64_t end;
  uint64_t last = prepare_log(fx, 200, &end);
  char path[600];
  seg_path(fx, (last / SEG + 1) * SEG, path, sizeof path);
  assert_int_equal(unlink(path), 0); /* the preallocated next one was never made */
  seg_path(fx, last / SEG * SEG, path, sizeof path);
  assert_int_equal(truncate(path, (off_t)(last % SEG + 100)), 0); /* cut mid-record */
  assert_int_equal(open_log(fx, 0), 0);
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_size, SEG); /* extended back to full size */
  assert_int_equal(fx->rep.dropped_bytes, 100);
  expect_recovered(fx, last, 199);
}

static void test_recover_odd_files(void **state) {
  struct fx *fx = *state;
  uint64_t end;
  prepare_log(fx, 200, &end);
  uint64_t next = (end / SEG + 1) * SEG;
  char path[600];
  /* The preallocated next segment, zero-length (a crash right after creat). */
  seg_path(fx, next, path, sizeof path);
  assert_int_equal(truncate(path, 0), 0);
  /* Other names are ignored. */
  char other[700];
  snprintf(other, sizeof other, "%s/checkpoint", fx->dir);
  FILE *f = fopen(other, "w");
  fputs("x", f);
  fclose(f);
  snprintf(other, sizeof other, "%s/00000000000000000001.tmp", fx->dir);
  f = fopen(other, "w");
  fclose(f);
  assert_int_equal(open_log(fx, 0), 0);
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_size, SEG);
  assert_int_equal(fx->rep.dropped_bytes, 0);
  assert_true(file_exists(other));
  expect_recovered(fx, end, 200);
  /* A record-looking stale segment after the end is deleted. */
  close_log(fx);
  uint64_t later = next + SEG;
  seg_path(fx, later, path, sizeof path);
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  assert_true(fd >= 0);
  assert_int_equal(ftruncate(fd, SEG), 0);
  assert_int_equal(pwrite(fd, "garbage", 7, 0), 7);
  close(fd);
  assert_int_equal(open_log(fx, 0), 0);
  assert_int_equal(fx->rep.dropped_bytes, 7);
  assert_false(file_exists(path));
}

/* Damage just below the checkpoint, in its segment, is found all the same. */
static void test_recover_below_checkpoint(void **state) {
  struct fx *fx = *state;
  uint64_t end;
  uint64_t last = prepare_log(fx, 200, &end);
  uint8_t flip = 0x40;
  damage(fx, last + 100, &flip, 1);
  assert_int_equal(open_log(fx, end), 0); /* the checkpoint says `end` is valid */
  assert_true(fx->rep.scanned_from <= last);
  expect_recovered(fx, last, 199);
}

/* The data segment cut short while the (empty) next one exists: still the
 * tail of the log, extended and recovered. */
static void test_recover_short_before_empty(void **state) {
  struct fx *fx = *state;
  uint64_t end;
  uint64_t last = prepare_log(fx, 200, &end);
  char path[600];
  seg_path(fx, (last / SEG + 1) * SEG, path, sizeof path);
  assert_true(file_exists(path));
  seg_path(fx, last / SEG * SEG, path, sizeof path);
  assert_int_equal(truncate(path, (off_t)(last % SEG + 50)), 0);
  assert_int_equal(open_log(fx, end), 0);
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_size, SEG);
  expect_recovered(fx, last, 199);
}

static void test_recover_bad_sizes(void **state) {
  struct fx *fx = *state;
  uint64_t end;
  prepare_log(fx, 200, &end);
  assert_true(end > SEG);
  char path[600];
  seg_path(fx, 0, path, sizeof path);
  assert_int_equal(truncate(path, SEG / 2), 0); /* not the last one: refuse to guess */
  assert_int_equal(open_log(fx, 0), -FY_ECORRUPT);
  fx->cl = NULL;
}

static void test_recover_bad_blank(void **state) {
  struct fx *fx = *state;
  assert_int_equal(open_log(fx, 0), 0);
  fill_segment_to(fx, 1000, 1);
  uint64_t blank_at = fy_commitlog_end(fx->cl);
  append_one(fx, 1000, 5000); /* does not fit: a blank of 1000 bytes */
  assert_true(run_until(&fx->loop, all_written, fx->cl));
  uint64_t records = walk(fx->cl);
  close_log(fx);
  /* A blank whose length is not the rest of its segment is invalid. */
  uint8_t blank[8];
  fy_record_encode_blank(blank, 992);
  damage(fx, blank_at, blank, sizeof blank);
  assert_int_equal(open_log(fx, 0), 0);
  assert_int_equal(fx->rep.end, blank_at);
  /* The blank, and the record in the next segment up to its last nonzero
   * byte (its props_len is 0): that segment is deleted. */
  assert_int_equal(fx->rep.dropped_bytes, FY_BLANK_SIZE + size_for_body(1000) - 2);
  assert_int_equal(walk(fx->cl), records - 1);
}

static void test_empty_log_reopen(void **state) {
  struct fx *fx = *state;
  assert_int_equal(open_log(fx, 0), 0);
  assert_int_equal(fx->rep.segments, 2); /* the active one and the next */
  reopen(fx, 0);
  assert_int_equal(fx->rep.end, 0);
  assert_int_equal(fx->rep.records_scanned, 0);
  assert_int_equal(fy_commitlog_min(fx->cl), 0);
  char path[600];
  seg_path(fx, 0, path, sizeof path);
  assert_true(file_exists(path));
}

/* Copies src's bytes into dst with append_raw in chunks of `chunk` bytes
 * (cut at segment ends, as fy_commitlog_read does). */
static void replicate(struct fx *fx, fy_commitlog *src, fy_commitlog *dst, size_t chunk) {
  for (int i = 0; i < 100000 && fy_commitlog_end(dst) < fy_commitlog_written(src); i++) {
    struct fy_cl_slice s;
    assert_int_equal(fy_commitlog_read(src, fy_commitlog_end(dst), chunk, &s), 0);
    assert_true(s.len > 0);
    int r;
    for (int k = 0; k < RETRIES_MAX; k++) {
      r = fy_commitlog_append_raw(dst, s.offset, s.data, s.len, NULL, NULL);
      if (r != -FY_EBUSY)
        break;
      uv_run(&fx->loop, UV_RUN_ONCE);
    }
    assert_int_equal(r, 0);
    fy_cl_slice_release(&s);
  }
  assert_int_equal(fy_commitlog_end(dst), fy_commitlog_written(src));
}

static void test_append_raw(void **state) {
  struct fx *fx = *state;
  assert_int_equal(open_log(fx, 0), 0);
  uint32_t tag = fill_segment_to(fx, 1000, 1);
  append_one(fx, 1000, tag++); /* master ends segment 0 with a blank */
  for (uint32_t i = 0; i < 40; i++)
    append_one(fx, 300, tag++);
  assert_true(run_until(&fx->loop, all_written, fx->cl));

  char dir[600];
  snprintf(dir, sizeof dir, "%s-slave", fx->dir);
  struct fy_commitlog_config cfg = fx->cfg;
  cfg.dir = dir;
  fy_commitlog *sl;
  assert_int_equal(fy_commitlog_open(&fx->loop, fx->aio, &cfg, 0, &sl, NULL), 0);
  uint8_t b[16] = {0};
  assert_int_equal(fy_commitlog_append_raw(sl, 5, b, sizeof b, NULL, NULL), -FY_EDISCONTIG);
  assert_int_equal(fy_commitlog_append_raw(sl, 0, b, 0, NULL, NULL), -EINVAL);

  /* Segment 0 exactly, in odd chunks; the last chunk ends at the segment end. */
  struct fy_cl_slice s;
  uint64_t off = 0;
  struct ack a = {.cl = sl};
  for (int i = 0; i < 1000 && off < SEG; i++) {
    assert_int_equal(fy_commitlog_read(fx->cl, off, 777, &s), 0);
    bool last = off + s.len == SEG;
    int r;
    for (int k = 0; k < RETRIES_MAX; k++) {
      r = fy_commitlog_append_raw(sl, off, s.data, s.len, last ? on_ack : NULL, &a);
      if (r != -FY_EBUSY)
        break;
      uv_run(&fx->loop, UV_RUN_ONCE);
    }
    assert_int_equal(r, 0);
    off += s.len;
    fy_cl_slice_release(&s);
  }
  assert_true(fy_test_run_until(&fx->loop, &a.called, DEADLINE_MS));
  assert_int_equal(a.status, 0);
  assert_int_equal(a.phys + a.size, SEG);
  assert_true(a.written_at >= SEG);
  assert_int_equal(fy_commitlog_end(sl), SEG);
  /* A chunk may not cross a segment end. */
  assert_true(run_until(&fx->loop, all_written, sl));
  /* Stop mid-record: the record is not readable until the rest arrives. */
  assert_int_equal(fy_commitlog_read(fx->cl, SEG, 100, &s), 0);
  assert_int_equal(fy_commitlog_append_raw(sl, SEG, s.data, s.len, NULL, NULL), 0);
  fy_cl_slice_release(&s);
  assert_true(run_until(&fx->loop, all_written, sl));
  enum fy_record_kind kind;
  assert_int_equal(fy_commitlog_read_record(sl, SEG, &s, &kind, NULL), -EAGAIN);
  replicate(fx, fx->cl, sl, 1000);
  assert_true(run_until(&fx->loop, all_written, sl));
  /* Byte for byte the same log. */
  assert_int_equal(fy_commitlog_written(sl), fy_commitlog_written(fx->cl));
  assert_int_equal(walk(sl), walk(fx->cl));
  for (off = 0; off < fy_commitlog_written(sl);) {
    struct fy_cl_slice x, y;
    assert_int_equal(fy_commitlog_read(fx->cl, off, 4096, &x), 0);
    assert_int_equal(fy_commitlog_read(sl, off, 4096, &y), 0);
    assert_int_equal(x.len, y.len);
    assert_memory_equal(x.data, y.data, x.len);
    off += x.len;
    fy_cl_slice_release(&x);
    fy_cl_slice_release(&y);
  }
  /* Crossing a segment end is refused. */
  uint64_t e = fy_commitlog_end(sl);
  uint8_t *big = calloc(1, SEG);
  assert_int_equal(fy_commitlog_append_raw(sl, e, big, SEG - e % SEG + 1, NULL, NULL), -EINVAL);
  free(big);
  /* A promoted slave appends its own records after the replicated ones. */
  struct fy_msg m = make_msg(100, 31337);
  uint64_t p;
  assert_int_equal(append_to(&fx->loop, sl, &m, 1, &p, NULL, NULL), 0);
  assert_int_equal(p, e);
  assert_true(run_until(&fx->loop, all_written, sl));
  check_record(sl, p, 100, 31337);

  bool done = false;
  fy_commitlog_close(sl, on_closed, &done);
  assert_true(fy_test_run_until(&fx->loop, &done, DEADLINE_MS));
  fy_commitlog_free(sl);
  fy_test_rmtree(dir);
}

/* The slave's bytes end exactly at a segment end without a blank of its
 * own: the next local append starts the next segment. */
static void test_append_raw_exact_segment_end(void **state) {
  struct fx *fx = *state;
  assert_int_equal(open_log(fx, 0), 0);
  uint32_t tag = fill_segment_to(fx, 1000, 1);
  append_one(fx, 1000, tag++); /* blank to the end of segment 0 */
  assert_true(run_until(&fx->loop, all_written, fx->cl));
  struct fy_commitlog_config cfg = fx->cfg;
  char dir[600];
  snprintf(dir, sizeof dir, "%s-slave", fx->dir);
  cfg.dir = dir;
  fy_commitlog *sl;
  assert_int_equal(fy_commitlog_open(&fx->loop, fx->aio, &cfg, 0, &sl, NULL), 0);
  uint64_t src_end = SEG;
  for (uint64_t off = 0; off < src_end;) {
    struct fy_cl_slice s;
    assert_int_equal(fy_commitlog_read(fx->cl, off, 3000, &s), 0);
    int r;
    for (int k = 0; k < RETRIES_MAX; k++) {
      r = fy_commitlog_append_raw(sl, off, s.data, s.len, NULL, NULL);
      if (r != -FY_EBUSY)
        break;
      uv_run(&fx->loop, UV_RUN_ONCE);
    }
    assert_int_equal(r, 0);
    off += s.len;
    fy_cl_slice_release(&s);
  }
  assert_int_equal(fy_commitlog_end(sl), SEG);
  struct fy_msg m = make_msg(100, 555);
  uint64_t p;
  assert_int_equal(append_to(&fx->loop, sl, &m, 1, &p, NULL, NULL), 0);
  assert_int_equal(p, SEG);
  assert_true(run_until(&fx->loop, all_written, sl));
  check_record(sl, p, 100, 555);
  bool done = false;
  fy_commitlog_close(sl, on_closed, &done);
  assert_true(fy_test_run_until(&fx->loop, &done, DEADLINE_MS));
  fy_commitlog_free(sl);
  /* And it recovers as one valid log. */
  assert_int_equal(fy_commitlog_open(&fx->loop, fx->aio, &cfg, 0, &sl, &fx->rep), 0);
  assert_int_equal(fx->rep.end, SEG + m.total_size);
  assert_int_equal(fx->rep.dropped_bytes, 0);
  done = false;
  fy_commitlog_close(sl, on_closed, &done);
  assert_true(fy_test_run_until(&fx->loop, &done, DEADLINE_MS));
  fy_commitlog_free(sl);
  fy_test_rmtree(dir);
}

static void test_truncate(void **state) {
  struct fx *fx = *state;
  assert_int_equal(open_log(fx, 0), 0);
  enum { N = 400 };
  uint64_t phys[N];
  for (uint32_t i = 0; i < N; i++)
    phys[i] = append_one(fx, 400, i);
  assert_int_equal(fy_commitlog_truncate(fx->cl, phys[N - 1]), -FY_EBUSY); /* writes pending */
  assert_true(run_until(&fx->loop, all_written, fx->cl));
  uint64_t end = fy_commitlog_end(fx->cl);
  assert_true(end > 3 * SEG);
  assert_int_equal(fy_commitlog_truncate(fx->cl, end + 1), -EINVAL);
  /* Within the last segment: at its second record. */
  uint32_t j = N - 1;
  while (j > 0 && phys[j - 1] / SEG == phys[N - 1] / SEG)
    j--;
  j++;
  assert_true(j < N);
  assert_int_equal(truncate_retry(fx, phys[j]), 0);
  assert_int_equal(fy_commitlog_end(fx->cl), phys[j]);
  assert_int_equal(fy_commitlog_written(fx->cl), phys[j]);
  expect_zeros(fx, phys[j], end - phys[j]);
  /* Back into the first segment: later segments go. */
  uint32_t k = 20;
  assert_true(phys[k] < SEG);
  assert_int_equal(truncate_retry(fx, phys[k]), 0);
  char path[600];
  seg_path(fx, 2 * SEG, path, sizeof path);
  assert_false(file_exists(path));
  seg_path(fx, SEG, path, sizeof path);
  assert_true(file_exists(path)); /* the next segment, fresh */
  expect_zeros(fx, SEG, 4096);
  struct fy_cl_slice s;
  enum fy_record_kind kind;
  assert_int_equal(fy_commitlog_read_record(fx->cl, phys[k], &s, &kind, NULL), -EAGAIN);
  uint64_t p = append_one(fx, 123, 777);
  assert_int_equal(p, phys[k]);
  assert_true(run_until(&fx->loop, all_written, fx->cl));
  check_record(fx->cl, p, 123, 777);
  assert_int_equal(walk(fx->cl), k + 1);
  reopen(fx, 0);
  assert_int_equal(fx->rep.records_scanned, k + 1);
  assert_int_equal(fx->rep.dropped_bytes, 0);
}

struct gone {
  struct fx *fx;
  uint64_t from, to;
};

static bool segments_gone(void *arg) {
  struct gone *g = arg;
  char path[600];
  for (uint64_t s = g->from; s < g->to; s += SEG) {
    seg_path(g->fx, s, path, sizeof path);
    if (file_exists(path))
      return false;
  }
  return true;
}

static void test_retention(void **state) {
  struct fx *fx = *state;
  fx->cfg.sync_flush = true;
  assert_int_equal(open_log(fx, 0), 0);
  for (uint32_t i = 0; i < 300; i++)
    append_one(fx, 700, i);
  assert_true(run_until(&fx->loop, all_flushed, fx->cl));
  uint64_t end = fy_commitlog_end(fx->cl);
  uint64_t starts[16];
  int64_t mtimes[16];
  size_t n = fy_commitlog_old_segments(fx->cl, starts, mtimes, 16);
  assert_int_equal(n, end / SEG); /* all but the active one */
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(starts[i], i * SEG);
    assert_true(mtimes[i] > 1700000000000);
  }
  assert_int_equal(fy_commitlog_old_segments(fx->cl, starts, mtimes, 2), 2);
  /* A reader holds a slice on segment 0 while it is dropped. */
  struct fy_cl_slice s;
  enum fy_record_kind kind;
  struct fy_msg m;
  assert_true(fy_commitlog_read_record(fx->cl, 0, &s, &kind, &m) > 0);
  assert_int_equal(fy_commitlog_drop_oldest(fx->cl), 0);
  assert_int_equal(fy_commitlog_min(fx->cl), SEG);
  struct fy_cl_slice t;
  assert_int_equal(fy_commitlog_read(fx->cl, 100, 10, &t), -FY_ENOT_FOUND);
  struct gone g0 = {fx, 0, SEG};
  assert_true(run_until(&fx->loop, segments_gone, &g0)); /* unlinked off the loop thread */
  assert_int_equal(m.flag, 0); /* the slice still reads the mapped bytes */
  assert_memory_equal(m.body, body_buf, 700);
  fy_cl_slice_release(&s);
  /* Drop until only the active segment is left. */
  while (fy_commitlog_old_segments(fx->cl, starts, mtimes, 16) > 0)
    assert_int_equal(fy_commitlog_drop_oldest(fx->cl), 0);
  assert_int_equal(fy_commitlog_drop_oldest(fx->cl), -FY_EBUSY);
  assert_int_equal(fy_commitlog_min(fx->cl), end / SEG * SEG);
  struct gone g = {fx, SEG, end / SEG * SEG};
  assert_true(run_until(&fx->loop, segments_gone, &g));
  reopen(fx, 0);
  assert_int_equal(fy_commitlog_min(fx->cl), end / SEG * SEG);
  assert_int_equal(fx->rep.end, end);
}

/* Pages of a segment file [off, off + len) in the page cache. */
static size_t resident(const struct fx *fx, uint64_t seg_start, uint64_t off, uint64_t len) {
  char path[700];
  seg_path(fx, seg_start, path, sizeof path);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  assert_true(fd >= 0);
  uint8_t *map = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, (off_t)off);
  assert_true(map != MAP_FAILED);
  size_t page = (size_t)sysconf(_SC_PAGESIZE), n = len / page, count = 0;
  unsigned char *vec = malloc(n);
  assert_non_null(vec);
  assert_int_equal(mincore(map, len, vec), 0);
  for (size_t i = 0; i < n; i++)
    count += vec[i] & 1;
  free(vec);
  munmap(map, len);
  close(fd);
  return count;
}

struct drop_goal {
  fy_commitlog *cl;
  uint64_t at_least;
};

static bool dropped_enough(void *arg) {
  struct drop_goal *g = arg;
  struct fy_cl_stats st;
  fy_commitlog_stats(g->cl, &st);
  return st.cache_dropped_to >= g->at_least;
}

/* page_cache_max: flushed bytes further behind the end leave the page cache
 * (pages the log itself mapped for readers too), newer ones stay, and every
 * record still reads back. */
static void test_page_cache_window(void **state) {
  struct fx *fx = *state;
  const uint64_t seg = 4u << 20, window = 8u << 20;
  fx->cfg.segment_size = seg;
  fx->cfg.write_buffer_size = 1u << 20;
  fx->cfg.page_cache_max = window;
  assert_int_equal(open_log(fx, 0), 0);
  enum { BODY = 60000 };
  uint32_t n = 0;
  uint64_t first = append_one(fx, BODY, n++);
  assert_true(run_until(&fx->loop, all_flushed, fx->cl));
  check_record(fx->cl, first, BODY, 0); /* maps the first pages into the log's reader mapping */
  while (fy_commitlog_end(fx->cl) < 40u << 20)
    append_one(fx, BODY, n++);
  assert_true(run_until(&fx->loop, all_flushed, fx->cl));
  uint64_t end = fy_commitlog_end(fx->cl);
  /* Steps of at least 8 MiB on 2 MiB boundaries: at most 10 MiB short of the window. */
  struct drop_goal g = {fx->cl, end - window - (10u << 20)};
  assert_true(run_until(&fx->loop, dropped_enough, &g));
  struct fy_cl_stats st;
  fy_commitlog_stats(fx->cl, &st);
  assert_true(st.cache_dropped_to <= end - window);
  /* In requests of at most 2 MiB each: one big drop held the io_uring
   * worker for milliseconds on the broker's CPU. */
  assert_true(st.cache_drops >= st.cache_dropped_to / (2u << 20));

  struct statfs sf;
  assert_int_equal(statfs(fx->dir, &sf), 0);
  if (sf.f_type != 0x01021994) { /* TMPFS_MAGIC: there the file is the memory */
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    for (uint64_t s0 = 0; s0 + seg <= st.cache_dropped_to; s0 += seg)
      assert_int_equal(resident(fx, s0, 0, seg), 0);
    uint64_t last = end / seg * seg; /* the newest segment, inside the window */
    uint64_t used = (end - last) / page * page;
    if (used)
      assert_int_equal(resident(fx, last, 0, used), used / page);
  }
  assert_int_equal(walk(fx->cl), n); /* dropped bytes come back from the disk */
  check_record(fx->cl, first, BODY, 0);
  check_record(fx->cl, fy_commitlog_end(fx->cl) - size_for_body(BODY), BODY, n - 1);
}

/* Without page_cache_max the log leaves the page cache to the kernel. */
static void test_page_cache_kept(void **state) {
  struct fx *fx = *state;
  fx->cfg.segment_size = 4u << 20;
  fx->cfg.write_buffer_size = 1u << 20;
  assert_int_equal(open_log(fx, 0), 0);
  uint32_t n = 0;
  while (fy_commitlog_end(fx->cl) < 24u << 20)
    append_one(fx, 60000, n++);
  assert_true(run_until(&fx->loop, all_flushed, fx->cl));
  struct fy_cl_stats st;
  fy_commitlog_stats(fx->cl, &st);
  assert_int_equal(st.cache_dropped_to, 0);
}

/* ---- writeback ahead ------------------------------------------------------ */

struct wb_goal {
  fy_commitlog *cl;
  uint64_t at_least;
};

static bool writeback_reached(void *arg) {
  struct wb_goal *g = arg;
  struct fy_cl_stats st;
  fy_commitlog_stats(g->cl, &st);
  return st.writeback_to >= g->at_least;
}

static struct fy_cl_stats cl_stats(fy_commitlog *cl) {
  struct fy_cl_stats st;
  fy_commitlog_stats(cl, &st);
  return st;
}

/* ASYNC_FLUSH with writeback_bytes: written bytes get their writeback started
 * in steps of at least writeback_bytes, ending on a page boundary inside a
 * segment (the last page is still filling) or at its end, one request at a
 * time, and none of it counts as flushed. */
static void test_writeback_ahead(void **state) {
  struct fx *fx = *state;
  const uint32_t step = 16384;
  fx->cfg.segment_size = 1u << 20;
  fx->cfg.flush_interval_ms = 60000; /* no fdatasync during the test */
  fx->cfg.writeback_bytes = step;
  assert_int_equal(open_log(fx, 0), 0);
  fy_aio_inject_delay(fx->aio, FY_AIO_WRITEBACK, FY_AIO_HOLD_UNTIL_RELEASED);
  uint32_t n = 0;
  while (fy_commitlog_end(fx->cl) < 3 * step + 100)
    append_one(fx, 1000, n++);
  assert_true(run_until(&fx->loop, all_written, fx->cl));
  for (int i = 0; i < 50; i++)
    uv_run(&fx->loop, UV_RUN_NOWAIT);
  assert_int_equal(fy_aio_held(fx->aio), 1); /* one in flight, however far behind */
  assert_int_equal(cl_stats(fx->cl).writebacks, 0);
  fy_aio_inject_delay(fx->aio, FY_AIO_WRITEBACK, 0);

  uint64_t written = fy_commitlog_written(fx->cl);
  struct wb_goal g = {fx->cl, written / 4096 * 4096};
  assert_true(run_until(&fx->loop, writeback_reached, &g));
  struct fy_cl_stats st = cl_stats(fx->cl);
  assert_int_equal(st.writeback_to % 4096, 0);
  assert_true(st.writeback_to <= written);
  assert_true(st.writebacks >= 2); /* the held one, then the rest */
  assert_true(st.writebacks <= written / step);
  assert_int_equal(fy_commitlog_flushed(fx->cl), 0);
  assert_int_equal(st.syncs, 0);

  /* A segment's tail goes out whole, in steps smaller than writeback_bytes if
   * that is what is left; the next segment starts a new count. */
  while (fy_commitlog_end(fx->cl) < fx->cfg.segment_size + 2 * step)
    append_one(fx, 1000, n++);
  assert_true(run_until(&fx->loop, all_written, fx->cl));
  g.at_least = fx->cfg.segment_size + step;
  assert_true(run_until(&fx->loop, writeback_reached, &g));
  assert_int_equal(fy_commitlog_flushed(fx->cl), 0);
  assert_int_equal(fy_commitlog_error(fx->cl), 0);
  close_log(fx); /* waits for what is in flight, then syncs everything */
}

/* However far behind, one request covers at most four steps (at least
 * 1 MiB), so the worker's CPU burst stays short: 3.5 MiB written while the
 * first request is held go out in at least three more. */
static void test_writeback_capped(void **state) {
  struct fx *fx = *state;
  fx->cfg.segment_size = 8u << 20;
  fx->cfg.write_buffer_size = 1u << 20;
  fx->cfg.flush_interval_ms = 60000;
  fx->cfg.writeback_bytes = 16384;
  assert_int_equal(open_log(fx, 0), 0);
  fy_aio_inject_delay(fx->aio, FY_AIO_WRITEBACK, FY_AIO_HOLD_UNTIL_RELEASED);
  uint32_t n = 0;
  while (fy_commitlog_end(fx->cl) < (7u << 19))
    append_one(fx, 60000, n++);
  assert_true(run_until(&fx->loop, all_written, fx->cl));
  assert_int_equal(fy_aio_held(fx->aio), 1);
  fy_aio_inject_delay(fx->aio, FY_AIO_WRITEBACK, 0);
  uint64_t written = fy_commitlog_written(fx->cl);
  struct wb_goal g = {fx->cl, written / 4096 * 4096};
  assert_true(run_until(&fx->loop, writeback_reached, &g));
  struct fy_cl_stats st = cl_stats(fx->cl);
  assert_true(st.writebacks >= 4);
  assert_int_equal(fy_commitlog_error(fx->cl), 0);
}

/* A failed writeback is advice gone wrong: the log carries on, and the
 * fdatasync still covers the bytes. */
static void test_writeback_error_ignored(void **state) {
  struct fx *fx = *state;
  fx->cfg.flush_interval_ms = 60000;
  fx->cfg.writeback_bytes = 8192;
  assert_int_equal(open_log(fx, 0), 0);
  fy_aio_inject_fault(fx->aio, FY_AIO_WRITEBACK, 0, 2, -EIO);
  uint32_t n = 0;
  while (fy_commitlog_end(fx->cl) < 40000)
    append_one(fx, 1000, n++);
  assert_true(run_until(&fx->loop, all_written, fx->cl));
  struct wb_goal g = {fx->cl, 16384};
  assert_true(run_until(&fx->loop, writeback_reached, &g));
  assert_int_equal(fy_commitlog_error(fx->cl), 0);
  uint64_t end = fy_commitlog_end(fx->cl);
  struct fy_msg m = make_msg(100, n);
  struct ack a = {.cl = fx->cl};
  assert_int_equal(append_retry(fx, &m, 1, NULL, on_ack, &a), 0);
  assert_true(fy_test_run_until(&fx->loop, &a.called, DEADLINE_MS));
  assert_int_equal(a.status, 0);
  close_log(fx);
  assert_int_equal(open_log(fx, 0), 0);
  assert_int_equal(fy_commitlog_end(fx->cl), end + a.size);
}

/* No writeback ahead with writeback_bytes 0, or under SYNC_FLUSH, where each
 * acknowledgement waits for an fdatasync anyway. */
static void test_writeback_off(void **state) {
  struct fx *fx = *state;
  for (int sync = 0; sync < 2; sync++) {
    fx->cfg.sync_flush = sync;
    fx->cfg.writeback_bytes = sync ? 4096 : 0;
    assert_int_equal(open_log(fx, 0), 0);
    for (uint32_t i = 0; i < 100; i++)
      append_one(fx, 1000, i);
    assert_true(run_until(&fx->loop, all_flushed, fx->cl));
    assert_int_equal(cl_stats(fx->cl).writebacks, 0);
    assert_int_equal(cl_stats(fx->cl).writeback_to, 0);
    close_log(fx);
  }
}

static void test_free_before_run(void **state) {
  struct fx *fx = *state;
  assert_int_equal(open_log(fx, 0), 0);
  fy_commitlog_free(fx->cl);
  fx->cl = NULL;
}

/* Dispatch reads its own records without checking their CRC again, but
 * never bytes that arrived raw (replication) or were found at open. */
static uint64_t body_offset(fy_commitlog *cl, uint64_t phys) {
  struct fy_cl_slice s;
  enum fy_record_kind kind;
  struct fy_msg m;
  assert_true(fy_commitlog_read_record(cl, phys, &s, &kind, &m) > 0);
  uint64_t at = phys + (uint64_t)((const uint8_t *)m.body - s.data);
  fy_cl_slice_release(&s);
  return at;
}

static void test_read_record_own(void **state) {
  struct fx *fx = *state;
  assert_int_equal(open_log(fx, 0), 0);
  uint64_t a = append_one(fx, 100, 7);
  assert_true(run_until(&fx->loop, all_written, fx->cl));
  struct fy_cl_slice s;
  enum fy_record_kind kind;
  struct fy_msg m;
  uint8_t rec[512];
  int64_t size = (int64_t)size_for_body(100);
  assert_int_equal(fy_commitlog_read(fx->cl, a, (size_t)size, &s), 0);
  memcpy(rec, s.data, s.len);
  fy_cl_slice_release(&s);
  /* a byte of its body changed behind the log's back: only the full check sees it */
  uint8_t x = 0xEE;
  damage(fx, body_offset(fx->cl, a) + 10, &x, 1);
  assert_int_equal(fy_commitlog_read_record(fx->cl, a, &s, &kind, &m), -FY_ECORRUPT);
  assert_int_equal(fy_commitlog_read_record_own(fx->cl, a, &s, &kind, &m), size);
  fy_cl_slice_release(&s);
  /* the same record appended raw, with a body byte changed after its CRC: refused */
  uint64_t b = fy_commitlog_end(fx->cl);
  fy_record_restamp(rec, 0, b, 1);
  rec[size - 1 - 40] ^= 0xFF;
  assert_int_equal(fy_commitlog_append_raw(fx->cl, b, rec, (size_t)size, NULL, NULL), 0);
  assert_true(run_until(&fx->loop, all_written, fx->cl));
  assert_int_equal(fy_commitlog_read_record_own(fx->cl, b, &s, &kind, &m), -FY_ECORRUPT);
  assert_int_equal(fy_commitlog_read_record(fx->cl, b, &s, &kind, &m), -FY_ECORRUPT);
  /* own appends after it are trusted again; those before the raw bytes not any more */
  uint64_t c = append_one(fx, 50, 8);
  assert_true(run_until(&fx->loop, all_written, fx->cl));
  damage(fx, body_offset(fx->cl, c) + 5, &x, 1);
  assert_int_equal(fy_commitlog_read_record_own(fx->cl, c, &s, &kind, &m), size_for_body(50));
  fy_cl_slice_release(&s);
  assert_int_equal(fy_commitlog_read_record_own(fx->cl, a, &s, &kind, &m), -FY_ECORRUPT);
  close_log(fx);
}


#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

static const struct CMUnitTest tests[] = {
    T(test_append_read_back),
    T(test_read_record_own),
    T(test_segment_boundary),
    T(test_many_rollovers),
    T(test_buffers_larger_than_segments),
    T(test_sync_flush_acks_after_flush),
    T(test_sync_flush_timeout),
    T(test_stats),
    T(test_sync_queued_before_on_written),
    T(test_async_flush_timer),
    T(test_close_flushes),
    T(test_busy_when_full),
    T(test_rejects),
    T(test_write_error_sticky),
    T(test_fsync_error_sticky),
    T(test_async_fsync_error_sticky),
    T(test_prealloc_error_sticky),
    T(test_reopen_clean),
    T(test_recover_garbage_tail),
    T(test_recover_zeroed_record),
    T(test_recover_torn_record),
    T(test_recover_truncated_file),
    T(test_recover_odd_files),
    T(test_recover_below_checkpoint),
    T(test_recover_short_before_empty),
    T(test_recover_bad_sizes),
    T(test_recover_bad_blank),
    T(test_empty_log_reopen),
    T(test_append_raw),
    T(test_append_raw_exact_segment_end),
    T(test_truncate),
    T(test_retention),
    T(test_page_cache_window),
    T(test_page_cache_kept),
    T(test_writeback_ahead),
    T(test_writeback_capped),
    T(test_writeback_error_ignored),
    T(test_writeback_off),
    T(test_free_before_run),
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
  for (size_t i = 0; i < sizeof body_buf; i++)
    body_buf[i] = (uint8_t)(i * 7 + 3);
  int failures = 0;
  if (uring_available()) {
    setenv("FERRY_AIO_BACKEND", "uring", 1);
    failures += _cmocka_run_group_tests("commitlog/io_uring", tests,
                                        sizeof tests / sizeof tests[0], NULL, NULL);
  } else {
    fprintf(stderr, "io_uring unavailable: the io_uring pass is skipped\n");
  }
  setenv("FERRY_AIO_BACKEND", "threads", 1);
  failures += _cmocka_run_group_tests("commitlog/threads", tests, sizeof tests / sizeof tests[0],
                                      NULL, NULL);
  return failures;
}
