/* net: server and clients on loopback inside one loop. Echo with many calls
 * in flight answered out of order, a 10 MB zero-copy raw section,
 * backpressure against a peer that does not read, rpc timeouts and
 * connection loss, bad input from raw sockets, the foreign-protocol hook,
 * idle timeouts, the per-turn frame cap. Every test ends with
 * uv_loop_close() == 0: no leaked handles. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "ferry.pb-c.h"
#include "net/conn.h"
#include "net/frame.h"
#include "net/rpc.h"
#include "testutil.h"

#define OP_ECHO FERRY__V1__OP__OP_GET_ROUTE /* echoes the topic and the raw section */
#define OP_BIG FERRY__V1__OP__OP_PULL      /* answers with the big zero-copy buffer */
#define OP_HOLD 900                         /* held; answered when the test says */
#define OP_DROP 901                         /* never answered */

#define DEADLINE_MS 10000

/* Runs the loop until cond holds; fails the test after DEADLINE_MS. */
#define WAIT_FOR(loop, cond)                                                   \
  do {                                                                         \
    uint64_t t0_ = uv_now(loop);                                               \
    while (!(cond)) {                                                          \
      assert_true(uv_now(loop) - t0_ < DEADLINE_MS);                           \
      bool never_ = false;                                                     \
      fy_test_run_until(loop, &never_, 5);                                     \
    }                                                                          \
  } while (0)

/* ------------------------------------------------------------------ server */

struct held {
  fy_conn *conn;
  uint64_t id;
  char topic[32];
  uint8_t *raw;
  uint32_t raw_len;
};

struct srv {
  uv_loop_t *loop;
  fy_server *server;
  int port;
  fy_conn *last;         /* last accepted connection */
  int accepted;
  int closed;
  int last_close_reason;
  int frames;
  int big_released;      /* release callbacks of OP_BIG replies */
  int released;          /* all other release callbacks */
  int bad_release_status;
  const uint8_t *big;
  size_t big_len;
  size_t big_parts;
  size_t reply_raw_len;  /* ECHO: answer with this many bytes of big instead */
  size_t max_queue;      /* highest write queue seen after a send */
  uint64_t big_requests_raw;
  struct held held[1024];
  int nheld;
  /* per-turn frame cap check */
  uv_check_t check;
  uint64_t iter, last_iter;
  uint32_t in_iter, max_in_iter;
  int hold_at;           /* > 0: fy_conn_hold when this many frames are in */
  int probe_at;          /* > 0: note fy_conn_reading when this many frames are in */
  bool reading_at_probe;
  int frames_not_reading; /* frames handled while the connection was not reading */
};

static void srv_release(void *arg, int status) {
  struct srv *s = arg;
  s->released++;
  if (status)
    s->bad_release_status = status;
}

static void big_release(void *arg, int status) {
  struct srv *s = arg;
  s->big_released++;
  if (status)
    s->bad_release_status = status;
}

static void free_release(void *arg, int status) { free(arg); }

static void note_queue(struct srv *s, fy_conn *c) {
  size_t q = fy_conn_write_queue_bytes(c);
  if (q > s->max_queue)
    s->max_queue = q;
}

static void echo(struct srv *s, fy_conn *c, uint64_t id, const char *topic, uint8_t *raw,
                 uint32_t raw_len) {
  Ferry__V1__GetRouteRequest m = FERRY__V1__GET_ROUTE_REQUEST__INIT;
  m.topic = (char *)topic;
  uv_buf_t b = uv_buf_init((char *)raw, raw_len);
  int err = fy_conn_reply(c, id, OP_ECHO, 0, &m.base, &b, raw_len ? 1 : 0, free_release, raw);
  assert_int_equal(err, 0);
  note_queue(s, c);
}

static void srv_on_frame(fy_conn *c, const fy_frame *f) {
  struct srv *s = fy_conn_data(c);
  s->frames++;
  if (s->last_iter != s->iter) {
    s->last_iter = s->iter;
    s->in_iter = 0;
  }
  if (++s->in_iter > s->max_in_iter)
    s->max_in_iter = s->in_iter;
  if (s->frames == s->hold_at)
    fy_conn_hold(c, true);
  if (s->frames == s->probe_at)
    s->reading_at_probe = fy_conn_reading(c);
  if (!fy_conn_reading(c))
    s->frames_not_reading++;
  if (f->kind != FY_FRAME_REQUEST)
    return;
  switch (f->op) {
  case OP_ECHO: {
    if (s->reply_raw_len) { /* backpressure test: a big zero-copy answer */
      uv_buf_t b = uv_buf_init((char *)s->big, (unsigned)s->reply_raw_len);
      assert_int_equal(fy_conn_reply(c, f->request_id, OP_ECHO, 0, NULL, &b, 1, srv_release, s), 0);
      note_queue(s, c);
      return;
    }
    ProtobufCMessage *m;
    assert_int_equal(fy_frame_unpack(f, &ferry__v1__get_route_request__descriptor, &m), 0);
    struct held *h = &s->held[s->nheld++];
    assert_true(s->nheld <= 1024);
    h->conn = c;
    h->id = f->request_id;
    snprintf(h->topic, sizeof h->topic, "%s", ((Ferry__V1__GetRouteRequest *)m)->topic);
    fy_pb_free(m);
    h->raw = malloc(f->raw_len + 1);
    memcpy(h->raw, f->raw, f->raw_len);
    h->raw_len = f->raw_len;
    return;
  }
  case OP_BIG: {
    s->big_requests_raw += f->raw_len;
    uv_buf_t parts[4];
    size_t per = s->big_len / s->big_parts;
    for (size_t i = 0; i < s->big_parts; i++)
      parts[i] = uv_buf_init((char *)s->big + i * per,
                             (unsigned)(i + 1 == s->big_parts ? s->big_len - i * per : per));
    assert_int_equal(fy_conn_reply(c, f->request_id, OP_BIG, 0, NULL, parts,
                                   (unsigned)s->big_parts, big_release, s),
                     0);
    return;
  }
  case OP_HOLD: {
    struct held *h = &s->held[s->nheld++];
    h->conn = c;
    h->id = f->request_id;
    h->topic[0] = 0;
    h->raw = NULL;
    h->raw_len = 0;
    return;
  }
  case OP_DROP:
    return;
  default:
    fy_conn_reply_error(c, f->request_id, f->op, FERRY__V1__STATUS__UNSUPPORTED_OP, "op %u",
                        (unsigned)f->op);
  }
}

