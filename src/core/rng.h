// rng.h: counter-based random numbers (Philox4x32-10) keyed by (seed, stream, index).
// Every draw is a pure function of its key, so the same normal sample comes out on the CPU and on the GPU and for
// any split of the work across threads or ranks: the noise for global sample s at step t is
// rng_normal_fill(seed, RNG_STREAM(purpose, s, t), ...) wherever it is computed.
// The Gaussian transform uses only correctly rounded IEEE double operations (+, -, *, /, sqrt) with a fixed
// evaluation order: log and sin/cos are evaluated by our own series below, not by libm or CUDA's math library,
// whose last bits differ. This header is shared with the CUDA kernels (RNG_HD marks host+device functions); C
// translation units that include it are compiled with -ffp-contract=off so no FMA changes the rounding.
#pragma once
#include <stdint.h>

#ifdef __CUDACC__
#define RNG_HD __host__ __device__ __forceinline__
#endif
#if defined(__CUDA_ARCH__)
#define RNG_ADD(a, b) __dadd_rn((a), (b))
#define RNG_SUB(a, b) __dsub_rn((a), (b))
#define RNG_MUL(a, b) __dmul_rn((a), (b))
#define RNG_DIV(a, b) __ddiv_rn((a), (b))
#define RNG_SQRT(a) __dsqrt_rn(a)
#else
#include <math.h>
#ifndef RNG_HD
#define RNG_HD static inline
#endif
#define RNG_ADD(a, b) ((a) + (b))
#define RNG_SUB(a, b) ((a) - (b))
#define RNG_MUL(a, b) ((a) * (b))
#define RNG_DIV(a, b) ((a) / (b))
#define RNG_SQRT(a) sqrt(a)
#endif

// Stream ids: a purpose tag (8 bits), a global sample index (28 bits), a step (28 bits).
enum { RNG_PURPOSE_LATENT = 1, RNG_PURPOSE_STEP_NOISE = 2, RNG_PURPOSE_SCHEDULE = 3, RNG_PURPOSE_INIT = 4,
       RNG_PURPOSE_DATA = 5, RNG_PURPOSE_TEST = 255 };
#define RNG_STREAM(purpose, sample, step)                                                                    \
    (((uint64_t)(purpose) << 56) | (((uint64_t)(sample) & 0xFFFFFFFull) << 28) | ((uint64_t)(step) & 0xFFFFFFFull))

RNG_HD uint32_t rng_mulhilo(uint32_t a, uint32_t b, uint32_t *hi) {
    uint64_t p = (uint64_t)a * (uint64_t)b;
    *hi = (uint32_t)(p >> 32);
    return (uint32_t)p;
}

