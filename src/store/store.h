/*
 * The message store: the commit log plus everything derived from it —
 * consume queues, the key index, the checkpoint — and the services around
 * them: dispatch, periodic flushing, recovery, retention and the disk guard.
 * This is the storage API the broker and the HA service use; it knows
 * nothing of sockets.
 *
 * Layout under root_dir (storePathRootDir):
 *   commitlog/<20-digit offset>             commit-log segments
 *   consumequeue/<topic>/<queueId>/<offset> consume-queue files
 *   index/<yyyyMMddHHmmssSSS>               key index files
 *   checkpoint                              see checkpoint.h
 *   abort                                   exists while the store is open
 *   lock                                    flock()ed by the owning process
 *
 * Everything runs on the loop thread.
 */
#ifndef FY_STORE_STORE_H
#define FY_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/config.h"
#include "store/aio.h"
#include "store/commitlog.h"
#include "common/record.h"

enum { FY_ASYNC_FLUSH, FY_SYNC_FLUSH };

/* Defaults are RocketMQ's; each field's config key is named in its comment.
 * The table in store_config.c fills this struct from a file. */
struct fy_store_config {
  char root_dir[512];             /* storePathRootDir */
  uint64_t commitlog_segment_size; /* mappedFileSizeCommitLog: 1 GiB */
  uint32_t cq_file_size;          /* mappedFileSizeConsumeQueue: 6000000 (300000 entries) */
  int flush_disk_type;            /* flushDiskType: FY_ASYNC_FLUSH */
  uint32_t flush_interval_ms;     /* flushIntervalCommitLog: 500 */
  uint32_t flush_cq_interval_ms;  /* flushIntervalConsumeQueue: 1000 */
  uint64_t page_cache_max;        /* commitLogPageCacheMaxBytes: flushed commit-log bytes further
                                     behind the end leave the page cache; 0 keeps them (mqbroker
                                     turns 0 into accessMessageInMemoryMaxRatio of the memory) */
  uint32_t writeback_bytes;       /* commitLogWritebackBytes: 1 MiB, ASYNC_FLUSH writeback step */
  uint32_t max_message_size;      /* maxMessageSize: 4 MiB (body + properties) */
  bool index_enable;              /* messageIndexEnable: true */
  uint32_t index_slots;           /* maxHashSlotNum: 5000000 */
  uint32_t index_entries;         /* maxIndexNum: 20000000 */
  uint32_t file_reserved_hours;   /* fileReservedTime: 72 */
  char delete_when[64];           /* deleteWhen: "04" (hours, ';'-separated) */
  uint32_t disk_max_used_ratio;   /* diskMaxUsedSpaceRatio: 75 (%) clean early */
  uint32_t disk_full_ratio;       /* diskSpaceWarningLevelRatio: 90 (%) refuse writes */
  bool clean_forcibly;            /* cleanFileForciblyEnable: false (RocketMQ: true); true deletes
                                     unexpired segments from 5 points below disk_full_ratio */
  uint32_t clean_interval_ms;     /* cleanResourceInterval: 10000 */
  enum fy_aio_backend io_backend; /* ioBackend: auto */
  uint32_t write_buffer_size;     /* writeBufferSize: 8 MiB */
  uint32_t write_buffers;         /* writeBufferCount: 4 */
  uint32_t max_pending_puts;      /* maxPendingPuts: 65536 */
  /* Not a config key: set by the broker for brokerRole=SYNC_MASTER. Records
   * become visible only once confirmed (fy_store_confirm), across restarts
   * too: see "SYNC_MASTER visibility" below. */
  bool confirm_required;
};

/* Sets RocketMQ's defaults (root_dir: $HOME/store). */
void fy_store_config_defaults(struct fy_store_config *c);

/* Parses deleteWhen: hours of the day, 0-23, separated by ';' ("04",
 * "04;16"; "" for none), into *mask (bit h set for hour h). -FY_ECONFIG if
 * malformed. */
