/*
 * The name server's RocketMQ remoting requests (see ns_rmq.h). Bodies are
 * RocketMQ's JSON shapes (TopicRouteData, ClusterInfo, TopicList) with
 * every map key quoted, which both fastjson and plain JSON parsers accept.
 */
#include "namesrv/ns_rmq.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"
#include "remoting/remoting.h"

#define MOD "namesrv"
#define FRAMES_PER_CALL 64

/* Answers c with code, remark (may be NULL) and body (owned from here on). */
static void reply(fy_conn *conn, const fy_rmq_cmd *c, int32_t code, const char *remark,
                  char *body) {
  if (c->flag & FY_RMQ_FLAG_ONEWAY) {
    free(body);
    return;
  }
  fy_rmq_out o;
  if (remark)
    fy_rmq_out_response(&o, c, code, "%s", remark);
  else
    fy_rmq_out_response(&o, c, code, NULL);
  size_t blen = body ? strlen(body) : 0;
  uint8_t *hdr = NULL;
  size_t hlen = 0;
  int err = fy_rmq_out_encode(&o, (uint32_t)blen, &hdr, &hlen);
  fy_rmq_out_free(&o);
  if (err) {
    free(hdr);
    free(body);
    return;
  }
  fy_conn_write_owned(conn, hdr, hlen, body, blen);
}

static void reply_json(fy_conn *conn, const fy_rmq_cmd *c, json_t *j) {
  char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
  json_decref(j);
  if (!s)
    reply(conn, c, FY_RMQ_RESP_SYSTEM_ERROR, "out of memory", NULL);
  else
    reply(conn, c, FY_RMQ_RESP_SUCCESS, NULL, s);
}

static json_t *broker_json(const struct fy_ns_broker_data *bd) {
  json_t *addrs = json_object();
  for (size_t a = 0; a < bd->naddrs; a++) {
    char id[24];
    snprintf(id, sizeof id, "%" PRIu64, bd->addrs[a].broker_id);
    json_object_set_new(addrs, id, json_string(bd->addrs[a].addr));
  }
  return json_pack("{s:o,s:s,s:s}", "brokerAddrs", addrs, "brokerName", bd->broker_name, "cluster",
                   bd->cluster);
}

static void on_route(fy_conn *conn, const fy_routes *routes, const fy_rmq_cmd *c) {
  const char *topic = fy_rmq_ext(c, "topic");
  if (!topic) {
    reply(conn, c, FY_RMQ_RESP_SYSTEM_ERROR, "the custom field <topic> is null", NULL);
    return;
  }
  struct fy_ns_route r;
  int err = fy_routes_get(routes, topic, &r);
  if (err) {
    char text[512];
    snprintf(text, sizeof text, "No topic route info in name server for the topic: %s", topic);
    reply(conn, c, err == -FY_ENOT_FOUND ? FY_RMQ_RESP_TOPIC_NOT_EXIST : FY_RMQ_RESP_SYSTEM_ERROR,
          text, NULL);
    return;
  }
  json_t *queues = json_array(), *brokers = json_array();
  for (size_t i = 0; i < r.nqueues; i++)
    json_array_append_new(
        queues, json_pack("{s:s,s:i,s:i,s:i,s:i}", "brokerName", r.queues[i].broker_name, "perm",
                          (json_int_t)r.queues[i].perm, "readQueueNums",
                          (json_int_t)r.queues[i].read_queues, "topicSynFlag", 0, "writeQueueNums",
                          (json_int_t)r.queues[i].write_queues));
  for (size_t i = 0; i < r.nbrokers; i++)
    json_array_append_new(brokers, broker_json(&r.brokers[i]));
  fy_ns_route_free(&r);
  reply_json(conn, c,
             json_pack("{s:o,s:{},s:o}", "brokerDatas", brokers, "filterServerTable", "queueDatas",
                       queues));
}

static void on_cluster_info(fy_conn *conn, const fy_routes *routes, const fy_rmq_cmd *c) {
  struct fy_ns_route r;
  if (fy_routes_cluster_info(routes, &r) != 0) {
    reply(conn, c, FY_RMQ_RESP_SYSTEM_ERROR, "out of memory", NULL);
    return;
  }
  json_t *table = json_object(), *clusters = json_object();
  for (size_t i = 0; i < r.nbrokers; i++) {
    const struct fy_ns_broker_data *bd = &r.brokers[i];
    json_object_set_new(table, bd->broker_name, broker_json(bd));
    json_t *names = json_object_get(clusters, bd->cluster);
    if (!names) {
      names = json_array();
      json_object_set_new(clusters, bd->cluster, names);
    }
    json_array_append_new(names, json_string(bd->broker_name));
  }
  fy_ns_route_free(&r);
  reply_json(conn, c, json_pack("{s:o,s:o}", "brokerAddrTable", table, "clusterAddrTable", clusters));
}

