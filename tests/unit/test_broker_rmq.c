/*
 * The broker's RocketMQ port in-process (src/broker/rmq.c, schedule.c and
 * the pull/send paths they share): a name server and a broker on one loop,
 * driven by a raw remoting client on a libuv TCP handle (JSON headers, as
 * the Java client and ali-ons send them). Each test is a case a RocketMQ
 * client meets: a producer leaving while its instance keeps consuming,
 * long or many-tag subscriptions, many pulls held on one queue, delayed
 * messages re-stored while the store pushes back, a SYNC_FLUSH send whose
 * fdatasync is slow (FLUSH_DISK_TIMEOUT), subscription groups created,
 * changed, listed and deleted by an admin with autoCreateSubscriptionGroup
 * off (and refused by a slave).
 */
#include <setjmp.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "broker/broker.h"
#include "broker/broker_int.h" /* the broker's store, to slow its fdatasync down */
#include "common/record.h"
#include "namesrv/namesrv.h"
#include "remoting/remoting.h"
#include "testutil.h"

#define RBUF_MAX (8u << 20)
#define END ((const char *)NULL) /* ends the ext pairs */

struct env {
  uv_loop_t loop;
  char dir[400];
  fy_namesrv *ns;
  fy_broker *broker;
  uv_tcp_t tcp;
  uv_connect_t creq;
  bool connected, readable;
  uint8_t *rbuf;
  size_t rlen;
  int32_t opaque;
  /* the last frame read */
  fy_rmq_cmd cmd;
  uint8_t *frame; /* cmd's body points into it */
};

struct settings_fn {
  void (*fn)(struct fy_broker_settings *s);
};

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
  (void)suggested;
  struct env *e = h->data;
  size_t room = RBUF_MAX - e->rlen;
  *b = uv_buf_init((char *)e->rbuf + e->rlen, (unsigned)(room > 65536 ? 65536 : room));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  (void)b;
  struct env *e = s->data;
  if (n > 0)
    e->rlen += (size_t)n;
  e->readable = true;
}

static void on_connected(uv_connect_t *req, int status) {
  struct env *e = req->data;
  assert_int_equal(status, 0);
  e->connected = true;
  assert_int_equal(uv_read_start((uv_stream_t *)&e->tcp, on_alloc, on_read), 0);
}

static void start(struct env *e, void (*tune)(struct fy_broker_settings *s)) {
  uv_loop_init(&e->loop);
  e->rbuf = malloc(RBUF_MAX);
  assert_non_null(e->rbuf);
  snprintf(e->dir, sizeof e->dir, "%s", fy_test_mkdtemp("broker_rmq"));
  struct fy_namesrv_config nc;
  struct fy_config_section sec = {fy_namesrv_config_keys, &nc};
  fy_config_defaults(&sec, 1);
  nc.listen_port = 0;
  snprintf(nc.listen_address, sizeof nc.listen_address, "127.0.0.1");
  assert_int_equal(fy_namesrv_start(&e->loop, &nc, &e->ns), 0);
  struct fy_broker_settings s;
  fy_broker_settings_defaults(&s);
  snprintf(s.store.root_dir, sizeof s.store.root_dir, "%s/store", e->dir);
  s.store.commitlog_segment_size = 4 << 20;
  s.store.index_slots = 1024;
  s.store.index_entries = 4096;
  s.store.write_buffer_size = 5 << 20;
  s.broker.listen_port = 0;
  snprintf(s.broker.broker_ip, sizeof s.broker.broker_ip, "127.0.0.1");
  snprintf(s.broker.listen_address, sizeof s.broker.listen_address, "127.0.0.1");
  snprintf(s.broker.namesrv_addr, sizeof s.broker.namesrv_addr, "127.0.0.1:%d",
           fy_namesrv_port(e->ns));
  if (tune)
    tune(&s);
  assert_int_equal(fy_broker_start(&e->loop, &s, &e->broker), 0);
  uv_tcp_init(&e->loop, &e->tcp);
  e->tcp.data = e;
  e->creq.data = e;
  struct sockaddr_in sa;
  uv_ip4_addr("127.0.0.1", fy_broker_port(e->broker), &sa);
  assert_int_equal(uv_tcp_connect(&e->creq, &e->tcp, (struct sockaddr *)&sa, on_connected), 0);
  assert_true(fy_test_run_until(&e->loop, &e->connected, 5000));
}

static int setup(void **state) {
  struct env *e = calloc(1, sizeof *e);
  const struct settings_fn *tune = *state;
  start(e, tune ? tune->fn : NULL);
  *state = e;
  return 0;
}

static void on_stopped(void *arg, int status) {
  assert_int_equal(status, 0);
  *(bool *)arg = true;
}

static int teardown(void **state) {
  struct env *e = *state;
  fy_rmq_cmd_free(&e->cmd);
  free(e->frame);
  uv_close((uv_handle_t *)&e->tcp, NULL);
  bool stopped = false;
  fy_broker_stop(e->broker, on_stopped, &stopped);
  assert_true(fy_test_run_until(&e->loop, &stopped, 10000));
  fy_namesrv_stop(e->ns);
  assert_int_equal(fy_test_loop_finish(&e->loop), 0);
  fy_test_rmtree(e->dir);
  free(e->rbuf);
  free(e);
  return 0;
}

/* ---------------------------------------------------------------- the client */

static void on_written(uv_write_t *w, int status) {
  assert_int_equal(status, 0);
  free(w->data);
  free(w);
}

