/* The fake broker of the client tests (see fakebroker.h). Included by the
 * test that uses it (tests/CMakeLists.txt builds test_*.c files alone). */
#include "fakebroker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/cl_int.h"
#include "common/config.h"
#include "common/err.h"
#include "common/log.h"
#include "common/record.h"
#include "ferry.pb-c.h"
#include "net/rpc.h"

/* ------------------------------------------------------------ the thread */

static void senv_on_async(uv_async_t *a) {
  struct senv *e = a->data;
  pthread_mutex_lock(&e->mu);
  void (*fn)(struct senv *, void *) = e->fn;
  void *arg = e->arg;
  e->fn = NULL;
  pthread_mutex_unlock(&e->mu);
  if (fn) {
    fn(e, arg);
    pthread_mutex_lock(&e->mu);
    e->done = true;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
  }
}

static void *senv_main(void *arg) {
  struct senv *e = arg;
  uv_run(&e->loop, UV_RUN_DEFAULT);
  return NULL;
}

void senv_run(struct senv *e, void (*fn)(struct senv *, void *), void *arg) {
  pthread_mutex_lock(&e->mu);
  while (e->fn || !e->done)
    pthread_cond_wait(&e->cv, &e->mu);
  e->fn = fn;
  e->arg = arg;
  e->done = false;
  pthread_mutex_unlock(&e->mu);
  uv_async_send(&e->async);
  pthread_mutex_lock(&e->mu);
  while (!e->done)
    pthread_cond_wait(&e->cv, &e->mu);
  pthread_mutex_unlock(&e->mu);
}

static void start_ns(struct senv *e, void *arg) {
  int i = (int)(intptr_t)arg;
  struct fy_namesrv_config nc;
  struct fy_config_section sec = {fy_namesrv_config_keys, &nc};
  fy_config_defaults(&sec, 1);
  nc.listen_port = 0;
  snprintf(nc.listen_address, sizeof nc.listen_address, "127.0.0.1");
  if (fy_namesrv_start(&e->loop, &nc, &e->ns[i]) == 0)
    e->ns_port[i] = fy_namesrv_port(e->ns[i]);
}

struct senv *senv_start(int nns) {
  struct senv *e = calloc(1, sizeof *e);
  uv_loop_init(&e->loop);
  uv_async_init(&e->loop, &e->async, senv_on_async);
  e->async.data = e;
  pthread_mutex_init(&e->mu, NULL);
  pthread_cond_init(&e->cv, NULL);
  e->done = true;
  pthread_create(&e->thread, NULL, senv_main, e);
  for (int i = 0; i < nns; i++)
    senv_run(e, start_ns, (void *)(intptr_t)i);
  return e;
}

static void fb_close_all(struct fb *b);

static void stop_all(struct senv *e, void *arg) {
  (void)arg;
  for (int i = 0; i < e->nfb; i++)
    fb_close_all(e->fb[i]);
  for (int i = 0; i < 2; i++)
    if (e->ns[i]) {
      fy_namesrv_stop(e->ns[i]);
      e->ns[i] = NULL;
    }
  uv_close((uv_handle_t *)&e->async, NULL);
}

void senv_stop(struct senv *e) {
  senv_run(e, stop_all, NULL);
  pthread_join(e->thread, NULL);
  int rc = uv_loop_close(&e->loop);
  if (rc)
    fprintf(stderr, "server loop: handles left open\n");
  for (int i = 0; i < e->nfb; i++) {
    struct fb *b = e->fb[i];
    for (int q = 0; q < FB_MAXQ; q++)
      for (uint32_t k = 0; k < b->q[q].n; k++)
        free(b->q[q].rec[k]);
    free(b);
  }
  pthread_mutex_destroy(&e->mu);
  pthread_cond_destroy(&e->cv);
  free(e);
}

/* ------------------------------------------------------------ records */

static int64_t fb_now(void) { return fy__cl_wall_ms(); }

