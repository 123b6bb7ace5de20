/*
 * Connections: the one place that turns socket bytes into frames and
 * frames into socket bytes, so every bound on what a peer can make us hold
 * lives here: the read buffer never exceeds one frame, a connection handles
 * a bounded number of frames per loop turn, and its write queue has a soft
 * limit that pauses reading (backpressure) and a hard one that refuses
 * sends.
 *
 * Reading is zero-copy: libuv reads into the connection's buffer, frames are
 * handed to on_frame as pointers into it, and the buffer is compacted or
 * grown only between callbacks. Writing is zero-copy for raw sections: only
 * the 24-byte header and the protobuf section are packed into a buffer of
 * ours, the raw buffers go to uv_write as they are and are released through
 * the caller's callback once written.
 *
 * Writes are coalesced: a send is queued on the connection (counted in the
 * write queue at once) and everything queued during one loop turn goes to
 * the socket as one writev from the connection's flush idle handle, which
 * also keeps the loop from blocking in poll meanwhile: written synchronously
 * (uv_try_write) and released at once, with a uv_write only for what the
 * socket did not take (see conn_flush_to for why). A
 * request/response peer under load thus makes one write syscall per turn,
 * not one per frame (profiles showed the per-frame writes, each a syscall,
 * as the largest cost of small sends on both ends). A turn's queue is
 * flushed early once it holds FLUSH_BUFS buffers or FLUSH_BYTES bytes, and
 * always before a shutdown or close, so order and the close semantics are
 * those of writing each send at once.
 *
 * Connection states (conn_set_state asserts every transition):
 *
 *   client:  CONNECTING --connected--> OPEN
 *   server:  SNIFFING --first byte 'F'--> OPEN
 *            SNIFFING --other byte, on_foreign set--> FOREIGN
 *
 *   OPEN --bad frame, request id known--> DRAINING   (BAD_REQUEST reply
 *            queued, write side shut down, input discarded)
 *   DRAINING --shutdown done, or LINGER_MS--> CLOSING
 *   any but CLOSING --fy_conn_close / error / timeout--> CLOSING
 *   CLOSING --all handles closed, name lookup done--> freed, after the rpc
 *            failures and on_close
 *
 * One timer per connection serves the connect timeout (CONNECTING), the
 * idle timeout (SNIFFING, OPEN, FOREIGN) and the drain linger (DRAINING).
 */
#include "net/conn.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "ferry.pb-c.h"
#include "net/net_int.h"
#include "net/rpc.h"

#define MOD "net"

#define READ_BUF_INIT (16u << 10)    /* a connection's read buffer between big frames */
#define READ_FREE_MIN 1024u          /* compact before reading into less than this */
#define READ_BACKLOG_ROOM (4u << 10) /* read on with frames left while this much is free */
#define LINGER_MS 1000u              /* a drain-close waits this long for its reply */
#define LISTEN_BACKLOG 511
#define FRAME_MAX_CEILING (1u << 30) /* keeps buffer sizes well inside 32 bits */

#define DEFAULT_WRITE_QUEUE_MAX ((uint64_t)64 << 20)
#define DEFAULT_CONNECT_TIMEOUT_MS 3000u
/* 256 saved a read stop/start per 16 KiB read of small responses but cost
 * about 15 % of closed-loop send throughput (bench/e2e_notes.md). */
#define DEFAULT_FRAMES_PER_TURN 64u
#define DEFAULT_RPC_PENDING_MAX 4096u
#define DEFAULT_MAX_CONNS 10000u
#define FLUSH_BUFS 1024u             /* buffers queued in a turn before an early flush */
#define FLUSH_BYTES (256u << 10)     /* bytes queued in a turn before an early flush */

enum conn_state {
  CONN_CONNECTING, /* client: looking up the name or connecting */
  CONN_SNIFFING,   /* server: accepted, no byte yet; the first picks the protocol */
  CONN_OPEN,       /* native frames both ways */
  CONN_FOREIGN,    /* server: another protocol; bytes go to on_foreign */
  CONN_DRAINING,   /* bad input: error reply queued, shutdown pending, input dropped */
  CONN_CLOSING,    /* handles closing; release, rpc and on_close callbacks to come */
};

static const char *const state_names[] = {"CONNECTING", "SNIFFING", "OPEN",
                                          "FOREIGN",    "DRAINING", "CLOSING"};

struct fy_conn {
  uv_tcp_t tcp;
  uv_idle_t turn;       /* handles frames left over from an earlier turn */
  uv_idle_t flush;      /* hands the sends queued this turn to libuv */
  uv_timer_t timer;     /* connect timeout, idle timeout or drain linger */
  uv_timer_t rpc_timer; /* rpc.c's deadline timer */
  uv_connect_t connect_req;
  uv_getaddrinfo_t gai_req;
  uv_shutdown_t shutdown_req;
  uv_loop_t *loop;
  fy_conn_cfg cfg;
  enum conn_state state;
  bool reading;      /* uv_read_start in force */
  bool turn_active;  /* uv_idle_start in force */
  bool flush_active; /* flush idle started: sends are queued in pend_* */
  bool paused;       /* write queue over the soft limit: no reading, no frames */
  bool held;         /* the owner holds the input (fy_conn_hold): no reading, no frames */
  bool backlog;      /* the buffer may hold a frame not yet handled */
  bool read_in_turn; /* a read came since the last turn (on_turn) */
  bool read_refused; /* on_alloc refused a buffer: the ENOBUFS is ours */
  bool eof;          /* the peer shut down its side (DRAINING only) */
  bool in_process;   /* inside conn_process (no re-entry) */
  bool gai_pending;  /* uv_getaddrinfo outstanding: memory must stay */
  bool silent;       /* never shown to the user: no on_close */
  int handles_open;  /* of tcp, turn, flush, timer, rpc_timer */
  int close_reason;
  uint64_t last_active_ms;
  /* Read buffer: bytes [start, end) are received and not yet consumed. */
  uint8_t *buf;
  size_t cap, start, end;
  size_t need;       /* total size of the frame at start, once known */
  size_t wq_bytes;   /* queued sends: wire bytes plus bookkeeping */
  struct wreq *pend_head, **pend_tail; /* sends not yet handed to libuv, in order */
  unsigned pend_bufs;
  size_t pend_bytes;
  fy_connect_cb connect_cb;
  fy_server *server;
  fy_conn *prev, *next; /* in server->conns */
  struct fy__rpc *rpc;
  char peer[80];
};

