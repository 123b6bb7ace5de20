/* fy_aio on both backends: data reaches the file, the callback contract
 * holds, the queue depth is honoured, faults surface, the loop closes clean. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "common/err.h"
#include "store/aio.h"
#include "testutil.h"

#define DEADLINE_MS 20000

static enum fy_aio_backend backend_uring = FY_AIO_URING;
static enum fy_aio_backend backend_threads = FY_AIO_THREADS;

struct fixture {
  uv_loop_t loop;
  fy_aio *aio;
  unsigned depth;
  char dir[512];
  char path[600];
  int fd;
};

static int setup_with_depth(void **state, unsigned depth) {
  enum fy_aio_backend backend = *(enum fy_aio_backend *)*state;
  struct fixture *f = calloc(1, sizeof *f);
  assert_non_null(f);
  assert_int_equal(uv_loop_init(&f->loop), 0);
  f->depth = depth;
  int r = fy_aio_init(&f->loop, backend, depth, &f->aio);
  if (r < 0 && backend == FY_AIO_URING)
    f->aio = NULL; /* no io_uring here: the test skips itself */
  else
    assert_int_equal(r, 0);
  if (f->aio)
    assert_int_equal(fy_aio_backend_of(f->aio), backend);
  snprintf(f->dir, sizeof f->dir, "%s", fy_test_mkdtemp("aio"));
  snprintf(f->path, sizeof f->path, "%s/file", f->dir);
  f->fd = open(f->path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  assert_true(f->fd >= 0);
  *state = f;
  return 0;
}

static int setup(void **state) { return setup_with_depth(state, 8); }
static int setup_depth4(void **state) { return setup_with_depth(state, 4); }
static int setup_depth1024(void **state) { return setup_with_depth(state, 1024); }

/* The fixture, or a skipped test when its backend cannot run here. */
static struct fixture *fixture(void **state) {
  struct fixture *f = *state;
  if (!f->aio)
    skip();
  return f;
}

/* Closes aio and checks that the loop has no handle left. */
static int teardown(void **state) {
  struct fixture *f = *state;
  if (f->aio) {
    assert_int_equal(fy_aio_pending(f->aio), 0);
    fy_aio_close(f->aio);
  }
  assert_int_equal(fy_test_loop_finish(&f->loop), 0);
  close(f->fd);
  fy_test_rmtree(f->dir);
  free(f);
  return 0;
}

/* Per-request completion record. */
struct done {
  bool called;
  int64_t res;
  fy_aio *aio;          /* if set, checked against max_inflight */
  unsigned max_inflight;
};

static void on_done(fy_aio_req *req, int64_t res) {
  struct done *d = req->data;
  assert_false(d->called); /* exactly once */
  d->called = true;
  d->res = res;
  if (d->aio)
    assert_true(fy_aio_inflight(d->aio) <= d->max_inflight);
}

static void fill(uint8_t *p, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++)
    p[i] = (uint8_t)(seed * 31 + i * 7 + 1);
}

static void test_write_read_back(void **state) {
  struct fixture *f = fixture(state);
  enum { N = 5, LEN = 3000 };
  static const uint64_t offs[N] = {0, 8192, 3000, 1 << 20, 12345};
  uint8_t bufs[N][LEN];
  fy_aio_req reqs[N];
  struct done d[N] = {0};
  for (int i = 0; i < N; i++) {
    fill(bufs[i], LEN, (unsigned)i);
    reqs[i].data = &d[i];
    assert_int_equal(fy_aio_write(f->aio, &reqs[i], f->fd, bufs[i], LEN, offs[i], on_done), 0);
    assert_false(d[i].called); /* never from inside the call */
  }
  assert_int_equal(fy_aio_pending(f->aio), N);
  for (int i = 0; i < N; i++) {
    assert_true(fy_test_run_until(&f->loop, &d[i].called, DEADLINE_MS));
    assert_int_equal(d[i].res, LEN);
  }
  assert_int_equal(fy_aio_pending(f->aio), 0);
  uint8_t got[LEN];
  for (int i = 0; i < N; i++) {
    assert_int_equal(pread(f->fd, got, LEN, (off_t)offs[i]), LEN);
    assert_memory_equal(got, bufs[i], LEN);
  }
}

