/*
 * Consume queues; the format is drawn in consumequeue.h.
 *
 * Why: a consumer asks for "the next N messages of queue Q from offset X",
 * which the commit log cannot answer without a scan. A consume queue answers
 * with an array lookup. Everything here can be rebuilt from the commit log,
 * so recovery only cuts (fy_cq_truncate_phys) and re-dispatches.
 *
 * Mappings: files are mapped lazily through a small per-queue cache. At most
 * CQ_MAPPED_MAX clean files stay mapped (least recently used is unmapped
 * first); a file written since the last flush stays mapped until that flush
 * is queued. A mapped file keeps its fd (fdatasync needs one); an unmapped
 * file holds no fd. So a queue with thousands of files holds a handful of
 * mappings and descriptors. Reads through a const fy_cq may map and unmap
 * files: the cache is the only state they touch (loop thread only).
 *
 * Trust: names are taken only if they are 20 digits and a multiple of the
 * file size; a file of the wrong size is resized (entries beyond the size
 * cannot be addressed; a short file reads as unwritten entries). An entry
 * with size 0 is unwritten, whatever its other bytes hold. Entries are
 * assumed to increase in phys with the queue offset (dispatch order); if
 * they do not, truncation and retention still terminate and never crash.
 *
 * Flush: the dirty files' fds are dup()ed and fdatasynced through fy_aio, so
 * a file may be unmapped, deleted, or the queue closed while the flush is in
 * flight; the dup is closed when its request completes.
 *
 * Zap: the puts drop our page-table entries of the pages they have moved
 * past, CQ_ZAP_STEP at a time, so writeback finds no writable mapping to
 * write-protect page by page. Not at the flush: zapping what eight queues
 * had left since the last step cost the loop 0.7 ms every second on the
 * benchmark VM, where page-table changes are slow; writeback write-protects
 * those few pages on the flush's worker instead. The step is more than 33
 * pages: up to that many the kernel flushes the TLB page by page, which on
 * that VM made a 64 KiB zap take 280 us and a 256 KiB one 18-40 us. With
 * each zap the thread pool faults in the step after the page being written
 * (populate_ahead), and a file made ahead is populated up to its first zap,
 * so the puts rarely fault (fileops.h, fy_mapping_populate).
 *
 * The zaps happen at boundaries every CQ_ZAP_STEP bytes, shifted by a
 * phase that depends on the queue id. The queues of a topic fill at the
 * same pace (producers pick them round-robin), and with boundaries in the
 * same place all eight reached theirs in the same dispatch: eight zaps and
 * eight populations, which on a broker with one CPU preempted the loop for
 * about 2 ms every 311 ms at 337k msgs/s (bench/e2e_notes.md, eleventh
 * session). Shifted, they come one at a time, 39 ms apart.
 *
 * Files made ahead (fy_cq_use_loop): halfway through a file the next one is
 * created on the thread pool (fileops.h), so a put never waits for the disk
 * to create a file; if it is not there in time, put creates it itself.
 */
#include "store/consumequeue.h"
#include "store/fileops.h"
#include "store/syncset.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"
#include "common/record.h"

#define MOD "cq"
#define CQ_MAPPED_MAX 4u          /* clean mappings kept per queue */
#define CQ_NAME_LEN 20u           /* digits in a file name */
#define CQ_PARENT_SYNCS 3u        /* <topic>, consumequeue, root: synced after mkdir */
#define CQ_DIR_ENTRIES_MAX 1000000u /* bound on names read from one directory */
#define CQ_PAGE 4096u
#define CQ_ZAP_STEP (256u * 1024u) /* puts zap the pages behind them this much at a time */
#define CQ_ZAP_MIN (136u * 1024u)  /* 34 pages: a smaller zap flushes the TLB page by page */
#define CQ_ZAP_PHASES 8u           /* queue ids spread over this many boundary phases */

_Static_assert(FY_CQ_ENTRY_SIZE == 20, "consume-queue entry is 20 bytes on disk");
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "entries are stored little-endian");

struct cq_file {
  uint64_t start;    /* queue offset of the file's first entry */
  int fd;            /* open iff mapped */
  uint8_t *map;      /* NULL when not mapped */
  fy_mapping *mref;  /* map's owner reference (NULL: munmap it directly) */
  uint64_t last_use; /* cache clock value at the last access */
  bool dirty;        /* stored into since its last flush was queued */
  bool random;       /* its mapping has MADV_RANDOM (see advise_for_writes) */
  uint32_t put_lo, put_hi; /* entries put and not yet zapped, if put_lo < put_hi */
};

struct fy_cq {
  char *dir; /* <root>/consumequeue/<topic>/<queueId> */
  char *topic;
  uint32_t queue_id;
  uint32_t zap_phase; /* bytes: zap boundaries lie at zap_phase + k * CQ_ZAP_STEP */
  uint32_t per_file;
  size_t file_bytes;
  struct cq_file *files; /* sorted by start; gaps allowed */
  size_t nfiles;
  size_t cap;
  size_t nmapped;
  uint64_t zaps; /* zap_behind's madvise calls (for tests) */
  uint64_t clock;
  uint64_t min;
  uint64_t max;
  uint64_t max_phys;
  bool dir_dirty;     /* a file was created since the last flush */
  bool parents_dirty; /* the directory itself was created and not yet synced */
  fy_syncset *flush; /* the flush in flight */
  uv_loop_t *loop;   /* fy_cq_use_loop: files made ahead, deleted off the loop */
  fy_fileop *ahead;  /* the next file being created */
  uint64_t ahead_start;
};