struct fy_server {
  uv_tcp_t tcp;
  uv_loop_t *loop;
  fy_conn_cfg cfg;
  fy_accept_cb on_accept;
  void *data;
  fy_conn *conns;
  size_t nconns;
  int port;
};

/* One queued send: the request, the iov and (for frames) the packed header
 * and protobuf section, in a single allocation. */
struct wreq {
  struct wreq *next;    /* in the connection's pending list, then in a batch */
  fy_release_cb release_cb;
  void *release_arg;
  size_t cost;
  unsigned nbufs;
  uv_buf_t bufs[];
};

/* One uv_write of the sends queued during a turn. */
struct wbatch {
  uv_write_t req;
  fy_conn *conn;
  struct wreq *list;
  uv_buf_t bufs[];
};

static void conn_update_io(fy_conn *c);
static void conn_process(fy_conn *c);
static void on_timer(uv_timer_t *t);

const char *fy_net_strerror(int err) {
  /* libuv's own codes (UV_EOF, UV_EAI_*) sit in -3000..-4095 on Unix; all
   * others are negative errnos. */
  if (err <= -3000 && err >= -4095)
    return uv_strerror(err);
  return fy_strerror(err);
}

static void cfg_defaults(fy_conn_cfg *c) {
  if (!c->frame_max_bytes)
    c->frame_max_bytes = FY_FRAME_MAX_DEFAULT;
  if (c->frame_max_bytes > FRAME_MAX_CEILING)
    c->frame_max_bytes = FRAME_MAX_CEILING;
  if (!c->write_queue_max_bytes)
    c->write_queue_max_bytes = DEFAULT_WRITE_QUEUE_MAX;
  if (!c->connect_timeout_ms)
    c->connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS;
  if (!c->frames_per_turn)
    c->frames_per_turn = DEFAULT_FRAMES_PER_TURN;
  if (!c->rpc_pending_max)
    c->rpc_pending_max = DEFAULT_RPC_PENDING_MAX;
  if (!c->max_conns)
    c->max_conns = DEFAULT_MAX_CONNS;
}

static void conn_set_state(fy_conn *c, enum conn_state to) {
#define B(s) (1u << (s))
  static const unsigned allowed[] = {
      [CONN_CONNECTING] = B(CONN_OPEN) | B(CONN_CLOSING),
      [CONN_SNIFFING] = B(CONN_OPEN) | B(CONN_FOREIGN) | B(CONN_CLOSING),
      [CONN_OPEN] = B(CONN_DRAINING) | B(CONN_CLOSING),
      [CONN_FOREIGN] = B(CONN_CLOSING),
      [CONN_DRAINING] = B(CONN_CLOSING),
      [CONN_CLOSING] = 0,
  };
#undef B
  if (!(allowed[c->state] & (1u << to)))
    fy_error(MOD, "%s: bad transition %s -> %s", c->peer, state_names[c->state],
             state_names[to]);
  fy_assert(allowed[c->state] & (1u << to));
  c->state = to;
}

static bool state_active(enum conn_state s) {
  return s == CONN_SNIFFING || s == CONN_OPEN || s == CONN_FOREIGN;
}

static void on_handle_closed(uv_handle_t *h);
static void conn_flush(fy_conn *c);

static fy_conn *conn_new(uv_loop_t *loop, const fy_conn_cfg *cfg, enum conn_state state) {
  fy_conn *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  c->loop = loop;
  c->cfg = *cfg;
  cfg_defaults(&c->cfg);
  c->state = state;
  int err = uv_tcp_init(loop, &c->tcp);
  fy_assert(err == 0);
  err = uv_idle_init(loop, &c->turn);
  fy_assert(err == 0);
  err = uv_idle_init(loop, &c->flush);
  fy_assert(err == 0);
  err = uv_timer_init(loop, &c->timer);
  fy_assert(err == 0);
  err = uv_timer_init(loop, &c->rpc_timer);
  fy_assert(err == 0);
  c->handles_open = 5;
  c->pend_tail = &c->pend_head;
  c->tcp.data = c->turn.data = c->flush.data = c->timer.data = c->rpc_timer.data = c;
  c->connect_req.data = c->gai_req.data = c->shutdown_req.data = c;
  snprintf(c->peer, sizeof c->peer, "?");
  return c;
}

/* Frees the connection once nothing of libuv refers to it any more. */
static void conn_maybe_finish(fy_conn *c) {
  if (c->handles_open > 0 || c->gai_pending)
    return;
  fy_assert(c->state == CONN_CLOSING);
  fy_assert(c->wq_bytes == 0);
  if (c->rpc)
    fy__rpc_on_close(c);
  fy_assert(c->rpc == NULL);
  if (!c->silent && c->cfg.on_close)
    c->cfg.on_close(c, c->close_reason);
  free(c->buf);
  free(c);
}

static void on_handle_closed(uv_handle_t *h) {
  fy_conn *c = h->data;
  fy_assert(c->handles_open > 0);
  if (--c->handles_open == 0)
    conn_maybe_finish(c);
}

