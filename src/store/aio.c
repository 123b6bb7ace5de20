/*
 * Asynchronous file I/O for the loop thread (see aio.h for the contract).
 *
 * Why: the commit log must never block the loop on the disk, and io_uring lets
 * one loop iteration's writes and syncs reach the kernel in one system call.
 * The threads backend gives the same behaviour where io_uring is unavailable.
 *
 * Request life cycle, both backends:
 *
 *   accept ──► WAITING (wait FIFO, all queue_depth slots taken)
 *      │           │ a slot frees up (fill_from_wait)
 *      └──────────►▼
 *              IN FLIGHT (an SQE, or a threadpool job) ──┐ short write,
 *                  │                                     │ -EAGAIN/-EINTR:
 *                  │ completion                          │ reissued, keeps
 *                  ▼                                     │ its slot
 *              DONE (on a local completion batch) ◄──────┘
 *                  │ after the whole batch is collected
 *                  ▼
 *              callback runs; req is the caller's again
 *
 * `pending` counts requests from accept until their callback starts;
 * `inflight` counts slots taken (<= queue_depth).
 *
 * Tests can hold completions back (fy_aio_inject_delay): a completed request
 * then waits on the held list, keeping its slot, until a timer releases it
 * onto a completion batch; this is how tests get a slow fdatasync.
 *
 * io_uring wiring: SQEs are prepared as requests are accepted and submitted
 * by a uv_prepare_t once per loop iteration. An idle handle is active while
 * SQEs wait for submission or CQEs wait to be drained, so the loop never
 * blocks in poll with work outstanding (a request may be queued from another
 * prepare callback that runs after ours). The ring's own fd, watched by a
 * uv_poll_t, is readable while CQEs wait (no eventfd: that was a read(2) per
 * loop iteration, and a system call costs about a microsecond on the
 * benchmark VM); the CQ ring is drained in bounded batches.
 */
#include "store/aio.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"

#define QUEUE_DEPTH_MAX 32768u
#define CQE_BATCH 64u         /* completions taken from the ring per round */
#define CQE_ROUNDS 4u         /* rounds per wake-up; the rest go next iteration */
#define RETRY_MAX 64u         /* -EAGAIN/-EINTR resubmissions of one request */
#define WRITE_CHUNK_MAX (1u << 30) /* bytes per write system call */

struct fault {
  unsigned skip;
  unsigned count;
  int err;
};

struct fy_aio {
  uv_loop_t *loop;
  enum fy_aio_backend backend;
  unsigned depth;
  unsigned inflight;
  unsigned pending;
  fy_aio_req *wait_head;
  fy_aio_req *wait_tail;
  unsigned bg_active;  /* background requests admitted (in flight or in the wait FIFO) */
  fy_aio_req *bg_head; /* background requests waiting for admission */
  fy_aio_req *bg_tail;
  struct fault faults[FY_AIO_OP_COUNT];
  uint32_t hold_ms[FY_AIO_OP_COUNT]; /* tests: fy_aio_inject_delay */
  fy_aio_req *held_head;             /* tests: held completions, in arrival order */
  fy_aio_req *held_tail;
  unsigned nheld;
  uv_timer_t hold_timer;             /* releases held completions */
  bool closing;
  unsigned handles_open;
  uv_idle_t idle; /* io_uring: work outstanding; threads: only used to defer the free */
  /* io_uring only */
  struct io_uring ring;
  uv_poll_t poll; /* the ring's fd: readable while CQEs wait */
  uv_prepare_t prepare;
  unsigned submit_errors;
};

static void fill_from_wait(fy_aio *aio);
static void on_hold_timer(uv_timer_t *t);

const char *fy_aio_backend_name(enum fy_aio_backend b) {
  switch (b) {
  case FY_AIO_AUTO: return "auto";
  case FY_AIO_URING: return "io_uring";
  case FY_AIO_THREADS: return "threads";
  }
  return "?";
}

enum fy_aio_backend fy_aio_backend_of(const fy_aio *aio) { return aio->backend; }

unsigned fy_aio_pending(const fy_aio *aio) { return aio->pending; }

unsigned fy_aio_inflight(const fy_aio *aio) { return aio->inflight; }

