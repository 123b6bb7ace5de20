/*
 * Everything but SEND and PULL: consumer heartbeats and group membership,
 * consumer offsets, queue offsets and time search, topics, subscription
 * groups, queries by id and key, consumer progress, offset reset, and broker
 * status. Each handler decodes its header, checks it, and answers at once.
 */
#include "broker/broker_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "common/err.h"
#include "common/log.h"

#define MOD "broker"
#define QUERY_MAX 64

#define UNPACK(type, desc, var)                                                                \
  type *var;                                                                                   \
  if (fy_frame_unpack(f, &desc, (ProtobufCMessage **)&var)) {                                  \
    fy__reply_decode_error(conn, f);                                                           \
    return;                                                                                    \
  }

static void reply_ok(fy_conn *conn, const fy_frame *f, const ProtobufCMessage *msg) {
  if (f->kind == FY_FRAME_REQUEST)
    fy_conn_reply(conn, f->request_id, f->op, FERRY__V1__STATUS__OK, msg, NULL, 0, NULL, NULL);
}

/* ---------------------------------------------------------------- consumers */

static void on_heartbeat(struct fy_broker *b, fy_conn *conn, const fy_frame *f) {
  UNPACK(Ferry__V1__HeartbeatRequest, ferry__v1__heartbeat_request__descriptor, req);
  size_t n = req->n_consumers;
  struct fy_consumer_group_info *groups = calloc(n ? n : 1, sizeof *groups);
  int err = groups ? 0 : -ENOMEM;
  for (size_t i = 0; !err && i < n; i++) {
    const Ferry__V1__ConsumerData *cd = req->consumers[i];
    const char *why = NULL;
    if (fy_group_name_check(cd->group, &why) || cd->n_subscriptions > FY_SUBS_PER_GROUP) {
      err = -EINVAL;
      break;
    }
    struct fy_consumer_group_info *g = &groups[i];
    snprintf(g->group, sizeof g->group, "%s", cd->group);
    snprintf(g->consume_from, sizeof g->consume_from, "%s", cd->consume_from);
    g->broadcasting = cd->broadcasting;
    for (size_t s = 0; s < cd->n_subscriptions; s++) {
      snprintf(g->subs[s].topic, sizeof g->subs[s].topic, "%s", cd->subscriptions[s]->topic);
      snprintf(g->subs[s].expression, sizeof g->subs[s].expression, "%s",
               cd->subscriptions[s]->expression);
    }
    g->nsubs = cd->n_subscriptions;
    struct fy_group_config gc;
    bool created;
    fy_groups_find_or_create(b->groups, cd->group, &gc, &created);
  }
  if (!err)
    err = fy_consumers_heartbeat(b->consumers, req->client_id, conn, groups, n, fy__now_ms());
  free(groups);
  if (err)
    fy_conn_reply_error(conn, f->request_id, f->op,
                        err == -FY_EBUSY ? FERRY__V1__STATUS__SYSTEM_BUSY
                                         : FERRY__V1__STATUS__BAD_REQUEST,
                        "heartbeat of client '%s' refused: %s", req->client_id,
                        err == -EINVAL ? "bad client id, group name, or too many groups/subscriptions"
                                       : fy_strerror(err));
  else
    reply_ok(conn, f, NULL);
  fy_pb_free(&req->base);
}

static void on_unregister_client(struct fy_broker *b, fy_conn *conn, const fy_frame *f) {
  UNPACK(Ferry__V1__UnregisterClientRequest, ferry__v1__unregister_client_request__descriptor, req);
  fy_consumers_unregister(b->consumers, req->client_id,
                          req->consumer_group && *req->consumer_group ? req->consumer_group : NULL);
  reply_ok(conn, f, NULL);
  fy_pb_free(&req->base);
}

static void on_consumer_list(struct fy_broker *b, fy_conn *conn, const fy_frame *f) {
  UNPACK(Ferry__V1__GetConsumerListRequest, ferry__v1__get_consumer_list_request__descriptor, req);
  char **ids;
  size_t n;
  if (fy_consumers_list(b->consumers, req->group, &ids, &n) == 0) {
    Ferry__V1__ConsumerList list = FERRY__V1__CONSUMER_LIST__INIT;
    list.client_ids = ids;
    list.n_client_ids = n;
    reply_ok(conn, f, &list.base);
    free(ids);
  } else {
    fy_conn_reply_error(conn, f->request_id, f->op, FERRY__V1__STATUS__SYSTEM_ERROR, "out of memory");
  }
  fy_pb_free(&req->base);
}

/* ---------------------------------------------------------------- offsets */

/* Checks topic and queue of a QueueOffsetRequest; replies on error. */
static bool check_queue(struct fy_broker *b, fy_conn *conn, const fy_frame *f,
                        const Ferry__V1__QueueOffsetRequest *req) {
  struct fy_topic_config tc;
  if (fy_topics_get(b->topics, req->topic, &tc) != 0) {
    if (b->cfg->role == FY_ROLE_SLAVE && fy_topic_name_check(req->topic, NULL) == 0)
      return true; /* a slave answers for what it holds before the config arrives */
    fy_conn_reply_error(conn, f->request_id, f->op, FERRY__V1__STATUS__TOPIC_NOT_EXIST,
                        "topic '%s' does not exist on broker %s", req->topic, b->cfg->broker_name);
    return false;
  }
  uint32_t nq = tc.read_queues > tc.write_queues ? tc.read_queues : tc.write_queues;
  if (req->queue_id >= nq) {
    fy_conn_reply_error(conn, f->request_id, f->op, FERRY__V1__STATUS__BAD_REQUEST,
                        "queue %u of topic '%s' does not exist", req->queue_id, req->topic);
    return false;
  }
  return true;
}