static void test_fdatasync_and_fallocate(void **state) {
  struct fixture *f = fixture(state);
  fy_aio_req a, b, c;
  struct done da = {0}, db = {0}, dc = {0};
  a.data = &da;
  b.data = &db;
  c.data = &dc;
  assert_int_equal(fy_aio_fallocate(f->aio, &a, f->fd, 0, 0, 1 << 20, on_done), 0);
  assert_true(fy_test_run_until(&f->loop, &da.called, DEADLINE_MS));
  assert_int_equal(da.res, 0);
  struct stat st;
  assert_int_equal(fstat(f->fd, &st), 0);
  assert_int_equal(st.st_size, 1 << 20);
  assert_true((uint64_t)st.st_blocks * 512 >= (1u << 20)); /* blocks reserved, not sparse */

  /* KEEP_SIZE reserves beyond the end without growing the file. */
  assert_int_equal(
      fy_aio_fallocate(f->aio, &b, f->fd, FALLOC_FL_KEEP_SIZE, 1 << 20, 1 << 20, on_done), 0);
  uint8_t buf[100];
  fill(buf, sizeof buf, 9);
  assert_int_equal(fy_aio_write(f->aio, &c, f->fd, buf, sizeof buf, 500, on_done), 0);
  assert_true(fy_test_run_until(&f->loop, &db.called, DEADLINE_MS));
  assert_true(fy_test_run_until(&f->loop, &dc.called, DEADLINE_MS));
  assert_int_equal(db.res, 0);
  assert_int_equal(dc.res, sizeof buf);
  assert_int_equal(fstat(f->fd, &st), 0);
  assert_int_equal(st.st_size, 1 << 20);

  struct done ds = {0};
  a.data = &ds;
  assert_int_equal(fy_aio_fdatasync(f->aio, &a, f->fd, on_done), 0);
  assert_false(ds.called);
  assert_true(fy_test_run_until(&f->loop, &ds.called, DEADLINE_MS));
  assert_int_equal(ds.res, 0);
}

/* Pages of [off, off + len) of the mapping in the page cache. */
static size_t resident_pages(const uint8_t *map, size_t off, size_t len) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE), n = len / page, count = 0;
  unsigned char *vec = malloc(n);
  assert_non_null(vec);
  assert_int_equal(mincore((void *)(map + off), len, vec), 0);
  for (size_t i = 0; i < n; i++)
    count += vec[i] & 1;
  free(vec);
  return count;
}

/* Dropped pages leave the page cache, mapped ones included, and the data
 * reads back the same. */
static void test_drop_cache(void **state) {
  struct fixture *f = fixture(state);
  enum { LEN = 4 << 20 };
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  uint8_t *data = malloc(2 * LEN);
  assert_non_null(data);
  fill(data, 2 * LEN, 5);
  assert_int_equal(pwrite(f->fd, data, 2 * LEN, 0), 2 * LEN);
  assert_int_equal(fdatasync(f->fd), 0); /* dirty pages are never dropped */
  uint8_t *map = mmap(NULL, 2 * LEN, PROT_READ, MAP_SHARED, f->fd, 0);
  assert_true(map != MAP_FAILED);
  volatile uint8_t sum = 0;
  for (size_t i = 0; i < LEN; i += page)
    sum ^= map[i]; /* the first half is mapped into this process */
  (void)sum;
  struct statfs sf;
  assert_int_equal(fstatfs(f->fd, &sf), 0);
  bool cache_droppable = sf.f_type != 0x01021994; /* TMPFS_MAGIC: memory is the file */
  if (cache_droppable) {
    assert_int_equal(resident_pages(map, 0, LEN), LEN / page);
    assert_int_equal(resident_pages(map, LEN, LEN), LEN / page);
  }

  fy_aio_req a, b;
  struct done da = {0}, db = {0};
  a.data = &da;
  b.data = &db;
  /* The mapped half with its address; the other half was only written. */
  assert_int_equal(fy_aio_drop_cache(f->aio, &a, f->fd, map, 0, LEN, on_done), 0);
  assert_int_equal(fy_aio_drop_cache(f->aio, &b, f->fd, NULL, LEN, LEN, on_done), 0);
  assert_false(da.called);
  assert_true(fy_test_run_until(&f->loop, &da.called, DEADLINE_MS));
  assert_true(fy_test_run_until(&f->loop, &db.called, DEADLINE_MS));
  assert_int_equal(da.res, 0);
  assert_int_equal(db.res, 0);
  if (cache_droppable) {
    assert_int_equal(resident_pages(map, 0, LEN), 0);
    assert_int_equal(resident_pages(map, LEN, LEN), 0);
  }
  assert_memory_equal(map, data, 2 * LEN); /* faulted back in from the disk */
  uint8_t *got = malloc(LEN);
  assert_non_null(got);
  assert_int_equal(pread(f->fd, got, LEN, LEN), LEN);
  assert_memory_equal(got, data + LEN, LEN);

  assert_int_equal(fy_aio_drop_cache(f->aio, &a, f->fd, map, 0, 0, on_done), -EINVAL);
  assert_int_equal(fy_aio_drop_cache(f->aio, &a, f->fd, NULL, 0, FY_AIO_DROP_MAX + 1, on_done),
                   -EINVAL);
  free(got);
  munmap(map, 2 * LEN);
  free(data);
}

