/*
 * mqadmin: RocketMQ's admin command on Ferry's client library.
 *
 *   mqadmin SUBCOMMAND -n NAMESRV_ADDR [options]
 *
 * Subcommands and flags are RocketMQ's (updateTopic, deleteTopic,
 * updateSubGroup, deleteSubGroup, topicList, topicRoute, topicStatus,
 * clusterList, brokerStatus, consumerProgress, resetOffsetByTime,
 * queryMsgById, queryMsgByKey), plus Ferry's own haStatus and subGroupList.
 * -n names the name servers ("host:port;host:port"); without it
 * NAMESRV_ADDR from the environment is used, as RocketMQ does.
 *
 * Flag letters mean different things in different subcommands (RocketMQ's
 * choice: -r is readQueueNums in updateTopic, retryMaxTimes in
 * updateSubGroup, removeOffset in deleteSubGroup). Letters shared by most
 * subcommands are parsed in parse_opts; a subcommand with meanings of its
 * own parses those first, in its own_flag.
 *
 * Output is what scripts and the end-to-end tests parse: tables with a
 * header line whose column names start with '#', values separated by
 * spaces (no value contains one, except the last column of
 * consumerProgress and queryMsgById's "Key: value" lines), in a stable
 * order. Keep formats stable; tests/integration/test_broker_e2e.py reads
 * them. Errors go to stderr as "mqadmin SUBCOMMAND: what went wrong" with
 * exit status 1; usage errors exit 2.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "ferry/client.h"

#define EXIT_USAGE 2
#define CLUSTER_MASTERS_MAX 256

struct opts;

/* A subcommand. main parses and checks its flags (parse_opts), connects,
 * and calls run, which prints and returns the exit code. */
struct cmd {
  const char *name;
  const char *summary;
  const char *usage; /* the flags, after "mqadmin NAME " */
  const char *optstring;
  const char *required; /* flags that must be given, in the order they are checked */
  bool one_target;      /* exactly one of -b BROKERADDR and -c CLUSTER */
  int (*run)(const struct opts *o, fy_client *cl);
  /* NULL, or the subcommand's own reading of flag ch: 0 taken, -1 not one
   * of its own (parse_opts reads it), else an exit status (usage error). */
  int (*own_flag)(struct opts *o, int ch, const char *arg);
};

/* The subcommand being run, for messages. */
static const struct cmd *cur;

static void usage_of(const struct cmd *c, FILE *out) {
  fprintf(out, "usage: mqadmin %s %s\n", c->name, c->usage);
}

__attribute__((format(printf, 1, 2))) static int fail(const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "mqadmin %s: ", cur->name);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  return 1;
}

__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "mqadmin %s: ", cur->name);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  usage_of(cur, stderr);
  return EXIT_USAGE;
}

/* The library's detail for the last failure, or its text for err. */
static const char *why(int err) {
  const char *d = fy_client_last_error();
  return d && *d ? d : fy_client_strerror(err);
}

/* ------------------------------------------------------------------ options */

struct opts {
  const char *namesrv;
  const char *topic, *cluster, *broker, *group, *key, *msgid;
  const char *timestamp; /* -s */
  int64_t ts_ms;         /* -s, parsed */
  const char *begin, *end, *max; /* queryMsgByKey -b -e -c */
  int64_t begin_ms, end_ms;      /* parsed; both 0: any time */
  uint32_t max_n;                /* parsed; 64 without -c */
  uint32_t read_queues, write_queues, perm;
  bool order;
  bool list; /* topicRoute -l */
  fy_sub_group_config sg; /* updateSubGroup; sg.group is unset (group above) */
  bool remove_offset;     /* deleteSubGroup -r */
};

static int parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *end || s[0] == '-' || v < min || v > max)
    return -1;
  *out = (uint32_t)v;
  return 0;
}

static const char *tf(bool v) { return v ? "true" : "false"; }

static int parse_bool(const char *s, bool *out) {
  if (strcmp(s, "true") == 0)
    *out = true;
  else if (strcmp(s, "false") == 0)
    *out = false;
  else
    return -1;
  return 0;
}

static int parse_i64(const char *s, int64_t *out) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || *end)
    return -1;
  *out = v;
  return 0;
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A time: milliseconds since the epoch, "now", or RocketMQ's
 * yyyy-MM-dd#HH:mm:ss:SSS (local time). */
static int parse_time(const char *s, int64_t *out) {
  if (strcmp(s, "now") == 0) {
    *out = now_ms();
    return 0;
  }
  if (parse_i64(s, out) == 0)
    return *out >= 0 ? 0 : -1;
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  const char *rest = strptime(s, "%Y-%m-%d#%H:%M:%S", &tm);
  if (!rest)
    return -1;
  int ms = 0;
  if (*rest == ':' || *rest == '.') {
    char *end;
    ms = (int)strtol(rest + 1, &end, 10);
    if (*end || ms < 0 || ms > 999)
      return -1;
  } else if (*rest) {
    return -1;
  }
  tm.tm_isdst = -1;
  time_t t = mktime(&tm);
  if (t == (time_t)-1)
    return -1;
  *out = (int64_t)t * 1000 + ms;
  return 0;
}

/* "yyyy-MM-dd HH:mm:ss,SSS" local time (RocketMQ's timeMillisToHumanString2). */
static const char *human_time(int64_t ms, char *buf, size_t size) {
  if (ms <= 0) {
    snprintf(buf, size, "N/A");
    return buf;
  }
  time_t t = (time_t)(ms / 1000);
  struct tm tm;
  localtime_r(&t, &tm);
  size_t n = strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm);
  snprintf(buf + n, size - n, ",%03d", (int)(ms % 1000));
  return buf;
}

