/*
 * RocketMQ 4.x remoting on the broker's client port, so unchanged RocketMQ
 * clients (Java, ali-ons, ...) produce and consume through Ferry.
 *
 * A connection whose first byte is not Ferry's 'F' lands here (net/conn.h's
 * on_foreign). Its bytes are cut into remoting frames (src/remoting), and
 * each request is mapped onto the broker's own machinery: sends go through
 * fy__send_put (same flush rule, same SYNC_MASTER wait), pulls through
 * fy__pull_run (same long polling and slave-read suggestions), offsets,
 * heartbeats and topics through the same tables the native protocol uses.
 * Only the encoding differs: the reply is a remoting command in the
 * request's header encoding (JSON or RocketMQ's binary one), and pulled
 * records are re-encoded into RocketMQ's stored-message layout.
 *
 * Bounds: at most FRAMES_PER_CALL requests per read callback (the rest on
 * a later loop turn); a frame larger than maxFrameSize closes the
 * connection; a header that does not parse closes it too (its opaque is
 * unknown, so no error can be matched to it).
 */
#include "broker/broker_int.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"
#include "remoting/remoting.h"

#define MOD "rmq"
#define FRAMES_PER_CALL 64
#define BATCH_MAX 1024
#define QUERY_MAX 64
#define REPLY_IDS_STACK 16 /* message ids of a send reply built on the stack, at most */
#define LOCKS_MAX 100000
#define LOCK_TTL_MS 60000 /* RocketMQ's rebalanceLockMaxLiveTime */

/* PullSysFlag bits. */
#define PULL_FLAG_COMMIT_OFFSET 0x1
#define PULL_FLAG_SUSPEND 0x2
#define PULL_FLAG_SUBSCRIPTION 0x4

#define RETRY_PREFIX "%RETRY%"
#define DLQ_PREFIX "%DLQ%"

/* ---------------------------------------------------------------- replies */

static int32_t code_of_status(uint16_t st) {
  switch (st) {
  case FERRY__V1__STATUS__OK: return FY_RMQ_RESP_SUCCESS;
  case FERRY__V1__STATUS__SYSTEM_BUSY: return FY_RMQ_RESP_SYSTEM_BUSY;
  case FERRY__V1__STATUS__UNSUPPORTED_OP: return FY_RMQ_RESP_REQUEST_CODE_NOT_SUPPORTED;
  case FERRY__V1__STATUS__TOPIC_NOT_EXIST: return FY_RMQ_RESP_TOPIC_NOT_EXIST;
  case FERRY__V1__STATUS__MESSAGE_ILLEGAL: return FY_RMQ_RESP_MESSAGE_ILLEGAL;
  case FERRY__V1__STATUS__NO_PERMISSION: return FY_RMQ_RESP_NO_PERMISSION;
  case FERRY__V1__STATUS__SERVICE_NOT_AVAILABLE: return FY_RMQ_RESP_SERVICE_NOT_AVAILABLE;
  case FERRY__V1__STATUS__FLUSH_DISK_TIMEOUT: return FY_RMQ_RESP_FLUSH_DISK_TIMEOUT;
  case FERRY__V1__STATUS__FLUSH_SLAVE_TIMEOUT: return FY_RMQ_RESP_FLUSH_SLAVE_TIMEOUT;
  case FERRY__V1__STATUS__SLAVE_NOT_AVAILABLE: return FY_RMQ_RESP_SLAVE_NOT_AVAILABLE;
  case FERRY__V1__STATUS__NOT_FOUND: return FY_RMQ_RESP_QUERY_NOT_FOUND;
  case FERRY__V1__STATUS__PULL_NOT_FOUND: return FY_RMQ_RESP_PULL_NOT_FOUND;
  case FERRY__V1__STATUS__PULL_RETRY_IMMEDIATELY: return FY_RMQ_RESP_PULL_RETRY_IMMEDIATELY;
  case FERRY__V1__STATUS__PULL_OFFSET_MOVED: return FY_RMQ_RESP_PULL_OFFSET_MOVED;
  case FERRY__V1__STATUS__SUBSCRIPTION_NOT_EXIST: return FY_RMQ_RESP_SUBSCRIPTION_NOT_EXIST;
  case FERRY__V1__STATUS__CONSUMER_GROUP_NOT_EXIST: return FY_RMQ_RESP_SUBSCRIPTION_GROUP_NOT_EXIST;
  default: return FY_RMQ_RESP_SYSTEM_ERROR; /* SYSTEM_ERROR, BAD_REQUEST */
  }
}

/* Sends o's header and body (malloc'd or NULL; owned from here on) and
 * frees o. A reply that cannot be queued is dropped: the client's own
 * timeout covers it, as for a lost packet. */
static void send_out(fy_conn *conn, fy_rmq_out *o, void *body, size_t body_len) {
  uint8_t *hdr = NULL;
  size_t hlen = 0;
  int err = body_len > UINT32_MAX ? -EMSGSIZE : fy_rmq_out_encode(o, (uint32_t)body_len, &hdr, &hlen);
  fy_rmq_out_free(o);
  if (err) {
    free(hdr);
    free(body);
    fy_warn(MOD, "%s: reply dropped: %s", fy_conn_peer(conn), fy_strerror(err));
    return;
  }
  fy_conn_write_owned(conn, hdr, hlen, body, body_len);
}

/* A response header for ref with code and an optional remark. */
static void out_for(fy_rmq_out *o, const struct fy_reqref *ref, int32_t code, const char *remark) {
  fy_rmq_cmd req = {.opaque = (int32_t)ref->id, .serialize = ref->rmq_serialize};
  if (remark)
    fy_rmq_out_response(o, &req, code, "%s", remark);
  else
    fy_rmq_out_response(o, &req, code, NULL);
}

static struct fy_reqref ref_of(const fy_rmq_cmd *c) {
  return (struct fy_reqref){.proto = FY_PROTO_RMQ,
                            .rmq_serialize = c->serialize,
                            .rmq_oneway = (c->flag & FY_RMQ_FLAG_ONEWAY) != 0,
                            .op = (uint16_t)c->code,
                            .id = (uint32_t)c->opaque};
}

void fy__rmq_reply_err(fy_conn *conn, const struct fy_reqref *ref, uint16_t status,
                       const char *text) {
  if (ref->rmq_oneway)
    return;
  fy_rmq_out o;
  out_for(&o, ref, code_of_status(status), text);
  send_out(conn, &o, NULL, 0);
}

/* Answers c with code, a remark, and body (owned from here on). */
static void reply(fy_conn *conn, const fy_rmq_cmd *c, int32_t code, void *body, size_t body_len,
                  const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static void reply(fy_conn *conn, const fy_rmq_cmd *c, int32_t code, void *body, size_t body_len,
                  const char *fmt, ...) {
  if (c->flag & FY_RMQ_FLAG_ONEWAY) {
    free(body);
    return;
  }
  char text[512];
  fy_rmq_out o;
  if (fmt) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    fy_rmq_out_response(&o, c, code, "%s", text);
  } else {
    fy_rmq_out_response(&o, c, code, NULL);
  }
  send_out(conn, &o, body, body_len);
}

/* Answers c with code 0 and the ext fields in o (already initialised). */
static void reply_out(fy_conn *conn, const fy_rmq_cmd *c, fy_rmq_out *o, void *body,
                      size_t body_len) {
  if (c->flag & FY_RMQ_FLAG_ONEWAY) {
    fy_rmq_out_free(o);
    free(body);
    return;
  }
  send_out(conn, o, body, body_len);
}

/* Answers c with a JSON body (consumed). */
static void reply_json(fy_conn *conn, const fy_rmq_cmd *c, json_t *j) {
  char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
  json_decref(j);
  if (!s) {
    reply(conn, c, FY_RMQ_RESP_SYSTEM_ERROR, NULL, 0, "out of memory");
    return;
  }
  reply(conn, c, FY_RMQ_RESP_SUCCESS, s, strlen(s), NULL);
}

/* ---------------------------------------------------------------- header fields */

/* A required string field; answers and returns NULL when it is missing. */
static const char *need_str(fy_conn *conn, const fy_rmq_cmd *c, const char *key) {
  const char *v = fy_rmq_ext(c, key);
  if (!v)
    reply(conn, c, FY_RMQ_RESP_SYSTEM_ERROR, NULL, 0, "the custom field <%s> is null", key);
  return v;
}

/* A required integer field; answers and returns false when missing or bad. */
static bool need_i64(fy_conn *conn, const fy_rmq_cmd *c, const char *key, int64_t *out) {
  int err = fy_rmq_ext_i64(c, key, out);
  if (err)
    reply(conn, c, FY_RMQ_RESP_SYSTEM_ERROR, NULL, 0, "the custom field <%s> is %s", key,
          err == -ENOENT ? "null" : "not an integer");
  return err == 0;
}