static void reply_offset(fy_conn *conn, const fy_frame *f, uint64_t offset) {
  Ferry__V1__QueueOffsetResponse resp = FERRY__V1__QUEUE_OFFSET_RESPONSE__INIT;
  resp.offset = offset;
  reply_ok(conn, f, &resp.base);
}

static void on_queue_offset(struct fy_broker *b, fy_conn *conn, const fy_frame *f) {
  UNPACK(Ferry__V1__QueueOffsetRequest, ferry__v1__queue_offset_request__descriptor, req);
  if (!check_queue(b, conn, f, req))
    goto out;
  const char *why = NULL;
  switch (f->op) {
  case FERRY__V1__OP__OP_GET_MIN_OFFSET:
    reply_offset(conn, f, fy_store_min_offset(b->store, req->topic, req->queue_id));
    break;
  case FERRY__V1__OP__OP_GET_MAX_OFFSET:
    reply_offset(conn, f, fy_store_max_offset(b->store, req->topic, req->queue_id));
    break;
  case FERRY__V1__OP__OP_SEARCH_OFFSET_BY_TIME:
    reply_offset(conn, f, fy_store_offset_for_time(b->store, req->topic, req->queue_id,
                                                   req->timestamp));
    break;
  case FERRY__V1__OP__OP_QUERY_CONSUMER_OFFSET: {
    int64_t off = fy_offsets_query(b->offsets, req->group, req->topic, req->queue_id);
    if (off < 0)
      fy_conn_reply_error(conn, f->request_id, f->op, FERRY__V1__STATUS__NOT_FOUND,
                          "group '%s' has no offset for %s queue %u", req->group, req->topic,
                          req->queue_id);
    else
      reply_offset(conn, f, (uint64_t)off);
    break;
  }
  case FERRY__V1__OP__OP_UPDATE_CONSUMER_OFFSET: {
    int err = fy_group_name_check(req->group, &why) ? -EINVAL
              : fy_offsets_commit(b->offsets, req->group, req->topic, req->queue_id,
                                  (int64_t)req->offset);
    if (err)
      fy_conn_reply_error(conn, f->request_id, f->op, FERRY__V1__STATUS__BAD_REQUEST,
                          "offset of group '%s' not stored: %s", req->group,
                          why ? why : fy_strerror(err));
    else
      reply_ok(conn, f, NULL);
    break;
  }
  }
out:
  fy_pb_free(&req->base);
}

static void on_consumer_progress(struct fy_broker *b, fy_conn *conn, const fy_frame *f) {
  UNPACK(Ferry__V1__ConsumerProgressRequest, ferry__v1__consumer_progress_request__descriptor, req);
  struct fy_offset_item *items = NULL;
  size_t n = 0;
  int err = fy_offsets_list_group(b->offsets, req->group, &items, &n);
  if (err && err != -FY_ENOT_FOUND) {
    fy_conn_reply_error(conn, f->request_id, f->op, FERRY__V1__STATUS__SYSTEM_ERROR, "%s",
                        fy_strerror(err));
    fy_pb_free(&req->base);
    return;
  }
  Ferry__V1__QueueProgress *qp = calloc(n + 1, sizeof *qp);
  Ferry__V1__QueueProgress **qpp = calloc(n + 1, sizeof *qpp);
  size_t k = 0;
  for (size_t i = 0; qp && qpp && i < n; i++) {
    if (req->topic && *req->topic && strcmp(req->topic, items[i].topic) != 0)
      continue;
    ferry__v1__queue_progress__init(&qp[k]);
    qp[k].topic = items[i].topic;
    qp[k].broker_name = (char *)b->cfg->broker_name;
    qp[k].queue_id = items[i].queue_id;
    qp[k].broker_offset = fy_store_max_offset(b->store, items[i].topic, items[i].queue_id);
    qp[k].consumer_offset = (uint64_t)items[i].offset;
    qp[k].last_timestamp = items[i].updated_ms;
    qpp[k] = &qp[k];
    k++;
  }
  Ferry__V1__ConsumerProgress resp = FERRY__V1__CONSUMER_PROGRESS__INIT;
  resp.queues = qpp;
  resp.n_queues = k;
  reply_ok(conn, f, &resp.base);
  free(qp);
  free(qpp);
  free(items);
  fy_pb_free(&req->base);
}

static void on_reset_offset(struct fy_broker *b, fy_conn *conn, const fy_frame *f) {
  UNPACK(Ferry__V1__ResetOffsetRequest, ferry__v1__reset_offset_request__descriptor, req);
  struct fy_topic_config tc;
  const char *why = NULL;
  if (fy_topics_get(b->topics, req->topic, &tc) != 0) {
    fy_conn_reply_error(conn, f->request_id, f->op, FERRY__V1__STATUS__TOPIC_NOT_EXIST,
                        "topic '%s' does not exist on broker %s", req->topic, b->cfg->broker_name);
  } else if (fy_group_name_check(req->group, &why)) {
    fy_conn_reply_error(conn, f->request_id, f->op, FERRY__V1__STATUS__BAD_REQUEST,
                        "consumer group '%s': %s", req->group, why ? why : "invalid");
  } else {
    Ferry__V1__QueueProgress *qp = calloc(tc.read_queues, sizeof *qp);
    Ferry__V1__QueueProgress **qpp = calloc(tc.read_queues, sizeof *qpp);
    int err = qp && qpp ? 0 : -ENOMEM;
    for (uint32_t q = 0; !err && q < tc.read_queues; q++) {
      uint64_t off = fy_store_offset_for_time(b->store, req->topic, q, req->timestamp);
      err = fy_offsets_reset(b->offsets, req->group, req->topic, q, (int64_t)off);
      if (!err)
        err = fy__reset_set(b, req->group, req->topic, q, off);
      ferry__v1__queue_progress__init(&qp[q]);
      qp[q].topic = req->topic;
      qp[q].broker_name = (char *)b->cfg->broker_name;
      qp[q].queue_id = q;
      qp[q].consumer_offset = off;
      qp[q].broker_offset = fy_store_max_offset(b->store, req->topic, q);
      qpp[q] = &qp[q];
    }
    if (err) {
      fy_conn_reply_error(conn, f->request_id, f->op, FERRY__V1__STATUS__SYSTEM_ERROR,
                          "reset failed: %s", fy_strerror(err));
    } else {
      fy_info(MOD, "reset offsets of group %s on topic %s to time %" PRId64, req->group,
              req->topic, req->timestamp);
      Ferry__V1__ConsumerProgress resp = FERRY__V1__CONSUMER_PROGRESS__INIT;
      resp.queues = qpp;
      resp.n_queues = tc.read_queues;
      reply_ok(conn, f, &resp.base);
    }
    free(qp);
    free(qpp);
  }
  fy_pb_free(&req->base);
}

