/* Message index: put/query, hash collisions, time windows, file roll-over,
 * idempotent re-put, truncation (checked against a model), reopen,
 * retention, corrupted files and chains, flush. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"
#include "store/index.h"
#include "testutil.h"

#define REC 100u            /* record i is at phys i * REC, REC bytes */
#define T0 1764096000000ll /* store time of record 0, ms (a whole second) */
#define HDR 64u

static char dir[600];
static char base[512];

static int setup(void **state) {
  (void)state;
  snprintf(base, sizeof base, "%s", fy_test_mkdtemp("index"));
  snprintf(dir, sizeof dir, "%s/index", base);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  fy_test_rmtree(base);
  return 0;
}

static fy_index *open_ix(uint32_t slots, uint32_t entries) {
  fy_index *ix = NULL;
  assert_int_equal(fy_index_open(dir, slots, entries, &ix), 0);
  assert_non_null(ix);
  return ix;
}

/* Record i carries keys "T#k<a>" for each a in keys[0..n); stored at T0 + i s. */
static void put_rec(fy_index *ix, uint64_t i, const int *ids, size_t n) {
  char bufs[8][32];
  const char *keys[8];
  size_t lens[8];
  assert_true(n <= 8);
  for (size_t j = 0; j < n; j++) {
    lens[j] = (size_t)snprintf(bufs[j], sizeof bufs[j], "T#k%d", ids[j]);
    keys[j] = bufs[j];
  }
  assert_int_equal(fy_index_put(ix, keys, lens, n, i * REC, REC, T0 + (int64_t)i * 1000), 0);
}

static void put_one(fy_index *ix, uint64_t i, int id) { put_rec(ix, i, &id, 1); }

static size_t query(const fy_index *ix, int id, int64_t b, int64_t e, uint64_t *out, size_t max) {
  char key[32];
  int n = snprintf(key, sizeof key, "T#k%d", id);
  return fy_index_query(ix, key, (size_t)n, b, e, out, max);
}

static size_t query_all(const fy_index *ix, int id, uint64_t *out, size_t max) {
  return query(ix, id, INT64_MIN, INT64_MAX, out, max);
}

static size_t count_files(void) {
  DIR *d = opendir(dir);
  if (!d)
    return 0;
  size_t n = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL)
    n += de->d_name[0] != '.';
  closedir(d);
  return n;
}

/* Name of the only (or first by name) file in dir. */
static void first_file(char *path, size_t cap) {
  DIR *d = opendir(dir);
  assert_non_null(d);
  struct dirent *de;
  char best[256] = "";
  while ((de = readdir(d)) != NULL)
    if (de->d_name[0] != '.' && (!best[0] || strcmp(de->d_name, best) < 0))
      snprintf(best, sizeof best, "%s", de->d_name);
  closedir(d);
  assert_true(best[0] != 0);
  snprintf(path, cap, "%s/%s", dir, best);
}

static void test_put_query(void **state) {
  (void)state;
  fy_index *ix = open_ix(64, 100);
  assert_int_equal(fy_index_max_phys(ix), 0);
  assert_int_equal(count_files(), 0); /* created on first keyed put */
  int k12[2] = {1, 2};
  put_rec(ix, 0, k12, 2);
  put_one(ix, 1, 2);
  put_one(ix, 2, 3);
  put_one(ix, 3, 2);
  assert_int_equal(count_files(), 1);
  assert_int_equal(fy_index_max_phys(ix), 4 * REC);

  uint64_t out[16];
  assert_int_equal(query_all(ix, 1, out, 16), 1);
  assert_int_equal(out[0], 0);
  assert_int_equal(query_all(ix, 2, out, 16), 3); /* newest first */
  assert_int_equal(out[0], 3 * REC);
  assert_int_equal(out[1], 1 * REC);
  assert_int_equal(out[2], 0);
  assert_int_equal(query_all(ix, 2, out, 2), 2); /* max */
  assert_int_equal(out[1], 1 * REC);
  assert_int_equal(query_all(ix, 2, out, 0), 0);
  assert_int_equal(query_all(ix, 99, out, 16), 0);
  assert_int_equal(fy_index_query(ix, "", 0, INT64_MIN, INT64_MAX, out, 16), 0);
  /* one record with the same key twice is one candidate */
  int dup[2] = {7, 7};
  put_rec(ix, 4, dup, 2);
  assert_int_equal(query_all(ix, 7, out, 16), 1);
  assert_int_equal(out[0], 4 * REC);

  /* bad arguments */
  const char *k = "T#x";
  size_t kl = 3;
  assert_int_equal(fy_index_put(ix, &k, &kl, 1, 10 * REC, 0, T0), -EINVAL);
  assert_int_equal(fy_index_put(ix, &k, &kl, 1, UINT64_MAX - 1, 10, T0), -EINVAL);
  fy_index_close(ix);
  fy_index *bad;
  assert_int_equal(fy_index_open(dir, 0, 100, &bad), -EINVAL);
  assert_int_equal(fy_index_open(dir, 16, 1, &bad), -EINVAL);
}

