/* Consume queues: put/get, idempotence, gaps, file roll-over, reopen, tag
 * scans, time search, recovery truncation, retention, the mapping bound,
 * untrusted files on disk, destroy and flush. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"
#include "store/consumequeue.h"
#include "testutil.h"

size_t fy__cq_mapped_count(const fy_cq *cq);
uint64_t fy__cq_zap_count(const fy_cq *cq);

#define TOPIC "TopicTest"
#define QID 3u
#define REC 100u /* every test record is 100 bytes at phys = qoff * REC */

static char root[512];

static int setup(void **state) {
  (void)state;
  snprintf(root, sizeof root, "%s", fy_test_mkdtemp("cq"));
  return 0;
}

static int teardown(void **state) {
  (void)state;
  fy_test_rmtree(root);
  return 0;
}

static struct fy_cq_entry ent(uint64_t qoff, int64_t tag) {
  return (struct fy_cq_entry){.phys = qoff * REC, .size = REC, .tag_hash = tag};
}

static fy_cq *open_cq(uint32_t per_file) {
  fy_cq *cq = NULL;
  assert_int_equal(fy_cq_open(root, TOPIC, QID, per_file, &cq), 0);
  assert_non_null(cq);
  return cq;
}

static void put_range(fy_cq *cq, uint64_t from, uint64_t to) {
  for (uint64_t q = from; q < to; q++) {
    struct fy_cq_entry e = ent(q, (int64_t)(q % 2 ? 0xB : 0xA));
    assert_int_equal(fy_cq_put(cq, q, &e), 0);
  }
}

static void queue_path(char *buf, size_t cap, const char *file) {
  snprintf(buf, cap, "%s/consumequeue/%s/%u%s%s", root, TOPIC, QID, file ? "/" : "",
           file ? file : "");
}

static bool exists(const char *file) {
  char p[1024];
  queue_path(p, sizeof p, file);
  struct stat st;
  return stat(p, &st) == 0;
}

static long long file_size(const char *file) {
  char p[1024];
  queue_path(p, sizeof p, file);
  struct stat st;
  return stat(p, &st) == 0 ? (long long)st.st_size : -1;
}

static size_t count_files(void) {
  char p[1024];
  queue_path(p, sizeof p, NULL);
  DIR *d = opendir(p);
  if (!d)
    return 0;
  size_t n = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL)
    n += de->d_name[0] != '.';
  closedir(d);
  return n;
}

static void expect_entry(const fy_cq *cq, uint64_t qoff) {
  struct fy_cq_entry e;
  assert_int_equal(fy_cq_get(cq, qoff, &e), 0);
  assert_int_equal(e.phys, qoff * REC);
  assert_int_equal(e.size, REC);
  assert_int_equal(e.tag_hash, qoff % 2 ? 0xB : 0xA);
}

static void write_raw(const char *file, off_t off, const void *buf, size_t len, off_t size);

/* The file being written is mapped MADV_RANDOM (no read-around zero-filling
 * the new file under the first put: 8 MiB on the benchmark VM); a file only
 * read keeps the kernel's readahead for consumers catching up from disk. */
static void test_write_mapping_random(void **state) {
  (void)state;
  char qdir[1024];
  queue_path(qdir, sizeof qdir, NULL);
  fy_cq *cq = open_cq(100);
  put_range(cq, 0, 150); /* two files */
  size_t with = 0;
  size_t n = fy_test_mappings(qdir, "rr", &with);
  assert_true(n >= 1);
  assert_int_equal(with, n);
  fy_cq_close(cq);
  assert_int_equal(fy_test_mappings(qdir, "rr", NULL), 0);

  cq = open_cq(100);
  expect_entry(cq, 10);
  n = fy_test_mappings(qdir, "rr", &with);
  assert_true(n >= 1);
  assert_int_equal(with, 0);
  put_range(cq, 150, 160); /* writing the second file again */
  fy_test_mappings(qdir, "rr", &with);
  assert_int_equal(with, 1);
  fy_cq_close(cq);
}

/* The puts drop the page-table entries of the pages they have moved past, a
 * step (256 KiB) at a time, instead of the flush dropping a second's worth
 * at once (0.7 ms of the loop on the benchmark VM); what was zapped is still
 * in the file and reads back, across the page and step boundaries. */
static void test_puts_zap_behind(void **state) {
  (void)state;
  char qdir[1024];
  queue_path(qdir, sizeof qdir, NULL);
  const uint64_t n = 60000; /* 1,200,000 bytes of entries: four steps and a bit */
  fy_cq *cq = open_cq(100000);
  put_range(cq, 0, n);
  size_t kb = fy_test_mapped_kb(qdir);
  /* at most the unzapped part of a step and the page being written */
  assert_true(kb >= 4);
  assert_true(kb <= 256 + 4);
  for (uint64_t q = 0; q < n; q++)
    expect_entry(cq, q);
  fy_cq_close(cq);
  assert_int_equal(fy_test_mapped_kb(qdir), 0);
  cq = open_cq(100000);
  assert_int_equal(fy_cq_max(cq), n);
  size_t open_kb = fy_test_mapped_kb(qdir); /* what opening read */
  put_range(cq, n, n + 20000); /* appending after a reopen zaps as well */
  kb = fy_test_mapped_kb(qdir);
  assert_true(kb <= open_kb + 256 + 4);
  for (uint64_t q = 0; q < n + 20000; q++)
    expect_entry(cq, q);
  /* after a truncation the puts zap a step at a time again, not on every
   * put (the zap range once kept its old end and covered the page written) */
  assert_int_equal(fy_cq_truncate_phys(cq, 20000 * REC), 0);
  uint64_t zaps = fy__cq_zap_count(cq);
  put_range(cq, 20000, 60000); /* 800,000 bytes: three steps */
  assert_true(fy__cq_zap_count(cq) - zaps <= 4);
  for (uint64_t q = 0; q < 60000; q += 7)
    expect_entry(cq, q);
  fy_cq_close(cq);
}

