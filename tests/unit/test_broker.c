/*
 * The broker in-process: a name server and a broker on one loop, driven by a
 * raw protocol client (fy_rpc_call). Covers send, pull, long polling,
 * consumer offsets, registration, bad input, SYNC_FLUSH's FLUSH_DISK_TIMEOUT
 * (with a slow fdatasync injected into the store's fy_aio), and a clean stop.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#include "broker/broker.h"
#include "broker/broker_int.h" /* the broker's store, to slow its fdatasync down */
#include "common/err.h"
#include "common/record.h"
#include "ferry.pb-c.h"
#include "namesrv/namesrv.h"
#include "net/conn.h"
#include "net/rpc.h"
#include "testutil.h"

struct env {
  uv_loop_t loop;
  char dir[400];
  uint32_t sync_flush_timeout_ms; /* nonzero: a SYNC_FLUSH broker with this syncFlushTimeout */
  uint64_t page_cache_max;        /* commitLogPageCacheMaxBytes (0: the default) */
  uint32_t disk_full_ratio;       /* diskSpaceWarningLevelRatio (0: the default) */
  bool no_index;                  /* messageIndexEnable=false */
  fy_namesrv *ns;
  fy_broker *broker;
  fy_conn *client;
  bool connected;
  /* last response */
  bool done;
  int err;
  uint16_t status;
  uint8_t header[65536];
  size_t header_len;
  uint8_t raw[1 << 20];
  size_t raw_len;
  char text[512];
};

static void on_connect(fy_conn *c, int status) {
  struct env *e = fy_conn_data(c);
  e->connected = status == 0;
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
  e->raw_len = f->raw_len;
  memcpy(e->raw, f->raw, f->raw_len);
  e->text[0] = '\0';
  if (f->status)
    fy_frame_error_text(f, e->text, sizeof e->text);
}

static void start_broker(struct env *e, bool auto_create) {
  struct fy_broker_settings s;
  fy_broker_settings_defaults(&s);
  snprintf(s.store.root_dir, sizeof s.store.root_dir, "%s/store", e->dir);
  s.store.commitlog_segment_size = 1 << 20;
  s.store.index_slots = 1024;
  s.store.index_entries = 4096;
  s.store.write_buffer_size = 5 << 20;
  s.broker.listen_port = 0;
  s.broker.auto_create_topic = auto_create;
  s.store.page_cache_max = e->page_cache_max;
  s.store.index_enable = !e->no_index;
  if (e->disk_full_ratio) {
    s.store.disk_full_ratio = e->disk_full_ratio;
    s.store.clean_interval_ms = 100; /* the disk check runs with retention */
  }
  if (e->sync_flush_timeout_ms) {
    s.store.flush_disk_type = FY_SYNC_FLUSH;
    s.broker.sync_flush_timeout_ms = e->sync_flush_timeout_ms;
  }
  snprintf(s.broker.broker_ip, sizeof s.broker.broker_ip, "127.0.0.1");
  snprintf(s.broker.listen_address, sizeof s.broker.listen_address, "127.0.0.1");
  snprintf(s.broker.namesrv_addr, sizeof s.broker.namesrv_addr, "127.0.0.1:%d",
           fy_namesrv_port(e->ns));
  assert_int_equal(fy_broker_start(&e->loop, &s, &e->broker), 0);
}

static int setup_env(void **state, struct env *e) {
  uv_loop_init(&e->loop);
  snprintf(e->dir, sizeof e->dir, "%s", fy_test_mkdtemp("broker"));
  struct fy_namesrv_config nc;
  struct fy_config_section sec = {fy_namesrv_config_keys, &nc};
  fy_config_defaults(&sec, 1);
  nc.listen_port = 0;
  snprintf(nc.listen_address, sizeof nc.listen_address, "127.0.0.1");
  assert_int_equal(fy_namesrv_start(&e->loop, &nc, &e->ns), 0);
  start_broker(e, true);
  fy_conn_cfg cc = {.data = e};
  assert_int_equal(fy_conn_connect(&e->loop, "127.0.0.1", fy_broker_port(e->broker), &cc,
                                   on_connect, &e->client), 0);
  assert_true(fy_test_run_until(&e->loop, &e->connected, 5000));
  *state = e;
  return 0;
}

static int setup_with(void **state, uint32_t sync_flush_timeout_ms, uint64_t page_cache_max) {
  struct env *e = calloc(1, sizeof *e);
  e->sync_flush_timeout_ms = sync_flush_timeout_ms;
  e->page_cache_max = page_cache_max;
  return setup_env(state, e);
}

static int setup(void **state) { return setup_with(state, 0, 0); }

