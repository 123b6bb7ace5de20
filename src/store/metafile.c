/*
 * Atomic small-file replacement; the state diagram and the durability
 * contract are in metafile.h.
 *
 * Why a state machine instead of a helper thread doing write+fsync+rename:
 * the loop never blocks, every step's error is seen by the code that can
 * report it, and the "one save in flight, newest pending data wins" rule
 * bounds both the disk traffic and the memory a burst of changes can pin
 * (two buffers per metafile).
 */
#include "store/metafile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"

enum mf_state {
  MF_IDLE,      /* nothing in flight; no pending data */
  MF_OPEN_TMP,  /* uv_fs_open(<path>.tmp, O_CREAT | O_TRUNC) */
  MF_WRITE,     /* fy_aio_write of the whole buffer at offset 0 */
  MF_SYNC_TMP,  /* fy_aio_fdatasync of the temporary file */
  MF_CLOSE_TMP, /* uv_fs_close of the temporary file; also after a failed write or sync */
  MF_RENAME,    /* uv_fs_rename(<path>.tmp, <path>) */
  MF_OPEN_DIR,  /* uv_fs_open of the containing directory */
  MF_SYNC_DIR,  /* fy_aio_fdatasync of the directory: makes the rename durable */
  MF_CLOSE_DIR, /* uv_fs_close of the directory; also after a failed sync */
  MF_STATE_COUNT
};

#define BIT(s) (1u << (s))
/* allowed[s]: the states s may move to. IDLE is reached on completion or error. */
static const unsigned allowed[MF_STATE_COUNT] = {
    [MF_IDLE] = BIT(MF_OPEN_TMP),
    [MF_OPEN_TMP] = BIT(MF_WRITE) | BIT(MF_SYNC_TMP) | BIT(MF_IDLE),
    [MF_WRITE] = BIT(MF_SYNC_TMP) | BIT(MF_CLOSE_TMP),
    [MF_SYNC_TMP] = BIT(MF_CLOSE_TMP),
    [MF_CLOSE_TMP] = BIT(MF_RENAME) | BIT(MF_IDLE),
    [MF_RENAME] = BIT(MF_OPEN_DIR) | BIT(MF_IDLE),
    [MF_OPEN_DIR] = BIT(MF_SYNC_DIR) | BIT(MF_IDLE),
    [MF_SYNC_DIR] = BIT(MF_CLOSE_DIR),
    [MF_CLOSE_DIR] = BIT(MF_IDLE),
};

struct waiter {
  fy_metafile_cb cb;
  void *arg;
  int status; /* set when the waiter is detached from its cycle */
  struct waiter *next;
};

/* One save's data and the callbacks riding on it. */
struct batch {
  char *data;
  size_t len;
  struct waiter *head;
  struct waiter *last;
  unsigned n;
};

struct fy_metafile {
  uv_loop_t *loop;
  fy_aio *aio;
  char *path;
  char *tmp_path;
  char *dir_path;
  enum mf_state state;
  struct batch cur;  /* being written (state != IDLE) */
  struct batch next; /* newest data waiting for cur to finish */
  bool has_next;
  int status;  /* first error of the current cycle, or 0 */
  uv_file fd;  /* temporary file or directory, -1 when none is open */
  unsigned waiters; /* cur.n + next.n */
  uint64_t writes;
  bool closing;
  bool in_hook;
  fy_metafile_cb on_cycle; /* owner's hook; NULL once closing */
  void *on_cycle_arg;
  uv_fs_t fs;
  fy_aio_req req;
};

static void set_state(fy_metafile *mf, enum mf_state s) {
  fy_assert(allowed[mf->state] & BIT(s));
  mf->state = s;
}

/* ---- batches and waiters ------------------------------------------------ */

static void batch_add(struct batch *b, struct waiter *w) {
  if (!w)
    return;
  w->next = NULL;
  if (b->last)
    b->last->next = w;
  else
    b->head = w;
  b->last = w;
  b->n++;
}