size_t fy__cq_mapped_count(const fy_cq *cq);
uint64_t fy__cq_zap_count(const fy_cq *cq);

/* ---- entries ---- */

static inline uint32_t entry_size_at(const uint8_t *p) {
  uint32_t v;
  memcpy(&v, p + 8, 4);
  return v;
}

static inline bool entry_written(const uint8_t *p) { return entry_size_at(p) != 0; }

static void entry_load(const uint8_t *p, struct fy_cq_entry *e) {
  memcpy(&e->phys, p, 8);
  memcpy(&e->size, p + 8, 4);
  memcpy(&e->tag_hash, p + 12, 8);
}

static void entry_store(uint8_t *p, const struct fy_cq_entry *e) {
  memcpy(p, &e->phys, 8);
  memcpy(p + 12, &e->tag_hash, 8);
  memcpy(p + 8, &e->size, 4); /* the size marks the entry written: store it last */
}

static bool entry_equal(const struct fy_cq_entry *a, const struct fy_cq_entry *b) {
  return a->phys == b->phys && a->size == b->size && a->tag_hash == b->tag_hash;
}

/* phys + size > bound, without overflow (both come from disk). */
static bool entry_ends_after(const struct fy_cq_entry *e, uint64_t bound) {
  return e->phys > bound || e->size > bound - e->phys;
}

/* Offset of the last nonzero byte in p[0, end), or SIZE_MAX. p is page aligned. */
static size_t last_nonzero_byte(const uint8_t *p, size_t end) {
  while (end > 0 && end % 8 != 0) {
    if (p[end - 1])
      return end - 1;
    end--;
  }
  while (end >= 8) {
    uint64_t w;
    memcpy(&w, p + end - 8, 8);
    if (w)
      break;
    end -= 8;
  }
  while (end > 0) {
    if (p[end - 1])
      return end - 1;
    end--;
  }
  return SIZE_MAX;
}

/* Offset of the first nonzero byte in p[from, end), or SIZE_MAX. */
static size_t first_nonzero_byte(const uint8_t *p, size_t from, size_t end) {
  while (from < end && from % 8 != 0) {
    if (p[from])
      return from;
    from++;
  }
  while (from + 8 <= end) {
    uint64_t w;
    memcpy(&w, p + from, 8);
    if (w)
      break;
    from += 8;
  }
  for (; from < end; from++)
    if (p[from])
      return from;
  return SIZE_MAX;
}

/* Index of the last written entry among map's first `limit`, or -1. Scans
 * backwards by words so a sparse file costs one pass over its zero pages. */
static int64_t last_written_in(const uint8_t *map, uint64_t limit) {
  size_t end = (size_t)limit * FY_CQ_ENTRY_SIZE;
  while (end > 0) { /* end strictly decreases */
    size_t p = last_nonzero_byte(map, end);
    if (p == SIZE_MAX)
      return -1;
    size_t e = p / FY_CQ_ENTRY_SIZE;
    if (entry_written(map + e * FY_CQ_ENTRY_SIZE))
      return (int64_t)e;
    end = e * FY_CQ_ENTRY_SIZE;
  }
  return -1;
}

/* Index of the first written entry in [from, limit), or -1. */
static int64_t first_written_in(const uint8_t *map, uint64_t from, uint64_t limit) {
  size_t end = (size_t)limit * FY_CQ_ENTRY_SIZE;
  size_t pos = (size_t)from * FY_CQ_ENTRY_SIZE;
  while (pos < end) { /* pos strictly increases */
    size_t p = first_nonzero_byte(map, pos, end);
    if (p == SIZE_MAX)
      return -1;
    size_t e = p / FY_CQ_ENTRY_SIZE;
    if (entry_written(map + e * FY_CQ_ENTRY_SIZE))
      return (int64_t)e;
    pos = (e + 1) * FY_CQ_ENTRY_SIZE;
  }
  return -1;
}

/* ---- paths and directories ---- */

static bool topic_ok(const char *t) {
  size_t n = strnlen(t, FY_TOPIC_MAX + 1);
  if (n == 0 || n > FY_TOPIC_MAX || strchr(t, '/'))
    return false;
  return strcmp(t, ".") != 0 && strcmp(t, "..") != 0;
}

static void file_path(const fy_cq *cq, uint64_t start, char *buf, size_t cap) {
  snprintf(buf, cap, "%s/%020" PRIu64, cq->dir, start * FY_CQ_ENTRY_SIZE);
}

/* Parses a 20-digit name into a byte offset. */
static bool parse_name(const char *name, uint64_t *off) {
  if (strlen(name) != CQ_NAME_LEN)
    return false;
  uint64_t v = 0;
  for (size_t i = 0; i < CQ_NAME_LEN; i++) {
    if (name[i] < '0' || name[i] > '9')
      return false;
    unsigned d = (unsigned)(name[i] - '0');
    if (v > (UINT64_MAX - d) / 10)
      return false;
    v = v * 10 + d;
  }
  *off = v;
  return true;
}