static void server_unlink(fy_conn *c) {
  fy_server *s = c->server;
  if (!s)
    return;
  if (c->prev)
    c->prev->next = c->next;
  else
    s->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  c->prev = c->next = NULL;
  fy_assert(s->nconns > 0);
  s->nconns--;
  c->server = NULL;
}

void fy_conn_close(fy_conn *c, int reason) {
  if (c->state == CONN_CLOSING)
    return;
  fy_debug(MOD, "%s: closing (%s, in %s)", c->peer, fy_net_strerror(reason),
           state_names[c->state]);
  conn_set_state(c, CONN_CLOSING);
  c->close_reason = reason;
  c->reading = c->turn_active = false;
  server_unlink(c);
  if (c->gai_pending)
    uv_cancel((uv_req_t *)&c->gai_req); /* may be too late; on_resolved copes */
  /* What was sent this turn is written (or cancelled) like every earlier
   * send. Closing the tcp handle cancels its queued writes (their callbacks
   * run with UV_ECANCELED), a pending connect and a pending shutdown. */
  conn_flush(c);
  uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
  uv_close((uv_handle_t *)&c->turn, on_handle_closed);
  uv_close((uv_handle_t *)&c->flush, on_handle_closed);
  uv_close((uv_handle_t *)&c->timer, on_handle_closed);
  uv_close((uv_handle_t *)&c->rpc_timer, on_handle_closed);
}

static void conn_report_connect(fy_conn *c, int status) {
  fy_connect_cb cb = c->connect_cb;
  c->connect_cb = NULL;
  if (cb)
    cb(c, status);
}

static void conn_set_peer(fy_conn *c) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  char ip[INET6_ADDRSTRLEN];
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0)
    return;
  if (ss.ss_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
    uv_ip6_name(a, ip, sizeof ip);
    snprintf(c->peer, sizeof c->peer, "[%s]:%u", ip, (unsigned)ntohs(a->sin6_port));
  } else {
    const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
    uv_ip4_name(a, ip, sizeof ip);
    snprintf(c->peer, sizeof c->peer, "%s:%u", ip, (unsigned)ntohs(a->sin_port));
  }
}

static void conn_arm_idle(fy_conn *c) {
  if (c->cfg.idle_timeout_ms)
    uv_timer_start(&c->timer, on_timer, c->cfg.idle_timeout_ms, 0);
  else
    uv_timer_stop(&c->timer);
}

/* ------------------------------------------------------------------- reading */

static size_t read_buf_max(const fy_conn *c) {
  return (size_t)c->cfg.frame_max_bytes + FY_FRAME_HEADER_LEN;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *out) {
  fy_conn *c = h->data;
  *out = uv_buf_init(NULL, 0);
  /* Frames are left for a turn and a read already came in this loop
   * iteration: libuv is reading on because that read filled the buffer.
   * One read per turn, so that a peer gets at most twice frames_per_turn
   * frames handled per iteration; the socket stays readable and the read
   * comes after the turn. (No turn pending, e.g. draining: read.) */
  if (c->turn_active && c->read_in_turn) {
    c->read_refused = true;
    return;
  }
  if (c->state == CONN_DRAINING || c->start == c->end)
    c->start = c->end = 0;

  /* Capacity wanted: the pending frame whole (native), or twice what an
   * on_foreign hook left unconsumed in a full buffer. */
  size_t want = READ_BUF_INIT;
  if (c->need > want)
    want = c->need;
  if (c->state == CONN_FOREIGN && c->cap > 0 && c->end - c->start == c->cap && c->cap * 2 > want)
    want = c->cap * 2;
  if (want > read_buf_max(c))
    want = read_buf_max(c);

  if (c->start > 0 && (c->cap - c->end < READ_FREE_MIN || c->start + c->need > c->cap)) {
    memmove(c->buf, c->buf + c->start, c->end - c->start);
    c->end -= c->start;
    c->start = 0;
  }
  if (want > c->cap) {
    uint8_t *nb = realloc(c->buf, want);
    if (!nb)
      return; /* on_read gets UV_ENOBUFS */
    c->buf = nb;
    c->cap = want;
  }
  if (c->end < c->cap)
    *out = uv_buf_init((char *)c->buf + c->end, (unsigned)(c->cap - c->end));
}

/* The first byte of a server connection picks the protocol: 'F' is ours,
 * anything else goes to on_foreign, or closes the connection without it. */
static bool conn_sniff(fy_conn *c) {
  uint8_t b = c->buf[c->start];
  if (b == FY_FRAME_MAGIC0) {
    conn_set_state(c, CONN_OPEN);
    return true;
  }
  if (c->cfg.on_foreign) {
    fy_debug(MOD, "%s: first byte 0x%02x: foreign protocol", c->peer, b);
    conn_set_state(c, CONN_FOREIGN);
    return true;
  }
  fy_warn(MOD, "%s: first byte 0x%02x is not a Ferry frame and no other protocol is served; "
               "closing", c->peer, b);
  fy_conn_close(c, -FY_EFRAME_MAGIC);
  return false;
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  fy_conn *c = req->data;
  fy_conn_close(c, c->close_reason);
}

/* Bad input with a known request id: answer, then close once the answer
 * is out (or after LINGER_MS). Input is read and dropped meanwhile so the
 * peer gets our reply rather than a reset. */
static void conn_drain(fy_conn *c, int reason) {
  conn_set_state(c, CONN_DRAINING);
  c->close_reason = reason;
  c->start = c->end = c->need = 0;
  c->backlog = false;
  uv_timer_start(&c->timer, on_timer, LINGER_MS, 0);
  conn_flush(c); /* the shutdown follows the queued reply */
  int err = uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown);
  if (err)
    fy_conn_close(c, reason);
}

