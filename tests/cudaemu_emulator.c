// cudaemu_emulator.c: the CUDA emulator against exact answers: block reductions through barriers and static shared
// memory, warp-shuffle reductions with dynamic shared memory (block sizes 32 to 1024, sizes not multiples of the
// block), votes and broadcasts, atomics from many blocks, 3-D indices, __syncthreads_or; and what the emulator
// must refuse: a copy whose device side is host memory, and threads deadlocked at different barriers. ctest runs it
// with CUDAEMU_SHUFFLE set (random thread and block order). As cuda_emulator it runs the same kernels on a GPU.
#include <string.h>

#include "cudaemu_util.h"

void emu_block_sum(float *out, const float *in, int n);
void emu_warp_sum(float *out, const float *in, int n, int threads);
void emu_vote(int *count, int *any, int *all, float *bcast, const float *in, int warps);
void emu_atomic(int *hist, float *total, const float *in, int n);
void emu_index(int *out, int nx, int ny, int nz);
void emu_sync_or(int *out, const float *in, int blocks);
void emu_deadlock(float *out);

static void *dalloc(size_t bytes) { return device_alloc(DEVICE_CUDA, bytes); }
static void up(void *d, const void *h, size_t bytes) { device_copy(d, DEVICE_CUDA, h, DEVICE_CPU, bytes); }
static void down(void *h, const void *d, size_t bytes) { device_copy(h, DEVICE_CPU, d, DEVICE_CUDA, bytes); }

// integer-valued inputs, so every order of summation gives the exact same float
static float *int_values(int n, uint64_t tag) {
    float *x = xmalloc(sizeof(float) * (size_t)n);
    rng_normal_fill(x, n, 7, RNG_STREAM(RNG_PURPOSE_TEST, tag, 0), 0);
    for (int i = 0; i < n; i++) x[i] = (float)(int)(x[i] * 4.0f);
    return x;
}

static void test_sums(void) {
    const int n = 5000;
    float *x = int_values(n, 1), *d = dalloc(sizeof(float) * n);
    up(d, x, sizeof(float) * n);
    int threads[] = {32, 96, 256, 1024};
    for (int t = 0; t < 5; t++) {
        int bs = t < 4 ? threads[t] : 256, nb = (n + bs - 1) / bs;
        float *o = dalloc(sizeof(float) * nb), *h = xmalloc(sizeof(float) * nb);
        if (t < 4) emu_warp_sum(o, d, n, bs);
        else emu_block_sum(o, d, n);
        down(h, o, sizeof(float) * nb);
        int bad = 0;
        for (int b = 0; b < nb; b++) {
            float want = 0;
            for (int i = b * bs; i < n && i < (b + 1) * bs; i++) want += x[i];
            bad += h[b] != want;
        }
        tu_check(!bad, "%s sum, %d threads per block: %d of %d blocks wrong", t < 4 ? "warp-shuffle" : "shared-memory",
                 bs, bad, nb);
        device_free(DEVICE_CUDA, o);
        free(h);
    }
    device_free(DEVICE_CUDA, d);
    free(x);
}

static void test_votes(void) {
    const int warps = 8, n = warps * 32;
    float *x = int_values(n, 2);
    for (int i = 0; i < 32; i++) x[i] = 1.0f + (float)i;      // warp 0: all positive
    for (int i = 32; i < 64; i++) x[i] = -1.0f - (float)i;    // warp 1: none
    float *d = dalloc(sizeof(float) * n), *db = dalloc(sizeof(float) * warps);
    int *dc = dalloc(sizeof(int) * warps), *da = dalloc(sizeof(int) * warps), *dl = dalloc(sizeof(int) * warps);
    up(d, x, sizeof(float) * n);
    emu_vote(dc, da, dl, db, d, warps);
    int c[8], a[8], l[8];
    float b[8];
    down(c, dc, sizeof c), down(a, da, sizeof a), down(l, dl, sizeof l), down(b, db, sizeof b);
    int bad = 0;
    for (int w = 0; w < warps; w++) {
        int pos = 0;
        for (int i = 0; i < 32; i++) pos += x[w * 32 + i] > 0.0f;
        bad += c[w] != pos || a[w] != (pos > 0) || l[w] != (pos == 32) || b[w] != x[w * 32];
    }
    tu_check(!bad, "ballot, any, all and shuffle broadcast: %d of %d warps wrong", bad, warps);
    device_free(DEVICE_CUDA, d), device_free(DEVICE_CUDA, db), device_free(DEVICE_CUDA, dc);
    device_free(DEVICE_CUDA, da), device_free(DEVICE_CUDA, dl);
    free(x);
}

