/*
 * Admin calls (what mqadmin is built on). Each is one operation that asks
 * the name servers and/or fans out to brokers and merges the answers
 * within one deadline. Fan-out calls to brokers get the operation's time
 * less FAN_MARGIN_MS, so a broker that does not answer shows up as that
 * broker's error in a partial result (topic status, consumer progress,
 * query by key) rather than as a timeout of the whole call.
 *
 * Which broker of a brokerName: writes (topic and subscription-group
 * updates, offset resets) go to masters; reads (offsets, progress, queries)
 * to the master, or to a slave when the route has no master.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/cl_int.h"
#include "common/err.h"
#include "common/log.h"

#define MOD "admin"
#define FAN_MARGIN_MS 100u

enum kind {
  K_UPDATE_TOPIC,
  K_DELETE_TOPIC,
  K_TOPIC_LIST,
  K_TOPIC_ROUTE,
  K_TOPIC_STATUS,
  K_CLUSTER_LIST,
  K_BROKER_STATUS,
  K_HA_STATUS,
  K_TOPIC_CONFIGS,
  K_PROGRESS,
  K_RESET_OFFSET,
  K_QUERY_ID,
  K_QUERY_KEY,
  K_UPDATE_SUB_GROUP,
  K_DELETE_SUB_GROUP,
  K_SUB_GROUP_CONFIGS,
};

struct part {
  char broker_name[FY_CLIENT_NAME_MAX];
  uint64_t broker_id;
  uint8_t *raw;
  size_t len;
  uint32_t count;
};

struct admin_op {
  struct fy__op base;
  enum kind kind;
  char topic[FY_CLIENT_TOPIC_MAX];
  char group[FY_CLIENT_GROUP_MAX];
  char cluster[FY_CLIENT_NAME_MAX];
  char addr[FY_CLIENT_ADDR_MAX];
  char key[512];
  fy_topic_config tc;
  fy_sub_group_config sg; /* sg.group points at op->group */
  bool remove_offset;
  int64_t ts, begin, end;
  uint32_t max;
  size_t outstanding;
  size_t answered, failed;
  int first_err;
  void *result;
  struct fy__arena *ra; /* result's arena */
  /* topic status */
  fy_queue_status *qs;
  size_t nqs;
  /* consumer progress */
  fy_queue_progress *prog;
  size_t nprog, capprog;
  /* query by key / id */
  struct part *parts;
  size_t nparts;
};

static uint32_t fan_timeout(struct admin_op *op) {
  uint32_t r = fy__op_remaining(&op->base);
  return r > 2 * FAN_MARGIN_MS ? r - FAN_MARGIN_MS : r;
}

static void note_err(struct admin_op *op, int err, const char *who, const fy_frame *resp) {
  op->failed++;
  if (op->first_err)
    return;
  op->first_err = err;
  char text[160] = "";
  if (resp)
    fy_frame_error_text(resp, text, sizeof text);
  const char *what = resp ? fy__cl_status_name(resp->status) : fy_client_strerror(err);
  fy__op_errtext(&op->base, "%s: %s%s%s", who, what, text[0] ? ": " : "", text);
}

/* 0, or the error of a reply (recorded). */
static int reply_err(struct admin_op *op, int err, const fy_frame *resp, const char *who) {
  if (err) {
    note_err(op, err, who, NULL);
    return err;
  }
  int serr = fy__cl_status_err(resp->status);
  if (serr)
    note_err(op, serr, who, resp);
  return serr;
}

static void admin_destroy(struct fy__op *base) {
  struct admin_op *op = (struct admin_op *)base;
  fy_result_free(op->result);
  free(op->qs);
  free(op->prog);
  for (size_t i = 0; i < op->nparts; i++)
    free(op->parts[i].raw);
  free(op->parts);
}

static void fan_done(struct admin_op *op);

/* ------------------------------------------------------------ conversions */

static const fy_broker_info *conv_brokers(struct fy__arena *a, Ferry__V1__BrokerData **bd,
                                          size_t n) {
  fy_broker_info *out = fy__cl_arena_alloc(a, (n ? n : 1) * sizeof *out);
  if (!out)
    return NULL;
  for (size_t i = 0; i < n; i++) {
    out[i].cluster = fy__cl_arena_strdup(a, bd[i]->cluster);
    out[i].broker_name = fy__cl_arena_strdup(a, bd[i]->broker_name);
    fy_broker_addr *ad = fy__cl_arena_alloc(a, (bd[i]->n_addrs ? bd[i]->n_addrs : 1) * sizeof *ad);
    if (!out[i].cluster || !out[i].broker_name || !ad)
      return NULL;
    for (size_t j = 0; j < bd[i]->n_addrs; j++) {
      ad[j].broker_id = bd[i]->addrs[j]->broker_id;
      ad[j].addr = fy__cl_arena_strdup(a, bd[i]->addrs[j]->addr);
      if (!ad[j].addr)
        return NULL;
    }
    out[i].addrs = ad;
    out[i].naddrs = bd[i]->n_addrs;
  }
  return out;
}

static int cmp_broker(const void *x, const void *y) {
  const fy_broker_info *a = x, *b = y;
  int c = strcmp(a->cluster, b->cluster);
  return c ? c : strcmp(a->broker_name, b->broker_name);
}

static int cmp_baddr(const void *x, const void *y) {
  const fy_broker_addr *a = x, *b = y;
  return a->broker_id < b->broker_id ? -1 : a->broker_id > b->broker_id;
}

/* --------------------------------------------------- name-server answers */

