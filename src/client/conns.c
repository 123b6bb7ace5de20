/*
 * Connections by address, opened on first use and kept while they live.
 *
 * A call to an address whose connection is still being set up waits in
 * that connection's pending list (bounded) with its own copy of the
 * request, and goes out once the connection is up, with what is left of
 * its timeout; if the connect fails, every pending call fails with its
 * error. A connection that closed (broker gone, idle) is forgotten and the
 * next call opens a new one.
 *
 * Name-server calls rotate: the name server that answered last is asked
 * first; after a network failure the next one in namesrv_addr order is
 * tried, until each has been tried once or the time is up. An answer,
 * even an error status, ends the rotation.
 *
 * Connection states as seen here: absent -> CONNECTING (b->open false,
 * calls queue) -> OPEN (calls go straight to fy_rpc_call) -> closed
 * (forgotten). Loop only.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "client/cl_int.h"
#include "common/err.h"
#include "common/log.h"

#define MOD "client"
#define IDLE_CLOSE_MS 600000u /* connections unused this long are closed */

struct pcall {
  struct pcall *next;
  uint16_t code;
  bool oneway;
  ProtobufCMessage *msg; /* owned copy, or NULL */
  uint8_t *raw;
  size_t raw_len;
  uint64_t deadline_ms;
  fy_rpc_cb cb;
  void *arg;
};

struct fy__bconn {
  fy_client *cl;
  fy_conn *conn;
  bool open;
  struct pcall *head, **tail;
  uint32_t npend;
  char addr[FY_CLIENT_ADDR_MAX];
};

static void pcall_free(struct pcall *p) {
  if (p->msg)
    fy_pb_free(p->msg);
  free(p->raw);
  free(p);
}

/* Forgets b (the map no longer leads to it; its connection, if any, no
 * longer leads back) and returns its pending calls. */
static struct pcall *bconn_detach(struct fy__bconn *b) {
  fy_strmap_del(b->cl->conns, b->addr, strlen(b->addr));
  if (b->conn)
    fy_conn_set_data(b->conn, NULL);
  struct pcall *list = b->head;
  free(b);
  return list;
}

static void fail_pending(struct pcall *p, int err) {
  for (uint32_t n = 0; p; n++) {
    fy_assert(n <= FY__PENDING_MAX);
    struct pcall *next = p->next;
    if (!p->oneway)
      p->cb(NULL, err, NULL, p->arg);
    pcall_free(p);
    p = next;
  }
}

static void set_down(fy_client *cl, const char *addr, bool down) {
  size_t len = strlen(addr);
  if (!down) {
    fy_strmap_del(cl->down, addr, len);
    return;
  }
  if (fy_strmap_size(cl->down) >= FY__CONNS_MAX && !fy_strmap_get(cl->down, addr, len))
    return; /* bounded; an address not marked is only tried again */
  fy_strmap_put(cl->down, addr, len, (void *)(uintptr_t)(fy__cl_now_ms() + FY__DOWN_MS + 1));
}

bool fy__addr_down(fy_client *cl, const char *addr) {
  void *v = fy_strmap_get(cl->down, addr, strlen(addr));
  if (!v)
    return false;
  if (fy__cl_now_ms() < (uint64_t)(uintptr_t)v - 1)
    return true;
  fy_strmap_del(cl->down, addr, strlen(addr));
  return false;
}

/* Issues the calls waiting for b, in order, while its connection has room
 * for them (all of them once it has opened; then as calls end, see
 * on_rpc_room). A call whose deadline passed while it waited fails with
 * -FY_ETIMEOUT. */
static void issue_pending(struct fy__bconn *b) {
  uint64_t now = fy__cl_now_ms();
  for (uint32_t n = 0; b->head && b->open; n++) {
    fy_assert(n <= FY__PENDING_MAX);
    struct pcall *p = b->head;
    if (!p->oneway && now < p->deadline_ms && fy_rpc_full(b->conn))
      return; /* the next call to end makes room */
    b->head = p->next;
    if (!b->head)
      b->tail = &b->head;
    b->npend--;
    if (p->oneway) {
      fy_rpc_oneway(b->conn, p->code, p->msg, p->raw ? &(uv_buf_t){.base = (char *)p->raw,
                                                                  .len = p->raw_len}
                                                      : NULL, p->raw ? 1 : 0);
    } else if (now >= p->deadline_ms) {
      p->cb(NULL, -FY_ETIMEOUT, NULL, p->arg);
    } else {
      uv_buf_t rb = uv_buf_init((char *)p->raw, (unsigned)p->raw_len);
      int err = fy_rpc_call(b->conn, p->code, p->msg, p->raw ? &rb : NULL, p->raw ? 1 : 0,
                            (uint32_t)(p->deadline_ms - now), p->cb, p->arg);
      if (err)
        p->cb(NULL, err, NULL, p->arg);
    }
    pcall_free(p);
  }
}

