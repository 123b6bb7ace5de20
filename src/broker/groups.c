/*
 * Subscription group configurations (see groups.h). Why a module: pulls,
 * retries and the DLQ all consult the group's settings, a group must exist
 * (auto-created or configured) before its consumers are served, and the
 * slave must hold the same settings as the master.
 *
 * Same structure as topics.c: a strmap of name → malloc'ed config, the whole
 * table saved through a metafile after each change.
 */
#include "broker/groups.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/persist.h"
#include "common/err.h"
#include "common/log.h"
#include "common/record.h"
#include "common/strmap.h"

#define GROUPS_FILE "subscriptionGroup.json"
#define GROUPS_MAX_DEFAULT 65536u
#define GROUPS_MAX_LIMIT (1u << 24)

struct fy_groups {
  fy_strmap *map; /* name → struct fy_group_config * */
  struct fy_data_version version;
  bool auto_create;
  uint32_t groups_max;
  struct fy__persist persist;
};

/* ---- names and defaults ------------------------------------------------- */

int fy_group_name_check(const char *name, const char **why) {
  const char *msg = NULL;
  size_t len = name ? strnlen(name, FY_GROUP_NAME_MAX + 1) : 0;
  if (len == 0)
    msg = "the specified group is blank";
  else if (len > FY_GROUP_NAME_MAX)
    msg = "the specified group is longer than group max length 255.";
  else if (!fy_name_chars_ok(name, len))
    msg = "the specified group contains illegal characters, allowing only ^[%|a-zA-Z0-9_-]+$";
  if (why)
    *why = msg;
  return msg ? -EINVAL : 0;
}

bool fy_group_is_system(const char *name) {
  return strncmp(name, FY_GROUP_SYSTEM_PREFIX, strlen(FY_GROUP_SYSTEM_PREFIX)) == 0;
}

void fy_group_config_default(struct fy_group_config *cfg, const char *name) {
  memset(cfg, 0, sizeof *cfg);
  fy_assert(strlen(name) <= FY_GROUP_NAME_MAX);
  strcpy(cfg->name, name);
  cfg->consume_enable = true;
  cfg->consume_from_min_enable = true;
  cfg->consume_broadcast_enable = true;
  cfg->retry_queues = 1;
  cfg->retry_max_times = 16;
  cfg->broker_id = 0;
  cfg->which_broker_when_consume_slowly = 1;
  cfg->notify_consumer_ids_changed_enable = true;
}

#define STR_(x) #x
#define STR(x) STR_(x)

int fy_group_config_check(const struct fy_group_config *cfg, const char **why) {
  const char *msg = NULL;
  if (fy_group_name_check(cfg->name, &msg) == 0) {
    if (cfg->retry_queues > FY_GROUP_RETRY_QUEUES_MAX)
      msg = "retryQueueNums must be from 0 to " STR(FY_GROUP_RETRY_QUEUES_MAX);
    else if (cfg->retry_max_times > FY_GROUP_RETRY_TIMES_MAX)
      msg = "retryMaxTimes must be from 0 to " STR(FY_GROUP_RETRY_TIMES_MAX);
    else if (cfg->broker_id > FY_GROUP_BROKER_ID_MAX)
      msg = "brokerId must be from 0 to " STR(FY_GROUP_BROKER_ID_MAX);
    else if (cfg->which_broker_when_consume_slowly > FY_GROUP_BROKER_ID_MAX)
      msg = "whichBrokerWhenConsumeSlowly must be from 0 to " STR(FY_GROUP_BROKER_ID_MAX);
  }
  if (why)
    *why = msg;
  return msg ? -EINVAL : 0;
}

static bool config_equal(const struct fy_group_config *a, const struct fy_group_config *b) {
  return strcmp(a->name, b->name) == 0 && a->consume_enable == b->consume_enable &&
         a->consume_from_min_enable == b->consume_from_min_enable &&
         a->consume_broadcast_enable == b->consume_broadcast_enable &&
         a->retry_queues == b->retry_queues && a->retry_max_times == b->retry_max_times &&
         a->broker_id == b->broker_id &&
         a->which_broker_when_consume_slowly == b->which_broker_when_consume_slowly &&
         a->notify_consumer_ids_changed_enable == b->notify_consumer_ids_changed_enable;
}