static void on_never(fy_aio_req *req, int64_t res) {
  (void)req;
  (void)res;
  fail_msg("callback of a rejected request ran");
}

/* Writeback of dirty pages completes without an fdatasync; bad arguments are
 * refused up front, and the kernel's own errors come through the callback. */
static void test_writeback(void **state) {
  struct fixture *f = fixture(state);
  enum { LEN = 1 << 20 };
  uint8_t *data = malloc(LEN);
  assert_non_null(data);
  fill(data, LEN, 3);
  assert_int_equal(pwrite(f->fd, data, LEN, 0), LEN);
  fy_aio_req a, b;
  struct done da = {0}, db = {0};
  a.data = &da;
  b.data = &db;
  assert_int_equal(fy_aio_writeback(f->aio, &a, f->fd, 0, LEN / 2, on_done), 0);
  assert_int_equal(fy_aio_writeback(f->aio, &b, f->fd, LEN / 2, LEN / 2, on_done), 0);
  assert_false(da.called);
  assert_true(fy_test_run_until(&f->loop, &da.called, DEADLINE_MS));
  assert_true(fy_test_run_until(&f->loop, &db.called, DEADLINE_MS));
  assert_int_equal(da.res, 0);
  assert_int_equal(db.res, 0);
  uint8_t *got = malloc(LEN);
  assert_non_null(got);
  assert_int_equal(pread(f->fd, got, LEN, 0), LEN);
  assert_memory_equal(got, data, LEN);

  assert_int_equal(fy_aio_writeback(f->aio, &a, f->fd, 0, 0, on_never), -EINVAL);
  assert_int_equal(fy_aio_writeback(f->aio, &a, f->fd, 0, (uint64_t)UINT32_MAX + 1, on_never),
                   -EINVAL);
  assert_int_equal(fy_aio_writeback(f->aio, &a, -1, 0, 4096, on_never), -EBADF);
  int p[2];
  assert_int_equal(pipe(p), 0);
  struct done dp = {0};
  a.data = &dp;
  assert_int_equal(fy_aio_writeback(f->aio, &a, p[0], 0, 4096, on_done), 0);
  assert_true(fy_test_run_until(&f->loop, &dp.called, DEADLINE_MS));
  assert_int_equal(dp.res, -ESPIPE);
  close(p[0]);
  close(p[1]);
  free(got);
  free(data);
}

/* More requests than queue_depth: the rest wait and all complete, in a
 * bounded number of loop iterations, with the right data. */
