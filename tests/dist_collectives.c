// dist_collectives.c: the collectives of src/dist/dist.h on 1 and 3 ranks (a count that is not a power of two):
// the padded shard layout covers every element once, reduce-scatter / all-gather / all-reduce give exact sums (on
// integer-valued floats), all-reduce gives the same bits on every rank and on every call, and the partial block
// at the end of a buffer survives the all-gather. The test starts itself again under mpirun.
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../src/core/common.h"
#include "../src/core/rng.h"
#include "../src/dist/dist.h"

static int fails, checks;
#define EXPECT(cond, ...)                                                                                      \
    do {                                                                                                       \
        checks++;                                                                                              \
        if (!(cond)) {                                                                                         \
            fails++;                                                                                           \
            printf("[rank %d] FAIL line %d: ", dist_rank(), __LINE__);                                         \
            printf(__VA_ARGS__);                                                                               \
            printf("\n");                                                                                      \
        }                                                                                                      \
    } while (0)

static void layouts(void) {
    const int64_t ns[] = {0, 1, 63, 64, 65, 1000, 95108, 859520964};
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++)
        for (int size = 1; size <= 9; size++) {
            int64_t next = 0;
            for (int r = 0; r < size; r++) {
                DistShard s;
                dist_shard_init(&s, ns[i], size, r);
                EXPECT(s.shard % 64 == 0 && s.padded == s.shard * size && s.padded >= s.n, "n %lld size %d",
                       (long long)ns[i], size);
                EXPECT(dist_shard_lo(&s) == next && dist_shard_count(&s) >= 0 && dist_shard_count(&s) <= s.shard,
                       "n %lld rank %d of %d: lo %lld count %lld", (long long)ns[i], r, size,
                       (long long)dist_shard_lo(&s), (long long)dist_shard_count(&s));
                next += dist_shard_count(&s);
            }
            EXPECT(next == ns[i], "n %lld size %d: ranges cover %lld", (long long)ns[i], size, (long long)next);
        }
}

static void sums(void) {
    int R = dist_size(), r = dist_rank();
    const int64_t n = 1000 * 64 + 37; // a partial block at the end
    DistShard s;
    dist_shard_init(&s, n, R, r);
    float *g = xcalloc((size_t)s.padded, sizeof(float));
    for (int64_t i = 0; i < n; i++) g[i] = (float)((r + 1) * (i % 1000));
    float *mine = xcalloc((size_t)s.shard, sizeof(float));
    DistQueue q = {0};
    dist_reduce_scatter_start_f32(g, 0, s.padded, &s, mine, &q);
    dist_queue_wait(&q);
    int ok = 1;
    for (int64_t i = 0; i < dist_shard_count(&s); i++)
        ok &= mine[i] == (float)((R * (R + 1) / 2) * ((dist_shard_lo(&s) + i) % 1000));
    EXPECT(ok, "reduce-scatter sums");
    // the same sums in uneven buckets started from the end (as during a backward), tested while queued
    memset(mine, 0, sizeof(float) * (size_t)s.shard);
    for (int64_t hi = s.padded, step = 997; hi > 0; hi -= step, step = step * 3 % 20011 + 1) {
        dist_reduce_scatter_start_f32(g, hi > step ? hi - step : 0, hi, &s, mine, &q);
        dist_queue_test(&q);
    }
    dist_queue_wait(&q);
    ok = 1;
    for (int64_t i = 0; i < dist_shard_count(&s); i++)
        ok &= mine[i] == (float)((R * (R + 1) / 2) * ((dist_shard_lo(&s) + i) % 1000));
    EXPECT(ok, "reduce-scatter sums in buckets");
    float *h = xmalloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) h[i] = (float)(r + i % 5);
    for (int64_t hi = n, step = 4099; hi > 0; hi -= step) dist_allreduce_start_f32(h + (hi > step ? hi - step : 0),
                                                                                    hi > step ? step : hi, &q);
    dist_queue_wait(&q);
    dist_queue_free(&q);
    ok = 1;
    for (int64_t i = 0; i < n; i++) ok &= h[i] == (float)(R * (R - 1) / 2 + R * (i % 5));
    EXPECT(ok, "all-reduce sums in buckets");
    free(h);
    free(mine);
    float *p = xcalloc((size_t)n, sizeof(float));
    for (int64_t i = 0; i < dist_shard_count(&s); i++) p[dist_shard_lo(&s) + i] = (float)(dist_shard_lo(&s) + i);
    dist_allgather_f32(p, &s);
    ok = 1;
    for (int64_t i = 0; i < n; i++) ok &= p[i] == (float)i;
    EXPECT(ok, "all-gather restores every element, the last partial block included");
    for (int64_t i = 0; i < n; i++) g[i] = (float)(r - i % 7);
    dist_allreduce_sum_f32(g, n);
    ok = 1;
    for (int64_t i = 0; i < n; i++) ok &= g[i] == (float)(R * (R - 1) / 2 - R * (i % 7));
    EXPECT(ok, "all-reduce sums");
    double d[2] = {r + 0.5, -r}, all[64];
    dist_allreduce_sum_f64(d, 2);
    EXPECT(d[0] == R * R / 2.0 && d[1] == -(R * (R - 1) / 2), "f64 sums %g %g", d[0], d[1]);
    d[0] = r;
    dist_allreduce_max_f64(d, 1);
    EXPECT(d[0] == R - 1 && dist_allreduce_max_int(r == 1 ? 7 : 0) == (R > 1 ? 7 : 0), "maxima");
    dist_allgather_f64(d + 1, 1, all);
    EXPECT(all[R - 1] == d[1], "all-gather of doubles");
    free(g);
    free(p);
}

// Random floats (sums that round): the same bits on every rank, and the same again on a second call.
static void same_bits(void) {
    const int64_t n = 100000;
    float *a = xmalloc(sizeof(float) * n), *b = xmalloc(sizeof(float) * n);
    rng_normal_fill(a, n, 7, (uint64_t)dist_rank(), 0);
    memcpy(b, a, sizeof(float) * n);
    dist_allreduce_sum_f32(a, n);
    dist_allreduce_sum_f32(b, n);
    EXPECT(!memcmp(a, b, sizeof(float) * n), "all-reduce repeats bit for bit");
    double h = 0;
    for (int64_t i = 0; i < n; i++) h = h * 1.0000001 + a[i];
    double lo = h, hi = h;
    lo = -lo;
    dist_allreduce_max_f64(&lo, 1);
    dist_allreduce_max_f64(&hi, 1);
    EXPECT(-lo == hi, "all-reduce gives every rank the same bits");
    free(a);
    free(b);
}

static int child(void) {
    dist_init(NULL, NULL);
    layouts();
    sums();
    same_bits();
    int bad = dist_allreduce_max_int(fails);
    if (dist_rank() == 0) printf("%d rank%s: %d checks, %s\n", dist_size(), dist_size() > 1 ? "s" : "", checks,
                                 bad ? "FAILED" : "passed");
    dist_finalize();
    return bad ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--child")) return child();
    const char *mpiexec = getenv("DRTUNE_MPIEXEC");
    if (!mpiexec) {
        printf("skipped: DRTUNE_MPIEXEC comes from ctest\n");
        return 77;
    }
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    char self[1024], cmd[4 * 1024 + 64];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0) return 1;
    self[len] = 0;
    fflush(stdout);
    snprintf(cmd, sizeof cmd, "'%s' --child && '%s' --oversubscribe -np 3 '%s' --child", self, mpiexec, self);
    return system(cmd) == 0 ? 0 : 1;
}