/* The puts drop our page-table entries of the entry pages they have moved
 * past, 256 KiB at a time (zap_behind), so neither writeback nor a flush
 * has a second's worth to deal with: the file's mapping keeps less than a
 * step of them, and every entry still answers its query. */
static void test_puts_zap_behind(void **state) {
  (void)state;
  const uint64_t n = 60000; /* 1.2 MB of entries: four steps and a bit */
  fy_index *ix = open_ix(4096, 100000);
  for (uint64_t i = 0; i < n; i++)
    put_one(ix, i, (int)i);
  /* the header page, less than a step, the page being written, and the
   * file's slot table (16 KiB) if it is mapped at all */
  assert_true(fy_test_mapped_kb(dir) <= 4 + 256 + 4 + 16);
  uint64_t out[4];
  for (uint64_t i = 0; i < n; i += 997) {
    assert_int_equal(query_all(ix, (int)i, out, 4), 1);
    assert_int_equal(out[0], i * REC);
  }
  assert_int_equal(query_all(ix, (int)(n - 1), out, 4), 1);
  fy_index_close(ix);
}

/* With a loop, the thread pool faults in the step of entries after the page
 * being written whenever the puts zap one, and a file closed while that is
 * in flight is unmapped once it completes. */
static void test_populate_ahead(void **state) {
  (void)state;
  if (!fy_test_populate_supported())
    skip(); /* before Linux 5.14 the puts fault as before */
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  fy_index *ix = open_ix(4096, 100000);
  fy_index_use_loop(ix, &loop);
  for (uint64_t i = 0; i < 20000; i++) /* 400,000 bytes of entries */
    put_one(ix, i, (int)i);
  uv_run(&loop, UV_RUN_DEFAULT); /* until the population (and the spare table) is done */
  /* the header, the written part of the second step (136 KiB), the rest of
   * that step populated, and the file's slot table if mapped */
  size_t kb = fy_test_mapped_kb(dir);
  assert_true(kb >= 256);
  assert_true(kb <= 4 + 256 + 4 + 4 + 16);
  uint64_t out[4];
  for (uint64_t i = 0; i < 20000; i += 101) {
    assert_int_equal(query_all(ix, (int)i, out, 4), 1);
    assert_int_equal(out[0], i * REC);
  }
  for (uint64_t i = 20000; i < 40000; i++) /* another step: a population starts */
    put_one(ix, i, (int)i);
  fy_index_close(ix); /* with it in flight */
  assert_true(fy_test_mapped_kb(dir) > 0);
  assert_int_equal(fy_test_loop_finish(&loop), 0);
  assert_int_equal(fy_test_mapped_kb(dir), 0);
  ix = open_ix(4096, 100000);
  assert_int_equal(query_all(ix, 39999, out, 4), 1);
  assert_int_equal(out[0], 39999 * REC);
  fy_index_close(ix);
}

/* Index files are mapped MADV_RANDOM: lookups follow hash chains and puts
 * append, and the default read-around zero-filled 8 MiB of the file's
 * unwritten part under a put on the benchmark VM. */
static void test_mapping_random(void **state) {
  (void)state;
  fy_index *ix = open_ix(64, 1000);
  put_one(ix, 1, 7);
  size_t with = 0;
  size_t n = fy_test_mappings(dir, "rr", &with);
  assert_true(n >= 1);
  assert_int_equal(with, n);
  fy_index_close(ix);
  assert_int_equal(fy_test_mappings(dir, "rr", NULL), 0);
}

static void test_collisions(void **state) {
  (void)state;
  fy_index *ix = open_ix(1, 200); /* one slot: every key in one chain */
  for (uint64_t i = 0; i < 100; i++)
    put_one(ix, i, (int)(i % 10));
  uint64_t out[32];
  for (int id = 0; id < 10; id++) {
    assert_int_equal(query_all(ix, id, out, 32), 10);
    for (size_t j = 0; j < 10; j++)
      assert_int_equal(out[j], (uint64_t)(90 + id - 10 * (int)j) * REC);
  }
  fy_index_close(ix);
}