static void on_rpc_room(fy_conn *conn) {
  struct fy__bconn *b = fy_conn_data(conn);
  if (b && b->head)
    issue_pending(b);
}

static void on_connected(fy_conn *conn, int status) {
  struct fy__bconn *b = fy_conn_data(conn);
  if (!b)
    return;
  if (status) {
    fy_debug(MOD, "connect to %s failed: %s", b->addr, fy_net_strerror(status));
    set_down(b->cl, b->addr, true);
    fail_pending(bconn_detach(b), status);
    return;
  }
  set_down(b->cl, b->addr, false);
  b->open = true;
  issue_pending(b);
}

static void on_conn_close(fy_conn *conn, int reason) {
  struct fy__bconn *b = fy_conn_data(conn);
  if (!b)
    return;
  fy_debug(MOD, "connection to %s closed: %s", b->addr, fy_net_strerror(reason));
  b->conn = NULL;
  fail_pending(bconn_detach(b), -FY_ECLOSED);
}

static struct fy__bconn *bconn_get(fy_client *cl, const char *addr, int *err) {
  size_t len = strlen(addr);
  struct fy__bconn *b = fy_strmap_get(cl->conns, addr, len);
  if (b && b->open && !fy_conn_is_open(b->conn)) {
    /* Closing (peer gone): forget it now and open a new one. */
    fail_pending(bconn_detach(b), -FY_ECLOSED);
    b = NULL;
  }
  if (b)
    return b;
  if (cl->loop_closing) {
    *err = -FY_ECLOSED;
    return NULL;
  }
  if (len >= FY_CLIENT_ADDR_MAX) {
    *err = -EINVAL;
    return NULL;
  }
  if (fy_strmap_size(cl->conns) >= FY__CONNS_MAX) {
    *err = -FY_EBUSY;
    return NULL;
  }
  char host[FY_CLIENT_ADDR_MAX];
  int port;
  if (fy__cl_split_addr(addr, host, sizeof host, &port)) {
    *err = -EINVAL;
    return NULL;
  }
  b = calloc(1, sizeof *b);
  if (!b) {
    *err = -ENOMEM;
    return NULL;
  }
  b->cl = cl;
  b->tail = &b->head;
  memcpy(b->addr, addr, len + 1);
  if (fy_strmap_put(cl->conns, b->addr, len, b)) {
    free(b);
    *err = -ENOMEM;
    return NULL;
  }
  fy_conn_cfg cc = {
      .frame_max_bytes = cl->cfg.frame_max_bytes,
      .connect_timeout_ms = cl->cfg.connect_timeout_ms,
      .idle_timeout_ms = IDLE_CLOSE_MS,
      .on_close = on_conn_close,
      .on_rpc_room = on_rpc_room,
      .data = b,
  };
  int e = fy_conn_connect(&cl->loop, host, port, &cc, on_connected, &b->conn);
  if (e) {
    b->conn = NULL;
    bconn_detach(b);
    *err = e;
    return NULL;
  }
  return b;
}

static int pend(struct fy__bconn *b, uint16_t code, bool oneway, const ProtobufCMessage *msg,
                const uv_buf_t *raw, unsigned nraw, uint32_t timeout_ms, fy_rpc_cb cb,
                void *arg) {
  if (b->npend >= FY__PENDING_MAX)
    return -FY_EBUSY;
  struct pcall *p = calloc(1, sizeof *p);
  if (!p)
    return -ENOMEM;
  p->code = code;
  p->oneway = oneway;
  p->cb = cb;
  p->arg = arg;
  p->deadline_ms = fy__cl_now_ms() + timeout_ms;
  if (msg && !(p->msg = fy__cl_pb_dup(msg)))
    goto out_nomem;
  size_t raw_len = 0;
  for (unsigned i = 0; i < nraw; i++)
    raw_len += raw[i].len;
  if (raw_len) {
    if (!(p->raw = malloc(raw_len)))
      goto out_nomem;
    size_t off = 0;
    for (unsigned i = 0; i < nraw; i++) {
      memcpy(p->raw + off, raw[i].base, raw[i].len);
      off += raw[i].len;
    }
    p->raw_len = raw_len;
  }
  *b->tail = p;
  b->tail = &p->next;
  b->npend++;
  return 0;
out_nomem:
  pcall_free(p);
  return -ENOMEM;
}