/* Sends a request: ext given as NULL-terminated key, value pairs. Returns its opaque. */
static int32_t vrequest(struct env *e, int32_t code, const void *body, size_t body_len,
                        va_list ap) {
  fy_rmq_out o;
  int32_t opaque = ++e->opaque;
  fy_rmq_out_request(&o, code, opaque, FY_RMQ_JSON, false);
  for (const char *k; (k = va_arg(ap, const char *));)
    assert_int_equal(fy_rmq_out_str(&o, k, va_arg(ap, const char *)), 0);
  uint8_t *hdr;
  size_t hlen;
  assert_int_equal(fy_rmq_out_encode(&o, (uint32_t)body_len, &hdr, &hlen), 0);
  fy_rmq_out_free(&o);
  uint8_t *bytes = malloc(hlen + body_len);
  memcpy(bytes, hdr, hlen);
  if (body_len)
    memcpy(bytes + hlen, body, body_len);
  free(hdr);
  uv_write_t *w = malloc(sizeof *w);
  w->data = bytes;
  uv_buf_t b = uv_buf_init((char *)bytes, (unsigned)(hlen + body_len));
  assert_int_equal(uv_write(w, (uv_stream_t *)&e->tcp, &b, 1, on_written), 0);
  return opaque;
}

static int32_t request(struct env *e, int32_t code, const void *body, size_t body_len, ...) {
  va_list ap;
  va_start(ap, body_len);
  int32_t opaque = vrequest(e, code, body, body_len, ap);
  va_end(ap);
  return opaque;
}

/* Reads the next frame into e->cmd (false at the deadline). */
static bool read_frame(struct env *e, uint64_t timeout_ms) {
  fy_rmq_cmd_free(&e->cmd);
  free(e->frame);
  e->frame = NULL;
  uint64_t deadline = uv_now(&e->loop) + timeout_ms;
  for (;;) {
    if (e->rlen >= 4) {
      size_t total = 4 + ((size_t)e->rbuf[0] << 24 | (size_t)e->rbuf[1] << 16 |
                          (size_t)e->rbuf[2] << 8 | e->rbuf[3]);
      if (e->rlen >= total) {
        e->frame = malloc(total);
        memcpy(e->frame, e->rbuf, total);
        memmove(e->rbuf, e->rbuf + total, e->rlen - total);
        e->rlen -= total;
        assert_int_equal(fy_rmq_parse(e->frame, total, RBUF_MAX, &e->cmd), (ssize_t)total);
        return true;
      }
    }
    uint64_t now = uv_now(&e->loop);
    if (now >= deadline)
      return false;
    e->readable = false;
    fy_test_run_until(&e->loop, &e->readable, deadline - now);
  }
}

/* The response to opaque (requests from the broker before it are skipped). */
static const fy_rmq_cmd *answer(struct env *e, int32_t opaque, uint64_t timeout_ms) {
  while (read_frame(e, timeout_ms))
    if ((e->cmd.flag & FY_RMQ_FLAG_RESPONSE) && e->cmd.opaque == opaque)
      return &e->cmd;
  fail_msg("no answer to request %d within %llu ms", opaque, (unsigned long long)timeout_ms);
  return NULL;
}

/* A request with a string body (or NULL) and its answer. */
static const fy_rmq_cmd *call(struct env *e, int32_t code, const char *body, ...) {
  va_list ap;
  va_start(ap, body);
  int32_t opaque = vrequest(e, code, body, body ? strlen(body) : 0, ap);
  va_end(ap);
  return answer(e, opaque, 10000);
}

/* A plain PULL_MESSAGE from queue 0: no subscription, no suspension. */
static const fy_rmq_cmd *pull(struct env *e, const char *group, const char *topic,
                              const char *offset, const char *max, const char *sys_flag) {
  return call(e, FY_RMQ_REQ_PULL_MESSAGE, NULL, "consumerGroup", group, "topic", topic, "queueId",
              "0", "queueOffset", offset, "maxMsgNums", max, "sysFlag", sys_flag, END);
}

static void create_topic(struct env *e, const char *topic, const char *queues) {
  const fy_rmq_cmd *r = call(e, FY_RMQ_REQ_UPDATE_AND_CREATE_TOPIC, NULL, "topic", topic,
                             "readQueueNums", queues, "writeQueueNums", queues, "perm", "6", END);
  assert_int_equal(r->code, FY_RMQ_RESP_SUCCESS);
}

/* SEND_MESSAGE_V2 of one message to queue 0; props "k\1v\2..." */
static void send_msg(struct env *e, const char *topic, const char *body, const char *props) {
  const fy_rmq_cmd *r = call(e, FY_RMQ_REQ_SEND_MESSAGE_V2, body, "a", "PG", "b", topic, "e", "0",
                             "i", props, END);
  assert_int_equal(r->code, FY_RMQ_RESP_SUCCESS);
}

/* The messages of a pull answer's body. */
static size_t decode_msgs(const fy_rmq_cmd *r, struct fy_msg *out, size_t max) {
  size_t n = 0;
  const uint8_t *p = r->body;
  size_t left = r->body_len;
  while (left && n < max) {
    int64_t sz = fy_rmq_msg_decode(p, left, &out[n]);
    assert_true(sz > 0);
    p += sz;
    left -= (size_t)sz;
    n++;
  }
  assert_int_equal(left, 0);
  return n;
}

/* Pulls from offset and expects exactly one message, with this body. */
static void expect_one(struct env *e, const char *group, const char *topic, const char *offset,
                       const char *sys_flag, const char *body) {
  const fy_rmq_cmd *r = pull(e, group, topic, offset, "32", sys_flag);
  assert_int_equal(r->code, FY_RMQ_RESP_SUCCESS);
  struct fy_msg m[4];
  assert_int_equal(decode_msgs(r, m, 4), 1);
  assert_int_equal(m[0].body_len, strlen(body));
  assert_memory_equal(m[0].body, body, strlen(body));
}

static const char *heartbeat_body(char *buf, size_t cap, const char *cid, const char *group,
                                  const char *topic, const char *expr) {
  snprintf(buf, cap,
           "{\"clientID\":\"%s\",\"producerDataSet\":[{\"groupName\":\"PG\"}],"
           "\"consumerDataSet\":[{\"groupName\":\"%s\",\"consumeType\":\"CONSUME_PASSIVELY\","
           "\"messageModel\":\"CLUSTERING\",\"consumeFromWhere\":\"CONSUME_FROM_FIRST_OFFSET\","
           "\"unitMode\":false,\"subscriptionDataSet\":[{\"topic\":\"%s\",\"subString\":\"%s\"}]}]}",
           cid, group, topic, expr);
  return buf;
}

