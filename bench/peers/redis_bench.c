/*
 * redis_bench: a Redis 7 streams producer for bench/compare.sh, measured
 * like ferry-bench (bench/peers/peer_run.h) so the two sit in one table.
 *
 * Why it looks like this: Redis answers a pipelined connection in order, so
 * one connection with --inflight XADDs outstanding is Redis's own idea of
 * many concurrent producers (it group-commits its AOF once per event-loop
 * turn under `appendfsync always`). Commands are formatted by hiredis and
 * replies parsed by hiredis's reader; the socket is ours (poll), so an
 * open-loop schedule (--rate) keeps sending while replies are outstanding.
 *
 * With --wait, every batch of at most --batch XADDs (fewer when nothing more
 * is due or the window is full) is followed by `WAIT 1 0`; a message counts
 * as acknowledged when its batch's WAIT reports one replica, which is
 * Redis's synchronous replication. Without --wait a message is acknowledged
 * by its XADD reply.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "bench/peers/peer_run.h"
#include "bench/peers/peer_sock.h"

static const char usage[] =
    "usage: redis_bench --port P [--host H] [--stream KEY=bench] [--size B=128]\n"
    "         [--inflight N=1024] [--batch N=1] [--wait] [--duration-s S=10]\n"
    "         [--warmup-s S=1] [--rate MSGS_PER_S=0] [--tick-us US=0]\n"
    "         [--series-ms MS=0]\n"
    "  --wait: send WAIT 1 0 after each batch of at most --batch XADDs\n";

struct cfg {
  const char *stream;
  bool wait;
};

static int extra(const char *name, const char *val, void *arg) {
  struct cfg *c = arg;
  if (strcmp(name, "--stream") == 0)
    c->stream = val;
  else if (strcmp(name, "--wait") == 0)
    c->wait = true;
  else
    return -1;
  return 0;
}

/* A reply the server owes us, in order: one XADD's or one batch's WAIT. */
struct owed {
  uint64_t first; /* message number (the batch's first for WAIT) */
  uint32_t n;     /* 0 for XADD, messages covered for WAIT */
  bool failed;    /* WAIT: an XADD of the batch failed */
};

struct client {
  struct pr_run run;
  struct cfg cfg;
  int fd;
  struct ps_buf out;
  redisReader *reader;
  struct owed *owed; /* ring of 2 * inflight + 1 entries */
  size_t owed_cap, owed_head, owed_len;
  uint64_t batch_first;
  uint32_t batch_n;
  bool batch_failed_pending;
  char *body;
};

static int owe(struct client *c, struct owed o) {
  if (c->owed_len == c->owed_cap)
    return -ENOBUFS;
  c->owed[(c->owed_head + c->owed_len++) % c->owed_cap] = o;
  return 0;
}

static int send_xadd(struct client *c, uint64_t now) {
  const char *argv[] = {"XADD", c->cfg.stream, "*", "body", c->body};
  size_t lens[] = {4, strlen(c->cfg.stream), 1, 4, c->run.o.size};
  pr_body(c->body, c->run.o.size, c->run.sent);
  char *cmd;
  int len = redisFormatCommandArgv(&cmd, 5, argv, lens);
  if (len < 0)
    return -ENOMEM;
  int rc = ps_append(&c->out, cmd, (size_t)len);
  redisFreeCommand(cmd);
  if (rc)
    return rc;
  uint64_t k = pr_sent(&c->run, now);
  if (!c->cfg.wait)
    return owe(c, (struct owed){.first = k});
  if (c->batch_n == 0)
    c->batch_first = k;
  c->batch_n++;
  return owe(c, (struct owed){.first = k});
}

static int send_wait(struct client *c) {
  static const char cmd[] = "*3\r\n$4\r\nWAIT\r\n$1\r\n1\r\n$1\r\n0\r\n";
  int rc = ps_append(&c->out, cmd, sizeof cmd - 1);
  if (rc)
    return rc;
  rc = owe(c, (struct owed){.first = c->batch_first, .n = c->batch_n});
  c->batch_n = 0;
  return rc;
}

