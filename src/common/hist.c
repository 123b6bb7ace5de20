/*
 * Log-linear histogram (see hist.h). Bucket b:
 *   b < SUB                 the value b itself
 *   b = SUB + g*SUB + s     values [(SUB + s) << g, ((SUB + s + 1) << g) - 1],
 *                           g = msb(v) - SUB_BITS, s = the SUB_BITS bits after the msb
 * so every bucket's width is at most 1/SUB of its lowest value.
 */
#include "common/hist.h"

#include <string.h>

_Static_assert(FY_HIST_BUCKETS == 64 * 59, "6 sub-bucket bits: 3776 buckets");

void fy_hist_init(struct fy_hist *h) {
  memset(h, 0, sizeof *h);
  h->min = UINT64_MAX;
}

uint32_t fy_hist_bucket(uint64_t v) {
  if (v < FY_HIST_SUB)
    return (uint32_t)v;
  unsigned msb = 63u - (unsigned)__builtin_clzll(v);
  unsigned g = msb - FY_HIST_SUB_BITS;
  uint32_t s = (uint32_t)(v >> g) - FY_HIST_SUB; /* v >> g is in [SUB, 2*SUB) */
  return FY_HIST_SUB + g * FY_HIST_SUB + s;
}

void fy_hist_bucket_range(uint32_t b, uint64_t *lo, uint64_t *hi) {
  if (b < FY_HIST_SUB) {
    *lo = *hi = b;
    return;
  }
  unsigned g = (b - FY_HIST_SUB) / FY_HIST_SUB;
  uint64_t s = (b - FY_HIST_SUB) % FY_HIST_SUB;
  *lo = (FY_HIST_SUB + s) << g;
  *hi = *lo + ((UINT64_C(1) << g) - 1); /* no overflow: the top bucket ends at UINT64_MAX */
}

void fy_hist_record(struct fy_hist *h, uint64_t v) {
  h->buckets[fy_hist_bucket(v)]++;
  h->count++;
  h->sum += (double)v;
  if (v < h->min)
    h->min = v;
  if (v > h->max)
    h->max = v;
}

void fy_hist_merge(struct fy_hist *dst, const struct fy_hist *src) {
  for (uint32_t b = 0; b < FY_HIST_BUCKETS; b++)
    dst->buckets[b] += src->buckets[b];
  dst->count += src->count;
  dst->sum += src->sum;
  if (src->min < dst->min)
    dst->min = src->min;
  if (src->max > dst->max)
    dst->max = src->max;
}

uint64_t fy_hist_percentile(const struct fy_hist *h, double p) {
  if (h->count == 0)
    return 0;
  if (p <= 0)
    return h->min;
  if (p >= 100)
    return h->max;
  /* rank: the ceil(p% of count)-th smallest value, 1-based */
  double want = p / 100.0 * (double)h->count;
  uint64_t rank = (uint64_t)want;
  if ((double)rank < want)
    rank++;
  if (rank == 0)
    rank = 1;
  uint64_t seen = 0;
  for (uint32_t b = 0; b < FY_HIST_BUCKETS; b++) {
    seen += h->buckets[b];
    if (seen >= rank) {
      uint64_t lo, hi;
      fy_hist_bucket_range(b, &lo, &hi);
      if (hi > h->max)
        hi = h->max;
      return hi < h->min ? h->min : hi;
    }
  }
  return h->max;
}

double fy_hist_mean(const struct fy_hist *h) {
  return h->count ? h->sum / (double)h->count : 0.0;
}