/* ---------------------------------------------------------------- tests */

/* A producer shutting down sends UNREGISTER_CLIENT with its producerGroup
 * and no consumerGroup. When the same client instance (one clientID) also
 * consumes, as ali-ons and the Java client share one instance per process,
 * its consumer must stay in its group: RocketMQ only removes consumers of
 * a named consumerGroup. */
static void test_producer_unregister_keeps_consumer(void **state) {
  struct env *e = *state;
  char hb[1024];
  heartbeat_body(hb, sizeof hb, "127.0.0.1@shared", "CG", "TopicU", "*");
  assert_int_equal(call(e, FY_RMQ_REQ_HEART_BEAT, hb, END)->code, FY_RMQ_RESP_SUCCESS);
  const fy_rmq_cmd *r = call(e, FY_RMQ_REQ_UNREGISTER_CLIENT, NULL, "clientID", "127.0.0.1@shared",
                             "producerGroup", "PG", END);
  assert_int_equal(r->code, FY_RMQ_RESP_SUCCESS);
  r = call(e, FY_RMQ_REQ_GET_CONSUMER_LIST_BY_GROUP, NULL, "consumerGroup", "CG", END);
  assert_int_equal(r->code, FY_RMQ_RESP_SUCCESS);
  assert_non_null(memmem(r->body, r->body_len, "127.0.0.1@shared", 16));
  /* The consumer leaving its group does remove it. */
  r = call(e, FY_RMQ_REQ_UNREGISTER_CLIENT, NULL, "clientID", "127.0.0.1@shared",
           "consumerGroup", "CG", END);
  assert_int_equal(r->code, FY_RMQ_RESP_SUCCESS);
  r = call(e, FY_RMQ_REQ_GET_CONSUMER_LIST_BY_GROUP, NULL, "consumerGroup", "CG", END);
  assert_int_equal(r->code, FY_RMQ_RESP_SYSTEM_ERROR);
}

/* The Java push consumer does not send its subscription with each pull
 * (postSubscriptionWhenPull=false): the broker filters by the one its
 * heartbeats registered. One too long for the registry must not filter out
 * tags it names. */
static void test_long_registered_subscription_filters_nothing_out(void **state) {
  struct env *e = *state;
  create_topic(e, "TopicL", "1");
  char expr[400] = "", hb[1024];
  for (int i = 0; i < 20; i++) {
    char t[24];
    snprintf(t, sizeof t, "%sLongTagName%02d", i ? " || " : "", i);
    strcat(expr, t);
  }
  assert_true(strlen(expr) > 200);
  heartbeat_body(hb, sizeof hb, "127.0.0.1@long", "CGL", "TopicL", expr);
  assert_int_equal(call(e, FY_RMQ_REQ_HEART_BEAT, hb, END)->code, FY_RMQ_RESP_SUCCESS);
  send_msg(e, "TopicL", "tagged 19", "TAGS\001LongTagName19\002");
  expect_one(e, "CGL", "TopicL", "0", "0", "tagged 19");
}

/* A subscription naming more tags than Ferry filters by (FY_PULL_TAGS_MAX)
 * is valid in RocketMQ: the pull is served (unfiltered: the client checks
 * tags itself), not refused with SUBSCRIPTION_PARSE_FAILED on every try. */
static void test_many_tag_subscription_is_served(void **state) {
  struct env *e = *state;
  create_topic(e, "TopicM", "1");
  char expr[1024] = "";
  for (int i = 0; i < 40; i++) {
    char t[16];
    snprintf(t, sizeof t, "%sT%d", i ? "||" : "", i);
    strcat(expr, t);
  }
  send_msg(e, "TopicM", "tagged 39", "TAGS\001T39\002");
  const fy_rmq_cmd *r = call(e, FY_RMQ_REQ_PULL_MESSAGE, NULL, "consumerGroup", "CGM", "topic",
                             "TopicM", "queueId", "0", "queueOffset", "0", "maxMsgNums", "32",
                             "sysFlag", "4", "subscription", expr, END);
  assert_int_equal(r->code, FY_RMQ_RESP_SUCCESS);
  struct fy_msg m[4];
  assert_int_equal(decode_msgs(r, m, 4), 1);
  /* A subscription that is wrong in RocketMQ too is still refused. */
  r = call(e, FY_RMQ_REQ_PULL_MESSAGE, NULL, "consumerGroup", "CGM", "topic", "TopicM", "queueId",
           "0", "queueOffset", "0", "maxMsgNums", "32", "sysFlag", "4", "subscription", "||", END);
  assert_int_equal(r->code, FY_RMQ_RESP_SUBSCRIPTION_PARSE_FAILED);
}

static size_t put_batch_msg(uint8_t *dst, const char *body, const char *props, size_t props_len) {
  size_t blen = strlen(body), total = 22 + blen + props_len;
  uint8_t *p = dst;
  uint32_t fields[5] = {(uint32_t)total, 0, 0, 0, (uint32_t)blen}; /* size magic crc flag bodylen */
  for (int i = 0; i < 5; i++, p += 4) {
    p[0] = (uint8_t)(fields[i] >> 24);
    p[1] = (uint8_t)(fields[i] >> 16);
    p[2] = (uint8_t)(fields[i] >> 8);
    p[3] = (uint8_t)fields[i];
  }
  memcpy(p, body, blen);
  p += blen;
  p[0] = (uint8_t)(props_len >> 8);
  p[1] = (uint8_t)props_len;
  memcpy(p + 2, props, props_len);
  return total;
}

/* A batch's properties get the room they need (they once took 32 KiB each
 * up front): large and small ones in one batch are stored intact, a UNIQ_KEY
 * is added where missing, and properties that cannot take one still fail
 * with the limit named. */