void fy_aio_inject_fault(fy_aio *aio, enum fy_aio_op op, unsigned skip, unsigned count, int err) {
  fy_assert(op < FY_AIO_OP_COUNT);
  fy_assert(err < 0 || count == 0);
  aio->faults[op] = (struct fault){.skip = skip, .count = count, .err = err};
}

static int take_fault(fy_aio *aio, int op) {
  struct fault *f = &aio->faults[op];
  if (f->count == 0)
    return 0;
  if (f->skip) {
    f->skip--;
    return 0;
  }
  f->count--;
  return f->err;
}

/* The poll handle keeps the loop alive exactly while requests are pending. */
static void update_ref(fy_aio *aio) {
  if (aio->backend != FY_AIO_URING)
    return;
  if (aio->pending)
    uv_ref((uv_handle_t *)&aio->poll);
  else
    uv_unref((uv_handle_t *)&aio->poll);
}

/* ---- the wait FIFO ---------------------------------------------------- */

/* Appends req to the list head..tail (the wait FIFO, or the held list). */
static void list_push_tail(fy_aio_req **head, fy_aio_req **tail, fy_aio_req *req) {
  req->next = NULL;
  if (*tail)
    (*tail)->next = req;
  else
    *head = req;
  *tail = req;
}

static void wait_push_tail(fy_aio *aio, fy_aio_req *req) {
  list_push_tail(&aio->wait_head, &aio->wait_tail, req);
}

static void wait_push_head(fy_aio *aio, fy_aio_req *req) {
  req->next = aio->wait_head;
  aio->wait_head = req;
  if (!aio->wait_tail)
    aio->wait_tail = req;
}

static fy_aio_req *wait_pop(fy_aio *aio) {
  fy_aio_req *req = aio->wait_head;
  if (req) {
    aio->wait_head = req->next;
    if (!aio->wait_head)
      aio->wait_tail = NULL;
    req->next = NULL;
  }
  return req;
}

/* ---- completion batches ----------------------------------------------- */

struct batch {
  fy_aio_req *head;
  fy_aio_req **tail;
};

static void batch_init(struct batch *b) {
  b->head = NULL;
  b->tail = &b->head;
}

static void admit(fy_aio *aio, fy_aio_req *req);

static void finish(fy_aio *aio, fy_aio_req *req, int64_t res, struct batch *b) {
  fy_assert(aio->inflight > 0);
  aio->inflight--;
  if (req->background) {
    fy_assert(aio->bg_active > 0);
    aio->bg_active--;
    fy_aio_req *next = aio->bg_head;
    if (next) {
      aio->bg_head = next->next;
      if (!aio->bg_head)
        aio->bg_tail = NULL;
      admit(aio, next);
    }
  }
  req->res = res;
  req->next = NULL;
  *b->tail = req;
  b->tail = &req->next;
}

/* Runs the callbacks of a collected batch. A callback may queue requests
 * (they only join the queues) or close aio once nothing is pending. */
static void run_callbacks(fy_aio *aio, struct batch *b) {
  fy_aio_req *req = b->head;
  while (req) {
    fy_aio_req *next = req->next;
    req->next = NULL;
    fy_assert(aio->pending > 0);
    aio->pending--;
    req->cb(req, req->res);
    req = next;
  }
  if (!aio->closing)
    update_ref(aio);
}

/* ---- io_uring backend -------------------------------------------------- */

static void update_idle(fy_aio *aio);
static void on_idle(uv_idle_t *h);

static void uring_submit(fy_aio *aio) {
  for (unsigned i = 0; i < 4 && io_uring_sq_ready(&aio->ring); i++) {
    int r = io_uring_submit(&aio->ring);
    if (r >= 0 || r == -EINTR)
      continue;
    /* Left in the SQ ring; the idle handle brings us back next iteration. */
    if (aio->submit_errors++ == 0)
      fy_warn("aio", "io_uring_submit: %s; will retry", fy_strerror(r));
    return;
  }
}

static struct io_uring_sqe *uring_get_sqe(fy_aio *aio) {
  struct io_uring_sqe *sqe = io_uring_get_sqe(&aio->ring);
  if (!sqe) {
    uring_submit(aio); /* the SQ is full: submit now rather than wait for prepare */
    sqe = io_uring_get_sqe(&aio->ring);
  }
  return sqe;
}

