/* Metafile: atomic save and load, a stale .tmp ignored, coalescing of save
 * bursts, injected write/sync faults reported with the old content intact,
 * close with a save in flight, the owner hook — on both aio backends. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"
#include "store/aio.h"
#include "store/metafile.h"
#include "testutil.h"

#define DEADLINE_MS 20000

static enum fy_aio_backend backend_uring = FY_AIO_URING;
static enum fy_aio_backend backend_threads = FY_AIO_THREADS;

struct fixture {
  uv_loop_t loop;
  fy_aio *aio;
  char dir[512];
  char path[600];
  char tmp[610];
};

static int setup(void **state) {
  enum fy_aio_backend backend = *(enum fy_aio_backend *)*state;
  struct fixture *f = calloc(1, sizeof *f);
  assert_non_null(f);
  assert_int_equal(uv_loop_init(&f->loop), 0);
  int r = fy_aio_init(&f->loop, backend, 64, &f->aio);
  if (r < 0 && backend == FY_AIO_URING)
    f->aio = NULL; /* no io_uring here: the test skips itself */
  else
    assert_int_equal(r, 0);
  snprintf(f->dir, sizeof f->dir, "%s", fy_test_mkdtemp("metafile"));
  snprintf(f->path, sizeof f->path, "%s/meta.json", f->dir);
  snprintf(f->tmp, sizeof f->tmp, "%s.tmp", f->path);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  struct fixture *f = *state;
  if (f->aio) {
    uv_run(&f->loop, UV_RUN_DEFAULT); /* a closed metafile's save ends before aio (metafile.h) */
    assert_int_equal(fy_aio_pending(f->aio), 0);
    fy_aio_close(f->aio);
  }
  assert_int_equal(fy_test_loop_finish(&f->loop), 0); /* no leaked handle */
  fy_test_rmtree(f->dir);
  free(f);
  return 0;
}

static struct fixture *fixture(void **state) {
  struct fixture *f = *state;
  if (!f->aio)
    skip();
  return f;
}

struct done {
  bool done;
  int status;
  int calls;
  int order; /* sequence number of this callback among all callbacks */
};

static int callback_seq;

static void on_done(void *arg, int status) {
  struct done *d = arg;
  d->done = true;
  d->status = status;
  d->calls++;
  d->order = ++callback_seq;
}

static char *dup_str(const char *s) {
  char *p = strdup(s);
  assert_non_null(p);
  return p;
}

static void write_file(const char *path, const char *content) {
  FILE *fp = fopen(path, "w");
  assert_non_null(fp);
  fputs(content, fp);
  fclose(fp);
}

static void assert_content(const char *path, const char *want) {
  char *buf = NULL;
  size_t len = 0;
  assert_int_equal(fy_metafile_load(path, &buf, &len), 0);
  assert_int_equal(len, strlen(want));
  assert_string_equal(buf, want); /* NUL-terminated */
  free(buf);
}

/* Saves s and waits for its callback; returns the status. */
static int save_wait(struct fixture *f, fy_metafile *mf, const char *s) {
  struct done d = {0};
  assert_int_equal(fy_metafile_save(mf, dup_str(s), strlen(s), on_done, &d), 0);
  assert_false(d.done); /* never from inside the call */
  assert_true(fy_test_run_until(&f->loop, &d.done, DEADLINE_MS));
  assert_int_equal(d.calls, 1);
  return d.status;
}