static void fb_append(struct fb *b, uint32_t qid, const uint8_t *body, uint32_t body_len,
                      const char *tags, const char *keys, const char *uniq,
                      Ferry__V1__KeyValue **props, size_t nprops, int64_t born) {
  struct fb_queue *q = &b->q[qid % FB_MAXQ];
  if (q->n == FB_MAXMSG)
    return;
  char p[2048];
  size_t pl = 0;
  if (tags && *tags)
    fy_props_add(p, sizeof p, &pl, FY_PROP_TAGS, tags, strlen(tags));
  if (keys && *keys)
    fy_props_add(p, sizeof p, &pl, FY_PROP_KEYS, keys, strlen(keys));
  if (uniq && *uniq)
    fy_props_add(p, sizeof p, &pl, FY_PROP_UNIQ_KEY, uniq, strlen(uniq));
  for (size_t i = 0; i < nprops; i++)
    fy_props_add(p, sizeof p, &pl, props[i]->key, props[i]->value, strlen(props[i]->value));
  struct fy_msg m = {
      .queue_id = qid,
      .queue_offset = q->n,
      .phys_offset = b->phys,
      .born_ts_ms = born,
      .born_host = {.ip = {127, 0, 0, 1}, .port = 1},
      .store_ts_ms = fb_now(),
      .store_host = {.ip = {127, 0, 0, 1}, .port = (uint32_t)b->port},
      .body = body,
      .body_len = body_len,
      .topic = b->topic,
      .topic_len = (uint16_t)strlen(b->topic),
      .props = p,
      .props_len = (uint16_t)pl,
  };
  uint32_t size = fy_record_size(&m);
  uint8_t *rec = malloc(size);
  fy_record_encode(&m, rec);
  q->rec[q->n] = rec;
  q->len[q->n] = size;
  q->hash[q->n] = tags && *tags ? fy_tag_hash(tags, strlen(tags)) : 0;
  q->n++;
  b->phys += size;
}

struct preload {
  struct fb *b;
  uint32_t qid, count;
  bool mixed;
};

static void do_preload(struct senv *e, void *arg) {
  struct preload *p = arg;
  for (uint32_t i = 0; i < p->count; i++) {
    char body[96], uniq[64];
    uint32_t k = p->b->q[p->qid].n;
    snprintf(body, sizeof body, "%s-q%u-%u", p->b->name, p->qid, k);
    snprintf(uniq, sizeof uniq, "%s%02u%08u", p->b->name, p->qid, k);
    const char *tags = p->mixed && (k % 2) ? "TagB" : "TagA";
    fb_append(p->b, p->qid, (const uint8_t *)body, (uint32_t)strlen(body), tags, "", uniq, NULL,
              0, fb_now());
  }
}

void fb_preload(struct fb *b, uint32_t qid, uint32_t count, bool mixed_tags) {
  struct preload p = {b, qid, count, mixed_tags};
  senv_run(b->env, do_preload, &p);
}

/* --------------------------------------------------------------- pulls */

static void pull_answer(struct fb *b, fy_conn *conn, uint64_t id, uint32_t qid, uint64_t offset,
                        uint32_t max, const int64_t *hashes, size_t nh, bool final) {
  struct fb_queue *q = &b->q[qid % FB_MAXQ];
  Ferry__V1__PullResponse r = FERRY__V1__PULL_RESPONSE__INIT;
  r.min_offset = q->min;
  r.max_offset = q->n;
  r.suggest_broker_id = atomic_load(&b->suggest);
  if (offset < q->min || offset > q->n) {
    r.next_offset = offset < q->min ? q->min : q->n;
    fy_conn_reply(conn, id, FERRY__V1__OP__OP_PULL, FERRY__V1__STATUS__PULL_OFFSET_MOVED, &r.base,
                  NULL, 0, NULL, NULL);
    return;
  }
  uv_buf_t bufs[64];
  unsigned nb = 0;
  uint64_t o = offset;
  for (; o < q->n && nb < max && nb < 64; o++) {
    bool match = nh == 0 || !atomic_load(&b->filter);
    for (size_t i = 0; i < nh && !match; i++)
      match = hashes[i] == q->hash[o];
    if (match)
      bufs[nb++] = uv_buf_init((char *)q->rec[o], q->len[o]);
  }
  r.next_offset = o;
  r.count = nb;
  if (nb == 0 && o == offset && !final)
    return; /* caller holds */
  uint16_t st = nb ? FERRY__V1__STATUS__OK
                   : (o > offset ? FERRY__V1__STATUS__PULL_RETRY_IMMEDIATELY
                                 : FERRY__V1__STATUS__PULL_NOT_FOUND);
  /* raw buffers stay valid: records are never freed while the env runs */
  fy_conn_reply(conn, id, FERRY__V1__OP__OP_PULL, st, &r.base, bufs, nb, NULL, NULL);
}