static int64_t opt_i64(const fy_rmq_cmd *c, const char *key, int64_t dflt) {
  int64_t v;
  return fy_rmq_ext_i64(c, key, &v) == 0 ? v : dflt;
}

static bool need_queue(fy_conn *conn, const fy_rmq_cmd *c, const char *key, uint32_t *out) {
  int64_t v;
  if (!need_i64(conn, c, key, &v))
    return false;
  if (v < 0 || v >= FY_TOPIC_QUEUES_LIMIT) {
    reply(conn, c, FY_RMQ_RESP_SYSTEM_ERROR, NULL, 0, "%s %" PRId64 " is out of range", key, v);
    return false;
  }
  *out = (uint32_t)v;
  return true;
}

/* ---------------------------------------------------------------- send */

/* Checks a client's property string ("k\x01v\x02" repeated) and copies it
 * into buf, adding a UNIQ_KEY when it has none; uniq gets the message's
 * UNIQ_KEY. Returns the length, or -1 with *why. */
static int copy_props(struct fy_broker *b, const char *p, size_t len, char *buf, size_t cap,
                      char uniq[33], const char **why) {
  size_t i = 0;
  while (i < len) {
    const char *sep = memchr(p + i, '\x01', len - i);
    const char *end = memchr(p + i, '\x02', len - i);
    if (!sep || sep == p + i || (end && end < sep)) {
      *why = "malformed properties: expected name\\x01value\\x02 pairs";
      return -1;
    }
    i = end ? (size_t)(end - p) + 1 : len;
  }
  if (len > cap) {
    *why = "properties longer than 32767 bytes";
    return -1;
  }
  memcpy(buf, p, len);
  size_t n = len;
  if (n && buf[n - 1] != '\x02' && n < cap)
    buf[n++] = '\x02';
  const char *v;
  size_t vlen;
  if (fy_props_get(buf, n, FY_PROP_UNIQ_KEY, &v, &vlen) && vlen > 0) {
    snprintf(uniq, 33, "%.*s", (int)(vlen < 32 ? vlen : 32), v);
  } else {
    fy__make_uniq_key(b, uniq);
    if (fy_props_add(buf, cap, &n, FY_PROP_UNIQ_KEY, uniq, 32) != 0) {
      *why = "properties longer than 32767 bytes";
      return -1;
    }
  }
  return (int)n;
}

/* The room copy_props needs for len bytes of properties: them, a final
 * separator and a UNIQ_KEY it may add, at most FY_PROPS_MAX (so a longer
 * input still fails there with its clear reason). */
static size_t props_room(size_t len) {
  size_t room = len + 1 + sizeof FY_PROP_UNIQ_KEY + 1 + 32 + 1;
  return room < FY_PROPS_MAX ? room : FY_PROPS_MAX;
}

/* SEND_MESSAGE carries long field names; SEND_MESSAGE_V2 and batches the
 * one-letter ones. Either is accepted in either. */
static const char *send_field(const fy_rmq_cmd *c, const char *name) {
  const char *s = fy_rmq_send_v2_field(name);
  const char *v = NULL;
  if (c->code != FY_RMQ_REQ_SEND_MESSAGE && s)
    v = fy_rmq_ext(c, s);
  if (!v)
    v = fy_rmq_ext(c, name);
  if (!v && c->code == FY_RMQ_REQ_SEND_MESSAGE && s)
    v = fy_rmq_ext(c, s);
  return v;
}

static int64_t send_i64(const fy_rmq_cmd *c, const char *name, int64_t dflt) {
  const char *v = send_field(c, name);
  if (!v || !*v)
    return dflt;
  char *end;
  errno = 0;
  long long x = strtoll(v, &end, 10);
  return errno || *end ? dflt : (int64_t)x;
}

static void on_send(struct fy_broker *b, struct bconn *bc, const fy_rmq_cmd *c) {
  fy_conn *conn = bc->conn;
  struct fy_reqref ref = ref_of(c);
  b->sends++;
  const char *topic = send_field(c, "topic");
  if (!topic) {
    reply(conn, c, FY_RMQ_RESP_SYSTEM_ERROR, NULL, 0, "the custom field <topic> is null");
    return;
  }
  int64_t qid = send_i64(c, "queueId", -1);
  int64_t sys_flag = send_i64(c, "sysFlag", 0);
  if (sys_flag & FY_SYSFLAG_TRANS_MASK & ~FY_SYSFLAG_TRANS_COMMIT) {
    reply(conn, c, FY_RMQ_RESP_MESSAGE_ILLEGAL, NULL, 0,
          "transactional (half) messages are not supported by Ferry");
    return;
  }
  bool batch = c->code == FY_RMQ_REQ_SEND_BATCH_MESSAGE;
  char why[512];
  uint32_t queue_id;
  uint16_t st = fy__send_check_topic(b, topic, qid < 0 || qid > INT32_MAX ? -1 : (int32_t)qid,
                                     (uint32_t)send_i64(c, "defaultTopicQueueNums", 0), &queue_id,
                                     why, sizeof why);
  if (st) {
    fy__reply_err(conn, &ref, st, "%s", why);
    return;
  }
  /* Count the messages first (one, or a batch's entries), and the bytes
   * their properties can take here: what they carry plus what copy_props
   * adds, each at most FY_PROPS_MAX (not FY_PROPS_MAX each up front: that
   * was 32 MiB for a batch of 1,024). */
  const char *hp = send_field(c, "properties");
  size_t n = 1;
  size_t props_total = props_room(hp ? strlen(hp) : 0);
  if (batch) {
    const uint8_t *p = c->body;
    size_t left = c->body_len;
    fy_rmq_batch_msg bm;
    int rc;
    n = 0;
    props_total = 0;
    while ((rc = fy_rmq_batch_next(&p, &left, &bm)) == 1 && n <= BATCH_MAX) {
      n++;
      props_total += props_room(bm.props_len);
    }
    if (rc < 0 || n == 0 || n > BATCH_MAX) {
      reply(conn, c, FY_RMQ_RESP_MESSAGE_ILLEGAL, NULL, 0,
            rc < 0 ? "malformed batch body" : "a batch carries 1 to %d messages", BATCH_MAX);
      return;
    }
  }
  struct fy_msg *msgs;
  char (*ids)[33];
  char *props;
  if (fy__send_scratch(b, n, props_total, &msgs, &ids, &props) != 0) {
    reply(conn, c, FY_RMQ_RESP_SYSTEM_BUSY, NULL, 0, "out of memory");
    return;
  }
  struct fy_host born = bc->born, store_host;
  fy__store_host(b, &store_host);
  int64_t born_ts = send_i64(c, "bornTimestamp", 0);
  char *pb = props;
  const uint8_t *p = c->body;
  size_t left = c->body_len;
  for (size_t i = 0; i < n; i++) {
    struct fy_msg *m = &msgs[i];
    const char *src = hp ? hp : "";
    size_t srclen = strlen(src);
    m->flag = (uint32_t)send_i64(c, "flag", 0);
    m->body = c->body;
    m->body_len = c->body_len;
    if (batch) {
      fy_rmq_batch_msg bm;
      fy_rmq_batch_next(&p, &left, &bm);
      src = bm.props;
      srclen = bm.props_len;
      m->flag = (uint32_t)bm.flag;
      m->body = bm.body;
      m->body_len = bm.body_len;
    }
    const char *reason = NULL;
    int plen = copy_props(b, src, srclen, pb, props_room(srclen), ids[i], &reason);
    if (plen < 0) {
      reply(conn, c, FY_RMQ_RESP_MESSAGE_ILLEGAL, NULL, 0, "message %zu: %s", i, reason);
      goto out;
    }
    m->topic = topic;
    m->topic_len = (uint16_t)strlen(topic);
    m->queue_id = queue_id;
    m->sys_flag = (uint32_t)sys_flag & (FY_SYSFLAG_COMPRESSED | FY_SYSFLAG_MULTI_TAGS);
    m->born_ts_ms = born_ts > 0 ? born_ts : fy__now_ms();
    m->born_host = born;
    m->store_host = store_host;
    m->reconsume_times = (uint32_t)send_i64(c, "reconsumeTimes", 0);
    m->props = pb;
    m->props_len = (uint16_t)plen;
    pb += plen;
  }
  st = fy__send_put(b, bc, &ref, msgs, n, ids, why, sizeof why);
  if (st)
    fy__reply_err(conn, &ref, st, "%s", why);
out:
  fy__send_scratch_done(b);
}

