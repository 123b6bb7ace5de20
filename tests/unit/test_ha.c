/*
 * Master/slave replication in-process: a name server, a master and a slave
 * on one loop. Async replication yields byte-identical logs and identical
 * consume queues; SYNC_MASTER answers SEND_OK only with a slave, and
 * SLAVE_NOT_AVAILABLE without one, and what no slave acknowledged stays
 * hidden across its restart; a slave whose log diverged is refused.
 * SYNC_MASTER with SYNC_FLUSH and a slow master fdatasync: FLUSH_DISK_TIMEOUT
 * when the slave has the message, the slave's status when it has not.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/broker.h"
#include "broker/broker_int.h" /* the master's store, to slow its fdatasync down */
#include "common/err.h"
#include "common/record.h"
#include "ferry.pb-c.h"
#include "namesrv/namesrv.h"
#include "net/conn.h"
#include "net/rpc.h"
#include "testutil.h"

struct node {
  fy_broker *b;
  fy_conn *conn;
  bool connected;
};

struct env {
  uv_loop_t loop;
  char dir[400];
  fy_namesrv *ns;
  uint32_t master_flush_timeout_ms; /* nonzero: the master runs SYNC_FLUSH with it */
  struct node master, slave;
  bool done;
  int err;
  uint16_t status;
  uint8_t header[65536];
  size_t header_len;
  size_t raw_len;
  uint8_t raw[1 << 20];
};

static void on_connect(fy_conn *c, int status) {
  struct node *n = fy_conn_data(c);
  n->connected = status == 0;
}

static void on_resp(fy_conn *c, int err, const fy_frame *f, void *arg) {
  (void)c;
  struct env *e = arg;
  e->done = true;
  e->err = err;
  if (!f)
    return;
  e->status = f->status;
  e->header_len = f->header_len;
  memcpy(e->header, f->header, f->header_len);
  e->raw_len = f->raw_len < sizeof e->raw ? f->raw_len : sizeof e->raw;
  memcpy(e->raw, f->raw, e->raw_len);
}

static void connect_node(struct env *e, struct node *n) {
  fy_conn_cfg cc = {.data = n};
  n->connected = false;
  assert_int_equal(fy_conn_connect(&e->loop, "127.0.0.1", fy_broker_port(n->b), &cc, on_connect,
                                   &n->conn), 0);
  assert_true(fy_test_run_until(&e->loop, &n->connected, 5000));
}

static void start_node(struct env *e, struct node *n, const char *name, int role, uint64_t id,
                       int master_ha_port) {
  struct fy_broker_settings s;
  fy_broker_settings_defaults(&s);
  snprintf(s.store.root_dir, sizeof s.store.root_dir, "%s/%s", e->dir, name);
  s.store.commitlog_segment_size = 1 << 20;
  s.store.index_slots = 1024;
  s.store.index_entries = 65536;
  s.store.write_buffer_size = 5 << 20;
  s.broker.listen_port = 0;
  s.broker.role = role;
  s.broker.broker_id = id;
  s.broker.register_period_ms = 1000;
  s.broker.metadata_sync_ms = 200;
  s.broker.ha_heartbeat_ms = 200;
  s.broker.ha_timeout_ms = 2000;
  if (role != FY_ROLE_SLAVE && e->master_flush_timeout_ms) {
    s.store.flush_disk_type = FY_SYNC_FLUSH;
    s.broker.sync_flush_timeout_ms = e->master_flush_timeout_ms;
  }
  snprintf(s.broker.broker_ip, sizeof s.broker.broker_ip, "127.0.0.1");
  snprintf(s.broker.listen_address, sizeof s.broker.listen_address, "127.0.0.1");
  snprintf(s.broker.namesrv_addr, sizeof s.broker.namesrv_addr, "127.0.0.1:%d",
           fy_namesrv_port(e->ns));
  if (master_ha_port)
    snprintf(s.broker.ha_master_address, sizeof s.broker.ha_master_address, "127.0.0.1:%d",
             master_ha_port);
  assert_int_equal(fy_broker_start(&e->loop, &s, &n->b), 0);
  connect_node(e, n);
}

