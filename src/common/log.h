/*
 * Logging: one line per event on stderr, "2026-11-25T18:47:12.123Z LEVEL module: text".
 * Lines are written with a single write(2) so concurrent processes sharing a
 * terminal or file do not interleave within a line.
 */
#ifndef FY_COMMON_LOG_H
#define FY_COMMON_LOG_H

enum fy_log_level { FY_LOG_DEBUG, FY_LOG_INFO, FY_LOG_WARN, FY_LOG_ERROR };

void fy_log_set_level(enum fy_log_level level);
void fy_log(enum fy_log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define fy_debug(mod, ...) fy_log(FY_LOG_DEBUG, mod, __VA_ARGS__)
#define fy_info(mod, ...) fy_log(FY_LOG_INFO, mod, __VA_ARGS__)
#define fy_warn(mod, ...) fy_log(FY_LOG_WARN, mod, __VA_ARGS__)
#define fy_error(mod, ...) fy_log(FY_LOG_ERROR, mod, __VA_ARGS__)

/* Cheap invariant checks that stay on in release builds. */
#define fy_assert(cond)                                                        \
  do {                                                                         \
    if (__builtin_expect(!(cond), 0))                                          \
      fy__assert_fail(#cond, __FILE__, __LINE__);                              \
  } while (0)

_Noreturn void fy__assert_fail(const char *expr, const char *file, int line);

#endif
