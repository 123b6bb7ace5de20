/*
 * Name server: decodes requests (the protocol adapter for the route table),
 * answers from routes.c, and drops brokers whose connection closes or who
 * stop registering.
 */
#include "namesrv/namesrv.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"
#include "ferry.pb-c.h"
#include "namesrv/ns_rmq.h"
#include "namesrv/routes.h"
#include "net/conn.h"
#include "net/rpc.h"

#define MOD "namesrv"
#define F(field) offsetof(struct fy_namesrv_config, field)

const struct fy_config_key fy_namesrv_config_keys[] = {
    {"listenAddress", FY_CFG_STRING, F(listen_address), 64, 0, 0, "0.0.0.0", NULL},
    {"listenPort", FY_CFG_U32, F(listen_port), 0, 0, 65535, "9876", NULL},
    {"brokerChannelExpiredTime", FY_CFG_U32, F(expiry_ms), 0, 1000, 3600000, "120000", NULL},
    {"scanNotActiveBrokerInterval", FY_CFG_U32, F(scan_interval_ms), 0, 100, 600000, "5000",
     NULL},
    {"maxBrokers", FY_CFG_U32, F(max_brokers), 0, 1, 1000000, "4096", NULL},
    {"maxTopics", FY_CFG_U32, F(max_topics), 0, 1, 10000000, "100000", NULL},
    {"maxFrameSize", FY_CFG_U32, F(max_frame_bytes), 0, 4096, 1u << 30, "16777216", NULL},
    FY_CFG_END,
};

struct fy_namesrv {
  struct fy_namesrv_config cfg;
  uv_loop_t *loop;
  fy_server *server;
  fy_routes *routes;
  uv_timer_t scan_timer;
  bool stopping;
  bool timer_closed;
  size_t nconns;
};

static int64_t now_ms(uv_loop_t *loop) {
  uv_update_time(loop);
  return (int64_t)uv_now(loop);
}

static void reply_decode_error(fy_conn *conn, const fy_frame *f) {
  fy_conn_reply_error(conn, f->request_id, f->op, FERRY__V1__STATUS__BAD_REQUEST,
                      "malformed request header for op %u", f->op);
}

static void on_register(fy_namesrv *ns, fy_conn *conn, const fy_frame *f) {
  Ferry__V1__RegisterBrokerRequest *req;
  if (fy_frame_unpack(f, &ferry__v1__register_broker_request__descriptor,
                      (ProtobufCMessage **)&req)) {
    reply_decode_error(conn, f);
    return;
  }
  struct fy_ns_topic *topics = calloc(req->n_topics ? req->n_topics : 1, sizeof *topics);
  if (!topics) {
    fy_pb_free(&req->base);
    fy_conn_reply_error(conn, f->request_id, f->op, FERRY__V1__STATUS__SYSTEM_ERROR, "out of memory");
    return;
  }
  size_t nt = 0;
  for (size_t i = 0; i < req->n_topics; i++) {
    const Ferry__V1__TopicConfig *tc = req->topics[i];
    if (!tc->topic || !*tc->topic || strlen(tc->topic) >= FY_NS_TOPIC_MAX)
      continue;
    snprintf(topics[nt].name, sizeof topics[nt].name, "%s", tc->topic);
    topics[nt].read_queues = tc->read_queues;
    topics[nt].write_queues = tc->write_queues;
    topics[nt].perm = tc->perm;
    nt++;
  }
  struct fy_ns_registration reg = {.cluster = req->cluster, .broker_name = req->broker_name,
                                   .broker_addr = req->broker_addr, .broker_id = req->broker_id,
                                   .ha_addr = req->ha_addr, .topics = topics, .ntopics = nt,
                                   .conn = conn};
  char master[FY_NS_ADDR_MAX], ha_master[FY_NS_ADDR_MAX];
  int err = fy_routes_register(ns->routes, &reg, now_ms(ns->loop), master, ha_master);
  free(topics);
  if (err) {
    fy_conn_reply_error(conn, f->request_id, f->op,
                        err == -EINVAL ? FERRY__V1__STATUS__BAD_REQUEST
                                       : FERRY__V1__STATUS__SYSTEM_BUSY,
                        "register of broker %s refused: %s", req->broker_addr,
                        err == -EINVAL ? "cluster, brokerName and a host:port address are required"
                                       : fy_strerror(err));
    fy_pb_free(&req->base);
    return;
  }
  fy_pb_free(&req->base);
  Ferry__V1__RegisterBrokerResponse resp = FERRY__V1__REGISTER_BROKER_RESPONSE__INIT;
  resp.master_addr = master;
  resp.ha_master_addr = ha_master;
  fy_conn_reply(conn, f->request_id, f->op, FERRY__V1__STATUS__OK, &resp.base, NULL, 0, NULL, NULL);
}

