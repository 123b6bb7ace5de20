/*
 * The message index; see index.h for what it answers.
 *
 * Why: "find the message with key K" would otherwise scan the whole commit
 * log. Each index file is a chained hash table that only grows: an entry is
 * appended, its slot is pointed at it, and the entry remembers the slot's
 * previous value. Everything here can be rebuilt from the commit log, so
 * recovery only cuts (fy_index_truncate_phys) and re-dispatches.
 *
 * File layout (little-endian), as RocketMQ's IndexFile with a larger header:
 *
 *   off  size  field
 *     0     4  magic          IX_MAGIC
 *     4     4  version        IX_VERSION
 *     8     8  begin_ts_ms    store time of the file's first keyed record:
 *                             the base of the entries' time diffs
 *    16     8  end_ts_ms      store time of the last record put
 *    24     8  begin_phys     commit-log offset of the file's first record
 *    32     8  end_phys       phys + size of the last record put (keyless
 *                             records too, so max_phys survives a restart)
 *    40     4  slot_count
 *    44     4  max_entries    entry numbers run 1 .. max_entries - 1
 *    48     4  entry_count    next entry number (starts at 1; 0 = "none")
 *    52    12  reserved, zero
 *    64        slots: u32[slot_count], newest entry number for hash % slot_count
 *     .        entries: max_entries x 20 bytes
 *              [u32 key_hash][u64 phys][i32 seconds since begin_ts, floored][u32 prev]
 *
 * The key hash is the low 32 bits of XXH3-64 of the full key ("topic#key")
 * in version 2 files, 32-bit FNV-1a in version 1 files (written before
 * 2026-12; still read and queried, never appended to: the first keyed put
 * after opening one starts a new file). XXH3 costs a sixth of FNV-1a's
 * byte-serial loop on a typical 45-byte key.
 *
 * Trust: a file whose header fails validation (magic, version, sizes, counts)
 * is skipped with a warning and left in place. A slot or prev pointer is only
 * followed when it is below the current entry number (prev strictly
 * decreases), and a chain walk takes at most entry_count steps, so a torn or
 * corrupted file cannot make a query loop. Entries are assumed to increase
 * in phys with their number (dispatch order).
 *
 * All files stay mapped (there are few: each holds max_entries keys).
 * Entries go into the mappings; the newest file's slot table lives in
 * anonymous memory (see struct ix_file), and the header is stored when a
 * flush is queued. fy_index_flush writes the changed slot chunks through
 * fy_aio, one step at a time, as they were when it was queued (see
 * queue_syncs), then fdatasyncs dup()s of the dirty files' fds, so files may
 * be deleted or the index closed while a flush is in flight. Our page-table
 * entries of what was stored through a mapping are dropped (zap) behind the
 * puts, and the header's before the fdatasync: writeback then has few
 * writable mappings to write-protect page by page.
 */
#include "store/index.h"
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
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "common/err.h"
#include "common/log.h"

#define MOD "index"
#define IX_MAGIC 0xFE4D4958u
#define IX_VERSION 2u     /* written: XXH3 key hashes */
#define IX_VERSION_FNV 1u /* read: FNV-1a key hashes */
#define IX_KEY_BUF 512u   /* fy_index_key_hash joins keys up to this on the stack */
#define IX_HEADER_SIZE 64u
#define IX_ENTRY_SIZE 20u
#define IX_FILE_MAX (64ull << 30)   /* bytes: sanity bound on slot_count/max_entries */
#define IX_TS_ABS_MAX (1ll << 53)   /* ms: store times beyond this are clamped */
#define IX_DIR_ENTRIES_MAX 1000000u /* bound on names read from the directory */
#define IX_NAME_TRIES 100           /* suffixes tried when a name is taken */
#define IX_NAME_LEN 48
#define IX_SLOT_CHUNK 1024u         /* slots per dirty-tracking chunk (a 4 KiB page) */
#define IX_STEP_CHUNKS 64u          /* slot chunks per flush write (256 KiB) */
#define IX_GAP_CHUNKS 8u            /* unchanged chunks a flush write carries along */
#define IX_HUGE_PAGE (2u << 20)
#define IX_ZAP_STEP (256u << 10)    /* entry bytes zapped behind the puts at a time */
#define IX_PAGE 4096u

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "index files are little-endian");

enum {
  H_MAGIC = 0,
  H_VERSION = 4,
  H_BEGIN_TS = 8,
  H_END_TS = 16,
  H_BEGIN_PHYS = 24,
  H_END_PHYS = 32,
  H_SLOT_COUNT = 40,
  H_MAX_ENTRIES = 44,
  H_ENTRY_COUNT = 48,
  H_END = 52,
};
_Static_assert(H_END <= IX_HEADER_SIZE, "index header fits in 64 bytes");

/* A file's header fields, mirrored in memory (the mapping is written, never
 * trusted again after open). */
struct ix_file {
  char name[IX_NAME_LEN];
  uint32_t version; /* IX_VERSION or IX_VERSION_FNV: which key hash */
  int fd;
  uint8_t *map;
  fy_mapping *mref; /* map's owner reference (NULL: munmap it directly) */
  size_t size;
  uint32_t slot_count;
  uint32_t max_entries;
  uint32_t entry_count;
  int64_t begin_ts;
  int64_t end_ts;
  uint64_t begin_phys;
  uint64_t end_phys;
  bool dirty;
  /* The newest file's slot table lives in anonymous memory (huge pages where
   * the kernel gives them), not in the shared mapping: random 4-byte stores
   * into a mapped file cost a TLB miss and, after every writeback, a write
   * fault, and the writeback itself a TLB shootdown per page. Changed chunks
   * are written to the file through fy_aio by fy_index_flush. An older file
   * keeps its copy until a flush wrote it, then reads its mapping. */
  uint32_t *slots;       /* NULL: the slots are read from the mapping */
  size_t slots_alloc;    /* bytes mapped for slots */
  uint8_t *slot_dirty;   /* per IX_SLOT_CHUNK slots: CH_* flags */
  uint32_t dirty_chunks; /* chunks with CH_DIRTY */
  uint8_t *snap;         /* during a flush's slot writes: this file's part of the
                            snapshot (chunk c at c * IX_SLOT_CHUNK slots) */
  uint32_t snap_todo;    /* chunks with CH_PENDING or CH_COPIED */
  uint32_t snap_cursor;  /* the first chunk the next flush write looks at */
  uint64_t slots_gen;    /* flush generation that wrote the last changes */
  uint32_t entries_zapped; /* entries below this have no page-table entries of ours */
};

struct ix_entry {
  uint32_t hash;
  uint64_t phys;
  int32_t diff_s;
  uint32_t prev;
};