static int setup_role(void **state, int master_role, uint32_t flush_timeout_ms) {
  struct env *e = calloc(1, sizeof *e);
  e->master_flush_timeout_ms = flush_timeout_ms;
  uv_loop_init(&e->loop);
  snprintf(e->dir, sizeof e->dir, "%s", fy_test_mkdtemp("ha"));
  struct fy_namesrv_config nc;
  struct fy_config_section sec = {fy_namesrv_config_keys, &nc};
  fy_config_defaults(&sec, 1);
  nc.listen_port = 0;
  snprintf(nc.listen_address, sizeof nc.listen_address, "127.0.0.1");
  assert_int_equal(fy_namesrv_start(&e->loop, &nc, &e->ns), 0);
  start_node(e, &e->master, "master", master_role, 0, 0);
  start_node(e, &e->slave, "slave", FY_ROLE_SLAVE, 1, fy_broker_ha_port(e->master.b));
  *state = e;
  return 0;
}

static int setup_async(void **state) { return setup_role(state, FY_ROLE_ASYNC_MASTER, 0); }
static int setup_sync(void **state) { return setup_role(state, FY_ROLE_SYNC_MASTER, 0); }
#define FLUSH_TIMEOUT_MS 200         /* while the test holds fdatasyncs back */
#define FLUSH_TIMEOUT_LONG_MS 60000  /* otherwise: long enough for any real fdatasync */
static int setup_sync_flush(void **state) {
  return setup_role(state, FY_ROLE_SYNC_MASTER, FLUSH_TIMEOUT_LONG_MS);
}

static bool all_flushed(void *cl) {
  return fy_commitlog_flushed(cl) == fy_commitlog_end(cl);
}

/* Holds the master's fdatasyncs back with the short syncFlushTimeout
 * (hold), or lets them through with the long one. The timeout is changed
 * once everything is flushed: with no send waiting it applies at once. */
static void slow_master_disk(struct env *e, bool hold) {
  fy_aio *aio = fy_store_aio(e->master.b->store);
  fy_commitlog *cl = fy_store_commitlog(e->master.b->store);
  if (!hold)
    fy_aio_inject_delay(aio, FY_AIO_FDATASYNC, 0);
  assert_true(fy_test_run_until_pred(&e->loop, all_flushed, cl, 10000));
  e->master.b->settings.broker.sync_flush_timeout_ms = hold ? FLUSH_TIMEOUT_MS
                                                            : FLUSH_TIMEOUT_LONG_MS;
  if (hold)
    fy_aio_inject_delay(aio, FY_AIO_FDATASYNC, FY_AIO_HOLD_UNTIL_RELEASED);
}

static void on_stopped(void *arg, int status) {
  (void)status;
  *(bool *)arg = true;
}

static void stop_node(struct env *e, struct node *n) {
  if (!n->b)
    return;
  if (n->conn)
    fy_conn_close(n->conn, 0);
  bool stopped = false;
  fy_broker_stop(n->b, on_stopped, &stopped);
  assert_true(fy_test_run_until(&e->loop, &stopped, 10000));
  n->b = NULL;
  n->conn = NULL;
}

static int teardown(void **state) {
  struct env *e = *state;
  stop_node(e, &e->slave);
  stop_node(e, &e->master);
  fy_namesrv_stop(e->ns);
  assert_int_equal(fy_test_loop_finish(&e->loop), 0);
  fy_test_rmtree(e->dir);
  free(e);
  return 0;
}

static void call(struct env *e, struct node *n, uint16_t op, const ProtobufCMessage *msg,
                 const void *raw, size_t raw_len) {
  e->done = false;
  uv_buf_t b = uv_buf_init((char *)raw, (unsigned)raw_len);
  assert_int_equal(fy_rpc_call(n->conn, op, msg, raw ? &b : NULL, raw ? 1 : 0, 8000, on_resp, e), 0);
  assert_true(fy_test_run_until(&e->loop, &e->done, 10000));
  assert_int_equal(e->err, 0);
}