/* Parses the subcommand's flags into o. Returns -1 to go on, or an exit status. */
static int parse_opts(const struct cmd *c, int argc, char **argv, struct opts *o) {
  memset(o, 0, sizeof *o);
  o->read_queues = 8;
  o->write_queues = 8;
  o->perm = 6;
  /* RocketMQ's updateSubGroup starts from these: SubscriptionGroupConfig's
   * defaults but consumeFromMinEnable and consumeBroadcastEnable false. */
  fy_sub_group_config_init(&o->sg, NULL);
  o->sg.consume_from_min_enable = false;
  o->sg.consume_broadcast_enable = false;
  optind = 1;
  opterr = 0;
  int ch;
  while ((ch = getopt(argc, argv, c->optstring)) != -1) {
    if (ch != '?' && ch != ':' && c->own_flag) {
      int rc = c->own_flag(o, ch, optarg);
      if (rc == 0)
        continue;
      if (rc > 0)
        return rc;
    }
    switch (ch) {
    case 'h':
      usage_of(c, stdout);
      return 0;
    case 'n': o->namesrv = optarg; break;
    case 't': o->topic = optarg; break;
    case 'g': o->group = optarg; break;
    case 'k': o->key = optarg; break;
    case 'i': o->msgid = optarg; break;
    case 's': o->timestamp = optarg; break;
    case 'e': o->end = optarg; break;
    case 'l': o->list = true; break;
    case 'f': break; /* resetOffsetByTime's force: Ferry always forces */
    case 'b': o->broker = optarg; break;
    case 'c': o->cluster = optarg; break;
    case 'r':
      if (parse_u32(optarg, 1, 1024, &o->read_queues))
        return usage_error("-r must be a number of queues from 1 to 1024, got '%s'", optarg);
      break;
    case 'w':
      if (parse_u32(optarg, 1, 1024, &o->write_queues))
        return usage_error("-w must be a number of queues from 1 to 1024, got '%s'", optarg);
      break;
    case 'p':
      if (parse_u32(optarg, 0, 7, &o->perm) || !(o->perm == 2 || o->perm == 4 || o->perm == 6))
        return usage_error("-p must be 2 (write), 4 (read) or 6 (read and write), got '%s'",
                           optarg);
      break;
    case 'o':
      if (strcmp(optarg, "true") == 0)
        o->order = true;
      else if (strcmp(optarg, "false") == 0)
        o->order = false;
      else
        return usage_error("-o must be true or false, got '%s'", optarg);
      break;
    case '?':
    default:
      if (optopt && strchr(c->optstring, optopt))
        return usage_error("option -%c needs a value", optopt);
      return usage_error("unknown option '%s'", argv[optind - 1]);
    }
  }
  if (optind < argc)
    return usage_error("unexpected argument '%s'", argv[optind]);
  if (!o->namesrv || !*o->namesrv)
    o->namesrv = getenv("NAMESRV_ADDR");
  if (!o->namesrv || !*o->namesrv)
    return usage_error("no name server address: give -n host:port[;host:port] "
                       "or set NAMESRV_ADDR");
  for (const char *f = c->required; *f; f++) {
    const char *v = NULL, *what = NULL;
    switch (*f) {
    case 't': v = o->topic, what = "-t TOPIC"; break;
    case 'g': v = o->group, what = "-g GROUP"; break;
    case 'k': v = o->key, what = "-k KEY"; break;
    case 'i': v = o->msgid, what = "-i OFFSETMSGID"; break;
    case 'b': v = o->broker, what = "-b BROKERADDR"; break;
    case 's': v = o->timestamp, what = "-s TIMESTAMP"; break;
    default: fy_assert(!"a required flag without a name");
    }
    if (!v || !*v)
      return usage_error("%s is required", what);
  }
  if (c->one_target && !o->broker == !o->cluster)
    return usage_error("give exactly one of -b BROKERADDR and -c CLUSTER");
  if (o->timestamp && parse_time(o->timestamp, &o->ts_ms))
    return usage_error("-s: '%s' is not a time (milliseconds since the epoch, 'now' or "
                       "yyyy-MM-dd#HH:mm:ss:SSS)", o->timestamp);
  o->max_n = 64;
  if (o->begin && parse_time(o->begin, &o->begin_ms))
    return usage_error("-b: '%s' is not a time", o->begin);
  if (o->end && parse_time(o->end, &o->end_ms))
    return usage_error("-e: '%s' is not a time", o->end);
  if (o->max && parse_u32(o->max, 1, 64, &o->max_n))
    return usage_error("-c: '%s' is not a count from 1 to 64", o->max);
  if (o->begin && !o->end)
    o->end_ms = INT64_MAX;
  return -1;
}

static int client_open(const struct opts *o, fy_client **out) {
  fy_client_config cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.namesrv_addr = o->namesrv;
  int err = fy_client_new(&cfg, out);
  if (err) {
    if (err == -EINVAL)
      return fail("bad name server address '%s': expected host:port[;host:port]", o->namesrv);
    return fail("cannot start the client: %s", fy_client_strerror(err));
  }
  return 0;
}

/* ---------------------------------------------------------------- clusters */

/* The master addresses of cluster (or of every cluster when NULL). */
static int cluster_masters(fy_client *cl, const char *cluster, char addrs[][FY_CLIENT_ADDR_MAX],
                           char names[][FY_CLIENT_NAME_MAX], size_t *n) {
  fy_cluster_info *ci;
  int err = fy_admin_cluster_list(cl, 0, &ci);
  if (err)
    return fail("cannot list the clusters: %s", why(err));
  bool known = false;
  *n = 0;
  for (size_t i = 0; i < ci->nbrokers; i++) {
    const fy_broker_info *b = &ci->brokers[i];
    if (cluster && strcmp(b->cluster, cluster) != 0)
      continue;
    known = true;
    for (size_t j = 0; j < b->naddrs && *n < CLUSTER_MASTERS_MAX; j++) {
      if (b->addrs[j].broker_id != 0)
        continue;
      snprintf(addrs[*n], FY_CLIENT_ADDR_MAX, "%s", b->addrs[j].addr);
      snprintf(names[*n], FY_CLIENT_NAME_MAX, "%s", b->broker_name);
      (*n)++;
    }
  }
  fy_result_free(ci);
  if (!known)
    return fail("cluster '%s' does not exist (mqadmin clusterList shows the clusters)", cluster);
  if (*n == 0)
    return fail("cluster '%s' has no master broker", cluster);
  return 0;
}

/* The brokers a write subcommand acts on: -b's, or every master of -c's
 * cluster (names: their brokerNames, for -c only). */
static int target_brokers(const struct opts *o, fy_client *cl, char addrs[][FY_CLIENT_ADDR_MAX],
                          char names[][FY_CLIENT_NAME_MAX], size_t *n) {
  if (!o->broker)
    return cluster_masters(cl, o->cluster, addrs, names, n);
  snprintf(addrs[0], FY_CLIENT_ADDR_MAX, "%s", o->broker);
  *n = 1;
  return 0;
}