static void conn_bad_frame(fy_conn *c, int err, const fy_frame *f) {
  /* f->kind is set only when the whole header is in and the magic is ours. */
  bool answer = f->kind == FY_FRAME_REQUEST;
  fy_warn(MOD, "%s: bad frame: %s; %s", c->peer, fy_strerror(err),
          answer ? "answering BAD_REQUEST and closing" : "closing");
  if (answer && fy_conn_reply_error(c, f->request_id, f->op, FERRY__V1__STATUS__BAD_REQUEST,
                                    "%s", fy_strerror(err)) == 0) {
    conn_drain(c, err);
    return;
  }
  fy_conn_close(c, err);
}

static void conn_deliver(fy_conn *c, const fy_frame *f) {
  if (f->kind == FY_FRAME_RESPONSE && fy__rpc_on_response(c, f))
    return;
  if (c->cfg.on_frame) {
    c->cfg.on_frame(c, f);
    return;
  }
  if (f->kind == FY_FRAME_REQUEST)
    fy_conn_reply_error(c, f->request_id, f->op, FERRY__V1__STATUS__UNSUPPORTED_OP,
                        "no handler for op %u", (unsigned)f->op);
}

/* Handles what the buffer holds, at most frames_per_turn frames; what is
 * left waits for the next loop turn (c->backlog), so one busy peer cannot
 * starve the others. Reading goes on meanwhile (conn_update_io), one read
 * per turn (on_alloc): a peer gets at most twice frames_per_turn frames
 * handled per loop iteration, a turn's and a read's. */
static void conn_process(fy_conn *c) {
  fy_assert(!c->in_process);
  c->in_process = true;
  c->backlog = false;
  uint32_t handled = 0;
  while (c->start < c->end) {
    if (c->state == CONN_SNIFFING && !conn_sniff(c))
      break;
    if (c->state != CONN_OPEN && c->state != CONN_FOREIGN)
      break;
    if (c->paused || c->held || handled == c->cfg.frames_per_turn) {
      c->backlog = true;
      break;
    }
    if (c->state == CONN_FOREIGN) {
      size_t avail = c->end - c->start;
      size_t used = c->cfg.on_foreign(c, c->buf + c->start, avail);
      fy_assert(used <= avail);
      c->start += used;
      /* Made progress and bytes remain: call again next turn. */
      c->backlog = used > 0 && c->start < c->end;
      break;
    }
    fy_frame f;
    size_t need;
    ssize_t n = fy_frame_parse(c->buf + c->start, c->end - c->start, c->cfg.frame_max_bytes,
                               &f, &need);
    if (n == 0) {
      c->need = need;
      break;
    }
    if (n < 0) {
      conn_bad_frame(c, (int)n, &f);
      break;
    }
    fy_assert((size_t)n <= c->end - c->start);
    c->start += (size_t)n;
    c->need = 0;
    handled++;
    conn_deliver(c, &f);
  }
  if (c->start == c->end) {
    c->start = c->end = c->need = 0;
    if (c->cap > READ_BUF_INIT) { /* after a big frame: give the memory back */
      free(c->buf);
      c->buf = NULL;
      c->cap = 0;
    }
  }
  c->in_process = false;
  conn_update_io(c);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b) {
  fy_conn *c = s->data;
  if (nread == 0)
    return;
  if (nread < 0) {
    if (c->state == CONN_DRAINING && nread == UV_EOF) {
      c->eof = true; /* our reply may still be going out */
      conn_update_io(c);
      return;
    }
    if (nread == UV_ENOBUFS && c->read_refused) {
      c->read_refused = false;
      return;
    }
    if (nread == UV_ENOBUFS) {
      fy_warn(MOD, "%s: more than %zu bytes unconsumed by the protocol handler; closing",
              c->peer, read_buf_max(c));
      fy_conn_close(c, -FY_EFRAME_TOO_BIG);
      return;
    }
    if (nread != UV_EOF)
      fy_info(MOD, "%s: read failed: %s; closing", c->peer, fy_net_strerror((int)nread));
    fy_conn_close(c, (int)nread);
    return;
  }
  fy_assert(b->base == (char *)c->buf + c->end);
  c->end += (size_t)nread;
  c->read_in_turn = true;
  fy_assert(c->end <= c->cap);
  c->last_active_ms = uv_now(c->loop);
  if (c->state == CONN_DRAINING) {
    c->start = c->end = 0;
    return;
  }
  fy_clock_batch_begin(); /* the frames of one read share their clock reads */
  conn_process(c);
  fy_clock_batch_end();
}

static void on_turn(uv_idle_t *h) {
  fy_conn *c = h->data;
  c->read_in_turn = false;
  fy_clock_batch_begin();
  conn_process(c);
  fy_clock_batch_end();
}

/* Brings uv_read_start/stop and the turn handle in line with the state:
 * take a turn when frames are left and there is no backpressure; read
 * when there is no backpressure and the buffer has room (READ_BACKLOG_ROOM
 * beyond the frames left). Reading goes on while frames are left because
 * a read stop and start costs two epoll_ctl calls: at 337k sends a second
 * a read brought more than frames_per_turn frames nearly every time, and
 * the broker and the client each made about 3,000 such pairs a second
 * (bench/e2e_notes.md, twelfth session). */