static void test_time_window(void **state) {
  (void)state;
  fy_index *ix = open_ix(16, 100);
  for (uint64_t i = 0; i < 10; i++) /* record i stored at T0 + i s */
    put_one(ix, i, 1);
  uint64_t out[16];
  size_t n = query(ix, 1, T0 + 3000, T0 + 5000, out, 16);
  assert_int_equal(n, 3);
  assert_int_equal(out[0], 5 * REC);
  assert_int_equal(out[2], 3 * REC);
  assert_int_equal(query(ix, 1, T0 + 3000, T0 + 3000, out, 16), 1);
  assert_int_equal(query(ix, 1, T0 - 5000, T0 - 1001, out, 16), 0);
  assert_int_equal(query(ix, 1, T0 + 10000, INT64_MAX, out, 16), 0);
  assert_int_equal(query(ix, 1, INT64_MIN, T0, out, 16), 1);
  /* second precision: a window inside record 4's second still finds it */
  assert_int_equal(query(ix, 1, T0 + 4200, T0 + 4800, out, 16), 1);
  assert_int_equal(out[0], 4 * REC);
  /* a record stored mid-second */
  const char *k = "T#k2";
  size_t kl = 4;
  assert_int_equal(fy_index_put(ix, &k, &kl, 1, 10 * REC, REC, T0 + 12345), 0);
  assert_int_equal(query(ix, 2, T0 + 12345, T0 + 12345, out, 16), 1);
  assert_int_equal(query(ix, 2, T0 + 12000, T0 + 12100, out, 16), 1); /* candidate */
  assert_int_equal(query(ix, 2, T0 + 13000, INT64_MAX, out, 16), 0);
  assert_int_equal(query(ix, 2, INT64_MIN, T0 + 11999, out, 16), 0);
  /* a record stored before the file's first one (clock stepped back) */
  assert_int_equal(fy_index_put(ix, &k, &kl, 1, 11 * REC, REC, T0 - 60000), 0);
  assert_int_equal(query(ix, 2, T0 - 60000, T0 - 60000, out, 16), 1);
  assert_int_equal(out[0], 11 * REC);
  fy_index_close(ix);
}

static void test_roll_over(void **state) {
  (void)state;
  fy_index *ix = open_ix(4, 5); /* 4 keys per file */
  for (uint64_t i = 0; i < 10; i++)
    put_one(ix, i, (int)(i % 3));
  assert_int_equal(count_files(), 3); /* 4 + 4 + 2 */
  uint64_t out[16];
  size_t n = query_all(ix, 0, out, 16); /* records 0, 3, 6, 9 over three files */
  assert_int_equal(n, 4);
  assert_int_equal(out[0], 9 * REC);
  assert_int_equal(out[1], 6 * REC);
  assert_int_equal(out[2], 3 * REC);
  assert_int_equal(out[3], 0);
  assert_int_equal(query_all(ix, 0, out, 3), 3); /* max stops across files */
  /* a record whose keys do not fit in what is left goes whole to a new file */
  int three[3] = {5, 6, 7};
  put_rec(ix, 10, three, 3);
  assert_int_equal(count_files(), 4);
  assert_int_equal(query_all(ix, 6, out, 16), 1);
  assert_int_equal(out[0], 10 * REC);
  /* more keys than a file holds */
  int five[5] = {1, 2, 3, 4, 5};
  char bufs[5][8];
  const char *keys[5];
  size_t lens[5];
  for (int j = 0; j < 5; j++) {
    lens[j] = (size_t)snprintf(bufs[j], sizeof bufs[j], "T#k%d", five[j]);
    keys[j] = bufs[j];
  }
  assert_int_equal(fy_index_put(ix, keys, lens, 5, 11 * REC, REC, T0), -EINVAL);
  fy_index_close(ix);
  /* one key per file: names stay unique within one millisecond */
  fy_test_rmtree(dir);
  ix = open_ix(4, 2);
  for (uint64_t i = 0; i < 10; i++)
    put_one(ix, i, 1);
  assert_int_equal(count_files(), 10);
  assert_int_equal(query_all(ix, 1, out, 16), 10);
  for (size_t j = 0; j < 10; j++)
    assert_int_equal(out[j], (9 - j) * REC);
  fy_index_close(ix);
}

static void test_idempotent(void **state) {
  (void)state;
  fy_index *ix = open_ix(16, 100);
  for (uint64_t i = 0; i < 5; i++)
    put_one(ix, i, 1);
  /* re-dispatch of everything: ignored */
  for (uint64_t i = 0; i < 5; i++)
    put_one(ix, i, 1);
  uint64_t out[16];
  assert_int_equal(query_all(ix, 1, out, 16), 5);
  /* a record without keys advances max_phys, in the file header too */
  assert_int_equal(fy_index_put(ix, NULL, NULL, 0, 5 * REC, REC, T0 + 5000), 0);
  assert_int_equal(fy_index_max_phys(ix), 6 * REC);
  put_one(ix, 5, 2); /* below max_phys now: ignored */
  assert_int_equal(query_all(ix, 2, out, 16), 0);
  fy_index_close(ix);
  ix = open_ix(16, 100);
  assert_int_equal(fy_index_max_phys(ix), 6 * REC);
  /* empty keys are skipped */
  const char *k[2] = {"", "T#k3"};
  size_t kl[2] = {0, 4};
  assert_int_equal(fy_index_put(ix, k, kl, 2, 6 * REC, REC, T0 + 6000), 0);
  assert_int_equal(query_all(ix, 3, out, 16), 1);
  fy_index_close(ix);
}