/* A broker whose diskSpaceWarningLevelRatio is below what the disk under
 * the tests already uses: it is full from its first disk check. */
static int setup_disk_full(void **state) {
  struct env *e = calloc(1, sizeof *e);
  const char *dir = fy_test_mkdtemp("disk"); /* on the disk the broker's store goes to */
  struct statvfs sv;
  assert_int_equal(statvfs(dir, &sv), 0);
  fy_test_rmtree(dir);
  uint64_t used = sv.f_blocks - sv.f_bfree;
  e->disk_full_ratio = (uint32_t)(used * 100 / (used + sv.f_bavail) / 2); /* 0: nearly empty */
  return setup_env(state, e);
}

static int setup_no_index(void **state) {
  struct env *e = calloc(1, sizeof *e);
  e->no_index = true;
  return setup_env(state, e);
}

#define SMALL_PAGE_CACHE (64u << 20)
static int setup_small_cache(void **state) { return setup_with(state, 0, SMALL_PAGE_CACHE); }

/* syncFlushTimeout: long enough for any real fdatasync, except while the
 * test holds fdatasyncs back (with no send waiting, a new value applies at
 * once). */
#define SYNC_FLUSH_TIMEOUT_MS 200
#define SYNC_FLUSH_TIMEOUT_LONG_MS 60000
static int setup_sync_flush(void **state) {
  return setup_with(state, SYNC_FLUSH_TIMEOUT_LONG_MS, 0);
}

static void set_flush_timeout(struct env *e, uint32_t ms) {
  e->broker->settings.broker.sync_flush_timeout_ms = ms;
}

static void on_stopped(void *arg, int status) {
  assert_int_equal(status, 0);
  *(bool *)arg = true;
}

static int teardown(void **state) {
  struct env *e = *state;
  fy_conn_close(e->client, 0);
  bool stopped = false;
  fy_broker_stop(e->broker, on_stopped, &stopped);
  assert_true(fy_test_run_until(&e->loop, &stopped, 10000));
  fy_namesrv_stop(e->ns);
  assert_int_equal(fy_test_loop_finish(&e->loop), 0);
  fy_test_rmtree(e->dir);
  free(e);
  return 0;
}

/* Sends a request and waits for its answer. */
static void call(struct env *e, uint16_t op, const ProtobufCMessage *msg, const void *raw,
                 size_t raw_len, uint32_t timeout_ms) {
  e->done = false;
  uv_buf_t b = uv_buf_init((char *)raw, (unsigned)raw_len);
  assert_int_equal(fy_rpc_call(e->client, op, msg, raw ? &b : NULL, raw ? 1 : 0, timeout_ms,
                               on_resp, e), 0);
  assert_true(fy_test_run_until(&e->loop, &e->done, timeout_ms + 2000));
  assert_int_equal(e->err, 0);
}

static Ferry__V1__SendResponse *send_one(struct env *e, const char *topic, int queue_id,
                                         const char *body, const char *tags, const char *keys) {
  Ferry__V1__SendMessage m = FERRY__V1__SEND_MESSAGE__INIT;
  m.body_len = (uint32_t)strlen(body);
  m.tags = (char *)tags;
  m.keys = (char *)keys;
  Ferry__V1__SendMessage *mp = &m;
  Ferry__V1__SendRequest req = FERRY__V1__SEND_REQUEST__INIT;
  req.producer_group = "PG";
  req.topic = (char *)topic;
  req.queue_id = queue_id;
  req.messages = &mp;
  req.n_messages = 1;
  call(e, FERRY__V1__OP__OP_SEND, &req.base, body, strlen(body), 5000);
  if (e->status != FERRY__V1__STATUS__OK)
    return NULL;
  return ferry__v1__send_response__unpack(NULL, e->header_len, e->header);
}

static Ferry__V1__PullResponse *pull(struct env *e, const char *topic, uint32_t q, uint64_t off,
                                     uint32_t suspend_ms, const int64_t *tags, size_t ntags) {
  Ferry__V1__PullRequest req = FERRY__V1__PULL_REQUEST__INIT;
  req.consumer_group = "CG";
  req.topic = (char *)topic;
  req.queue_id = q;
  req.queue_offset = off;
  req.max_msgs = 32;
  req.suspend_timeout_ms = suspend_ms;
  req.tag_hashes = (int64_t *)tags;
  req.n_tag_hashes = ntags;
  call(e, FERRY__V1__OP__OP_PULL, &req.base, NULL, 0, suspend_ms + 5000);
  if (e->header_len == 0 && e->status != FERRY__V1__STATUS__OK)
    return NULL;
  return ferry__v1__pull_response__unpack(NULL, e->header_len, e->header);
}