static void uring_prep(struct io_uring_sqe *sqe, fy_aio_req *req) {
  if (req->fault) {
    io_uring_prep_nop(sqe);
  } else if (req->op == FY_AIO_WRITE) {
    uint64_t left = req->len - req->done;
    unsigned n = left > WRITE_CHUNK_MAX ? WRITE_CHUNK_MAX : (unsigned)left;
    io_uring_prep_write(sqe, req->fd, req->buf + req->done, n, req->off + req->done);
  } else if (req->op == FY_AIO_FDATASYNC) {
    io_uring_prep_fsync(sqe, req->fd, IORING_FSYNC_DATASYNC);
  } else if (req->op == FY_AIO_WRITEBACK) {
    io_uring_prep_sync_file_range(sqe, req->fd, (unsigned)req->len, req->off,
                                  SYNC_FILE_RANGE_WRITE);
  } else if (req->op == FY_AIO_DROP_CACHE) {
    /* Two steps, one request: done is 0 for the madvise, 1 for the fadvise. */
    if (req->done == 0 && req->buf)
      io_uring_prep_madvise(sqe, (void *)req->buf, (off_t)req->len, MADV_DONTNEED);
    else
      io_uring_prep_fadvise(sqe, req->fd, req->off, (off_t)req->len, POSIX_FADV_DONTNEED);
  } else {
    io_uring_prep_fallocate(sqe, req->fd, req->mode, (off_t)req->off, (off_t)req->len);
  }
  io_uring_sqe_set_data(sqe, req);
}

/* Hands req (which holds a slot) to the ring. If even a submit frees no SQE,
 * req gives its slot back and waits at the head of the FIFO. */
static bool uring_issue(fy_aio *aio, fy_aio_req *req) {
  struct io_uring_sqe *sqe = uring_get_sqe(aio);
  if (!sqe) {
    aio->inflight--;
    wait_push_head(aio, req);
    return false; /* update_idle keeps the loop spinning until prepare retries */
  }
  uring_prep(sqe, req);
  return true;
}

/* Interprets one completion: done (onto b), or reissued. */
static void on_result(fy_aio *aio, fy_aio_req *req, int64_t res, struct batch *b);

static void uring_drain(fy_aio *aio) {
  struct batch b;
  batch_init(&b);
  fy_clock_batch_begin(); /* the callbacks of one drain share their clock reads */
  for (unsigned round = 0; round < CQE_ROUNDS; round++) {
    struct io_uring_cqe *cqes[CQE_BATCH];
    fy_aio_req *reqs[CQE_BATCH];
    int64_t res[CQE_BATCH];
    unsigned n = io_uring_peek_batch_cqe(&aio->ring, cqes, CQE_BATCH);
    if (n == 0)
      break;
    for (unsigned i = 0; i < n; i++) {
      reqs[i] = io_uring_cqe_get_data(cqes[i]);
      res[i] = cqes[i]->res;
    }
    io_uring_cq_advance(&aio->ring, n); /* before reissuing: frees CQ room */
    for (unsigned i = 0; i < n; i++)
      on_result(aio, reqs[i], res[i], &b);
  }
  fill_from_wait(aio);
  update_idle(aio);
  run_callbacks(aio, &b);
  fy_clock_batch_end();
}

/* The idle handle is active while SQEs wait for submission, requests wait
 * for a slot that a refill could give, or CQEs remain undrained. */
static void update_idle(fy_aio *aio) {
  if (aio->closing)
    return;
  bool work = io_uring_sq_ready(&aio->ring) || io_uring_cq_ready(&aio->ring) ||
              (aio->wait_head && aio->inflight < aio->depth);
  if (work)
    uv_idle_start(&aio->idle, on_idle);
  else
    uv_idle_stop(&aio->idle);
}

static void on_idle(uv_idle_t *h) {
  fy_aio *aio = h->data;
  if (io_uring_cq_ready(&aio->ring))
    uring_drain(aio); /* leftovers of a bounded drain: drained here, not left to poll */
  else
    update_idle(aio);
}

