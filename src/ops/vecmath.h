// vecmath.h: exp and erf in fp32 without branches or library calls, for the CPU ops: loops over them vectorise
// (loops over expf and erff from libm do not), within a few ulp of the exact values (below).
#pragma once
#include <math.h>
#include <stdint.h>
#include <string.h>

// The polynomials are Chebyshev interpolants fitted in long double: degree 6 for e^r on |r| <= ln 2 / 2 (relative
// error 2.5e-9), degree 6 in t = x^2 for erf(x) / x on |x| < 1 (1.2e-9), degree 8 for log erfc(x) + x^2 on
// [1, 3.92] (1.2e-8 absolute); the fp32 evaluation adds its rounding. Measured against double-precision erf over
// every float in [-4.5, 4.5]: erf_f32 within 2.55 ulp (at x = 0.99; glibc's erff 0.97); exp_f32 within 1.36 ulp
// over [-104, 89] (every 7th float; glibc's expf 0.50). tests/gradcheck_activation.c asserts 3 and 2 ulp on a dense
// grid. No FMA contraction is assumed (the build turns it off).
#define LOG2E 1.44269504088896341f
#define LN2_HI 0.693145751953125f      // ln 2 in 16 significant bits: n * LN2_HI is exact for |n| < 2^8
#define LN2_LO 1.42860682030941723e-6f // ln 2 - LN2_HI
#define ROUND_MAGIC 12582912.0f        // 1.5 * 2^23: adding it rounds to an integer, kept in the low mantissa bits
#define ERF_ONE 3.92f                  // from here on erf(x) rounds to 1 in fp32

static inline float f32_from_bits(uint32_t i) {
    float f;
    memcpy(&f, &i, sizeof f);
    return f;
}

static inline int32_t f32_bits(float f) {
    int32_t i;
    memcpy(&i, &f, sizeof i);
    return i;
}

// e^x = 2^n e^r with n = round(x / ln 2), r = x - n ln 2; 2^n is applied as two normal powers of two, so results
// down to the subnormal range and up to overflow (inf) come out right; NaN stays NaN.
static inline float exp_f32(float x) {
    x = x < -104.0f ? -104.0f : x; // e^-104 is below the smallest subnormal
    x = x > 89.0f ? 89.0f : x;     // e^89 overflows to inf
    float k = x * LOG2E + ROUND_MAGIC, n = k - ROUND_MAGIC;
    float r = (x - n * LN2_HI) - n * LN2_LO;
    float p = 1.394111035e-03f;
    p = p * r + 8.375127947e-03f;
    p = p * r + 4.166635287e-02f;
    p = p * r + 1.666641550e-01f;
    p = p * r + 5.000000047e-01f;
    p = p * r + 1.000000038e+00f;
    p = p * r + 1.0f;
    // n in [-150, 129] (any value for a NaN argument: unsigned arithmetic, and p is NaN then)
    uint32_t ni = (uint32_t)f32_bits(k) - (uint32_t)f32_bits(ROUND_MAGIC), h = (uint32_t)((int32_t)ni >> 1);
    return p * f32_from_bits((h + 127u) << 23) * f32_from_bits((ni - h + 127u) << 23);
}

// erf(x) = x P(x^2) for |x| < 1; sign(x) (1 - e^Q(|x|)) with Q(a) = R(a - 2.46) - a^2 ~ log erfc(a) up to ERF_ONE;
// sign(x) beyond; NaN stays NaN.
static inline float erf_f32(float x) {
    float a = fabsf(x), t = x * x;
    float p = 7.875875038e-05f;
    p = p * t - 8.016864279e-04f;
    p = p * t + 5.189087422e-03f;
    p = p * t - 2.685421201e-02f;
    p = p * t + 1.128359472e-01f;
    p = p * t - 3.761262667e-01f;
    p = p * t + 1.128379166e+00f;
    float small = x * p;
    float b = a < 1.0f ? 1.0f : (a > ERF_ONE ? ERF_ONE : a), u = b - 2.46f;
    float q = 1.670432748e-06f;
    q = q * u - 1.381367884e-05f;
    q = q * u + 8.096427104e-05f;
    q = q * u - 4.392116568e-04f;
    q = q * u + 2.251364826e-03f;
    q = q * u - 1.121173061e-02f;
    q = q * u + 5.743032490e-02f;
    q = q * u - 3.572218774e-01f;
    q = q * u - 1.542617572e+00f;
    float big = a >= ERF_ONE ? 1.0f : 1.0f - exp_f32(q - b * b);
    big = copysignf(big, x);
    return a < 1.0f ? small : (a >= 1.0f ? big : x);
}

