/*
 * Consumer offsets (RocketMQ's ConsumerOffsetManager): (group, topic,
 * queue id) → the next queue offset the group will consume, with the time of
 * the last update (in memory only).
 *
 * Four ways to change an offset, and the rule each follows:
 *   commit  the consumer's own report: set, even backwards (RocketMQ does the
 *           same and logs it; a consumer that was reset commits lower values);
 *   reset   an operator's explicit move (resetOffsetByTime): set, backwards ok;
 *   merge   offsets learnt from the other broker of the pair (a slave
 *           syncing from its master, a returning master syncing from the
 *           slave that served consumers meanwhile): per queue the larger
 *           value wins, never backwards. This is the fix for RocketMQ's
 *           duplicate consumption after a master restart (#1094, #1440),
 *           where the slave's newer offsets were overwritten.
 *   delete  a whole group or topic, remembered as a deletion (below).
 * Note that merge cannot tell a reset from a stale value: a reset made on
 * one broker is undone by merging the other broker's higher offsets.
 *
 * Deletions (tombstones). Larger-wins merging alone would bring deleted
 * offsets back from the other broker's copy. So the table keeps an epoch,
 * the newest deletion it reflects, and a tombstone per deleted group and
 * per deleted topic with the epoch of its deletion. A deletion made here
 * takes the epoch max(epoch + 1, wall clock in ms): it orders after every
 * deletion the table knows, and reads as the time it was made. Every
 * document (fy_offsets_to_json) carries the epoch and the tombstones, and
 * merging one
 *   - skips the document's offsets of a group or topic this table deleted
 *     after the document's epoch (the sender had not seen the deletion
 *     yet, so its copy predates it);
 *   - applies the document's tombstones newer than this table's epoch:
 *     the local offsets of that group or topic are removed (commits made
 *     here between the deletion and this merge too: nothing orders them
 *     after it), the tombstone kept;
 *   - then merges the rest (larger wins) and takes the larger epoch.
 * Offsets committed after a deletion (a group recreated) therefore merge
 * as ever, in both directions, once the sender has seen the deletion.
 * Tombstones are forgotten tombstone_ttl_ms after their epoch, and the
 * oldest beyond tombstones_max; a peer that kept deleted offsets longer
 * (or a peer that does not know tombstones) then brings them back, as
 * before. A deletion schedules a save at once rather than at the next tick.
 *
 * Persisted as <root>/config/consumerOffset.json, RocketMQ's shape:
 *   {"offsetTable":{"topic@group":{"0":123,"1":456}}}
 * plus, once something was deleted, Ferry's own key (which RocketMQ and
 * older Ferry ignore):
 *   "deletedOffsets":{"epoch":E,"groups":{"group":e},"topics":{"topic":e}}
 * written through a metafile every flush_interval_ms when something changed
 * (RocketMQ flushConsumerOffsetInterval, 5000) and on demand with
 * fy_offsets_flush (shutdown). A failed save is logged, kept in
 * fy_offsets_persist_status, and the table is written again at the next tick.
 *
 * Bounded: at most entries_max (group, topic, queue) entries in total and
 * queue ids below queues_max; beyond, changes fail with -ENOSPC / -EINVAL.
 * At most tombstones_max tombstones once a change or merge is done.
 * Loop thread only.
 */
#ifndef FY_BROKER_OFFSETS_H
#define FY_BROKER_OFFSETS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "broker/groups.h"
#include "broker/topics.h"
#include "store/aio.h"
#include "store/metafile.h"

struct fy_offsets_options {
  const char *root_dir;       /* NULL: in memory only (loop and aio may be NULL) */
  uint64_t flush_interval_ms; /* default 5000 */
  uint32_t entries_max;       /* (group, topic, queue) entries; default 1048576 */
  uint32_t queues_max;        /* queue ids 0..queues_max-1 for commit/reset; default 1024 */
  uint32_t tombstones_max;    /* deletions remembered (groups + topics); default 10000 */
  uint64_t tombstone_ttl_ms;  /* how long a deletion is remembered; default 7 days */
};

struct fy_offset {
  int64_t offset;
  int64_t updated_ms; /* wall clock of the last commit, reset or advancing merge */
};

struct fy_offset_item {
  char topic[FY_TOPIC_NAME_MAX + 1];
  uint32_t queue_id;
  int64_t offset;
  int64_t updated_ms;
};

struct fy_offsets_merge_stats {
  uint64_t added;    /* queues this broker had no offset for */
  uint64_t advanced; /* queues whose offset moved forward */
  uint64_t kept;     /* queues where the local offset was already as large or larger */
  uint64_t dropped;  /* queues skipped: deleted here after the document was made */
  uint64_t deleted;  /* local queue offsets removed by the document's newer deletions */
};

typedef struct fy_offsets fy_offsets;

void fy_offsets_options_init(struct fy_offsets_options *opt);