static void test_many_requests(void **state) {
  struct fixture *f = fixture(state);
  enum { N = 700, LEN = 512 };
  uint8_t *data = malloc((size_t)N * LEN);
  fy_aio_req *reqs = calloc(N, sizeof *reqs);
  struct done *d = calloc(N, sizeof *d);
  for (int i = 0; i < N; i++) {
    fill(data + (size_t)i * LEN, LEN, (unsigned)i);
    d[i].aio = f->aio;
    reqs[i].data = &d[i];
    int r = i % 7 == 3 ? fy_aio_fdatasync(f->aio, &reqs[i], f->fd, on_done)
                       : fy_aio_write(f->aio, &reqs[i], f->fd, data + (size_t)i * LEN, LEN,
                                      (uint64_t)i * LEN, on_done);
    assert_int_equal(r, 0);
  }
  assert_int_equal(fy_aio_pending(f->aio), N);
  /* The rest wait in the FIFO, and fdatasyncs past the background limit in
   * theirs: in flight are the first depth of the others, in order. */
  unsigned admitted = 0, syncs = 0;
  for (int i = 0; i < N; i++)
    if (i % 7 != 3 || syncs++ < FY_AIO_BACKGROUND_MAX)
      admitted++;
  assert_int_equal(fy_aio_inflight(f->aio), f->depth < admitted ? f->depth : admitted);
  for (int i = 0; i < N; i++)
    d[i].max_inflight = f->depth;
  for (int i = 0; i < N; i++)
    assert_true(fy_test_run_until(&f->loop, &d[i].called, DEADLINE_MS));
  assert_int_equal(fy_aio_inflight(f->aio), 0);
  assert_int_equal(fy_aio_pending(f->aio), 0);
  uint8_t got[LEN];
  for (int i = 0; i < N; i++) {
    if (i % 7 == 3) {
      assert_int_equal(d[i].res, 0);
      continue;
    }
    assert_int_equal(d[i].res, LEN);
    assert_int_equal(pread(f->fd, got, LEN, (off_t)i * LEN), LEN);
    assert_memory_equal(got, data + (size_t)i * LEN, LEN);
  }
  free(data);
  free(reqs);
  free(d);
}

static void test_fault_injection(void **state) {
  struct fixture *f = fixture(state);
  enum { N = 5, LEN = 256 };
  uint8_t buf[N][LEN];
  fy_aio_req reqs[N];
  struct done d[N] = {0};
  fy_aio_inject_fault(f->aio, FY_AIO_WRITE, 1, 2, -EIO);
  for (int i = 0; i < N; i++) {
    fill(buf[i], LEN, (unsigned)i + 1);
    reqs[i].data = &d[i];
    assert_int_equal(fy_aio_write(f->aio, &reqs[i], f->fd, buf[i], LEN, (uint64_t)i * LEN, on_done),
                     0);
    assert_false(d[i].called); /* a failing request too completes asynchronously */
  }
  for (int i = 0; i < N; i++)
    assert_true(fy_test_run_until(&f->loop, &d[i].called, DEADLINE_MS));
  const int64_t want[N] = {LEN, -EIO, -EIO, LEN, LEN};
  uint8_t got[LEN], zero[LEN] = {0};
  for (int i = 0; i < N; i++) {
    assert_int_equal(d[i].res, want[i]);
    assert_int_equal(pread(f->fd, got, LEN, (off_t)i * LEN), LEN);
    assert_memory_equal(got, want[i] > 0 ? buf[i] : zero, LEN); /* failed ones never reached disk */
  }

  /* Per op: a sync fault does not touch writes or fallocates. */
  fy_aio_inject_fault(f->aio, FY_AIO_FDATASYNC, 0, 1, -EIO);
  fy_aio_inject_fault(f->aio, FY_AIO_FALLOCATE, 0, 1, -ENOSPC);
  struct done s1 = {0}, s2 = {0}, a1 = {0}, a2 = {0};
  fy_aio_req r1 = {.data = &s1}, r2 = {.data = &s2}, r3 = {.data = &a1}, r4 = {.data = &a2};
  assert_int_equal(fy_aio_fdatasync(f->aio, &r1, f->fd, on_done), 0);
  assert_int_equal(fy_aio_fdatasync(f->aio, &r2, f->fd, on_done), 0);
  assert_int_equal(fy_aio_fallocate(f->aio, &r3, f->fd, 0, 0, 65536, on_done), 0);
  assert_int_equal(fy_aio_fallocate(f->aio, &r4, f->fd, 0, 0, 65536, on_done), 0);
  assert_true(fy_test_run_until(&f->loop, &s2.called, DEADLINE_MS));
  assert_true(fy_test_run_until(&f->loop, &a2.called, DEADLINE_MS));
  assert_true(fy_test_run_until(&f->loop, &s1.called, DEADLINE_MS));
  assert_true(fy_test_run_until(&f->loop, &a1.called, DEADLINE_MS));
  assert_int_equal(s1.res, -EIO);
  assert_int_equal(s2.res, 0);
  assert_int_equal(a1.res, -ENOSPC);
  assert_int_equal(a2.res, 0);
}