/* Moves src's waiters behind dst's; src is left without waiters. */
static void batch_take_waiters(struct batch *dst, struct batch *src) {
  if (!src->head)
    return;
  if (dst->last)
    dst->last->next = src->head;
  else
    dst->head = src->head;
  dst->last = src->last;
  dst->n += src->n;
  src->head = src->last = NULL;
  src->n = 0;
}

/* Runs detached callbacks. The metafile may be gone by now: only the list is used. */
static void run_waiters(struct waiter *w) {
  while (w) { /* bounded: at most FY_METAFILE_WAITERS_MAX nodes */
    struct waiter *next = w->next;
    w->cb(w->arg, w->status);
    free(w);
    w = next;
  }
}

/* ---- the cycle ---------------------------------------------------------- */

static void on_fs(uv_fs_t *fs);
static void on_aio(fy_aio_req *req, int64_t res);

/* Starts the request for the current state. A negative return means it was
 * not started (no callback will come). */
static int submit(fy_metafile *mf) {
  int r;
  switch (mf->state) {
  case MF_OPEN_TMP:
    return uv_fs_open(mf->loop, &mf->fs, mf->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                      0644, on_fs);
  case MF_WRITE:
    return fy_aio_write(mf->aio, &mf->req, mf->fd, mf->cur.data, mf->cur.len, 0, on_aio);
  case MF_SYNC_TMP:
    return fy_aio_fdatasync(mf->aio, &mf->req, mf->fd, on_aio);
  case MF_CLOSE_TMP:
  case MF_CLOSE_DIR:
    r = uv_fs_close(mf->loop, &mf->fs, mf->fd, on_fs);
    if (r < 0)
      close(mf->fd); /* could not queue it: do not leak the descriptor */
    return r;
  case MF_RENAME:
    return uv_fs_rename(mf->loop, &mf->fs, mf->tmp_path, mf->path, on_fs);
  case MF_OPEN_DIR:
    return uv_fs_open(mf->loop, &mf->fs, mf->dir_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0,
                      on_fs);
  case MF_SYNC_DIR:
    return fy_aio_fdatasync(mf->aio, &mf->req, mf->fd, on_aio);
  case MF_IDLE:
  case MF_STATE_COUNT:
    break;
  }
  fy_assert(!"submit in a state without a request");
  return -EINVAL;
}

static void fail(fy_metafile *mf, int64_t res) {
  fy_assert(res < 0);
  if (mf->status == 0)
    mf->status = (int)res;
}

/* Given the result of the current state's request, the state that follows. */
static enum mf_state next_state(fy_metafile *mf, int64_t res) {
  switch (mf->state) {
  case MF_OPEN_TMP:
    if (res < 0) {
      fail(mf, res);
      return MF_IDLE;
    }
    mf->fd = (uv_file)res;
    return mf->cur.len > 0 ? MF_WRITE : MF_SYNC_TMP;
  case MF_WRITE:
    if (res < 0) {
      fail(mf, res);
      return MF_CLOSE_TMP;
    }
    fy_assert((uint64_t)res == mf->cur.len); /* aio completes writes in full or fails */
    return MF_SYNC_TMP;
  case MF_SYNC_TMP:
    if (res < 0)
      fail(mf, res);
    return MF_CLOSE_TMP;
  case MF_CLOSE_TMP:
    mf->fd = -1;
    if (res < 0)
      fail(mf, res);
    return mf->status < 0 ? MF_IDLE : MF_RENAME;
  case MF_RENAME:
    if (res < 0) {
      fail(mf, res);
      return MF_IDLE;
    }
    return MF_OPEN_DIR;
  case MF_OPEN_DIR:
    if (res < 0) {
      fail(mf, res);
      return MF_IDLE;
    }
    mf->fd = (uv_file)res;
    return MF_SYNC_DIR;
  case MF_SYNC_DIR:
    if (res < 0)
      fail(mf, res);
    return MF_CLOSE_DIR;
  case MF_CLOSE_DIR:
    mf->fd = -1;
    if (res < 0)
      fail(mf, res);
    return MF_IDLE;
  case MF_IDLE:
  case MF_STATE_COUNT:
    break;
  }
  fy_assert(!"result in a state without a request");
  return MF_IDLE;
}

static void finish_cycle(fy_metafile *mf);

