/*
 * What the broker's metadata tables (topics, subscription groups, consumer
 * offsets) share: the JSON file under <root>/config that is read once at
 * start-up and replaced through a metafile after changes, RocketMQ's
 * DataVersion, and small JSON helpers that turn a bad document into an
 * error message naming the field.
 *
 * Internal to src/broker (fy__ names); the tables' public headers do not
 * include it, so jansson stays out of their users' way.
 */
#ifndef FY_BROKER_PERSIST_H
#define FY_BROKER_PERSIST_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "broker/data_version.h"
#include "common/strmap.h"
#include "store/aio.h"
#include "store/metafile.h"

/* counter + 1, timestamp = now. */
void fy__data_version_bump(struct fy_data_version *v);
/* {"counter":N,"timestamp":T}, or NULL on -ENOMEM. */
json_t *fy__data_version_to_json(const struct fy_data_version *v);
/* Reads root["dataVersion"] (absent: zeros). */
int fy__data_version_from_json(json_t *root, struct fy_data_version *v, char *err, size_t errlen);

/* Wall clock in milliseconds. */
int64_t fy__now_ms(void);

/* ---- JSON helpers: on error they return -FY_ECORRUPT and write a message ---- */

/* Parses buf[0, len) (duplicate keys rejected); the message names line and column. */
int fy__json_parse(const char *buf, size_t len, json_t **root, char *err, size_t errlen);
/* obj[key] as an integer in [min, max]; def when absent and !required. */
int fy__json_uint(json_t *obj, const char *key, bool required, uint64_t def, uint64_t min,
                  uint64_t max, uint64_t *out, char *err, size_t errlen);
/* obj[key] as a boolean; def when absent. */
int fy__json_bool(json_t *obj, const char *key, bool def, bool *out, char *err, size_t errlen);
/* obj[key] as an object; an empty object's worth of nothing (NULL) when absent. */
int fy__json_object(json_t *obj, const char *key, json_t **out, char *err, size_t errlen);
/* Serializes root into a fresh malloc'ed, NUL-terminated buffer (len excludes
 * the NUL); NULL on -ENOMEM. */
char *fy__json_dump(const json_t *root, size_t flags, size_t *len);

/* ---- a table of named entries: {"dataVersion": ..., "<table>": {name: entry}} ---- */

/* Frees every value of map with free_entry, then map; NULL is fine. */
void fy__table_free(fy_strmap *map, void (*free_entry)(void *));

/* What differs between the tables of topics and of subscription groups. */
struct fy__table_kind {
  const char *table_key; /* "topicConfigTable" */
  const char *what;      /* "topics": "%zu topics, more than topics_max (%u)" */
  size_t entry_size;
  size_t name_offset; /* of the entry's NUL-terminated name, the map's key */
  /* Validates v, the entry under key, into entry; the message names it. */
  int (*from_json)(const char *key, json_t *v, void *entry, char *err, size_t errlen);
  /* Whether two entries are the same (name and configuration). */
  bool (*equal)(const void *a, const void *b);
  /* The entry as the table's JSON holds it; NULL when out of memory. */
  json_t *(*to_json)(const void *entry);
  /* "the topic table": what a failed save's message names */
  const char *title;
};

/* The document {"dataVersion": dv, <table_key>: {name: entry...}} dumped
 * with flags (JSON_COMPACT, or indented and sorted for the file); NULL when
 * out of memory. */
char *fy__table_dump(const struct fy__table_kind *kind, const fy_strmap *map,
                     const struct fy_data_version *dv, size_t flags, size_t *len);

/* Parses and validates a whole document buf[0, len) into a fresh map (at
 * most max entries) and its data version; on error nothing is allocated and
 * err says what is wrong. */
int fy__table_parse(const struct fy__table_kind *kind, const char *buf, size_t len, uint32_t max,
                    fy_strmap **out, struct fy_data_version *dv, char *err, size_t errlen);

/* Takes the document json[0, len) (at most max entries) as the new *map and
 * *dv, unless it holds the same entries under the same version: the
 * version alone is not trusted, as two tables changed once in the same
 * millisecond carry equal versions. *changed says whether it took it (the
 * caller then saves). 0, or an error with err set and nothing changed. */
int fy__table_replace(const struct fy__table_kind *kind, fy_strmap **map,
                      struct fy_data_version *dv, uint32_t max, const char *json, size_t len,
                      bool *changed, char *err, size_t errlen);

/* The map's entries copied into a new array (free() it) sorted by name;
 * *out is NULL when there are none. 0 or -ENOMEM. */
int fy__table_list(const struct fy__table_kind *kind, const fy_strmap *map, void **out,
                   size_t *n);

/* ---- the persisted file ---- */

struct fy__persist {
  fy_metafile *mf; /* NULL: in memory only */
  char *path;      /* NULL: in memory only */
  const char *module;
  int status;        /* the latest finished save: 0 or a negative errno */
  uint64_t failures; /* finished saves that failed */
  /* Optional owner hook, called after each finished save (not after close). */
  void (*on_saved)(void *owner, int status);
  void *owner;
};

/*
 * Start-up (blocking): with root_dir NULL, sets up an in-memory table (*buf =
 * NULL). Otherwise creates <root_dir>/config if needed, reads
 * <root_dir>/config/<file> into *buf (malloc'ed, NUL-terminated; NULL when
 * the file does not exist) and creates the metafile that will replace it.
 * Errors write a message naming the path.
 */
int fy__persist_open(struct fy__persist *p, uv_loop_t *loop, fy_aio *aio, const char *root_dir,
                     const char *file, const char *module, char **buf, size_t *len, char *err,
                     size_t errlen);
/* Saves json (malloc'ed, owned from here on, as fy_metafile_save). In memory
 * only: frees json and returns 0 without cb, or -EINVAL if cb is given (there
 * is nothing to wait for). */
int fy__persist_save(struct fy__persist *p, char *json, size_t len, fy_metafile_cb cb, void *arg);
/* Saves the table (fy__table_dump) in the background; a save that cannot be
 * started is logged and kept in p->status. */
void fy__table_save(const struct fy__table_kind *kind, struct fy__persist *p,
                    const fy_strmap *map, const struct fy_data_version *dv);
/* Saves the table now and calls cb when it is on disk: -EINVAL in memory
 * only, -ENOMEM, or fy__persist_save's result. */
int fy__table_flush(const struct fy__table_kind *kind, struct fy__persist *p,
                    const fy_strmap *map, const struct fy_data_version *dv, fy_metafile_cb cb,
                    void *arg);
/* Closes the metafile (a save in flight completes in the background). */
void fy__persist_close(struct fy__persist *p);

#endif