/* Highest queue offset a file may start at: byte offsets must fit in u64. */
static uint64_t start_limit(const fy_cq *cq) {
  return UINT64_MAX / FY_CQ_ENTRY_SIZE - cq->per_file;
}

/* ---- the file list and the mapping cache ---- */

static struct cq_file *file_find(const fy_cq *cq, uint64_t qoff) {
  uint64_t start = qoff - qoff % cq->per_file;
  size_t lo = 0, hi = cq->nfiles;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (cq->files[mid].start < start)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (lo < cq->nfiles && cq->files[lo].start == start)
    return &cq->files[lo];
  return NULL;
}

static int files_reserve(fy_cq *cq) {
  if (cq->nfiles < cq->cap)
    return 0;
  size_t cap = cq->cap ? cq->cap * 2 : 8;
  struct cq_file *f = realloc(cq->files, cap * sizeof *f);
  if (!f)
    return -ENOMEM;
  cq->files = f;
  cq->cap = cap;
  return 0;
}

/* Adds a file at the end; the caller sorts (open). */
static int files_append(fy_cq *cq, uint64_t start) {
  int err = files_reserve(cq);
  if (err)
    return err;
  cq->files[cq->nfiles++] = (struct cq_file){.start = start, .fd = -1};
  return 0;
}

static int file_cmp(const void *a, const void *b) {
  uint64_t x = ((const struct cq_file *)a)->start, y = ((const struct cq_file *)b)->start;
  return x < y ? -1 : x > y;
}

/* Adds a file in sorted position. */
static int files_insert(fy_cq *cq, uint64_t start, struct cq_file **out) {
  int err = files_reserve(cq);
  if (err)
    return err;
  size_t i = cq->nfiles;
  while (i > 0 && cq->files[i - 1].start > start)
    i--;
  memmove(&cq->files[i + 1], &cq->files[i], (cq->nfiles - i) * sizeof cq->files[0]);
  cq->files[i] = (struct cq_file){.start = start, .fd = -1};
  cq->nfiles++;
  *out = &cq->files[i];
  return 0;
}

static void file_unmap(fy_cq *cq, struct cq_file *f) {
  if (!f->map)
    return;
  if (f->mref)
    fy_mapping_unmap(f->mref); /* after a population in flight */
  else
    munmap(f->map, cq->file_bytes);
  close(f->fd);
  f->map = NULL;
  f->mref = NULL;
  f->random = false;
  f->put_lo = f->put_hi = 0;
  f->fd = -1;
  fy_assert(cq->nmapped > 0);
  cq->nmapped--;
}

/* Unmaps least recently used clean files until one more mapping fits. Dirty
 * files are pinned, so the bound can be exceeded by the files awaiting flush. */
static void cache_make_room(fy_cq *cq) {
  for (size_t round = 0; round < cq->nfiles && cq->nmapped >= CQ_MAPPED_MAX; round++) {
    struct cq_file *victim = NULL;
    for (size_t i = 0; i < cq->nfiles; i++) {
      struct cq_file *f = &cq->files[i];
      if (f->map && !f->dirty && (!victim || f->last_use < victim->last_use))
        victim = f;
    }
    if (!victim)
      return;
    file_unmap(cq, victim);
  }
}

static int open_sized(const fy_cq *cq, uint64_t start, int flags, int *fd_out) {
  char path[4200];
  file_path(cq, start, path, sizeof path);
  int fd = open(path, O_RDWR | O_CLOEXEC | flags, 0644);
  if (fd < 0)
    return -errno;
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int err = -errno;
    close(fd);
    return err;
  }
  if ((uint64_t)st.st_size != cq->file_bytes) {
    if (st.st_size != 0)
      fy_warn(MOD, "%s is %lld bytes, expected %zu: resized", path, (long long)st.st_size,
              cq->file_bytes);
    if (ftruncate(fd, (off_t)cq->file_bytes) != 0) {
      int err = -errno;
      close(fd);
      return err;
    }
  }
  *fd_out = fd;
  return 0;
}

