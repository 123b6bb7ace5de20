/*
 * The pull consumer (the caller picks queue and offset) and the queue
 * calls both consumers and tools share: offsets of a queue (min, max, by
 * time, the group's committed offset), the topic's queue lists.
 *
 * Slave reads: each pull response names the broker id to pull from next
 * (suggest_broker_id); it is remembered per queue and the next pull of
 * that queue goes there, resolved through fy__route_sub_addr (that id,
 * else the master, else any broker of the brokerName), which is how pulls
 * keep going to the slave once the master has left the route. A pull
 * that fails resets the queue's suggestion to the master.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/cl_int.h"
#include "common/err.h"
#include "common/log.h"

#define MOD "client"

int fy__pull_status(uint16_t st) {
  switch (st) {
  case FERRY__V1__STATUS__OK: return FY_PULL_FOUND;
  case FERRY__V1__STATUS__PULL_NOT_FOUND: return FY_PULL_NO_NEW_MSG;
  case FERRY__V1__STATUS__PULL_RETRY_IMMEDIATELY: return FY_PULL_NO_MATCHED_MSG;
  case FERRY__V1__STATUS__PULL_OFFSET_MOVED: return FY_PULL_OFFSET_ILLEGAL;
  default: return -1;
  }
}

void fy__pull_request_init(Ferry__V1__PullRequest *req, const char *group, const char *topic,
                           uint32_t queue_id, uint64_t offset, uint32_t max_msgs,
                           uint32_t max_bytes, uint32_t suspend_ms, const struct fy__sub *sub,
                           int64_t *hash_buf) {
  ferry__v1__pull_request__init(req);
  req->consumer_group = (char *)group;
  req->topic = (char *)topic;
  req->queue_id = queue_id;
  req->queue_offset = offset;
  req->max_msgs = max_msgs;
  req->max_bytes = max_bytes;
  req->suspend_timeout_ms = suspend_ms;
  req->sub_expression = (char *)(sub ? sub->expr : "*");
  if (sub && !sub->all) {
    for (size_t i = 0; i < sub->nhashes; i++)
      hash_buf[i] = sub->hashes[i];
    req->tag_hashes = hash_buf;
    req->n_tag_hashes = sub->nhashes;
  }
}

static bool queue_ok(const fy_queue *q) {
  return q && q->topic[0] && memchr(q->topic, 0, sizeof q->topic) && q->broker_name[0] &&
         memchr(q->broker_name, 0, sizeof q->broker_name);
}

static int bad_queue(void) {
  fy__set_last_error("queue needs a topic and a brokerName");
  return -EINVAL;
}

/* ------------------------------------------------------------ queue offsets */

/* One request about one queue: GET_MIN/MAX_OFFSET, SEARCH_OFFSET_BY_TIME,
 * QUERY_CONSUMER_OFFSET, UPDATE_CONSUMER_OFFSET; to the master, or the
 * lowest broker id without one. */
struct qoff_op {
  struct fy__op base;
  fy_queue q;
  uint16_t code;
  char group[FY_CLIENT_GROUP_MAX];
  uint64_t offset;
  int64_t timestamp;
  uint64_t result;
  fy_pull_consumer *pc; /* counts in pc->live_ops when set */
};

static void pc_op_done(fy_pull_consumer *pc) {
  pthread_mutex_lock(&pc->mu);
  fy_assert(pc->live_ops > 0);
  pc->live_ops--;
  pthread_cond_broadcast(&pc->cv);
  pthread_mutex_unlock(&pc->mu);
}

static void pc_op_new(fy_pull_consumer *pc) {
  pthread_mutex_lock(&pc->mu);
  pc->live_ops++;
  pthread_mutex_unlock(&pc->mu);
}

static void qoff_destroy(struct fy__op *base) {
  struct qoff_op *op = (struct qoff_op *)base;
  if (op->pc)
    pc_op_done(op->pc);
}

