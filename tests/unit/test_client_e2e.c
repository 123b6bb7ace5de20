/* client against the real thing, in-process: a name server and a broker
 * master/slave pair (src/broker, src/ha) on a server thread. Topics and
 * subscription groups created through the admin calls (groups reach the
 * slave, which refuses to change them); sync, async and batch sends; topic
 * status, queries by key and by offset msg id, cluster list, broker
 * status, topic configs; the pull consumer's redirect to the slave; a push
 * consumer that consumes everything and commits, consumer progress and a
 * reset by time; a 200-byte group name through all of it; then the master
 * stops: producers find no master,
 * consumers read from the slave and commit there. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker/broker.h"
#include "fakebroker.c"
#include "ferry/client.h"
#include "testutil.h"

#define WAIT_MS 20000
#define WAIT_UNTIL(cond)                                                            \
  do {                                                                              \
    uint64_t t0_ = fy__cl_now_ms();                                                 \
    while (!(cond)) {                                                               \
      if (fy__cl_now_ms() - t0_ > WAIT_MS)                                          \
        fail_msg("timed out waiting for %s", #cond);                                \
      usleep(20000);                                                                \
    }                                                                               \
  } while (0)

struct node {
  fy_broker *b;
  int port;
  bool stopped;
};

struct start_args {
  const char *dir;
  const char *name;
  int role;
  uint64_t id;
  int master_ha_port;
  struct node *n;
};

static void do_start(struct senv *e, void *arg) {
  struct start_args *a = arg;
  struct fy_broker_settings s;
  fy_broker_settings_defaults(&s);
  snprintf(s.store.root_dir, sizeof s.store.root_dir, "%s/%s", a->dir, a->name);
  s.store.commitlog_segment_size = 1 << 20;
  s.store.index_slots = 1024;
  s.store.index_entries = 65536;
  s.store.write_buffer_size = 5 << 20;
  s.broker.listen_port = 0;
  s.broker.role = a->role;
  s.broker.broker_id = a->id;
  s.broker.register_period_ms = 500;
  s.broker.metadata_sync_ms = 200;
  s.broker.ha_heartbeat_ms = 200;
  s.broker.ha_timeout_ms = 2000;
  s.broker.slave_read_enable = true;
  s.broker.slave_read_behind_bytes = 1; /* any backlog: read from the slave */
  s.broker.auto_create_topic = true;
  snprintf(s.broker.cluster, sizeof s.broker.cluster, "C1");
  snprintf(s.broker.broker_name, sizeof s.broker.broker_name, "broker-a");
  snprintf(s.broker.broker_ip, sizeof s.broker.broker_ip, "127.0.0.1");
  snprintf(s.broker.listen_address, sizeof s.broker.listen_address, "127.0.0.1");
  snprintf(s.broker.namesrv_addr, sizeof s.broker.namesrv_addr, "127.0.0.1:%d", e->ns_port[0]);
  if (a->master_ha_port)
    snprintf(s.broker.ha_master_address, sizeof s.broker.ha_master_address, "127.0.0.1:%d",
             a->master_ha_port);
  assert_int_equal(fy_broker_start(&e->loop, &s, &a->n->b), 0);
  a->n->port = fy_broker_port(a->n->b);
}

static void on_stopped(void *arg, int status) {
  (void)status;
  __atomic_store_n(&((struct node *)arg)->stopped, true, __ATOMIC_SEQ_CST);
}

static void do_stop(struct senv *e, void *arg) {
  struct node *n = arg;
  fy_broker_stop(n->b, on_stopped, n);
}

static bool node_stopped(struct senv *e, struct node *n) {
  (void)e;
  return __atomic_load_n(&n->stopped, __ATOMIC_SEQ_CST);
}

struct counts {
  pthread_mutex_t mu;
  int total;
  char ids[512][33];
  int nids;
};

static fy_consume_result count_msgs(const fy_message_view *const *msgs, size_t n, void *arg) {
  struct counts *c = arg;
  pthread_mutex_lock(&c->mu);
  for (size_t i = 0; i < n; i++) {
    bool dup = false;
    for (int k = 0; k < c->nids && !dup; k++)
      dup = strcmp(c->ids[k], msgs[i]->msg_id) == 0;
    if (!dup && c->nids < 512)
      snprintf(c->ids[c->nids++], 33, "%s", msgs[i]->msg_id);
    c->total++;
  }
  pthread_mutex_unlock(&c->mu);
  return FY_CONSUME_SUCCESS;
}