/* ---- table helpers ------------------------------------------------------ */

static struct fy_group_config *lookup(const fy_groups *g, const char *name) {
  return fy_strmap_get(g->map, name, strlen(name));
}

/* ---- JSON --------------------------------------------------------------- */

static json_t *group_to_json(const void *entry) {
  const struct fy_group_config *c = entry;
  return json_pack("{s:s,s:b,s:b,s:b,s:I,s:I,s:I,s:I,s:b}", "groupName", c->name,
                   "consumeEnable", c->consume_enable, "consumeFromMinEnable",
                   c->consume_from_min_enable, "consumeBroadcastEnable",
                   c->consume_broadcast_enable, "retryQueueNums", (json_int_t)c->retry_queues,
                   "retryMaxTimes", (json_int_t)c->retry_max_times, "brokerId",
                   (json_int_t)c->broker_id, "whichBrokerWhenConsumeSlowly",
                   (json_int_t)c->which_broker_when_consume_slowly,
                   "notifyConsumerIdsChangedEnable", c->notify_consumer_ids_changed_enable);
}

/* The fields but the name; retry queues up to rq_max, broker ids up to id_max
 * (a file or a master's table is taken with wider bounds than an update). */
static int group_fields_from_json(json_t *v, struct fy_group_config *c, uint64_t rq_max,
                                  uint64_t id_max, char *err, size_t errlen) {
  uint64_t rq, rmax, bid, slow;
  int r = fy__json_bool(v, "consumeEnable", true, &c->consume_enable, err, errlen);
  if (r == 0)
    r = fy__json_bool(v, "consumeFromMinEnable", true, &c->consume_from_min_enable, err, errlen);
  if (r == 0)
    r = fy__json_bool(v, "consumeBroadcastEnable", true, &c->consume_broadcast_enable, err,
                      errlen);
  if (r == 0)
    r = fy__json_bool(v, "notifyConsumerIdsChangedEnable", true,
                      &c->notify_consumer_ids_changed_enable, err, errlen);
  if (r == 0)
    r = fy__json_uint(v, "retryQueueNums", false, 1, 0, rq_max, &rq, err, errlen);
  if (r == 0)
    r = fy__json_uint(v, "retryMaxTimes", false, 16, 0, FY_GROUP_RETRY_TIMES_MAX, &rmax, err,
                      errlen);
  if (r == 0)
    r = fy__json_uint(v, "brokerId", false, 0, 0, id_max, &bid, err, errlen);
  if (r == 0)
    r = fy__json_uint(v, "whichBrokerWhenConsumeSlowly", false, 1, 0, id_max, &slow, err, errlen);
  if (r < 0)
    return r;
  c->retry_queues = (uint32_t)rq;
  c->retry_max_times = (uint32_t)rmax;
  c->broker_id = bid;
  c->which_broker_when_consume_slowly = slow;
  return 0;
}

/* One entry of subscriptionGroupTable; the name comes from the key. */
static int group_from_json(const char *key, json_t *v, void *entry, char *err, size_t errlen) {
  struct fy_group_config *c = entry;
  const char *why;
  if (fy_group_name_check(key, &why) < 0) {
    snprintf(err, errlen, "group \"%.*s\": %s", (int)FY_GROUP_NAME_MAX, key, why);
    return -FY_ECORRUPT;
  }
  fy_group_config_default(c, key);
  if (!json_is_object(v)) {
    snprintf(err, errlen, "group \"%s\": not a JSON object", key);
    return -FY_ECORRUPT;
  }
  json_t *name = json_object_get(v, "groupName");
  if (name && (!json_is_string(name) || strcmp(json_string_value(name), key) != 0)) {
    snprintf(err, errlen, "group \"%s\": groupName does not match its key", key);
    return -FY_ECORRUPT;
  }
  char field[160];
  int r = group_fields_from_json(v, c, FY_GROUP_RETRY_QUEUES_LIMIT, INT64_MAX, field,
                                 sizeof field);
  if (r < 0)
    snprintf(err, errlen, "group \"%s\": %s", key, field);
  return r;
}

