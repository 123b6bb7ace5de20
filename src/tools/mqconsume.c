/*
 * mqconsume: a push consumer that prints one line per message, the body
 * (--format body) or a JSON object (--format json) with topic, queueId,
 * queueOffset, msgId, offsetMsgId, tags, keys, bornTimestamp,
 * storeTimestamp, brokerName, brokerId (the broker that served it: 0 the
 * master), reconsumeTimes and body (bodyBase64 instead when the body is
 * not UTF-8).
 *
 * Order: lines of one queue come out in queue-offset order, because the
 * consumer runs one consume thread and the library hands each queue's
 * messages to it in order. A message's line is written and flushed before
 * its listener call returns success, so an offset is never committed for a
 * message that was not printed: after a SIGKILL the group resumes at its
 * last commit and redelivers at most what was printed since (bounded by
 * --commit-interval-ms).
 *
 * Exit: SIGTERM or SIGINT, --max N messages, or --idle-exit-ms without a
 * message. Then listener calls still coming are refused (FY_CONSUME_LATER:
 * their offsets stay uncommitted), the consumer closes, which commits the
 * offsets, and mqconsume exits 0. The main thread waits for all of these
 * with sigtimedwait; the listener wakes it with SIGUSR1 when --max is
 * reached.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/heap.h"
#include "common/log.h"
#include "ferry/client.h"

#define EXIT_USAGE 2
#define POLL_MS 200 /* how often the main thread looks at idleness and owned queues */

static struct {
  /* options */
  const char *namesrv, *topic, *group, *filter, *offset_dir;
  fy_consume_from from;
  int64_t from_ts;
  bool json, broadcast, verbose;
  uint64_t max;
  uint32_t idle_exit_ms, commit_interval_ms, suspend_ms;
  /* state (mu) */
  pthread_mutex_t mu;
  pthread_t main_thread;
  uint64_t count;
  uint64_t last_msg_ms; /* monotonic */
  bool stopping;
  bool write_failed;
} g = {.mu = PTHREAD_MUTEX_INITIALIZER, .from = FY_FROM_LAST_OFFSET};

static uint64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------------ output */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *base64(const uint8_t *in, size_t n) {
  char *out = malloc((n + 2) / 3 * 4 + 1), *o = out;
  if (!out)
    return NULL;
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16;
    if (i + 1 < n)
      v |= (uint32_t)in[i + 1] << 8;
    if (i + 2 < n)
      v |= in[i + 2];
    *o++ = b64[v >> 18 & 63];
    *o++ = b64[v >> 12 & 63];
    *o++ = i + 1 < n ? b64[v >> 6 & 63] : '=';
    *o++ = i + 2 < n ? b64[v & 63] : '=';
  }
  *o = '\0';
  return out;
}

/* Writes m as one JSON line. Returns 0 or -1 (out of memory). */
static int print_json(const fy_message_view *m) {
  json_t *o = json_object();
  if (!o)
    return -1;
  json_object_set_new(o, "topic", json_string(m->topic));
  json_object_set_new(o, "queueId", json_integer(m->queue_id));
  json_object_set_new(o, "queueOffset", json_integer((json_int_t)m->queue_offset));
  json_object_set_new(o, "msgId", json_string(m->msg_id));
  json_object_set_new(o, "offsetMsgId", json_string(m->offset_msg_id));
  json_object_set_new(o, "tags", json_string(m->tags));
  json_object_set_new(o, "keys", json_string(m->keys));
  json_object_set_new(o, "bornTimestamp", json_integer(m->born_ts_ms));
  json_object_set_new(o, "storeTimestamp", json_integer(m->store_ts_ms));
  json_object_set_new(o, "brokerName", json_string(m->broker_name));
  json_object_set_new(o, "brokerId", json_integer((json_int_t)m->broker_id));
  json_object_set_new(o, "reconsumeTimes", json_integer(m->reconsume_times));
  json_t *body = json_stringn((const char *)m->body, m->body_len);
  if (body) {
    json_object_set_new(o, "body", body);
  } else { /* not UTF-8 */
    char *enc = base64(m->body, m->body_len);
    if (!enc) {
      json_decref(o);
      return -1;
    }
    json_object_set_new(o, "body", json_null());
    json_object_set_new(o, "bodyBase64", json_string(enc));
    free(enc);
  }
  char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
  json_decref(o);
  if (!s)
    return -1;
  fputs(s, stdout);
  putchar('\n');
  free(s);
  return 0;
}

/* ---------------------------------------------------------------- listener */