struct fy_index {
  char *dir;
  uint32_t slot_count;  /* for new files */
  uint32_t max_entries; /* for new files */
  struct ix_file *files; /* oldest first */
  size_t nfiles;
  size_t cap;
  uint64_t max_phys;
  bool dir_dirty;     /* a file was created since the last flush */
  bool parent_dirty;  /* the directory itself was created and not yet synced */
  fy_syncset *flush; /* the flush in flight */
  struct ix_flush_ctx *flush_ctx;
  uint64_t flush_gen;     /* flushes queued */
  uv_loop_t *loop;        /* fy_index_use_loop: retention deletes off the loop */
  uint8_t *snap;          /* slot snapshots for flush writes, reused (NULL while lent) */
  size_t snap_size;
  void *spare;            /* a zeroed slot table for the next file (see spare_request) */
  size_t spare_alloc;
  struct ix_spare *spare_job; /* making one on the thread pool */
  uint64_t spares_used;
  struct ix_spare *snap_job;  /* making the flush's snapshot buffer there */
  uint64_t snaps_on_loop;     /* snapshot buffers made on the calling thread */
};

/* Makes a slot table, or a flush's snapshot buffer, on the thread pool;
 * outlives an index closed meanwhile. */
struct ix_spare {
  uv_work_t work;
  fy_index *ix; /* NULL once the index is gone */
  void *mem;    /* MAP_FAILED until made */
  size_t alloc;
  bool snap;    /* the flush's snapshot buffer, not a slot table */
};

/* Outlives the index when it is closed during a flush. */
struct ix_flush_ctx {
  fy_index *ix; /* NULL once the index is gone */
  uint8_t *snap; /* the index's snapshot buffer, lent for the flush */
  size_t snap_size;
  uint64_t gen;
  fy_aio *aio;
  fy_syncset *syncs; /* made when the flush starts, started after the slot writes */
  fy_aio_req write;  /* the slot write in flight (one at a time) */
  int write_fd;      /* its dup()ed fd, or -1 */
  char write_file[IX_NAME_LEN]; /* its file and chunks, made dirty again if it fails */
  uint32_t write_first, write_end;
  int status;        /* first slot write error */
  void (*cb)(void *arg, int status);
  void *arg;
};

/* Slot chunk flags (ix_file.slot_dirty). A flush turns CH_DIRTY into
 * CH_PENDING; a put into a CH_PENDING chunk first copies it into the
 * snapshot (CH_COPIED); the flush's writes clear both. */
enum { CH_DIRTY = 1, CH_PENDING = 2, CH_COPIED = 4 };

/* ---- layout ---- */

static inline uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

static uint64_t file_size_for(uint32_t slot_count, uint32_t max_entries) {
  return IX_HEADER_SIZE + (uint64_t)slot_count * 4 + (uint64_t)max_entries * IX_ENTRY_SIZE;
}

static bool params_ok(uint32_t slot_count, uint32_t max_entries) {
  return slot_count >= 1 && max_entries >= 2 &&
         file_size_for(slot_count, max_entries) <= IX_FILE_MAX;
}

static uint8_t *slot_at(const struct ix_file *f, uint32_t s) {
  return f->map + IX_HEADER_SIZE + (size_t)s * 4;
}

static inline uint32_t slot_get(const struct ix_file *f, uint32_t s) {
  return f->slots ? f->slots[s] : get32(slot_at(f, s));
}

static uint32_t chunk_slots(const struct ix_file *f, uint32_t c) {
  uint32_t first = c * IX_SLOT_CHUNK;
  return f->slot_count - first < IX_SLOT_CHUNK ? f->slot_count - first : IX_SLOT_CHUNK;
}

/* Copies chunk c of f's slot table into the flush's snapshot. */
static void chunk_snap(struct ix_file *f, uint32_t c) {
  memcpy(f->snap + (size_t)c * IX_SLOT_CHUNK * 4, &f->slots[(size_t)c * IX_SLOT_CHUNK],
         (size_t)chunk_slots(f, c) * 4);
}

static inline void slot_set(struct ix_file *f, uint32_t s, uint32_t v) {
  if (!f->slots) { /* recovery, on a file without a copy: synchronous anyway */
    put32(slot_at(f, s), v);
    f->dirty = true;
    return;
  }
  uint32_t c = s / IX_SLOT_CHUNK;
  uint8_t fl = f->slot_dirty[c];
  if (fl != CH_DIRTY) {
    if (fl & CH_PENDING) { /* the flush in flight has not copied it yet */
      chunk_snap(f, c);
      fl = (uint8_t)((fl & ~CH_PENDING) | CH_COPIED);
    }
    if (!(fl & CH_DIRTY)) {
      fl |= CH_DIRTY;
      f->dirty_chunks++;
    }
    f->slot_dirty[c] = fl;
  }
  f->slots[s] = v;
  f->dirty = true;
}

static uint8_t *entry_at(const struct ix_file *f, uint32_t n) {
  return f->map + IX_HEADER_SIZE + (size_t)f->slot_count * 4 + (size_t)n * IX_ENTRY_SIZE;
}

static void entry_load(const struct ix_file *f, uint32_t n, struct ix_entry *e) {
  const uint8_t *p = entry_at(f, n);
  e->hash = get32(p);
  e->phys = get64(p + 4);
  e->diff_s = (int32_t)get32(p + 12);
  e->prev = get32(p + 16);
}

static void entry_store(struct ix_file *f, uint32_t n, const struct ix_entry *e) {
  uint8_t *p = entry_at(f, n);
  put32(p, e->hash);
  put64(p + 4, e->phys);
  put32(p + 12, (uint32_t)e->diff_s);
  put32(p + 16, e->prev);
}

static void header_store(struct ix_file *f) {
  uint8_t *h = f->map;
  put32(h + H_MAGIC, IX_MAGIC);
  put32(h + H_VERSION, f->version);
  put64(h + H_BEGIN_TS, (uint64_t)f->begin_ts);
  put64(h + H_END_TS, (uint64_t)f->end_ts);
  put64(h + H_BEGIN_PHYS, f->begin_phys);
  put64(h + H_END_PHYS, f->end_phys);
  put32(h + H_SLOT_COUNT, f->slot_count);
  put32(h + H_MAX_ENTRIES, f->max_entries);
  put32(h + H_ENTRY_COUNT, f->entry_count);
  f->dirty = true;
}

/* Fills f's fields from a header; false if it does not describe a file of
 * file_size bytes that Ferry wrote. */
static bool header_load(struct ix_file *f, const uint8_t *h, uint64_t file_size) {
  f->version = get32(h + H_VERSION);
  if (get32(h + H_MAGIC) != IX_MAGIC || (f->version != IX_VERSION && f->version != IX_VERSION_FNV))
    return false;
  f->slot_count = get32(h + H_SLOT_COUNT);
  f->max_entries = get32(h + H_MAX_ENTRIES);
  f->entry_count = get32(h + H_ENTRY_COUNT);
  f->begin_ts = (int64_t)get64(h + H_BEGIN_TS);
  f->end_ts = (int64_t)get64(h + H_END_TS);
  f->begin_phys = get64(h + H_BEGIN_PHYS);
  f->end_phys = get64(h + H_END_PHYS);
  if (!params_ok(f->slot_count, f->max_entries))
    return false;
  if (file_size_for(f->slot_count, f->max_entries) != file_size)
    return false;
  if (f->entry_count < 1 || f->entry_count > f->max_entries)
    return false;
  return f->begin_ts >= -IX_TS_ABS_MAX && f->begin_ts <= IX_TS_ABS_MAX;
}