/* A callback that queues the next request: the new callback never runs
 * inside the one that queued it, so the stack stays flat over a long chain. */
struct chain {
  fy_aio *aio;
  int fd;
  fy_aio_req req;
  uint8_t buf[64];
  unsigned left;
  unsigned depth;
  unsigned max_depth;
  bool done;
};

static void on_chain(fy_aio_req *req, int64_t res) {
  struct chain *c = req->data;
  assert_int_equal(res, sizeof c->buf);
  c->depth++;
  if (c->depth > c->max_depth)
    c->max_depth = c->depth;
  if (--c->left == 0) {
    c->done = true;
  } else {
    assert_int_equal(fy_aio_write(c->aio, &c->req, c->fd, c->buf, sizeof c->buf,
                                  (uint64_t)c->left * sizeof c->buf, on_chain),
                     0);
  }
  c->depth--;
}

static void test_callbacks_not_reentrant(void **state) {
  struct fixture *f = fixture(state);
  struct chain c = {.aio = f->aio, .fd = f->fd, .left = 200};
  c.req.data = &c;
  fill(c.buf, sizeof c.buf, 3);
  assert_int_equal(fy_aio_write(f->aio, &c.req, f->fd, c.buf, sizeof c.buf, 0, on_chain), 0);
  assert_int_equal(c.max_depth, 0);
  assert_true(fy_test_run_until(&f->loop, &c.done, DEADLINE_MS));
  assert_int_equal(c.max_depth, 1);
}


/* A request that is refused returns an error and never calls back. */
static void test_rejected_requests(void **state) {
  struct fixture *f = fixture(state);
  uint8_t b[8] = {0};
  fy_aio_req req;
  assert_int_equal(fy_aio_write(f->aio, &req, f->fd, b, 0, 0, on_never), -EINVAL);
  assert_int_equal(fy_aio_write(f->aio, &req, -1, b, sizeof b, 0, on_never), -EBADF);
  assert_int_equal(fy_aio_write(f->aio, &req, f->fd, b, sizeof b, 0, NULL), -EINVAL);
  assert_int_equal(fy_aio_fdatasync(f->aio, &req, -1, on_never), -EBADF);
  assert_int_equal(fy_aio_fallocate(f->aio, &req, f->fd, 0, 0, 0, on_never), -EINVAL);
  assert_int_equal(fy_aio_pending(f->aio), 0);
  /* A real error from the kernel arrives through the callback instead. */
  int rdonly = open(f->path, O_RDONLY | O_CLOEXEC);
  assert_true(rdonly >= 0);
  struct done d = {0};
  req.data = &d;
  assert_int_equal(fy_aio_write(f->aio, &req, rdonly, b, sizeof b, 0, on_done), 0);
  assert_true(fy_test_run_until(&f->loop, &d.called, DEADLINE_MS));
  assert_int_equal(d.res, -EBADF);
  close(rdonly);
}

/* A write cut short (here by RLIMIT_FSIZE) is resumed for the rest: the
 * resumed part then fails, and the callback gets that error, not a count. */
static void test_short_write_resumed(void **state) {
  struct fixture *f = fixture(state);
  struct rlimit old, lim;
  assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
  void (*old_sig)(int) = signal(SIGXFSZ, SIG_IGN);
  lim = old;
  lim.rlim_cur = 4096;
  assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
  uint8_t buf[8192];
  fill(buf, sizeof buf, 5);
  struct done d = {0};
  fy_aio_req req = {.data = &d};
  assert_int_equal(fy_aio_write(f->aio, &req, f->fd, buf, sizeof buf, 0, on_done), 0);
  bool ok = fy_test_run_until(&f->loop, &d.called, DEADLINE_MS);
  assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
  signal(SIGXFSZ, old_sig);
  assert_true(ok);
  assert_int_equal(d.res, -EFBIG);
  uint8_t got[4096];
  assert_int_equal(pread(f->fd, got, sizeof got, 0), 4096);
  assert_memory_equal(got, buf, 4096);
}

