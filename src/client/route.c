/*
 * The topic route cache: what the name servers say about each topic the
 * client uses, refreshed every route_refresh_ms (RocketMQ's
 * pollNameServerInterval, 30 s), and the three ways of choosing a broker
 * address from a route, which RocketMQ spreads over MQClientInstance:
 *   - publish: the master only (a producer never writes to a slave);
 *   - subscribe: the broker id the last pull response suggested, else the
 *     master, else the lowest id left (so pulls go to the slave once the
 *     master has gone from the route);
 *   - admin (offset commits and reads, admin calls): the master, else the
 *     lowest id.
 * A failed fetch keeps the previous route (RocketMQ does the same): a
 * name server that is down must not make the client forget its brokers.
 * Entries unused for ten refresh periods and not pinned by a consumer are
 * evicted; the cache holds at most FY__TOPICS_MAX topics. Loop only.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "client/cl_int.h"
#include "common/err.h"
#include "common/log.h"

#define MOD "client"
#define ABSENT_CACHE_MS 1000 /* "no such topic" is believed this long */

struct fy__rwait {
  struct fy__rwait *next;
  struct fy__op *op;
  fy__route_cb cb;
};

/* ------------------------------------------------------------------ routes */

static int cmp_qd(const void *a, const void *b) {
  return strcmp(((const struct fy__qdata *)a)->broker_name,
                ((const struct fy__qdata *)b)->broker_name);
}

static int cmp_bd(const void *a, const void *b) {
  return strcmp(((const struct fy__bdata *)a)->name, ((const struct fy__bdata *)b)->name);
}

static int cmp_addr(const void *a, const void *b) {
  uint64_t x = ((const struct fy__baddr *)a)->id, y = ((const struct fy__baddr *)b)->id;
  return x < y ? -1 : x > y;
}

static bool fits(const char *s, size_t max) { return s && *s && strlen(s) < max; }

void fy__route_free(struct fy__route *r) {
  if (!r)
    return;
  for (size_t i = 0; i < r->nbd; i++)
    free(r->bd[i].addrs);
  free(r->bd);
  free(r->qd);
  free(r->pub);
  free(r->sub);
  free(r);
}

const struct fy__bdata *fy__route_broker(const struct fy__route *r, const char *name) {
  size_t lo = 0, hi = r->nbd;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    int c = strcmp(r->bd[mid].name, name);
    if (c == 0)
      return &r->bd[mid];
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return NULL;
}

const char *fy__bdata_addr(const struct fy__bdata *b, uint64_t id) {
  for (size_t i = 0; i < b->naddrs; i++)
    if (b->addrs[i].id == id)
      return b->addrs[i].addr;
  return NULL;
}

struct fy__route *fy__route_from_pb(const Ferry__V1__TopicRoute *pb) {
  struct fy__route *r = calloc(1, sizeof *r);
  if (!r)
    return NULL;
  r->qd = calloc(pb->n_queues + 1, sizeof *r->qd);
  r->bd = calloc(pb->n_brokers + 1, sizeof *r->bd);
  if (!r->qd || !r->bd)
    goto out_free;
  for (size_t i = 0; i < pb->n_queues; i++) {
    const Ferry__V1__QueueData *q = pb->queues[i];
    if (!fits(q->broker_name, FY_CLIENT_NAME_MAX))
      continue;
    struct fy__qdata *d = &r->qd[r->nqd++];
    strcpy(d->broker_name, q->broker_name);
    d->read_queues = q->read_queues;
    d->write_queues = q->write_queues;
    d->perm = q->perm;
  }
  for (size_t i = 0; i < pb->n_brokers; i++) {
    const Ferry__V1__BrokerData *b = pb->brokers[i];
    if (!fits(b->broker_name, FY_CLIENT_NAME_MAX))
      continue;
    struct fy__bdata *d = &r->bd[r->nbd];
    strcpy(d->name, b->broker_name);
    if (fits(b->cluster, FY_CLIENT_NAME_MAX))
      strcpy(d->cluster, b->cluster);
    d->addrs = calloc(b->n_addrs + 1, sizeof *d->addrs);
    if (!d->addrs)
      goto out_free;
    r->nbd++;
    for (size_t j = 0; j < b->n_addrs; j++) {
      if (!fits(b->addrs[j]->addr, FY_CLIENT_ADDR_MAX))
        continue;
      d->addrs[d->naddrs].id = b->addrs[j]->broker_id;
      strcpy(d->addrs[d->naddrs].addr, b->addrs[j]->addr);
      d->naddrs++;
    }
    qsort(d->addrs, d->naddrs, sizeof *d->addrs, cmp_addr);
  }
  qsort(r->qd, r->nqd, sizeof *r->qd, cmp_qd);
  qsort(r->bd, r->nbd, sizeof *r->bd, cmp_bd);