static void on_ns_answer(struct fy__op *base, int err, const fy_frame *resp, void *ctx) {
  struct admin_op *op = (struct admin_op *)base;
  if (reply_err(op, err, resp, "name server")) {
    fy__op_complete(base, op->first_err);
    return;
  }
  struct fy__arena *a;
  switch (op->kind) {
  case K_TOPIC_LIST: {
    Ferry__V1__TopicList *tl;
    if (fy_frame_unpack(resp, &ferry__v1__topic_list__descriptor, (ProtobufCMessage **)&tl))
      goto decode;
    fy_string_list *l = fy__result_new(sizeof *l, tl->n_topics * 32, &a);
    const char **items = l ? fy__cl_arena_alloc(a, (tl->n_topics + 1) * sizeof *items) : NULL;
    bool ok = items != NULL;
    for (size_t i = 0; ok && i < tl->n_topics; i++)
      ok = (items[i] = fy__cl_arena_strdup(a, tl->topics[i])) != NULL;
    if (ok) {
      l->n = tl->n_topics;
      l->items = items;
    }
    fy_pb_free(&tl->base);
    op->result = l;
    fy__op_complete(base, ok ? 0 : -ENOMEM);
    return;
  }
  case K_TOPIC_ROUTE: {
    Ferry__V1__TopicRoute *tr;
    if (fy_frame_unpack(resp, &ferry__v1__topic_route__descriptor, (ProtobufCMessage **)&tr))
      goto decode;
    fy_topic_route *r = fy__result_new(sizeof *r, 1024, &a);
    fy_queue_data *qd = r ? fy__cl_arena_alloc(a, (tr->n_queues + 1) * sizeof *qd) : NULL;
    bool ok = qd != NULL;
    for (size_t i = 0; ok && i < tr->n_queues; i++) {
      qd[i].broker_name = fy__cl_arena_strdup(a, tr->queues[i]->broker_name);
      qd[i].read_queues = tr->queues[i]->read_queues;
      qd[i].write_queues = tr->queues[i]->write_queues;
      qd[i].perm = tr->queues[i]->perm;
      ok = qd[i].broker_name != NULL;
    }
    const fy_broker_info *bi = ok ? conv_brokers(a, tr->brokers, tr->n_brokers) : NULL;
    if (bi) {
      r->queues = qd;
      r->nqueues = tr->n_queues;
      r->brokers = bi;
      r->nbrokers = tr->n_brokers;
    }
    fy_pb_free(&tr->base);
    op->result = r;
    fy__op_complete(base, bi ? 0 : -ENOMEM);
    return;
  }
  case K_CLUSTER_LIST: {
    Ferry__V1__ClusterInfo *ci;
    if (fy_frame_unpack(resp, &ferry__v1__cluster_info__descriptor, (ProtobufCMessage **)&ci))
      goto decode;
    fy_cluster_info *r = fy__result_new(sizeof *r, 1024, &a);
    const fy_broker_info *bi = r ? conv_brokers(a, ci->brokers, ci->n_brokers) : NULL;
    if (bi) {
      qsort((void *)bi, ci->n_brokers, sizeof *bi, cmp_broker);
      for (size_t i = 0; i < ci->n_brokers; i++)
        qsort((void *)bi[i].addrs, bi[i].naddrs, sizeof *bi[i].addrs, cmp_baddr);
      r->brokers = bi;
      r->nbrokers = ci->n_brokers;
    }
    fy_pb_free(&ci->base);
    op->result = r;
    fy__op_complete(base, bi ? 0 : -ENOMEM);
    return;
  }
  default: fy_assert(!"unexpected name-server answer");
  }
decode:
  fy__op_errtext(base, "name server: malformed answer");
  fy__op_complete(base, -FY_EDECODE);
}

/* ------------------------------------------------------- single-broker calls */

static void on_single(struct fy__op *base, int err, const fy_frame *resp, void *ctx) {
  struct admin_op *op = (struct admin_op *)base;
  if (reply_err(op, err, resp, op->addr)) {
    fy__op_complete(base, op->first_err);
    return;
  }
  struct fy__arena *a;
  switch (op->kind) {
  case K_BROKER_STATUS:
  case K_HA_STATUS: {
    Ferry__V1__BrokerStatus *bs;
    if (fy_frame_unpack(resp, &ferry__v1__broker_status__descriptor, (ProtobufCMessage **)&bs))
      goto decode;
    fy_kv_list *l = fy__result_new(sizeof *l, bs->n_entries * 48, &a);
    fy_kv *kv = l ? fy__cl_arena_alloc(a, (bs->n_entries + 1) * sizeof *kv) : NULL;
    bool ok = kv != NULL;
    for (size_t i = 0; ok && i < bs->n_entries; i++) {
      kv[i].key = fy__cl_arena_strdup(a, bs->entries[i]->key);
      kv[i].value = fy__cl_arena_strdup(a, bs->entries[i]->value);
      ok = kv[i].key && kv[i].value;
    }
    if (ok) {
      l->n = bs->n_entries;
      l->items = kv;
    }
    fy_pb_free(&bs->base);
    op->result = l;
    fy__op_complete(base, ok ? 0 : -ENOMEM);
    return;
  }
  case K_TOPIC_CONFIGS: {
    Ferry__V1__TopicConfigs *tc;
    if (fy_frame_unpack(resp, &ferry__v1__topic_configs__descriptor, (ProtobufCMessage **)&tc))
      goto decode;
    fy_topic_config_list *l = fy__result_new(sizeof *l, tc->n_topics * 64, &a);
    fy_topic_config *it = l ? fy__cl_arena_alloc(a, (tc->n_topics + 1) * sizeof *it) : NULL;
    bool ok = it != NULL;
    for (size_t i = 0; ok && i < tc->n_topics; i++) {
      it[i].topic = fy__cl_arena_strdup(a, tc->topics[i]->topic);
      it[i].read_queues = tc->topics[i]->read_queues;
      it[i].write_queues = tc->topics[i]->write_queues;
      it[i].perm = tc->topics[i]->perm;
      it[i].order = tc->topics[i]->order;
      ok = it[i].topic != NULL;
    }
    if (ok) {
      l->n = tc->n_topics;
      l->items = it;
    }
    fy_pb_free(&tc->base);
    op->result = l;
    fy__op_complete(base, ok ? 0 : -ENOMEM);
    return;
  }
  case K_SUB_GROUP_CONFIGS: {
    Ferry__V1__SubGroupConfigs *gc;
    if (fy_frame_unpack(resp, &ferry__v1__sub_group_configs__descriptor, (ProtobufCMessage **)&gc))
      goto decode;
    fy_sub_group_config_list *l = fy__result_new(sizeof *l, gc->n_groups * 64, &a);
    fy_sub_group_config *it = l ? fy__cl_arena_alloc(a, (gc->n_groups + 1) * sizeof *it) : NULL;
    bool ok = it != NULL;
    for (size_t i = 0; ok && i < gc->n_groups; i++) {
      const Ferry__V1__SubGroupConfig *g = gc->groups[i];
      it[i].group = fy__cl_arena_strdup(a, g->group);
      it[i].consume_enable = g->consume_enable;
      it[i].consume_from_min_enable = g->consume_from_min_enable;
      it[i].consume_broadcast_enable = g->consume_broadcast_enable;
      it[i].retry_queue_nums = g->retry_queues;
      it[i].retry_max_times = g->retry_max_times;
      it[i].broker_id = g->broker_id;
      it[i].which_broker_when_consume_slowly = g->which_broker_when_consume_slowly;
      it[i].notify_consumer_ids_changed_enable = g->notify_consumer_ids_changed_enable;
      ok = it[i].group != NULL;
    }
    if (ok) {
      l->n = gc->n_groups;
      l->items = it;
    }
    fy_pb_free(&gc->base);
    op->result = l;
    fy__op_complete(base, ok ? 0 : -ENOMEM);
    return;
  }
  case K_QUERY_ID: {
    Ferry__V1__QueryResponse *qr;
    if (fy_frame_unpack(resp, &ferry__v1__query_response__descriptor, (ProtobufCMessage **)&qr))
      goto decode;
    uint32_t count = qr->count;
    fy_pb_free(&qr->base);
    fy_message_list *l;
    int berr = fy__msg_list_build(resp->raw, resp->raw_len, count, "", 0, &l);
    if (berr) {
      fy__op_errtext(base, "%s: the records of the answer are not valid", op->addr);
      fy__op_complete(base, berr);
      return;
    }
    op->result = l;
    fy__op_complete(base, l->n ? 0 : -FY_ENOT_FOUND);
    return;
  }
  default: /* update/delete of a topic or a subscription group on one broker */
    fy__op_complete(base, 0);
    return;
  }
decode:
  fy__op_errtext(base, "%s: malformed answer", op->addr);
  fy__op_complete(base, -FY_EDECODE);
}

