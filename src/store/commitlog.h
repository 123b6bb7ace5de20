/*
 * The commit log: every message of every topic, appended in one sequence of
 * segment files and addressed by physical offset (bytes since the start of
 * the log).
 *
 * Segments are named by their start offset in 20 digits
 * (00000000001073741824) and all have segment_size bytes; the next one is
 * preallocated (fallocate through fy_aio) before it is needed. Records are
 * laid out as in record.h and never span segments.
 *
 * Write path (loop thread only). fy_commitlog_append encodes records into the
 * current write buffer; once per loop iteration the buffer is handed to
 * fy_aio as one write. Under SYNC_FLUSH each completed write is followed by
 * an fdatasync of the segment holding `flushed`, covering what was written
 * when it was queued (a segment roll syncs the old segment first). At most one
 * write and one fdatasync are in flight per log, and a write may run while
 * the fdatasync does, so everything appended meanwhile goes out together in
 * the next one: group commit. Offsets:
 *
 *   min <= flushed <= written <= end
 *     end      bytes appended (some may only be in a write buffer)
 *     written  bytes whose write completed: in the page cache, survive kill -9,
 *              readable with fy_commitlog_read
 *     flushed  bytes covered by a completed fdatasync
 *
 * An append's callback runs once its bytes are written (ASYNC_FLUSH) or
 * flushed (SYNC_FLUSH), or with an error; under SYNC_FLUSH an append made
 * with a flush timeout (fy_commitlog_append_timed) may instead be answered
 * -FY_ETIMEOUT when the fdatasync is slow. Under ASYNC_FLUSH a timer issues
 * fdatasync every flush_interval_ms when there is unflushed data.
 *
 * Errors are sticky: a failed write, fdatasync or preallocation puts the log
 * in the failed state: every waiting append completes with that error and
 * every later append returns -FY_ESTORE_FAILED at once. Reads go on up to
 * `written`. A failed fdatasync is never retried.
 *
 * Buffers are bounded (write_buffer_size x write_buffers, and max_waiters
 * pending callbacks); when they are full, append returns -FY_EBUSY.
 */
#ifndef FY_STORE_COMMITLOG_H
#define FY_STORE_COMMITLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "store/aio.h"
#include "common/record.h"

typedef struct fy_commitlog fy_commitlog;
typedef struct fy_cl_segment fy_cl_segment;

struct fy_commitlog_config {
  const char *dir;             /* <storePathRootDir>/commitlog, created if missing */
  uint64_t segment_size;       /* mappedFileSizeCommitLog; a multiple of 4096 */
  bool sync_flush;             /* flushDiskType == SYNC_FLUSH */
  uint32_t flush_interval_ms;  /* flushIntervalCommitLog, ASYNC_FLUSH only */
  uint32_t write_buffer_size;  /* bytes per write buffer; >= largest record + FY_BLANK_SIZE
                                  (a buffer holds one segment's bytes, so more than
                                  segment_size is allowed but never used) */
  uint32_t write_buffers;      /* number of write buffers (>= 2) */
  uint32_t max_waiters;        /* appends awaiting their callback */
  uint64_t page_cache_max;     /* commitLogPageCacheMaxBytes: flushed bytes further than this
                                  behind the end leave the page cache; 0 keeps them */
  uint32_t writeback_bytes;    /* commitLogWritebackBytes, ASYNC_FLUSH only: start the
                                  writeback of every this many written bytes; 0: leave it
                                  all to the periodic fdatasync */
};

/* What opening found and did; printed by the store. */
struct fy_cl_recovery {
  uint64_t scanned_from;    /* offset validation started at */
  uint64_t end;             /* recovered end of the log */
  uint64_t dropped_bytes;   /* bytes past the end that were not valid records, zeroed */
  uint64_t records_scanned; /* valid records between scanned_from and end */
  uint32_t segments;        /* segment files after opening (the active and next included) */
};

/*
 * Opens (creating if empty) the log in cfg->dir. Recovery: every record from
 * check_from (a record boundary known to be valid, e.g. the checkpoint; 0 or
 * the first segment's start to check everything) is validated in order; the
 * log ends at the first entry that fails validation. Bytes from there to the
 * end of that segment are zeroed and later segments deleted; a segment found
 * shorter than segment_size is extended. Runs synchronously: call before the
 * loop serves anything. The aio context must outlive the log.
 *
 * Validation starts at the start of the segment holding check_from (at most
 * one segment more than asked, and damage just below the checkpoint is
 * caught), so report->scanned_from <= check_from and the recovered end may lie
 * below check_from. check_from below min is raised to min; past the last
 * segment that holds anything (preallocated segments hold nothing) the scan
 * starts at that segment. Segment files may be short only at the tail: a
 * short one followed by segments holding nothing is extended; misaligned
 * names, gaps, oversized files, or a short file before data fail with
 * -FY_ECORRUPT. Other file names in dir are ignored. dropped_bytes counts, per
 * dropped region, up to its last nonzero byte, so a clean log reports 0.
 */