/* Answers every held ECHO request, in a shuffled order. */
static void srv_answer_held_shuffled(struct srv *s) {
  uint32_t x = 12345;
  for (int i = s->nheld - 1; i > 0; i--) {
    x = x * 1103515245 + 12345;
    int j = (int)((x >> 8) % (uint32_t)(i + 1));
    struct held t = s->held[i];
    s->held[i] = s->held[j];
    s->held[j] = t;
  }
  for (int i = 0; i < s->nheld; i++)
    echo(s, s->held[i].conn, s->held[i].id, s->held[i].topic, s->held[i].raw,
         s->held[i].raw_len);
  s->nheld = 0;
}

static void srv_on_close(fy_conn *c, int reason) {
  struct srv *s = fy_conn_data(c);
  s->closed++;
  s->last_close_reason = reason;
  if (s->last == c)
    s->last = NULL;
}

static void srv_on_accept(fy_server *server, fy_conn *c) {
  struct srv *s = fy_server_data(server);
  s->accepted++;
  s->last = c;
}

/* Loop iterations, counted after the poll phase: the frames handled
 * between two checks were handled in one turn. */
static void on_check(uv_check_t *p) { ((struct srv *)p->data)->iter++; }

static void srv_start(uv_loop_t *loop, struct srv *s, fy_conn_cfg *cfg) {
  memset(s, 0, sizeof *s);
  s->loop = loop;
  cfg->on_frame = srv_on_frame;
  cfg->on_close = srv_on_close;
  cfg->data = s;
  assert_int_equal(fy_server_listen(loop, "127.0.0.1", 0, cfg, srv_on_accept, &s->server), 0);
  s->port = fy_server_port(s->server);
  assert_true(s->port > 0);
  uv_check_init(loop, &s->check);
  s->check.data = s;
  uv_check_start(&s->check, on_check);
}

static void srv_stop(struct srv *s) {
  for (int i = 0; i < s->nheld; i++)
    free(s->held[i].raw);
  s->nheld = 0;
  fy_server_close(s->server);
  uv_close((uv_handle_t *)&s->check, NULL);
}

/* ------------------------------------------------------------------ client */

struct cli {
  fy_conn *conn;
  bool connected;
  int connect_status;
  int connect_calls;
  bool closed;
  int close_calls;
  int close_reason;
  int pending_at_close; /* rpc calls not yet finished when on_close ran */
  int frames;           /* frames that reached on_frame (late responses) */
  int outstanding;
};

static void cli_on_connect(fy_conn *c, int status) {
  struct cli *k = fy_conn_data(c);
  k->connect_calls++;
  k->connect_status = status;
  k->connected = status == 0;
}

static void cli_on_close(fy_conn *c, int reason) {
  struct cli *k = fy_conn_data(c);
  k->closed = true;
  k->close_calls++;
  k->close_reason = reason;
  k->pending_at_close = k->outstanding;
}

static void cli_on_frame(fy_conn *c, const fy_frame *f) {
  struct cli *k = fy_conn_data(c);
  k->frames++;
}

static void cli_connect(uv_loop_t *loop, struct cli *k, const char *host, int port,
                        fy_conn_cfg *cfg) {
  memset(k, 0, sizeof *k);
  cfg->on_close = cli_on_close;
  cfg->on_frame = cli_on_frame;
  cfg->data = k;
  assert_int_equal(fy_conn_connect(loop, host, port, cfg, cli_on_connect, &k->conn), 0);
  assert_true(fy_test_run_until(loop, &k->connected, DEADLINE_MS));
  assert_true(fy_conn_is_open(k->conn));
}

static void cli_close(uv_loop_t *loop, struct cli *k) {
  if (!k->closed)
    fy_conn_close(k->conn, 0);
  assert_true(fy_test_run_until(loop, &k->closed, DEADLINE_MS));
  assert_int_equal(k->close_calls, 1);
}

/* One rpc call's expectations and outcome. */
struct call {
  struct cli *k;
  int index;
  bool done;
  int calls;
  int err;
  char want[32];
  size_t raw_len;
  const uint8_t *want_raw;
  int order; /* completion order */
};