/* The model: record i has key i % 4 and, when i % 3 == 0, key 10 too. */
static void put_model(fy_index *ix, uint64_t from, uint64_t to) {
  for (uint64_t i = from; i < to; i++) {
    int ids[2] = {(int)(i % 4), 10};
    put_rec(ix, i, ids, i % 3 == 0 ? 2 : 1);
  }
}

static void expect_model(const fy_index *ix, uint64_t nrec) {
  uint64_t out[64];
  int ids[5] = {0, 1, 2, 3, 10};
  for (size_t k = 0; k < 5; k++) {
    size_t n = query_all(ix, ids[k], out, 64);
    size_t j = 0;
    for (uint64_t i = nrec; i-- > 0;) {
      bool has = ids[k] == 10 ? i % 3 == 0 : (uint64_t)ids[k] == i % 4;
      if (!has)
        continue;
      assert_true(j < n);
      assert_int_equal(out[j], i * REC);
      j++;
    }
    assert_int_equal(n, j);
  }
}

static void test_truncate_phys(void **state) {
  (void)state;
  fy_index *ix = open_ix(3, 8); /* 7 keys per file, 3 slots: long shared chains */
  put_model(ix, 0, 30);
  expect_model(ix, 30);
  size_t files = count_files();
  assert_true(files >= 5);

  assert_int_equal(fy_index_truncate_phys(ix, 40 * REC), 0); /* past the end: nothing */
  expect_model(ix, 30);
  assert_int_equal(fy_index_truncate_phys(ix, 25 * REC + 1), 0);
  assert_int_equal(fy_index_max_phys(ix), 25 * REC + 1);
  expect_model(ix, 26);
  assert_int_equal(fy_index_truncate_phys(ix, 17 * REC), 0);
  assert_int_equal(fy_index_max_phys(ix), 17 * REC);
  expect_model(ix, 17);
  assert_true(count_files() < files);
  /* re-dispatch continues where the cut is */
  put_model(ix, 17, 22);
  expect_model(ix, 22);
  fy_index_close(ix);

  ix = open_ix(3, 8);
  expect_model(ix, 22);
  assert_int_equal(fy_index_max_phys(ix), 22 * REC);
  /* everything: one (empty) file is kept */
  assert_int_equal(fy_index_truncate_phys(ix, 0), 0);
  assert_int_equal(fy_index_max_phys(ix), 0);
  assert_int_equal(count_files(), 1);
  expect_model(ix, 0);
  put_model(ix, 0, 12);
  expect_model(ix, 12);
  fy_index_close(ix);
  ix = open_ix(3, 8);
  expect_model(ix, 12);
  fy_index_close(ix);
}

static void test_reopen_and_bad_files(void **state) {
  (void)state;
  fy_index *ix = open_ix(16, 6);
  put_model(ix, 0, 10);
  fy_index_close(ix);
  /* junk in the directory is ignored */
  char p[700];
  snprintf(p, sizeof p, "%s/junk", dir);
  FILE *f = fopen(p, "w");
  fputs("not an index", f);
  fclose(f);
  snprintf(p, sizeof p, "%s/20000101000000000", dir);
  f = fopen(p, "w"); /* a file created but never given a header */
  fclose(f);
  assert_int_equal(truncate(p, 4096), 0);
  snprintf(p, sizeof p, "%s/subdir", dir);
  mkdir(p, 0755);
  /* reopened with other parameters: old files keep theirs */
  ix = open_ix(4, 50);
  expect_model(ix, 10);
  assert_int_equal(fy_index_max_phys(ix), 10 * REC);
  put_model(ix, 10, 14);
  expect_model(ix, 14);
  fy_index_close(ix);
}

static void test_trim_below(void **state) {
  (void)state;
  fy_index *ix = open_ix(8, 3); /* 2 keys per file */
  for (uint64_t i = 0; i < 8; i++)
    put_one(ix, i, 1); /* files: {0,1} {2,3} {4,5} {6,7} */
  assert_int_equal(count_files(), 4);
  assert_int_equal(fy_index_trim_below(ix, 2 * REC - 1), 0);
  assert_int_equal(fy_index_trim_below(ix, 2 * REC), 1);
  uint64_t out[16];
  assert_int_equal(query_all(ix, 1, out, 16), 6);
  assert_int_equal(out[5], 2 * REC);
  /* never the newest */
  assert_int_equal(fy_index_trim_below(ix, UINT64_MAX), 2);
  assert_int_equal(count_files(), 1);
  assert_int_equal(query_all(ix, 1, out, 16), 2);
  assert_int_equal(fy_index_trim_below(ix, UINT64_MAX), 0);
  fy_index_close(ix);

  /* at most FY_INDEX_TRIM_MAX per call */
  ix = open_ix(8, 2);
  for (uint64_t i = 10; i < 10 + FY_INDEX_TRIM_MAX + 3; i++)
    put_one(ix, i, 1);
  assert_int_equal(fy_index_trim_below(ix, UINT64_MAX), FY_INDEX_TRIM_MAX);
  assert_int_equal(fy_index_trim_below(ix, UINT64_MAX), 3);
  assert_int_equal(count_files(), 1);
  fy_index_close(ix);
}