void fy__rmq_reply_send(struct fy_broker *b, fy_conn *conn, const struct fy_reqref *ref,
                        uint16_t status, uint32_t queue_id, const struct fy_send_result *res,
                        size_t n) {
  (void)b;
  if (ref->rmq_oneway)
    return;
  fy_rmq_out o;
  if (ref->op == FY_RMQ_REQ_CONSUMER_SEND_MSG_BACK) {
    /* Stored for a retry: "stored on the master only" still counts. */
    out_for(&o, ref, FY_RMQ_RESP_SUCCESS, NULL);
    send_out(conn, &o, NULL, 0);
    return;
  }
  out_for(&o, ref, code_of_status(status), NULL);
  char ids_small[REPLY_IDS_STACK * 33 + 1]; /* single sends and small batches */
  char *ids = n <= REPLY_IDS_STACK ? ids_small : malloc(n * 33 + 1);
  if (ids) {
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
      if (i)
        ids[len++] = ',';
      memcpy(ids + len, res[i].offset_msg_id, 32);
      len += 32;
    }
    ids[len] = '\0';
    fy_rmq_out_str(&o, "msgId", ids);
    if (ids != ids_small)
      free(ids);
  }
  fy_rmq_out_i64(&o, "queueId", queue_id);
  fy_rmq_out_i64(&o, "queueOffset", (int64_t)res[0].queue_offset);
  fy_rmq_out_str(&o, "MSG_REGION", "DefaultRegion");
  fy_rmq_out_str(&o, "TRACE_ON", "false");
  send_out(conn, &o, NULL, 0);
}

/* ---------------------------------------------------------------- retries */

/* Makes sure a retry or dead-letter topic exists here (created by the
 * broker, like RocketMQ's). Returns 0 or an error with *why. */
static int ensure_topic(struct fy_broker *b, const char *name, uint32_t queues, uint32_t perm,
                        const char **why) {
  if (fy_topics_exists(b->topics, name))
    return 0;
  if (b->cfg->role == FY_ROLE_SLAVE) {
    *why = "a slave does not create topics";
    return -EPERM;
  }
  struct fy_topic_config tc = {.read_queues = queues, .write_queues = queues, .perm = perm};
  snprintf(tc.name, sizeof tc.name, "%s", name);
  int err = fy_topics_put(b->topics, &tc, FY_TOPIC_ALLOW_SYSTEM, why);
  if (!err) {
    fy_info(MOD, "created topic %s (%u queues)", name, queues);
    fy__broker_register_all(b);
  }
  return err;
}

/* CONSUMER_SEND_MSG_BACK: a consumer could not process the message at
 * commit-log offset `offset`; it goes to %RETRY%<group> with its reconsume
 * count raised, or to %DLQ%<group> once the count reaches the maximum. */
static void on_send_back(struct fy_broker *b, struct bconn *bc, const fy_rmq_cmd *c) {
  fy_conn *conn = bc->conn;
  int64_t offset;
  const char *group = need_str(conn, c, "group");
  if (!group || !need_i64(conn, c, "offset", &offset))
    return;
  const char *why = NULL;
  if (fy_group_name_check(group, &why) || strlen(group) + sizeof DLQ_PREFIX > FY_TOPIC_NAME_MAX) {
    reply(conn, c, FY_RMQ_RESP_SUBSCRIPTION_GROUP_NOT_EXIST, NULL, 0, "group '%s': %s", group,
          why ? why : "name too long");
    return;
  }
  if (b->cfg->role == FY_ROLE_SLAVE) {
    reply(conn, c, FY_RMQ_RESP_SERVICE_NOT_AVAILABLE, NULL, 0,
          "broker %s is a slave; send messages back to its master", b->cfg->broker_name);
    return;
  }
  struct fy_group_config g;
  bool created;
  int gerr = fy_groups_find_or_create(b->groups, group, &g, &created);
  if (gerr == -FY_ENOT_FOUND) {
    reply(conn, c, FY_RMQ_RESP_SUBSCRIPTION_GROUP_NOT_EXIST, NULL, 0,
          "subscription group not exist, %s (autoCreateSubscriptionGroup=false on broker %s: "
          "create it with mqadmin updateSubGroup)",
          group, b->cfg->broker_name);
    return;
  }
  if (gerr) {
    reply(conn, c, FY_RMQ_RESP_SYSTEM_ERROR, NULL, 0,
          "subscription group %s cannot be created on broker %s: %s", group, b->cfg->broker_name,
          gerr == -ENOSPC ? "too many subscription groups" : fy_strerror(gerr));
    return;
  }
  if (g.retry_queues == 0) { /* RocketMQ: the group does not retry; the message is dropped */
    reply(conn, c, FY_RMQ_RESP_SUCCESS, NULL, 0, NULL);
    return;
  }
  struct fy_cl_slice slice;
  struct fy_msg old;
  if (offset < 0 || fy_store_read_msg(b->store, (uint64_t)offset, &slice, &old) != 0) {
    reply(conn, c, FY_RMQ_RESP_SYSTEM_ERROR, NULL, 0, "look message by offset failed, %" PRId64,
          offset);
    return;
  }
  int64_t max_times = opt_i64(c, "maxReconsumeTimes", -1);
  if (max_times < 0)
    max_times = g.retry_max_times;
  int64_t delay_level = opt_i64(c, "delayLevel", 0);
  bool dead = old.reconsume_times >= max_times || delay_level < 0;
  char topic[FY_TOPIC_NAME_MAX + 1];
  snprintf(topic, sizeof topic, "%s%s", dead ? DLQ_PREFIX : RETRY_PREFIX, group);
  uint32_t queues = dead ? 1 : g.retry_queues;
  char *props = malloc(FY_PROPS_MAX);
  char uniq[33] = "";
  int err = props ? ensure_topic(b, topic, queues, dead ? FY_PERM_WRITE : FY_PERM_READ | FY_PERM_WRITE, &why)
                  : -ENOMEM;
  if (err) {
    reply(conn, c, FY_RMQ_RESP_SYSTEM_ERROR, NULL, 0, "topic %s not available: %s", topic,
          why ? why : fy_strerror(err));
    goto out;
  }
  /* Into a queue the topic has: it may predate a change of retryQueueNums,
   * and a message in a queue past its read queues would never be consumed. */
  struct fy_topic_config tc;
  if (!dead && fy_topics_get(b->topics, topic, &tc) == 0) {
    uint32_t have = tc.read_queues < tc.write_queues ? tc.read_queues : tc.write_queues;
    if (have > 0 && have < queues)
      queues = have;
  }
  /* The original properties, plus where the message came from. */
  size_t plen = old.props_len;
  memcpy(props, old.props, plen);
  const char *v;
  size_t vlen;
  char orig_topic[FY_TOPIC_NAME_MAX + 1];
  snprintf(orig_topic, sizeof orig_topic, "%.*s", (int)old.topic_len, old.topic);
  int rc = 0;
  if (!fy_props_get(props, plen, FY_PROP_RETRY_TOPIC, &v, &vlen))
    rc |= fy_props_add(props, FY_PROPS_MAX, &plen, FY_PROP_RETRY_TOPIC, orig_topic,
                       strlen(orig_topic));
  if (!fy_props_get(props, plen, "ORIGIN_MESSAGE_ID", &v, &vlen)) {
    const char *origin = fy_rmq_ext(c, "originMsgId");
    char oid[33];
    if (!origin || !*origin) {
      fy__offset_msg_id(b, (uint64_t)offset, oid);
      origin = oid;
    }
    rc |= fy_props_add(props, FY_PROPS_MAX, &plen, "ORIGIN_MESSAGE_ID", origin, strlen(origin));
  }
  /* RocketMQ's back-off: level 3 + reconsume count (10 s, 30 s, 1 m, ...),
   * or the level the client asked for. */
  if (!dead)
    rc |= fy__schedule_set_level(props, FY_PROPS_MAX, &plen,
                                 delay_level > 0 ? (int)(delay_level > 1000 ? 1000 : delay_level)
                                                 : 3 + (int)(old.reconsume_times > 1000
                                                                 ? 1000 : old.reconsume_times));
  if (fy_props_get(props, plen, FY_PROP_UNIQ_KEY, &v, &vlen))
    snprintf(uniq, sizeof uniq, "%.*s", (int)(vlen < 32 ? vlen : 32), v);
  else
    fy__make_uniq_key(b, uniq);
  if (rc) {
    reply(conn, c, FY_RMQ_RESP_MESSAGE_ILLEGAL, NULL, 0, "properties too long to retry");
    goto out;
  }
  struct fy_msg m = old;
  m.topic = topic;
  m.topic_len = (uint16_t)strlen(topic);
  m.queue_id = b->rr++ % queues;
  m.reconsume_times = old.reconsume_times + 1;
  m.props = props;
  m.props_len = (uint16_t)plen;
  fy__store_host(b, &m.store_host);
  struct fy_reqref ref = ref_of(c);
  char reason[512];
  uint16_t st = fy__send_put(b, bc, &ref, &m, 1, &uniq, reason, sizeof reason);
  if (st)
    fy__reply_err(conn, &ref, st, "%s", reason);
  else if (dead)
    fy_warn(MOD, "message %s of group %s reached %u reconsumes: moved to %s", uniq, group,
            old.reconsume_times, topic);
out:
  free(props);
  fy_cl_slice_release(&slice);
}