static const char *perm_text(uint32_t perm) {
  static const char *t[8] = {"---", "--X", "-W-", "-WX", "R--", "R-X", "RW-", "RWX"};
  return t[perm & 7];
}

/* ------------------------------------------------------------- updateTopic */

static int run_update_topic(const struct opts *o, fy_client *cl) {
  int rc = 0;
  fy_topic_config tc = {.topic = o->topic, .read_queues = o->read_queues,
                        .write_queues = o->write_queues, .perm = o->perm, .order = o->order};
  static char addrs[CLUSTER_MASTERS_MAX][FY_CLIENT_ADDR_MAX];
  static char names[CLUSTER_MASTERS_MAX][FY_CLIENT_NAME_MAX];
  size_t n;
  if ((rc = target_brokers(o, cl, addrs, names, &n)))
    return rc;
  for (size_t i = 0; i < n; i++) {
    int err = fy_admin_update_topic(cl, addrs[i], NULL, &tc, 0);
    if (err) {
      rc = fail("create topic to %s failed: %s", addrs[i], why(err));
      continue;
    }
    printf("create topic to %s success.\n", addrs[i]);
  }
  if (rc == 0)
    printf("TopicConfig [topicName=%s, readQueueNums=%u, writeQueueNums=%u, perm=%s, order=%s]\n",
           o->topic, o->read_queues, o->write_queues, perm_text(o->perm),
           tf(o->order));
  return rc;
}

/* ------------------------------------------------------------- deleteTopic */

static int run_delete_topic(const struct opts *o, fy_client *cl) {
  int rc = 0;
  static char addrs[CLUSTER_MASTERS_MAX][FY_CLIENT_ADDR_MAX];
  static char names[CLUSTER_MASTERS_MAX][FY_CLIENT_NAME_MAX];
  size_t n, deleted = 0;
  if ((rc = target_brokers(o, cl, addrs, names, &n)))
    return rc;
  for (size_t i = 0; i < n; i++) {
    int err = fy_admin_delete_topic(cl, addrs[i], NULL, o->topic, 0);
    if (err == -FY_ETOPIC_NOT_EXIST)
      continue; /* not on this broker: fine while it is on another */
    if (err)
      rc = fail("delete topic [%s] from broker %s failed: %s", o->topic, addrs[i], why(err));
    else
      deleted++;
  }
  if (rc == 0 && deleted == 0)
    rc = fail("topic %s does not exist %s %s", o->topic, o->broker ? "on broker" : "in cluster",
              o->broker ? o->broker : o->cluster);
  else if (rc == 0 && o->cluster)
    printf("delete topic [%s] from cluster [%s] success.\n", o->topic, o->cluster);
  else if (rc == 0)
    printf("delete topic [%s] from broker [%s] success.\n", o->topic, o->broker);
  return rc;
}

/* ---------------------------------------------------------- updateSubGroup */

static int update_sub_group_flag(struct opts *o, int ch, const char *arg) {
  bool *flag = NULL;
  const char *name = NULL;
  switch (ch) {
  case 's': flag = &o->sg.consume_enable, name = "consumeEnable"; break;
  case 'm': flag = &o->sg.consume_from_min_enable, name = "consumeFromMinEnable"; break;
  case 'd': flag = &o->sg.consume_broadcast_enable, name = "consumeBroadcastEnable"; break;
  case 'a':
    flag = &o->sg.notify_consumer_ids_changed_enable, name = "notifyConsumerIdsChanged";
    break;
  case 'q':
    if (parse_u32(arg, 0, 1024, &o->sg.retry_queue_nums))
      return usage_error("-q (retryQueueNums) must be a number from 0 to 1024, got '%s'", arg);
    return 0;
  case 'r':
    if (parse_u32(arg, 0, INT32_MAX, &o->sg.retry_max_times))
      return usage_error("-r (retryMaxTimes) must be a number from 0 to 2147483647, got '%s'",
                         arg);
    return 0;
  case 'i':
  case 'w': {
    uint32_t id;
    if (parse_u32(arg, 0, 1024, &id))
      return usage_error("-%c (%s) must be a broker id from 0 to 1024, got '%s'", ch,
                         ch == 'i' ? "brokerId" : "whichBrokerWhenConsumeSlowly", arg);
    if (ch == 'i')
      o->sg.broker_id = id;
    else
      o->sg.which_broker_when_consume_slowly = id;
    return 0;
  }
  default: return -1;
  }
  if (parse_bool(arg, flag))
    return usage_error("-%c (%s) must be true or false, got '%s'", ch, name, arg);
  return 0;
}

static int run_update_sub_group(const struct opts *o, fy_client *cl) {
  int rc = 0;
  fy_sub_group_config sg = o->sg;
  sg.group = o->group;
  static char addrs[CLUSTER_MASTERS_MAX][FY_CLIENT_ADDR_MAX];
  static char names[CLUSTER_MASTERS_MAX][FY_CLIENT_NAME_MAX];
  size_t n;
  if ((rc = target_brokers(o, cl, addrs, names, &n)))
    return rc;
  for (size_t i = 0; i < n; i++) {
    int err = fy_admin_update_sub_group(cl, addrs[i], NULL, &sg, 0);
    if (err) {
      rc = fail("create subscription group to %s failed: %s", addrs[i], why(err));
      continue;
    }
    printf("create subscription group to %s success.\n", addrs[i]);
  }
  if (rc == 0)
    printf("SubscriptionGroupConfig [groupName=%s, consumeEnable=%s, consumeFromMinEnable=%s, "
           "consumeBroadcastEnable=%s, retryQueueNums=%u, retryMaxTimes=%u, brokerId=%" PRIu64
           ", whichBrokerWhenConsumeSlowly=%" PRIu64 ", notifyConsumerIdsChangedEnable=%s]\n",
           sg.group, tf(sg.consume_enable), tf(sg.consume_from_min_enable),
           tf(sg.consume_broadcast_enable), sg.retry_queue_nums, sg.retry_max_times,
           sg.broker_id, sg.which_broker_when_consume_slowly,
           tf(sg.notify_consumer_ids_changed_enable));
  return rc;
}

/* ---------------------------------------------------------- deleteSubGroup */

static int delete_sub_group_flag(struct opts *o, int ch, const char *arg) {
  if (ch != 'r')
    return -1;
  if (parse_bool(arg, &o->remove_offset))
    return usage_error("-r (removeOffset) must be true or false, got '%s'", arg);
  return 0;
}