/* ------------------------------------------------- topic and group updates */

/* The request of a write that goes to one broker or to every master of a
 * cluster; it points into op and m, which must outlive its sending. */
struct write_msg {
  Ferry__V1__UpdateTopicRequest u;
  Ferry__V1__TopicConfig tc;
  Ferry__V1__DeleteTopicRequest d;
  Ferry__V1__UpdateSubGroupRequest ug;
  Ferry__V1__SubGroupConfig gc;
  Ferry__V1__DeleteSubGroupRequest dg;
};

static void write_msg_build(struct admin_op *op, struct write_msg *m, const ProtobufCMessage **msg,
                            uint16_t *code) {
  Ferry__V1__UpdateTopicRequest *u = &m->u;
  Ferry__V1__TopicConfig *tc = &m->tc;
  Ferry__V1__DeleteTopicRequest *d = &m->d;
  ferry__v1__update_topic_request__init(u);
  ferry__v1__topic_config__init(tc);
  ferry__v1__delete_topic_request__init(d);
  ferry__v1__update_sub_group_request__init(&m->ug);
  ferry__v1__sub_group_config__init(&m->gc);
  ferry__v1__delete_sub_group_request__init(&m->dg);
  if (op->kind == K_UPDATE_SUB_GROUP) {
    Ferry__V1__SubGroupConfig *g = &m->gc;
    g->group = op->group;
    g->consume_enable = op->sg.consume_enable;
    g->consume_from_min_enable = op->sg.consume_from_min_enable;
    g->consume_broadcast_enable = op->sg.consume_broadcast_enable;
    g->retry_queues = op->sg.retry_queue_nums;
    g->retry_max_times = op->sg.retry_max_times;
    g->broker_id = op->sg.broker_id;
    g->which_broker_when_consume_slowly = op->sg.which_broker_when_consume_slowly;
    g->notify_consumer_ids_changed_enable = op->sg.notify_consumer_ids_changed_enable;
    m->ug.config = g;
    *msg = &m->ug.base;
    *code = FERRY__V1__OP__OP_UPDATE_SUB_GROUP;
  } else if (op->kind == K_DELETE_SUB_GROUP) {
    m->dg.group = op->group;
    m->dg.remove_offset = op->remove_offset;
    *msg = &m->dg.base;
    *code = FERRY__V1__OP__OP_DELETE_SUB_GROUP;
  } else if (op->kind == K_UPDATE_TOPIC) {
    tc->topic = op->topic;
    tc->read_queues = op->tc.read_queues;
    tc->write_queues = op->tc.write_queues;
    tc->perm = op->tc.perm;
    tc->order = op->tc.order;
    u->config = tc;
    *msg = &u->base;
    *code = FERRY__V1__OP__OP_UPDATE_TOPIC;
  } else {
    d->topic = op->topic;
    *msg = &d->base;
    *code = FERRY__V1__OP__OP_DELETE_TOPIC;
  }
}

static void on_fan_status(struct fy__op *base, int err, const fy_frame *resp, void *ctx) {
  struct admin_op *op = (struct admin_op *)base;
  /* Deleting a group from a cluster: a master without it is no failure. */
  bool absent = op->kind == K_DELETE_SUB_GROUP && !err &&
                resp->status == FERRY__V1__STATUS__CONSUMER_GROUP_NOT_EXIST;
  if (!absent && !reply_err(op, err, resp, ctx ? (const char *)ctx : "broker"))
    op->answered++;
  free(ctx);
  fan_done(op);
}