static void on_prepare(uv_prepare_t *h) {
  fy_aio *aio = h->data;
  fill_from_wait(aio);
  uring_submit(aio);
  update_idle(aio);
}

void fy_aio_submit(fy_aio *aio) {
  if (aio->backend == FY_AIO_URING && !aio->closing)
    on_prepare(&aio->prepare);
}

static void on_ring_readable(uv_poll_t *h, int status, int events) {
  fy_aio *aio = h->data;
  (void)events;
  if (status < 0)
    fy_warn("aio", "io_uring fd poll: %s", fy_strerror(status));
  uring_drain(aio);
}

static int uring_init(fy_aio *aio) {
  int r = io_uring_queue_init(aio->depth, &aio->ring, 0);
  if (r < 0)
    return r;
  r = uv_poll_init(aio->loop, &aio->poll, aio->ring.ring_fd);
  if (r < 0) {
    io_uring_queue_exit(&aio->ring);
    return r;
  }
  aio->poll.data = aio;
  uv_prepare_init(aio->loop, &aio->prepare);
  aio->prepare.data = aio;
  uv_poll_start(&aio->poll, UV_READABLE, on_ring_readable);
  uv_prepare_start(&aio->prepare, on_prepare);
  uv_unref((uv_handle_t *)&aio->poll);
  uv_unref((uv_handle_t *)&aio->prepare);
  return 0;
}

/* ---- threads backend --------------------------------------------------- */

static void threads_fs_done(uv_fs_t *fs);
static void threads_work_done(uv_work_t *w, int status);

static void fallocate_work(uv_work_t *w) {
  fy_aio_req *req = w->data;
  req->res = fallocate(req->fd, req->mode, (off_t)req->off, (off_t)req->len) == 0 ? 0 : -errno;
}

static void drop_cache_work(uv_work_t *w) {
  fy_aio_req *req = w->data;
  if (req->buf)
    (void)madvise((void *)req->buf, req->len, MADV_DONTNEED); /* advice: the fadvise decides */
  req->res = -posix_fadvise(req->fd, (off_t)req->off, (off_t)req->len, POSIX_FADV_DONTNEED);
}

static void writeback_work(uv_work_t *w) {
  fy_aio_req *req = w->data;
  req->res = sync_file_range(req->fd, (off_t)req->off, (off_t)req->len, SYNC_FILE_RANGE_WRITE) == 0
                 ? 0
                 : -errno;
}

static void fault_work(uv_work_t *w) {
  fy_aio_req *req = w->data;
  req->res = req->fault;
}

static bool threads_issue(fy_aio *aio, fy_aio_req *req) {
  int r;
  if (req->fault) {
    req->work.data = req;
    r = uv_queue_work(aio->loop, &req->work, fault_work, threads_work_done);
  } else if (req->op == FY_AIO_WRITE) {
    uint64_t left = req->len - req->done;
    uv_buf_t b = uv_buf_init((char *)req->buf + req->done,
                             left > WRITE_CHUNK_MAX ? WRITE_CHUNK_MAX : (unsigned)left);
    req->fs.data = req;
    r = uv_fs_write(aio->loop, &req->fs, req->fd, &b, 1, (int64_t)(req->off + req->done),
                    threads_fs_done);
  } else if (req->op == FY_AIO_FDATASYNC) {
    req->fs.data = req;
    r = uv_fs_fdatasync(aio->loop, &req->fs, req->fd, threads_fs_done);
  } else {
    req->work.data = req;
    uv_work_cb fn = req->op == FY_AIO_DROP_CACHE ? drop_cache_work
                    : req->op == FY_AIO_WRITEBACK ? writeback_work
                                                  : fallocate_work;
    r = uv_queue_work(aio->loop, &req->work, fn, threads_work_done);
  }
  fy_assert(r == 0); /* arguments were validated when the request was accepted */
  return true;
}

static void threads_complete(fy_aio_req *req, int64_t res) {
  fy_aio *aio = req->aio;
  struct batch b;
  batch_init(&b);
  on_result(aio, req, res, &b);
  fill_from_wait(aio);
  run_callbacks(aio, &b);
}

static void threads_fs_done(uv_fs_t *fs) {
  fy_aio_req *req = fs->data;
  int64_t res = fs->result;
  uv_fs_req_cleanup(fs);
  threads_complete(req, res);
}