/* The queues of a topic zap at different puts: queue q's boundaries are
 * shifted by q % 8 eighths of a step, so eight queues filled in lockstep
 * do not all zap (and populate) in the same dispatch. */
static void test_zap_phases(void **state) {
  (void)state;
  fy_cq *q[8];
  uint64_t first_zap[8] = {0};
  for (uint32_t i = 0; i < 8; i++)
    assert_int_equal(fy_cq_open(root, "Phases", i, 100000, &q[i]), 0);
  for (uint64_t off = 0; off < 40000; off++) {
    for (uint32_t i = 0; i < 8; i++) {
      struct fy_cq_entry e = ent(off, 0xB);
      assert_int_equal(fy_cq_put(q[i], off, &e), 0);
      if (!first_zap[i] && fy__cq_zap_count(q[i]) == 1)
        first_zap[i] = off + 1; /* entries put when it zapped */
    }
  }
  /* Queue i's boundaries lie at i * 32 KiB + k * 256 KiB; the first zap
   * stops at the first one at least 136 KiB in, and comes with the put
   * that fills the page below it. */
  const uint64_t first_boundary[8] = {262144, 294912, 327680, 360448,
                                      393216, 163840, 196608, 229376};
  for (uint32_t i = 0; i < 8; i++)
    assert_int_equal(first_zap[i], (first_boundary[i] + 19) / 20);
  for (uint32_t i = 0; i < 8; i++)
    for (uint32_t j = i + 1; j < 8; j++)
      assert_true(first_zap[i] != first_zap[j]);
  /* 800,000 bytes each (the page being written starts at 798,720): the
   * later zaps come a step apart. */
  for (uint32_t i = 0; i < 8; i++) {
    assert_int_equal(fy__cq_zap_count(q[i]), (798720 - first_boundary[i]) / 262144 + 1);
    fy_cq_close(q[i]);
  }
}

/* With a loop, the thread pool faults in the step after the page being
 * written (MADV_POPULATE_WRITE) whenever the puts zap one, so they find it
 * mapped; the zeros it maps are unwritten entries. A mapping dropped while
 * that is in flight is unmapped once it completes. */
