/*
 * A log-linear histogram of latencies (or any non-negative integers), in
 * the style of HdrHistogram: values below FY_HIST_SUB are counted exactly;
 * above, each power of two is cut into FY_HIST_SUB equal buckets, so a value
 * is known to within 1/FY_HIST_SUB (1.6 %) of itself. Fixed size (no
 * allocation), covers the whole uint64_t range, recording is a few
 * instructions. Not thread-safe. The benchmarks measure with it, and the
 * broker keeps its send latency in it (brokerStatus).
 */
#ifndef FY_COMMON_HIST_H
#define FY_COMMON_HIST_H

#include <stdint.h>

#define FY_HIST_SUB_BITS 6
#define FY_HIST_SUB (1u << FY_HIST_SUB_BITS) /* buckets per power of two */
/* FY_HIST_SUB exact buckets, then FY_HIST_SUB per power of two from 2^6 to 2^63. */
#define FY_HIST_BUCKETS (FY_HIST_SUB * (64 - FY_HIST_SUB_BITS + 1))

struct fy_hist {
  uint64_t count;
  uint64_t min, max;
  double sum;
  uint64_t buckets[FY_HIST_BUCKETS];
};

void fy_hist_init(struct fy_hist *h);
void fy_hist_record(struct fy_hist *h, uint64_t v);
/* Adds every count of src to dst. */
void fy_hist_merge(struct fy_hist *dst, const struct fy_hist *src);

/*
 * The value at percentile p (0..100): the smallest recorded value v such
 * that at least p % of the values are <= v, reported as the highest value of
 * v's bucket (never above max, never below min), so it is at most 1/64 above
 * the exact percentile and never below it. 0 when empty.
 */
uint64_t fy_hist_percentile(const struct fy_hist *h, double p);
double fy_hist_mean(const struct fy_hist *h);

/* Bucket of v and the value range [lo, hi] a bucket covers (exposed for tests). */
uint32_t fy_hist_bucket(uint64_t v);
void fy_hist_bucket_range(uint32_t b, uint64_t *lo, uint64_t *hi);

#endif