static bool try_answer(struct fb *b, struct fb_held *h, bool final) {
  struct fb_queue *q = &b->q[h->qid % FB_MAXQ];
  if (!final && h->offset >= q->min && h->offset == q->n)
    return false;
  pull_answer(b, h->conn, h->id, h->qid, h->offset, h->max, h->hashes, h->nhashes, true);
  return true;
}

static void on_hold_timer(uv_timer_t *t) {
  struct fb *b = t->data;
  uint64_t now = fy__cl_now_ms();
  for (int i = 0; i < FB_MAXHELD; i++) {
    struct fb_held *h = &b->held[i];
    if (!h->used)
      continue;
    if (try_answer(b, h, now >= h->deadline_ms))
      h->used = false;
  }
}

static void on_pull(struct fb *b, fy_conn *conn, const fy_frame *f) {
  atomic_fetch_add(&b->pulls, 1);
  if (atomic_load(&b->pull_silent))
    return;
  Ferry__V1__PullRequest *req;
  if (fy_frame_unpack(f, &ferry__v1__pull_request__descriptor, (ProtobufCMessage **)&req))
    return;
  b->nlast = req->n_tag_hashes < 16 ? req->n_tag_hashes : 16;
  for (size_t i = 0; i < b->nlast; i++)
    b->last_hashes[i] = req->tag_hashes[i];
  if (req->has_commit_offset) {
    b->last_commit_in_pull = req->commit_offset + 1;
    if (req->queue_id < FB_MAXQ) {
      b->has_off[req->queue_id] = true;
      b->off[req->queue_id] = req->commit_offset;
    }
  }
  struct fb_queue *q = &b->q[req->queue_id % FB_MAXQ];
  bool empty = req->queue_offset >= q->min && req->queue_offset == q->n;
  if (empty && req->suspend_timeout_ms) {
    for (int i = 0; i < FB_MAXHELD; i++) {
      struct fb_held *h = &b->held[i];
      if (h->used)
        continue;
      h->used = true;
      h->conn = conn;
      h->id = f->request_id;
      h->qid = req->queue_id;
      h->offset = req->queue_offset;
      h->max = req->max_msgs;
      h->deadline_ms = fy__cl_now_ms() + req->suspend_timeout_ms;
      h->nhashes = b->nlast;
      memcpy(h->hashes, b->last_hashes, sizeof h->hashes);
      fy_pb_free(&req->base);
      return;
    }
  }
  pull_answer(b, conn, f->request_id, req->queue_id, req->queue_offset, req->max_msgs,
              req->tag_hashes, req->n_tag_hashes, true);
  fy_pb_free(&req->base);
}

/* --------------------------------------------------------------- sends */