static int completed;

static void on_call_done(fy_conn *c, int err, const fy_frame *resp, void *arg) {
  struct call *x = arg;
  x->calls++;
  x->done = true;
  x->err = err;
  x->order = completed++;
  x->k->outstanding--;
  if (err)
    return;
  assert_non_null(resp);
  assert_int_equal(resp->kind, FY_FRAME_RESPONSE);
  if (resp->op == OP_ECHO && x->want[0]) {
    ProtobufCMessage *m;
    assert_int_equal(fy_frame_unpack(resp, &ferry__v1__get_route_request__descriptor, &m), 0);
    assert_string_equal(((Ferry__V1__GetRouteRequest *)m)->topic, x->want);
    fy_pb_free(m);
    assert_int_equal(resp->raw_len, strlen(x->want));
    assert_memory_equal(resp->raw, x->want, resp->raw_len);
  }
  x->raw_len = resp->raw_len;
  if (x->want_raw) {
    assert_int_equal(memcmp(resp->raw, x->want_raw, resp->raw_len), 0);
  }
}

static int call(struct cli *k, struct call *x, uint16_t op, const char *topic, uint32_t timeout_ms) {
  memset(x, 0, sizeof *x);
  x->k = k;
  Ferry__V1__GetRouteRequest m = FERRY__V1__GET_ROUTE_REQUEST__INIT;
  m.topic = (char *)topic;
  snprintf(x->want, sizeof x->want, "%s", topic);
  uv_buf_t b = uv_buf_init((char *)topic, (unsigned)strlen(topic));
  int err = fy_rpc_call(k->conn, op, &m.base, &b, 1, timeout_ms, on_call_done, x);
  if (err == 0)
    k->outstanding++;
  return err;
}

static bool all_done(struct call *xs, int n) {
  for (int i = 0; i < n; i++)
    if (!xs[i].done)
      return false;
  return true;
}

/* Runs the loop until every call is done. */
static bool run_until_done(uv_loop_t *loop, struct call *xs, int n) {
  WAIT_FOR(loop, all_done(xs, n));
  return true;
}

/* ------------------------------------------------------- raw socket client */

struct raw {
  uv_tcp_t tcp;
  uv_connect_t creq;
  bool connected;
  bool eof;
  bool closed;
  uint8_t *buf; /* first cap bytes received */
  size_t cap, len;
  size_t total;
  char chunk[65536];
};

static void raw_on_connect(uv_connect_t *req, int status) {
  struct raw *r = req->data;
  assert_int_equal(status, 0);
  r->connected = true;
}

static void raw_connect(uv_loop_t *loop, struct raw *r, int port, size_t keep) {
  memset(r, 0, sizeof *r);
  r->cap = keep;
  r->buf = malloc(keep + 1);
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", port, &a);
  uv_tcp_init(loop, &r->tcp);
  r->tcp.data = r;
  r->creq.data = r;
  assert_int_equal(uv_tcp_connect(&r->creq, &r->tcp, (struct sockaddr *)&a, raw_on_connect), 0);
  assert_true(fy_test_run_until(loop, &r->connected, DEADLINE_MS));
}

static void raw_written(uv_write_t *w, int status) {
  free(w->data);
  free(w);
}

static void raw_send(struct raw *r, const void *bytes, size_t len) {
  uv_write_t *w = malloc(sizeof *w);
  w->data = malloc(len);
  memcpy(w->data, bytes, len);
  uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
  assert_int_equal(uv_write(w, (uv_stream_t *)&r->tcp, &b, 1, raw_written), 0);
}

static void raw_alloc(uv_handle_t *h, size_t s, uv_buf_t *b) {
  struct raw *r = h->data;
  *b = uv_buf_init(r->chunk, sizeof r->chunk);
}

static void raw_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b) {
  struct raw *r = st->data;
  if (n < 0) {
    r->eof = true;
    uv_read_stop(st);
    return;
  }
  size_t keep = r->cap - r->len < (size_t)n ? r->cap - r->len : (size_t)n;
  memcpy(r->buf + r->len, b->base, keep);
  r->len += keep;
  r->total += (size_t)n;
}

static void raw_start_reading(struct raw *r) {
  assert_int_equal(uv_read_start((uv_stream_t *)&r->tcp, raw_alloc, raw_read), 0);
}

static void raw_on_closed(uv_handle_t *h) { ((struct raw *)h->data)->closed = true; }

static void raw_close(uv_loop_t *loop, struct raw *r) {
  uv_close((uv_handle_t *)&r->tcp, raw_on_closed);
  assert_true(fy_test_run_until(loop, &r->closed, DEADLINE_MS));
  free(r->buf);
}

static void finish(uv_loop_t *loop) { assert_int_equal(fy_test_loop_finish(loop), 0); }

/* Waits until the server has paused a peer that does not read, for good:
 * the kernel takes a few MB first, and the server reads on each time the
 * queue drains to half. Stable: no frame handled for 200 ms. */
