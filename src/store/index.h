/*
 * The message index: find messages by key ("topic#key" for each word of the
 * KEYS property, and "topic#uniqKey" for the UNIQ_KEY property).
 *
 * Index files live in <root>/index/, named by their creation time
 * (yyyyMMddHHmmssSSS, as RocketMQ) and each is a fixed-size chained hash
 * table: a 64-byte header, slot_count u32 slots (the number of the newest
 * entry for that hash, 0 = empty), then up to max_entries entries of 20 bytes
 * [u32 key_hash][u64 phys][i32 seconds since header begin_ts][u32 prev entry].
 * Entry number 0 is never used. When a file is full a new one is started.
 * Files are sparse and mapped shared; fy_index_flush makes them durable
 * through fy_aio.
 *
 * Queries return candidate offsets only: a hash can collide and an entry may
 * refer to a record lost in a crash, so callers read each record and check
 * its topic and keys before answering.
 */
#ifndef FY_STORE_INDEX_H
#define FY_STORE_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include "store/aio.h"

typedef struct fy_index fy_index;

/* Opens all index files in dir (created if missing). slot_count and
 * max_entries apply to new files (maxHashSlotNum, maxIndexNum). */
int fy_index_open(const char *dir, uint32_t slot_count, uint32_t max_entries, fy_index **out);
void fy_index_close(fy_index *ix);

/* Adds the keys of the record at phys (size bytes, stored at store_ts_ms).
 * Records must be added in increasing phys order; a record with phys below
 * fy_index_max_phys is ignored (returns 0), which makes re-dispatch
 * idempotent. Keys are full keys ("topic#key"); nkeys may be 0 (the record
 * then only advances max_phys). */
int fy_index_put(fy_index *ix, const char *const *keys, const size_t *key_lens, size_t nkeys,
                 uint64_t phys, uint32_t size, int64_t store_ts_ms);

/* Newest first, up to max results with store time in [begin_ms, end_ms]. */
size_t fy_index_query(const fy_index *ix, const char *key, size_t key_len, int64_t begin_ms,
                      int64_t end_ms, uint64_t *phys_out, size_t max);

/* End (phys + size) of the last record put (0 if none). */
uint64_t fy_index_max_phys(const fy_index *ix);

/* Recovery: removes entries with phys >= phys_end (newest first, relinking slots). */
int fy_index_truncate_phys(fy_index *ix, uint64_t phys_end);

/* Retention: deletes whole files (never the newest) whose highest phys is
 * below phys_min. Returns files deleted. */
int fy_index_trim_below(fy_index *ix, uint64_t phys_min);

/* Durability, as fy_cq_flush. */
int fy_index_flush(fy_index *ix, fy_aio *aio, void (*cb)(void *arg, int status), void *arg);

#endif