struct closer {
  fy_aio **aio;
  bool done;
};

static void on_close_in_cb(fy_aio_req *req, int64_t res) {
  struct closer *c = req->data;
  assert_int_equal(res, 0);
  assert_int_equal(fy_aio_pending(*c->aio), 0);
  fy_aio_close(*c->aio);
  *c->aio = NULL;
  c->done = true;
}

static void test_close_from_callback(void **state) {
  struct fixture *f = fixture(state);
  struct closer c = {.aio = &f->aio};
  fy_aio_req req = {.data = &c};
  assert_int_equal(fy_aio_fdatasync(f->aio, &req, f->fd, on_close_in_cb), 0);
  assert_true(fy_test_run_until(&f->loop, &c.done, DEADLINE_MS));
  /* teardown checks the loop closes with no handle left */
}

static bool one_held(void *aio) { return fy_aio_held(aio) == 1; }

/* A slow device for tests: held fdatasync completions keep their slot and
 * stay pending until released (never from inside the release call) or
 * until their hold time has passed; other kinds are not held. */
static void test_delay_injection(void **state) {
  struct fixture *f = fixture(state);
  fy_aio_inject_delay(f->aio, FY_AIO_FDATASYNC, FY_AIO_HOLD_UNTIL_RELEASED);
  struct done ds = {0}, dw = {0};
  fy_aio_req sreq = {.data = &ds}, wreq = {.data = &dw};
  uint8_t b[64];
  fill(b, sizeof b, 3);
  assert_int_equal(fy_aio_fdatasync(f->aio, &sreq, f->fd, on_done), 0);
  assert_int_equal(fy_aio_write(f->aio, &wreq, f->fd, b, sizeof b, 0, on_done), 0);
  assert_true(fy_test_run_until(&f->loop, &dw.called, DEADLINE_MS)); /* writes not held */
  assert_int_equal(dw.res, sizeof b);
  assert_true(fy_test_run_until_pred(&f->loop, one_held, f->aio, DEADLINE_MS));
  assert_false(ds.called);
  assert_int_equal(fy_aio_pending(f->aio), 1);
  assert_int_equal(fy_aio_inflight(f->aio), 1);
  bool never = false;
  fy_test_run_until(&f->loop, &never, 50);
  assert_false(ds.called); /* held however long the loop runs */
  fy_aio_inject_delay(f->aio, FY_AIO_FDATASYNC, 0);
  assert_false(ds.called);
  assert_true(fy_test_run_until(&f->loop, &ds.called, DEADLINE_MS));
  assert_int_equal(ds.res, 0);
  assert_int_equal(fy_aio_held(f->aio), 0);
  assert_int_equal(fy_aio_pending(f->aio), 0);

  /* A timed hold: the callback comes no earlier than hold_ms after the
   * request, with the real result (here an injected fault's). */
  fy_aio_inject_delay(f->aio, FY_AIO_FDATASYNC, 150);
  fy_aio_inject_fault(f->aio, FY_AIO_FDATASYNC, 0, 1, -EIO);
  struct done dt = {0};
  sreq.data = &dt;
  uv_update_time(&f->loop);
  uint64_t t0 = uv_now(&f->loop);
  assert_int_equal(fy_aio_fdatasync(f->aio, &sreq, f->fd, on_done), 0);
  assert_true(fy_test_run_until(&f->loop, &dt.called, DEADLINE_MS));
  assert_true(uv_now(&f->loop) - t0 >= 150);
  assert_int_equal(dt.res, -EIO);
  fy_aio_inject_delay(f->aio, FY_AIO_FDATASYNC, 0);
  assert_int_equal(fy_aio_pending(f->aio), 0);
}

static bool limit_held(void *aio) { return fy_aio_held(aio) == FY_AIO_BACKGROUND_MAX; }
static bool limit_and_urgent_held(void *aio) {
  return fy_aio_held(aio) == FY_AIO_BACKGROUND_MAX + 1;
}

/* Background requests (fdatasync, fallocate, drop cache) take at most two
 * I/O workers at a time, so that however many files a flush syncs, writes
 * and the urgent sync never wait behind device flushes. Held fdatasyncs
 * stand for a device that takes long to flush. */