/* ---------------------------------------------------------------- topics */

/* Topics and subscription groups are changed on the master only: a slave
 * copies the master's tables, so its own change would be overwritten. */
static uint16_t refuse_on_slave(struct fy_broker *b, const char *what, char *why, size_t whylen) {
  if (b->cfg->role != FY_ROLE_SLAVE)
    return 0;
  snprintf(why, whylen, "broker %s is a slave: change %s on its master (the slave copies them "
           "from there)", b->cfg->broker_name, what);
  return FERRY__V1__STATUS__SERVICE_NOT_AVAILABLE;
}

static void on_update_topic(struct fy_broker *b, fy_conn *conn, const fy_frame *f) {
  UNPACK(Ferry__V1__UpdateTopicRequest, ferry__v1__update_topic_request__descriptor, req);
  const Ferry__V1__TopicConfig *in = req->config;
  struct fy_topic_config tc = {0};
  const char *why = NULL;
  char slave_why[256];
  uint16_t st = refuse_on_slave(b, "topics", slave_why, sizeof slave_why);
  if (st) {
    fy_conn_reply_error(conn, f->request_id, f->op, st, "%s", slave_why);
  } else if (!in || !in->topic || strlen(in->topic) > FY_TOPIC_NAME_MAX) {
    fy_conn_reply_error(conn, f->request_id, f->op, FERRY__V1__STATUS__BAD_REQUEST,
                        "updateTopic needs a topic name of at most %u characters",
                        FY_TOPIC_NAME_MAX);
  } else {
    snprintf(tc.name, sizeof tc.name, "%s", in->topic);
    tc.read_queues = in->read_queues;
    tc.write_queues = in->write_queues;
    tc.perm = in->perm ? in->perm : FY_PERM_DEFAULT;
    tc.order = in->order;
    int err = fy_topics_put(b->topics, &tc, 0, &why);
    if (err) {
      fy_conn_reply_error(conn, f->request_id, f->op, FERRY__V1__STATUS__BAD_REQUEST,
                          "topic '%s' not updated: %s", tc.name, why ? why : fy_strerror(err));
    } else {
      fy_info(MOD, "topic %s: %u read / %u write queues, perm %u", tc.name, tc.read_queues,
              tc.write_queues, tc.perm);
      reply_ok(conn, f, NULL);
      fy__broker_register_all(b);
    }
  }
  fy_pb_free(&req->base);
}

uint16_t fy__topic_delete(struct fy_broker *b, const char *topic, char *why, size_t whylen) {
  uint16_t st = refuse_on_slave(b, "topics", why, whylen);
  if (st)
    return st;
  if (!topic || fy_topics_delete(b->topics, topic) != 0) {
    snprintf(why, whylen, "topic '%s' does not exist on broker %s", topic ? topic : "",
             b->cfg->broker_name);
    return FERRY__V1__STATUS__TOPIC_NOT_EXIST;
  }
  fy_store_delete_topic(b->store, topic);
  fy_offsets_delete_topic(b->offsets, topic);
  fy_info(MOD, "deleted topic %s", topic);
  fy__broker_register_all(b);
  return 0;
}

static void on_delete_topic(struct fy_broker *b, fy_conn *conn, const fy_frame *f) {
  UNPACK(Ferry__V1__DeleteTopicRequest, ferry__v1__delete_topic_request__descriptor, req);
  char why[512];
  uint16_t st = fy__topic_delete(b, req->topic, why, sizeof why);
  if (st)
    fy_conn_reply_error(conn, f->request_id, f->op, st, "%s", why);
  else
    reply_ok(conn, f, NULL);
  fy_pb_free(&req->base);
}

static void on_topic_configs(struct fy_broker *b, fy_conn *conn, const fy_frame *f) {
  struct fy_topic_config *list;
  size_t n;
  if (fy_topics_list(b->topics, &list, &n) != 0) {
    fy_conn_reply_error(conn, f->request_id, f->op, FERRY__V1__STATUS__SYSTEM_ERROR, "out of memory");
    return;
  }
  Ferry__V1__TopicConfig *tcs = calloc(n + 1, sizeof *tcs);
  Ferry__V1__TopicConfig **tcp = calloc(n + 1, sizeof *tcp);
  if (tcs && tcp) {
    for (size_t i = 0; i < n; i++) {
      ferry__v1__topic_config__init(&tcs[i]);
      tcs[i].topic = list[i].name;
      tcs[i].read_queues = list[i].read_queues;
      tcs[i].write_queues = list[i].write_queues;
      tcs[i].perm = list[i].perm;
      tcs[i].order = list[i].order;
      tcp[i] = &tcs[i];
    }
    Ferry__V1__TopicConfigs resp = FERRY__V1__TOPIC_CONFIGS__INIT;
    resp.topics = tcp;
    resp.n_topics = n;
    reply_ok(conn, f, &resp.base);
  } else {
    fy_conn_reply_error(conn, f->request_id, f->op, FERRY__V1__STATUS__SYSTEM_ERROR, "out of memory");
  }
  free(tcs);
  free(tcp);
  free(list);
}