/* 32-bit FNV-1a: the key hash of version 1 files. */
static uint32_t key_hash_fnv(const char *key, size_t len) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < len; i++) {
    h ^= (uint8_t)key[i];
    h *= 16777619u;
  }
  return h;
}

/* The key hash of the files written now. */
static uint32_t key_hash(const char *key, size_t len) { return (uint32_t)XXH3_64bits(key, len); }

static int64_t clamp_ts(int64_t ts) {
  if (ts > IX_TS_ABS_MAX)
    return IX_TS_ABS_MAX;
  return ts < -IX_TS_ABS_MAX ? -IX_TS_ABS_MAX : ts;
}

/* floor((ts - base) / 1000) as i32, saturated. Both are clamped, so no overflow. */
static int32_t diff_seconds(int64_t ts, int64_t base) {
  int64_t d = ts - base;
  int64_t s = d >= 0 ? d / 1000 : -((-d + 999) / 1000);
  if (s > INT32_MAX)
    return INT32_MAX;
  return s < INT32_MIN ? INT32_MIN : (int32_t)s;
}

/* An entry stored at second t_lo (ms) has its real time in [t_lo, t_lo + 999]. */
static bool time_overlaps(int64_t t_lo, int64_t begin_ms, int64_t end_ms) {
  if (t_lo > end_ms)
    return false;
  return t_lo >= begin_ms || (uint64_t)begin_ms - (uint64_t)t_lo < 1000;
}

/* ---- files ---- */

static int files_reserve(fy_index *ix) {
  if (ix->nfiles < ix->cap)
    return 0;
  size_t cap = ix->cap ? ix->cap * 2 : 4;
  struct ix_file *f = realloc(ix->files, cap * sizeof *f);
  if (!f)
    return -ENOMEM;
  ix->files = f;
  ix->cap = cap;
  return 0;
}

static void slots_drop(struct ix_file *f) {
  if (f->slots)
    munmap(f->slots, f->slots_alloc);
  free(f->slot_dirty);
  f->slots = NULL;
  f->slot_dirty = NULL;
  f->dirty_chunks = 0;
  f->snap = NULL; /* a flush in flight skips the rest of this file */
  f->snap_todo = 0;
}

static void snap_prepare(fy_index *ix);

/* Faults fresh anonymous memory in now, at open or file creation, instead
 * of a page at a time under the first puts or the first flush: on a fresh
 * broker those faults stopped the loop for 100 ms and more. */
static void prefault(void *m, size_t len) {
  if (madvise(m, len, MADV_POPULATE_WRITE) == 0)
    return;
  for (size_t off = 0; off < len; off += IX_PAGE) /* kernels before 5.14 */
    ((volatile uint8_t *)m)[off] = 0;
}

static size_t slots_alloc_for(uint32_t slot_count) {
  size_t bytes = (size_t)slot_count * 4;
  return (bytes + IX_HUGE_PAGE - 1) / IX_HUGE_PAGE * IX_HUGE_PAGE;
}

/* Zeroed anonymous memory for a slot table or its snapshot, on huge pages
 * where the kernel gives them, faulted in when fault is set; MAP_FAILED
 * (errno set) on failure. */
static void *table_map(size_t alloc, bool fault) {
  void *m = mmap(NULL, alloc, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED)
    return m;
  madvise(m, alloc, MADV_HUGEPAGE); /* advice only: fine if refused */
  if (fault)
    prefault(m, alloc);
  return m;
}

/*
 * Gives f its anonymous slot table; load copies the file's slots into it (a
 * file found at open; synchronous, before serving), else it starts zeroed (a
 * new file), from the spare made ahead when there is one (spare_request).
 */
static int slots_make(fy_index *ix, struct ix_file *f, bool load) {
  if (f->slots)
    return 0;
  size_t bytes = (size_t)f->slot_count * 4;
  size_t alloc = slots_alloc_for(f->slot_count);
  size_t chunks = (f->slot_count + IX_SLOT_CHUNK - 1) / IX_SLOT_CHUNK;
  f->slot_dirty = calloc(chunks, 1);
  if (!f->slot_dirty)
    return -ENOMEM;
  void *m;
  if (!load && ix->spare && ix->spare_alloc == alloc) {
    m = ix->spare;
    ix->spare = NULL;
    ix->spares_used++;
  } else {
    m = table_map(alloc, !load);
    if (m == MAP_FAILED) {
      int err = -errno;
      free(f->slot_dirty);
      f->slot_dirty = NULL;
      return err;
    }
    if (load)
      memcpy(m, slot_at(f, 0), bytes);
  }
  f->slots = m;
  f->slots_alloc = alloc;
  f->dirty_chunks = 0;
  return 0;
}

/* Drops our page-table entries for bytes [lo, hi) of f's mapping (page
 * aligned outwards). The page cache keeps the data, dirty or not; the point
 * is that writeback then finds no writable mapping to write-protect, which
 * costs a TLB shootdown per page. The next store re-faults the page. */
static void zap(struct ix_file *f, uint64_t lo, uint64_t hi) {
  lo = lo / IX_PAGE * IX_PAGE;
  hi = (hi + IX_PAGE - 1) / IX_PAGE * IX_PAGE;
  if (hi > f->size)
    hi = f->size;
  if (hi > lo)
    madvise(f->map + lo, (size_t)(hi - lo), MADV_DONTNEED);
}

static void map_release(struct ix_file *f) {
  if (f->mref)
    fy_mapping_unmap(f->mref); /* after a population in flight */
  else if (f->map)
    munmap(f->map, f->size);
  f->map = NULL;
  f->mref = NULL;
}

static void file_unmap(struct ix_file *f) {
  slots_drop(f);
  map_release(f);
  if (f->fd >= 0)
    close(f->fd);
  f->fd = -1;
}

/* Lookups follow hash chains and puts append, so faults read no more than
 * their page (MADV_RANDOM). With the default read-around, the first put into
 * a page not in the page cache read read_ahead_kb around it (8 MiB on the
 * benchmark VM), zero-filling the file's unwritten part on the loop: 20 ms
 * stops in perf. */
static int map_fd(struct ix_file *f, int fd, size_t size) {
  void *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (m == MAP_FAILED)
    return -errno;
  (void)madvise(m, size, MADV_RANDOM); /* advice only */
  f->fd = fd;
  f->map = m;
  f->mref = fy_mapping_new(m, size);
  f->size = size;
  return 0;
}

/* Opens, validates and maps one file found in the directory. Returns 1 when
 * the file is not a valid index file (skipped), 0 when *f is filled. */