static void on_send(struct fb *b, fy_conn *conn, const fy_frame *f) {
  atomic_fetch_add(&b->sends, 1);
  switch (atomic_load(&b->send_mode)) {
  case FB_SEND_BUSY:
    fy_conn_reply_error(conn, f->request_id, f->op, FERRY__V1__STATUS__SYSTEM_BUSY,
                        "[TEST] broker %s busy", b->name);
    return;
  case FB_SEND_CLOSE: fy_conn_close(conn, -ECONNRESET); return;
  case FB_SEND_SILENT: return;
  case FB_SEND_HOLD: {
    if (b->nheld_sends == b->cap_held_sends) {
      size_t cap = b->cap_held_sends ? 2 * b->cap_held_sends : 1024;
      struct fb_held_send *grown = realloc(b->held_sends, cap * sizeof *grown);
      if (!grown) {
        fprintf(stderr, "[fakebroker] out of memory holding sends\n");
        abort();
      }
      b->held_sends = grown;
      b->cap_held_sends = cap;
    }
    struct fb_held_send *h = &b->held_sends[b->nheld_sends++];
    h->conn = conn;
    h->len = FY_FRAME_HEADER_LEN + f->payload_len;
    h->frame = malloc(h->len);
    if (!h->frame) {
      fprintf(stderr, "[fakebroker] out of memory holding a send\n");
      abort();
    }
    fy_frame_encode_header(h->frame, FY_FRAME_REQUEST, f->payload_len, f->request_id, f->op, 0,
                           f->header_len);
    memcpy(h->frame + FY_FRAME_HEADER_LEN, f->header, f->header_len);
    memcpy(h->frame + FY_FRAME_HEADER_LEN + f->header_len, f->raw, f->raw_len);
    return;
  }
  default: break;
  }
  Ferry__V1__SendRequest *req;
  if (fy_frame_unpack(f, &ferry__v1__send_request__descriptor, (ProtobufCMessage **)&req)) {
    fy_conn_reply_error(conn, f->request_id, f->op, FERRY__V1__STATUS__BAD_REQUEST, "bad");
    return;
  }
  if (strcmp(req->topic, b->topic) != 0) {
    fy_conn_reply_error(conn, f->request_id, f->op, FERRY__V1__STATUS__TOPIC_NOT_EXIST,
                        "topic %s not here", req->topic);
    fy_pb_free(&req->base);
    return;
  }
  uint32_t qid = req->queue_id < 0 ? 0 : (uint32_t)req->queue_id;
  Ferry__V1__SendResult *rs = calloc(req->n_messages + 1, sizeof *rs);
  Ferry__V1__SendResult **rsp = calloc(req->n_messages + 1, sizeof *rsp);
  char (*oids)[64] = calloc(req->n_messages + 1, 64);
  const uint8_t *body = f->raw;
  for (size_t i = 0; i < req->n_messages; i++) {
    Ferry__V1__SendMessage *m = req->messages[i];
    ferry__v1__send_result__init(&rs[i]);
    uint64_t phys = b->phys;
    rs[i].queue_offset = b->q[qid % FB_MAXQ].n;
    fb_append(b, qid, body, m->body_len, m->tags, m->keys, m->uniq_key, m->properties,
              m->n_properties, m->born_timestamp);
    body += m->body_len;
    struct fy_host h = {.ip = {127, 0, 0, 1}, .port = (uint32_t)b->port};
    fy__offset_msgid(&h, phys, oids[i], 64);
    rs[i].msg_id = m->uniq_key;
    rs[i].offset_msg_id = oids[i];
    rsp[i] = &rs[i];
    atomic_fetch_add(&b->stored, 1);
  }
  Ferry__V1__SendResponse resp = FERRY__V1__SEND_RESPONSE__INIT;
  resp.broker_name = b->name;
  resp.queue_id = qid;
  resp.results = rsp;
  resp.n_results = req->n_messages;
  fy_conn_reply(conn, f->request_id, f->op, (uint16_t)atomic_load(&b->send_status), &resp.base,
                NULL, 0, NULL, NULL);
  free(rs);
  free(rsp);
  free(oids);
  fy_pb_free(&req->base);
  /* wake held pulls */
  on_hold_timer(&b->hold_timer);
}

static void do_release_sends(struct senv *e, void *arg) {
  (void)e;
  struct fb *b = arg;
  atomic_store(&b->send_mode, FB_SEND_OK);
  for (size_t i = 0; i < b->nheld_sends; i++) {
    struct fb_held_send *h = &b->held_sends[i];
    fy_frame f;
    size_t need;
    if (h->conn && fy_frame_parse(h->frame, h->len, FY_FRAME_MAX_DEFAULT, &f, &need) > 0)
      on_send(b, h->conn, &f);
    free(h->frame);
  }
  free(b->held_sends);
  b->held_sends = NULL;
  b->nheld_sends = b->cap_held_sends = 0;
}

void fb_release_sends(struct fb *b) { senv_run(b->env, do_release_sends, b); }

/* ------------------------------------------------------------ consumers */