static void test_save_and_load(void **state) {
  struct fixture *f = fixture(state);
  char *buf;
  size_t len;
  assert_int_equal(fy_metafile_load(f->path, &buf, &len), -ENOENT);

  fy_metafile *mf;
  assert_int_equal(fy_metafile_new(&f->loop, f->aio, f->path, NULL, NULL, &mf), 0);
  assert_string_equal(fy_metafile_path(mf), f->path);
  assert_false(fy_metafile_busy(mf));
  struct stat st;
  assert_int_equal(stat(f->path, &st), -1); /* nothing written before the first save */

  assert_int_equal(save_wait(f, mf, "{\"v\":1}"), 0);
  assert_content(f->path, "{\"v\":1}");
  assert_int_equal(stat(f->tmp, &st), -1); /* renamed away */
  assert_int_equal(fy_metafile_writes(mf), 1);
  assert_false(fy_metafile_busy(mf));

  /* replaced, not appended: a shorter second save leaves no tail */
  assert_int_equal(save_wait(f, mf, "{}"), 0);
  assert_content(f->path, "{}");

  /* empty content is allowed */
  assert_int_equal(save_wait(f, mf, ""), 0);
  assert_content(f->path, "");
  assert_int_equal(fy_metafile_writes(mf), 3);

  /* without a callback the save still happens */
  assert_int_equal(fy_metafile_save(mf, dup_str("quiet"), 5, NULL, NULL), 0);
  assert_true(fy_metafile_busy(mf));
  for (int i = 0; i < 2000 && fy_metafile_busy(mf); i++)
    uv_run(&f->loop, UV_RUN_ONCE);
  assert_false(fy_metafile_busy(mf));
  assert_content(f->path, "quiet");
  fy_metafile_close(mf);
}

static void test_stale_tmp_ignored(void **state) {
  struct fixture *f = fixture(state);
  char *buf;
  size_t len;
  /* only a leftover .tmp (crash before the first rename): no file */
  write_file(f->tmp, "{\"half\":");
  assert_int_equal(fy_metafile_load(f->path, &buf, &len), -ENOENT);
  /* a complete file plus a stale, longer .tmp: the file wins */
  write_file(f->path, "{\"old\":1}");
  write_file(f->tmp, "{\"newer-but-never-renamed\":1234567890}");
  assert_content(f->path, "{\"old\":1}");

  /* the next save overwrites the stale .tmp from scratch (no leftover tail) */
  fy_metafile *mf;
  assert_int_equal(fy_metafile_new(&f->loop, f->aio, f->path, NULL, NULL, &mf), 0);
  assert_int_equal(save_wait(f, mf, "{\"new\":2}"), 0);
  assert_content(f->path, "{\"new\":2}");
  struct stat st;
  assert_int_equal(stat(f->tmp, &st), -1);
  fy_metafile_close(mf);
}

static void test_load_errors(void **state) {
  struct fixture *f = fixture(state);
  char *buf;
  size_t len;
  assert_int_equal(fy_metafile_load(f->dir, &buf, &len), -EINVAL); /* not a regular file */
  char missing[700];
  snprintf(missing, sizeof missing, "%s/no/such/file", f->dir);
  assert_int_equal(fy_metafile_load(missing, &buf, &len), -ENOENT);
}

static void test_coalescing(void **state) {
  struct fixture *f = fixture(state);
  fy_metafile *mf;
  assert_int_equal(fy_metafile_new(&f->loop, f->aio, f->path, NULL, NULL, &mf), 0);
  enum { N = 100 };
  static struct done d[N];
  memset(d, 0, sizeof d);
  callback_seq = 0;
  char last[32] = "";
  for (int i = 0; i < N; i++) {
    snprintf(last, sizeof last, "{\"seq\":%d}", i);
    assert_int_equal(fy_metafile_save(mf, dup_str(last), strlen(last), on_done, &d[i]), 0);
  }
  assert_true(fy_test_run_until(&f->loop, &d[N - 1].done, DEADLINE_MS));
  for (int i = 0; i < N; i++) {
    assert_true(d[i].done);
    assert_int_equal(d[i].calls, 1);
    assert_int_equal(d[i].status, 0);
    if (i > 0)
      assert_true(d[i].order > d[i - 1].order); /* callbacks in request order */
  }
  assert_true(fy_metafile_writes(mf) <= 2); /* the burst cost at most two writes */
  assert_true(fy_metafile_writes(mf) >= 1);
  assert_content(f->path, last);             /* and the newest data won */
  assert_false(fy_metafile_busy(mf));

  /* a second burst while idle: again at most two more writes */
  uint64_t before = fy_metafile_writes(mf);
  struct done tail = {0};
  for (int i = 0; i < N; i++) {
    snprintf(last, sizeof last, "{\"round2\":%d}", i);
    assert_int_equal(fy_metafile_save(mf, dup_str(last), strlen(last),
                                      i == N - 1 ? on_done : NULL, &tail),
                     0);
  }
  assert_true(fy_test_run_until(&f->loop, &tail.done, DEADLINE_MS));
  assert_int_equal(tail.status, 0);
  assert_true(fy_metafile_writes(mf) - before <= 2);
  assert_content(f->path, last);
  fy_metafile_close(mf);
}