static int wait_stalled(uv_loop_t *loop, struct srv *s, size_t limit) {
  WAIT_FOR(loop, s->last && s->max_queue > limit);
  int handled = -1;
  uint64_t t0 = uv_now(loop);
  while (handled != s->frames) {
    assert_true(uv_now(loop) - t0 < DEADLINE_MS);
    handled = s->frames;
    bool never = false;
    fy_test_run_until(loop, &never, 200);
  }
  assert_false(fy_conn_reading(s->last));
  assert_true(fy_conn_write_queue_bytes(s->last) > limit / 2);
  return handled;
}

/* ------------------------------------------------------------------- tests */

/* 500 calls in flight, answered in a shuffled order; each gets its own. */
static void test_echo_out_of_order(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_loop_init(&loop);
  struct srv s;
  fy_conn_cfg scfg = {0};
  srv_start(&loop, &s, &scfg);
  struct cli k;
  fy_conn_cfg ccfg = {0};
  cli_connect(&loop, &k, "127.0.0.1", s.port, &ccfg);

  enum { N = 500 };
  static struct call xs[N];
  completed = 0;
  for (int i = 0; i < N; i++) {
    char topic[32];
    snprintf(topic, sizeof topic, "topic-%d", i);
    assert_int_equal(call(&k, &xs[i], OP_ECHO, topic, DEADLINE_MS), 0);
    xs[i].index = i;
  }
  assert_int_equal(fy_rpc_pending(k.conn), N);
  WAIT_FOR(&loop, s.nheld == N);
  srv_answer_held_shuffled(&s);
  assert_true(run_until_done(&loop, xs, N));
  int inversions = 0;
  for (int i = 0; i < N; i++) {
    assert_int_equal(xs[i].calls, 1);
    assert_int_equal(xs[i].err, 0);
    if (i && xs[i].order < xs[i - 1].order)
      inversions++;
  }
  assert_true(inversions > N / 4); /* really out of order */
  assert_int_equal(fy_rpc_pending(k.conn), 0);
  assert_int_equal(k.frames, 0);

  /* An op without a handler case gets an error response with text. */
  struct call x;
  assert_int_equal(call(&k, &x, 777, "x", DEADLINE_MS), 0);
  assert_true(run_until_done(&loop, &x, 1));
  assert_int_equal(x.err, 0);

  cli_close(&loop, &k);
  assert_int_equal(k.close_reason, 0);
  srv_stop(&s);
  finish(&loop);
}

/* A 10 MB request (copied) and a 10 MB zero-copy response in 3 pieces,
 * whose release callback runs exactly once. */
static void test_big_zero_copy(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_loop_init(&loop);
  struct srv s;
  fy_conn_cfg scfg = {0};
  srv_start(&loop, &s, &scfg);
  size_t len = 10u << 20;
  uint8_t *big = malloc(len);
  for (size_t i = 0; i < len; i++)
    big[i] = (uint8_t)(i * 31 + (i >> 12));
  s.big = big;
  s.big_len = len;
  s.big_parts = 3;
  struct cli k;
  fy_conn_cfg ccfg = {0};
  cli_connect(&loop, &k, "127.0.0.1", s.port, &ccfg);

  struct call x;
  memset(&x, 0, sizeof x);
  x.k = &k;
  x.want_raw = big;
  uv_buf_t b = uv_buf_init((char *)big, (unsigned)len);
  assert_int_equal(fy_rpc_call(k.conn, OP_BIG, NULL, &b, 1, DEADLINE_MS, on_call_done, &x), 0);
  k.outstanding++;
  assert_true(run_until_done(&loop, &x, 1));
  assert_int_equal(x.err, 0);
  assert_int_equal(x.raw_len, len);
  assert_int_equal(s.big_requests_raw, len);
  WAIT_FOR(&loop, s.big_released > 0); /* the write completes around when the answer lands */
  assert_int_equal(s.big_released, 1);
  assert_int_equal(s.bad_release_status, 0);

  /* Over the frame limit: refused at once, release never called. */
  fy_conn_cfg small = {0};
  small.frame_max_bytes = 1 << 20;
  struct cli k2;
  cli_connect(&loop, &k2, "127.0.0.1", s.port, &small);
  assert_int_equal(fy_rpc_call(k2.conn, OP_BIG, NULL, &b, 1, 1000, on_call_done, &x),
                   -FY_EFRAME_TOO_BIG);
  assert_int_equal(fy_conn_send(k2.conn, FY_FRAME_REQUEST, 1, OP_BIG, 0, NULL, &b, 1,
                                big_release, &s),
                   -FY_EFRAME_TOO_BIG);
  cli_close(&loop, &k2);
  cli_close(&loop, &k);
  srv_stop(&s);
  finish(&loop);
  assert_int_equal(s.big_released, 1);
  free(big);
}

/* A peer that sends requests and does not read: the server stops reading
 * it once its write queue passes the limit, and its queue stays bounded. */