/* ---------------------------------------------------------------- subscription groups */

/* The group's retry topic, when it exists, follows retryQueueNums (RocketMQ's
 * updateSubGroup tool does this through a topic update): writes go to the
 * new number of queues at once; read queues never shrink, so messages
 * already waiting in a queue past the new count are still consumed. */
static void resize_retry_topic(struct fy_broker *b, const struct fy_group_config *g) {
  char name[FY_TOPIC_NAME_MAX + 1];
  struct fy_topic_config tc;
  if (g->retry_queues == 0 ||
      (size_t)snprintf(name, sizeof name, "%%RETRY%%%s", g->name) >= sizeof name ||
      fy_topics_get(b->topics, name, &tc) != 0)
    return;
  if (tc.write_queues == g->retry_queues && tc.read_queues >= g->retry_queues)
    return;
  tc.write_queues = g->retry_queues;
  if (tc.read_queues < g->retry_queues)
    tc.read_queues = g->retry_queues;
  const char *why = NULL;
  int err = fy_topics_put(b->topics, &tc, FY_TOPIC_ALLOW_SYSTEM, &why);
  if (err) {
    fy_warn(MOD, "retry topic %s not resized to %u queues: %s", name, g->retry_queues,
            why ? why : fy_strerror(err));
    return;
  }
  fy_info(MOD, "retry topic %s: %u read / %u write queues (retryQueueNums of %s)", name,
          tc.read_queues, tc.write_queues, g->name);
  fy__broker_register_all(b);
}

uint16_t fy__sub_group_update(struct fy_broker *b, const struct fy_group_config *cfg, char *why,
                              size_t whylen) {
  uint16_t st = refuse_on_slave(b, "subscription groups", why, whylen);
  if (st)
    return st;
  const char *reason = NULL;
  int err = fy_groups_put(b->groups, cfg, &reason);
  if (err) {
    snprintf(why, whylen, "subscription group '%.*s' not updated: %s", (int)FY_GROUP_NAME_MAX,
             cfg->name, reason ? reason : fy_strerror(err));
    return err == -EINVAL ? FERRY__V1__STATUS__BAD_REQUEST : FERRY__V1__STATUS__SYSTEM_ERROR;
  }
  fy_info(MOD,
          "subscription group %s: consumeEnable=%d consumeFromMinEnable=%d "
          "consumeBroadcastEnable=%d retryQueueNums=%u retryMaxTimes=%u brokerId=%" PRIu64
          " whichBrokerWhenConsumeSlowly=%" PRIu64 " notifyConsumerIdsChangedEnable=%d",
          cfg->name, cfg->consume_enable, cfg->consume_from_min_enable,
          cfg->consume_broadcast_enable, cfg->retry_queues, cfg->retry_max_times, cfg->broker_id,
          cfg->which_broker_when_consume_slowly, cfg->notify_consumer_ids_changed_enable);
  resize_retry_topic(b, cfg);
  return 0;
}

uint16_t fy__sub_group_delete(struct fy_broker *b, const char *group, bool remove_offset,
                              char *why, size_t whylen) {
  uint16_t st = refuse_on_slave(b, "subscription groups", why, whylen);
  if (st)
    return st;
  const char *reason = NULL;
  if (fy_group_name_check(group, &reason) < 0) {
    snprintf(why, whylen, "subscription group '%.*s': %s", (int)FY_GROUP_NAME_MAX,
             group ? group : "", reason);
    return FERRY__V1__STATUS__BAD_REQUEST;
  }
  bool existed = fy_groups_delete(b->groups, group) == 0;
  int removed = remove_offset ? fy_offsets_delete_group(b->offsets, group) : 0;
  if (removed < 0)
    removed = 0; /* -FY_ENOT_FOUND: it had none */
  if (!existed) {
    snprintf(why, whylen, "subscription group '%s' does not exist on broker %s%s", group,
             b->cfg->broker_name, removed ? " (its consumer offsets were removed)" : "");
    return FERRY__V1__STATUS__CONSUMER_GROUP_NOT_EXIST;
  }
  fy_info(MOD, "deleted subscription group %s (%d queue offsets removed)", group, removed);
  return 0;
}

static void on_update_sub_group(struct fy_broker *b, fy_conn *conn, const fy_frame *f) {
  UNPACK(Ferry__V1__UpdateSubGroupRequest, ferry__v1__update_sub_group_request__descriptor, req);
  const Ferry__V1__SubGroupConfig *in = req->config;
  char why[512];
  if (!in || !in->group || !*in->group || strlen(in->group) > FY_GROUP_NAME_MAX) {
    fy_conn_reply_error(conn, f->request_id, f->op, FERRY__V1__STATUS__BAD_REQUEST,
                        "updateSubGroup needs a group name of 1 to %u characters",
                        FY_GROUP_NAME_MAX);
  } else {
    struct fy_group_config gc;
    fy_group_config_default(&gc, in->group);
    gc.consume_enable = in->consume_enable;
    gc.consume_from_min_enable = in->consume_from_min_enable;
    gc.consume_broadcast_enable = in->consume_broadcast_enable;
    gc.retry_queues = in->retry_queues;
    gc.retry_max_times = in->retry_max_times;
    gc.broker_id = in->broker_id;
    gc.which_broker_when_consume_slowly = in->which_broker_when_consume_slowly;
    gc.notify_consumer_ids_changed_enable = in->notify_consumer_ids_changed_enable;
    uint16_t st = fy__sub_group_update(b, &gc, why, sizeof why);
    if (st)
      fy_conn_reply_error(conn, f->request_id, f->op, st, "%s", why);
    else
      reply_ok(conn, f, NULL);
  }
  fy_pb_free(&req->base);
}