static void on_heartbeat(struct fb *b, fy_conn *conn, const fy_frame *f) {
  atomic_fetch_add(&b->heartbeats, 1);
  Ferry__V1__HeartbeatRequest *req;
  if (fy_frame_unpack(f, &ferry__v1__heartbeat_request__descriptor, (ProtobufCMessage **)&req))
    return;
  if (req->n_consumers > 0) {
    bool have = false;
    for (int i = 0; i < b->ncids; i++)
      have |= strcmp(b->cids[i], req->client_id) == 0;
    if (!have && b->ncids < FB_MAXCIDS)
      snprintf(b->cids[b->ncids++], sizeof b->cids[0], "%s", req->client_id);
  }
  fy_pb_free(&req->base);
  fy_conn_reply(conn, f->request_id, f->op, 0, NULL, NULL, 0, NULL, NULL);
}

static void on_unregister(struct fb *b, fy_conn *conn, const fy_frame *f) {
  atomic_fetch_add(&b->unregisters, 1);
  Ferry__V1__UnregisterClientRequest *req;
  if (fy_frame_unpack(f, &ferry__v1__unregister_client_request__descriptor,
                      (ProtobufCMessage **)&req))
    return;
  if (req->consumer_group && *req->consumer_group)
    for (int i = 0; i < b->ncids; i++)
      if (!strcmp(b->cids[i], req->client_id)) {
        memmove(b->cids[i], b->cids[i + 1], (size_t)(b->ncids - i - 1) * sizeof b->cids[0]);
        b->ncids--;
        break;
      }
  fy_pb_free(&req->base);
  if (f->kind == FY_FRAME_REQUEST)
    fy_conn_reply(conn, f->request_id, f->op, 0, NULL, NULL, 0, NULL, NULL);
}

static void on_cids(struct fb *b, fy_conn *conn, const fy_frame *f) {
  atomic_fetch_add(&b->cid_queries, 1);
  char *ids[FB_MAXCIDS];
  for (int i = 0; i < b->ncids; i++)
    ids[i] = b->cids[i];
  Ferry__V1__ConsumerList l = FERRY__V1__CONSUMER_LIST__INIT;
  l.client_ids = ids;
  l.n_client_ids = (size_t)b->ncids;
  fy_conn_reply(conn, f->request_id, f->op, 0, &l.base, NULL, 0, NULL, NULL);
}

static void on_offsets(struct fb *b, fy_conn *conn, const fy_frame *f) {
  Ferry__V1__QueueOffsetRequest *req;
  if (fy_frame_unpack(f, &ferry__v1__queue_offset_request__descriptor, (ProtobufCMessage **)&req))
    return;
  uint32_t qid = req->queue_id % FB_MAXQ;
  Ferry__V1__QueueOffsetResponse r = FERRY__V1__QUEUE_OFFSET_RESPONSE__INIT;
  uint16_t st = 0;
  switch (f->op) {
  case FERRY__V1__OP__OP_QUERY_CONSUMER_OFFSET:
    if (b->has_off[qid])
      r.offset = b->off[qid];
    else
      st = FERRY__V1__STATUS__NOT_FOUND;
    break;
  case FERRY__V1__OP__OP_UPDATE_CONSUMER_OFFSET:
    atomic_fetch_add(&b->commits, 1);
    b->has_off[qid] = true;
    b->off[qid] = req->offset;
    break;
  case FERRY__V1__OP__OP_GET_MIN_OFFSET: r.offset = b->q[qid].min; break;
  case FERRY__V1__OP__OP_GET_MAX_OFFSET: r.offset = b->q[qid].n; break;
  default: r.offset = 0; break; /* search by time: the start */
  }
  fy_pb_free(&req->base);
  if (st)
    fy_conn_reply_error(conn, f->request_id, f->op, st, "no offset");
  else if (f->kind == FY_FRAME_REQUEST)
    fy_conn_reply(conn, f->request_id, f->op, 0, &r.base, NULL, 0, NULL, NULL);
}