int fy_store_parse_hours(const char *spec, uint32_t *mask);

/* The config keys of the store, for fy_config_* (common/config.h). */
extern const struct fy_config_key fy_store_config_keys[];

typedef struct fy_store fy_store;

struct fy_store_recovery {
  bool unclean;             /* the abort marker was found */
  bool checkpoint_found;
  uint64_t checkpoint;      /* safe offset recovery started from */
  struct fy_cl_recovery cl;
  uint64_t redispatched;    /* records dispatched again */
  uint32_t queues;          /* consume queues loaded */
  uint64_t visible_end;     /* dispatch stopped here (cl.end unless records stay hidden) */
  uint64_t hidden;          /* records past visible_end, hidden until confirmed */
};

/* Opens the store, recovering as needed (synchronous; before serving). */
int fy_store_open(uv_loop_t *loop, const struct fy_store_config *cfg, fy_store **out,
                  struct fy_store_recovery *rec);

/* Clean shutdown: flushes the log, the queues and the index, writes the
 * checkpoint and removes the abort marker, then calls done(arg). Pending puts
 * complete first. */
void fy_store_close(fy_store *s, void (*done)(void *arg), void *arg);
/* Frees the store; after close's done callback. */
void fy_store_free(fy_store *s);

/*
 * Puts n messages atomically. The caller fills each message's topic,
 * queue_id, body, props, flag, sys_flag, born_* and store_host; the store
 * assigns queue_offset and phys_offset (written back into msgs[i] before it
 * returns) and the store timestamp. cb runs when they are durable under the
 * flush rule (or failed), as for fy_commitlog_append. Errors as
 * fy_commitlog_append, plus -FY_ETOO_BIG when body + properties exceed
 * max_message_size and -EINVAL for a topic no consume queue can hold (empty,
 * longer than FY_TOPIC_MAX, "." or "..", or containing '/' or NUL). Nothing
 * is assigned when an error is returned.
 */
int fy_store_put(fy_store *s, struct fy_msg *msgs, size_t n, fy_append_cb cb, void *arg);
/* As fy_store_put, with a bound on the wait for the flush: under SYNC_FLUSH
 * cb may run with -FY_ETIMEOUT (stored, durability unconfirmed), as for
 * fy_commitlog_append_timed. */
int fy_store_put_timed(fy_store *s, struct fy_msg *msgs, size_t n, uint32_t flush_timeout_ms,
                       fy_append_cb cb, void *arg);

enum fy_get_status {
  FY_GET_FOUND,
  FY_GET_NO_MATCHED,     /* entries examined, none matched the filter; next_offset advanced */
  FY_GET_NO_NEW,         /* offset == max: nothing yet */
  FY_GET_OFFSET_TOO_SMALL,
  FY_GET_OFFSET_OVERFLOW,
  FY_GET_NO_QUEUE,       /* no such topic/queue in the store */
};
const char *fy_get_status_name(enum fy_get_status st);

struct fy_get_msg {
  struct fy_cl_slice slice; /* exactly the record's bytes; pinned */
  uint64_t queue_offset;
};

struct fy_get_result {
  enum fy_get_status status;
  uint64_t next_offset;
  uint64_t min_offset;
  uint64_t max_offset;
  uint64_t behind_bytes; /* commit-log bytes after the last message returned */
  size_t count;
  size_t bytes;
};

/*
 * Reads up to max_msgs messages (and about max_bytes; at least one message
 * when any matches) of topic/queue_id from queue offset `offset`, keeping
 * those whose tag hash is in tags[0..ntags) (all when ntags == 0). out has
 * room for max_msgs; release with fy_store_get_release.
 */
int fy_store_get(fy_store *s, const char *topic, uint32_t queue_id, uint64_t offset,
                 uint32_t max_msgs, uint32_t max_bytes, const int64_t *tags, size_t ntags,
                 struct fy_get_msg *out, struct fy_get_result *res);