static int unique(struct counts *c) {
  pthread_mutex_lock(&c->mu);
  int n = c->nids;
  pthread_mutex_unlock(&c->mu);
  return n;
}

static void on_async(int err, const fy_send_result *r, void *arg) {
  (void)r;
  int *n = arg;
  if (!err)
    __atomic_add_fetch(n, 1, __ATOMIC_SEQ_CST);
}

static bool route_has(fy_client *cl, const char *topic, size_t queues) {
  fy_queue_list *l;
  if (fy_client_topic_queues(cl, topic, true, 0, &l))
    return false;
  bool ok = l->n == queues;
  fy_result_free(l);
  return ok;
}

static bool slave_has(fy_client *cl, const char *addr, const char *topic) {
  fy_topic_config_list *l;
  if (fy_admin_topic_configs(cl, addr, 0, &l))
    return false;
  bool has = false;
  for (size_t i = 0; i < l->n; i++)
    has |= strcmp(l->items[i].topic, topic) == 0;
  fy_result_free(l);
  return has;
}

/* Whether addr holds subscription group name (its configuration in *out). */
static bool sub_group_has(fy_client *cl, const char *addr, const char *name,
                          fy_sub_group_config *out) {
  fy_sub_group_config_list *l;
  if (fy_admin_sub_group_configs(cl, addr, 0, &l))
    return false;
  bool has = false;
  for (size_t i = 0; i < l->n; i++)
    if (strcmp(l->items[i].group, name) == 0) {
      has = true;
      if (out)
        *out = l->items[i];
    }
  fy_result_free(l);
  return has;
}

static uint64_t status_total(fy_client *cl, const char *topic) {
  fy_topic_status *ts;
  if (fy_admin_topic_status(cl, topic, 0, &ts))
    return 0;
  uint64_t t = 0;
  for (size_t i = 0; i < ts->n; i++)
    t += ts->queues[i].max_offset;
  fy_result_free(ts);
  return t;
}

