#include "common/clock.h"

#include <stdbool.h>
#include <time.h>

#include "common/log.h"

static _Thread_local struct {
  unsigned depth; /* open scopes */
  bool have_mono, have_real;
  uint64_t mono_ns;
  int64_t real_ms;
} batch;

void fy_clock_batch_begin(void) { batch.depth++; }

void fy_clock_batch_end(void) {
  fy_assert(batch.depth > 0);
  if (--batch.depth == 0)
    batch.have_mono = batch.have_real = false;
}

uint64_t fy_clock_mono_ns(void) {
  if (batch.have_mono)
    return batch.mono_ns;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  uint64_t ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
  if (batch.depth) {
    batch.mono_ns = ns;
    batch.have_mono = true;
  }
  return ns;
}

int64_t fy_clock_real_ms(void) {
  if (batch.have_real)
    return batch.real_ms;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  int64_t ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
  if (batch.depth) {
    batch.real_ms = ms;
    batch.have_real = true;
  }
  return ms;
}