static void test_send_then_pull(void **state) {
  struct env *e = *state;
  Ferry__V1__SendResponse *r = send_one(e, "TopicA", 2, "hello ferry", "TagA", "k1 k2");
  assert_non_null(r);
  assert_string_equal(r->broker_name, "broker-a");
  assert_int_equal(r->queue_id, 2);
  assert_int_equal(r->n_results, 1);
  assert_int_equal(r->results[0]->queue_offset, 0);
  assert_int_equal(strlen(r->results[0]->msg_id), 32);
  assert_int_equal(strlen(r->results[0]->offset_msg_id), 32);
  ferry__v1__send_response__free_unpacked(r, NULL);

  Ferry__V1__PullResponse *p = pull(e, "TopicA", 2, 0, 0, NULL, 0);
  assert_non_null(p);
  assert_int_equal(e->status, FERRY__V1__STATUS__OK);
  assert_int_equal(p->count, 1);
  assert_int_equal(p->next_offset, 1);
  assert_int_equal(p->max_offset, 1);
  uint64_t phys;
  memcpy(&phys, e->raw + 28, 8);
  enum fy_record_kind kind;
  struct fy_msg m;
  assert_int_equal(fy_record_decode(e->raw, e->raw_len, phys, &kind, &m), (int64_t)e->raw_len);
  assert_int_equal(m.body_len, 11);
  assert_memory_equal(m.body, "hello ferry", 11);
  /* Born host: the producer's connection, taken once when it was accepted. */
  assert_false(m.born_host.v6);
  assert_memory_equal(m.born_host.ip, ((uint8_t[]){127, 0, 0, 1}), 4);
  assert_true(m.born_host.port > 0);
  const char *v;
  size_t vlen;
  assert_true(fy_props_get(m.props, m.props_len, "TAGS", &v, &vlen));
  assert_int_equal(vlen, 4);
  ferry__v1__pull_response__free_unpacked(p, NULL);

  /* Nothing more: PULL_NOT_FOUND without waiting. */
  p = pull(e, "TopicA", 2, 1, 0, NULL, 0);
  assert_int_equal(e->status, FERRY__V1__STATUS__PULL_NOT_FOUND);
  ferry__v1__pull_response__free_unpacked(p, NULL);
  /* Past the end: offset moved back to max. */
  p = pull(e, "TopicA", 2, 50, 0, NULL, 0);
  assert_int_equal(e->status, FERRY__V1__STATUS__PULL_OFFSET_MOVED);
  assert_int_equal(p->next_offset, 1);
  ferry__v1__pull_response__free_unpacked(p, NULL);
}

static void test_tag_filter(void **state) {
  struct env *e = *state;
  for (int i = 0; i < 6; i++) {
    Ferry__V1__SendResponse *r = send_one(e, "Tags", 0, "x", i % 2 ? "odd" : "even", "");
    assert_non_null(r);
    ferry__v1__send_response__free_unpacked(r, NULL);
  }
  int64_t odd = fy_tag_hash("odd", 3);
  Ferry__V1__PullResponse *p = pull(e, "Tags", 0, 0, 0, &odd, 1);
  assert_int_equal(e->status, FERRY__V1__STATUS__OK);
  assert_int_equal(p->count, 3);
  assert_int_equal(p->next_offset, 6);
  ferry__v1__pull_response__free_unpacked(p, NULL);
}

struct delayed_send {
  struct env *e;
  uv_timer_t t;
  fy_conn *conn;
  bool connected;
};

static void on_second_connect(fy_conn *c, int status) {
  struct delayed_send *d = fy_conn_data(c);
  d->connected = status == 0;
}

static void on_ignored(fy_conn *c, int err, const fy_frame *f, void *arg) {
  (void)c; (void)err; (void)f; (void)arg;
}

static void send_later(uv_timer_t *t) {
  struct delayed_send *d = t->data;
  Ferry__V1__SendMessage m = FERRY__V1__SEND_MESSAGE__INIT;
  m.body_len = 4;
  Ferry__V1__SendMessage *mp = &m;
  Ferry__V1__SendRequest req = FERRY__V1__SEND_REQUEST__INIT;
  req.topic = "LongPoll";
  req.queue_id = 0;
  req.messages = &mp;
  req.n_messages = 1;
  uv_buf_t b = uv_buf_init("wake", 4);
  fy_rpc_call(d->conn, FERRY__V1__OP__OP_SEND, &req.base, &b, 1, 5000, on_ignored, NULL);
}

static void on_timer_closed(uv_handle_t *h) { *(bool *)h->data = true; }

