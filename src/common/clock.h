/*
 * Clock reads shared by a batch of work.
 *
 * A clock_gettime costs about 25 ns on the VMs Ferry is measured on, and a
 * single send used to read the clock up to five times: its arrival, the id
 * the broker makes when the client gave none, the born and store
 * timestamps, and its answer. Inside a batch scope (a connection handling
 * the frames of one read, a drain of io_uring completions) the first read
 * of each clock is kept, and the rest of the scope sees that instant: a
 * scope lasts tens of microseconds, far below the millisecond of the
 * timestamps and the resolution of the latency figures. Outside any scope
 * every call reads the clock.
 *
 * Per thread: each event-loop thread has its own scope and cache. Scopes
 * nest; the cache is dropped when the outermost one ends.
 */
#ifndef FY_COMMON_CLOCK_H
#define FY_COMMON_CLOCK_H

#include <stdint.h>

void fy_clock_batch_begin(void);
void fy_clock_batch_end(void);

/* CLOCK_MONOTONIC in nanoseconds (uv_hrtime's clock). */
uint64_t fy_clock_mono_ns(void);
/* CLOCK_REALTIME in milliseconds since the epoch. */
int64_t fy_clock_real_ms(void);

#endif
