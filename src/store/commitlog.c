/*
 * The commit log (see commitlog.h for the contract and record.h for the
 * record format).
 *
 * Why it looks like this: every message is appended here first, so the
 * append path is a memcpy into a write buffer (no system call, no allocation)
 * and the disk sees one large write per loop iteration. Everything else,
 * acknowledgements included, follows from three offsets that only move
 * forward and only on success: end >= written >= flushed.
 *
 * Write buffers form a ring. [head, cur] are in use; cur is being filled.
 * A buffer holds bytes of one segment only, so a write never spans files.
 *
 *   buffer:  off                      off+sent          off+len
 *            |---- written (done) ----|-- in flight --|-- filled --|-- free --|
 *   `upto` is where `written` stands once the whole buffer is written: off+len,
 *   or the segment end when the buffer ends with a blank marker.
 *
 * At most one write is in flight (always from the head buffer), and at most
 * one fdatasync; a write may run while the fdatasync does. The fdatasync
 * covers the segment holding `flushed`, up to `written` as it stood when the
 * sync was queued, capped at that segment's end, so each segment of a roll is
 * synced before records in it are acknowledged.
 *
 * Page cache: with page_cache_max set, flushed bytes further than that behind
 * `end` are let go of (madvise + fadvise through fy_aio, once DROP_STEP is
 * due, one request of at most DROP_CHUNK in flight at a time). New writes
 * then reuse the pages just freed instead of taking fresh ones, and the
 * log's share of memory stays bounded; readers of older bytes fault them
 * back in from disk.
 *
 * Writeback ahead (ASYNC_FLUSH, writeback_bytes set): every writeback_bytes
 * of written bytes get their writeback started (sync_file_range through
 * fy_aio, one request in flight), so the periodic fdatasync finds little left
 * to do. Without it, that fdatasync spent milliseconds of CPU handing half a
 * second of writes to the device, on an io_uring worker that the next write
 * then waited for (io_uring starts another worker only once every running
 * one blocks): a 5-8 ms stall of every acknowledgement twice a second.
 *
 * Segments: the one holding `end` (active) and the next always exist; a new
 * one is created (open + mmap on the loop) and preallocated through fy_aio
 * (fallocate, then an fdatasync of the directory) before writes reach it.
 *
 * Log states:
 *   OPEN      appends accepted (unless failed or disk full)
 *   DRAINING  fy_commitlog_close was called: buffered bytes are written and
 *             synced, appends return -FY_ESHUTDOWN
 *   CLOSING   no I/O left; the handles are closing
 *   CLOSED    done_cb has run; only fy_commitlog_free is allowed
 * The failed state (error != 0) is orthogonal and sticky.
 */
#include "store/commitlog.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "store/fileops.h"

#define NAME_DIGITS 20
#define SEGMENT_SIZE_MAX (UINT64_C(1) << 40)
#define SEGMENTS_MAX (1u << 20)   /* files in one log directory */
#define DROP_STEP (UINT64_C(8) << 20) /* page cache let go of in steps of at least this */
#define DROP_ALIGN (UINT64_C(2) << 20)
/* One drop request covers at most this much, and the next one starts when
 * it completes. A flush cycle's worth in one request (38 MB at 337k msgs/s)
 * kept the io_uring worker in drop_buffers for 3.5-5 ms on the broker's CPU,
 * and the loop waited that long (bench/e2e_notes.md, thirteenth session). */
#define DROP_CHUNK (UINT64_C(2) << 20)
#define WRITEBACK_ALIGN UINT64_C(4096) /* writeback ahead stops at a page boundary */
/* One writeback request covers at most this many steps, and between
 * WRITEBACK_CAP_MIN and WRITEBACK_CAP_MAX bytes: however far behind it is,
 * the worker's burst of CPU stays short, and the length fits io_uring's 32
 * bits even with commitLogWritebackBytes at its 1 GiB maximum. */
#define WRITEBACK_STEPS_MAX 4u
#define WRITEBACK_CAP_MIN (UINT64_C(1) << 20)
#define WRITEBACK_CAP_MAX (UINT64_C(1) << 30)
#define ZERO_CHUNK (64u * 1024u) /* zero scan step; pwrite fallback when fallocate cannot zero */

static const uint8_t zeros[ZERO_CHUNK];

enum cl_state { CL_OPEN, CL_DRAINING, CL_CLOSING, CL_CLOSED };
enum prealloc_phase { PREALLOC_NONE, PREALLOC_FALLOCATE, PREALLOC_DIRSYNC };

struct fy_cl_segment {
  uint64_t start;
  int fd;
  const uint8_t *map; /* segment_size bytes, PROT_READ, MAP_SHARED */
  uint64_t map_len;
  unsigned refs;      /* the log's list, each slice, an unlink in progress */
  bool ready;         /* preallocated: writes may go to it */
  enum prealloc_phase phase;
  fy_commitlog *cl;   /* NULL once the log let go of it */
  fy_aio_req prealloc;
  uv_fs_t unlink;
  char path[];
};

struct cl_buf {
  uint8_t *data;
  uint32_t len;     /* bytes filled */
  uint32_t sent;    /* bytes handed to writes */
  uint32_t done;    /* bytes whose write completed */
  uint64_t off;     /* log offset of data[0] */
  uint64_t upto;    /* `written` once all len bytes are written */
  uint64_t seg_end; /* end of the segment the bytes belong to */
};

/* An append awaiting its callback. Waiters form a FIFO in log order, so
 * `end` grows along it and, for timed ones (all with the same timeout
 * while any waits), so does deadline_ms. A timed waiter whose deadline passes is answered
 * -FY_ETIMEOUT and left in place with cb NULL (answered): it keeps its slot
 * until the flush covers it, then goes without a second call. */
struct waiter {
  uint64_t end;
  uint64_t phys;
  uint64_t size;
  uint64_t deadline_ms; /* loop time (uv_now); 0: waits for the flush however long */
  fy_append_cb cb;      /* NULL once answered by the timeout */
  void *arg;
};

/* Allocated apart from the log so fy_commitlog_free can close the handles of
 * a log that never ran and return at once. */
struct cl_handles {
  uv_prepare_t prepare;
  uv_timer_t timer;     /* ASYNC_FLUSH: periodic fdatasync; SYNC_FLUSH: flush timeouts */
  uv_idle_t fail_idle; /* delivers the sticky error to waiters, next iteration */
  fy_commitlog *cl;
  unsigned open;
};

struct fy_commitlog {
  uv_loop_t *loop;
  fy_aio *aio;
  struct fy_commitlog_config cfg;
  char *dir;
  int dirfd;
  enum cl_state state;
  int error;
  bool disk_full;

  uint64_t min, end, written, flushed;
  uint64_t end_seg_end; /* end of the segment holding `end` (end < end_seg_end) */
  uint64_t own_from;    /* bytes from here on were encoded by fy_commitlog_append (not
                           found at open, not appended raw): see fy_commitlog_read_record_own */
  uint64_t sync_goal;   /* sync until flushed reaches this (capped at written) */

  fy_cl_segment **segs; /* segs[i]->start == min + i * segment_size */
  size_t nsegs, segs_cap;
  unsigned prealloc_inflight;

  struct cl_buf *bufs;
  uint8_t *buf_mem;
  uint32_t head, cur;

  fy_aio_req write_req;
  uint32_t write_len;
  bool write_inflight;
  fy_aio_req sync_req;
  uint64_t sync_target;
  bool sync_inflight;

  fy_aio_req drop_req;  /* page cache: see "Page cache" above */
  fy_cl_segment *drop_seg;
  uint64_t drop_end;
  bool drop_inflight;

  fy_aio_req wb_req;    /* see "Writeback ahead" above */
  fy_cl_segment *wb_seg;
  uint64_t wb_from;     /* writeback started (or synced) below this */
  uint64_t wb_end;      /* of the request in flight */
  bool wb_inflight;
  bool wb_warned;       /* a failed writeback was logged (once per log) */

  struct waiter *waiters;
  uint32_t w_head, w_count;
  uint64_t w_seq;     /* sequence number of the waiter at w_head (counts pops) */
  uint64_t w_scanned; /* no waiter numbered below this still has a deadline to meet */

  struct fy_cl_stats stats;

