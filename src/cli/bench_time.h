// bench_time.h: the timing rule of the benchmarks (drtune bench cuda, unet, gpu, cpu): one warm-up call, then the
// median of `reps` timed calls, the device synchronised around each so that queued GPU work is counted.
#pragma once
#include "core/common.h"
#include "core/device.h"

#define BENCH_MAX_REPS 16

typedef void (*BenchFn)(void *);

// the median of n times (sorted in place; the upper middle one for even n)
static inline double bench_median_of(double *t, int n) {
    for (int i = 1; i < n; i++) // insertion sort
        for (int j = i; j > 0 && t[j] < t[j - 1]; j--) {
            double x = t[j];
            t[j] = t[j - 1], t[j - 1] = x;
        }
    return t[n / 2];
}

// median seconds per call of fn(arg) over reps (1..BENCH_MAX_REPS) timed calls after one warm-up
static inline double bench_median(BenchFn fn, void *arg, Device d, int reps) {
    double t[BENCH_MAX_REPS];
    CHECK(reps >= 1 && reps <= BENCH_MAX_REPS, "", "bench_median: %d repetitions", reps);
    fn(arg);
    device_synchronize(d);
    for (int i = 0; i < reps; i++) {
        double t0 = dt_now();
        fn(arg);
        device_synchronize(d);
        t[i] = dt_now() - t0;
    }
    return bench_median_of(t, reps);
}