static void test_batch_properties_sized_to_fit(void **state) {
  struct env *e = *state;
  create_topic(e, "TopicB", "1");
  enum { BIG = 30000 };
  static char props[3][BIG + 64];
  static uint8_t body[4 * (BIG + 128)];
  size_t plen[3], len = 0;
  for (int i = 0; i < 3; i++) {
    int n = snprintf(props[i], sizeof props[i], "UNIQ_KEY\001%032d\002P\001", i);
    memset(props[i] + n, 'a' + i, BIG);
    props[i][n + BIG] = '\002';
    plen[i] = (size_t)n + BIG + 1;
    len += put_batch_msg(body + len, "big", props[i], plen[i]);
  }
  len += put_batch_msg(body + len, "small", "TAGS\001A\002", 7);
  int32_t op = request(e, FY_RMQ_REQ_SEND_BATCH_MESSAGE, body, len, "a", "PG", "b", "TopicB", "e",
                       "0", END);
  const fy_rmq_cmd *r = answer(e, op, 10000);
  assert_int_equal(r->code, FY_RMQ_RESP_SUCCESS);
  r = pull(e, "CGB", "TopicB", "0", "32", "4");
  assert_int_equal(r->code, FY_RMQ_RESP_SUCCESS);
  struct fy_msg m[8];
  assert_int_equal(decode_msgs(r, m, 8), 4);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(m[i].props_len, plen[i]);
    assert_memory_equal(m[i].props, props[i], plen[i]);
  }
  const char *v;
  size_t vlen;
  assert_true(fy_props_get(m[3].props, m[3].props_len, FY_PROP_UNIQ_KEY, &v, &vlen));
  assert_int_equal(vlen, 32);
  /* No room left for the UNIQ_KEY the broker must add. */
  static char full[FY_PROPS_MAX + 1];
  memcpy(full, "P\001", 2);
  memset(full + 2, 'z', FY_PROPS_MAX - 20);
  full[FY_PROPS_MAX - 18] = '\002';
  len = put_batch_msg(body, "full", full, FY_PROPS_MAX - 17);
  op = request(e, FY_RMQ_REQ_SEND_BATCH_MESSAGE, body, len, "a", "PG", "b", "TopicB", "e", "0",
               END);
  r = answer(e, op, 10000);
  assert_int_equal(r->code, FY_RMQ_RESP_MESSAGE_ILLEGAL);
  assert_non_null(r->remark);
  assert_non_null(strstr(r->remark, "32767"));
}

/* A batch past the replies built on the stack (16 ids) answers every
 * message's id, comma-separated, in batch order; a batch whose buffers
 * outgrow what the broker keeps between sends (1 MiB) is stored whole, and
 * a single send after it still works. */
static void test_batch_reply_ids(void **state) {
  struct env *e = *state;
  create_topic(e, "TopicI", "1");
  static uint8_t body[1200 * 64];
  size_t len = 0;
  for (int i = 0; i < 40; i++)
    len += put_batch_msg(body + len, "m", "TAGS\001A\002", 7);
  int32_t op = request(e, FY_RMQ_REQ_SEND_BATCH_MESSAGE, body, len, "a", "PG", "b", "TopicI", "e",
                       "0", END);
  const fy_rmq_cmd *r = answer(e, op, 10000);
  assert_int_equal(r->code, FY_RMQ_RESP_SUCCESS);
  const char *ids = fy_rmq_ext(r, "msgId");
  assert_non_null(ids);
  assert_int_equal(strlen(ids), 40 * 33 - 1);
  for (int i = 1; i < 40; i++)
    assert_int_equal(ids[i * 33 - 1], ',');
  assert_string_equal(fy_rmq_ext(r, "queueOffset"), "0");
  /* 1,024 messages of 1,100 bytes of properties: over 1 MiB of scratch. */
  static char big[1100];
  int n = snprintf(big, sizeof big, "P\001");
  memset(big + n, 'q', sizeof big - (size_t)n - 1);
  big[sizeof big - 1] = '\002';
  static uint8_t bbody[1024 * (1100 + 32)];
  len = 0;
  for (int i = 0; i < 1024; i++)
    len += put_batch_msg(bbody + len, "b", big, sizeof big);
  op = request(e, FY_RMQ_REQ_SEND_BATCH_MESSAGE, bbody, len, "a", "PG", "b", "TopicI", "e", "0",
               END);
  r = answer(e, op, 10000);
  assert_int_equal(r->code, FY_RMQ_RESP_SUCCESS);
  assert_int_equal(strlen(fy_rmq_ext(r, "msgId")), 1024 * 33 - 1);
  assert_string_equal(fy_rmq_ext(r, "queueOffset"), "40");
  op = request(e, FY_RMQ_REQ_SEND_MESSAGE_V2, (const uint8_t *)"one", 3, "a", "PG", "b", "TopicI",
               "e", "0", END);
  r = answer(e, op, 10000);
  assert_int_equal(r->code, FY_RMQ_RESP_SUCCESS);
  assert_string_equal(fy_rmq_ext(r, "queueOffset"), "1064");
  expect_one(e, "CGI", "TopicI", "1064", "4", "one");
}

/* GET_EARLIEST_MSG_STORETIME, as RocketMQ: SUCCESS with -1 for an empty
 * queue, the first message's store time once there is one. */