/* Sends a batch of n messages to queue 0; returns the frame status. */
static uint16_t send_batch(struct env *e, const char *topic, size_t n, size_t first) {
  Ferry__V1__SendMessage *ms = calloc(n, sizeof *ms);
  Ferry__V1__SendMessage **mp = calloc(n, sizeof *mp);
  char *bodies = calloc(n, 32);
  size_t len = 0;
  for (size_t i = 0; i < n; i++) {
    ferry__v1__send_message__init(&ms[i]);
    int l = snprintf(bodies + len, 32, "message-%08zu", first + i);
    ms[i].body_len = (uint32_t)l;
    len += (size_t)l;
    mp[i] = &ms[i];
  }
  Ferry__V1__SendRequest req = FERRY__V1__SEND_REQUEST__INIT;
  req.topic = (char *)topic;
  req.queue_id = 0;
  req.messages = mp;
  req.n_messages = n;
  call(e, &e->master, FERRY__V1__OP__OP_SEND, &req.base, bodies, len);
  free(ms);
  free(mp);
  free(bodies);
  return e->status;
}

static Ferry__V1__LogDigest *digest(struct env *e, struct node *n) {
  Ferry__V1__LogDigestRequest req = FERRY__V1__LOG_DIGEST_REQUEST__INIT;
  call(e, n, FERRY__V1__OP__OP_LOG_DIGEST, &req.base, NULL, 0);
  assert_int_equal(e->status, FERRY__V1__STATUS__OK);
  return ferry__v1__log_digest__unpack(NULL, e->header_len, e->header);
}

static void wait_caught_up(struct env *e) {
  uint64_t deadline = uv_now(&e->loop) + 20000;
  for (;;) {
    Ferry__V1__LogDigest *m = digest(e, &e->master), *s = digest(e, &e->slave);
    bool same = m->to == s->to && strcmp(m->digest, s->digest) == 0 && m->to > 0;
    uint64_t mt = m->to, st = s->to;
    ferry__v1__log_digest__free_unpacked(m, NULL);
    ferry__v1__log_digest__free_unpacked(s, NULL);
    if (same)
      return;
    if (uv_now(&e->loop) >= deadline)
      fprintf(stderr, "not caught up: master %llu slave %llu\n", (unsigned long long)mt,
              (unsigned long long)st);
    assert_true(uv_now(&e->loop) < deadline);
    bool never = false;
    fy_test_run_until(&e->loop, &never, 50);
  }
}

static Ferry__V1__PullResponse *pull(struct env *e, struct node *n, const char *topic,
                                     uint64_t offset) {
  Ferry__V1__PullRequest req = FERRY__V1__PULL_REQUEST__INIT;
  req.consumer_group = "CG";
  req.topic = (char *)topic;
  req.queue_offset = offset;
  req.max_msgs = 32;
  req.max_bytes = 1 << 20;
  call(e, n, FERRY__V1__OP__OP_PULL, &req.base, NULL, 0);
  return e->header_len ? ferry__v1__pull_response__unpack(NULL, e->header_len, e->header) : NULL;
}