static void on_qoff(struct fy__op *base, int err, const fy_frame *resp, void *ctx) {
  struct qoff_op *op = (struct qoff_op *)base;
  const char *addr = ctx;
  (void)addr;
  if (err) {
    fy__op_complete(base, err);
    return;
  }
  int serr = fy__cl_status_err(resp->status);
  if (serr) {
    char text[160] = "";
    fy_frame_error_text(resp, text, sizeof text);
    fy__op_errtext(base, "%s queue %s/%u: %s: %s", op->q.topic, op->q.broker_name, op->q.queue_id,
                   fy__cl_status_name(resp->status), text);
    fy__op_complete(base, serr);
    return;
  }
  if (op->code != FERRY__V1__OP__OP_UPDATE_CONSUMER_OFFSET) {
    Ferry__V1__QueueOffsetResponse *r;
    if (fy_frame_unpack(resp, &ferry__v1__queue_offset_response__descriptor,
                        (ProtobufCMessage **)&r)) {
      fy__op_complete(base, -FY_EDECODE);
      return;
    }
    op->result = r->offset;
    fy_pb_free(&r->base);
  }
  fy__op_complete(base, 0);
}

static void qoff_route(struct fy__op *base, int err, struct fy__rentry *e) {
  struct qoff_op *op = (struct qoff_op *)base;
  if (!e->route) {
    fy__op_complete(base, err ? err : -FY_ENO_BROKER);
    return;
  }
  uint64_t id;
  const char *addr = fy__route_admin_addr(base->cl, e->route, op->q.broker_name, &id);
  if (!addr) {
    fy__op_errtext(base, "brokerName '%s' has no address in the route of '%s'", op->q.broker_name,
                   op->q.topic);
    fy__op_complete(base, -FY_ENO_BROKER);
    return;
  }
  Ferry__V1__QueueOffsetRequest req = FERRY__V1__QUEUE_OFFSET_REQUEST__INIT;
  req.group = op->group;
  req.topic = op->q.topic;
  req.queue_id = op->q.queue_id;
  req.offset = op->offset;
  req.timestamp = op->timestamp;
  int cerr = fy__op_call(base, addr, op->code, &req.base, NULL, 0, 0, on_qoff, NULL);
  if (cerr)
    fy__op_complete(base, cerr);
}

static void qoff_start(struct fy__op *base) {
  struct qoff_op *op = (struct qoff_op *)base;
  int err = fy__route_get(base, op->q.topic, false, qoff_route);
  if (err)
    fy__op_complete(base, err);
}

static int qoff_run(fy_client *cl, fy_pull_consumer *pc, const fy_queue *q, uint16_t code,
                    const char *group, uint64_t offset, int64_t ts, uint32_t timeout_ms,
                    uint64_t *out) {
  if (!queue_ok(q))
    return bad_queue();
  struct qoff_op *op = calloc(1, sizeof *op);
  if (!op)
    return -ENOMEM;
  fy__op_init(&op->base, cl, timeout_ms, true, qoff_start, NULL, qoff_destroy);
  op->q = *q;
  op->code = code;
  snprintf(op->group, sizeof op->group, "%s", group ? group : "");
  op->offset = offset;
  op->timestamp = ts;
  if (pc) {
    op->pc = pc;
    pc_op_new(pc);
  }
  bool posted;
  int err = fy__op_run(&op->base, &posted);
  if (!posted)
    return err;
  if (!err && out)
    *out = op->result;
  fy__op_unref(&op->base);
  return err;
}

int fy_client_min_offset(fy_client *cl, const fy_queue *q, uint32_t timeout_ms, uint64_t *out) {
  return qoff_run(cl, NULL, q, FERRY__V1__OP__OP_GET_MIN_OFFSET, NULL, 0, 0, timeout_ms, out);
}

int fy_client_max_offset(fy_client *cl, const fy_queue *q, uint32_t timeout_ms, uint64_t *out) {
  return qoff_run(cl, NULL, q, FERRY__V1__OP__OP_GET_MAX_OFFSET, NULL, 0, 0, timeout_ms, out);
}

int fy_client_search_offset(fy_client *cl, const fy_queue *q, int64_t timestamp_ms,
                            uint32_t timeout_ms, uint64_t *out) {
  return qoff_run(cl, NULL, q, FERRY__V1__OP__OP_SEARCH_OFFSET_BY_TIME, NULL, 0, timestamp_ms,
                  timeout_ms, out);
}

int fy_pull_consumer_fetch_offset(fy_pull_consumer *c, const fy_queue *q, uint32_t timeout_ms,
                                  uint64_t *out) {
  return qoff_run(c->cl, c, q, FERRY__V1__OP__OP_QUERY_CONSUMER_OFFSET, c->group, 0, 0,
                  timeout_ms, out);
}

int fy_pull_consumer_commit_offset(fy_pull_consumer *c, const fy_queue *q, uint64_t offset,
                                   uint32_t timeout_ms) {
  return qoff_run(c->cl, c, q, FERRY__V1__OP__OP_UPDATE_CONSUMER_OFFSET, c->group, offset, 0,
                  timeout_ms, NULL);
}