static void test_long_poll_wakes_on_arrival(void **state) {
  struct env *e = *state;
  /* Create the topic first (auto-create on send). */
  Ferry__V1__SendResponse *r = send_one(e, "LongPoll", 0, "first", "", "");
  ferry__v1__send_response__free_unpacked(r, NULL);
  struct delayed_send d = {.e = e};
  fy_conn_cfg cc = {.data = &d};
  assert_int_equal(fy_conn_connect(&e->loop, "127.0.0.1", fy_broker_port(e->broker), &cc,
                                   on_second_connect, &d.conn), 0);
  assert_true(fy_test_run_until(&e->loop, &d.connected, 5000));
  uv_timer_init(&e->loop, &d.t);
  d.t.data = &d;
  uv_timer_start(&d.t, send_later, 200, 0);
  uint64_t start = uv_now(&e->loop);
  /* Held for up to 20 s; answered as soon as the message lands. */
  Ferry__V1__PullResponse *p = pull(e, "LongPoll", 0, 1, 20000, NULL, 0);
  uint64_t waited = uv_now(&e->loop) - start;
  assert_int_equal(e->status, FERRY__V1__STATUS__OK);
  assert_int_equal(p->count, 1);
  assert_true(waited < 15000); /* woken by the arrival, not by the deadline */
  ferry__v1__pull_response__free_unpacked(p, NULL);
  bool closed = false;
  d.t.data = &closed;
  uv_close((uv_handle_t *)&d.t, on_timer_closed);
  fy_conn_close(d.conn, 0);
  assert_true(fy_test_run_until(&e->loop, &closed, 5000));
}

static void test_long_poll_deadline(void **state) {
  struct env *e = *state;
  Ferry__V1__SendResponse *r = send_one(e, "Quiet", 0, "only", "", "");
  ferry__v1__send_response__free_unpacked(r, NULL);
  Ferry__V1__PullResponse *p = pull(e, "Quiet", 0, 1, 300, NULL, 0);
  assert_int_equal(e->status, FERRY__V1__STATUS__PULL_NOT_FOUND);
  assert_int_equal(p->next_offset, 1);
  ferry__v1__pull_response__free_unpacked(p, NULL);
}

static void test_consumer_offsets(void **state) {
  struct env *e = *state;
  Ferry__V1__SendResponse *r = send_one(e, "Offs", 1, "m", "", "");
  ferry__v1__send_response__free_unpacked(r, NULL);
  Ferry__V1__QueueOffsetRequest q = FERRY__V1__QUEUE_OFFSET_REQUEST__INIT;
  q.group = "G1";
  q.topic = "Offs";
  q.queue_id = 1;
  call(e, FERRY__V1__OP__OP_QUERY_CONSUMER_OFFSET, &q.base, NULL, 0, 3000);
  assert_int_equal(e->status, FERRY__V1__STATUS__NOT_FOUND);
  q.offset = 1;
  call(e, FERRY__V1__OP__OP_UPDATE_CONSUMER_OFFSET, &q.base, NULL, 0, 3000);
  assert_int_equal(e->status, FERRY__V1__STATUS__OK);
  call(e, FERRY__V1__OP__OP_QUERY_CONSUMER_OFFSET, &q.base, NULL, 0, 3000);
  assert_int_equal(e->status, FERRY__V1__STATUS__OK);
  Ferry__V1__QueueOffsetResponse *o =
      ferry__v1__queue_offset_response__unpack(NULL, e->header_len, e->header);
  assert_int_equal(o->offset, 1);
  ferry__v1__queue_offset_response__free_unpacked(o, NULL);
  call(e, FERRY__V1__OP__OP_GET_MAX_OFFSET, &q.base, NULL, 0, 3000);
  o = ferry__v1__queue_offset_response__unpack(NULL, e->header_len, e->header);
  assert_int_equal(o->offset, 1);
  ferry__v1__queue_offset_response__free_unpacked(o, NULL);
}

