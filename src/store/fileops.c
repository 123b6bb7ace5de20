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
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
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

/* ---- mappings populated on the thread pool ---- */

struct fy_mapping {
  uv_work_t work;
  void *addr;
  size_t len;
  size_t off, n;   /* the population in flight */
  unsigned refs;   /* the owner's, and one while a population is in flight */
  bool busy;
  int err;         /* of the last population */
};

/* MADV_POPULATE_WRITE is refused (EINVAL) by kernels before 5.14: stop asking. */
static bool populate_unsupported;

fy_mapping *fy_mapping_new(void *addr, size_t len) {
  fy_mapping *m = calloc(1, sizeof *m);
  if (!m)
    return NULL;
  m->addr = addr;
  m->len = len;
  m->refs = 1;
  m->work.data = m;
  return m;
}

static void mapping_put(fy_mapping *m) {
  if (--m->refs > 0)
    return;
  munmap(m->addr, m->len);
  free(m);
}

void fy_mapping_unmap(fy_mapping *m) {
  if (m)
    mapping_put(m);
}

static void populate_work(uv_work_t *w) {
  fy_mapping *m = w->data;
  m->err = madvise((uint8_t *)m->addr + m->off, m->n, MADV_POPULATE_WRITE) == 0 ? 0 : -errno;
}

static void populate_done(uv_work_t *w, int status) {
  fy_mapping *m = w->data;
  (void)status; /* cancelled: nothing was done */
  if (m->err == -EINVAL)
    populate_unsupported = true;
  m->busy = false;
  mapping_put(m);
}

bool fy_mapping_populate(uv_loop_t *loop, fy_mapping *m, size_t off, size_t n) {
  if (!m || m->busy || populate_unsupported || n == 0 || off >= m->len)
    return false;
  if (n > m->len - off)
    n = m->len - off;
  m->off = off;
  m->n = n;
  m->err = 0;
  if (uv_queue_work(loop, &m->work, populate_work, populate_done) != 0)
    return false;
  m->busy = true;
  m->refs++;
  return true;
}

int fy_mkdir_p(const char *path, bool *created) {
  char buf[PATH_MAX];
  size_t n = strlen(path);
  if (n == 0 || n >= sizeof buf)
    return -ENAMETOOLONG;
  memcpy(buf, path, n + 1);
  for (size_t i = 1; i <= n; i++) {
    if (buf[i] != '/' && buf[i] != '\0')
      continue;
    char c = buf[i];
    buf[i] = '\0';
    if (mkdir(buf, 0755) == 0) {
      if (created)
        *created = true;
    } else if (errno != EEXIST) {
      return -errno;
    }
    buf[i] = c;
  }
  return 0;
}