void fy_store_get_release(struct fy_get_msg *msgs, size_t count);

/* Queue bounds; both 0 for an unknown queue. min is the first message whose
 * record is still in the commit log (retention moves it). */
uint64_t fy_store_min_offset(fy_store *s, const char *topic, uint32_t queue_id);
uint64_t fy_store_max_offset(fy_store *s, const char *topic, uint32_t queue_id);
/* First queue offset stored at or after ts_ms. */
uint64_t fy_store_offset_for_time(fy_store *s, const char *topic, uint32_t queue_id,
                                  int64_t ts_ms);
/* The validated record at phys (query by offset message id). */
int fy_store_read_msg(fy_store *s, uint64_t phys, struct fy_cl_slice *slice, struct fy_msg *m);
/* Up to max records of topic carrying key (a KEYS word or the UNIQ_KEY),
 * stored in [begin_ms, end_ms], newest first; each checked against the key. */
size_t fy_store_query_key(fy_store *s, const char *topic, const char *key, int64_t begin_ms,
                          int64_t end_ms, struct fy_cl_slice *out, size_t max);

/* Called after each dispatched message, so long polls can wake. */
void fy_store_on_arrival(fy_store *s,
                         void (*cb)(void *arg, const char *topic, size_t topic_len,
                                    uint32_t queue_id, uint64_t max_offset),
                         void *arg);

/*
 * SYNC_MASTER visibility: while required, records are dispatched (made
 * visible to consumers: consume queues, key index, reads by offset) only up
 * to the offset confirmed with fy_store_confirm — the offset a slave
 * acknowledged — so nothing a consumer saw can vanish in a failover. Off by
 * default (dispatch follows `written`).
 *
 * The confirmed offset is kept in the checkpoint. A store opened with
 * cfg.confirm_required recovers visibility only up to
 * min(recovered end, confirmed offset of the checkpoint) (never below the
 * checkpoint's safe offset); later records stay in the log, hidden, until
 * fy_store_confirm covers them. A store opened without it (ASYNC_MASTER,
 * SLAVE, offline tools), or a checkpoint without a confirmed offset (older
 * files, a store last run without the rule), makes everything visible.
 * The checkpoint is written lazily, so its confirmed offset may lag: a
 * restart may hide records a slave already has, until the slave's next
 * acknowledgement; it never shows one no slave acknowledged.
 *
 * set_confirm_required switches the rule at run time (off: dispatch
 * everything written; on: visibility stays where it is).
 */
void fy_store_set_confirm_required(fy_store *s, bool required);
void fy_store_confirm(fy_store *s, uint64_t offset);

/* Deletes the consume queues of topic (its records stay in the log until
 * retention). */
int fy_store_delete_topic(fy_store *s, const char *topic);

/* Runs a retention pass now (tests, admin); returns segments deleted. */
int fy_store_clean_now(fy_store *s, bool force);

struct fy_store_stats {
  uint64_t puts;            /* messages put */
  uint64_t put_bytes;
  uint64_t gets;            /* messages returned by get */
  uint64_t cl_min, cl_end, cl_written, cl_flushed, dispatched, checkpoint;
  uint64_t cl_cache_dropped_to; /* commit-log page cache let go of below this offset */
  uint64_t cl_writeback_to;     /* commit-log writeback started ahead below this offset */
  bool confirm_required;
  uint64_t confirmed;       /* SYNC_MASTER: offset a slave acknowledged (0 otherwise) */
  uint64_t unconfirmed_bytes; /* SYNC_MASTER: written, hidden until a slave acknowledges */
  uint32_t queues;
  int disk_used_pct;        /* -1 until first measured */
  bool disk_full;
  int error;                /* sticky store error, 0 if none */
  const char *io_backend;
};
void fy_store_stats(fy_store *s, struct fy_store_stats *st);

fy_commitlog *fy_store_commitlog(fy_store *s);
fy_aio *fy_store_aio(fy_store *s);

#endif