static void threads_work_done(uv_work_t *w, int status) {
  fy_aio_req *req = w->data;
  threads_complete(req, status < 0 ? status : req->res);
}

/* ---- shared ------------------------------------------------------------ */

static bool issue(fy_aio *aio, fy_aio_req *req) {
  return aio->backend == FY_AIO_URING ? uring_issue(aio, req) : threads_issue(aio, req);
}

static void fill_from_wait(fy_aio *aio) {
  while (aio->wait_head && aio->inflight < aio->depth) { /* bounded by depth */
    fy_aio_req *req = wait_pop(aio);
    aio->inflight++;
    if (!issue(aio, req))
      break;
  }
}

/* ---- held completions (tests: fy_aio_inject_delay) ------------------------ */

static void hold_arm(fy_aio *aio) {
  uint64_t next = UINT64_MAX;
  for (fy_aio_req *r = aio->held_head; r; r = r->next) /* bounded by queue_depth */
    if (r->held_until_ms < next)
      next = r->held_until_ms;
  if (next == UINT64_MAX) {
    uv_timer_stop(&aio->hold_timer);
    return;
  }
  uint64_t now = uv_now(aio->loop);
  uv_timer_start(&aio->hold_timer, on_hold_timer, next > now ? next - now : 0, 0);
}

/* Finishes req onto b, or parks it on the held list while its op is held. */
static void complete(fy_aio *aio, fy_aio_req *req, int64_t res, struct batch *b) {
  uint32_t hold = aio->hold_ms[req->op];
  if (hold == 0) {
    finish(aio, req, res, b);
    return;
  }
  req->res = res;
  req->held_until_ms = hold == FY_AIO_HOLD_UNTIL_RELEASED ? UINT64_MAX : uv_now(aio->loop) + hold;
  list_push_tail(&aio->held_head, &aio->held_tail, req);
  aio->nheld++;
  hold_arm(aio);
}

static void on_hold_timer(uv_timer_t *t) {
  fy_aio *aio = t->data;
  uint64_t now = uv_now(aio->loop);
  struct batch b;
  batch_init(&b);
  fy_aio_req **link = &aio->held_head, *prev = NULL;
  while (*link) { /* bounded by queue_depth: held requests keep their slots */
    fy_aio_req *req = *link;
    if (req->held_until_ms > now) {
      prev = req;
      link = &req->next;
      continue;
    }
    *link = req->next;
    if (aio->held_tail == req)
      aio->held_tail = prev;
    aio->nheld--;
    finish(aio, req, req->res, &b);
  }
  hold_arm(aio);
  fill_from_wait(aio);
  if (aio->backend == FY_AIO_URING)
    update_idle(aio);
  run_callbacks(aio, &b);
}

void fy_aio_inject_delay(fy_aio *aio, enum fy_aio_op op, uint32_t hold_ms) {
  fy_assert(op < FY_AIO_OP_COUNT);
  fy_assert(!aio->closing);
  aio->hold_ms[op] = hold_ms;
  if (hold_ms != 0)
    return;
  for (fy_aio_req *r = aio->held_head; r; r = r->next)
    if (r->op == (int)op)
      r->held_until_ms = 0;
  hold_arm(aio);
}

unsigned fy_aio_held(const fy_aio *aio) { return aio->nheld; }

static void on_result(fy_aio *aio, fy_aio_req *req, int64_t res, struct batch *b) {
  if (req->fault) {
    complete(aio, req, req->fault, b);
    return;
  }
  if ((res == -EAGAIN || res == -EINTR) && req->retries < RETRY_MAX) {
    req->retries++;
    issue(aio, req);
    return;
  }
  if (req->op == FY_AIO_DROP_CACHE && req->done == 0 && req->buf) {
    req->done = 1; /* the madvise was advice too: the fadvise goes ahead either way */
    req->retries = 0;
    issue(aio, req);
    return;
  }
  if (req->op != FY_AIO_WRITE) {
    complete(aio, req, res < 0 ? res : 0, b);
    return;
  }
  if (res <= 0) {
    complete(aio, req, res == 0 ? -EIO : res, b); /* no progress: the disk is not taking it */
    return;
  }
  fy_assert((uint64_t)res <= req->len - req->done);
  req->done += (uint64_t)res;
  if (req->done < req->len) {
    req->retries = 0;
    issue(aio, req); /* short write: resume with the rest */
    return;
  }
  complete(aio, req, (int64_t)req->len, b);
}