/* ---------------------------------------------------------------- pull */

static void on_pull(struct fy_broker *b, struct bconn *bc, const fy_rmq_cmd *c) {
  fy_conn *conn = bc->conn;
  const char *group = need_str(conn, c, "consumerGroup");
  const char *topic = group ? need_str(conn, c, "topic") : NULL;
  uint32_t qid;
  int64_t offset, max_msgs, sys_flag;
  if (!topic || !need_queue(conn, c, "queueId", &qid) || !need_i64(conn, c, "queueOffset", &offset) ||
      !need_i64(conn, c, "maxMsgNums", &max_msgs) || !need_i64(conn, c, "sysFlag", &sys_flag))
    return;
  struct fy_reqref ref = ref_of(c);
  char why[512];
  uint16_t st = fy__pull_check(b, topic, group, qid, why, sizeof why);
  if (st) {
    b->pulls++;
    fy__reply_err(conn, &ref, st, "%s", why);
    return;
  }
  const char *etype = fy_rmq_ext(c, "expressionType");
  if (etype && *etype && strcmp(etype, "TAG") != 0) {
    reply(conn, c, FY_RMQ_RESP_SUBSCRIPTION_PARSE_FAILED, NULL, 0,
          "expression type %s is not supported by Ferry (TAG only)", etype);
    return;
  }
  /* The subscription: sent with the pull, or the one the group's
   * heartbeats registered. Without either, everything is returned: the
   * client filters by tag again anyway. */
  struct fy_subscription sub;
  memset(&sub, 0, sizeof sub);
  const char *expr = NULL;
  if (sys_flag & PULL_FLAG_SUBSCRIPTION)
    expr = fy_rmq_ext(c, "subscription");
  else if (fy_consumers_subscription(b->consumers, group, topic, &sub))
    expr = sub.expression;
  struct pull_req r;
  memset(&r, 0, sizeof r);
  char tagbuf[1024];
  const char *tags[FY_PULL_TAGS_MAX];
  int ntags = fy_rmq_tags_parse(expr, tagbuf, sizeof tagbuf, tags, FY_PULL_TAGS_MAX);
  if (ntags == -E2BIG || ntags == -ENOSPC)
    ntags = 0; /* more tags than Ferry filters by: unfiltered (the client checks tags again) */
  if (ntags < 0) {
    reply(conn, c, FY_RMQ_RESP_SUBSCRIPTION_PARSE_FAILED, NULL, 0,
          "subscription '%s' does not parse (at most %d tags joined by ||)", expr ? expr : "",
          FY_PULL_TAGS_MAX);
    return;
  }
  for (int i = 0; i < ntags; i++)
    r.tags[i] = fy_tag_hash(tags[i], strlen(tags[i]));
  r.ntags = (size_t)ntags;
  r.ref = ref;
  snprintf(r.group, sizeof r.group, "%s", group);
  snprintf(r.topic, sizeof r.topic, "%s", topic);
  r.queue_id = qid;
  r.offset = offset < 0 ? 0 : (uint64_t)offset;
  int64_t suspend = sys_flag & PULL_FLAG_SUSPEND ? opt_i64(c, "suspendTimeoutMillis", 0) : 0;
  fy__pull_limits(b, &r, max_msgs <= 0 || max_msgs > UINT32_MAX ? 0 : (uint32_t)max_msgs, 0,
                  suspend <= 0 || suspend > UINT32_MAX ? 0 : (uint32_t)suspend);
  int64_t commit = opt_i64(c, "commitOffset", -1);
  if ((sys_flag & PULL_FLAG_COMMIT_OFFSET) && commit >= 0 && b->cfg->role != FY_ROLE_SLAVE)
    fy_offsets_commit(b->offsets, r.group, r.topic, r.queue_id, commit);
  fy__pull_run(b, bc, &r);
}

/* Re-encodes stored records into RocketMQ's layout, one body. */
static uint8_t *encode_records(struct fy_get_msg *msgs, size_t count, size_t *len) {
  struct fy_msg *m = calloc(count ? count : 1, sizeof *m);
  if (!m)
    return NULL;
  size_t total = 0;
  for (size_t i = 0; i < count; i++) {
    enum fy_record_kind kind;
    if (fy_record_decode(msgs[i].slice.data, msgs[i].slice.len, msgs[i].slice.offset, &kind,
                         &m[i]) <= 0 ||
        kind != FY_REC_MSG) {
      free(m);
      return NULL;
    }
    total += fy_rmq_msg_size(&m[i]);
  }
  uint8_t *body = malloc(total ? total : 1);
  if (body) {
    size_t at = 0;
    for (size_t i = 0; i < count; i++)
      at += fy_rmq_msg_encode(&m[i], body + at);
    *len = at;
  }
  free(m);
  return body;
}

void fy__rmq_reply_pull(struct fy_broker *b, struct bconn *bc, const struct pull_req *r,
                        uint16_t status, const struct fy_get_result *res,
                        struct fy_get_msg *msgs) {
  uint8_t *body = NULL;
  size_t body_len = 0;
  if (msgs) {
    body = encode_records(msgs, res->count, &body_len);
    fy_store_get_release(msgs, res->count);
    free(msgs);
    if (!body) {
      fy__rmq_reply_err(bc->conn, &r->ref, FERRY__V1__STATUS__SYSTEM_ERROR,
                        "could not re-encode stored records");
      return;
    }
  }
  if (r->ref.rmq_oneway) {
    free(body);
    return;
  }
  fy_rmq_out o;
  out_for(&o, &r->ref, code_of_status(status), NULL);
  fy_rmq_out_i64(&o, "suggestWhichBrokerId", (int64_t)fy__pull_suggest(b, r, res));
  fy_rmq_out_i64(&o, "nextBeginOffset", (int64_t)res->next_offset);
  fy_rmq_out_i64(&o, "minOffset", (int64_t)res->min_offset);
  fy_rmq_out_i64(&o, "maxOffset", (int64_t)res->max_offset);
  send_out(bc->conn, &o, body, body_len);
}

/* ---------------------------------------------------------------- consumers */

static void copy_str(char *dst, size_t cap, json_t *v) {
  const char *s = json_is_string(v) ? json_string_value(v) : "";
  snprintf(dst, cap, "%s", s);
}

/* HEART_BEAT: the client's consumer groups and their subscriptions (the
 * body, JSON). A master creates each clustering group's retry topic. */