  void (*on_written)(void *arg, uint64_t written);
  void *on_written_arg;
  void (*on_flushed)(void *arg, uint64_t flushed);
  void *on_flushed_arg;
  void (*done_cb)(void *arg);
  void *done_arg;

  struct cl_handles *h;
};

static void pump(fy_commitlog *cl);
static void on_fail_idle(uv_idle_t *idle);

/* ---- small helpers ------------------------------------------------------ */

static int64_t now_ms(void) { return fy_clock_real_ms(); }

static inline uint64_t seg_size(const fy_commitlog *cl) { return cl->cfg.segment_size; }

static inline uint32_t next_buf(const fy_commitlog *cl, uint32_t i) {
  return i + 1 == cl->cfg.write_buffers ? 0 : i + 1;
}

/* The segment holding offset (a segment's start belongs to it), or NULL. */
static fy_cl_segment *seg_at(const fy_commitlog *cl, uint64_t offset) {
  if (cl->nsegs == 0 || offset < cl->segs[0]->start)
    return NULL;
  uint64_t i = (offset - cl->segs[0]->start) / seg_size(cl);
  return i < cl->nsegs ? cl->segs[i] : NULL;
}

static uint64_t segs_end(const fy_commitlog *cl) {
  return cl->nsegs ? cl->segs[cl->nsegs - 1]->start + seg_size(cl) : 0;
}

static void seg_release(fy_cl_segment *seg) {
  fy_assert(seg->refs > 0);
  if (--seg->refs > 0)
    return;
  munmap((void *)seg->map, seg->map_len);
  close(seg->fd);
  free(seg);
}

static void fail(fy_commitlog *cl, int err, const char *what) {
  fy_assert(err < 0);
  if (cl->error)
    return;
  cl->error = err;
  fy_error("commitlog", "%s failed: %s; refusing writes from now on (end %" PRIu64
           " written %" PRIu64 " flushed %" PRIu64 ")",
           what, fy_strerror(err), cl->end, cl->written, cl->flushed);
  /* Never inline: fail may run inside an append or truncate call. An active
   * idle handle also keeps the loop from blocking before it runs. */
  uv_idle_start(&cl->h->fail_idle, on_fail_idle);
}

static int fsync_dir(fy_commitlog *cl) { return fsync(cl->dirfd) == 0 ? 0 : -errno; }

/* ---- segment files ------------------------------------------------------ */

static fy_cl_segment *seg_alloc(const fy_commitlog *cl, uint64_t start) {
  size_t plen = strlen(cl->dir) + 1 + NAME_DIGITS + 1;
  fy_cl_segment *seg = calloc(1, sizeof *seg + plen);
  if (!seg)
    return NULL;
  snprintf(seg->path, plen, "%s/%020" PRIu64, cl->dir, start);
  seg->start = start;
  seg->fd = -1;
  seg->refs = 1;
  seg->cl = (fy_commitlog *)cl;
  return seg;
}

/* Opens (creat: creates empty) the file and maps segment_size bytes of it. */
static int seg_open_map(fy_commitlog *cl, fy_cl_segment *seg, bool creat) {
  int flags = O_RDWR | O_CLOEXEC | (creat ? O_CREAT | O_TRUNC : 0);
  seg->fd = open(seg->path, flags, 0644);
  if (seg->fd < 0)
    return -errno;
  void *map = mmap(NULL, seg_size(cl), PROT_READ, MAP_SHARED, seg->fd, 0);
  if (map == MAP_FAILED) {
    int r = -errno;
    close(seg->fd);
    return r;
  }
  seg->map = map;
  seg->map_len = seg_size(cl);
  return 0;
}

/* Room for one more segment in the list, so that pushing cannot fail. */
static int segs_reserve(fy_commitlog *cl) {
  if (cl->nsegs < cl->segs_cap)
    return 0;
  size_t cap = cl->segs_cap ? cl->segs_cap * 2 : 8;
  fy_cl_segment **s = realloc(cl->segs, cap * sizeof *s);
  if (!s)
    return -ENOMEM;
  cl->segs = s;
  cl->segs_cap = cap;
  return 0;
}

static void segs_push(fy_commitlog *cl, fy_cl_segment *seg) {
  fy_assert(cl->nsegs < cl->segs_cap);
  fy_assert(cl->nsegs == 0 || seg->start == segs_end(cl));
  cl->segs[cl->nsegs++] = seg;
}

static void on_prealloc(fy_aio_req *req, int64_t res) {
  fy_cl_segment *seg = req->data;
  fy_commitlog *cl = seg->cl;
  if (res >= 0 && seg->phase == PREALLOC_FALLOCATE) {
    seg->phase = PREALLOC_DIRSYNC; /* make the new name durable before using it */
    int r = fy_aio_fdatasync(cl->aio, req, cl->dirfd, on_prealloc);
    if (r == 0)
      return;
    res = r;
  }
  seg->phase = PREALLOC_NONE;
  cl->prealloc_inflight--;
  if (res < 0)
    fail(cl, (int)res, "segment preallocation");
  else
    seg->ready = true;
}

/* Creates the segment at start: synchronously preallocated (open and
 * truncate) or through fy_aio (the append path). */
static int seg_create(fy_commitlog *cl, uint64_t start, bool sync) {
  int r = segs_reserve(cl);
  if (r < 0)
    return r;
  fy_cl_segment *seg = seg_alloc(cl, start);
  if (!seg)
    return -ENOMEM;
  r = seg_open_map(cl, seg, true);
  if (r < 0)
    goto out_free;
  if (sync) {
    if (fallocate(seg->fd, 0, 0, (off_t)seg_size(cl)) != 0) {
      r = -errno;
      goto out_unlink;
    }
    seg->ready = true;
  } else {
    seg->phase = PREALLOC_FALLOCATE;
    seg->prealloc.data = seg;
    r = fy_aio_fallocate(cl->aio, &seg->prealloc, seg->fd, 0, 0, seg_size(cl), on_prealloc);
    if (r < 0)
      goto out_unlink;
    cl->prealloc_inflight++;
  }
  segs_push(cl, seg);
  return 0;

out_unlink:
  unlink(seg->path);
  munmap((void *)seg->map, seg->map_len);
  close(seg->fd);
out_free:
  free(seg);
  return r;
}

/* Makes sure the segment holding offset exists, creating any missing ones
 * (there is at most one or two: appends only run ahead by the buffers). */
static int ensure_segment(fy_commitlog *cl, uint64_t offset, bool sync) {
  for (unsigned i = 0; i < cl->cfg.write_buffers + 2 && offset >= segs_end(cl); i++) {
    int r = seg_create(cl, segs_end(cl), sync);
    if (r < 0)
      return r;
  }
  return offset < segs_end(cl) ? 0 : -EIO;
}

/* ---- write buffers and placement --------------------------------------- */

/*
 * A cursor walks the placement of an append over the buffers without
 * touching them (plan) and then again writing the bytes (commit), so an
 * append either fits entirely or changes nothing.
 */
struct cursor {
  uint64_t end;         /* where the next byte goes */
  uint64_t seg_end;     /* end of the segment holding end */
  uint32_t cur;         /* buffer being filled */
  uint32_t len;         /* its fill */
  uint64_t buf_seg_end; /* end of the segment its bytes belong to */
  uint32_t fresh;       /* buffers taken so far */
  uint32_t free;        /* buffers free at the start */
  bool commit;
};

static void cursor_init(const fy_commitlog *cl, struct cursor *c, bool commit) {
  const struct cl_buf *b = &cl->bufs[cl->cur];
  uint32_t in_use = (cl->cur + cl->cfg.write_buffers - cl->head) % cl->cfg.write_buffers + 1;
  c->end = cl->end;
  c->seg_end = cl->end_seg_end;
  c->cur = cl->cur;
  c->len = b->len;
  c->buf_seg_end = b->seg_end;
  c->fresh = 0;
  c->free = cl->cfg.write_buffers - in_use;
  c->commit = commit;
}

static void cursor_done(fy_commitlog *cl, const struct cursor *c) {
  fy_assert(c->commit);
  cl->end = c->end;
  cl->end_seg_end = c->seg_end;
  cl->cur = c->cur;
}