static void test_earliest_msg_storetime(void **state) {
  struct env *e = *state;
  create_topic(e, "TopicE", "1");
  const fy_rmq_cmd *r = call(e, FY_RMQ_REQ_GET_EARLIEST_MSG_STORETIME, NULL, "topic", "TopicE",
                             "queueId", "0", END);
  assert_int_equal(r->code, FY_RMQ_RESP_SUCCESS);
  assert_string_equal(fy_rmq_ext(r, "timestamp"), "-1");
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  long long before = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
  send_msg(e, "TopicE", "first", "");
  clock_gettime(CLOCK_REALTIME, &ts);
  long long after = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
  send_msg(e, "TopicE", "second", "");
  r = call(e, FY_RMQ_REQ_GET_EARLIEST_MSG_STORETIME, NULL, "topic", "TopicE", "queueId", "0", END);
  assert_int_equal(r->code, FY_RMQ_RESP_SUCCESS);
  long long got = atoll(fy_rmq_ext(r, "timestamp"));
  assert_true(got >= before && got <= after);
  r = call(e, FY_RMQ_REQ_GET_EARLIEST_MSG_STORETIME, NULL, "topic", "NoSuchTopic", "queueId", "0",
           END);
  assert_int_equal(r->code, FY_RMQ_RESP_TOPIC_NOT_EXIST);
}

/* A retry topic made with one queue keeps its queue count when the group
 * later asks for more retry queues (retryQueueNums): retried messages go to
 * the queue the topic has, never to one no consumer reads. */
static void test_send_back_uses_the_retry_topics_queues(void **state) {
  struct env *e = *state;
  create_topic(e, "TopicB", "1");
  send_msg(e, "TopicB", "fail-me", "");
  const fy_rmq_cmd *r = pull(e, "CGB", "TopicB", "0", "1", "0");
  assert_int_equal(r->code, FY_RMQ_RESP_SUCCESS);
  struct fy_msg m[8];
  assert_int_equal(decode_msgs(r, m, 1), 1);
  char phys[24];
  snprintf(phys, sizeof phys, "%" PRIu64, m[0].phys_offset);
  /* The first send-back makes %RETRY%CGB with the default single queue. */
  r = call(e, FY_RMQ_REQ_CONSUMER_SEND_MSG_BACK, NULL, "group", "CGB", "offset", phys,
           "delayLevel", "1", "maxReconsumeTimes", "16", END);
  assert_int_equal(r->code, FY_RMQ_RESP_SUCCESS);
  struct fy_topic_config tc;
  assert_int_equal(fy_topics_get(e->broker->topics, "%RETRY%CGB", &tc), 0);
  assert_int_equal(tc.write_queues, 1);

  struct fy_group_config g;
  assert_int_equal(fy_groups_find_or_create(e->broker->groups, "CGB", &g, NULL), 0);
  g.retry_queues = 4;
  assert_int_equal(fy_groups_put(e->broker->groups, &g, NULL), 0);
  for (int i = 0; i < 4; i++) {
    r = call(e, FY_RMQ_REQ_CONSUMER_SEND_MSG_BACK, NULL, "group", "CGB", "offset", phys,
             "delayLevel", "1", "maxReconsumeTimes", "16", END);
    assert_int_equal(r->code, FY_RMQ_RESP_SUCCESS);
  }
  /* All five wait in delay level 1 (an internal topic: read from the store)
   * for queue 0 of the retry topic. */
  struct fy_get_msg got[8];
  struct fy_get_result res;
  assert_int_equal(fy_store_get(e->broker->store, FY_SCHEDULE_TOPIC, 0, 0, 8, 1u << 20, NULL, 0,
                                got, &res),
                   0);
  assert_int_equal(res.count, 5);
  for (size_t i = 0; i < res.count; i++) {
    struct fy_msg dm;
    enum fy_record_kind kind;
    assert_true(fy_record_decode(got[i].slice.data, got[i].slice.len, got[i].slice.offset, &kind, &dm) > 0);
    const char *v;
    size_t vlen;
    assert_true(fy_props_get(dm.props, dm.props_len, FY_PROP_REAL_TOPIC, &v, &vlen));
    assert_int_equal(vlen, strlen("%RETRY%CGB"));
    assert_true(fy_props_get(dm.props, dm.props_len, FY_PROP_REAL_QID, &v, &vlen));
    assert_int_equal(vlen, 1);
    assert_int_equal(v[0], '0');
  }
  fy_store_get_release(got, res.count);
}

/* Many consumers (broadcasting, say) hold a pull on the same queue: one
 * arriving message answers every one of them, not only the first 256. */
#define HELD 300
static void test_arrival_answers_every_held_pull(void **state) {
  struct env *e = *state;
  create_topic(e, "TopicH", "1");
  for (int i = 0; i < HELD; i++)
    request(e, FY_RMQ_REQ_PULL_MESSAGE, NULL, 0, "consumerGroup", "CGH", "topic", "TopicH",
            "queueId", "0", "queueOffset", "0", "maxMsgNums", "32", "sysFlag", "2",
            "suspendTimeoutMillis", "30000", END);
  /* Let the broker read and hold them all (nothing is answered meanwhile). */
  bool never = false;
  fy_test_run_until(&e->loop, &never, 300);
  int32_t send = request(e, FY_RMQ_REQ_SEND_MESSAGE_V2, "wake", 4, "a", "PG", "b", "TopicH", "e",
                         "0", "i", "", END);
  int found = 0, sent = 0;
  while (found < HELD || !sent) {
    assert_true(read_frame(e, 5000)); /* far below the 30 s the pulls may wait */
    if (e->cmd.opaque == send) {
      assert_int_equal(e->cmd.code, FY_RMQ_RESP_SUCCESS);
      sent = 1;
      continue;
    }
    assert_int_equal(e->cmd.code, FY_RMQ_RESP_SUCCESS);
    found++;
  }
}

/* Delayed messages are stored again under their topic in passes of up to
 * 32. When the store refuses a put part-way (busy: maxPendingPuts), what
 * was stored before it must count: retrying the whole pass would store
 * those again every time and never get past the refused one. */
static void tune_busy_store(struct fy_broker_settings *s) {
  s->store.max_pending_puts = 16; /* maxPendingPuts's minimum */
  snprintf(s->broker.delay_levels, sizeof s->broker.delay_levels, "1s");
}
static const struct settings_fn busy_store = {tune_busy_store};

