/*
 * Subscription group configurations (RocketMQ's SubscriptionGroupManager):
 * consumer group → whether it may consume, retry policy, which broker it
 * should read from. A group is auto-created with the defaults on first use
 * (a heartbeat, a pull, a send-back) unless autoCreateSubscriptionGroup is
 * off (system groups, "CID_RMQ_SYS_*", are always auto-created, as in
 * RocketMQ); with it off, an operator creates groups on the master with
 * mqadmin updateSubGroup (native OP_UPDATE_SUB_GROUP, or RocketMQ's
 * UPDATE_AND_CREATE_SUBSCRIPTIONGROUP) and removes them with deleteSubGroup.
 *
 * What the broker acts on: consumeEnable (pulls refused when false),
 * retryQueueNums and retryMaxTimes (CONSUMER_SEND_MSG_BACK), brokerId and
 * whichBrokerWhenConsumeSlowly (pull suggestions), and
 * notifyConsumerIdsChangedEnable. consumeFromMinEnable and
 * consumeBroadcastEnable are kept and shown only.
 *
 * Persisted as <root>/config/subscriptionGroup.json in RocketMQ's shape:
 *   {"dataVersion":{"counter":N,"timestamp":T},
 *    "subscriptionGroupTable":{"G":{"groupName":"G","consumeEnable":true,
 *       "consumeFromMinEnable":true,"consumeBroadcastEnable":true,
 *       "retryQueueNums":1,"retryMaxTimes":16,"brokerId":0,
 *       "whichBrokerWhenConsumeSlowly":1,"notifyConsumerIdsChangedEnable":true}}}
 * Changes, saving, failures and the slave's replace work as for topics
 * (topics.h). Loop thread only.
 */
#ifndef FY_BROKER_GROUPS_H
#define FY_BROKER_GROUPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "broker/data_version.h"
#include "store/aio.h"
#include "store/metafile.h"

#define FY_GROUP_NAME_MAX 255u /* RocketMQ Validators.CHARACTER_MAX_LENGTH */
#define FY_GROUP_RETRY_QUEUES_LIMIT 65535u /* accepted from a file or a master */
/* Bounds on an update (fy_group_config_check): retry queues as a topic's
 * queues (the retry topic gets that many), broker ids as brokerId in
 * broker.conf. */
#define FY_GROUP_RETRY_QUEUES_MAX 1024
#define FY_GROUP_RETRY_TIMES_MAX 2147483647 /* a Java int */
#define FY_GROUP_BROKER_ID_MAX 1024
#define FY_GROUP_SYSTEM_PREFIX "CID_RMQ_SYS_"

struct fy_group_config {
  char name[FY_GROUP_NAME_MAX + 1];
  bool consume_enable;                     /* true */
  bool consume_from_min_enable;            /* true */
  bool consume_broadcast_enable;           /* true */
  uint32_t retry_queues;                   /* 1; 0 = failed messages are not retried */
  uint32_t retry_max_times;                /* 16; then to %DLQ%group */
  uint64_t broker_id;                      /* 0 = master */
  uint64_t which_broker_when_consume_slowly; /* 1 */
  bool notify_consumer_ids_changed_enable; /* true */
};

struct fy_groups_options {
  const char *root_dir; /* NULL: in memory only (loop and aio may be NULL) */
  bool auto_create;     /* autoCreateSubscriptionGroup; default true */
  uint32_t groups_max;  /* bound on the table; default 65536 */
};

typedef struct fy_groups fy_groups;

/* Fills in the defaults (root_dir NULL). */
void fy_groups_options_init(struct fy_groups_options *opt);

/* RocketMQ's defaults for a new group called name (which must fit). */
void fy_group_config_default(struct fy_group_config *cfg, const char *name);

/* 0 if name is a valid group name (non-empty, at most FY_GROUP_NAME_MAX
 * bytes, only [%|a-zA-Z0-9_-]); else -EINVAL with *why (may be NULL). */
int fy_group_name_check(const char *name, const char **why);
bool fy_group_is_system(const char *name);

/* 0 if cfg may be stored by an update: a valid name, retry_queues at most
 * FY_GROUP_RETRY_QUEUES_MAX, retry_max_times at most FY_GROUP_RETRY_TIMES_MAX,
 * broker_id and which_broker_when_consume_slowly at most
 * FY_GROUP_BROKER_ID_MAX. Else -EINVAL with *why (may be NULL), a sentence
 * naming the field and its bounds. */
int fy_group_config_check(const struct fy_group_config *cfg, const char **why);

/* A group from one RocketMQ SubscriptionGroupConfig JSON object in
 * json[0, len) (UPDATE_AND_CREATE_SUBSCRIPTIONGROUP's body): groupName is
 * required, every other field takes fy_group_config_default's value when
 * absent, unknown fields (5.x's groupRetryPolicy, attributes, ...) are
 * ignored, and the result must pass fy_group_config_check. 0, or -EINVAL
 * with err naming the field. */
int fy_group_config_from_json(const char *json, size_t len, struct fy_group_config *out,
                              char *err, size_t errlen);

/* Start-up (blocking); errors as fy_topics_open (corrupt file → -FY_ECORRUPT
 * with err naming the file). */
int fy_groups_open(uv_loop_t *loop, fy_aio *aio, const struct fy_groups_options *opt,
                   fy_groups **out, char *err, size_t errlen);
/* Frees the table; a save in flight completes in the background. */
void fy_groups_close(fy_groups *g);

/* ---- changes (each bumps the data version and schedules a save) ---- */

/* Creates or replaces cfg->name, every field (admin update). -EINVAL when
 * fy_group_config_check refuses it, -ENOSPC table full; *why (may be NULL)
 * says why. An unchanged configuration changes nothing. */
int fy_groups_put(fy_groups *g, const struct fy_group_config *cfg, const char **why);

/* The configuration of name in *out (may be NULL). When missing it is
 * created with the defaults if auto_create is on or the group is a system
 * group (*created = true); otherwise -FY_ENOT_FOUND. -EINVAL bad name,
 * -ENOSPC table full. */
int fy_groups_find_or_create(fy_groups *g, const char *name, struct fy_group_config *out,
                             bool *created);

/* Removes name: 0 or -FY_ENOT_FOUND. */
int fy_groups_delete(fy_groups *g, const char *name);

/* ---- queries ---- */

int fy_groups_get(const fy_groups *g, const char *name, struct fy_group_config *out);
size_t fy_groups_count(const fy_groups *g);
struct fy_data_version fy_groups_data_version(const fy_groups *g);
/* As fy_topics_foreach. */
int fy_groups_foreach(const fy_groups *g, int (*fn)(void *arg, const struct fy_group_config *cfg),
                      void *arg);
/* Sorted snapshot; the caller frees *out. */
int fy_groups_list(const fy_groups *g, struct fy_group_config **out, size_t *n);

/* ---- master/slave sync and persistence: as for topics ---- */

char *fy_groups_to_json(const fy_groups *g, size_t *len);
int fy_groups_replace_from_json(fy_groups *g, const char *json, size_t len, bool *changed,
                                char *err, size_t errlen);
int fy_groups_flush(fy_groups *g, fy_metafile_cb cb, void *arg);
int fy_groups_persist_status(const fy_groups *g);

#endif
