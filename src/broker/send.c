/*
 * SEND: validate the request, turn each message into a record (properties
 * TAGS, KEYS, UNIQ_KEY and the user's), put them into the store as one
 * atomic batch, and answer when the store says they are durable under the
 * flush rule. The reply waits in a pending_send on the connection; if the
 * connection closes first the entry is orphaned and dropped when the store
 * answers.
 *
 * Waits and their answers (RocketMQ's): under SYNC_FLUSH the store answers
 * once the group commit's fdatasync covers the records, or after
 * syncFlushTimeout with "stored, not yet durable" (-FY_ETIMEOUT; the store
 * never answers the same send twice). Then, on a SYNC_MASTER, the send waits
 * for a slave (slaveTimeout, started when the flush wait ends). The answer is
 * the slave's when that wait fails (FLUSH_SLAVE_TIMEOUT, SLAVE_NOT_AVAILABLE),
 * else FLUSH_DISK_TIMEOUT if the flush wait timed out, else OK.
 */
#include "broker/broker_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"

#define MOD "send"
#define SEND_BATCH_MAX 1024

struct pending_send {
  struct bconn *bc; /* NULL once the connection has gone */
  struct pending_send *prev, *next;
  struct fy_broker *b;
  struct fy_reqref ref;
  uint32_t queue_id;
  uint64_t end; /* commit-log offset after the last record */
  bool flush_timed_out; /* stored, but not flushed within syncFlushTimeout */
  size_t n;
  uint64_t arrived_ns; /* fy_clock_mono_ns() when the send reached the store path */
  struct fy_send_result results[];
};

/* Answered single sends kept for the next ones: with many sends in flight
 * the allocator's per-thread cache overflows, and a calloc and a free per
 * send were about 1 % of the broker's CPU at 340k sends/s. Off under
 * AddressSanitizer, so it still sees a use after an answer. */
#define PENDING_CACHE_MAX 1024u
#if defined(__SANITIZE_ADDRESS__)
#define PENDING_CACHE_ON 0
#else
#define PENDING_CACHE_ON 1
#endif

static struct pending_send *pending_new(struct fy_broker *b, size_t n) {
  struct pending_send *p = b->pending_cache;
  if (n == 1 && p) {
    b->pending_cache = p->next;
    b->pending_cached--;
    memset(p, 0, sizeof *p + sizeof p->results[0]);
    return p;
  }
  return calloc(1, sizeof *p + n * sizeof p->results[0]);
}

static void pending_free(struct pending_send *p) {
  struct fy_broker *b = p->b;
  if (PENDING_CACHE_ON && p->n == 1 && b->pending_cached < PENDING_CACHE_MAX) {
    p->next = b->pending_cache;
    b->pending_cache = p;
    b->pending_cached++;
    return;
  }
  free(p);
}

void fy__send_cache_free(struct fy_broker *b) {
  while (b->pending_cache) {
    struct pending_send *p = b->pending_cache;
    b->pending_cache = p->next;
    free(p);
  }
  b->pending_cached = 0;
}

static const char hexdig[] = "0123456789ABCDEF";

static void hex(const uint8_t *in, size_t n, char *out) {
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = hexdig[in[i] >> 4];
    out[2 * i + 1] = hexdig[in[i] & 15];
  }
  out[2 * n] = '\0';
}

/* RocketMQ's offset message id: store IPv4, port and commit-log offset, big-endian, in hex. */
void fy__offset_msg_id(const struct fy_broker *b, uint64_t phys, char out[33]) {
  uint8_t raw[16];
  memcpy(raw, b->ip4, 4);
  uint32_t port = (uint32_t)fy_server_port(b->server);
  for (int i = 0; i < 4; i++)
    raw[4 + i] = (uint8_t)(port >> (24 - 8 * i));
  for (int i = 0; i < 8; i++)
    raw[8 + i] = (uint8_t)(phys >> (56 - 8 * i));
  hex(raw, 16, out);
}

/* A unique message id for messages sent without one (RocketMQ's shape:
 * IP, pid, time and a counter, 16 bytes in hex). */
