/*
 * rabbit_bench: a RabbitMQ producer with publisher confirms for
 * bench/compare.sh, measured like ferry-bench (bench/peers/peer_run.h).
 *
 * Why it looks like this: RabbitMQ's durable-send mode is publisher
 * confirms (confirm.select): the broker answers basic.ack (possibly with
 * `multiple`, covering every earlier tag) once a quorum queue's members
 * hold the message on disk. Delivery tag t is message t - 1 here. The
 * client keeps up to --inflight confirms outstanding on one channel
 * (rabbitmq-c, librabbitmq-dev), publishes persistent messages to the
 * default exchange with the queue's name, and reads confirms without
 * blocking between publishes. --declare makes the queue first: durable,
 * x-queue-type=quorum, x-quorum-initial-group-size = --members.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <amqp.h>
#include <amqp_tcp_socket.h>

#include "bench/peers/peer_run.h"

static const char usage[] =
    "usage: rabbit_bench --port P [--host H] [--queue Q=bench] [--declare] [--members N=2]\n"
    "         [--size B=128] [--inflight N=1024] [--duration-s S=10] [--warmup-s S=1]\n"
    "         [--rate MSGS_PER_S=0] [--series-ms MS=0]\n";

struct cfg {
  const char *queue;
  bool declare;
  int members;
};

static int extra(const char *name, const char *val, void *arg) {
  struct cfg *c = arg;
  if (strcmp(name, "--queue") == 0)
    c->queue = val;
  else if (strcmp(name, "--declare") == 0)
    c->declare = true;
  else if (strcmp(name, "--members") == 0)
    c->members = atoi(val);
  else
    return -1;
  return 0;
}

static int check_rpc(amqp_connection_state_t conn, const char *what) {
  amqp_rpc_reply_t r = amqp_get_rpc_reply(conn);
  if (r.reply_type == AMQP_RESPONSE_NORMAL)
    return 0;
  if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION)
    fprintf(stderr, "rabbit_bench: %s: %s\n", what, amqp_error_string2(r.library_error));
  else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
    amqp_channel_close_t *m = r.reply.decoded;
    fprintf(stderr, "rabbit_bench: %s: channel closed %u %.*s\n", what, m->reply_code,
            (int)m->reply_text.len, (char *)m->reply_text.bytes);
  } else if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
    amqp_connection_close_t *m = r.reply.decoded;
    fprintf(stderr, "rabbit_bench: %s: connection closed %u %.*s\n", what, m->reply_code,
            (int)m->reply_text.len, (char *)m->reply_text.bytes);
  } else
    fprintf(stderr, "rabbit_bench: %s: server exception\n", what);
  return -EPROTO;
}

static int setup(amqp_connection_state_t conn, const struct pr_opts *o, const struct cfg *cfg) {
  amqp_socket_t *sock = amqp_tcp_socket_new(conn);
  if (!sock)
    return -ENOMEM;
  int st = amqp_socket_open(sock, o->host, o->port);
  if (st != AMQP_STATUS_OK) {
    fprintf(stderr, "rabbit_bench: connect %s:%d: %s\n", o->host, o->port,
            amqp_error_string2(st));
    return -ECONNREFUSED;
  }
  amqp_rpc_reply_t r =
      amqp_login(conn, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest");
  if (r.reply_type != AMQP_RESPONSE_NORMAL) {
    fprintf(stderr, "rabbit_bench: login failed\n");
    return -EACCES;
  }
  amqp_channel_open(conn, 1);
  if (check_rpc(conn, "channel.open"))
    return -EPROTO;
  if (cfg->declare) {
    amqp_table_entry_t args[2];
    args[0].key = amqp_cstring_bytes("x-queue-type");
    args[0].value.kind = AMQP_FIELD_KIND_UTF8;
    args[0].value.value.bytes = amqp_cstring_bytes("quorum");
    args[1].key = amqp_cstring_bytes("x-quorum-initial-group-size");
    args[1].value.kind = AMQP_FIELD_KIND_I32;
    args[1].value.value.i32 = cfg->members;
    amqp_table_t table = {.num_entries = 2, .entries = args};
    amqp_queue_declare(conn, 1, amqp_cstring_bytes(cfg->queue), 0, 1, 0, 0, table);
    if (check_rpc(conn, "queue.declare"))
      return -EPROTO;
  }
  amqp_confirm_select(conn, 1);
  return check_rpc(conn, "confirm.select");
}

/* Handles one frame: a confirm (ack/nack, possibly `multiple`) or a close. */
static int on_frame(struct pr_run *run, const amqp_frame_t *f, uint64_t *confirmed_upto) {
  if (f->frame_type != AMQP_FRAME_METHOD)
    return 0;
  uint64_t now = pr_now_ns();
  uint64_t tag;
  bool multiple, ok;
  switch (f->payload.method.id) {
  case AMQP_BASIC_ACK_METHOD: {
    amqp_basic_ack_t *a = f->payload.method.decoded;
    tag = a->delivery_tag, multiple = a->multiple, ok = true;
    break;
  }
  case AMQP_BASIC_NACK_METHOD: {
    amqp_basic_nack_t *a = f->payload.method.decoded;
    tag = a->delivery_tag, multiple = a->multiple, ok = false;
    break;
  }
  case AMQP_CHANNEL_CLOSE_METHOD:
  case AMQP_CONNECTION_CLOSE_METHOD:
    fprintf(stderr, "rabbit_bench: the server closed the channel\n");
    return -ECONNRESET;
  default:
    return 0;
  }
  if (tag == 0 || tag > run->sent)
    return -EPROTO;
  uint64_t k = tag - 1;
  if (multiple) {
    /* Every tag up to this one; those older than the window were done. */
    uint64_t from = *confirmed_upto;
    if (from + run->o.inflight < run->sent)
      from = run->sent - run->o.inflight;
    for (uint64_t i = from; i <= k; i++)
      pr_acked(run, i, ok, now);
  } else
    pr_acked(run, k, ok, now);
  while (*confirmed_upto < run->sent && run->done[*confirmed_upto % run->o.inflight])
    (*confirmed_upto)++;
  return 0;
}