static void fb_on_frame(fy_conn *conn, const fy_frame *f) {
  struct fb *b = fy_conn_data(conn);
  if (!b || f->kind == FY_FRAME_RESPONSE)
    return;
  switch (f->op) {
  case FERRY__V1__OP__OP_SEND: on_send(b, conn, f); break;
  case FERRY__V1__OP__OP_PULL: on_pull(b, conn, f); break;
  case FERRY__V1__OP__OP_HEARTBEAT: on_heartbeat(b, conn, f); break;
  case FERRY__V1__OP__OP_UNREGISTER_CLIENT: on_unregister(b, conn, f); break;
  case FERRY__V1__OP__OP_GET_CONSUMER_LIST: on_cids(b, conn, f); break;
  case FERRY__V1__OP__OP_QUERY_CONSUMER_OFFSET:
  case FERRY__V1__OP__OP_UPDATE_CONSUMER_OFFSET:
  case FERRY__V1__OP__OP_GET_MIN_OFFSET:
  case FERRY__V1__OP__OP_GET_MAX_OFFSET:
  case FERRY__V1__OP__OP_SEARCH_OFFSET_BY_TIME: on_offsets(b, conn, f); break;
  case FERRY__V1__OP__OP_BROKER_STATUS:
    if (atomic_load(&b->send_mode) == FB_SEND_SILENT)
      break;
    /* fall through */
  default:
    fy_conn_reply_error(conn, f->request_id, f->op, FERRY__V1__STATUS__UNSUPPORTED_OP, "fake");
  }
}

static void fb_on_accept(fy_server *s, fy_conn *c) {
  struct fb *b = fy_server_data(s);
  atomic_fetch_add(&b->conns, 1);
  fy_conn_set_data(c, b);
}

/* Held pulls of a closed connection are forgotten. */
static void fb_on_conn_close(fy_conn *c, int reason) {
  struct fb *b = fy_conn_data(c);
  if (!b)
    return;
  for (int i = 0; i < FB_MAXHELD; i++)
    if (b->held[i].used && b->held[i].conn == c)
      b->held[i].used = false;
  for (size_t i = 0; i < b->nheld_sends; i++)
    if (b->held_sends[i].conn == c)
      b->held_sends[i].conn = NULL; /* dropped unanswered at release */
}

/* --------------------------------------------------------- registration */

struct reg_ctx {
  struct fb *b;
  int i;
  uint32_t nqueues;
};

static void on_registered(fy_conn *c, int err, const fy_frame *f, void *arg) {
  struct fb *b = arg;
  if (!err && f->status == 0)
    atomic_fetch_add(&b->registered, 1);
}

static void send_register(struct fb *b, fy_conn *c) {
  Ferry__V1__TopicConfig tc = FERRY__V1__TOPIC_CONFIG__INIT;
  tc.topic = b->topic;
  tc.read_queues = tc.write_queues = b->nqueues;
  tc.perm = 6;
  Ferry__V1__TopicConfig *tcp = &tc;
  Ferry__V1__RegisterBrokerRequest r = FERRY__V1__REGISTER_BROKER_REQUEST__INIT;
  r.cluster = b->cluster;
  r.broker_name = b->name;
  r.broker_addr = b->addr;
  r.broker_id = b->id;
  r.ha_addr = "";
  r.topics = &tcp;
  r.n_topics = 1;
  fy_rpc_call(c, FERRY__V1__OP__OP_REGISTER_BROKER, &r.base, NULL, 0, 3000, on_registered, b);
}

static void on_ns_connected(fy_conn *c, int status) {
  struct fb *b = fy_conn_data(c);
  if (status == 0 && b)
    send_register(b, c);
}

static void on_ns_closed(fy_conn *c, int reason) {
  struct fb *b = fy_conn_data(c);
  if (!b)
    return;
  for (int i = 0; i < 2; i++)
    if (b->nsc[i] == c)
      b->nsc[i] = NULL;
}

static void do_register(struct senv *e, void *arg) {
  struct reg_ctx *x = arg;
  struct fb *b = x->b;
  b->nqueues = x->nqueues;
  for (int i = 0; i < 2; i++) {
    if (!e->ns[i])
      continue;
    if (b->nsc[i] && fy_conn_is_open(b->nsc[i])) {
      send_register(b, b->nsc[i]);
      continue;
    }
    fy_conn_cfg cc = {.on_close = on_ns_closed, .data = b};
    fy_conn_connect(&e->loop, "127.0.0.1", e->ns_port[i], &cc, on_ns_connected, &b->nsc[i]);
  }
}

