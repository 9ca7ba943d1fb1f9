// cuda_activation.cuh: what the activation and normalisation kernels share (cuda_activation.cu, cuda_norm.cu): the
// activation functions and their derivatives as compile-time choices (the formulas of ops/activation.c), packed
// loads and stores of VEC consecutive elements (warp sums: cuda_vec.cuh's).
#pragma once
#include "cuda_vec.cuh"

// Activation codes: the Activation enum of ops.h, and ACT_ID (no activation) for the norms without one.
enum { ACT_ID = -1, A_SILU = 0, A_GELU = 1, A_GELU_TANH = 2, A_QUICK_GELU = 3 };

#define CU_SQRT1_2 0.70710678118654752f     // 1 / sqrt(2)
#define CU_INV_SQRT_2PI 0.39894228040143268f // 1 / sqrt(2 pi)
#define CU_SQRT_2_PI 0.79788456080286536f    // sqrt(2 / pi)

static __device__ __forceinline__ float gelu_erf_f(float x) { return 0.5f * x * (1.0f + erff(x * CU_SQRT1_2)); }
// d/dx gelu_erf = Phi(x) + x phi(x)
static __device__ __forceinline__ float gelu_erf_df(float x) {
    return 0.5f * (1.0f + erff(x * CU_SQRT1_2)) + x * CU_INV_SQRT_2PI * expf(-0.5f * x * x);
}

template <int ACT> static __device__ __forceinline__ float act_f(float x) {
    if (ACT == A_SILU) return x / (1.0f + expf(-x));
    if (ACT == A_GELU) return gelu_erf_f(x);
    if (ACT == A_GELU_TANH) return 0.5f * x * (1.0f + tanhf(CU_SQRT_2_PI * (x + 0.044715f * x * x * x)));
    if (ACT == A_QUICK_GELU) return x / (1.0f + expf(-1.702f * x));
    return x;
}

template <int ACT> static __device__ __forceinline__ float act_df(float x) {
    if (ACT == A_SILU) {
        float s = 1.0f / (1.0f + expf(-x));
        return s * (1.0f + x * (1.0f - s));
    }
    if (ACT == A_GELU) return gelu_erf_df(x);
    if (ACT == A_GELU_TANH) {
        float t = tanhf(CU_SQRT_2_PI * (x + 0.044715f * x * x * x));
        float du = CU_SQRT_2_PI * (1.0f + 3.0f * 0.044715f * x * x);
        return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * du;
    }
    if (ACT == A_QUICK_GELU) {
        float s = 1.0f / (1.0f + expf(-1.702f * x));
        return s + 1.702f * x * s * (1.0f - s);
    }
    return 1.0f;
}

// Calls BODY (a macro taking the activation as a constant) for the runtime code `act` (ACT_ID included).
#define CU_ACT_DISPATCH(act, BODY)                                                                           \
    do {                                                                                                     \
        switch (act) {                                                                                       \
        case A_SILU: BODY(A_SILU); break;                                                                    \
        case A_GELU: BODY(A_GELU); break;                                                                    \
        case A_GELU_TANH: BODY(A_GELU_TANH); break;                                                          \
        case A_QUICK_GELU: BODY(A_QUICK_GELU); break;                                                        \
        default: BODY(ACT_ID); break;                                                                        \
        }                                                                                                    \
    } while (0)

// VEC consecutive elements of storage type T, moved as one aligned load or store (16 bytes for 4 f32, 8 for 4 bf16)
template <class T, int VEC> struct alignas(sizeof(T) * VEC) Pack {
    T v[VEC];
};
template <class T, int VEC> static __device__ __forceinline__ void ld_vec(float (&f)[VEC], const T *p, int64_t i) {
    Pack<T, VEC> k = *reinterpret_cast<const Pack<T, VEC> *>(p + i);
    for (int j = 0; j < VEC; j++) f[j] = ld_f32(k.v, j);
}
template <class T, int VEC> static __device__ __forceinline__ void st_vec(T *p, int64_t i, const float (&f)[VEC]) {
    Pack<T, VEC> k;
    for (int j = 0; j < VEC; j++) st_f32(k.v, j, f[j]);
    *reinterpret_cast<Pack<T, VEC> *>(p + i) = k;
}
// 4 when every pointer is aligned for 4-element packs of `elem` bytes and n is a multiple of 4, else 1
static inline int cu_vec_width(int64_t n, size_t elem, const void *a, const void *b, const void *c) {
    uintptr_t m = (uintptr_t)a | (uintptr_t)b | (uintptr_t)c;
    return n % 4 == 0 && m % (4 * elem) == 0 ? 4 : 1;
}

// threads for a row of `packs` work items: enough for one pass, a multiple of 32, at most 256
static inline int cu_row_threads(int64_t packs) {
    int t = 32;
    while (t < 256 && t < packs) t *= 2;
    return t;
}

// a parameter vector (gamma, beta) of either storage dtype (0 f32, 1 bf16), read as fp32
static __device__ __forceinline__ float ld_param(const void *p, int dt, int64_t i) {
    return dt ? __bfloat162float(((const __nv_bfloat16 *)p)[i]) : ((const float *)p)[i];
}