static void test_async_replicas_are_identical(void **state) {
  struct env *e = *state;
  /* 200,000 messages, the figure, in batches of 500. */
  for (size_t i = 0; i < 400; i++)
    assert_int_equal(send_batch(e, "Replicated", 500, i * 500), FERRY__V1__STATUS__OK);
  wait_caught_up(e);
  /* The slave's consume queue answers as the master's: same records at the same offsets
   * (the slave learns the topic from the master's metadata). */
  uint64_t deadline = uv_now(&e->loop) + 10000;
  Ferry__V1__PullResponse *ps = NULL;
  while (!ps || e->status != FERRY__V1__STATUS__OK) {
    if (ps)
      ferry__v1__pull_response__free_unpacked(ps, NULL);
    assert_true(uv_now(&e->loop) < deadline);
    bool never = false;
    fy_test_run_until(&e->loop, &never, 50);
    ps = pull(e, &e->slave, "Replicated", 199900);
  }
  uint8_t slave_raw[8192];
  size_t slave_len = e->raw_len;
  memcpy(slave_raw, e->raw, slave_len < sizeof slave_raw ? slave_len : sizeof slave_raw);
  Ferry__V1__PullResponse *pm = pull(e, &e->master, "Replicated", 199900);
  assert_int_equal(e->status, FERRY__V1__STATUS__OK);
  assert_int_equal(pm->count, ps->count);
  assert_int_equal(pm->next_offset, ps->next_offset);
  assert_int_equal(pm->max_offset, 200000);
  assert_int_equal(ps->max_offset, 200000);
  assert_int_equal(e->raw_len, slave_len);
  assert_memory_equal(e->raw, slave_raw, slave_len);
  ferry__v1__pull_response__free_unpacked(pm, NULL);
  ferry__v1__pull_response__free_unpacked(ps, NULL);
  /* Past the end: the master moves the consumer to its end; a slave, which
   * may only be behind, never moves it (else a consumer redirected to a
   * lagging slave would be sent back and read messages twice). */
  pm = pull(e, &e->master, "Replicated", 300000);
  assert_int_equal(e->status, FERRY__V1__STATUS__PULL_OFFSET_MOVED);
  assert_int_equal(pm->next_offset, 200000);
  ferry__v1__pull_response__free_unpacked(pm, NULL);
  ps = pull(e, &e->slave, "Replicated", 300000);
  assert_int_equal(e->status, FERRY__V1__STATUS__PULL_RETRY_IMMEDIATELY);
  assert_int_equal(ps->next_offset, 300000);
  ferry__v1__pull_response__free_unpacked(ps, NULL);
  ps = pull(e, &e->slave, "NotYetOnTheSlave", 42);
  assert_int_equal(ps ? ps->next_offset : 0, 42);
  if (ps)
    ferry__v1__pull_response__free_unpacked(ps, NULL);
  /* The slave refuses sends. */
  Ferry__V1__SendMessage m = FERRY__V1__SEND_MESSAGE__INIT;
  m.body_len = 1;
  Ferry__V1__SendMessage *mp = &m;
  Ferry__V1__SendRequest req = FERRY__V1__SEND_REQUEST__INIT;
  req.topic = "Replicated";
  req.queue_id = 0;
  req.messages = &mp;
  req.n_messages = 1;
  call(e, &e->slave, FERRY__V1__OP__OP_SEND, &req.base, "x", 1);
  assert_int_equal(e->status, FERRY__V1__STATUS__SERVICE_NOT_AVAILABLE);
}

static void test_slave_restart_resumes(void **state) {
  struct env *e = *state;
  assert_int_equal(send_batch(e, "Resume", 500, 0), FERRY__V1__STATUS__OK);
  wait_caught_up(e);
  stop_node(e, &e->slave);
  assert_int_equal(send_batch(e, "Resume", 500, 500), FERRY__V1__STATUS__OK);
  start_node(e, &e->slave, "slave", FY_ROLE_SLAVE, 1, fy_broker_ha_port(e->master.b));
  assert_int_equal(send_batch(e, "Resume", 500, 1000), FERRY__V1__STATUS__OK);
  wait_caught_up(e); /* equal digests: no gap and no duplicate byte */
}

/* A slave whose disk guard refuses writes keeps the master's chunk and the
 * link, acknowledging what it holds (so the master does not drop it after
 * ha_timeout_ms), and catches up on the same connection once writes are
 * allowed again. It used to drop the link and redial every second. */
static bool slave_paused(void *arg) {
  struct fy_ha_slave_info in;
  fy_ha_slave_info(arg, &in);
  return in.disk_full_paused;
}