int fy_commitlog_open(uv_loop_t *loop, fy_aio *aio, const struct fy_commitlog_config *cfg,
                      uint64_t check_from, fy_commitlog **out, struct fy_cl_recovery *report);

/* Starts a clean shutdown (once): appends now return -FY_ESHUTDOWN; pending
 * writes and a final fdatasync complete (their callbacks run; after an error
 * they get the error); then done_cb runs, from a close callback. */
void fy_commitlog_close(fy_commitlog *cl, void (*done_cb)(void *arg), void *arg);

/* Frees the log. Only after close's done_cb (may be called from it), or
 * before the loop ever ran with nothing appended. Slices still held keep
 * their segments mapped until released. */
void fy_commitlog_free(fy_commitlog *cl);

/*
 * Completion of an append. status is 0 or a negative error; phys and size are
 * the first record's offset and the total bytes of the records appended
 * (blank markers between them not counted); for append_raw, offset and len.
 * Callbacks run on the loop thread, in append order, never from inside the
 * call that queued them.
 */
typedef void (*fy_append_cb)(void *arg, int status, uint64_t phys, uint64_t size);

/*
 * Appends n records atomically (all or none), in order, with consecutive
 * offsets (a record that does not fit its segment starts the next one behind
 * a blank marker). For each message the caller fills every field but
 * phys_offset and store_ts_ms, which the log assigns (store_ts_ms is set to
 * now). On success returns 0, stores phys_offset, store_ts_ms and total_size
 * in msgs[i], writes each record's offset to phys_out[i] (if not NULL), and cb
 * (if not NULL) will run once all n are durable per the flush rule. The
 * bytes are copied: msgs may be reused on return.
 *   -FY_ETOO_BIG        a record is larger than a write buffer or a segment can hold
 *   -EINVAL             n == 0, or a field is out of range (fy_record_size == 0)
 *   -FY_EBUSY           buffers or waiters full: retry later
 *   -FY_ESTORE_FAILED   the log failed earlier (sticky)
 *   -FY_EDISK_FULL      writes are refused by fy_commitlog_set_disk_full
 *   -FY_ESHUTDOWN       fy_commitlog_close was called
 *   -FY_ECORRUPT        the log ends less than FY_BLANK_SIZE before a segment
 *                       end (a torn replicated record): truncate it first
 *   other negative errno  creating the next segment failed (the log fails too)
 */
int fy_commitlog_append(fy_commitlog *cl, struct fy_msg *msgs, size_t n, uint64_t *phys_out,
                        fy_append_cb cb, void *arg);

/*
 * As fy_commitlog_append, with a bound on the wait for the flush
 * (RocketMQ's syncFlushTimeout). Under SYNC_FLUSH, if the records are not
 * flushed (or failed) within flush_timeout_ms of the call (loop time), cb
 * runs with -FY_ETIMEOUT instead: the records are in the log, readable once
 * written and made durable by a later fdatasync unless the log fails, but
 * their durability is unconfirmed. cb runs exactly once either way: the
 * flush that comes later does not call it again. A timed-out append keeps
 * its waiter slot (max_waiters) until the flush covers it. flush_timeout_ms
 * 0, or ASYNC_FLUSH, waits as fy_commitlog_append does. Expiry is checked
 * in append order: pass the same timeout to every timed append while any
 * waits (a shorter one than an earlier waiter's may be answered as late as
 * that waiter's deadline); a new timeout applies exactly once no append is
 * waiting.
 */
int fy_commitlog_append_timed(fy_commitlog *cl, struct fy_msg *msgs, size_t n, uint64_t *phys_out,
                              uint32_t flush_timeout_ms, fy_append_cb cb, void *arg);

/*
 * Replication: appends raw log bytes received from a master. offset must equal
 * fy_commitlog_end (else -FY_EDISCONTIG). Bytes may stop anywhere, mid-record
 * included, and may not cross a segment boundary (the master never sends such
 * a chunk: -EINVAL, as for len == 0); the caller validates records as they
 * complete. A chunk that ends exactly at a segment end leaves the next append
 * at the next segment's start. cb as for append. Also -FY_ETOO_BIG (len more
 * than write_buffers - 1 buffers), -FY_EBUSY, -FY_ESTORE_FAILED,
 * -FY_EDISK_FULL, -FY_ESHUTDOWN.
 */
int fy_commitlog_append_raw(fy_commitlog *cl, uint64_t offset, const void *bytes, size_t len,
                            fy_append_cb cb, void *arg);

/*
 * Cuts the log to offset (>= min, <= end, else -EINVAL): later segments
 * deleted (slices on them stay readable), the rest of the segment zeroed,
 * flushed before it returns; a fresh next segment is created. Only with
 * nothing in flight: -FY_EBUSY while bytes are unwritten, appends await their
 * callback, or a write, fdatasync (the ASYNC_FLUSH timer's too) or
 * preallocation runs; run the loop and retry. `flushed` drops to offset if it
 * was beyond. Synchronous: for a slave told to re-sync, or tests.
 */
