/*
 * The master side of the HA channel (protocol in ha.h): accepts slaves,
 * checks that their log continues the master's, streams commit-log bytes
 * to them in bounded chunks straight from the mapped segments, collects
 * their acknowledgements, and releases sends waiting for a slave (SYNC_MASTER).
 *
 * Waiting sends form a FIFO: they are added in log order with the same
 * timeout, so the head has both the smallest offset and the earliest
 * deadline; an acknowledgement releases from the head in bulk.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/crc32c.h"
#include "common/err.h"
#include "common/log.h"
#include "ferry.pb-c.h"
#include "ha/ha.h"
#include "net/conn.h"
#include "net/rpc.h"

#define MOD "ha"
#define TICK_MS 100

/* Wall-clock milliseconds, for "connected since" in status output. */
static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

enum session_state { HELLO_WAIT, STREAMING, REFUSED };

struct session {
  struct fy_ha_master *m;
  fy_conn *conn;
  enum session_state state;
  uint64_t broker_id;
  uint64_t send_pos;
  uint64_t inflight;
  uint64_t received, durable;
  int64_t connected_ms;
  uint64_t last_read, last_send; /* uv_now */
  uint64_t behind_since;         /* uv_now when it last was fully caught up */
  struct session *next;
};

struct waiter {
  uint64_t end;
  uint64_t deadline;
  void (*cb)(void *arg, int status);
  void *arg;
};

struct fy_ha_master {
  struct fy_ha_config cfg;
  uv_loop_t *loop;
  fy_store *store;
  fy_commitlog *cl;
  fy_server *server;
  struct session *sessions;
  uv_timer_t tick;
  uv_check_t pump_check;
  uint64_t acked;
  struct waiter *waiters;
  size_t whead, wcount;
  void (*ack_cb)(void *, uint64_t);
  void *ack_arg;
  bool stopping;
  unsigned handles;
  void (*done)(void *);
  void *done_arg;
};

void fy_ha_config_defaults(struct fy_ha_config *c) {
  c->heartbeat_ms = 1000;
  c->timeout_ms = 5000;
  c->chunk_bytes = 256 * 1024;
  c->inflight_bytes = 4 * 1024 * 1024;
  c->fallbehind_max = 256ull * 1024 * 1024;
  c->ack_on_durable = false;
  c->max_waiters = 65536;
  c->tail_check_bytes = 4096;
}

/* ---------------------------------------------------------------- waiters */

static void release_waiters(fy_ha_master *m, int status, uint64_t upto, uint64_t now) {
  while (m->wcount) {
    struct waiter *w = &m->waiters[m->whead];
    int st;
    if (status)
      st = status;
    else if (w->end <= upto)
      st = 0;
    else if (w->deadline <= now)
      st = -FY_ETIMEOUT;
    else
      return;
    m->whead = (m->whead + 1) % m->cfg.max_waiters;
    m->wcount--;
    w->cb(w->arg, st);
  }
}

int fy_ha_master_wait(fy_ha_master *m, uint64_t end, uint32_t timeout_ms,
                      void (*cb)(void *arg, int status), void *arg) {
  if (m->stopping)
    return -FY_ECLOSED;
  if (end <= m->acked)
    return 1;
  if (m->wcount == m->cfg.max_waiters)
    return -FY_EBUSY;
  struct waiter *w = &m->waiters[(m->whead + m->wcount) % m->cfg.max_waiters];
  w->end = end;
  w->deadline = uv_now(m->loop) + timeout_ms;
  w->cb = cb;
  w->arg = arg;
  m->wcount++;
  return 0;
}

static void recompute_acked(fy_ha_master *m) {
  uint64_t best = 0;
  for (struct session *s = m->sessions; s; s = s->next)
    if (s->state == STREAMING) {
      uint64_t v = m->cfg.ack_on_durable ? s->durable : s->received;
      if (v > best)
        best = v;
    }
  if (best > m->acked) {
    m->acked = best;
    if (m->ack_cb)
      m->ack_cb(m->ack_arg, best);
  }
  release_waiters(m, 0, m->acked, uv_now(m->loop));
}

/* ---------------------------------------------------------------- streaming */

static void pump(struct session *s);

struct chunk {
  struct session *s;
  struct fy_cl_slice slice;
  fy_conn *conn;
};

static void on_chunk_sent(void *arg, int status) {
  struct chunk *c = arg;
  size_t len = c->slice.len; /* release clears the slice */
  fy_cl_slice_release(&c->slice);
  struct session *s = fy_conn_data(c->conn);
  if (s) {
    fy_assert(s->inflight >= len);
    s->inflight -= len;
    if (status == 0)
      pump(s);
  }
  free(c);
}