int fy_group_config_from_json(const char *json, size_t len, struct fy_group_config *out,
                              char *err, size_t errlen) {
  json_t *root;
  char why[200];
  int r = fy__json_parse(json, len, &root, why, sizeof why);
  if (r < 0) {
    snprintf(err, errlen, "not a SubscriptionGroupConfig: %s", why);
    return -EINVAL;
  }
  json_t *name = json_object_get(root, "groupName"); /* root is an object (fy__json_parse) */
  const char *bad = NULL;
  if (!json_is_string(name)) {
    snprintf(err, errlen, "groupName is %s", name ? "not a string" : "missing");
    r = -EINVAL;
  } else if (fy_group_name_check(json_string_value(name), &bad) < 0) {
    snprintf(err, errlen, "groupName: %s", bad);
    r = -EINVAL;
  } else {
    fy_group_config_default(out, json_string_value(name));
    if (group_fields_from_json(root, out, FY_GROUP_RETRY_QUEUES_MAX, FY_GROUP_BROKER_ID_MAX, why,
                               sizeof why) < 0) {
      snprintf(err, errlen, "%s", why);
      r = -EINVAL;
    } else if (fy_group_config_check(out, &bad) < 0) {
      snprintf(err, errlen, "%s", bad);
      r = -EINVAL;
    }
  }
  json_decref(root);
  return r;
}

static bool entry_equal(const void *a, const void *b) { return config_equal(a, b); }

static const struct fy__table_kind kind = {
    .table_key = "subscriptionGroupTable",
    .what = "groups",
    .entry_size = sizeof(struct fy_group_config),
    .name_offset = offsetof(struct fy_group_config, name),
    .from_json = group_from_json,
    .equal = entry_equal,
    .to_json = group_to_json,
    .title = "the subscription groups",
};

/* ---- persistence -------------------------------------------------------- */

static void changed(fy_groups *g) {
  fy__data_version_bump(&g->version);
  fy__table_save(&kind, &g->persist, g->map, &g->version);
}

int fy_groups_flush(fy_groups *g, fy_metafile_cb cb, void *arg) {
  return fy__table_flush(&kind, &g->persist, g->map, &g->version, cb, arg);
}

int fy_groups_persist_status(const fy_groups *g) { return g->persist.status; }

/* ---- life cycle --------------------------------------------------------- */

void fy_groups_options_init(struct fy_groups_options *opt) {
  opt->root_dir = NULL;
  opt->auto_create = true;
  opt->groups_max = GROUPS_MAX_DEFAULT;
}

int fy_groups_open(uv_loop_t *loop, fy_aio *aio, const struct fy_groups_options *opt,
                   fy_groups **out, char *err, size_t errlen) {
  if (opt->groups_max < 1 || opt->groups_max > GROUPS_MAX_LIMIT) {
    snprintf(err, errlen, "groups: groups_max must be 1..%u", GROUPS_MAX_LIMIT);
    return -EINVAL;
  }
  fy_groups *g = calloc(1, sizeof *g);
  if (!g)
    return -ENOMEM;
  g->auto_create = opt->auto_create;
  g->groups_max = opt->groups_max;
  char *buf;
  size_t len;
  int r = fy__persist_open(&g->persist, loop, aio, opt->root_dir, GROUPS_FILE, "groups", &buf,
                           &len, err, errlen);
  if (r < 0)
    goto out_free;
  if (buf) {
    char why[320];
    r = fy__table_parse(&kind, buf, len, g->groups_max, &g->map, &g->version, why, sizeof why);
    free(buf);
    if (r < 0) {
      snprintf(err, errlen, "%s: %s", g->persist.path, why);
      goto out_close_persist;
    }
  } else {
    g->map = fy_strmap_new();
    if (!g->map) {
      r = -ENOMEM;
      goto out_close_persist;
    }
  }
  *out = g;
  return 0;

out_close_persist:
  fy__persist_close(&g->persist);
out_free:
  free(g);
  return r;
}