static void on_heartbeat(struct fy_broker *b, fy_conn *conn, const fy_rmq_cmd *c) {
  json_error_t jerr;
  json_t *root = json_loadb((const char *)c->body, c->body_len, JSON_REJECT_DUPLICATES, &jerr);
  json_t *cid = json_object_get(root, "clientID");
  json_t *set = json_object_get(root, "consumerDataSet");
  if (!json_is_object(root) || !json_is_string(cid) || (set && !json_is_array(set))) {
    reply(conn, c, FY_RMQ_RESP_SYSTEM_ERROR, NULL, 0,
          "heartbeat body is not a HeartbeatData JSON object%s%s", root ? "" : ": ",
          root ? "" : jerr.text);
    json_decref(root);
    return;
  }
  size_t n = json_array_size(set);
  if (n > FY_CONSUMER_GROUPS_PER_CLIENT) {
    reply(conn, c, FY_RMQ_RESP_SYSTEM_ERROR, NULL, 0, "at most %d consumer groups per client",
          FY_CONSUMER_GROUPS_PER_CLIENT);
    json_decref(root);
    return;
  }
  struct fy_consumer_group_info *groups = calloc(n ? n : 1, sizeof *groups);
  int err = groups ? 0 : -ENOMEM;
  const char *bad = NULL;
  for (size_t i = 0; !err && i < n; i++) {
    json_t *cd = json_array_get(set, i);
    struct fy_consumer_group_info *g = &groups[i];
    copy_str(g->group, sizeof g->group, json_object_get(cd, "groupName"));
    copy_str(g->consume_from, sizeof g->consume_from, json_object_get(cd, "consumeFromWhere"));
    json_t *model = json_object_get(cd, "messageModel");
    g->broadcasting = json_is_string(model) && strcmp(json_string_value(model), "BROADCASTING") == 0;
    json_t *subs = json_object_get(cd, "subscriptionDataSet");
    if (fy_group_name_check(g->group, &bad) || json_array_size(subs) > FY_SUBS_PER_GROUP) {
      err = -EINVAL;
      break;
    }
    for (size_t s = 0; s < json_array_size(subs); s++) {
      json_t *sd = json_array_get(subs, s);
      copy_str(g->subs[s].topic, sizeof g->subs[s].topic, json_object_get(sd, "topic"));
      /* An expression too long to keep whole is kept as "*": cut, it would
       * filter out tags it names. Unfiltered is safe, as RocketMQ clients
       * check the tags of what they pull again. */
      const char *expr = json_string_value(json_object_get(sd, "subString")); /* NULL: none */
      snprintf(g->subs[s].expression, sizeof g->subs[s].expression, "%s",
               !expr ? "" : strlen(expr) < sizeof g->subs[s].expression ? expr : "*");
    }
    g->nsubs = json_array_size(subs);
    struct fy_group_config gc;
    bool created;
    if (fy_groups_find_or_create(b->groups, g->group, &gc, &created) == 0 && !g->broadcasting &&
        gc.retry_queues > 0 && b->cfg->role != FY_ROLE_SLAVE) {
      char retry[FY_TOPIC_NAME_MAX + 1];
      const char *why = NULL;
      if ((size_t)snprintf(retry, sizeof retry, "%s%s", RETRY_PREFIX, g->group) < sizeof retry)
        ensure_topic(b, retry, gc.retry_queues, FY_PERM_READ | FY_PERM_WRITE, &why);
    }
  }
  if (!err)
    err = fy_consumers_heartbeat(b->consumers, json_string_value(cid), conn, groups, n,
                                 fy__now_ms());
  if (err)
    reply(conn, c, err == -FY_EBUSY ? FY_RMQ_RESP_SYSTEM_BUSY : FY_RMQ_RESP_SYSTEM_ERROR, NULL, 0,
          "heartbeat of client '%s' refused: %s", json_string_value(cid),
          err == -EINVAL ? (bad ? bad : "bad client id, group name, or too many subscriptions")
                         : fy_strerror(err));
  else
    reply(conn, c, FY_RMQ_RESP_SUCCESS, NULL, 0, NULL);
  free(groups);
  json_decref(root);
}

static void on_unregister(struct fy_broker *b, fy_conn *conn, const fy_rmq_cmd *c) {
  const char *cid = need_str(conn, c, "clientID");
  if (!cid)
    return;
  /* As RocketMQ's ClientManageProcessor: only a named consumer group is
   * left. A producer shutting down sends its producerGroup alone, and a
   * client instance shared by a producer and a consumer keeps consuming. */
  const char *group = fy_rmq_ext(c, "consumerGroup");
  if (group && *group)
    fy_consumers_unregister(b->consumers, cid, group);
  reply(conn, c, FY_RMQ_RESP_SUCCESS, NULL, 0, NULL);
}

static void on_consumer_list(struct fy_broker *b, fy_conn *conn, const fy_rmq_cmd *c) {
  const char *group = need_str(conn, c, "consumerGroup");
  if (!group)
    return;
  char **ids;
  size_t n;
  if (fy_consumers_list(b->consumers, group, &ids, &n) != 0) {
    reply(conn, c, FY_RMQ_RESP_SYSTEM_ERROR, NULL, 0, "out of memory");
    return;
  }
  if (n == 0) {
    free(ids);
    reply(conn, c, FY_RMQ_RESP_SYSTEM_ERROR, NULL, 0, "no consumer for this group, %s", group);
    return;
  }
  json_t *list = json_array();
  for (size_t i = 0; i < n; i++)
    json_array_append_new(list, json_string(ids[i]));
  free(ids);
  reply_json(conn, c, json_pack("{s:o}", "consumerIdList", list));
}

#define NOTIFY_MAX 1024

void fy__rmq_group_changed(void *arg, const char *group) {
  struct fy_broker *b = arg;
  if (b->stopping)
    return;
  struct fy_group_config g;
  if (fy_groups_get(b->groups, group, &g) == 0 && !g.notify_consumer_ids_changed_enable)
    return;
  void *conns[NOTIFY_MAX];
  size_t n = fy_consumers_conns(b->consumers, group, conns, NOTIFY_MAX);
  for (size_t i = 0; i < n; i++) {
    fy_conn *conn = conns[i];
    struct bconn *bc = fy_conn_data(conn);
    if (!bc || bc->proto != FY_PROTO_RMQ || !fy_conn_is_open(conn))
      continue;
    fy_rmq_out o;
    b->rmq_opaque = b->rmq_opaque == INT32_MAX ? 1 : b->rmq_opaque + 1;
    fy_rmq_out_request(&o, FY_RMQ_REQ_NOTIFY_CONSUMER_IDS_CHANGED, b->rmq_opaque,
                       bc->rmq_serialize, true);
    fy_rmq_out_str(&o, "consumerGroup", group);
    send_out(conn, &o, NULL, 0);
  }
}

/* ---------------------------------------------------------------- offsets */

static bool topic_known(struct fy_broker *b, fy_conn *conn, const fy_rmq_cmd *c, const char *topic) {
  if (fy_topics_exists(b->topics, topic) ||
      (b->cfg->role == FY_ROLE_SLAVE && fy_topic_name_check(topic, NULL) == 0))
    return true;
  reply(conn, c, FY_RMQ_RESP_TOPIC_NOT_EXIST, NULL, 0, "topic '%s' does not exist on broker %s",
        topic, b->cfg->broker_name);
  return false;
}

static void reply_offset(fy_conn *conn, const fy_rmq_cmd *c, const char *key, int64_t v) {
  fy_rmq_out o;
  fy_rmq_out_response(&o, c, FY_RMQ_RESP_SUCCESS, NULL);
  fy_rmq_out_i64(&o, key, v);
  reply_out(conn, c, &o, NULL, 0);
}

static void on_queue_offsets(struct fy_broker *b, fy_conn *conn, const fy_rmq_cmd *c) {
  const char *topic = need_str(conn, c, "topic");
  uint32_t qid;
  if (!topic || !need_queue(conn, c, "queueId", &qid) || !topic_known(b, conn, c, topic))
    return;
  switch (c->code) {
  case FY_RMQ_REQ_GET_MAX_OFFSET:
    reply_offset(conn, c, "offset", (int64_t)fy_store_max_offset(b->store, topic, qid));
    break;
  case FY_RMQ_REQ_GET_MIN_OFFSET:
    reply_offset(conn, c, "offset", (int64_t)fy_store_min_offset(b->store, topic, qid));
    break;
  case FY_RMQ_REQ_SEARCH_OFFSET_BY_TIMESTAMP: {
    int64_t ts;
    if (need_i64(conn, c, "timestamp", &ts))
      reply_offset(conn, c, "offset", (int64_t)fy_store_offset_for_time(b->store, topic, qid, ts));
    break;
  }
  case FY_RMQ_REQ_GET_EARLIEST_MSG_STORETIME: {
    uint64_t min = fy_store_min_offset(b->store, topic, qid);
    struct fy_get_msg m;
    struct fy_get_result res;
    fy_store_get(b->store, topic, qid, min, 1, 0, NULL, 0, &m, &res);
    if (res.status != FY_GET_FOUND) {
      reply_offset(conn, c, "timestamp", -1); /* RocketMQ: an empty queue has none */
      break;
    }
    struct fy_msg d;
    enum fy_record_kind kind;
    int64_t ts = fy_record_decode(m.slice.data, m.slice.len, m.slice.offset, &kind, &d) > 0
                     ? d.store_ts_ms : -1;
    fy_store_get_release(&m, 1);
    reply_offset(conn, c, "timestamp", ts);
    break;
  }
  }
}

static void on_query_consumer_offset(struct fy_broker *b, fy_conn *conn, const fy_rmq_cmd *c) {
  const char *group = need_str(conn, c, "consumerGroup");
  const char *topic = group ? need_str(conn, c, "topic") : NULL;
  uint32_t qid;
  if (!topic || !need_queue(conn, c, "queueId", &qid))
    return;
  int64_t off = fy_offsets_query(b->offsets, group, topic, qid);
  if (off >= 0) {
    reply_offset(conn, c, "offset", off);
  } else if (fy_store_min_offset(b->store, topic, qid) == 0) {
    /* RocketMQ: a group new to a queue that still starts at 0 reads it from 0. */
    reply_offset(conn, c, "offset", 0);
  } else {
    reply(conn, c, FY_RMQ_RESP_QUERY_NOT_FOUND, NULL, 0,
          "Not found, group %s has no offset for %s queue %u", group, topic, qid);
  }
}

