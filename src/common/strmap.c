/* Open-addressing string map; see strmap.h. Deletion uses backward-shift so
 * no tombstones accumulate. */
#include "common/strmap.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct slot {
  char *key; /* NULL = empty */
  size_t key_len;
  uint64_t hash;
  void *value;
};

struct fy_strmap {
  struct slot *slots;
  size_t cap; /* power of two */
  size_t size;
};

static uint64_t hash_bytes(const char *k, size_t n) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a, then a final mix */
  for (size_t i = 0; i < n; i++) {
    h ^= (unsigned char)k[i];
    h *= 1099511628211ull;
  }
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  return h;
}

fy_strmap *fy_strmap_new(void) {
  fy_strmap *m = calloc(1, sizeof *m);
  if (!m)
    return NULL;
  m->cap = 16;
  m->slots = calloc(m->cap, sizeof *m->slots);
  if (!m->slots) {
    free(m);
    return NULL;
  }
  return m;
}

void fy_strmap_free(fy_strmap *m) {
  if (!m)
    return;
  for (size_t i = 0; i < m->cap; i++)
    free(m->slots[i].key);
  free(m->slots);
  free(m);
}

static size_t find(const fy_strmap *m, const char *key, size_t key_len, uint64_t h) {
  size_t mask = m->cap - 1;
  for (size_t i = h & mask;; i = (i + 1) & mask) {
    const struct slot *s = &m->slots[i];
    if (!s->key || (s->hash == h && s->key_len == key_len && memcmp(s->key, key, key_len) == 0))
      return i;
  }
}

void *fy_strmap_get(const fy_strmap *m, const char *key, size_t key_len) {
  size_t i = find(m, key, key_len, hash_bytes(key, key_len));
  return m->slots[i].key ? m->slots[i].value : NULL;
}

static int grow(fy_strmap *m) {
  size_t ncap = m->cap * 2;
  struct slot *ns = calloc(ncap, sizeof *ns);
  if (!ns)
    return -ENOMEM;
  for (size_t i = 0; i < m->cap; i++) {
    struct slot *s = &m->slots[i];
    if (!s->key)
      continue;
    size_t j = s->hash & (ncap - 1);
    while (ns[j].key)
      j = (j + 1) & (ncap - 1);
    ns[j] = *s;
  }
  free(m->slots);
  m->slots = ns;
  m->cap = ncap;
  return 0;
}

int fy_strmap_put(fy_strmap *m, const char *key, size_t key_len, void *value) {
  if ((m->size + 1) * 10 > m->cap * 7) {
    int err = grow(m);
    if (err)
      return err;
  }
  uint64_t h = hash_bytes(key, key_len);
  struct slot *s = &m->slots[find(m, key, key_len, h)];
  if (!s->key) {
    s->key = malloc(key_len + 1);
    if (!s->key)
      return -ENOMEM;
    memcpy(s->key, key, key_len);
    s->key[key_len] = '\0';
    s->key_len = key_len;
    s->hash = h;
    m->size++;
  }
  s->value = value;
  return 0;
}

void *fy_strmap_del(fy_strmap *m, const char *key, size_t key_len) {
  size_t mask = m->cap - 1;
  size_t i = find(m, key, key_len, hash_bytes(key, key_len));
  if (!m->slots[i].key)
    return NULL;
  void *value = m->slots[i].value;
  free(m->slots[i].key);
  m->slots[i].key = NULL;
  m->size--;
  /* Backward-shift the cluster that follows so lookups never stop early. */
  for (size_t j = (i + 1) & mask; m->slots[j].key; j = (j + 1) & mask) {
    size_t home = m->slots[j].hash & mask;
    /* Move j into the hole i if home is not cyclically in (i, j]. */
    if ((j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j))) {
      m->slots[i] = m->slots[j];
      m->slots[j].key = NULL;
      i = j;
    }
  }
  return value;
}

size_t fy_strmap_size(const fy_strmap *m) { return m->size; }

int fy_strmap_next(const fy_strmap *m, size_t *pos, const char **key, size_t *key_len,
                   void **value) {
  for (size_t i = *pos; i < m->cap; i++) {
    if (m->slots[i].key) {
      *key = m->slots[i].key;
      *key_len = m->slots[i].key_len;
      *value = m->slots[i].value;
      *pos = i + 1;
      return 1;
    }
  }
  *pos = m->cap;
  return 0;
}
