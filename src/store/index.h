/*
 * The message index: find messages by key ("topic#key" for each word of the
 * KEYS property, and "topic#uniqKey" for the UNIQ_KEY property).
 *
 * Index files live in <root>/index/, named by their creation time
 * (yyyyMMddHHmmssSSS in local time, as RocketMQ; "_1", "_2"... appended if
 * the name is taken) and each is a fixed-size chained hash table: a 64-byte
 * header, slot_count u32 slots (the number of the newest entry for that
 * hash, 0 = empty), then max_entries entries of 20 bytes
 * [u32 key_hash][u64 phys][i32 seconds since header begin_ts][u32 prev entry].
 * Entry number 0 is never used, so a file holds max_entries - 1 keys. All
 * keys of one record go into one file; when they do not fit, a new file is
 * started. The byte layout of the header is drawn in index.c. The key hash
 * is FNV-1a (32 bits) of the full key; slot = hash % slot_count. Files are
 * ordered by the first commit-log offset they index, not by name. Files are
 * sparse, all mapped shared; the newest file's slot table is kept in
 * anonymous memory and written to the file by fy_index_flush, which makes
 * everything durable through fy_aio. A file whose header does not validate is ignored with a warning.
 *
 * Queries return candidate offsets only: a hash can collide and an entry may
 * refer to a record lost in a crash, so callers read each record and check
 * its topic and keys before answering.
 */
#ifndef FY_STORE_INDEX_H
#define FY_STORE_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "store/aio.h"

typedef struct fy_index fy_index;

#define FY_INDEX_TRIM_MAX 4 /* files fy_index_trim_below deletes per call */
#define FY_INDEX_KEYS_MAX 64 /* keys of one record */

/* Opens all index files in dir (created if missing). slot_count and
 * max_entries apply to new files (maxHashSlotNum, maxIndexNum); existing
 * files keep the values in their headers. -EINVAL: slot_count 0, max_entries
 * below 2, or a file size above 64 GiB. Synchronous. */
int fy_index_open(const char *dir, uint32_t slot_count, uint32_t max_entries, fy_index **out);
/* Stores what was put since the last flush into the files' page cache (no
 * I/O wait), so a later open sees it, then unmaps. A flush still in flight
 * completes on its own and its callback still runs; its slot-table writes
 * may then land after this close's stores (an index closed during a flush is
 * that of a failed store: recovery re-dispatches, and queries verify every
 * candidate, so at worst some older entries are not found). */
void fy_index_close(fy_index *ix);

/* Adds the keys of the record at phys (size bytes, stored at store_ts_ms).
 * Records must be added in increasing phys order; a record with phys below
 * fy_index_max_phys is ignored (returns 0), which makes re-dispatch
 * idempotent. Keys are full keys ("topic#key"); empty keys are skipped;
 * nkeys may be 0 (the record then only advances max_phys). -EINVAL: size 0,
 * phys + size overflowing, more keys than a file holds, or more than
 * FY_INDEX_KEYS_MAX. */
int fy_index_put(fy_index *ix, const char *const *keys, const size_t *key_lens, size_t nkeys,
                 uint64_t phys, uint32_t size, int64_t store_ts_ms);

/* fy_index_put with the keys given as fy_index_key_hash values (n of them,
 * none empty): for a caller that hashes keys ahead to prefetch. */
int fy_index_put_hashed(fy_index *ix, const uint32_t *hashes, size_t n, uint64_t phys,
                        uint32_t size, int64_t store_ts_ms);

/* The hash of the full key "topic#key", without building it. */
uint32_t fy_index_key_hash(const char *topic, size_t topic_len, const char *key, size_t key_len);

/* Hints that a key with this hash is about to be put: starts loading its
 * slot into the cache. A batch of puts hides the memory latency this way. */
void fy_index_prefetch(const fy_index *ix, uint32_t hash);

/* Candidate offsets, newest first, up to max, of records stored in
 * [begin_ms, end_ms]. Times are kept to the second, so an entry matches when
 * its second overlaps the window. Callers verify each record (hash
 * collisions, records lost in a crash). */
size_t fy_index_query(const fy_index *ix, const char *key, size_t key_len, int64_t begin_ms,
                      int64_t end_ms, uint64_t *phys_out, size_t max);

/* From now on retention (fy_index_trim_below) deletes files on loop's
 * thread pool, and the slot table of the next file is made there ahead of
 * need (zeroed and faulted in: creating a file then costs the loop no page
 * faults; it holds one slot table's worth of memory, 20 MB by default), as
 * is the flush's snapshot buffer for a new store's first file. Without it
 * (tests, tools) all of this happens synchronously. */
void fy_index_use_loop(fy_index *ix, uv_loop_t *loop);

struct fy_index_stats {
  size_t files;
  bool spare_ready;     /* a slot table for the next file is made */
  uint64_t spares_used; /* files created with a slot table made ahead */
  bool snap_ready;      /* the buffer the next flush copies slots into is made */
  uint64_t snaps_on_loop; /* such buffers made by the caller (not the pool) */
};
void fy_index_stats(const fy_index *ix, struct fy_index_stats *out);

/* End (phys + size) of the last record put (0 if none). */
uint64_t fy_index_max_phys(const fy_index *ix);

/* Recovery: removes entries with phys >= phys_end (newest first, relinking
 * slots); files left without entries are deleted, except the oldest, which is
 * kept (emptied) when nothing remains. max_phys becomes min(max_phys,
 * phys_end). */
int fy_index_truncate_phys(fy_index *ix, uint64_t phys_end);

/* Retention: deletes the oldest files (never the newest) whose last record
 * ends (end_phys) at or below phys_min, at most FY_INDEX_TRIM_MAX per call.
 * Returns files deleted. */
int fy_index_trim_below(fy_index *ix, uint64_t phys_min);

/* True if anything was written since the last flush was queued. */
bool fy_index_dirty(const fy_index *ix);

/* Durability, as fy_cq_flush (with nothing dirty it syncs the directory, so
 * the callback still comes from aio). */
int fy_index_flush(fy_index *ix, fy_aio *aio, void (*cb)(void *arg, int status), void *arg);

#endif
