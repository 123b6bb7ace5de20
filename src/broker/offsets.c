/*
 * Consumer offsets (see offsets.h). Why a module: every commit, query and
 * HA sync goes through one table, and the one rule that matters across a
 * failover — offsets learnt from the other broker only ever move forward —
 * is enforced here, not in each caller.
 *
 * Layout: a strmap "topic@group" → entry; an entry holds its queues' slots
 * sorted by queue id (sparse, so memory follows the offsets held, whatever
 * the queue ids). '@' cannot
 * occur in valid topic or group names, so the key splits unambiguously.
 * Documents (file, merge) are validated into a flat list of items before
 * anything changes, so a bad document leaves the table untouched.
 */
#include "broker/offsets.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/persist.h"
#include "common/err.h"
#include "common/log.h"
#include "common/strmap.h"

#define OFFSETS_FILE "consumerOffset.json"
#define FLUSH_INTERVAL_DEFAULT_MS 5000u
#define ENTRIES_MAX_DEFAULT (1u << 20)
#define ENTRIES_MAX_LIMIT (1u << 26)
#define QUEUES_MAX_DEFAULT 1024u
#define KEY_MAX (FY_TOPIC_NAME_MAX + 1 + FY_GROUP_NAME_MAX)

struct qslot {
  uint32_t queue_id;
  int64_t offset;
  int64_t updated_ms;
};

struct entry {
  char *key;        /* "topic@group", NUL-terminated */
  size_t topic_len; /* the group starts at key + topic_len + 1 */
  uint32_t used;    /* slots in q, sorted by queue_id */
  uint32_t cap;
  struct qslot *q;
};

struct fy_offsets {
  fy_strmap *map; /* key → struct entry * */
  uint64_t entries;
  uint32_t entries_max;
  uint32_t queues_max;
  uint64_t flush_interval_ms;
  bool dirty;
  uint64_t backward_commits;
  bool has_timer;
  uv_timer_t timer;
  struct fy__persist persist;
};

enum set_mode { SET_COMMIT, SET_RESET, SET_MAX };

/* ---- keys and entries --------------------------------------------------- */

/* Writes "topic@group" into key (KEY_MAX + 1 bytes); -EINVAL for bad names. */
static int make_key(const char *group, const char *topic, char *key, size_t *len) {
  if (fy_group_name_check(group, NULL) < 0 || fy_topic_name_check(topic, NULL) < 0)
    return -EINVAL;
  int n = snprintf(key, KEY_MAX + 1, "%s@%s", topic, group);
  fy_assert(n > 0 && (size_t)n <= KEY_MAX);
  *len = (size_t)n;
  return 0;
}

static const char *entry_group(const struct entry *e) { return e->key + e->topic_len + 1; }

static void entry_free(void *p) {
  struct entry *e = p;
  free(e->q);
  free(e->key);
  free(e);
}

static struct entry *entry_new(const char *key, size_t len) {
  struct entry *e = calloc(1, sizeof *e);
  if (!e)
    return NULL;
  e->key = strndup(key, len);
  if (!e->key) {
    free(e);
    return NULL;
  }
  const char *at = strchr(e->key, '@');
  fy_assert(at);
  e->topic_len = (size_t)(at - e->key);
  return e;
}