/*
 * Reserves between min and max bytes at c->end in the current buffer, or in
 * a fresh one if the current one is of another segment or too full. Returns
 * the position in the buffer and sets *got, or -1 when no buffer is free.
 */
static int64_t take(fy_commitlog *cl, struct cursor *c, uint32_t min, uint64_t max, uint32_t *got) {
  uint32_t cap = cl->cfg.write_buffer_size;
  if (c->len == 0 || c->buf_seg_end != c->seg_end || c->len + min > cap) {
    if (c->len > 0) {
      if (c->fresh == c->free)
        return -1;
      c->fresh++;
      c->cur = next_buf(cl, c->cur);
      c->len = 0;
    }
    c->buf_seg_end = c->seg_end;
    if (c->commit) {
      struct cl_buf *b = &cl->bufs[c->cur];
      fy_assert(b->sent == 0 && b->done == 0);
      b->off = b->upto = c->end;
      b->len = 0;
      b->seg_end = c->seg_end;
    }
  }
  uint32_t room = cap - c->len;
  *got = max < room ? (uint32_t)max : room;
  int64_t pos = c->len;
  c->len += *got;
  if (c->commit) {
    struct cl_buf *b = &cl->bufs[c->cur];
    b->len = c->len;
    fy_assert(b->off + pos == c->end);
  }
  return pos;
}

/* Moves the cursor over `n` placed bytes; past a segment end, into the next
 * segment (which the plan creates if needed). */
static int advance(fy_commitlog *cl, struct cursor *c, uint64_t n) {
  c->end += n;
  if (c->commit)
    cl->bufs[c->cur].upto = c->end;
  if (c->end < c->seg_end)
    return 0;
  fy_assert(c->end == c->seg_end);
  c->seg_end += seg_size(cl);
  return c->commit ? 0 : ensure_segment(cl, c->end, false);
}

static int place_record(fy_commitlog *cl, struct cursor *c, struct fy_msg *m, int64_t now,
                        uint32_t *size_out) {
  uint32_t size = fy_record_size(m), got;
  *size_out = size;
  if (size == 0)
    return -EINVAL;
  if ((uint64_t)size + FY_BLANK_SIZE > cl->cfg.write_buffer_size ||
      (uint64_t)size + FY_BLANK_SIZE > seg_size(cl))
    return -FY_ETOO_BIG;
  uint64_t left = c->seg_end - c->end;
  if (left < FY_BLANK_SIZE)
    return -FY_ECORRUPT; /* the log ends in a torn replicated record */
  if (size + FY_BLANK_SIZE > left) {
    int64_t pos = take(cl, c, FY_BLANK_SIZE, FY_BLANK_SIZE, &got);
    if (pos < 0)
      return -FY_EBUSY;
    if (c->commit)
      fy_record_encode_blank(cl->bufs[c->cur].data + pos, (uint32_t)left);
    int r = advance(cl, c, left);
    if (r < 0)
      return r;
  }
  int64_t pos = take(cl, c, size, size, &got);
  if (pos < 0)
    return -FY_EBUSY;
  if (c->commit) {
    m->phys_offset = c->end;
    m->store_ts_ms = now;
    fy_record_encode(m, cl->bufs[c->cur].data + pos);
  }
  return advance(cl, c, size);
}

static int place_records(fy_commitlog *cl, struct cursor *c, struct fy_msg *msgs, size_t n,
                         int64_t now, uint64_t *phys_out, uint64_t *size_out) {
  uint64_t size = 0;
  for (size_t i = 0; i < n; i++) {
    uint32_t rec_size;
    int r = place_record(cl, c, &msgs[i], now, &rec_size);
    if (r < 0)
      return r;
    if (c->commit) {
      msgs[i].total_size = rec_size;
      if (phys_out)
        phys_out[i] = msgs[i].phys_offset;
    }
    size += rec_size;
  }
  *size_out = size;
  return 0;
}

static int place_raw(fy_commitlog *cl, struct cursor *c, const uint8_t *bytes, size_t len) {
  /* Bounded: every round but the first fills a whole buffer. */
  for (size_t off = 0, rounds = 0; off < len; rounds++) {
    fy_assert(rounds <= len / cl->cfg.write_buffer_size + 2);
    uint32_t got;
    int64_t pos = take(cl, c, 1, len - off, &got);
    if (pos < 0)
      return -FY_EBUSY;
    if (c->commit)
      memcpy(cl->bufs[c->cur].data + pos, bytes + off, got);
    off += got;
    int r = advance(cl, c, got);
    if (r < 0)
      return r;
  }
  return 0;
}

/* ---- waiters -------------------------------------------------------------- */

static void on_flush_timeout(uv_timer_t *t);

static void waiter_push(fy_commitlog *cl, uint64_t phys, uint64_t size, uint32_t timeout_ms,
                        fy_append_cb cb, void *arg) {
  fy_assert(cl->w_count < cl->cfg.max_waiters);
  uint32_t i = (cl->w_head + cl->w_count) % cl->cfg.max_waiters;
  uint64_t deadline = 0;
  if (timeout_ms && cl->cfg.sync_flush) {
    deadline = uv_now(cl->loop) + timeout_ms;
    /* An armed timer is due no later than this deadline (FIFO order). */
    if (!uv_is_active((uv_handle_t *)&cl->h->timer))
      uv_timer_start(&cl->h->timer, on_flush_timeout, timeout_ms, 0);
  }
  cl->waiters[i] = (struct waiter){
      .end = cl->end, .phys = phys, .size = size, .deadline_ms = deadline, .cb = cb, .arg = arg};
  cl->w_count++;
}

/* Completes, in order, the waiters whose bytes end at or before upto (all of
 * them when status is an error); those the timeout answered go silently.
 * Callbacks may append: new waiters end past upto and are not counted. */
static void release_waiters(fy_commitlog *cl, uint64_t upto, int status) {
  uint32_t n = 0;
  for (uint32_t i = cl->w_head; n < cl->w_count; n++) {
    if (status == 0 && cl->waiters[i].end > upto)
      break;
    i = i + 1 == cl->cfg.max_waiters ? 0 : i + 1;
  }
  for (uint32_t k = 0; k < n; k++) {
    struct waiter w = cl->waiters[cl->w_head];
    cl->w_head = cl->w_head + 1 == cl->cfg.max_waiters ? 0 : cl->w_head + 1;
    cl->w_count--;
    cl->w_seq++;
    if (w.cb)
      w.cb(w.arg, status, w.phys, w.size);
  }
  if (cl->w_count == 0 && cl->cfg.sync_flush)
    uv_timer_stop(&cl->h->timer); /* no deadline left: the next timed append arms it afresh */
}

/* SYNC_FLUSH: answers -FY_ETIMEOUT to the timed waiters whose deadline has
 * passed, then re-arms for the next deadline. Scanning resumes where the
 * last one stopped (w_scanned), so each waiter is looked at about once. The
 * callbacks may append (new waiters join the tail with later deadlines);
 * nothing here pops a waiter. */
static void on_flush_timeout(uv_timer_t *t) {
  fy_commitlog *cl = t->data;
  uint64_t now = uv_now(cl->loop);
  uint32_t k = cl->w_scanned > cl->w_seq ? (uint32_t)(cl->w_scanned - cl->w_seq) : 0;
  for (; k < cl->w_count; k++) { /* bounded by max_waiters */
    struct waiter *w = &cl->waiters[(cl->w_head + k) % cl->cfg.max_waiters];
    if (!w->cb || !w->deadline_ms)
      continue;
    if (w->deadline_ms > now) {
      uv_timer_start(t, on_flush_timeout, w->deadline_ms - now, 0);
      break;
    }
    fy_append_cb cb = w->cb;
    w->cb = NULL;
    cb(w->arg, -FY_ETIMEOUT, w->phys, w->size);
  }
  cl->w_scanned = cl->w_seq + k;
}

/* ---- the write path -------------------------------------------------------- */

static void update_ref(fy_commitlog *cl) {
  if (cl->state != CL_OPEN && cl->state != CL_DRAINING)
    return;
  uint64_t goal = cl->sync_goal < cl->written ? cl->sync_goal : cl->written;
  bool work = cl->state == CL_DRAINING || (cl->error && cl->w_count) ||
              (!cl->error && (cl->end > cl->written || cl->flushed < goal));
  if (work)
    uv_ref((uv_handle_t *)&cl->h->prepare);
  else
    uv_unref((uv_handle_t *)&cl->h->prepare);
}