static void test_backpressure(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_loop_init(&loop);
  struct srv s;
  fy_conn_cfg scfg = {0};
  size_t limit = 1u << 20, answer = 256u << 10;
  scfg.write_queue_max_bytes = limit;
  srv_start(&loop, &s, &scfg);
  uint8_t *big = calloc(1, answer);
  s.big = big;
  s.reply_raw_len = answer;

  enum { N = 200 };
  struct raw r;
  raw_connect(&loop, &r, s.port, 0);
  uint8_t reqs[N * FY_FRAME_HEADER_LEN];
  for (int i = 0; i < N; i++)
    fy_frame_encode_header(reqs + i * FY_FRAME_HEADER_LEN, FY_FRAME_REQUEST, 0, (uint64_t)i + 1,
                           OP_ECHO, 0, 0);
  raw_send(&r, reqs, sizeof reqs);

  int handled = wait_stalled(&loop, &s, limit);
  assert_true(handled < N);
  /* Soft limit plus at most one answer's worth of overshoot. */
  assert_true(s.max_queue <= limit + answer + 4096);

  /* The peer reads: everything flows again. */
  r.cap = 0;
  raw_start_reading(&r);
  size_t want = (size_t)N * (FY_FRAME_HEADER_LEN + answer);
  WAIT_FOR(&loop, r.total >= want && s.released == N);
  assert_int_equal(r.total, want);
  assert_int_equal(s.frames, N);
  assert_int_equal(s.bad_release_status, 0);
  assert_true(s.max_queue <= limit + answer + 4096);
  assert_true(fy_conn_reading(s.last));
  raw_close(&loop, &r);
  srv_stop(&s);
  finish(&loop);
  free(big);
}

/* Closing a connection with zero-copy answers still queued releases each
 * of them exactly once (UV_ECANCELED for those never written). */
static void test_close_releases_queued(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_loop_init(&loop);
  struct srv s;
  fy_conn_cfg scfg = {0};
  size_t limit = 1u << 20, answer = 256u << 10;
  scfg.write_queue_max_bytes = limit;
  srv_start(&loop, &s, &scfg);
  uint8_t *big = calloc(1, answer);
  s.big = big;
  s.reply_raw_len = answer;
  enum { N = 100 };
  struct raw r;
  raw_connect(&loop, &r, s.port, 0);
  uint8_t reqs[N * FY_FRAME_HEADER_LEN];
  for (int i = 0; i < N; i++)
    fy_frame_encode_header(reqs + i * FY_FRAME_HEADER_LEN, FY_FRAME_REQUEST, 0, (uint64_t)i + 1,
                           OP_ECHO, 0, 0);
  raw_send(&r, reqs, sizeof reqs);
  int sent = wait_stalled(&loop, &s, limit);
  assert_true(s.released < sent);
  fy_conn_close(s.last, 0);
  fy_conn_close(s.last, -EIO); /* idempotent */
  WAIT_FOR(&loop, s.closed == 1);
  assert_int_equal(s.released, sent);
  assert_int_equal(s.bad_release_status, UV_ECANCELED);
  assert_int_equal(s.last_close_reason, 0);
  raw_close(&loop, &r);
  srv_stop(&s);
  finish(&loop);
  assert_int_equal(s.released, sent);
  free(big);
}

/* Calls time out in deadline order; late answers go to on_frame; the
 * connection keeps working. */
static void test_rpc_timeout(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_loop_init(&loop);
  struct srv s;
  fy_conn_cfg scfg = {0};
  srv_start(&loop, &s, &scfg);
  struct cli k;
  fy_conn_cfg ccfg = {0};
  cli_connect(&loop, &k, "127.0.0.1", s.port, &ccfg);

  struct call xs[3];
  completed = 0;
  assert_int_equal(call(&k, &xs[0], OP_HOLD, "a", 90), 0);
  assert_int_equal(call(&k, &xs[1], OP_HOLD, "b", 30), 0);
  assert_int_equal(call(&k, &xs[2], OP_HOLD, "c", 60), 0);
  assert_true(run_until_done(&loop, xs, 3));
  for (int i = 0; i < 3; i++) {
    assert_int_equal(xs[i].err, -FY_ETIMEOUT);
    assert_int_equal(xs[i].calls, 1);
  }
  assert_int_equal(xs[1].order, 0);
  assert_int_equal(xs[2].order, 1);
  assert_int_equal(xs[0].order, 2);
  assert_int_equal(fy_rpc_pending(k.conn), 0);

  /* The server answers now: too late, handed to on_frame. */
  assert_int_equal(s.nheld, 3);
  for (int i = 0; i < 3; i++)
    assert_int_equal(fy_conn_reply(s.held[i].conn, s.held[i].id, OP_HOLD, 0, NULL, NULL, 0,
                                   NULL, NULL),
                     0);
  s.nheld = 0;
  struct call x;
  assert_int_equal(call(&k, &x, OP_ECHO, "after", DEADLINE_MS), 0);
  WAIT_FOR(&loop, s.nheld == 1);
  srv_answer_held_shuffled(&s);
  assert_true(run_until_done(&loop, &x, 1));
  assert_int_equal(x.err, 0);
  assert_int_equal(k.frames, 3);

  /* The pending bound. */
  fy_conn_cfg few = {0};
  few.rpc_pending_max = 4;
  struct cli k2;
  cli_connect(&loop, &k2, "127.0.0.1", s.port, &few);
  struct call ys[5];
  for (int i = 0; i < 4; i++)
    assert_int_equal(call(&k2, &ys[i], OP_DROP, "d", 20), 0);
  assert_int_equal(call(&k2, &ys[4], OP_DROP, "d", 20), -FY_EBUSY);
  assert_true(run_until_done(&loop, ys, 4));
  assert_int_equal(call(&k2, &ys[4], OP_DROP, "d", 20), 0);
  assert_true(run_until_done(&loop, ys, 5));
  cli_close(&loop, &k2);

  cli_close(&loop, &k);
  srv_stop(&s);
  finish(&loop);
}