  size_t npub = 0, nsub = 0;
  for (size_t i = 0; i < r->nqd; i++) {
    const struct fy__qdata *q = &r->qd[i];
    const struct fy__bdata *b = fy__route_broker(r, q->broker_name);
    if ((q->perm & FY__PERM_WRITE) && b && fy__bdata_addr(b, 0))
      npub += q->write_queues;
    if (q->perm & FY__PERM_READ)
      nsub += q->read_queues;
  }
  r->pub = calloc(npub + 1, sizeof *r->pub);
  r->sub = calloc(nsub + 1, sizeof *r->sub);
  if (!r->pub || !r->sub)
    goto out_free;
  for (size_t i = 0; i < r->nqd; i++) {
    const struct fy__qdata *q = &r->qd[i];
    const struct fy__bdata *b = fy__route_broker(r, q->broker_name);
    if ((q->perm & FY__PERM_WRITE) && b && fy__bdata_addr(b, 0))
      for (uint32_t k = 0; k < q->write_queues; k++)
        r->pub[r->npub++] = (struct fy__mq){q->broker_name, k};
    if (q->perm & FY__PERM_READ)
      for (uint32_t k = 0; k < q->read_queues; k++)
        r->sub[r->nsub++] = (struct fy__mq){q->broker_name, k};
  }
  return r;
out_free:
  fy__route_free(r);
  return NULL;
}

const char *fy__route_sub_addr(fy_client *cl, const struct fy__route *r, const char *broker_name,
                               uint64_t id, uint64_t *used_id) {
  const struct fy__bdata *b = fy__route_broker(r, broker_name);
  if (!b || b->naddrs == 0)
    return NULL;
  /* Candidates in order: id, the master, then every address by id. */
  const char *cand[2 + 16];
  uint64_t ids[2 + 16];
  size_t n = 0;
  const char *a = fy__bdata_addr(b, id);
  if (a) {
    cand[n] = a;
    ids[n++] = id;
  }
  if (id != 0 && (a = fy__bdata_addr(b, 0))) {
    cand[n] = a;
    ids[n++] = 0;
  }
  for (size_t i = 0; i < b->naddrs && n < sizeof cand / sizeof *cand; i++) {
    cand[n] = b->addrs[i].addr;
    ids[n++] = b->addrs[i].id;
  }
  size_t pick = 0;
  if (cl)
    while (pick + 1 < n && fy__addr_down(cl, cand[pick]))
      pick++;
  *used_id = ids[pick];
  return cand[pick];
}

const char *fy__route_admin_addr(fy_client *cl, const struct fy__route *r,
                                 const char *broker_name, uint64_t *used_id) {
  return fy__route_sub_addr(cl, r, broker_name, 0, used_id);
}

const char *fy__route_master_addr(const struct fy__route *r, const char *broker_name) {
  const struct fy__bdata *b = fy__route_broker(r, broker_name);
  return b ? fy__bdata_addr(b, 0) : NULL;
}

/* ------------------------------------------------------------------ cache */