// Philox4x32-10: 128-bit counter (block index, stream), 64-bit key (seed).
RNG_HD void philox4x32_10(uint32_t out[4], uint64_t seed, uint64_t stream, uint64_t block) {
    uint32_t c0 = (uint32_t)block, c1 = (uint32_t)(block >> 32), c2 = (uint32_t)stream, c3 = (uint32_t)(stream >> 32);
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int r = 0; r < 10; r++) {
        uint32_t hi0, hi1;
        uint32_t lo0 = rng_mulhilo(0xD2511F53u, c0, &hi0);
        uint32_t lo1 = rng_mulhilo(0xCD9E8D57u, c2, &hi1);
        uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
        c0 = n0; c1 = lo1; c2 = n2; c3 = lo0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

// Natural log of u in (0, 1], |error| ~ 1e-16, by atanh series; exact-rounded ops only.
RNG_HD double rng_log(double u) {
    int e = 0;
    // scale u into [2^-1, 1) by exact multiplications (u >= 2^-32 here)
    while (u < 0.5) { u = RNG_MUL(u, 2.0); e--; }
    if (u < 0.70710678118654752440) { u = RNG_MUL(u, 2.0); e--; }
    double s = RNG_DIV(RNG_SUB(u, 1.0), RNG_ADD(u, 1.0));
    double s2 = RNG_MUL(s, s);
    double p = 1.0 / 25.0;
    const double inv[12] = {1.0 / 23.0, 1.0 / 21.0, 1.0 / 19.0, 1.0 / 17.0, 1.0 / 15.0, 1.0 / 13.0,
                            1.0 / 11.0, 1.0 / 9.0,  1.0 / 7.0,  1.0 / 5.0,  1.0 / 3.0,  1.0};
    for (int i = 0; i < 12; i++) p = RNG_ADD(RNG_MUL(p, s2), inv[i]);
    double lm = RNG_MUL(RNG_MUL(2.0, s), p);
    return RNG_ADD(RNG_MUL((double)e, 0.69314718055994530942), lm);
}

// sin and cos of 2*pi*v for v in [0, 1).
RNG_HD void rng_sincos2pi(double v, double *sn, double *cs) {
    double q = (double)(int64_t)RNG_ADD(RNG_MUL(v, 4.0), 0.5); // nearest quarter turn, exact
    double r = RNG_SUB(v, RNG_MUL(q, 0.25));                   // in [-1/8, 1/8], exact
    double x = RNG_MUL(r, 6.28318530717958647693);
    double x2 = RNG_MUL(x, x);
    // Taylor series in nested form to x^17 (sin) and x^18 (cos); |x| <= pi/4 so truncation < 1e-19.
    // sin: x * (1 - x2/6 (1 - x2/20 (1 - x2/42 (1 - x2/72 (1 - x2/110 (1 - x2/156 (1 - x2/210 (1 - x2/272))))))))
    const double ds[8] = {272.0, 210.0, 156.0, 110.0, 72.0, 42.0, 20.0, 6.0};
    const double dc[9] = {306.0, 240.0, 182.0, 132.0, 90.0, 56.0, 30.0, 12.0, 2.0};
    double s = 1.0;
    for (int i = 0; i < 8; i++) s = RNG_SUB(1.0, RNG_MUL(RNG_DIV(x2, ds[i]), s));
    s = RNG_MUL(x, s);
    double cc = 1.0;
    for (int i = 0; i < 9; i++) cc = RNG_SUB(1.0, RNG_MUL(RNG_DIV(x2, dc[i]), cc));
    int qi = ((int)q) & 3;
    double ps = qi == 0 ? s : qi == 1 ? cc : qi == 2 ? -s : -cc;
    double pc = qi == 0 ? cc : qi == 1 ? -s : qi == 2 ? -cc : s;
    *sn = ps;
    *cs = pc;
}

// Four standard normals from one Philox block (Box-Muller on lanes (0,1) and (2,3)).
RNG_HD void rng_normal4(float out[4], uint64_t seed, uint64_t stream, uint64_t block) {
    uint32_t x[4];
    philox4x32_10(x, seed, stream, block);
    for (int p = 0; p < 2; p++) {
        double u = RNG_MUL((double)x[2 * p] + 1.0, 2.3283064365386962890625e-10); // (0, 1]
        double v = RNG_MUL((double)x[2 * p + 1], 2.3283064365386962890625e-10);  // [0, 1)
        double r = RNG_SQRT(RNG_MUL(-2.0, rng_log(u)));
        double sn, cs;
        rng_sincos2pi(v, &sn, &cs);
        out[2 * p] = (float)RNG_MUL(r, cs);
        out[2 * p + 1] = (float)RNG_MUL(r, sn);
    }
}

// Uniform float in [0, 1) from element index (24 random bits).
RNG_HD float rng_uniform_at(uint64_t seed, uint64_t stream, uint64_t index) {
    uint32_t x[4];
    philox4x32_10(x, seed, stream, index >> 2);
    return (float)(x[index & 3] >> 8) * (1.0f / 16777216.0f);
}

#ifndef __CUDACC__
#ifdef __cplusplus
extern "C" {
#endif
// out[i] = normal sample number (offset + i) of stream (seed, stream); OpenMP-parallel, any offset.
void rng_normal_fill(float *out, int64_t n, uint64_t seed, uint64_t stream, uint64_t offset);
// out[i] = uniform [0,1) sample number (offset + i).
void rng_uniform_fill(float *out, int64_t n, uint64_t seed, uint64_t stream, uint64_t offset);
// Integer uniform in [lo, hi] (inclusive) from draw number index of the stream.
int64_t rng_randint(uint64_t seed, uint64_t stream, uint64_t index, int64_t lo, int64_t hi);
#ifdef __cplusplus
}
#endif
#endif