static void fan_done(struct admin_op *op) {
  fy_assert(op->outstanding > 0);
  if (--op->outstanding > 0)
    return;
  struct fy__op *base = &op->base;
  switch (op->kind) {
  case K_UPDATE_TOPIC:
  case K_DELETE_TOPIC:
  case K_UPDATE_SUB_GROUP:
  case K_RESET_OFFSET: fy__op_complete(base, op->first_err); return;
  case K_DELETE_SUB_GROUP:
    if (!op->first_err && !op->answered) {
      fy__op_errtext(base, "subscription group '%s' exists on no master of cluster '%s'",
                     op->group, op->cluster);
      op->first_err = -FY_ENO_GROUP;
    }
    fy__op_complete(base, op->first_err);
    return;
  case K_TOPIC_STATUS: {
    fy_topic_status *r = op->result;
    fy_queue_status *qs = fy__cl_arena_alloc(op->ra, (op->nqs + 1) * sizeof *qs);
    if (!qs) {
      fy__op_complete(base, -ENOMEM);
      return;
    }
    if (op->nqs)
      memcpy(qs, op->qs, op->nqs * sizeof *qs);
    r->queues = qs;
    r->n = op->nqs;
    fy__op_complete(base, op->answered || !op->nqs ? 0 : op->first_err);
    return;
  }
  case K_PROGRESS: {
    fy_consumer_progress *r = op->result;
    fy_queue_progress *qp = fy__cl_arena_alloc(op->ra, (op->nprog + 1) * sizeof *qp);
    if (!qp) {
      fy__op_complete(base, -ENOMEM);
      return;
    }
    if (op->nprog)
      memcpy(qp, op->prog, op->nprog * sizeof *qp);
    r->queues = qp;
    r->n = op->nprog;
    r->brokers_failed = op->failed;
    fy__op_complete(base, op->answered ? 0 : op->first_err ? op->first_err : -FY_ENO_BROKER);
    return;
  }
  case K_QUERY_KEY: {
    if (!op->answered) {
      fy__op_complete(base, op->first_err ? op->first_err : -FY_ENO_BROKER);
      return;
    }
    size_t total = 0, bytes = 0;
    for (size_t i = 0; i < op->nparts; i++) {
      total += op->parts[i].count;
      bytes += op->parts[i].len;
    }
    fy_message_list *l = fy__result_new(sizeof *l, bytes + total * 512, &op->ra);
    fy_message_view *views = l ? fy__cl_arena_alloc(op->ra, (total + 1) * sizeof *views) : NULL;
    if (!views) {
      fy_result_free(l);
      fy__op_complete(base, -ENOMEM);
      return;
    }
    op->result = l;
    size_t n = 0;
    for (size_t i = 0; i < op->nparts; i++) {
      fy_message_list *one;
      if (fy__msg_list_build(op->parts[i].raw, op->parts[i].len, op->parts[i].count,
                             op->parts[i].broker_name, op->parts[i].broker_id, &one))
        continue; /* invalid part: already reported as such below */
      /* Re-home the views into the merged result's arena. */
      for (size_t j = 0; j < one->n && n < total; j++) {
        const fy_message_view *v = &one->msgs[j];
        fy_message_view *w = &views[n++];
        *w = *v;
        w->topic = fy__cl_arena_strdup(op->ra, v->topic);
        w->broker_name = fy__cl_arena_strdup(op->ra, v->broker_name);
        uint8_t *body = fy__cl_arena_alloc(op->ra, v->body_len);
        if (body && v->body_len)
          memcpy(body, v->body, v->body_len);
        w->body = body;
        w->tags = fy__cl_arena_strdup(op->ra, v->tags);
        w->keys = fy__cl_arena_strdup(op->ra, v->keys);
        w->msg_id = fy__cl_arena_strdup(op->ra, v->msg_id);
        w->offset_msg_id = fy__cl_arena_strdup(op->ra, v->offset_msg_id);
        w->born_host = fy__cl_arena_strdup(op->ra, v->born_host);
        w->store_host = fy__cl_arena_strdup(op->ra, v->store_host);
        fy_kv *kv = fy__cl_arena_alloc(op->ra, (v->nprops + 1) * sizeof *kv);
        for (size_t k = 0; kv && k < v->nprops; k++) {
          kv[k].key = fy__cl_arena_strdup(op->ra, v->props[k].key);
          kv[k].value = fy__cl_arena_strdup(op->ra, v->props[k].value);
        }
        w->props = kv;
        if (!w->topic || !w->broker_name || !body || !w->tags || !w->keys || !w->msg_id ||
            !w->offset_msg_id || !w->born_host || !w->store_host || !kv) {
          fy_result_free(one);
          fy__op_complete(base, -ENOMEM);
          return;
        }
      }
      fy_result_free(one);
    }
    l->msgs = views;
    l->n = n;
    fy__op_complete(base, 0);
    return;
  }
  default: fy_assert(!"unexpected fan-out");
  }
}

static void on_cluster_for_write(struct fy__op *base, int err, const fy_frame *resp, void *ctx) {
  struct admin_op *op = (struct admin_op *)base;
  if (reply_err(op, err, resp, "name server")) {
    fy__op_complete(base, op->first_err);
    return;
  }
  Ferry__V1__ClusterInfo *ci;
  if (fy_frame_unpack(resp, &ferry__v1__cluster_info__descriptor, (ProtobufCMessage **)&ci)) {
    fy__op_complete(base, -FY_EDECODE);
    return;
  }
  struct write_msg m;
  const ProtobufCMessage *msg;
  uint16_t code;
  write_msg_build(op, &m, &msg, &code);
  op->outstanding = 1;
  size_t masters = 0;
  for (size_t i = 0; i < ci->n_brokers; i++) {
    const Ferry__V1__BrokerData *b = ci->brokers[i];
    if (!b->cluster || strcmp(b->cluster, op->cluster) != 0)
      continue;
    for (size_t j = 0; j < b->n_addrs; j++) {
      if (b->addrs[j]->broker_id != 0)
        continue;
      masters++;
      char *who = strdup(b->addrs[j]->addr);
      if (fy__op_call(base, b->addrs[j]->addr, code, msg, NULL, 0, fan_timeout(op),
                      on_fan_status, who) == 0)
        op->outstanding++;
      else {
        note_err(op, -FY_EBUSY, b->addrs[j]->addr, NULL);
        free(who);
      }
    }
  }
  fy_pb_free(&ci->base);
  if (!masters) {
    fy__op_errtext(base, "cluster '%s' has no master in the name servers", op->cluster);
    fy__op_complete(base, -FY_ENO_BROKER);
    return;
  }
  fan_done(op);
}

/* ------------------------------------------------------ route-based fan-out */

static void on_status_offset(struct fy__op *base, int err, const fy_frame *resp, void *ctx) {
  struct admin_op *op = (struct admin_op *)base;
  size_t k = (size_t)(uintptr_t)ctx, i = k / 2;
  fy_queue_status *q = &op->qs[i];
  if (!err)
    err = fy__cl_status_err(resp->status);
  Ferry__V1__QueueOffsetResponse *r = NULL;
  if (!err && fy_frame_unpack(resp, &ferry__v1__queue_offset_response__descriptor,
                              (ProtobufCMessage **)&r))
    err = -FY_EDECODE;
  if (err) {
    if (!q->err)
      q->err = err;
    note_err(op, err, q->broker_name, NULL);
  } else {
    if (k % 2)
      q->max_offset = r->offset;
    else
      q->min_offset = r->offset;
    fy_pb_free(&r->base);
    op->answered++;
  }
  fan_done(op);
}

