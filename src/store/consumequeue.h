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

#include "store/aio.h"

#define FY_CQ_ENTRY_SIZE 20u

typedef struct fy_cq fy_cq;

struct fy_cq_entry {
  uint64_t phys;
  uint32_t size;
  int64_t tag_hash;
};

/* Opens (or creates) the queue's directory and maps its files; max is found
 * by scanning for the last written entry. */
int fy_cq_open(const char *root_dir, const char *topic, uint32_t queue_id,
               uint32_t entries_per_file, fy_cq **out);
/* Unmaps and closes. Call fy_cq_flush first for durability. */
void fy_cq_close(fy_cq *cq);
/* Closes and deletes the queue's files and directory (topic deletion). */
int fy_cq_destroy(fy_cq *cq);

const char *fy_cq_topic(const fy_cq *cq);
uint32_t fy_cq_queue_id(const fy_cq *cq);
uint64_t fy_cq_min(const fy_cq *cq);
uint64_t fy_cq_max(const fy_cq *cq);
/* Commit-log offset one past the last entry's record (0 when empty). */
uint64_t fy_cq_max_phys(const fy_cq *cq);

/*
 * Stores entry e at queue offset qoff. qoff may be at most max (append) or
 * below it (re-dispatch: the stored entry must be equal, else -FY_ECORRUPT).
 * An empty queue accepts any qoff as its first entry (min = max = qoff). A
 * qoff above max returns -FY_EDISCONTIG.
 */
int fy_cq_put(fy_cq *cq, uint64_t qoff, const struct fy_cq_entry *e);

/* Reads entry qoff; -FY_ENOT_FOUND outside [min, max). */
int fy_cq_get(const fy_cq *cq, uint64_t qoff, struct fy_cq_entry *e);

/*
 * Collects up to max_out entries from queue offset `from` whose tag hash is
 * one of tags[0..ntags) (all entries when ntags == 0), examining at most
 * max_scan entries. Writes the entries and their queue offsets; returns how
 * many; *next is the queue offset after the last entry examined (where the
 * next scan should start). from below min starts at min.
 */
size_t fy_cq_scan(const fy_cq *cq, uint64_t from, size_t max_out, size_t max_scan,
                  const int64_t *tags, size_t ntags, struct fy_cq_entry *out, uint64_t *qoffs,
                  uint64_t *next);

/*
 * First queue offset whose message was stored at or after ts_ms (binary
 * search; store_ts gives each entry's store timestamp, read from the commit
 * log, or a negative value if unreadable). Returns max if all are older.
 */
uint64_t fy_cq_offset_for_time(const fy_cq *cq, int64_t ts_ms,
                               int64_t (*store_ts)(void *arg, const struct fy_cq_entry *e),
                               void *arg);

/* Recovery: removes (zeroes) entries whose phys >= phys_end; max moves back. */
int fy_cq_truncate_phys(fy_cq *cq, uint64_t phys_end);

/* Retention: deletes whole files whose every entry points below phys_min
 * (never the file holding max); min moves forward. Returns files deleted. */
int fy_cq_trim_below(fy_cq *cq, uint64_t phys_min);

/* True if entries were stored since the last flush. */
bool fy_cq_dirty(const fy_cq *cq);

/*
 * Durability: fdatasyncs the files written since the last flush; cb(arg,
 * status) runs once all are done (immediately-next-iteration style via aio:
 * never from inside this call). Returns 0, or an error and cb never runs.
 * At most one flush per queue in flight (-FY_EBUSY otherwise).
 */
int fy_cq_flush(fy_cq *cq, fy_aio *aio, void (*cb)(void *arg, int status), void *arg);

#endif
