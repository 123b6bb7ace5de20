/*
 * The client thread and the way work reaches it.
 *
 * Why a thread of our own: brokers answer out of order, pulls are held for
 * seconds by long polling, and every call must keep a deadline whatever a
 * broker does. One libuv loop does all of it, and public calls from any
 * thread become operations (fy__op) posted through a bounded ring and a
 * uv_async. A synchronous call waits on its own condition variable until
 * the loop completes the operation or its deadline (plus a margin) passes;
 * the loop enforces the same deadline, so a broker that never answers
 * cannot hold anyone. Operations are refcounted because a caller that gave
 * up, a late response and the loop's release can come in any order.
 *
 * Deadlines: one timer for all live operations, not one each (a libuv
 * timer per send, started, stopped and closed, showed in profiles as a
 * sixth of a small send's cost). Live operations sit in deadline lists,
 * one per timeout value (a few distinct values in practice: the send
 * timeout, the client timeout) plus one for the rest. An operation's
 * deadline is its post time plus its timeout, so each list is in deadline
 * order by appending (a short walk back from the tail keeps it exact when
 * threads post out of order); the timer is armed for the earliest head
 * and expires heads in bounded batches. The loop's reference to a
 * completed operation is dropped on the next loop turn (an idle handle),
 * never inside the completion, since callers may still touch the op.
 *
 * Shutdown: fy_client_close marks the ring closed, the loop fails queued
 * and live operations with -FY_ECLOSED, closes connections (their pending
 * rpcs fail and drop their references), timers and the async handle, and
 * uv_run returns once every handle is closed; uv_loop_close must succeed.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "client/cl_int.h"
#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"

#define MOD "client"

static _Thread_local char last_error[512];
static atomic_uint client_seq;

/* Both read through the batch clock: a loop turn's ops and a connection's
 * responses share one reading (src/common/clock.h). */
uint64_t fy__cl_now_ms(void) { return fy_clock_mono_ns() / 1000000u; }

int64_t fy__cl_wall_ms(void) { return fy_clock_real_ms(); }

void fy__set_last_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last_error, sizeof last_error, fmt, ap);
  va_end(ap);
}

const char *fy_client_last_error(void) { return last_error; }

int fy__cl_name_check(const char *what, const char *name, size_t cap) {
  size_t len = name ? strnlen(name, cap) : 0;
  if (len == 0 || len >= cap) {
    fy__set_last_error("%s must be 1..%zu bytes", what, cap - 1);
    return -EINVAL;
  }
  if (!fy_name_chars_ok(name, len)) {
    fy__set_last_error("the specified %s[%s] contains illegal characters, allowing only "
                       "^[%%|a-zA-Z0-9_-]+$", what, name);
    return -EINVAL;
  }
  return 0;
}

const char *fy_client_strerror(int err) { return fy_net_strerror(err); }

int fy__cl_status_err(uint16_t st) {
  switch (st) {
  case FERRY__V1__STATUS__OK:
  case FERRY__V1__STATUS__FLUSH_DISK_TIMEOUT:
  case FERRY__V1__STATUS__FLUSH_SLAVE_TIMEOUT:
  case FERRY__V1__STATUS__SLAVE_NOT_AVAILABLE:
  case FERRY__V1__STATUS__PULL_NOT_FOUND:
  case FERRY__V1__STATUS__PULL_RETRY_IMMEDIATELY:
  case FERRY__V1__STATUS__PULL_OFFSET_MOVED:
    return 0;
  case FERRY__V1__STATUS__SYSTEM_BUSY: return -FY_EREMOTE_BUSY;
  case FERRY__V1__STATUS__BAD_REQUEST: return -FY_EBAD_REQUEST;
  case FERRY__V1__STATUS__UNSUPPORTED_OP: return -FY_EUNSUPPORTED;
  case FERRY__V1__STATUS__TOPIC_NOT_EXIST: return -FY_ETOPIC_NOT_EXIST;
  case FERRY__V1__STATUS__MESSAGE_ILLEGAL: return -FY_EMSG_ILLEGAL;
  case FERRY__V1__STATUS__NO_PERMISSION: return -FY_ENO_PERMISSION;
  case FERRY__V1__STATUS__SERVICE_NOT_AVAILABLE: return -FY_EUNAVAILABLE;
  case FERRY__V1__STATUS__NOT_FOUND: return -FY_ENOT_FOUND;
  case FERRY__V1__STATUS__SUBSCRIPTION_NOT_EXIST: return -FY_ENO_SUBSCRIPTION;
  case FERRY__V1__STATUS__CONSUMER_GROUP_NOT_EXIST: return -FY_ENO_GROUP;
  case FERRY__V1__STATUS__SYSTEM_ERROR:
  default: return -FY_EREMOTE_ERROR;
  }
}