static void conn_update_io(fy_conn *c) {
  if (c->state == CONN_CLOSING || c->state == CONN_CONNECTING)
    return;
  bool active = state_active(c->state);
  bool flowing = active && !c->paused && !c->held;
  bool want_turn = flowing && c->backlog;
  bool room = !c->backlog || c->cap - (c->end - c->start) >= READ_BACKLOG_ROOM;
  bool want_read = (c->state == CONN_DRAINING && !c->eof) || (flowing && room);
  if (want_read != c->reading) {
    if (want_read) {
      int err = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
      if (err) {
        fy_info(MOD, "%s: cannot read: %s; closing", c->peer, fy_net_strerror(err));
        fy_conn_close(c, err);
        return;
      }
    } else {
      uv_read_stop((uv_stream_t *)&c->tcp);
    }
    c->reading = want_read;
  }
  if (want_turn != c->turn_active) {
    if (want_turn)
      uv_idle_start(&c->turn, on_turn);
    else
      uv_idle_stop(&c->turn);
    c->turn_active = want_turn;
  }
}

static void on_timer(uv_timer_t *t) {
  fy_conn *c = t->data;
  switch (c->state) {
  case CONN_CONNECTING:
    fy_info(MOD, "%s: connect timed out after %u ms", c->peer, c->cfg.connect_timeout_ms);
    conn_report_connect(c, -ETIMEDOUT);
    fy_conn_close(c, -ETIMEDOUT);
    return;
  case CONN_DRAINING:
    fy_conn_close(c, c->close_reason);
    return;
  case CONN_SNIFFING:
  case CONN_OPEN:
  case CONN_FOREIGN: {
    uint64_t idle_ms = uv_now(c->loop) - c->last_active_ms;
    if (idle_ms >= c->cfg.idle_timeout_ms) {
      fy_info(MOD, "%s: idle for %llu ms; closing", c->peer, (unsigned long long)idle_ms);
      fy_conn_close(c, -ETIMEDOUT);
    } else {
      uv_timer_start(&c->timer, on_timer, c->cfg.idle_timeout_ms - idle_ms, 0);
    }
    return;
  }
  case CONN_CLOSING:
    return;
  }
}

/* ------------------------------------------------------------------- writing */

/* The sends of list are written (status 0) or failed: released in order. */
static void release_written(fy_conn *c, struct wreq *w, int status) {
  for (uint32_t n = 0; w; n++) {
    fy_assert(n < FLUSH_BUFS + FY_CONN_IOV_MAX + 1);
    struct wreq *next = w->next;
    fy_assert(c->wq_bytes >= w->cost);
    c->wq_bytes -= w->cost;
    if (w->release_cb)
      w->release_cb(w->release_arg, status);
    free(w);
    w = next;
  }
}

void fy_conn_hold(fy_conn *c, bool hold) {
  if (c->held == hold)
    return;
  c->held = hold;
  if (!hold)
    c->backlog = c->start < c->end; /* frames may be waiting */
  if (!c->in_process) /* conn_process re-checks when it is done */
    conn_update_io(c);
}

/* Reading resumes once the write queue has drained to half its limit. */
static void maybe_resume(fy_conn *c) {
  if (!c->paused || c->wq_bytes > c->cfg.write_queue_max_bytes / 2)
    return;
  fy_debug(MOD, "%s: write queue drained to %zu bytes; reading again", c->peer, c->wq_bytes);
  c->paused = false;
  c->backlog = c->start < c->end; /* frames may be waiting */
  conn_update_io(c);
}

static void on_written(uv_write_t *req, int status) {
  struct wbatch *b = (struct wbatch *)req;
  fy_conn *c = b->conn;
  struct wreq *w = b->list;
  free(b);
  release_written(c, w, status);
  if (status == 0)
    c->last_active_ms = uv_now(c->loop);
  if (c->state == CONN_CLOSING)
    return;
  if (status < 0) {
    fy_info(MOD, "%s: write failed: %s; closing", c->peer, fy_net_strerror(status));
    fy_conn_close(c, status);
    return;
  }
  maybe_resume(c);
}

/* Writes what it can of b's bufs (total bytes) now, without a uv_write:
 * true if all of it went out. A partial write leaves b's bufs at the rest.
 * libuv refuses (EAGAIN) while an earlier uv_write is queued, so order
 * holds. */
static bool try_write_now(fy_conn *c, struct wbatch *b, unsigned *nbufs, size_t total) {
  int n = uv_try_write((uv_stream_t *)&c->tcp, b->bufs, *nbufs);
  if (n <= 0)
    return false; /* EAGAIN, or an error the uv_write below reports */
  if ((size_t)n == total)
    return true;
  size_t done = (size_t)n;
  unsigned skip = 0;
  while (done >= b->bufs[skip].len) { /* bounded: done < total */
    done -= b->bufs[skip].len;
    skip++;
  }
  b->bufs[skip].base += done;
  b->bufs[skip].len -= (unsigned)done;
  memmove(b->bufs, b->bufs + skip, (*nbufs - skip) * sizeof(uv_buf_t));
  *nbufs -= skip;
  return false;
}

/* Hands every queued send to libuv, in order, as few uv_writes as the
 * bounds allow (normally one). A uv_write that fails at once (the socket
 * is gone) releases its sends with the error.
 *
 * With written != NULL (the flush idle: no caller of ours is on the stack)
 * each batch is first written synchronously (uv_try_write), and sends
 * written whole are appended to *written for the caller to release once
 * the flush is done. This saves more than the callback's loop turn: libuv
 * re-arms the socket's epoll registration (an epoll_ctl) after every
 * uv_write it completes, a system call per flush that profiles showed on
 * both ends of a request/response exchange. */
