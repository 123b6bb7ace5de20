/*
 * Heartbeats: how brokers learn which clients are alive and what their
 * consumer groups subscribe to (the member lists rebalancing is computed
 * from). Every heartbeat_interval_ms (RocketMQ: 30 s), and at once when a
 * consumer starts or finds itself missing from its group's list, one
 * HeartbeatRequest with every started push consumer and every producer
 * group goes to each broker serving a subscribed topic (all its
 * addresses, slaves included: they serve pulls) and to the masters of
 * topics the producers sent to. A broker drops a client after 120 s of
 * silence or when its connection closes. Loop only.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "client/cl_int.h"
#include "common/err.h"
#include "common/log.h"

#define MOD "client"

static void on_hb(fy_conn *conn, int err, const fy_frame *resp, void *arg) {
  if (!err)
    err = fy__cl_status_err(resp->status);
  if (err)
    fy_debug(MOD, "heartbeat to %s: %s", conn ? fy_conn_peer(conn) : "broker",
             fy_client_strerror(err));
}

void fy__heartbeat_now(fy_client *cl) {
  if (cl->loop_closing || (!cl->consumers && !cl->producers))
    return;
  struct fy__arena *a;
  void *holder = fy__result_new(1, 4096, &a);
  fy_strmap *addrs = fy_strmap_new();
  if (!holder || !addrs)
    goto out;
  Ferry__V1__HeartbeatRequest req = FERRY__V1__HEARTBEAT_REQUEST__INIT;
  req.client_id = cl->client_id;
  req.n_consumers = fy__push_heartbeat_data(cl, a, &req.consumers);
  size_t np = 0;
  for (fy_producer *p = cl->producers; p; p = p->next)
    np++;
  char **groups = fy__cl_arena_alloc(a, (np ? np : 1) * sizeof *groups);
  if (!groups)
    goto out;
  for (fy_producer *p = cl->producers; p; p = p->next)
    groups[req.n_producer_groups++] = p->group;
  req.producer_groups = groups;

  fy__push_heartbeat_addrs(cl, addrs);
  if (np) {
    uint64_t now = fy__cl_now_ms(), window = 4 * (uint64_t)cl->cfg.heartbeat_interval_ms;
    size_t pos = 0;
    const char *k;
    size_t kl;
    void *v;
    while (fy_strmap_next(cl->routes, &pos, &k, &kl, &v)) {
      struct fy__rentry *e = v;
      if (!e->route || !e->producer_used_ms || now - e->producer_used_ms > window)
        continue;
      for (size_t i = 0; i < e->route->nbd; i++) {
        const char *m = fy__bdata_addr(&e->route->bd[i], 0);
        if (m)
          fy_strmap_put(addrs, m, strlen(m), (void *)m);
      }
    }
  }
  size_t pos = 0;
  const char *k;
  size_t kl;
  void *v;
  while (fy_strmap_next(addrs, &pos, &k, &kl, &v)) {
    int err = fy__call(cl, v, FERRY__V1__OP__OP_HEARTBEAT, &req.base, NULL, 0,
                       cl->cfg.timeout_ms, on_hb, NULL);
    if (err)
      fy_debug(MOD, "heartbeat to %s: %s", (const char *)v, fy_client_strerror(err));
  }
out:
  if (addrs)
    fy_strmap_free(addrs);
  fy_result_free(holder);
}