static void test_populate_ahead(void **state) {
  (void)state;
  if (!fy_test_populate_supported())
    skip(); /* before Linux 5.14 the puts fault as before */
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  char qdir[1024];
  queue_path(qdir, sizeof qdir, NULL);
  fy_cq *cq = open_cq(100000);
  fy_cq_use_loop(cq, &loop);
  /* 400,000 bytes. Queue 3's zap boundaries lie at 96 KiB + k * 256 KiB;
   * the first zap stops at 352 KiB (96 KiB is below the 136 KiB minimum).
   * Then the 256 KiB after the page being written are populated, of which
   * the puts have written the first 36 KiB. */
  put_range(cq, 0, 20000);
  uv_run(&loop, UV_RUN_DEFAULT); /* until the population is done */
  size_t kb = fy_test_mapped_kb(qdir);
  assert_true(kb >= 256);
  assert_true(kb <= 256 + 4 + 4);
  for (uint64_t q = 0; q < 20000; q++)
    expect_entry(cq, q);
  fy_cq_close(cq);
  assert_int_equal(fy_test_mapped_kb(qdir), 0);

  cq = open_cq(100000);
  assert_int_equal(fy_cq_max(cq), 20000); /* the populated zeros are not entries */
  fy_cq_use_loop(cq, &loop);
  put_range(cq, 20000, 40000); /* another step: a population starts */
  fy_cq_close(cq);             /* with it in flight */
  assert_true(fy_test_mapped_kb(qdir) > 0);
  assert_int_equal(fy_test_loop_finish(&loop), 0);
  assert_int_equal(fy_test_mapped_kb(qdir), 0);
  cq = open_cq(100000);
  assert_int_equal(fy_cq_max(cq), 40000);
  for (uint64_t q = 0; q < 40000; q += 7)
    expect_entry(cq, q);
  fy_cq_close(cq);

  /* a step running past the file's end is populated up to the end: a file
   * of 25,000 entries (500,000 bytes) with its first zap at 360,448 and
   * the population from 364,544 cut at 500,000 */
  char odir[1024];
  /* the first file only: the next one, made ahead, gets its first steps */
  snprintf(odir, sizeof odir, "%s/consumequeue/Other/%u/00000000000000000000", root, QID);
  assert_int_equal(uv_loop_init(&loop), 0);
  fy_cq *small = NULL;
  assert_int_equal(fy_cq_open(root, "Other", QID, 25000, &small), 0);
  fy_cq_use_loop(small, &loop);
  for (uint64_t q = 0; q < 18100; q++) {
    struct fy_cq_entry e = ent(q, 0xA);
    assert_int_equal(fy_cq_put(small, q, &e), 0);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_true(fy_test_mapped_kb(odir) >= (500000 - 364544) / 1024);
  fy_cq_close(small);
  assert_int_equal(fy_test_loop_finish(&loop), 0);
}

static void test_put_get(void **state) {
  (void)state;
  fy_cq *cq = open_cq(8);
  assert_string_equal(fy_cq_topic(cq), TOPIC);
  assert_int_equal(fy_cq_queue_id(cq), QID);
  assert_int_equal(fy_cq_min(cq), 0);
  assert_int_equal(fy_cq_max(cq), 0);
  assert_int_equal(fy_cq_max_phys(cq), 0);
  struct fy_cq_entry e;
  assert_int_equal(fy_cq_get(cq, 0, &e), -FY_ENOT_FOUND);

  put_range(cq, 0, 5);
  assert_int_equal(fy_cq_min(cq), 0);
  assert_int_equal(fy_cq_max(cq), 5);
  assert_int_equal(fy_cq_max_phys(cq), 5 * REC);
  for (uint64_t q = 0; q < 5; q++)
    expect_entry(cq, q);
  assert_int_equal(fy_cq_get(cq, 5, &e), -FY_ENOT_FOUND);
  assert_int_equal(fy_cq_get(cq, UINT64_MAX, &e), -FY_ENOT_FOUND);

  /* size 0 is the "unwritten" marker and cannot be stored */
  struct fy_cq_entry zero = {.phys = 500, .size = 0};
  assert_int_equal(fy_cq_put(cq, 5, &zero), -EINVAL);
  struct fy_cq_entry wrap = {.phys = UINT64_MAX - 10, .size = 100};
  assert_int_equal(fy_cq_put(cq, 5, &wrap), -EINVAL);
  assert_int_equal(fy_cq_max(cq), 5);
  fy_cq_close(cq);

  fy_cq *bad;
  assert_int_equal(fy_cq_open(root, "", 0, 8, &bad), -EINVAL);
  assert_int_equal(fy_cq_open(root, "a/b", 0, 8, &bad), -EINVAL);
  assert_int_equal(fy_cq_open(root, "..", 0, 8, &bad), -EINVAL);
  assert_int_equal(fy_cq_open(root, TOPIC, 0, 0, &bad), -EINVAL);
}

static void test_idempotent_conflict_gap(void **state) {
  (void)state;
  fy_cq *cq = open_cq(8);
  put_range(cq, 0, 4);
  /* re-dispatch of equal entries is a no-op */
  for (uint64_t q = 0; q < 4; q++) {
    struct fy_cq_entry e = ent(q, (int64_t)(q % 2 ? 0xB : 0xA));
    assert_int_equal(fy_cq_put(cq, q, &e), 0);
  }
  assert_int_equal(fy_cq_max(cq), 4);
  /* a different entry at a written slot is corruption, and changes nothing */
  struct fy_cq_entry other = ent(2, 0xA);
  other.phys += 1;
  assert_int_equal(fy_cq_put(cq, 2, &other), -FY_ECORRUPT);
  other = ent(2, 0xC);
  assert_int_equal(fy_cq_put(cq, 2, &other), -FY_ECORRUPT);
  expect_entry(cq, 2);
  /* a gap is refused; max is still accepted */
  struct fy_cq_entry e5 = ent(5, 0);
  assert_int_equal(fy_cq_put(cq, 5, &e5), -FY_EDISCONTIG);
  assert_int_equal(fy_cq_max(cq), 4);
  struct fy_cq_entry e4 = ent(4, 0xA);
  assert_int_equal(fy_cq_put(cq, 4, &e4), 0);
  assert_int_equal(fy_cq_max(cq), 5);
  fy_cq_close(cq);
}

static void test_empty_queue_starts_anywhere(void **state) {
  (void)state;
  fy_cq *cq = open_cq(8);
  put_range(cq, 1003, 1006); /* file 1000 .. 1007, byte offset 20000 */
  assert_int_equal(fy_cq_min(cq), 1003);
  assert_int_equal(fy_cq_max(cq), 1006);
  assert_true(exists("00000000000000020000"));
  assert_int_equal(count_files(), 1);
  struct fy_cq_entry e;
  assert_int_equal(fy_cq_get(cq, 1002, &e), -FY_ENOT_FOUND);
  assert_int_equal(fy_cq_get(cq, 1000, &e), -FY_ENOT_FOUND);
  expect_entry(cq, 1003);
  /* a hole below min in an existing file (a page lost in a crash) is filled */
  struct fy_cq_entry e1001 = ent(1001, 0xB);
  assert_int_equal(fy_cq_put(cq, 1001, &e1001), 0);
  assert_int_equal(fy_cq_min(cq), 1001);
  /* below the first file: gone to retention, ignored */
  struct fy_cq_entry e5 = ent(5, 0xB);
  assert_int_equal(fy_cq_put(cq, 5, &e5), 0);
  assert_int_equal(fy_cq_min(cq), 1001);
  assert_int_equal(count_files(), 1);
  fy_cq_close(cq);

  cq = open_cq(8);
  assert_int_equal(fy_cq_min(cq), 1001);
  assert_int_equal(fy_cq_max(cq), 1006);
  assert_int_equal(fy_cq_max_phys(cq), 1006 * REC);
  fy_cq_close(cq);
}

static void test_roll_over(void **state) {
  (void)state;
  fy_cq *cq = open_cq(4);
  put_range(cq, 0, 4);
  assert_int_equal(count_files(), 1);
  assert_true(exists("00000000000000000000"));
  assert_int_equal(file_size("00000000000000000000"), 4 * 20);
  put_range(cq, 4, 5); /* first entry of the second file */
  assert_int_equal(count_files(), 2);
  assert_true(exists("00000000000000000080"));
  assert_int_equal(file_size("00000000000000000080"), 4 * 20);
  put_range(cq, 5, 10);
  assert_int_equal(count_files(), 3);
  assert_true(exists("00000000000000000160"));
  for (uint64_t q = 0; q < 10; q++)
    expect_entry(cq, q);
  assert_int_equal(fy_cq_max(cq), 10);
  fy_cq_close(cq);
}

static void test_reopen(void **state) {
  (void)state;
  fy_cq *cq = open_cq(1000);
  put_range(cq, 0, 1503); /* last file holds 3 entries at its start, the rest is sparse */
  fy_cq_close(cq);
  cq = open_cq(1000);
  assert_int_equal(fy_cq_min(cq), 0);
  assert_int_equal(fy_cq_max(cq), 1503);
  assert_int_equal(fy_cq_max_phys(cq), 1503 * REC);
  expect_entry(cq, 0);
  expect_entry(cq, 1502);
  struct fy_cq_entry e = ent(1503, 0xB);
  assert_int_equal(fy_cq_put(cq, 1503, &e), 0);
  fy_cq_close(cq);

  /* a file that ends exactly full: max is its end */
  fy_test_rmtree(root);
  mkdir(root, 0755);
  cq = open_cq(4);
  put_range(cq, 0, 8);
  fy_cq_close(cq);
  cq = open_cq(4);
  assert_int_equal(fy_cq_max(cq), 8);
  fy_cq_close(cq);

  /* the first file holds nothing (a hole): min is in the next one */
  fy_test_rmtree(root);
  mkdir(root, 0755);
  cq = open_cq(4);
  put_range(cq, 9, 11);
  fy_cq_close(cq);
  write_raw("00000000000000000000", 0, NULL, 0, 80);
  cq = open_cq(4);
  assert_int_equal(fy_cq_min(cq), 9);
  assert_int_equal(fy_cq_max(cq), 11);
  expect_entry(cq, 9);
  fy_cq_close(cq);

  /* files exist but hold nothing: empty at the first file's start */
  fy_test_rmtree(root);
  mkdir(root, 0755);
  cq = open_cq(4);
  fy_cq_close(cq);
  char p[1024];
  queue_path(p, sizeof p, "00000000000000000160");
  int fd = open(p, O_CREAT | O_RDWR, 0644);
  assert_true(fd >= 0);
  assert_int_equal(ftruncate(fd, 80), 0);
  close(fd);
  cq = open_cq(4);
  assert_int_equal(fy_cq_min(cq), 8);
  assert_int_equal(fy_cq_max(cq), 8);
  fy_cq_close(cq);
}

static void write_raw(const char *file, off_t off, const void *buf, size_t len, off_t size) {
  char p[1024];
  queue_path(p, sizeof p, file);
  int fd = open(p, O_CREAT | O_RDWR, 0644);
  assert_true(fd >= 0);
  if (size >= 0)
    assert_int_equal(ftruncate(fd, size), 0);
  if (len)
    assert_int_equal(pwrite(fd, buf, len, off), (ssize_t)len);
  close(fd);
}

static void test_untrusted_files(void **state) {
  (void)state;
  fy_cq *cq = open_cq(4);
  put_range(cq, 0, 6);
  fy_cq_close(cq);
  /* junk names are ignored */
  write_raw("junk", 0, "x", 1, -1);
  write_raw("123", 0, "x", 1, -1);
  write_raw("0000000000000000008a", 0, "x", 1, -1);
  char p[1024];
  queue_path(p, sizeof p, "00000000000000000800");
  assert_int_equal(mkdir(p, 0755), 0); /* a directory with a valid name */
  /* an entry with size 0 but other bytes set is unwritten */
  uint8_t torn[20] = {0};
  torn[0] = 0x77;
  write_raw("00000000000000000000", 3 * 20, torn, 20, -1);
  /* a file left empty by a crash between creating and sizing it is sized */
  write_raw("00000000000000000160", 0, NULL, 0, 0);
  cq = open_cq(4);
  assert_int_equal(file_size("00000000000000000160"), 80);
  assert_int_equal(fy_cq_min(cq), 0);
  assert_int_equal(fy_cq_max(cq), 6);
  expect_entry(cq, 4);
  expect_entry(cq, 5);
  struct fy_cq_entry e;
  assert_int_equal(fy_cq_get(cq, 3, &e), -FY_ENOT_FOUND);
  /* the torn slot is filled by re-dispatch */
  e = ent(3, 0xB);
  assert_int_equal(fy_cq_put(cq, 3, &e), 0);
  expect_entry(cq, 3);
  fy_cq_close(cq);
  rmdir(p);
}

/* Files of another size, or named off the file grid, were written with
 * another mappedFileSizeConsumeQueue (or damaged): resizing them would cut
 * entries off or misplace them, so opening fails and leaves them alone. */
static void test_wrong_file_size_refused(void **state) {
  (void)state;
  fy_cq *cq = open_cq(8); /* 160-byte files */
  put_range(cq, 0, 20);   /* three files: 0, 160, 320 */
  fy_cq_close(cq);
  fy_cq *other = NULL;
  assert_int_equal(fy_cq_open(root, TOPIC, QID, 4, &other), -FY_ECONFIG); /* smaller */
  assert_null(other);
  assert_int_equal(file_size("00000000000000000000"), 160);
  assert_int_equal(fy_cq_open(root, TOPIC, QID, 16, &other), -FY_ECONFIG); /* larger */
  assert_null(other);
  assert_int_equal(file_size("00000000000000000000"), 160);
  assert_int_equal(file_size("00000000000000000160"), 160);
  cq = open_cq(8); /* the right size still opens, every entry intact */
  assert_int_equal(fy_cq_max(cq), 20);
  for (uint64_t q = 0; q < 20; q++)
    expect_entry(cq, q);
  fy_cq_close(cq);

  /* a damaged length: cut short, or grown */
  write_raw("00000000000000000160", 0, NULL, 0, 28);
  assert_int_equal(fy_cq_open(root, TOPIC, QID, 8, &other), -FY_ECONFIG);
  assert_int_equal(file_size("00000000000000000160"), 28);
  write_raw("00000000000000000160", 0, NULL, 0, 4096);
  assert_int_equal(fy_cq_open(root, TOPIC, QID, 8, &other), -FY_ECONFIG);
  write_raw("00000000000000000160", 0, NULL, 0, 160);

  /* a well-formed name off the grid */
  write_raw("00000000000000000080", 0, "x", 1, 160);
  assert_int_equal(fy_cq_open(root, TOPIC, QID, 8, &other), -FY_ECONFIG);
}

static void test_scan_tags(void **state) {
  (void)state;
  fy_cq *cq = open_cq(4);
  put_range(cq, 2, 20); /* even offsets tag 0xA, odd 0xB; starts mid-file */
  struct fy_cq_entry out[32];
  uint64_t qo[32];
  uint64_t next;
  int64_t a = 0xA, b = 0xB, none = 0x99, both[2] = {0xB, 0xA};

  /* all entries, from below min */
  size_t n = fy_cq_scan(cq, 0, 32, 100, NULL, 0, out, qo, &next);
  assert_int_equal(n, 18);
  assert_int_equal(qo[0], 2);
  assert_int_equal(qo[17], 19);
  assert_int_equal(out[17].phys, 19 * REC);
  assert_int_equal(next, 20);

  /* tag filter */
  n = fy_cq_scan(cq, 2, 32, 100, &b, 1, out, qo, &next);
  assert_int_equal(n, 9);
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(qo[i] % 2, 1);
    assert_int_equal(out[i].tag_hash, 0xB);
  }
  n = fy_cq_scan(cq, 2, 32, 100, both, 2, out, qo, &next);
  assert_int_equal(n, 18);

  /* max_out stops after the last entry returned */
  n = fy_cq_scan(cq, 2, 3, 100, &a, 1, out, qo, &next);
  assert_int_equal(n, 3);
  assert_int_equal(qo[2], 6);
  assert_int_equal(next, 7);

  /* max_scan bounds the entries examined, matching or not */
  n = fy_cq_scan(cq, 3, 32, 5, &a, 1, out, qo, &next);
  assert_int_equal(n, 2); /* examined 3..7: 4 and 6 match */
  assert_int_equal(next, 8);
  n = fy_cq_scan(cq, 2, 32, 7, &none, 1, out, qo, &next);
  assert_int_equal(n, 0);
  assert_int_equal(next, 9);
  /* continuing from next goes on to the end */
  n = fy_cq_scan(cq, next, 32, 1000, &none, 1, out, qo, &next);
  assert_int_equal(n, 0);
  assert_int_equal(next, 20);

  /* at and past max, and a zero budget: nothing examined */
  n = fy_cq_scan(cq, 20, 32, 100, NULL, 0, out, qo, &next);
  assert_int_equal(n, 0);
  assert_int_equal(next, 20);
  n = fy_cq_scan(cq, 5, 32, 0, NULL, 0, out, qo, &next);
  assert_int_equal(n, 0);
  assert_int_equal(next, 5);
  fy_cq_close(cq);
}