static void conn_flush_to(fy_conn *c, struct wreq ***written) {
  if (c->flush_active) {
    uv_idle_stop(&c->flush);
    c->flush_active = false;
  }
  for (uint32_t rounds = 0; c->pend_head; rounds++) {
    fy_assert(rounds <= FLUSH_BUFS);
    /* Whole sends, up to FLUSH_BUFS buffers (at least one send). */
    unsigned nbufs = 0;
    struct wreq *last = NULL;
    for (struct wreq *w = c->pend_head; w; w = w->next) {
      if (last && nbufs + w->nbufs > FLUSH_BUFS)
        break;
      nbufs += w->nbufs;
      last = w;
    }
    struct wbatch *b = malloc(sizeof *b + nbufs * sizeof(uv_buf_t));
    struct wreq *list = c->pend_head;
    c->pend_head = last->next;
    last->next = NULL;
    if (!c->pend_head)
      c->pend_tail = &c->pend_head;
    int err = -ENOMEM;
    if (b) {
      b->conn = c;
      b->list = list;
      unsigned k = 0;
      size_t bytes = 0;
      for (struct wreq *w = list; w; w = w->next) {
        memcpy(b->bufs + k, w->bufs, w->nbufs * sizeof(uv_buf_t));
        k += w->nbufs;
        for (unsigned i = 0; i < w->nbufs; i++)
          bytes += w->bufs[i].len;
      }
      fy_assert(k == nbufs);
      if (written && try_write_now(c, b, &nbufs, bytes)) {
        free(b);
        **written = list;
        *written = &last->next;
        continue;
      }
      err = uv_write(&b->req, (uv_stream_t *)&c->tcp, b->bufs, nbufs, on_written);
      if (err == 0)
        continue;
      free(b);
    }
    /* Not handed to libuv: release the sends here, and close. */
    for (struct wreq *w = list; w;) {
      struct wreq *next = w->next;
      c->wq_bytes -= w->cost;
      if (w->release_cb)
        w->release_cb(w->release_arg, err);
      free(w);
      w = next;
    }
    if (c->state != CONN_CLOSING) {
      fy_info(MOD, "%s: write failed: %s; closing", c->peer, fy_net_strerror(err));
      fy_conn_close(c, err);
    }
  }
  c->pend_bufs = 0;
  c->pend_bytes = 0;
}

static void conn_flush(fy_conn *c) { conn_flush_to(c, NULL); }

static void on_flush(uv_idle_t *h) {
  fy_conn *c = h->data;
  struct wreq *written = NULL, **tail = &written;
  conn_flush_to(c, &tail);
  if (!written)
    return;
  c->last_active_ms = uv_now(c->loop);
  release_written(c, written, 0); /* may send (queued for the next flush) or close */
  if (c->state != CONN_CLOSING)
    maybe_resume(c);
}

int fy__conn_can_send(const fy_conn *c) {
  switch (c->state) {
  case CONN_CONNECTING:
    return -ENOTCONN;
  case CONN_SNIFFING:
  case CONN_OPEN:
  case CONN_FOREIGN:
    return 0;
  case CONN_DRAINING:
  case CONN_CLOSING:
    break;
  }
  return -FY_ECLOSED;
}

static bool queue_full(const fy_conn *c, size_t cost) {
  return c->wq_bytes > 0 && c->wq_bytes + cost > 2 * c->cfg.write_queue_max_bytes;
}

static int conn_submit(fy_conn *c, struct wreq *w, unsigned nbufs, size_t cost,
                       fy_release_cb release_cb, void *release_arg) {
  w->next = NULL;
  w->release_cb = release_cb;
  w->release_arg = release_arg;
  w->cost = cost;
  w->nbufs = nbufs;
  *c->pend_tail = w;
  c->pend_tail = &w->next;
  c->pend_bufs += nbufs;
  c->pend_bytes += cost;
  c->wq_bytes += cost;
  if (c->pend_bufs >= FLUSH_BUFS || c->pend_bytes >= FLUSH_BYTES) {
    conn_flush(c);
  } else if (!c->flush_active) {
    uv_idle_start(&c->flush, on_flush);
    c->flush_active = true;
  }
  if (!c->paused && c->wq_bytes > c->cfg.write_queue_max_bytes) {
    fy_debug(MOD, "%s: write queue at %zu bytes; pausing reads", c->peer, c->wq_bytes);
    c->paused = true;
    if (!c->in_process) /* conn_process re-checks when it is done */
      conn_update_io(c);
  }
  return 0;
}

/* Queues one frame: header and msg packed into the send's own allocation,
 * followed by the raw buffers copied there too (copy_raw) or referenced. */
static int send_frame(fy_conn *c, enum fy_frame_kind kind, uint64_t request_id, uint16_t op,
                      uint16_t status, const ProtobufCMessage *msg, const uv_buf_t *raw,
                      unsigned nraw, bool copy_raw, fy_release_cb release_cb,
                      void *release_arg) {
  int err = fy__conn_can_send(c);
  if (err)
    return err;
  if ((unsigned)kind > FY_FRAME_ONEWAY || nraw > FY_CONN_IOV_MAX || (nraw && !raw))
    return -EINVAL;
  uint64_t raw_len = 0;
  unsigned nbufs = 1;
  for (unsigned i = 0; i < nraw; i++) {
    raw_len += raw[i].len;
    nbufs += !copy_raw && raw[i].len > 0;
  }
  size_t pb_len = fy_pb_packed_size(msg);
  uint64_t payload = pb_len + raw_len;
  if (payload > c->cfg.frame_max_bytes)
    return -FY_EFRAME_TOO_BIG;
  size_t head_len = FY_FRAME_HEADER_LEN + pb_len + (copy_raw ? (size_t)raw_len : 0);
  size_t alloc = sizeof(struct wreq) + nbufs * sizeof(uv_buf_t) + head_len;
  size_t cost = alloc + (copy_raw ? 0 : (size_t)raw_len);
  if (queue_full(c, cost))
    return -FY_EBUSY;
  struct wreq *w = malloc(alloc);
  if (!w)
    return -ENOMEM;
  uint8_t *head = (uint8_t *)(w->bufs + nbufs);
  fy_frame_encode_header(head, kind, (uint32_t)payload, request_id, op, status,
                         (uint32_t)pb_len);
  size_t packed = fy_pb_pack(msg, head + FY_FRAME_HEADER_LEN);
  fy_assert(packed == pb_len);
  w->bufs[0] = uv_buf_init((char *)head, (unsigned)head_len);
  unsigned n = 1;
  uint8_t *p = head + FY_FRAME_HEADER_LEN + pb_len;
  for (unsigned i = 0; i < nraw; i++) {
    if (raw[i].len == 0)
      continue;
    if (copy_raw) {
      memcpy(p, raw[i].base, raw[i].len);
      p += raw[i].len;
    } else {
      w->bufs[n++] = raw[i];
    }
  }
  fy_assert(n == nbufs);
  fy_assert(!copy_raw || p == head + head_len);
  return conn_submit(c, w, nbufs, cost, release_cb, release_arg);
}

