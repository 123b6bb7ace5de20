/*
 * Consume queues: for each topic and queue id, the list of that queue's
 * messages in order, as fixed-size entries pointing into the commit log.
 *
 * Entry (20 bytes, little-endian): u64 phys_offset, u32 size, i64 tag_hash
 * (fy_tag_hash of the TAGS property, 0 without tags). Entry number q (the
 * message's queue offset) lives at byte q*20 of the queue's logical space,
 * which is cut into files of entries_per_file entries named by their first
 * byte offset in 20 digits: <root>/consumequeue/<topic>/<queueId>/<offset>.
 * An all-zero entry (size 0) is "not written".
 *
 * Files are sparse (ftruncate to full size) and mapped shared; entries are
 * stored into the mapping and made durable by fy_cq_flush, which fdatasyncs
 * the files written since the last flush through fy_aio.
 *
 * Dispatch is idempotent: putting an entry at a queue offset that already
 * holds the same entry changes nothing, so recovery can re-dispatch a range
 * of the commit log safely.
 *
 * min is the first queue offset still present (retention moves it), max is
 * one past the last entry (RocketMQ's maxOffset): an empty queue has min ==
 * max.
 */
#ifndef FY_STORE_CONSUMEQUEUE_H
#define FY_STORE_CONSUMEQUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "store/aio.h"

#define FY_CQ_ENTRY_SIZE 20u
#define FY_CQ_ENTRIES_PER_FILE_MAX 50000000u /* 1 GB files; RocketMQ's default is 300,000 */
#define FY_CQ_TRIM_MAX 16                    /* files fy_cq_trim_below deletes per call */

typedef struct fy_cq fy_cq;

struct fy_cq_entry {
  uint64_t phys;
  uint32_t size;
  int64_t tag_hash;
};

/*
 * Opens (or creates) the queue's directory. Synchronous. min is the first
 * written entry, max one past the last (found by scanning the files; holes
 * below max read as unwritten). A queue whose files hold no entry is empty
 * with min = max = the first file's start (0 without files).
 *
 * Files are mapped lazily, a few per queue at a time (least recently used
 * clean file unmapped first; files awaiting flush stay mapped), so a queue
 * may have any number of files. Reads through a const fy_cq may map/unmap.
 * From disk: names that are not 20 digits or not a multiple of the file size
 * are ignored with a warning; a file of the wrong size is resized (extended
 * with unwritten entries, or cut) with a warning.
 * -EINVAL: topic empty, longer than FY_TOPIC_MAX, ".", ".." or with a '/';
 * entries_per_file 0 or above FY_CQ_ENTRIES_PER_FILE_MAX.
 */
int fy_cq_open(const char *root_dir, const char *topic, uint32_t queue_id,
               uint32_t entries_per_file, fy_cq **out);
/* From now on (the loop thread's, from which the queue is used): the next
 * file is created on the thread pool once the queue is halfway through its
 * file, and retention deletes files there. Without it (tests, tools)
 * everything is synchronous. */
void fy_cq_use_loop(fy_cq *cq, uv_loop_t *loop);

/* Unmaps and closes. Call fy_cq_flush first for durability. A flush still in
 * flight completes on its own and its callback still runs. */
void fy_cq_close(fy_cq *cq);
/* Closes and deletes the queue's files and directory, and the topic's
 * directory once empty (topic deletion). cq is freed even when an error is
 * returned (the first unlink/rmdir error). */
int fy_cq_destroy(fy_cq *cq);

const char *fy_cq_topic(const fy_cq *cq);
uint32_t fy_cq_queue_id(const fy_cq *cq);
uint64_t fy_cq_min(const fy_cq *cq);
uint64_t fy_cq_max(const fy_cq *cq);
/* Commit-log offset one past the last entry's record (0 when empty). */
uint64_t fy_cq_max_phys(const fy_cq *cq);

/*
 * Stores entry e at queue offset qoff. qoff may be at most max (append) or
 * below it (re-dispatch: the stored entry must be equal, else -FY_ECORRUPT;
 * an unwritten slot, e.g. a hole left by a crash, is filled). An empty queue
 * accepts any qoff as its first entry (then min = qoff, max = qoff + 1). A
 * qoff above max returns -FY_EDISCONTIG; a qoff below the first file (gone
 * to retention) is ignored (returns 0). e->size 0 (the "unwritten" marker)
 * or phys + size overflowing is -EINVAL. Creates the file on first use.
 */
int fy_cq_put(fy_cq *cq, uint64_t qoff, const struct fy_cq_entry *e);

/* Reads entry qoff; -FY_ENOT_FOUND outside [min, max) or for an unwritten
 * slot; a negative errno if its file cannot be mapped. */
int fy_cq_get(const fy_cq *cq, uint64_t qoff, struct fy_cq_entry *e);

/*
 * Collects up to max_out entries from queue offset `from` whose tag hash is
 * one of tags[0..ntags) (all entries when ntags == 0), examining at most
 * max_scan entries. Writes the entries and their queue offsets; returns how
 * many; *next is the queue offset after the last entry examined (where the
 * next scan should start; from itself, or min if from < min, when nothing
 * was examined). from below min starts at min. Unwritten slots count as
 * examined and are skipped. A file that cannot be mapped ends the scan early
 * (logged); the caller retries from *next.
 */
size_t fy_cq_scan(const fy_cq *cq, uint64_t from, size_t max_out, size_t max_scan,
                  const int64_t *tags, size_t ntags, struct fy_cq_entry *out, uint64_t *qoffs,
                  uint64_t *next);

/*
 * First queue offset whose message was stored at or after ts_ms (binary
 * search; store_ts gives each entry's store timestamp, read from the commit
 * log, or a negative value if unreadable). Returns max if all are older
 * (min == max for an empty queue); with equal timestamps, the first of them.
 * Unwritten and unreadable entries (store_ts < 0, e.g. the record went to
 * commit-log retention) count as older than ts_ms: they occur at the old end
 * of the queue, so the search moves past them. At most 64 probes.
 */
uint64_t fy_cq_offset_for_time(const fy_cq *cq, int64_t ts_ms,
                               int64_t (*store_ts)(void *arg, const struct fy_cq_entry *e),
                               void *arg);

/* Recovery: removes (zeroes) entries whose phys >= phys_end, from the tail;
 * trailing files left without entries are deleted (the first file is kept);
 * max and max_phys move back. If no entry remains, min = max = the old min. */
int fy_cq_truncate_phys(fy_cq *cq, uint64_t phys_end);

/* Retention: deletes leading files whose last entry ends (phys + size) at or
 * below phys_min, never the file holding the last entry, at most
 * FY_CQ_TRIM_MAX per call; min moves forward. Returns files deleted. */
int fy_cq_trim_below(fy_cq *cq, uint64_t phys_min);

/* True if entries were stored (or files/directories created) since the last
 * flush was queued. */
bool fy_cq_dirty(const fy_cq *cq);

/*
 * Durability: fdatasyncs the files written since the last flush (and the
 * directories whose entries changed); with nothing dirty it syncs the queue's
 * directory, so cb always comes from aio. cb(arg, status) runs once all are
 * done, never from inside this call, with the first error. Returns 0, or an
 * error and cb never runs. At most one flush per queue in flight (-FY_EBUSY
 * otherwise). Entries stored while a flush is in flight are left for the next
 * one. A failed fdatasync is not retried: treat it as fatal (the queue is
 * rebuilt from the commit log on restart).
 */
int fy_cq_flush(fy_cq *cq, fy_aio *aio, void (*cb)(void *arg, int status), void *arg);

#endif