/* Fake commit log: a store time per phys offset, -1 = unreadable. */
struct fake_times {
  int64_t ts[64];
  unsigned calls;
};

static int64_t fake_ts(void *arg, const struct fy_cq_entry *e) {
  struct fake_times *t = arg;
  t->calls++;
  uint64_t q = e->phys / REC;
  assert_true(q < 64);
  return t->ts[q];
}

static void test_offset_for_time(void **state) {
  (void)state;
  fy_cq *cq = open_cq(4);
  struct fake_times t = {0};
  /* empty queue */
  assert_int_equal(fy_cq_offset_for_time(cq, 1000, fake_ts, &t), 0);
  assert_int_equal(t.calls, 0);

  /* offsets 10..29; times 1000, 1010, 1010, 1010, 1040, ... */
  put_range(cq, 10, 30);
  for (uint64_t q = 10; q < 30; q++)
    t.ts[q] = 1000 + (int64_t)(q - 10) * 10;
  t.ts[12] = t.ts[13] = 1010; /* duplicates: 11, 12, 13 share 1010 */
  assert_int_equal(fy_cq_offset_for_time(cq, 0, fake_ts, &t), 10);     /* all newer */
  assert_int_equal(fy_cq_offset_for_time(cq, 1000, fake_ts, &t), 10);
  assert_int_equal(fy_cq_offset_for_time(cq, 1001, fake_ts, &t), 11);
  assert_int_equal(fy_cq_offset_for_time(cq, 1010, fake_ts, &t), 11); /* first of equals */
  assert_int_equal(fy_cq_offset_for_time(cq, 1011, fake_ts, &t), 14);
  assert_int_equal(fy_cq_offset_for_time(cq, 1190, fake_ts, &t), 29);
  assert_int_equal(fy_cq_offset_for_time(cq, 1191, fake_ts, &t), 30); /* all older: max */
  assert_int_equal(fy_cq_offset_for_time(cq, INT64_MAX, fake_ts, &t), 30);

  /* unreadable records (gone to commit-log retention) count as older */
  t.ts[10] = t.ts[11] = t.ts[12] = -1;
  assert_int_equal(fy_cq_offset_for_time(cq, 0, fake_ts, &t), 13);
  assert_int_equal(fy_cq_offset_for_time(cq, 1030, fake_ts, &t), 14);
  assert_int_equal(fy_cq_offset_for_time(cq, -5, fake_ts, &t), 13);
  assert_int_equal(fy_cq_offset_for_time(cq, INT64_MIN, fake_ts, &t), 13);

  /* the search is logarithmic */
  t.calls = 0;
  fy_cq_offset_for_time(cq, 1100, fake_ts, &t);
  assert_true(t.calls <= 6);
  fy_cq_close(cq);
}