static void on_progress(struct fy__op *base, int err, const fy_frame *resp, void *ctx) {
  struct admin_op *op = (struct admin_op *)base;
  char *bn = ctx;
  if (reply_err(op, err, resp, bn)) {
    free(bn);
    fan_done(op);
    return;
  }
  Ferry__V1__ConsumerProgress *cp;
  if (fy_frame_unpack(resp, &ferry__v1__consumer_progress__descriptor, (ProtobufCMessage **)&cp)) {
    note_err(op, -FY_EDECODE, bn, NULL);
    free(bn);
    fan_done(op);
    return;
  }
  op->answered++;
  fy_consumer_progress *r = op->result;
  for (size_t i = 0; i < cp->n_queues; i++) {
    const Ferry__V1__QueueProgress *x = cp->queues[i];
    if (op->nprog == op->capprog) {
      size_t cap = op->capprog ? 2 * op->capprog : 64;
      fy_queue_progress *np = realloc(op->prog, cap * sizeof *np);
      if (!np)
        break;
      op->prog = np;
      op->capprog = cap;
    }
    fy_queue_progress *p = &op->prog[op->nprog];
    p->topic = fy__cl_arena_strdup(op->ra, x->topic && *x->topic ? x->topic : op->topic);
    p->broker_name = fy__cl_arena_strdup(op->ra, x->broker_name && *x->broker_name ? x->broker_name
                                                                                 : bn);
    if (!p->topic || !p->broker_name)
      break;
    p->queue_id = x->queue_id;
    p->broker_offset = x->broker_offset;
    p->consumer_offset = x->consumer_offset;
    p->lag = x->broker_offset > x->consumer_offset ? x->broker_offset - x->consumer_offset : 0;
    p->last_timestamp = x->last_timestamp;
    r->total_lag += p->lag;
    op->nprog++;
  }
  fy_pb_free(&cp->base);
  free(bn);
  fan_done(op);
}

static void on_query_key(struct fy__op *base, int err, const fy_frame *resp, void *ctx) {
  struct admin_op *op = (struct admin_op *)base;
  size_t i = (size_t)(uintptr_t)ctx;
  struct part *pt = &op->parts[i];
  if (reply_err(op, err, resp, pt->broker_name)) {
    fan_done(op);
    return;
  }
  Ferry__V1__QueryResponse *qr;
  if (fy_frame_unpack(resp, &ferry__v1__query_response__descriptor, (ProtobufCMessage **)&qr)) {
    note_err(op, -FY_EDECODE, pt->broker_name, NULL);
    fan_done(op);
    return;
  }
  uint32_t count = qr->count;
  fy_pb_free(&qr->base);
  if (fy__records_walk(resp->raw, resp->raw_len, count, NULL, NULL) < 0) {
    note_err(op, -FY_ECORRUPT, pt->broker_name, NULL);
    fan_done(op);
    return;
  }
  pt->raw = malloc(resp->raw_len ? resp->raw_len : 1);
  if (!pt->raw) {
    note_err(op, -ENOMEM, pt->broker_name, NULL);
    fan_done(op);
    return;
  }
  memcpy(pt->raw, resp->raw, resp->raw_len);
  pt->len = resp->raw_len;
  pt->count = count;
  op->answered++;
  fan_done(op);
}

/* Every brokerName of a list of BrokerData-like entries: calls issue for
 * each with its read address. */
static void fan_brokers(struct admin_op *op, const struct fy__route *r) {
  struct fy__op *base = &op->base;
  op->outstanding = 1;
  switch (op->kind) {
  case K_TOPIC_STATUS: {
    size_t n = 0;
    for (size_t i = 0; i < r->nqd; i++)
      n += r->qd[i].read_queues;
    op->qs = calloc(n + 1, sizeof *op->qs);
    fy_topic_status *res = fy__result_new(sizeof *res, n * 32 + 256, &op->ra);
    if (!op->qs || !res) {
      fy_result_free(res);
      fy__op_complete(base, -ENOMEM);
      return;
    }
    op->result = res;
    for (size_t i = 0; i < r->nqd; i++) {
      uint64_t id;
      const char *addr = fy__route_admin_addr(op->base.cl, r, r->qd[i].broker_name, &id);
      const char *bn = fy__cl_arena_strdup(op->ra, r->qd[i].broker_name);
      for (uint32_t q = 0; q < r->qd[i].read_queues; q++) {
        fy_queue_status *s = &op->qs[op->nqs++];
        s->broker_name = bn;
        s->queue_id = q;
        if (!addr) {
          s->err = -FY_ENO_BROKER;
          note_err(op, s->err, r->qd[i].broker_name, NULL);
          continue;
        }
        Ferry__V1__QueueOffsetRequest req = FERRY__V1__QUEUE_OFFSET_REQUEST__INIT;
        req.topic = op->topic;
        req.queue_id = q;
        for (int k = 0; k < 2; k++) {
          size_t ctx = (op->nqs - 1) * 2 + (size_t)k;
          uint16_t code = k ? FERRY__V1__OP__OP_GET_MAX_OFFSET : FERRY__V1__OP__OP_GET_MIN_OFFSET;
          int e = fy__op_call(base, addr, code, &req.base, NULL, 0, fan_timeout(op),
                              on_status_offset, (void *)(uintptr_t)ctx);
          if (e) {
            s->err = e;
            note_err(op, e, r->qd[i].broker_name, NULL);
          } else {
            op->outstanding++;
          }
        }
      }
    }
    break;
  }
  case K_PROGRESS: {
    fy_consumer_progress *res = fy__result_new(sizeof *res, 4096, &op->ra);
    if (!res) {
      fy__op_complete(base, -ENOMEM);
      return;
    }
    op->result = res;
    for (size_t i = 0; i < r->nbd; i++) {
      uint64_t id;
      const char *addr = fy__route_admin_addr(op->base.cl, r, r->bd[i].name, &id);
      if (!addr)
        continue;
      Ferry__V1__ConsumerProgressRequest req = FERRY__V1__CONSUMER_PROGRESS_REQUEST__INIT;
      req.group = op->group;
      req.topic = op->topic;
      char *bn = strdup(r->bd[i].name);
      if (bn && fy__op_call(base, addr, FERRY__V1__OP__OP_CONSUMER_PROGRESS, &req.base, NULL, 0,
                            fan_timeout(op), on_progress, bn) == 0)
        op->outstanding++;
      else {
        note_err(op, -FY_EBUSY, r->bd[i].name, NULL);
        free(bn);
      }
    }
    break;
  }
  case K_RESET_OFFSET: {
    for (size_t i = 0; i < r->nbd; i++) {
      uint64_t id;
      const char *addr = fy__route_admin_addr(op->base.cl, r, r->bd[i].name, &id);
      if (!addr)
        continue;
      Ferry__V1__ResetOffsetRequest req = FERRY__V1__RESET_OFFSET_REQUEST__INIT;
      req.group = op->group;
      req.topic = op->topic;
      req.timestamp = op->ts;
      char *who = strdup(r->bd[i].name);
      if (fy__op_call(base, addr, FERRY__V1__OP__OP_RESET_OFFSET_BY_TIME, &req.base, NULL, 0,
                      fan_timeout(op), on_fan_status, who) == 0)
        op->outstanding++;
      else {
        note_err(op, -FY_EBUSY, r->bd[i].name, NULL);
        free(who);
      }
    }
    if (op->outstanding == 1 && !op->first_err) {
      fy__op_errtext(base, "topic '%s' has no broker in its route", op->topic);
      op->first_err = -FY_ENO_BROKER;
    }
    break;
  }
  case K_QUERY_KEY: {
    op->parts = calloc(r->nbd + 1, sizeof *op->parts);
    if (!op->parts) {
      fy__op_complete(base, -ENOMEM);
      return;
    }
    for (size_t i = 0; i < r->nbd; i++) {
      uint64_t id;
      const char *addr = fy__route_admin_addr(op->base.cl, r, r->bd[i].name, &id);
      if (!addr)
        continue;
      struct part *pt = &op->parts[op->nparts];
      snprintf(pt->broker_name, sizeof pt->broker_name, "%s", r->bd[i].name);
      pt->broker_id = id;
      Ferry__V1__QueryByKeyRequest req = FERRY__V1__QUERY_BY_KEY_REQUEST__INIT;
      req.topic = op->topic;
      req.key = op->key;
      req.max = op->max;
      req.begin_timestamp = op->begin;
      req.end_timestamp = op->end;
      if (fy__op_call(base, addr, FERRY__V1__OP__OP_QUERY_BY_KEY, &req.base, NULL, 0,
                      fan_timeout(op), on_query_key, (void *)(uintptr_t)op->nparts) == 0) {
        op->nparts++;
        op->outstanding++;
      } else {
        note_err(op, -FY_EBUSY, r->bd[i].name, NULL);
      }
    }
    break;
  }
  default: fy_assert(!"not a fan-out");
  }
  fan_done(op);
}