const char *fy__cl_status_name(uint16_t st) {
  const ProtobufCEnumValue *v =
      protobuf_c_enum_descriptor_get_value(&ferry__v1__status__descriptor, st);
  return v ? v->name : "UNKNOWN_STATUS";
}

bool fy__cl_err_is_network(int err) {
  if (err == -FY_ETIMEOUT || err == -FY_ECLOSED || err == -FY_EBUSY)
    return true;
  if (err >= 0 || -err >= FY_ERR_BASE)
    return false;
  /* negative errno or libuv code: refused, reset, unreachable, EOF, DNS... */
  return err != -EINVAL && err != -ENOMEM && err != -EDEADLK;
}

ProtobufCMessage *fy__cl_pb_dup(const ProtobufCMessage *m) {
  size_t len = fy_pb_packed_size(m);
  uint8_t *buf = malloc(len ? len : 1);
  if (!buf)
    return NULL;
  fy_pb_pack(m, buf);
  ProtobufCMessage *out = NULL;
  int err = fy_pb_unpack(m->descriptor, buf, len, 64 * len + (1u << 20), &out);
  free(buf);
  return err ? NULL : out;
}

bool fy__on_loop(const fy_client *cl) { return pthread_equal(pthread_self(), cl->thread); }

/* -------------------------------------------------------------- operations */

static void cond_init_monotonic(pthread_cond_t *cv) {
  pthread_condattr_t a;
  pthread_condattr_init(&a);
  pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
  pthread_cond_init(cv, &a);
  pthread_condattr_destroy(&a);
}

void fy__op_init(struct fy__op *op, fy_client *cl, uint32_t timeout_ms, bool sync,
                 fy__op_fn start, fy__op_fn finish, fy__op_fn destroy) {
  op->cl = cl;
  atomic_init(&op->refs, sync ? 2 : 1);
  op->start = start;
  op->finish = finish;
  op->destroy = destroy;
  op->timeout_ms = timeout_ms ? timeout_ms : cl->cfg.timeout_ms;
  op->deadline_ms = fy__cl_now_ms() + op->timeout_ms;
  op->sync = sync;
  if (sync)
    cond_init_monotonic(&op->cv);
}

static void op_free(struct fy__op *op) {
  if (op->destroy)
    op->destroy(op);
  if (op->sync)
    pthread_cond_destroy(&op->cv);
  if (op->release)
    op->release(op);
  else
    free(op);
}

void fy__op_ref(struct fy__op *op) { atomic_fetch_add(&op->refs, 1); }

void fy__op_unref(struct fy__op *op) {
  if (atomic_fetch_sub(&op->refs, 1) == 1)
    op_free(op);
}

static void abs_deadline(uint64_t ms, struct timespec *ts) {
  ts->tv_sec = (time_t)(ms / 1000);
  ts->tv_nsec = (long)(ms % 1000) * 1000000L;
}

int fy__op_post(struct fy__op *op) {
  fy_client *cl = op->cl;
  bool on_loop = fy__on_loop(cl);
  int err = 0;
  if (op->sync && on_loop) {
    fy__set_last_error("synchronous call made on the client thread (from a callback)");
    op_free(op);
    return -EDEADLK;
  }
  struct timespec ts;
  abs_deadline(op->deadline_ms, &ts);
  pthread_mutex_lock(&cl->mu);
  while (!cl->closing && cl->ring_count == cl->ring_cap) {
    if (on_loop || pthread_cond_timedwait(&cl->space_cv, &cl->mu, &ts) == ETIMEDOUT) {
      err = -FY_EBUSY;
      break;
    }
  }
  if (!err && cl->closing)
    err = -FY_ECLOSED;
  if (!err) {
    cl->ring[(cl->ring_head + cl->ring_count) % cl->ring_cap] = op;
    cl->ring_count++;
  }
  pthread_mutex_unlock(&cl->mu);
  if (err) {
    fy__set_last_error("%s", err == -FY_EBUSY ? "client request queue full until the deadline"
                                              : "client closed");
    op_free(op);
    return err;
  }
  uv_async_send(&cl->async);
  return 0;
}