static void advance_flushed(fy_commitlog *cl, uint64_t to) {
  if (to <= cl->flushed)
    return;
  cl->flushed = to;
  if (cl->on_flushed)
    cl->on_flushed(cl->on_flushed_arg, to);
  if (cl->cfg.sync_flush)
    release_waiters(cl, to, 0);
}

static void maybe_drop(fy_commitlog *cl);

static void on_drop_done(fy_aio_req *req, int64_t res) {
  fy_commitlog *cl = req->data;
  cl->drop_inflight = false;
  seg_release(cl->drop_seg);
  cl->drop_seg = NULL;
  if (res < 0 && cl->stats.cache_dropped_to == 0)
    fy_warn("commitlog", "%s: cannot drop old pages from the page cache: %s (advice only)",
            cl->dir, fy_strerror((int)res));
  if (cl->drop_end > cl->stats.cache_dropped_to)
    cl->stats.cache_dropped_to = cl->drop_end;
  maybe_drop(cl); /* a close's pump sees drop_inflight clear */
}

/* Lets go of the page cache of flushed bytes more than page_cache_max behind
 * the end (see "Page cache" above). */
static void maybe_drop(fy_commitlog *cl) {
  if (!cl->cfg.page_cache_max || cl->drop_inflight || cl->error || cl->state != CL_OPEN)
    return;
  if (cl->end <= cl->cfg.page_cache_max)
    return;
  uint64_t to = cl->end - cl->cfg.page_cache_max;
  if (to > cl->flushed)
    to = cl->flushed; /* dirty pages are not dropped: only flushed ones */
  to = to / DROP_ALIGN * DROP_ALIGN;
  uint64_t from = cl->stats.cache_dropped_to > cl->min ? cl->stats.cache_dropped_to : cl->min;
  if (to < from + DROP_STEP)
    return;
  fy_cl_segment *seg = seg_at(cl, from);
  if (!seg)
    return;
  uint64_t seg_end = seg->start + seg_size(cl);
  uint64_t end = to < seg_end ? to : seg_end;
  if (end - from > DROP_CHUNK)
    end = from + DROP_CHUNK;
  uint64_t rel = from - seg->start;
  cl->drop_req.data = cl;
  int r = fy_aio_drop_cache(cl->aio, &cl->drop_req, seg->fd, seg->map + rel, rel, end - from,
                            on_drop_done);
  if (r < 0)
    return; /* advice: try again after the next flush */
  seg->refs++;
  cl->drop_seg = seg;
  cl->drop_end = end;
  cl->drop_inflight = true;
  cl->stats.cache_drops++;
}

static void maybe_writeback(fy_commitlog *cl);

static void on_writeback_done(fy_aio_req *req, int64_t res) {
  fy_commitlog *cl = req->data;
  cl->wb_inflight = false;
  seg_release(cl->wb_seg);
  cl->wb_seg = NULL;
  if (res < 0 && !cl->wb_warned) {
    fy_warn("commitlog", "%s: cannot start writeback: %s (the periodic fdatasync does it; "
            "not logged again)", cl->dir, fy_strerror((int)res));
    cl->wb_warned = true;
  }
  if (res == 0) {
    cl->stats.writebacks++;
    cl->stats.writeback_to = cl->wb_end;
  }
  if (cl->wb_end > cl->wb_from)
    cl->wb_from = cl->wb_end;
  maybe_writeback(cl); /* a close's pump sees wb_inflight clear */
}

/* Starts the writeback of written bytes once writeback_bytes of them (or the
 * rest of a segment) are waiting: see "Writeback ahead" above. */
static void maybe_writeback(fy_commitlog *cl) {
  if (!cl->cfg.writeback_bytes || cl->cfg.sync_flush || cl->wb_inflight || cl->error ||
      cl->state != CL_OPEN)
    return;
  if (cl->wb_from < cl->flushed)
    cl->wb_from = cl->flushed; /* an fdatasync covered them */
  if (cl->wb_from > cl->written)
    cl->wb_from = cl->written; /* a truncate moved back */
  uint64_t from = cl->wb_from;
  fy_cl_segment *seg = seg_at(cl, from);
  if (!seg)
    return;
  uint64_t seg_end = seg->start + seg_size(cl);
  uint64_t end = cl->written < seg_end ? cl->written : seg_end;
  if (end < seg_end)
    end = end / WRITEBACK_ALIGN * WRITEBACK_ALIGN; /* the last page is still filling */
  if (end <= from || (end - from < cl->cfg.writeback_bytes && end < seg_end))
    return;
  uint64_t cap = (uint64_t)cl->cfg.writeback_bytes * WRITEBACK_STEPS_MAX;
  if (cap < WRITEBACK_CAP_MIN)
    cap = WRITEBACK_CAP_MIN;
  if (cap > WRITEBACK_CAP_MAX)
    cap = WRITEBACK_CAP_MAX;
  if (end - from > cap)
    end = (from + cap) / WRITEBACK_ALIGN * WRITEBACK_ALIGN;
  cl->wb_req.data = cl;
  int r = fy_aio_writeback(cl->aio, &cl->wb_req, seg->fd, from - seg->start, end - from,
                           on_writeback_done);
  if (r < 0)
    return; /* advice: the fdatasync does it */
  seg->refs++;
  cl->wb_seg = seg;
  cl->wb_end = end;
  cl->wb_inflight = true;
}

static void on_sync_done(fy_aio_req *req, int64_t res) {
  fy_commitlog *cl = req->data;
  cl->sync_inflight = false;
  if (res < 0)
    fail(cl, (int)res, "fdatasync"); /* never retried: the page cache may have dropped the data */
  if (!cl->error) {
    cl->stats.syncs++;
    advance_flushed(cl, cl->sync_target);
    maybe_drop(cl);
  }
  update_ref(cl);
}

/* Syncs the segment holding `flushed`, up to what was written at this point. */
static void submit_sync(fy_commitlog *cl) {
  uint64_t goal = cl->sync_goal < cl->written ? cl->sync_goal : cl->written;
  if (cl->sync_inflight || cl->error || cl->flushed >= goal)
    return;
  fy_cl_segment *seg = seg_at(cl, cl->flushed);
  fy_assert(seg != NULL);
  uint64_t seg_end = seg->start + seg_size(cl);
  cl->sync_target = cl->written < seg_end ? cl->written : seg_end;
  cl->sync_req.data = cl;
  int r = fy_aio_fdatasync_urgent(cl->aio, &cl->sync_req, seg->fd, on_sync_done);
  if (r < 0) {
    fail(cl, r, "fdatasync");
    return;
  }
  cl->sync_inflight = true;
}

static void advance_written(fy_commitlog *cl, uint64_t to) {
  fy_assert(to >= cl->written);
  fy_assert(to <= cl->end);
  cl->written = to;
  if (cl->cfg.sync_flush) {
    if (to > cl->sync_goal)
      cl->sync_goal = to;
    /* The fdatasync that acknowledgements wait for goes to the kernel now,
     * before on_written's work (dispatching a large group takes
     * milliseconds), not at the next loop iteration. */
    submit_sync(cl);
    fy_aio_submit(cl->aio);
  }
  if (cl->on_written)
    cl->on_written(cl->on_written_arg, to);
  if (!cl->cfg.sync_flush)
    release_waiters(cl, to, 0);
}

static void on_write_done(fy_aio_req *req, int64_t res) {
  fy_commitlog *cl = req->data;
  cl->write_inflight = false;
  if (res < 0)
    fail(cl, (int)res, "write");
  if (cl->error) {
    update_ref(cl);
    return;
  }
  fy_assert(res == cl->write_len);
  cl->stats.writes++;
  cl->stats.write_bytes += cl->write_len;
  struct cl_buf *b = &cl->bufs[cl->head];
  b->done += cl->write_len;
  fy_assert(b->done == b->sent);
  uint64_t to = b->done == b->len ? b->upto : b->off + b->done;
  if (b->done == b->len) {
    if (cl->head != cl->cur)
      cl->head = next_buf(cl, cl->head);
    b->len = b->sent = b->done = 0; /* free, or the current buffer rewound */
    b->off = b->upto = cl->end;
    b->seg_end = 0;
  }
  advance_written(cl, to); /* under SYNC_FLUSH, also starts the fdatasync */
  maybe_writeback(cl);
  update_ref(cl);
}

