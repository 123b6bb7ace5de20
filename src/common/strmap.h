/*
 * A string-keyed hash map (open addressing, linear probing, power-of-two
 * capacity, grows at 70% load). Keys are copied; values are caller-owned
 * pointers. Used for the store's topic/queue table and similar small maps.
 */
#ifndef FY_COMMON_STRMAP_H
#define FY_COMMON_STRMAP_H

#include <stddef.h>

typedef struct fy_strmap fy_strmap;

fy_strmap *fy_strmap_new(void);
/* Frees the map and its keys, not the values. */
void fy_strmap_free(fy_strmap *m);
/* Value for key (key_len bytes, may contain NULs), or NULL. */
void *fy_strmap_get(const fy_strmap *m, const char *key, size_t key_len);
/* Sets key to value (non-NULL). Returns 0 or -ENOMEM. */
int fy_strmap_put(fy_strmap *m, const char *key, size_t key_len, void *value);
/* Removes key; returns its value or NULL. */
void *fy_strmap_del(fy_strmap *m, const char *key, size_t key_len);
size_t fy_strmap_size(const fy_strmap *m);

/* Iteration: *pos starts at 0; returns 0 at the end, else 1 with the entry.
 * The map must not be modified during iteration, except deleting the
 * current entry is not allowed either: collect first, then delete. */
int fy_strmap_next(const fy_strmap *m, size_t *pos, const char **key, size_t *key_len,
                   void **value);

#endif