static void do_add(struct senv *e, void *arg) {
  struct fb *b = arg;
  fy_conn_cfg cc = {.on_frame = fb_on_frame, .on_close = fb_on_conn_close};
  if (fy_server_listen(&e->loop, "127.0.0.1", 0, &cc, fb_on_accept, &b->server) != 0)
    abort();
  fy_server_set_data(b->server, b);
  b->port = fy_server_port(b->server);
  snprintf(b->addr, sizeof b->addr, "127.0.0.1:%d", b->port);
  uv_timer_init(&e->loop, &b->hold_timer);
  b->hold_timer.data = b;
  uv_timer_start(&b->hold_timer, on_hold_timer, 20, 20);
  e->fb[e->nfb++] = b;
}

struct fb *fb_add(struct senv *e, const char *cluster, const char *name, uint64_t id,
                  const char *topic, uint32_t nqueues) {
  struct fb *b = calloc(1, sizeof *b);
  b->env = e;
  snprintf(b->cluster, sizeof b->cluster, "%s", cluster);
  snprintf(b->name, sizeof b->name, "%s", name);
  snprintf(b->topic, sizeof b->topic, "%s", topic);
  b->id = id;
  b->nqueues = nqueues;
  b->phys = 1000;
  atomic_init(&b->filter, 1);
  senv_run(e, do_add, b);
  fb_register(b, nqueues);
  return b;
}

void fb_register(struct fb *b, uint32_t nqueues) {
  int before = atomic_load(&b->registered);
  struct reg_ctx x = {b, 0, nqueues};
  senv_run(b->env, do_register, &x);
  int want = b->env->ns[1] ? 2 : 1;
  for (int i = 0; i < 500 && atomic_load(&b->registered) < before + want; i++)
    usleep(10000);
}

/* An explicit UNREGISTER_BROKER, as a stopping broker sends, then the
 * close. (The name server is meant to drop a broker whose connection
 * closes as well; see the report about on_close.) */
static void do_unregister(struct senv *e, void *arg) {
  struct fb *b = arg;
  for (int i = 0; i < 2; i++)
    if (b->nsc[i]) {
      Ferry__V1__UnregisterBrokerRequest u = FERRY__V1__UNREGISTER_BROKER_REQUEST__INIT;
      u.cluster = b->cluster;
      u.broker_name = b->name;
      u.broker_addr = b->addr;
      u.broker_id = b->id;
      fy_rpc_oneway(b->nsc[i], FERRY__V1__OP__OP_UNREGISTER_BROKER, &u.base, NULL, 0);
      fy_conn_set_data(b->nsc[i], NULL);
      fy_conn_close(b->nsc[i], 0);
      b->nsc[i] = NULL;
    }
}

void fb_unregister(struct fb *b) {
  senv_run(b->env, do_unregister, b);
  usleep(50000); /* the name server sees the close */
}

static void fb_close_server(struct fb *b) {
  if (b->server) {
    fy_server_set_data(b->server, NULL);
    fy_server_close(b->server);
    b->server = NULL;
    uv_timer_stop(&b->hold_timer);
    uv_close((uv_handle_t *)&b->hold_timer, NULL);
  }
}

static void fb_close_all(struct fb *b) {
  do_unregister(b->env, b);
  fb_close_server(b);
}

static void do_kill(struct senv *e, void *arg) { fb_close_all(arg); }
static void do_crash(struct senv *e, void *arg) { fb_close_server(arg); }

void fb_kill(struct fb *b) { senv_run(b->env, do_kill, b); }
void fb_crash(struct fb *b) { senv_run(b->env, do_crash, b); }

struct off_q {
  struct fb *b;
  uint32_t qid;
  bool has;
  uint64_t off;
  int ncids;
};

static void do_off(struct senv *e, void *arg) {
  struct off_q *x = arg;
  x->has = x->b->has_off[x->qid];
  x->off = x->b->off[x->qid];
  x->ncids = x->b->ncids;
}

bool fb_offset(struct fb *b, uint32_t qid, uint64_t *out) {
  struct off_q x = {.b = b, .qid = qid};
  senv_run(b->env, do_off, &x);
  *out = x.off;
  return x.has;
}

int fb_ncids(struct fb *b) {
  struct off_q x = {.b = b};
  senv_run(b->env, do_off, &x);
  return x.ncids;
}