/* Feeds a request's result to the machine and starts the next request. A
 * request that cannot even be started counts as that request failing. */
static void advance(fy_metafile *mf, int64_t res) {
  for (unsigned i = 0; i < MF_STATE_COUNT; i++) { /* every pass moves one state forward */
    enum mf_state s = next_state(mf, res);
    set_state(mf, s);
    if (s == MF_IDLE) {
      finish_cycle(mf);
      return;
    }
    int r = submit(mf);
    if (r == 0)
      return;
    res = r;
  }
  fy_assert(!"metafile cycle did not terminate");
}

static void on_fs(uv_fs_t *fs) {
  fy_metafile *mf = fs->data;
  int64_t res = fs->result;
  uv_fs_req_cleanup(fs);
  advance(mf, res);
}

static void on_aio(fy_aio_req *req, int64_t res) { advance(req->data, res); }

/* Makes the pending batch current and starts writing it. On a negative
 * return nothing was started and the state is back to IDLE. */
static int start_cycle(fy_metafile *mf) {
  fy_assert(mf->state == MF_IDLE);
  fy_assert(mf->has_next);
  mf->cur = mf->next;
  memset(&mf->next, 0, sizeof mf->next);
  mf->has_next = false;
  mf->status = 0;
  mf->fd = -1;
  mf->writes++;
  set_state(mf, MF_OPEN_TMP);
  int r = submit(mf);
  if (r < 0)
    set_state(mf, MF_IDLE);
  return r;
}

/* Hands cur's waiters the cycle's status (appending them at *tail) and frees its data. */
static void detach_cur(fy_metafile *mf, struct waiter ***tail) {
  for (struct waiter *w = mf->cur.head; w; w = w->next) /* bounded by cur.n */
    w->status = mf->status;
  **tail = mf->cur.head;
  if (mf->cur.last)
    *tail = &mf->cur.last->next;
  fy_assert(mf->waiters >= mf->cur.n);
  mf->waiters -= mf->cur.n;
  free(mf->cur.data);
  memset(&mf->cur, 0, sizeof mf->cur);
}

static void mf_free(fy_metafile *mf) {
  fy_assert(mf->state == MF_IDLE);
  fy_assert(!mf->has_next);
  fy_assert(mf->waiters == 0);
  free(mf->path);
  free(mf->tmp_path);
  free(mf->dir_path);
  free(mf);
}

/* The current cycle is over (state IDLE). Starts the pending one, if any,
 * tells the owner's hook, then runs the finished waiters without touching mf
 * again (a callback may close the metafile or its owner). */
static void finish_cycle(fy_metafile *mf) {
  struct waiter *done = NULL;
  struct waiter **tail = &done;
  int statuses[2];
  unsigned cycles = 0;
  for (unsigned pass = 0; pass < 2; pass++) { /* the finished cycle, then a pending one that failed to start */
    statuses[cycles++] = mf->status;
    detach_cur(mf, &tail);
    if (!mf->has_next)
      break;
    int r = start_cycle(mf);
    if (r == 0)
      break;
    mf->status = r;
  }
  if (mf->state == MF_IDLE && mf->closing) {
    mf_free(mf);
  } else if (mf->on_cycle) {
    mf->in_hook = true;
    for (unsigned i = 0; i < cycles; i++)
      mf->on_cycle(mf->on_cycle_arg, statuses[i]);
    mf->in_hook = false;
  }
  run_waiters(done);
}

/* ---- public ------------------------------------------------------------- */

static char *dir_of(const char *path) {
  const char *slash = strrchr(path, '/');
  if (!slash)
    return strdup(".");
  if (slash == path)
    return strdup("/");
  return strndup(path, (size_t)(slash - path));
}

