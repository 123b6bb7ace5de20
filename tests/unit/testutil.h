/* Helpers shared by the unit tests: scratch directories and loop running. */
#ifndef FY_TESTS_TESTUTIL_H
#define FY_TESTS_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* Creates a fresh empty directory under $TMPDIR (or /tmp) and returns its
 * path (static storage until the next call). */
const char *fy_test_mkdtemp(const char *tag);
/* rm -rf path. */
void fy_test_rmtree(const char *path);
/* Runs loop until *flag becomes true or timeout_ms passes; returns *flag. */
bool fy_test_run_until(uv_loop_t *loop, const bool *flag, uint64_t timeout_ms);
/* Runs loop until pred(arg) holds (checked every few ms) or timeout_ms
 * passes; returns whether it holds. */
bool fy_test_run_until_pred(uv_loop_t *loop, bool (*pred)(void *arg), void *arg,
                            uint64_t timeout_ms);
/* Runs the loop until nothing is left to do, then closes it; returns
 * uv_loop_close's result (0 = no leaked handles). */
int fy_test_loop_finish(uv_loop_t *loop);

/* Looks up this process's mappings of files whose path starts with prefix in
 * /proc/self/smaps: how many there are, and how many carry VmFlags flag
 * (e.g. "rr" for MADV_RANDOM) in *with (may be NULL). */
size_t fy_test_mappings(const char *prefix, const char *flag, size_t *with);
/* KiB of this process's mappings of files under `prefix` that its page
 * tables map now (the Rss of /proc/self/smaps). */
size_t fy_test_mapped_kb(const char *prefix);
/* Whether this kernel has madvise(MADV_POPULATE_WRITE) (Linux 5.14). */
bool fy_test_populate_supported(void);

#endif