int fy_commitlog_truncate(fy_commitlog *cl, uint64_t offset);

/* A read-only view of log bytes, pinned: the segment is not unmapped or
 * deleted while a slice refers to it. */
struct fy_cl_slice {
  const uint8_t *data;
  size_t len;
  uint64_t offset;
  fy_cl_segment *seg; /* private */
};

/*
 * Maps up to max_len bytes starting at offset, stopping at the end of the
 * segment and at `written`. Returns 0 (len is 0 at or past `written`; then
 * there is nothing to release, but releasing is harmless), -FY_ENOT_FOUND
 * below min (deleted by retention). Release every slice.
 */
int fy_commitlog_read(fy_commitlog *cl, uint64_t offset, size_t max_len, struct fy_cl_slice *out);
void fy_cl_slice_release(struct fy_cl_slice *s);

/*
 * Reads and validates the record at offset. Returns its size (the slice then
 * covers exactly the entry, or the written part of a blank), -FY_ECORRUPT,
 * -FY_ENOT_FOUND (below min), or -EAGAIN when offset >= written or the record
 * is not complete yet (a slave's log may end mid-record). A blank marker sets
 * *kind and the caller moves to the next segment (fy_commitlog_next_segment);
 * a blank must run exactly to its segment's end, and a record must leave
 * room for one, or it is -FY_ECORRUPT. out points into the slice, which the
 * caller releases (on error there is nothing to release).
 */
int64_t fy_commitlog_read_record(fy_commitlog *cl, uint64_t offset, struct fy_cl_slice *slice,
                                 enum fy_record_kind *kind, struct fy_msg *out);

/*
 * As fy_commitlog_read_record, but a record this process encoded itself
 * (appended with fy_commitlog_append since open, after the last raw append)
 * is not CRC-checked again: its bytes went from the write buffer to the page
 * cache and are read back from there. Every other check is made; bytes found
 * at open or appended raw (replication) are fully validated. For dispatch.
 */
int64_t fy_commitlog_read_record_own(fy_commitlog *cl, uint64_t offset, struct fy_cl_slice *slice,
                                     enum fy_record_kind *kind, struct fy_msg *out);

/* Start offset of the segment after the one holding offset. */
uint64_t fy_commitlog_next_segment(const fy_commitlog *cl, uint64_t offset);

uint64_t fy_commitlog_min(const fy_commitlog *cl);
uint64_t fy_commitlog_end(const fy_commitlog *cl);
uint64_t fy_commitlog_written(const fy_commitlog *cl);
uint64_t fy_commitlog_flushed(const fy_commitlog *cl);
uint64_t fy_commitlog_segment_size(const fy_commitlog *cl);
/* 0, or the sticky error that failed the log. */
int fy_commitlog_error(const fy_commitlog *cl);

/* Counters since open, for benchmarks and stats: log-data writes and
 * fdatasyncs that completed successfully (preallocation's fallocate and
 * directory sync, and recovery's synchronous I/O, are not counted). */
struct fy_cl_stats {
  uint64_t writes;      /* fy_aio writes of buffered records (one per group commit) */
  uint64_t write_bytes; /* bytes those writes carried */
  uint64_t syncs;       /* fdatasyncs of segment data */
  uint64_t writebacks;  /* writebacks started ahead of the fdatasync (writeback_bytes) */
  uint64_t writeback_to; /* end of the last of them: writeback was started below this */
  uint64_t cache_dropped_to; /* the page cache was let go of below this offset */
  uint64_t cache_drops;      /* requests that let it go, DROP_CHUNK (2 MiB) at most each */
};
void fy_commitlog_stats(const fy_commitlog *cl, struct fy_cl_stats *out);

/* Called (on the loop thread) whenever `written` advances, e.g. to dispatch;
 * before the append callbacks that the advance releases. */
void fy_commitlog_on_written(fy_commitlog *cl, void (*cb)(void *arg, uint64_t written), void *arg);
/* Called whenever `flushed` advances, e.g. to write the checkpoint. */
void fy_commitlog_on_flushed(fy_commitlog *cl, void (*cb)(void *arg, uint64_t flushed), void *arg);

/* Disk guard: while set, appends return -FY_EDISK_FULL (not sticky). */
void fy_commitlog_set_disk_full(fy_commitlog *cl, bool full);

/* Retention. Segment start offsets and modification times, oldest first;
 * returns how many were written to the arrays (at most cap). The active
 * (last) segment is never listed. */
size_t fy_commitlog_old_segments(const fy_commitlog *cl, uint64_t *starts, int64_t *mtimes_ms,
                                 size_t cap);
/* Drops the oldest segment (must be the first one and not the active one):
 * min moves to the next segment; the file is unlinked off the loop thread and
 * unmapped when the last slice on it is released. -FY_EBUSY when the oldest
 * segment is the active one or not wholly flushed yet. */
int fy_commitlog_drop_oldest(fy_commitlog *cl);

#endif