#define DELAYED 40
static void test_delayed_messages_stored_once_when_store_pushes_back(void **state) {
  struct env *e = *state;
  create_topic(e, "TopicD", "1");
  for (int i = 0; i < DELAYED; i++) {
    char body[16];
    snprintf(body, sizeof body, "d%02d", i);
    send_msg(e, "TopicD", body, "DELAY\0011\002");
  }
  /* Keep the loop (and so the schedule) still until every one is due: the
   * next pass finds more due entries than the store takes at once. */
  usleep(1500 * 1000);
  /* Every message arrives once, in order, within a few retry periods. */
  uint64_t deadline = uv_now(&e->loop) + 20000;
  int seen = 0;
  uint64_t offset = 0;
  while (seen < DELAYED) {
    assert_true(uv_now(&e->loop) < deadline);
    char off[24];
    snprintf(off, sizeof off, "%llu", (unsigned long long)offset);
    const fy_rmq_cmd *r = call(e, FY_RMQ_REQ_PULL_MESSAGE, NULL, "consumerGroup", "CGD", "topic",
                               "TopicD", "queueId", "0", "queueOffset", off, "maxMsgNums", "32",
                               "sysFlag", "2", "suspendTimeoutMillis", "1000", END);
    if (r->code != FY_RMQ_RESP_SUCCESS)
      continue;
    struct fy_msg m[32];
    size_t n = decode_msgs(r, m, 32);
    for (size_t i = 0; i < n; i++) {
      char want[16];
      snprintf(want, sizeof want, "d%02d", seen);
      assert_true(seen < DELAYED); /* a duplicate would come after the last */
      assert_int_equal(m[i].body_len, strlen(want));
      assert_memory_equal(m[i].body, want, strlen(want));
      seen++;
    }
    offset += n;
  }
  /* Nothing more comes: no message was stored twice. */
  bool never = false;
  fy_test_run_until(&e->loop, &never, 2500);
  char off[24];
  snprintf(off, sizeof off, "%llu", (unsigned long long)offset);
  const fy_rmq_cmd *r = call(e, FY_RMQ_REQ_GET_MAX_OFFSET, NULL, "topic", "TopicD", "queueId", "0",
                             END);
  assert_int_equal(r->code, FY_RMQ_RESP_SUCCESS);
  assert_string_equal(fy_rmq_ext(r, "offset"), off);
}

/* SYNC_FLUSH, fdatasync slower than syncFlushTimeout: RocketMQ's
 * FLUSH_DISK_TIMEOUT (code 10) with the send's msgId and offset (stored),
 * one answer only, even once the fdatasync completes; then SUCCESS again. */
#define FLUSH_TIMEOUT_MS 200
#define FLUSH_TIMEOUT_LONG_MS 60000 /* for sends that must be SUCCESS, whatever the disk */
static void tune_sync_flush(struct fy_broker_settings *s) {
  s->store.flush_disk_type = FY_SYNC_FLUSH;
  s->broker.sync_flush_timeout_ms = FLUSH_TIMEOUT_LONG_MS;
}
static const struct settings_fn sync_flush = {tune_sync_flush};

static bool all_flushed(void *cl) {
  return fy_commitlog_flushed(cl) == fy_commitlog_end(cl);
}

static void test_flush_disk_timeout(void **state) {
  struct env *e = *state;
  create_topic(e, "TopicF", "1");
  fy_aio *aio = fy_store_aio(e->broker->store);
  fy_commitlog *cl = fy_store_commitlog(e->broker->store);
  e->broker->settings.broker.sync_flush_timeout_ms = FLUSH_TIMEOUT_MS; /* no send waits */
  fy_aio_inject_delay(aio, FY_AIO_FDATASYNC, FY_AIO_HOLD_UNTIL_RELEASED);
  uv_update_time(&e->loop);
  uint64_t t0 = uv_now(&e->loop);
  const fy_rmq_cmd *r =
      call(e, FY_RMQ_REQ_SEND_MESSAGE_V2, "slow", "a", "PG", "b", "TopicF", "e", "0", END);
  assert_int_equal(r->code, FY_RMQ_RESP_FLUSH_DISK_TIMEOUT);
  assert_int_equal(r->code, 10);
  assert_true(uv_now(&e->loop) - t0 >= FLUSH_TIMEOUT_MS);
  assert_int_equal(strlen(fy_rmq_ext(r, "msgId")), 32);
  assert_string_equal(fy_rmq_ext(r, "queueOffset"), "0");
  expect_one(e, "CGF", "TopicF", "0", "2", "slow");

  fy_aio_inject_delay(aio, FY_AIO_FDATASYNC, 0);
  assert_true(fy_test_run_until_pred(&e->loop, all_flushed, cl, 10000));
  assert_false(read_frame(e, 300)); /* the late flush answers nothing */
  e->broker->settings.broker.sync_flush_timeout_ms = FLUSH_TIMEOUT_LONG_MS; /* none waits */
  send_msg(e, "TopicF", "on time", "");
}

/* ---------------------------------------------------------------- subscription groups */

static void tune_no_auto_group(struct fy_broker_settings *s) {
  s->broker.auto_create_group = false;
}
static const struct settings_fn no_auto_group = {tune_no_auto_group};

static void tune_slave(struct fy_broker_settings *s) {
  s->broker.role = FY_ROLE_SLAVE;
  s->broker.broker_id = 1;
}
static const struct settings_fn slave = {tune_slave};

static bool remark_has(const fy_rmq_cmd *r, const char *text) {
  return r->remark && strstr(r->remark, text);
}

static void update_group(struct env *e, const char *body) {
  const fy_rmq_cmd *r = call(e, FY_RMQ_REQ_UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, body, END);
  if (r->code != FY_RMQ_RESP_SUCCESS)
    fail_msg("update %s: code %d %s", body, r->code, r->remark ? r->remark : "");
}