static void on_update_consumer_offset(struct fy_broker *b, fy_conn *conn, const fy_rmq_cmd *c) {
  const char *group = need_str(conn, c, "consumerGroup");
  const char *topic = group ? need_str(conn, c, "topic") : NULL;
  uint32_t qid;
  int64_t off;
  if (!topic || !need_queue(conn, c, "queueId", &qid) || !need_i64(conn, c, "commitOffset", &off))
    return;
  const char *why = NULL;
  int err = fy_group_name_check(group, &why) ? -EINVAL
            : off < 0 ? -ERANGE
                      : fy_offsets_commit(b->offsets, group, topic, qid, off);
  if (err)
    reply(conn, c, FY_RMQ_RESP_SYSTEM_ERROR, NULL, 0, "offset of group '%s' not stored: %s", group,
          why ? why : fy_strerror(err));
  else
    reply(conn, c, FY_RMQ_RESP_SUCCESS, NULL, 0, NULL);
}

/* ---------------------------------------------------------------- queue locks */

/* Orderly consumption: a client locks the queues it consumes in order, for
 * LOCK_TTL_MS, renewing as it goes (RocketMQ's RebalanceLockManager). */
struct qlock {
  char client[FY_CLIENT_ID_MAX];
  uint64_t expires_ms;
};