/* RocketMQ's: -c also deletes the group's retry and dead-letter topics. */
static int delete_group_topic(fy_client *cl, const char *cluster, const char *prefix,
                              const char *group, char (*addrs)[FY_CLIENT_ADDR_MAX], size_t n) {
  char topic[FY_CLIENT_TOPIC_MAX];
  if ((size_t)snprintf(topic, sizeof topic, "%s%s", prefix, group) >= sizeof topic)
    return 0; /* too long to be a topic: there is none */
  int rc = 0;
  size_t deleted = 0;
  for (size_t i = 0; i < n; i++) {
    int err = fy_admin_delete_topic(cl, addrs[i], NULL, topic, 0);
    if (err == -FY_ETOPIC_NOT_EXIST)
      continue;
    if (err)
      rc = fail("delete topic [%s] from broker %s failed: %s", topic, addrs[i], why(err));
    else
      deleted++;
  }
  if (deleted)
    printf("delete topic [%s] from cluster [%s] success.\n", topic, cluster);
  return rc;
}

static int run_delete_sub_group(const struct opts *o, fy_client *cl) {
  int rc = 0;
  static char addrs[CLUSTER_MASTERS_MAX][FY_CLIENT_ADDR_MAX];
  static char names[CLUSTER_MASTERS_MAX][FY_CLIENT_NAME_MAX];
  size_t n, deleted = 0;
  if ((rc = target_brokers(o, cl, addrs, names, &n)))
    return rc;
  for (size_t i = 0; i < n; i++) {
    int err = fy_admin_delete_sub_group(cl, addrs[i], NULL, o->group, o->remove_offset, 0);
    if (err == -FY_ENO_GROUP && o->cluster)
      continue; /* not on this master: fine while it is on another */
    if (err) {
      rc = fail("delete subscription group [%s] from broker [%s] failed: %s", o->group, addrs[i],
                why(err));
      continue;
    }
    deleted++;
    if (o->cluster)
      printf("delete subscription group [%s] from broker [%s] in cluster [%s] success.\n",
             o->group, addrs[i], o->cluster);
    else
      printf("delete subscription group [%s] from broker [%s] success.\n", o->group, addrs[i]);
  }
  if (o->cluster && rc == 0 && deleted == 0)
    rc = fail("subscription group %s does not exist in cluster %s", o->group, o->cluster);
  if (o->cluster && rc == 0) {
    rc = delete_group_topic(cl, o->cluster, "%RETRY%", o->group, addrs, n);
    if (delete_group_topic(cl, o->cluster, "%DLQ%", o->group, addrs, n))
      rc = 1;
  }
  return rc;
}

/* ------------------------------------------------------------ subGroupList */

static int run_sub_group_list(const struct opts *o, fy_client *cl) {
  fy_sub_group_config_list *l;
  int err = fy_admin_sub_group_configs(cl, o->broker, 0, &l);
  if (err)
    return fail("cannot list the subscription groups of broker %s: %s", o->broker, why(err));
  printf("%-32s  %-14s  %-20s  %-22s  %-14s  %-13s  %-9s  %-28s  %s\n", "#groupName",
         "#consumeEnable", "#consumeFromMinEnable", "#consumeBroadcastEnable", "#retryQueueNums",
         "#retryMaxTimes", "#brokerId", "#whichBrokerWhenConsumeSlowly",
         "#notifyConsumerIdsChangedEnable");
  for (size_t i = 0; i < l->n; i++) {
    const fy_sub_group_config *g = &l->items[i];
    printf("%-32s  %-14s  %-20s  %-22s  %-14u  %-13u  %-9" PRIu64 "  %-28" PRIu64 "  %s\n",
           g->group, tf(g->consume_enable), tf(g->consume_from_min_enable),
           tf(g->consume_broadcast_enable), g->retry_queue_nums, g->retry_max_times, g->broker_id,
           g->which_broker_when_consume_slowly, tf(g->notify_consumer_ids_changed_enable));
  }
  fy_result_free(l);
  return 0;
}

/* --------------------------------------------------------------- topicList */

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int run_topic_list(const struct opts *o, fy_client *cl) {
  int rc = 0;
  fy_string_list *l;
  int err = fy_admin_topic_list(cl, 0, &l);
  if (err) {
    rc = fail("cannot list topics: %s", why(err));
  } else {
    const char **v = malloc((l->n ? l->n : 1) * sizeof *v);
    if (!v) {
      rc = fail("out of memory");
    } else {
      for (size_t i = 0; i < l->n; i++)
        v[i] = l->items[i];
      qsort(v, l->n, sizeof *v, cmp_str);
      for (size_t i = 0; i < l->n; i++)
        printf("%s\n", v[i]);
      free(v);
    }
    fy_result_free(l);
  }
  return rc;
}

/* -------------------------------------------------------------- topicRoute */

static int route_fail(const char *topic, int err) {
  if (err == -FY_ETOPIC_NOT_EXIST)
    return fail("topic %s does not exist (the name servers have no route for it)", topic);
  return fail("cannot get the route of topic %s: %s", topic, why(err));
}

/* RocketMQ's TopicRouteData as JSON. */
static int print_route_json(const fy_topic_route *r) {
  json_t *root = json_object(), *bds = json_array(), *qds = json_array();
  if (!root || !bds || !qds)
    goto oom;
  for (size_t i = 0; i < r->nbrokers; i++) {
    const fy_broker_info *b = &r->brokers[i];
    json_t *bd = json_object(), *addrs = json_object();
    if (!bd || !addrs)
      goto oom;
    for (size_t j = 0; j < b->naddrs; j++) {
      char id[24];
      snprintf(id, sizeof id, "%" PRIu64, b->addrs[j].broker_id);
      json_object_set_new(addrs, id, json_string(b->addrs[j].addr));
    }
    json_object_set_new(bd, "brokerAddrs", addrs);
    json_object_set_new(bd, "brokerName", json_string(b->broker_name));
    json_object_set_new(bd, "cluster", json_string(b->cluster));
    json_array_append_new(bds, bd);
  }
  for (size_t i = 0; i < r->nqueues; i++) {
    const fy_queue_data *q = &r->queues[i];
    json_t *qd = json_object();
    if (!qd)
      goto oom;
    json_object_set_new(qd, "brokerName", json_string(q->broker_name));
    json_object_set_new(qd, "perm", json_integer(q->perm));
    json_object_set_new(qd, "readQueueNums", json_integer(q->read_queues));
    json_object_set_new(qd, "topicSynFlag", json_integer(0));
    json_object_set_new(qd, "writeQueueNums", json_integer(q->write_queues));
    json_array_append_new(qds, qd);
  }
  json_object_set_new(root, "brokerDatas", bds);
  json_object_set_new(root, "queueDatas", qds);
  char *s = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  json_decref(root);
  if (!s)
    return fail("out of memory");
  printf("%s\n", s);
  free(s);
  return 0;
oom:
  json_decref(root);
  json_decref(bds);
  json_decref(qds);
  return fail("out of memory");
}