static void test_background_limit(void **state) {
  struct fixture *f = fixture(state);
  enum { N = 5 };
  fy_aio_inject_delay(f->aio, FY_AIO_FDATASYNC, FY_AIO_HOLD_UNTIL_RELEASED);
  struct done ds[N] = {0}, dw = {0}, da = {0}, du = {0};
  fy_aio_req sreq[N], wreq = {.data = &dw}, areq = {.data = &da}, ureq = {.data = &du};
  for (int i = 0; i < N; i++) {
    sreq[i].data = &ds[i];
    assert_int_equal(fy_aio_fdatasync(f->aio, &sreq[i], f->fd, on_done), 0);
  }
  assert_int_equal(fy_aio_fallocate(f->aio, &areq, f->fd, 0, 0, 4096, on_done), 0);
  assert_true(fy_test_run_until_pred(&f->loop, limit_held, f->aio, DEADLINE_MS));
  uint8_t b[64];
  fill(b, sizeof b, 5);
  assert_int_equal(fy_aio_write(f->aio, &wreq, f->fd, b, sizeof b, 0, on_done), 0);
  assert_true(fy_test_run_until(&f->loop, &dw.called, DEADLINE_MS));
  assert_int_equal(dw.res, sizeof b);
  /* Nor is writeback ahead: it is short, and only helps if it runs promptly. */
  struct done dk = {0};
  fy_aio_req kreq = {.data = &dk};
  assert_int_equal(fy_aio_writeback(f->aio, &kreq, f->fd, 0, sizeof b, on_done), 0);
  assert_true(fy_test_run_until(&f->loop, &dk.called, DEADLINE_MS));
  assert_int_equal(dk.res, 0);
  /* The urgent sync is not limited: it reaches the (held) device at once. */
  assert_int_equal(fy_aio_fdatasync_urgent(f->aio, &ureq, f->fd, on_done), 0);
  assert_true(fy_test_run_until_pred(&f->loop, limit_and_urgent_held, f->aio, DEADLINE_MS));
  assert_int_equal(fy_aio_inflight(f->aio), FY_AIO_BACKGROUND_MAX + 1); /* the rest wait */
  assert_int_equal(fy_aio_pending(f->aio), N + 2);
  for (int i = 0; i < N; i++)
    assert_false(ds[i].called);
  assert_false(da.called);

  fy_aio_inject_delay(f->aio, FY_AIO_FDATASYNC, 0);
  /* The thread pool may finish them in any order: wait for each. */
  for (int i = 0; i < N; i++) {
    assert_true(fy_test_run_until(&f->loop, &ds[i].called, DEADLINE_MS));
    assert_int_equal(ds[i].res, 0);
  }
  assert_true(fy_test_run_until(&f->loop, &da.called, DEADLINE_MS));
  assert_int_equal(da.res, 0);
  assert_true(fy_test_run_until(&f->loop, &du.called, DEADLINE_MS));
  assert_int_equal(fy_aio_pending(f->aio), 0);
}

/* An idle context does not keep the loop alive; a pending request does. */
static void test_loop_liveness(void **state) {
  struct fixture *f = fixture(state);
  assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0); /* returns at once */
  uint8_t b[16] = {1};
  struct done d = {0};
  fy_aio_req req = {.data = &d};
  assert_int_equal(fy_aio_write(f->aio, &req, f->fd, b, sizeof b, 0, on_done), 0);
  uv_run(&f->loop, UV_RUN_DEFAULT); /* runs until the write is done */
  assert_true(d.called);
  assert_int_equal(d.res, sizeof b);
}

