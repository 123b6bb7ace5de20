/*
 * The broker's topic configurations (RocketMQ's TopicConfigManager): topic
 * name → queue counts, permission, order flag, system flag, with a data
 * version bumped on every change.
 *
 * Persisted as <root>/config/topics.json in RocketMQ's shape:
 *   {"dataVersion":{"counter":N,"timestamp":T},
 *    "topicConfigTable":{"T":{"topicName":"T","readQueueNums":8,"writeQueueNums":8,
 *                             "perm":6,"topicFilterType":"SINGLE_TAG",
 *                             "topicSysFlag":0,"order":false}}}
 * Each change schedules a save of the whole table through a metafile (so
 * bursts coalesce). A change is applied in memory at once; it is durable
 * once a later fy_topics_flush callback reports 0. A failed save is logged
 * and kept in fy_topics_persist_status; the next change or flush writes the
 * whole table again.
 *
 * Pure table logic: no sockets, no protocol. Loop thread only.
 */
#ifndef FY_BROKER_TOPICS_H
#define FY_BROKER_TOPICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "broker/data_version.h"
#include "store/aio.h"
#include "store/metafile.h"

#define FY_TOPIC_NAME_MAX 127u /* RocketMQ TOPIC_MAX_LENGTH */
/* Queue counts accepted from a file or a master, whatever queues_max says. */
#define FY_TOPIC_QUEUES_LIMIT 65535u

/* Permission bits (RocketMQ PermName). */
#define FY_PERM_INHERIT 1u
#define FY_PERM_WRITE 2u
#define FY_PERM_READ 4u
#define FY_PERM_DEFAULT (FY_PERM_READ | FY_PERM_WRITE)

struct fy_topic_config {
  char name[FY_TOPIC_NAME_MAX + 1];
  uint32_t read_queues;
  uint32_t write_queues;
  uint32_t perm; /* FY_PERM_* bits */
  bool order;
  uint32_t topic_sys_flag;
};

struct fy_topics_options {
  const char *root_dir; /* NULL: in memory only (loop and aio may be NULL) */
  uint32_t queues_max;  /* create/update bound on queue counts; default 1024 */
  uint32_t topics_max;  /* bound on the table; default 65536 */
};

typedef struct fy_topics fy_topics;

/* Fills in the defaults (root_dir NULL). */
void fy_topics_options_init(struct fy_topics_options *opt);

/*
 * Start-up (blocking): loads <root>/config/topics.json if it exists. A file
 * that does not parse or holds an invalid entry is an error
 * (-FY_ECORRUPT) with a message in err naming the file and the problem; it is
 * never silently discarded. The file is not written until the first change.
 */
int fy_topics_open(uv_loop_t *loop, fy_aio *aio, const struct fy_topics_options *opt,
                   fy_topics **out, char *err, size_t errlen);

/* Frees the table. A save in flight completes in the background (aio must
 * stay open until then; flush first for an orderly shutdown). */
void fy_topics_close(fy_topics *t);

/* ---- names ---- */

/* 0 if name is a syntactically valid topic name (non-empty, at most
 * FY_TOPIC_NAME_MAX bytes, only [%|a-zA-Z0-9_-]); else -EINVAL and *why (if
 * why is non-NULL) says what is wrong, in RocketMQ's words. */
int fy_topic_name_check(const char *name, const char **why);
/* True for RocketMQ's reserved topics (TBW102, SCHEDULE_TOPIC_XXXX,
 * RMQ_SYS_*, the rmq_sys_ prefix, ...): only the broker creates those. */
bool fy_topic_is_system(const char *name);

/* ---- changes (each bumps the data version and schedules a save) ---- */

/* fy_topics_put flag: allow a reserved name (the broker's own topics). */
#define FY_TOPIC_ALLOW_SYSTEM 1u

/*
 * Creates or replaces cfg->name. Errors (table unchanged, *why set):
 * -EINVAL bad name, queue count outside 1..queues_max, perm outside 0..7;
 * -EPERM reserved name without FY_TOPIC_ALLOW_SYSTEM; -ENOSPC table full.
 * Putting a configuration equal to the current one changes nothing.
 */
int fy_topics_put(fy_topics *t, const struct fy_topic_config *cfg, unsigned flags,
                  const char **why);

/* Returns the configuration of name in *out (may be NULL), creating it first
 * if missing with default_queues read and write queues, perm 6 (*created
 * says which). The caller (the broker) decides whether auto-creation is
 * allowed. Reserved names are refused (-EPERM); errors as fy_topics_put. */
int fy_topics_auto_create(fy_topics *t, const char *name, uint32_t default_queues,
                          struct fy_topic_config *out, bool *created, const char **why);

/* Removes name: 0 or -FY_ENOT_FOUND. */
int fy_topics_delete(fy_topics *t, const char *name);

/* ---- queries ---- */

/* Copies the configuration of name into *out: 0 or -FY_ENOT_FOUND. */
int fy_topics_get(const fy_topics *t, const char *name, struct fy_topic_config *out);
bool fy_topics_exists(const fy_topics *t, const char *name);
size_t fy_topics_count(const fy_topics *t);
struct fy_data_version fy_topics_data_version(const fy_topics *t);

/* Calls fn for every topic, in no particular order, until fn returns
 * non-zero (that value is returned; 0 after a full pass). fn must not change
 * the table. */
int fy_topics_foreach(const fy_topics *t, int (*fn)(void *arg, const struct fy_topic_config *cfg),
                      void *arg);

/* A snapshot of all topics sorted by name, in a fresh malloc'ed array the
 * caller frees (NULL when empty). 0 or -ENOMEM. */
int fy_topics_list(const fy_topics *t, struct fy_topic_config **out, size_t *n);

/* ---- master/slave sync ---- */

/* The whole table and data version as compact JSON in topics.json's shape
 * (the master's answer to a slave). Fresh malloc'ed, NUL-terminated; *len
 * excludes the NUL. NULL on -ENOMEM. */
char *fy_topics_to_json(const fy_topics *t, size_t *len);

/*
 * Slave side: replaces the whole table with the master's json (the shape of
 * fy_topics_to_json) and adopts its data version. If both the versions and
 * the tables are equal, nothing changes (*changed = false); equal versions
 * alone are not trusted (two tables changed once within one millisecond
 * have equal versions). The document is validated completely
 * before anything changes: on error (-FY_ECORRUPT, -ENOSPC) the table is
 * intact and err says why. Names and counts are checked against the file
 * limits, not against this broker's queues_max.
 */
int fy_topics_replace_from_json(fy_topics *t, const char *json, size_t len, bool *changed,
                                char *err, size_t errlen);

/* ---- persistence ---- */

/* Saves the whole table now; cb(arg, status) runs once it is durable (0) or
 * the save failed. Error returns as fy_metafile_save; -EINVAL when the table
 * is in memory only. */
int fy_topics_flush(fy_topics *t, fy_metafile_cb cb, void *arg);

/* 0, or the error of the latest finished save if it failed. */
int fy_topics_persist_status(const fy_topics *t);

#endif