static void on_delete_sub_group(struct fy_broker *b, fy_conn *conn, const fy_frame *f) {
  UNPACK(Ferry__V1__DeleteSubGroupRequest, ferry__v1__delete_sub_group_request__descriptor, req);
  char why[512];
  uint16_t st = fy__sub_group_delete(b, req->group, req->remove_offset, why, sizeof why);
  if (st)
    fy_conn_reply_error(conn, f->request_id, f->op, st, "%s", why);
  else
    reply_ok(conn, f, NULL);
  fy_pb_free(&req->base);
}

static void on_sub_groups(struct fy_broker *b, fy_conn *conn, const fy_frame *f) {
  struct fy_group_config *list;
  size_t n;
  if (fy_groups_list(b->groups, &list, &n) != 0) {
    fy_conn_reply_error(conn, f->request_id, f->op, FERRY__V1__STATUS__SYSTEM_ERROR, "out of memory");
    return;
  }
  Ferry__V1__SubGroupConfig *gcs = calloc(n + 1, sizeof *gcs);
  Ferry__V1__SubGroupConfig **gcp = calloc(n + 1, sizeof *gcp);
  if (gcs && gcp) {
    for (size_t i = 0; i < n; i++) {
      ferry__v1__sub_group_config__init(&gcs[i]);
      gcs[i].group = list[i].name;
      gcs[i].consume_enable = list[i].consume_enable;
      gcs[i].consume_from_min_enable = list[i].consume_from_min_enable;
      gcs[i].consume_broadcast_enable = list[i].consume_broadcast_enable;
      gcs[i].retry_queues = list[i].retry_queues;
      gcs[i].retry_max_times = list[i].retry_max_times;
      gcs[i].broker_id = list[i].broker_id;
      gcs[i].which_broker_when_consume_slowly = list[i].which_broker_when_consume_slowly;
      gcs[i].notify_consumer_ids_changed_enable = list[i].notify_consumer_ids_changed_enable;
      gcp[i] = &gcs[i];
    }
    Ferry__V1__SubGroupConfigs resp = FERRY__V1__SUB_GROUP_CONFIGS__INIT;
    resp.groups = gcp;
    resp.n_groups = n;
    reply_ok(conn, f, &resp.base);
  } else {
    fy_conn_reply_error(conn, f->request_id, f->op, FERRY__V1__STATUS__SYSTEM_ERROR, "out of memory");
  }
  free(gcs);
  free(gcp);
  free(list);
}

/* ---------------------------------------------------------------- queries */

struct pinned_slices {
  struct fy_cl_slice s[QUERY_MAX];
  size_t n;
};

static void on_query_sent(void *arg, int status) {
  (void)status;
  struct pinned_slices *p = arg;
  for (size_t i = 0; i < p->n; i++)
    fy_cl_slice_release(&p->s[i]);
  free(p);
}

static void reply_records(fy_conn *conn, const fy_frame *f, struct pinned_slices *p) {
  uv_buf_t bufs[QUERY_MAX];
  for (size_t i = 0; i < p->n; i++)
    bufs[i] = uv_buf_init((char *)p->s[i].data, (unsigned)p->s[i].len);
  Ferry__V1__QueryResponse resp = FERRY__V1__QUERY_RESPONSE__INIT;
  resp.count = (uint32_t)p->n;
  if (fy_conn_reply(conn, f->request_id, f->op, FERRY__V1__STATUS__OK, &resp.base, bufs,
                    (unsigned)p->n, on_query_sent, p) != 0)
    on_query_sent(p, -1);
}

static int parse_offset_msg_id(const char *id, uint64_t *phys) {
  if (!id || strlen(id) != 32)
    return -EINVAL;
  uint64_t v = 0;
  for (int i = 16; i < 32; i++) {
    char c = id[i];
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10
            : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (d < 0)
      return -EINVAL;
    v = v << 4 | (uint64_t)d;
  }
  *phys = v;
  return 0;
}

static void on_query_by_id(struct fy_broker *b, fy_conn *conn, const fy_frame *f) {
  UNPACK(Ferry__V1__QueryByIdRequest, ferry__v1__query_by_id_request__descriptor, req);
  uint64_t phys;
  struct pinned_slices *p = calloc(1, sizeof *p);
  struct fy_msg m;
  if (!p) {
    fy_conn_reply_error(conn, f->request_id, f->op, FERRY__V1__STATUS__SYSTEM_ERROR, "out of memory");
  } else if (parse_offset_msg_id(req->offset_msg_id, &phys)) {
    fy_conn_reply_error(conn, f->request_id, f->op, FERRY__V1__STATUS__BAD_REQUEST,
                        "'%s' is not an offset message id (32 hex digits)", req->offset_msg_id);
    free(p);
  } else if (fy_store_read_msg(b->store, phys, &p->s[0], &m) != 0) {
    fy_conn_reply_error(conn, f->request_id, f->op, FERRY__V1__STATUS__NOT_FOUND,
                        "no message at commit-log offset %" PRIu64 " on broker %s", phys,
                        b->cfg->broker_name);
    free(p);
  } else {
    p->n = 1;
    reply_records(conn, f, p);
  }
  fy_pb_free(&req->base);
}