static int op_wait(struct fy__op *op, bool forever) {
  fy_client *cl = op->cl;
  struct timespec ts;
  abs_deadline(op->deadline_ms + FY__SYNC_MARGIN_MS, &ts);
  pthread_mutex_lock(&cl->mu);
  while (!op->done) {
    if (forever)
      pthread_cond_wait(&op->cv, &cl->mu);
    else if (pthread_cond_timedwait(&op->cv, &cl->mu, &ts) == ETIMEDOUT)
      break;
  }
  bool done = op->done;
  pthread_mutex_unlock(&cl->mu);
  op->seen_done = done;
  if (!done) {
    fy__set_last_error("the client thread did not answer within the deadline");
    return -FY_ETIMEOUT;
  }
  if (op->err)
    fy__set_last_error("%s", op->errtext[0] ? op->errtext : fy_client_strerror(op->err));
  else
    last_error[0] = '\0';
  return op->err;
}

int fy__op_wait(struct fy__op *op) { return op_wait(op, false); }

int fy__op_wait_forever(struct fy__op *op) { return op_wait(op, true); }

int fy__op_run(struct fy__op *op, bool *posted) {
  *posted = false;
  int err = fy__op_post(op);
  if (err)
    return err;
  *posted = true;
  return fy__op_wait(op);
}

void fy__op_errtext(struct fy__op *op, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(op->errtext, sizeof op->errtext, fmt, ap);
  va_end(ap);
}

uint32_t fy__op_remaining(const struct fy__op *op) {
  uint64_t now = fy__cl_now_ms();
  if (now >= op->deadline_ms)
    return 1;
  uint64_t r = op->deadline_ms - now;
  return r > UINT32_MAX ? UINT32_MAX : (uint32_t)r;
}

static void op_unlink(struct fy__op *op);

/* The loop's reference to a completed operation goes on the next turn. */
static void on_reap(uv_idle_t *h) {
  fy_client *cl = h->data;
  struct fy__op *op = cl->reap;
  cl->reap = NULL;
  uv_idle_stop(&cl->reap_idle);
  cl->reap_active = false;
  while (op) { /* bounded: the operations completed during one turn */
    struct fy__op *next = op->reap_next;
    fy__op_unref(op);
    op = next;
  }
}

static void reap_later(fy_client *cl, struct fy__op *op) {
  op->reap_next = cl->reap;
  cl->reap = op;
  if (!cl->reap_active && !cl->reap_closed) { /* closed: thread_main drains the list */
    uv_idle_start(&cl->reap_idle, on_reap);
    cl->reap_active = true;
  }
}

void fy__op_complete(struct fy__op *op, int err) {
  if (op->completed)
    return;
  op->completed = true;
  op->err = err;
  if (err && !op->errtext[0])
    fy__op_errtext(op, "%s", fy_client_strerror(err));
  if (op->started)
    op_unlink(op);
  if (op->finish)
    op->finish(op);
  if (op->sync) {
    pthread_mutex_lock(&op->cl->mu);
    op->done = true;
    pthread_cond_signal(&op->cv);
    pthread_mutex_unlock(&op->cl->mu);
  }
  if (op->started)
    reap_later(op->cl, op);
  else
    fy__op_unref(op);
}

/* ------------------------------------------------------------- deadlines */

/* The list for a timeout: its own while one of the first FY__DLISTS - 1
 * lists has it or is free, else the last (shared, walked on insert). */
static uint8_t dlist_for(fy_client *cl, uint32_t timeout_ms) {
  int free_slot = -1;
  for (int i = 0; i < FY__DLISTS - 1; i++) {
    if (cl->dl[i].head && cl->dl[i].timeout_ms == timeout_ms)
      return (uint8_t)i;
    if (!cl->dl[i].head && free_slot < 0)
      free_slot = i;
  }
  if (free_slot < 0)
    return FY__DLISTS - 1;
  cl->dl[free_slot].timeout_ms = timeout_ms;
  return (uint8_t)free_slot;
}