/* One write per iteration: everything the head buffer holds that is not yet
 * handed to the kernel. */
static void submit_write(fy_commitlog *cl) {
  if (cl->write_inflight || cl->error)
    return;
  struct cl_buf *b = &cl->bufs[cl->head];
  if (b->sent == b->len)
    return;
  fy_cl_segment *seg = seg_at(cl, b->off);
  fy_assert(seg != NULL);
  fy_assert(b->seg_end == seg->start + seg_size(cl));
  if (!seg->ready)
    return; /* its preallocation is still running */
  uint32_t len = b->len - b->sent;
  cl->write_req.data = cl;
  int r = fy_aio_write(cl->aio, &cl->write_req, seg->fd, b->data + b->sent, len,
                       b->off + b->sent - seg->start, on_write_done);
  if (r < 0) {
    fail(cl, r, "write");
    return;
  }
  b->sent += len;
  cl->write_len = len;
  cl->write_inflight = true;
}

static void on_handle_closed(uv_handle_t *handle) {
  struct cl_handles *h = handle->data;
  if (--h->open > 0)
    return;
  fy_commitlog *cl = h->cl;
  if (!cl) {
    free(h); /* fy_commitlog_free closed them */
    return;
  }
  cl->state = CL_CLOSED;
  void (*done)(void *) = cl->done_cb;
  void *arg = cl->done_arg;
  if (done)
    done(arg); /* may free cl (and h) */
}

static void close_handles(struct cl_handles *h) {
  h->open = 3;
  h->prepare.data = h; /* from now on the callbacks see the handles, not the log */
  h->timer.data = h;
  h->fail_idle.data = h;
  uv_close((uv_handle_t *)&h->prepare, on_handle_closed);
  uv_close((uv_handle_t *)&h->timer, on_handle_closed);
  uv_close((uv_handle_t *)&h->fail_idle, on_handle_closed);
}

static void maybe_finish_drain(fy_commitlog *cl) {
  if (cl->write_inflight || cl->sync_inflight || cl->prealloc_inflight || cl->drop_inflight ||
      cl->wb_inflight)
    return;
  if (!cl->error && (cl->written < cl->end || cl->flushed < cl->end))
    return;
  if (cl->w_count)
    return; /* released by on_fail_idle (error) or by the last flush */
  cl->state = CL_CLOSING;
  uv_timer_stop(&cl->h->timer);
  close_handles(cl->h);
}

/* Once per loop iteration (prepare): keep a segment ahead, start the next
 * write and fdatasync, finish a close. Runs no callback of the caller's. */
static void pump(fy_commitlog *cl) {
  if (!cl->error) {
    int r = ensure_segment(cl, cl->end_seg_end, false);
    if (r < 0)
      fail(cl, r, "segment creation");
    submit_write(cl);
    submit_sync(cl);
  }
  if (cl->state == CL_DRAINING)
    maybe_finish_drain(cl);
  update_ref(cl);
}

static void on_fail_idle(uv_idle_t *idle) {
  fy_commitlog *cl = idle->data;
  uv_idle_stop(idle);
  release_waiters(cl, UINT64_MAX, cl->error);
  update_ref(cl);
}

static void on_prepare(uv_prepare_t *p) { pump(p->data); }

static void on_flush_timer(uv_timer_t *t) {
  fy_commitlog *cl = t->data;
  if (cl->written > cl->sync_goal)
    cl->sync_goal = cl->written;
  submit_sync(cl);
  update_ref(cl);
}

/* ---- appends -------------------------------------------------------------- */

static int check_writable(const fy_commitlog *cl) {
  if (cl->state != CL_OPEN)
    return -FY_ESHUTDOWN;
  if (cl->error)
    return -FY_ESTORE_FAILED;
  if (cl->disk_full)
    return -FY_EDISK_FULL;
  return 0;
}

static void appended(fy_commitlog *cl, uint64_t phys, uint64_t size, uint32_t timeout_ms,
                     fy_append_cb cb, void *arg) {
  if (cb)
    waiter_push(cl, phys, size, timeout_ms, cb, arg);
  if (!uv_has_ref((uv_handle_t *)&cl->h->prepare))
    uv_ref((uv_handle_t *)&cl->h->prepare);
}

int fy_commitlog_append(fy_commitlog *cl, struct fy_msg *msgs, size_t n, uint64_t *phys_out,
                        fy_append_cb cb, void *arg) {
  return fy_commitlog_append_timed(cl, msgs, n, phys_out, 0, cb, arg);
}

int fy_commitlog_append_timed(fy_commitlog *cl, struct fy_msg *msgs, size_t n, uint64_t *phys_out,
                              uint32_t flush_timeout_ms, fy_append_cb cb, void *arg) {
  int r = check_writable(cl);
  if (r < 0)
    return r;
  if (n == 0)
    return -EINVAL;
  if (cb && cl->w_count == cl->cfg.max_waiters)
    return -FY_EBUSY;
  struct cursor c;
  uint64_t size;
  cursor_init(cl, &c, false);
  r = place_records(cl, &c, msgs, n, 0, NULL, &size);
  if (r < 0)
    return r;
  cursor_init(cl, &c, true);
  r = place_records(cl, &c, msgs, n, now_ms(), phys_out, &size);
  fy_assert(r == 0);
  cursor_done(cl, &c);
  appended(cl, msgs[0].phys_offset, size, flush_timeout_ms, cb, arg);
  return 0;
}

int fy_commitlog_append_raw(fy_commitlog *cl, uint64_t offset, const void *bytes, size_t len,
                            fy_append_cb cb, void *arg) {
  int r = check_writable(cl);
  if (r < 0)
    return r;
  if (offset != cl->end)
    return -FY_EDISCONTIG;
  if (len == 0 || len > cl->end_seg_end - cl->end)
    return -EINVAL; /* empty, or crosses a segment end */
  if (len > (uint64_t)cl->cfg.write_buffer_size * (cl->cfg.write_buffers - 1))
    return -FY_ETOO_BIG;
  if (cb && cl->w_count == cl->cfg.max_waiters)
    return -FY_EBUSY;
  struct cursor c;
  cursor_init(cl, &c, false);
  r = place_raw(cl, &c, bytes, len);
  if (r < 0)
    return r;
  cursor_init(cl, &c, true);
  r = place_raw(cl, &c, bytes, len);
  fy_assert(r == 0);
  cursor_done(cl, &c);
  cl->own_from = cl->end; /* replicated bytes are validated when read */
  appended(cl, offset, len, 0, cb, arg);
  return 0;
}

/* ---- reads ---------------------------------------------------------------- */

int fy_commitlog_read(fy_commitlog *cl, uint64_t offset, size_t max_len, struct fy_cl_slice *out) {
  *out = (struct fy_cl_slice){.offset = offset};
  if (offset < cl->min)
    return -FY_ENOT_FOUND;
  if (offset >= cl->written || max_len == 0)
    return 0;
  fy_cl_segment *seg = seg_at(cl, offset);
  fy_assert(seg != NULL);
  uint64_t lim = seg->start + seg_size(cl);
  if (cl->written < lim)
    lim = cl->written;
  out->len = lim - offset < max_len ? (size_t)(lim - offset) : max_len;
  out->data = seg->map + (offset - seg->start);
  out->seg = seg;
  seg->refs++;
  return 0;
}

void fy_cl_slice_release(struct fy_cl_slice *s) {
  if (s->seg)
    seg_release(s->seg);
  s->seg = NULL;
  s->data = NULL;
  s->len = 0;
}

