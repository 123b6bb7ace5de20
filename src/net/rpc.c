/*
 * Request/response multiplexing over one connection. Requests carry ids
 * from a per-connection counter; responses come back in any order and are
 * matched through a fixed-size open-addressing table (linear probing,
 * backward-shift deletion, at most half full). Deadlines sit in a min-heap
 * served by the connection's one rpc timer, which is armed for the earliest
 * deadline only: n pending calls cost one timer, not n.
 *
 * All per-connection state is allocated at the first call and sized by
 * rpc_pending_max, so a connection never holds more calls than that and
 * never allocates per call beyond the outgoing frame.
 *
 * Requests are copied into their frame: a call's callback can run (timeout,
 * close) while its write is still queued, so the caller's buffers could not
 * be released at a well-defined point otherwise.
 */
#include "net/rpc.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"
#include "ferry.pb-c.h"
#include "net/net_int.h"

#define MOD "net"
#define NONE UINT32_MAX
#define EXPIRE_PER_TICK 1024u

struct call {
  uint64_t id;
  uint64_t deadline_ms;
  fy_rpc_cb cb;
  void *arg;
  uint32_t heap_pos;  /* index in heap while pending */
  uint32_t next_free; /* free list link while free */
};

struct fy__rpc {
  uint32_t cap;       /* rpc_pending_max */
  uint32_t count;     /* pending calls = heap size */
  uint32_t free_head;
  uint32_t map_mask;
  uint64_t next_id;
  uint64_t armed_ms;  /* deadline the timer is armed for, UINT64_MAX if none */
  struct call *calls; /* cap entries */
  uint32_t *heap;     /* call indices ordered by deadline; cap entries */
  uint32_t *map;      /* call index or NONE; map_mask + 1 >= 2 * cap entries */
};

static void on_rpc_timer(uv_timer_t *t);

/* ------------------------------------------------------------------ id table */

static uint32_t map_home(const struct fy__rpc *r, uint64_t id) {
  return (uint32_t)((id * 0x9E3779B97F4A7C15ull) >> 32) & r->map_mask;
}

/* Slot holding the call with this id, or NONE. */
static uint32_t map_find(const struct fy__rpc *r, uint64_t id) {
  uint32_t i = map_home(r, id);
  for (uint32_t probes = 0; probes <= r->map_mask; probes++) {
    uint32_t ci = r->map[i];
    if (ci == NONE)
      return NONE;
    if (r->calls[ci].id == id)
      return i;
    i = (i + 1) & r->map_mask;
  }
  fy_assert(!"rpc id table full"); /* at most half full by construction */
  return NONE;
}

static void map_put(struct fy__rpc *r, uint32_t ci) {
  uint32_t i = map_home(r, r->calls[ci].id);
  for (uint32_t probes = 0; r->map[i] != NONE; probes++) {
    fy_assert(probes <= r->map_mask);
    i = (i + 1) & r->map_mask;
  }
  r->map[i] = ci;
}

/* Empties slot i and shifts back the entries of its probe run. */
static void map_del(struct fy__rpc *r, uint32_t i) {
  r->map[i] = NONE;
  uint32_t j = i;
  for (uint32_t probes = 0; probes <= r->map_mask; probes++) {
    j = (j + 1) & r->map_mask;
    uint32_t cj = r->map[j];
    if (cj == NONE)
      return;
    uint32_t k = map_home(r, r->calls[cj].id);
    /* Entry j may move to the hole at i unless its home k lies cyclically
     * in (i, j]. */
    bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
    if (!stays) {
      r->map[i] = cj;
      r->map[j] = NONE;
      i = j;
    }
  }
}

/* ---------------------------------------------------------------- deadlines */

static bool heap_less(const struct fy__rpc *r, uint32_t a, uint32_t b) {
  const struct call *x = &r->calls[r->heap[a]], *y = &r->calls[r->heap[b]];
  return x->deadline_ms < y->deadline_ms || (x->deadline_ms == y->deadline_ms && x->id < y->id);
}

static void heap_swap(struct fy__rpc *r, uint32_t a, uint32_t b) {
  uint32_t t = r->heap[a];
  r->heap[a] = r->heap[b];
  r->heap[b] = t;
  r->calls[r->heap[a]].heap_pos = a;
  r->calls[r->heap[b]].heap_pos = b;
}

static void heap_up(struct fy__rpc *r, uint32_t i) {
  while (i > 0 && heap_less(r, i, (i - 1) / 2)) {
    heap_swap(r, i, (i - 1) / 2);
    i = (i - 1) / 2;
  }
}