/*
 * Start-up (blocking): loads <root>/config/consumerOffset.json if it exists
 * (a corrupt file is -FY_ECORRUPT with err naming it) and, when persistent,
 * starts the flush timer on loop (unreferenced: it does not keep the loop
 * alive by itself).
 */
int fy_offsets_open(uv_loop_t *loop, fy_aio *aio, const struct fy_offsets_options *opt,
                    fy_offsets **out, char *err, size_t errlen);

/*
 * Stops the timer and releases the table. Nothing is written: call
 * fy_offsets_flush first and close in (or after) its callback. The memory is
 * freed once the loop has run the timer's close callback; a save in flight
 * completes in the background (aio must stay open until then).
 */
void fy_offsets_close(fy_offsets *o);

/* The consumer's commit. 0, or -EINVAL (bad name, queue id >= queues_max,
 * offset < 0), -ENOSPC (entries_max reached), -ENOMEM. */
int fy_offsets_commit(fy_offsets *o, const char *group, const char *topic, uint32_t queue_id,
                      int64_t offset);
/* An explicit reset; may move backwards. Errors as commit. */
int fy_offsets_reset(fy_offsets *o, const char *group, const char *topic, uint32_t queue_id,
                     int64_t offset);
/* Merge of one queue: the offset becomes max(local, offset). *advanced (may
 * be NULL) tells whether it changed. Errors as commit. */
int fy_offsets_merge(fy_offsets *o, const char *group, const char *topic, uint32_t queue_id,
                     int64_t offset, bool *advanced);

/*
 * Merges a whole document in consumerOffset.json's shape (the other broker's
 * fy_offsets_to_json), deletions included (see Deletions above). The
 * document is validated first and the entry and tombstone bounds checked; on
 * any error (-FY_ECORRUPT, -ENOSPC, with err saying why) nothing changes.
 * Queue ids in documents may go up to FY_TOPIC_QUEUES_LIMIT - 1. stats may
 * be NULL.
 */
int fy_offsets_merge_json(fy_offsets *o, const char *json, size_t len,
                          struct fy_offsets_merge_stats *stats, char *err, size_t errlen);

/* The offset, or -1 when there is none (RocketMQ's answer). */
int64_t fy_offsets_query(const fy_offsets *o, const char *group, const char *topic,
                         uint32_t queue_id);
/* The offset and its update time: 0 or -FY_ENOT_FOUND. */
int fy_offsets_get(const fy_offsets *o, const char *group, const char *topic, uint32_t queue_id,
                   struct fy_offset *out);

/* All offsets of group, sorted by topic then queue id, in a fresh malloc'ed
 * array the caller frees (NULL when none). 0 or -ENOMEM. */
int fy_offsets_list_group(const fy_offsets *o, const char *group, struct fy_offset_item **out,
                          size_t *n);

/* Remove every offset of group / of topic and record the deletion (a
 * tombstone, also when there was nothing to remove here: the other broker
 * may hold some). Return the number of queue offsets removed,
 * -FY_ENOT_FOUND when there were none, -EINVAL for a bad name or -ENOMEM
 * (then nothing changed). */
int fy_offsets_delete_group(fy_offsets *o, const char *group);
int fy_offsets_delete_topic(fy_offsets *o, const char *topic);

/* The newest deletion the table reflects (0: none yet). */
int64_t fy_offsets_deletion_epoch(const fy_offsets *o);
/* Tombstones held (deleted groups + deleted topics). */
size_t fy_offsets_tombstones(const fy_offsets *o);
/* The epoch of group's / topic's tombstone, or 0 when there is none. */
int64_t fy_offsets_group_deleted(const fy_offsets *o, const char *group);
int64_t fy_offsets_topic_deleted(const fy_offsets *o, const char *topic);
/* Forgets tombstones older than tombstone_ttl_ms at now_ms, then the oldest
 * beyond tombstones_max. The flush timer calls it; tests may too. */
void fy_offsets_trim_tombstones(fy_offsets *o, int64_t now_ms);

/* (group, topic, queue) entries held. */
size_t fy_offsets_entries(const fy_offsets *o);
/* True when something changed since the last save was scheduled. */
bool fy_offsets_dirty(const fy_offsets *o);
/* Commits that moved an offset backwards (logged at debug level). */
uint64_t fy_offsets_backward_commits(const fy_offsets *o);

/* The whole table as compact JSON in consumerOffset.json's shape; fresh
 * malloc'ed, NUL-terminated, *len excludes the NUL. NULL on -ENOMEM. */
char *fy_offsets_to_json(const fy_offsets *o, size_t *len);

/* Saves the table now, dirty or not; cb(arg, status) runs when it is durable
 * or the save failed. Errors as fy_metafile_save; -EINVAL in memory only. */
int fy_offsets_flush(fy_offsets *o, fy_metafile_cb cb, void *arg);
/* 0, or the error of the latest finished save if it failed. */
int fy_offsets_persist_status(const fy_offsets *o);
/* Tests and statistics: write cycles of the file so far (0 in memory only). */
uint64_t fy_offsets_writes(const fy_offsets *o);

#endif