static void on_unregister(fy_namesrv *ns, fy_conn *conn, const fy_frame *f) {
  Ferry__V1__UnregisterBrokerRequest *req;
  if (fy_frame_unpack(f, &ferry__v1__unregister_broker_request__descriptor,
                      (ProtobufCMessage **)&req)) {
    reply_decode_error(conn, f);
    return;
  }
  fy_routes_unregister(ns->routes, req->broker_addr);
  fy_pb_free(&req->base);
  if (f->kind == FY_FRAME_REQUEST)
    fy_conn_reply(conn, f->request_id, f->op, FERRY__V1__STATUS__OK, NULL, NULL, 0, NULL, NULL);
}

/* Converts a route (or cluster listing) to its protobuf form and replies. */
static void reply_route(fy_conn *conn, const fy_frame *f, const struct fy_ns_route *r,
                        bool cluster) {
  size_t naddrs = 0;
  for (size_t i = 0; i < r->nbrokers; i++)
    naddrs += r->brokers[i].naddrs;
  Ferry__V1__QueueData *qd = calloc(r->nqueues + 1, sizeof *qd);
  Ferry__V1__QueueData **qdp = calloc(r->nqueues + 1, sizeof *qdp);
  Ferry__V1__BrokerData *bd = calloc(r->nbrokers + 1, sizeof *bd);
  Ferry__V1__BrokerData **bdp = calloc(r->nbrokers + 1, sizeof *bdp);
  Ferry__V1__BrokerAddr *ba = calloc(naddrs + 1, sizeof *ba);
  Ferry__V1__BrokerAddr **bap = calloc(naddrs + 1, sizeof *bap);
  if (!qd || !qdp || !bd || !bdp || !ba || !bap) {
    fy_conn_reply_error(conn, f->request_id, f->op, FERRY__V1__STATUS__SYSTEM_ERROR, "out of memory");
    goto out_free;
  }
  for (size_t i = 0; i < r->nqueues; i++) {
    ferry__v1__queue_data__init(&qd[i]);
    qd[i].broker_name = (char *)r->queues[i].broker_name;
    qd[i].read_queues = r->queues[i].read_queues;
    qd[i].write_queues = r->queues[i].write_queues;
    qd[i].perm = r->queues[i].perm;
    qdp[i] = &qd[i];
  }
  size_t a = 0;
  for (size_t i = 0; i < r->nbrokers; i++) {
    ferry__v1__broker_data__init(&bd[i]);
    bd[i].cluster = (char *)r->brokers[i].cluster;
    bd[i].broker_name = (char *)r->brokers[i].broker_name;
    bd[i].addrs = &bap[a];
    bd[i].n_addrs = r->brokers[i].naddrs;
    for (size_t j = 0; j < r->brokers[i].naddrs; j++, a++) {
      ferry__v1__broker_addr__init(&ba[a]);
      ba[a].broker_id = r->brokers[i].addrs[j].broker_id;
      ba[a].addr = (char *)r->brokers[i].addrs[j].addr;
      bap[a] = &ba[a];
    }
    bdp[i] = &bd[i];
  }
  if (cluster) {
    Ferry__V1__ClusterInfo info = FERRY__V1__CLUSTER_INFO__INIT;
    info.brokers = bdp;
    info.n_brokers = r->nbrokers;
    fy_conn_reply(conn, f->request_id, f->op, FERRY__V1__STATUS__OK, &info.base, NULL, 0, NULL,
                  NULL);
  } else {
    Ferry__V1__TopicRoute route = FERRY__V1__TOPIC_ROUTE__INIT;
    route.queues = qdp;
    route.n_queues = r->nqueues;
    route.brokers = bdp;
    route.n_brokers = r->nbrokers;
    fy_conn_reply(conn, f->request_id, f->op, FERRY__V1__STATUS__OK, &route.base, NULL, 0, NULL,
                  NULL);
  }
out_free:
  free(qd);
  free(qdp);
  free(bd);
  free(bdp);
  free(ba);
  free(bap);
}

