/*
 * File-system calls off the loop thread; see fileops.h.
 *
 * Why: the loop serves every connection, and a metadata update that waits
 * for the disk (creating, sizing or deleting a file) would stall them all.
 * Each operation is one heap object, freed when its last callback has run,
 * so its owner may go away first (fy_fileop_orphan).
 */
#include "store/fileops.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"

#define PARENT_RMDIRS 2 /* the file's directory and its parent */

struct fy_fileop {
  uv_work_t work;
  uint64_t size;
  void (*cb)(void *arg, int fd, int err);
  void *arg;
  bool orphaned, remove;
  int fd, err;
  char path[];
};

static void create_work(uv_work_t *w) {
  fy_fileop *op = w->data;
  op->fd = open(op->path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (op->fd < 0) {
    op->err = -errno;
    return;
  }
  struct stat st;
  if (fstat(op->fd, &st) != 0 ||
      ((uint64_t)st.st_size != op->size && ftruncate(op->fd, (off_t)op->size) != 0)) {
    op->err = -errno;
    close(op->fd);
    op->fd = -1;
  }
}

/* Deletes the file and the directories that leaves empty (best effort). */
static void remove_work(uv_work_t *w) {
  fy_fileop *op = w->data;
  unlink(op->path);
  for (int i = 0; i < PARENT_RMDIRS; i++) {
    char *slash = strrchr(op->path, '/');
    if (!slash || slash == op->path)
      break;
    *slash = '\0';
    if (rmdir(op->path) != 0)
      break;
  }
}

static void remove_done(uv_work_t *w, int status) {
  (void)status;
  free(w->data);
}

static void create_done(uv_work_t *w, int status) {
  fy_fileop *op = w->data;
  if (status != 0 && op->err == 0) { /* cancelled */
    op->err = status;
    if (op->fd >= 0)
      close(op->fd);
    op->fd = -1;
  }
  if (!op->orphaned) {
    op->cb(op->arg, op->fd, op->err);
    free(op);
    return;
  }
  if (op->fd >= 0)
    close(op->fd);
  if (op->remove && op->err == 0 &&
      uv_queue_work(w->loop, &op->work, remove_work, remove_done) == 0)
    return;
  free(op);
}

fy_fileop *fy_file_create(uv_loop_t *loop, const char *path, uint64_t size,
                          void (*cb)(void *arg, int fd, int err), void *arg) {
  size_t n = strlen(path) + 1;
  fy_fileop *op = calloc(1, sizeof *op + n);
  if (!op)
    return NULL;
  memcpy(op->path, path, n);
  op->size = size;
  op->cb = cb;
  op->arg = arg;
  op->fd = -1;
  op->work.data = op;
  if (uv_queue_work(loop, &op->work, create_work, create_done) != 0) {
    free(op);
    return NULL;
  }
  return op;
}

void fy_fileop_orphan(fy_fileop *op, bool remove) {
  op->orphaned = true;
  op->remove = remove;
}

struct unlink_req {
  uv_fs_t req;
  const char *what;
};

static void unlink_done(uv_fs_t *req) {
  struct unlink_req *u = req->data;
  if (req->result < 0 && req->result != UV_ENOENT)
    fy_warn(u->what, "cannot delete %s: %s", req->path, fy_strerror((int)req->result));
  uv_fs_req_cleanup(req);
  free(u);
}

int fy_file_unlink(uv_loop_t *loop, const char *path, const char *what) {
  struct unlink_req *u = calloc(1, sizeof *u);
  if (!u)
    return -ENOMEM;
  u->what = what;
  u->req.data = u;
  int err = uv_fs_unlink(loop, &u->req, path, unlink_done);
  if (err) {
    free(u);
    return err;
  }
  return 0;
}
