/*
 * File-system calls the event loop must not wait for, run on libuv's thread
 * pool: creating (and sizing) a file ahead of its use, and deleting files.
 * open(O_CREAT), ftruncate and unlink can wait on the disk for metadata; the
 * loop only learns the outcome from a callback.
 */
#ifndef FY_STORE_FILEOPS_H
#define FY_STORE_FILEOPS_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

typedef struct fy_fileop fy_fileop;

/*
 * Opens path read-write, creating it if missing, and makes it size bytes
 * (ftruncate: sparse) on the thread pool. cb(arg, fd, 0) on success (the
 * callee owns fd), cb(arg, -1, err) on failure; on the loop thread, never
 * from inside this call. Returns the operation (for fy_fileop_orphan) or
 * NULL when it could not be started (then cb never runs).
 */
fy_fileop *fy_file_create(uv_loop_t *loop, const char *path, uint64_t size,
                          void (*cb)(void *arg, int fd, int err), void *arg);

/* The owner is gone: cb will not run; a created fd is closed. With remove,
 * the file is deleted once created, and its directory and that directory's
 * parent too if that leaves them empty (a deleted consume queue). */
void fy_fileop_orphan(fy_fileop *op, bool remove);

/* Deletes path on the thread pool; a failure (other than ENOENT) is logged
 * with `what`. -errno if it could not be started (nothing was done). */
int fy_file_unlink(uv_loop_t *loop, const char *path, const char *what);

#endif
