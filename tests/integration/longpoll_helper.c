/*
 * longpoll_helper: holds many long-polling pulls on one broker at once, for
 * test_broker_e2e.py's "idle long polls cost no CPU" check.
 *
 *   longpoll_helper HOST:PORT TOPIC GROUP N SUSPEND_MS [QUEUES] [OFFSET]
 *
 * Opens one connection and sends N pulls (queue i % QUEUES, at OFFSET,
 * default 0), each asking the broker to hold it SUSPEND_MS. Prints
 * "sent N" once they are all written, then one line when every pull has
 * been answered:
 *   "responses N found F not_found M errors E"
 * and exits 0 (1 if the connection failed). SIGTERM or SIGINT closes the
 * connection and exits at once. Uses the network layer directly (one
 * connection, many calls in flight) rather than N client threads.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "ferry.pb-c.h"
#include "net/conn.h"
#include "net/rpc.h"

static struct {
  const char *topic, *group;
  uint32_t n, suspend_ms, queues;
  uint64_t offset;
  uint32_t answered, found, not_found, errors;
  fy_conn *conn;
  uv_signal_t sig_term, sig_int;
  int rc;
} h;

/* Once: a signal closes the connection, whose close answers the pulls
 * still held with errors, which calls here again. */
static void stop(void) {
  static bool stopped;
  if (stopped)
    return;
  stopped = true;
  if (h.conn)
    fy_conn_close(h.conn, 0);
  uv_close((uv_handle_t *)&h.sig_term, NULL);
  uv_close((uv_handle_t *)&h.sig_int, NULL);
}

static void on_pulled(fy_conn *conn, int err, const fy_frame *resp, void *arg) {
  (void)conn;
  (void)arg;
  if (err)
    h.errors++;
  else if (resp->status == FERRY__V1__STATUS__OK)
    h.found++;
  else if (resp->status == FERRY__V1__STATUS__PULL_NOT_FOUND)
    h.not_found++;
  else
    h.errors++;
  if (++h.answered == h.n) {
    printf("responses %u found %u not_found %u errors %u\n", h.answered, h.found, h.not_found,
           h.errors);
    fflush(stdout);
    stop();
  }
}

static void on_connected(fy_conn *conn, int status) {
  if (status) {
    fprintf(stderr, "longpoll_helper: connect failed: %s\n", fy_net_strerror(status));
    h.rc = 1;
    h.conn = NULL;
    stop();
    return;
  }
  for (uint32_t i = 0; i < h.n; i++) {
    Ferry__V1__PullRequest req = FERRY__V1__PULL_REQUEST__INIT;
    req.consumer_group = (char *)h.group;
    req.topic = (char *)h.topic;
    req.queue_id = i % h.queues;
    req.queue_offset = h.offset;
    req.max_msgs = 32;
    req.suspend_timeout_ms = h.suspend_ms;
    int err = fy_rpc_call(conn, FERRY__V1__OP__OP_PULL, &req.base, NULL, 0, h.suspend_ms + 10000,
                          on_pulled, NULL);
    if (err) {
      fprintf(stderr, "longpoll_helper: pull %u not sent: %s\n", i, fy_net_strerror(err));
      h.rc = 1;
      stop();
      return;
    }
  }
  printf("sent %u\n", h.n);
  fflush(stdout);
}

static void on_close(fy_conn *conn, int reason) {
  (void)reason;
  if (h.conn == conn)
    h.conn = NULL;
}

static void on_signal(uv_signal_t *s, int signum) {
  (void)s;
  (void)signum;
  stop();
}

int main(int argc, char **argv) {
  if (argc < 6) {
    fprintf(stderr, "usage: longpoll_helper HOST:PORT TOPIC GROUP N SUSPEND_MS [QUEUES] [OFFSET]\n");
    return 2;
  }
  char host[128];
  snprintf(host, sizeof host, "%s", argv[1]);
  char *colon = strrchr(host, ':');
  if (!colon)
    return 2;
  *colon = '\0';
  int port = atoi(colon + 1);
  h.topic = argv[2];
  h.group = argv[3];
  h.n = (uint32_t)strtoul(argv[4], NULL, 10);
  h.suspend_ms = (uint32_t)strtoul(argv[5], NULL, 10);
  h.queues = argc > 6 ? (uint32_t)strtoul(argv[6], NULL, 10) : 1;
  h.offset = argc > 7 ? strtoull(argv[7], NULL, 10) : 0;
  if (h.n == 0 || h.queues == 0)
    return 2;
  uv_loop_t *loop = uv_default_loop();
  uv_signal_init(loop, &h.sig_term);
  uv_signal_init(loop, &h.sig_int);
  uv_signal_start(&h.sig_term, on_signal, SIGTERM);
  uv_signal_start(&h.sig_int, on_signal, SIGINT);
  fy_conn_cfg cc = {.on_close = on_close, .rpc_pending_max = h.n + 16};
  int err = fy_conn_connect(loop, host, port, &cc, on_connected, &h.conn);
  if (err) {
    fprintf(stderr, "longpoll_helper: cannot connect: %s\n", fy_net_strerror(err));
    return 1;
  }
  uv_run(loop, UV_RUN_DEFAULT);
  uv_loop_close(loop);
  return h.rc;
}
