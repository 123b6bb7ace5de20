/*
 * A batch of writes and fdatasyncs with one completion; see syncset.h.
 *
 * Why two phases: fy_aio gives no ordering between requests, and an
 * fdatasync covers only writes that completed before it was queued. So the
 * writes go first, and the fdatasyncs are queued from the last write's
 * completion.
 */
#include "store/syncset.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"

enum op_kind { OP_SYNC, OP_WRITE };

struct op {
  fy_aio_req req;
  int fd;
  enum op_kind kind;
  const uint8_t *buf;
  uint64_t len, off;
};

struct fy_syncset {
  fy_syncset **slot; /* NULL once orphaned */
  const char *what;
  void (*cb)(void *arg, int status);
  void *arg;
  fy_aio *aio;
  unsigned max, n, pending, writes_pending;
  bool started;
  int status;    /* first error */
  struct op ops[];
};

fy_syncset *fy_syncset_new(unsigned max, const char *what, void (*cb)(void *arg, int status),
                           void *arg, fy_syncset **slot) {
  fy_syncset *s = calloc(1, sizeof *s + max * sizeof s->ops[0]);
  if (!s)
    return NULL;
  s->slot = slot;
  s->what = what;
  s->cb = cb;
  s->arg = arg;
  s->max = max;
  return s;
}

static void set_free(fy_syncset *s) { free(s); }

static void finish(fy_syncset *s) {
  if (s->slot)
    *s->slot = NULL;
  void (*cb)(void *, int) = s->cb;
  void *arg = s->arg;
  int status = s->status;
  if (status)
    fy_error("store", "%s flush failed: %s", s->what, fy_strerror(status));
  set_free(s);
  cb(arg, status);
}

static void op_done(fy_syncset *s, struct op *op, int64_t res) {
  close(op->fd);
  op->fd = -1;
  if (res < 0 && s->status == 0)
    s->status = (int)res;
  fy_assert(s->pending > 0);
  s->pending--;
}

static void on_synced(fy_aio_req *req, int64_t res) {
  fy_syncset *s = req->data;
  op_done(s, (struct op *)((char *)req - offsetof(struct op, req)), res);
  if (s->pending == 0)
    finish(s);
}

/* Queues the fdatasyncs (or, after a failed write, drops them). */
static void issue_syncs(fy_syncset *s) {
  for (unsigned i = 0; i < s->n; i++) {
    struct op *op = &s->ops[i];
    if (op->kind != OP_SYNC)
      continue;
    int err = s->status ? s->status : fy_aio_fdatasync(s->aio, &op->req, op->fd, on_synced);
    if (err)
      op_done(s, op, err);
  }
}

static void on_written(fy_aio_req *req, int64_t res) {
  fy_syncset *s = req->data;
  op_done(s, (struct op *)((char *)req - offsetof(struct op, req)), res < 0 ? res : 0);
  fy_assert(s->writes_pending > 0);
  if (--s->writes_pending > 0)
    return;
  issue_syncs(s);
  if (s->pending == 0)
    finish(s); /* every sync was dropped or refused */
}

static int add_op(fy_syncset *s, fy_aio *aio, int fd, enum op_kind kind) {
  if (fd < 0)
    return -errno;
  fy_assert(s->n < s->max && !s->started);
  struct op *op = &s->ops[s->n++];
  *op = (struct op){.fd = fd, .kind = kind};
  op->req.data = s;
  s->aio = aio;
  s->pending++;
  return 0;
}

int fy_syncset_add(fy_syncset *s, fy_aio *aio, int fd) { return add_op(s, aio, fd, OP_SYNC); }

int fy_syncset_add_write(fy_syncset *s, fy_aio *aio, int fd, const void *buf, size_t len,
                         uint64_t off) {
  int err = add_op(s, aio, fcntl(fd, F_DUPFD_CLOEXEC, 0), OP_WRITE);
  if (err)
    return err;
  struct op *op = &s->ops[s->n - 1];
  op->buf = buf;
  op->len = len;
  op->off = off;
  s->writes_pending++;
  return 0;
}

unsigned fy_syncset_count(const fy_syncset *s) { return s->n; }

int fy_syncset_start(fy_syncset *s, int err) {
  if (s->n == 0) {
    set_free(s);
    return err ? err : -EINVAL;
  }
  s->status = err; /* a partial start reports the error through cb */
  s->started = true;
  if (s->slot)
    *s->slot = s;
  /* Everything below completes from aio callbacks, never inline: an op that
   * cannot be queued is recorded, and at least one request is in flight or
   * the set finishes through fail_later. */
  unsigned queued = 0;
  if (s->writes_pending) {
    for (unsigned i = 0; i < s->n; i++) {
      struct op *op = &s->ops[i];
      if (op->kind != OP_WRITE)
        continue;
      int e = s->status ? s->status
                        : fy_aio_write(s->aio, &op->req, op->fd, op->buf, (size_t)op->len, op->off,
                                       on_written);
      if (e) {
        op_done(s, op, e);
        s->writes_pending--;
      } else {
        queued++;
      }
    }
    if (queued)
      return 0;
  }
  issue_syncs(s);
  if (s->pending > 0)
    return 0;
  /* Nothing could be queued: report through the return value. */
  if (s->slot)
    *s->slot = NULL;
  int status = s->status;
  set_free(s);
  return status ? status : -EIO;
}

void fy_syncset_orphan(fy_syncset *s) { s->slot = NULL; }

int fy_syncset_open_dir(const char *path) { return open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC); }