static int file_load(fy_index *ix, int dfd, const char *name, struct ix_file *f) {
  if (strlen(name) >= IX_NAME_LEN) {
    fy_warn(MOD, "%s/%s: unexpected name, ignored", ix->dir, name);
    return 1;
  }
  int fd = openat(dfd, name, O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) {
    int err = -errno;
    if (err == -EMFILE || err == -ENFILE || err == -ENOMEM)
      return err;
    fy_warn(MOD, "%s/%s: cannot open (%s), ignored", ix->dir, name, fy_strerror(err));
    return 1;
  }
  struct stat st;
  uint8_t h[IX_HEADER_SIZE];
  int err = 0;
  if (fstat(fd, &st) != 0) {
    err = -errno;
    goto out_close;
  }
  *f = (struct ix_file){.fd = -1};
  snprintf(f->name, sizeof f->name, "%s", name);
  if (!S_ISREG(st.st_mode) || pread(fd, h, sizeof h, 0) != (ssize_t)sizeof h ||
      !header_load(f, h, (uint64_t)st.st_size)) {
    fy_warn(MOD, "%s/%s: not a valid index file, ignored", ix->dir, name);
    err = 1;
    goto out_close;
  }
  err = map_fd(f, fd, (size_t)st.st_size);
  if (err)
    goto out_close;
  f->entries_zapped = f->entry_count;
  return 0;
out_close:
  close(fd);
  return err;
}

static int file_cmp(const void *a, const void *b) {
  const struct ix_file *x = a, *y = b;
  if (x->begin_phys != y->begin_phys)
    return x->begin_phys < y->begin_phys ? -1 : 1;
  return strcmp(x->name, y->name);
}

static int scan_dir(fy_index *ix) {
  DIR *d = opendir(ix->dir);
  if (!d)
    return -errno;
  int err = 0;
  struct dirent *de;
  for (size_t n = 0; n < IX_DIR_ENTRIES_MAX && (de = readdir(d)) != NULL; n++) {
    if (de->d_name[0] == '.')
      continue;
    err = files_reserve(ix);
    if (err)
      break;
    err = file_load(ix, dirfd(d), de->d_name, &ix->files[ix->nfiles]);
    if (err == 1) {
      err = 0;
      continue;
    }
    if (err)
      break;
    ix->nfiles++;
  }
  closedir(d);
  if (!err && ix->nfiles > 1)
    qsort(ix->files, ix->nfiles, sizeof ix->files[0], file_cmp);
  return err;
}

/* yyyyMMddHHmmssSSS in local time, as RocketMQ names its index files. */
static void time_name(char *buf, size_t cap) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  localtime_r(&ts.tv_sec, &tm);
  size_t n = strftime(buf, cap, "%Y%m%d%H%M%S", &tm);
  snprintf(buf + n, cap - n, "%03d", (int)(ts.tv_nsec / 1000000L));
}

/* Creates a file named by the time (a suffix _1, _2... if taken). */
static int create_named(fy_index *ix, char *name, size_t cap) {
  char base[24]; /* 17 digits */
  char path[4200];
  time_name(base, sizeof base);
  for (int i = 0; i < IX_NAME_TRIES; i++) {
    if (i == 0)
      snprintf(name, cap, "%s", base);
    else
      snprintf(name, cap, "%s_%d", base, i);
    snprintf(path, sizeof path, "%s/%s", ix->dir, name);
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd >= 0)
      return fd;
    if (errno != EEXIST)
      return -errno;
  }
  return -EEXIST;
}

static void spare_work(uv_work_t *w) {
  struct ix_spare *job = w->data;
  job->mem = table_map(job->alloc, true);
}

static void spare_done(uv_work_t *w, int status) {
  struct ix_spare *job = w->data;
  fy_index *ix = job->ix;
  if (ix && job->snap)
    ix->snap_job = NULL;
  else if (ix)
    ix->spare_job = NULL;
  bool made = status == 0 && job->mem != MAP_FAILED;
  if (ix && made && job->snap && !ix->snap) {
    ix->snap = job->mem;
    ix->snap_size = job->alloc;
  } else if (ix && made && !job->snap) {
    ix->spare = job->mem;
    ix->spare_alloc = job->alloc;
  } else if (job->mem != MAP_FAILED) {
    munmap(job->mem, job->alloc);
  }
  free(job);
}

static struct ix_spare *table_request(fy_index *ix, bool snap) {
  struct ix_spare *job = calloc(1, sizeof *job);
  if (!job)
    return NULL;
  job->ix = ix;
  job->mem = MAP_FAILED;
  job->alloc = slots_alloc_for(snap ? ix->files[ix->nfiles - 1].slot_count : ix->slot_count);
  job->snap = snap;
  job->work.data = job;
  if (uv_queue_work(ix->loop, &job->work, spare_work, spare_done) != 0) {
    free(job);
    return NULL;
  }
  return job;
}

/* Creating a file faults in a new slot table (20 MB by default): tens of
 * milliseconds of the loop where fresh memory is expensive. With a loop, the
 * next file's table is made on its thread pool while the current one fills.
 * Best effort: without one, file_create makes it itself. */
static void spare_request(fy_index *ix) {
  if (ix->loop && !ix->spare && !ix->spare_job)
    ix->spare_job = table_request(ix, false);
}

/* The same for the buffer a flush copies the newest slot table into (as
 * big as the table). The first file of a new store used to make it on the
 * loop: the first send into a fresh broker waited about 90 ms for it. */
static void snap_request(fy_index *ix) {
  if (ix->loop && !ix->snap && !ix->snap_job && !ix->flush_ctx && ix->nfiles > 0)
    ix->snap_job = table_request(ix, true);
}

static int file_create(fy_index *ix, uint64_t phys, int64_t ts, struct ix_file **out) {
  int err = files_reserve(ix);
  if (err)
    return err;
  struct ix_file *f = &ix->files[ix->nfiles];
  *f = (struct ix_file){.fd = -1};
  int fd = create_named(ix, f->name, sizeof f->name);
  if (fd < 0)
    return fd;
  size_t size = (size_t)file_size_for(ix->slot_count, ix->max_entries);
  if (ftruncate(fd, (off_t)size) != 0) {
    err = -errno;
    goto out_unlink;
  }
  err = map_fd(f, fd, size);
  if (err)
    goto out_unlink;
  f->slot_count = ix->slot_count;
  f->max_entries = ix->max_entries;
  f->entry_count = 1;
  f->version = IX_VERSION;
  f->begin_ts = f->end_ts = ts;
  f->begin_phys = phys;
  f->end_phys = 0;
  f->entries_zapped = 1;
  err = slots_make(ix, f, false);
  if (err) {
    map_release(f);
    goto out_unlink;
  }
  header_store(f);
  ix->nfiles++;
  ix->dir_dirty = true;
  if (ix->loop)
    snap_request(ix);
  else
    snap_prepare(ix);
  spare_request(ix); /* for the file after this one */
  fy_info(MOD, "new index file %s/%s", ix->dir, f->name);
  *out = f;
  return 0;
out_unlink: {
  char path[4200];
  snprintf(path, sizeof path, "%s/%s", ix->dir, f->name);
  unlink(path);
  close(fd);
  return err;
}
}

/* later: unlink on the thread pool (retention; names are never reused, so
 * the unlink cannot hit a newer file). */