void fy_groups_close(fy_groups *g) {
  if (!g)
    return;
  fy__persist_close(&g->persist);
  fy__table_free(g->map, free);
  free(g);
}

/* ---- changes ------------------------------------------------------------ */

int fy_groups_put(fy_groups *g, const struct fy_group_config *cfg, const char **why) {
  const char *dummy;
  if (!why)
    why = &dummy;
  int r = fy_group_config_check(cfg, why);
  if (r < 0)
    return r;
  struct fy_group_config *cur = lookup(g, cfg->name);
  if (cur) {
    if (!config_equal(cur, cfg)) {
      *cur = *cfg;
      changed(g);
    }
    return 0;
  }
  if (fy_strmap_size(g->map) >= g->groups_max) {
    *why = "too many subscription groups (groups_max)";
    return -ENOSPC;
  }
  struct fy_group_config *c = malloc(sizeof *c);
  if (!c)
    return -ENOMEM;
  *c = *cfg;
  r = fy_strmap_put(g->map, c->name, strlen(c->name), c);
  if (r < 0) {
    free(c);
    return r;
  }
  changed(g);
  return 0;
}

int fy_groups_find_or_create(fy_groups *g, const char *name, struct fy_group_config *out,
                             bool *created) {
  if (created)
    *created = false;
  int r = fy_group_name_check(name, NULL);
  if (r < 0)
    return r;
  struct fy_group_config *cur = lookup(g, name);
  if (!cur) {
    if (!g->auto_create && !fy_group_is_system(name))
      return -FY_ENOT_FOUND;
    struct fy_group_config c;
    fy_group_config_default(&c, name);
    r = fy_groups_put(g, &c, NULL);
    if (r < 0)
      return r;
    cur = lookup(g, name);
    fy_assert(cur);
    if (created)
      *created = true;
    fy_info("groups", "auto-created subscription group %s", name);
  }
  if (out)
    *out = *cur;
  return 0;
}

int fy_groups_delete(fy_groups *g, const char *name) {
  struct fy_group_config *c = fy_strmap_del(g->map, name, strlen(name));
  if (!c)
    return -FY_ENOT_FOUND;
  free(c);
  changed(g);
  return 0;
}

/* ---- queries ------------------------------------------------------------ */

int fy_groups_get(const fy_groups *g, const char *name, struct fy_group_config *out) {
  const struct fy_group_config *c = lookup(g, name);
  if (!c)
    return -FY_ENOT_FOUND;
  *out = *c;
  return 0;
}

size_t fy_groups_count(const fy_groups *g) { return fy_strmap_size(g->map); }

struct fy_data_version fy_groups_data_version(const fy_groups *g) { return g->version; }

int fy_groups_foreach(const fy_groups *g, int (*fn)(void *arg, const struct fy_group_config *cfg),
                      void *arg) {
  size_t pos = 0, klen;
  const char *key;
  void *v;
  while (fy_strmap_next(g->map, &pos, &key, &klen, &v)) { /* bounded by groups_max */
    int r = fn(arg, v);
    if (r)
      return r;
  }
  return 0;
}

int fy_groups_list(const fy_groups *g, struct fy_group_config **out, size_t *n) {
  void *arr;
  int r = fy__table_list(&kind, g->map, &arr, n);
  *out = arr;
  return r;
}

/* ---- master/slave sync -------------------------------------------------- */

char *fy_groups_to_json(const fy_groups *g, size_t *len) {
  return fy__table_dump(&kind, g->map, &g->version, JSON_COMPACT, len);
}

int fy_groups_replace_from_json(fy_groups *g, const char *json, size_t len, bool *changed_out,
                                char *err, size_t errlen) {
  int r = fy__table_replace(&kind, &g->map, &g->version, g->groups_max, json, len, changed_out, err,
                            errlen);
  if (r == 0 && *changed_out)
    fy__table_save(&kind, &g->persist, g->map, &g->version);
  return r;
}