static void deadline_arm(fy_client *cl);

static void on_deadline_timer(uv_timer_t *t) {
  fy_client *cl = t->data;
  cl->deadline_armed_ms = UINT64_MAX;
  uint64_t now = fy__cl_now_ms();
  uint32_t expired = 0;
  for (int i = 0; i < FY__DLISTS; i++) {
    struct fy__op *op;
    while ((op = cl->dl[i].head) && op->deadline_ms <= now && expired < FY__EXPIRE_PER_TICK) {
      if (!op->errtext[0])
        fy__op_errtext(op, "no answer within the deadline");
      fy__op_complete(op, -FY_ETIMEOUT); /* unlinks it */
      expired++;
    }
  }
  deadline_arm(cl);
}

/* Arms the timer for the earliest deadline, unless it is armed earlier. */
static void deadline_arm(fy_client *cl) {
  if (cl->loop_closing)
    return;
  uint64_t d = UINT64_MAX;
  for (int i = 0; i < FY__DLISTS; i++)
    if (cl->dl[i].head && cl->dl[i].head->deadline_ms < d)
      d = cl->dl[i].head->deadline_ms;
  if (d == UINT64_MAX || d >= cl->deadline_armed_ms)
    return;
  uint64_t now = fy__cl_now_ms();
  /* At least 1 ms: the loop's clock may lag ours, and an early firing
   * finds nothing due and re-arms. */
  uv_timer_start(&cl->deadline_timer, on_deadline_timer, d > now ? d - now : 1, 0);
  cl->deadline_armed_ms = d;
}

/* Puts a starting operation in its deadline list. */
static void op_link(fy_client *cl, struct fy__op *op) {
  op->dl = dlist_for(cl, op->timeout_ms);
  struct fy__dlist *l = &cl->dl[op->dl];
  struct fy__op *after = l->tail;
  while (after && after->deadline_ms > op->deadline_ms) /* bounded by the list */
    after = after->lprev;
  op->lprev = after;
  op->lnext = after ? after->lnext : l->head;
  if (op->lnext)
    op->lnext->lprev = op;
  else
    l->tail = op;
  if (after)
    after->lnext = op;
  else
    l->head = op;
  if (l->head == op && op->deadline_ms < cl->deadline_armed_ms)
    deadline_arm(cl);
}

/* Takes a completing operation out of its list. A timer armed for it
 * fires, finds nothing due and re-arms: cheaper than re-arming here. */
static void op_unlink(struct fy__op *op) {
  struct fy__dlist *l = &op->cl->dl[op->dl];
  if (op->lprev)
    op->lprev->lnext = op->lnext;
  else
    l->head = op->lnext;
  if (op->lnext)
    op->lnext->lprev = op->lprev;
  else
    l->tail = op->lprev;
  op->lprev = op->lnext = NULL;
}

static void op_begin(fy_client *cl, struct fy__op *op) {
  if (cl->loop_closing) {
    fy__op_complete(op, -FY_ECLOSED);
    return;
  }
  uint64_t now = fy__cl_now_ms();
  if (now >= op->deadline_ms && !op->must_run) {
    fy__op_errtext(op, "deadline passed while queued for the client thread");
    fy__op_complete(op, -FY_ETIMEOUT);
    return;
  }
  op->started = true;
  op_link(cl, op);
  op->start(op);
}

/* -------------------------------------------------------------- rpc helpers */

struct opcall {
  struct fy__op *op;
  fy__op_rpc_cb cb;
  void *ctx;
};

static void on_opcall(fy_conn *conn, int err, const fy_frame *resp, void *arg) {
  struct opcall *c = arg;
  if (!c->op->completed)
    c->cb(c->op, err, resp, c->ctx);
  fy__op_unref(c->op);
  free(c);
}

