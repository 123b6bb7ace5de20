/*
 * A batch of writes and fdatasyncs through fy_aio with one completion: the
 * durability step shared by the consume queues and the index, which flush
 * several files (and the directories that gained entries) together.
 *
 * Use: fy_syncset_new, then fy_syncset_add for each fd to sync (the set owns
 * and closes it) and fy_syncset_add_write for bytes to write first, then
 * fy_syncset_start. Nothing is queued before start; the writes go first and
 * the fdatasyncs are queued once every write completed (a failed write drops
 * them: the set completes with its error). The owner keeps the set in *slot while
 * it runs; the slot is cleared when the last sync completes, before cb runs.
 * An owner that goes away first calls fy_syncset_orphan: the syncs still
 * complete and cb still runs.
 */
#ifndef FY_STORE_SYNCSET_H
#define FY_STORE_SYNCSET_H

#include "store/aio.h"

typedef struct fy_syncset fy_syncset;

/* Room for up to max fds. what names the owner in the error log line. */
fy_syncset *fy_syncset_new(unsigned max, const char *what, void (*cb)(void *arg, int status),
                           void *arg, fy_syncset **slot);

/* Adds fdatasync(fd). fd < 0 (a failed open or dup) returns -errno. The set
 * owns fd from here on, also on error. */
int fy_syncset_add(fy_syncset *s, fy_aio *aio, int fd);

/* Adds a write of len (> 0) bytes of buf at off to fd (dup()ed: the caller
 * keeps fd). buf must stay valid and unchanged until cb has run. */
int fy_syncset_add_write(fy_syncset *s, fy_aio *aio, int fd, const void *buf, size_t len,
                         uint64_t off);

/* fds queued so far. */
unsigned fy_syncset_count(const fy_syncset *s);

/* Queues the writes (or, without writes, the fdatasyncs); err is the first
 * error met while adding. Returns 0 and cb runs once (with err if nonzero, or
 * the first write or sync error), or, when nothing could be queued, frees
 * the set and returns err (cb never runs). */
int fy_syncset_start(fy_syncset *s, int err);

/* The owner is gone: do not touch its slot. */
void fy_syncset_orphan(fy_syncset *s);

/* Opens path as a directory for syncing (-1 with errno on failure). */
int fy_syncset_open_dir(const char *path);

#endif