static void test_bad_requests(void **state) {
  struct env *e = *state;
  /* Body lengths that do not add up. */
  Ferry__V1__SendMessage m = FERRY__V1__SEND_MESSAGE__INIT;
  m.body_len = 100;
  Ferry__V1__SendMessage *mp = &m;
  Ferry__V1__SendRequest req = FERRY__V1__SEND_REQUEST__INIT;
  req.topic = "Bad";
  req.queue_id = -1;
  req.messages = &mp;
  req.n_messages = 1;
  call(e, FERRY__V1__OP__OP_SEND, &req.base, "short", 5, 3000);
  assert_int_equal(e->status, FERRY__V1__STATUS__BAD_REQUEST);
  assert_non_null(strstr(e->text, "add up"));
  /* An invalid topic name. */
  req.topic = "bad topic!";
  m.body_len = 1;
  call(e, FERRY__V1__OP__OP_SEND, &req.base, "x", 1, 3000);
  assert_int_equal(e->status, FERRY__V1__STATUS__MESSAGE_ILLEGAL);
  /* Oversized: body over maxMessageSize (4 MiB default). */
  req.topic = "Big";
  size_t big = (4u << 20) + 1;
  char *body = calloc(1, big);
  m.body_len = (uint32_t)big;
  call(e, FERRY__V1__OP__OP_SEND, &req.base, body, big, 5000);
  free(body);
  assert_int_equal(e->status, FERRY__V1__STATUS__MESSAGE_ILLEGAL);
  assert_non_null(strstr(e->text, "maxMessageSize"));
  /* Pull on a topic that does not exist. */
  Ferry__V1__PullResponse *p = pull(e, "NoSuchTopic", 0, 0, 0, NULL, 0);
  assert_null(p);
  assert_int_equal(e->status, FERRY__V1__STATUS__TOPIC_NOT_EXIST);
  /* An op the broker does not serve. */
  call(e, 999, NULL, NULL, 0, 3000);
  assert_int_equal(e->status, FERRY__V1__STATUS__UNSUPPORTED_OP);
  /* The broker still serves. */
  Ferry__V1__SendResponse *r = send_one(e, "StillOk", -1, "fine", "", "");
  assert_non_null(r);
  ferry__v1__send_response__free_unpacked(r, NULL);
}

struct route_wait {
  struct env *e;
  fy_conn *conn;
  bool connected;
};

static void on_ns_connect(fy_conn *c, int status) {
  struct route_wait *w = fy_conn_data(c);
  w->connected = status == 0;
}

static void test_registration_gives_route(void **state) {
  struct env *e = *state;
  Ferry__V1__SendResponse *r = send_one(e, "Routed", -1, "m", "", "");
  ferry__v1__send_response__free_unpacked(r, NULL);
  struct route_wait w = {.e = e};
  fy_conn_cfg cc = {.data = &w};
  assert_int_equal(fy_conn_connect(&e->loop, "127.0.0.1", fy_namesrv_port(e->ns), &cc,
                                   on_ns_connect, &w.conn), 0);
  assert_true(fy_test_run_until(&e->loop, &w.connected, 5000));
  /* Auto-creation re-registers at once; poll the route until it shows up. */
  uint64_t deadline = uv_now(&e->loop) + 10000;
  Ferry__V1__TopicRoute *route = NULL;
  while (!route && uv_now(&e->loop) < deadline) {
    Ferry__V1__GetRouteRequest gr = FERRY__V1__GET_ROUTE_REQUEST__INIT;
    gr.topic = "Routed";
    e->done = false;
    assert_int_equal(fy_rpc_call(w.conn, FERRY__V1__OP__OP_GET_ROUTE, &gr.base, NULL, 0, 3000,
                                 on_resp, e), 0);
    assert_true(fy_test_run_until(&e->loop, &e->done, 5000));
    if (e->status == FERRY__V1__STATUS__OK)
      route = ferry__v1__topic_route__unpack(NULL, e->header_len, e->header);
    else {
      bool never = false;
      fy_test_run_until(&e->loop, &never, 50);
    }
  }
  assert_non_null(route);
  assert_int_equal(route->n_queues, 1);
  assert_int_equal(route->queues[0]->write_queues, 8);
  assert_int_equal(route->n_brokers, 1);
  assert_int_equal(route->brokers[0]->n_addrs, 1);
  char want[64];
  snprintf(want, sizeof want, "127.0.0.1:%d", fy_broker_port(e->broker));
  assert_string_equal(route->brokers[0]->addrs[0]->addr, want);
  ferry__v1__topic_route__free_unpacked(route, NULL);
  fy_conn_close(w.conn, 0);
}