static void test_e2e(void **state) {
  (void)state;
  char dir[512];
  snprintf(dir, sizeof dir, "%s", fy_test_mkdtemp("client-e2e"));
  struct senv *e = senv_start(1);
  struct node master = {0}, slave = {0};
  struct start_args ma = {dir, "master", FY_ROLE_ASYNC_MASTER, 0, 0, &master};
  senv_run(e, do_start, &ma);
  struct start_args sa = {dir, "slave", FY_ROLE_SLAVE, 1, fy_broker_ha_port(master.b), &slave};
  senv_run(e, do_start, &sa);
  char ns[64], maddr[64];
  snprintf(ns, sizeof ns, "127.0.0.1:%d", e->ns_port[0]);
  snprintf(maddr, sizeof maddr, "127.0.0.1:%d", master.port);
  fy_client_config cc = {.namesrv_addr = ns, .route_refresh_ms = 300,
                         .heartbeat_interval_ms = 1000};
  fy_client *cl;
  assert_int_equal(fy_client_new(&cc, &cl), 0);

  /* cluster list: both brokers of broker-a */
  fy_cluster_info *ci = NULL;
  WAIT_UNTIL(fy_admin_cluster_list(cl, 0, &ci) == 0 &&
             (ci->nbrokers == 1 && ci->brokers[0].naddrs == 2 ? true
                                                               : (fy_result_free(ci), false)));
  assert_string_equal(ci->brokers[0].cluster, "C1");
  assert_string_equal(ci->brokers[0].broker_name, "broker-a");
  assert_true(ci->brokers[0].addrs[0].broker_id == 0);
  assert_string_equal(ci->brokers[0].addrs[0].addr, maddr);
  assert_true(ci->brokers[0].addrs[1].broker_id == 1);
  fy_result_free(ci);

  /* create a topic on every master of the cluster */
  fy_topic_config tc = {.topic = "E2E", .read_queues = 4, .write_queues = 4};
  assert_int_equal(fy_admin_update_topic(cl, NULL, "C1", &tc, 0), 0);
  WAIT_UNTIL(route_has(cl, "E2E", 4));
  /* the slave learns topics from the master (metadata sync) */
  char saddr[64];
  snprintf(saddr, sizeof saddr, "127.0.0.1:%d", slave.port);
  WAIT_UNTIL(slave_has(cl, saddr, "E2E"));
  /* a slave refuses topic changes: the master's table would overwrite them */
  assert_int_equal(fy_admin_update_topic(cl, saddr, NULL, &tc, 0), -FY_EUNAVAILABLE);
  assert_non_null(strstr(fy_client_last_error(), "is a slave: change topics on its master"));
  assert_int_equal(fy_admin_delete_topic(cl, saddr, NULL, "E2E", 0), -FY_EUNAVAILABLE);
  assert_true(slave_has(cl, saddr, "E2E"));
  assert_int_equal(fy_admin_update_topic(cl, NULL, "NoCluster", &tc, 0), -FY_ENO_BROKER);
  fy_string_list *tl;
  assert_int_equal(fy_admin_topic_list(cl, 0, &tl), 0);
  bool listed = false;
  for (size_t i = 0; i < tl->n; i++)
    listed |= strcmp(tl->items[i], "E2E") == 0;
  assert_true(listed);
  fy_result_free(tl);
  fy_topic_route *tr;
  assert_int_equal(fy_admin_topic_route(cl, "E2E", 0, &tr), 0);
  assert_int_equal(tr->nqueues, 1);
  assert_int_equal(tr->queues[0].write_queues, 4);
  assert_int_equal(tr->nbrokers, 1);
  fy_result_free(tr);

  fy_topic_config_list *tcl;

  /* subscription groups: created on the cluster's masters, copied by the slave */
  fy_sub_group_config sg;
  fy_sub_group_config_init(&sg, "E2ESub");
  sg.retry_max_times = 3;
  sg.consume_broadcast_enable = false;
  assert_int_equal(fy_admin_update_sub_group(cl, NULL, "C1", &sg, 0), 0);
  fy_sub_group_config got = {0};
  assert_true(sub_group_has(cl, maddr, "E2ESub", &got));
  assert_int_equal(got.retry_max_times, 3);
  assert_int_equal(got.retry_queue_nums, 1);
  assert_true(got.consume_enable);
  assert_false(got.consume_broadcast_enable);
  assert_true(got.which_broker_when_consume_slowly == 1);
  WAIT_UNTIL(sub_group_has(cl, saddr, "E2ESub", NULL));
  assert_int_equal(fy_admin_update_sub_group(cl, saddr, NULL, &sg, 0), -FY_EUNAVAILABLE);
  assert_non_null(strstr(fy_client_last_error(), "is a slave"));
  assert_int_equal(fy_admin_delete_sub_group(cl, saddr, NULL, "E2ESub", false, 0),
                   -FY_EUNAVAILABLE);
  sg.retry_queue_nums = 2000;
  assert_int_equal(fy_admin_update_sub_group(cl, maddr, NULL, &sg, 0), -FY_EBAD_REQUEST);
  assert_non_null(strstr(fy_client_last_error(), "retryQueueNums"));
  assert_int_equal(fy_admin_update_sub_group(cl, maddr, "C1", &sg, 0), -EINVAL); /* both */
  assert_int_equal(fy_admin_delete_sub_group(cl, NULL, "C1", "E2ESub", true, 0), 0);
  assert_false(sub_group_has(cl, maddr, "E2ESub", NULL));
  assert_int_equal(fy_admin_delete_sub_group(cl, NULL, "C1", "E2ESub", false, 0), -FY_ENO_GROUP);
  assert_int_equal(fy_admin_delete_sub_group(cl, maddr, NULL, "E2ESub", false, 0), -FY_ENO_GROUP);
  assert_non_null(strstr(fy_client_last_error(), "does not exist"));
  WAIT_UNTIL(!sub_group_has(cl, saddr, "E2ESub", NULL));

  /* sends: sync, batch, async */
  fy_producer_config pcfg = {.group = "E2EP"};
  fy_producer *p;
  assert_int_equal(fy_producer_new(cl, &pcfg, &p), 0);
  char first_oid[64] = "", body7[32] = "";
  for (int i = 0; i < 100; i++) {
    char body[32], keys[32];
    snprintf(body, sizeof body, "sync-%d", i);
    snprintf(keys, sizeof keys, "key-%d", i);
    fy_message m = {.topic = "E2E", .body = body, .body_len = strlen(body),
                    .tags = i % 2 ? "TagB" : "TagA", .keys = keys};
    fy_send_result r;
    assert_int_equal(fy_producer_send(p, &m, NULL, &r), 0);
    assert_int_equal(r.status, FY_SEND_OK);
    assert_string_equal(r.broker_name, "broker-a");
    if (i == 7) {
      snprintf(first_oid, sizeof first_oid, "%s", r.offset_msg_id);
      snprintf(body7, sizeof body7, "%s", body);
    }
  }
  fy_message batch[10];
  for (int i = 0; i < 10; i++)
    batch[i] = (fy_message){.topic = "E2E", .body = "batch", .body_len = 5, .tags = "TagA"};
  fy_send_result br[10];
  assert_int_equal(fy_producer_send_batch(p, batch, 10, NULL, br), 0);
  for (int i = 1; i < 10; i++)
    assert_true(br[i].queue_offset == br[0].queue_offset + (uint64_t)i);
  int async_ok = 0;
  for (int i = 0; i < 100; i++) {
    fy_message m = {.topic = "E2E", .body = "async", .body_len = 5, .tags = "TagA"};
    assert_int_equal(fy_producer_send_async(p, &m, NULL, on_async, &async_ok), 0);
  }
  WAIT_UNTIL(__atomic_load_n(&async_ok, __ATOMIC_SEQ_CST) == 100);
  assert_true(status_total(cl, "E2E") == 210);

  /* an auto-created topic (through TBW102's route if the broker registers it) */
  fy_message am = {.topic = "E2EAuto", .body = "x", .body_len = 1};
  fy_send_result ar;
  int aerr = fy_producer_send(p, &am, NULL, &ar);
  /* RocketMQ routes a new topic through TBW102; it works if the broker registers it */
  if (aerr)
    print_message("auto-created topic: %s (%s)\n", fy_client_strerror(aerr), ar.error);
  assert_int_equal(aerr, 0);
  assert_int_equal(ar.status, FY_SEND_OK);
  WAIT_UNTIL(route_has(cl, "E2EAuto", 4)); /* the producer's default_topic_queues */
  assert_int_equal(fy_admin_delete_topic(cl, NULL, "C1", "E2EAuto", 0), 0);
  assert_int_equal(fy_admin_topic_configs(cl, maddr, 0, &tcl), 0);
  for (size_t i = 0; i < tcl->n; i++)
    assert_string_not_equal(tcl->items[i].topic, "E2EAuto");
  fy_result_free(tcl);

  /* queries */
  fy_message_list *ml;
  assert_int_equal(fy_admin_query_by_id(cl, first_oid, NULL, 0, &ml), 0);
  assert_int_equal(ml->n, 1);
  assert_int_equal(ml->msgs[0].body_len, strlen(body7));
  assert_memory_equal(ml->msgs[0].body, body7, strlen(body7));
  assert_string_equal(ml->msgs[0].keys, "key-7");
  assert_string_equal(ml->msgs[0].offset_msg_id, first_oid);
  fy_result_free(ml);
  WAIT_UNTIL(fy_admin_query_by_key(cl, "E2E", "key-42", 0, 0, 0, 0, &ml) == 0 &&
             (ml->n >= 1 ? true : (fy_result_free(ml), false)));
  assert_string_equal(ml->msgs[0].keys, "key-42");
  assert_memory_equal(ml->msgs[0].body, "sync-42", 7);
  fy_result_free(ml);
  fy_kv_list *kv;
  assert_int_equal(fy_admin_broker_status(cl, maddr, 0, &kv), 0);
  assert_true(kv->n > 0);
  fy_result_free(kv);
  assert_int_equal(fy_admin_topic_configs(cl, maddr, 0, &tcl), 0);
  listed = false;
  for (size_t i = 0; i < tcl->n; i++)
    listed |= strcmp(tcl->items[i].topic, "E2E") == 0 && tcl->items[i].read_queues == 4;
  assert_true(listed);
  fy_result_free(tcl);

  uint64_t so;
  fy_queue qs0 = {.topic = "E2E", .broker_name = "broker-a", .queue_id = 0};
  assert_int_equal(fy_client_search_offset(cl, &qs0, 0, 0, &so), 0);
  assert_true(so == 0);
  assert_int_equal(fy_client_search_offset(cl, &qs0, INT64_MAX / 2, 0, &so), 0);
  uint64_t mo;
  assert_int_equal(fy_client_max_offset(cl, &qs0, 0, &mo), 0);
  assert_true(so <= mo && mo > 0);

  /* pull consumer: the master sends a consumer with a backlog to the slave */
  fy_pull_consumer *pc;
  assert_int_equal(fy_pull_consumer_new(cl, "E2EPull", &pc), 0);
  fy_queue q0 = {.topic = "E2E", .broker_name = "broker-a", .queue_id = 0};
  fy_pull_options po = {.expression = "TagA", .max_msgs = 4};
  fy_pull_result *r;
  assert_int_equal(fy_pull_consumer_pull(pc, &q0, 0, &po, &r), 0);
  assert_int_equal(r->status, FY_PULL_FOUND);
  assert_true(r->broker_id == 0);
  for (size_t i = 0; i < r->nmsgs; i++)
    assert_string_equal(r->msgs[i].tags, "TagA");
  uint64_t suggested = r->suggest_broker_id;
  fy_result_free(r);
  assert_true(suggested == 1);
  int perr = fy_pull_consumer_pull(pc, &q0, 0, &po, &r);
  if (perr)
    print_message("second pull: %s\n", fy_client_last_error());
  assert_int_equal(perr, 0);
  assert_true(r->broker_id == 1);
  fy_result_free(r);

  /* push consumer: everything, then committed */
  struct counts cnt = {.mu = PTHREAD_MUTEX_INITIALIZER};
  fy_push_config pcf = {.group = "E2EG", .listener = count_msgs, .listener_arg = &cnt,
                        .from = FY_FROM_FIRST_OFFSET, .consume_threads = 4,
                        .commit_interval_ms = 200, .suspend_timeout_ms = 2000};
  fy_push_consumer *push;
  assert_int_equal(fy_push_consumer_new(cl, &pcf, &push), 0);
  assert_int_equal(fy_push_consumer_subscribe(push, "E2E", "*"), 0);
  assert_int_equal(fy_push_consumer_start(push), 0);
  WAIT_UNTIL(unique(&cnt) == 210);
  assert_int_equal(fy_push_consumer_close(push), 0);
  fy_consumer_progress *cp;
  assert_int_equal(fy_admin_consumer_progress(cl, "E2EG", "E2E", 0, &cp), 0);
  assert_int_equal(cp->n, 4);
  assert_true(cp->total_lag == 0);
  for (size_t i = 0; i < cp->n; i++) {
    assert_string_equal(cp->queues[i].topic, "E2E");
    assert_int_equal(cp->queues[i].queue_id, i);
    assert_true(cp->queues[i].consumer_offset == cp->queues[i].broker_offset);
  }
  fy_result_free(cp);
  assert_int_equal(fy_admin_reset_offset_by_time(cl, "E2EG", "E2E", 0, 0), 0);
  assert_int_equal(fy_admin_consumer_progress(cl, "E2EG", NULL, 0, &cp), 0);
  assert_true(cp->total_lag == 210);
  fy_result_free(cp);

  /* A 200-byte group name (brokers take RocketMQ's 255): producer group,
   * subscription group, push consumer, committed offsets, pull consumer. */
  char lg[201];
  memset(lg, 'g', 200);
  lg[200] = '\0';
  fy_topic_config ltc = {.topic = "E2ELong", .read_queues = 2, .write_queues = 2};
  assert_int_equal(fy_admin_update_topic(cl, maddr, NULL, &ltc, 0), 0);
  WAIT_UNTIL(route_has(cl, "E2ELong", 2));
  fy_sub_group_config_init(&sg, lg);
  assert_int_equal(fy_admin_update_sub_group(cl, maddr, NULL, &sg, 0), 0);
  assert_true(sub_group_has(cl, maddr, lg, NULL));
  fy_producer_config lpc = {.group = lg};
  fy_producer *lp;
  assert_int_equal(fy_producer_new(cl, &lpc, &lp), 0);
  for (int i = 0; i < 6; i++) {
    fy_message lm = {.topic = "E2ELong", .body = "long", .body_len = 4};
    fy_send_result lr;
    assert_int_equal(fy_producer_send(lp, &lm, NULL, &lr), 0);
    assert_int_equal(lr.status, FY_SEND_OK);
  }
  assert_int_equal(fy_producer_close(lp), 0);
  struct counts lcnt = {.mu = PTHREAD_MUTEX_INITIALIZER};
  fy_push_config lcf = pcf;
  lcf.group = lg;
  lcf.listener_arg = &lcnt;
  assert_int_equal(fy_push_consumer_new(cl, &lcf, &push), 0);
  assert_int_equal(fy_push_consumer_subscribe(push, "E2ELong", "*"), 0);
  assert_int_equal(fy_push_consumer_start(push), 0);
  WAIT_UNTIL(unique(&lcnt) == 6);
  assert_int_equal(fy_push_consumer_close(push), 0);
  assert_int_equal(fy_admin_consumer_progress(cl, lg, "E2ELong", 0, &cp), 0);
  assert_int_equal(cp->n, 2);
  assert_true(cp->total_lag == 0);
  fy_result_free(cp);
  fy_pull_consumer *lpull;
  assert_int_equal(fy_pull_consumer_new(cl, lg, &lpull), 0);
  fy_queue lq = {.topic = "E2ELong", .broker_name = "broker-a", .queue_id = 0};
  uint64_t loff;
  assert_int_equal(fy_pull_consumer_fetch_offset(lpull, &lq, 0, &loff), 0);
  fy_pull_consumer_close(lpull);
  assert_int_equal(fy_admin_delete_sub_group(cl, maddr, NULL, lg, true, 0), 0);
  /* 255 bytes is the most: 256 is refused before anything is sent */
  char g256[257];
  memset(g256, 'h', 256);
  g256[256] = '\0';
  assert_int_equal(fy_pull_consumer_new(cl, g256, &lpull), -EINVAL);
  assert_non_null(strstr(fy_client_last_error(), "consumer group must be 1..255 bytes"));
  g256[255] = '\0';
  assert_int_equal(fy_pull_consumer_new(cl, g256, &lpull), 0);
  fy_pull_consumer_close(lpull);
  /* topics: 127 bytes, as brokers keep them; 128 is refused before anything is sent */
  g256[128] = '\0';
  fy_send_result long_r;
  assert_int_equal(
      fy_producer_send(p, &(fy_message){.topic = g256, .body = "x", .body_len = 1}, NULL, &long_r),
      -EINVAL);
  assert_non_null(strstr(fy_client_last_error(), "topic must be 1..127 bytes"));

  /* the master stops: no master to write to, the slave serves reads */
  fy_producer_close(p);
  senv_run(e, do_stop, &master);
  WAIT_UNTIL(node_stopped(e, &master));
  WAIT_UNTIL(!route_has(cl, "E2E", 4));
  assert_int_equal(fy_producer_new(cl, &pcfg, &p), 0);
  fy_message m = {.topic = "E2E", .body = "x", .body_len = 1};
  fy_send_result sr;
  assert_int_equal(fy_producer_send(p, &m, NULL, &sr), -FY_ENO_BROKER);
  fy_producer_close(p);
  fy_pull_options all = {.max_msgs = 32};
  assert_int_equal(fy_pull_consumer_pull(pc, &q0, 0, &all, &r), 0);
  assert_true(r->broker_id == 1);
  assert_int_equal(r->status, FY_PULL_FOUND);
  fy_result_free(r);
  struct counts cnt2 = {.mu = PTHREAD_MUTEX_INITIALIZER};
  pcf.group = "E2EG2";
  pcf.listener_arg = &cnt2;
  assert_int_equal(fy_push_consumer_new(cl, &pcf, &push), 0);
  assert_int_equal(fy_push_consumer_subscribe(push, "E2E", "TagA"), 0);
  assert_int_equal(fy_push_consumer_start(push), 0);
  WAIT_UNTIL(unique(&cnt2) == 50 + 10 + 100); /* the TagA ones */
  assert_int_equal(fy_push_consumer_close(push), 0);
  uint64_t off;
  assert_int_equal(fy_pull_consumer_fetch_offset(pc, &q0, 0, &off), -FY_ENOT_FOUND);
  fy_pull_consumer *pc2;
  assert_int_equal(fy_pull_consumer_new(cl, "E2EG2", &pc2), 0);
  assert_int_equal(fy_pull_consumer_fetch_offset(pc2, &q0, 0, &off), 0); /* from the slave */
  assert_true(off > 0);
  fy_pull_consumer_close(pc2);
  fy_pull_consumer_close(pc);

  fy_client_close(cl);
  senv_run(e, do_stop, &slave);
  WAIT_UNTIL(node_stopped(e, &slave));
  senv_stop(e);
  fy_test_rmtree(dir);
}

int main(void) {
  fy_log_set_level(getenv("FY_TEST_DEBUG") ? FY_LOG_DEBUG : FY_LOG_WARN);
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_e2e)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