static void close_session(struct session *s, int reason, const char *why) {
  if (why)
    fy_warn(MOD, "slave %s (id %" PRIu64 "): %s; closing", fy_conn_peer(s->conn), s->broker_id, why);
  fy_conn_close(s->conn, reason);
}

static void pump(struct session *s) {
  fy_ha_master *m = s->m;
  if (s->state != STREAMING || m->stopping || !fy_conn_is_open(s->conn))
    return;
  uint64_t written = fy_commitlog_written(m->cl);
  while (s->inflight < m->cfg.inflight_bytes && s->send_pos < written) {
    struct chunk *c = calloc(1, sizeof *c);
    if (!c)
      return;
    uint64_t want = written - s->send_pos;
    if (want > m->cfg.chunk_bytes)
      want = m->cfg.chunk_bytes;
    int err = fy_commitlog_read(m->cl, s->send_pos, want, &c->slice);
    if (err || c->slice.len == 0) {
      free(c);
      if (err == -FY_ENOT_FOUND)
        close_session(s, err, "its position was deleted by retention");
      return;
    }
    c->s = s;
    c->conn = s->conn;
    Ferry__V1__HaData d = FERRY__V1__HA_DATA__INIT;
    d.offset = s->send_pos;
    d.master_log_end = written;
    uv_buf_t buf = uv_buf_init((char *)c->slice.data, (unsigned)c->slice.len);
    err = fy_conn_send(s->conn, FY_FRAME_ONEWAY, 0, FERRY__V1__OP__OP_HA_DATA, 0, &d.base, &buf, 1,
                       on_chunk_sent, c);
    if (err) {
      fy_cl_slice_release(&c->slice);
      free(c);
      return; /* the write queue drains; the check handle pumps again */
    }
    s->inflight += c->slice.len;
    s->send_pos += c->slice.len;
    s->last_send = uv_now(m->loop);
  }
}

static void on_pump_check(uv_check_t *h) {
  fy_ha_master *m = h->data;
  for (struct session *s = m->sessions; s; s = s->next)
    pump(s);
}

/* ---------------------------------------------------------------- requests */

static void refuse(struct session *s, const fy_frame *f, const char *fmt, uint64_t a, uint64_t b) {
  char text[256];
  snprintf(text, sizeof text, fmt, a, b);
  fy_error(MOD, "refusing slave %s: %s", fy_conn_peer(s->conn), text);
  fy_conn_reply_error(s->conn, f->request_id, f->op, FERRY__V1__STATUS__BAD_REQUEST, "%s", text);
  s->state = REFUSED; /* closed on the next tick, once the answer is out */
}

/* CRC32C of the master's bytes [end - len, end), or -1 if not available. */
static int64_t tail_crc(fy_ha_master *m, uint64_t end, uint32_t len) {
  struct fy_cl_slice sl;
  if (len == 0 || end < len || fy_commitlog_read(m->cl, end - len, len, &sl) != 0)
    return -1;
  int64_t crc = sl.len == len ? (int64_t)fy_crc32c(0, sl.data, sl.len) : -1;
  fy_cl_slice_release(&sl);
  return crc;
}

static void on_hello(struct session *s, const fy_frame *f) {
  fy_ha_master *m = s->m;
  Ferry__V1__HaHello *h;
  if (fy_frame_unpack(f, &ferry__v1__ha_hello__descriptor, (ProtobufCMessage **)&h)) {
    refuse(s, f, "malformed hello%.0" PRIu64 "%.0" PRIu64, 0, 0);
    return;
  }
  uint64_t end = fy_commitlog_written(m->cl), min = fy_commitlog_min(m->cl);
  s->broker_id = h->broker_id;
  if (h->log_end > end) {
    refuse(s, f,
           "slave log ends at %" PRIu64 ", past the master's end %" PRIu64
           ": the slave holds data the master does not (a diverged log); replication stops",
           h->log_end, end);
  } else if (h->log_end < min) {
    refuse(s, f,
           "slave log ends at %" PRIu64 ", before the master's oldest data at %" PRIu64
           ": the slave needs a copy of the master's store",
           h->log_end, min);
  } else if (h->tail_len && h->log_end - h->tail_len >= min &&
             tail_crc(m, h->log_end, h->tail_len) != (int64_t)h->tail_crc) {
    refuse(s, f,
           "slave log differs from the master's in the %" PRIu64 " bytes before offset %" PRIu64
           " (a diverged log); replication stops",
           h->tail_len, h->log_end);
  } else {
    s->state = STREAMING;
    s->send_pos = s->received = s->durable = h->log_end;
    s->connected_ms = wall_ms();
    s->behind_since = uv_now(m->loop);
    Ferry__V1__HaHelloResponse r = FERRY__V1__HA_HELLO_RESPONSE__INIT;
    r.master_log_min = min;
    r.master_log_end = end;
    fy_conn_reply(s->conn, f->request_id, f->op, FERRY__V1__STATUS__OK, &r.base, NULL, 0, NULL,
                  NULL);
    fy_info(MOD, "slave %s (id %" PRIu64 ") replicating from offset %" PRIu64 " (master end %" PRIu64
                 ")",
            fy_conn_peer(s->conn), s->broker_id, h->log_end, end);
    pump(s);
  }
  fy_pb_free(&h->base);
}