/* -------------------------------------------------------------- queue lists */

struct queues_op {
  struct fy__op base;
  char topic[FY_CLIENT_TOPIC_MAX];
  bool writable;
  fy_queue_list *result;
};

static void queues_route(struct fy__op *base, int err, struct fy__rentry *e) {
  struct queues_op *op = (struct queues_op *)base;
  if (!e->route) {
    fy__op_complete(base, err ? err : -FY_ENO_BROKER);
    return;
  }
  const struct fy__mq *list = op->writable ? e->route->pub : e->route->sub;
  size_t n = op->writable ? e->route->npub : e->route->nsub;
  struct fy__arena *a;
  fy_queue_list *l = fy__result_new(sizeof *l, (n ? n : 1) * sizeof(fy_queue), &a);
  fy_queue *qs = l ? fy__cl_arena_alloc(a, (n ? n : 1) * sizeof *qs) : NULL;
  if (!qs) {
    fy_result_free(l);
    fy__op_complete(base, -ENOMEM);
    return;
  }
  for (size_t i = 0; i < n; i++) {
    memset(&qs[i], 0, sizeof qs[i]);
    snprintf(qs[i].topic, sizeof qs[i].topic, "%s", op->topic);
    snprintf(qs[i].broker_name, sizeof qs[i].broker_name, "%s", list[i].broker_name);
    qs[i].queue_id = list[i].queue_id;
  }
  l->n = n;
  l->queues = qs;
  op->result = l;
  fy__op_complete(base, 0);
}

static void queues_start(struct fy__op *base) {
  struct queues_op *op = (struct queues_op *)base;
  int err = fy__route_get(base, op->topic, false, queues_route);
  if (err)
    fy__op_complete(base, err);
}

static void queues_destroy(struct fy__op *base) {
  struct queues_op *op = (struct queues_op *)base;
  fy_result_free(op->result); /* when the caller gave up or failed */
}

int fy_client_topic_queues(fy_client *cl, const char *topic, bool writable, uint32_t timeout_ms,
                           fy_queue_list **out) {
  size_t tl = topic ? strlen(topic) : 0;
  if (tl == 0 || tl >= FY_CLIENT_TOPIC_MAX) {
    fy__set_last_error("bad topic name");
    return -EINVAL;
  }
  struct queues_op *op = calloc(1, sizeof *op);
  if (!op)
    return -ENOMEM;
  fy__op_init(&op->base, cl, timeout_ms, true, queues_start, NULL, queues_destroy);
  memcpy(op->topic, topic, tl + 1);
  op->writable = writable;
  bool posted;
  int err = fy__op_run(&op->base, &posted);
  if (!posted)
    return err;
  if (!err) {
    *out = op->result;
    op->result = NULL;
  }
  fy__op_unref(&op->base);
  return err;
}

/* ------------------------------------------------------------------- pulls */

struct pull_op {
  struct fy__op base;
  fy_pull_consumer *c;
  fy_queue q;
  uint64_t offset;
  fy_pull_options opts;
  struct fy__sub sub;
  uint64_t used_id;
  char addr[FY_CLIENT_ADDR_MAX];
  fy_pull_result *result;
};

static size_t suggest_key(const fy_queue *q, char *buf, size_t size) {
  int n = snprintf(buf, size, "%s\x01%s\x01%u", q->topic, q->broker_name, q->queue_id);
  return n < 0 ? 0 : (size_t)n < size ? (size_t)n : size - 1;
}

static void suggest_set(fy_pull_consumer *c, const fy_queue *q, uint64_t id) {
  char key[FY_CLIENT_TOPIC_MAX + FY_CLIENT_NAME_MAX + 16];
  size_t kl = suggest_key(q, key, sizeof key);
  if (id == 0) {
    fy_strmap_del(c->suggest, key, kl);
    return;
  }
  /* Bounded by the queues the caller pulls; values are id + 1 (never NULL). */
  fy_strmap_put(c->suggest, key, kl, (void *)(uintptr_t)(id + 1));
}

static uint64_t suggest_get(fy_pull_consumer *c, const fy_queue *q) {
  char key[FY_CLIENT_TOPIC_MAX + FY_CLIENT_NAME_MAX + 16];
  size_t kl = suggest_key(q, key, sizeof key);
  void *v = fy_strmap_get(c->suggest, key, kl);
  return v ? (uint64_t)(uintptr_t)v - 1 : 0;
}

