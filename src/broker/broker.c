/*
 * The broker: opens the store and the metadata, accepts connections,
 * routes each request to its handler (send.c, pull.c, admin.c), registers
 * with every name server every registerNameServerPeriod, and expires silent
 * consumer clients.
 *
 * Stop sequence: stopping is set (new requests answered
 * SERVICE_NOT_AVAILABLE) and the broker unregisters; the store closes (its
 * pending appends complete and their replies go out); offsets, topics and
 * groups are saved; then connections, timers and the server close and the
 * caller's done callback runs. A start that fails once the store is open
 * goes through the same sequence for what it had started (abandon_start).
 */
#include "broker/broker_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"

#define MOD "broker"

void fy__reply_decode_error(fy_conn *conn, const fy_frame *f) {
  fy_conn_reply_error(conn, f->request_id, f->op, FERRY__V1__STATUS__BAD_REQUEST,
                      "malformed request header for op %u", f->op);
}

void fy__reply_err(fy_conn *conn, const struct fy_reqref *ref, uint16_t status, const char *fmt,
                   ...) {
  char text[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  if (ref->proto == FY_PROTO_RMQ)
    fy__rmq_reply_err(conn, ref, status, text);
  else
    fy_conn_reply_error(conn, ref->id, ref->op, status, "%s", text);
}

bool fy__broker_refuse_if_stopping(struct fy_broker *b, fy_conn *conn, const fy_frame *f) {
  if (!b->stopping)
    return false;
  if (f->kind == FY_FRAME_REQUEST)
    fy_conn_reply_error(conn, f->request_id, f->op, FERRY__V1__STATUS__SERVICE_NOT_AVAILABLE,
                        "broker %s is shutting down", b->cfg->broker_name);
  return true;
}

/* ---------------------------------------------------------------- name servers */

static void on_registered(fy_conn *conn, int err, const fy_frame *resp, void *arg) {
  struct ns_link *ns = arg;
  (void)conn;
  if (err) {
    fy_warn(MOD, "register with name server %s:%d failed: %s", ns->host, ns->port,
            fy_net_strerror(err));
    return;
  }
  if (resp->status != FERRY__V1__STATUS__OK) {
    char text[256];
    fy_frame_error_text(resp, text, sizeof text);
    fy_warn(MOD, "name server %s:%d refused registration: %s", ns->host, ns->port, text);
    return;
  }
  struct fy_broker *b = ns->b;
  if (b->cfg->role != FY_ROLE_SLAVE || b->stopping)
    return;
  Ferry__V1__RegisterBrokerResponse *r;
  if (fy_frame_unpack(resp, &ferry__v1__register_broker_response__descriptor,
                      (ProtobufCMessage **)&r))
    return;
  if (r->master_addr && *r->master_addr && strcmp(r->master_addr, b->master_addr) != 0) {
    fy_info(MOD, "master of %s is %s", b->cfg->broker_name, r->master_addr);
    snprintf(b->master_addr, sizeof b->master_addr, "%s", r->master_addr);
  }
  if (b->ha_slave && !b->cfg->ha_master_address[0])
    fy_ha_slave_set_master(b->ha_slave, r->ha_master_addr);
  fy_pb_free(&r->base);
}

/* A topic as registered: brokerPermission takes away read or write from
 * every topic of the broker, so that clients route around it (RocketMQ
 * registers brokerPermission itself as each topic's perm when it lacks either;
 * masking keeps a write-only topic from turning readable). */
static void add_topic(Ferry__V1__RegisterBrokerRequest *req, const struct fy_topic_config *tc,
                      uint32_t broker_perm) {
  Ferry__V1__TopicConfig *t = req->topics[req->n_topics];
  ferry__v1__topic_config__init(t);
  t->topic = (char *)tc->name;
  t->read_queues = tc->read_queues;
  t->write_queues = tc->write_queues;
  t->perm = tc->perm & (broker_perm | FY_PERM_INHERIT);
  t->order = tc->order;
  req->n_topics++;
}

static void register_one(struct fy_broker *b, struct ns_link *ns) {
  if (!ns->conn || !fy_conn_is_open(ns->conn))
    return;
  size_t n = fy_topics_count(b->topics);
  Ferry__V1__TopicConfig *tcs = calloc(n + 1, sizeof *tcs);
  Ferry__V1__TopicConfig **tcp = calloc(n + 1, sizeof *tcp);
  if (!tcs || !tcp) {
    free(tcs);
    free(tcp);
    return;
  }
  for (size_t i = 0; i < n; i++)
    tcp[i] = &tcs[i];
  Ferry__V1__RegisterBrokerRequest req = FERRY__V1__REGISTER_BROKER_REQUEST__INIT;
  req.cluster = b->settings.broker.cluster;
  req.broker_name = b->settings.broker.broker_name;
  req.broker_addr = b->addr;
  req.broker_id = b->cfg->broker_id;
  req.ha_addr = b->ha_addr;
  req.topics = tcp;
  req.n_topics = 0;
  /* Topic names are copied into the frame by fy_rpc_call before this returns. */
  struct fy_topic_config *list;
  size_t nl;
  if (fy_topics_list(b->topics, &list, &nl) == 0) {
    for (size_t i = 0; i < nl && i < n; i++)
      add_topic(&req, &list[i], b->cfg->broker_permission);
    int err = fy_rpc_call(ns->conn, FERRY__V1__OP__OP_REGISTER_BROKER, &req.base, NULL, 0, 10000,
                          on_registered, ns);
    if (err)
      fy_warn(MOD, "cannot send registration to %s:%d: %s", ns->host, ns->port,
              fy_net_strerror(err));
    free(list);
  }
  free(tcs);
  free(tcp);
}

static void on_ns_frame(fy_conn *conn, const fy_frame *f) {
  (void)conn;
  (void)f; /* only late responses arrive here; nothing to do */
}

static void on_ns_close(fy_conn *conn, int reason) {
  struct ns_link *ns = fy_conn_data(conn);
  (void)reason;
  if (ns && ns->conn == conn)
    ns->conn = NULL;
}

static void on_ns_connected(fy_conn *conn, int status) {
  struct ns_link *ns = fy_conn_data(conn);
  if (!ns)
    return;
  if (status) {
    fy_warn(MOD, "cannot connect to name server %s:%d: %s", ns->host, ns->port,
            fy_net_strerror(status));
    return;
  }
  fy_info(MOD, "connected to name server %s:%d", ns->host, ns->port);
  register_one(ns->b, ns);
}

static void ns_connect(struct fy_broker *b, struct ns_link *ns) {
  fy_conn_cfg cc = {.frame_max_bytes = b->cfg->max_frame_bytes, .on_frame = on_ns_frame,
                    .on_close = on_ns_close, .data = ns};
  int err = fy_conn_connect(b->loop, ns->host, ns->port, &cc, on_ns_connected, &ns->conn);
  if (err) {
    ns->conn = NULL;
    fy_warn(MOD, "cannot connect to name server %s:%d: %s", ns->host, ns->port,
            fy_net_strerror(err));
  }
}

void fy__broker_register_all(struct fy_broker *b) {
  if (b->stopping)
    return;
  for (size_t i = 0; i < b->nns; i++) {
    struct ns_link *ns = &b->ns[i];
    if (!ns->conn)
      ns_connect(b, ns);
    else if (fy_conn_is_open(ns->conn))
      register_one(b, ns);
  }
}

static void on_register_timer(uv_timer_t *t) { fy__broker_register_all(t->data); }

static int parse_namesrv(struct fy_broker *b, const char *list) {
  char buf[1024];
  snprintf(buf, sizeof buf, "%s", list);
  char *save = NULL;
  for (char *tok = strtok_r(buf, ";, ", &save); tok; tok = strtok_r(NULL, ";, ", &save)) {
    char *colon = strrchr(tok, ':');
    if (!colon || colon == tok || b->nns == FY_NAMESRV_MAX) {
      fy_error(MOD, "namesrvAddr: '%s' is not host:port (or more than %d name servers)", tok,
               FY_NAMESRV_MAX);
      return -FY_ECONFIG;
    }
    *colon = '\0';
    long port = strtol(colon + 1, NULL, 10);
    if (port <= 0 || port > 65535 || strlen(tok) >= sizeof b->ns[0].host) {
      fy_error(MOD, "namesrvAddr: bad port or host in '%s'", tok);
      return -FY_ECONFIG;
    }
    snprintf(b->ns[b->nns].host, sizeof b->ns[b->nns].host, "%s", tok);
    b->ns[b->nns].port = (int)port;
    b->ns[b->nns].b = b;
    b->nns++;
  }
  return 0;
}

static void unregister_all(struct fy_broker *b) {
  Ferry__V1__UnregisterBrokerRequest req = FERRY__V1__UNREGISTER_BROKER_REQUEST__INIT;
  req.cluster = b->settings.broker.cluster;
  req.broker_name = b->settings.broker.broker_name;
  req.broker_addr = b->addr;
  req.broker_id = b->cfg->broker_id;
  for (size_t i = 0; i < b->nns; i++)
    if (b->ns[i].conn && fy_conn_is_open(b->ns[i].conn))
      fy_rpc_oneway(b->ns[i].conn, FERRY__V1__OP__OP_UNREGISTER_BROKER, &req.base, NULL, 0);
}

/* ---------------------------------------------------------------- connections */

static void on_frame(fy_conn *conn, const fy_frame *f) {
  struct bconn *bc = fy_conn_data(conn);
  if (!bc || f->kind == FY_FRAME_RESPONSE)
    return;
  struct fy_broker *b = bc->b;
  if (fy__broker_refuse_if_stopping(b, conn, f))
    return;
  switch (f->op) {
  case FERRY__V1__OP__OP_SEND: fy__handle_send(b, bc, f); break;
  case FERRY__V1__OP__OP_PULL: fy__handle_pull(b, bc, f); break;
  default: fy__handle_admin(b, bc, f); break;
  }
}

static void on_accept(fy_server *srv, fy_conn *conn) {
  struct fy_broker *b = fy_server_data(srv);
  struct bconn *bc = calloc(1, sizeof *bc);
  if (!bc || !b) {
    free(bc);
    fy_conn_close(conn, -ENOMEM);
    return;
  }
  bc->b = b;
  bc->conn = conn;
  fy__parse_host(fy_conn_peer(conn), &bc->born); /* once, not per send */
  fy_conn_set_data(conn, bc);
  b->nconns++;
}

static void maybe_finish_stop(struct fy_broker *b);

static void on_conn_close(fy_conn *conn, int reason) {
  (void)reason;
  struct bconn *bc = fy_conn_data(conn);
  if (!bc)
    return;
  fy__sends_conn_closed(bc);
  fy__pulls_conn_closed(bc);
  struct fy_broker *b = bc->b;
  fy_consumers_conn_closed(b->consumers, conn);
  fy_conn_set_data(conn, NULL);
  free(bc);
  b->nconns--;
  if (b->stopping)
    maybe_finish_stop(b);
}

static void on_housekeeping(uv_timer_t *t) {
  struct fy_broker *b = t->data;
  fy_consumers_expire(b->consumers, fy__now_ms(), b->cfg->client_expiry_ms);
}

/* ---------------------------------------------------------------- HA */

bool fy__is_sync_master(const struct fy_broker *b) {
  return b->cfg->role == FY_ROLE_SYNC_MASTER && b->ha_master;
}

static void on_acked(void *arg, uint64_t acked) { fy_store_confirm(arg, acked); }

/* Slave: exchange metadata with the master (see MetadataRequest). Offsets
 * merge both ways; the master's deletions (tombstones in its offsets
 * document, offsets.h) remove the slave's copy of what it deleted. */
static void on_metadata(fy_conn *conn, int err, const fy_frame *resp, void *arg) {
  struct fy_broker *b = arg;
  (void)conn;
  b->meta_inflight = false;
  if (err || resp->status != FERRY__V1__STATUS__OK)
    return;
  Ferry__V1__MetadataResponse *r;
  if (fy_frame_unpack(resp, &ferry__v1__metadata_response__descriptor, (ProtobufCMessage **)&r))
    return;
  char why[256] = "";
  bool changed = false;
  struct fy_offsets_merge_stats ms = {0};
  if (*r->topics_json &&
      fy_topics_replace_from_json(b->topics, r->topics_json, strlen(r->topics_json), &changed, why,
                                  sizeof why) != 0)
    fy_warn(MOD, "topics from the master not adopted: %s", why);
  if (*r->groups_json &&
      fy_groups_replace_from_json(b->groups, r->groups_json, strlen(r->groups_json), &changed, why,
                                  sizeof why) != 0)
    fy_warn(MOD, "groups from the master not adopted: %s", why);
  if (*r->consumer_offsets_json &&
      fy_offsets_merge_json(b->offsets, r->consumer_offsets_json, strlen(r->consumer_offsets_json),
                            &ms, why, sizeof why) != 0)
    fy_warn(MOD, "offsets from the master not merged: %s", why);
  if (ms.deleted)
    fy_info(MOD, "removed %" PRIu64 " queue offsets the master deleted", ms.deleted);
  b->meta_syncs++;
  fy_pb_free(&r->base);
}

static void on_master_conn_close(fy_conn *conn, int reason) {
  struct fy_broker *b = fy_conn_data(conn);
  (void)reason;
  if (b && b->master_conn == conn) {
    b->master_conn = NULL;
    b->meta_inflight = false;
  }
}

static void on_master_connected(fy_conn *conn, int status) {
  (void)conn;
  (void)status; /* the next tick sends when the connection is open */
}

static void on_meta_timer(uv_timer_t *t) {
  struct fy_broker *b = t->data;
  if (b->stopping || !b->master_addr[0] || b->meta_inflight)
    return;
  if (!b->master_conn) {
    char host[80];
    snprintf(host, sizeof host, "%s", b->master_addr);
    char *colon = strrchr(host, ':');
    if (!colon)
      return;
    *colon = '\0';
    fy_conn_cfg cc = {.frame_max_bytes = b->cfg->max_frame_bytes, .on_close = on_master_conn_close,
                      .data = b};
    if (fy_conn_connect(b->loop, host, atoi(colon + 1), &cc, on_master_connected,
                        &b->master_conn) != 0)
      b->master_conn = NULL;
    return;
  }
  if (!fy_conn_is_open(b->master_conn))
    return;
  size_t len;
  char *offsets = fy_offsets_to_json(b->offsets, &len);
  Ferry__V1__MetadataRequest req = FERRY__V1__METADATA_REQUEST__INIT;
  req.consumer_offsets_json = offsets ? offsets : "";
  if (fy_rpc_call(b->master_conn, FERRY__V1__OP__OP_GET_METADATA, &req.base, NULL, 0, 10000,
                  on_metadata, b) == 0)
    b->meta_inflight = true;
  free(offsets);
}

static int start_ha(struct fy_broker *b) {
  fy_ha_config_defaults(&b->ha_cfg);
  b->ha_cfg.heartbeat_ms = b->cfg->ha_heartbeat_ms;
  b->ha_cfg.timeout_ms = b->cfg->ha_timeout_ms;
  b->ha_cfg.chunk_bytes = b->cfg->ha_batch_bytes;
  b->ha_cfg.fallbehind_max = b->cfg->ha_fallbehind_max;
  b->ha_cfg.ack_on_durable = b->cfg->ha_ack_on == 1;
  if (b->cfg->role == FY_ROLE_SLAVE) {
    int err = fy_ha_slave_start(b->loop, b->store, &b->ha_cfg, b->cfg->broker_id,
                                b->cfg->broker_name, b->cfg->ha_master_address, &b->ha_slave);
    if (!err)
      uv_timer_start(&b->meta_timer, on_meta_timer, 0, b->cfg->metadata_sync_ms);
    return err;
  }
  int port = b->cfg->ha_listen_port ? (int)b->cfg->ha_listen_port : (int)b->cfg->listen_port + 1;
  if (b->cfg->listen_port == 0 && !b->cfg->ha_listen_port)
    port = 0; /* tests: any free port */
  int err = fy_ha_master_start(b->loop, b->store, &b->ha_cfg, b->cfg->listen_address, port,
                               &b->ha_master);
  if (err)
    return err;
  /* The store was opened with confirm_required (fy_broker_start): what no
   * slave acknowledged before a restart stays hidden until one does. */
  if (b->cfg->role == FY_ROLE_SYNC_MASTER)
    fy_ha_master_on_ack(b->ha_master, on_acked, b->store);
  return 0;
}

/* ---------------------------------------------------------------- start */

static int detect_ip(struct fy_broker *b) {
  if (b->cfg->broker_ip[0]) {
    snprintf(b->ip, sizeof b->ip, "%s", b->cfg->broker_ip);
  } else {
    uv_interface_address_t *ifs;
    int n;
    snprintf(b->ip, sizeof b->ip, "127.0.0.1");
    if (uv_interface_addresses(&ifs, &n) == 0) {
      for (int i = 0; i < n; i++)
        if (!ifs[i].is_internal && ifs[i].address.address4.sin_family == AF_INET) {
          uv_ip4_name(&ifs[i].address.address4, b->ip, sizeof b->ip);
          break;
        }
      uv_free_interface_addresses(ifs, n);
    }
  }
  struct sockaddr_in sa;
  if (uv_ip4_addr(b->ip, 0, &sa) != 0) {
    fy_error(MOD, "brokerIP1=%s is not an IPv4 address", b->ip);
    return -FY_ECONFIG;
  }
  memcpy(b->ip4, &sa.sin_addr, 4);
  b->pid = (uint32_t)getpid();
  return 0;
}

/* Why a start failed once the store was open. Logged when what had started
 * is closed again (maybe_finish_stop), so that it is the last line. */
static void start_failed(struct fy_broker *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void start_failed(struct fy_broker *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(b->start_error, sizeof b->start_error, fmt, ap);
  va_end(ap);
}

static int open_metadata(struct fy_broker *b) {
  char err[480];
  fy_aio *aio = fy_store_aio(b->store);
  struct fy_topics_options to;
  fy_topics_options_init(&to);
  to.root_dir = b->settings.store.root_dir;
  int rc = fy_topics_open(b->loop, aio, &to, &b->topics, err, sizeof err);
  if (rc) {
    start_failed(b, "topics: %s", err);
    return rc;
  }
  struct fy_offsets_options oo;
  fy_offsets_options_init(&oo);
  oo.root_dir = b->settings.store.root_dir;
  oo.flush_interval_ms = b->cfg->flush_offsets_interval_ms;
  rc = fy_offsets_open(b->loop, aio, &oo, &b->offsets, err, sizeof err);
  if (rc) {
    start_failed(b, "consumer offsets: %s", err);
    return rc;
  }
  struct fy_groups_options go;
  fy_groups_options_init(&go);
  go.root_dir = b->settings.store.root_dir;
  go.auto_create = b->cfg->auto_create_group;
  rc = fy_groups_open(b->loop, aio, &go, &b->groups, err, sizeof err);
  if (rc) {
    start_failed(b, "subscription groups: %s", err);
    return rc;
  }
  /* RocketMQ's auto-creation contract: brokers that create topics on first
   * send advertise the template topic TBW102, so clients know where a send
   * to a topic no name server knows yet may go. */
  struct fy_topic_config tbw = {.name = "TBW102", .perm = FY_PERM_READ | FY_PERM_WRITE | FY_PERM_INHERIT};
  tbw.read_queues = tbw.write_queues = b->cfg->default_topic_queues;
  const char *why = NULL;
  if (b->cfg->auto_create_topic && !fy_topics_exists(b->topics, "TBW102"))
    fy_topics_put(b->topics, &tbw, FY_TOPIC_ALLOW_SYSTEM, &why);
  else if (!b->cfg->auto_create_topic && fy_topics_exists(b->topics, "TBW102"))
    fy_topics_delete(b->topics, "TBW102");
  return 0;
}

static void write_pid_file(struct fy_broker *b) {
  char path[600];
  if (b->cfg->pid_file[0])
    snprintf(path, sizeof path, "%s", b->cfg->pid_file);
  else
    snprintf(path, sizeof path, "%s/broker.pid", b->settings.store.root_dir);
  FILE *f = fopen(path, "w");
  if (!f) {
    fy_warn(MOD, "cannot write pid file %s", path);
    return;
  }
  fprintf(f, "%d\n", (int)getpid());
  fclose(f);
}

static void abandon_start(struct fy_broker *b);

int fy_broker_start(uv_loop_t *loop, const struct fy_broker_settings *cfg, fy_broker **out) {
  struct fy_broker *b = calloc(1, sizeof *b);
  if (!b)
    return -ENOMEM;
  b->settings = *cfg;
  b->cfg = &b->settings.broker;
  b->loop = loop;
  b->started_ms = (uint64_t)fy__now_ms();
  b->send_lat = malloc(sizeof *b->send_lat);
  if (b->send_lat)
    fy__send_latency_init(b->send_lat, uv_hrtime());
  int err = detect_ip(b);
  if (!err)
    err = parse_namesrv(b, b->cfg->namesrv_addr);
  if (err)
    goto out_free;
  b->consumers = fy_consumers_new(100000);
  b->resets = fy_strmap_new();
  if (!b->consumers || !b->resets) {
    err = -ENOMEM;
    goto out_free;
  }
  struct fy_store_recovery rec;
  /* SYNC_MASTER: consumers see a record only once a slave has it, from the
   * first record recovery makes visible on (store.h). */
  b->settings.store.confirm_required = b->cfg->role == FY_ROLE_SYNC_MASTER;
  /* The commit log keeps in memory what RocketMQ calls in memory: the newest
   * accessMessageInMemoryMaxRatio percent of RAM, unless told otherwise. */
  uint64_t in_memory = uv_get_total_memory() / 100 * b->cfg->memory_max_ratio;
  if (!b->settings.store.page_cache_max)
    b->settings.store.page_cache_max = in_memory;
  /* Further behind than what the page cache keeps, reads come from disk:
   * slaveReadBehindBytes, else the smaller of the two bounds. */
  b->slave_read_threshold = b->cfg->slave_read_behind_bytes;
  if (!b->slave_read_threshold)
    b->slave_read_threshold = b->settings.store.page_cache_max < in_memory
                                  ? b->settings.store.page_cache_max
                                  : in_memory;
  err = fy_store_open(loop, &b->settings.store, &b->store, &rec);
  if (err) {
    fy_error(MOD, "cannot open the store in %s: %s", b->settings.store.root_dir, fy_strerror(err));
    goto out_free;
  }
  /* From here on a failure closes what started (abandon_start), and the
   * broker's timers are among it: made now, started at the end. */
  uv_timer_t *timers[] = {&b->register_timer, &b->housekeeping_timer, &b->meta_timer};
  for (size_t i = 0; i < sizeof timers / sizeof timers[0]; i++) {
    uv_timer_init(loop, timers[i]);
    timers[i]->data = b;
  }
  /* Before the port opens: whoever sees the broker listening (an operator's
   * kill-master.sh, the drill) finds this process in the pid file. */
  write_pid_file(b);
  err = open_metadata(b);
  if (err)
    goto out_abandon;
  err = fy__pull_init(b);
  if (err) {
    start_failed(b, "long polling: %s", fy_strerror(err));
    goto out_abandon;
  }
  b->pull_ready = true;
  fy_store_on_arrival(b->store, fy__pull_on_arrival, b);
  fy_consumers_on_change(b->consumers, fy__rmq_group_changed, b);
  err = fy__schedule_start(b);
  if (err) {
    start_failed(b, "delayed messages: %s", fy_strerror(err));
    goto out_abandon;
  }

  fy_conn_cfg cc = {.frame_max_bytes = b->cfg->max_frame_bytes, .max_conns = b->cfg->max_conns,
                    .on_frame = on_frame, .on_foreign = fy__rmq_on_bytes,
                    .on_close = on_conn_close};
  err = fy_server_listen(loop, b->cfg->listen_address, (int)b->cfg->listen_port, &cc, on_accept,
                         &b->server);
  if (err) {
    start_failed(b, "cannot listen on %s:%u: %s", b->cfg->listen_address, b->cfg->listen_port,
                 fy_net_strerror(err));
    goto out_abandon;
  }
  fy_server_set_data(b->server, b);
  int port = fy_server_port(b->server);
  snprintf(b->addr, sizeof b->addr, "%s:%d", b->ip, port);
  err = start_ha(b);
  if (err) {
    start_failed(b, "cannot start HA (%s): %s",
                 b->cfg->role == FY_ROLE_SLAVE ? "slave" : "listening for slaves",
                 fy_net_strerror(err));
    goto out_abandon;
  }
  if (b->ha_master)
    snprintf(b->ha_addr, sizeof b->ha_addr, "%s:%d", b->ip, fy_ha_master_port(b->ha_master));

  uv_timer_start(&b->register_timer, on_register_timer, 0, b->cfg->register_period_ms);
  uv_timer_start(&b->housekeeping_timer, on_housekeeping, 1000, 1000);
  fy_info(MOD, "broker %s (cluster %s, id %" PRIu64 ", %s, %s) serving on %s", b->cfg->broker_name,
          b->cfg->cluster, b->cfg->broker_id,
          b->cfg->role == FY_ROLE_SLAVE ? "SLAVE"
          : b->cfg->role == FY_ROLE_SYNC_MASTER ? "SYNC_MASTER" : "ASYNC_MASTER",
          b->settings.store.flush_disk_type == FY_SYNC_FLUSH ? "SYNC_FLUSH" : "ASYNC_FLUSH", b->addr);
  *out = b;
  return 0;

out_abandon:
  abandon_start(b);
  return err;

out_free:
  /* Start-up failed before the store was open: nothing has started that
   * must be stopped, so what was made is freed here (a config or disk
   * problem is common, and a leak report would bury its message under the
   * ASan build). */
  fy_consumers_free(b->consumers);
  fy_strmap_free(b->resets);
  free(b->send_lat);
  free(b);
  return err ? err : -EIO;
}

int fy_broker_port(const fy_broker *b) { return fy_server_port(b->server); }
int fy_broker_ha_port(const fy_broker *b) { return b->ha_master ? fy_ha_master_port(b->ha_master) : 0; }

/* ---------------------------------------------------------------- stop */

static void stop_step(struct fy_broker *b);

/* The broker is freed once its handles are closed and every connection's
 * close callback has run (they refer to it). */
static void maybe_finish_stop(struct fy_broker *b) {
  if (b->handles_open || b->nconns || !b->closing_handles)
    return;
  void (*done)(void *, int) = b->stop_done;
  void *arg = b->stop_arg;
  int status = b->stop_status;
  fy__pull_free(b);
  fy__rmq_free(b);
  fy__schedule_free(b);
  fy_topics_close(b->topics);
  fy_offsets_close(b->offsets);
  fy_groups_close(b->groups);
  fy_consumers_free(b->consumers);
  fy_store_free(b->store);
  size_t pos = 0, klen;
  const char *k;
  void *v;
  while (fy_strmap_next(b->resets, &pos, &k, &klen, &v))
    free(v);
  fy_strmap_free(b->resets);
  fy_pb_arena_free(&b->send_arena);
  free(b->send_scratch);
  fy__send_cache_free(b);
  free(b->send_lat);
  if (b->start_error[0])
    fy_error(MOD, "%s", b->start_error);
  free(b);
  if (done)
    done(arg, status);
}

static void on_handle_closed(uv_handle_t *h) {
  struct fy_broker *b = h->data;
  b->handles_open--;
  maybe_finish_stop(b);
}

static void on_store_closed(void *arg) { stop_step(arg); }

static void on_ha_stopped(void *arg) {
  struct fy_broker *b = arg;
  b->ha_master = NULL;
  b->ha_slave = NULL;
  fy_store_close(b->store, on_store_closed, b);
}

static void on_meta_saved(void *arg, int status) {
  struct fy_broker *b = arg;
  if (status && !b->stop_status)
    b->stop_status = status;
  if (--b->stop_waits != 0)
    return;
  if (b->ha_master)
    fy_ha_master_stop(b->ha_master, on_ha_stopped, b);
  else if (b->ha_slave)
    fy_ha_slave_stop(b->ha_slave, on_ha_stopped, b);
  else
    on_ha_stopped(b);
}

/* Closes what is open once the store is closed; a start abandoned midway
 * has the broker's three timers but maybe not the rest. */
static void stop_step(struct fy_broker *b) {
  b->closing_handles = true;
  b->handles_open = 3 + b->pull_ready + (b->sched != NULL);
  if (b->pull_ready)
    fy__pull_close(b, on_handle_closed);
  if (b->sched)
    fy__schedule_close(b, on_handle_closed);
  uv_close((uv_handle_t *)&b->meta_timer, on_handle_closed);
  if (b->master_conn) {
    fy_conn_set_data(b->master_conn, NULL);
    fy_conn_close(b->master_conn, 0);
    b->master_conn = NULL;
  }
  if (b->server)
    fy_server_close(b->server);
  for (size_t i = 0; i < b->nns; i++)
    if (b->ns[i].conn) {
      fy_conn_set_data(b->ns[i].conn, NULL);
      fy_conn_close(b->ns[i].conn, 0);
      b->ns[i].conn = NULL;
    }
  uv_close((uv_handle_t *)&b->register_timer, on_handle_closed);
  uv_close((uv_handle_t *)&b->housekeeping_timer, on_handle_closed);
}

/* Metadata is saved first (it writes through the store's I/O context, so
 * no save may be in flight when the store closes), then the store closes,
 * draining pending sends, whose replies still go out. A table that did not
 * open (an abandoned start) has nothing to save. */
static void stop_begin(struct fy_broker *b, void (*done)(void *arg, int status), void *arg) {
  fy_assert(!b->stopping);
  b->stopping = true;
  b->stop_done = done;
  b->stop_arg = arg;
  unregister_all(b);
  uv_timer_stop(&b->register_timer);
  uv_timer_stop(&b->housekeeping_timer);
  uv_timer_stop(&b->meta_timer);
  b->stop_waits = 4; /* three saves, plus one held until all are queued */
  if (!b->offsets || fy_offsets_flush(b->offsets, on_meta_saved, b))
    b->stop_waits--;
  if (!b->topics || fy_topics_flush(b->topics, on_meta_saved, b))
    b->stop_waits--;
  if (!b->groups || fy_groups_flush(b->groups, on_meta_saved, b))
    b->stop_waits--;
  on_meta_saved(b, 0);
}

void fy_broker_stop(fy_broker *b, void (*done)(void *arg, int status), void *arg) {
  fy_info(MOD, "stopping: unregistering, saving offsets, draining sends, closing the store");
  stop_begin(b, done, arg);
}

/* A start that failed once the store was open: what had started stops as
 * in fy_broker_stop (the store closes cleanly, so the next start needs no
 * recovery), without a word until the end, where maybe_finish_stop logs
 * start_error and frees the broker. The store's pending I/O keeps the loop
 * running meanwhile. */
static void abandon_start(struct fy_broker *b) {
  fy_assert(b->start_error[0]);
  stop_begin(b, NULL, NULL);
}