static const fy_broker_info *route_broker(const fy_topic_route *r, const char *name) {
  for (size_t i = 0; i < r->nbrokers; i++)
    if (strcmp(r->brokers[i].broker_name, name) == 0)
      return &r->brokers[i];
  return NULL;
}

/* RocketMQ's topicRoute -l table. */
static int print_route_list(const fy_topic_route *r) {
  printf("%-24s  %-24s  %-48s  %-10s  %-11s  %-5s\n", "#ClusterName", "#BrokerName",
         "#BrokerAddrs", "#ReadQueue", "#WriteQueue", "#Perm");
  uint32_t rq = 0, wq = 0;
  for (size_t i = 0; i < r->nqueues; i++) {
    const fy_queue_data *q = &r->queues[i];
    const fy_broker_info *b = route_broker(r, q->broker_name);
    char addrs[512] = "-";
    size_t len = 0;
    for (size_t j = 0; b && j < b->naddrs && len < sizeof addrs - 1; j++) {
      int w = snprintf(addrs + len, sizeof addrs - len, "%s%" PRIu64 "=%s", j ? "," : "",
                       b->addrs[j].broker_id, b->addrs[j].addr);
      if (w < 0)
        break;
      len += (size_t)w;
    }
    printf("%-24s  %-24s  %-48s  %-10u  %-11u  %-5u\n", b ? b->cluster : "-", q->broker_name,
           addrs, q->read_queues, q->write_queues, q->perm);
    rq += q->read_queues;
    wq += q->write_queues;
  }
  printf("\nTotal: %zu brokers, %u read queues, %u write queues\n", r->nqueues, rq, wq);
  return 0;
}

static int run_topic_route(const struct opts *o, fy_client *cl) {
  int rc = 0;
  fy_topic_route *r;
  int err = fy_admin_topic_route(cl, o->topic, 0, &r);
  if (err) {
    rc = route_fail(o->topic, err);
  } else {
    rc = o->list ? print_route_list(r) : print_route_json(r);
    fy_result_free(r);
  }
  return rc;
}

/* ------------------------------------------------------------- topicStatus */

static int run_topic_status(const struct opts *o, fy_client *cl) {
  int rc = 0;
  fy_topic_status *st;
  int err = fy_admin_topic_status(cl, o->topic, 0, &st);
  if (err) {
    rc = route_fail(o->topic, err);
  } else {
    printf("%-32s  %-4s  %-20s  %-20s\n", "#Broker Name", "#QID", "#Min Offset", "#Max Offset");
    for (size_t i = 0; i < st->n; i++) {
      const fy_queue_status *q = &st->queues[i];
      if (q->err) {
        printf("%-32s  %-4u  %-20s  %-20s\n", q->broker_name, q->queue_id, "-", "-");
        rc = fail("offsets of %s queue %u unavailable: %s", q->broker_name, q->queue_id,
                  fy_client_strerror(q->err));
      } else {
        printf("%-32s  %-4u  %-20" PRIu64 "  %-20" PRIu64 "\n", q->broker_name, q->queue_id,
               q->min_offset, q->max_offset);
      }
    }
    fy_result_free(st);
  }
  return rc;
}

/* ------------------------------------------------------------- clusterList */

static int run_cluster_list(const struct opts *o, fy_client *cl) {
  int rc = 0;
  fy_cluster_info *ci;
  int err = fy_admin_cluster_list(cl, 0, &ci);
  if (err) {
    rc = fail("cannot list the clusters: %s", why(err));
  } else {
    printf("%-16s  %-22s  %-4s  %-22s\n", "#Cluster Name", "#Broker Name", "#BID", "#Addr");
    for (size_t i = 0; i < ci->nbrokers; i++) {
      const fy_broker_info *b = &ci->brokers[i];
      if (o->cluster && strcmp(o->cluster, b->cluster) != 0)
        continue;
      for (size_t j = 0; j < b->naddrs; j++)
        printf("%-16s  %-22s  %-4" PRIu64 "  %-22s\n", b->cluster, b->broker_name,
               b->addrs[j].broker_id, b->addrs[j].addr);
    }
    fy_result_free(ci);
  }
  return rc;
}

/* ------------------------------------------------------------ brokerStatus */

static int cmp_kv(const void *a, const void *b) {
  return strcmp(((const fy_kv *)a)->key, ((const fy_kv *)b)->key);
}

static int print_broker_status(fy_client *cl, const char *addr, bool prefix) {
  fy_kv_list *kv;
  int err = fy_admin_broker_status(cl, addr, 0, &kv);
  if (err)
    return fail("cannot get the status of broker %s: %s", addr, why(err));
  fy_kv *v = malloc((kv->n ? kv->n : 1) * sizeof *v);
  if (!v) {
    fy_result_free(kv);
    return fail("out of memory");
  }
  memcpy(v, kv->items, kv->n * sizeof *v);
  qsort(v, kv->n, sizeof *v, cmp_kv);
  for (size_t i = 0; i < kv->n; i++) {
    if (prefix)
      printf("%-24s ", addr);
    printf("%-32s: %s\n", v[i].key, v[i].value);
  }
  free(v);
  fy_result_free(kv);
  return 0;
}

/* haStatus: replication status of one broker, in the broker's order. */
static int run_ha_status(const struct opts *o, fy_client *cl) {
  int rc = 0;
  fy_kv_list *kv;
  int err = fy_admin_ha_status(cl, o->broker, 0, &kv);
  if (err) {
    rc = fail("cannot get the HA status of broker %s: %s", o->broker, why(err));
  } else {
    for (size_t i = 0; i < kv->n; i++)
      printf("%-20s: %s\n", kv->items[i].key, kv->items[i].value);
    fy_result_free(kv);
  }
  return rc;
}