struct pull_build {
  struct fy__arena *a;
  fy_message_view *views;
  size_t n;
  const struct fy__sub *sub;
  const char *broker_name;
  uint64_t broker_id;
};

static int pull_add(const struct fy_msg *m, void *arg) {
  struct pull_build *b = arg;
  const char *tags = "";
  size_t tl = 0;
  char tbuf[FY__EXPR_MAX];
  if (fy_props_get(m->props, m->props_len, FY_PROP_TAGS, &tags, &tl)) {
    if (tl >= sizeof tbuf)
      tl = sizeof tbuf - 1;
    memcpy(tbuf, tags, tl);
  }
  tbuf[tl] = '\0';
  if (!fy__sub_match(b->sub, tbuf))
    return 0; /* the client's re-check of the tag string (hash collisions) */
  return fy__msg_view_build(m, b->broker_name, b->broker_id, b->a, &b->views[b->n++]);
}

static void on_pull(struct fy__op *base, int err, const fy_frame *resp, void *ctx) {
  struct pull_op *op = (struct pull_op *)base;
  fy_pull_consumer *c = op->c;
  if (err) {
    suggest_set(c, &op->q, 0);
    fy__op_errtext(base, "pull %s/%u from %s: %s", op->q.broker_name, op->q.queue_id, op->addr,
                   fy_client_strerror(err));
    fy__op_complete(base, err);
    return;
  }
  int st = fy__pull_status(resp->status);
  if (st < 0) {
    char text[160] = "";
    fy_frame_error_text(resp, text, sizeof text);
    fy__op_errtext(base, "pull %s/%u from %s: %s: %s", op->q.broker_name, op->q.queue_id,
                   op->addr, fy__cl_status_name(resp->status), text);
    suggest_set(c, &op->q, 0);
    fy__op_complete(base, fy__cl_status_err(resp->status));
    return;
  }
  Ferry__V1__PullResponse *pr;
  if (fy_frame_unpack(resp, &ferry__v1__pull_response__descriptor, (ProtobufCMessage **)&pr)) {
    fy__op_complete(base, -FY_EDECODE);
    return;
  }
  uint32_t count = st == FY_PULL_FOUND ? pr->count : 0;
  int werr = fy__records_walk(resp->raw, st == FY_PULL_FOUND ? resp->raw_len : 0, count, NULL,
                              NULL);
  if (werr < 0) {
    fy__op_errtext(base, "pull %s/%u from %s: the %u records of the answer are not valid",
                   op->q.broker_name, op->q.queue_id, op->addr, count);
    fy_pb_free(&pr->base);
    suggest_set(c, &op->q, 0);
    fy__op_complete(base, werr);
    return;
  }
  struct fy__arena *a;
  fy_pull_result *r = fy__result_new(sizeof *r, resp->raw_len + (size_t)count * 512, &a);
  struct pull_build b = {.a = a, .sub = &op->sub, .broker_name = op->q.broker_name,
                         .broker_id = op->used_id};
  if (r)
    b.views = fy__cl_arena_alloc(a, (count ? count : 1) * sizeof *b.views);
  if (!r || !b.views ||
      fy__records_walk(resp->raw, st == FY_PULL_FOUND ? resp->raw_len : 0, count, pull_add, &b) <
          0) {
    fy_result_free(r);
    fy_pb_free(&pr->base);
    fy__op_complete(base, -ENOMEM);
    return;
  }
  r->status = (fy_pull_status)st;
  r->next_offset = pr->next_offset;
  r->min_offset = pr->min_offset;
  r->max_offset = pr->max_offset;
  r->suggest_broker_id = pr->suggest_broker_id;
  r->broker_id = op->used_id;
  r->nmsgs = b.n;
  r->msgs = b.views;
  suggest_set(c, &op->q, pr->suggest_broker_id);
  fy_pb_free(&pr->base);
  op->result = r;
  fy__op_complete(base, 0);
}