static void on_ack(struct session *s, const fy_frame *f) {
  fy_ha_master *m = s->m;
  Ferry__V1__HaAck *a;
  if (fy_frame_unpack(f, &ferry__v1__ha_ack__descriptor, (ProtobufCMessage **)&a)) {
    close_session(s, -FY_EDECODE, "malformed acknowledgement");
    return;
  }
  uint64_t end = fy_commitlog_written(m->cl);
  if (a->received > end || a->durable > a->received) {
    char why[160];
    snprintf(why, sizeof why,
             "acknowledged %" PRIu64 " (durable %" PRIu64 ") beyond the master's log end %" PRIu64,
             a->received, a->durable, end);
    close_session(s, -EPROTO, why);
  } else if (a->received < s->received) {
    close_session(s, -EPROTO, "acknowledgement went backwards");
  } else {
    s->received = a->received;
    s->durable = a->durable;
    if (s->received >= end)
      s->behind_since = uv_now(m->loop);
    recompute_acked(m);
  }
  fy_pb_free(&a->base);
}

static void on_frame(fy_conn *conn, const fy_frame *f) {
  struct session *s = fy_conn_data(conn);
  if (!s)
    return;
  s->last_read = uv_now(s->m->loop);
  if (f->op == FERRY__V1__OP__OP_HA_HELLO && s->state == HELLO_WAIT && f->kind == FY_FRAME_REQUEST)
    on_hello(s, f);
  else if (f->op == FERRY__V1__OP__OP_HA_ACK && s->state == STREAMING)
    on_ack(s, f);
  else if (s->state != REFUSED)
    close_session(s, -EPROTO, "unexpected frame on the HA channel");
}

static void on_accept(fy_server *srv, fy_conn *conn) {
  fy_ha_master *m = fy_server_data(srv);
  struct session *s = m ? calloc(1, sizeof *s) : NULL;
  if (!s) {
    fy_conn_close(conn, -ENOMEM);
    return;
  }
  s->m = m;
  s->conn = conn;
  s->state = HELLO_WAIT;
  s->last_read = s->last_send = uv_now(m->loop);
  s->next = m->sessions;
  m->sessions = s;
  fy_conn_set_data(conn, s);
}

static void maybe_done(fy_ha_master *m);

static void on_close(fy_conn *conn, int reason) {
  struct session *s = fy_conn_data(conn);
  if (!s)
    return;
  fy_ha_master *m = s->m;
  for (struct session **pp = &m->sessions; *pp; pp = &(*pp)->next)
    if (*pp == s) {
      *pp = s->next;
      break;
    }
  if (s->state == STREAMING)
    fy_info(MOD, "slave %s (id %" PRIu64 ") disconnected: %s", fy_conn_peer(conn), s->broker_id,
            reason ? fy_net_strerror(reason) : "closed");
  fy_conn_set_data(conn, NULL);
  free(s);
  if (m->stopping)
    maybe_done(m);
}

static void on_tick(uv_timer_t *t) {
  fy_ha_master *m = t->data;
  uint64_t now = uv_now(m->loop);
  for (struct session *s = m->sessions, *next; s; s = next) {
    next = s->next;
    if (s->state == REFUSED) {
      fy_conn_close(s->conn, -EPROTO);
    } else if (now - s->last_read > m->cfg.timeout_ms) {
      char why[96];
      snprintf(why, sizeof why, "nothing heard for %" PRIu64 " ms (haHousekeepingInterval)",
               now - s->last_read);
      close_session(s, -ETIMEDOUT, why);
    } else if (s->state == STREAMING && now - s->last_send >= m->cfg.heartbeat_ms) {
      Ferry__V1__HaData d = FERRY__V1__HA_DATA__INIT;
      d.offset = s->send_pos;
      d.master_log_end = fy_commitlog_written(m->cl);
      if (fy_conn_send(s->conn, FY_FRAME_ONEWAY, 0, FERRY__V1__OP__OP_HA_DATA, 0, &d.base, NULL, 0,
                       NULL, NULL) == 0)
        s->last_send = now;
    }
  }
  release_waiters(m, 0, m->acked, now);
}

