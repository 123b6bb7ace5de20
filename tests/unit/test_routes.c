/* Name-server route table: registration, master-only topic updates, drops, expiry, routes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "namesrv/routes.h"

static struct fy_ns_topic topic(const char *name, uint32_t q) {
  struct fy_ns_topic t = {.read_queues = q, .write_queues = q, .perm = 6};
  strcpy(t.name, name);
  return t;
}

static int reg_in(fy_routes *r, const char *cluster, const char *name, uint64_t id,
                  const char *addr, const struct fy_ns_topic *topics, size_t n, void *conn,
                  int64_t now) {
  char m[FY_NS_ADDR_MAX], h[FY_NS_ADDR_MAX];
  struct fy_ns_registration g = {.cluster = cluster, .broker_name = name,
                                 .broker_addr = addr, .broker_id = id, .ha_addr = "127.0.0.1:10912",
                                 .topics = topics, .ntopics = n, .conn = conn};
  return fy_routes_register(r, &g, now, m, h);
}

static int reg(fy_routes *r, const char *name, uint64_t id, const char *addr,
               const struct fy_ns_topic *topics, size_t n, void *conn, int64_t now) {
  return reg_in(r, "DefaultCluster", name, id, addr, topics, n, conn, now);
}

static void test_route_lists_queues_and_all_addresses(void **state) {
  (void)state;
  fy_routes *r = fy_routes_new(16, 100);
  struct fy_ns_topic ta[] = {topic("T", 8), topic("OnlyA", 2)};
  struct fy_ns_topic tb[] = {topic("T", 4)};
  int c1, c2, c3;
  assert_int_equal(reg(r, "broker-a", 0, "127.0.0.1:10911", ta, 2, &c1, 0), 0);
  assert_int_equal(reg(r, "broker-a", 1, "127.0.0.1:10921", NULL, 0, &c2, 0), 0);
  assert_int_equal(reg(r, "broker-b", 0, "127.0.0.1:10931", tb, 1, &c3, 0), 0);

  struct fy_ns_route route;
  assert_int_equal(fy_routes_get(r, "T", &route), 0);
  assert_int_equal(route.nqueues, 2);
  assert_int_equal(route.nbrokers, 2);
  for (size_t i = 0; i < route.nbrokers; i++) {
    if (strcmp(route.brokers[i].broker_name, "broker-a") == 0) {
      assert_int_equal(route.brokers[i].naddrs, 2);
      assert_int_equal(route.brokers[i].addrs[0].broker_id, 0);
      assert_string_equal(route.brokers[i].addrs[1].addr, "127.0.0.1:10921");
    } else {
      assert_int_equal(route.brokers[i].naddrs, 1);
    }
  }
  for (size_t i = 0; i < route.nqueues; i++)
    assert_int_equal(route.queues[i].write_queues,
                     strcmp(route.queues[i].broker_name, "broker-a") == 0 ? 8 : 4);
  fy_ns_route_free(&route);
  assert_int_equal(fy_routes_get(r, "Nope", &route), -FY_ENOT_FOUND);
  fy_routes_free(r);
}

static void test_slave_does_not_change_topics_and_master_replaces_them(void **state) {
  (void)state;
  fy_routes *r = fy_routes_new(16, 100);
  struct fy_ns_topic t1[] = {topic("A", 8), topic("B", 8)};
  struct fy_ns_topic slave_topics[] = {topic("Bogus", 1)};
  int c;
  reg(r, "bn", 0, "127.0.0.1:1", t1, 2, &c, 0);
  reg(r, "bn", 1, "127.0.0.1:2", slave_topics, 1, &c, 0);
  struct fy_ns_route route;
  assert_int_equal(fy_routes_get(r, "Bogus", &route), -FY_ENOT_FOUND);
  struct fy_ns_topic t2[] = {topic("A", 16)};
  reg(r, "bn", 0, "127.0.0.1:1", t2, 1, &c, 1);
  assert_int_equal(fy_routes_get(r, "B", &route), -FY_ENOT_FOUND);
  assert_int_equal(fy_routes_get(r, "A", &route), 0);
  assert_int_equal(route.queues[0].read_queues, 16);
  fy_ns_route_free(&route);
  fy_routes_free(r);
}

/* RocketMQ's DELETE_TOPIC_IN_NAMESRV: the whole topic, or one cluster's
 * brokers' queues; the master's next registration brings it back. */
static void test_delete_topic(void **state) {
  (void)state;
  fy_routes *r = fy_routes_new(16, 100);
  struct fy_ns_topic ta[] = {topic("T", 8), topic("U", 2)};
  struct fy_ns_topic tb[] = {topic("T", 4)};
  int c1, c2;
  assert_int_equal(reg_in(r, "C1", "broker-a", 0, "127.0.0.1:10911", ta, 2, &c1, 0), 0);
  assert_int_equal(reg_in(r, "C2", "broker-b", 0, "127.0.0.1:10931", tb, 1, &c2, 0), 0);
  struct fy_ns_route route;

  assert_int_equal(fy_routes_delete_topic(r, "Nope", NULL), 0);
  assert_int_equal(fy_routes_delete_topic(r, "T", "NoSuchCluster"), 0);
  assert_int_equal(fy_routes_delete_topic(r, "T", "C2"), 1); /* broker-b's queues only */
  assert_int_equal(fy_routes_get(r, "T", &route), 0);
  assert_int_equal(route.nqueues, 1);
  assert_string_equal(route.queues[0].broker_name, "broker-a");
  fy_ns_route_free(&route);

  assert_int_equal(fy_routes_delete_topic(r, "T", ""), 1); /* "": every cluster */
  assert_int_equal(fy_routes_get(r, "T", &route), -FY_ENOT_FOUND);
  assert_int_equal(fy_routes_get(r, "U", &route), 0); /* other topics stay */
  fy_ns_route_free(&route);

  assert_int_equal(reg_in(r, "C1", "broker-a", 0, "127.0.0.1:10911", ta, 2, &c1, 1), 0);
  assert_int_equal(fy_routes_get(r, "T", &route), 0);
  assert_int_equal(route.nqueues, 1);
  fy_ns_route_free(&route);
  fy_routes_free(r);
}