void fy__make_uniq_key(struct fy_broker *b, char out[33]) {
  uint8_t raw[16];
  memcpy(raw, b->ip4, 4);
  uint32_t pid = b->pid;
  raw[4] = (uint8_t)(pid >> 8);
  raw[5] = (uint8_t)pid;
  int64_t now = fy__now_ms();
  for (int i = 0; i < 6; i++)
    raw[6 + i] = (uint8_t)((uint64_t)now >> (40 - 8 * i));
  uint32_t c = ++b->uniq_counter;
  for (int i = 0; i < 4; i++)
    raw[12 + i] = (uint8_t)(c >> (24 - 8 * i));
  hex(raw, 16, out);
}

static void unlink_pending(struct pending_send *p) {
  if (!p->bc)
    return;
  if (p->prev)
    p->prev->next = p->next;
  else
    p->bc->sends = p->next;
  if (p->next)
    p->next->prev = p->prev;
  p->bc = NULL;
}

void fy__sends_conn_closed(struct bconn *bc) {
  while (bc->sends)
    unlink_pending(bc->sends);
}

static uint16_t status_of_store_error(int err) {
  switch (err) {
  case -FY_EBUSY: return FERRY__V1__STATUS__SYSTEM_BUSY;
  case -FY_ETOO_BIG:
  case -EINVAL: return FERRY__V1__STATUS__MESSAGE_ILLEGAL;
  default: return FERRY__V1__STATUS__SERVICE_NOT_AVAILABLE;
  }
}

static const char *text_of_store_error(int err) {
  switch (err) {
  case -FY_EBUSY: return "broker busy: commit-log write buffers or pending sends are full; retry";
  case -FY_ETOO_BIG: return "message larger than maxMessageSize";
  case -FY_EDISK_FULL: return "disk full: usage at or above diskSpaceWarningLevelRatio; writes refused";
  case -FY_ESTORE_FAILED: return "store failed after a disk error; writes refused until restart";
  case -FY_ESHUTDOWN: return "broker is shutting down";
  default: return fy_strerror(err);
  }
}

#define REPLY_STACK_RESULTS 16 /* results of a reply built on the stack, at most */
#define SEND_SCRATCH_KEEP ((size_t)1 << 20) /* a larger scratch block is freed after use */

int fy__send_scratch(struct fy_broker *b, size_t n, size_t props_len, struct fy_msg **msgs,
                     char (**ids)[33], char **props) {
  size_t msgs_len = n * sizeof **msgs, ids_len = n * sizeof **ids;
  size_t len = msgs_len + ids_len + props_len;
  if (len > b->send_scratch_cap) {
    free(b->send_scratch);
    b->send_scratch_cap = 0;
    b->send_scratch = malloc(len);
    if (!b->send_scratch)
      return -ENOMEM;
    b->send_scratch_cap = len;
  }
  uint8_t *s = b->send_scratch; /* malloc'd: aligned for any type */
  *msgs = memset(s, 0, msgs_len);
  *ids = memset(s + msgs_len, 0, ids_len);
  *props = (char *)s + msgs_len + ids_len;
  return 0;
}

void fy__send_scratch_done(struct fy_broker *b) {
  if (b->send_scratch_cap > SEND_SCRATCH_KEEP) {
    free(b->send_scratch);
    b->send_scratch = NULL;
    b->send_scratch_cap = 0;
  }
}

/* Answers a stored send with status (OK, or one of the "stored on the
 * master only" statuses) and frees it. */