/* ---------------------------------------------------------------- lifecycle */

int fy_ha_master_start(uv_loop_t *loop, fy_store *store, const struct fy_ha_config *cfg,
                       const char *host, int port, fy_ha_master **out) {
  fy_ha_master *m = calloc(1, sizeof *m);
  if (!m)
    return -ENOMEM;
  m->cfg = *cfg;
  m->loop = loop;
  m->store = store;
  m->cl = fy_store_commitlog(store);
  m->waiters = calloc(cfg->max_waiters, sizeof *m->waiters);
  if (!m->waiters) {
    free(m);
    return -ENOMEM;
  }
  fy_conn_cfg cc = {.on_frame = on_frame, .on_close = on_close,
                    .write_queue_max_bytes = cfg->inflight_bytes * 2ull + (1u << 20)};
  int err = fy_server_listen(loop, host, port, &cc, on_accept, &m->server);
  if (err) {
    fy_error(MOD, "cannot listen for slaves on %s:%d: %s", host, port, fy_net_strerror(err));
    free(m->waiters);
    free(m);
    return err;
  }
  fy_server_set_data(m->server, m);
  uv_timer_init(loop, &m->tick);
  m->tick.data = m;
  uv_timer_start(&m->tick, on_tick, TICK_MS, TICK_MS);
  uv_check_init(loop, &m->pump_check);
  m->pump_check.data = m;
  uv_check_start(&m->pump_check, on_pump_check);
  uv_unref((uv_handle_t *)&m->pump_check);
  fy_info(MOD, "HA listening for slaves on %s:%d", host, fy_server_port(m->server));
  *out = m;
  return 0;
}

int fy_ha_master_port(const fy_ha_master *m) { return fy_server_port(m->server); }
uint64_t fy_ha_master_acked(const fy_ha_master *m) { return m->acked; }

bool fy_ha_master_slave_ok(const fy_ha_master *m, uint64_t end) {
  for (const struct session *s = m->sessions; s; s = s->next)
    if (s->state == STREAMING && end - (s->received < end ? s->received : end) < m->cfg.fallbehind_max)
      return true;
  return false;
}

void fy_ha_master_on_ack(fy_ha_master *m, void (*cb)(void *arg, uint64_t acked), void *arg) {
  m->ack_cb = cb;
  m->ack_arg = arg;
}

size_t fy_ha_master_status(const fy_ha_master *m, struct fy_ha_slave_status *out, size_t cap) {
  size_t n = 0;
  uint64_t end = fy_commitlog_written(m->cl), now = uv_now(m->loop);
  for (const struct session *s = m->sessions; s && n < cap; s = s->next) {
    if (s->state != STREAMING)
      continue;
    struct fy_ha_slave_status *st = &out[n++];
    snprintf(st->peer, sizeof st->peer, "%s", fy_conn_peer(s->conn));
    st->broker_id = s->broker_id;
    st->connected_since_ms = s->connected_ms;
    st->received = s->received;
    st->durable = s->durable;
    st->lag_bytes = end > s->received ? end - s->received : 0;
    st->lag_ms = st->lag_bytes ? (int64_t)(now - s->behind_since) : 0;
  }
  return n;
}

static void on_handle_closed(uv_handle_t *h) {
  fy_ha_master *m = h->data;
  m->handles--;
  maybe_done(m);
}

static void maybe_done(fy_ha_master *m) {
  if (m->handles || m->sessions)
    return;
  void (*done)(void *) = m->done;
  void *arg = m->done_arg;
  free(m->waiters);
  free(m);
  done(arg);
}

void fy_ha_master_stop(fy_ha_master *m, void (*done)(void *arg), void *arg) {
  m->stopping = true;
  m->done = done;
  m->done_arg = arg;
  release_waiters(m, -FY_ECLOSED, 0, 0);
  fy_server_close(m->server);
  m->handles = 2;
  uv_close((uv_handle_t *)&m->tick, on_handle_closed);
  uv_close((uv_handle_t *)&m->pump_check, on_handle_closed);
}