static void on_get_route(fy_namesrv *ns, fy_conn *conn, const fy_frame *f) {
  Ferry__V1__GetRouteRequest *req;
  if (fy_frame_unpack(f, &ferry__v1__get_route_request__descriptor, (ProtobufCMessage **)&req)) {
    reply_decode_error(conn, f);
    return;
  }
  struct fy_ns_route r;
  int err = fy_routes_get(ns->routes, req->topic, &r);
  if (err == -FY_ENOT_FOUND)
    fy_conn_reply_error(conn, f->request_id, f->op, FERRY__V1__STATUS__TOPIC_NOT_EXIST,
                        "no route for topic '%s' in the name server: no broker serves it", req->topic);
  else if (err)
    fy_conn_reply_error(conn, f->request_id, f->op, FERRY__V1__STATUS__SYSTEM_ERROR, "%s",
                        fy_strerror(err));
  else {
    reply_route(conn, f, &r, false);
    fy_ns_route_free(&r);
  }
  fy_pb_free(&req->base);
}

static void on_cluster_info(fy_namesrv *ns, fy_conn *conn, const fy_frame *f) {
  struct fy_ns_route r;
  if (fy_routes_cluster_info(ns->routes, &r)) {
    fy_conn_reply_error(conn, f->request_id, f->op, FERRY__V1__STATUS__SYSTEM_ERROR, "out of memory");
    return;
  }
  reply_route(conn, f, &r, true);
  fy_ns_route_free(&r);
}

static void on_topic_list(fy_namesrv *ns, fy_conn *conn, const fy_frame *f) {
  char **names;
  size_t n;
  if (fy_routes_topic_list(ns->routes, &names, &n)) {
    fy_conn_reply_error(conn, f->request_id, f->op, FERRY__V1__STATUS__SYSTEM_ERROR, "out of memory");
    return;
  }
  Ferry__V1__TopicList list = FERRY__V1__TOPIC_LIST__INIT;
  list.topics = names;
  list.n_topics = n;
  fy_conn_reply(conn, f->request_id, f->op, FERRY__V1__STATUS__OK, &list.base, NULL, 0, NULL, NULL);
  free(names);
}

static void on_accept(fy_server *srv, fy_conn *conn) {
  fy_namesrv *ns = fy_server_data(srv);
  fy_conn_set_data(conn, ns);
  if (ns)
    ns->nconns++;
}

static void maybe_free(fy_namesrv *ns);