static bool spare_ready(void *arg) {
  struct fy_index_stats st;
  fy_index_stats(arg, &st);
  return st.spare_ready;
}

/* With a loop, every new file gets a slot table made ahead on the thread
 * pool, and the index answers as without one. An index closed while a table
 * is being made leaves nothing behind (the sanitizer run checks for leaks). */
static void test_spare_slot_tables(void **state) {
  (void)state;
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  fy_index *ix = open_ix(8, 3); /* 2 keys per file */
  fy_index_use_loop(ix, &loop);
  for (uint64_t i = 0; i < 8; i++) {
    if (i % 2 == 0) /* the next put creates a file */
      assert_true(fy_test_run_until_pred(&loop, spare_ready, ix, 10000));
    put_one(ix, i, (int)(i % 3));
  }
  struct fy_index_stats st;
  fy_index_stats(ix, &st);
  assert_int_equal(st.files, 4);
  assert_int_equal(st.spares_used, 4);
  uint64_t out[16];
  assert_int_equal(query_all(ix, 0, out, 16), 3); /* records 6, 3, 0 */
  assert_int_equal(out[0], 6 * REC);
  assert_int_equal(out[1], 3 * REC);
  assert_int_equal(out[2], 0);
  assert_int_equal(query_all(ix, 1, out, 16), 3);
  assert_int_equal(out[2], 1 * REC);
  fy_index_close(ix);

  ix = open_ix(8, 3);
  fy_index_use_loop(ix, &loop); /* queues a table */
  fy_index_close(ix);           /* before it is made */
  assert_int_equal(fy_test_loop_finish(&loop), 0);
}

static void poke32(const char *path, off_t off, uint32_t v) {
  int fd = open(path, O_RDWR);
  assert_true(fd >= 0);
  assert_int_equal(pwrite(fd, &v, 4, off), 4);
  close(fd);
}

static void test_corrupt_chains(void **state) {
  (void)state;
  const uint32_t slots = 1;
  fy_index *ix = open_ix(slots, 100);
  for (uint64_t i = 0; i < 10; i++) /* entries 1..10, one chain 10 -> 9 -> ... -> 1 */
    put_one(ix, i, 1);
  fy_index_close(ix);
  char path[800];
  first_file(path, sizeof path);
  off_t entries = HDR + slots * 4;
  /* entry 5 links to itself: the walk stops there instead of looping */
  poke32(path, entries + 5 * 20 + 16, 5);
  ix = open_ix(slots, 100);
  uint64_t out[32];
  assert_int_equal(query_all(ix, 1, out, 32), 6); /* entries 10..5 */
  assert_int_equal(out[5], 4 * REC);
  fy_index_close(ix);
  /* a forward link (a cycle 5 -> 8 -> ... -> 5) is cut too */
  poke32(path, entries + 5 * 20 + 16, 8);
  ix = open_ix(slots, 100);
  assert_int_equal(query_all(ix, 1, out, 32), 6);
  /* truncation through the corrupt entry terminates; what stays reachable
   * is a subset of the survivors (the link below entry 5 is lost) */
  assert_int_equal(fy_index_truncate_phys(ix, 3 * REC), 0);
  size_t n = query_all(ix, 1, out, 32);
  assert_true(n <= 3);
  for (size_t j = 0; j < n; j++)
    assert_true(out[j] < 3 * REC);
  put_one(ix, 3, 1);
  assert_true(query_all(ix, 1, out, 32) >= 1);
  assert_int_equal(out[0], 3 * REC);
  fy_index_close(ix);
  /* a slot pointing past entry_count (torn write) is ignored, and put does not link to it */
  poke32(path, HDR, 77);
  ix = open_ix(slots, 100);
  assert_int_equal(query_all(ix, 1, out, 32), 0);
  put_one(ix, 4, 1);
  assert_int_equal(query_all(ix, 1, out, 32), 1);
  assert_int_equal(out[0], 4 * REC);
  fy_index_close(ix);
  /* a header with a bad entry_count: the file is ignored */
  poke32(path, 48, 1000);
  ix = open_ix(slots, 100);
  assert_int_equal(query_all(ix, 1, out, 32), 0);
  assert_int_equal(fy_index_max_phys(ix), 0);
  fy_index_close(ix);
}

static uint32_t fnv1a(const char *k) {
  uint32_t h = 2166136261u;
  for (; *k; k++)
    h = (h ^ (uint8_t)*k) * 16777619u;
  return h;
}