static void test_atomics_and_indices(void) {
    const int n = 10007;
    float *x = int_values(n, 3), *d = dalloc(sizeof(float) * n), *dt = dalloc(sizeof(float));
    int *dh = dalloc(sizeof(int) * 8);
    up(d, x, sizeof(float) * n);
    device_zero(DEVICE_CUDA, dh, sizeof(int) * 8);
    device_zero(DEVICE_CUDA, dt, sizeof(float));
    emu_atomic(dh, dt, d, n);
    int h[8], want[8] = {0};
    float total;
    down(h, dh, sizeof h), down(&total, dt, sizeof total);
    for (int i = 0; i < n; i++) want[(int)fminf(fabsf(x[i]), 7.0f)]++;
    tu_check(!memcmp(h, want, sizeof h) && total == (float)n, "atomicAdd (int histogram, float total %.0f of %d)",
             total, n);
    const int nx = 37, ny = 9, nz = 5, m = nx * ny * nz;
    int *di = dalloc(sizeof(int) * m), *hi = xmalloc(sizeof(int) * m);
    emu_index(di, nx, ny, nz);
    down(hi, di, sizeof(int) * m);
    int bad = 0;
    for (int i = 0; i < m; i++) bad += hi[i] != i;
    tu_check(!bad, "3-D grid and block indices: %d of %d elements wrong", bad, m);
    float *neg = xmalloc(sizeof(float) * 96 * 4);
    for (int i = 0; i < 96 * 4; i++) neg[i] = 1.0f;
    neg[96 + 50] = -1.0f, neg[3 * 96 + 95] = -2.0f;
    float *dn = dalloc(sizeof(float) * 96 * 4);
    int *dor = dalloc(sizeof(int) * 4), hor[4];
    up(dn, neg, sizeof(float) * 96 * 4);
    emu_sync_or(dor, dn, 4);
    down(hor, dor, sizeof hor);
    tu_check(hor[0] == 0 && hor[1] == 1 && hor[2] == 0 && hor[3] == 1, "__syncthreads_or: %d %d %d %d", hor[0], hor[1],
             hor[2], hor[3]);
    device_free(DEVICE_CUDA, d), device_free(DEVICE_CUDA, dt), device_free(DEVICE_CUDA, dh);
    device_free(DEVICE_CUDA, di), device_free(DEVICE_CUDA, dn), device_free(DEVICE_CUDA, dor);
    free(x), free(hi), free(neg);
}

static void copy_from_host_as_device(const void *arg) {
    (void)arg;
    float h[4] = {0}, g[4] = {0};
    device_copy(h, DEVICE_CPU, g, DEVICE_CUDA, sizeof h); // g is host memory posing as a device buffer
}
static void run_deadlock(const void *arg) {
    (void)arg;
    emu_deadlock(dalloc(sizeof(float) * 32));
    device_synchronize(DEVICE_CUDA);
}

int main(void) {
    cu_require_gpu();
    test_sums();
    test_votes();
    test_atomics_and_indices();
    if (device_cuda_emulated()) { // what only the emulator can report
        TuChild c;
        tu_run_child(copy_from_host_as_device, NULL, &c);
        tu_check(c.code == 1 && strstr(c.err, "invalid device pointer"),
                 "a copy from host memory given as device memory is an internal failure (exit %d)", c.code);
        tu_child_free(&c);
        tu_run_child(run_deadlock, NULL, &c);
        tu_check(c.code != 0 && strstr(c.err, "deadlock"), "threads at different barriers are reported as a deadlock");
        tu_child_free(&c);
        float *p = dalloc(sizeof(float) * 4), h[4];
        down(h, p, sizeof h);
        tu_check(h[0] == 0.0f, "device_alloc returns zeroed memory");
    }
    return tu_report();
}