static void on_topic_list(fy_conn *conn, const fy_routes *routes, const fy_rmq_cmd *c) {
  char **names;
  size_t n;
  if (fy_routes_topic_list(routes, &names, &n) != 0) {
    reply(conn, c, FY_RMQ_RESP_SYSTEM_ERROR, "out of memory", NULL);
    return;
  }
  json_t *list = json_array();
  for (size_t i = 0; i < n; i++)
    json_array_append_new(list, json_string(names[i]));
  free(names);
  reply_json(conn, c, json_pack("{s:o}", "topicList", list));
}

/* DELETE_TOPIC_IN_NAMESRV: ext topic, and clusterName (RocketMQ 5) to
 * forget only that cluster's brokers' queues. As in RocketMQ, an unknown
 * topic succeeds. */
static void on_delete_topic(fy_conn *conn, fy_routes *routes, const fy_rmq_cmd *c) {
  const char *topic = fy_rmq_ext(c, "topic");
  if (!topic || !*topic) {
    reply(conn, c, FY_RMQ_RESP_SYSTEM_ERROR, "the custom field <topic> is null", NULL);
    return;
  }
  const char *cluster = fy_rmq_ext(c, "clusterName");
  size_t n = fy_routes_delete_topic(routes, topic, cluster);
  fy_info(MOD, "%s: deleted topic %s%s%s from the routes (%zu brokerName%s)", fy_conn_peer(conn),
          topic, cluster && *cluster ? " in cluster " : "", cluster && *cluster ? cluster : "", n,
          n == 1 ? "" : "s");
  reply(conn, c, FY_RMQ_RESP_SUCCESS, NULL, NULL);
}

static void handle(fy_conn *conn, fy_routes *routes, const fy_rmq_cmd *c) {
  char text[160];
  switch (c->code) {
  case FY_RMQ_REQ_GET_ROUTEINFO_BY_TOPIC: on_route(conn, routes, c); break;
  case FY_RMQ_REQ_GET_BROKER_CLUSTER_INFO: on_cluster_info(conn, routes, c); break;
  case FY_RMQ_REQ_GET_ALL_TOPIC_LIST_FROM_NAMESERVER: on_topic_list(conn, routes, c); break;
  case FY_RMQ_REQ_DELETE_TOPIC_IN_NAMESRV: on_delete_topic(conn, routes, c); break;
  case FY_RMQ_REQ_GET_KV_CONFIG:
    snprintf(text, sizeof text, "No config item, Namespace: %.40s Key: %.40s",
             fy_rmq_ext(c, "namespace") ? fy_rmq_ext(c, "namespace") : "",
             fy_rmq_ext(c, "key") ? fy_rmq_ext(c, "key") : "");
    reply(conn, c, FY_RMQ_RESP_QUERY_NOT_FOUND, text, NULL);
    break;
  default:
    snprintf(text, sizeof text, " request type %d not supported", c->code);
    reply(conn, c, FY_RMQ_RESP_REQUEST_CODE_NOT_SUPPORTED, text, NULL);
    break;
  }
}

size_t fy__ns_rmq_on_bytes(fy_conn *conn, fy_routes *routes, uint32_t frame_max,
                           const uint8_t *bytes, size_t len) {
  size_t used = 0;
  for (unsigned i = 0; i < FRAMES_PER_CALL && used < len; i++) {
    fy_rmq_cmd c;
    ssize_t n = fy_rmq_parse(bytes + used, len - used, frame_max, &c);
    if (n == 0)
      break;
    if (n < 0) {
      fy_warn(MOD, "%s: closing: bad RocketMQ frame: %s", fy_conn_peer(conn), fy_strerror((int)n));
      fy_conn_close(conn, (int)n);
      return len;
    }
    used += (size_t)n;
    if (!(c.flag & FY_RMQ_FLAG_RESPONSE))
      handle(conn, routes, &c);
    fy_rmq_cmd_free(&c);
    if (!fy_conn_is_open(conn))
      return len;
  }
  return used;
}