static int file_delete(fy_index *ix, size_t idx, bool later) {
  struct ix_file *f = &ix->files[idx];
  char path[4200];
  snprintf(path, sizeof path, "%s/%s", ix->dir, f->name);
  if (later && ix->loop && fy_file_unlink(ix->loop, path, MOD) == 0) {
    /* queued */
  } else if (unlink(path) != 0 && errno != ENOENT) {
    int err = -errno;
    fy_warn(MOD, "cannot delete %s: %s", path, fy_strerror(err));
    return err;
  }
  file_unmap(f);
  memmove(&ix->files[idx], &ix->files[idx + 1], (ix->nfiles - idx - 1) * sizeof ix->files[0]);
  ix->nfiles--;
  return 0;
}

/* ---- open and close ---- */

static void ix_free(fy_index *ix) {
  for (size_t i = 0; i < ix->nfiles; i++)
    file_unmap(&ix->files[i]);
  if (ix->flush)
    fy_syncset_orphan(ix->flush); /* it completes on its own and still calls back */
  if (ix->flush_ctx) {
    ix->flush_ctx->ix = NULL;
    if (ix->flush_ctx->syncs) /* still writing slots */
      fy_syncset_orphan(ix->flush_ctx->syncs);
  }
  if (ix->snap)
    munmap(ix->snap, ix->snap_size);
  if (ix->spare)
    munmap(ix->spare, ix->spare_alloc);
  if (ix->spare_job)
    ix->spare_job->ix = NULL; /* spare_done frees what it made */
  if (ix->snap_job)
    ix->snap_job->ix = NULL;
  free(ix->files);
  free(ix->dir);
  free(ix);
}

int fy_index_open(const char *dir, uint32_t slot_count, uint32_t max_entries, fy_index **out) {
  if (!params_ok(slot_count, max_entries) ||
      file_size_for(slot_count, max_entries) > (uint64_t)SIZE_MAX)
    return -EINVAL;
  fy_index *ix = calloc(1, sizeof *ix);
  if (!ix)
    return -ENOMEM;
  ix->slot_count = slot_count;
  ix->max_entries = max_entries;
  ix->dir = strdup(dir);
  int err = -ENOMEM;
  if (!ix->dir)
    goto out_free;
  bool created = false;
  err = fy_mkdir_p(ix->dir, &created);
  if (err)
    goto out_free;
  ix->parent_dirty = created;
  err = scan_dir(ix);
  if (err)
    goto out_free;
  for (size_t i = 0; i < ix->nfiles; i++)
    if (ix->files[i].end_phys > ix->max_phys)
      ix->max_phys = ix->files[i].end_phys;
  if (ix->nfiles > 0)
    err = slots_make(ix, &ix->files[ix->nfiles - 1], true);
  if (err)
    goto out_free;
  snap_prepare(ix);
  *out = ix;
  return 0;
out_free:
  ix_free(ix);
  return err;
}

/* Close: what was put since the last flush goes into the page cache through
 * the mapping (memory stores, no I/O wait), so the next open of these files
 * sees it, as it would have seen stores made through the mapping. */
static void write_back(struct ix_file *f) {
  if (f->slots && f->dirty_chunks) {
    for (uint32_t a = 0; a < f->slot_count; a += IX_SLOT_CHUNK) {
      if (!f->slot_dirty[a / IX_SLOT_CHUNK])
        continue;
      uint32_t b = f->slot_count - a < IX_SLOT_CHUNK ? f->slot_count : a + IX_SLOT_CHUNK;
      memcpy(slot_at(f, a), &f->slots[a], (size_t)(b - a) * 4);
    }
  }
  if (f->dirty)
    header_store(f);
}

void fy_index_close(fy_index *ix) {
  if (!ix)
    return;
  for (size_t i = 0; i < ix->nfiles; i++)
    write_back(&ix->files[i]);
  ix_free(ix);
}

uint64_t fy_index_max_phys(const fy_index *ix) { return ix->max_phys; }

void fy_index_use_loop(fy_index *ix, uv_loop_t *loop) {
  ix->loop = loop;
  spare_request(ix);
}

void fy_index_stats(const fy_index *ix, struct fy_index_stats *out) {
  out->files = ix->nfiles;
  out->spare_ready = ix->spare != NULL;
  out->spares_used = ix->spares_used;
  out->snap_ready = ix->snap != NULL;
  out->snaps_on_loop = ix->snaps_on_loop;
}

/* ---- put and query ---- */

static void add_entry(struct ix_file *f, uint32_t hash, uint64_t phys, int32_t diff_s) {
  uint32_t n = f->entry_count;
  fy_assert(n < f->max_entries);
  uint32_t slot = hash % f->slot_count;
  uint32_t prev = slot_get(f, slot);
  struct ix_entry e = {.hash = hash, .phys = phys, .diff_s = diff_s,
                       .prev = prev < n ? prev : 0}; /* a torn slot is dropped */
  entry_store(f, n, &e);
  slot_set(f, slot, n);
  f->entry_count = n + 1;
}

/* The file the n keys of a record go to (NULL: no file and no keys), after
 * the checks of fy_index_put. Returns 1 for a record already indexed. */
static int put_file(fy_index *ix, size_t n, uint64_t phys, uint32_t size, int64_t ts,
                    struct ix_file **out) {
  if (size == 0 || phys > UINT64_MAX - size)
    return -EINVAL;
  if (phys < ix->max_phys)
    return 1; /* already indexed: re-dispatch */
  if (n > ix->max_entries - 1)
    return -EINVAL;
  struct ix_file *f = ix->nfiles ? &ix->files[ix->nfiles - 1] : NULL;
  if (n > 0 && (!f || f->version != IX_VERSION || n > f->max_entries - f->entry_count)) {
    int err = file_create(ix, phys, ts, &f);
    if (err)
      return err;
  }
  if (f && !f->slots) {
    int err = slots_make(ix, f, true); /* normally made at open or creation */
    if (err)
      return err;
  }
  if (f && n > 0 && f->entry_count == 1) { /* first keyed record: the time base */
    f->begin_ts = ts;
    f->begin_phys = phys;
  }
  *out = f;
  return 0;
}

/* Zaps the entry pages the puts have left behind, IX_ZAP_STEP at a time,
 * so a flush has only the last few to zap: zapping ten seconds of entries at
 * once (52 MB at 260k keys/s) stopped the loop for 6 ms. */
static void zap_behind(fy_index *ix, struct ix_file *f) {
  uint64_t base = IX_HEADER_SIZE + (uint64_t)f->slot_count * 4;
  uint64_t lo = base + (uint64_t)f->entries_zapped * IX_ENTRY_SIZE;
  uint64_t hi = (base + (uint64_t)f->entry_count * IX_ENTRY_SIZE) / IX_PAGE * IX_PAGE;
  if (hi < lo + IX_ZAP_STEP)
    return;
  zap(f, lo, hi); /* the page holding the next entry stays */
  f->entries_zapped = (uint32_t)((hi - base) / IX_ENTRY_SIZE);
  /* the step after the page being written, faulted in on the thread pool
   * before the puts get there (see fy_mapping_populate) */
  if (ix->loop)
    fy_mapping_populate(ix->loop, f->mref, (size_t)(hi + IX_PAGE), IX_ZAP_STEP);
}