static int file_map(fy_cq *cq, struct cq_file *f) {
  f->last_use = ++cq->clock;
  if (f->map)
    return 0;
  cache_make_room(cq);
  int fd;
  int err = open_sized(cq, f->start, 0, &fd);
  if (err)
    return err;
  void *m = mmap(NULL, cq->file_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (m == MAP_FAILED) {
    err = -errno;
    close(fd);
    return err;
  }
  f->fd = fd;
  f->map = m;
  f->mref = fy_mapping_new(m, cq->file_bytes);
  cq->nmapped++;
  return 0;
}

/* Reads go through a const queue; the mapping cache is the only state they
 * change. The queue object itself is never const (fy_cq_open allocates it). */
static fy_cq *cache_of(const fy_cq *cq) { return (fy_cq *)(uintptr_t)cq; }

/* Pointer to entry qoff, mapping its file. NULL with *err set when the file
 * does not exist (-FY_ENOT_FOUND) or cannot be mapped. */
static const uint8_t *entry_at(const fy_cq *ccq, uint64_t qoff, int *err) {
  fy_cq *cq = cache_of(ccq);
  struct cq_file *f = file_find(cq, qoff);
  if (!f) {
    *err = -FY_ENOT_FOUND;
    return NULL;
  }
  *err = file_map(cq, f);
  if (*err)
    return NULL;
  return f->map + (qoff - f->start) * FY_CQ_ENTRY_SIZE;
}

/* later: unlink on the thread pool (retention: a file below the queue's min
 * is never made again, so the unlink cannot hit a new file of that name). */
static int file_delete(fy_cq *cq, size_t idx, bool later) {
  struct cq_file *f = &cq->files[idx];
  char path[4200];
  file_path(cq, f->start, path, sizeof path);
  if (later && cq->loop && fy_file_unlink(cq->loop, path, MOD) == 0) {
    /* queued */
  } else if (unlink(path) != 0 && errno != ENOENT) {
    int err = -errno;
    fy_warn(MOD, "cannot delete %s: %s", path, fy_strerror(err));
    return err;
  }
  file_unmap(cq, f);
  memmove(&cq->files[idx], &cq->files[idx + 1], (cq->nfiles - idx - 1) * sizeof cq->files[0]);
  cq->nfiles--;
  return 0;
}

/* ---- min and max ---- */

/* The last written entry of the queue, searching files from the newest. */
static bool find_last(fy_cq *cq, uint64_t *qoff, struct fy_cq_entry *e) {
  for (size_t i = cq->nfiles; i > 0; i--) {
    struct cq_file *f = &cq->files[i - 1];
    int err = file_map(cq, f);
    if (err) {
      fy_warn(MOD, "%s: cannot map file %" PRIu64 ": %s", cq->dir, f->start, fy_strerror(err));
      continue;
    }
    int64_t k = last_written_in(f->map, cq->per_file);
    if (k >= 0) {
      *qoff = f->start + (uint64_t)k;
      entry_load(f->map + (uint64_t)k * FY_CQ_ENTRY_SIZE, e);
      return true;
    }
  }
  return false;
}

/* The first written entry at or after `from` and below `limit`. */
static bool find_first(fy_cq *cq, uint64_t from, uint64_t limit, uint64_t *qoff) {
  for (size_t i = 0; i < cq->nfiles; i++) {
    struct cq_file *f = &cq->files[i];
    if (f->start >= limit)
      return false;
    if (f->start + cq->per_file <= from)
      continue;
    if (file_map(cq, f) != 0)
      continue;
    uint64_t rel = from > f->start ? from - f->start : 0;
    int64_t k = first_written_in(f->map, rel, cq->per_file);
    if (k >= 0 && f->start + (uint64_t)k < limit) {
      *qoff = f->start + (uint64_t)k;
      return true;
    }
  }
  return false;
}

/* Recomputes min, max and max_phys from the files. An empty queue gets
 * min = max = empty_pos. */
static void recompute_bounds(fy_cq *cq, uint64_t empty_pos) {
  uint64_t last;
  struct fy_cq_entry e;
  if (!find_last(cq, &last, &e)) {
    cq->min = cq->max = empty_pos;
    cq->max_phys = 0;
    return;
  }
  cq->max = last + 1;
  cq->max_phys = e.phys + e.size < e.phys ? UINT64_MAX : e.phys + e.size;
  uint64_t first = last;
  find_first(cq, 0, cq->max, &first);
  cq->min = first;
}

/* ---- open and close ---- */

static int scan_dir(fy_cq *cq) {
  DIR *d = opendir(cq->dir);
  if (!d)
    return -errno;
  int err = 0;
  struct dirent *de;
  for (size_t n = 0; n < CQ_DIR_ENTRIES_MAX && (de = readdir(d)) != NULL; n++) {
    if (de->d_name[0] == '.')
      continue;
    uint64_t off;
    if (!parse_name(de->d_name, &off) || off / FY_CQ_ENTRY_SIZE > start_limit(cq)) {
      fy_warn(MOD, "%s: ignoring unexpected file %s", cq->dir, de->d_name);
      continue;
    }
    struct stat st;
    if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) {
      fy_warn(MOD, "%s: ignoring %s: not a regular file", cq->dir, de->d_name);
      continue;
    }
    /* Files are created empty and then sized, so a crash can leave one at 0
     * bytes, which is resized below. Any other size, or a name off the file
     * grid, means the queue was written with another file size: resizing
     * would cut entries off, so opening fails instead. */
    if (off % cq->file_bytes != 0 || (st.st_size != 0 && (uint64_t)st.st_size != cq->file_bytes)) {
      fy_error(MOD,
               "%s/%s: %lld bytes, but mappedFileSizeConsumeQueue makes %zu-byte files starting "
               "at multiples of that: the queue was written with another "
               "mappedFileSizeConsumeQueue or the file was damaged; set the key back, or stop the "
               "broker and delete consumequeue/ and index/ to rebuild them from the commit log",
               cq->dir, de->d_name, (long long)st.st_size, cq->file_bytes);
      err = -FY_ECONFIG;
      break;
    }
    err = files_append(cq, off / FY_CQ_ENTRY_SIZE);
    if (err)
      break;
    if ((uint64_t)st.st_size != cq->file_bytes) {
      int fd;
      err = open_sized(cq, off / FY_CQ_ENTRY_SIZE, 0, &fd); /* resizes */
      if (err)
        break;
      if (fsync(fd) != 0)
        err = -errno;
      close(fd);
      if (err)
        break;
    }
  }
  closedir(d);
  if (!err && cq->nfiles > 1)
    qsort(cq->files, cq->nfiles, sizeof cq->files[0], file_cmp);
  return err;
}