static void test_slave_disk_full_pauses_replication(void **state) {
  struct env *e = *state;
  assert_int_equal(send_batch(e, "Full", 500, 0), FERRY__V1__STATUS__OK);
  wait_caught_up(e);
  fy_ha_slave *hs = e->slave.b->ha_slave;
  struct fy_ha_slave_info before, during, after;
  fy_ha_slave_info(hs, &before);
  assert_string_equal(before.state, "STREAMING");
  fy_commitlog *scl = fy_store_commitlog(e->slave.b->store);
  fy_commitlog_set_disk_full(scl, true);
  assert_int_equal(send_batch(e, "Full", 500, 500), FERRY__V1__STATUS__OK); /* ASYNC_MASTER */
  assert_true(fy_test_run_until_pred(&e->loop, slave_paused, hs, 10000));
  /* Past the master's timeout (2 s here) and several redials' worth. */
  bool never = false;
  fy_test_run_until(&e->loop, &never, 5000);
  fy_ha_slave_info(hs, &during);
  assert_true(during.disk_full_paused);
  assert_string_equal(during.state, "STREAMING");
  assert_int_equal(during.connected_since_ms, before.connected_since_ms); /* one link */
  assert_true(during.log_end < during.master_log_end);
  assert_non_null(strstr(during.last_error, "disk full"));
  fy_commitlog_set_disk_full(scl, false);
  wait_caught_up(e);
  fy_ha_slave_info(hs, &after);
  assert_false(after.disk_full_paused);
  assert_int_equal(after.connected_since_ms, before.connected_since_ms);
}

/* SYNC_MASTER: sends n messages to topic until they are SEND_OK, i.e. until
 * the slave is attached (SLAVE_NOT_AVAILABLE before). */
static void wait_slave_attached(struct env *e, const char *topic, size_t n) {
  uint64_t deadline = uv_now(&e->loop) + 10000;
  uint16_t st;
  while ((st = send_batch(e, topic, n, 0)) != FERRY__V1__STATUS__OK) {
    assert_int_equal(st, FERRY__V1__STATUS__SLAVE_NOT_AVAILABLE);
    assert_true(uv_now(&e->loop) < deadline);
    bool never = false;
    fy_test_run_until(&e->loop, &never, 50);
  }
}

static void test_sync_master(void **state) {
  struct env *e = *state;
  /* Wait until the slave is attached, then SEND_OK means the slave has it. */
  wait_slave_attached(e, "Sync", 10);
  uint64_t deadline;
  uint16_t st;
  for (int i = 0; i < 20; i++)
    assert_int_equal(send_batch(e, "Sync", 50, 100 + 50 * (size_t)i), FERRY__V1__STATUS__OK);
  /* Without a slave: stored on the master only, said so at once. */
  stop_node(e, &e->slave);
  deadline = uv_now(&e->loop) + 10000;
  while ((st = send_batch(e, "Sync", 1, 5000)) != FERRY__V1__STATUS__SLAVE_NOT_AVAILABLE) {
    assert_true(st == FERRY__V1__STATUS__OK || st == FERRY__V1__STATUS__FLUSH_SLAVE_TIMEOUT);
    assert_true(uv_now(&e->loop) < deadline);
  }
}

/* SYNC_MASTER and SYNC_FLUSH, the master's fdatasync slower than
 * syncFlushTimeout. The slave wait follows the flush wait; a send the slave
 * holds is FLUSH_DISK_TIMEOUT, one it does not gets the slave's status
 * (here SLAVE_NOT_AVAILABLE), as in RocketMQ. */