int fy__op_call(struct fy__op *op, const char *addr, uint16_t code, const ProtobufCMessage *msg,
                const uv_buf_t *raw, unsigned nraw, uint32_t timeout_ms, fy__op_rpc_cb cb,
                void *ctx) {
  uint32_t rem = fy__op_remaining(op);
  if (!timeout_ms || timeout_ms > rem)
    timeout_ms = rem;
  struct opcall *c = malloc(sizeof *c);
  if (!c)
    return -ENOMEM;
  c->op = op;
  c->cb = cb;
  c->ctx = ctx;
  fy__op_ref(op);
  int err = fy__call(op->cl, addr, code, msg, raw, nraw, timeout_ms, on_opcall, c);
  if (err) {
    fy__op_unref(op);
    free(c);
  }
  return err;
}

int fy__op_ns_call(struct fy__op *op, uint16_t code, const ProtobufCMessage *msg,
                   fy__op_rpc_cb cb, void *ctx) {
  struct opcall *c = malloc(sizeof *c);
  if (!c)
    return -ENOMEM;
  c->op = op;
  c->cb = cb;
  c->ctx = ctx;
  fy__op_ref(op);
  int err = fy__ns_call(op->cl, code, msg, fy__op_remaining(op), on_opcall, c);
  if (err) {
    fy__op_unref(op);
    free(c);
  }
  return err;
}

/* ------------------------------------------------------------- the thread */

static void loop_shutdown(fy_client *cl) {
  cl->loop_closing = true;
  /* Queued operations never started. */
  for (;;) {
    pthread_mutex_lock(&cl->mu);
    struct fy__op *op = NULL;
    if (cl->ring_count) {
      op = cl->ring[cl->ring_head];
      cl->ring_head = (cl->ring_head + 1) % cl->ring_cap;
      cl->ring_count--;
    }
    pthread_mutex_unlock(&cl->mu);
    if (!op)
      break;
    fy__op_complete(op, -FY_ECLOSED);
  }
  for (int i = 0; i < FY__DLISTS; i++) {
    struct fy__op *op;
    while ((op = cl->dl[i].head)) { /* each completion unlinks one */
      fy__op_errtext(op, "client closed");
      fy__op_complete(op, -FY_ECLOSED);
    }
  }
  uv_timer_stop(&cl->deadline_timer);
  uv_close((uv_handle_t *)&cl->deadline_timer, NULL);
  uv_close((uv_handle_t *)&cl->reap_idle, NULL);
  cl->reap_closed = true;
  cl->reap_active = false;
  uv_timer_stop(&cl->hb_timer);
  uv_close((uv_handle_t *)&cl->hb_timer, NULL);
  fy__routes_close(cl);
  fy__conns_close_all(cl);
  uv_close((uv_handle_t *)&cl->async, NULL);
}

static void on_async(uv_async_t *a) {
  fy_client *cl = a->data;
  struct fy__op *batch[FY__DRAIN_PER_WAKE];
  size_t n = 0;
  pthread_mutex_lock(&cl->mu);
  while (n < FY__DRAIN_PER_WAKE && cl->ring_count) {
    batch[n++] = cl->ring[cl->ring_head];
    cl->ring_head = (cl->ring_head + 1) % cl->ring_cap;
    cl->ring_count--;
  }
  bool more = cl->ring_count > 0;
  bool close_now = cl->close_now;
  if (n)
    pthread_cond_broadcast(&cl->space_cv);
  pthread_mutex_unlock(&cl->mu);
  if (cl->loop_closing)
    return;
  fy_clock_batch_begin();
  for (size_t i = 0; i < n; i++)
    op_begin(cl, batch[i]);
  fy_clock_batch_end();
  if (close_now) {
    loop_shutdown(cl);
    return;
  }
  if (more)
    uv_async_send(a); /* the rest on the next loop turn: bounded work per wake-up */
}

static void *thread_main(void *arg) {
  fy_client *cl = arg;
  uv_run(&cl->loop, UV_RUN_DEFAULT);
  /* Operations completed at shutdown, after the reap handle closed. */
  while (cl->reap) {
    struct fy__op *op = cl->reap;
    cl->reap = op->reap_next;
    fy__op_unref(op);
  }
  return NULL;
}

/* ---------------------------------------------------------------- lifecycle */

int fy__cl_split_addr(const char *addr, char *host, size_t host_size, int *port) {
  const char *colon = strrchr(addr, ':');
  if (!colon || colon == addr || !colon[1])
    return -EINVAL;
  size_t hl = (size_t)(colon - addr);
  const char *h = addr;
  if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']') {
    h++;
    hl -= 2;
  }
  if (hl == 0 || hl >= host_size)
    return -EINVAL;
  char *end;
  long p = strtol(colon + 1, &end, 10);
  if (*end || p <= 0 || p > 65535)
    return -EINVAL;
  memcpy(host, h, hl);
  host[hl] = '\0';
  *port = (int)p;
  return 0;
}