static void reply_stored(struct pending_send *p, uint16_t status) {
  struct bconn *bc = p->bc;
  struct fy_broker *b = p->b;
  if (b->send_lat)
    fy__send_latency_record(b->send_lat, p->arrived_ns, fy_clock_mono_ns());
  unlink_pending(p);
  if (bc && p->ref.proto == FY_PROTO_RMQ) {
    fy__rmq_reply_send(b, bc->conn, &p->ref, status, p->queue_id, p->results, p->n);
  } else if (bc) {
    /* Single sends and small batches answer from the stack: two callocs
     * per reply were a visible share of the broker's CPU at 300k sends/s. */
    Ferry__V1__SendResult rs_small[REPLY_STACK_RESULTS], *rp_small[REPLY_STACK_RESULTS];
    bool small = p->n <= REPLY_STACK_RESULTS;
    Ferry__V1__SendResult *rs = small ? rs_small : calloc(p->n, sizeof *rs);
    Ferry__V1__SendResult **rp = small ? rp_small : calloc(p->n, sizeof *rp);
    if (!rs || !rp) {
      fy_conn_reply_error(bc->conn, p->ref.id, FERRY__V1__OP__OP_SEND,
                          FERRY__V1__STATUS__SYSTEM_ERROR, "out of memory after storing");
    } else {
      for (size_t i = 0; i < p->n; i++) {
        ferry__v1__send_result__init(&rs[i]);
        rs[i].msg_id = p->results[i].msg_id;
        rs[i].offset_msg_id = p->results[i].offset_msg_id;
        rs[i].queue_offset = p->results[i].queue_offset;
        rp[i] = &rs[i];
      }
      Ferry__V1__SendResponse resp = FERRY__V1__SEND_RESPONSE__INIT;
      resp.broker_name = (char *)b->cfg->broker_name;
      resp.queue_id = p->queue_id;
      resp.results = rp;
      resp.n_results = p->n;
      fy_conn_reply(bc->conn, p->ref.id, FERRY__V1__OP__OP_SEND, status, &resp.base, NULL, 0,
                    NULL, NULL);
    }
    if (!small) {
      free(rs);
      free(rp);
    }
  }
  pending_free(p);
}

/* The answer for a stored send whose slave wait (if any) succeeded. */
static uint16_t status_stored(const struct pending_send *p) {
  return p->flush_timed_out ? FERRY__V1__STATUS__FLUSH_DISK_TIMEOUT : FERRY__V1__STATUS__OK;
}

static void on_replicated(void *arg, int status) {
  struct pending_send *p = arg;
  reply_stored(p, status == 0 ? status_stored(p)
                  : status == -FY_ETIMEOUT ? FERRY__V1__STATUS__FLUSH_SLAVE_TIMEOUT
                                           : FERRY__V1__STATUS__SLAVE_NOT_AVAILABLE);
}

#define FLUSH_TIMEOUT_LOG_MS 10000 /* at most one warning per this long */

static void note_flush_timeout(struct fy_broker *b) {
  b->send_flush_timeouts++;
  int64_t now = fy__now_ms();
  if (b->flush_timeout_logged_ms && now - b->flush_timeout_logged_ms < FLUSH_TIMEOUT_LOG_MS)
    return;
  b->flush_timeout_logged_ms = now;
  fy_warn(MOD,
          "fdatasync slower than syncFlushTimeout (%u ms): sends answered FLUSH_DISK_TIMEOUT "
          "(stored, durability unconfirmed), %" PRIu64 " so far",
          b->cfg->sync_flush_timeout_ms, b->send_flush_timeouts);
}

static void on_stored(void *arg, int status, uint64_t phys, uint64_t size) {
  struct pending_send *p = arg;
  struct fy_broker *b = p->b;
  (void)phys;
  (void)size;
  if (status == -FY_ETIMEOUT) { /* SYNC_FLUSH: in the log, the fdatasync is late */
    p->flush_timed_out = true;
    note_flush_timeout(b);
    status = 0;
  }
  if (status) {
    b->send_failures++;
    if (p->bc)
      fy__reply_err(p->bc->conn, &p->ref, status_of_store_error(status), "not stored: %s",
                    text_of_store_error(status));
    unlink_pending(p);
    pending_free(p);
    return;
  }
  if (!fy__is_sync_master(b)) {
    reply_stored(p, status_stored(p));
    return;
  }
  /* SYNC_MASTER: SEND_OK only once a slave holds the records. */
  if (!fy_ha_master_slave_ok(b->ha_master, p->end)) {
    reply_stored(p, FERRY__V1__STATUS__SLAVE_NOT_AVAILABLE);
    return;
  }
  int rc = fy_ha_master_wait(b->ha_master, p->end, b->cfg->slave_timeout_ms, on_replicated, p);
  if (rc == 1)
    reply_stored(p, status_stored(p));
  else if (rc != 0)
    reply_stored(p, FERRY__V1__STATUS__SLAVE_NOT_AVAILABLE);
}