static void cq_free(fy_cq *cq) {
  for (size_t i = 0; i < cq->nfiles; i++)
    file_unmap(cq, &cq->files[i]);
  if (cq->ahead)
    fy_fileop_orphan(cq->ahead, false); /* an empty file is left: harmless */
  if (cq->flush)
    fy_syncset_orphan(cq->flush); /* it completes on its own and still calls back */
  free(cq->files);
  free(cq->dir);
  free(cq->topic);
  free(cq);
}

int fy_cq_open(const char *root_dir, const char *topic, uint32_t queue_id,
               uint32_t entries_per_file, fy_cq **out) {
  if (!topic_ok(topic) || entries_per_file == 0 || entries_per_file > FY_CQ_ENTRIES_PER_FILE_MAX)
    return -EINVAL;
  fy_cq *cq = calloc(1, sizeof *cq);
  if (!cq)
    return -ENOMEM;
  cq->queue_id = queue_id;
  cq->zap_phase = queue_id % CQ_ZAP_PHASES * (CQ_ZAP_STEP / CQ_ZAP_PHASES);
  cq->per_file = entries_per_file;
  cq->file_bytes = (size_t)entries_per_file * FY_CQ_ENTRY_SIZE;
  cq->topic = strdup(topic);
  size_t n = strlen(root_dir) + strlen(topic) + 40;
  cq->dir = malloc(n);
  int err = -ENOMEM;
  if (!cq->topic || !cq->dir)
    goto out_free;
  snprintf(cq->dir, n, "%s/consumequeue/%s/%" PRIu32, root_dir, topic, queue_id);
  bool created = false;
  err = fy_mkdir_p(cq->dir, &created);
  if (err)
    goto out_free;
  cq->parents_dirty = created;
  err = scan_dir(cq);
  if (err)
    goto out_free;
  recompute_bounds(cq, cq->nfiles ? cq->files[0].start : 0);
  *out = cq;
  return 0;
out_free:
  cq_free(cq);
  return err;
}

void fy_cq_close(fy_cq *cq) {
  if (cq)
    cq_free(cq);
}

static int remove_dir_files(const char *dir) {
  DIR *d = opendir(dir);
  if (!d)
    return errno == ENOENT ? 0 : -errno;
  int err = 0;
  struct dirent *de;
  for (size_t n = 0; n < CQ_DIR_ENTRIES_MAX && (de = readdir(d)) != NULL; n++) {
    if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
      continue;
    if (unlinkat(dirfd(d), de->d_name, 0) != 0 && !err)
      err = -errno;
  }
  closedir(d);
  return err;
}

int fy_cq_destroy(fy_cq *cq) {
  for (size_t i = 0; i < cq->nfiles; i++)
    file_unmap(cq, &cq->files[i]);
  bool ahead = cq->ahead != NULL;
  if (ahead) { /* it deletes its file, and the directories if they are empty then */
    fy_fileop_orphan(cq->ahead, true);
    cq->ahead = NULL;
  }
  int err = remove_dir_files(cq->dir);
  if (rmdir(cq->dir) != 0 && !err && !(ahead && errno == ENOTEMPTY))
    err = -errno;
  char *slash = strrchr(cq->dir, '/');
  if (slash) {
    *slash = '\0';
    rmdir(cq->dir); /* the topic directory, once its last queue is gone */
  }
  if (err)
    fy_warn(MOD, "destroying %s/%" PRIu32 ": %s", cq->topic, cq->queue_id, fy_strerror(err));
  cq_free(cq);
  return err;
}

const char *fy_cq_topic(const fy_cq *cq) { return cq->topic; }
uint32_t fy_cq_queue_id(const fy_cq *cq) { return cq->queue_id; }
uint64_t fy_cq_min(const fy_cq *cq) { return cq->min; }
uint64_t fy_cq_max(const fy_cq *cq) { return cq->max; }
uint64_t fy_cq_max_phys(const fy_cq *cq) { return cq->max_phys; }

size_t fy__cq_mapped_count(const fy_cq *cq) { return cq->nmapped; }
uint64_t fy__cq_zap_count(const fy_cq *cq) { return cq->zaps; }

/* ---- put and reads ---- */

/*
 * A file being written is faulted in a page at a time, not read around. The
 * first store into a page not yet in the page cache is a read fault, and by
 * default the kernel then reads read_ahead_kb around it (8 MiB on the
 * benchmark VM): the whole new file, zero-filled on the loop in one go, 15-20
 * ms where fresh memory is slow. A file only read keeps the default, so a
 * consumer catching up from disk still gets readahead.
 */
static void advise_for_writes(fy_cq *cq, struct cq_file *f) {
  if (f->map && !f->random) {
    (void)madvise(f->map, cq->file_bytes, MADV_RANDOM); /* advice only */
    f->random = true;
  }
}