static int run_broker_status(const struct opts *o, fy_client *cl) {
  int rc = 0;
  if (o->broker) {
    rc = print_broker_status(cl, o->broker, false);
  } else {
    static char addrs[CLUSTER_MASTERS_MAX][FY_CLIENT_ADDR_MAX];
    static char names[CLUSTER_MASTERS_MAX][FY_CLIENT_NAME_MAX];
    size_t n;
    if ((rc = cluster_masters(cl, o->cluster, addrs, names, &n)) == 0)
      for (size_t i = 0; i < n; i++)
        if (print_broker_status(cl, addrs[i], true))
          rc = 1;
  }
  return rc;
}

/* -------------------------------------------------------- consumerProgress */

static int run_consumer_progress(const struct opts *o, fy_client *cl) {
  int rc = 0;
  fy_consumer_progress *p;
  int err = fy_admin_consumer_progress(cl, o->group, o->topic, 0, &p);
  if (err == -FY_ETOPIC_NOT_EXIST && o->topic) {
    rc = route_fail(o->topic, err);
  } else if (err) {
    rc = fail("cannot get the progress of consumer group %s: %s", o->group, why(err));
  } else if (p->n == 0 && p->brokers_failed == 0) {
    rc = fail("consumer group %s has no committed offsets%s%s (no such group, or it never "
              "committed)", o->group, o->topic ? " on topic " : "", o->topic ? o->topic : "");
    fy_result_free(p);
  } else {
    printf("%-32s  %-24s  %-4s  %-20s  %-20s  %-20s  %s\n", "#Topic", "#Broker Name", "#QID",
           "#Broker Offset", "#Consumer Offset", "#Diff", "#LastTime");
    for (size_t i = 0; i < p->n; i++) {
      const fy_queue_progress *q = &p->queues[i];
      char t[64];
      printf("%-32s  %-24s  %-4u  %-20" PRIu64 "  %-20" PRIu64 "  %-20" PRIu64 "  %s\n", q->topic,
             q->broker_name, q->queue_id, q->broker_offset, q->consumer_offset, q->lag,
             human_time(q->last_timestamp, t, sizeof t));
    }
    printf("\nDiff Total: %" PRIu64 "\n", p->total_lag);
    if (p->brokers_failed)
      rc = fail("%zu broker(s) did not answer: their queues are missing above", p->brokers_failed);
    fy_result_free(p);
  }
  return rc;
}

/* ------------------------------------------------------- resetOffsetByTime */

static int run_reset_offset(const struct opts *o, fy_client *cl) {
  int rc = 0;
  int64_t ts = o->ts_ms;
  int err = fy_admin_reset_offset_by_time(cl, o->group, o->topic, ts, 0);
  if (err == -FY_ETOPIC_NOT_EXIST)
    return route_fail(o->topic, err);
  if (err)
    return fail("reset of group %s on topic %s failed: %s", o->group, o->topic, why(err));
  printf("rollback consumer offset by specified group[%s], topic[%s], force[true], "
         "timestamp(string)[%s], timestamp(long)[%" PRId64 "]\n",
         o->group, o->topic, o->timestamp, ts);
  /* The offsets the reset chose: the broker's own search at the same time. */
  fy_queue_list *ql;
  err = fy_client_topic_queues(cl, o->topic, false, 0, &ql);
  if (err)
    return fail("offsets were reset, but the topic's queues cannot be listed: %s", why(err));
  printf("%-32s  %-8s  %s\n", "#brokerName", "#queueId", "#offset");
  for (size_t i = 0; i < ql->n; i++) {
    uint64_t off;
    err = fy_client_search_offset(cl, &ql->queues[i], ts, 0, &off);
    if (err) {
      printf("%-32s  %-8u  %s\n", ql->queues[i].broker_name, ql->queues[i].queue_id, "-");
      rc = fail("offset of %s queue %u unknown: %s", ql->queues[i].broker_name,
                ql->queues[i].queue_id, why(err));
    } else {
      printf("%-32s  %-8u  %" PRIu64 "\n", ql->queues[i].broker_name, ql->queues[i].queue_id,
             off);
    }
  }
  fy_result_free(ql);
  return rc;
}

/* ------------------------------------------------------------ queryMsgById */

/* Writes s with control characters shown as '.', so one value stays one line. */
static void put_text(const void *p, size_t n) {
  const unsigned char *s = p;
  for (size_t i = 0; i < n; i++)
    putchar(s[i] < 0x20 || s[i] == 0x7f ? '.' : s[i]);
}

/* The brokerName serving addr ("host:port"), from the cluster list; "" if unknown. */
static void broker_name_of(fy_client *cl, const char *addr, char *out, size_t size) {
  fy_cluster_info *ci;
  out[0] = '\0';
  if (fy_admin_cluster_list(cl, 0, &ci) != 0)
    return;
  for (size_t i = 0; i < ci->nbrokers; i++)
    for (size_t j = 0; j < ci->brokers[i].naddrs; j++)
      if (strcmp(ci->brokers[i].addrs[j].addr, addr) == 0)
        snprintf(out, size, "%s", ci->brokers[i].broker_name);
  fy_result_free(ci);
}

static void print_message(fy_client *cl, const fy_message_view *m) {
  char t[64], name[FY_CLIENT_NAME_MAX];
  /* A query by id names the broker by address only: find its name. */
  if (m->broker_name && *m->broker_name)
    snprintf(name, sizeof name, "%s", m->broker_name);
  else
    broker_name_of(cl, m->store_host, name, sizeof name);
  printf("%-20s %s\n", "OffsetID:", m->offset_msg_id);
  printf("%-20s %s\n", "Msg ID:", m->msg_id);
  printf("%-20s %s\n", "Topic:", m->topic);
  printf("%-20s [%s]\n", "Tags:", m->tags);
  printf("%-20s [%s]\n", "Keys:", m->keys);
  printf("%-20s %s\n", "Broker Name:", name[0] ? name : "-");
  printf("%-20s %u\n", "Queue ID:", m->queue_id);
  printf("%-20s %" PRIu64 "\n", "Queue Offset:", m->queue_offset);
  printf("%-20s %" PRIu64 "\n", "CommitLog Offset:", m->commitlog_offset);
  printf("%-20s %u\n", "Reconsume Times:", m->reconsume_times);
  printf("%-20s %s (%" PRId64 ")\n", "Born Timestamp:", human_time(m->born_ts_ms, t, sizeof t),
         m->born_ts_ms);
  printf("%-20s %s (%" PRId64 ")\n", "Store Timestamp:", human_time(m->store_ts_ms, t, sizeof t),
         m->store_ts_ms);
  printf("%-20s %s\n", "Born Host:", m->born_host);
  printf("%-20s %s\n", "Store Host:", m->store_host);
  printf("%-20s %u\n", "System Flag:", m->sys_flag);
  printf("%-20s %u\n", "Flag:", m->flag);
  printf("%-20s {", "Properties:");
  for (size_t i = 0; i < m->nprops; i++) {
    printf("%s%s=", i ? ", " : "", m->props[i].key);
    put_text(m->props[i].value, strlen(m->props[i].value));
  }
  printf("}\n");
  printf("%-20s %zu\n", "Body Length:", m->body_len);
  printf("%-20s ", "Message Body:");
  put_text(m->body, m->body_len);
  printf("\n");
}

