/*
 * nats_bench: a NATS JetStream producer for bench/compare.sh, measured like
 * ferry-bench (bench/peers/peer_run.h).
 *
 * Why it looks like this: Debian ships nats-server but no C client, and
 * NATS's client protocol is a few text lines, so this speaks it over a
 * plain socket: CONNECT, SUB to a wildcard reply inbox, then for message k
 * `PUB <subject> _INBOX.fb.<k> <size>`; JetStream stores the message in the
 * stream bound to the subject and answers on the reply subject with
 * {"stream":..,"seq":..} (or {"error":..}), which is the acknowledgement.
 * Acknowledgements are matched by the k in the reply subject, so their order
 * does not matter. --create-stream makes the stream first through the
 * JetStream API ($JS.API.STREAM.CREATE.<name>, file storage, one replica).
 * Server PINGs are answered; -ERR ends the run.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/peers/peer_run.h"
#include "bench/peers/peer_sock.h"

#define IN_MAX (4u * 1024 * 1024) /* unparsed input held, at most */
#define PAYLOAD_MAX 65536u        /* a reply larger than this is a protocol error */
#define INBOX "_INBOX.fb."
#define CREATE_INBOX INBOX "create"

static const char usage[] =
    "usage: nats_bench --port P [--host H] [--subject S=bench] [--create-stream NAME]\n"
    "         [--size B=128] [--inflight N=1024] [--duration-s S=10] [--warmup-s S=1]\n"
    "         [--rate MSGS_PER_S=0] [--tick-us US=0] [--series-ms MS=0]\n";

struct cfg {
  const char *subject;
  const char *create_stream;
};

static int extra(const char *name, const char *val, void *arg) {
  struct cfg *c = arg;
  if (strcmp(name, "--subject") == 0)
    c->subject = val;
  else if (strcmp(name, "--create-stream") == 0)
    c->create_stream = val;
  else
    return -1;
  return 0;
}

struct client {
  struct pr_run run;
  struct cfg cfg;
  int fd;
  struct ps_buf out;
  char *in;
  size_t in_len;
  char *body;
  int created; /* 0 waiting, 1 created, -1 failed */
};

static void on_msg(struct client *c, const char *subject, const char *payload, size_t n) {
  bool err = memmem(payload, n, "\"error\"", 7) != NULL;
  if (strcmp(subject, CREATE_INBOX) == 0) {
    /* 10058: a stream of that name exists already (with the same config). */
    c->created = !err || memmem(payload, n, "10058", 5) ? 1 : -1;
    if (c->created < 0)
      fprintf(stderr, "nats_bench: stream create: %.*s\n", (int)n, payload);
    return;
  }
  if (strncmp(subject, INBOX, sizeof INBOX - 1) != 0)
    return;
  char *end;
  uint64_t k = strtoull(subject + sizeof INBOX - 1, &end, 10);
  if (*end)
    return;
  if (err)
    fprintf(stderr, "nats_bench: negative ack: %.*s\n", (int)n, payload);
  pr_acked(&c->run, k, !err, pr_now_ns());
}

/* Parses complete lines (and MSG payloads) from c->in; returns 0, or a
 * negative errno on -ERR or malformed input. */
static int parse(struct client *c) {
  size_t off = 0;
  int rc = 0;
  while (off < c->in_len) {
    char *line = c->in + off;
    char *eol = memmem(line, c->in_len - off, "\r\n", 2);
    if (!eol)
      break;
    size_t line_len = (size_t)(eol - line);
    if (line_len >= 4 && strncmp(line, "MSG ", 4) == 0) {
      char subject[256], a[64], b[64];
      char tmp[512];
      if (line_len >= sizeof tmp) {
        rc = -EPROTO;
        break;
      }
      memcpy(tmp, line, line_len);
      tmp[line_len] = 0;
      /* MSG <subject> <sid> [reply-to] <#bytes> */
      char c4[64] = "";
      int got = sscanf(tmp, "MSG %255s %63s %63s %63s", subject, a, b, c4);
      const char *len_s = got == 4 ? c4 : b;
      if (got < 3) {
        rc = -EPROTO;
        break;
      }
      unsigned long n = strtoul(len_s, NULL, 10);
      if (n > PAYLOAD_MAX) {
        rc = -EPROTO;
        break;
      }
      size_t need = line_len + 2 + n + 2;
      if (c->in_len - off < need)
        break; /* the payload is not all here yet */
      on_msg(c, subject, line + line_len + 2, n);
      off += need;
      continue;
    }
    if (line_len >= 4 && strncmp(line, "PING", 4) == 0) {
      if ((rc = ps_append(&c->out, "PONG\r\n", 6)))
        break;
    } else if (line_len >= 4 && strncmp(line, "-ERR", 4) == 0) {
      fprintf(stderr, "nats_bench: server: %.*s\n", (int)line_len, line);
      rc = -EPROTO;
      off += line_len + 2;
      break;
    }
    /* INFO, +OK, PONG: nothing to do. */
    off += line_len + 2;
  }
  memmove(c->in, c->in + off, c->in_len - off);
  c->in_len -= off;
  return rc;
}