static int64_t read_record(fy_commitlog *cl, uint64_t offset, struct fy_cl_slice *slice,
                           enum fy_record_kind *kind, struct fy_msg *out, bool own) {
  int r = fy_commitlog_read(cl, offset, SIZE_MAX, slice);
  if (r < 0)
    return r;
  if (slice->len == 0)
    return -EAGAIN;
  int64_t size = own ? fy_record_decode_own(slice->data, slice->len, offset, kind, out)
                     : fy_record_decode(slice->data, slice->len, offset, kind, out);
  uint64_t seg_left = fy_commitlog_next_segment(cl, offset) - offset;
  if (size >= 0 && *kind == FY_REC_BLANK && (uint64_t)size != seg_left)
    size = -FY_ECORRUPT; /* a blank always runs to its segment's end */
  if (size >= 0 && *kind == FY_REC_MSG && (uint64_t)size + FY_BLANK_SIZE > seg_left)
    size = -FY_ECORRUPT; /* no writer leaves less than a blank after a record */
  if (size < 0) {
    fy_cl_slice_release(slice);
    return size;
  }
  if ((uint64_t)size < slice->len)
    slice->len = (size_t)size;
  return size;
}

int64_t fy_commitlog_read_record(fy_commitlog *cl, uint64_t offset, struct fy_cl_slice *slice,
                                 enum fy_record_kind *kind, struct fy_msg *out) {
  return read_record(cl, offset, slice, kind, out, false);
}

int64_t fy_commitlog_read_record_own(fy_commitlog *cl, uint64_t offset, struct fy_cl_slice *slice,
                                     enum fy_record_kind *kind, struct fy_msg *out) {
  return read_record(cl, offset, slice, kind, out, offset >= cl->own_from);
}

uint64_t fy_commitlog_next_segment(const fy_commitlog *cl, uint64_t offset) {
  return (offset / seg_size(cl) + 1) * seg_size(cl);
}

uint64_t fy_commitlog_min(const fy_commitlog *cl) { return cl->min; }
uint64_t fy_commitlog_end(const fy_commitlog *cl) { return cl->end; }
uint64_t fy_commitlog_written(const fy_commitlog *cl) { return cl->written; }
uint64_t fy_commitlog_flushed(const fy_commitlog *cl) { return cl->flushed; }
uint64_t fy_commitlog_segment_size(const fy_commitlog *cl) { return seg_size(cl); }
int fy_commitlog_error(const fy_commitlog *cl) { return cl->error; }
void fy_commitlog_stats(const fy_commitlog *cl, struct fy_cl_stats *out) { *out = cl->stats; }

void fy_commitlog_on_written(fy_commitlog *cl, void (*cb)(void *arg, uint64_t written), void *arg) {
  cl->on_written = cb;
  cl->on_written_arg = arg;
}

void fy_commitlog_on_flushed(fy_commitlog *cl, void (*cb)(void *arg, uint64_t flushed), void *arg) {
  cl->on_flushed = cb;
  cl->on_flushed_arg = arg;
}

void fy_commitlog_set_disk_full(fy_commitlog *cl, bool full) { cl->disk_full = full; }

/* ---- retention ---------------------------------------------------------- */

size_t fy_commitlog_old_segments(const fy_commitlog *cl, uint64_t *starts, int64_t *mtimes_ms,
                                 size_t cap) {
  size_t n = 0;
  for (size_t i = 0; i < cl->nsegs && n < cap; i++) {
    const fy_cl_segment *seg = cl->segs[i];
    if (seg->start + seg_size(cl) > cl->end)
      break; /* the active segment and those after it */
    struct stat st;
    int64_t mtime = 0;
    if (fstat(seg->fd, &st) == 0)
      mtime = (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
    starts[n] = seg->start;
    mtimes_ms[n] = mtime;
    n++;
  }
  return n;
}

static void on_unlinked(uv_fs_t *req) {
  fy_cl_segment *seg = req->data;
  if (req->result < 0)
    fy_warn("commitlog", "unlink %s: %s", seg->path, fy_strerror((int)req->result));
  uv_fs_req_cleanup(req);
  seg_release(seg);
}

int fy_commitlog_drop_oldest(fy_commitlog *cl) {
  if (cl->nsegs < 2 || cl->state != CL_OPEN)
    return -FY_EBUSY;
  fy_cl_segment *seg = cl->segs[0];
  if (seg->start + seg_size(cl) > cl->flushed)
    return -FY_EBUSY; /* active, or not yet flushed */
  seg->unlink.data = seg;
  int r = uv_fs_unlink(cl->loop, &seg->unlink, seg->path, on_unlinked);
  if (r < 0)
    return r;
  /* The log's reference now belongs to the unlink. */
  memmove(cl->segs, cl->segs + 1, (cl->nsegs - 1) * sizeof *cl->segs);
  cl->nsegs--;
  cl->min = cl->segs[0]->start;
  seg->cl = NULL;
  return 0;
}

/* ---- zeroing and cutting (open and truncate only: synchronous) ----------- */

/* Just past the last nonzero byte of p[lo, hi), or lo. */
static uint64_t last_nonzero_in(const uint8_t *p, uint64_t lo, uint64_t hi) {
  while (hi > lo) { /* bounded: hi moves down every round */
    uint64_t n = hi - lo < ZERO_CHUNK ? hi - lo : ZERO_CHUNK;
    if (memcmp(p + hi - n, zeros, n) != 0) {
      while (p[hi - 1] == 0)
        hi--;
      return hi;
    }
    hi -= n;
  }
  return lo;
}

/* Offset (within the segment) just past the last nonzero byte in [from, to),
 * or from if there is none. Skips holes and never-written extents. */
static uint64_t last_nonzero(const fy_cl_segment *seg, uint64_t from, uint64_t to) {
  uint64_t last = from;
  for (uint64_t pos = from; pos < to;) { /* bounded: each round moves pos forward */
    off_t d = lseek(seg->fd, (off_t)pos, SEEK_DATA);
    if (d < 0 || (uint64_t)d >= to)
      break;
    off_t h = lseek(seg->fd, d, SEEK_HOLE);
    uint64_t hole = h < 0 || (uint64_t)h > to ? to : (uint64_t)h;
    if (hole <= (uint64_t)d)
      break;
    uint64_t nz = last_nonzero_in(seg->map, (uint64_t)d, hole);
    if (nz > (uint64_t)d && nz > last) /* nz == d: all zero (cached unwritten extents count as data) */
      last = nz;
    pos = hole;
  }
  return last;
}

static int zero_range(int fd, uint64_t off, uint64_t len) {
  if (len == 0)
    return 0;
  if (fallocate(fd, FALLOC_FL_ZERO_RANGE, (off_t)off, (off_t)len) == 0)
    return 0;
  if (errno != EOPNOTSUPP)
    return -errno;
  if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) == 0) {
    if (fallocate(fd, 0, (off_t)off, (off_t)len) == 0 || errno == EOPNOTSUPP)
      return 0; /* blocks reserved again so ENOSPC still shows up early */
    return -errno;
  }
  if (errno != EOPNOTSUPP)
    return -errno;
  for (uint64_t done = 0; done < len;) {
    size_t n = len - done < ZERO_CHUNK ? (size_t)(len - done) : ZERO_CHUNK;
    ssize_t w = pwrite(fd, zeros, n, (off_t)(off + done));
    if (w <= 0)
      return w < 0 ? -errno : -EIO;
    done += (uint64_t)w;
  }
  return 0;
}

/* Zeroes whatever is not zero in seg from `from` (a log offset) to its end
 * and syncs it. Returns the bytes dropped (up to the last nonzero byte). */
static int64_t cut_segment(fy_commitlog *cl, fy_cl_segment *seg, uint64_t from) {
  uint64_t rel = from - seg->start;
  uint64_t last = last_nonzero(seg, rel, seg_size(cl));
  int r = zero_range(seg->fd, rel, last - rel);
  if (r == 0 && last > rel && fdatasync(seg->fd) != 0)
    r = -errno;
  return r < 0 ? r : (int64_t)(last - rel);
}

/* Deletes every segment after index keep (synchronously); slices on them
 * keep their mappings. Returns the nonzero bytes they held. */
static int64_t delete_after(fy_commitlog *cl, size_t keep) {
  int64_t dropped = 0;
  while (cl->nsegs > keep + 1) { /* bounded by nsegs */
    fy_cl_segment *seg = cl->segs[--cl->nsegs];
    dropped += (int64_t)last_nonzero(seg, 0, seg_size(cl));
    if (unlink(seg->path) != 0 && errno != ENOENT)
      fy_warn("commitlog", "unlink %s: %s", seg->path, strerror(errno));
    seg->cl = NULL;
    seg_release(seg);
  }
  int r = fsync_dir(cl);
  return r < 0 ? r : dropped;
}