int fy_conn_send(fy_conn *c, enum fy_frame_kind kind, uint64_t request_id, uint16_t op,
                 uint16_t status, const ProtobufCMessage *msg, const uv_buf_t *raw,
                 unsigned nraw, fy_release_cb release_cb, void *release_arg) {
  return send_frame(c, kind, request_id, op, status, msg, raw, nraw, false, release_cb,
                    release_arg);
}

int fy__conn_send_copy(fy_conn *c, enum fy_frame_kind kind, uint64_t request_id, uint16_t op,
                       const ProtobufCMessage *msg, const uv_buf_t *raw, unsigned nraw) {
  return send_frame(c, kind, request_id, op, 0, msg, raw, nraw, true, NULL, NULL);
}

int fy_conn_write(fy_conn *c, const uv_buf_t *bufs, unsigned nbufs, fy_release_cb release_cb,
                  void *release_arg) {
  int err = fy__conn_can_send(c);
  if (err)
    return err;
  if (nbufs == 0 || nbufs > FY_CONN_IOV_MAX || !bufs)
    return -EINVAL;
  size_t alloc = sizeof(struct wreq) + nbufs * sizeof(uv_buf_t);
  size_t cost = alloc;
  for (unsigned i = 0; i < nbufs; i++)
    cost += bufs[i].len;
  if (queue_full(c, cost))
    return -FY_EBUSY;
  struct wreq *w = malloc(alloc);
  if (!w)
    return -ENOMEM;
  memcpy(w->bufs, bufs, nbufs * sizeof *bufs);
  return conn_submit(c, w, nbufs, cost, release_cb, release_arg);
}

/* -------------------------------------------------------------------- server */

static void on_server_closed(uv_handle_t *h) { free(h->data); }

static void on_connection(uv_stream_t *ls, int status) {
  fy_server *s = ls->data;
  if (status < 0) {
    fy_warn(MOD, "accept on port %d failed: %s", s->port, fy_net_strerror(status));
    return;
  }
  fy_conn *c = conn_new(s->loop, &s->cfg, CONN_SNIFFING);
  fy_assert(c != NULL); /* without it the listener would stall */
  int err = uv_accept(ls, (uv_stream_t *)&c->tcp);
  if (err) {
    fy_warn(MOD, "accept on port %d failed: %s", s->port, fy_net_strerror(err));
    c->silent = true;
    fy_conn_close(c, err);
    return;
  }
  conn_set_peer(c);
  if (s->nconns >= c->cfg.max_conns) {
    fy_warn(MOD, "%s: refused: %zu connections open (max_conns)", c->peer, s->nconns);
    c->silent = true;
    fy_conn_close(c, -FY_EBUSY);
    return;
  }
  c->server = s;
  c->next = s->conns;
  if (s->conns)
    s->conns->prev = c;
  s->conns = c;
  s->nconns++;
  uv_tcp_nodelay(&c->tcp, 1);
  c->last_active_ms = uv_now(c->loop);
  conn_arm_idle(c);
  fy_debug(MOD, "%s: accepted on port %d", c->peer, s->port);
  if (s->on_accept)
    s->on_accept(s, c);
  conn_update_io(c);
}

static int parse_addr(const char *host, int port, struct sockaddr_storage *ss) {
  if (port < 0 || port > 65535)
    return -EINVAL;
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0)
    return 0;
  if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0)
    return 0;
  return -EINVAL;
}

int fy_server_listen(uv_loop_t *loop, const char *host, int port, const fy_conn_cfg *cfg,
                     fy_accept_cb on_accept, fy_server **out) {
  struct sockaddr_storage ss;
  int err = parse_addr(host, port, &ss);
  if (err)
    return err;
  fy_server *s = calloc(1, sizeof *s);
  if (!s)
    return -ENOMEM;
  s->loop = loop;
  s->cfg = *cfg;
  cfg_defaults(&s->cfg);
  s->on_accept = on_accept;
  s->data = cfg->data;
  err = uv_tcp_init(loop, &s->tcp);
  fy_assert(err == 0);
  s->tcp.data = s;
  err = uv_tcp_bind(&s->tcp, (const struct sockaddr *)&ss, 0);
  if (!err)
    err = uv_listen((uv_stream_t *)&s->tcp, LISTEN_BACKLOG, on_connection);
  if (err) {
    fy_error(MOD, "cannot listen on %s:%d: %s", host, port, fy_net_strerror(err));
    uv_close((uv_handle_t *)&s->tcp, on_server_closed);
    return err;
  }
  int len = sizeof ss;
  err = uv_tcp_getsockname(&s->tcp, (struct sockaddr *)&ss, &len);
  fy_assert(err == 0);
  s->port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                     : ntohs(((struct sockaddr_in *)&ss)->sin_port);
  fy_info(MOD, "listening on %s:%d", host, s->port);
  *out = s;
  return 0;
}