static void test_truncate_phys(void **state) {
  (void)state;
  fy_cq *cq = open_cq(4);
  put_range(cq, 0, 10); /* files 0 (0-3), 80 (4-7), 160 (8-9) */
  assert_int_equal(count_files(), 3);
  /* nothing at or past the end: unchanged */
  assert_int_equal(fy_cq_truncate_phys(cq, 10 * REC), 0);
  assert_int_equal(fy_cq_max(cq), 10);

  /* cut inside the second file: the third goes, the second is cut after 5 */
  assert_int_equal(fy_cq_truncate_phys(cq, 5 * REC + 50), 0);
  assert_int_equal(fy_cq_min(cq), 0);
  assert_int_equal(fy_cq_max(cq), 6);
  assert_int_equal(fy_cq_max_phys(cq), 6 * REC);
  assert_int_equal(count_files(), 2);
  assert_false(exists("00000000000000000160"));
  for (uint64_t q = 0; q < 6; q++)
    expect_entry(cq, q);
  struct fy_cq_entry e;
  assert_int_equal(fy_cq_get(cq, 6, &e), -FY_ENOT_FOUND);
  /* re-dispatch after the cut, with different records than before */
  struct fy_cq_entry n6 = {.phys = 777, .size = 10, .tag_hash = 1};
  assert_int_equal(fy_cq_put(cq, 6, &n6), 0);
  assert_int_equal(fy_cq_get(cq, 6, &e), 0);
  assert_int_equal(e.phys, 777);
  fy_cq_close(cq);

  cq = open_cq(4);
  assert_int_equal(fy_cq_max(cq), 7);
  /* cut exactly at a file boundary: the second file is emptied and deleted */
  assert_int_equal(fy_cq_truncate_phys(cq, 4 * REC), 0);
  assert_int_equal(fy_cq_max(cq), 4);
  assert_int_equal(count_files(), 1);
  put_range(cq, 4, 5); /* recreated */
  assert_int_equal(count_files(), 2);
  /* cut everything: the first file is kept, the queue is empty at its old min */
  assert_int_equal(fy_cq_truncate_phys(cq, 0), 0);
  assert_int_equal(fy_cq_min(cq), 0);
  assert_int_equal(fy_cq_max(cq), 0);
  assert_int_equal(fy_cq_max_phys(cq), 0);
  assert_int_equal(count_files(), 1);
  assert_int_equal(fy_cq_get(cq, 0, &e), -FY_ENOT_FOUND);
  put_range(cq, 0, 2);
  assert_int_equal(fy_cq_max(cq), 2);
  fy_cq_close(cq);
}