/* Makes the log end at offset: the rest of its segment zeroed, later
 * segments deleted, the next one created. Synchronous. */
static int cut_at(fy_commitlog *cl, uint64_t offset, uint64_t *dropped) {
  int r = ensure_segment(cl, offset, true);
  if (r < 0)
    return r;
  fy_cl_segment *seg = seg_at(cl, offset);
  size_t idx = (size_t)((seg->start - cl->segs[0]->start) / seg_size(cl));
  int64_t d = cut_segment(cl, seg, offset);
  if (d < 0)
    return (int)d;
  int64_t d2 = delete_after(cl, idx);
  if (d2 < 0)
    return (int)d2;
  r = ensure_segment(cl, seg->start + seg_size(cl), true);
  if (r == 0)
    r = fsync_dir(cl);
  if (dropped)
    *dropped = (uint64_t)(d + d2);
  cl->end = cl->written = offset;
  if (cl->flushed > offset)
    cl->flushed = offset;
  if (cl->stats.cache_dropped_to > offset) /* kept on a step boundary (maybe_drop) */
    cl->stats.cache_dropped_to = offset / DROP_ALIGN * DROP_ALIGN;
  if (cl->sync_goal > offset)
    cl->sync_goal = offset;
  cl->end_seg_end = seg->start + seg_size(cl);
  return r;
}

int fy_commitlog_truncate(fy_commitlog *cl, uint64_t offset) {
  if (cl->state != CL_OPEN)
    return -FY_ESHUTDOWN;
  if (offset < cl->min || offset > cl->end)
    return -EINVAL;
  if (cl->write_inflight || cl->sync_inflight || cl->prealloc_inflight || cl->drop_inflight ||
      cl->end != cl->written || cl->w_count)
    return -FY_EBUSY;
  int r = cut_at(cl, offset, NULL);
  cl->head = cl->cur = 0;
  for (uint32_t i = 0; i < cl->cfg.write_buffers; i++) {
    struct cl_buf *b = &cl->bufs[i];
    b->len = b->sent = b->done = 0;
    b->off = b->upto = cl->end;
    b->seg_end = 0;
  }
  if (r < 0)
    fail(cl, r, "truncate");
  return r;
}

/* ---- open: find, validate and recover the segments ------------------------ */

static bool segment_name(const char *name, uint64_t *start) {
  uint64_t v = 0;
  for (int i = 0; i < NAME_DIGITS; i++) {
    if (name[i] < '0' || name[i] > '9')
      return false;
    uint64_t d = (uint64_t)(name[i] - '0');
    if (v > (UINT64_MAX - d) / 10)
      return false;
    v = v * 10 + d;
  }
  if (name[NAME_DIGITS] != '\0')
    return false;
  *start = v;
  return true;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* The sorted start offsets of the segment files in dir; other names are ignored. */
static int list_segments(const char *dir, uint64_t **out, size_t *n_out) {
  DIR *d = opendir(dir);
  if (!d)
    return -errno;
  uint64_t *starts = NULL;
  size_t n = 0, cap = 0;
  int r = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    uint64_t start;
    if (!segment_name(e->d_name, &start))
      continue;
    if (n == SEGMENTS_MAX) {
      r = -FY_ECONFIG;
      break;
    }
    if (n == cap) {
      cap = cap ? cap * 2 : 16;
      uint64_t *s = realloc(starts, cap * sizeof *s);
      if (!s) {
        r = -ENOMEM;
        break;
      }
      starts = s;
    }
    starts[n++] = start;
  }
  closedir(d);
  if (r < 0) {
    free(starts);
    return r;
  }
  if (n > 1)
    qsort(starts, n, sizeof *starts, cmp_u64);
  *out = starts;
  *n_out = n;
  return 0;
}

/* Opens and maps an existing segment file and reports its size (at most
 * segment_size). */
static int open_existing(fy_commitlog *cl, uint64_t start, uint64_t *size) {
  int r = segs_reserve(cl);
  if (r < 0)
    return r;
  fy_cl_segment *seg = seg_alloc(cl, start);
  if (!seg)
    return -ENOMEM;
  r = seg_open_map(cl, seg, false);
  if (r < 0)
    goto out_free;
  struct stat st;
  if (fstat(seg->fd, &st) != 0) {
    r = -errno;
    goto out_unmap;
  }
  if ((uint64_t)st.st_size > seg_size(cl)) {
    fy_error("commitlog",
             "%s: size %lld, larger than mappedFileSizeCommitLog (%" PRIu64 "): the log was "
             "written with another mappedFileSizeCommitLog; set it back",
             seg->path, (long long)st.st_size, seg_size(cl));
    r = -FY_ECORRUPT;
    goto out_unmap;
  }
  *size = (uint64_t)st.st_size;
  seg->ready = true;
  segs_push(cl, seg);
  return 0;

out_unmap:
  munmap((void *)seg->map, seg->map_len);
  close(seg->fd);
out_free:
  free(seg);
  return r;
}

static int extend(fy_cl_segment *seg, uint64_t size, uint64_t want) {
  fy_warn("commitlog", "%s: extending short segment (%" PRIu64 " bytes)", seg->path, size);
  if (ftruncate(seg->fd, (off_t)want) != 0)
    return -errno;
  if (fallocate(seg->fd, 0, 0, (off_t)want) != 0 && errno != EOPNOTSUPP)
    return -errno;
  return 0;
}

/*
 * Only the tail of the log may be short: a crash can leave the segment being
 * created (or, on a file system that lost an unsynced size change, the one
 * being written) shorter than segment_size, but then no later segment holds
 * anything. Short ones are extended; a short segment followed by data means
 * files were damaged or mixed up, and opening fails.
 */
static int check_sizes(fy_commitlog *cl, const uint64_t *sizes) {
  size_t first_short = cl->nsegs;
  for (size_t i = 0; i < cl->nsegs && first_short == cl->nsegs; i++)
    if (sizes[i] < seg_size(cl))
      first_short = i;
  for (size_t i = first_short + 1; i < cl->nsegs; i++) {
    if (last_nonzero(cl->segs[i], 0, sizes[i]) != 0) {
      fy_error("commitlog",
               "%s: size %" PRIu64 ", expected mappedFileSizeCommitLog (%" PRIu64 ") as later "
               "segments hold data: the log was written with another mappedFileSizeCommitLog "
               "(set it back) or the file was cut",
               cl->segs[first_short]->path, sizes[first_short], seg_size(cl));
      return -FY_ECORRUPT;
    }
  }
  for (size_t i = first_short; i < cl->nsegs; i++) {
    int r = sizes[i] < seg_size(cl) ? extend(cl->segs[i], sizes[i], seg_size(cl)) : 0;
    if (r < 0)
      return r;
  }
  return 0;
}

static int open_segments(fy_commitlog *cl) {
  uint64_t *starts = NULL;
  size_t n = 0;
  int r = list_segments(cl->dir, &starts, &n);
  if (r < 0)
    return r;
  uint64_t *sizes = calloc(n ? n : 1, sizeof *sizes);
  if (!sizes)
    r = -ENOMEM;
  for (size_t i = 0; i < n && r == 0; i++) {
    if (starts[i] % seg_size(cl) != 0 || (i > 0 && starts[i] != starts[i - 1] + seg_size(cl))) {
      fy_error("commitlog", "%s: segment %020" PRIu64 " is misaligned or leaves a gap", cl->dir,
               starts[i]);
      r = -FY_ECORRUPT;
      break;
    }
    r = open_existing(cl, starts[i], &sizes[i]);
  }
  if (r == 0)
    r = check_sizes(cl, sizes);
  free(sizes);
  free(starts);
  return r;
}

/* Validates entries from `from` on; returns the offset of the first entry
 * that fails (or the end of the last segment after its blank). */