static int accept_req(fy_aio *aio, fy_aio_req *req, int op, int fd, const void *buf, uint64_t len,
                      uint64_t off, int mode, bool background, fy_aio_cb cb) {
  fy_assert(!aio->closing);
  if (!cb)
    return -EINVAL;
  if (fd < 0)
    return -EBADF;
  req->cb = cb;
  req->aio = aio;
  req->op = op;
  req->fd = fd;
  req->buf = buf;
  req->len = len;
  req->off = off;
  req->mode = mode;
  req->done = 0;
  req->res = 0;
  req->retries = 0;
  req->next = NULL;
  req->fault = take_fault(aio, op);
  req->background = background;
  aio->pending++;
  update_ref(aio);
  if (background && aio->bg_active >= FY_AIO_BACKGROUND_MAX)
    list_push_tail(&aio->bg_head, &aio->bg_tail, req); /* admitted when one finishes */
  else
    admit(aio, req);
  return 0;
}

/* Gives req a slot now, or a place in the wait FIFO. */
static void admit(fy_aio *aio, fy_aio_req *req) {
  if (req->background)
    aio->bg_active++;
  if (aio->inflight < aio->depth && !aio->wait_head) {
    aio->inflight++;
    issue(aio, req);
  } else {
    wait_push_tail(aio, req);
  }
  if (aio->backend == FY_AIO_URING)
    uv_idle_start(&aio->idle, on_idle); /* submit before the loop blocks */
}

int fy_aio_write(fy_aio *aio, fy_aio_req *req, int fd, const void *buf, size_t len, uint64_t off,
                 fy_aio_cb cb) {
  if (len == 0 || !buf || off > INT64_MAX || len > INT64_MAX - off)
    return -EINVAL;
  return accept_req(aio, req, FY_AIO_WRITE, fd, buf, len, off, 0, false, cb);
}

int fy_aio_fdatasync(fy_aio *aio, fy_aio_req *req, int fd, fy_aio_cb cb) {
  return accept_req(aio, req, FY_AIO_FDATASYNC, fd, NULL, 0, 0, 0, true, cb);
}

int fy_aio_fdatasync_urgent(fy_aio *aio, fy_aio_req *req, int fd, fy_aio_cb cb) {
  return accept_req(aio, req, FY_AIO_FDATASYNC, fd, NULL, 0, 0, 0, false, cb);
}

int fy_aio_writeback(fy_aio *aio, fy_aio_req *req, int fd, uint64_t off, uint64_t len,
                     fy_aio_cb cb) {
  /* io_uring's sync_file_range takes a 32-bit length */
  if (len == 0 || len > UINT32_MAX || off > INT64_MAX - len)
    return -EINVAL;
  return accept_req(aio, req, FY_AIO_WRITEBACK, fd, NULL, len, off, 0, false, cb);
}

int fy_aio_fallocate(fy_aio *aio, fy_aio_req *req, int fd, int mode, uint64_t off, uint64_t len,
                     fy_aio_cb cb) {
  if (len == 0 || off > INT64_MAX || len > INT64_MAX - off)
    return -EINVAL;
  return accept_req(aio, req, FY_AIO_FALLOCATE, fd, NULL, len, off, mode, true, cb);
}

int fy_aio_drop_cache(fy_aio *aio, fy_aio_req *req, int fd, const void *addr, uint64_t off,
                      uint64_t len, fy_aio_cb cb) {
  if (len == 0 || len > FY_AIO_DROP_MAX || off > INT64_MAX - len)
    return -EINVAL;
  return accept_req(aio, req, FY_AIO_DROP_CACHE, fd, addr, len, off, 0, true, cb);
}

/* ---- life cycle -------------------------------------------------------- */

