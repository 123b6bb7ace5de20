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
 * Tombstones live in two more strmaps, deleted group → struct tomb and
 * deleted topic → struct tomb, so that checking a merged queue against
 * them costs two lookups.
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
#define TOMBSTONES_MAX_DEFAULT 10000u
#define TOMBSTONES_MAX_LIMIT (1u << 20)
#define TOMBSTONE_TTL_DEFAULT_MS (7ull * 24 * 3600 * 1000)
#define TOMBSTONE_TTL_LIMIT_MS (366ull * 24 * 3600 * 1000)
#define DELETIONS_KEY "deletedOffsets"
#define EPOCH_MAX (INT64_MAX / 2) /* leaves room for deletions after any epoch accepted */
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

/* A deleted group or topic. */
struct tomb {
  int64_t epoch; /* of the deletion */
  char name[];   /* NUL-terminated; the map's key */
};

struct fy_offsets {
  fy_strmap *map; /* key → struct entry * */
  uint64_t entries;
  uint32_t entries_max;
  uint32_t queues_max;
  fy_strmap *dead_groups; /* group → struct tomb * */
  fy_strmap *dead_topics; /* topic → struct tomb * */
  int64_t epoch;          /* the newest deletion the table reflects; 0: none */
  uint32_t tombstones_max;
  uint64_t tombstone_ttl_ms;
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

/* ---- deletions ----------------------------------------------------------- */

static bool group_is(const struct entry *e, const char *group) {
  return strcmp(entry_group(e), group) == 0;
}

static bool topic_is(const struct entry *e, const char *topic) {
  return strlen(topic) == e->topic_len && memcmp(e->key, topic, e->topic_len) == 0;
}

typedef bool (*match_fn)(const struct entry *e, const char *name);

/* The entries for which match(e, name) holds, in a fresh array (*out NULL
 * when none). 0 or -ENOMEM; collecting first is what lets a deletion fail
 * before it changes anything. */
static int collect_matching(const fy_offsets *o, const char *name, match_fn match,
                            struct entry ***out, size_t *n) {
  size_t cap = fy_strmap_size(o->map), k = 0;
  *out = NULL;
  *n = 0;
  if (cap == 0)
    return 0;
  struct entry **doomed = malloc(cap * sizeof *doomed);
  if (!doomed)
    return -ENOMEM;
  size_t pos = 0, klen;
  const char *key;
  void *v;
  while (k < cap && fy_strmap_next(o->map, &pos, &key, &klen, &v)) /* bounded by the map's size */
    if (match(v, name))
      doomed[k++] = v;
  *out = doomed;
  *n = k;
  return 0;
}

/* Removes the collected entries and frees the array; returns queue offsets removed. */
static uint64_t remove_entries(fy_offsets *o, struct entry **doomed, size_t n) {
  uint64_t removed = 0;
  for (size_t i = 0; i < n; i++) { /* bounded by the map's size */
    struct entry *e = doomed[i];
    fy_strmap_del(o->map, e->key, strlen(e->key));
    removed += e->used;
    fy_assert(o->entries >= e->used);
    o->entries -= e->used;
    entry_free(e);
  }
  free(doomed);
  if (removed)
    o->dirty = true;
  return removed;
}

static size_t tombs_count(const fy_offsets *o) {
  return fy_strmap_size(o->dead_groups) + fy_strmap_size(o->dead_topics);
}

static int64_t tomb_epoch(const fy_strmap *dead, const char *name, size_t len) {
  const struct tomb *t = fy_strmap_get(dead, name, len);
  return t ? t->epoch : 0;
}

/* Records that name was deleted at epoch (the newer epoch stays when it
 * was deleted before). 0 or -ENOMEM, then nothing changed. */
static int tomb_put(fy_strmap *dead, const char *name, size_t len, int64_t epoch) {
  struct tomb *t = fy_strmap_get(dead, name, len);
  if (t) {
    if (epoch > t->epoch)
      t->epoch = epoch;
    return 0;
  }
  t = malloc(sizeof *t + len + 1);
  if (!t)
    return -ENOMEM;
  t->epoch = epoch;
  memcpy(t->name, name, len);
  t->name[len] = '\0';
  if (fy_strmap_put(dead, t->name, len, t) < 0) {
    free(t);
    return -ENOMEM;
  }
  return 0;
}

/* Deletes name's offsets (match says which entries are name's) and
 * records the deletion in dead at epoch. Returns queue offsets removed,
 * or -ENOMEM with nothing changed. */
static int64_t delete_at(fy_offsets *o, fy_strmap *dead, match_fn match, const char *name,
                         int64_t epoch) {
  struct entry **doomed;
  size_t n;
  int r = collect_matching(o, name, match, &doomed, &n);
  if (r == 0)
    r = tomb_put(dead, name, strlen(name), epoch);
  if (r < 0) {
    free(doomed);
    return r;
  }
  o->dirty = true;
  return (int64_t)remove_entries(o, doomed, n);
}

struct tref {
  fy_strmap *dead;
  struct tomb *t;
};

static int tref_older(const void *a, const void *b) {
  const struct tref *x = a, *y = b;
  return x->t->epoch < y->t->epoch ? -1 : x->t->epoch > y->t->epoch;
}

static bool tomb_expired(const fy_offsets *o, const struct tomb *t, int64_t now_ms) {
  return now_ms - t->epoch > (int64_t)o->tombstone_ttl_ms;
}

static bool any_expired(const fy_offsets *o, const fy_strmap *dead, int64_t now_ms) {
  size_t pos = 0, klen;
  const char *key;
  void *t;
  while (fy_strmap_next(dead, &pos, &key, &klen, &t)) /* bounded by tombstones_max + a document's */
    if (tomb_expired(o, t, now_ms))
      return true;
  return false;
}

void fy_offsets_trim_tombstones(fy_offsets *o, int64_t now_ms) {
  size_t n = tombs_count(o), k = 0;
  if (n <= o->tombstones_max && !any_expired(o, o->dead_groups, now_ms) &&
      !any_expired(o, o->dead_topics, now_ms))
    return; /* the common case, every merge: no allocation */
  struct tref *v = malloc(n * sizeof *v);
  if (!v)
    return; /* tried again at the next tick */
  fy_strmap *maps[2] = {o->dead_groups, o->dead_topics};
  for (int m = 0; m < 2; m++) {
    size_t pos = 0, klen;
    const char *key;
    void *t;
    while (k < n && fy_strmap_next(maps[m], &pos, &key, &klen, &t)) /* bounded by n */
      v[k++] = (struct tref){.dead = maps[m], .t = t};
  }
  qsort(v, k, sizeof *v, tref_older);
  size_t over = k > o->tombstones_max ? k - o->tombstones_max : 0;
  for (size_t i = 0; i < k; i++) { /* oldest first: stop at the first one kept */
    struct tomb *t = v[i].t;
    bool expired = tomb_expired(o, t, now_ms);
    if (!expired && i >= over)
      break;
    if (!expired)
      fy_warn("offsets", "forgetting the deletion of %s's offsets (epoch %lld): more than %u "
              "deletions held", t->name, (long long)t->epoch, o->tombstones_max);
    fy_strmap_del(v[i].dead, t->name, strlen(t->name));
    free(t);
    o->dirty = true;
  }
  free(v);
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

/* A document's deletions: root["deletedOffsets"], validated. */
struct deletions {
  int64_t epoch;  /* the newest deletion the document reflects; 0: none */
  json_t *groups; /* {group: epoch}, borrowed; NULL when absent */
  json_t *topics; /* {topic: epoch} */
};

/* Checks names (each a group, or each a topic) and their epochs, 1..epoch. */
static int tombs_from_json(json_t *names, bool topics, int64_t epoch, char *err, size_t errlen) {
  const char *name;
  json_t *v;
  json_object_foreach(names, name, v) { /* bounded: the caller checked the count */
    const char *why = NULL;
    if ((topics ? fy_topic_name_check(name, &why) : fy_group_name_check(name, &why)) < 0) {
      snprintf(err, errlen, "%s: bad %s name \"%.*s\"", DELETIONS_KEY, topics ? "topic" : "group",
               (int)FY_GROUP_NAME_MAX, name);
      return -FY_ECORRUPT;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > epoch) {
      snprintf(err, errlen, "%s: %s \"%s\": epoch is not an integer in 1..%lld", DELETIONS_KEY,
               topics ? "topic" : "group", name, (long long)epoch);
      return -FY_ECORRUPT;
    }
  }
  return 0;
}

static int deletions_from_json(json_t *root, uint32_t max, struct deletions *d, char *err,
                               size_t errlen) {
  json_t *obj;
  uint64_t epoch = 0;
  memset(d, 0, sizeof *d);
  int r = fy__json_object(root, DELETIONS_KEY, &obj, err, errlen);
  if (r < 0 || !obj)
    return r;
  char why[256];
  r = fy__json_uint(obj, "epoch", true, 0, 0, EPOCH_MAX, &epoch, why, sizeof why);
  if (r == 0)
    r = fy__json_object(obj, "groups", &d->groups, why, sizeof why);
  if (r == 0)
    r = fy__json_object(obj, "topics", &d->topics, why, sizeof why);
  if (r < 0) {
    snprintf(err, errlen, "%s: %s", DELETIONS_KEY, why);
    return r;
  }
  size_t n = json_object_size(d->groups) + json_object_size(d->topics);
  if (n > max) {
    snprintf(err, errlen, "%s: %zu deletions, more than tombstones_max (%u)", DELETIONS_KEY, n,
             max);
    return -ENOSPC;
  }
  d->epoch = (int64_t)epoch;
  r = tombs_from_json(d->groups, false, d->epoch, err, errlen);
  if (r == 0)
    r = tombs_from_json(d->topics, true, d->epoch, err, errlen);
  return r;
}

/* Whether this table deleted the item's group or topic after epoch (the
 * document's), i.e. the document's copy of it predates the deletion. */
static bool deleted_after(const fy_offsets *o, const struct item *x, int64_t epoch) {
  const char *at = memchr(x->key, '@', x->key_len);
  fy_assert(at);
  size_t tlen = (size_t)(at - x->key);
  return tomb_epoch(o->dead_topics, x->key, tlen) > epoch ||
         tomb_epoch(o->dead_groups, at + 1, x->key_len - tlen - 1) > epoch;
}

/* Removes from it the items deleted here after epoch; returns how many. */
static uint64_t drop_deleted(const fy_offsets *o, struct items *it, int64_t epoch) {
  if (tombs_count(o) == 0)
    return 0;
  size_t kept = 0;
  for (size_t i = 0; i < it->n; i++) /* bounded by entries_max */
    if (!deleted_after(o, &it->v[i], epoch))
      it->v[kept++] = it->v[i];
  uint64_t dropped = it->n - kept;
  it->n = kept;
  return dropped;
}

/* Applies the deletions of names (groups or topics) newer than the table's
 * epoch: their offsets here are removed, their tombstones kept. Only
 * -ENOMEM can fail, midway. */
static int adopt_deletions(fy_offsets *o, json_t *names, fy_strmap *dead, match_fn match,
                           struct fy_offsets_merge_stats *st) {
  const char *name;
  json_t *v;
  json_object_foreach(names, name, v) { /* bounded by tombstones_max */
    int64_t epoch = (int64_t)json_integer_value(v);
    if (epoch <= o->epoch)
      continue; /* already reflected here */
    int64_t removed = delete_at(o, dead, match, name, epoch);
    if (removed < 0)
      return (int)removed;
    st->deleted += (uint64_t)removed;
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

/* Parses, validates, bound-checks, then applies json: first the items
 * this table deleted after the document was made are set aside, then the
 * document's newer deletions are applied, then its offsets (which reflect
 * those deletions, so they stay), and the table takes the larger epoch.
 * The bound check ignores what the deletions free, so it may refuse a
 * document that would just fit, never accept one that does not. */
static int apply_document(fy_offsets *o, const char *json, size_t len, enum set_mode mode,
                          struct fy_offsets_merge_stats *st, char *err, size_t errlen) {
  json_t *root;
  struct items it = {0};
  struct deletions d = {0};
  int r = fy__json_parse(json, len, &root, err, errlen);
  if (r < 0)
    return r;
  r = items_from_json(root, o->entries_max, &it, err, errlen);
  if (r == 0)
    r = deletions_from_json(root, o->tombstones_max, &d, err, errlen);
  uint64_t dropped = r == 0 ? drop_deleted(o, &it, d.epoch) : 0;
  if (r == 0 && o->entries + new_slots(o, &it) > o->entries_max) {
    snprintf(err, errlen, "merging would exceed entries_max (%u) queue offsets", o->entries_max);
    r = -ENOSPC;
  }
  if (r == 0) {
    st->dropped += dropped;
    r = adopt_deletions(o, d.groups, o->dead_groups, group_is, st);
    if (r == 0)
      r = adopt_deletions(o, d.topics, o->dead_topics, topic_is, st);
    if (r == 0)
      r = apply_items(o, &it, mode, st);
    if (r < 0)
      snprintf(err, errlen, "out of memory");
  }
  if (r == 0 && d.epoch > o->epoch) {
    o->epoch = d.epoch;
    o->dirty = true;
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

static json_t *tombs_to_json(const fy_strmap *dead) {
  json_t *names = json_object();
  size_t pos = 0, klen;
  const char *key;
  void *v;
  while (names && fy_strmap_next(dead, &pos, &key, &klen, &v)) { /* bounded by tombstones_max */
    const struct tomb *t = v;
    if (json_object_set_new(names, t->name, json_integer(t->epoch)) < 0) {
      json_decref(names);
      return NULL;
    }
  }
  return names;
}

/* {"epoch":E,"groups":{...},"topics":{...}}, or NULL on -ENOMEM. */
static json_t *deletions_to_json(const fy_offsets *o) {
  json_t *d = json_object(), *g = tombs_to_json(o->dead_groups), *t = tombs_to_json(o->dead_topics);
  if (d && g && t && json_object_set_new(d, "epoch", json_integer(o->epoch)) == 0 &&
      json_object_set(d, "groups", g) == 0 && json_object_set(d, "topics", t) == 0) {
    json_decref(g);
    json_decref(t);
    return d;
  }
  json_decref(d);
  json_decref(g);
  json_decref(t);
  return NULL;
}

static json_t *table_to_json(const fy_offsets *o) {
  json_t *root = json_object(), *table = json_object();
  if (!root || !table)
    goto out_free;
  if (o->epoch > 0) { /* nothing deleted yet: the file stays RocketMQ's own shape */
    json_t *d = deletions_to_json(o);
    if (!d || json_object_set_new(root, DELETIONS_KEY, d) < 0)
      goto out_free;
  }
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

/* Saves in the background (in memory only: nothing to do). */
static void save_logged(fy_offsets *o) {
  if (!o->persist.mf)
    return;
  int r = save(o, NULL, NULL);
  if (r < 0) {
    o->persist.status = r;
    fy_error("offsets", "cannot schedule saving consumer offsets: %s", fy_strerror(r));
  }
}

static void on_tick(uv_timer_t *t) {
  fy_offsets *o = t->data;
  fy_offsets_trim_tombstones(o, fy__now_ms());
  if (o->dirty)
    save_logged(o);
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
  opt->tombstones_max = TOMBSTONES_MAX_DEFAULT;
  opt->tombstone_ttl_ms = TOMBSTONE_TTL_DEFAULT_MS;
}

static int check_options(const struct fy_offsets_options *opt, char *err, size_t errlen) {
  if (opt->flush_interval_ms < 1 || opt->flush_interval_ms > 3600u * 1000 ||
      opt->entries_max < 1 || opt->entries_max > ENTRIES_MAX_LIMIT || opt->queues_max < 1 ||
      opt->queues_max > FY_TOPIC_QUEUES_LIMIT || opt->tombstones_max < 1 ||
      opt->tombstones_max > TOMBSTONES_MAX_LIMIT || opt->tombstone_ttl_ms < 1 ||
      opt->tombstone_ttl_ms > TOMBSTONE_TTL_LIMIT_MS) {
    snprintf(err, errlen,
             "offsets: flush_interval_ms must be 1..3600000, entries_max 1..%u, "
             "queues_max 1..%u, tombstones_max 1..%u, tombstone_ttl_ms 1..%llu",
             ENTRIES_MAX_LIMIT, FY_TOPIC_QUEUES_LIMIT, TOMBSTONES_MAX_LIMIT,
             (unsigned long long)TOMBSTONE_TTL_LIMIT_MS);
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
  fy_offsets_trim_tombstones(o, fy__now_ms()); /* expired while the broker was down: dirty */
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
  o->tombstones_max = opt->tombstones_max;
  o->tombstone_ttl_ms = opt->tombstone_ttl_ms;
  o->map = fy_strmap_new();
  o->dead_groups = fy_strmap_new();
  o->dead_topics = fy_strmap_new();
  if (!o->map || !o->dead_groups || !o->dead_topics) {
    r = -ENOMEM;
    goto out_free;
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
  fy__table_free(o->dead_groups, free);
  fy__table_free(o->dead_topics, free);
  free(o);
  return r;
}

static void on_timer_closed(uv_handle_t *h) { free(h->data); }

void fy_offsets_close(fy_offsets *o) {
  if (!o)
    return;
  fy__persist_close(&o->persist);
  fy__table_free(o->map, entry_free);
  fy__table_free(o->dead_groups, free);
  fy__table_free(o->dead_topics, free);
  o->map = NULL;
  o->dead_groups = o->dead_topics = NULL;
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
  if (r == 0)
    fy_offsets_trim_tombstones(o, fy__now_ms()); /* it may have brought some */
  if (stats)
    *stats = st;
  return r;
}

/* The epoch of a deletion made now: after every deletion the table
 * reflects, and the wall clock when that is later, so that epochs keep
 * growing across a lost file and read as the time of the deletion. */
static int64_t next_epoch(const fy_offsets *o) {
  int64_t now = fy__now_ms();
  return now > o->epoch ? now : o->epoch + 1;
}

static int delete_recorded(fy_offsets *o, fy_strmap *dead, match_fn match, const char *name) {
  int64_t epoch = next_epoch(o);
  int64_t removed = delete_at(o, dead, match, name, epoch);
  if (removed < 0)
    return (int)removed;
  o->epoch = epoch;
  fy_offsets_trim_tombstones(o, fy__now_ms());
  /* An operator's rare, explicit act: on disk now, not at the next tick,
   * so that a master restarted at once still knows to refuse the slave's
   * copy of what it deleted. */
  save_logged(o);
  if (removed == 0)
    return -FY_ENOT_FOUND;
  return removed > INT32_MAX ? INT32_MAX : (int)removed;
}

int fy_offsets_delete_group(fy_offsets *o, const char *group) {
  if (fy_group_name_check(group, NULL) < 0)
    return -EINVAL;
  return delete_recorded(o, o->dead_groups, group_is, group);
}

int fy_offsets_delete_topic(fy_offsets *o, const char *topic) {
  if (fy_topic_name_check(topic, NULL) < 0)
    return -EINVAL;
  return delete_recorded(o, o->dead_topics, topic_is, topic);
}

int64_t fy_offsets_deletion_epoch(const fy_offsets *o) { return o->epoch; }

size_t fy_offsets_tombstones(const fy_offsets *o) { return tombs_count(o); }

int64_t fy_offsets_group_deleted(const fy_offsets *o, const char *group) {
  return tomb_epoch(o->dead_groups, group, strlen(group));
}

int64_t fy_offsets_topic_deleted(const fy_offsets *o, const char *topic) {
  return tomb_epoch(o->dead_topics, topic, strlen(topic));
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
