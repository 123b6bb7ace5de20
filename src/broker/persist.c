/*
 * Shared plumbing of the broker's JSON metadata files (see persist.h). Kept
 * apart so topics, groups and offsets agree on where files live, how a
 * corrupt file is reported (path, line, field — never silently dropped) and
 * how a failed save is remembered.
 */
#include "broker/persist.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"

static int errorf(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int errorf(char *err, size_t errlen, int code, const char *fmt, ...) {
  if (err && errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return code;
}

/* ---- data version ------------------------------------------------------- */

bool fy_data_version_equal(const struct fy_data_version *a, const struct fy_data_version *b) {
  return a->counter == b->counter && a->timestamp_ms == b->timestamp_ms;
}

int64_t fy__now_ms(void) { return fy_clock_real_ms(); }

void fy__data_version_bump(struct fy_data_version *v) {
  v->counter++;
  v->timestamp_ms = fy__now_ms();
}

json_t *fy__data_version_to_json(const struct fy_data_version *v) {
  return json_pack("{s:I,s:I}", "counter", (json_int_t)v->counter, "timestamp",
                   (json_int_t)v->timestamp_ms);
}

int fy__data_version_from_json(json_t *root, struct fy_data_version *v, char *err, size_t errlen) {
  json_t *dv;
  memset(v, 0, sizeof *v);
  int r = fy__json_object(root, "dataVersion", &dv, err, errlen);
  if (r < 0 || !dv)
    return r;
  uint64_t counter = 0, ts = 0;
  r = fy__json_uint(dv, "counter", false, 0, 0, INT64_MAX, &counter, err, errlen);
  if (r == 0)
    r = fy__json_uint(dv, "timestamp", false, 0, 0, INT64_MAX, &ts, err, errlen);
  if (r < 0)
    return r;
  v->counter = counter;
  v->timestamp_ms = (int64_t)ts;
  return 0;
}

/* ---- JSON --------------------------------------------------------------- */

int fy__json_parse(const char *buf, size_t len, json_t **root, char *err, size_t errlen) {
  json_error_t je;
  json_t *j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
  if (!j)
    return errorf(err, errlen, -FY_ECORRUPT, "invalid JSON at line %d column %d: %s", je.line,
                  je.column, je.text);
  if (!json_is_object(j)) {
    json_decref(j);
    return errorf(err, errlen, -FY_ECORRUPT, "top level is not a JSON object");
  }
  *root = j;
  return 0;
}

int fy__json_uint(json_t *obj, const char *key, bool required, uint64_t def, uint64_t min,
                  uint64_t max, uint64_t *out, char *err, size_t errlen) {
  json_t *v = json_object_get(obj, key);
  if (!v) {
    if (required)
      return errorf(err, errlen, -FY_ECORRUPT, "\"%s\" is missing", key);
    *out = def;
    return 0;
  }
  if (!json_is_integer(v))
    return errorf(err, errlen, -FY_ECORRUPT, "\"%s\" is not an integer", key);
  json_int_t i = json_integer_value(v);
  if (i < 0 || (uint64_t)i < min || (uint64_t)i > max)
    return errorf(err, errlen, -FY_ECORRUPT, "\"%s\" = %lld is outside %llu..%llu", key,
                  (long long)i, (unsigned long long)min, (unsigned long long)max);
  *out = (uint64_t)i;
  return 0;
}

int fy__json_bool(json_t *obj, const char *key, bool def, bool *out, char *err, size_t errlen) {
  json_t *v = json_object_get(obj, key);
  if (!v) {
    *out = def;
    return 0;
  }
  if (!json_is_boolean(v))
    return errorf(err, errlen, -FY_ECORRUPT, "\"%s\" is not true or false", key);
  *out = json_is_true(v);
  return 0;
}

int fy__json_object(json_t *obj, const char *key, json_t **out, char *err, size_t errlen) {
  json_t *v = json_object_get(obj, key);
  *out = NULL;
  if (!v)
    return 0;
  if (!json_is_object(v))
    return errorf(err, errlen, -FY_ECORRUPT, "\"%s\" is not a JSON object", key);
  *out = v;
  return 0;
}

struct dump_buf {
  char *data;
  size_t len;
  size_t cap;
};

static int dump_append(const char *s, size_t n, void *arg) {
  struct dump_buf *b = arg;
  if (n + 1 > b->cap - b->len) {
    size_t cap = b->cap ? b->cap : 4096;
    while (n + 1 > cap - b->len) { /* bounded: doubles until it fits */
      if (cap > SIZE_MAX / 2)
        return -1;
      cap *= 2;
    }
    char *d = realloc(b->data, cap);
    if (!d)
      return -1;
    b->data = d;
    b->cap = cap;
  }
  memcpy(b->data + b->len, s, n);
  b->len += n;
  b->data[b->len] = '\0';
  return 0;
}

char *fy__json_dump(const json_t *root, size_t flags, size_t *len) {
  struct dump_buf b = {0};
  if (json_dump_callback(root, dump_append, &b, flags) < 0 || !b.data) {
    free(b.data);
    return NULL;
  }
  *len = b.len;
  return b.data;
}

/* ---- tables of named entries ------------------------------------------- */

void fy__table_free(fy_strmap *map, void (*free_entry)(void *)) {
  if (!map)
    return;
  size_t pos = 0, klen;
  const char *key;
  void *v;
  while (fy_strmap_next(map, &pos, &key, &klen, &v)) /* bounded by the map's capacity */
    free_entry(v);
  fy_strmap_free(map);
}

static int table_from_json(const struct fy__table_kind *kind, json_t *root, uint32_t max,
                           fy_strmap **out, struct fy_data_version *dv, char *err,
                           size_t errlen) {
  json_t *table = NULL;
  int r = fy__data_version_from_json(root, dv, err, errlen);
  if (r == 0)
    r = fy__json_object(root, kind->table_key, &table, err, errlen);
  if (r < 0)
    return r;
  if (table && json_object_size(table) > max) {
    snprintf(err, errlen, "%zu %s, more than %s_max (%u)", json_object_size(table), kind->what,
             kind->what, max);
    return -ENOSPC;
  }
  fy_strmap *map = fy_strmap_new();
  if (!map)
    return -ENOMEM;
  const char *key;
  json_t *v;
  json_object_foreach(table, key, v) { /* bounded: at most max entries */
    char *entry = malloc(kind->entry_size);
    if (!entry) {
      r = -ENOMEM;
      break;
    }
    r = kind->from_json(key, v, entry, err, errlen);
    if (r == 0) {
      const char *name = entry + kind->name_offset;
      r = fy_strmap_put(map, name, strlen(name), entry);
    }
    if (r < 0) {
      free(entry);
      break;
    }
  }
  if (r < 0) {
    if (r == -ENOMEM)
      snprintf(err, errlen, "out of memory");
    fy__table_free(map, free);
    return r;
  }
  *out = map;
  return 0;
}

int fy__table_parse(const struct fy__table_kind *kind, const char *buf, size_t len, uint32_t max,
                    fy_strmap **out, struct fy_data_version *dv, char *err, size_t errlen) {
  json_t *root;
  int r = fy__json_parse(buf, len, &root, err, errlen);
  if (r < 0)
    return r;
  r = table_from_json(kind, root, max, out, dv, err, errlen);
  json_decref(root);
  return r;
}

/* ---- the persisted file ------------------------------------------------- */

static int mkdir_ok(const char *path) {
  if (mkdir(path, 0755) == 0 || errno == EEXIST)
    return 0;
  return -errno;
}

static void on_cycle(void *arg, int status) {
  struct fy__persist *p = arg;
  p->status = status;
  if (status < 0) {
    p->failures++;
    fy_error(p->module, "saving %s failed: %s", p->path, fy_strerror(status));
  }
  if (p->on_saved)
    p->on_saved(p->owner, status);
}

int fy__persist_open(struct fy__persist *p, uv_loop_t *loop, fy_aio *aio, const char *root_dir,
                     const char *file, const char *module, char **buf, size_t *len, char *err,
                     size_t errlen) {
  memset(p, 0, sizeof *p);
  p->module = module;
  *buf = NULL;
  *len = 0;
  if (!root_dir)
    return 0;
  size_t n = strlen(root_dir) + strlen("/config/") + strlen(file) + 1;
  char *dir = malloc(n);
  p->path = malloc(n);
  if (!dir || !p->path) {
    free(dir);
    free(p->path);
    p->path = NULL;
    return errorf(err, errlen, -ENOMEM, "out of memory");
  }
  snprintf(dir, n, "%s/config", root_dir);
  snprintf(p->path, n, "%s/config/%s", root_dir, file);
  int r = mkdir_ok(root_dir);
  if (r == 0)
    r = mkdir_ok(dir);
  if (r < 0) {
    errorf(err, errlen, r, "cannot create %s: %s", dir, fy_strerror(r));
    goto out_free;
  }
  r = fy_metafile_load(p->path, buf, len);
  if (r == -ENOENT) {
    r = 0;
  } else if (r < 0) {
    errorf(err, errlen, r, "cannot read %s: %s", p->path, fy_strerror(r));
    goto out_free;
  }
  r = fy_metafile_new(loop, aio, p->path, on_cycle, p, &p->mf);
  if (r < 0) {
    errorf(err, errlen, r, "%s: %s", p->path, fy_strerror(r));
    free(*buf);
    *buf = NULL;
    goto out_free;
  }
  free(dir);
  return 0;

out_free:
  free(dir);
  free(p->path);
  p->path = NULL;
  return r;
}

int fy__persist_save(struct fy__persist *p, char *json, size_t len, fy_metafile_cb cb, void *arg) {
  if (!p->mf) {
    free(json);
    return cb ? -EINVAL : 0;
  }
  return fy_metafile_save(p->mf, json, len, cb, arg);
}

char *fy__table_dump(const struct fy__table_kind *kind, const fy_strmap *map,
                     const struct fy_data_version *dv, size_t flags, size_t *len) {
  json_t *root = json_object(), *table = json_object(), *jdv = fy__data_version_to_json(dv);
  char *s = NULL;
  if (!root || !table || !jdv)
    goto out;
  size_t pos = 0, klen;
  const char *key;
  void *v;
  while (fy_strmap_next(map, &pos, &key, &klen, &v)) { /* bounded by the table's max */
    if (json_object_set_new(table, key, kind->to_json(v)) < 0)
      goto out;
  }
  int r = json_object_set_new(root, "dataVersion", jdv);
  jdv = NULL; /* set_new took it, even on failure */
  if (r < 0)
    goto out;
  r = json_object_set_new(root, kind->table_key, table);
  table = NULL;
  if (r == 0)
    s = fy__json_dump(root, flags, len);
out:
  json_decref(jdv);
  json_decref(table);
  json_decref(root);
  return s;
}

void fy__table_save(const struct fy__table_kind *kind, struct fy__persist *p,
                    const fy_strmap *map, const struct fy_data_version *dv) {
  size_t len;
  char *s = fy__table_dump(kind, map, dv, JSON_INDENT(2) | JSON_SORT_KEYS, &len);
  int r = s ? fy__persist_save(p, s, len, NULL, NULL) : -ENOMEM;
  if (r < 0) {
    p->status = r;
    fy_error(p->module, "cannot schedule saving %s: %s", kind->title, fy_strerror(r));
  }
}

int fy__table_flush(const struct fy__table_kind *kind, struct fy__persist *p,
                    const fy_strmap *map, const struct fy_data_version *dv, fy_metafile_cb cb,
                    void *arg) {
  if (!p->mf)
    return -EINVAL;
  size_t len;
  char *s = fy__table_dump(kind, map, dv, JSON_INDENT(2) | JSON_SORT_KEYS, &len);
  if (!s)
    return -ENOMEM;
  return fy__persist_save(p, s, len, cb, arg);
}

void fy__persist_close(struct fy__persist *p) {
  fy_metafile_close(p->mf);
  p->mf = NULL;
  free(p->path);
  p->path = NULL;
}

/* Same names with equal entries. */
static bool table_equal(const struct fy__table_kind *kind, const fy_strmap *a,
                        const fy_strmap *b) {
  if (fy_strmap_size(a) != fy_strmap_size(b))
    return false;
  size_t pos = 0, klen;
  const char *key;
  void *v;
  while (fy_strmap_next(a, &pos, &key, &klen, &v)) { /* bounded by the map's capacity */
    const void *other = fy_strmap_get(b, key, klen);
    if (!other || !kind->equal(v, other))
      return false;
  }
  return true;
}

int fy__table_replace(const struct fy__table_kind *kind, fy_strmap **map,
                      struct fy_data_version *dv, uint32_t max, const char *json, size_t len,
                      bool *changed, char *err, size_t errlen) {
  fy_strmap *next;
  struct fy_data_version ndv;
  *changed = false;
  int r = fy__table_parse(kind, json, len, max, &next, &ndv, err, errlen);
  if (r < 0)
    return r;
  if (fy_data_version_equal(&ndv, dv) && table_equal(kind, next, *map)) {
    fy__table_free(next, free);
    return 0;
  }
  fy__table_free(*map, free);
  *map = next;
  *dv = ndv;
  *changed = true;
  return 0;
}

static int by_name(const void *a, const void *b, void *name_offset) {
  size_t off = *(const size_t *)name_offset;
  return strcmp((const char *)a + off, (const char *)b + off);
}

int fy__table_list(const struct fy__table_kind *kind, const fy_strmap *map, void **out,
                   size_t *n) {
  size_t count = fy_strmap_size(map), i = 0;
  *out = NULL;
  *n = 0;
  if (count == 0)
    return 0;
  char *arr = malloc(count * kind->entry_size);
  if (!arr)
    return -ENOMEM;
  size_t pos = 0, klen;
  const char *key;
  void *v;
  while (i < count && fy_strmap_next(map, &pos, &key, &klen, &v))
    memcpy(arr + i++ * kind->entry_size, v, kind->entry_size);
  fy_assert(i == count);
  qsort_r(arr, count, kind->entry_size, by_name, (void *)&kind->name_offset);
  *out = arr;
  *n = count;
  return 0;
}