/* The group table of GET_ALL_SUBSCRIPTIONGROUP_CONFIG (a new reference). */
static json_t *group_table(struct env *e) {
  const fy_rmq_cmd *r = call(e, FY_RMQ_REQ_GET_ALL_SUBSCRIPTIONGROUP_CONFIG, NULL, END);
  assert_int_equal(r->code, FY_RMQ_RESP_SUCCESS);
  json_t *root = json_loadb((const char *)r->body, r->body_len, 0, NULL);
  assert_non_null(root);
  assert_true(json_is_object(json_object_get(root, "dataVersion")));
  json_t *t = json_incref(json_object_get(root, "subscriptionGroupTable"));
  assert_true(json_is_object(t));
  json_decref(root);
  return t;
}

static json_int_t group_field(struct env *e, const char *group, const char *field) {
  json_t *t = group_table(e);
  json_t *v = json_object_get(json_object_get(t, group), field);
  assert_non_null(v);
  json_int_t i = json_is_boolean(v) ? json_is_true(v) : json_integer_value(v);
  json_decref(t);
  return i;
}

static const fy_rmq_cmd *send_back(struct env *e, const char *group, uint64_t phys) {
  char off[24];
  snprintf(off, sizeof off, "%" PRIu64, phys);
  return call(e, FY_RMQ_REQ_CONSUMER_SEND_MSG_BACK, NULL, "group", group, "offset", off,
              "delayLevel", "0", END);
}

/* With autoCreateSubscriptionGroup=false a group exists only once an admin
 * creates it: pulls and send-backs of an unknown group are refused with
 * SUBSCRIPTION_GROUP_NOT_EXIST; UPDATE_AND_CREATE_SUBSCRIPTIONGROUP creates
 * it (fields absent from the body at their defaults), and what it sets
 * takes effect: retryMaxTimes on send-backs, retryQueueNums on the retry
 * topic, consumeEnable on pulls. DELETE_SUBSCRIPTIONGROUP removes it (and
 * with removeOffset its offsets). */