void fy__parse_host(const char *peer, struct fy_host *h) {
  memset(h, 0, sizeof *h);
  char buf[80];
  snprintf(buf, sizeof buf, "%s", peer);
  char *colon = strrchr(buf, ':');
  if (!colon)
    return;
  *colon = '\0';
  uint32_t port = (uint32_t)strtoul(colon + 1, NULL, 10);
  size_t len = strlen(buf);
  if (buf[0] == '[' && len > 2 && buf[len - 1] == ']') { /* "[v6]:port" */
    buf[len - 1] = '\0';
    struct sockaddr_in6 sa6;
    if (uv_ip6_addr(buf + 1, 0, &sa6) != 0)
      return;
    memcpy(h->ip, &sa6.sin6_addr, 16);
    h->v6 = true;
  } else {
    struct sockaddr_in sa;
    if (uv_ip4_addr(buf, 0, &sa) != 0)
      return;
    memcpy(h->ip, &sa.sin_addr, 4);
  }
  h->port = port;
}

void fy__store_host(const struct fy_broker *b, struct fy_host *h) {
  memset(h, 0, sizeof *h);
  memcpy(h->ip, b->ip4, 4);
  h->port = (uint32_t)fy_server_port(b->server);
}

uint16_t fy__send_check_topic(struct fy_broker *b, const char *topic, int32_t queue_id_in,
                              uint32_t default_queues, uint32_t *queue_id, char *why,
                              size_t whylen) {
  const char *reason = NULL;
  if (b->cfg->role == FY_ROLE_SLAVE) {
    snprintf(why, whylen, "broker %s id %" PRIu64 " is a slave and does not accept sends",
             b->cfg->broker_name, b->cfg->broker_id);
    return FERRY__V1__STATUS__SERVICE_NOT_AVAILABLE;
  }
  if (fy_topic_name_check(topic, &reason)) {
    snprintf(why, whylen, "topic '%s': %s", topic, reason ? reason : "invalid name");
    return FERRY__V1__STATUS__MESSAGE_ILLEGAL;
  }
  struct fy_topic_config tc;
  if (fy_topics_get(b->topics, topic, &tc) != 0) {
    bool created = false;
    uint32_t q = default_queues ? default_queues : b->cfg->default_topic_queues;
    if (q > b->cfg->default_topic_queues)
      q = b->cfg->default_topic_queues;
    if (!b->cfg->auto_create_topic ||
        fy_topics_auto_create(b->topics, topic, q, &tc, &created, &reason) != 0) {
      snprintf(why, whylen, "topic '%s' does not exist on broker %s%s", topic,
               b->cfg->broker_name,
               b->cfg->auto_create_topic ? ""
               : " (autoCreateTopicEnable=false: create it with mqadmin updateTopic)");
      return FERRY__V1__STATUS__TOPIC_NOT_EXIST;
    }
    if (created) {
      fy_info(MOD, "auto-created topic %s with %u queues", tc.name, tc.write_queues);
      fy__broker_register_all(b);
    }
  }
  if (!(tc.perm & FY_PERM_WRITE)) {
    snprintf(why, whylen, "topic '%s' is not writable on broker %s", topic, b->cfg->broker_name);
    return FERRY__V1__STATUS__NO_PERMISSION;
  }
  if (!(b->cfg->broker_permission & FY_PERM_WRITE)) {
    snprintf(why, whylen, "broker %s is not writable (brokerPermission=%u)", b->cfg->broker_name,
             b->cfg->broker_permission);
    return FERRY__V1__STATUS__NO_PERMISSION;
  }
  if (queue_id_in < 0) {
    *queue_id = b->rr++ % tc.write_queues;
  } else if ((uint32_t)queue_id_in >= tc.write_queues) {
    snprintf(why, whylen, "queue %d of topic '%s' does not exist (write queues: %u)", queue_id_in,
             topic, tc.write_queues);
    return FERRY__V1__STATUS__BAD_REQUEST;
  } else {
    *queue_id = (uint32_t)queue_id_in;
  }
  return 0;
}