static enum fy_aio_backend backend_from_env(void) {
  const char *e = getenv("FERRY_AIO_BACKEND");
  if (!e || !*e)
    return FY_AIO_AUTO;
  if (strcmp(e, "threads") == 0)
    return FY_AIO_THREADS;
  if (strcmp(e, "uring") == 0 || strcmp(e, "io_uring") == 0)
    return FY_AIO_URING;
  fy_warn("aio", "ignoring FERRY_AIO_BACKEND=%s (want uring or threads)", e);
  return FY_AIO_AUTO;
}

/* Tests only: FERRY_TEST_FDATASYNC_DELAY_MS=N (1..600000) makes every
 * fdatasync of this process complete N ms late, a slow disk for integration
 * tests of FLUSH_DISK_TIMEOUT; FERRY_TEST_WRITE_DELAY_MS=N does the same to
 * every write (a slave whose disk is slower than its link). Never set them
 * in production. */
static void delay_one_from_env(fy_aio *aio, const char *var, enum fy_aio_op op, const char *what) {
  const char *e = getenv(var);
  if (!e || !*e)
    return;
  char *end;
  unsigned long ms = strtoul(e, &end, 10);
  if (*end || ms == 0 || ms > 600000) {
    fy_warn("aio", "ignoring %s=%s (want 1..600000)", var, e);
    return;
  }
  fy_warn("aio", "%s=%lu: every %s completes %lu ms late (a test setting, never for production)",
          var, ms, what, ms);
  fy_aio_inject_delay(aio, op, (uint32_t)ms);
}

static void delay_from_env(fy_aio *aio) {
  delay_one_from_env(aio, "FERRY_TEST_FDATASYNC_DELAY_MS", FY_AIO_FDATASYNC, "fdatasync");
  delay_one_from_env(aio, "FERRY_TEST_WRITE_DELAY_MS", FY_AIO_WRITE, "write");
}

int fy_aio_init(uv_loop_t *loop, enum fy_aio_backend backend, unsigned queue_depth, fy_aio **out) {
  static atomic_bool fallback_logged;
  if (!loop || queue_depth == 0 || queue_depth > QUEUE_DEPTH_MAX)
    return -EINVAL;
  fy_aio *aio = calloc(1, sizeof *aio);
  if (!aio)
    return -ENOMEM;
  aio->loop = loop;
  aio->depth = queue_depth;
  bool fallback = backend == FY_AIO_AUTO;
  if (backend == FY_AIO_AUTO) {
    backend = backend_from_env();
    fallback = backend == FY_AIO_AUTO;
    if (backend == FY_AIO_AUTO)
      backend = FY_AIO_URING;
  }
  aio->backend = backend;
  if (backend == FY_AIO_URING) {
    int r = uring_init(aio);
    if (r < 0 && !fallback) {
      free(aio);
      return r;
    }
    if (r < 0) {
      if (!atomic_exchange(&fallback_logged, true))
        fy_warn("aio", "io_uring unavailable (%s); using the thread pool", fy_strerror(r));
      aio->backend = FY_AIO_THREADS;
    }
  }
  uv_idle_init(loop, &aio->idle);
  aio->idle.data = aio;
  uv_timer_init(loop, &aio->hold_timer);
  aio->hold_timer.data = aio;
  delay_from_env(aio);
  *out = aio;
  return 0;
}

static void on_handle_closed(uv_handle_t *h) {
  fy_aio *aio = h->data;
  fy_assert(aio->handles_open > 0);
  if (--aio->handles_open > 0)
    return;
  if (aio->backend == FY_AIO_URING) {
    io_uring_queue_exit(&aio->ring);
  }
  free(aio);
}

void fy_aio_close(fy_aio *aio) {
  fy_assert(aio->pending == 0);
  fy_assert(aio->wait_head == NULL);
  fy_assert(aio->bg_head == NULL);
  fy_assert(!aio->closing);
  fy_assert(aio->held_head == NULL);
  aio->closing = true;
  aio->handles_open = 2;
  uv_close((uv_handle_t *)&aio->idle, on_handle_closed);
  uv_close((uv_handle_t *)&aio->hold_timer, on_handle_closed);
  if (aio->backend == FY_AIO_URING) {
    aio->handles_open += 2;
    uv_close((uv_handle_t *)&aio->poll, on_handle_closed);
    uv_close((uv_handle_t *)&aio->prepare, on_handle_closed);
  }
}