static void test_sub_groups_by_admin(void **state) {
  struct env *e = *state;
  create_topic(e, "TopicS", "1");
  send_msg(e, "TopicS", "s0", "");
  const fy_rmq_cmd *r = pull(e, "CGS", "TopicS", "0", "1", "0");
  assert_int_equal(r->code, FY_RMQ_RESP_SUBSCRIPTION_GROUP_NOT_EXIST);
  assert_true(remark_has(r, "subscription group [CGS] does not exist"));
  assert_true(remark_has(r, "mqadmin updateSubGroup"));
  char hb[1024]; /* a heartbeat does not create it either */
  heartbeat_body(hb, sizeof hb, "127.0.0.1@s", "CGS", "TopicS", "*");
  assert_int_equal(call(e, FY_RMQ_REQ_HEART_BEAT, hb, END)->code, FY_RMQ_RESP_SUCCESS);
  assert_int_equal(pull(e, "CGS", "TopicS", "0", "1", "0")->code,
                   FY_RMQ_RESP_SUBSCRIPTION_GROUP_NOT_EXIST);
  json_t *t = group_table(e);
  assert_null(json_object_get(t, "CGS"));
  json_decref(t);

  /* created by the admin, retryMaxTimes 0: consumed; a send-back goes to the DLQ */
  update_group(e, "{\"groupName\":\"CGS\",\"retryMaxTimes\":0}");
  assert_int_equal(group_field(e, "CGS", "retryMaxTimes"), 0);
  assert_int_equal(group_field(e, "CGS", "retryQueueNums"), 1);
  assert_int_equal(group_field(e, "CGS", "consumeEnable"), 1);
  assert_int_equal(group_field(e, "CGS", "whichBrokerWhenConsumeSlowly"), 1);
  r = pull(e, "CGS", "TopicS", "0", "1", "0");
  assert_int_equal(r->code, FY_RMQ_RESP_SUCCESS);
  struct fy_msg m[1];
  assert_int_equal(decode_msgs(r, m, 1), 1);
  uint64_t phys = m[0].phys_offset;
  assert_int_equal(send_back(e, "CGS", phys)->code, FY_RMQ_RESP_SUCCESS);
  assert_true(fy_topics_exists(e->broker->topics, "%DLQ%CGS"));
  assert_false(fy_topics_exists(e->broker->topics, "%RETRY%CGS"));

  /* retryMaxTimes 5, 3 retry queues: a send-back is retried, in a topic of 3 queues */
  update_group(e, "{\"groupName\":\"CGS\",\"retryMaxTimes\":5,\"retryQueueNums\":3}");
  assert_int_equal(send_back(e, "CGS", phys)->code, FY_RMQ_RESP_SUCCESS);
  struct fy_topic_config tc;
  assert_int_equal(fy_topics_get(e->broker->topics, "%RETRY%CGS", &tc), 0);
  assert_int_equal(tc.read_queues, 3);
  assert_int_equal(tc.write_queues, 3);
  /* the retry topic follows retryQueueNums: up at once, down for writes only */
  update_group(e, "{\"groupName\":\"CGS\",\"retryMaxTimes\":5,\"retryQueueNums\":5}");
  assert_int_equal(fy_topics_get(e->broker->topics, "%RETRY%CGS", &tc), 0);
  assert_int_equal(tc.read_queues, 5);
  assert_int_equal(tc.write_queues, 5);
  update_group(e, "{\"groupName\":\"CGS\",\"retryMaxTimes\":5,\"retryQueueNums\":2}");
  assert_int_equal(fy_topics_get(e->broker->topics, "%RETRY%CGS", &tc), 0);
  assert_int_equal(tc.read_queues, 5);
  assert_int_equal(tc.write_queues, 2);

  /* consumeEnable false: pulls refused as RocketMQ refuses them */
  update_group(e, "{\"groupName\":\"CGS\",\"consumeEnable\":false}");
  r = pull(e, "CGS", "TopicS", "0", "1", "0");
  assert_int_equal(r->code, FY_RMQ_RESP_NO_PERMISSION);
  assert_true(remark_has(r, "subscription group no permission, CGS"));
  update_group(e, "{\"groupName\":\"CGS\"}");
  assert_int_equal(pull(e, "CGS", "TopicS", "0", "1", "0")->code, FY_RMQ_RESP_SUCCESS);

  /* bad bodies: refused, nothing changed, the connection stays usable */
  struct {
    const char *body, *remark;
  } bad[] = {
      {"{\"groupName\":\"CGS\",\"retryQueueNums\":5000}", "\"retryQueueNums\" = 5000"},
      {"{\"retryMaxTimes\":1}", "groupName is missing"},
      {"{\"groupName\":\"bad name\"}", "illegal characters"},
      {"not json", "not a SubscriptionGroupConfig"},
      {NULL, "not a SubscriptionGroupConfig"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    r = call(e, FY_RMQ_REQ_UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, bad[i].body, END);
    assert_int_equal(r->code, FY_RMQ_RESP_SYSTEM_ERROR);
    if (!remark_has(r, bad[i].remark))
      fail_msg("%s: remark '%s'", bad[i].body ? bad[i].body : "(none)", r->remark);
  }
  assert_int_equal(group_field(e, "CGS", "retryQueueNums"), 1);

  /* delete, with removeOffset: the group and its offsets go */
  r = call(e, FY_RMQ_REQ_UPDATE_CONSUMER_OFFSET, NULL, "consumerGroup", "CGS", "topic", "TopicS",
           "queueId", "0", "commitOffset", "1", END);
  assert_int_equal(r->code, FY_RMQ_RESP_SUCCESS);
  assert_int_equal(fy_offsets_query(e->broker->offsets, "CGS", "TopicS", 0), 1);
  r = call(e, FY_RMQ_REQ_DELETE_SUBSCRIPTIONGROUP, NULL, "groupName", "CGS", END);
  assert_int_equal(r->code, FY_RMQ_RESP_SUCCESS);
  assert_int_equal(fy_offsets_query(e->broker->offsets, "CGS", "TopicS", 0), 1); /* kept */
  assert_int_equal(pull(e, "CGS", "TopicS", "0", "1", "0")->code,
                   FY_RMQ_RESP_SUBSCRIPTION_GROUP_NOT_EXIST);
  update_group(e, "{\"groupName\":\"CGS\"}");
  r = call(e, FY_RMQ_REQ_DELETE_SUBSCRIPTIONGROUP, NULL, "groupName", "CGS", "removeOffset",
           "true", END);
  assert_int_equal(r->code, FY_RMQ_RESP_SUCCESS);
  assert_int_equal(fy_offsets_query(e->broker->offsets, "CGS", "TopicS", 0), -1);
  t = group_table(e);
  assert_null(json_object_get(t, "CGS"));
  json_decref(t);
  /* as in RocketMQ, deleting a group that is not there succeeds */
  r = call(e, FY_RMQ_REQ_DELETE_SUBSCRIPTIONGROUP, NULL, "groupName", "CGS", END);
  assert_int_equal(r->code, FY_RMQ_RESP_SUCCESS);
  r = call(e, FY_RMQ_REQ_DELETE_SUBSCRIPTIONGROUP, NULL, END);
  assert_int_equal(r->code, FY_RMQ_RESP_SYSTEM_ERROR);
  assert_true(remark_has(r, "<groupName> is null"));
  /* the send-back of an unknown group */
  r = send_back(e, "CGS", phys);
  assert_int_equal(r->code, FY_RMQ_RESP_SUBSCRIPTION_GROUP_NOT_EXIST);
  assert_true(remark_has(r, "subscription group not exist, CGS"));
}

/* A slave copies its master's groups: it refuses to change them, in
 * RocketMQ's words, and still lists what it holds. */
static void test_slave_refuses_group_changes(void **state) {
  struct env *e = *state;
  const fy_rmq_cmd *r =
      call(e, FY_RMQ_REQ_UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, "{\"groupName\":\"CGV\"}", END);
  assert_int_equal(r->code, FY_RMQ_RESP_SYSTEM_ERROR);
  assert_string_equal(r->remark, "Can't modify topic or subscription group from slave broker, "
                                 "please execute it from master broker.");
  r = call(e, FY_RMQ_REQ_DELETE_SUBSCRIPTIONGROUP, NULL, "groupName", "CGV", END);
  assert_int_equal(r->code, FY_RMQ_RESP_SYSTEM_ERROR);
  assert_true(remark_has(r, "from slave broker"));
  json_t *t = group_table(e);
  assert_null(json_object_get(t, "CGV"));
  json_decref(t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_producer_unregister_keeps_consumer, setup, teardown),
      cmocka_unit_test_setup_teardown(test_long_registered_subscription_filters_nothing_out, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_many_tag_subscription_is_served, setup, teardown),
      cmocka_unit_test_setup_teardown(test_batch_properties_sized_to_fit, setup, teardown),
      cmocka_unit_test_setup_teardown(test_batch_reply_ids, setup, teardown),
      cmocka_unit_test_setup_teardown(test_arrival_answers_every_held_pull, setup, teardown),
      cmocka_unit_test_setup_teardown(test_earliest_msg_storetime, setup, teardown),
      cmocka_unit_test_setup_teardown(test_send_back_uses_the_retry_topics_queues, setup, teardown),
      cmocka_unit_test_prestate_setup_teardown(
          test_delayed_messages_stored_once_when_store_pushes_back, setup, teardown,
          (void *)&busy_store),
      cmocka_unit_test_prestate_setup_teardown(test_flush_disk_timeout, setup, teardown,
                                               (void *)&sync_flush),
      cmocka_unit_test_prestate_setup_teardown(test_sub_groups_by_admin, setup, teardown,
                                               (void *)&no_auto_group),
      cmocka_unit_test_prestate_setup_teardown(test_slave_refuses_group_changes, setup, teardown,
                                               (void *)&slave),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