uint16_t fy__send_put(struct fy_broker *b, struct bconn *bc, const struct fy_reqref *ref,
                      struct fy_msg *msgs, size_t n, char (*msg_ids)[33], char *why,
                      size_t whylen) {
  for (size_t i = 0; i < n; i++) {
    uint64_t size = (uint64_t)msgs[i].body_len + msgs[i].props_len;
    if (size > b->settings.store.max_message_size) {
      snprintf(why, whylen,
               "message %zu is %" PRIu64 " bytes (body and properties); maxMessageSize is %u", i,
               size, b->settings.store.max_message_size);
      return FERRY__V1__STATUS__MESSAGE_ILLEGAL;
    }
  }
  struct pending_send *p = pending_new(b, n);
  if (!p) {
    snprintf(why, whylen, "out of memory");
    return FERRY__V1__STATUS__SYSTEM_BUSY;
  }
  p->b = b;
  p->arrived_ns = fy_clock_mono_ns();
  p->ref = *ref;
  p->queue_id = msgs[0].queue_id;
  p->n = n;
  char *scratch = NULL;
  const char *reason = NULL;
  if (fy__schedule_rewrite(b, msgs, n, &scratch, &reason) != 0) {
    pending_free(p);
    free(scratch);
    snprintf(why, whylen, "%s", reason);
    return FERRY__V1__STATUS__MESSAGE_ILLEGAL;
  }
  int err = fy_store_put_timed(b->store, msgs, n, b->cfg->sync_flush_timeout_ms, on_stored, p);
  free(scratch);
  if (err) {
    pending_free(p);
    if (err == -FY_EBUSY)
      b->send_busy++;
    b->send_failures++;
    snprintf(why, whylen, "not stored: %s", text_of_store_error(err));
    return status_of_store_error(err);
  }
  for (size_t i = 0; i < n; i++) {
    memcpy(p->results[i].msg_id, msg_ids[i], 33);
    p->results[i].queue_offset = msgs[i].queue_offset;
    fy__offset_msg_id(b, msgs[i].phys_offset, p->results[i].offset_msg_id);
  }
  p->end = msgs[n - 1].phys_offset + msgs[n - 1].total_size;
  b->send_msgs += n;
  p->bc = bc;
  p->next = bc->sends;
  if (bc->sends)
    bc->sends->prev = p;
  bc->sends = p;
  return 0;
}

/* Upper bound of one message's encoded properties. */
static size_t props_bound(const Ferry__V1__SendMessage *sm) {
  size_t n = 16 + strlen(sm->tags) + 16 + strlen(sm->keys) + 16 + 32 + strlen(sm->uniq_key);
  for (size_t i = 0; i < sm->n_properties; i++)
    n += strlen(sm->properties[i]->key) + strlen(sm->properties[i]->value) + 2;
  return n;
}

/* Builds one message's properties into buf. Returns its length, or -1 with
 * a reason when a property is invalid or too long. */
static int build_props(struct fy_broker *b, const Ferry__V1__SendMessage *sm, char *buf,
                       size_t cap, char uniq[33], const char **why) {
  size_t len = 0;
  int rc = 0;
  if (sm->tags && *sm->tags)
    rc |= fy_props_add(buf, cap, &len, FY_PROP_TAGS, sm->tags, strlen(sm->tags));
  if (sm->keys && *sm->keys)
    rc |= fy_props_add(buf, cap, &len, FY_PROP_KEYS, sm->keys, strlen(sm->keys));
  if (sm->uniq_key && *sm->uniq_key) {
    size_t ulen = strlen(sm->uniq_key);
    size_t shown = ulen < 32 ? ulen : 32; /* the message id answered: at most 32 characters */
    memcpy(uniq, sm->uniq_key, shown);
    uniq[shown] = '\0';
    rc |= fy_props_add(buf, cap, &len, FY_PROP_UNIQ_KEY, sm->uniq_key, ulen);
  } else {
    fy__make_uniq_key(b, uniq);
    rc |= fy_props_add(buf, cap, &len, FY_PROP_UNIQ_KEY, uniq, 32);
  }
  for (size_t i = 0; i < sm->n_properties && rc == 0; i++) {
    const Ferry__V1__KeyValue *kv = sm->properties[i];
    if (!kv->key || !*kv->key) {
      *why = "empty property name";
      return -1;
    }
    rc |= fy_props_add(buf, cap, &len, kv->key, kv->value, strlen(kv->value));
  }
  if (rc) {
    *why = rc == -ENOSPC || len > FY_PROPS_MAX ? "properties longer than 32767 bytes"
                                               : "property names and values must not contain "
                                                 "the bytes 0x01 or 0x02";
    return -1;
  }
  return (int)len;
}