static size_t lock_key(char *buf, size_t cap, const char *group, const char *topic, int64_t qid) {
  int n = snprintf(buf, cap, "%s%c%s%c%" PRId64, group, 0, topic, 0, qid);
  return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

/* A full lock table drops its expired locks, at most once a second (the
 * keys come from clients, so the table must not fill up for good). */
static void sweep_locks(struct fy_broker *b, uint64_t now) {
  if (fy_strmap_size(b->rmq_locks) < LOCKS_MAX || now < b->rmq_locks_swept_ms + 1000)
    return;
  b->rmq_locks_swept_ms = now;
  size_t n = fy_strmap_size(b->rmq_locks), k = 0, pos = 0, klen;
  char **keys = calloc(n, sizeof *keys);
  size_t *lens = calloc(n, sizeof *lens);
  const char *key;
  void *v;
  while (keys && lens && k < n && fy_strmap_next(b->rmq_locks, &pos, &key, &klen, &v)) {
    if (((struct qlock *)v)->expires_ms > now || !(keys[k] = malloc(klen)))
      continue;
    memcpy(keys[k], key, klen);
    lens[k++] = klen;
  }
  for (size_t i = 0; i < k; i++) {
    free(fy_strmap_del(b->rmq_locks, keys[i], lens[i]));
    free(keys[i]);
  }
  free(keys);
  free(lens);
}

static void on_lock(struct fy_broker *b, fy_conn *conn, const fy_rmq_cmd *c, bool lock) {
  json_error_t jerr;
  json_t *root = json_loadb((const char *)c->body, c->body_len, 0, &jerr);
  json_t *group = json_object_get(root, "consumerGroup");
  json_t *client = json_object_get(root, "clientId");
  json_t *set = json_object_get(root, "mqSet");
  if (!json_is_string(group) || !json_is_string(client) || !json_is_array(set) ||
      strlen(json_string_value(client)) >= FY_CLIENT_ID_MAX) {
    reply(conn, c, FY_RMQ_RESP_SYSTEM_ERROR, NULL, 0, "body is not a %s JSON object",
          lock ? "LockBatchRequestBody" : "UnlockBatchRequestBody");
    json_decref(root);
    return;
  }
  if (!b->rmq_locks && !(b->rmq_locks = fy_strmap_new())) {
    reply(conn, c, FY_RMQ_RESP_SYSTEM_ERROR, NULL, 0, "out of memory");
    json_decref(root);
    return;
  }
  const char *cid = json_string_value(client);
  uint64_t now = (uint64_t)fy__now_ms();
  json_t *ok = json_array();
  size_t i;
  json_t *mq;
  json_array_foreach(set, i, mq) {
    json_t *topic = json_object_get(mq, "topic");
    json_t *qid = json_object_get(mq, "queueId");
    char key[FY_GROUP_NAME_MAX + FY_TOPIC_NAME_MAX + 32];
    size_t klen = json_is_string(topic) && json_is_integer(qid)
                      ? lock_key(key, sizeof key, json_string_value(group),
                                 json_string_value(topic), json_integer_value(qid))
                      : 0;
    if (!klen)
      continue;
    struct qlock *l = fy_strmap_get(b->rmq_locks, key, klen);
    if (!lock) {
      if (l && strcmp(l->client, cid) == 0)
        free(fy_strmap_del(b->rmq_locks, key, klen));
      continue;
    }
    if (l && strcmp(l->client, cid) != 0 && l->expires_ms > now)
      continue; /* held by another live client */
    if (!l) {
      sweep_locks(b, now);
      if (fy_strmap_size(b->rmq_locks) >= LOCKS_MAX || !(l = calloc(1, sizeof *l)) ||
          fy_strmap_put(b->rmq_locks, key, klen, l)) {
        free(l);
        continue;
      }
    }
    snprintf(l->client, sizeof l->client, "%s", cid);
    l->expires_ms = now + LOCK_TTL_MS;
    json_array_append(ok, mq);
  }
  json_decref(root);
  if (lock) {
    reply_json(conn, c, json_pack("{s:o}", "lockOKMQSet", ok));
  } else {
    json_decref(ok);
    reply(conn, c, FY_RMQ_RESP_SUCCESS, NULL, 0, NULL);
  }
}

void fy__rmq_free(struct fy_broker *b) {
  if (!b->rmq_locks)
    return;
  size_t pos = 0, klen;
  const char *k;
  void *v;
  while (fy_strmap_next(b->rmq_locks, &pos, &k, &klen, &v))
    free(v);
  fy_strmap_free(b->rmq_locks);
  b->rmq_locks = NULL;
}

/* ---------------------------------------------------------------- topics */

static json_t *topic_json(const struct fy_topic_config *tc) {
  return json_pack("{s:s,s:i,s:i,s:i,s:s,s:i,s:b}", "topicName", tc->name, "readQueueNums",
                   (json_int_t)tc->read_queues, "writeQueueNums", (json_int_t)tc->write_queues,
                   "perm", (json_int_t)tc->perm, "topicFilterType", "SINGLE_TAG", "topicSysFlag",
                   (json_int_t)tc->topic_sys_flag, "order", tc->order);
}

static void on_create_topic(struct fy_broker *b, fy_conn *conn, const fy_rmq_cmd *c) {
  const char *topic = need_str(conn, c, "topic");
  int64_t rq, wq, perm;
  if (!topic || !need_i64(conn, c, "readQueueNums", &rq) ||
      !need_i64(conn, c, "writeQueueNums", &wq) || !need_i64(conn, c, "perm", &perm))
    return;
  struct fy_topic_config tc = {.read_queues = rq < 0 || rq > UINT32_MAX ? 0 : (uint32_t)rq,
                               .write_queues = wq < 0 || wq > UINT32_MAX ? 0 : (uint32_t)wq,
                               .perm = perm < 0 || perm > 7 ? 8 : (uint32_t)perm};
  bool order = false;
  fy_rmq_ext_bool(c, "order", &order);
  tc.order = order;
  const char *why = NULL;
  int err = strlen(topic) >= sizeof tc.name ? -EINVAL : 0;
  if (!err) {
    snprintf(tc.name, sizeof tc.name, "%s", topic);
    err = b->cfg->role == FY_ROLE_SLAVE ? -EPERM : fy_topics_put(b->topics, &tc, 0, &why);
  }
  if (err) {
    reply(conn, c, FY_RMQ_RESP_SYSTEM_ERROR, NULL, 0, "topic '%s' not created: %s", topic,
          why ? why : b->cfg->role == FY_ROLE_SLAVE ? "this broker is a slave" : "bad name");
    return;
  }
  fy__broker_register_all(b);
  reply(conn, c, FY_RMQ_RESP_SUCCESS, NULL, 0, NULL);
}

static void on_all_topics(struct fy_broker *b, fy_conn *conn, const fy_rmq_cmd *c) {
  struct fy_topic_config *list = NULL;
  size_t n = 0;
  if (fy_topics_list(b->topics, &list, &n) != 0) {
    reply(conn, c, FY_RMQ_RESP_SYSTEM_ERROR, NULL, 0, "out of memory");
    return;
  }
  json_t *table = json_object();
  for (size_t i = 0; i < n; i++)
    json_object_set_new(table, list[i].name, topic_json(&list[i]));
  free(list);
  struct fy_data_version dv = fy_topics_data_version(b->topics);
  reply_json(conn, c,
             json_pack("{s:o,s:{s:I,s:I}}", "topicConfigTable", table, "dataVersion", "timestamp",
                       (json_int_t)dv.timestamp_ms, "counter", (json_int_t)dv.counter));
}

/* ---------------------------------------------------------------- subscription groups */

#define SLAVE_REMARK                                                                           \
  "Can't modify topic or subscription group from slave broker, please execute it from master " \
  "broker."

/* UPDATE_AND_CREATE_SUBSCRIPTIONGROUP: the body is a SubscriptionGroupConfig
 * (JSON); the group gets every field of it, absent ones at their defaults. */
static void on_update_sub_group(struct fy_broker *b, fy_conn *conn, const fy_rmq_cmd *c) {
  if (b->cfg->role == FY_ROLE_SLAVE) { /* RocketMQ's answer, word for word */
    reply(conn, c, FY_RMQ_RESP_SYSTEM_ERROR, NULL, 0, SLAVE_REMARK);
    return;
  }
  struct fy_group_config gc;
  char why[512];
  if (fy_group_config_from_json((const char *)c->body, c->body_len, &gc, why, sizeof why) < 0) {
    reply(conn, c, FY_RMQ_RESP_SYSTEM_ERROR, NULL, 0, "subscription group not updated: %s", why);
    return;
  }
  uint16_t st = fy__sub_group_update(b, &gc, why, sizeof why);
  if (st)
    reply(conn, c, FY_RMQ_RESP_SYSTEM_ERROR, NULL, 0, "%s", why);
  else
    reply(conn, c, FY_RMQ_RESP_SUCCESS, NULL, 0, NULL);
}

/* GET_ALL_SUBSCRIPTIONGROUP_CONFIG: the table as subscriptionGroup.json
 * holds it (a slave answers with the copy it holds). */
static void on_all_sub_groups(struct fy_broker *b, fy_conn *conn, const fy_rmq_cmd *c) {
  size_t len;
  char *body = fy_groups_to_json(b->groups, &len);
  if (!body) {
    reply(conn, c, FY_RMQ_RESP_SYSTEM_ERROR, NULL, 0, "out of memory");
    return;
  }
  reply(conn, c, FY_RMQ_RESP_SUCCESS, body, len, NULL);
}

/* DELETE_SUBSCRIPTIONGROUP: ext groupName, and removeOffset (4.9) or
 * cleanOffset (5.x) to forget the group's consumer offsets too. As in
 * RocketMQ, deleting a group that does not exist succeeds. */
static void on_delete_sub_group(struct fy_broker *b, fy_conn *conn, const fy_rmq_cmd *c) {
  if (b->cfg->role == FY_ROLE_SLAVE) {
    reply(conn, c, FY_RMQ_RESP_SYSTEM_ERROR, NULL, 0, SLAVE_REMARK);
    return;
  }
  const char *group = need_str(conn, c, "groupName");
  if (!group)
    return;
  bool remove_offset = false, clean_offset = false;
  fy_rmq_ext_bool(c, "removeOffset", &remove_offset);
  fy_rmq_ext_bool(c, "cleanOffset", &clean_offset);
  char why[512];
  uint16_t st = fy__sub_group_delete(b, group, remove_offset || clean_offset, why, sizeof why);
  if (st && st != FERRY__V1__STATUS__CONSUMER_GROUP_NOT_EXIST)
    reply(conn, c, FY_RMQ_RESP_SYSTEM_ERROR, NULL, 0, "%s", why);
  else
    reply(conn, c, FY_RMQ_RESP_SUCCESS, NULL, 0, NULL);
}

/* DELETE_TOPIC_IN_BROKER: ext topic. The topic's configuration, queues and
 * consumer offsets go; as in RocketMQ, an unknown topic succeeds. RocketMQ's
 * mqadmin deleteTopic sends this to every master, then
 * DELETE_TOPIC_IN_NAMESRV to the name servers. */
static void on_delete_topic(struct fy_broker *b, fy_conn *conn, const fy_rmq_cmd *c) {
  if (b->cfg->role == FY_ROLE_SLAVE) {
    reply(conn, c, FY_RMQ_RESP_SYSTEM_ERROR, NULL, 0, SLAVE_REMARK);
    return;
  }
  const char *topic = need_str(conn, c, "topic");
  if (!topic)
    return;
  char why[512];
  uint16_t st = fy__topic_delete(b, topic, why, sizeof why);
  if (st && st != FERRY__V1__STATUS__TOPIC_NOT_EXIST)
    reply(conn, c, FY_RMQ_RESP_SYSTEM_ERROR, NULL, 0, "%s", why);
  else
    reply(conn, c, FY_RMQ_RESP_SUCCESS, NULL, 0, NULL);
}

/* ---------------------------------------------------------------- queries */

static void reply_records(fy_conn *conn, const fy_rmq_cmd *c, fy_rmq_out *o,
                          struct fy_cl_slice *slices, size_t n) {
  size_t total = 0;
  struct fy_msg *m = calloc(n ? n : 1, sizeof *m);
  size_t k = 0;
  for (size_t i = 0; m && i < n; i++) {
    enum fy_record_kind kind;
    if (fy_record_decode(slices[i].data, slices[i].len, slices[i].offset, &kind, &m[k]) > 0 &&
        kind == FY_REC_MSG)
      total += fy_rmq_msg_size(&m[k++]);
  }
  uint8_t *body = m ? malloc(total ? total : 1) : NULL;
  size_t at = 0;
  for (size_t i = 0; body && i < k; i++)
    at += fy_rmq_msg_encode(&m[i], body + at);
  free(m);
  for (size_t i = 0; i < n; i++)
    fy_cl_slice_release(&slices[i]);
  if (!body) {
    fy_rmq_out_free(o);
    reply(conn, c, FY_RMQ_RESP_SYSTEM_ERROR, NULL, 0, "out of memory");
    return;
  }
  reply_out(conn, c, o, body, at);
}

static void on_view_by_id(struct fy_broker *b, fy_conn *conn, const fy_rmq_cmd *c) {
  int64_t offset;
  if (!need_i64(conn, c, "offset", &offset))
    return;
  struct fy_cl_slice slice;
  struct fy_msg m;
  if (offset < 0 || fy_store_read_msg(b->store, (uint64_t)offset, &slice, &m) != 0) {
    reply(conn, c, FY_RMQ_RESP_SYSTEM_ERROR, NULL, 0, "can not find message by the offset, %" PRId64,
          offset);
    return;
  }
  fy_rmq_out o;
  fy_rmq_out_response(&o, c, FY_RMQ_RESP_SUCCESS, NULL);
  reply_records(conn, c, &o, &slice, 1);
}

static void on_query_message(struct fy_broker *b, fy_conn *conn, const fy_rmq_cmd *c) {
  const char *topic = need_str(conn, c, "topic");
  const char *key = topic ? need_str(conn, c, "key") : NULL;
  if (!key)
    return;
  int64_t max = opt_i64(c, "maxNum", 32);
  int64_t begin = opt_i64(c, "beginTimestamp", 0);
  int64_t end = opt_i64(c, "endTimestamp", INT64_MAX);
  struct fy_cl_slice slices[QUERY_MAX];
  size_t n = fy_store_query_key(b->store, topic, key, begin, end, slices,
                                max <= 0 || max > QUERY_MAX ? QUERY_MAX : (size_t)max);
  if (n == 0) { /* RocketMQ's code either way; the text says why */
    reply(conn, c, FY_RMQ_RESP_QUERY_NOT_FOUND, NULL, 0,
          b->settings.store.index_enable
              ? "can not find message, maybe time range not correct"
              : "can not find message: this broker keeps no key index (messageIndexEnable=false)");
    return;
  }
  struct fy_store_stats st;
  fy_store_stats(b->store, &st);
  fy_rmq_out o;
  fy_rmq_out_response(&o, c, FY_RMQ_RESP_SUCCESS, NULL);
  fy_rmq_out_i64(&o, "indexLastUpdateTimestamp", fy__now_ms());
  fy_rmq_out_i64(&o, "indexLastUpdatePhyoffset", (int64_t)st.dispatched);
  reply_records(conn, c, &o, slices, n);
}

/* ---------------------------------------------------------------- admin */

static void on_runtime_info(struct fy_broker *b, fy_conn *conn, const fy_rmq_cmd *c) {
  struct fy_store_stats st;
  fy_store_stats(b->store, &st);
  char buf[32];
  json_t *t = json_object();
#define KV(k, fmt, v)                                                                          \
  do {                                                                                         \
    snprintf(buf, sizeof buf, fmt, v);                                                         \
    json_object_set_new(t, k, json_string(buf));                                               \
  } while (0)
  json_object_set_new(t, "brokerVersionDesc", json_string("Ferry (RocketMQ V4_9_4 protocol)"));
  KV("brokerVersion", "%d", FY_RMQ_VERSION);
  KV("msgPutTotalTodayNow", "%" PRIu64, b->send_msgs);
  KV("msgGetTotalTodayNow", "%" PRIu64, b->pulled_msgs);
  KV("commitLogMinOffset", "%" PRIu64, st.cl_min);
  KV("commitLogMaxOffset", "%" PRIu64, st.cl_end);
  KV("dispatchBehindBytes", "%" PRIu64, st.cl_written - st.dispatched);
  KV("commitLogDiskRatio", "%.2f", st.disk_used_pct < 0 ? 0.0 : st.disk_used_pct / 100.0);
  KV("runtime", "%" PRIu64 " ms", (uint64_t)fy__now_ms() - b->started_ms);
  if (b->ha_master) {
    struct fy_ha_slave_status hs[8];
    KV("haConnections", "%zu", fy_ha_master_status(b->ha_master, hs, 8));
  }
#undef KV
  reply_json(conn, c, json_pack("{s:o}", "table", t));
}

/* A growing text buffer for bodies built by hand. */
struct sbuf {
  char *buf;
  size_t len, cap;
  bool failed;
};

static void sbuf_printf(struct sbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sbuf_printf(struct sbuf *sb, const char *fmt, ...) {
  if (sb->failed)
    return;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0 || sb->len + (size_t)n + 1 > (64u << 20)) {
    sb->failed = true;
    return;
  }
  if (sb->len + (size_t)n + 1 > sb->cap) {
    size_t cap = (sb->len + (size_t)n + 1) * 2;
    char *p = realloc(sb->buf, cap);
    if (!p) {
      sb->failed = true;
      return;
    }
    sb->buf = p;
    sb->cap = cap;
  }
  va_start(ap, fmt);
  vsnprintf(sb->buf + sb->len, sb->cap - sb->len, fmt, ap);
  va_end(ap);
  sb->len += (size_t)n;
}

/* GET_CONSUME_STATS: the group's offsets and the queues' ends. The body is
 * fastjson's shape for a map keyed by MessageQueue (an object as a key),
 * which RocketMQ's admin tools parse; it is not strict JSON. */
static void on_consume_stats(struct fy_broker *b, fy_conn *conn, const fy_rmq_cmd *c) {
  const char *group = need_str(conn, c, "consumerGroup");
  if (!group)
    return;
  const char *topic = fy_rmq_ext(c, "topic");
  struct fy_offset_item *items = NULL;
  size_t n = 0;
  int err = fy_offsets_list_group(b->offsets, group, &items, &n);
  if (err && err != -FY_ENOT_FOUND) {
    reply(conn, c, FY_RMQ_RESP_SYSTEM_ERROR, NULL, 0, "%s", fy_strerror(err));
    return;
  }
  struct sbuf out = {0};
  json_t *bn = json_string(b->cfg->broker_name);
  char *qb = json_dumps(bn, JSON_ENCODE_ANY);
  json_decref(bn);
  sbuf_printf(&out, "{\"consumeTps\":0.0,\"offsetTable\":{");
  bool first = true;
  for (size_t i = 0; qb && i < n; i++) {
    if (topic && *topic && strcmp(topic, items[i].topic) != 0)
      continue;
    json_t *name = json_string(items[i].topic);
    char *qt = json_dumps(name, JSON_ENCODE_ANY);
    json_decref(name);
    if (qt)
      sbuf_printf(&out,
                  "%s{\"brokerName\":%s,\"queueId\":%u,\"topic\":%s}:{\"brokerOffset\":%" PRIu64
                  ",\"consumerOffset\":%" PRId64 ",\"lastTimestamp\":%" PRId64 "}",
                  first ? "" : ",", qb, items[i].queue_id, qt,
                  fy_store_max_offset(b->store, items[i].topic, items[i].queue_id),
                  items[i].offset, items[i].updated_ms);
    free(qt);
    first = false;
  }
  sbuf_printf(&out, "}}");
  free(qb);
  free(items);
  if (out.failed || !qb) {
    free(out.buf);
    reply(conn, c, FY_RMQ_RESP_SYSTEM_ERROR, NULL, 0, "out of memory");
    return;
  }
  reply(conn, c, FY_RMQ_RESP_SUCCESS, out.buf, out.len, NULL);
}

/* ---------------------------------------------------------------- dispatch */

static void handle(struct fy_broker *b, struct bconn *bc, const fy_rmq_cmd *c) {
  fy_conn *conn = bc->conn;
  if (b->stopping) {
    reply(conn, c, FY_RMQ_RESP_SERVICE_NOT_AVAILABLE, NULL, 0, "broker %s is shutting down",
          b->cfg->broker_name);
    return;
  }
  switch (c->code) {
  case FY_RMQ_REQ_SEND_MESSAGE:
  case FY_RMQ_REQ_SEND_MESSAGE_V2:
  case FY_RMQ_REQ_SEND_BATCH_MESSAGE: on_send(b, bc, c); break;
  case FY_RMQ_REQ_PULL_MESSAGE: on_pull(b, bc, c); break;
  case FY_RMQ_REQ_CONSUMER_SEND_MSG_BACK: on_send_back(b, bc, c); break;
  case FY_RMQ_REQ_HEART_BEAT: on_heartbeat(b, conn, c); break;
  case FY_RMQ_REQ_UNREGISTER_CLIENT: on_unregister(b, conn, c); break;
  case FY_RMQ_REQ_GET_CONSUMER_LIST_BY_GROUP: on_consumer_list(b, conn, c); break;
  case FY_RMQ_REQ_QUERY_CONSUMER_OFFSET: on_query_consumer_offset(b, conn, c); break;
  case FY_RMQ_REQ_UPDATE_CONSUMER_OFFSET: on_update_consumer_offset(b, conn, c); break;
  case FY_RMQ_REQ_GET_MAX_OFFSET:
  case FY_RMQ_REQ_GET_MIN_OFFSET:
  case FY_RMQ_REQ_SEARCH_OFFSET_BY_TIMESTAMP:
  case FY_RMQ_REQ_GET_EARLIEST_MSG_STORETIME: on_queue_offsets(b, conn, c); break;
  case FY_RMQ_REQ_LOCK_BATCH_MQ: on_lock(b, conn, c, true); break;
  case FY_RMQ_REQ_UNLOCK_BATCH_MQ: on_lock(b, conn, c, false); break;
  case FY_RMQ_REQ_UPDATE_AND_CREATE_TOPIC: on_create_topic(b, conn, c); break;
  case FY_RMQ_REQ_GET_ALL_TOPIC_CONFIG: on_all_topics(b, conn, c); break;
  case FY_RMQ_REQ_UPDATE_AND_CREATE_SUBSCRIPTIONGROUP: on_update_sub_group(b, conn, c); break;
  case FY_RMQ_REQ_GET_ALL_SUBSCRIPTIONGROUP_CONFIG: on_all_sub_groups(b, conn, c); break;
  case FY_RMQ_REQ_DELETE_SUBSCRIPTIONGROUP: on_delete_sub_group(b, conn, c); break;
  case FY_RMQ_REQ_DELETE_TOPIC_IN_BROKER: on_delete_topic(b, conn, c); break;
  case FY_RMQ_REQ_VIEW_MESSAGE_BY_ID: on_view_by_id(b, conn, c); break;
  case FY_RMQ_REQ_QUERY_MESSAGE: on_query_message(b, conn, c); break;
  case FY_RMQ_REQ_GET_BROKER_RUNTIME_INFO: on_runtime_info(b, conn, c); break;
  case FY_RMQ_REQ_GET_CONSUME_STATS: on_consume_stats(b, conn, c); break;
  default:
    reply(conn, c, FY_RMQ_RESP_REQUEST_CODE_NOT_SUPPORTED, NULL, 0,
          " request type %d not supported", c->code);
    break;
  }
}

size_t fy__rmq_on_bytes(fy_conn *conn, const uint8_t *bytes, size_t len) {
  struct bconn *bc = fy_conn_data(conn);
  if (!bc)
    return len;
  struct fy_broker *b = bc->b;
  bc->proto = FY_PROTO_RMQ;
  size_t used = 0;
  for (unsigned i = 0; i < FRAMES_PER_CALL && used < len; i++) {
    fy_rmq_cmd c;
    ssize_t n = fy_rmq_parse(bytes + used, len - used, b->cfg->max_frame_bytes, &c);
    if (n == 0)
      break;
    if (n < 0) {
      fy_warn(MOD, "%s: closing: bad RocketMQ frame: %s", fy_conn_peer(conn), fy_strerror((int)n));
      fy_conn_close(conn, (int)n);
      return len;
    }
    used += (size_t)n;
    bc->rmq_serialize = c.serialize;
    if (!(c.flag & FY_RMQ_FLAG_RESPONSE)) /* answers to our notifications need nothing */
      handle(b, bc, &c);
    fy_rmq_cmd_free(&c);
    if (!fy_conn_is_open(conn))
      return len;
  }
  return used;
}
