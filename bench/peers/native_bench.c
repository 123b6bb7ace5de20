/*
 * native_bench: a producer that speaks Ferry's native protocol itself, one
 * thread and one socket, measured like the peer clients (peer_run.h). It is
 * ferry-bench without the client library: no name server, no second
 * thread, no retries; SendRequests are encoded straight into the socket's
 * buffer. bench/floor.sh points it at a broker, to time the broker without
 * the client library's share, and at floor_server, to time the machine.
 *
 * Message k goes to queue k % --queues of --topic with a 32-hex-digit
 * UNIQ_KEY of its own (the client library sets one too, and the broker
 * indexes it). A response counts as an acknowledgement when its status is
 * OK; its request id names the message (k + 1).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/peers/peer_run.h"
#include "bench/peers/peer_sock.h"
#include "ferry.pb-c.h"
#include "net/frame.h"

#define IN_MAX (4u << 20) /* unparsed input held, at most */

static const char usage[] =
    "usage: native_bench --port P [--host H] [--topic T=Bench] [--queues N=8]\n"
    "         [--size B=128] [--inflight N=1024] [--duration-s S=10] [--warmup-s S=1]\n"
    "         [--rate MSGS_PER_S=0] [--tick-us US=0] [--series-ms MS=0]\n";

struct cfg {
  const char *topic;
  uint32_t queues;
};

static int extra(const char *name, const char *val, void *arg) {
  struct cfg *c = arg;
  if (strcmp(name, "--topic") == 0) {
    c->topic = val;
  } else if (strcmp(name, "--queues") == 0) {
    char *end;
    unsigned long n = strtoul(val, &end, 10);
    if (*end || n < 1 || n > 1024)
      return -1;
    c->queues = (uint32_t)n;
  } else {
    return -1;
  }
  return 0;
}

struct client {
  struct pr_run run;
  struct cfg cfg;
  int fd;
  struct ps_buf out;
  char *body;
  uint64_t key_salt; /* makes this run's UNIQ_KEYs differ from earlier runs' */
  uint8_t *in;
  size_t in_len;
};

static int send_one(struct client *c, uint64_t now) {
  uint64_t k = c->run.sent;
  char uniq[33];
  snprintf(uniq, sizeof uniq, "%016" PRIx64 "%016" PRIx64, c->key_salt, k);
  pr_body(c->body, c->run.o.size, k);

  Ferry__V1__SendMessage m = FERRY__V1__SEND_MESSAGE__INIT;
  m.body_len = c->run.o.size;
  m.uniq_key = uniq;
  Ferry__V1__SendMessage *ms[1] = {&m};
  Ferry__V1__SendRequest rq = FERRY__V1__SEND_REQUEST__INIT;
  rq.producer_group = "native_bench";
  rq.topic = (char *)c->cfg.topic;
  rq.queue_id = (int32_t)(k % c->cfg.queues);
  rq.n_messages = 1;
  rq.messages = ms;

  uint8_t frame[FY_FRAME_HEADER_LEN + 256];
  size_t hl = ferry__v1__send_request__get_packed_size(&rq);
  if (hl > sizeof frame - FY_FRAME_HEADER_LEN)
    return -EMSGSIZE; /* only a very long --topic gets here */
  ferry__v1__send_request__pack(&rq, frame + FY_FRAME_HEADER_LEN);
  fy_frame_encode_header(frame, FY_FRAME_REQUEST, (uint32_t)(hl + c->run.o.size), k + 1,
                         FERRY__V1__OP__OP_SEND, 0, (uint32_t)hl);
  int rc = ps_append(&c->out, frame, FY_FRAME_HEADER_LEN + hl);
  if (!rc)
    rc = ps_append(&c->out, c->body, c->run.o.size);
  if (rc)
    return rc;
  pr_sent(&c->run, now);
  return 0;
}

static int fill(void *arg) {
  struct client *c = arg;
  uint64_t now = pr_now_ns();
  while (c->out.len < PS_OUT_MAX / 2 && pr_can_send(&c->run, now) == 0) {
    int rc = send_one(c, now);
    if (rc)
      return rc;
  }
  return 0;
}

static int on_input(void *arg) {
  struct client *c = arg;
  for (int turns = 0; turns < 64; turns++) {
    ssize_t n = read(c->fd, c->in + c->in_len, IN_MAX - c->in_len);
    if (n == 0)
      return -ECONNRESET;
    if (n < 0)
      return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -errno;
    c->in_len += (size_t)n;
    uint64_t now = pr_now_ns();
    size_t pos = 0;
    for (;;) {
      fy_frame f;
      ssize_t r = fy_frame_parse(c->in + pos, c->in_len - pos, IN_MAX - FY_FRAME_HEADER_LEN, &f,
                                 NULL);
      if (r < 0) {
        fprintf(stderr, "native_bench: bad frame from the server (%zd)\n", r);
        return -EPROTO;
      }
      if (r == 0)
        break;
      if (f.kind == FY_FRAME_RESPONSE && f.request_id > 0) {
        if (f.status != 0 && c->run.errors < 5) { /* the first few say why */
          Ferry__V1__ErrorResponse *e =
              ferry__v1__error_response__unpack(NULL, f.header_len, f.header);
          fprintf(stderr, "native_bench: message %" PRIu64 ": status %u: %s\n",
                  f.request_id - 1, f.status, e && e->message ? e->message : "");
          if (e)
            ferry__v1__error_response__free_unpacked(e, NULL);
        }
        pr_acked(&c->run, f.request_id - 1, f.status == 0, now);
      }
      pos += (size_t)r;
    }
    memmove(c->in, c->in + pos, c->in_len - pos);
    c->in_len -= pos;
  }
  return 0;
}

int main(int argc, char **argv) {
  static struct client c = {.cfg = {.topic = "Bench", .queues = 8}, .fd = -1};
  struct pr_opts o;
  if (pr_parse(argc, argv, &o, NULL, extra, &c.cfg, usage))
    return 2;
  if (pr_init(&c.run, &o))
    return 1;
  c.body = malloc(o.size);
  c.in = malloc(IN_MAX);
  if (!c.body || !c.in)
    return 1;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  c.key_salt = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
  c.fd = ps_connect(o.host, o.port);
  if (c.fd < 0) {
    fprintf(stderr, "native_bench: connect %s:%d: %s\n", o.host, o.port, strerror(-c.fd));
    return 1;
  }
  pr_start(&c.run);
  int rc = ps_run(&c.run, c.fd, &c.out, fill, on_input, &c);
  if (rc)
    fprintf(stderr, "native_bench: %s\n", strerror(-rc));
  int result = pr_report(&c.run, "native_bench");
  close(c.fd);
  ps_free(&c.out);
  free(c.body);
  free(c.in);
  pr_free(&c.run);
  return rc ? 1 : result;
}