static void on_query_by_key(struct fy_broker *b, fy_conn *conn, const fy_frame *f) {
  UNPACK(Ferry__V1__QueryByKeyRequest, ferry__v1__query_by_key_request__descriptor, req);
  if (!b->settings.store.index_enable) { /* an empty answer would read as "no such key" */
    fy_conn_reply_error(conn, f->request_id, f->op, FERRY__V1__STATUS__UNSUPPORTED_OP,
                        "broker %s keeps no key index (messageIndexEnable=false)",
                        b->cfg->broker_name);
    fy_pb_free(&req->base);
    return;
  }
  struct pinned_slices *p = calloc(1, sizeof *p);
  if (!p) {
    fy_conn_reply_error(conn, f->request_id, f->op, FERRY__V1__STATUS__SYSTEM_ERROR, "out of memory");
  } else {
    size_t max = req->max == 0 || req->max > QUERY_MAX ? QUERY_MAX : req->max;
    int64_t end = req->end_timestamp ? req->end_timestamp : INT64_MAX;
    p->n = fy_store_query_key(b->store, req->topic, req->key, req->begin_timestamp, end, p->s, max);
    reply_records(conn, f, p);
  }
  fy_pb_free(&req->base);
}

/* ---------------------------------------------------------------- status */

#define STATUS_KEYS_MAX 64 /* brokerStatus lines, at most */

static void on_broker_status(struct fy_broker *b, fy_conn *conn, const fy_frame *f) {
  struct fy_store_stats st;
  fy_store_stats(b->store, &st);
  char vals[STATUS_KEYS_MAX][192];
  const char *keys[STATUS_KEYS_MAX];
  size_t n = 0;
#define KV(k, ...) \
  (void)(n < STATUS_KEYS_MAX && (keys[n] = (k), snprintf(vals[n], sizeof vals[n], __VA_ARGS__), n++))
  KV("brokerName", "%s", b->cfg->broker_name);
  KV("brokerId", "%" PRIu64, b->cfg->broker_id);
  KV("brokerRole", "%s", b->cfg->role == FY_ROLE_SLAVE ? "SLAVE"
                         : b->cfg->role == FY_ROLE_SYNC_MASTER ? "SYNC_MASTER" : "ASYNC_MASTER");
  KV("brokerAddr", "%s", b->addr);
  KV("flushDiskType", "%s", b->settings.store.flush_disk_type == FY_SYNC_FLUSH ? "SYNC_FLUSH"
                                                                              : "ASYNC_FLUSH");
  KV("ioBackend", "%s", st.io_backend);
  KV("uptimeMs", "%" PRIu64, (uint64_t)fy__now_ms() - b->started_ms);
  KV("msgPutTotal", "%" PRIu64, st.puts);
  KV("msgPutBytes", "%" PRIu64, st.put_bytes);
  KV("msgGetTotal", "%" PRIu64, st.gets);
  KV("sendRequests", "%" PRIu64, b->sends);
  KV("sendFailures", "%" PRIu64, b->send_failures);
  KV("sendBusy", "%" PRIu64, b->send_busy);
  KV("sendFlushDiskTimeouts", "%" PRIu64, b->send_flush_timeouts);
  if (b->send_lat) {
    uint64_t now_ns = uv_hrtime();
    keys[n] = "sendLatencyUs";
    fy__send_latency_summary(b->send_lat, false, now_ns, vals[n++], sizeof vals[0]);
    keys[n] = "sendLatencyUsLastMinute";
    fy__send_latency_summary(b->send_lat, true, now_ns, vals[n++], sizeof vals[0]);
    keys[n] = "sendLatencyBands";
    fy__send_latency_bands(b->send_lat, vals[n++], sizeof vals[0]);
  }
  KV("pullRequests", "%" PRIu64, b->pulls);
  KV("pullsHeldTotal", "%" PRIu64, b->pulls_held);
  KV("pullsHeldNow", "%zu", b->nheld);
  KV("commitLogMinOffset", "%" PRIu64, st.cl_min);
  KV("commitLogMaxOffset", "%" PRIu64, st.cl_end);
  KV("commitLogWritten", "%" PRIu64, st.cl_written);
  KV("commitLogFlushed", "%" PRIu64, st.cl_flushed);
  KV("commitLogPageCacheMaxBytes", "%" PRIu64, b->settings.store.page_cache_max);
  KV("commitLogPageCacheDroppedTo", "%" PRIu64, st.cl_cache_dropped_to);
  KV("commitLogWritebackBytes", "%" PRIu32, b->settings.store.writeback_bytes);
  KV("commitLogWritebackTo", "%" PRIu64, st.cl_writeback_to);
  KV("dispatchedOffset", "%" PRIu64, st.dispatched);
  KV("checkpointOffset", "%" PRIu64, st.checkpoint);
  if (st.confirm_required)
    KV("confirmedOffset", "%" PRIu64, st.confirmed);
  KV("unconfirmedBytes", "%" PRIu64, st.unconfirmed_bytes);
  KV("consumeQueues", "%u", st.queues);
  KV("topics", "%zu", fy_topics_count(b->topics));
  KV("consumerClients", "%zu", fy_consumers_count(b->consumers));
  KV("connections", "%zu", b->nconns);
  KV("diskUsedPercent", "%d", st.disk_used_pct);
  KV("diskFull", "%s", st.disk_full ? "true" : "false");
  KV("storeError", "%s", st.error ? fy_errname(st.error) : "none");
  /* Replication at a glance (haStatus has the per-slave detail). */
  if (b->ha_master) {
    struct fy_ha_slave_status hs[8];
    size_t ns = fy_ha_master_status(b->ha_master, hs, 8);
    uint64_t best = fy_ha_master_acked(b->ha_master);
    for (size_t i = 0; i < ns; i++)
      if (hs[i].received > best)
        best = hs[i].received;
    KV("haSlaves", "%zu", ns);
    /* RocketMQ's name: log bytes the most advanced slave has yet to receive */
    KV("slaveFallBehindMuch", "%" PRIu64, st.cl_written > best ? st.cl_written - best : 0);
  }
  if (b->ha_slave) {
    struct fy_ha_slave_info in;
    fy_ha_slave_info(b->ha_slave, &in);
    KV("masterAddr", "%s", in.master[0] ? in.master : "none");
    KV("haState", "%s", in.state);
    KV("haLagBytes", "%" PRIu64,
       in.master_log_end > in.log_end ? in.master_log_end - in.log_end : 0);
  }
  if (b->cfg->role == FY_ROLE_SLAVE)
    KV("metadataSyncs", "%" PRIu64, b->meta_syncs);
#undef KV
  Ferry__V1__KeyValue kv[STATUS_KEYS_MAX], *kvp[STATUS_KEYS_MAX];
  for (size_t i = 0; i < n; i++) {
    ferry__v1__key_value__init(&kv[i]);
    kv[i].key = (char *)keys[i];
    kv[i].value = vals[i];
    kvp[i] = &kv[i];
  }
  Ferry__V1__BrokerStatus resp = FERRY__V1__BROKER_STATUS__INIT;
  resp.entries = kvp;
  resp.n_entries = n;
  reply_ok(conn, f, &resp.base);
}