static int run_query_by_id(const struct opts *o, fy_client *cl) {
  int rc = 0;
  /* Several ids may be given separated by commas, as RocketMQ allows. */
  char *ids = strdup(o->msgid), *save = NULL;
  if (!ids)
    return fail("out of memory");
  int nth = 0;
  for (char *id = strtok_r(ids, ",", &save); id; id = strtok_r(NULL, ",", &save)) {
    fy_message_list *l;
    int err = fy_admin_query_by_id(cl, id, o->broker, 0, &l);
    if (err == -FY_ENOT_FOUND || (!err && l->n == 0)) {
      if (!err)
        fy_result_free(l);
      rc = fail("message %s not found", id);
      continue;
    }
    if (err == -EINVAL) {
      rc = fail("'%s' is not an offset message id (32 hex digits: store host, port and "
                "commit-log offset)", id);
      continue;
    }
    if (err) {
      rc = fail("query of message %s failed: %s", id, why(err));
      continue;
    }
    for (size_t i = 0; i < l->n; i++) {
      if (nth++)
        printf("\n");
      print_message(cl, &l->msgs[i]);
    }
    fy_result_free(l);
  }
  free(ids);
  return rc;
}

/* ----------------------------------------------------------- queryMsgByKey */

/* RocketMQ's queryMsgByKey flags: -b is the begin time, -c the count. */
static int query_by_key_flag(struct opts *o, int ch, const char *arg) {
  if (ch == 'b')
    o->begin = arg;
  else if (ch == 'c')
    o->max = arg;
  else
    return -1;
  return 0;
}

static int run_query_by_key(const struct opts *o, fy_client *cl) {
  int rc = 0;
  fy_message_list *l;
  int err = fy_admin_query_by_key(cl, o->topic, o->key, o->max_n, o->begin_ms, o->end_ms, 0, &l);
  if (err == -FY_ETOPIC_NOT_EXIST) {
    rc = route_fail(o->topic, err);
  } else if (err) {
    rc = fail("query by key %s on topic %s failed: %s", o->key, o->topic, why(err));
  } else {
    printf("%-32s  %-4s  %-20s  %-24s  %s\n", "#Message ID", "#QID", "#Offset", "#Broker Name",
           "#Offset Message ID");
    for (size_t i = 0; i < l->n; i++) {
      const fy_message_view *m = &l->msgs[i];
      printf("%-32s  %-4u  %-20" PRIu64 "  %-24s  %s\n", m->msg_id, m->queue_id, m->queue_offset,
             m->broker_name, m->offset_msg_id);
    }
    fy_result_free(l);
  }
  return rc;
}

/* ------------------------------------------------------------------- table */

