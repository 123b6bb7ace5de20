/*
 * Topic configurations (see topics.h). Why a module of its own: the broker,
 * the name-server registration and the slave's sync all need one table with
 * one set of validation rules and one persisted form, and a corrupt or
 * half-written topics.json must never turn into "no topics" silently.
 *
 * The table is a strmap of name → malloc'ed fy_topic_config. Every change
 * bumps the data version and saves the whole table (it is small: at most
 * topics_max entries of ~150 bytes of JSON).
 */
#include "broker/topics.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/persist.h"
#include "common/err.h"
#include "common/log.h"
#include "common/record.h"
#include "common/strmap.h"

#define TOPICS_FILE "topics.json"
#define QUEUES_MAX_DEFAULT 1024u
#define TOPICS_MAX_DEFAULT 65536u
#define TOPICS_MAX_LIMIT (1u << 24)

struct fy_topics {
  fy_strmap *map; /* name → struct fy_topic_config * */
  struct fy_data_version version;
  uint32_t queues_max;
  uint32_t topics_max;
  struct fy__persist persist;
};

/* RocketMQ's TopicValidator.SYSTEM_TOPIC_SET. */
static const char *const system_topics[] = {
    "TBW102",                    /* AUTO_CREATE_TOPIC_KEY_TOPIC */
    "SCHEDULE_TOPIC_XXXX",       /* delayed messages */
    "BenchmarkTest",
    "RMQ_SYS_TRANS_HALF_TOPIC",
    "RMQ_SYS_TRACE_TOPIC",
    "RMQ_SYS_TRANS_OP_HALF_TOPIC",
    "TRANS_CHECK_MAX_TIME_TOPIC",
    "SELF_TEST_TOPIC",
    "OFFSET_MOVED_EVENT",
};
#define SYSTEM_TOPIC_PREFIX "rmq_sys_"

/* ---- names -------------------------------------------------------------- */

int fy_topic_name_check(const char *name, const char **why) {
  const char *msg = NULL;
  size_t len = name ? strnlen(name, FY_TOPIC_NAME_MAX + 1) : 0;
  if (len == 0)
    msg = "The specified topic is blank.";
  else if (len > FY_TOPIC_NAME_MAX)
    msg = "The specified topic is longer than topic max length.";
  else if (!fy_name_chars_ok(name, len))
    msg = "The specified topic contains illegal characters, allowing only ^[%|a-zA-Z0-9_-]+$";
  if (why)
    *why = msg;
  return msg ? -EINVAL : 0;
}

bool fy_topic_is_system(const char *name) {
  for (size_t i = 0; i < sizeof system_topics / sizeof system_topics[0]; i++)
    if (strcmp(name, system_topics[i]) == 0)
      return true;
  return strncmp(name, SYSTEM_TOPIC_PREFIX, strlen(SYSTEM_TOPIC_PREFIX)) == 0;
}

/* Checks everything but the name; max is the bound on queue counts. */
static int check_config(const struct fy_topic_config *c, uint32_t max, const char **why) {
  if (c->read_queues < 1 || c->read_queues > max) {
    *why = "readQueueNums is out of range";
    return -EINVAL;
  }
  if (c->write_queues < 1 || c->write_queues > max) {
    *why = "writeQueueNums is out of range";
    return -EINVAL;
  }
  if (c->perm & ~(FY_PERM_READ | FY_PERM_WRITE | FY_PERM_INHERIT)) {
    *why = "perm must be a combination of 4 (read), 2 (write) and 1 (inherit)";
    return -EINVAL;
  }
  return 0;
}

static bool config_equal(const struct fy_topic_config *a, const struct fy_topic_config *b) {
  return strcmp(a->name, b->name) == 0 && a->read_queues == b->read_queues &&
         a->write_queues == b->write_queues && a->perm == b->perm && a->order == b->order &&
         a->topic_sys_flag == b->topic_sys_flag;
}

/* ---- table helpers ------------------------------------------------------ */

static struct fy_topic_config *lookup(const fy_topics *t, const char *name) {
  return fy_strmap_get(t->map, name, strlen(name));
}

/* ---- JSON --------------------------------------------------------------- */

static json_t *topic_to_json(const void *entry) {
  const struct fy_topic_config *c = entry;
  return json_pack("{s:s,s:I,s:I,s:I,s:s,s:I,s:b}", "topicName", c->name, "readQueueNums",
                   (json_int_t)c->read_queues, "writeQueueNums", (json_int_t)c->write_queues,
                   "perm", (json_int_t)c->perm, "topicFilterType", "SINGLE_TAG", "topicSysFlag",
                   (json_int_t)c->topic_sys_flag, "order", c->order);
}