static uint64_t scan(fy_commitlog *cl, uint64_t from, uint64_t *records) {
  uint64_t pos = from, n = 0;
  for (;;) { /* bounded: pos grows by >= FY_BLANK_SIZE each round, within the segments */
    fy_cl_segment *seg = seg_at(cl, pos);
    if (!seg)
      break;
    uint64_t rel = pos - seg->start, left = seg_size(cl) - rel;
    enum fy_record_kind kind;
    int64_t size = fy_record_decode(seg->map + rel, left, pos, &kind, NULL);
    if (size < 0)
      break;
    if (kind == FY_REC_BLANK) {
      if ((uint64_t)size != left)
        break;
    } else if ((uint64_t)size + FY_BLANK_SIZE > left) {
      break;
    } else {
      n++;
    }
    pos += (uint64_t)size;
  }
  *records = n;
  return pos;
}

/* Start of the last segment that holds anything: a segment's first entry is
 * never zero once written, so preallocated ones are skipped. */
static uint64_t last_used_segment(const fy_commitlog *cl) {
  for (size_t i = cl->nsegs; i > 1; i--) { /* bounded by nsegs */
    static const uint8_t none[FY_BLANK_SIZE];
    if (memcmp(cl->segs[i - 1]->map, none, FY_BLANK_SIZE) != 0)
      return cl->segs[i - 1]->start;
  }
  return cl->segs[0]->start;
}

static int recover(fy_commitlog *cl, uint64_t check_from, struct fy_cl_recovery *rep) {
  uint64_t first = cl->segs[0]->start, last = last_used_segment(cl);
  uint64_t from = check_from < first ? first : check_from;
  if (from >= last + seg_size(cl))
    from = last; /* past everything written: the checkpoint is of no help */
  /* The whole segment holding check_from is validated: one segment of CRCs
   * at most, and damage just below the checkpoint is caught too. */
  from -= (from - first) % seg_size(cl);
  rep->scanned_from = from;
  rep->end = scan(cl, from, &rep->records_scanned);
  /* What survived kill -9 in the page cache is made durable before it counts as flushed. */
  for (size_t i = 0; i < cl->nsegs; i++) {
    fy_cl_segment *seg = cl->segs[i];
    if (seg->start + seg_size(cl) > from && seg->start < rep->end && fdatasync(seg->fd) != 0)
      return -errno;
  }
  int r = cut_at(cl, rep->end, &rep->dropped_bytes);
  if (r < 0)
    return r;
  if (rep->dropped_bytes)
    fy_warn("commitlog", "%s: log ends at %" PRIu64 "; zeroed %" PRIu64 " bytes of invalid tail",
            cl->dir, rep->end, rep->dropped_bytes);
  return 0;
}

static int check_config(const struct fy_commitlog_config *cfg) {
  if (!cfg->dir || !*cfg->dir)
    return -FY_ECONFIG;
  if (cfg->segment_size < 4096 || cfg->segment_size % 4096 || cfg->segment_size > SEGMENT_SIZE_MAX)
    return -FY_ECONFIG;
  if (cfg->write_buffer_size < FY_RECORD_FIXED_V4 + FY_BLANK_SIZE + 1)
    return -FY_ECONFIG; /* larger than a segment is fine: a buffer holds one segment's bytes */
  if (cfg->write_buffers < 2 || cfg->max_waiters < 1)
    return -FY_ECONFIG;
  if (!cfg->sync_flush && cfg->flush_interval_ms == 0)
    return -FY_ECONFIG;
  return 0;
}

static int alloc_buffers(fy_commitlog *cl) {
  size_t total = (size_t)cl->cfg.write_buffer_size * cl->cfg.write_buffers;
  void *mem;
  if (posix_memalign(&mem, 4096, total) != 0)
    return -ENOMEM;
  cl->buf_mem = mem;
  cl->bufs = calloc(cl->cfg.write_buffers, sizeof *cl->bufs);
  cl->waiters = calloc(cl->cfg.max_waiters, sizeof *cl->waiters);
  if (!cl->bufs || !cl->waiters)
    return -ENOMEM;
  for (uint32_t i = 0; i < cl->cfg.write_buffers; i++) {
    cl->bufs[i].data = cl->buf_mem + (size_t)i * cl->cfg.write_buffer_size;
    cl->bufs[i].off = cl->bufs[i].upto = cl->end;
  }
  return 0;
}

static void init_handles(fy_commitlog *cl) {
  struct cl_handles *h = cl->h;
  h->cl = cl;
  uv_prepare_init(cl->loop, &h->prepare);
  uv_timer_init(cl->loop, &h->timer);
  uv_idle_init(cl->loop, &h->fail_idle);
  h->prepare.data = cl;
  h->timer.data = cl;
  h->fail_idle.data = cl;
  uv_prepare_start(&h->prepare, on_prepare);
  uv_unref((uv_handle_t *)&h->prepare);
  /* Never keeps the loop alive by itself: under SYNC_FLUSH a waiter with a
   * deadline also has bytes to write or sync, which ref the prepare. */
  uv_unref((uv_handle_t *)&h->timer);
  if (!cl->cfg.sync_flush)
    uv_timer_start(&h->timer, on_flush_timer, cl->cfg.flush_interval_ms, cl->cfg.flush_interval_ms);
}

static void free_resources(fy_commitlog *cl) {
  for (size_t i = 0; i < cl->nsegs; i++) {
    cl->segs[i]->cl = NULL;
    seg_release(cl->segs[i]);
  }
  free(cl->segs);
  free(cl->bufs);
  free(cl->buf_mem);
  free(cl->waiters);
  if (cl->dirfd >= 0)
    close(cl->dirfd);
  free(cl->dir);
  free(cl);
}

int fy_commitlog_open(uv_loop_t *loop, fy_aio *aio, const struct fy_commitlog_config *cfg,
                      uint64_t check_from, fy_commitlog **out, struct fy_cl_recovery *report) {
  int r = check_config(cfg);
  if (r < 0)
    return r;
  fy_commitlog *cl = calloc(1, sizeof *cl);
  if (!cl)
    return -ENOMEM;
  cl->loop = loop;
  cl->aio = aio;
  cl->cfg = *cfg;
  cl->dirfd = -1;
  cl->dir = strdup(cfg->dir);
  cl->h = calloc(1, sizeof *cl->h);
  if (!cl->dir || !cl->h) {
    r = -ENOMEM;
    goto out_free;
  }
  cl->cfg.dir = cl->dir;
  r = fy_mkdir_p(cl->dir, NULL);
  if (r < 0)
    goto out_free;
  cl->dirfd = open(cl->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (cl->dirfd < 0) {
    r = -errno;
    goto out_free;
  }
  r = open_segments(cl);
  if (r < 0)
    goto out_free;
  struct fy_cl_recovery rep = {0};
  if (cl->nsegs == 0) {
    r = ensure_segment(cl, seg_size(cl), true); /* segments 0 and 1 */
    if (r == 0)
      r = fsync_dir(cl);
    cl->end_seg_end = seg_size(cl);
  } else {
    r = recover(cl, check_from, &rep);
  }
  if (r < 0)
    goto out_free;
  cl->min = cl->segs[0]->start;
  cl->flushed = cl->sync_goal = cl->written = cl->own_from = cl->end;
  rep.end = cl->end;
  rep.segments = (uint32_t)cl->nsegs;
  r = alloc_buffers(cl);
  if (r < 0)
    goto out_free;
  init_handles(cl);
  if (report)
    *report = rep;
  *out = cl;
  return 0;

out_free:
  free(cl->h);
  free_resources(cl);
  return r;
}

void fy_commitlog_close(fy_commitlog *cl, void (*done_cb)(void *arg), void *arg) {
  fy_assert(cl->state == CL_OPEN);
  cl->state = CL_DRAINING;
  cl->done_cb = done_cb;
  cl->done_arg = arg;
  cl->sync_goal = cl->end; /* the final fdatasync */
  uv_ref((uv_handle_t *)&cl->h->prepare);
}

void fy_commitlog_free(fy_commitlog *cl) {
  if (!cl)
    return;
  fy_assert(!cl->write_inflight && !cl->sync_inflight && !cl->prealloc_inflight &&
            !cl->drop_inflight && !cl->wb_inflight);
  fy_assert(cl->state == CL_OPEN || cl->state == CL_CLOSED);
  if (cl->state == CL_CLOSED) {
    free(cl->h);
  } else {
    cl->h->cl = NULL; /* the never-run case: on_handle_closed frees h */
    close_handles(cl->h);
  }
  free_resources(cl);
}