static void test_backend_env(void **state) {
  (void)state;
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  fy_aio *aio;
  setenv("FERRY_AIO_BACKEND", "threads", 1);
  assert_int_equal(fy_aio_init(&loop, FY_AIO_AUTO, 4, &aio), 0);
  assert_int_equal(fy_aio_backend_of(aio), FY_AIO_THREADS);
  fy_aio_close(aio);
  /* An explicit backend is not overridden. */
  fy_aio *aio2;
  int r = fy_aio_init(&loop, FY_AIO_URING, 4, &aio2);
  if (r == 0) {
    assert_int_equal(fy_aio_backend_of(aio2), FY_AIO_URING);
    fy_aio_close(aio2);
    setenv("FERRY_AIO_BACKEND", "uring", 1);
    assert_int_equal(fy_aio_init(&loop, FY_AIO_AUTO, 4, &aio2), 0);
    assert_int_equal(fy_aio_backend_of(aio2), FY_AIO_URING);
    fy_aio_close(aio2);
  }
  unsetenv("FERRY_AIO_BACKEND");
  assert_int_equal(fy_aio_init(&loop, FY_AIO_AUTO, 4, &aio2), 0);
  assert_int_not_equal(fy_aio_backend_of(aio2), FY_AIO_AUTO);
  fy_aio_close(aio2);
  assert_int_equal(fy_aio_init(&loop, FY_AIO_AUTO, 0, &aio2), -EINVAL);
  assert_int_equal(fy_test_loop_finish(&loop), 0);
  assert_string_equal(fy_aio_backend_name(FY_AIO_URING), "io_uring");
  assert_string_equal(fy_aio_backend_name(FY_AIO_THREADS), "threads");
}

#define BOTH(fn, su)                                                                  \
  {#fn "/" #su "/uring", fn, su, teardown, &backend_uring},                           \
      {#fn "/" #su "/threads", fn, su, teardown, &backend_threads}

/* Milliseconds a write of one byte to fd takes with FERRY_TEST_WRITE_DELAY_MS
 * set to value, or -1 if it has not completed within 2 s. */
static int64_t write_ms_with_delay(const char *value, int fd) {
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  setenv("FERRY_TEST_WRITE_DELAY_MS", value, 1);
  fy_aio *aio;
  assert_int_equal(fy_aio_init(&loop, FY_AIO_AUTO, 4, &aio), 0);
  unsetenv("FERRY_TEST_WRITE_DELAY_MS");
  struct done d = {0};
  fy_aio_req req = {.data = &d};
  uv_update_time(&loop);
  uint64_t t0 = uv_now(&loop);
  assert_int_equal(fy_aio_write(aio, &req, fd, "x", 1, 0, on_done), 0);
  int64_t ms = fy_test_run_until(&loop, &d.called, 2000) ? (int64_t)(uv_now(&loop) - t0) : -1;
  if (ms < 0) { /* release it so the context can close */
    fy_aio_inject_delay(aio, FY_AIO_WRITE, 0);
    assert_true(fy_test_run_until(&loop, &d.called, 2000));
  }
  fy_aio_close(aio);
  assert_int_equal(fy_test_loop_finish(&loop), 0);
  return ms;
}

/* The test-only write delay applies a value in 1..600000 ms and ignores
 * anything else (with a warning) rather than delaying by a misread number. */
static void test_write_delay_env(void **state) {
  (void)state;
  char dir[512], path[600];
  snprintf(dir, sizeof dir, "%s", fy_test_mkdtemp("aio-env"));
  snprintf(path, sizeof path, "%s/f", dir);
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
  assert_true(fd >= 0);
  assert_true(write_ms_with_delay("300", fd) >= 300);
  const char *bad[] = {"600001", "5000x", "-3000", "0", "", "99999999999999999999"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int64_t ms = write_ms_with_delay(bad[i], fd);
    if (ms < 0 || ms >= 300)
      fail_msg("FERRY_TEST_WRITE_DELAY_MS=%s delayed a write (%" PRId64 " ms)", bad[i], ms);
  }
  close(fd);
  fy_test_rmtree(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      BOTH(test_write_read_back, setup),
      BOTH(test_fdatasync_and_fallocate, setup),
      BOTH(test_drop_cache, setup),
      BOTH(test_writeback, setup),
      BOTH(test_many_requests, setup_depth4),
      BOTH(test_many_requests, setup_depth1024),
      BOTH(test_fault_injection, setup),
      BOTH(test_delay_injection, setup),
      BOTH(test_background_limit, setup),
      BOTH(test_callbacks_not_reentrant, setup),
      BOTH(test_rejected_requests, setup),
      BOTH(test_short_write_resumed, setup),
      BOTH(test_close_from_callback, setup),
      BOTH(test_loop_liveness, setup),
      cmocka_unit_test(test_backend_env),
      cmocka_unit_test(test_write_delay_env),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