static fy_consume_result on_msgs(const fy_message_view *const *msgs, size_t n, void *arg) {
  (void)arg;
  pthread_mutex_lock(&g.mu);
  /* Refused messages keep their offsets uncommitted: whoever owns the
   * queue next gets them. */
  if (g.stopping || (g.max && g.count + n > g.max)) {
    pthread_mutex_unlock(&g.mu);
    return FY_CONSUME_LATER;
  }
  bool ok = true;
  for (size_t i = 0; ok && i < n; i++) {
    if (g.json) {
      ok = print_json(msgs[i]) == 0;
    } else {
      ok = fwrite(msgs[i]->body, 1, msgs[i]->body_len, stdout) == msgs[i]->body_len;
      putchar('\n');
    }
  }
  if (fflush(stdout) != 0 || ferror(stdout) || !ok) {
    if (!g.write_failed)
      fprintf(stderr, "mqconsume: cannot write a message: %s; stopping\n",
              ok ? strerror(errno) : "out of memory");
    g.write_failed = true;
    g.stopping = true;
    pthread_kill(g.main_thread, SIGUSR1);
    pthread_mutex_unlock(&g.mu);
    return FY_CONSUME_LATER;
  }
  g.count += n;
  g.last_msg_ms = mono_ms();
  if (g.max && g.count >= g.max) {
    g.stopping = true;
    pthread_kill(g.main_thread, SIGUSR1);
  }
  pthread_mutex_unlock(&g.mu);
  return FY_CONSUME_SUCCESS;
}

/* ------------------------------------------------------------ owned queues */

static int cmp_owned(const void *a, const void *b) {
  const fy_owned_queue *x = a, *y = b;
  int c = strcmp(x->queue.topic, y->queue.topic);
  if (!c)
    c = strcmp(x->queue.broker_name, y->queue.broker_name);
  if (!c)
    c = x->queue.queue_id < y->queue.queue_id ? -1 : x->queue.queue_id > y->queue.queue_id;
  return c;
}

/* --verbose: says on stderr which queues this consumer owns, when that changes:
 *   mqconsume: owns N queues: brokerName/queueId ... */
static void report_owned(fy_push_consumer *pc, char **last) {
  fy_owned_queues *oq;
  if (fy_push_consumer_owned(pc, &oq) != 0)
    return;
  fy_owned_queue *v = malloc((oq->n ? oq->n : 1) * sizeof *v);
  size_t cap = 64 + oq->n * (FY_CLIENT_NAME_MAX + 16);
  char *text = malloc(cap);
  if (v && text) {
    memcpy(v, oq->queues, oq->n * sizeof *v);
    qsort(v, oq->n, sizeof *v, cmp_owned);
    size_t len = (size_t)snprintf(text, cap, "owns %zu queues:", oq->n);
    for (size_t i = 0; i < oq->n && len < cap; i++)
      len += (size_t)snprintf(text + len, cap - len, " %s/%u", v[i].queue.broker_name,
                              v[i].queue.queue_id);
    if (!*last || strcmp(*last, text) != 0) {
      fprintf(stderr, "mqconsume: %s\n", text);
      free(*last);
      *last = text;
      text = NULL;
    }
  }
  free(text);
  free(v);
  fy_result_free(oq);
}

/* ------------------------------------------------------------------ main */

static void usage(FILE *out) {
  fprintf(out,
          "usage: mqconsume -n NAMESRV_ADDR -t TOPIC -g GROUP [--from first|last|TIMESTAMP_MS]\n"
          "                 [--filter TAGEXPR] [--max N] [--idle-exit-ms MS]\n"
          "                 [--format body|json] [--broadcast]\n"
          "Prints one line per message (queue-offset order within each queue).\n"
          "  -n ADDR                 name servers, host:port[;host:port] (default: $NAMESRV_ADDR)\n"
          "  -t TOPIC                topic\n"
          "  -g GROUP                consumer group\n"
          "  --from WHERE            where a queue without a committed offset starts: first,\n"
          "                          last (default) or a time in ms since the epoch\n"
          "  --filter TAGEXPR        tags to receive: 'TagA || TagB' or '*' (default)\n"
          "  --max N                 exit after N messages\n"
          "  --idle-exit-ms MS       exit after MS without a message\n"
          "  --format body|json      the body (default) or a JSON object per line\n"
          "  --broadcast             every consumer of the group gets every message\n"
          "  --offset-dir DIR        where --broadcast keeps its offsets ($HOME/.ferry_offsets)\n"
          "  --commit-interval-ms MS how often offsets are committed (default 5000)\n"
          "  --suspend-ms MS         long-poll time of a pull (default 15000)\n"
          "  --verbose               report the queues this consumer owns on stderr\n"
          "SIGTERM or SIGINT: commit the offsets and exit 0.\n");
}