/* The header is stored by fy_index_flush: only what a flush covers counts. */
static void put_done(fy_index *ix, struct ix_file *f, uint64_t phys, uint32_t size, int64_t ts) {
  if (f) {
    f->end_phys = phys + size;
    f->end_ts = ts;
    f->dirty = true;
    zap_behind(ix, f);
  }
  ix->max_phys = phys + size;
}

int fy_index_put(fy_index *ix, const char *const *keys, const size_t *key_lens, size_t nkeys,
                 uint64_t phys, uint32_t size, int64_t store_ts_ms) {
  uint32_t hashes[FY_INDEX_KEYS_MAX];
  size_t n = 0;
  for (size_t i = 0; i < nkeys; i++) {
    if (key_lens[i] == 0)
      continue;
    if (n == FY_INDEX_KEYS_MAX)
      return -EINVAL;
    hashes[n++] = key_hash(keys[i], key_lens[i]);
  }
  return fy_index_put_hashed(ix, hashes, n, phys, size, store_ts_ms);
}

int fy_index_put_hashed(fy_index *ix, const uint32_t *hashes, size_t n, uint64_t phys,
                        uint32_t size, int64_t store_ts_ms) {
  int64_t ts = clamp_ts(store_ts_ms);
  struct ix_file *f = NULL;
  int r = put_file(ix, n, phys, size, ts, &f);
  if (r != 0)
    return r < 0 ? r : 0;
  for (size_t i = 0; i < n && f; i++)
    add_entry(f, hashes[i], phys, diff_seconds(ts, f->begin_ts));
  put_done(ix, f, phys, size, ts);
  return 0;
}

uint32_t fy_index_key_hash(const char *topic, size_t topic_len, const char *key, size_t key_len) {
  char buf[IX_KEY_BUF];
  if (topic_len + 1 + key_len <= sizeof buf) {
    memcpy(buf, topic, topic_len);
    buf[topic_len] = '#';
    memcpy(buf + topic_len + 1, key, key_len);
    return key_hash(buf, topic_len + 1 + key_len);
  }
  XXH3_state_t *st = XXH3_createState(); /* long keys: rare, off the common path */
  if (!st)
    return 0; /* a wrong hash only makes a query miss; it never returns a wrong record */
  XXH3_64bits_reset(st);
  XXH3_64bits_update(st, topic, topic_len);
  XXH3_64bits_update(st, "#", 1);
  XXH3_64bits_update(st, key, key_len);
  uint32_t h = (uint32_t)XXH3_64bits_digest(st);
  XXH3_freeState(st);
  return h;
}

void fy_index_prefetch(const fy_index *ix, uint32_t hash) {
  const struct ix_file *f = ix->nfiles ? &ix->files[ix->nfiles - 1] : NULL;
  if (f && f->slots)
    __builtin_prefetch(&f->slots[hash % f->slot_count], 1);
}

/* Follows one file's chain for hash, appending matches to out[*n..max). */
static void walk_chain(const fy_index *ix, const struct ix_file *f, uint32_t hash,
                       int64_t begin_ms, int64_t end_ms, uint64_t *out, size_t *n, size_t max) {
  uint32_t cur = slot_get(f, hash % f->slot_count);
  for (uint32_t steps = 0; cur != 0 && steps < f->entry_count && *n < max; steps++) {
    if (cur >= f->entry_count)
      return; /* torn: slot written, count not */
    struct ix_entry e;
    entry_load(f, cur, &e);
    int64_t t_lo = f->begin_ts + (int64_t)e.diff_s * 1000;
    bool in_file = e.phys >= f->begin_phys && e.phys < f->end_phys;
    if (e.hash == hash && in_file && time_overlaps(t_lo, begin_ms, end_ms) &&
        (*n == 0 || out[*n - 1] != e.phys)) /* one record, the same key twice */
      out[(*n)++] = e.phys;
    if (e.prev >= cur) {
      fy_warn(MOD, "%s/%s: entry %" PRIu32 " links forward to %" PRIu32 ": chain cut", ix->dir,
              f->name, cur, e.prev);
      return;
    }
    cur = e.prev;
  }
}

size_t fy_index_query(const fy_index *ix, const char *key, size_t key_len, int64_t begin_ms,
                      int64_t end_ms, uint64_t *phys_out, size_t max) {
  if (max == 0 || key_len == 0)
    return 0;
  uint32_t hash = key_hash(key, key_len);
  uint32_t hash_fnv = 0;
  bool fnv_done = false;
  size_t n = 0;
  for (size_t i = ix->nfiles; i > 0 && n < max; i--) {
    const struct ix_file *f = &ix->files[i - 1];
    if (f->entry_count <= 1)
      continue;
    if (f->version == IX_VERSION_FNV && !fnv_done) {
      hash_fnv = key_hash_fnv(key, key_len);
      fnv_done = true;
    }
    walk_chain(ix, f, f->version == IX_VERSION_FNV ? hash_fnv : hash, begin_ms, end_ms, phys_out,
               &n, max);
  }
  return n;
}

/* ---- recovery and retention ---- */

/* Removes f's newest entry, pointing its slot back at the entry before it. */
static void undo_last(struct ix_file *f) {
  uint32_t n = f->entry_count - 1;
  struct ix_entry e;
  entry_load(f, n, &e);
  uint32_t slot = e.hash % f->slot_count;
  if (slot_get(f, slot) >= n) /* == n normally; > n only if torn */
    slot_set(f, slot, e.prev < n ? e.prev : 0);
  memset(entry_at(f, n), 0, IX_ENTRY_SIZE);
  f->entry_count = n;
  if (f->entries_zapped > n) /* the puts that write here again zap it again */
    f->entries_zapped = n;
}

/* Removes f's entries with phys >= phys_end, newest first. */
static void truncate_file(struct ix_file *f, uint64_t phys_end) {
  while (f->entry_count > 1) { /* entry_count strictly decreases */
    struct ix_entry e;
    entry_load(f, f->entry_count - 1, &e);
    if (e.phys < phys_end)
      break;
    undo_last(f);
  }
  if (f->end_phys > phys_end)
    f->end_phys = phys_end;
  if (f->begin_phys > phys_end)
    f->begin_phys = phys_end;
  header_store(f);
}

int fy_index_truncate_phys(fy_index *ix, uint64_t phys_end) {
  if (phys_end >= ix->max_phys)
    return 0;
  size_t rounds = ix->nfiles;
  for (size_t r = 0; r < rounds && ix->nfiles > 0; r++) {
    struct ix_file *f = &ix->files[ix->nfiles - 1];
    bool whole = true;
    if (f->entry_count > 1) {
      struct ix_entry first;
      entry_load(f, 1, &first);
      whole = first.phys >= phys_end;
    }
    if (whole && ix->nfiles > 1) {
      int err = file_delete(ix, ix->nfiles - 1, false);
      if (err)
        return err;
      continue;
    }
    truncate_file(f, phys_end);
    break;
  }
  ix->max_phys = phys_end;
  return ix->nfiles ? slots_make(ix, &ix->files[ix->nfiles - 1], true) : 0;
}