static void on_admin_route(struct fy__op *base, int err, struct fy__rentry *e) {
  struct admin_op *op = (struct admin_op *)base;
  if (err || !e->route) {
    fy__op_complete(base, err ? err : -FY_ENO_BROKER);
    return;
  }
  fan_brokers(op, e->route);
}

static void on_cluster_for_read(struct fy__op *base, int err, const fy_frame *resp, void *ctx) {
  struct admin_op *op = (struct admin_op *)base;
  if (reply_err(op, err, resp, "name server")) {
    fy__op_complete(base, op->first_err);
    return;
  }
  op->first_err = 0;
  op->failed = 0;
  Ferry__V1__ClusterInfo *ci;
  if (fy_frame_unpack(resp, &ferry__v1__cluster_info__descriptor, (ProtobufCMessage **)&ci)) {
    fy__op_complete(base, -FY_EDECODE);
    return;
  }
  /* A route made of every brokerName: the brokers part is all fan_brokers
   * needs for consumer progress. */
  Ferry__V1__TopicRoute tr = FERRY__V1__TOPIC_ROUTE__INIT;
  tr.brokers = ci->brokers;
  tr.n_brokers = ci->n_brokers;
  struct fy__route *r = fy__route_from_pb(&tr);
  fy_pb_free(&ci->base);
  if (!r) {
    fy__op_complete(base, -ENOMEM);
    return;
  }
  fan_brokers(op, r);
  fy__route_free(r);
}

/* ------------------------------------------------------------------- start */

static void admin_start(struct fy__op *base) {
  struct admin_op *op = (struct admin_op *)base;
  int err = 0;
  switch (op->kind) {
  case K_UPDATE_TOPIC:
  case K_DELETE_TOPIC:
  case K_UPDATE_SUB_GROUP:
  case K_DELETE_SUB_GROUP:
    if (op->addr[0]) {
      struct write_msg m;
      const ProtobufCMessage *msg;
      uint16_t code;
      write_msg_build(op, &m, &msg, &code);
      err = fy__op_call(base, op->addr, code, msg, NULL, 0, 0, on_single, NULL);
    } else {
      Ferry__V1__GetClusterInfoRequest req = FERRY__V1__GET_CLUSTER_INFO_REQUEST__INIT;
      err = fy__op_ns_call(base, FERRY__V1__OP__OP_GET_CLUSTER_INFO, &req.base,
                           on_cluster_for_write, NULL);
    }
    break;
  case K_TOPIC_LIST: {
    Ferry__V1__GetTopicListRequest req = FERRY__V1__GET_TOPIC_LIST_REQUEST__INIT;
    err = fy__op_ns_call(base, FERRY__V1__OP__OP_GET_TOPIC_LIST, &req.base, on_ns_answer, NULL);
    break;
  }
  case K_TOPIC_ROUTE: {
    Ferry__V1__GetRouteRequest req = FERRY__V1__GET_ROUTE_REQUEST__INIT;
    req.topic = op->topic;
    err = fy__op_ns_call(base, FERRY__V1__OP__OP_GET_ROUTE, &req.base, on_ns_answer, NULL);
    break;
  }
  case K_CLUSTER_LIST: {
    Ferry__V1__GetClusterInfoRequest req = FERRY__V1__GET_CLUSTER_INFO_REQUEST__INIT;
    err = fy__op_ns_call(base, FERRY__V1__OP__OP_GET_CLUSTER_INFO, &req.base, on_ns_answer, NULL);
    break;
  }
  case K_BROKER_STATUS:
  case K_HA_STATUS: {
    Ferry__V1__BrokerStatusRequest req = FERRY__V1__BROKER_STATUS_REQUEST__INIT;
    err = fy__op_call(base, op->addr,
                      op->kind == K_HA_STATUS ? FERRY__V1__OP__OP_HA_STATUS
                                              : FERRY__V1__OP__OP_BROKER_STATUS,
                      &req.base, NULL, 0, 0, on_single, NULL);
    break;
  }
  case K_TOPIC_CONFIGS:
    err = fy__op_call(base, op->addr, FERRY__V1__OP__OP_GET_TOPIC_CONFIGS, NULL, NULL, 0, 0,
                      on_single, NULL);
    break;
  case K_SUB_GROUP_CONFIGS:
    err = fy__op_call(base, op->addr, FERRY__V1__OP__OP_GET_SUB_GROUPS, NULL, NULL, 0, 0,
                      on_single, NULL);
    break;
  case K_QUERY_ID: {
    Ferry__V1__QueryByIdRequest req = FERRY__V1__QUERY_BY_ID_REQUEST__INIT;
    req.offset_msg_id = op->key;
    err = fy__op_call(base, op->addr, FERRY__V1__OP__OP_QUERY_BY_ID, &req.base, NULL, 0, 0,
                      on_single, NULL);
    break;
  }
  case K_PROGRESS:
    if (!op->topic[0]) {
      Ferry__V1__GetClusterInfoRequest req = FERRY__V1__GET_CLUSTER_INFO_REQUEST__INIT;
      err = fy__op_ns_call(base, FERRY__V1__OP__OP_GET_CLUSTER_INFO, &req.base,
                           on_cluster_for_read, NULL);
      break;
    }
    /* fall through */
  case K_TOPIC_STATUS:
  case K_RESET_OFFSET:
  case K_QUERY_KEY:
    err = fy__route_get(base, op->topic, true, on_admin_route);
    break;
  }
  if (err)
    fy__op_complete(base, err);
}