int fy__call(fy_client *cl, const char *addr, uint16_t code, const ProtobufCMessage *msg,
             const uv_buf_t *raw, unsigned nraw, uint32_t timeout_ms, fy_rpc_cb cb, void *arg) {
  int err = 0;
  struct fy__bconn *b = bconn_get(cl, addr, &err);
  if (!b)
    return err;
  /* A full connection takes no more calls: they wait (in order) for room. */
  if (b->open && !b->head && !fy_rpc_full(b->conn))
    return fy_rpc_call(b->conn, code, msg, raw, nraw, timeout_ms, cb, arg);
  return pend(b, code, false, msg, raw, nraw, timeout_ms, cb, arg);
}

int fy__oneway(fy_client *cl, const char *addr, uint16_t code, const ProtobufCMessage *msg) {
  int err = 0;
  struct fy__bconn *b = bconn_get(cl, addr, &err);
  if (!b)
    return err;
  if (b->open)
    return fy_rpc_oneway(b->conn, code, msg, NULL, 0);
  return pend(b, code, true, msg, NULL, 0, cl->cfg.connect_timeout_ms, NULL, NULL);
}

void fy__conns_close_all(fy_client *cl) {
  /* Collect first: closing changes the map only from on_close, later. */
  size_t n = fy_strmap_size(cl->conns), i = 0, pos = 0;
  struct fy__bconn **all = calloc(n ? n : 1, sizeof *all);
  fy_assert(all != NULL);
  const char *k;
  size_t kl;
  void *v;
  while (i < n && fy_strmap_next(cl->conns, &pos, &k, &kl, &v))
    all[i++] = v;
  for (size_t j = 0; j < i; j++)
    if (all[j]->conn)
      fy_conn_close(all[j]->conn, -FY_ECLOSED);
  free(all);
}

size_t fy__conns_count(const fy_client *cl) { return fy_strmap_size(cl->conns); }

/* ------------------------------------------------------------ name servers */

struct nscall {
  fy_client *cl;
  uint16_t code;
  ProtobufCMessage *msg;
  uint64_t deadline_ms;
  size_t tries;
  size_t used; /* index of the name server asked */
  fy_rpc_cb cb;
  void *arg;
};

static void on_ns(fy_conn *conn, int err, const fy_frame *resp, void *arg);

static int ns_issue(struct nscall *c) {
  fy_client *cl = c->cl;
  for (;;) {
    uint64_t now = fy__cl_now_ms();
    if (now >= c->deadline_ms)
      return -FY_ETIMEOUT;
    c->used = cl->ns_cur;
    c->tries++;
    int err = fy__call(cl, cl->ns[c->used], c->code, c->msg, NULL, 0,
                       (uint32_t)(c->deadline_ms - now), on_ns, c);
    if (!err)
      return 0;
    fy_warn(MOD, "name server %s: %s", cl->ns[c->used], fy_net_strerror(err));
    if (!fy__cl_err_is_network(err) || c->tries >= cl->nns)
      return err;
    if (cl->ns_cur == c->used)
      cl->ns_cur = (cl->ns_cur + 1) % cl->nns;
  }
}

static void on_ns(fy_conn *conn, int err, const fy_frame *resp, void *arg) {
  struct nscall *c = arg;
  fy_client *cl = c->cl;
  if (err && fy__cl_err_is_network(err) && !cl->loop_closing) {
    fy_warn(MOD, "name server %s: %s%s", cl->ns[c->used], fy_net_strerror(err),
            c->tries < cl->nns ? "; trying the next one" : "");
    if (cl->ns_cur == c->used)
      cl->ns_cur = (cl->ns_cur + 1) % cl->nns;
    if (c->tries < cl->nns) {
      int e = ns_issue(c);
      if (!e)
        return;
      err = e;
    }
  }
  c->cb(conn, err, resp, c->arg);
  if (c->msg)
    fy_pb_free(c->msg);
  free(c);
}

int fy__ns_call(fy_client *cl, uint16_t code, const ProtobufCMessage *msg, uint32_t timeout_ms,
                fy_rpc_cb cb, void *arg) {
  struct nscall *c = calloc(1, sizeof *c);
  if (!c)
    return -ENOMEM;
  c->cl = cl;
  c->code = code;
  c->cb = cb;
  c->arg = arg;
  c->deadline_ms = fy__cl_now_ms() + timeout_ms;
  if (msg && !(c->msg = fy__cl_pb_dup(msg))) {
    free(c);
    return -ENOMEM;
  }
  int err = ns_issue(c);
  if (err) {
    if (c->msg)
      fy_pb_free(c->msg);
    free(c);
  }
  return err;
}