static void heap_down(struct fy__rpc *r, uint32_t i) {
  for (;;) {
    uint32_t l = 2 * i + 1, m = i;
    if (l < r->count && heap_less(r, l, m))
      m = l;
    if (l + 1 < r->count && heap_less(r, l + 1, m))
      m = l + 1;
    if (m == i)
      return;
    heap_swap(r, i, m);
    i = m;
  }
}

/* ------------------------------------------------------------------- calls */

static struct fy__rpc *rpc_get(fy_conn *c) {
  struct fy__rpc **slot = fy__conn_rpc(c);
  if (*slot)
    return *slot;
  uint32_t cap = fy__conn_cfg(c)->rpc_pending_max;
  uint32_t map_size = 2;
  while (map_size < 2 * (uint64_t)cap)
    map_size *= 2;
  struct fy__rpc *r = calloc(1, sizeof *r);
  if (!r)
    return NULL;
  r->calls = calloc(cap, sizeof *r->calls);
  r->heap = calloc(cap, sizeof *r->heap);
  r->map = malloc(map_size * sizeof *r->map);
  if (!r->calls || !r->heap || !r->map) {
    free(r->calls);
    free(r->heap);
    free(r->map);
    free(r);
    return NULL;
  }
  memset(r->map, 0xff, map_size * sizeof *r->map);
  r->cap = cap;
  r->map_mask = map_size - 1;
  r->next_id = 1;
  r->armed_ms = UINT64_MAX;
  for (uint32_t i = 0; i < cap; i++)
    r->calls[i].next_free = i + 1 < cap ? i + 1 : NONE;
  r->free_head = 0;
  *slot = r;
  return r;
}

/* Takes call ci out of the table, the heap and back to the free list. */
static void call_remove(struct fy__rpc *r, uint32_t ci) {
  struct call *k = &r->calls[ci];
  uint32_t slot = map_find(r, k->id);
  fy_assert(slot != NONE);
  map_del(r, slot);
  uint32_t pos = k->heap_pos;
  fy_assert(pos < r->count);
  fy_assert(r->heap[pos] == ci);
  r->count--;
  if (pos != r->count) {
    heap_swap(r, pos, r->count);
    heap_down(r, pos);
    heap_up(r, pos);
  }
  k->cb = NULL;
  k->next_free = r->free_head;
  r->free_head = ci;
}

/* Arms the timer for the earliest deadline if it is earlier than the one
 * armed; a later one is found when the timer fires. */
static void rpc_arm(fy_conn *c, struct fy__rpc *r) {
  uv_timer_t *t = fy__conn_rpc_timer(c);
  if (r->count == 0) {
    uv_timer_stop(t);
    r->armed_ms = UINT64_MAX;
    return;
  }
  uint64_t d = r->calls[r->heap[0]].deadline_ms;
  if (d >= r->armed_ms)
    return;
  uint64_t now = uv_now(fy_conn_loop(c));
  uv_timer_start(t, on_rpc_timer, d > now ? d - now : 0, 0);
  r->armed_ms = d;
}

/* Tells the owner that a call ended while the table was full. */
static void rpc_room(fy_conn *c, bool was_full) {
  fy_rpc_room_cb room = fy__conn_cfg(c)->on_rpc_room;
  if (was_full && room && fy__conn_can_send(c) == 0)
    room(c);
}

static void on_rpc_timer(uv_timer_t *t) {
  fy_conn *c = t->data;
  struct fy__rpc *r = *fy__conn_rpc(c);
  if (!r)
    return;
  r->armed_ms = UINT64_MAX;
  uint64_t now = uv_now(fy_conn_loop(c));
  bool was_full = r->count == r->cap;
  for (uint32_t n = 0; n < EXPIRE_PER_TICK && r->count > 0; n++) {
    uint32_t ci = r->heap[0];
    struct call *k = &r->calls[ci];
    if (k->deadline_ms > now)
      break;
    fy_rpc_cb cb = k->cb;
    void *arg = k->arg;
    fy_debug(MOD, "%s: request %llu timed out", fy_conn_peer(c), (unsigned long long)k->id);
    call_remove(r, ci);
    cb(c, -FY_ETIMEOUT, NULL, arg);
    if (fy__conn_can_send(c) == -FY_ECLOSED)
      return; /* the rest fail with -FY_ECLOSED */
  }
  rpc_arm(c, r);
  rpc_room(c, was_full && r->count < r->cap);
}

bool fy__rpc_on_response(fy_conn *c, const fy_frame *f) {
  struct fy__rpc *r = *fy__conn_rpc(c);
  if (!r)
    return false;
  uint32_t slot = map_find(r, f->request_id);
  if (slot == NONE) {
    fy_debug(MOD, "%s: response to request %llu, which is not pending", fy_conn_peer(c),
             (unsigned long long)f->request_id);
    return false;
  }
  uint32_t ci = r->map[slot];
  fy_rpc_cb cb = r->calls[ci].cb;
  void *arg = r->calls[ci].arg;
  bool was_full = r->count == r->cap;
  call_remove(r, ci);
  rpc_arm(c, r);
  cb(c, 0, f, arg);
  rpc_room(c, was_full);
  return true;
}