struct fy__rentry *fy__route_entry(fy_client *cl, const char *topic) {
  size_t len = strlen(topic);
  if (len == 0 || len >= FY_CLIENT_TOPIC_MAX)
    return NULL;
  struct fy__rentry *e = fy_strmap_get(cl->routes, topic, len);
  if (e)
    return e;
  if (fy_strmap_size(cl->routes) >= FY__TOPICS_MAX)
    return NULL;
  e = calloc(1, sizeof *e);
  if (!e)
    return NULL;
  memcpy(e->topic, topic, len + 1);
  e->waiters_tail = &e->waiters;
  e->used_ms = fy__cl_now_ms();
  if (fy_strmap_put(cl->routes, e->topic, len, e)) {
    free(e);
    return NULL;
  }
  return e;
}

static void on_route(fy_conn *conn, int err, const fy_frame *resp, void *arg);

static void start_fetch(fy_client *cl, struct fy__rentry *e) {
  Ferry__V1__GetRouteRequest req = FERRY__V1__GET_ROUTE_REQUEST__INIT;
  req.topic = e->topic;
  e->fetching = true;
  /* Time for each name server in turn. */
  uint32_t timeout = cl->cfg.timeout_ms * (uint32_t)(cl->nns < 4 ? cl->nns : 4);
  int err = fy__ns_call(cl, FERRY__V1__OP__OP_GET_ROUTE, &req.base, timeout, on_route, e);
  if (err) {
    /* Report through the same path, but not from inside the caller. */
    e->fetching = false;
    e->last_err = err;
    snprintf(e->errtext, sizeof e->errtext, "route of '%s': %s", e->topic,
             fy_client_strerror(err));
    struct fy__rwait *w = e->waiters;
    e->waiters = NULL;
    e->waiters_tail = &e->waiters;
    e->nwaiters = 0;
    while (w) {
      struct fy__rwait *next = w->next;
      if (!w->op->completed) {
        fy__op_errtext(w->op, "%s", e->errtext);
        w->cb(w->op, err, e);
      }
      fy__op_unref(w->op);
      free(w);
      w = next;
    }
  }
}

static void on_route(fy_conn *conn, int err, const fy_frame *resp, void *arg) {
  struct fy__rentry *e = arg;
  fy_client *cl = NULL;
  e->fetching = false;
  int rerr = err;
  e->errtext[0] = '\0';
  if (!err) {
    rerr = fy__cl_status_err(resp->status);
    if (rerr) {
      char text[160] = "";
      fy_frame_error_text(resp, text, sizeof text);
      snprintf(e->errtext, sizeof e->errtext, "route of '%s': %s: %s", e->topic,
               fy__cl_status_name(resp->status), text);
    } else {
      Ferry__V1__TopicRoute *pb;
      rerr = fy_frame_unpack(resp, &ferry__v1__topic_route__descriptor, (ProtobufCMessage **)&pb);
      if (!rerr) {
        struct fy__route *r = fy__route_from_pb(pb);
        fy_pb_free(&pb->base);
        if (r) {
          fy__route_free(e->route);
          e->route = r;
          e->fetched_ms = fy__cl_now_ms();
        } else {
          rerr = -ENOMEM;
        }
      }
    }
  }
  if (rerr == -FY_ETOPIC_NOT_EXIST)
    e->absent_ms = fy__cl_now_ms();
  if (rerr && !e->errtext[0])
    snprintf(e->errtext, sizeof e->errtext, "route of '%s' from the name servers: %s", e->topic,
             fy_client_strerror(rerr));
  e->last_err = rerr;
  (void)cl;
  struct fy__rwait *w = e->waiters;
  e->waiters = NULL;
  e->waiters_tail = &e->waiters;
  e->nwaiters = 0;
  for (size_t n = 0; w; n++) {
    fy_assert(n < FY__WAITERS_MAX + 1);
    struct fy__rwait *next = w->next;
    if (!w->op->completed) {
      if (rerr)
        fy__op_errtext(w->op, "%s", e->errtext);
      w->cb(w->op, rerr, e);
    }
    fy__op_unref(w->op);
    free(w);
    w = next;
  }
}