/* The connection goes away with calls pending: each fails once with
 * -FY_ECLOSED, before on_close. Both sides: the server closing, and the
 * client closing itself. */
static void test_close_with_pending(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_loop_init(&loop);
  struct srv s;
  fy_conn_cfg scfg = {0};
  srv_start(&loop, &s, &scfg);

  for (int side = 0; side < 2; side++) {
    struct cli k;
    fy_conn_cfg ccfg = {0};
    cli_connect(&loop, &k, "127.0.0.1", s.port, &ccfg);
    enum { N = 100 };
    static struct call xs[N];
    for (int i = 0; i < N; i++)
      assert_int_equal(call(&k, &xs[i], OP_DROP, "p", DEADLINE_MS), 0);
    int want_frames = s.frames + N;
    WAIT_FOR(&loop, s.frames == want_frames);
    if (side == 0) {
      assert_non_null(s.last);
      fy_conn_close(s.last, 0);
    } else {
      fy_conn_close(k.conn, 0);
      /* Closed but not gone: calls fail from the loop, not from here. */
      assert_int_equal(k.outstanding, N);
      struct call late;
      assert_int_equal(call(&k, &late, OP_ECHO, "late", 100), -FY_ECLOSED);
    }
    assert_true(fy_test_run_until(&loop, &k.closed, DEADLINE_MS));
    assert_int_equal(k.pending_at_close, 0);
    assert_int_equal(k.close_calls, 1);
    assert_int_equal(k.close_reason, side == 0 ? UV_EOF : 0);
    for (int i = 0; i < N; i++) {
      assert_int_equal(xs[i].calls, 1);
      assert_int_equal(xs[i].err, -FY_ECLOSED);
    }
  }
  srv_stop(&s);
  finish(&loop);
  assert_int_equal(s.closed, 2);
}

/* Garbage, a wrong magic and an oversized frame each close their own
 * connection (the oversized request after a BAD_REQUEST answer), while
 * another client keeps being served. */