static int parse_u64_arg(const char *name, const char *s, uint64_t min, uint64_t max,
                         uint64_t *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *end || s[0] == '-' || v < min || v > max) {
    fprintf(stderr, "mqconsume: %s must be a number from %" PRIu64 " to %" PRIu64 ", got '%s'\n",
            name, min, max, s);
    return -1;
  }
  *out = v;
  return 0;
}

static int parse_args(int argc, char **argv) {
  static const struct option longopts[] = {
      {"from", required_argument, NULL, 'F'},
      {"filter", required_argument, NULL, 'E'},
      {"max", required_argument, NULL, 'M'},
      {"idle-exit-ms", required_argument, NULL, 'I'},
      {"format", required_argument, NULL, 'O'},
      {"broadcast", no_argument, NULL, 'B'},
      {"offset-dir", required_argument, NULL, 'D'},
      {"commit-interval-ms", required_argument, NULL, 'C'},
      {"suspend-ms", required_argument, NULL, 'S'},
      {"verbose", no_argument, NULL, 'V'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  uint64_t v;
  int c;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "n:t:g:h", longopts, NULL)) != -1) {
    switch (c) {
    case 'n': g.namesrv = optarg; break;
    case 't': g.topic = optarg; break;
    case 'g': g.group = optarg; break;
    case 'E': g.filter = optarg; break;
    case 'D': g.offset_dir = optarg; break;
    case 'B': g.broadcast = true; break;
    case 'V': g.verbose = true; break;
    case 'F':
      if (strcmp(optarg, "first") == 0) {
        g.from = FY_FROM_FIRST_OFFSET;
      } else if (strcmp(optarg, "last") == 0) {
        g.from = FY_FROM_LAST_OFFSET;
      } else {
        if (parse_u64_arg("--from", optarg, 0, INT64_MAX, &v)) {
          fprintf(stderr, "mqconsume: --from takes first, last or a time in ms since the epoch\n");
          return EXIT_USAGE;
        }
        g.from = FY_FROM_TIMESTAMP;
        g.from_ts = (int64_t)v;
      }
      break;
    case 'M':
      if (parse_u64_arg("--max", optarg, 1, UINT64_MAX, &g.max))
        return EXIT_USAGE;
      break;
    case 'I':
      if (parse_u64_arg("--idle-exit-ms", optarg, 1, 86400000, &v))
        return EXIT_USAGE;
      g.idle_exit_ms = (uint32_t)v;
      break;
    case 'C':
      if (parse_u64_arg("--commit-interval-ms", optarg, 10, 3600000, &v))
        return EXIT_USAGE;
      g.commit_interval_ms = (uint32_t)v;
      break;
    case 'S':
      if (parse_u64_arg("--suspend-ms", optarg, 1, 60000, &v))
        return EXIT_USAGE;
      g.suspend_ms = (uint32_t)v;
      break;
    case 'O':
      if (strcmp(optarg, "json") == 0) {
        g.json = true;
      } else if (strcmp(optarg, "body") == 0) {
        g.json = false;
      } else {
        fprintf(stderr, "mqconsume: --format takes body or json, got '%s'\n", optarg);
        return EXIT_USAGE;
      }
      break;
    case 'h': usage(stdout); return 0;
    default:
      fprintf(stderr, "mqconsume: %s '%s'\n",
              optopt ? "option needs a value or is unknown:" : "unknown option",
              argv[optind - 1]);
      usage(stderr);
      return EXIT_USAGE;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "mqconsume: unexpected argument '%s'\n", argv[optind]);
    usage(stderr);
    return EXIT_USAGE;
  }
  if (!g.namesrv || !*g.namesrv)
    g.namesrv = getenv("NAMESRV_ADDR");
  if (!g.namesrv || !*g.namesrv || !g.topic || !*g.topic || !g.group || !*g.group) {
    fprintf(stderr, "mqconsume: -n NAMESRV_ADDR (or $NAMESRV_ADDR), -t TOPIC and -g GROUP are "
                    "required\n");
    usage(stderr);
    return EXIT_USAGE;
  }
  return -1;
}

