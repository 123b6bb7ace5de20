/*
 * The store checkpoint: the commit-log offset below which the commit log,
 * every consume queue and the index are known to be on disk. Recovery
 * validates the log from there and re-dispatches what follows.
 *
 * File <root>/checkpoint, 1024 bytes: two 512-byte slots written
 * alternately, so a torn write can only damage the slot being written. Slot
 * layout (little-endian): u32 magic, u32 version, u64 seq, u64 safe_offset,
 * u64 cl_flushed, i64 written_at_ms, u32 flags, u32 0, u64 confirmed_offset,
 * zeros, u32 crc32c of bytes [0,508) at 508. The valid slot with the highest
 * seq wins; no valid slot means "validate everything".
 *
 * flags bit 0 (CONFIRMED) says confirmed_offset is set: the store
 * ran under the SYNC_MASTER rule and records at or past confirmed_offset had
 * not been acknowledged by a slave when the slot was written. The flags and
 * confirmed_offset were added to version 1 in place: older slots hold zeros
 * there (no limit recorded, everything confirmed) and older readers ignore
 * them, so the version did not change.
 */
#ifndef FY_STORE_CHECKPOINT_H
#define FY_STORE_CHECKPOINT_H

#include <stdbool.h>
#include <stdint.h>

#include "store/aio.h"

struct fy_checkpoint {
  uint64_t seq;
  uint64_t safe_offset;
  uint64_t cl_flushed;
  int64_t written_at_ms;
  bool has_confirmed;        /* flags bit 0: confirmed_offset is meaningful */
  uint64_t confirmed_offset; /* SYNC_MASTER: records from here on no slave had acknowledged */
};

typedef struct fy_ckpt_file fy_ckpt_file;

/* Opens or creates path and loads the newest valid slot into *out (zeros and
 * *found = false if none). Synchronous: for start-up. */
int fy_ckpt_open(const char *path, fy_ckpt_file **f, struct fy_checkpoint *out, bool *found);

/* Writes cp (its seq is assigned here) to the older slot and fdatasyncs it
 * through aio; cb(arg, status) runs when durable. One write at a time:
 * -FY_EBUSY while one is in flight. */
int fy_ckpt_write(fy_ckpt_file *f, fy_aio *aio, const struct fy_checkpoint *cp,
                  void (*cb)(void *arg, int status), void *arg);

/* The checkpoint last written (or loaded). */
const struct fy_checkpoint *fy_ckpt_last(const fy_ckpt_file *f);

/* Writes cp synchronously (clean shutdown, after the loop stopped serving). */
int fy_ckpt_write_sync(fy_ckpt_file *f, const struct fy_checkpoint *cp);

void fy_ckpt_close(fy_ckpt_file *f);

#endif