static void test_waiter_bound(void **state) {
  struct fixture *f = fixture(state);
  fy_metafile *mf;
  assert_int_equal(fy_metafile_new(&f->loop, f->aio, f->path, NULL, NULL, &mf), 0);
  static struct done d[FY_METAFILE_WAITERS_MAX];
  memset(d, 0, sizeof d);
  for (unsigned i = 0; i < FY_METAFILE_WAITERS_MAX; i++)
    assert_int_equal(fy_metafile_save(mf, dup_str("x"), 1, on_done, &d[i]), 0);
  struct done over = {0};
  assert_int_equal(fy_metafile_save(mf, dup_str("y"), 1, on_done, &over), -FY_EBUSY);
  /* without a callback the save is still accepted, and its data wins */
  assert_int_equal(fy_metafile_save(mf, dup_str("z"), 1, NULL, NULL), 0);
  assert_true(fy_test_run_until(&f->loop, &d[FY_METAFILE_WAITERS_MAX - 1].done, DEADLINE_MS));
  for (unsigned i = 0; i < FY_METAFILE_WAITERS_MAX; i++)
    assert_int_equal(d[i].status, 0);
  assert_false(over.done);
  assert_content(f->path, "z");
  fy_metafile_close(mf);
}

static void test_write_fault_keeps_old_content(void **state) {
  struct fixture *f = fixture(state);
  fy_metafile *mf;
  assert_int_equal(fy_metafile_new(&f->loop, f->aio, f->path, NULL, NULL, &mf), 0);
  assert_int_equal(save_wait(f, mf, "{\"good\":1}"), 0);

  fy_aio_inject_fault(f->aio, FY_AIO_WRITE, 0, 1, -EIO);
  assert_int_equal(save_wait(f, mf, "{\"lost\":2}"), -EIO);
  assert_content(f->path, "{\"good\":1}");
  assert_false(fy_metafile_busy(mf));

  /* a later save is a complete, independent write */
  assert_int_equal(save_wait(f, mf, "{\"again\":3}"), 0);
  assert_content(f->path, "{\"again\":3}");
  fy_metafile_close(mf);
}

static void test_sync_fault_keeps_old_content(void **state) {
  struct fixture *f = fixture(state);
  fy_metafile *mf;
  assert_int_equal(fy_metafile_new(&f->loop, f->aio, f->path, NULL, NULL, &mf), 0);
  assert_int_equal(save_wait(f, mf, "{\"good\":1}"), 0);

  fy_aio_inject_fault(f->aio, FY_AIO_FDATASYNC, 0, 1, -EIO);
  assert_int_equal(save_wait(f, mf, "{\"not-durable\":2}"), -EIO);
  assert_content(f->path, "{\"good\":1}"); /* never renamed over the good file */
  assert_int_equal(save_wait(f, mf, "{\"ok\":3}"), 0);
  assert_content(f->path, "{\"ok\":3}");
  fy_metafile_close(mf);
}

/* The directory sync goes through fy_aio too (the second fdatasync of a
 * cycle): its failure is reported; the file has been renamed, so it holds
 * the new content, not known to be durable. */
static void test_dir_sync_fault_reported(void **state) {
  struct fixture *f = fixture(state);
  fy_metafile *mf;
  assert_int_equal(fy_metafile_new(&f->loop, f->aio, f->path, NULL, NULL, &mf), 0);
  assert_int_equal(save_wait(f, mf, "{\"good\":1}"), 0);
  fy_aio_inject_fault(f->aio, FY_AIO_FDATASYNC, 1, 1, -EIO);
  assert_int_equal(save_wait(f, mf, "{\"renamed\":2}"), -EIO);
  assert_content(f->path, "{\"renamed\":2}");
  assert_int_equal(save_wait(f, mf, "{\"ok\":3}"), 0);
  assert_content(f->path, "{\"ok\":3}");
  fy_metafile_close(mf);
}

