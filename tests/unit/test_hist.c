/* The latency histogram (src/common/hist.c): bucket boundaries cover
 * the whole uint64_t range without gaps, every bucket is narrow enough for a
 * 1/64 relative error, and percentiles are never below the exact value. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>

#include "common/hist.h"

static void test_exact_below_sub(void **state) {
  (void)state;
  for (uint64_t v = 0; v < FY_HIST_SUB; v++) {
    uint64_t lo, hi;
    assert_int_equal(fy_hist_bucket(v), v);
    fy_hist_bucket_range((uint32_t)v, &lo, &hi);
    assert_int_equal(lo, v);
    assert_int_equal(hi, v);
  }
}

/* Consecutive buckets tile [0, UINT64_MAX]; each is at most lo/64 wide. */
static void test_buckets_tile_the_range(void **state) {
  (void)state;
  uint64_t next = 0;
  for (uint32_t b = 0; b < FY_HIST_BUCKETS; b++) {
    uint64_t lo, hi;
    fy_hist_bucket_range(b, &lo, &hi);
    assert_int_equal(lo, next);
    assert_true(hi >= lo);
    if (lo >= FY_HIST_SUB)
      assert_true(hi - lo + 1 <= lo / FY_HIST_SUB);
    assert_int_equal(fy_hist_bucket(lo), b);
    assert_int_equal(fy_hist_bucket(hi), b);
    if (b + 1 < FY_HIST_BUCKETS)
      next = hi + 1;
    else
      assert_true(hi == UINT64_MAX);
  }
}

static void test_values_land_in_their_bucket(void **state) {
  (void)state;
  uint64_t x = 88172645463325252ull; /* xorshift64 */
  for (int i = 0; i < 100000; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    uint64_t v = x >> (i % 64); /* all magnitudes */
    uint64_t lo, hi;
    fy_hist_bucket_range(fy_hist_bucket(v), &lo, &hi);
    assert_true(lo <= v);
    assert_true(v <= hi);
  }
}

static void test_empty(void **state) {
  (void)state;
  struct fy_hist *h = malloc(sizeof *h);
  fy_hist_init(h);
  assert_int_equal(h->count, 0);
  assert_int_equal(fy_hist_percentile(h, 50), 0);
  assert_int_equal(fy_hist_percentile(h, 100), 0);
  assert_true(fy_hist_mean(h) == 0.0);
  free(h);
}

static void test_percentiles_uniform(void **state) {
  (void)state;
  struct fy_hist *h = malloc(sizeof *h);
  fy_hist_init(h);
  enum { N = 100000 };
  for (uint64_t v = N; v >= 1; v--) /* order must not matter */
    fy_hist_record(h, v);
  assert_int_equal(h->count, N);
  assert_int_equal(h->min, 1);
  assert_int_equal(h->max, N);
  assert_true(fy_hist_mean(h) > (N + 1) / 2.0 - 0.001 && fy_hist_mean(h) < (N + 1) / 2.0 + 0.001);
  const double ps[] = {1, 10, 50, 90, 99, 99.9, 99.99};
  for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++) {
    double exact = ps[i] / 100.0 * N; /* the rank-th value of 1..N is the rank */
    uint64_t got = fy_hist_percentile(h, ps[i]);
    assert_true((double)got >= exact - 1e-6);
    assert_true((double)got <= exact * (1.0 + 1.0 / FY_HIST_SUB) + 1);
  }
  assert_int_equal(fy_hist_percentile(h, 0), 1);
  assert_int_equal(fy_hist_percentile(h, 100), N);
  free(h);
}

/* Percentiles are clamped to what was recorded: one value answers itself. */
static void test_single_value(void **state) {
  (void)state;
  struct fy_hist *h = malloc(sizeof *h);
  fy_hist_init(h);
  fy_hist_record(h, 123457);
  assert_int_equal(fy_hist_percentile(h, 0.1), 123457);
  assert_int_equal(fy_hist_percentile(h, 50), 123457);
  assert_int_equal(fy_hist_percentile(h, 99.9), 123457);
  fy_hist_record(h, UINT64_MAX);
  assert_true(fy_hist_percentile(h, 50) >= 123457);
  assert_true(fy_hist_percentile(h, 50) <= 123457 + 123457 / FY_HIST_SUB);
  assert_true(fy_hist_percentile(h, 100) == UINT64_MAX);
  free(h);
}

/* A bimodal distribution: the tail percentile must see the slow mode. */
static void test_tail_and_merge(void **state) {
  (void)state;
  struct fy_hist *a = malloc(sizeof *a), *b = malloc(sizeof *b);
  fy_hist_init(a);
  fy_hist_init(b);
  for (int i = 0; i < 990; i++)
    fy_hist_record(a, 1000);
  for (int i = 0; i < 10; i++)
    fy_hist_record(b, 5000000);
  fy_hist_merge(a, b);
  assert_int_equal(a->count, 1000);
  assert_int_equal(a->min, 1000);
  assert_int_equal(a->max, 5000000);
  assert_true(fy_hist_percentile(a, 99) <= 1000 * (1 + 1.0 / FY_HIST_SUB));
  assert_true(fy_hist_percentile(a, 99) >= 1000);
  assert_int_equal(fy_hist_percentile(a, 99.1), 5000000);
  assert_int_equal(fy_hist_percentile(a, 99.9), 5000000);
  free(a);
  free(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_exact_below_sub),
      cmocka_unit_test(test_buckets_tile_the_range),
      cmocka_unit_test(test_values_land_in_their_bucket),
      cmocka_unit_test(test_empty),
      cmocka_unit_test(test_percentiles_uniform),
      cmocka_unit_test(test_single_value),
      cmocka_unit_test(test_tail_and_merge),
  };
  return cmocka_run_group_tests_name("bench_hist", tests, NULL, NULL);
}