static void test_sync_master_flush_timeout(void **state) {
  struct env *e = *state;
  wait_slave_attached(e, "SyncF", 1);
  slow_master_disk(e, true);
  uv_update_time(&e->loop);
  uint64_t t0 = uv_now(&e->loop);
  assert_int_equal(send_batch(e, "SyncF", 5, 10), FERRY__V1__STATUS__FLUSH_DISK_TIMEOUT);
  assert_true(uv_now(&e->loop) - t0 >= FLUSH_TIMEOUT_MS);
  slow_master_disk(e, false);
  assert_int_equal(send_batch(e, "SyncF", 5, 20), FERRY__V1__STATUS__OK);

  slow_master_disk(e, true);
  stop_node(e, &e->slave);
  uint64_t deadline = uv_now(&e->loop) + 10000;
  uint16_t st;
  while ((st = send_batch(e, "SyncF", 1, 30)) != FERRY__V1__STATUS__SLAVE_NOT_AVAILABLE) {
    /* until the master notices the slave has gone */
    assert_true(st == FERRY__V1__STATUS__FLUSH_DISK_TIMEOUT ||
                st == FERRY__V1__STATUS__FLUSH_SLAVE_TIMEOUT);
    assert_true(uv_now(&e->loop) < deadline);
  }
  slow_master_disk(e, false); /* the store's close waits for its fdatasync */
}

/* How far a consumer of queue 0 of topic on n can read (its max offset). */
static uint64_t visible_max(struct env *e, struct node *n, const char *topic) {
  Ferry__V1__PullResponse *p = pull(e, n, topic, 0);
  uint64_t max = p ? p->max_offset : 0;
  if (p)
    ferry__v1__pull_response__free_unpacked(p, NULL);
  return max;
}

/* What a SYNC_MASTER stored without a slave stays hidden across its restart
 * and shows once the returning slave acknowledges it. */
static void test_sync_master_restart_keeps_unacknowledged_hidden(void **state) {
  struct env *e = *state;
  uint64_t deadline = uv_now(&e->loop) + 10000;
  size_t sent = 0;
  uint16_t st;
  while ((st = send_batch(e, "Hold", 10, sent)) != FERRY__V1__STATUS__OK) {
    assert_int_equal(st, FERRY__V1__STATUS__SLAVE_NOT_AVAILABLE);
    assert_true(uv_now(&e->loop) < deadline);
    sent += 10;
    bool never = false;
    fy_test_run_until(&e->loop, &never, 50);
  }
  sent += 10;
  assert_int_equal(visible_max(e, &e->master, "Hold"), sent); /* a slave acknowledged them all */
  stop_node(e, &e->slave);
  deadline = uv_now(&e->loop) + 10000;
  while ((st = send_batch(e, "Hold", 1, sent++)) != FERRY__V1__STATUS__SLAVE_NOT_AVAILABLE) {
    assert_true(st == FERRY__V1__STATUS__OK || st == FERRY__V1__STATUS__FLUSH_SLAVE_TIMEOUT);
    assert_true(uv_now(&e->loop) < deadline);
  }
  for (int i = 0; i < 5; i++, sent++)
    assert_int_equal(send_batch(e, "Hold", 1, sent), FERRY__V1__STATUS__SLAVE_NOT_AVAILABLE);
  uint64_t visible = visible_max(e, &e->master, "Hold");
  assert_true(visible >= 10 && visible + 6 <= sent);
  stop_node(e, &e->master);
  start_node(e, &e->master, "master", FY_ROLE_SYNC_MASTER, 0, 0);
  assert_int_equal(visible_max(e, &e->master, "Hold"), visible);
  start_node(e, &e->slave, "slave", FY_ROLE_SLAVE, 1, fy_broker_ha_port(e->master.b));
  deadline = uv_now(&e->loop) + 10000;
  while (visible_max(e, &e->master, "Hold") != sent) {
    assert_true(uv_now(&e->loop) < deadline);
    bool never = false;
    fy_test_run_until(&e->loop, &never, 50);
  }
}