static int fill(struct client *c) {
  uint64_t now = pr_now_ns();
  while (c->out.len < PS_OUT_MAX / 2 && pr_can_send(&c->run, now) == 0) {
    int rc = send_xadd(c, now);
    if (rc)
      return rc;
    if (c->cfg.wait && c->batch_n >= c->run.o.batch && (rc = send_wait(c)))
      return rc;
  }
  if (c->cfg.wait && c->batch_n > 0)
    return send_wait(c); /* nothing more is due now: close the batch */
  return 0;
}

static void on_reply(struct client *c, redisReply *r) {
  uint64_t now = pr_now_ns();
  if (c->owed_len == 0) {
    fprintf(stderr, "redis_bench: unexpected reply (type %d)\n", r->type);
    return;
  }
  struct owed *o = &c->owed[c->owed_head];
  c->owed_head = (c->owed_head + 1) % c->owed_cap;
  c->owed_len--;
  bool err = r->type == REDIS_REPLY_ERROR;
  if (err)
    fprintf(stderr, "redis_bench: error reply: %.*s\n", (int)r->len, r->str);
  if (!c->cfg.wait) {
    pr_acked(&c->run, o->first, !err, now);
    return;
  }
  if (o->n == 0) { /* an XADD inside a batch: its WAIT acknowledges it */
    if (err)
      c->batch_failed_pending = true;
    return;
  }
  bool ok = !err && !c->batch_failed_pending && r->type == REDIS_REPLY_INTEGER && r->integer >= 1;
  c->batch_failed_pending = false;
  for (uint32_t i = 0; i < o->n; i++)
    pr_acked(&c->run, o->first + i, ok, now);
}

static int read_replies(struct client *c) {
  char buf[65536];
  for (int turns = 0; turns < 64; turns++) {
    ssize_t n = read(c->fd, buf, sizeof buf);
    if (n == 0)
      return -ECONNRESET;
    if (n < 0)
      return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : errno == EINTR ? 0 : -errno;
    if (redisReaderFeed(c->reader, buf, (size_t)n) != REDIS_OK)
      return -EPROTO;
    for (;;) {
      void *reply = NULL;
      if (redisReaderGetReply(c->reader, &reply) != REDIS_OK)
        return -EPROTO;
      if (!reply)
        break;
      on_reply(c, reply);
      freeReplyObject(reply);
    }
  }
  return 0;
}

static int fill_cb(void *arg) { return fill(arg); }
static int input_cb(void *arg) { return read_replies(arg); }

int main(int argc, char **argv) {
  struct client c = {.cfg = {.stream = "bench"}, .fd = -1};
  struct pr_opts o;
  static const char *const flags[] = {"--wait", NULL};
  if (pr_parse(argc, argv, &o, flags, extra, &c.cfg, usage))
    return 2;
  if (pr_init(&c.run, &o))
    return 1;
  c.owed_cap = 2u * o.inflight + 1;
  c.owed = calloc(c.owed_cap, sizeof *c.owed);
  c.body = malloc(o.size);
  c.reader = redisReaderCreate();
  if (!c.owed || !c.body || !c.reader)
    return 1;
  c.fd = ps_connect(o.host, o.port);
  if (c.fd < 0) {
    fprintf(stderr, "redis_bench: connect %s:%d: %s\n", o.host, o.port, strerror(-c.fd));
    return 1;
  }
  pr_start(&c.run);
  int rc = ps_run(&c.run, c.fd, &c.out, fill_cb, input_cb, &c);
  if (rc)
    fprintf(stderr, "redis_bench: %s\n", strerror(-rc));
  int result = pr_report(&c.run, "redis_bench");
  close(c.fd);
  redisReaderFree(c.reader);
  ps_free(&c.out);
  free(c.owed);
  free(c.body);
  pr_free(&c.run);
  return rc ? 1 : result;
}
