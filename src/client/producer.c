/*
 * Producers: RocketMQ's DefaultMQProducer send path with Ferry's retry
 * rules.
 *
 * A send is one operation (struct send_op) with one deadline for all its
 * attempts (sendMsgTimeout). Its states:
 *
 *   ROUTE   waiting for the topic's route (cached, or fetched); a topic
 *           the name servers do not know is sent through TBW102's brokers
 *           with default_topic_queues, so a broker that auto-creates can
 *   SENDING one attempt in flight to the master of the chosen queue
 *   done    stored (0, status from the frame), or an error
 *
 * Queue choice: the selector when given; otherwise round-robin over the
 * topic's writable queues (per topic, shared by the client's producers),
 * skipping queues of the brokerName that failed last when another exists
 * (MQFaultStrategy.selectOneMessageQueue without latency isolation).
 * Retries: network failures (refused, closed, no answer before the rpc
 * timeout, which is the time left) and TOPIC_NOT_EXIST,
 * SERVICE_NOT_AVAILABLE, SYSTEM_ERROR, NO_PERMISSION and SYSTEM_BUSY
 * (unlike RocketMQ 4.9, Ferry retries busy brokers), while attempts and
 * time remain. A network failure also refreshes the topic's route so the
 * next send sees a broker that left.
 *
 * The request is built once on the calling thread (validation, UNIQ_KEYs,
 * a deep copy of the protobuf message and one buffer of bodies) and only
 * its queue id changes between attempts.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/cl_int.h"
#include "common/err.h"
#include "common/log.h"

#define MOD "producer"
#define SEND_CACHE_MAX 4096                   /* freed send ops a producer keeps */
#define SEND_CACHE_MAX_BYTES (16u << 20)      /* ... and their bytes */
#define SEND_CACHE_OP_MAX_BYTES (256u << 10)  /* larger ops are not kept */

struct send_op {
  struct fy__op base;
  fy_producer *p;
  Ferry__V1__SendRequest req;  /* points into reqmem, op->topic, op->res and the producer */
  void *reqmem;                /* one block: the messages, properties and their strings */
  uint8_t *raw;
  size_t raw_len;
  size_t n;
  fy_send_result *res;         /* n entries */
  char topic[FY_CLIENT_TOPIC_MAX];
  fy_queue_selector selector;
  void *selector_arg;
  uint32_t attempts, max_attempts;
  char last_broker[FY_CLIENT_NAME_MAX];
  char cur_broker[FY_CLIENT_NAME_MAX];
  char cur_addr[FY_CLIENT_ADDR_MAX];
  bool use_default;            /* routed through TBW102 */
  bool refetched;              /* fetched the route again for want of a master */
  bool async;
  size_t block_bytes;          /* the op's allocation (op, results, request, bodies) */
  fy_send_cb cb;
  fy_send_batch_cb batch_cb;   /* asynchronous batch: instead of cb */
  void *cb_arg;
};

static void send_next(struct send_op *op);

/* snprintf(dst, size, "%s", src) without the formatting machinery (it
 * showed in profiles, three per message); NULL copies as "". */
static void copy_str(char *dst, size_t size, const char *src) {
  size_t n = src ? strnlen(src, size - 1) : 0;
  if (n)
    memcpy(dst, src, n);
  dst[n] = '\0';
}

static bool retryable(int err) {
  return fy__cl_err_is_network(err) || err == -FY_ETOPIC_NOT_EXIST || err == -FY_EUNAVAILABLE ||
         err == -FY_EREMOTE_ERROR || err == -FY_ENO_PERMISSION || err == -FY_EREMOTE_BUSY;
}

static fy_send_status stored_status(uint16_t st) {
  switch (st) {
  case FERRY__V1__STATUS__FLUSH_DISK_TIMEOUT: return FY_SEND_FLUSH_DISK_TIMEOUT;
  case FERRY__V1__STATUS__FLUSH_SLAVE_TIMEOUT: return FY_SEND_FLUSH_SLAVE_TIMEOUT;
  case FERRY__V1__STATUS__SLAVE_NOT_AVAILABLE: return FY_SEND_SLAVE_NOT_AVAILABLE;
  default: return FY_SEND_OK;
  }
}