/* One entry of topicConfigTable; the name comes from the key. */
static int topic_from_json(const char *key, json_t *v, void *entry, char *err, size_t errlen) {
  struct fy_topic_config *c = entry;
  const char *why;
  memset(c, 0, sizeof *c);
  if (!json_is_object(v)) {
    snprintf(err, errlen, "topic \"%s\": not a JSON object", key);
    return -FY_ECORRUPT;
  }
  json_t *name = json_object_get(v, "topicName");
  if (name && (!json_is_string(name) || strcmp(json_string_value(name), key) != 0)) {
    snprintf(err, errlen, "topic \"%s\": topicName does not match its key", key);
    return -FY_ECORRUPT;
  }
  if (fy_topic_name_check(key, &why) < 0) {
    snprintf(err, errlen, "topic \"%.*s\": %s", (int)FY_TOPIC_NAME_MAX, key, why);
    return -FY_ECORRUPT;
  }
  strcpy(c->name, key);
  char field[160];
  uint64_t rq, wq, perm, sys;
  int r = fy__json_uint(v, "readQueueNums", true, 0, 1, FY_TOPIC_QUEUES_LIMIT, &rq, field,
                        sizeof field);
  if (r == 0)
    r = fy__json_uint(v, "writeQueueNums", true, 0, 1, FY_TOPIC_QUEUES_LIMIT, &wq, field,
                      sizeof field);
  if (r == 0)
    r = fy__json_uint(v, "perm", false, FY_PERM_DEFAULT, 0, 7, &perm, field, sizeof field);
  if (r == 0)
    r = fy__json_uint(v, "topicSysFlag", false, 0, 0, UINT32_MAX, &sys, field, sizeof field);
  if (r == 0)
    r = fy__json_bool(v, "order", false, &c->order, field, sizeof field);
  if (r < 0) {
    snprintf(err, errlen, "topic \"%s\": %s", key, field);
    return r;
  }
  c->read_queues = (uint32_t)rq;
  c->write_queues = (uint32_t)wq;
  c->perm = (uint32_t)perm;
  c->topic_sys_flag = (uint32_t)sys;
  return 0;
}

static bool entry_equal(const void *a, const void *b) { return config_equal(a, b); }

static const struct fy__table_kind kind = {
    .table_key = "topicConfigTable",
    .what = "topics",
    .entry_size = sizeof(struct fy_topic_config),
    .name_offset = offsetof(struct fy_topic_config, name),
    .from_json = topic_from_json,
    .equal = entry_equal,
    .to_json = topic_to_json,
    .title = "the topic table",
};

/* ---- persistence -------------------------------------------------------- */

static void changed(fy_topics *t) {
  fy__data_version_bump(&t->version);
  fy__table_save(&kind, &t->persist, t->map, &t->version);
}

int fy_topics_flush(fy_topics *t, fy_metafile_cb cb, void *arg) {
  return fy__table_flush(&kind, &t->persist, t->map, &t->version, cb, arg);
}

int fy_topics_persist_status(const fy_topics *t) { return t->persist.status; }

/* ---- life cycle --------------------------------------------------------- */

void fy_topics_options_init(struct fy_topics_options *opt) {
  opt->root_dir = NULL;
  opt->queues_max = QUEUES_MAX_DEFAULT;
  opt->topics_max = TOPICS_MAX_DEFAULT;
}

int fy_topics_open(uv_loop_t *loop, fy_aio *aio, const struct fy_topics_options *opt,
                   fy_topics **out, char *err, size_t errlen) {
  if (opt->queues_max < 1 || opt->queues_max > FY_TOPIC_QUEUES_LIMIT || opt->topics_max < 1 ||
      opt->topics_max > TOPICS_MAX_LIMIT) {
    snprintf(err, errlen, "topics: queues_max must be 1..%u and topics_max 1..%u",
             FY_TOPIC_QUEUES_LIMIT, TOPICS_MAX_LIMIT);
    return -EINVAL;
  }
  fy_topics *t = calloc(1, sizeof *t);
  if (!t)
    return -ENOMEM;
  t->queues_max = opt->queues_max;
  t->topics_max = opt->topics_max;
  char *buf;
  size_t len;
  int r = fy__persist_open(&t->persist, loop, aio, opt->root_dir, TOPICS_FILE, "topics", &buf,
                           &len, err, errlen);
  if (r < 0)
    goto out_free;
  if (buf) {
    char why[256];
    r = fy__table_parse(&kind, buf, len, t->topics_max, &t->map, &t->version, why, sizeof why);
    free(buf);
    if (r < 0) {
      snprintf(err, errlen, "%s: %s", t->persist.path, why);
      goto out_close_persist;
    }
  } else {
    t->map = fy_strmap_new();
    if (!t->map) {
      r = -ENOMEM;
      goto out_close_persist;
    }
  }
  *out = t;
  return 0;

out_close_persist:
  fy__persist_close(&t->persist);
out_free:
  free(t);
  return r;
}