static void test_diverged_slave_refused(void **state) {
  struct env *e = *state;
  assert_int_equal(send_batch(e, "Div", 100, 0), FERRY__V1__STATUS__OK);
  wait_caught_up(e);
  stop_node(e, &e->slave);
  stop_node(e, &e->master);
  /* Give the slave a log longer than the master's: start it as a master
   * of its own for a moment and write to it. */
  start_node(e, &e->slave, "slave", FY_ROLE_ASYNC_MASTER, 0, 0);
  Ferry__V1__SendMessage m = FERRY__V1__SEND_MESSAGE__INIT;
  m.body_len = 5;
  Ferry__V1__SendMessage *mp = &m;
  Ferry__V1__SendRequest req = FERRY__V1__SEND_REQUEST__INIT;
  req.topic = "Div";
  req.queue_id = 0;
  req.messages = &mp;
  req.n_messages = 1;
  call(e, &e->slave, FERRY__V1__OP__OP_SEND, &req.base, "extra", 5);
  assert_int_equal(e->status, FERRY__V1__STATUS__OK);
  stop_node(e, &e->slave);
  start_node(e, &e->master, "master", FY_ROLE_ASYNC_MASTER, 0, 0);
  start_node(e, &e->slave, "slave", FY_ROLE_SLAVE, 1, fy_broker_ha_port(e->master.b));
  /* The slave's HA status reports FAILED with the reason. */
  uint64_t deadline = uv_now(&e->loop) + 10000;
  for (;;) {
    call(e, &e->slave, FERRY__V1__OP__OP_HA_STATUS, NULL, NULL, 0);
    Ferry__V1__BrokerStatus *bs = ferry__v1__broker_status__unpack(NULL, e->header_len, e->header);
    bool failed = false;
    for (size_t i = 0; i < bs->n_entries; i++)
      if (strcmp(bs->entries[i]->key, "state") == 0 && strcmp(bs->entries[i]->value, "FAILED") == 0)
        failed = true;
    ferry__v1__broker_status__free_unpacked(bs, NULL);
    if (failed)
      break;
    assert_true(uv_now(&e->loop) < deadline);
    bool never = false;
    fy_test_run_until(&e->loop, &never, 50);
  }
}

struct raw_ha {
  bool connected, closed;
};

static void on_raw_connect(fy_conn *c, int status) {
  struct raw_ha *r = fy_conn_data(c);
  r->connected = status == 0;
}

static void on_raw_close(fy_conn *c, int reason) {
  (void)reason;
  struct raw_ha *r = fy_conn_data(c);
  if (r)
    r->closed = true;
}

static fy_conn *raw_ha_connect(struct env *e, struct raw_ha *r) {
  fy_conn *c;
  fy_conn_cfg cc = {.data = r, .on_close = on_raw_close};
  assert_int_equal(fy_conn_connect(&e->loop, "127.0.0.1", fy_broker_ha_port(e->master.b), &cc,
                                   on_raw_connect, &c), 0);
  assert_true(fy_test_run_until(&e->loop, &r->connected, 5000));
  return c;
}

/* Bad input on the HA port: a hello claiming more log than the master has is
 * refused with a reason, and an acknowledgement beyond the master's log end
 * (RocketMQ #3015) drops the connection instead of counting as replicated. */
static void test_ha_bad_input(void **state) {
  struct env *e = *state;
  assert_int_equal(send_batch(e, "Bad", 10, 0), FERRY__V1__STATUS__OK);
  struct raw_ha r1 = {0};
  fy_conn *c1 = raw_ha_connect(e, &r1);
  Ferry__V1__HaHello h = FERRY__V1__HA_HELLO__INIT;
  h.broker_name = "broker-a";
  h.broker_id = 9;
  h.log_end = 1ull << 40;
  e->done = false;
  assert_int_equal(fy_rpc_call(c1, FERRY__V1__OP__OP_HA_HELLO, &h.base, NULL, 0, 3000, on_resp, e), 0);
  assert_true(fy_test_run_until(&e->loop, &e->done, 5000));
  assert_int_equal(e->status, FERRY__V1__STATUS__BAD_REQUEST);
  assert_true(fy_test_run_until(&e->loop, &r1.closed, 5000)); /* and the master hangs up */

  struct raw_ha r2 = {0};
  fy_conn *c2 = raw_ha_connect(e, &r2);
  h.log_end = 0;
  e->done = false;
  assert_int_equal(fy_rpc_call(c2, FERRY__V1__OP__OP_HA_HELLO, &h.base, NULL, 0, 3000, on_resp, e), 0);
  assert_true(fy_test_run_until(&e->loop, &e->done, 5000));
  assert_int_equal(e->status, FERRY__V1__STATUS__OK);
  Ferry__V1__HaAck a = FERRY__V1__HA_ACK__INIT;
  a.received = a.durable = 1ull << 40;
  assert_int_equal(fy_rpc_oneway(c2, FERRY__V1__OP__OP_HA_ACK, &a.base, NULL, 0), 0);
  assert_true(fy_test_run_until(&e->loop, &r2.closed, 5000));
  /* The real slave is unaffected. */
  wait_caught_up(e);
}