int fy_metafile_new(uv_loop_t *loop, fy_aio *aio, const char *path, fy_metafile_cb on_cycle,
                    void *arg, fy_metafile **out) {
  if (!loop || !aio || !path || !*path)
    return -EINVAL;
  fy_metafile *mf = calloc(1, sizeof *mf);
  if (!mf)
    return -ENOMEM;
  size_t n = strlen(path);
  mf->path = strdup(path);
  mf->tmp_path = malloc(n + sizeof ".tmp");
  mf->dir_path = dir_of(path);
  if (!mf->path || !mf->tmp_path || !mf->dir_path) {
    free(mf->path);
    free(mf->tmp_path);
    free(mf->dir_path);
    free(mf);
    return -ENOMEM;
  }
  memcpy(mf->tmp_path, path, n);
  memcpy(mf->tmp_path + n, ".tmp", sizeof ".tmp");
  mf->loop = loop;
  mf->aio = aio;
  mf->state = MF_IDLE;
  mf->fd = -1;
  mf->fs.data = mf;
  mf->req.data = mf;
  mf->on_cycle = on_cycle;
  mf->on_cycle_arg = arg;
  *out = mf;
  return 0;
}

int fy_metafile_save(fy_metafile *mf, void *data, size_t len, fy_metafile_cb cb, void *arg) {
  fy_assert(!mf->closing);
  fy_assert(data || len == 0);
  struct waiter *w = NULL;
  if (cb) {
    if (mf->waiters >= FY_METAFILE_WAITERS_MAX) {
      free(data);
      return -FY_EBUSY;
    }
    w = malloc(sizeof *w);
    if (!w) {
      free(data);
      return -ENOMEM;
    }
    w->cb = cb;
    w->arg = arg;
    w->status = 0;
    mf->waiters++;
  }
  /* Coalesce: the newest data replaces pending data; the callbacks stay. */
  struct batch b = {.data = data, .len = len};
  if (mf->has_next) {
    free(mf->next.data);
    batch_take_waiters(&b, &mf->next);
  }
  batch_add(&b, w);
  mf->next = b;
  mf->has_next = true;
  if (mf->state != MF_IDLE)
    return 0;
  int r = start_cycle(mf);
  if (r < 0) {
    /* Idle before the call, so cur holds only this call's data and waiter. */
    fy_assert(mf->cur.n == (w ? 1u : 0u));
    mf->waiters -= mf->cur.n;
    free(mf->cur.data);
    free(w);
    memset(&mf->cur, 0, sizeof mf->cur);
  }
  return r;
}

bool fy_metafile_busy(const fy_metafile *mf) { return mf->state != MF_IDLE || mf->has_next; }

uint64_t fy_metafile_writes(const fy_metafile *mf) { return mf->writes; }

const char *fy_metafile_path(const fy_metafile *mf) { return mf->path; }

void fy_metafile_close(fy_metafile *mf) {
  if (!mf)
    return;
  fy_assert(!mf->closing);
  fy_assert(!mf->in_hook);
  mf->on_cycle = NULL;
  if (mf->state == MF_IDLE) {
    mf_free(mf);
    return;
  }
  mf->closing = true; /* finish_cycle frees it after the last cycle */
}

/* ---- start-up load ------------------------------------------------------ */

static int read_all(int fd, char *buf, size_t len) {
  size_t done = 0;
  for (unsigned tries = 0; done < len && tries < 1000; tries++) { /* bounded: EINTR storms */
    ssize_t n = read(fd, buf + done, len - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -errno;
    if (n == 0)
      return -EIO; /* shrank under us */
    done += (size_t)n;
  }
  return done == len ? 0 : -EIO;
}

int fy_metafile_load(const char *path, char **buf, size_t *len) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  struct stat st;
  int r = 0;
  char *b = NULL;
  if (fstat(fd, &st) < 0) {
    r = -errno;
    goto out_close_fd;
  }
  if (!S_ISREG(st.st_mode)) {
    r = -EINVAL;
    goto out_close_fd;
  }
  if ((uint64_t)st.st_size > FY_METAFILE_LOAD_MAX) {
    r = -EFBIG;
    goto out_close_fd;
  }
  size_t n = (size_t)st.st_size;
  b = malloc(n + 1);
  if (!b) {
    r = -ENOMEM;
    goto out_close_fd;
  }
  r = read_all(fd, b, n);
  if (r < 0) {
    free(b);
    goto out_close_fd;
  }
  b[n] = '\0';
  *buf = b;
  *len = n;
out_close_fd:
  close(fd);
  return r;
}
