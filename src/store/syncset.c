/* A batch of fdatasyncs with one completion; see syncset.h. */
#include "store/syncset.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"

struct op {
  fy_aio_req req;
  int fd;
};

struct fy_syncset {
  fy_syncset **slot; /* NULL once orphaned */
  const char *what;
  void (*cb)(void *arg, int status);
  void *arg;
  unsigned max, n, pending;
  int status; /* first error */
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

static void on_synced(fy_aio_req *req, int64_t res) {
  fy_syncset *s = req->data;
  struct op *op = (struct op *)((char *)req - offsetof(struct op, req));
  close(op->fd);
  if (res < 0 && s->status == 0)
    s->status = (int)res;
  fy_assert(s->pending > 0);
  if (--s->pending > 0)
    return;
  if (s->slot)
    *s->slot = NULL;
  void (*cb)(void *, int) = s->cb;
  void *arg = s->arg;
  int status = s->status;
  if (status)
    fy_error("store", "%s fdatasync failed: %s", s->what, fy_strerror(status));
  free(s);
  cb(arg, status);
}

int fy_syncset_add(fy_syncset *s, fy_aio *aio, int fd) {
  if (fd < 0)
    return -errno;
  fy_assert(s->n < s->max);
  struct op *op = &s->ops[s->n];
  op->fd = fd;
  op->req.data = s;
  int err = fy_aio_fdatasync(aio, &op->req, fd, on_synced);
  if (err) {
    close(fd);
    return err;
  }
  s->n++;
  s->pending++;
  return 0;
}

unsigned fy_syncset_count(const fy_syncset *s) { return s->n; }

int fy_syncset_start(fy_syncset *s, int err) {
  if (s->n == 0) {
    free(s);
    return err ? err : -EINVAL;
  }
  s->status = err; /* a partial start reports the error through cb */
  if (s->slot)
    *s->slot = s;
  return 0;
}

void fy_syncset_orphan(fy_syncset *s) { s->slot = NULL; }

int fy_syncset_open_dir(const char *path) { return open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC); }