static struct admin_op *admin_new(fy_client *cl, enum kind kind, uint32_t timeout_ms) {
  struct admin_op *op = calloc(1, sizeof *op);
  if (!op)
    return NULL;
  fy__op_init(&op->base, cl, timeout_ms, true, admin_start, NULL, admin_destroy);
  op->kind = kind;
  return op;
}

/* Runs op; on success hands its result to *out (if out). */
static int admin_run(struct admin_op *op, void **out) {
  bool posted;
  int err = fy__op_run(&op->base, &posted);
  if (!posted)
    return err;
  if (!err && out) {
    *out = op->result;
    op->result = NULL;
  }
  fy__op_unref(&op->base);
  return err;
}

static bool copy_str(char *dst, size_t size, const char *src, bool required, const char *what) {
  size_t n = src ? strlen(src) : 0;
  if ((required && n == 0) || n >= size) {
    fy__set_last_error("%s must be 1..%zu bytes", what, size - 1);
    return false;
  }
  memcpy(dst, src ? src : "", n + 1);
  return true;
}

#define NEW_OP(kind)                                                                   \
  struct admin_op *op = admin_new(cl, kind, timeout_ms);                               \
  if (!op)                                                                             \
    return -ENOMEM;

#define REQUIRE(cond)                                                                  \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      admin_destroy(&op->base);                                                        \
      pthread_cond_destroy(&op->base.cv);                                              \
      free(op);                                                                        \
      return -EINVAL;                                                                  \
    }                                                                                  \
  } while (0)

/* An op naming one topic, or one broker, and nothing else. */
static int by_topic(fy_client *cl, enum kind kind, const char *topic, uint32_t timeout_ms,
                    void **out) {
  NEW_OP(kind);
  REQUIRE(copy_str(op->topic, sizeof op->topic, topic, true, "topic"));
  return admin_run(op, out);
}

static int by_broker(fy_client *cl, enum kind kind, const char *broker_addr, uint32_t timeout_ms,
                     void **out) {
  NEW_OP(kind);
  REQUIRE(copy_str(op->addr, sizeof op->addr, broker_addr, true, "broker address"));
  return admin_run(op, out);
}

static int topic_write(fy_client *cl, enum kind kind, const char *broker_addr,
                       const char *cluster, const char *topic, const fy_topic_config *cfg,
                       uint32_t timeout_ms) {
  NEW_OP(kind);
  if ((!broker_addr || !*broker_addr) == (!cluster || !*cluster)) {
    fy__set_last_error("give a broker address or a cluster name (one of them)");
    REQUIRE(false);
  }
  REQUIRE(copy_str(op->topic, sizeof op->topic, topic, true, "topic"));
  REQUIRE(copy_str(op->addr, sizeof op->addr, broker_addr, false, "broker address"));
  REQUIRE(copy_str(op->cluster, sizeof op->cluster, cluster, false, "cluster"));
  if (cfg) {
    op->tc = *cfg;
    op->tc.topic = NULL;
  }
  if (!op->tc.read_queues)
    op->tc.read_queues = 8;
  if (!op->tc.write_queues)
    op->tc.write_queues = 8;
  if (!op->tc.perm)
    op->tc.perm = 6;
  return admin_run(op, NULL);
}

int fy_admin_update_topic(fy_client *cl, const char *broker_addr, const char *cluster,
                          const fy_topic_config *cfg, uint32_t timeout_ms) {
  if (!cfg) {
    fy__set_last_error("a topic configuration is required");
    return -EINVAL;
  }
  return topic_write(cl, K_UPDATE_TOPIC, broker_addr, cluster, cfg->topic, cfg, timeout_ms);
}

int fy_admin_delete_topic(fy_client *cl, const char *broker_addr, const char *cluster,
                          const char *topic, uint32_t timeout_ms) {
  return topic_write(cl, K_DELETE_TOPIC, broker_addr, cluster, topic, NULL, timeout_ms);
}

void fy_sub_group_config_init(fy_sub_group_config *cfg, const char *group) {
  memset(cfg, 0, sizeof *cfg);
  cfg->group = group;
  cfg->consume_enable = true;
  cfg->consume_from_min_enable = true;
  cfg->consume_broadcast_enable = true;
  cfg->retry_queue_nums = 1;
  cfg->retry_max_times = 16;
  cfg->broker_id = 0;
  cfg->which_broker_when_consume_slowly = 1;
  cfg->notify_consumer_ids_changed_enable = true;
}