static void pull_route(struct fy__op *base, int err, struct fy__rentry *e) {
  struct pull_op *op = (struct pull_op *)base;
  if (!e->route) {
    fy__op_complete(base, err ? err : -FY_ENO_BROKER);
    return;
  }
  uint64_t want = op->opts.pin_broker_id ? op->opts.broker_id : suggest_get(op->c, &op->q);
  const char *addr =
      fy__route_sub_addr(base->cl, e->route, op->q.broker_name, want, &op->used_id);
  if (!addr) {
    fy__op_errtext(base, "brokerName '%s' has no address in the route of '%s'", op->q.broker_name,
                   op->q.topic);
    fy__op_complete(base, -FY_ENO_BROKER);
    return;
  }
  snprintf(op->addr, sizeof op->addr, "%s", addr);
  Ferry__V1__PullRequest req;
  int64_t hashes[FY__TAGS_MAX];
  fy__pull_request_init(&req, op->c->group, op->q.topic, op->q.queue_id, op->offset,
                        op->opts.max_msgs, op->opts.max_bytes, op->opts.suspend_timeout_ms,
                        &op->sub, hashes);
  int cerr = fy__op_call(base, op->addr, FERRY__V1__OP__OP_PULL, &req.base, NULL, 0, 0, on_pull,
                         NULL);
  if (cerr)
    fy__op_complete(base, cerr);
}

static void pull_start(struct fy__op *base) {
  struct pull_op *op = (struct pull_op *)base;
  int err = fy__route_get(base, op->q.topic, false, pull_route);
  if (err)
    fy__op_complete(base, err);
}

static void pull_destroy(struct fy__op *base) {
  struct pull_op *op = (struct pull_op *)base;
  fy_result_free(op->result);
  pc_op_done(op->c);
}

int fy_pull_consumer_pull(fy_pull_consumer *c, const fy_queue *q, uint64_t offset,
                          const fy_pull_options *opts, fy_pull_result **out) {
  if (!queue_ok(q))
    return bad_queue();
  struct pull_op *op = calloc(1, sizeof *op);
  if (!op)
    return -ENOMEM;
  if (opts)
    op->opts = *opts;
  int err = fy__sub_parse(&op->sub, q->topic, op->opts.expression);
  if (err) {
    fy__set_last_error("bad tag expression '%s'", op->opts.expression);
    free(op);
    return err;
  }
  op->opts.expression = NULL;
  if (!op->opts.max_msgs)
    op->opts.max_msgs = 32;
  if (!op->opts.max_bytes)
    op->opts.max_bytes = 4u << 20;
  uint32_t timeout = op->opts.timeout_ms;
  if (!timeout)
    timeout = op->opts.suspend_timeout_ms ? op->opts.suspend_timeout_ms + 5000
                                          : c->cl->cfg.timeout_ms;
  fy__op_init(&op->base, c->cl, timeout, true, pull_start, NULL, pull_destroy);
  op->c = c;
  pc_op_new(c);
  op->q = *q;
  op->offset = offset;
  bool posted;
  err = fy__op_run(&op->base, &posted);
  if (!posted)
    return err;
  if (!err) {
    *out = op->result;
    op->result = NULL;
  }
  fy__op_unref(&op->base);
  return err;
}

int fy_pull_consumer_new(fy_client *cl, const char *group, fy_pull_consumer **out) {
  if (fy__cl_name_check("consumer group", group, FY_CLIENT_GROUP_MAX))
    return -EINVAL;
  fy_pull_consumer *c = calloc(1, sizeof *c);
  if (!c)
    return -ENOMEM;
  c->cl = cl;
  snprintf(c->group, sizeof c->group, "%s", group);
  c->suggest = fy_strmap_new();
  if (!c->suggest) {
    free(c);
    return -ENOMEM;
  }
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->cv, NULL);
  pthread_mutex_lock(&cl->mu);
  c->all_next = cl->all_pull;
  cl->all_pull = c;
  pthread_mutex_unlock(&cl->mu);
  *out = c;
  return 0;
}

void fy_pull_consumer_close(fy_pull_consumer *c) {
  if (!c)
    return;
  fy_client *cl = c->cl;
  /* Operations that outlived their caller (client thread too slow) still
   * refer to c: wait until they are freed (each has a deadline). */
  pthread_mutex_lock(&c->mu);
  while (c->live_ops > 0)
    pthread_cond_wait(&c->cv, &c->mu);
  pthread_mutex_unlock(&c->mu);
  pthread_mutex_lock(&cl->mu);
  for (fy_pull_consumer **pp = &cl->all_pull; *pp; pp = &(*pp)->all_next)
    if (*pp == c) {
      *pp = c->all_next;
      break;
    }
  pthread_mutex_unlock(&cl->mu);
  fy_strmap_free(c->suggest);
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->cv);
  free(c);
}