/* A version 1 file (FNV-1a key hashes) is still queried with FNV-1a, and
 * new keys go to a new version 2 file instead of being mixed into it. */
static void test_version1_file(void **state) {
  (void)state;
  const uint32_t slots = 1; /* one slot: the slot does not depend on the hash */
  fy_index *ix = open_ix(slots, 100);
  put_one(ix, 0, 7);
  fy_index_close(ix);
  char path[800];
  first_file(path, sizeof path);
  poke32(path, 4, 1);                            /* version 1 */
  poke32(path, HDR + slots * 4 + 20, fnv1a("T#k7")); /* entry 1's hash */
  ix = open_ix(slots, 100);
  uint64_t out[4];
  assert_int_equal(query_all(ix, 7, out, 4), 1);
  assert_int_equal(out[0], 0);
  assert_int_equal(count_files(), 1);
  put_one(ix, 1, 8);
  assert_int_equal(count_files(), 2); /* not appended to the version 1 file */
  assert_int_equal(query_all(ix, 8, out, 4), 1);
  assert_int_equal(out[0], REC);
  assert_int_equal(query_all(ix, 7, out, 4), 1);
  fy_index_close(ix);
  ix = open_ix(slots, 100);
  assert_int_equal(query_all(ix, 7, out, 4), 1);
  assert_int_equal(query_all(ix, 8, out, 4), 1);
  assert_int_equal(query_all(ix, 9, out, 4), 0);
  fy_index_close(ix);
  poke32(path, 4, 3); /* an unknown version: the file is skipped */
  ix = open_ix(slots, 100);
  assert_int_equal(query_all(ix, 7, out, 4), 0);
  assert_int_equal(query_all(ix, 8, out, 4), 1);
  fy_index_close(ix);
}

/* ---- flush (needs fy_aio) ---- */

struct flush_rec {
  bool done;
  int status;
  int calls;
};

static void on_flushed(void *arg, int status) {
  struct flush_rec *r = arg;
  r->done = true;
  r->status = status;
  r->calls++;
}

/* Flushes ix and runs the loop until the one callback; returns its status. */
static int flush_and_wait(fy_index *ix, fy_aio *aio, uv_loop_t *loop) {
  struct flush_rec r = {0};
  assert_int_equal(fy_index_flush(ix, aio, on_flushed, &r), 0);
  assert_true(fy_test_run_until(loop, &r.done, 10000));
  assert_int_equal(r.calls, 1);
  return r.status;
}

/* A loop and an I/O context on it (io_uring where the kernel has it). */
static void aio_open(uv_loop_t *loop, fy_aio **aio) {
  assert_int_equal(uv_loop_init(loop), 0);
  assert_int_equal(fy_aio_init(loop, FY_AIO_AUTO, 64, aio), 0);
}

static void aio_finish(uv_loop_t *loop, fy_aio *aio) {
  fy_aio_close(aio);
  assert_int_equal(fy_test_loop_finish(loop), 0);
}

/* Runs on one backend; false if it cannot be set up here. */
static bool flush_on(enum fy_aio_backend backend) {
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  fy_aio *aio;
  if (fy_aio_init(&loop, backend, 64, &aio) != 0) {
    assert_int_equal(fy_test_loop_finish(&loop), 0);
    return false;
  }
  assert_int_equal(fy_aio_backend_of(aio), backend);

  fy_index *ix = open_ix(8, 3);
  assert_true(fy_index_dirty(ix)); /* the new directory */
  put_one(ix, 0, 1);
  put_one(ix, 1, 1);
  put_one(ix, 2, 1); /* second file */
  struct flush_rec r1 = {0}, r2 = {0};
  assert_int_equal(fy_index_flush(ix, aio, on_flushed, &r1), 0);
  assert_false(r1.done);
  assert_false(fy_index_dirty(ix));
  assert_int_equal(fy_index_flush(ix, aio, on_flushed, &r2), -FY_EBUSY);
  put_one(ix, 3, 1); /* during the flush: carried to the next one */
  assert_true(fy_index_dirty(ix));
  assert_true(fy_test_run_until(&loop, &r1.done, 10000));
  assert_int_equal(r1.status, 0);
  assert_int_equal(r1.calls, 1);
  assert_true(fy_index_dirty(ix));
  assert_int_equal(fy_index_flush(ix, aio, on_flushed, &r2), 0);
  assert_true(fy_test_run_until(&loop, &r2.done, 10000));
  assert_int_equal(r2.status, 0);
  assert_false(fy_index_dirty(ix));

  /* nothing dirty: the callback still comes */
  assert_int_equal(flush_and_wait(ix, aio, &loop), 0);

  /* an error is reported once */
  put_one(ix, 4, 1);
  fy_aio_inject_fault(aio, FY_AIO_FDATASYNC, 0, 1, -EIO);
  assert_int_equal(flush_and_wait(ix, aio, &loop), -EIO); /* once */

  /* files deleted and the index closed while a flush is in flight */
  put_one(ix, 5, 1);
  struct flush_rec r5 = {0};
  assert_int_equal(fy_index_flush(ix, aio, on_flushed, &r5), 0);
  assert_int_equal(fy_index_trim_below(ix, 4 * REC), 2);
  fy_index_close(ix);
  assert_true(fy_test_run_until(&loop, &r5.done, 10000));
  assert_int_equal(r5.status, 0);
  assert_int_equal(r5.calls, 1);

  assert_int_equal(fy_aio_pending(aio), 0);
  fy_aio_close(aio);
  assert_int_equal(fy_test_loop_finish(&loop), 0);
  return true;
}