void fy__route_refresh(fy_client *cl, struct fy__rentry *e) {
  if (!e->fetching && !cl->loop_closing)
    start_fetch(cl, e);
}

int fy__route_get(struct fy__op *op, const char *topic, bool fresh, fy__route_cb cb) {
  fy_client *cl = op->cl;
  struct fy__rentry *e = fy__route_entry(cl, topic);
  if (!e) {
    fy__op_errtext(op, "route cache full (%d topics) or bad topic name", FY__TOPICS_MAX);
    return -FY_EBUSY;
  }
  e->used_ms = fy__cl_now_ms();
  if (e->route && !fresh) {
    cb(op, 0, e);
    return 0;
  }
  if (!e->route && !fresh && e->last_err == -FY_ETOPIC_NOT_EXIST && !e->fetching &&
      fy__cl_now_ms() - e->absent_ms < ABSENT_CACHE_MS) {
    /* The name servers just said no: do not ask again for every send to a
     * topic being auto-created (it appears once its broker registers). */
    fy__op_errtext(op, "%s", e->errtext);
    cb(op, e->last_err, e);
    return 0;
  }
  if (e->nwaiters >= FY__WAITERS_MAX)
    return -FY_EBUSY;
  struct fy__rwait *w = malloc(sizeof *w);
  if (!w)
    return -ENOMEM;
  w->next = NULL;
  w->op = op;
  w->cb = cb;
  fy__op_ref(op);
  *e->waiters_tail = w;
  e->waiters_tail = &w->next;
  e->nwaiters++;
  if (!e->fetching)
    start_fetch(cl, e);
  return 0;
}

static void on_route_timer(uv_timer_t *t) {
  fy_client *cl = t->data;
  uint64_t now = fy__cl_now_ms(), period = cl->cfg.route_refresh_ms;
  size_t pos = 0, nevict = 0;
  const char *k;
  size_t kl;
  void *v;
  char (*evict)[FY_CLIENT_TOPIC_MAX] = NULL;
  size_t n = fy_strmap_size(cl->routes);
  evict = calloc(n ? n : 1, sizeof *evict);
  while (fy_strmap_next(cl->routes, &pos, &k, &kl, &v)) {
    struct fy__rentry *e = v;
    if (e->pins || now - e->used_ms < 2 * period) {
      fy__route_refresh(cl, e);
    } else if (evict && !e->fetching && !e->nwaiters && now - e->used_ms > 10 * period) {
      memcpy(evict[nevict++], e->topic, FY_CLIENT_TOPIC_MAX);
    }
  }
  for (size_t i = 0; i < nevict; i++) {
    struct fy__rentry *e = fy_strmap_del(cl->routes, evict[i], strlen(evict[i]));
    if (e) {
      fy__route_free(e->route);
      free(e);
    }
  }
  free(evict);
}

void fy__routes_start(fy_client *cl) {
  uv_timer_init(&cl->loop, &cl->route_timer);
  cl->route_timer.data = cl;
  uv_timer_start(&cl->route_timer, on_route_timer, cl->cfg.route_refresh_ms,
                 cl->cfg.route_refresh_ms);
}

void fy__routes_close(fy_client *cl) {
  uv_timer_stop(&cl->route_timer);
  uv_close((uv_handle_t *)&cl->route_timer, NULL);
  /* Waiting operations were completed (-FY_ECLOSED) by the caller; the
   * fetches in flight end when the connections close, and their entries
   * stay until fy__routes_free. */
}

void fy__routes_free(fy_client *cl) {
  size_t pos = 0;
  const char *k;
  size_t kl;
  void *v;
  while (fy_strmap_next(cl->routes, &pos, &k, &kl, &v)) {
    struct fy__rentry *e = v;
    fy_assert(e->waiters == NULL);
    fy__route_free(e->route);
    free(e);
  }
  fy_strmap_free(cl->routes);
}