static void test_trim_below(void **state) {
  (void)state;
  fy_cq *cq = open_cq(4);
  put_range(cq, 0, 10); /* entry q covers [q*100, q*100+100) */
  assert_int_equal(fy_cq_trim_below(cq, 399), 0); /* entry 3 ends at 400 */
  assert_int_equal(fy_cq_min(cq), 0);
  assert_int_equal(fy_cq_trim_below(cq, 400), 1);
  assert_false(exists("00000000000000000000"));
  assert_int_equal(fy_cq_min(cq), 4);
  struct fy_cq_entry e;
  assert_int_equal(fy_cq_get(cq, 3, &e), -FY_ENOT_FOUND);
  expect_entry(cq, 4);
  /* never the file holding the last entry */
  assert_int_equal(fy_cq_trim_below(cq, UINT64_MAX), 1);
  assert_int_equal(fy_cq_min(cq), 8);
  assert_int_equal(fy_cq_max(cq), 10);
  assert_true(exists("00000000000000000160"));
  assert_int_equal(fy_cq_trim_below(cq, UINT64_MAX), 0);
  /* an empty trailing file (created, then a crash) does not make the file
   * holding the last entry deletable */
  write_raw("00000000000000000240", 0, NULL, 0, 80);
  fy_cq_close(cq);
  cq = open_cq(4);
  assert_int_equal(fy_cq_max(cq), 10);
  assert_int_equal(fy_cq_trim_below(cq, UINT64_MAX), 0);
  expect_entry(cq, 9);
  /* a stale re-dispatch below retention is ignored */
  struct fy_cq_entry old = ent(1, 0xB);
  assert_int_equal(fy_cq_put(cq, 1, &old), 0);
  assert_int_equal(fy_cq_min(cq), 8);
  fy_cq_close(cq);
  cq = open_cq(4);
  assert_int_equal(fy_cq_min(cq), 8);
  assert_int_equal(fy_cq_max(cq), 10);
  fy_cq_close(cq);

  /* at most FY_CQ_TRIM_MAX per call */
  fy_test_rmtree(root);
  mkdir(root, 0755);
  cq = open_cq(1);
  put_range(cq, 0, FY_CQ_TRIM_MAX + 5);
  assert_int_equal(fy_cq_trim_below(cq, UINT64_MAX), FY_CQ_TRIM_MAX);
  assert_int_equal(fy_cq_min(cq), FY_CQ_TRIM_MAX);
  assert_int_equal(fy_cq_trim_below(cq, UINT64_MAX), 4);
  assert_int_equal(fy_cq_min(cq), FY_CQ_TRIM_MAX + 4);
  assert_int_equal(count_files(), 1);
  fy_cq_close(cq);
}

