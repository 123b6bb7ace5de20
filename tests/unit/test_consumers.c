/* consumers: membership from heartbeats, departures, and the change reports
 * RocketMQ clients are notified from (NOTIFY_CONSUMER_IDS_CHANGED). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/consumers.h"
#include "common/err.h"

struct changes {
  char groups[16][64];
  size_t n;
};

static void on_change(void *arg, const char *group) {
  struct changes *ch = arg;
  assert_true(ch->n < 16);
  snprintf(ch->groups[ch->n++], 64, "%s", group);
}

static struct fy_consumer_group_info group(const char *name, const char *topic) {
  struct fy_consumer_group_info g;
  memset(&g, 0, sizeof g);
  snprintf(g.group, sizeof g.group, "%s", name);
  snprintf(g.subs[0].topic, sizeof g.subs[0].topic, "%s", topic);
  snprintf(g.subs[0].expression, sizeof g.subs[0].expression, "TagA || TagB");
  g.nsubs = 1;
  return g;
}

static void expect(struct changes *ch, const char *a, const char *b) {
  size_t want = (a != NULL) + (b != NULL);
  assert_int_equal(ch->n, want);
  if (a)
    assert_string_equal(ch->groups[0], a);
  if (b)
    assert_string_equal(ch->groups[1], b);
  ch->n = 0;
}

static void test_membership_changes_are_reported(void **state) {
  (void)state;
  fy_consumers *c = fy_consumers_new(4);
  struct changes ch = {.n = 0};
  fy_consumers_on_change(c, on_change, &ch);
  int conn1, conn2;
  struct fy_consumer_group_info g1[2] = {group("G1", "T1"), group("G2", "T2")};

  assert_int_equal(fy_consumers_heartbeat(c, "c1", &conn1, g1, 1, 1000), 0);
  expect(&ch, "G1", NULL); /* joined */
  assert_int_equal(fy_consumers_heartbeat(c, "c1", &conn1, g1, 1, 2000), 0);
  expect(&ch, NULL, NULL); /* the same heartbeat again changes nothing */
  assert_int_equal(fy_consumers_heartbeat(c, "c1", &conn1, g1, 2, 3000), 0);
  expect(&ch, "G2", NULL);
  assert_int_equal(fy_consumers_heartbeat(c, "c2", &conn2, g1, 1, 3000), 0);
  expect(&ch, "G1", NULL);

  /* Listing and connections: sorted ids, both connections. */
  char **ids;
  size_t n;
  assert_int_equal(fy_consumers_list(c, "G1", &ids, &n), 0);
  assert_int_equal(n, 2);
  assert_string_equal(ids[0], "c1");
  assert_string_equal(ids[1], "c2");
  free(ids);
  void *conns[4];
  assert_int_equal(fy_consumers_conns(c, "G1", conns, 4), 2);
  assert_int_equal(fy_consumers_conns(c, "G1", conns, 1), 1);
  struct fy_subscription sub;
  assert_true(fy_consumers_subscription(c, "G2", "T2", &sub));
  assert_string_equal(sub.expression, "TagA || TagB");
  assert_false(fy_consumers_subscription(c, "G2", "T1", &sub));

  /* c1 drops G1 from its heartbeat: G1 changes, and when reported the
   * group lists only c2. */
  assert_int_equal(fy_consumers_heartbeat(c, "c1", &conn1, &g1[1], 1, 4000), 0);
  expect(&ch, "G1", NULL);
  assert_int_equal(fy_consumers_conns(c, "G1", conns, 4), 1);
  assert_ptr_equal(conns[0], &conn2);

  /* Unregistering from one group, then the connection closing. */
  fy_consumers_unregister(c, "c1", "G2");
  expect(&ch, "G2", NULL);
  assert_false(fy_consumers_group_online(c, "G2"));
  assert_int_equal(fy_consumers_conn_closed(c, &conn2), 1);
  expect(&ch, "G1", NULL);
  assert_int_equal(fy_consumers_count(c), 0);
  fy_consumers_free(c);
}

static void test_expiry_and_limits(void **state) {
  (void)state;
  fy_consumers *c = fy_consumers_new(1);
  struct changes ch = {.n = 0};
  fy_consumers_on_change(c, on_change, &ch);
  int conn;
  struct fy_consumer_group_info g = group("G", "T");
  assert_int_equal(fy_consumers_heartbeat(c, "c1", &conn, &g, 1, 1000), 0);
  assert_int_equal(fy_consumers_heartbeat(c, "c2", &conn, &g, 1, 1000), -FY_EBUSY);
  assert_int_equal(fy_consumers_heartbeat(c, "", &conn, &g, 1, 1000), -EINVAL);
  assert_int_equal(fy_consumers_heartbeat(c, "p1", &conn, NULL, 0, 1000), 0); /* producer only */
  assert_int_equal(fy_consumers_count(c), 1);
  ch.n = 0;
  assert_int_equal(fy_consumers_expire(c, 5000, 10000), 0);
  expect(&ch, NULL, NULL);
  assert_int_equal(fy_consumers_expire(c, 12000, 10000), 1);
  expect(&ch, "G", NULL);
  fy_consumers_free(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_membership_changes_are_reported),
      cmocka_unit_test(test_expiry_and_limits),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