static void test_flush(void **state) {
  (void)state;
  if (!flush_on(FY_AIO_URING))
    print_message("io_uring unavailable: flush tested on the thread pool only\n");
  teardown(state);
  setup(state);
  assert_true(flush_on(FY_AIO_THREADS));
}

/* The newest file's slot table lives in memory: a flush writes it into the
 * file (before its fdatasync), an older file's table is read from its file
 * once a flush wrote it, and everything is there after a reopen. */
static void test_flush_writes_slots(void **state) {
  (void)state;
  uv_loop_t loop;
  fy_aio *aio;
  aio_open(&loop, &aio);
  const uint32_t slots = 8;
  fy_index *ix = open_ix(slots, 4); /* 3 keys per file */
  put_one(ix, 0, 1);
  assert_int_equal(flush_and_wait(ix, aio, &loop), 0);
  char path[800];
  first_file(path, sizeof path);
  int fd = open(path, O_RDONLY);
  assert_true(fd >= 0);
  uint32_t table[8];
  assert_int_equal(pread(fd, table, sizeof table, HDR), (ssize_t)sizeof table);
  close(fd);
  size_t used = 0;
  for (uint32_t i = 0; i < slots; i++) {
    assert_true(table[i] == 0 || table[i] == 1);
    used += table[i] == 1;
  }
  assert_int_equal(used, 1); /* entry 1, in the slot of its key */
  for (uint64_t i = 1; i < 7; i++) /* three files */
    put_one(ix, i, 1);
  assert_int_equal(flush_and_wait(ix, aio, &loop), 0);
  uint64_t out[16];
  assert_int_equal(query_all(ix, 1, out, 16), 7);
  for (size_t j = 0; j < 7; j++)
    assert_int_equal(out[j], (6 - j) * REC);
  fy_index_close(ix);
  ix = open_ix(slots, 4);
  assert_int_equal(query_all(ix, 1, out, 16), 7);
  assert_int_equal(fy_index_max_phys(ix), 7 * REC);
  fy_index_close(ix);
  aio_finish(&loop, aio);
}

/* The first file's slot table on disk equals the one rebuilt from its entries
 * 1..upto (entry n holds key n - 1, one key per record). */
static void assert_disk_slots(uint32_t slots, uint32_t upto) {
  char path[800];
  first_file(path, sizeof path);
  int fd = open(path, O_RDONLY);
  assert_true(fd >= 0);
  uint32_t *disk = malloc((size_t)slots * 4), *want = calloc(slots, 4);
  assert_non_null(disk);
  assert_non_null(want);
  assert_int_equal(pread(fd, disk, (size_t)slots * 4, HDR), (ssize_t)slots * 4);
  for (uint32_t n = 1; n <= upto; n++) {
    uint32_t hash;
    assert_int_equal(pread(fd, &hash, 4, HDR + (off_t)slots * 4 + (off_t)n * 20), 4);
    want[hash % slots] = n;
  }
  close(fd);
  uint32_t changed = 0;
  for (uint32_t s = 0; s < slots; s++) {
    if (disk[s] != want[s] && changed++ < 5)
      print_message("slot %u: %u on disk, %u expected\n", s, disk[s], want[s]);
  }
  assert_int_equal(changed, 0);
  free(disk);
  free(want);
}

/* A flush writes the slot table as it was when the flush was queued, though
 * it writes it a step at a time: puts made meanwhile (into chunks not yet
 * written) change nothing on disk. The table read back from the file must
 * equal the one rebuilt from the entries numbered below the flush's start. */