static void test_master_gone_slave_keeps_route(void **state) {
  (void)state;
  fy_routes *r = fy_routes_new(16, 100);
  struct fy_ns_topic t[] = {topic("T", 4)};
  int cm, cs;
  reg(r, "bn", 0, "127.0.0.1:1", t, 1, &cm, 0);
  reg(r, "bn", 1, "127.0.0.1:2", NULL, 0, &cs, 0);
  assert_int_equal(fy_routes_conn_closed(r, &cm), 1);
  struct fy_ns_route route;
  assert_int_equal(fy_routes_get(r, "T", &route), 0);
  assert_int_equal(route.nbrokers, 1);
  assert_int_equal(route.brokers[0].naddrs, 1);
  assert_int_equal(route.brokers[0].addrs[0].broker_id, 1);
  fy_ns_route_free(&route);
  /* The slave learns there is no master. */
  char m[FY_NS_ADDR_MAX], h[FY_NS_ADDR_MAX];
  struct fy_ns_registration g = {.cluster = "C", .broker_name = "bn", .broker_addr = "127.0.0.1:2",
                                 .broker_id = 1, .conn = &cs};
  assert_int_equal(fy_routes_register(r, &g, 0, m, h), 0);
  assert_string_equal(m, "");
  /* Last address gone: the topic goes too. */
  assert_int_equal(fy_routes_unregister(r, "127.0.0.1:2"), 0);
  assert_int_equal(fy_routes_get(r, "T", &route), -FY_ENOT_FOUND);
  assert_int_equal(fy_routes_unregister(r, "127.0.0.1:2"), -FY_ENOT_FOUND);
  fy_routes_free(r);
}

static void test_expiry(void **state) {
  (void)state;
  fy_routes *r = fy_routes_new(16, 100);
  struct fy_ns_topic t[] = {topic("T", 4)};
  int c;
  reg(r, "a", 0, "127.0.0.1:1", t, 1, &c, 0);
  reg(r, "b", 0, "127.0.0.1:3", t, 1, &c, 100000);
  assert_int_equal(fy_routes_expire(r, 120000, 120000), 0);
  assert_int_equal(fy_routes_expire(r, 120001, 120000), 1);
  assert_int_equal(fy_routes_broker_count(r), 1);
  struct fy_ns_route route;
  assert_int_equal(fy_routes_get(r, "T", &route), 0);
  assert_int_equal(route.nqueues, 1);
  assert_string_equal(route.queues[0].broker_name, "b");
  fy_ns_route_free(&route);
  fy_routes_free(r);
}

static void test_bad_registrations_and_limits(void **state) {
  (void)state;
  fy_routes *r = fy_routes_new(2, 1);
  int c;
  assert_int_equal(reg(r, "", 0, "127.0.0.1:1", NULL, 0, &c, 0), -EINVAL);
  assert_int_equal(reg(r, "a", 0, "127.0.0.1", NULL, 0, &c, 0), -EINVAL);
  assert_int_equal(reg(r, "a", 0, "127.0.0.1:99999", NULL, 0, &c, 0), -EINVAL);
  assert_int_equal(reg(r, "a", 0, ":80", NULL, 0, &c, 0), -EINVAL);
  struct fy_ns_topic t[] = {topic("T1", 1), topic("T2", 1)};
  assert_int_equal(reg(r, "a", 0, "127.0.0.1:1", t, 2, &c, 0), -FY_EBUSY); /* topic table full */
  assert_int_equal(reg(r, "b", 0, "127.0.0.1:2", NULL, 0, &c, 0), 0);
  assert_int_equal(reg(r, "c", 0, "127.0.0.1:3", NULL, 0, &c, 0), -FY_EBUSY);
  /* A master moving to a new address replaces the old one. */
  assert_int_equal(reg(r, "b", 0, "127.0.0.1:4", NULL, 0, &c, 0), 0);
  assert_int_equal(fy_routes_broker_count(r), 2);
  char **names;
  size_t n;
  assert_int_equal(fy_routes_topic_list(r, &names, &n), 0);
  assert_int_equal(n, 1);
  assert_string_equal(names[0], "T1");
  free(names);
  struct fy_ns_route info;
  assert_int_equal(fy_routes_cluster_info(r, &info), 0);
  assert_int_equal(info.nbrokers, 2);
  fy_ns_route_free(&info);
  fy_routes_free(r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_route_lists_queues_and_all_addresses),
      cmocka_unit_test(test_slave_does_not_change_topics_and_master_replaces_them),
      cmocka_unit_test(test_delete_topic),
      cmocka_unit_test(test_master_gone_slave_keeps_route),
      cmocka_unit_test(test_expiry),
      cmocka_unit_test(test_bad_registrations_and_limits),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