static void test_bad_input(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_loop_init(&loop);
  struct srv s;
  fy_conn_cfg scfg = {0};
  scfg.frame_max_bytes = 1 << 20;
  srv_start(&loop, &s, &scfg);
  struct cli good;
  fy_conn_cfg ccfg = {0};
  cli_connect(&loop, &good, "127.0.0.1", s.port, &ccfg);

  uint8_t oversize[FY_FRAME_HEADER_LEN];
  fy_frame_encode_header(oversize, FY_FRAME_REQUEST, (1 << 20) + 1, 77, OP_ECHO, 0, 0);
  uint8_t bad_version[FY_FRAME_HEADER_LEN];
  fy_frame_encode_header(bad_version, FY_FRAME_REQUEST, 0, 78, OP_ECHO, 0, 0);
  bad_version[2] = 9;
  uint8_t bad_kind[FY_FRAME_HEADER_LEN];
  fy_frame_encode_header(bad_kind, FY_FRAME_REQUEST, 0, 79, OP_ECHO, 0, 0);
  bad_kind[3] = 7;
  uint8_t bad_hlen[FY_FRAME_HEADER_LEN];
  fy_frame_encode_header(bad_hlen, FY_FRAME_REQUEST, 4, 80, OP_ECHO, 0, 0);
  bad_hlen[23] = 5;
  struct {
    const void *bytes;
    size_t len;
    uint64_t answer_id; /* 0: closed without an answer */
  } cases[] = {
      {"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27, 0},
      {"\x00\x00\x00\x10\x00\x00\x00\x08garbage!", 16, 0},
      {"FX\x01\x00\x00\x00\x00\x00", 8, 0},
      {oversize, sizeof oversize, 77},
      {bad_version, sizeof bad_version, 78},
      {bad_kind, sizeof bad_kind, 0},
      {bad_hlen, sizeof bad_hlen, 80},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    struct raw r;
    raw_connect(&loop, &r, s.port, 4096);
    raw_start_reading(&r);
    raw_send(&r, cases[i].bytes, cases[i].len);
    /* More input after the bad frame does not matter. */
    raw_send(&r, "trailing bytes", 14);
    assert_true(fy_test_run_until(&loop, &r.eof, DEADLINE_MS));
    if (cases[i].answer_id) {
      fy_frame f;
      assert_true(fy_frame_parse(r.buf, r.len, 1 << 20, &f, NULL) > 0);
      assert_int_equal(f.kind, FY_FRAME_RESPONSE);
      assert_int_equal(f.request_id, cases[i].answer_id);
      assert_int_equal(f.status, FERRY__V1__STATUS__BAD_REQUEST);
      char text[128];
      assert_int_equal(fy_frame_error_text(&f, text, sizeof text), 0);
      assert_true(strlen(text) > 0);
    } else {
      assert_int_equal(r.len, 0);
    }
    raw_close(&loop, &r);

    /* The good client is still served. */
    struct call x;
    assert_int_equal(call(&good, &x, OP_ECHO, "still", DEADLINE_MS), 0);
    WAIT_FOR(&loop, s.nheld == 1);
    srv_answer_held_shuffled(&s);
    assert_true(run_until_done(&loop, &x, 1));
    assert_int_equal(x.err, 0);
  }
  assert_int_equal(fy_server_conn_count(s.server), 1);
  cli_close(&loop, &good);
  srv_stop(&s);
  finish(&loop);
}

/* The foreign hook: "length-prefixed" messages, consumed whole, echoed
 * with fy_conn_write. */
static size_t foreign_echo(fy_conn *c, const uint8_t *bytes, size_t len) {
  if (len < 4)
    return 0;
  size_t n = (size_t)bytes[0] << 24 | (size_t)bytes[1] << 16 | (size_t)bytes[2] << 8 | bytes[3];
  if (len < 4 + n)
    return 0;
  uint8_t *copy = malloc(4 + n);
  memcpy(copy, bytes, 4 + n);
  uv_buf_t b = uv_buf_init((char *)copy, (unsigned)(4 + n));
  assert_int_equal(fy_conn_write(c, &b, 1, free_release, copy), 0);
  return 4 + n; /* one message per call: the rest comes next turn */
}

static void test_foreign_protocol(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_loop_init(&loop);
  struct srv s;
  fy_conn_cfg scfg = {0};
  scfg.on_foreign = foreign_echo;
  srv_start(&loop, &s, &scfg);
  struct raw r;
  raw_connect(&loop, &r, s.port, 4096);
  raw_start_reading(&r);
  static const uint8_t msgs[] = {0, 0, 0, 3, 'a', 'b', 'c', 0, 0, 0, 1, 'd', 0, 0, 0, 2, 'e'};
  raw_send(&r, msgs, 9); /* a message and a half */
  WAIT_FOR(&loop, r.total >= 7);
  raw_send(&r, msgs + 9, sizeof msgs - 9); /* ends in half a message */
  raw_send(&r, "f", 1);
  WAIT_FOR(&loop, r.total >= sizeof msgs + 1);
  assert_int_equal(r.total, sizeof msgs + 1);
  assert_memory_equal(r.buf, msgs, sizeof msgs);
  assert_int_equal(r.buf[sizeof msgs], 'f');
  assert_int_equal(s.frames, 0);
  raw_close(&loop, &r);
  srv_stop(&s);
  finish(&loop);
}

/* Idle connections close (-ETIMEDOUT on the server side); a refused
 * connect and a name lookup report through the connect callback. */
static void test_idle_and_connect(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_loop_init(&loop);
  struct srv s;
  fy_conn_cfg scfg = {0};
  scfg.idle_timeout_ms = 50;
  srv_start(&loop, &s, &scfg);
  struct cli k;
  fy_conn_cfg ccfg = {0};
  cli_connect(&loop, &k, "localhost", s.port, &ccfg);
  assert_true(fy_test_run_until(&loop, &k.closed, DEADLINE_MS));
  assert_int_equal(k.close_reason, UV_EOF);
  assert_int_equal(s.closed, 1);
  assert_int_equal(s.last_close_reason, -ETIMEDOUT);

  /* Nothing listens on the closed server's port. */
  int port = s.port;
  srv_stop(&s);
  fy_conn_cfg c2 = {0};
  struct cli r;
  memset(&r, 0, sizeof r);
  c2.on_close = cli_on_close;
  c2.data = &r;
  assert_int_equal(fy_conn_connect(&loop, "127.0.0.1", port, &c2, cli_on_connect, &r.conn), 0);
  assert_true(fy_test_run_until(&loop, &r.closed, DEADLINE_MS));
  assert_int_equal(r.connect_calls, 1);
  assert_int_equal(r.connect_status, UV_ECONNREFUSED);
  assert_int_equal(r.close_calls, 1);

  /* Closing while connecting: the connect callback says UV_ECANCELED. */
  memset(&r, 0, sizeof r);
  assert_int_equal(fy_conn_connect(&loop, "localhost", port, &c2, cli_on_connect, &r.conn), 0);
  assert_int_equal(fy_rpc_call(r.conn, OP_ECHO, NULL, NULL, 0, 100, on_call_done, NULL),
                   -ENOTCONN);
  fy_conn_close(r.conn, 0);
  assert_true(fy_test_run_until(&loop, &r.closed, DEADLINE_MS));
  assert_int_equal(r.connect_calls, 1);
  assert_int_equal(r.connect_status, UV_ECANCELED);
  assert_int_equal(r.close_calls, 1);
  finish(&loop);
}

/* Writes n one-way ECHO frames with a 3-byte raw section into buf; returns
 * their length. */
static size_t oneway_frames_of(uint8_t *buf, int n, uint32_t len) {
  size_t off = 0;
  for (int i = 0; i < n; i++) {
    fy_frame_encode_header(buf + off, FY_FRAME_ONEWAY, len, 0, OP_ECHO, 0, 0);
    memset(buf + off + FY_FRAME_HEADER_LEN, 'a' + i % 26, len);
    off += FY_FRAME_HEADER_LEN + len;
  }
  return off;
}

static size_t oneway_frames(uint8_t *buf, int n) { return oneway_frames_of(buf, n, 3); }

/* A raw client sends n one-way frames of len payload bytes at once to a
 * server that handles 8 frames per callback (probe_at: see struct srv);
 * returns once all have arrived, with the server's record in t->s. The
 * test checks what it needs, then calls turn_run_end. */
struct turn_run {
  uv_loop_t loop;
  struct srv s;
  struct raw r;
};

static void turn_run_start(struct turn_run *t, int n, uint32_t len, int probe_at) {
  uv_loop_init(&t->loop);
  fy_conn_cfg scfg = {0};
  scfg.frames_per_turn = 8;
  srv_start(&t->loop, &t->s, &scfg);
  t->s.probe_at = probe_at;
  uint8_t *frames = malloc((size_t)n * (FY_FRAME_HEADER_LEN + len));
  assert_non_null(frames);
  size_t off = oneway_frames_of(frames, n, len);
  raw_connect(&t->loop, &t->r, t->s.port, 0);
  raw_send(&t->r, frames, off); /* copies */
  free(frames);
  WAIT_FOR(&t->loop, t->s.frames == n);
  assert_int_equal(t->s.closed, 0);
}

static void turn_run_end(struct turn_run *t) {
  raw_close(&t->loop, &t->r);
  srv_stop(&t->s);
  finish(&t->loop);
}

/* 1000 pipelined one-way frames: at most frames_per_turn handled per
 * callback, so at most twice that per loop iteration (a turn, then a
 * read); all of them in the end. */
static void test_frames_per_turn(void **state) {
  (void)state;
  struct turn_run t;
  turn_run_start(&t, 1000, 3, 0);
  assert_true(t.s.max_in_iter >= 8);
  assert_true(t.s.max_in_iter <= 16);
  assert_true(t.s.iter >= 1000 / 16);
  turn_run_end(&t);
}

/* Frames left over from a read do not stop reading while the buffer has
 * room: 100 small frames arrive in one read, 8 are handled per callback,
 * and when the first turn handles frame 9 the connection is still reading
 * (a read stop and start cost two epoll_ctl calls each time). */
static void test_reads_on_with_frames_left(void **state) {
  (void)state;
  struct turn_run t;
  turn_run_start(&t, 100, 3, 9); /* a few KiB: one read on the server side */
  assert_true(t.s.reading_at_probe);
  assert_true(fy_conn_reading(t.s.last));
  turn_run_end(&t);
}

/* Reading on with frames left stops once the buffer is nearly full of
 * them, and resumes as they are handled: half a megabyte of small frames
 * sent at once, all arrive and the connection is never closed for an
 * overfull buffer. */
static void test_full_buffer_stops_reading(void **state) {
  (void)state;
  struct turn_run t;
  turn_run_start(&t, 20000, 3, 0);
  assert_true(t.s.frames_not_reading > 0); /* the buffer filled and reading stopped */
  assert_true(t.s.max_in_iter <= 16);
  assert_true(fy_conn_reading(t.s.last));
  turn_run_end(&t);
}

/* Frames big enough that handling a turn's worth frees more than the room
 * reading on needs: a read that fills the buffer makes libuv read again at
 * once, and that second read must wait for the next turn, or one peer
 * would get up to 32 reads' worth of frames handled in one iteration. */
static void test_one_read_per_turn(void **state) {
  (void)state;
  struct turn_run t;
  turn_run_start(&t, 4000, 1000, 0);
  assert_true(t.s.max_in_iter >= 8);
  assert_true(t.s.max_in_iter <= 16);
  turn_run_end(&t);
}

/* fy_conn_hold from on_frame stops delivery at once, frames already read
 * included, and reading; releasing delivers the rest. */
static void test_hold(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_loop_init(&loop);
  struct srv s;
  fy_conn_cfg scfg = {0};
  srv_start(&loop, &s, &scfg);
  s.hold_at = 10;
  enum { N = 100 };
  static uint8_t frames[N * (FY_FRAME_HEADER_LEN + 3)];
  size_t off = oneway_frames(frames, N);
  struct raw r;
  raw_connect(&loop, &r, s.port, 0);
  raw_send(&r, frames, off); /* a few KiB: likely one read on the server side */
  WAIT_FOR(&loop, s.frames >= 10);
  bool never = false;
  fy_test_run_until(&loop, &never, 50); /* whatever would come, comes */
  assert_int_equal(s.frames, 10);
  assert_false(fy_conn_reading(s.last));
  fy_conn_hold(s.last, true); /* idempotent */
  fy_conn_hold(s.last, false);
  WAIT_FOR(&loop, s.frames == N);
  assert_true(fy_conn_reading(s.last));
  raw_close(&loop, &r);
  srv_stop(&s);
  finish(&loop);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_echo_out_of_order),
      cmocka_unit_test(test_big_zero_copy),
      cmocka_unit_test(test_backpressure),
      cmocka_unit_test(test_close_releases_queued),
      cmocka_unit_test(test_rpc_timeout),
      cmocka_unit_test(test_close_with_pending),
      cmocka_unit_test(test_bad_input),
      cmocka_unit_test(test_foreign_protocol),
      cmocka_unit_test(test_idle_and_connect),
      cmocka_unit_test(test_frames_per_turn),
      cmocka_unit_test(test_reads_on_with_frames_left),
      cmocka_unit_test(test_full_buffer_stops_reading),
      cmocka_unit_test(test_one_read_per_turn),
      cmocka_unit_test(test_hold),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