int fy_index_trim_below(fy_index *ix, uint64_t phys_min) {
  int deleted = 0;
  while (deleted < FY_INDEX_TRIM_MAX && ix->nfiles > 1 && ix->files[0].end_phys <= phys_min) {
    if (file_delete(ix, 0, true) != 0)
      break;
    deleted++;
  }
  return deleted;
}

/* ---- flush ---- */

bool fy_index_dirty(const fy_index *ix) {
  if (ix->dir_dirty || ix->parent_dirty)
    return true;
  for (size_t i = 0; i < ix->nfiles; i++)
    if (ix->files[i].dirty)
      return true;
  return false;
}


static int sync_parent(fy_index *ix, fy_syncset *fl, fy_aio *aio) {
  char path[4200];
  snprintf(path, sizeof path, "%s", ix->dir);
  char *slash = strrchr(path, '/');
  if (!slash)
    snprintf(path, sizeof path, ".");
  else if (slash == path)
    path[1] = '\0';
  else
    *slash = '\0';
  return fy_syncset_add(fl, aio, fy_syncset_open_dir(path));
}

/*
 * A flush is consistent as of the moment it is queued, without stopping the
 * loop to copy the slot tables: queue_syncs turns every CH_DIRTY chunk into
 * CH_PENDING, stores the headers and makes the set of fdatasyncs; then one
 * write at a time (slots_step) copies up to IX_STEP_CHUNKS pending chunks
 * into the snapshot and writes them, and a put into a chunk still pending
 * copies that chunk first (slot_set). The fdatasyncs start after the last
 * write. Copying a whole 20 MB table at once, and writing it in one request,
 * stopped the loop for 7 ms and held the commit log's next write behind the
 * io_uring worker for 28 ms, every tenth flush cycle at 370k keyed msgs/s.
 */
static int queue_syncs(fy_index *ix, fy_syncset *fl, fy_aio *aio) {
  int err = 0;
  for (size_t i = 0; i < ix->nfiles && !err; i++) {
    struct ix_file *f = &ix->files[i];
    if (!f->dirty)
      continue;
    header_store(f);
    /* Our page-table entry of the header goes, so writeback does not
     * write-protect it (see zap). The entries the puts have not zapped yet
     * (less than IX_ZAP_STEP) stay for zap_behind: a zap of up to 33 pages
     * flushes the TLB page by page, about 17 us a page on the benchmark VM. */
    zap(f, 0, IX_HEADER_SIZE);
    err = fy_syncset_add(fl, aio, fcntl(f->fd, F_DUPFD_CLOEXEC, 0));
    if (!err)
      f->dirty = false;
  }
  if (!err && (ix->dir_dirty || fy_syncset_count(fl) == 0)) {
    /* nothing dirty: sync the directory anyway, so cb comes from aio */
    err = fy_syncset_add(fl, aio, fy_syncset_open_dir(ix->dir));
    if (!err)
      ix->dir_dirty = false;
  }
  if (!err && ix->parent_dirty) {
    err = sync_parent(ix, fl, aio);
    if (!err)
      ix->parent_dirty = false;
  }
  return err;
}

/* Bytes of snapshot the dirty slot tables need (chunk c of a file at its
 * own place, so a put can copy it there at any time). */
static size_t snap_bytes(const fy_index *ix) {
  size_t bytes = 0;
  for (size_t i = 0; i < ix->nfiles; i++)
    if (ix->files[i].slots && ix->files[i].dirty_chunks)
      bytes += (size_t)ix->files[i].slot_count * 4;
  return bytes;
}

/* Hands each dirty slot table its part of snap and marks its changed chunks
 * pending: from here the flush covers the tables as they are now. */
static void mark_pending(fy_index *ix, uint8_t *snap, uint64_t gen) {
  for (size_t i = 0; i < ix->nfiles; i++) {
    struct ix_file *f = &ix->files[i];
    if (!f->slots || !f->dirty_chunks)
      continue;
    uint32_t chunks = (f->slot_count + IX_SLOT_CHUNK - 1) / IX_SLOT_CHUNK;
    for (uint32_t c = 0; c < chunks; c++)
      if (f->slot_dirty[c] == CH_DIRTY)
        f->slot_dirty[c] = CH_PENDING;
    f->snap = snap;
    f->snap_todo = f->dirty_chunks;
    f->snap_cursor = 0;
    f->dirty_chunks = 0;
    f->slots_gen = gen;
    snap += (size_t)f->slot_count * 4;
  }
}

/* Chunk c of f goes to the next flush (a write of it failed, or never ran). */
static void mark_dirty(struct ix_file *f, uint32_t c) {
  if (!(f->slot_dirty[c] & CH_DIRTY))
    f->dirty_chunks++;
  f->slot_dirty[c] = CH_DIRTY;
  f->dirty = true;
}

/* Takes f's next run of chunks to write, from its cursor: pending or
 * copied chunks, with up to IX_GAP_CHUNKS unchanged ones between them
 * (their bytes equal the file's), at most IX_STEP_CHUNKS. Pending chunks
 * are copied into the snapshot now. Returns the run's first chunk; *end is
 * one past its last. */
static uint32_t take_run(struct ix_file *f, uint32_t *end) {
  uint32_t chunks = (f->slot_count + IX_SLOT_CHUNK - 1) / IX_SLOT_CHUNK;
  uint32_t c = f->snap_cursor;
  while (c < chunks && !(f->slot_dirty[c] & (CH_PENDING | CH_COPIED)))
    c++;
  fy_assert(c < chunks); /* snap_todo > 0: one is at or after the cursor */
  uint32_t first = c, last = c;
  for (; c < chunks && c - first < IX_STEP_CHUNKS; c++) {
    uint8_t fl = f->slot_dirty[c];
    if (fl & (CH_PENDING | CH_COPIED)) {
      if (fl & CH_PENDING)
        chunk_snap(f, c);
      f->slot_dirty[c] = (uint8_t)(fl & CH_DIRTY);
      f->snap_todo--;
      last = c;
    } else if (fl == 0 && c - last <= IX_GAP_CHUNKS) {
      chunk_snap(f, c); /* carried along if another changed chunk follows */
    } else {
      break;
    }
  }
  *end = last + 1;
  f->snap_cursor = last + 1;
  return first;
}

static void on_flushed(void *arg, int status);
static void on_slots_written(fy_aio_req *req, int64_t res);

/* Writes the next run of changed slots, or, when none is left (or the index
 * is gone, or a write failed), starts the fdatasyncs. Returns nonzero only
 * if nothing is in flight afterwards: then the flush is over with that
 * status and on_flushed has not run. */