static void test_mappings_bounded(void **state) {
  (void)state;
  fy_cq *cq = open_cq(2);
  put_range(cq, 0, 200); /* 100 files */
  fy_cq_close(cq);
  cq = open_cq(2);
  assert_true(fy__cq_mapped_count(cq) <= 4);
  for (uint64_t q = 0; q < 200; q++)
    expect_entry(cq, q);
  assert_true(fy__cq_mapped_count(cq) <= 4);
  struct fy_cq_entry out[256];
  uint64_t qo[256], next;
  assert_int_equal(fy_cq_scan(cq, 0, 256, 256, NULL, 0, out, qo, &next), 200);
  assert_true(fy__cq_mapped_count(cq) <= 4);
  fy_cq_close(cq);
}

static void test_destroy(void **state) {
  (void)state;
  fy_cq *cq = open_cq(4);
  fy_cq *other;
  assert_int_equal(fy_cq_open(root, TOPIC, QID + 1, 4, &other), 0);
  put_range(cq, 0, 6);
  write_raw("junk", 0, "x", 1, -1);
  assert_int_equal(fy_cq_destroy(cq), 0);
  assert_false(exists(NULL));
  char p[1024];
  snprintf(p, sizeof p, "%s/consumequeue/%s", root, TOPIC);
  struct stat st;
  assert_int_equal(stat(p, &st), 0); /* the other queue is still there */
  assert_int_equal(fy_cq_destroy(other), 0);
  assert_int_not_equal(stat(p, &st), 0);
}

/* With a loop, the next file is made on the thread pool once the queue is
 * halfway through a file; puts go on into it; a queue destroyed while the
 * next file is being made leaves nothing behind. */
/* Runs the loop until the thread-pool work queued so far is done. */
static bool exists_after_loop(uv_loop_t *loop, const char *file) {
  uv_run(loop, UV_RUN_DEFAULT); /* nothing else keeps this loop alive */
  return exists(file);
}

