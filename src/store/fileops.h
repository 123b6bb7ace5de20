/*
 * File-system calls the event loop must not wait for, run on libuv's thread
 * pool: creating (and sizing) a file ahead of its use, deleting files, and
 * faulting in the pages of a shared file mapping ahead of the loop's stores.
 * open(O_CREAT), ftruncate and unlink can wait on the disk for metadata; the
 * loop only learns the outcome from a callback.
 */
#ifndef FY_STORE_FILEOPS_H
#define FY_STORE_FILEOPS_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

typedef struct fy_fileop fy_fileop;

/* mkdir -p, synchronously (for opening a store or a queue): makes path and
 * every missing parent, mode 0755. Sets *created (if not NULL) when any
 * component had to be made. -ENAMETOOLONG or -errno on failure. */
int fy_mkdir_p(const char *path, bool *created);

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

/*
 * A shared file mapping the loop stores into (consume queues, index
 * entries). Each new page costs the storing thread a fault (the file's
 * page read or zero-filled, then made writable): 3,200 faults a second on
 * the loop at 320k msgs/s. fy_mapping_populate has the thread pool fault a
 * range in first (MADV_POPULATE_WRITE), so the stores find it mapped.
 *
 * The owner maps, wraps the mapping with fy_mapping_new and, instead of
 * munmap, calls fy_mapping_unmap: the munmap waits for a population in
 * flight, so the range is never unmapped (and its addresses reused) under
 * it. All calls and the completion run on the loop thread.
 */
typedef struct fy_mapping fy_mapping;

/* Wraps [addr, addr + len); NULL if out of memory (then munmap it yourself). */
fy_mapping *fy_mapping_new(void *addr, size_t len);

/* The owner is done with it: unmapped now, or when a population completes. */
void fy_mapping_unmap(fy_mapping *m);

/* Faults [off, off + n) in on loop's thread pool, cut at the mapping's end.
 * Best effort: false, with nothing started, if one is still in flight for
 * m, the range is empty or starts past the end, the kernel lacks
 * MADV_POPULATE_WRITE (before 5.14), or the work could not be queued. */
bool fy_mapping_populate(uv_loop_t *loop, fy_mapping *m, size_t off, size_t n);

#endif