static void send_fail_or_retry(struct send_op *op, int err) {
  fy_client *cl = op->base.cl;
  if (fy__cl_err_is_network(err)) {
    struct fy__rentry *e = fy__route_entry(cl, op->use_default ? FY__DEFAULT_TOPIC : op->topic);
    if (e && fy__cl_now_ms() - e->fetched_ms > 1000)
      fy__route_refresh(cl, e);
  }
  /* An attempt is given all the time the send has left (fy__op_call), so
   * one that timed out leaves none. Its rpc timer runs on the loop's cached
   * clock and can fire a millisecond before the send's deadline: a retry
   * then went out only to time out too. */
  bool time_left = err != -FY_ETIMEOUT && fy__cl_now_ms() < op->base.deadline_ms;
  if (retryable(err) && op->attempts < op->max_attempts && time_left && !cl->loop_closing) {
    fy_debug(MOD, "%s; retrying (attempt %u of %u)", op->base.errtext, op->attempts + 1,
             op->max_attempts);
    snprintf(op->last_broker, sizeof op->last_broker, "%s", op->cur_broker);
    send_next(op);
    return;
  }
  fy__op_complete(&op->base, err);
}

static void on_send_resp(struct fy__op *base, int err, const fy_frame *resp, void *ctx) {
  struct send_op *op = (struct send_op *)base;
  if (err) {
    fy__op_errtext(base, "attempt %u: %s %s: %s", op->attempts, op->cur_broker, op->cur_addr,
                   err == -FY_ETIMEOUT ? "no answer in time" : fy_client_strerror(err));
    send_fail_or_retry(op, err);
    return;
  }
  int serr = fy__cl_status_err(resp->status);
  if (serr) {
    char text[160] = "";
    fy_frame_error_text(resp, text, sizeof text);
    fy__op_errtext(base, "attempt %u: %s %s: %s: %s", op->attempts, op->cur_broker, op->cur_addr,
                   fy__cl_status_name(resp->status), text);
    send_fail_or_retry(op, serr);
    return;
  }
  if (resp->status != FERRY__V1__STATUS__OK &&
      resp->status != FERRY__V1__STATUS__FLUSH_DISK_TIMEOUT &&
      resp->status != FERRY__V1__STATUS__FLUSH_SLAVE_TIMEOUT &&
      resp->status != FERRY__V1__STATUS__SLAVE_NOT_AVAILABLE) {
    fy__op_errtext(base, "attempt %u: %s %s: unexpected status %s for a send", op->attempts,
                   op->cur_broker, op->cur_addr, fy__cl_status_name(resp->status));
    fy__op_complete(base, -FY_EREMOTE_ERROR);
    return;
  }
  Ferry__V1__SendResponse *sr;
  if (fy_frame_unpack(resp, &ferry__v1__send_response__descriptor, (ProtobufCMessage **)&sr)) {
    fy__op_errtext(base, "attempt %u: %s %s: stored, but the answer is malformed", op->attempts,
                   op->cur_broker, op->cur_addr);
    fy__op_complete(base, -FY_EDECODE);
    return;
  }
  fy_send_status status = stored_status(resp->status);
  const char *bname = sr->broker_name && *sr->broker_name ? sr->broker_name : op->cur_broker;
  for (size_t i = 0; i < op->n; i++) {
    fy_send_result *r = &op->res[i];
    r->status = status;
    r->attempts = op->attempts;
    copy_str(r->broker_name, sizeof r->broker_name, bname);
    r->queue_id = sr->queue_id;
    r->error[0] = '\0';
    if (i < sr->n_results) {
      const Ferry__V1__SendResult *x = sr->results[i];
      if (x->msg_id && *x->msg_id)
        copy_str(r->msg_id, sizeof r->msg_id, x->msg_id);
      copy_str(r->offset_msg_id, sizeof r->offset_msg_id, x->offset_msg_id);
      r->queue_offset = x->queue_offset;
    }
  }
  fy_pb_free(&sr->base);
  if (status != FY_SEND_OK && op->p->cfg.retry_when_not_stored_ok &&
      op->attempts < op->max_attempts && fy__cl_now_ms() < base->deadline_ms) {
    fy__op_errtext(base, "attempt %u: %s: stored but %s", op->attempts, op->cur_broker,
                   fy__cl_status_name(resp->status));
    snprintf(op->last_broker, sizeof op->last_broker, "%s", op->cur_broker);
    send_next(op);
    return;
  }
  fy__op_complete(base, 0);
}