static void test_next_file_ahead(void **state) {
  (void)state;
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  fy_cq *cq = open_cq(8);
  fy_cq_use_loop(cq, &loop);
  put_range(cq, 0, 4);
  assert_int_equal(uv_run(&loop, UV_RUN_NOWAIT), 0); /* nothing queued below half */
  assert_false(exists("00000000000000000160"));
  put_range(cq, 4, 5); /* halfway: the file at entry 8 (byte 160) is made ahead */
  assert_true(exists_after_loop(&loop, "00000000000000000160"));
  assert_int_equal(file_size("00000000000000000160"), 8 * FY_CQ_ENTRY_SIZE);
  put_range(cq, 5, 13);
  for (uint64_t q = 0; q < 13; q++)
    expect_entry(cq, q);
  assert_true(exists_after_loop(&loop, "00000000000000000320"));
  fy_cq_close(cq);
  cq = open_cq(8); /* an empty file made ahead reads as unwritten entries */
  assert_int_equal(fy_cq_max(cq), 13);
  for (uint64_t q = 0; q < 13; q++)
    expect_entry(cq, q);
  fy_cq_use_loop(cq, &loop);
  put_range(cq, 13, 21); /* halfway through the third file: the fourth is being made */
  assert_int_equal(fy_cq_destroy(cq), 0);
  assert_int_equal(fy_test_loop_finish(&loop), 0); /* the late file is deleted, dirs too */
  assert_false(exists(NULL));
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

  fy_cq *cq = open_cq(4);
  assert_true(fy_cq_dirty(cq)); /* the new directories are not synced yet */
  put_range(cq, 0, 6);
  assert_true(fy_cq_dirty(cq));

  struct flush_rec r1 = {0}, r2 = {0};
  assert_int_equal(fy_cq_flush(cq, aio, on_flushed, &r1), 0);
  assert_false(r1.done); /* never from inside the call */
  assert_false(fy_cq_dirty(cq));
  assert_int_equal(fy_cq_flush(cq, aio, on_flushed, &r2), -FY_EBUSY);
  /* stored while the flush is in flight: left for the next one */
  put_range(cq, 6, 7);
  assert_true(fy_cq_dirty(cq));
  assert_true(fy_test_run_until(&loop, &r1.done, 10000));
  assert_int_equal(r1.status, 0);
  assert_int_equal(r1.calls, 1);
  assert_true(fy_cq_dirty(cq));
  assert_int_equal(fy_cq_flush(cq, aio, on_flushed, &r2), 0);
  assert_true(fy_test_run_until(&loop, &r2.done, 10000));
  assert_int_equal(r2.status, 0);
  assert_false(fy_cq_dirty(cq));

  /* nothing dirty: the callback still comes */
  struct flush_rec r3 = {0};
  assert_int_equal(fy_cq_flush(cq, aio, on_flushed, &r3), 0);
  assert_true(fy_test_run_until(&loop, &r3.done, 10000));
  assert_int_equal(r3.status, 0);

  /* a failed fdatasync is reported once, with the error */
  put_range(cq, 7, 9); /* two files dirty */
  fy_aio_inject_fault(aio, FY_AIO_FDATASYNC, 0, 1, -EIO);
  struct flush_rec r4 = {0};
  assert_int_equal(fy_cq_flush(cq, aio, on_flushed, &r4), 0);
  assert_true(fy_test_run_until(&loop, &r4.done, 10000));
  assert_int_equal(r4.status, -EIO);
  assert_int_equal(r4.calls, 1);

  /* closing with a flush in flight: the flush still completes and calls back */
  put_range(cq, 9, 10);
  struct flush_rec r5 = {0};
  assert_int_equal(fy_cq_flush(cq, aio, on_flushed, &r5), 0);
  fy_cq_close(cq);
  assert_true(fy_test_run_until(&loop, &r5.done, 10000));
  assert_int_equal(r5.status, 0);
  assert_int_equal(r5.calls, 1);

  /* entries made durable are all there */
  cq = open_cq(4);
  assert_int_equal(fy_cq_max(cq), 10);
  /* trimming and truncating during a flush is safe (the flush owns dup()ed fds) */
  put_range(cq, 10, 13);
  struct flush_rec r6 = {0};
  assert_int_equal(fy_cq_flush(cq, aio, on_flushed, &r6), 0);
  assert_int_equal(fy_cq_truncate_phys(cq, 9 * REC), 0);
  assert_int_equal(fy_cq_trim_below(cq, 8 * REC), 2);
  assert_true(fy_test_run_until(&loop, &r6.done, 10000));
  assert_int_equal(r6.status, 0);
  assert_int_equal(fy_cq_destroy(cq), 0);

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

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_put_get, setup, teardown),
      cmocka_unit_test_setup_teardown(test_puts_zap_behind, setup, teardown),
      cmocka_unit_test_setup_teardown(test_zap_phases, setup, teardown),
      cmocka_unit_test_setup_teardown(test_populate_ahead, setup, teardown),
      cmocka_unit_test_setup_teardown(test_write_mapping_random, setup, teardown),
      cmocka_unit_test_setup_teardown(test_idempotent_conflict_gap, setup, teardown),
      cmocka_unit_test_setup_teardown(test_empty_queue_starts_anywhere, setup, teardown),
      cmocka_unit_test_setup_teardown(test_roll_over, setup, teardown),
      cmocka_unit_test_setup_teardown(test_reopen, setup, teardown),
      cmocka_unit_test_setup_teardown(test_untrusted_files, setup, teardown),
      cmocka_unit_test_setup_teardown(test_wrong_file_size_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(test_scan_tags, setup, teardown),
      cmocka_unit_test_setup_teardown(test_offset_for_time, setup, teardown),
      cmocka_unit_test_setup_teardown(test_truncate_phys, setup, teardown),
      cmocka_unit_test_setup_teardown(test_trim_below, setup, teardown),
      cmocka_unit_test_setup_teardown(test_mappings_bounded, setup, teardown),
      cmocka_unit_test_setup_teardown(test_destroy, setup, teardown),
      cmocka_unit_test_setup_teardown(test_next_file_ahead, setup, teardown),
      cmocka_unit_test_setup_teardown(test_flush, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
