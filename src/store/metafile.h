/*
 * Atomic replacement of a small file (broker metadata: topics, offsets,
 * subscription groups) from the event loop, without blocking it.
 *
 * One save writes the whole new content to "<path>.tmp", makes it durable,
 * renames it over <path> and makes the rename durable:
 *
 *   IDLE ──save──► OPEN_TMP ──► WRITE ──► SYNC_TMP ──► CLOSE_TMP ──► RENAME
 *    ▲               │ error      │ error    │ error      ▲   │ error   │
 *    │               │            └──────────┴────────────┘   │         ▼
 *    │               │                    (close, then report) │      OPEN_DIR
 *    │               │                                         │         │
 *    │               ▼                                         ▼         ▼
 *    └─────────── cycle done (callbacks) ◄──── CLOSE_DIR ◄──── SYNC_DIR
 *                     │
 *                     └─ a newer save is waiting: straight to OPEN_TMP
 *
 * The open, close and rename are uv_fs_* requests on libuv's thread pool; the
 * data write and both syncs (the file's, then the directory's) go through
 * fy_aio, so a save in flight needs the I/O context until its cycle ends. At most one save is in flight
 * per metafile. A save requested while one is in flight is coalesced: it
 * waits, and if more saves come before the in-flight one finishes, only the
 * newest data is kept (older pending data is freed unwritten) and all their
 * callbacks ride on that one write. So any burst of saves costs at most two
 * writes.
 *
 * Durability: a callback with status 0 means the file holds that save's data
 * or newer and both the data and the rename are on disk. A callback with an
 * error means that cycle failed: the failure is reported, never retried
 * behind the caller's back. If the failure came before the rename, <path>
 * keeps its previous content; if the directory sync failed, <path> may hold
 * the new content but it is not known to be durable. A later save writes its
 * complete data to a fresh temporary file, so it does not depend on a failed
 * one.
 *
 * Everything here runs on the loop thread, except fy_metafile_load, which is
 * synchronous and meant for start-up.
 */
#ifndef FY_STORE_METAFILE_H
#define FY_STORE_METAFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "store/aio.h"

/* Callbacks waiting on one metafile, across the in-flight and pending save. */
#define FY_METAFILE_WAITERS_MAX 4096u
/* Largest file fy_metafile_load reads. */
#define FY_METAFILE_LOAD_MAX ((size_t)256 << 20)

typedef struct fy_metafile fy_metafile;

/* status: 0 once the data (or newer) is durable, else a negative errno. */
typedef void (*fy_metafile_cb)(void *arg, int status);

/* Creates a metafile for path (copied). Nothing touches the disk until the
 * first save. loop and aio must outlive the metafile (see fy_metafile_close).
 *
 * on_cycle (may be NULL) is the owner's hook: it runs once per finished write
 * cycle with its status, before that cycle's save callbacks, and never after
 * fy_metafile_close. It may call fy_metafile_save but not fy_metafile_close. */
int fy_metafile_new(uv_loop_t *loop, fy_aio *aio, const char *path, fy_metafile_cb on_cycle,
                    void *arg, fy_metafile **out);

/*
 * Replaces the file's content with data[0, len) (len may be 0). The metafile
 * takes ownership of data, which must come from malloc, in every case: it is
 * freed after it was written or superseded, or before an error return. The
 * caller must not touch data after the call.
 *
 * cb may be NULL. If not, it runs exactly once, on the loop thread, never
 * from inside this call, with the status of the write that carries this data
 * or newer. If fy_metafile_save returns an error (-ENOMEM, -FY_EBUSY when
 * FY_METAFILE_WAITERS_MAX callbacks are already waiting, or the error of
 * starting the first request), cb never runs and the file is not changed.
 */
int fy_metafile_save(fy_metafile *mf, void *data, size_t len, fy_metafile_cb cb, void *arg);

/* True while a save is in flight or waiting. */
bool fy_metafile_busy(const fy_metafile *mf);

/* Tests and statistics: number of write cycles started so far. */
uint64_t fy_metafile_writes(const fy_metafile *mf);

/* The metafile's path, as given to fy_metafile_new. */
const char *fy_metafile_path(const fy_metafile *mf);

/*
 * Releases mf. The on_cycle hook is not called any more. If a save is in
 * flight or waiting, it still completes (its save callbacks run) and the
 * memory is freed afterwards; loop and aio must stay
 * usable until then. For an orderly shutdown, wait for the callback of a
 * last save before closing, then close aio. mf must not be used after this
 * call.
 */
void fy_metafile_close(fy_metafile *mf);

/*
 * Start-up only (blocking). Reads path into a fresh malloc'ed buffer with a
 * terminating NUL after the len bytes (not counted in len); the caller frees
 * *buf. A leftover "<path>.tmp" from an interrupted save is ignored: only a
 * completed rename makes new content visible. Returns 0, -ENOENT when the
 * file does not exist, -EFBIG beyond FY_METAFILE_LOAD_MAX, or another
 * negative errno.
 */
int fy_metafile_load(const char *path, char **buf, size_t *len);

#endif