/* A broker whose connection to the name server closes (killed) leaves the routes at once. */
static void test_namesrv_drops_broker_on_close(void **state) {
  struct env *e = *state;
  struct route_wait w = {.e = e};
  fy_conn_cfg cc = {.data = &w};
  assert_int_equal(fy_conn_connect(&e->loop, "127.0.0.1", fy_namesrv_port(e->ns), &cc,
                                   on_ns_connect, &w.conn), 0);
  assert_true(fy_test_run_until(&e->loop, &w.connected, 5000));
  Ferry__V1__TopicConfig tc = FERRY__V1__TOPIC_CONFIG__INIT, *tcp = &tc;
  tc.topic = "Ghost";
  tc.read_queues = tc.write_queues = 2;
  tc.perm = 6;
  Ferry__V1__RegisterBrokerRequest reg = FERRY__V1__REGISTER_BROKER_REQUEST__INIT;
  reg.cluster = "C";
  reg.broker_name = "ghost";
  reg.broker_addr = "127.0.0.1:1";
  reg.topics = &tcp;
  reg.n_topics = 1;
  e->done = false;
  assert_int_equal(fy_rpc_call(w.conn, FERRY__V1__OP__OP_REGISTER_BROKER, &reg.base, NULL, 0, 3000,
                               on_resp, e), 0);
  assert_true(fy_test_run_until(&e->loop, &e->done, 5000));
  assert_int_equal(e->status, FERRY__V1__STATUS__OK);
  fy_conn_close(w.conn, 0);
  /* Ask through another connection until the route is gone. */
  struct route_wait w2 = {.e = e};
  fy_conn_cfg cc2 = {.data = &w2};
  assert_int_equal(fy_conn_connect(&e->loop, "127.0.0.1", fy_namesrv_port(e->ns), &cc2,
                                   on_ns_connect, &w2.conn), 0);
  assert_true(fy_test_run_until(&e->loop, &w2.connected, 5000));
  uint64_t deadline = uv_now(&e->loop) + 5000;
  for (;;) {
    Ferry__V1__GetRouteRequest gr = FERRY__V1__GET_ROUTE_REQUEST__INIT;
    gr.topic = "Ghost";
    e->done = false;
    assert_int_equal(fy_rpc_call(w2.conn, FERRY__V1__OP__OP_GET_ROUTE, &gr.base, NULL, 0, 3000,
                                 on_resp, e), 0);
    assert_true(fy_test_run_until(&e->loop, &e->done, 5000));
    if (e->status == FERRY__V1__STATUS__TOPIC_NOT_EXIST)
      break;
    assert_true(uv_now(&e->loop) < deadline); /* far below the 120 s expiry */
    bool never = false;
    fy_test_run_until(&e->loop, &never, 20);
  }
  fy_conn_close(w2.conn, 0);
}

static bool all_flushed(void *cl) {
  return fy_commitlog_flushed(cl) == fy_commitlog_end(cl);
}

/* Runs the loop until the store has flushed everything appended. */
static void wait_all_flushed(struct env *e) {
  assert_true(fy_test_run_until_pred(&e->loop, all_flushed,
                                     fy_store_commitlog(e->broker->store), 10000));
}

/* SYNC_FLUSH with an fdatasync slower than syncFlushTimeout: the send is
 * answered FLUSH_DISK_TIMEOUT (with its results: it is stored) no earlier
 * than the timeout, the message can be pulled, the late fdatasync answers
 * nothing twice (ASan would see the freed send), and a later send gets OK. */
/* slaveReadEnable: a consumer further behind than the commit log keeps in
 * the page cache is sent to the slave (whichBrokerWhenConsumeSlowly, 1). By
 * default that is accessMessageInMemoryMaxRatio of RAM; a smaller
 * commitLogPageCacheMaxBytes lowers it, since beyond it reads hit the disk. */
static void test_slave_read_follows_page_cache(void **state) {
  struct env *e = *state;
  struct fy_broker *b = e->broker;
  uint64_t in_memory = uv_get_total_memory() / 100 * b->cfg->memory_max_ratio;
  assert_true(in_memory > SMALL_PAGE_CACHE); /* else this test shows nothing */
  b->settings.broker.slave_read_enable = true;
  struct pull_req r = {.queue_id = 0};
  snprintf(r.group, sizeof r.group, "G");
  snprintf(r.topic, sizeof r.topic, "T");
  struct fy_get_result res = {.status = FY_GET_FOUND, .count = 1, .behind_bytes = SMALL_PAGE_CACHE};
  assert_int_equal(fy__pull_suggest(b, &r, &res), 0);
  res.behind_bytes = SMALL_PAGE_CACHE + 1;
  assert_int_equal(fy__pull_suggest(b, &r, &res), 1);
  res.count = 0; /* nothing returned: nothing to redirect */
  assert_int_equal(fy__pull_suggest(b, &r, &res), 0);
}

/* The default bound is the in-memory share of RAM, and so is the redirect point. */
static void test_page_cache_default(void **state) {
  struct env *e = *state;
  struct fy_broker *b = e->broker;
  uint64_t in_memory = uv_get_total_memory() / 100 * b->cfg->memory_max_ratio;
  assert_int_equal(b->settings.store.page_cache_max, in_memory);
  b->settings.broker.slave_read_enable = true;
  struct pull_req r = {.queue_id = 0};
  snprintf(r.group, sizeof r.group, "G");
  struct fy_get_result res = {.status = FY_GET_FOUND, .count = 1, .behind_bytes = SMALL_PAGE_CACHE + 1};
  assert_int_equal(fy__pull_suggest(b, &r, &res), 0);
  res.behind_bytes = in_memory + 1;
  assert_int_equal(fy__pull_suggest(b, &r, &res), 1);
}