static int parse_namesrv(fy_client *cl, const char *list) {
  const char *p = list;
  while (*p) {
    while (*p == ';' || *p == ' ' || *p == ',')
      p++;
    if (!*p)
      break;
    const char *end = p;
    while (*end && *end != ';' && *end != ',' && *end != ' ')
      end++;
    size_t len = (size_t)(end - p);
    if (cl->nns == FY__NS_MAX || len >= FY_CLIENT_ADDR_MAX)
      return -EINVAL;
    char addr[FY_CLIENT_ADDR_MAX], host[FY_CLIENT_ADDR_MAX];
    memcpy(addr, p, len);
    addr[len] = '\0';
    int port;
    if (fy__cl_split_addr(addr, host, sizeof host, &port))
      return -EINVAL;
    memcpy(cl->ns[cl->nns++], addr, len + 1);
    p = end;
  }
  return cl->nns ? 0 : -EINVAL;
}

static void local_ip(uint8_t ip[4]) {
  ip[0] = 127;
  ip[1] = ip[2] = 0;
  ip[3] = 1;
  uv_interface_address_t *ifs;
  int n;
  if (uv_interface_addresses(&ifs, &n) != 0)
    return;
  for (int i = 0; i < n; i++) {
    if (ifs[i].is_internal || ifs[i].address.address4.sin_family != AF_INET)
      continue;
    memcpy(ip, &ifs[i].address.address4.sin_addr, 4);
    break;
  }
  uv_free_interface_addresses(ifs, n);
}

static void on_hb_timer(uv_timer_t *t) { fy__heartbeat_now(t->data); }