int main(int argc, char **argv) {
  struct cfg cfg = {.queue = "bench", .members = 2};
  struct pr_opts o;
  static const char *const flags[] = {"--declare", NULL};
  if (pr_parse(argc, argv, &o, flags, extra, &cfg, usage))
    return 2;
  if (o.tick_us) { /* its loop is librabbitmq's, not ps_run */
    fprintf(stderr, "rabbit_bench: --tick-us is not supported\n");
    return 2;
  }
  struct pr_run run;
  char *body = malloc(o.size);
  if (!body || pr_init(&run, &o))
    return 1;
  amqp_connection_state_t conn = amqp_new_connection();
  if (!conn || setup(conn, &o, &cfg))
    return 1;
  amqp_basic_properties_t props = {._flags = AMQP_BASIC_DELIVERY_MODE_FLAG,
                                   .delivery_mode = 2 /* persistent */};
  uint64_t confirmed_upto = 0;
  int rc = 0;
  pr_start(&run);
  for (uint64_t now = pr_now_ns(); !pr_finished(&run, now); now = pr_now_ns()) {
    int64_t wait_ns;
    int sent_now = 0;
    while ((wait_ns = pr_can_send(&run, now)) == 0 && sent_now < 64) {
      pr_body(body, o.size, run.sent);
      amqp_bytes_t b = {.len = o.size, .bytes = body};
      int st = amqp_basic_publish(conn, 1, amqp_empty_bytes, amqp_cstring_bytes(cfg.queue), 0,
                                  0, &props, b);
      if (st != AMQP_STATUS_OK) {
        fprintf(stderr, "rabbit_bench: publish: %s\n", amqp_error_string2(st));
        rc = -EIO;
        break;
      }
      pr_sent(&run, now);
      sent_now++;
    }
    if (rc)
      break;
    /* Read confirms: without waiting if more may be sent now. */
    struct timeval tv = {0, 0};
    if (wait_ns != 0 && sent_now == 0) {
      int ms = pr_poll_ms(&run, pr_now_ns());
      tv.tv_sec = ms / 1000;
      tv.tv_usec = (ms % 1000) * 1000;
    }
    for (int frames = 0; frames < 4096; frames++) {
      amqp_frame_t f;
      int st = amqp_simple_wait_frame_noblock(conn, &f, &tv);
      if (st == AMQP_STATUS_TIMEOUT)
        break;
      if (st != AMQP_STATUS_OK) {
        fprintf(stderr, "rabbit_bench: read: %s\n", amqp_error_string2(st));
        rc = -EIO;
        break;
      }
      if ((rc = on_frame(&run, &f, &confirmed_upto)))
        break;
      tv = (struct timeval){0, 0};
      amqp_maybe_release_buffers(conn);
    }
    if (rc)
      break;
  }
  int result = pr_report(&run, "rabbit_bench");
  amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
  amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
  amqp_destroy_connection(conn);
  pr_free(&run);
  free(body);
  return rc ? 1 : result;
}
