/* The broker's send-latency record (src/broker/send.c), which brokerStatus
 * shows as sendLatencyUs, sendLatencyUsLastMinute and sendLatencyBands:
 * the bands' edges, the summary since start, and the minute window's
 * rotation (including minutes without a send). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/broker_int.h"

#define MS 1000000ull /* ns */
#define S (1000 * MS)

/* A record whose minute starts at t0_ns. */
static struct fy_send_latency *lat_new(uint64_t t0_ns) {
  struct fy_send_latency *l = malloc(sizeof *l);
  assert_non_null(l);
  fy__send_latency_init(l, t0_ns);
  return l;
}

/* One send of us microseconds, replied at now_ns. */
static void rec(struct fy_send_latency *l, uint64_t us, uint64_t now_ns) {
  fy__send_latency_record(l, now_ns - us * 1000, now_ns);
}

/* The summary since start (minute false) or of the last full minute, as
 * of now_ns, is want. */
static void expect(struct fy_send_latency *l, bool minute, uint64_t now_ns, const char *want) {
  char out[128];
  fy__send_latency_summary(l, minute, now_ns, out, sizeof out);
  assert_string_equal(out, want);
}

static void test_bands_edges(void **state) {
  (void)state;
  uint64_t t = 1000 * S;
  struct fy_send_latency *l = lat_new(t);
  /* Each edge belongs to the band it closes; one past it to the next. */
  uint64_t vals[] = {0, 100, 101, 200, 201, 1000, 1001, 1000000, 1000001, 7000000};
  for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++)
    rec(l, vals[i], t + S);
  char out[512];
  fy__send_latency_bands(l, out, sizeof out);
  assert_string_equal(out, "<=100us:2 <=200us:2 <=500us:1 <=1ms:1 <=2ms:1 <=5ms:0 <=10ms:0 "
                           "<=50ms:0 <=100ms:0 <=500ms:0 <=1s:1 >1s:2");
  /* A short buffer is cut, never overrun. */
  char small[20];
  memset(small, 'x', sizeof small);
  fy__send_latency_bands(l, small, 12);
  assert_int_equal(strlen(small), 11);
  assert_int_equal(small[19], 'x');
  free(l);
}

static void test_summary_since_start(void **state) {
  (void)state;
  uint64_t t = 1000 * S;
  struct fy_send_latency *l = lat_new(t);
  expect(l, false, t, "count=0 p50=0 p99=0 p999=0 max=0");
  for (int i = 0; i < 980; i++)
    rec(l, 40, t + MS);
  for (int i = 0; i < 18; i++)
    rec(l, 3000, t + 2 * MS);
  rec(l, 2000000, t + 3 * S);
  rec(l, 2000000, t + 3 * S);
  /* Percentiles are the top of their bucket: 3000 lies in [2976, 3007]. */
  expect(l, false, t + 3 * S, "count=1000 p50=40 p99=3007 p999=2000000 max=2000000");
  /* A reply stamped before its arrival (clock step) counts as 0 us. */
  fy__send_latency_record(l, t + 10 * S, t + 9 * S);
  assert_int_equal(l->total.count, 1001);
  assert_int_equal(l->total.min, 0);
  free(l);
}

static void test_minute_window(void **state) {
  (void)state;
  uint64_t t = 1000 * S;
  struct fy_send_latency *l = lat_new(t);
  for (int i = 0; i < 100; i++)
    rec(l, 50, t + 10 * S);
  /* No full minute yet. */
  expect(l, true, t + 59 * S, "count=0 p50=0 p99=0 p999=0 max=0");
  /* The first minute has ended: it is the last full minute. */
  expect(l, true, t + 61 * S, "count=100 p50=50 p99=50 p999=50 max=50");
  /* A send in the second minute (from t + 60 s) leaves it as it is ... */
  rec(l, 700, t + 65 * S);
  expect(l, true, t + 119 * S, "count=100 p50=50 p99=50 p999=50 max=50");
  /* ... until that minute ends. (700 lies in [696, 703]; no percentile is
   * above the maximum.) */
  expect(l, true, t + 125 * S, "count=1 p50=700 p99=700 p999=700 max=700");
  /* A send in the minute from t + 120 s, then minutes without a send: the
   * last full minute is empty, not the one before it. */
  rec(l, 60, t + 130 * S);
  expect(l, true, t + 300 * S, "count=0 p50=0 p99=0 p999=0 max=0");
  /* The windows stay on whole minutes from the start: t + 300 s opened
   * the minute [t + 300 s, t + 360 s). */
  rec(l, 90, t + 359 * S);
  expect(l, true, t + 359 * S, "count=0 p50=0 p99=0 p999=0 max=0");
  expect(l, true, t + 360 * S, "count=1 p50=90 p99=90 p999=90 max=90");
  /* Since start keeps every send. */
  expect(l, false, t + 360 * S, "count=103 p50=50 p99=90 p999=700 max=700");
  free(l);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bands_edges),
      cmocka_unit_test(test_summary_since_start),
      cmocka_unit_test(test_minute_window),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