void fy__rpc_on_close(fy_conn *c) {
  struct fy__rpc **slot = fy__conn_rpc(c);
  struct fy__rpc *r = *slot;
  if (!r)
    return;
  /* New calls fail from here (the connection is closing), so this ends. */
  for (uint32_t n = 0; r->count > 0; n++) {
    fy_assert(n < r->cap);
    uint32_t ci = r->heap[0];
    fy_rpc_cb cb = r->calls[ci].cb;
    void *arg = r->calls[ci].arg;
    call_remove(r, ci);
    cb(c, -FY_ECLOSED, NULL, arg);
  }
  free(r->calls);
  free(r->heap);
  free(r->map);
  free(r);
  *slot = NULL;
}

/* The whole frame is copied into one queued buffer (msg and raw). */
static int send_copy(fy_conn *c, enum fy_frame_kind kind, uint64_t id, uint16_t op,
                     const ProtobufCMessage *msg, const uv_buf_t *raw, unsigned nraw) {
  return fy__conn_send_copy(c, kind, id, op, msg, raw, nraw);
}

int fy_rpc_call(fy_conn *c, uint16_t op, const ProtobufCMessage *msg, const uv_buf_t *raw,
                unsigned nraw, uint32_t timeout_ms, fy_rpc_cb cb, void *arg) {
  if (!cb || timeout_ms == 0)
    return -EINVAL;
  int err = fy__conn_can_send(c);
  if (err)
    return err;
  struct fy__rpc *r = rpc_get(c);
  if (!r)
    return -ENOMEM;
  if (r->count == r->cap)
    return -FY_EBUSY;
  uint64_t id = r->next_id++;
  err = send_copy(c, FY_FRAME_REQUEST, id, op, msg, raw, nraw);
  if (err)
    return err;
  uint32_t ci = r->free_head;
  fy_assert(ci != NONE);
  struct call *k = &r->calls[ci];
  r->free_head = k->next_free;
  k->id = id;
  k->deadline_ms = uv_now(fy_conn_loop(c)) + timeout_ms;
  k->cb = cb;
  k->arg = arg;
  map_put(r, ci);
  k->heap_pos = r->count;
  r->heap[r->count++] = ci;
  heap_up(r, k->heap_pos);
  rpc_arm(c, r);
  return 0;
}

int fy_rpc_oneway(fy_conn *c, uint16_t op, const ProtobufCMessage *msg, const uv_buf_t *raw,
                  unsigned nraw) {
  int err = fy__conn_can_send(c);
  if (err)
    return err;
  return send_copy(c, FY_FRAME_ONEWAY, 0, op, msg, raw, nraw);
}

size_t fy_rpc_pending(const fy_conn *c) {
  struct fy__rpc *r = *fy__conn_rpc((fy_conn *)c);
  return r ? r->count : 0;
}

bool fy_rpc_full(const fy_conn *c) {
  struct fy__rpc *r = *fy__conn_rpc((fy_conn *)c);
  return r && r->count == r->cap;
}

/* ------------------------------------------------------------------ replies */

int fy_conn_reply(fy_conn *c, uint64_t request_id, uint16_t op, uint16_t status,
                  const ProtobufCMessage *msg, const uv_buf_t *raw, unsigned nraw,
                  fy_release_cb release_cb, void *release_arg) {
  return fy_conn_send(c, FY_FRAME_RESPONSE, request_id, op, status, msg, raw, nraw, release_cb,
                      release_arg);
}

int fy_conn_reply_error(fy_conn *c, uint64_t request_id, uint16_t op, uint16_t status,
                        const char *fmt, ...) {
  char text[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  Ferry__V1__ErrorResponse m = FERRY__V1__ERROR_RESPONSE__INIT;
  m.message = text;
  return fy_conn_send(c, FY_FRAME_RESPONSE, request_id, op, status, &m.base, NULL, 0, NULL,
                      NULL);
}

int fy_frame_error_text(const fy_frame *f, char *buf, size_t size) {
  ProtobufCMessage *m;
  int err = fy_frame_unpack(f, &ferry__v1__error_response__descriptor, &m);
  if (err)
    return err;
  const Ferry__V1__ErrorResponse *e = (const Ferry__V1__ErrorResponse *)m;
  if (size)
    snprintf(buf, size, "%s", e->message ? e->message : "");
  fy_pb_free(m);
  return 0;
}