static void test_flush_is_a_snapshot(void **state) {
  (void)state;
  uv_loop_t loop;
  fy_aio *aio;
  aio_open(&loop, &aio);
  const uint32_t slots = 300007; /* 293 chunks: five flush writes */
  const uint32_t before = 150000, during_step = 3000;
  fy_index *ix = open_ix(slots, 1000000);
  for (uint32_t i = 0; i < before; i++)
    put_one(ix, i, (int)i);
  struct flush_rec r = {0};
  assert_int_equal(fy_index_flush(ix, aio, on_flushed, &r), 0);
  uint32_t next = before;
  for (int turns = 0; !r.done; turns++) {
    assert_true(turns < 10000);
    for (uint32_t k = 0; k < during_step && next < 900000; k++, next++)
      put_one(ix, next, (int)next);
    uv_run(&loop, UV_RUN_ONCE);
  }
  assert_int_equal(r.status, 0);
  assert_true(next > before + during_step); /* puts did run during the flush */

  assert_disk_slots(slots, before);
  fy_index_close(ix);
  aio_finish(&loop, aio);
}

/* A slot write that fails fails the flush once; what it did not write is
 * still dirty, so the next flush writes the whole table. */
static void test_flush_write_error(void **state) {
  (void)state;
  uv_loop_t loop;
  fy_aio *aio;
  aio_open(&loop, &aio);
  const uint32_t slots = 300007, keys = 100000;
  fy_index *ix = open_ix(slots, 1000000);
  for (uint32_t i = 0; i < keys; i++)
    put_one(ix, i, (int)i);
  fy_aio_inject_fault(aio, FY_AIO_WRITE, 1, 1, -EIO); /* the second of five writes */
  assert_int_equal(flush_and_wait(ix, aio, &loop), -EIO);
  assert_true(fy_index_dirty(ix));
  assert_int_equal(flush_and_wait(ix, aio, &loop), 0);
  assert_disk_slots(slots, keys);
  fy_index_close(ix);
  aio_finish(&loop, aio);
}

static bool snap_ready(void *arg) {
  struct fy_index_stats st;
  fy_index_stats(arg, &st);
  return st.snap_ready;
}

/* With a loop, a new store's first file gets the flush's snapshot buffer
 * (as big as a slot table) from the thread pool, not from the loop; the
 * first flush then uses it. Without a loop it is made at once. */
static void test_snapshot_buffer_off_the_loop(void **state) {
  (void)state;
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  fy_index *ix = open_ix(8, 3);
  fy_index_use_loop(ix, &loop);
  put_one(ix, 0, 0); /* creates the first file */
  struct fy_index_stats st;
  fy_index_stats(ix, &st);
  assert_int_equal(st.files, 1);
  assert_int_equal(st.snaps_on_loop, 0);
  assert_true(fy_test_run_until_pred(&loop, snap_ready, ix, 10000));
  fy_aio *aio;
  assert_int_equal(fy_aio_init(&loop, FY_AIO_AUTO, 64, &aio), 0);
  assert_int_equal(flush_and_wait(ix, aio, &loop), 0);
  fy_index_stats(ix, &st);
  assert_int_equal(st.snaps_on_loop, 0);
  fy_index_close(ix);
  fy_aio_close(aio);

  ix = open_ix(8, 3);
  fy_index_use_loop(ix, &loop);
  put_one(ix, 0, 0);
  fy_index_close(ix); /* before the buffer is made: nothing is left behind */
  assert_int_equal(fy_test_loop_finish(&loop), 0);

  ix = open_ix(8, 3); /* no loop */
  put_one(ix, 0, 0);
  fy_index_stats(ix, &st);
  assert_true(st.snap_ready);
  assert_int_equal(st.snaps_on_loop, 1);
  fy_index_close(ix);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_put_query, setup, teardown),
      cmocka_unit_test_setup_teardown(test_collisions, setup, teardown),
      cmocka_unit_test_setup_teardown(test_mapping_random, setup, teardown),
      cmocka_unit_test_setup_teardown(test_puts_zap_behind, setup, teardown),
      cmocka_unit_test_setup_teardown(test_populate_ahead, setup, teardown),
      cmocka_unit_test_setup_teardown(test_time_window, setup, teardown),
      cmocka_unit_test_setup_teardown(test_roll_over, setup, teardown),
      cmocka_unit_test_setup_teardown(test_idempotent, setup, teardown),
      cmocka_unit_test_setup_teardown(test_truncate_phys, setup, teardown),
      cmocka_unit_test_setup_teardown(test_reopen_and_bad_files, setup, teardown),
      cmocka_unit_test_setup_teardown(test_trim_below, setup, teardown),
      cmocka_unit_test_setup_teardown(test_spare_slot_tables, setup, teardown),
      cmocka_unit_test_setup_teardown(test_snapshot_buffer_off_the_loop, setup, teardown),
      cmocka_unit_test_setup_teardown(test_version1_file, setup, teardown),
      cmocka_unit_test_setup_teardown(test_corrupt_chains, setup, teardown),
      cmocka_unit_test_setup_teardown(test_flush, setup, teardown),
      cmocka_unit_test_setup_teardown(test_flush_writes_slots, setup, teardown),
      cmocka_unit_test_setup_teardown(test_flush_is_a_snapshot, setup, teardown),
      cmocka_unit_test_setup_teardown(test_flush_write_error, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