static struct cmd cmds[] = {
    {"updateTopic", "Update or create a topic",
     "-n NAMESRV_ADDR (-c CLUSTER | -b BROKERADDR) -t TOPIC [-r READQUEUES] [-w WRITEQUEUES] "
     "[-p PERM] [-o ORDER]\n"
     "  -b BROKERADDR   create the topic on this broker (host:port)\n"
     "  -c CLUSTER      create the topic on every master of the cluster\n"
     "  -t TOPIC        topic name\n"
     "  -r N            read queues (default 8)\n"
     "  -w N            write queues (default 8)\n"
     "  -p PERM         2 write, 4 read, 6 read and write (default 6)\n"
     "  -o true|false   ordered topic (default false)",
     "hn:b:c:t:r:w:p:o:", "t", true, run_update_topic, NULL},
    {"deleteTopic", "Delete a topic from the brokers of a cluster",
     "-n NAMESRV_ADDR (-c CLUSTER | -b BROKERADDR) -t TOPIC\n"
     "  -c CLUSTER      delete from every master of the cluster\n"
     "  -b BROKERADDR   delete from this broker only\n"
     "  -t TOPIC        topic name",
     "hn:c:b:t:", "t", true, run_delete_topic, NULL},
    {"updateSubGroup", "Update or create a subscription group",
     "-n NAMESRV_ADDR (-c CLUSTER | -b BROKERADDR) -g GROUP [-s true|false] [-m true|false] "
     "[-d true|false] [-q N] [-r N] [-i ID] [-w ID] [-a true|false]\n"
     "  -b BROKERADDR   create the group on this broker (host:port)\n"
     "  -c CLUSTER      create the group on every master of the cluster\n"
     "  -g GROUP        consumer group name\n"
     "  -s true|false   consumeEnable: false refuses the group's pulls (default true)\n"
     "  -m true|false   consumeFromMinEnable (default false)\n"
     "  -d true|false   consumeBroadcastEnable (default false)\n"
     "  -q N            retryQueueNums, 0 to 1024; 0 drops failed messages (default 1)\n"
     "  -r N            retryMaxTimes: then to %DLQ%GROUP (default 16)\n"
     "  -i ID           brokerId pulls are suggested to (default 0, the master)\n"
     "  -w ID           whichBrokerWhenConsumeSlowly (default 1)\n"
     "  -a true|false   notifyConsumerIdsChanged (default true)\n"
     "Every field is set, as RocketMQ's: a flag not given takes its default above, not the\n"
     "group's current value.",
     "hn:b:c:g:s:m:d:q:r:i:w:a:", "g", true, run_update_sub_group, update_sub_group_flag},
    {"deleteSubGroup", "Delete a subscription group from a broker or the masters of a cluster",
     "-n NAMESRV_ADDR (-c CLUSTER | -b BROKERADDR) -g GROUP [-r true|false]\n"
     "  -b BROKERADDR   delete from this broker only\n"
     "  -c CLUSTER      delete from every master of the cluster, and delete the group's\n"
     "                  %RETRY% and %DLQ% topics there too (as RocketMQ's)\n"
     "  -g GROUP        subscription group name\n"
     "  -r true|false   removeOffset: also forget the group's consumer offsets (default false)",
     "hn:b:c:g:r:", "g", true, run_delete_sub_group, delete_sub_group_flag},
    {"subGroupList", "List a broker's subscription groups (Ferry's own)",
     "-n NAMESRV_ADDR -b BROKERADDR\n"
     "  -b BROKERADDR   the broker (host:port); a slave shows the copy it holds",
     "hn:b:", "b", false, run_sub_group_list, NULL},
    {"topicList", "List every topic the name servers know", "-n NAMESRV_ADDR", "hn:",
     "", false, run_topic_list, NULL},
    {"topicRoute", "Show a topic's route",
     "-n NAMESRV_ADDR -t TOPIC [-l]\n"
     "  -t TOPIC        topic name\n"
     "  -l              a table instead of JSON",
     "hn:t:l", "t", false, run_topic_route, NULL},
    {"topicStatus", "Show the min and max offset of every queue of a topic",
     "-n NAMESRV_ADDR -t TOPIC", "hn:t:", "t", false, run_topic_status, NULL},
    {"clusterList", "List the brokers of every cluster",
     "-n NAMESRV_ADDR [-c CLUSTER]\n"
     "  -c CLUSTER      only this cluster",
     "hn:c:", "", false, run_cluster_list, NULL},
    {"brokerStatus", "Show a broker's status entries",
     "-n NAMESRV_ADDR (-b BROKERADDR | -c CLUSTER)\n"
     "  -b BROKERADDR   this broker (host:port)\n"
     "  -c CLUSTER      every master of the cluster (lines prefixed with the address)",
     "hn:b:c:", "", true, run_broker_status, NULL},
    {"haStatus", "Show a broker's replication status (per slave: offsets and lag)",
     "-n NAMESRV_ADDR -b BROKERADDR\n"
     "  -b BROKERADDR   the broker (host:port): a master lists its slaves, a slave its master",
     "hn:b:", "b", false, run_ha_status, NULL},
    {"consumerProgress", "Show a consumer group's offsets and lag per queue",
     "-n NAMESRV_ADDR -g GROUP [-t TOPIC]\n"
     "  -g GROUP        consumer group\n"
     "  -t TOPIC        only this topic",
     "hn:g:t:", "g", false, run_consumer_progress, NULL},
    {"resetOffsetByTime", "Move a consumer group's offsets on a topic to a point in time",
     "-n NAMESRV_ADDR -g GROUP -t TOPIC -s TIMESTAMP\n"
     "  -g GROUP        consumer group\n"
     "  -t TOPIC        topic\n"
     "  -s TIMESTAMP    milliseconds since the epoch, 'now', or yyyy-MM-dd#HH:mm:ss:SSS",
     "hn:g:t:s:f:", "gts", false, run_reset_offset, NULL},
    {"queryMsgById", "Show a message by its offset message id",
     "-n NAMESRV_ADDR -i OFFSETMSGID[,OFFSETMSGID...] [-b BROKERADDR]\n"
     "  -i ID           offset message id (as mqproduce and mqconsume print it)\n"
     "  -b BROKERADDR   ask this broker instead of the one the id names",
     "hn:i:b:", "i", false, run_query_by_id, NULL},
    {"queryMsgByKey", "Find messages of a topic by key",
     "-n NAMESRV_ADDR -t TOPIC -k KEY [-b BEGIN] [-e END] [-c MAX]\n"
     "  -t TOPIC        topic\n"
     "  -k KEY          message key (or message id)\n"
     "  -b BEGIN        stored at or after this time (ms, 'now', or yyyy-MM-dd#HH:mm:ss:SSS)\n"
     "  -e END          stored at or before this time\n"
     "  -c MAX          at most this many per broker (default 64)",
     "hn:t:k:b:e:c:", "tk", false, run_query_by_key, query_by_key_flag},
};

#define NCMDS (sizeof cmds / sizeof cmds[0])

static void list_commands(FILE *out) {
  fprintf(out, "usage: mqadmin SUBCOMMAND [options]   (-h after a subcommand shows its options)\n"
               "\nThe mqadmin subcommands are:\n");
  for (size_t i = 0; i < NCMDS; i++)
    fprintf(out, "   %-20s %s\n", cmds[i].name, cmds[i].summary);
  fprintf(out, "\nSee 'mqadmin help SUBCOMMAND' for the options of a subcommand.\n"
               "-n (or NAMESRV_ADDR) names the name servers: host:port[;host:port...]\n");
}

static struct cmd *find_cmd(const char *name) {
  for (size_t i = 0; i < NCMDS; i++)
    if (strcmp(cmds[i].name, name) == 0)
      return &cmds[i];
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    list_commands(stderr);
    return EXIT_USAGE;
  }
  const char *name = argv[1];
  if (strcmp(name, "-h") == 0 || strcmp(name, "--help") == 0) {
    list_commands(stdout);
    return 0;
  }
  if (strcmp(name, "help") == 0) {
    if (argc < 3) {
      list_commands(stdout);
      return 0;
    }
    struct cmd *c = find_cmd(argv[2]);
    if (!c) {
      fprintf(stderr, "mqadmin: unknown subcommand '%s'\n", argv[2]);
      list_commands(stderr);
      return EXIT_USAGE;
    }
    usage_of(c, stdout);
    return 0;
  }
  struct cmd *c = find_cmd(name);
  if (!c) {
    fprintf(stderr, "mqadmin: unknown subcommand '%s'\n", name);
    list_commands(stderr);
    return EXIT_USAGE;
  }
  cur = c;
  fy_log_set_level(FY_LOG_WARN); /* our own messages say what failed */
  struct opts o;
  int rc = parse_opts(c, argc - 1, argv + 1, &o);
  if (rc >= 0)
    return rc;
  fy_client *cl;
  if ((rc = client_open(&o, &cl)))
    return rc;
  rc = c->run(&o, cl);
  fy_client_close(cl);
  if (fflush(stdout) != 0 && rc == 0) {
    fprintf(stderr, "mqadmin %s: cannot write the output: %s\n", c->name, strerror(errno));
    rc = 1;
  }
  return rc;
}