void fy__handle_send(struct fy_broker *b, struct bconn *bc, const fy_frame *f) {
  fy_conn *conn = bc->conn;
  Ferry__V1__SendRequest *req;
  /* A batch of tiny messages unpacks to ~40x its wire size (one struct per
   * message), so the budget allows for SEND_BATCH_MAX of them on top. */
  int rc = fy_pb_unpack_in(&b->send_arena, &ferry__v1__send_request__descriptor, f->header,
                           f->header_len, fy_pb_alloc_limit(f->header_len) + SEND_BATCH_MAX * 512,
                           (ProtobufCMessage **)&req);
  if (rc == -ENOMEM) {
    fy_conn_reply_error(conn, f->request_id, f->op, FERRY__V1__STATUS__SYSTEM_BUSY, "out of memory");
    return;
  }
  if (rc) {
    fy_pb_arena_reset(&b->send_arena);
    fy__reply_decode_error(conn, f);
    return;
  }
  b->sends++;
  struct fy_msg *msgs = NULL;
  char *props = NULL;
  char (*ids)[33] = NULL;
  size_t n = req->n_messages;
  uint32_t queue_id;
  char why[512];
  uint16_t st;
  if (n == 0 || n > SEND_BATCH_MAX) {
    fy_conn_reply_error(conn, f->request_id, f->op, FERRY__V1__STATUS__BAD_REQUEST,
                        "a send carries 1 to %d messages, not %zu", SEND_BATCH_MAX, n);
    goto out;
  }
  uint64_t body_total = 0;
  for (size_t i = 0; i < n; i++)
    body_total += req->messages[i]->body_len;
  if (body_total != f->raw_len) {
    fy_conn_reply_error(conn, f->request_id, f->op, FERRY__V1__STATUS__BAD_REQUEST,
                        "message body lengths add up to %" PRIu64 " bytes but %u were sent",
                        body_total, f->raw_len);
    goto out;
  }
  st = fy__send_check_topic(b, req->topic, req->queue_id, req->default_topic_queues, &queue_id,
                            why, sizeof why);
  if (st) {
    fy_conn_reply_error(conn, f->request_id, f->op, st, "%s", why);
    goto out;
  }

  size_t props_total = 0;
  for (size_t i = 0; i < n; i++)
    props_total += props_bound(req->messages[i]);
  if (fy__send_scratch(b, n, props_total, &msgs, &ids, &props) != 0) {
    fy_conn_reply_error(conn, f->request_id, f->op, FERRY__V1__STATUS__SYSTEM_BUSY, "out of memory");
    goto out;
  }
  struct fy_host born = bc->born, store_host;
  fy__store_host(b, &store_host);
  const uint8_t *body = f->raw;
  size_t props_used = 0;
  uint16_t topic_len = (uint16_t)strlen(req->topic);
  for (size_t i = 0; i < n; i++) {
    const Ferry__V1__SendMessage *sm = req->messages[i];
    const char *reason = NULL;
    size_t cap = props_bound(sm);
    char *pb = props + props_used;
    int plen = build_props(b, sm, pb, cap < FY_PROPS_MAX ? cap : FY_PROPS_MAX, ids[i], &reason);
    props_used += cap;
    if (plen < 0) {
      fy_conn_reply_error(conn, f->request_id, f->op, FERRY__V1__STATUS__MESSAGE_ILLEGAL,
                          "message %zu: %s", i, reason);
      goto out;
    }
    struct fy_msg *m = &msgs[i];
    m->topic = req->topic;
    m->topic_len = topic_len;
    m->queue_id = queue_id;
    m->flag = sm->flag;
    m->sys_flag = sm->sys_flag & FY_SYSFLAG_COMPRESSED;
    m->born_ts_ms = sm->born_timestamp ? sm->born_timestamp : fy__now_ms();
    m->born_host = born;
    m->store_host = store_host;
    m->reconsume_times = sm->reconsume_times;
    m->body = body;
    m->body_len = sm->body_len;
    m->props = pb;
    m->props_len = (uint16_t)plen;
    body += sm->body_len;
  }
  struct fy_reqref ref = {.proto = FY_PROTO_NATIVE, .op = f->op, .id = f->request_id};
  st = fy__send_put(b, bc, &ref, msgs, n, ids, why, sizeof why);
  if (st)
    fy_conn_reply_error(conn, f->request_id, f->op, st, "%s", why);
out:
  fy__send_scratch_done(b);
  fy_pb_arena_reset(&b->send_arena);
}