int main(int argc, char **argv) {
  fy_heap_keep_freed();
  int rc = parse_args(argc, argv);
  if (rc >= 0)
    return rc;

  /* Signals go to the main thread's sigtimedwait only: every thread the
   * library starts inherits this mask. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);
  fy_log_set_level(g.verbose ? FY_LOG_INFO : FY_LOG_WARN);
  g.main_thread = pthread_self();

  fy_client_config cc;
  memset(&cc, 0, sizeof cc);
  cc.namesrv_addr = g.namesrv;
  fy_client *cl;
  int err = fy_client_new(&cc, &cl);
  if (err) {
    fprintf(stderr, "mqconsume: cannot start the client: %s\n",
            err == -EINVAL ? "bad name server address (expected host:port[;host:port])"
                           : fy_client_strerror(err));
    return err == -EINVAL ? EXIT_USAGE : 1;
  }
  fy_push_config pc;
  memset(&pc, 0, sizeof pc);
  pc.group = g.group;
  pc.listener = on_msgs;
  pc.model = g.broadcast ? FY_BROADCASTING : FY_CLUSTERING;
  pc.from = g.from;
  pc.from_timestamp_ms = g.from_ts;
  /* One consume thread keeps each queue's lines in queue order. With
   * --max, one message per call, so that the N-th message ends a call and
   * nothing past it is consumed. */
  pc.consume_threads = 1;
  pc.consume_batch_max = g.max ? 1 : 32;
  pc.commit_interval_ms = g.commit_interval_ms;
  pc.suspend_timeout_ms = g.suspend_ms;
  pc.offset_store_dir = g.offset_dir;
  fy_push_consumer *c;
  err = fy_push_consumer_new(cl, &pc, &c);
  if (!err) {
    err = fy_push_consumer_subscribe(c, g.topic, g.filter);
    if (err == -EINVAL) {
      fprintf(stderr, "mqconsume: %s\n", fy_client_last_error());
      fy_push_consumer_close(c);
      fy_client_close(cl);
      return EXIT_USAGE;
    }
  }
  if (!err)
    err = fy_push_consumer_start(c);
  if (err) {
    fprintf(stderr, "mqconsume: cannot start the consumer: %s\n",
            fy_client_last_error()[0] ? fy_client_last_error() : fy_client_strerror(err));
    fy_client_close(cl);
    return 1;
  }
  fy_queue_list *ql;
  err = fy_client_topic_queues(cl, g.topic, false, 0, &ql);
  if (err == -FY_ETOPIC_NOT_EXIST)
    fprintf(stderr, "mqconsume: topic %s does not exist (yet): waiting for it\n", g.topic);
  else if (!err)
    fy_result_free(ql);

  pthread_mutex_lock(&g.mu);
  g.last_msg_ms = mono_ms();
  pthread_mutex_unlock(&g.mu);
  char *owned = NULL;
  const char *reason = NULL;
  while (!reason) {
    if (g.verbose)
      report_owned(c, &owned);
    uint64_t wait_ms = POLL_MS;
    pthread_mutex_lock(&g.mu);
    if (g.stopping) {
      reason = g.write_failed ? "output failed" : "--max reached";
    } else if (g.idle_exit_ms) {
      uint64_t idle = mono_ms() - g.last_msg_ms;
      if (idle >= g.idle_exit_ms) {
        g.stopping = true;
        reason = "idle";
      } else if (g.idle_exit_ms - idle < wait_ms) {
        wait_ms = g.idle_exit_ms - idle;
      }
    }
    pthread_mutex_unlock(&g.mu);
    if (reason)
      break;
    struct timespec ts = {.tv_sec = (time_t)(wait_ms / 1000),
                          .tv_nsec = (long)(wait_ms % 1000) * 1000000};
    int sig = sigtimedwait(&set, NULL, &ts);
    if (sig == SIGTERM || sig == SIGINT) {
      pthread_mutex_lock(&g.mu);
      g.stopping = true;
      pthread_mutex_unlock(&g.mu);
      reason = sig == SIGTERM ? "SIGTERM" : "SIGINT";
    }
  }
  free(owned);

  err = fy_push_consumer_close(c);
  rc = 0;
  if (err) {
    fprintf(stderr, "mqconsume: closing the consumer (final offset commit): %s\n",
            fy_client_last_error()[0] ? fy_client_last_error() : fy_client_strerror(err));
    rc = 1;
  }
  fy_client_close(cl);
  if (g.write_failed)
    rc = 1;
  if (g.verbose)
    fprintf(stderr, "mqconsume: exiting (%s) after %" PRIu64 " messages\n", reason, g.count);
  return rc;
}