int fy_server_port(const fy_server *s) { return s->port; }
size_t fy_server_conn_count(const fy_server *s) { return s->nconns; }
void fy_server_set_data(fy_server *s, void *data) { s->data = data; }
void *fy_server_data(const fy_server *s) { return s->data; }

void fy_server_close(fy_server *s) {
  size_t bound = s->nconns;
  for (size_t i = 0; s->conns; i++) {
    fy_assert(i <= bound);
    fy_conn_close(s->conns, -ECANCELED); /* unlinks it */
  }
  fy_assert(s->nconns == 0);
  fy_info(MOD, "stopped listening on port %d", s->port);
  uv_close((uv_handle_t *)&s->tcp, on_server_closed);
}

/* -------------------------------------------------------------------- client */

static void on_connect(uv_connect_t *req, int status) {
  fy_conn *c = req->data;
  if (c->state == CONN_CLOSING) {
    conn_report_connect(c, status ? status : UV_ECANCELED);
    return;
  }
  if (status < 0) {
    fy_info(MOD, "%s: connect failed: %s", c->peer, fy_net_strerror(status));
    conn_report_connect(c, status);
    fy_conn_close(c, status);
    return;
  }
  conn_set_state(c, CONN_OPEN);
  conn_set_peer(c);
  uv_tcp_nodelay(&c->tcp, 1);
  c->last_active_ms = uv_now(c->loop);
  conn_arm_idle(c);
  fy_debug(MOD, "%s: connected", c->peer);
  conn_report_connect(c, 0);
  conn_update_io(c);
}

static int conn_start_connect(fy_conn *c, const struct sockaddr *sa) {
  return uv_tcp_connect(&c->connect_req, &c->tcp, sa, on_connect);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  fy_conn *c = req->data;
  c->gai_pending = false;
  if (c->state == CONN_CLOSING) {
    if (res)
      uv_freeaddrinfo(res);
    conn_report_connect(c, UV_ECANCELED);
    conn_maybe_finish(c);
    return;
  }
  int err = status;
  if (!err) {
    /* The first IPv4 address, else the first: "localhost" then reaches a
     * server bound to 127.0.0.1 whatever order the resolver prefers. */
    const struct addrinfo *pick = res;
    for (const struct addrinfo *ai = res; ai; ai = ai->ai_next)
      if (ai->ai_family == AF_INET) {
        pick = ai;
        break;
      }
    err = conn_start_connect(c, pick->ai_addr);
  }
  if (res)
    uv_freeaddrinfo(res);
  if (err) {
    fy_info(MOD, "%s: cannot connect: %s", c->peer, fy_net_strerror(err));
    conn_report_connect(c, err);
    fy_conn_close(c, err);
  }
}

int fy_conn_connect(uv_loop_t *loop, const char *host, int port, const fy_conn_cfg *cfg,
                    fy_connect_cb cb, fy_conn **out) {
  if (!cb || port <= 0 || port > 65535)
    return -EINVAL;
  fy_conn *c = conn_new(loop, cfg, CONN_CONNECTING);
  if (!c)
    return -ENOMEM;
  c->connect_cb = cb;
  snprintf(c->peer, sizeof c->peer, "%s:%d", host, port);
  struct sockaddr_storage ss;
  int err;
  if (parse_addr(host, port, &ss) == 0) {
    err = conn_start_connect(c, (const struct sockaddr *)&ss);
  } else {
    char portstr[8];
    snprintf(portstr, sizeof portstr, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    err = uv_getaddrinfo(loop, &c->gai_req, on_resolved, host, portstr, &hints);
    c->gai_pending = err == 0;
  }
  if (err) {
    c->connect_cb = NULL;
    c->silent = true;
    fy_conn_close(c, err);
    return err;
  }
  uv_timer_start(&c->timer, on_timer, c->cfg.connect_timeout_ms, 0);
  *out = c;
  return 0;
}

/* ------------------------------------------------------------------- queries */

size_t fy_conn_write_queue_bytes(const fy_conn *c) { return c->wq_bytes; }
bool fy_conn_reading(const fy_conn *c) { return c->reading; }
bool fy_conn_is_open(const fy_conn *c) { return fy__conn_can_send(c) == 0; }
void *fy_conn_data(const fy_conn *c) { return c->cfg.data; }
void fy_conn_set_data(fy_conn *c, void *data) { c->cfg.data = data; }
uv_loop_t *fy_conn_loop(const fy_conn *c) { return c->loop; }
fy_server *fy_conn_server(const fy_conn *c) { return c->server; }
const char *fy_conn_peer(const fy_conn *c) { return c->peer; }

struct fy__rpc **fy__conn_rpc(fy_conn *c) { return &c->rpc; }
uv_timer_t *fy__conn_rpc_timer(fy_conn *c) { return &c->rpc_timer; }
const fy_conn_cfg *fy__conn_cfg(const fy_conn *c) { return &c->cfg; }

struct owned_bufs {
  void *hdr, *body;
};

static void on_owned_written(void *arg, int status) {
  (void)status;
  struct owned_bufs *o = arg;
  free(o->hdr);
  free(o->body);
  free(o);
}

int fy_conn_write_owned(fy_conn *conn, void *hdr, size_t hdr_len, void *body, size_t body_len) {
  struct owned_bufs *o = malloc(sizeof *o);
  if (!o) {
    free(hdr);
    free(body);
    return -ENOMEM;
  }
  o->hdr = hdr;
  o->body = body;
  uv_buf_t bufs[2] = {uv_buf_init(hdr, (unsigned)hdr_len), uv_buf_init(body, (unsigned)body_len)};
  int err = fy_conn_write(conn, bufs, body_len ? 2 : 1, on_owned_written, o);
  if (err)
    on_owned_written(o, err);
  return err;
}