static void test_fault_with_coalesced_saves(void **state) {
  struct fixture *f = fixture(state);
  fy_metafile *mf;
  assert_int_equal(fy_metafile_new(&f->loop, f->aio, f->path, NULL, NULL, &mf), 0);
  assert_int_equal(save_wait(f, mf, "{\"good\":1}"), 0);
  /* the first (in-flight) write fails; the coalesced one behind it succeeds */
  fy_aio_inject_fault(f->aio, FY_AIO_WRITE, 0, 1, -ENOSPC);
  struct done a = {0}, b = {0}, c = {0};
  assert_int_equal(fy_metafile_save(mf, dup_str("A"), 1, on_done, &a), 0);
  assert_int_equal(fy_metafile_save(mf, dup_str("B"), 1, on_done, &b), 0);
  assert_int_equal(fy_metafile_save(mf, dup_str("C"), 1, on_done, &c), 0);
  assert_true(fy_test_run_until(&f->loop, &c.done, DEADLINE_MS));
  assert_int_equal(a.status, -ENOSPC);
  assert_int_equal(b.status, 0); /* B's data was superseded by C, which is durable */
  assert_int_equal(c.status, 0);
  assert_content(f->path, "C");
  fy_metafile_close(mf);
}

static void test_missing_directory_reported(void **state) {
  struct fixture *f = fixture(state);
  char path[700];
  snprintf(path, sizeof path, "%s/absent/meta.json", f->dir);
  fy_metafile *mf;
  assert_int_equal(fy_metafile_new(&f->loop, f->aio, path, NULL, NULL, &mf), 0);
  assert_int_equal(save_wait(f, mf, "{}"), -ENOENT);
  fy_metafile_close(mf);
}

struct hook_rec {
  int calls;
  int last;
};

static void on_cycle(void *arg, int status) {
  struct hook_rec *h = arg;
  h->calls++;
  h->last = status;
}

static void test_hook_and_close_in_flight(void **state) {
  struct fixture *f = fixture(state);
  struct hook_rec h = {0};
  fy_metafile *mf;
  assert_int_equal(fy_metafile_new(&f->loop, f->aio, f->path, on_cycle, &h, &mf), 0);
  assert_int_equal(save_wait(f, mf, "one"), 0);
  assert_int_equal(h.calls, 1);
  assert_int_equal(h.last, 0);
  fy_aio_inject_fault(f->aio, FY_AIO_WRITE, 0, 1, -EIO);
  assert_int_equal(save_wait(f, mf, "two"), -EIO);
  assert_int_equal(h.calls, 2);
  assert_int_equal(h.last, -EIO);

  /* close with a save in flight and one pending: both complete, the hook is quiet */
  struct done a = {0}, b = {0};
  assert_int_equal(fy_metafile_save(mf, dup_str("three"), 5, on_done, &a), 0);
  assert_int_equal(fy_metafile_save(mf, dup_str("four"), 4, on_done, &b), 0);
  fy_metafile_close(mf);
  assert_true(fy_test_run_until(&f->loop, &b.done, DEADLINE_MS));
  assert_int_equal(a.status, 0);
  assert_int_equal(b.status, 0);
  assert_int_equal(h.calls, 2);
  assert_content(f->path, "four");
}

#define BOTH(fn)                                                                           \
  cmocka_unit_test_prestate_setup_teardown(fn, setup, teardown, &backend_uring),           \
      cmocka_unit_test_prestate_setup_teardown(fn, setup, teardown, &backend_threads)

int main(void) {
  const struct CMUnitTest tests[] = {
      BOTH(test_save_and_load),
      BOTH(test_stale_tmp_ignored),
      BOTH(test_load_errors),
      BOTH(test_coalescing),
      BOTH(test_waiter_bound),
      BOTH(test_write_fault_keeps_old_content),
      BOTH(test_sync_fault_keeps_old_content),
      BOTH(test_dir_sync_fault_reported),
      BOTH(test_fault_with_coalesced_saves),
      BOTH(test_missing_directory_reported),
      BOTH(test_hook_and_close_in_flight),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
