// core_rng.c: the counter-based generator: Philox known-answer vectors, exactness of our log/sin/cos, normal
// statistics, and independence of the samples from how the work is split (offsets, threads).
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../src/core/common.h"
#include "../src/core/rng.h"
#include "testutil.h"

static void check_kat(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1,
                      const uint32_t want[4]) {
    uint32_t out[4];
    philox4x32_10(out, ((uint64_t)k1 << 32) | k0, ((uint64_t)c3 << 32) | c2, ((uint64_t)c1 << 32) | c0);
    TU_EXPECT(!memcmp(out, want, sizeof out), "philox KAT: got %08x %08x %08x %08x", out[0], out[1], out[2], out[3]);
}

int main(void) {
    // Known-answer vectors of Philox4x32-10 (Salmon et al., SC'11, Random123 kat_vectors)
    check_kat(0, 0, 0, 0, 0, 0, (const uint32_t[]){0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8});
    check_kat(0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff,
              (const uint32_t[]){0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd});
    check_kat(0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0,
              (const uint32_t[]){0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1});

    // our log and sincos against libm over the ranges used by Box-Muller
    double worst_log = 0, worst_trig = 0;
    for (int i = 1; i <= 200000; i++) {
        double u = (double)i * 2.3283064365386962890625e-10 * 21474.0; // (0, 1]
        if (u > 1.0) break;
        double e = fabs(rng_log(u) - log(u)) / fabs(log(u) == 0 ? 1 : log(u));
        if (e > worst_log) worst_log = e;
    }
    for (int i = 0; i < 100000; i++) {
        double v = i / 100000.0, s, c;
        rng_sincos2pi(v, &s, &c);
        double es = fabs(s - sin(2 * M_PI * v)), ec = fabs(c - cos(2 * M_PI * v));
        if (es > worst_trig) worst_trig = es;
        if (ec > worst_trig) worst_trig = ec;
    }
    // a few ulps: the libm references themselves round 2*pi*v, which alone costs up to ~7e-16 near v = 1
    TU_EXPECT(worst_log < 1e-15, "rng_log relative error %.3g", worst_log);
    TU_EXPECT(worst_trig < 1e-15, "rng_sincos2pi abs error %.3g", worst_trig);

    // normal statistics over 2^20 samples: mean and variance within 5 standard errors, tails present
    int64_t n = 1 << 20;
    float *z = xmalloc(sizeof(float) * (size_t)n);
    rng_normal_fill(z, n, 42, RNG_STREAM(RNG_PURPOSE_LATENT, 3, 7), 0);
    double m = 0, v = 0, k4 = 0;
    int64_t beyond3 = 0;
    for (int64_t i = 0; i < n; i++) m += z[i];
    m /= (double)n;
    for (int64_t i = 0; i < n; i++) {
        double d = z[i] - m;
        v += d * d;
        k4 += d * d * d * d;
        beyond3 += fabs(z[i]) > 3.0;
    }
    v /= (double)n;
    k4 /= (double)n * v * v;
    TU_EXPECT(fabs(m) < 5.0 / sqrt((double)n), "normal mean %.5f", m);
    TU_EXPECT(fabs(v - 1.0) < 5.0 * sqrt(2.0 / (double)n), "normal variance %.5f", v);
    TU_EXPECT(fabs(k4 - 3.0) < 0.05, "normal kurtosis %.4f", k4);
    double p3 = (double)beyond3 / (double)n; // 0.0027 for a normal
    TU_EXPECT(fabs(p3 - 0.0026998) < 0.0004, "P(|z| > 3) = %.5f", p3);

    // split invariance: any offset / piece decomposition yields the same samples
    float *w = xmalloc(sizeof(float) * (size_t)n);
    int64_t cuts[] = {0, 1, 7, 4096, 4099, 300001, n};
    for (int c = 0; c + 1 < (int)(sizeof cuts / sizeof cuts[0]); c++)
        rng_normal_fill(w + cuts[c], cuts[c + 1] - cuts[c], 42, RNG_STREAM(RNG_PURPOSE_LATENT, 3, 7),
                        (uint64_t)cuts[c]);
    TU_EXPECT(!memcmp(z, w, sizeof(float) * (size_t)n), "normal samples depend on how the fill is split");
    // different streams and seeds differ
    rng_normal_fill(w, 64, 42, RNG_STREAM(RNG_PURPOSE_LATENT, 4, 7), 0);
    TU_EXPECT(memcmp(z, w, 64 * sizeof(float)) != 0, "streams of different samples coincide");
    rng_normal_fill(w, 64, 43, RNG_STREAM(RNG_PURPOSE_LATENT, 3, 7), 0);
    TU_EXPECT(memcmp(z, w, 64 * sizeof(float)) != 0, "streams of different seeds coincide");

    // randint covers its inclusive range uniformly
    int hist[7] = {0};
    for (int i = 0; i < 70000; i++) hist[rng_randint(5, 9, (uint64_t)i, 1, 7) - 1]++;
    for (int i = 0; i < 7; i++)
        TU_EXPECT(hist[i] > 9400 && hist[i] < 10600, "randint bucket %d has %d", i + 1, hist[i]);
    float u[1000];
    rng_uniform_fill(u, 1000, 1, 2, 0);
    int in_range = 1;
    for (int i = 0; i < 1000; i++) in_range &= u[i] >= 0.0f && u[i] < 1.0f;
    TU_EXPECT(in_range, "uniform outside [0, 1)");
    free(z);
    free(w);
    return tu_report();
}