/* Index of the first slot whose queue id is >= queue_id. */
static uint32_t lower_bound(const struct entry *e, uint32_t queue_id) {
  uint32_t lo = 0, hi = e->used;
  while (lo < hi) { /* bounded: log2(used) rounds */
    uint32_t mid = lo + (hi - lo) / 2;
    if (e->q[mid].queue_id < queue_id)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

static struct qslot *entry_slot(const struct entry *e, uint32_t queue_id) {
  uint32_t i = lower_bound(e, queue_id);
  return i < e->used && e->q[i].queue_id == queue_id ? &e->q[i] : NULL;
}

/* Inserts an empty slot for queue_id (not present yet) in order. */
static struct qslot *entry_insert(struct entry *e, uint32_t queue_id) {
  if (e->used == e->cap) {
    uint32_t cap = e->cap ? e->cap * 2 : 4;
    struct qslot *q = realloc(e->q, (size_t)cap * sizeof *q);
    if (!q)
      return NULL;
    e->q = q;
    e->cap = cap;
  }
  uint32_t i = lower_bound(e, queue_id);
  memmove(&e->q[i + 1], &e->q[i], (size_t)(e->used - i) * sizeof *e->q);
  e->used++;
  e->q[i] = (struct qslot){.queue_id = queue_id, .offset = -1};
  return &e->q[i];
}

static const struct qslot *find_slot(const fy_offsets *o, const char *key, size_t len,
                                     uint32_t queue_id) {
  const struct entry *e = fy_strmap_get(o->map, key, len);
  return e ? entry_slot(e, queue_id) : NULL;
}

static bool slot_exists(const fy_offsets *o, const char *key, size_t len, uint32_t queue_id) {
  return find_slot(o, key, len, queue_id) != NULL;
}

/* The slot of (key, queue_id), creating the entry and the slot if needed
 * (*created says so; a new slot has offset -1). */
static int get_slot(fy_offsets *o, const char *key, size_t len, uint32_t queue_id,
                    struct qslot **out, bool *created) {
  struct entry *e = fy_strmap_get(o->map, key, len);
  *created = false;
  struct qslot *s = e ? entry_slot(e, queue_id) : NULL;
  if (s) {
    *out = s;
    return 0;
  }
  if (o->entries >= o->entries_max)
    return -ENOSPC;
  bool fresh = !e;
  if (fresh) {
    e = entry_new(key, len);
    if (!e)
      return -ENOMEM;
    if (fy_strmap_put(o->map, e->key, len, e) < 0) {
      entry_free(e);
      return -ENOMEM;
    }
  }
  s = entry_insert(e, queue_id);
  if (!s) {
    if (fresh) {
      fy_strmap_del(o->map, e->key, len);
      entry_free(e);
    }
    return -ENOMEM;
  }
  o->entries++;
  *created = true;
  *out = s;
  return 0;
}

/* The one place offsets change. key is valid; queue_id is within the limit. */
static int set_offset(fy_offsets *o, const char *key, size_t len, uint32_t queue_id,
                      int64_t offset, enum set_mode mode, bool *changed) {
  *changed = false;
  struct qslot *s;
  bool created;
  int r = get_slot(o, key, len, queue_id, &s, &created);
  if (r < 0)
    return r;
  if (mode == SET_MAX && s->offset >= offset)
    return 0; /* a new slot has -1, so a merge always fills it */
  if (mode == SET_COMMIT && offset < s->offset) {
    o->backward_commits++;
    fy_debug("offsets", "%s queue %u: commit %lld below stored %lld", key, queue_id,
             (long long)offset, (long long)s->offset);
  }
  *changed = created || s->offset != offset;
  s->offset = offset;
  s->updated_ms = fy__now_ms();
  if (*changed)
    o->dirty = true;
  return 0;
}

static int set_checked(fy_offsets *o, const char *group, const char *topic, uint32_t queue_id,
                       int64_t offset, enum set_mode mode, bool *changed) {
  char key[KEY_MAX + 1];
  size_t len;
  bool dummy;
  if (!changed)
    changed = &dummy;
  *changed = false;
  if (offset < 0 || queue_id >= o->queues_max)
    return -EINVAL;
  int r = make_key(group, topic, key, &len);
  if (r < 0)
    return r;
  return set_offset(o, key, len, queue_id, offset, mode, changed);
}

/* ---- documents ---------------------------------------------------------- */

struct item {
  const char *key; /* borrowed from the parsed document */
  size_t key_len;
  uint32_t queue_id;
  int64_t offset;
};

struct items {
  struct item *v;
  size_t n;
  size_t cap;
};

/* Splits and checks "topic@group". */
static bool key_ok(const char *key) {
  const char *at = strchr(key, '@');
  if (!at || strchr(at + 1, '@'))
    return false;
  size_t tlen = (size_t)(at - key);
  char topic[FY_TOPIC_NAME_MAX + 1];
  if (tlen == 0 || tlen > FY_TOPIC_NAME_MAX)
    return false;
  memcpy(topic, key, tlen);
  topic[tlen] = '\0';
  return fy_topic_name_check(topic, NULL) == 0 && fy_group_name_check(at + 1, NULL) == 0;
}

/* A queue id key: canonical decimal ("0", "17"; no sign, no leading zero). */
static bool parse_queue_id(const char *s, uint32_t *out) {
  size_t n = strlen(s);
  if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
    return false;
  uint32_t v = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9')
      return false;
    v = v * 10 + (uint32_t)(s[i] - '0');
  }
  if (v >= FY_TOPIC_QUEUES_LIMIT)
    return false;
  *out = v;
  return true;
}

static int items_push(struct items *it, const struct item *x) {
  if (it->n == it->cap) {
    size_t cap = it->cap ? it->cap * 2 : 64;
    struct item *v = realloc(it->v, cap * sizeof *v);
    if (!v)
      return -ENOMEM;
    it->v = v;
    it->cap = cap;
  }
  it->v[it->n++] = *x;
  return 0;
}

static int queues_from_json(const char *key, json_t *queues, uint32_t max_items,
                            struct items *it, char *err, size_t errlen) {
  if (!json_is_object(queues)) {
    snprintf(err, errlen, "\"%s\": not a JSON object", key);
    return -FY_ECORRUPT;
  }
  const char *qkey;
  json_t *v;
  json_object_foreach(queues, qkey, v) { /* bounded: the caller's item budget */
    struct item x = {.key = key, .key_len = strlen(key)};
    if (!parse_queue_id(qkey, &x.queue_id)) {
      snprintf(err, errlen, "\"%s\": bad queue id \"%.16s\"", key, qkey);
      return -FY_ECORRUPT;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
      snprintf(err, errlen, "\"%s\" queue %u: offset is not a non-negative integer", key,
               x.queue_id);
      return -FY_ECORRUPT;
    }
    x.offset = (int64_t)json_integer_value(v);
    if (it->n >= max_items) {
      snprintf(err, errlen, "more than entries_max (%u) queue offsets", max_items);
      return -ENOSPC;
    }
    if (items_push(it, &x) < 0) {
      snprintf(err, errlen, "out of memory");
      return -ENOMEM;
    }
  }
  return 0;
}

/* Validates root (consumerOffset.json's shape) into items borrowed from it. */
static int items_from_json(json_t *root, uint32_t max_items, struct items *it, char *err,
                           size_t errlen) {
  json_t *table;
  int r = fy__json_object(root, "offsetTable", &table, err, errlen);
  if (r < 0)
    return r;
  const char *key;
  json_t *queues;
  json_object_foreach(table, key, queues) { /* bounded by max_items (each key adds items) */
    if (!key_ok(key)) {
      snprintf(err, errlen, "bad key \"%.*s\" (want topic@group)", (int)KEY_MAX, key);
      return -FY_ECORRUPT;
    }
    r = queues_from_json(key, queues, max_items, it, err, errlen);
    if (r < 0)
      return r;
  }
  return 0;
}

/* Applies validated items. Only the entry bound can still fail (checked
 * before, so only -ENOMEM midway). */
static int apply_items(fy_offsets *o, const struct items *it, enum set_mode mode,
                       struct fy_offsets_merge_stats *st) {
  for (size_t i = 0; i < it->n; i++) { /* bounded by entries_max */
    const struct item *x = &it->v[i];
    bool existed = slot_exists(o, x->key, x->key_len, x->queue_id);
    bool changed;
    int r = set_offset(o, x->key, x->key_len, x->queue_id, x->offset, mode, &changed);
    if (r < 0)
      return r;
    if (!existed)
      st->added++;
    else if (changed)
      st->advanced++;
    else
      st->kept++;
  }
  return 0;
}

static uint64_t new_slots(const fy_offsets *o, const struct items *it) {
  uint64_t n = 0;
  for (size_t i = 0; i < it->n; i++) /* bounded by entries_max */
    n += !slot_exists(o, it->v[i].key, it->v[i].key_len, it->v[i].queue_id);
  return n;
}

/* Parses, validates, bound-checks, then applies json. */
static int apply_document(fy_offsets *o, const char *json, size_t len, enum set_mode mode,
                          struct fy_offsets_merge_stats *st, char *err, size_t errlen) {
  json_t *root;
  struct items it = {0};
  int r = fy__json_parse(json, len, &root, err, errlen);
  if (r < 0)
    return r;
  r = items_from_json(root, o->entries_max, &it, err, errlen);
  if (r == 0 && o->entries + new_slots(o, &it) > o->entries_max) {
    snprintf(err, errlen, "merging would exceed entries_max (%u) queue offsets", o->entries_max);
    r = -ENOSPC;
  }
  if (r == 0) {
    r = apply_items(o, &it, mode, st);
    if (r < 0)
      snprintf(err, errlen, "out of memory");
  }
  free(it.v);
  json_decref(root);
  return r;
}

static json_t *entry_to_json(const struct entry *e) {
  json_t *q = json_object();
  if (!q)
    return NULL;
  for (uint32_t i = 0; i < e->used; i++) { /* bounded by entries_max */
    char id[12];
    snprintf(id, sizeof id, "%u", e->q[i].queue_id);
    if (json_object_set_new(q, id, json_integer(e->q[i].offset)) < 0) {
      json_decref(q);
      return NULL;
    }
  }
  return q;
}

static json_t *table_to_json(const fy_offsets *o) {
  json_t *root = json_object(), *table = json_object();
  if (!root || !table)
    goto out_free;
  size_t pos = 0, klen;
  const char *key;
  void *v;
  while (fy_strmap_next(o->map, &pos, &key, &klen, &v)) { /* bounded by entries_max */
    const struct entry *e = v;
    if (e->used == 0)
      continue;
    json_t *q = entry_to_json(e);
    if (!q || json_object_set_new(table, e->key, q) < 0)
      goto out_free;
  }
  if (json_object_set_new(root, "offsetTable", table) < 0)
    goto out_free_root;
  return root;

out_free:
  json_decref(table);
out_free_root:
  json_decref(root);
  return NULL;
}

char *fy_offsets_to_json(const fy_offsets *o, size_t *len) {
  json_t *root = table_to_json(o);
  if (!root)
    return NULL;
  char *s = fy__json_dump(root, JSON_COMPACT, len);
  json_decref(root);
  return s;
}

/* ---- persistence -------------------------------------------------------- */

/* Schedules a save of the whole table; cb as fy_offsets_flush. */
static int save(fy_offsets *o, fy_metafile_cb cb, void *arg) {
  size_t len;
  char *s = fy_offsets_to_json(o, &len);
  if (!s)
    return -ENOMEM;
  bool was_dirty = o->dirty;
  o->dirty = false;
  int r = fy__persist_save(&o->persist, s, len, cb, arg);
  if (r < 0)
    o->dirty = was_dirty;
  return r;
}

static void on_tick(uv_timer_t *t) {
  fy_offsets *o = t->data;
  if (!o->dirty)
    return;
  int r = save(o, NULL, NULL);
  if (r < 0) {
    o->persist.status = r;
    fy_error("offsets", "cannot schedule saving consumer offsets: %s", fy_strerror(r));
  }
}

/* A failed save leaves the file behind the table: write it again next tick. */
static void on_saved(void *owner, int status) {
  fy_offsets *o = owner;
  if (status < 0)
    o->dirty = true;
}

int fy_offsets_flush(fy_offsets *o, fy_metafile_cb cb, void *arg) {
  if (!o->persist.mf)
    return -EINVAL;
  return save(o, cb, arg);
}

int fy_offsets_persist_status(const fy_offsets *o) { return o->persist.status; }

uint64_t fy_offsets_writes(const fy_offsets *o) {
  return o->persist.mf ? fy_metafile_writes(o->persist.mf) : 0;
}

/* ---- life cycle --------------------------------------------------------- */

void fy_offsets_options_init(struct fy_offsets_options *opt) {
  opt->root_dir = NULL;
  opt->flush_interval_ms = FLUSH_INTERVAL_DEFAULT_MS;
  opt->entries_max = ENTRIES_MAX_DEFAULT;
  opt->queues_max = QUEUES_MAX_DEFAULT;
}

static int check_options(const struct fy_offsets_options *opt, char *err, size_t errlen) {
  if (opt->flush_interval_ms < 1 || opt->flush_interval_ms > 3600u * 1000 ||
      opt->entries_max < 1 || opt->entries_max > ENTRIES_MAX_LIMIT || opt->queues_max < 1 ||
      opt->queues_max > FY_TOPIC_QUEUES_LIMIT) {
    snprintf(err, errlen,
             "offsets: flush_interval_ms must be 1..3600000, entries_max 1..%u, "
             "queues_max 1..%u",
             ENTRIES_MAX_LIMIT, FY_TOPIC_QUEUES_LIMIT);
    return -EINVAL;
  }
  return 0;
}

static int load(fy_offsets *o, const char *buf, size_t len, char *err, size_t errlen) {
  char why[512];
  struct fy_offsets_merge_stats st = {0};
  int r = apply_document(o, buf, len, SET_RESET, &st, why, sizeof why);
  if (r < 0) {
    snprintf(err, errlen, "%s: %s", o->persist.path, why);
    return r;
  }
  o->dirty = false; /* the table equals the file */
  return 0;
}

int fy_offsets_open(uv_loop_t *loop, fy_aio *aio, const struct fy_offsets_options *opt,
                    fy_offsets **out, char *err, size_t errlen) {
  int r = check_options(opt, err, errlen);
  if (r < 0)
    return r;
  fy_offsets *o = calloc(1, sizeof *o);
  if (!o)
    return -ENOMEM;
  o->entries_max = opt->entries_max;
  o->queues_max = opt->queues_max;
  o->flush_interval_ms = opt->flush_interval_ms;
  o->map = fy_strmap_new();
  if (!o->map) {
    free(o);
    return -ENOMEM;
  }
  char *buf;
  size_t len;
  r = fy__persist_open(&o->persist, loop, aio, opt->root_dir, OFFSETS_FILE, "offsets", &buf, &len,
                       err, errlen);
  if (r < 0)
    goto out_free;
  o->persist.on_saved = on_saved;
  o->persist.owner = o;
  if (buf) {
    r = load(o, buf, len, err, errlen);
    free(buf);
    if (r < 0)
      goto out_close_persist;
  }
  if (o->persist.mf) {
    uv_timer_init(loop, &o->timer);
    o->timer.data = o;
    uv_timer_start(&o->timer, on_tick, o->flush_interval_ms, o->flush_interval_ms);
    uv_unref((uv_handle_t *)&o->timer);
    o->has_timer = true;
  }
  *out = o;
  return 0;

out_close_persist:
  fy__persist_close(&o->persist);
out_free:
  fy__table_free(o->map, entry_free);
  free(o);
  return r;
}

static void on_timer_closed(uv_handle_t *h) { free(h->data); }

void fy_offsets_close(fy_offsets *o) {
  if (!o)
    return;
  fy__persist_close(&o->persist);
  fy__table_free(o->map, entry_free);
  o->map = NULL;
  if (o->has_timer)
    uv_close((uv_handle_t *)&o->timer, on_timer_closed);
  else
    free(o);
}

/* ---- changes ------------------------------------------------------------ */

int fy_offsets_commit(fy_offsets *o, const char *group, const char *topic, uint32_t queue_id,
                      int64_t offset) {
  return set_checked(o, group, topic, queue_id, offset, SET_COMMIT, NULL);
}

int fy_offsets_reset(fy_offsets *o, const char *group, const char *topic, uint32_t queue_id,
                     int64_t offset) {
  return set_checked(o, group, topic, queue_id, offset, SET_RESET, NULL);
}

int fy_offsets_merge(fy_offsets *o, const char *group, const char *topic, uint32_t queue_id,
                     int64_t offset, bool *advanced) {
  return set_checked(o, group, topic, queue_id, offset, SET_MAX, advanced);
}

int fy_offsets_merge_json(fy_offsets *o, const char *json, size_t len,
                          struct fy_offsets_merge_stats *stats, char *err, size_t errlen) {
  struct fy_offsets_merge_stats st = {0};
  int r = apply_document(o, json, len, SET_MAX, &st, err, errlen);
  if (stats)
    *stats = st;
  return r;
}

/* Removes the entries for which match(e, name) holds; returns queue offsets removed. */
static int delete_matching(fy_offsets *o, const char *name,
                           bool (*match)(const struct entry *e, const char *name)) {
  size_t n = fy_strmap_size(o->map), k = 0;
  if (n == 0)
    return -FY_ENOT_FOUND;
  struct entry **doomed = malloc(n * sizeof *doomed);
  if (!doomed)
    return -ENOMEM;
  size_t pos = 0, klen;
  const char *key;
  void *v;
  while (k < n && fy_strmap_next(o->map, &pos, &key, &klen, &v)) /* collect, then delete */
    if (match(v, name))
      doomed[k++] = v;
  uint64_t removed = 0;
  for (size_t i = 0; i < k; i++) {
    struct entry *e = doomed[i];
    fy_strmap_del(o->map, e->key, strlen(e->key));
    removed += e->used;
    fy_assert(o->entries >= e->used);
    o->entries -= e->used;
    entry_free(e);
  }
  free(doomed);
  if (removed == 0)
    return -FY_ENOT_FOUND;
  o->dirty = true;
  return removed > INT32_MAX ? INT32_MAX : (int)removed;
}

static bool group_is(const struct entry *e, const char *group) {
  return strcmp(entry_group(e), group) == 0;
}

static bool topic_is(const struct entry *e, const char *topic) {
  return strlen(topic) == e->topic_len && memcmp(e->key, topic, e->topic_len) == 0;
}

int fy_offsets_delete_group(fy_offsets *o, const char *group) {
  return delete_matching(o, group, group_is);
}

int fy_offsets_delete_topic(fy_offsets *o, const char *topic) {
  return delete_matching(o, topic, topic_is);
}

/* ---- queries ------------------------------------------------------------ */

int fy_offsets_get(const fy_offsets *o, const char *group, const char *topic, uint32_t queue_id,
                   struct fy_offset *out) {
  char key[KEY_MAX + 1];
  size_t len;
  if (make_key(group, topic, key, &len) < 0)
    return -FY_ENOT_FOUND;
  const struct qslot *s = find_slot(o, key, len, queue_id);
  if (!s)
    return -FY_ENOT_FOUND;
  out->offset = s->offset;
  out->updated_ms = s->updated_ms;
  return 0;
}

int64_t fy_offsets_query(const fy_offsets *o, const char *group, const char *topic,
                         uint32_t queue_id) {
  struct fy_offset off;
  return fy_offsets_get(o, group, topic, queue_id, &off) == 0 ? off.offset : -1;
}

static int by_topic_queue(const void *a, const void *b) {
  const struct fy_offset_item *x = a, *y = b;
  int c = strcmp(x->topic, y->topic);
  if (c)
    return c;
  return x->queue_id < y->queue_id ? -1 : x->queue_id > y->queue_id;
}

static size_t group_slots(const fy_offsets *o, const char *group) {
  size_t n = 0, pos = 0, klen;
  const char *key;
  void *v;
  while (fy_strmap_next(o->map, &pos, &key, &klen, &v)) /* bounded by the map's capacity */
    if (group_is(v, group))
      n += ((const struct entry *)v)->used;
  return n;
}

int fy_offsets_list_group(const fy_offsets *o, const char *group, struct fy_offset_item **out,
                          size_t *n) {
  *out = NULL;
  *n = 0;
  size_t total = group_slots(o, group), k = 0;
  if (total == 0)
    return 0;
  struct fy_offset_item *arr = malloc(total * sizeof *arr);
  if (!arr)
    return -ENOMEM;
  size_t pos = 0, klen;
  const char *key;
  void *v;
  while (fy_strmap_next(o->map, &pos, &key, &klen, &v)) { /* bounded by the map's capacity */
    const struct entry *e = v;
    if (!group_is(e, group))
      continue;
    for (uint32_t q = 0; q < e->used && k < total; q++) {
      struct fy_offset_item *it = &arr[k++];
      memcpy(it->topic, e->key, e->topic_len);
      it->topic[e->topic_len] = '\0';
      it->queue_id = e->q[q].queue_id;
      it->offset = e->q[q].offset;
      it->updated_ms = e->q[q].updated_ms;
    }
  }
  fy_assert(k == total);
  qsort(arr, total, sizeof *arr, by_topic_queue);
  *out = arr;
  *n = total;
  return 0;
}

size_t fy_offsets_entries(const fy_offsets *o) { return (size_t)o->entries; }

bool fy_offsets_dirty(const fy_offsets *o) { return o->dirty; }

uint64_t fy_offsets_backward_commits(const fy_offsets *o) { return o->backward_commits; }
