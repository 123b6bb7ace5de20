/* Batch clock reads (src/common/clock.c): inside a scope every read returns
 * the scope's first reading of that clock; outside, and in a new scope or
 * another thread, the clock is read again. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <time.h>

#include "common/clock.h"

static uint64_t raw_ns(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Spins until both clocks have moved at least 3 ms on: a condition, not a
 * guess at how long something takes. Fails after 10 s. */
static void let_time_pass(void) {
  uint64_t mono0 = raw_ns(CLOCK_MONOTONIC), real0 = raw_ns(CLOCK_REALTIME);
  uint64_t deadline = mono0 + UINT64_C(10000000000);
  while (raw_ns(CLOCK_MONOTONIC) < mono0 + 3000000 || raw_ns(CLOCK_REALTIME) < real0 + 3000000)
    assert_true(raw_ns(CLOCK_MONOTONIC) < deadline);
}

static void test_outside_a_scope_every_read_is_fresh(void **state) {
  (void)state;
  uint64_t m = fy_clock_mono_ns();
  int64_t r = fy_clock_real_ms();
  let_time_pass();
  assert_true(fy_clock_mono_ns() >= m + 3000000);
  assert_true(fy_clock_real_ms() >= r + 3);
}

static void test_a_scope_keeps_its_first_reading(void **state) {
  (void)state;
  uint64_t before = raw_ns(CLOCK_MONOTONIC);
  fy_clock_batch_begin();
  uint64_t m = fy_clock_mono_ns();
  int64_t r = fy_clock_real_ms();
  assert_true(m >= before);
  assert_true(r * 1000000 <= (int64_t)raw_ns(CLOCK_REALTIME));
  let_time_pass();
  assert_int_equal(fy_clock_mono_ns(), m);
  assert_int_equal(fy_clock_real_ms(), r);
  fy_clock_batch_end();
  assert_true(fy_clock_mono_ns() >= m + 3000000);
  assert_true(fy_clock_real_ms() >= r + 3);
}

/* Each clock is cached at its own first read, not at the scope's start. */
static void test_each_clock_is_read_when_first_asked(void **state) {
  (void)state;
  uint64_t real_at_start = raw_ns(CLOCK_REALTIME);
  fy_clock_batch_begin();
  uint64_t m = fy_clock_mono_ns();
  let_time_pass();
  int64_t r = fy_clock_real_ms();
  assert_true((uint64_t)r * 1000000 + 1000000 >= real_at_start + 3000000);
  let_time_pass();
  assert_int_equal(fy_clock_real_ms(), r);
  assert_int_equal(fy_clock_mono_ns(), m);
  fy_clock_batch_end();
}

static void test_nested_scopes_keep_the_reading_until_the_outermost_ends(void **state) {
  (void)state;
  fy_clock_batch_begin();
  fy_clock_batch_begin();
  uint64_t m = fy_clock_mono_ns();
  fy_clock_batch_end();
  let_time_pass();
  assert_int_equal(fy_clock_mono_ns(), m);
  fy_clock_batch_end();
  assert_true(fy_clock_mono_ns() >= m + 3000000);

  /* A new scope reads again. */
  fy_clock_batch_begin();
  uint64_t m2 = fy_clock_mono_ns();
  assert_true(m2 >= m + 3000000);
  fy_clock_batch_end();
}

static void *other_thread(void *arg) {
  *(uint64_t *)arg = fy_clock_mono_ns();
  return NULL;
}

static void test_scopes_are_per_thread(void **state) {
  (void)state;
  fy_clock_batch_begin();
  uint64_t m = fy_clock_mono_ns();
  let_time_pass();
  uint64_t theirs = 0;
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, other_thread, &theirs), 0);
  assert_int_equal(pthread_join(t, NULL), 0);
  assert_true(theirs >= m + 3000000);
  assert_int_equal(fy_clock_mono_ns(), m);
  fy_clock_batch_end();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_outside_a_scope_every_read_is_fresh),
      cmocka_unit_test(test_a_scope_keeps_its_first_reading),
      cmocka_unit_test(test_each_clock_is_read_when_first_asked),
      cmocka_unit_test(test_nested_scopes_keep_the_reading_until_the_outermost_ends),
      cmocka_unit_test(test_scopes_are_per_thread),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