int fy_client_new(const fy_client_config *cfg, fy_client **out) {
  if (!cfg || !cfg->namesrv_addr) {
    fy__set_last_error("namesrv_addr is required");
    return -EINVAL;
  }
  fy_client *cl = calloc(1, sizeof *cl);
  if (!cl)
    return -ENOMEM;
  cl->cfg = *cfg;
  if (parse_namesrv(cl, cfg->namesrv_addr)) {
    fy__set_last_error("bad namesrv_addr '%s': expected host:port[;host:port...] (at most %d)",
                       cfg->namesrv_addr, FY__NS_MAX);
    free(cl);
    return -EINVAL;
  }
  cl->cfg.namesrv_addr = NULL;
  cl->cfg.instance_name = NULL;
  if (!cl->cfg.timeout_ms)
    cl->cfg.timeout_ms = 3000;
  if (!cl->cfg.connect_timeout_ms)
    cl->cfg.connect_timeout_ms = 3000;
  if (!cl->cfg.route_refresh_ms)
    cl->cfg.route_refresh_ms = 30000;
  if (!cl->cfg.heartbeat_interval_ms)
    cl->cfg.heartbeat_interval_ms = 30000;
  if (!cl->cfg.queue_max)
    cl->cfg.queue_max = 8192;
  if (!cl->cfg.frame_max_bytes)
    cl->cfg.frame_max_bytes = 16u << 20;

  local_ip(cl->ip);
  unsigned seq = atomic_fetch_add(&client_seq, 1) + 1;
  char inst[FY_CLIENT_NAME_MAX];
  if (cfg->instance_name && *cfg->instance_name) {
    snprintf(inst, sizeof inst, "%s", cfg->instance_name);
    snprintf(cl->instance_name, sizeof cl->instance_name, "%s", cfg->instance_name);
  }
  else if (seq == 1)
    snprintf(inst, sizeof inst, "%d", (int)getpid());
  else
    snprintf(inst, sizeof inst, "%d#%u", (int)getpid(), seq);
  snprintf(cl->client_id, sizeof cl->client_id, "%u.%u.%u.%u@%s", cl->ip[0], cl->ip[1],
           cl->ip[2], cl->ip[3], inst);
  cl->pid = (uint32_t)getpid();
  if (getrandom(&cl->msgid_rand, sizeof cl->msgid_rand, 0) != sizeof cl->msgid_rand)
    cl->msgid_rand = (uint32_t)(uv_hrtime() ^ (uint64_t)getpid() << 16);

  int err = -ENOMEM;
  cl->ring_cap = cl->cfg.queue_max;
  cl->ring = calloc(cl->ring_cap, sizeof *cl->ring);
  cl->conns = fy_strmap_new();
  cl->down = fy_strmap_new();
  cl->routes = fy_strmap_new();
  if (!cl->ring || !cl->conns || !cl->down || !cl->routes)
    goto out_free;
  pthread_mutex_init(&cl->mu, NULL);
  cond_init_monotonic(&cl->space_cv);
  err = uv_loop_init(&cl->loop);
  if (err)
    goto out_mutex;
  uv_async_init(&cl->loop, &cl->async, on_async);
  cl->async.data = cl;
  uv_timer_init(&cl->loop, &cl->deadline_timer);
  cl->deadline_timer.data = cl;
  cl->deadline_armed_ms = UINT64_MAX;
  uv_idle_init(&cl->loop, &cl->reap_idle);
  cl->reap_idle.data = cl;
  uv_timer_init(&cl->loop, &cl->hb_timer);
  cl->hb_timer.data = cl;
  uv_timer_start(&cl->hb_timer, on_hb_timer, cl->cfg.heartbeat_interval_ms,
                 cl->cfg.heartbeat_interval_ms);
  fy__routes_start(cl);
  err = -pthread_create(&cl->thread, NULL, thread_main, cl);
  if (err)
    goto out_loop;
  fy_debug(MOD, "client %s started (%zu name servers)", cl->client_id, cl->nns);
  *out = cl;
  return 0;

out_loop:
  uv_close((uv_handle_t *)&cl->async, NULL);
  uv_close((uv_handle_t *)&cl->deadline_timer, NULL);
  uv_close((uv_handle_t *)&cl->reap_idle, NULL);
  uv_close((uv_handle_t *)&cl->hb_timer, NULL);
  uv_close((uv_handle_t *)&cl->route_timer, NULL);
  uv_run(&cl->loop, UV_RUN_DEFAULT);
  uv_loop_close(&cl->loop);
out_mutex:
  pthread_mutex_destroy(&cl->mu);
  pthread_cond_destroy(&cl->space_cv);
out_free:
  free(cl->ring);
  if (cl->conns)
    fy_strmap_free(cl->conns);
  if (cl->down)
    fy_strmap_free(cl->down);
  if (cl->routes)
    fy_strmap_free(cl->routes);
  free(cl);
  return err;
}

const char *fy_client_id(const fy_client *cl) { return cl->client_id; }

void fy_client_close(fy_client *cl) {
  if (!cl)
    return;
  if (fy__on_loop(cl)) {
    fy_error(MOD, "fy_client_close called on the client thread: ignored");
    return;
  }
  /* Producers and consumers still open. */
  for (;;) {
    pthread_mutex_lock(&cl->mu);
    fy_push_consumer *pc = cl->all_push;
    fy_producer *p = cl->all_producers;
    fy_pull_consumer *lc = cl->all_pull;
    pthread_mutex_unlock(&cl->mu);
    if (pc) {
      if (fy_push_consumer_close(pc) == -EDEADLK) {
        fy_error(MOD, "fy_client_close called from a listener: ignored");
        return;
      }
    } else if (p)
      fy_producer_close(p);
    else if (lc)
      fy_pull_consumer_close(lc);
    else
      break;
  }
  pthread_mutex_lock(&cl->mu);
  cl->closing = true;
  cl->close_now = true;
  pthread_cond_broadcast(&cl->space_cv);
  pthread_mutex_unlock(&cl->mu);
  uv_async_send(&cl->async);
  pthread_join(cl->thread, NULL);
  int rc = uv_loop_close(&cl->loop);
  if (rc)
    fy_error(MOD, "client loop closed with handles still open: %s", uv_strerror(rc));
  fy_assert(rc == 0);
  fy__routes_free(cl);
  fy_strmap_free(cl->conns);
  fy_strmap_free(cl->down);
  pthread_mutex_destroy(&cl->mu);
  pthread_cond_destroy(&cl->space_cv);
  free(cl->ring);
  free(cl);
}