static int slots_step(struct ix_flush_ctx *ctx) {
  fy_index *ix = ctx->ix;
  for (size_t i = 0; ix && !ctx->status && i < ix->nfiles; i++) {
    struct ix_file *f = &ix->files[i];
    if (!f->snap_todo)
      continue;
    uint32_t end, first = take_run(f, &end);
    uint32_t a = first * IX_SLOT_CHUNK;
    uint32_t b = end * IX_SLOT_CHUNK < f->slot_count ? end * IX_SLOT_CHUNK : f->slot_count;
    const uint8_t *buf = f->snap + (size_t)a * 4;
    if (f->snap_todo == 0)
      f->snap = NULL;
    ctx->write_fd = fcntl(f->fd, F_DUPFD_CLOEXEC, 0); /* the file may go meanwhile */
    if (ctx->write_fd < 0) {
      ctx->status = -errno;
      break;
    }
    ctx->write.data = ctx;
    snprintf(ctx->write_file, sizeof ctx->write_file, "%s", f->name);
    ctx->write_first = first;
    ctx->write_end = end;
    int err = fy_aio_write(ctx->aio, &ctx->write, ctx->write_fd, buf, (size_t)(b - a) * 4,
                           IX_HEADER_SIZE + (uint64_t)a * 4, on_slots_written);
    if (err == 0)
      return 0;
    close(ctx->write_fd);
    ctx->write_fd = -1;
    ctx->status = err;
  }
  if (ctx->status && ix) /* what was not written stays dirty: the next flush has it */
    for (size_t i = 0; i < ix->nfiles; i++) {
      struct ix_file *f = &ix->files[i];
      if (!f->snap_todo)
        continue;
      uint32_t chunks = (f->slot_count + IX_SLOT_CHUNK - 1) / IX_SLOT_CHUNK;
      for (uint32_t c = 0; c < chunks; c++)
        if (f->slot_dirty[c] & (CH_PENDING | CH_COPIED))
          mark_dirty(f, c);
      f->snap_todo = 0;
      f->snap = NULL;
    }
  fy_syncset *syncs = ctx->syncs;
  ctx->syncs = NULL;
  return fy_syncset_start(syncs, ctx->status);
}

static void on_slots_written(fy_aio_req *req, int64_t res) {
  struct ix_flush_ctx *ctx = req->data;
  close(ctx->write_fd);
  ctx->write_fd = -1;
  if (res < 0 && ctx->ix) {
    for (size_t i = 0; i < ctx->ix->nfiles; i++) {
      struct ix_file *f = &ctx->ix->files[i];
      if (f->slots && strncmp(f->name, ctx->write_file, IX_NAME_LEN) == 0)
        for (uint32_t c = ctx->write_first; c < ctx->write_end; c++)
          mark_dirty(f, c);
    }
  }
  if (res < 0 && !ctx->status)
    ctx->status = (int)res;
  int err = slots_step(ctx);
  if (err)
    on_flushed(ctx, err);
}

/* A flush's snapshot buffer: kept from one flush to the next, since fresh
 * memory of many MB costs a page fault per page every time. */
static uint8_t *snap_take(fy_index *ix, size_t bytes, size_t *size) {
  if (ix->snap && ix->snap_size < bytes) {
    munmap(ix->snap, ix->snap_size);
    ix->snap = NULL;
  }
  if (!ix->snap) {
    size_t alloc = (bytes + IX_HUGE_PAGE - 1) / IX_HUGE_PAGE * IX_HUGE_PAGE;
    void *m = table_map(alloc, true);
    if (m == MAP_FAILED)
      return NULL;
    ix->snaps_on_loop++;
    ix->snap = m;
    ix->snap_size = alloc;
  }
  uint8_t *p = ix->snap;
  *size = ix->snap_size;
  ix->snap = NULL;
  return p;
}

/* Makes the snapshot buffer for a flush of the newest file's whole slot
 * table ahead of the first flush (best effort: the flush makes one if
 * this could not). */
static void snap_prepare(fy_index *ix) {
  if (ix->snap || ix->flush_ctx || ix->nfiles == 0)
    return;
  size_t size;
  uint8_t *p = snap_take(ix, (size_t)ix->files[ix->nfiles - 1].slot_count * 4, &size);
  if (p) {
    ix->snap = p;
    ix->snap_size = size;
  }
}

static void snap_give_back(fy_index *ix, struct ix_flush_ctx *ctx) {
  if (ctx->snap && ix && !ix->snap) {
    ix->snap = ctx->snap;
    ix->snap_size = ctx->snap_size;
  } else if (ctx->snap) {
    munmap(ctx->snap, ctx->snap_size);
  }
  ctx->snap = NULL;
}

/* An older file's slot copy goes once a flush wrote its last changes. */
static void on_flushed(void *arg, int status) {
  struct ix_flush_ctx *ctx = arg;
  fy_index *ix = ctx->ix;
  snap_give_back(ix, ctx);
  if (ix) {
    ix->flush_ctx = NULL;
    if (status == 0) {
      for (size_t i = 0; i + 1 < ix->nfiles; i++) {
        struct ix_file *f = &ix->files[i];
        if (f->slots && f->dirty_chunks == 0 && f->slots_gen <= ctx->gen)
          slots_drop(f);
      }
    }
  }
  void (*cb)(void *, int) = ctx->cb;
  void *cb_arg = ctx->arg;
  free(ctx);
  cb(cb_arg, status);
}

int fy_index_flush(fy_index *ix, fy_aio *aio, void (*cb)(void *arg, int status), void *arg) {
  if (ix->flush || ix->flush_ctx)
    return -FY_EBUSY;
  size_t nops = 2;
  for (size_t i = 0; i < ix->nfiles; i++)
    nops += ix->files[i].dirty;
  size_t bytes = snap_bytes(ix);
  struct ix_flush_ctx *ctx = calloc(1, sizeof *ctx);
  if (!ctx)
    return -ENOMEM;
  *ctx = (struct ix_flush_ctx){
      .ix = ix, .gen = ++ix->flush_gen, .aio = aio, .write_fd = -1, .cb = cb, .arg = arg};
  ctx->syncs = fy_syncset_new((unsigned)nops, "index", on_flushed, ctx, &ix->flush);
  if (ctx->syncs && bytes)
    ctx->snap = snap_take(ix, bytes, &ctx->snap_size);
  if (!ctx->syncs || (bytes && !ctx->snap)) {
    if (ctx->syncs)
      fy_syncset_start(ctx->syncs, 0); /* nothing added: frees it */
    snap_give_back(ix, ctx);
    free(ctx);
    return -ENOMEM;
  }
  int err = queue_syncs(ix, ctx->syncs, aio);
  if (err) {
    for (size_t i = 0; i < ix->nfiles; i++) /* their changed slots were not queued */
      if (ix->files[i].dirty_chunks)
        ix->files[i].dirty = true;
    snap_give_back(ix, ctx);
    fy_syncset *syncs = ctx->syncs;
    err = fy_syncset_start(syncs, err); /* cb reports the error, unless nothing was queued */
    if (err)
      free(ctx);
    else
      ix->flush_ctx = ctx;
    return err;
  }
  mark_pending(ix, ctx->snap, ctx->gen);
  ix->flush_ctx = ctx;
  err = slots_step(ctx);
  if (err) {
    ix->flush_ctx = NULL;
    snap_give_back(ix, ctx);
    free(ctx);
  }
  return err;
}