/* ---------------------------------------------------------------- HA */

static void on_metadata(struct fy_broker *b, fy_conn *conn, const fy_frame *f) {
  UNPACK(Ferry__V1__MetadataRequest, ferry__v1__metadata_request__descriptor, req);
  char why[256] = "";
  struct fy_offsets_merge_stats ms = {0};
  /* Offsets committed on the slave while the master was away: larger wins,
   * except the slave's copy of offsets deleted here since the slave last
   * saw this broker's deletions (offsets.h, Deletions). */
  if (req->consumer_offsets_json && *req->consumer_offsets_json &&
      fy_offsets_merge_json(b->offsets, req->consumer_offsets_json,
                            strlen(req->consumer_offsets_json), &ms, why, sizeof why) != 0)
    fy_warn(MOD, "offsets from slave %s not merged: %s", fy_conn_peer(conn), why);
  if (ms.dropped) /* every exchange until the slave applies the deletion: not above debug */
    fy_debug(MOD, "slave %s: %" PRIu64 " queue offsets of deleted groups or topics not merged",
             fy_conn_peer(conn), ms.dropped);
  size_t len;
  char *topics = fy_topics_to_json(b->topics, &len);
  char *offsets = fy_offsets_to_json(b->offsets, &len);
  char *groups = fy_groups_to_json(b->groups, &len);
  Ferry__V1__MetadataResponse resp = FERRY__V1__METADATA_RESPONSE__INIT;
  resp.topics_json = topics ? topics : "";
  resp.consumer_offsets_json = offsets ? offsets : "";
  resp.groups_json = groups ? groups : "";
  reply_ok(conn, f, &resp.base);
  free(topics);
  free(offsets);
  free(groups);
  fy_pb_free(&req->base);
}

static void on_ha_status(struct fy_broker *b, fy_conn *conn, const fy_frame *f) {
  char vals[64][512];
  char keys[64][48];
  size_t n = 0;
#define HKV(k, ...)                                                                             \
  do {                                                                                          \
    if (n < 64) {                                                                               \
      snprintf(keys[n], sizeof keys[n], "%s", k);                                               \
      snprintf(vals[n], sizeof vals[n], __VA_ARGS__); \
      n++;                                                                                      \
    }                                                                                           \
  } while (0)
  fy_commitlog *cl = fy_store_commitlog(b->store);
  HKV("role", "%s", b->cfg->role == FY_ROLE_SLAVE ? "SLAVE"
                    : b->cfg->role == FY_ROLE_SYNC_MASTER ? "SYNC_MASTER" : "ASYNC_MASTER");
  HKV("logEnd", "%" PRIu64, fy_commitlog_written(cl));
  if (b->ha_master) {
    struct fy_ha_slave_status st[8];
    size_t ns = fy_ha_master_status(b->ha_master, st, 8);
    HKV("haAddr", "%s", b->ha_addr);
    HKV("slaves", "%zu", ns);
    HKV("ackedOffset", "%" PRIu64, fy_ha_master_acked(b->ha_master));
    struct fy_store_stats ss;
    fy_store_stats(b->store, &ss);
    if (ss.confirm_required) /* SYNC_MASTER: written, hidden from consumers until a slave acks */
      HKV("unconfirmedBytes", "%" PRIu64, ss.unconfirmed_bytes);
    for (size_t i = 0; i < ns; i++) {
      char k[48];
      snprintf(k, sizeof k, "slave.%zu", i);
      HKV(k, "addr=%.63s brokerId=%" PRIu64 " connectedSinceMs=%" PRId64 " received=%" PRIu64
             " durable=%" PRIu64 " lagBytes=%" PRIu64 " lagMs=%" PRId64,
          st[i].peer, st[i].broker_id, st[i].connected_since_ms, st[i].received, st[i].durable,
          st[i].lag_bytes, st[i].lag_ms);
    }
  }
  if (b->ha_slave) {
    struct fy_ha_slave_info in;
    fy_ha_slave_info(b->ha_slave, &in);
    HKV("state", "%s", in.state);
    HKV("master", "%s", in.master);
    HKV("masterLogEnd", "%" PRIu64, in.master_log_end);
    HKV("lagBytes", "%" PRIu64, in.master_log_end > in.log_end ? in.master_log_end - in.log_end : 0);
    HKV("connectedSinceMs", "%" PRId64, in.connected_since_ms);
    HKV("inputHolds", "%" PRIu64, in.holds);
    HKV("diskFullPaused", "%s", in.disk_full_paused ? "true" : "false");
    HKV("lastError", "%s", in.last_error[0] ? in.last_error : "none");
  }
#undef HKV
  Ferry__V1__KeyValue kv[64], *kvp[64];
  for (size_t i = 0; i < n; i++) {
    ferry__v1__key_value__init(&kv[i]);
    kv[i].key = keys[i];
    kv[i].value = vals[i];
    kvp[i] = &kv[i];
  }
  Ferry__V1__BrokerStatus resp = FERRY__V1__BROKER_STATUS__INIT;
  resp.entries = kvp;
  resp.n_entries = n;
  reply_ok(conn, f, &resp.base);
}