static int file_for_write(fy_cq *cq, uint64_t qoff, struct cq_file **out) {
  struct cq_file *f = file_find(cq, qoff);
  if (!f) {
    uint64_t start = qoff - qoff % cq->per_file;
    int fd;
    int err = open_sized(cq, start, O_CREAT, &fd);
    if (err)
      return err;
    close(fd);
    err = files_insert(cq, start, &f);
    if (err)
      return err;
    cq->dir_dirty = true;
  }
  *out = f;
  int err = file_map(cq, f);
  if (!err)
    advise_for_writes(cq, f);
  return err;
}

/* Has the thread pool fault in len bytes of f's pages from byte `from` on,
 * before the puts reach them (see fy_mapping_populate). */
static void populate_ahead(fy_cq *cq, struct cq_file *f, size_t from, size_t len) {
  if (cq->loop)
    fy_mapping_populate(cq->loop, f->mref, from, len);
}

/* The last zap boundary at or below x (0 if there is none). */
static size_t zap_boundary_below(const fy_cq *cq, size_t x) {
  if (x < cq->zap_phase)
    return 0;
  return cq->zap_phase + (x - cq->zap_phase) / CQ_ZAP_STEP * CQ_ZAP_STEP;
}

/* The first boundary a zap from byte 0 stops at: at least CQ_ZAP_MIN in. */
static size_t first_zap_boundary(const fy_cq *cq) {
  return cq->zap_phase >= CQ_ZAP_MIN ? cq->zap_phase : cq->zap_phase + CQ_ZAP_STEP;
}