/* Index of the queue to use among list (n > 0): round-robin, passing over
 * the brokerName that failed last and masters that are down, when another
 * queue is left. */
static size_t pick_queue(struct send_op *op, struct fy__rentry *e, const struct fy__route *r,
                         const struct fy__mq *list, size_t n) {
  fy_client *cl = op->base.cl;
  for (int pass = 0; pass < 2; pass++)
    for (size_t i = 0; i < n; i++) {
      size_t k = e->rr++ % n;
      if (pass == 0 && op->last_broker[0] && !strcmp(list[k].broker_name, op->last_broker))
        continue;
      const char *m = fy__route_master_addr(r, list[k].broker_name);
      if (m && fy__addr_down(cl, m))
        continue;
      return k;
    }
  return e->rr++ % n;
}

static void on_route(struct fy__op *base, int err, struct fy__rentry *e) {
  struct send_op *op = (struct send_op *)base;
  fy_client *cl = base->cl;
  if (!e->route) {
    if (err == -FY_ETOPIC_NOT_EXIST && !op->use_default &&
        strcmp(op->topic, FY__DEFAULT_TOPIC) != 0) {
      /* RocketMQ's auto-create path: send through the default topic's
       * brokers; they create the topic if they are allowed to. */
      op->use_default = true;
      int e2 = fy__route_get(base, FY__DEFAULT_TOPIC, false, on_route);
      if (e2)
        fy__op_complete(base, e2);
      return;
    }
    if (op->use_default)
      fy__op_errtext(base, "no route for topic '%s' (and none for %s to create it)", op->topic,
                     FY__DEFAULT_TOPIC);
    fy__op_complete(base, err ? err : -FY_ENO_BROKER);
    return;
  }
  const struct fy__route *r = e->route;
  if (!op->use_default)
    e->producer_used_ms = fy__cl_now_ms();
  /* Publish list; through TBW102 only the first default_topic_queues of
   * each brokerName (RocketMQ: min(defaultTopicQueueNums, writeQueueNums)). */
  const struct fy__mq *list = r->pub;
  size_t n = r->npub;
  struct fy__mq *tmp = NULL;
  if (op->use_default) {
    tmp = calloc(n + 1, sizeof *tmp);
    if (!tmp) {
      fy__op_complete(base, -ENOMEM);
      return;
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
      if (list[i].queue_id < op->p->cfg.default_topic_queues)
        tmp[m++] = list[i];
    list = tmp;
    n = m;
  }
  if (n == 0 && !op->refetched && !cl->loop_closing) {
    /* A cached route without a master (it left while we were sending) is
     * asked for again, as RocketMQ's producer does when its publish info has
     * no queue: otherwise a restarted master would be unused until the next
     * periodic refresh (route_refresh_ms, 30 s). Fetches are shared, so at
     * most one per topic is in flight. */
    op->refetched = true;
    free(tmp);
    int e2 = fy__route_get(base, op->use_default ? FY__DEFAULT_TOPIC : op->topic, true, on_route);
    if (e2)
      fy__op_complete(base, e2);
    return;
  }
  if (n == 0) {
    fy__op_errtext(base, "topic '%s': no writable queue on a brokerName with a master", op->topic);
    free(tmp);
    fy__op_complete(base, -FY_ENO_BROKER);
    return;
  }
  size_t k;
  if (op->selector) {
    k = op->selector(op->topic, n, op->selector_arg);
    if (k >= n) {
      fy__op_errtext(base, "queue selector returned %zu for %zu queues", k, n);
      free(tmp);
      fy__op_complete(base, -EINVAL);
      return;
    }
  } else {
    k = pick_queue(op, e, r, list, n);
  }
  const char *addr = fy__route_master_addr(r, list[k].broker_name);
  fy_assert(addr != NULL); /* the publish list only has brokerNames with a master */
  copy_str(op->cur_broker, sizeof op->cur_broker, list[k].broker_name);
  copy_str(op->cur_addr, sizeof op->cur_addr, addr);
  op->req.queue_id = (int32_t)list[k].queue_id;
  free(tmp);
  op->attempts++;
  uv_buf_t rb = uv_buf_init((char *)op->raw, (unsigned)op->raw_len);
  int cerr = fy__op_call(base, op->cur_addr, FERRY__V1__OP__OP_SEND, &op->req.base, &rb,
                         op->raw_len ? 1 : 0, 0, on_send_resp, NULL);
  if (cerr) {
    fy__op_errtext(base, "attempt %u: %s %s: %s", op->attempts, op->cur_broker, op->cur_addr,
                   fy_client_strerror(cerr));
    send_fail_or_retry(op, cerr);
  }
  (void)cl;
}

static void send_next(struct send_op *op) {
  int err = fy__route_get(&op->base, op->use_default ? FY__DEFAULT_TOPIC : op->topic, false,
                          on_route);
  if (err)
    fy__op_complete(&op->base, err);
}

static void send_start(struct fy__op *base) { send_next((struct send_op *)base); }

static void send_finish(struct fy__op *base) {
  struct send_op *op = (struct send_op *)base;
  if (base->err)
    for (size_t i = 0; i < op->n; i++) {
      snprintf(op->res[i].error, sizeof op->res[i].error, "%s", base->errtext);
      op->res[i].attempts = op->attempts;
    }
  if (!op->async)
    return;
  if (op->batch_cb)
    op->batch_cb(base->err, op->res, op->n, op->cb_arg);
  else
    op->cb(base->err, &op->res[0], op->cb_arg);
  fy_producer *p = op->p;
  pthread_mutex_lock(&p->mu);
  fy_assert(p->inflight > 0);
  p->inflight--;
  if (p->waiters || p->closing)
    pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
}

/* A freed send op, kept by its producer for the next send: malloc and
 * free of a block allocated on the sender's thread and freed on the client
 * thread (arena lock, heap growth and trimming) showed in profiles. */
struct fy__cached_op {
  struct fy__cached_op *next;
  size_t bytes;
};

/* The last reference is gone: back to the producer's cache (bounded), or
 * freed. The producer outlives its ops (close waits for live_ops 0). */
static void send_release(struct fy__op *base) {
  struct send_op *op = (struct send_op *)base;
  fy_producer *p = op->p;
  size_t bytes = op->block_bytes;
  struct fy__cached_op *c = (struct fy__cached_op *)op;
  bool keep = false;
  pthread_mutex_lock(&p->mu);
  fy_assert(p->live_ops > 0);
  p->live_ops--;
  if (!p->closing && bytes <= SEND_CACHE_OP_MAX_BYTES && p->cache_n < SEND_CACHE_MAX &&
      p->cache_bytes + bytes <= SEND_CACHE_MAX_BYTES) {
    c->bytes = bytes;
    c->next = p->cache;
    p->cache = c;
    p->cache_n++;
    p->cache_bytes += bytes;
    keep = true;
  }
  if (p->closing || p->waiters)
    pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  if (!keep)
    free(op);
}

/* An op of at least bytes from the cache, or NULL (p->mu held). */
static struct send_op *cache_take(fy_producer *p, size_t bytes, size_t *got) {
  struct fy__cached_op *c = p->cache;
  if (!c || c->bytes < bytes)
    return NULL;
  p->cache = c->next;
  p->cache_n--;
  p->cache_bytes -= c->bytes;
  *got = c->bytes;
  return (struct send_op *)c;
}

static void cache_free(fy_producer *p) {
  for (uint32_t n = 0; p->cache; n++) {
    fy_assert(n < SEND_CACHE_MAX);
    struct fy__cached_op *c = p->cache;
    p->cache = c->next;
    free(c);
  }
  p->cache_n = 0;
  p->cache_bytes = 0;
}

/* Copies s (NULL: "") to *at, which has room (sized beforehand), and
 * returns the copy. */
static char *block_str(char **at, char *end, const char *s) {
  size_t len = s ? strlen(s) : 0;
  char *out = *at;
  fy_assert(out + len + 1 <= end);
  if (len)
    memcpy(out, s, len);
  out[len] = '\0';
  *at = out + len + 1;
  return out;
}

static bool clean(const char *s) { return !s || (!strchr(s, '\x01') && !strchr(s, '\x02')); }

/* Builds the operation on the calling thread. */
static int send_build(fy_producer *p, const fy_message *msgs, size_t n,
                      const fy_send_options *opts, bool sync, struct send_op **out) {
  fy_client *cl = p->cl;
  if (!msgs || n == 0) {
    fy__set_last_error("no message to send");
    return -EINVAL;
  }
  const char *topic = msgs[0].topic;
  if (fy__cl_name_check("topic", topic, FY_CLIENT_TOPIC_MAX))
    return -EINVAL;
  size_t tl = strlen(topic);
  size_t total = 0;
  for (size_t i = 0; i < n; i++) {
    const fy_message *m = &msgs[i];
    if (!m->topic || strcmp(m->topic, topic) != 0) {
      fy__set_last_error("a batch must have one topic");
      return -EINVAL;
    }
    if (m->body_len && !m->body) {
      fy__set_last_error("message %zu: body is NULL", i);
      return -EINVAL;
    }
    total += m->body_len;
    if (!clean(m->tags) || !clean(m->keys)) {
      fy__set_last_error("message %zu: tags and keys must not contain \\x01 or \\x02", i);
      return -EINVAL;
    }
    for (size_t j = 0; j < m->nprops; j++)
      if (!m->props[j].key || !*m->props[j].key || !m->props[j].value ||
          !clean(m->props[j].key) || !clean(m->props[j].value)) {
        fy__set_last_error("message %zu: property %zu: empty key, NULL value, or \\x01/\\x02", i,
                           j);
        return -EINVAL;
      }
  }
  if (total > p->cfg.max_message_bytes) {
    fy__set_last_error("body of %zu bytes is over maxMessageSize (%u)", total,
                       p->cfg.max_message_bytes);
    return -FY_ETOO_BIG;
  }
  uint32_t timeout = opts && opts->timeout_ms ? opts->timeout_ms : p->cfg.send_timeout_ms;
  /* One allocation per send (separate ones showed in profiles): the op,
   * its n results, the request (message and property structs, pointer
   * arrays, strings: no protobuf deep copy) and the bodies. */
  size_t nkv = 0, strbytes = 0;
  for (size_t i = 0; i < n; i++) {
    const fy_message *m = &msgs[i];
    nkv += m->nprops;
    strbytes += (m->tags ? strlen(m->tags) : 0) + (m->keys ? strlen(m->keys) : 0) + 2;
    for (size_t j = 0; j < m->nprops; j++)
      strbytes += strlen(m->props[j].key) + strlen(m->props[j].value) + 2;
  }
  size_t head = (sizeof(struct send_op) + 15) & ~(size_t)15;
  size_t reqbytes = n * (sizeof(Ferry__V1__SendMessage) + sizeof(Ferry__V1__SendMessage *)) +
                    nkv * (sizeof(Ferry__V1__KeyValue) + sizeof(Ferry__V1__KeyValue *));
  size_t block = head + n * sizeof(fy_send_result) + reqbytes + strbytes + total;
  size_t got = block;
  pthread_mutex_lock(&p->mu);
  struct send_op *op = cache_take(p, block, &got);
  p->live_ops++;
  pthread_mutex_unlock(&p->mu);
  if (!op && !(op = malloc(block))) {
    pthread_mutex_lock(&p->mu);
    p->live_ops--;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return -ENOMEM;
  }
  memset(op, 0, sizeof *op);
  fy__op_init(&op->base, cl, timeout, sync, send_start, send_finish, NULL);
  op->base.release = send_release;
  op->block_bytes = got;
  op->p = p;
  op->n = n;
  op->max_attempts = p->cfg.max_attempts;
  if (opts) {
    op->selector = opts->selector;
    op->selector_arg = opts->selector_arg;
  }
  memcpy(op->topic, topic, tl + 1);
  op->res = (fy_send_result *)((char *)op + head);
  for (size_t i = 0; i < n; i++) { /* what the send does not set in every case */
    fy_send_result *r = &op->res[i];
    r->status = FY_SEND_OK;
    r->offset_msg_id[0] = r->broker_name[0] = r->error[0] = '\0';
    r->queue_id = 0;
    r->queue_offset = 0;
    r->attempts = 0;
  }
  op->reqmem = op->res + n;
  Ferry__V1__SendMessage *sm = op->reqmem;
  Ferry__V1__SendMessage **smp = (Ferry__V1__SendMessage **)(sm + n);
  Ferry__V1__KeyValue *kv = (Ferry__V1__KeyValue *)(smp + n);
  Ferry__V1__KeyValue **kvp = (Ferry__V1__KeyValue **)(kv + nkv);
  char *str = (char *)(kvp + nkv), *str_end = str + strbytes;
  op->raw = (uint8_t *)str_end;
  int64_t now = fy__cl_wall_ms();
  size_t off = 0, k = 0;
  for (size_t i = 0; i < n; i++) {
    const fy_message *m = &msgs[i];
    ferry__v1__send_message__init(&sm[i]);
    fy__msgid_new_at(cl, now, op->res[i].msg_id);
    sm[i].body_len = (uint32_t)m->body_len;
    sm[i].tags = block_str(&str, str_end, m->tags);
    sm[i].keys = block_str(&str, str_end, m->keys);
    sm[i].flag = m->flag;
    sm[i].born_timestamp = now;
    sm[i].uniq_key = op->res[i].msg_id;
    sm[i].properties = &kvp[k];
    sm[i].n_properties = m->nprops;
    for (size_t j = 0; j < m->nprops; j++, k++) {
      ferry__v1__key_value__init(&kv[k]);
      kv[k].key = block_str(&str, str_end, m->props[j].key);
      kv[k].value = block_str(&str, str_end, m->props[j].value);
      kvp[k] = &kv[k];
    }
    if (m->body_len)
      memcpy(op->raw + off, m->body, m->body_len);
    off += m->body_len;
    smp[i] = &sm[i];
  }
  fy_assert(str == str_end);
  fy_assert(op->raw + total == (uint8_t *)op + block);
  fy_assert(block <= op->block_bytes);
  op->raw_len = total;
  ferry__v1__send_request__init(&op->req);
  op->req.producer_group = p->group;
  op->req.topic = op->topic;
  op->req.queue_id = -1;
  op->req.messages = smp;
  op->req.n_messages = n;
  op->req.default_topic_queues = p->cfg.default_topic_queues;
  *out = op;
  return 0;
}

static int send_sync(fy_producer *p, const fy_message *msgs, size_t n,
                     const fy_send_options *opts, fy_send_result *results) {
  if (results)
    memset(results, 0, n * sizeof *results);
  struct send_op *op;
  int err = send_build(p, msgs, n, opts, true, &op);
  if (err) {
    if (results)
      for (size_t i = 0; i < n; i++)
        snprintf(results[i].error, sizeof results[i].error, "%s", fy_client_last_error());
    return err;
  }
  if (results)
    for (size_t i = 0; i < n; i++)
      memcpy(results[i].msg_id, op->res[i].msg_id, sizeof results[i].msg_id);
  bool posted;
  err = fy__op_run(&op->base, &posted);
  if (!posted) {
    if (results)
      for (size_t i = 0; i < n; i++)
        snprintf(results[i].error, sizeof results[i].error, "%s", fy_client_last_error());
    return err;
  }
  if (op->base.seen_done) {
    if (results)
      memcpy(results, op->res, n * sizeof *results);
  } else if (results) {
    for (size_t i = 0; i < n; i++)
      snprintf(results[i].error, sizeof results[i].error, "%s", fy_client_last_error());
  }
  fy__op_unref(&op->base);
  return err;
}

int fy_producer_send(fy_producer *p, const fy_message *msg, const fy_send_options *opts,
                     fy_send_result *res) {
  return send_sync(p, msg, 1, opts, res);
}

int fy_producer_send_batch(fy_producer *p, const fy_message *msgs, size_t n,
                           const fy_send_options *opts, fy_send_result *results) {
  return send_sync(p, msgs, n, opts, results);
}

/* Takes an inflight slot (waiting for one off the client thread, up to
 * the send timeout) and posts an asynchronous send of msgs. */
static int send_async(fy_producer *p, const fy_message *msgs, size_t n,
                      const fy_send_options *opts, fy_send_cb cb, fy_send_batch_cb batch_cb,
                      void *arg) {
  if (!cb && !batch_cb) {
    fy__set_last_error("a callback is required");
    return -EINVAL;
  }
  uint32_t timeout = opts && opts->timeout_ms ? opts->timeout_ms : p->cfg.send_timeout_ms;
  bool on_loop = fy__on_loop(p->cl);
  pthread_mutex_lock(&p->mu);
  if (p->inflight >= p->cfg.max_inflight && !on_loop) {
    struct timespec ts;
    uint64_t d = fy__cl_now_ms() + timeout;
    ts.tv_sec = (time_t)(d / 1000);
    ts.tv_nsec = (long)(d % 1000) * 1000000L;
    p->waiters++;
    while (p->inflight >= p->cfg.max_inflight && !p->closing)
      if (pthread_cond_timedwait(&p->cv, &p->mu, &ts) == ETIMEDOUT)
        break;
    p->waiters--;
  }
  int err = 0;
  if (p->closing)
    err = -FY_ECLOSED;
  else if (p->inflight >= p->cfg.max_inflight)
    err = -FY_EBUSY;
  else
    p->inflight++;
  pthread_mutex_unlock(&p->mu);
  if (err) {
    fy__set_last_error(err == -FY_EBUSY ? "%u asynchronous sends in flight (max_inflight)"
                                        : "producer closing",
                       p->cfg.max_inflight);
    return err;
  }
  struct send_op *op;
  err = send_build(p, msgs, n, opts, false, &op);
  if (!err) {
    op->async = true;
    op->cb = cb;
    op->batch_cb = batch_cb;
    op->cb_arg = arg;
    err = fy__op_post(&op->base);
  }
  if (err) {
    pthread_mutex_lock(&p->mu);
    p->inflight--;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
  }
  return err;
}

int fy_producer_send_async(fy_producer *p, const fy_message *msg, const fy_send_options *opts,
                           fy_send_cb cb, void *arg) {
  return send_async(p, msg, 1, opts, cb, NULL, arg);
}

int fy_producer_send_batch_async(fy_producer *p, const fy_message *msgs, size_t n,
                                 const fy_send_options *opts, fy_send_batch_cb cb, void *arg) {
  if (!cb) {
    fy__set_last_error("a callback is required");
    return -EINVAL;
  }
  return send_async(p, msgs, n, opts, NULL, cb, arg);
}

/* ------------------------------------------------------------- lifecycle */

struct reg_op {
  struct fy__op base;
  fy_producer *p;
  bool add;
  size_t outstanding;
};

static void on_unreg(struct fy__op *base, int err, const fy_frame *resp, void *ctx) {
  struct reg_op *op = (struct reg_op *)base;
  if (--op->outstanding == 0)
    fy__op_complete(base, 0);
}

static void reg_start(struct fy__op *base) {
  struct reg_op *op = (struct reg_op *)base;
  fy_client *cl = base->cl;
  if (op->add) {
    op->p->next = cl->producers;
    cl->producers = op->p;
    op->p->registered = true;
    fy__op_complete(base, 0);
    return;
  }
  if (op->p->registered) {
    for (fy_producer **pp = &cl->producers; *pp; pp = &(*pp)->next)
      if (*pp == op->p) {
        *pp = op->p->next;
        break;
      }
    op->p->registered = false;
  }
  /* UNREGISTER_CLIENT to the masters of the topics sent to. */
  Ferry__V1__UnregisterClientRequest req = FERRY__V1__UNREGISTER_CLIENT_REQUEST__INIT;
  req.client_id = cl->client_id;
  req.producer_group = op->p->group;
  req.consumer_group = "";
  fy_strmap *seen = fy_strmap_new();
  size_t pos = 0;
  const char *k;
  size_t kl;
  void *v;
  op->outstanding = 1;
  while (seen && fy_strmap_next(cl->routes, &pos, &k, &kl, &v)) {
    struct fy__rentry *e = v;
    if (!e->route || !e->producer_used_ms)
      continue;
    for (size_t i = 0; i < e->route->nbd; i++) {
      const char *a = fy__bdata_addr(&e->route->bd[i], 0);
      if (!a || fy_strmap_get(seen, a, strlen(a)))
        continue;
      fy_strmap_put(seen, a, strlen(a), (void *)a);
      if (fy__op_call(base, a, FERRY__V1__OP__OP_UNREGISTER_CLIENT, &req.base, NULL, 0, 0,
                      on_unreg, NULL) == 0)
        op->outstanding++;
    }
  }
  if (seen)
    fy_strmap_free(seen);
  if (--op->outstanding == 0)
    fy__op_complete(base, 0);
}

static int producer_reg(fy_producer *p, bool add) {
  struct reg_op *op = calloc(1, sizeof *op);
  if (!op)
    return -ENOMEM;
  fy__op_init(&op->base, p->cl, 0, true, reg_start, NULL, NULL);
  op->base.must_run = true;
  op->p = p;
  op->add = add;
  int err = fy__op_post(&op->base);
  if (err)
    return err;
  err = fy__op_wait_forever(&op->base);
  fy__op_unref(&op->base);
  return err;
}

int fy_producer_new(fy_client *cl, const fy_producer_config *cfg, fy_producer **out) {
  if (!cfg || fy__cl_name_check("producer group", cfg->group, FY_CLIENT_GROUP_MAX))
    return -EINVAL;
  fy_producer *p = calloc(1, sizeof *p);
  if (!p)
    return -ENOMEM;
  p->cl = cl;
  p->cfg = *cfg;
  snprintf(p->group, sizeof p->group, "%s", cfg->group);
  p->cfg.group = p->group;
  if (!p->cfg.send_timeout_ms)
    p->cfg.send_timeout_ms = 3000;
  if (!p->cfg.max_attempts)
    p->cfg.max_attempts = 3;
  if (!p->cfg.max_inflight)
    p->cfg.max_inflight = 10000;
  if (!p->cfg.max_message_bytes)
    p->cfg.max_message_bytes = 4u << 20;
  if (!p->cfg.default_topic_queues)
    p->cfg.default_topic_queues = 4;
  pthread_mutex_init(&p->mu, NULL);
  pthread_condattr_t a;
  pthread_condattr_init(&a);
  pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
  pthread_cond_init(&p->cv, &a);
  pthread_condattr_destroy(&a);
  int err = producer_reg(p, true);
  if (err) {
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
    return err;
  }
  pthread_mutex_lock(&cl->mu);
  p->all_next = cl->all_producers;
  cl->all_producers = p;
  pthread_mutex_unlock(&cl->mu);
  *out = p;
  return 0;
}

int fy_producer_close(fy_producer *p) {
  if (!p)
    return 0;
  fy_client *cl = p->cl;
  if (fy__on_loop(cl)) {
    fy__set_last_error("fy_producer_close called on the client thread");
    return -EDEADLK;
  }
  pthread_mutex_lock(&p->mu);
  p->closing = true;
  /* Every send completes by its deadline and is freed once its last
   * reference (a late rpc answer, a caller that gave up) is gone. */
  while (p->inflight > 0 || p->live_ops > 0)
    pthread_cond_wait(&p->cv, &p->mu);
  cache_free(p);
  pthread_mutex_unlock(&p->mu);
  while (producer_reg(p, false) == -FY_EBUSY)
    ;
  pthread_mutex_lock(&cl->mu);
  for (fy_producer **pp = &cl->all_producers; *pp; pp = &(*pp)->all_next)
    if (*pp == p) {
      *pp = p->all_next;
      break;
    }
  pthread_mutex_unlock(&cl->mu);
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->cv);
  free(p);
  return 0;
}