static int64_t query_offset(struct env *e, struct node *n, const char *topic) {
  Ferry__V1__QueueOffsetRequest q = FERRY__V1__QUEUE_OFFSET_REQUEST__INIT;
  q.group = "G";
  q.topic = (char *)topic;
  call(e, n, FERRY__V1__OP__OP_QUERY_CONSUMER_OFFSET, &q.base, NULL, 0);
  if (e->status != FERRY__V1__STATUS__OK)
    return -1;
  Ferry__V1__QueueOffsetResponse *o =
      ferry__v1__queue_offset_response__unpack(NULL, e->header_len, e->header);
  int64_t v = (int64_t)o->offset;
  ferry__v1__queue_offset_response__free_unpacked(o, NULL);
  return v;
}

/* Offsets committed on the slave while the master was down reach the master
 * when it returns: merged (larger wins), not reset. */
static void test_offsets_committed_on_slave_merge_into_master(void **state) {
  struct env *e = *state;
  assert_int_equal(send_batch(e, "Offs", 100, 0), FERRY__V1__STATUS__OK);
  wait_caught_up(e);
  Ferry__V1__QueueOffsetRequest q = FERRY__V1__QUEUE_OFFSET_REQUEST__INIT;
  q.group = "G";
  q.topic = "Offs";
  q.offset = 20;
  call(e, &e->master, FERRY__V1__OP__OP_UPDATE_CONSUMER_OFFSET, &q.base, NULL, 0);
  assert_int_equal(e->status, FERRY__V1__STATUS__OK);
  stop_node(e, &e->master);
  q.offset = 60; /* the consumer moved on, reading from the slave */
  call(e, &e->slave, FERRY__V1__OP__OP_UPDATE_CONSUMER_OFFSET, &q.base, NULL, 0);
  assert_int_equal(e->status, FERRY__V1__STATUS__OK);
  start_node(e, &e->master, "master", FY_ROLE_ASYNC_MASTER, 0, 0);
  uint64_t deadline = uv_now(&e->loop) + 15000;
  while (query_offset(e, &e->master, "Offs") != 60) {
    assert_true(uv_now(&e->loop) < deadline);
    bool never = false;
    fy_test_run_until(&e->loop, &never, 50);
  }
  /* And the slave never goes back to the master's older value. */
  assert_int_equal(query_offset(e, &e->slave, "Offs"), 60);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_async_replicas_are_identical, setup_async, teardown),
      cmocka_unit_test_setup_teardown(test_slave_restart_resumes, setup_async, teardown),
      cmocka_unit_test_setup_teardown(test_slave_disk_full_pauses_replication, setup_async,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_sync_master, setup_sync, teardown),
      cmocka_unit_test_setup_teardown(test_sync_master_flush_timeout, setup_sync_flush, teardown),
      cmocka_unit_test_setup_teardown(test_sync_master_restart_keeps_unacknowledged_hidden,
                                      setup_sync, teardown),
      cmocka_unit_test_setup_teardown(test_diverged_slave_refused, setup_async, teardown),
      cmocka_unit_test_setup_teardown(test_ha_bad_input, setup_async, teardown),
      cmocka_unit_test_setup_teardown(test_offsets_committed_on_slave_merge_into_master,
                                      setup_async, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
