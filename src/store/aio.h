/*
 * Asynchronous file I/O for the event-loop thread.
 *
 * Two backends behind one interface:
 *   - io_uring (the default): one ring owned by the loop thread. Requests
 *     queue SQEs; a uv_prepare_t submits them once per loop iteration, so
 *     everything asked for in one iteration goes to the kernel in one
 *     io_uring_enter (this is where group commit comes from). Completions make
 *     the ring's fd readable, watched by a uv_poll_t; they are drained in
 *     bounded batches and their callbacks run after the batch is drained.
 *   - threads: libuv's threadpool (uv_fs_*), for kernels or sandboxes where
 *     io_uring cannot be set up. Chosen automatically (logged once) or forced.
 *
 * Contract (libuv's): if a request function returns an error, its callback
 * never runs; otherwise the callback runs exactly once, on the loop thread,
 * never from inside the call that queued it. The buffer passed to a write must
 * remain valid and unchanged until the callback is called. The request struct
 * is owned by the caller and must stay valid until its callback runs.
 *
 * A write completes with the full length or an error: a short write is
 * resumed internally; a write that makes no progress completes with -EIO.
 */
#ifndef FY_STORE_AIO_H
#define FY_STORE_AIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

enum fy_aio_backend { FY_AIO_AUTO, FY_AIO_URING, FY_AIO_THREADS };
enum fy_aio_op {
  FY_AIO_WRITE,
  FY_AIO_FDATASYNC,
  FY_AIO_FALLOCATE,
  FY_AIO_DROP_CACHE,
  FY_AIO_WRITEBACK,
  FY_AIO_OP_COUNT
};

typedef struct fy_aio fy_aio;
typedef struct fy_aio_req fy_aio_req;

/* res: for a write, the byte count; otherwise 0; or a negative errno. */
typedef void (*fy_aio_cb)(fy_aio_req *req, int64_t res);

struct fy_aio_req {
  void *data; /* for the caller */
  /* private */
  fy_aio_cb cb;
  fy_aio *aio;
  int op;
  int fd;
  const uint8_t *buf;
  uint64_t len;
  uint64_t off;
  uint64_t done;     /* write: bytes written so far (short writes resume here);
                        drop_cache: 1 once the madvise step is done */
  int mode;
  bool background;   /* counts against the background limit (fy_aio_fdatasync) */
  int fault;         /* injected error (negative errno) or 0 */
  int64_t res;       /* the result handed to cb (threads: also a work job's) */
  unsigned retries;  /* io_uring: -EAGAIN/-EINTR resubmissions */
  uint64_t held_until_ms; /* tests: a held completion's release time (loop ms) */
  fy_aio_req *next;  /* wait queue / completion batch / held list link */
  union {
    uv_fs_t fs;
    uv_work_t work;
  };
};

/* Creates the I/O context on loop. backend AUTO tries io_uring and falls back
 * to threads with one log line; the environment variable
 * FERRY_AIO_BACKEND=uring|threads overrides AUTO (an explicit backend is never
 * overridden). queue_depth (1..32768) bounds requests in flight; more wait in
 * a FIFO and go out as earlier ones complete. The context's handles keep the
 * loop alive only while requests are pending. */
int fy_aio_init(uv_loop_t *loop, enum fy_aio_backend backend, unsigned queue_depth, fy_aio **out);

/* Which backend is in use (never AUTO). */
enum fy_aio_backend fy_aio_backend_of(const fy_aio *aio);
const char *fy_aio_backend_name(enum fy_aio_backend b);

/* pwrite of len (> 0) bytes of buf at off. */
int fy_aio_write(fy_aio *aio, fy_aio_req *req, int fd, const void *buf, size_t len, uint64_t off,
                 fy_aio_cb cb);
/*
 * Background requests (fdatasync, fallocate, drop_cache) in flight at once;
 * the rest wait their turn in order. Each holds an io_uring worker (or a
 * thread-pool thread) for as long as the device takes, and io_uring runs at
 * most 4 bounded workers per CPU for regular files: when a consume-queue
 * flush started one fdatasync per file, every worker sat in a device cache
 * flush and the commit log's writes waited behind them (the loop idled
 * 0.4 s with sends pending). Writes must always find a free worker.
 * One, not two: each fdatasync's writeback work runs on a worker on the
 * broker's CPUs, and two at once took more from the loop and from the
 * commit log's writes. On a broker confined to one CPU at 347k msgs/s the
 * broker's own send p99 was lower with one in six pairs of runs out of six
 * (0.66-1.30 ms against 0.68-1.60 ms; bench/e2e_notes.md, eleventh session).
 */
