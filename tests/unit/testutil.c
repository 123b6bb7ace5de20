/* Shared unit-test helpers; see testutil.h. */
#define _XOPEN_SOURCE 700
#include "testutil.h"

#include <ftw.h>
#include <stdio.h>
#include <sys/mman.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *fy_test_mkdtemp(const char *tag) {
  static char path[512];
  const char *base = getenv("TMPDIR");
  if (!base || !*base)
    base = "/tmp";
  snprintf(path, sizeof path, "%s/ferry-%s-XXXXXX", base, tag);
  if (!mkdtemp(path)) {
    perror("mkdtemp");
    abort();
  }
  return path;
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st; (void)flag; (void)ftw;
  return remove(p);
}

void fy_test_rmtree(const char *path) { nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS); }

static void on_timer(uv_timer_t *t) { *(bool *)t->data = true; }

/* Runs before each poll: once the flag is set (say by a timer that ran at
 * the top of this iteration), the poll must not block until the next
 * event, which may be the deadline. */
static void on_prepare(uv_prepare_t *p) {
  if (*(const bool *)p->data)
    uv_stop(p->loop);
}

bool fy_test_run_until(uv_loop_t *loop, const bool *flag, uint64_t timeout_ms) {
  bool expired = false;
  uv_timer_t timer;
  uv_timer_init(loop, &timer);
  timer.data = &expired;
  uv_timer_start(&timer, on_timer, timeout_ms, 0);
  uv_prepare_t prepare;
  uv_prepare_init(loop, &prepare);
  prepare.data = (void *)flag;
  uv_prepare_start(&prepare, on_prepare);
  while (!*flag && !expired)
    uv_run(loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&timer, NULL);
  uv_close((uv_handle_t *)&prepare, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
  return *flag;
}

bool fy_test_run_until_pred(uv_loop_t *loop, bool (*pred)(void *arg), void *arg,
                            uint64_t timeout_ms) {
  uint64_t deadline = uv_now(loop) + timeout_ms;
  while (!pred(arg)) {
    if (uv_now(loop) >= deadline)
      return false;
    bool never = false;
    fy_test_run_until(loop, &never, 5);
  }
  return true;
}

int fy_test_loop_finish(uv_loop_t *loop) {
  uv_run(loop, UV_RUN_DEFAULT);
  return uv_loop_close(loop);
}

bool fy_test_populate_supported(void) {
  size_t len = 4096;
  void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED)
    return false;
  bool ok = madvise(m, len, MADV_POPULATE_WRITE) == 0;
  munmap(m, len);
  return ok;
}

size_t fy_test_mapped_kb(const char *prefix) {
  FILE *f = fopen("/proc/self/smaps", "r");
  if (!f)
    return 0;
  char line[4096];
  size_t kb = 0, plen = strlen(prefix);
  bool in = false;
  while (fgets(line, sizeof line, f)) {
    unsigned long a, b;
    size_t v;
    if (sscanf(line, "%lx-%lx ", &a, &b) == 2 && strchr(line, '-') < strchr(line, ' ')) {
      char *slash = strchr(line, '/');
      in = slash && strncmp(slash, prefix, plen) == 0;
    } else if (in && sscanf(line, "Rss: %zu kB", &v) == 1) {
      kb += v;
    }
  }
  fclose(f);
  return kb;
}

size_t fy_test_mappings(const char *prefix, const char *flag, size_t *with) {
  FILE *f = fopen("/proc/self/smaps", "r");
  if (!f)
    return 0;
  char line[4096];
  size_t n = 0, w = 0;
  bool in = false; /* inside the block of a mapping that matches */
  size_t plen = strlen(prefix);
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, "VmFlags:", 8) == 0) {
      if (in) {
        /* flags are two letters separated by spaces */
        for (char *t = strtok(line + 8, " \n"); t; t = strtok(NULL, " \n"))
          if (strcmp(t, flag) == 0) {
            w++;
            break;
          }
      }
      in = false;
      continue;
    }
    /* A mapping's header: "start-end perms offset dev inode   path" */
    char *slash = strchr(line, '/');
    unsigned long a, b;
    if (sscanf(line, "%lx-%lx ", &a, &b) == 2 && strchr(line, '-') < strchr(line, ' ')) {
      in = slash && strncmp(slash, prefix, plen) == 0;
      n += in;
    }
  }
  fclose(f);
  if (with)
    *with = w;
  return n;
}