/* XXH3-128 over commit-log bytes: replicas are proven equal by comparing it. */
static void on_log_digest(struct fy_broker *b, fy_conn *conn, const fy_frame *f) {
  UNPACK(Ferry__V1__LogDigestRequest, ferry__v1__log_digest_request__descriptor, req);
  fy_commitlog *cl = fy_store_commitlog(b->store);
  uint64_t from = req->from < fy_commitlog_min(cl) ? fy_commitlog_min(cl) : req->from;
  uint64_t to = req->to == 0 || req->to > fy_commitlog_written(cl) ? fy_commitlog_written(cl) : req->to;
  XXH3_state_t *st = XXH3_createState();
  XXH3_128bits_reset(st);
  uint64_t off = from;
  while (off < to) {
    struct fy_cl_slice sl;
    if (fy_commitlog_read(cl, off, to - off, &sl) != 0 || sl.len == 0)
      break;
    XXH3_128bits_update(st, sl.data, sl.len);
    off += sl.len;
    fy_cl_slice_release(&sl);
  }
  XXH128_hash_t h = XXH3_128bits_digest(st);
  XXH3_freeState(st);
  char hex[33];
  snprintf(hex, sizeof hex, "%016" PRIx64 "%016" PRIx64, (uint64_t)h.high64, (uint64_t)h.low64);
  Ferry__V1__LogDigest resp = FERRY__V1__LOG_DIGEST__INIT;
  resp.from = from;
  resp.to = off;
  resp.digest = hex;
  reply_ok(conn, f, &resp.base);
  fy_pb_free(&req->base);
}

void fy__handle_admin(struct fy_broker *b, struct bconn *bc, const fy_frame *f) {
  fy_conn *conn = bc->conn;
  switch (f->op) {
  case FERRY__V1__OP__OP_HEARTBEAT: on_heartbeat(b, conn, f); break;
  case FERRY__V1__OP__OP_UNREGISTER_CLIENT: on_unregister_client(b, conn, f); break;
  case FERRY__V1__OP__OP_GET_CONSUMER_LIST: on_consumer_list(b, conn, f); break;
  case FERRY__V1__OP__OP_QUERY_CONSUMER_OFFSET:
  case FERRY__V1__OP__OP_UPDATE_CONSUMER_OFFSET:
  case FERRY__V1__OP__OP_GET_MIN_OFFSET:
  case FERRY__V1__OP__OP_GET_MAX_OFFSET:
  case FERRY__V1__OP__OP_SEARCH_OFFSET_BY_TIME: on_queue_offset(b, conn, f); break;
  case FERRY__V1__OP__OP_CONSUMER_PROGRESS: on_consumer_progress(b, conn, f); break;
  case FERRY__V1__OP__OP_RESET_OFFSET_BY_TIME: on_reset_offset(b, conn, f); break;
  case FERRY__V1__OP__OP_UPDATE_TOPIC: on_update_topic(b, conn, f); break;
  case FERRY__V1__OP__OP_DELETE_TOPIC: on_delete_topic(b, conn, f); break;
  case FERRY__V1__OP__OP_GET_TOPIC_CONFIGS: on_topic_configs(b, conn, f); break;
  case FERRY__V1__OP__OP_UPDATE_SUB_GROUP: on_update_sub_group(b, conn, f); break;
  case FERRY__V1__OP__OP_DELETE_SUB_GROUP: on_delete_sub_group(b, conn, f); break;
  case FERRY__V1__OP__OP_GET_SUB_GROUPS: on_sub_groups(b, conn, f); break;
  case FERRY__V1__OP__OP_BROKER_STATUS: on_broker_status(b, conn, f); break;
  case FERRY__V1__OP__OP_QUERY_BY_ID: on_query_by_id(b, conn, f); break;
  case FERRY__V1__OP__OP_QUERY_BY_KEY: on_query_by_key(b, conn, f); break;
  case FERRY__V1__OP__OP_GET_METADATA: on_metadata(b, conn, f); break;
  case FERRY__V1__OP__OP_HA_STATUS: on_ha_status(b, conn, f); break;
  case FERRY__V1__OP__OP_LOG_DIGEST: on_log_digest(b, conn, f); break;
  default:
    if (f->kind == FY_FRAME_REQUEST)
      fy_conn_reply_error(conn, f->request_id, f->op, FERRY__V1__STATUS__UNSUPPORTED_OP,
                          "op %u is not served by the broker", f->op);
  }
}