static int read_input(struct client *c) {
  for (int turns = 0; turns < 64; turns++) {
    if (c->in_len == IN_MAX)
      return -EPROTO; /* a line longer than anything NATS sends */
    ssize_t n = read(c->fd, c->in + c->in_len, IN_MAX - c->in_len);
    if (n == 0)
      return -ECONNRESET;
    if (n < 0)
      return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -errno;
    c->in_len += (size_t)n;
    int rc = parse(c);
    if (rc)
      return rc;
  }
  return 0;
}

static int fill(struct client *c) {
  uint64_t now = pr_now_ns();
  char head[320];
  while (c->out.len < PS_OUT_MAX / 2 && pr_can_send(&c->run, now) == 0) {
    int n = snprintf(head, sizeof head, "PUB %s " INBOX "%" PRIu64 " %u\r\n", c->cfg.subject,
                     c->run.sent, c->run.o.size);
    pr_body(c->body, c->run.o.size, c->run.sent);
    int rc;
    if ((rc = ps_append(&c->out, head, (size_t)n)) ||
        (rc = ps_append(&c->out, c->body, c->run.o.size)) ||
        (rc = ps_append(&c->out, "\r\n", 2)))
      return rc;
    pr_sent(&c->run, now);
  }
  return 0;
}

/* Runs the socket until cond(c) holds or timeout_ms passes (setup only). */
static int pump_until(struct client *c, int (*cond)(struct client *), int timeout_ms) {
  uint64_t deadline = pr_now_ns() + (uint64_t)timeout_ms * 1000000u;
  while (!cond(c)) {
    if (pr_now_ns() > deadline)
      return -ETIMEDOUT;
    int rc = ps_flush(c->fd, &c->out);
    if (rc)
      return rc;
    struct pollfd p = {.fd = c->fd, .events = POLLIN | (c->out.len ? POLLOUT : 0)};
    if (poll(&p, 1, 50) > 0 && (rc = read_input(c)))
      return rc;
  }
  return 0;
}

static int created(struct client *c) { return c->created != 0; }

static int setup(struct client *c) {
  char buf[1024];
  int n = snprintf(buf, sizeof buf,
                   "CONNECT {\"verbose\":false,\"pedantic\":false,\"lang\":\"c\","
                   "\"version\":\"0\",\"protocol\":1,\"echo\":false}\r\n"
                   "SUB " INBOX "* 1\r\n");
  int rc = ps_append(&c->out, buf, (size_t)n);
  if (rc || !c->cfg.create_stream)
    return rc;
  char json[512];
  int jn = snprintf(json, sizeof json,
                    "{\"name\":\"%s\",\"subjects\":[\"%s\"],\"storage\":\"file\","
                    "\"num_replicas\":1,\"retention\":\"limits\",\"discard\":\"old\"}",
                    c->cfg.create_stream, c->cfg.subject);
  n = snprintf(buf, sizeof buf, "PUB $JS.API.STREAM.CREATE.%s " CREATE_INBOX " %d\r\n%s\r\n",
               c->cfg.create_stream, jn, json);
  if ((rc = ps_append(&c->out, buf, (size_t)n)))
    return rc;
  if ((rc = pump_until(c, created, 10000)))
    return rc;
  return c->created > 0 ? 0 : -EPROTO;
}

static int fill_cb(void *arg) { return fill(arg); }
static int input_cb(void *arg) { return read_input(arg); }

int main(int argc, char **argv) {
  struct client c = {.cfg = {.subject = "bench"}, .fd = -1};
  struct pr_opts o;
  if (pr_parse(argc, argv, &o, NULL, extra, &c.cfg, usage))
    return 2;
  if (pr_init(&c.run, &o))
    return 1;
  c.in = malloc(IN_MAX);
  c.body = malloc(o.size);
  if (!c.in || !c.body)
    return 1;
  c.fd = ps_connect(o.host, o.port);
  if (c.fd < 0) {
    fprintf(stderr, "nats_bench: connect %s:%d: %s\n", o.host, o.port, strerror(-c.fd));
    return 1;
  }
  int rc = setup(&c);
  if (rc) {
    fprintf(stderr, "nats_bench: setup: %s\n", strerror(-rc));
    return 1;
  }
  pr_start(&c.run);
  rc = ps_run(&c.run, c.fd, &c.out, fill_cb, input_cb, &c);
  if (rc)
    fprintf(stderr, "nats_bench: %s\n", strerror(-rc));
  int result = pr_report(&c.run, "nats_bench");
  close(c.fd);
  ps_free(&c.out);
  free(c.in);
  free(c.body);
  pr_free(&c.run);
  return rc ? 1 : result;
}