/* ------------------------------------------------------------ send latency */

const uint64_t fy__send_lat_band_us[FY_SEND_LAT_BANDS - 1] = {
    100, 200, 500, 1000, 2000, 5000, 10000, 50000, 100000, 500000, 1000000};

#define MINUTE_MS 60000u

/* Moves the minute window on to the minute that holds now_ms. */
static void lat_rotate(struct fy_send_latency *l, uint64_t now_ms) {
  uint64_t age = now_ms - l->minute_start_ms;
  if (age < MINUTE_MS)
    return;
  if (age < 2 * MINUTE_MS)
    l->last_minute = l->minute;
  else
    fy_hist_init(&l->last_minute); /* a whole minute passed without a send */
  fy_hist_init(&l->minute);
  l->minute_start_ms = now_ms - age % MINUTE_MS;
}

void fy__send_latency_init(struct fy_send_latency *l, uint64_t now_ns) {
  memset(l->bands, 0, sizeof l->bands);
  fy_hist_init(&l->total);
  fy_hist_init(&l->minute);
  fy_hist_init(&l->last_minute);
  l->minute_start_ms = now_ns / 1000000u;
}

void fy__send_latency_record(struct fy_send_latency *l, uint64_t arrived_ns, uint64_t now_ns) {
  uint64_t us = now_ns > arrived_ns ? (now_ns - arrived_ns) / 1000u : 0;
  lat_rotate(l, now_ns / 1000000u);
  fy_hist_record(&l->total, us);
  fy_hist_record(&l->minute, us);
  size_t band = 0;
  while (band < FY_SEND_LAT_BANDS - 1 && us > fy__send_lat_band_us[band])
    band++;
  l->bands[band]++;
}

void fy__send_latency_summary(struct fy_send_latency *l, bool minute, uint64_t now_ns, char *out,
                              size_t outlen) {
  lat_rotate(l, now_ns / 1000000u);
  const struct fy_hist *h = minute ? &l->last_minute : &l->total;
  snprintf(out, outlen,
           "count=%" PRIu64 " p50=%" PRIu64 " p99=%" PRIu64 " p999=%" PRIu64 " max=%" PRIu64,
           h->count, fy_hist_percentile(h, 50), fy_hist_percentile(h, 99),
           fy_hist_percentile(h, 99.9), h->count ? h->max : 0);
}

static int band_label(char *out, size_t outlen, const char *op, uint64_t us) {
  if (us >= 1000000u && us % 1000000u == 0)
    return snprintf(out, outlen, "%s%" PRIu64 "s", op, us / 1000000u);
  if (us >= 1000u && us % 1000u == 0)
    return snprintf(out, outlen, "%s%" PRIu64 "ms", op, us / 1000u);
  return snprintf(out, outlen, "%s%" PRIu64 "us", op, us);
}

void fy__send_latency_bands(const struct fy_send_latency *l, char *out, size_t outlen) {
  size_t len = 0;
  out[0] = '\0';
  for (size_t i = 0; i < FY_SEND_LAT_BANDS && len < outlen; i++) {
    char label[32];
    if (i < FY_SEND_LAT_BANDS - 1)
      band_label(label, sizeof label, "<=", fy__send_lat_band_us[i]);
    else
      band_label(label, sizeof label, ">", fy__send_lat_band_us[i - 1]);
    int w = snprintf(out + len, outlen - len, "%s%s:%" PRIu64, i ? " " : "", label, l->bands[i]);
    if (w < 0)
      break;
    len += (size_t)w;
  }
}