static int sub_group_write(fy_client *cl, enum kind kind, const char *broker_addr,
                           const char *cluster, const char *group,
                           const fy_sub_group_config *cfg, bool remove_offset,
                           uint32_t timeout_ms) {
  NEW_OP(kind);
  if ((!broker_addr || !*broker_addr) == (!cluster || !*cluster)) {
    fy__set_last_error("give a broker address or a cluster name (one of them)");
    REQUIRE(false);
  }
  REQUIRE(copy_str(op->group, sizeof op->group, group, true, "group"));
  REQUIRE(copy_str(op->addr, sizeof op->addr, broker_addr, false, "broker address"));
  REQUIRE(copy_str(op->cluster, sizeof op->cluster, cluster, false, "cluster"));
  if (cfg)
    op->sg = *cfg;
  op->sg.group = op->group;
  op->remove_offset = remove_offset;
  return admin_run(op, NULL);
}

int fy_admin_update_sub_group(fy_client *cl, const char *broker_addr, const char *cluster,
                              const fy_sub_group_config *cfg, uint32_t timeout_ms) {
  if (!cfg) {
    fy__set_last_error("a subscription group configuration is required");
    return -EINVAL;
  }
  return sub_group_write(cl, K_UPDATE_SUB_GROUP, broker_addr, cluster, cfg->group, cfg, false,
                         timeout_ms);
}

int fy_admin_delete_sub_group(fy_client *cl, const char *broker_addr, const char *cluster,
                              const char *group, bool remove_offset, uint32_t timeout_ms) {
  return sub_group_write(cl, K_DELETE_SUB_GROUP, broker_addr, cluster, group, NULL, remove_offset,
                         timeout_ms);
}

int fy_admin_sub_group_configs(fy_client *cl, const char *broker_addr, uint32_t timeout_ms,
                               fy_sub_group_config_list **out) {
  return by_broker(cl, K_SUB_GROUP_CONFIGS, broker_addr, timeout_ms, (void **)out);
}

int fy_admin_topic_list(fy_client *cl, uint32_t timeout_ms, fy_string_list **out) {
  NEW_OP(K_TOPIC_LIST);
  return admin_run(op, (void **)out);
}

int fy_admin_topic_route(fy_client *cl, const char *topic, uint32_t timeout_ms,
                         fy_topic_route **out) {
  return by_topic(cl, K_TOPIC_ROUTE, topic, timeout_ms, (void **)out);
}

int fy_admin_topic_status(fy_client *cl, const char *topic, uint32_t timeout_ms,
                          fy_topic_status **out) {
  return by_topic(cl, K_TOPIC_STATUS, topic, timeout_ms, (void **)out);
}

int fy_admin_cluster_list(fy_client *cl, uint32_t timeout_ms, fy_cluster_info **out) {
  NEW_OP(K_CLUSTER_LIST);
  return admin_run(op, (void **)out);
}

int fy_admin_broker_status(fy_client *cl, const char *broker_addr, uint32_t timeout_ms,
                           fy_kv_list **out) {
  return by_broker(cl, K_BROKER_STATUS, broker_addr, timeout_ms, (void **)out);
}

int fy_admin_ha_status(fy_client *cl, const char *broker_addr, uint32_t timeout_ms,
                       fy_kv_list **out) {
  return by_broker(cl, K_HA_STATUS, broker_addr, timeout_ms, (void **)out);
}

int fy_admin_topic_configs(fy_client *cl, const char *broker_addr, uint32_t timeout_ms,
                           fy_topic_config_list **out) {
  return by_broker(cl, K_TOPIC_CONFIGS, broker_addr, timeout_ms, (void **)out);
}

int fy_admin_consumer_progress(fy_client *cl, const char *group, const char *topic,
                               uint32_t timeout_ms, fy_consumer_progress **out) {
  NEW_OP(K_PROGRESS);
  REQUIRE(copy_str(op->group, sizeof op->group, group, true, "group"));
  REQUIRE(copy_str(op->topic, sizeof op->topic, topic, false, "topic"));
  int err = admin_run(op, (void **)out);
  if (!err) {
    /* by topic, brokerName, queue id */
    fy_queue_progress *q = (fy_queue_progress *)(*out)->queues;
    size_t n = (*out)->n;
    for (size_t i = 1; i < n; i++) {
      fy_queue_progress x = q[i];
      size_t j = i;
      while (j > 0) {
        const fy_queue_progress *y = &q[j - 1];
        int c = strcmp(y->topic, x.topic);
        if (!c)
          c = strcmp(y->broker_name, x.broker_name);
        if (c < 0 || (c == 0 && y->queue_id <= x.queue_id))
          break;
        q[j] = q[j - 1];
        j--;
      }
      q[j] = x;
    }
  }
  return err;
}

int fy_admin_reset_offset_by_time(fy_client *cl, const char *group, const char *topic,
                                  int64_t timestamp_ms, uint32_t timeout_ms) {
  NEW_OP(K_RESET_OFFSET);
  REQUIRE(copy_str(op->group, sizeof op->group, group, true, "group"));
  REQUIRE(copy_str(op->topic, sizeof op->topic, topic, true, "topic"));
  op->ts = timestamp_ms;
  return admin_run(op, NULL);
}

int fy_admin_query_by_id(fy_client *cl, const char *offset_msg_id, const char *broker_addr,
                         uint32_t timeout_ms, fy_message_list **out) {
  NEW_OP(K_QUERY_ID);
  REQUIRE(copy_str(op->key, sizeof op->key, offset_msg_id, true, "offset msg id"));
  if (broker_addr && *broker_addr) {
    REQUIRE(copy_str(op->addr, sizeof op->addr, broker_addr, true, "broker address"));
  } else {
    uint64_t phys;
    if (fy__offset_msgid_decode(offset_msg_id, op->addr, sizeof op->addr, &phys)) {
      fy__set_last_error("'%s' is not an offset msg id (32 hex characters)", offset_msg_id);
      REQUIRE(false);
    }
  }
  return admin_run(op, (void **)out);
}

int fy_admin_query_by_key(fy_client *cl, const char *topic, const char *key, uint32_t max,
                          int64_t begin_ts_ms, int64_t end_ts_ms, uint32_t timeout_ms,
                          fy_message_list **out) {
  NEW_OP(K_QUERY_KEY);
  REQUIRE(copy_str(op->topic, sizeof op->topic, topic, true, "topic"));
  REQUIRE(copy_str(op->key, sizeof op->key, key, true, "key"));
  op->max = max ? max : 32;
  op->begin = begin_ts_ms;
  op->end = end_ts_ms;
  return admin_run(op, (void **)out);
}