static void on_frame(fy_conn *conn, const fy_frame *f) {
  fy_namesrv *ns = fy_conn_data(conn);
  if (f->kind == FY_FRAME_RESPONSE || !ns)
    return;
  switch (f->op) {
  case FERRY__V1__OP__OP_REGISTER_BROKER: on_register(ns, conn, f); break;
  case FERRY__V1__OP__OP_UNREGISTER_BROKER: on_unregister(ns, conn, f); break;
  case FERRY__V1__OP__OP_GET_ROUTE: on_get_route(ns, conn, f); break;
  case FERRY__V1__OP__OP_GET_CLUSTER_INFO: on_cluster_info(ns, conn, f); break;
  case FERRY__V1__OP__OP_GET_TOPIC_LIST: on_topic_list(ns, conn, f); break;
  default:
    if (f->kind == FY_FRAME_REQUEST)
      fy_conn_reply_error(conn, f->request_id, f->op, FERRY__V1__STATUS__UNSUPPORTED_OP,
                          "op %u is not served by the name server", f->op);
  }
}

/* RocketMQ remoting clients (ns_rmq.c). */
static size_t on_foreign(fy_conn *conn, const uint8_t *bytes, size_t len) {
  fy_namesrv *ns = fy_conn_data(conn);
  if (!ns || ns->stopping)
    return len;
  return fy__ns_rmq_on_bytes(conn, ns->routes, ns->cfg.max_frame_bytes, bytes, len);
}

/* Connections keep the name server in their data (the server link is
 * already gone when on_close runs); fy_namesrv_stop clears it first. */
static void on_close(fy_conn *conn, int reason) {
  (void)reason;
  fy_namesrv *ns = fy_conn_data(conn);
  if (!ns)
    return;
  ns->nconns--;
  if (ns->stopping)
    maybe_free(ns);
  else
    fy_routes_conn_closed(ns->routes, conn);
}

static void on_scan(uv_timer_t *t) {
  fy_namesrv *ns = t->data;
  fy_routes_expire(ns->routes, now_ms(ns->loop), ns->cfg.expiry_ms);
}

int fy_namesrv_start(uv_loop_t *loop, const struct fy_namesrv_config *cfg, fy_namesrv **out) {
  fy_namesrv *ns = calloc(1, sizeof *ns);
  if (!ns)
    return -ENOMEM;
  ns->cfg = *cfg;
  ns->loop = loop;
  ns->routes = fy_routes_new(cfg->max_brokers, cfg->max_topics);
  if (!ns->routes) {
    free(ns);
    return -ENOMEM;
  }
  fy_conn_cfg cc = {.frame_max_bytes = cfg->max_frame_bytes, .on_frame = on_frame,
                    .on_foreign = on_foreign, .on_close = on_close};
  int err = fy_server_listen(loop, cfg->listen_address, (int)cfg->listen_port, &cc, on_accept,
                             &ns->server);
  if (err) {
    fy_error(MOD, "cannot listen on %s:%u: %s", cfg->listen_address, cfg->listen_port,
             fy_net_strerror(err));
    fy_routes_free(ns->routes);
    free(ns);
    return err;
  }
  fy_server_set_data(ns->server, ns);
  uv_timer_init(loop, &ns->scan_timer);
  ns->scan_timer.data = ns;
  uv_timer_start(&ns->scan_timer, on_scan, cfg->scan_interval_ms, cfg->scan_interval_ms);
  fy_info(MOD, "name server listening on %s:%d", cfg->listen_address, fy_server_port(ns->server));
  *out = ns;
  return 0;
}

int fy_namesrv_port(const fy_namesrv *ns) { return fy_server_port(ns->server); }

/* Freed once the timer is closed and every connection's on_close has run. */
static void maybe_free(fy_namesrv *ns) {
  if (!ns->timer_closed || ns->nconns)
    return;
  fy_routes_free(ns->routes);
  free(ns);
}

static void on_timer_closed(uv_handle_t *h) {
  fy_namesrv *ns = h->data;
  ns->timer_closed = true;
  maybe_free(ns);
}

void fy_namesrv_stop(fy_namesrv *ns) {
  ns->stopping = true;
  fy_server_set_data(ns->server, NULL);
  fy_server_close(ns->server);
  uv_timer_stop(&ns->scan_timer);
  uv_close((uv_handle_t *)&ns->scan_timer, on_timer_closed);
}