static void test_flush_disk_timeout(void **state) {
  struct env *e = *state;
  fy_aio *aio = fy_store_aio(e->broker->store);
  Ferry__V1__SendResponse *r = send_one(e, "Slow", 0, "warm-up", "", ""); /* topic created */
  assert_non_null(r);
  ferry__v1__send_response__free_unpacked(r, NULL);

  wait_all_flushed(e); /* nothing waits: the short timeout applies */
  set_flush_timeout(e, SYNC_FLUSH_TIMEOUT_MS);
  fy_aio_inject_delay(aio, FY_AIO_FDATASYNC, FY_AIO_HOLD_UNTIL_RELEASED);
  uv_update_time(&e->loop);
  uint64_t t0 = uv_now(&e->loop);
  assert_null(send_one(e, "Slow", 0, "late", "", ""));
  assert_int_equal(e->status, FERRY__V1__STATUS__FLUSH_DISK_TIMEOUT);
  assert_true(uv_now(&e->loop) - t0 >= SYNC_FLUSH_TIMEOUT_MS);
  r = ferry__v1__send_response__unpack(NULL, e->header_len, e->header);
  assert_non_null(r);
  assert_int_equal(r->n_results, 1);
  assert_int_equal(r->results[0]->queue_offset, 1);
  assert_int_equal(strlen(r->results[0]->offset_msg_id), 32);
  ferry__v1__send_response__free_unpacked(r, NULL);
  assert_int_equal(e->broker->send_flush_timeouts, 1);
  fy_commitlog *cl = fy_store_commitlog(e->broker->store);
  assert_true(fy_commitlog_flushed(cl) < fy_commitlog_end(cl)); /* still not durable */

  Ferry__V1__PullResponse *p = pull(e, "Slow", 0, 1, 0, NULL, 0);
  assert_int_equal(e->status, FERRY__V1__STATUS__OK);
  assert_int_equal(p->count, 1);
  ferry__v1__pull_response__free_unpacked(p, NULL);

  fy_aio_inject_delay(aio, FY_AIO_FDATASYNC, 0);
  wait_all_flushed(e);
  set_flush_timeout(e, SYNC_FLUSH_TIMEOUT_LONG_MS);
  r = send_one(e, "Slow", 0, "on time", "", "");
  assert_non_null(r); /* SEND_OK */
  assert_int_equal(r->results[0]->queue_offset, 2);
  ferry__v1__send_response__free_unpacked(r, NULL);
  assert_int_equal(e->broker->send_flush_timeouts, 1);
}

/* A full disk (diskSpaceWarningLevelRatio reached): sends are refused with
 * SERVICE_NOT_AVAILABLE and a text that names the key, nothing is stored,
 * and what was stored before still reads back. */
static bool disk_full(void *arg) {
  struct fy_store_stats st;
  fy_store_stats(arg, &st);
  return st.disk_full;
}

static void test_disk_full_refuses_sends(void **state) {
  struct env *e = *state;
  if (!e->disk_full_ratio) {
    fprintf(stderr, "disk full: the disk under the tests is nearly empty; skipped\n");
    skip();
  }
  Ferry__V1__SendResponse *r = send_one(e, "Full", 0, "before", "", "");
  if (r) /* the first disk check may come before the first send, or after */
    ferry__v1__send_response__free_unpacked(r, NULL);
  uint64_t stored = r ? 1 : 0;
  assert_true(fy_test_run_until_pred(&e->loop, disk_full, e->broker->store, 5000));
  for (int i = 0; i < 3; i++) {
    assert_null(send_one(e, "Full", 0, "refused", "", ""));
    assert_int_equal(e->status, FERRY__V1__STATUS__SERVICE_NOT_AVAILABLE);
    assert_non_null(strstr(e->text, "diskSpaceWarningLevelRatio"));
  }
  assert_int_equal(fy_store_max_offset(e->broker->store, "Full", 0), stored);
  if (stored) {
    Ferry__V1__PullResponse *p = pull(e, "Full", 0, 0, 0, NULL, 0);
    assert_int_equal(e->status, FERRY__V1__STATUS__OK);
    assert_int_equal(p->count, 1);
    ferry__v1__pull_response__free_unpacked(p, NULL);
  }
}

