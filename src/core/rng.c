// rng.c: CPU fills for the counter-based generator in rng.h. Compiled with -ffp-contract=off (CMakeLists.txt) so
// the Gaussian transform rounds exactly as the CUDA kernels do.
#include "rng.h"

#include "common.h"

void rng_normal_fill(float *out, int64_t n, uint64_t seed, uint64_t stream, uint64_t offset) {
    if (n <= 0) return;
    uint64_t first = offset >> 2, last = (offset + (uint64_t)n - 1) >> 2;
#pragma omp parallel for schedule(static) if (n > 4096)
    for (int64_t b = (int64_t)first; b <= (int64_t)last; b++) {
        float z[4];
        rng_normal4(z, seed, stream, (uint64_t)b);
        for (int l = 0; l < 4; l++) {
            uint64_t idx = ((uint64_t)b << 2) + (uint64_t)l;
            if (idx >= offset && idx < offset + (uint64_t)n) out[idx - offset] = z[l];
        }
    }
}

void rng_uniform_fill(float *out, int64_t n, uint64_t seed, uint64_t stream, uint64_t offset) {
#pragma omp parallel for schedule(static) if (n > 4096)
    for (int64_t i = 0; i < n; i++) out[i] = rng_uniform_at(seed, stream, offset + (uint64_t)i);
}

int64_t rng_randint(uint64_t seed, uint64_t stream, uint64_t index, int64_t lo, int64_t hi) {
    CHECK(hi >= lo, "", "rng_randint: empty range [%lld, %lld]", (long long)lo, (long long)hi);
    uint32_t x[4];
    philox4x32_10(x, seed, stream, index);
    uint64_t r = ((uint64_t)x[0] << 32) | x[1];
    uint64_t span = (uint64_t)(hi - lo) + 1;
    // 64-bit draw reduced by a 128-bit multiply: bias below 2^-32 for any span that fits in 32 bits
    return lo + (int64_t)(((unsigned __int128)r * span) >> 64);
}