#define FY_AIO_BACKGROUND_MAX 1u

/* fdatasync(fd). Covers every write to fd that completed before it was queued
 * (not those still in flight: there is no ordering between requests). A
 * background request. */
int fy_aio_fdatasync(fy_aio *aio, fy_aio_req *req, int fd, fy_aio_cb cb);
/* The same, outside the background limit: for the sync that acknowledgements
 * wait on (the commit log's), which must not queue behind index and
 * consume-queue flushes. Keep such requests few (one per log). */
int fy_aio_fdatasync_urgent(fy_aio *aio, fy_aio_req *req, int fd, fy_aio_cb cb);
/*
 * sync_file_range(fd, off, len, SYNC_FILE_RANGE_WRITE): starts writeback of
 * the dirty pages of [off, off + len) and completes without waiting for it
 * (0 < len <= UINT32_MAX, io_uring's limit). Makes nothing durable; it
 * moves the work of a later fdatasync forward, in small pieces. Outside the
 * background limit, like
 * fdatasync_urgent, because it is short and only helps if it runs promptly:
 * keep it to one at a time per log.
 */
int fy_aio_writeback(fy_aio *aio, fy_aio_req *req, int fd, uint64_t off, uint64_t len,
                     fy_aio_cb cb);
/* fallocate(fd, mode, off, len). A background request. */
int fy_aio_fallocate(fy_aio *aio, fy_aio_req *req, int fd, int mode, uint64_t off, uint64_t len,
                     fy_aio_cb cb);

/* Lets the kernel drop the page cache of [off, off + len) of fd (len > 0, at
 * most FY_AIO_DROP_MAX): madvise(addr, len, MADV_DONTNEED) first when addr is
 * not NULL (the same bytes mapped MAP_SHARED in this process, page-aligned;
 * pages a process maps are not dropped), then posix_fadvise(POSIX_FADV_DONTNEED).
 * Only clean pages go: dirty ones are left to writeback. A background request.
 * Advice: the callback gets the fadvise's result, and the data stays readable
 * either way. */
#define FY_AIO_DROP_MAX (UINT64_C(1) << 30)
int fy_aio_drop_cache(fy_aio *aio, fy_aio_req *req, int fd, const void *addr, uint64_t off,
                      uint64_t len, fy_aio_cb cb);

/* Hands queued requests to the kernel now rather than at the next loop
 * iteration (io_uring; the threads backend starts requests as they are
 * queued, so there it does nothing). For a request whose latency matters more
 * than batching, queued from a callback that has more work to do. */
void fy_aio_submit(fy_aio *aio);

/* Number of requests queued or in flight (accepted, callback not yet run). */
unsigned fy_aio_pending(const fy_aio *aio);
/* Number of requests handed to the kernel or the threadpool (<= queue_depth). */
unsigned fy_aio_inflight(const fy_aio *aio);

/*
 * Tests only: the next `count` requests of kind op, after `skip` more succeed
 * normally, complete with error err (negative errno) without reaching the disk.
 */
void fy_aio_inject_fault(fy_aio *aio, enum fy_aio_op op, unsigned skip, unsigned count, int err);

/*
 * Tests only: a slow device. From now on, completions of requests of kind op
 * are held back: the I/O is done (or failed, or faulted) but its callback
 * waits, and the request keeps its slot and counts as pending, as if the
 * device took that long. hold_ms > 0 holds each completion hold_ms (loop
 * time) after it arrives; FY_AIO_HOLD_UNTIL_RELEASED holds it until a later
 * call with hold_ms 0, which stops holding op and releases what is held of
 * it. Released callbacks run from a timer callback, never from inside this
 * call. Everything held must be released before fy_aio_close.
 */
#define FY_AIO_HOLD_UNTIL_RELEASED UINT32_MAX
void fy_aio_inject_delay(fy_aio *aio, enum fy_aio_op op, uint32_t hold_ms);
/* Integration tests set the same hold for fdatasync in every context a
 * process creates with the environment variable
 * FERRY_TEST_FDATASYNC_DELAY_MS=N (ms, 1..600000; logged as a warning), and
 * for writes with FERRY_TEST_WRITE_DELAY_MS=N. */
/* Tests only: completions currently held back by fy_aio_inject_delay. */
unsigned fy_aio_held(const fy_aio *aio);

/* Stops the backend. All requests must have completed (fy_aio_pending == 0);
 * may be called from a request's callback. Handles are closed asynchronously:
 * the memory is freed once the loop has run their close callbacks, so run the
 * loop (e.g. until uv_run returns) before uv_loop_close. aio must not be used
 * after this call. */
void fy_aio_close(fy_aio *aio);

#endif