void fy_topics_close(fy_topics *t) {
  if (!t)
    return;
  fy__persist_close(&t->persist);
  fy__table_free(t->map, free);
  free(t);
}

/* ---- changes ------------------------------------------------------------ */

int fy_topics_put(fy_topics *t, const struct fy_topic_config *cfg, unsigned flags,
                  const char **why) {
  const char *dummy;
  if (!why)
    why = &dummy;
  int r = fy_topic_name_check(cfg->name, why);
  if (r < 0)
    return r;
  if (!(flags & FY_TOPIC_ALLOW_SYSTEM) && fy_topic_is_system(cfg->name)) {
    *why = "The topic is conflict with system topic.";
    return -EPERM;
  }
  r = check_config(cfg, t->queues_max, why);
  if (r < 0)
    return r;
  struct fy_topic_config *cur = lookup(t, cfg->name);
  if (cur) {
    if (!config_equal(cur, cfg)) {
      *cur = *cfg;
      changed(t);
    }
    return 0;
  }
  if (fy_strmap_size(t->map) >= t->topics_max) {
    *why = "too many topics (topics_max)";
    return -ENOSPC;
  }
  struct fy_topic_config *c = malloc(sizeof *c);
  if (!c)
    return -ENOMEM;
  *c = *cfg;
  r = fy_strmap_put(t->map, c->name, strlen(c->name), c);
  if (r < 0) {
    free(c);
    return r;
  }
  changed(t);
  return 0;
}

int fy_topics_auto_create(fy_topics *t, const char *name, uint32_t default_queues,
                          struct fy_topic_config *out, bool *created, const char **why) {
  const char *dummy;
  if (!why)
    why = &dummy;
  if (created)
    *created = false;
  int r = fy_topic_name_check(name, why);
  if (r < 0)
    return r;
  struct fy_topic_config *cur = lookup(t, name);
  if (!cur) {
    struct fy_topic_config c = {.read_queues = default_queues,
                                .write_queues = default_queues,
                                .perm = FY_PERM_DEFAULT};
    strcpy(c.name, name); /* length checked above */
    r = fy_topics_put(t, &c, 0, why);
    if (r < 0)
      return r;
    cur = lookup(t, name);
    fy_assert(cur);
    if (created)
      *created = true;
    fy_info("topics", "auto-created topic %s with %u queues", name, default_queues);
  }
  if (out)
    *out = *cur;
  return 0;
}

int fy_topics_delete(fy_topics *t, const char *name) {
  struct fy_topic_config *c = fy_strmap_del(t->map, name, strlen(name));
  if (!c)
    return -FY_ENOT_FOUND;
  free(c);
  changed(t);
  return 0;
}

/* ---- queries ------------------------------------------------------------ */

int fy_topics_get(const fy_topics *t, const char *name, struct fy_topic_config *out) {
  const struct fy_topic_config *c = lookup(t, name);
  if (!c)
    return -FY_ENOT_FOUND;
  *out = *c;
  return 0;
}

bool fy_topics_exists(const fy_topics *t, const char *name) { return lookup(t, name) != NULL; }

size_t fy_topics_count(const fy_topics *t) { return fy_strmap_size(t->map); }

struct fy_data_version fy_topics_data_version(const fy_topics *t) { return t->version; }

int fy_topics_foreach(const fy_topics *t, int (*fn)(void *arg, const struct fy_topic_config *cfg),
                      void *arg) {
  size_t pos = 0, klen;
  const char *key;
  void *v;
  while (fy_strmap_next(t->map, &pos, &key, &klen, &v)) { /* bounded by topics_max */
    int r = fn(arg, v);
    if (r)
      return r;
  }
  return 0;
}

int fy_topics_list(const fy_topics *t, struct fy_topic_config **out, size_t *n) {
  void *arr;
  int r = fy__table_list(&kind, t->map, &arr, n);
  *out = arr;
  return r;
}

/* ---- master/slave sync -------------------------------------------------- */

char *fy_topics_to_json(const fy_topics *t, size_t *len) {
  return fy__table_dump(&kind, t->map, &t->version, JSON_COMPACT, len);
}

int fy_topics_replace_from_json(fy_topics *t, const char *json, size_t len, bool *changed_out,
                                char *err, size_t errlen) {
  int r = fy__table_replace(&kind, &t->map, &t->version, t->topics_max, json, len, changed_out, err,
                            errlen);
  if (r == 0 && *changed_out)
    fy__table_save(&kind, &t->persist, t->map, &t->version);
  return r;
}