static void on_ahead(void *arg, int fd, int err) {
  fy_cq *cq = arg;
  cq->ahead = NULL;
  if (err) {
    fy_warn(MOD, "%s: cannot create file %" PRIu64 " ahead: %s", cq->dir, cq->ahead_start,
            fy_strerror(err));
    return;
  }
  struct cq_file *f;
  if (file_find(cq, cq->ahead_start) || files_insert(cq, cq->ahead_start, &f) != 0) {
    close(fd); /* made meanwhile (synchronously), or out of memory: put makes it */
    return;
  }
  cq->dir_dirty = true; /* its name is synced by the next flush */
  f->last_use = ++cq->clock;
  cache_make_room(cq);
  void *m = mmap(NULL, cq->file_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (m == MAP_FAILED) {
    close(fd); /* file_map retries when it is used */
    return;
  }
  f->fd = fd;
  f->map = m;
  f->mref = fy_mapping_new(m, cq->file_bytes);
  cq->nmapped++;
  advise_for_writes(cq, f); /* made to be written */
  /* up to the first zap, which populates from there (see zap_behind) */
  populate_ahead(cq, f, 0, first_zap_boundary(cq) + CQ_PAGE);
}

/* Once the queue is halfway through a file, the next one is created on the
 * thread pool, so a put never waits for a file to be made. */
static void maybe_make_ahead(fy_cq *cq, uint64_t qoff) {
  if (!cq->loop || cq->ahead || qoff % cq->per_file < cq->per_file / 2)
    return;
  uint64_t next = qoff - qoff % cq->per_file + cq->per_file;
  if (next >= start_limit(cq) || file_find(cq, next))
    return;
  char path[4200];
  file_path(cq, next, path, sizeof path);
  cq->ahead_start = next;
  cq->ahead = fy_file_create(cq->loop, path, cq->file_bytes, on_ahead, cq);
}

void fy_cq_use_loop(fy_cq *cq, uv_loop_t *loop) { cq->loop = loop; }

/* Once the puts have passed a zap boundary at least CQ_ZAP_MIN above the
 * first page they have not zapped, zaps the whole pages below that
 * boundary and moves put_lo past them (see Zap above). The thread pool then
 * faults in the CQ_ZAP_STEP after the page being written: no further, since
 * every flush write-protects the populated pages again, and each costs a
 * fault when the puts reach it. */
static void zap_behind(fy_cq *cq, struct cq_file *f) {
  size_t a = (size_t)f->put_lo * FY_CQ_ENTRY_SIZE / CQ_PAGE * CQ_PAGE;
  size_t b = (size_t)f->put_hi * FY_CQ_ENTRY_SIZE / CQ_PAGE * CQ_PAGE;
  size_t z = zap_boundary_below(cq, b);
  if (z < a + CQ_ZAP_MIN)
    return;
  madvise(f->map + a, z - a, MADV_DONTNEED);
  cq->zaps++;
  populate_ahead(cq, f, b + CQ_PAGE, CQ_ZAP_STEP);
  /* the first entry that starts at or after z: the tail of one straddling z
   * is in the page at z, where the next zap starts */
  f->put_lo = (uint32_t)((z + FY_CQ_ENTRY_SIZE - 1) / FY_CQ_ENTRY_SIZE);
}

int fy_cq_put(fy_cq *cq, uint64_t qoff, const struct fy_cq_entry *e) {
  if (e->size == 0 || e->phys > UINT64_MAX - e->size || qoff >= start_limit(cq))
    return -EINVAL;
  bool empty = cq->min == cq->max;
  if (!empty && qoff > cq->max)
    return -FY_EDISCONTIG;
  if (!empty && cq->nfiles > 0 && qoff < cq->files[0].start)
    return 0; /* below retention: a stale re-dispatch */
  struct cq_file *f;
  int err = file_for_write(cq, qoff, &f);
  if (err)
    return err;
  uint8_t *p = f->map + (qoff - f->start) * FY_CQ_ENTRY_SIZE;
  /* Entries at and past max are unwritten (max is one past the last written
   * one): an append stores without reading first, which would cost a read
   * fault and then a write fault on every new page. */
  if (!empty && qoff < cq->max && entry_written(p)) {
    struct fy_cq_entry cur;
    entry_load(p, &cur);
    return entry_equal(&cur, e) ? 0 : -FY_ECORRUPT;
  }
  entry_store(p, e);
  uint32_t rel = (uint32_t)(qoff - f->start);
  if (f->put_lo >= f->put_hi) {
    f->put_lo = rel;
    f->put_hi = rel + 1;
  } else if (rel < f->put_lo) {
    f->put_lo = rel;
  } else if (rel >= f->put_hi) {
    f->put_hi = rel + 1;
  }
  f->dirty = true;
  zap_behind(cq, f);
  if (empty) {
    cq->min = qoff;
    cq->max = qoff + 1;
  } else if (qoff < cq->min) {
    cq->min = qoff;
  } else if (qoff == cq->max) {
    cq->max = qoff + 1;
  }
  if (e->phys + e->size > cq->max_phys)
    cq->max_phys = e->phys + e->size;
  maybe_make_ahead(cq, qoff);
  return 0;
}

int fy_cq_get(const fy_cq *cq, uint64_t qoff, struct fy_cq_entry *e) {
  if (qoff < cq->min || qoff >= cq->max)
    return -FY_ENOT_FOUND;
  int err;
  const uint8_t *p = entry_at(cq, qoff, &err);
  if (!p)
    return err;
  if (!entry_written(p))
    return -FY_ENOT_FOUND;
  entry_load(p, e);
  return 0;
}

static bool tag_wanted(int64_t tag, const int64_t *tags, size_t ntags) {
  if (ntags == 0)
    return true;
  for (size_t i = 0; i < ntags; i++)
    if (tags[i] == tag)
      return true;
  return false;
}

size_t fy_cq_scan(const fy_cq *ccq, uint64_t from, size_t max_out, size_t max_scan,
                  const int64_t *tags, size_t ntags, struct fy_cq_entry *out, uint64_t *qoffs,
                  uint64_t *next) {
  fy_cq *cq = cache_of(ccq);
  uint64_t q = from < cq->min ? cq->min : from;
  size_t n = 0, examined = 0;
  while (q < cq->max && n < max_out && examined < max_scan) {
    struct cq_file *f = file_find(cq, q);
    uint64_t file_end = q - q % cq->per_file + cq->per_file;
    uint64_t stop = file_end < cq->max ? file_end : cq->max;
    size_t budget = max_scan - examined;
    if (stop - q > budget)
      stop = q + budget;
    if (!f) { /* a missing file reads as unwritten entries */
      examined += (size_t)(stop - q);
      q = stop;
      continue;
    }
    int err = file_map(cq, f);
    if (err) {
      fy_warn(MOD, "%s: cannot map file %" PRIu64 ": %s", cq->dir, f->start, fy_strerror(err));
      break;
    }
    for (; q < stop && n < max_out; q++, examined++) {
      const uint8_t *p = f->map + (q - f->start) * FY_CQ_ENTRY_SIZE;
      if (!entry_written(p))
        continue;
      struct fy_cq_entry e;
      entry_load(p, &e);
      if (!tag_wanted(e.tag_hash, tags, ntags))
        continue;
      out[n] = e;
      qoffs[n] = q;
      n++;
    }
  }
  *next = q;
  return n;
}

/* Store time of entry q, or -1 for unwritten or unreadable entries. */
static int64_t ts_at(const fy_cq *cq, uint64_t q,
                     int64_t (*store_ts)(void *arg, const struct fy_cq_entry *e), void *arg) {
  int err;
  const uint8_t *p = entry_at(cq, q, &err);
  if (!p || !entry_written(p))
    return -1;
  struct fy_cq_entry e;
  entry_load(p, &e);
  int64_t t = store_ts(arg, &e);
  return t < 0 ? -1 : t;
}

uint64_t fy_cq_offset_for_time(const fy_cq *cq, int64_t ts_ms,
                               int64_t (*store_ts)(void *arg, const struct fy_cq_entry *e),
                               void *arg) {
  uint64_t lo = cq->min, hi = cq->max;
  for (unsigned steps = 0; lo < hi && steps < 64; steps++) { /* 64 halvings cover u64 */
    uint64_t mid = lo + (hi - lo) / 2;
    int64_t t = ts_at(cq, mid, store_ts, arg);
    if (t >= 0 && t >= ts_ms)
      hi = mid;
    else
      lo = mid + 1;
  }
  return lo;
}

/* ---- recovery and retention ---- */

/* Zeroes f's entries with phys >= phys_end, from its last written entry back
 * to the first one that stays. */
static void zero_tail(struct cq_file *f, uint32_t per_file, uint64_t phys_end) {
  /* The puts start a new zap range where they write next: one ending past
   * that would make zap_behind zap the page being written on every put. */
  f->put_lo = f->put_hi = 0;
  int64_t k = last_written_in(f->map, per_file);
  while (k >= 0) { /* k strictly decreases */
    uint8_t *p = f->map + (uint64_t)k * FY_CQ_ENTRY_SIZE;
    struct fy_cq_entry e;
    entry_load(p, &e);
    if (e.phys < phys_end)
      return;
    memset(p, 0, FY_CQ_ENTRY_SIZE);
    f->dirty = true;
    k = last_written_in(f->map, (uint64_t)k);
  }
}

int fy_cq_truncate_phys(fy_cq *cq, uint64_t phys_end) {
  uint64_t old_min = cq->min;
  size_t rounds = cq->nfiles;
  for (size_t r = 0; r < rounds && cq->nfiles > 0; r++) {
    size_t i = cq->nfiles - 1;
    struct cq_file *f = &cq->files[i];
    int err = file_map(cq, f);
    if (err)
      return err;
    int64_t k = first_written_in(f->map, 0, cq->per_file);
    struct fy_cq_entry first;
    if (k >= 0)
      entry_load(f->map + (uint64_t)k * FY_CQ_ENTRY_SIZE, &first);
    bool whole = k < 0 || first.phys >= phys_end;
    if (whole && cq->nfiles > 1) {
      err = file_delete(cq, i, false);
      if (err)
        return err;
      continue;
    }
    zero_tail(f, cq->per_file, phys_end);
    break;
  }
  recompute_bounds(cq, old_min);
  return 0;
}

int fy_cq_trim_below(fy_cq *cq, uint64_t phys_min) {
  if (cq->min == cq->max)
    return 0;
  int deleted = 0;
  while (deleted < FY_CQ_TRIM_MAX && cq->nfiles > 1) {
    struct cq_file *f = &cq->files[0];
    if (f->start + cq->per_file >= cq->max)
      break; /* holds the last entry */
    int err = file_map(cq, f);
    if (err) {
      fy_warn(MOD, "%s: cannot map file %" PRIu64 ": %s", cq->dir, f->start, fy_strerror(err));
      break;
    }
    int64_t k = last_written_in(f->map, cq->per_file);
    if (k >= 0) {
      struct fy_cq_entry e;
      entry_load(f->map + (uint64_t)k * FY_CQ_ENTRY_SIZE, &e);
      if (entry_ends_after(&e, phys_min))
        break;
    }
    if (file_delete(cq, 0, true) != 0)
      break;
    deleted++;
  }
  if (deleted) {
    uint64_t first = cq->max - 1;
    find_first(cq, cq->files[0].start, cq->max, &first);
    cq->min = first;
  }
  return deleted;
}

/* ---- flush ---- */

bool fy_cq_dirty(const fy_cq *cq) {
  if (cq->dir_dirty || cq->parents_dirty)
    return true;
  for (size_t i = 0; i < cq->nfiles; i++)
    if (cq->files[i].dirty)
      return true;
  return false;
}

/* Syncs <topic>, consumequeue and the root: the entries mkdir_p made. */
static int sync_parents(fy_cq *cq, fy_syncset *fl, fy_aio *aio) {
  char path[4200];
  snprintf(path, sizeof path, "%s", cq->dir);
  for (unsigned i = 0; i < CQ_PARENT_SYNCS; i++) {
    char *slash = strrchr(path, '/');
    if (!slash || slash == path)
      break;
    *slash = '\0';
    int err = fy_syncset_add(fl, aio, fy_syncset_open_dir(path));
    if (err)
      return err;
  }
  return 0;
}

static int queue_syncs(fy_cq *cq, fy_syncset *fl, fy_aio *aio) {
  int err = 0;
  for (size_t i = 0; i < cq->nfiles && !err; i++) {
    struct cq_file *f = &cq->files[i];
    if (!f->dirty)
      continue;
    fy_assert(f->map != NULL); /* dirty files stay mapped */
    err = fy_syncset_add(fl, aio, fcntl(f->fd, F_DUPFD_CLOEXEC, 0));
    if (!err)
      f->dirty = false;
  }
  if (!err && (cq->dir_dirty || fy_syncset_count(fl) == 0)) {
    /* nothing dirty: sync the directory anyway, so cb comes from aio */
    err = fy_syncset_add(fl, aio, fy_syncset_open_dir(cq->dir));
    if (!err)
      cq->dir_dirty = false;
  }
  if (!err && cq->parents_dirty) {
    err = sync_parents(cq, fl, aio);
    if (!err)
      cq->parents_dirty = false;
  }
  return err;
}

int fy_cq_flush(fy_cq *cq, fy_aio *aio, void (*cb)(void *arg, int status), void *arg) {
  if (cq->flush)
    return -FY_EBUSY;
  size_t nops = 1 + CQ_PARENT_SYNCS;
  for (size_t i = 0; i < cq->nfiles; i++)
    nops += cq->files[i].dirty;
  fy_syncset *fl = fy_syncset_new((unsigned)nops, "consume-queue", cb, arg, &cq->flush);
  if (!fl)
    return -ENOMEM;
  return fy_syncset_start(fl, queue_syncs(cq, fl, aio));
}