/* Messages with key K in topic T (-1: an error, in e->status and e->text). */
static int query_key(struct env *e, const char *topic, const char *key) {
  Ferry__V1__QueryByKeyRequest req = FERRY__V1__QUERY_BY_KEY_REQUEST__INIT;
  req.topic = (char *)topic;
  req.key = (char *)key;
  req.max = 32;
  call(e, FERRY__V1__OP__OP_QUERY_BY_KEY, &req.base, NULL, 0, 5000);
  if (e->status != FERRY__V1__STATUS__OK)
    return -1;
  Ferry__V1__QueryResponse *r = ferry__v1__query_response__unpack(NULL, e->header_len, e->header);
  assert_non_null(r);
  int n = (int)r->count;
  ferry__v1__query_response__free_unpacked(r, NULL);
  return n;
}

static bool key_found(void *arg) { return query_key(arg, "Keyed", "ORDER-7") == 1; }

/* Query by key finds a message once it is dispatched; a broker without the
 * index says so instead of answering "no such key". */
static void test_query_by_key(void **state) {
  struct env *e = *state;
  Ferry__V1__SendResponse *r = send_one(e, "Keyed", 0, "body", "", "ORDER-7");
  assert_non_null(r);
  ferry__v1__send_response__free_unpacked(r, NULL);
  if (!e->no_index) {
    assert_true(fy_test_run_until_pred(&e->loop, key_found, e, 5000));
    assert_int_equal(query_key(e, "Keyed", "ORDER-8"), 0);
    return;
  }
  assert_int_equal(query_key(e, "Keyed", "ORDER-7"), -1);
  assert_int_equal(e->status, FERRY__V1__STATUS__UNSUPPORTED_OP);
  assert_non_null(strstr(e->text, "messageIndexEnable=false"));
  Ferry__V1__PullResponse *p = pull(e, "Keyed", 0, 0, 0, NULL, 0); /* the message is there */
  assert_non_null(p);
  assert_int_equal(p->count, 1);
  ferry__v1__pull_response__free_unpacked(p, NULL);
}

/* The born host recorded for a send comes from the peer's address, IPv4 or
 * IPv6 (an IPv6 producer was recorded as 0.0.0.0:port). */
static void test_born_host_from_peer(void **state) {
  (void)state;
  struct fy_host h;
  fy__parse_host("10.1.2.3:45678", &h);
  assert_false(h.v6);
  assert_memory_equal(h.ip, ((uint8_t[]){10, 1, 2, 3}), 4);
  assert_int_equal(h.port, 45678);

  fy__parse_host("[2001:db8::7]:10911", &h);
  assert_true(h.v6);
  uint8_t want[16] = {0x20, 0x01, 0x0d, 0xb8};
  want[15] = 7;
  assert_memory_equal(h.ip, want, 16);
  assert_int_equal(h.port, 10911);

  fy__parse_host("[::ffff:127.0.0.1]:1", &h); /* v4-mapped: recorded as the IPv6 it is */
  assert_true(h.v6);
  assert_int_equal(h.ip[10], 0xff);
  assert_int_equal(h.ip[15], 1);

  static const char *bad[] = {"?", "", "no-port", "[::1:5", "300.1.1.1:5", "[nonsense]:5"};
  static const uint8_t zero[16];
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    fy__parse_host(bad[i], &h);
    assert_false(h.v6);
    assert_memory_equal(h.ip, zero, 16);
    assert_int_equal(h.port, 0);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_send_then_pull, setup, teardown),
      cmocka_unit_test_setup_teardown(test_tag_filter, setup, teardown),
      cmocka_unit_test_setup_teardown(test_long_poll_wakes_on_arrival, setup, teardown),
      cmocka_unit_test_setup_teardown(test_long_poll_deadline, setup, teardown),
      cmocka_unit_test_setup_teardown(test_consumer_offsets, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_requests, setup, teardown),
      cmocka_unit_test_setup_teardown(test_registration_gives_route, setup, teardown),
      cmocka_unit_test_setup_teardown(test_namesrv_drops_broker_on_close, setup, teardown),
      cmocka_unit_test_setup_teardown(test_flush_disk_timeout, setup_sync_flush, teardown),
      cmocka_unit_test_setup_teardown(test_disk_full_refuses_sends, setup_disk_full, teardown),
      cmocka_unit_test_setup_teardown(test_query_by_key, setup, teardown),
      cmocka_unit_test_setup_teardown(test_query_by_key, setup_no_index, teardown),
      cmocka_unit_test_setup_teardown(test_slave_read_follows_page_cache, setup_small_cache,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_page_cache_default, setup, teardown),
      cmocka_unit_test(test_born_host_from_peer),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
