// cuda_activation.cu: the pointwise activations (SiLU, GELU erf and tanh forms, quick GELU), GEGLU and the softmax
// over the last dim on the GPU, forward and backward, the formulas of ops/activation.c computed in fp32 on f32 or
// bf16 storage. All are memory-bound: packed loads of 4 elements where the sizes and pointers allow, one pass for
// the pointwise ops, and a warp per softmax row (online max and sum, then the write: two reads, one write).
#include "cuda_common.cuh"
#include "../../core/device_cuda.h"
#include "cuda_activation.cuh"
#include "cuda_api.h"

#define ELEMWISE_THREADS 256
#define ELEMWISE_MAX_BLOCKS 65536 // grid-stride beyond: enough blocks to fill any GPU

static unsigned elemwise_blocks(int64_t packs) {
    int64_t b = (packs + ELEMWISE_THREADS - 1) / ELEMWISE_THREADS;
    return (unsigned)(b < ELEMWISE_MAX_BLOCKS ? b : ELEMWISE_MAX_BLOCKS);
}

// ---------------------------------------------------------------------------------------------------------------
// pointwise activations: out = act(in), din = dout act'(in) over n elements (n / VEC packs); out may alias in and din
// may alias dout (each element is read before it is written, by the same thread)

template <class T, int ACT, int VEC> __global__ static void act_fwd_kernel(T *out, const T *in, int64_t packs) {
    for (int64_t p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; p < packs; p += (int64_t)gridDim.x * blockDim.x) {
        float x[VEC];
        ld_vec<T, VEC>(x, in, p * VEC);
        for (int j = 0; j < VEC; j++) x[j] = act_f<ACT>(x[j]);
        st_vec<T, VEC>(out, p * VEC, x);
    }
}

template <class T, int ACT, int VEC>
__global__ static void act_bwd_kernel(T *din, const T *dout, const T *in, int64_t packs) {
    for (int64_t p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; p < packs; p += (int64_t)gridDim.x * blockDim.x) {
        float x[VEC], d[VEC];
        ld_vec<T, VEC>(x, in, p * VEC);
        ld_vec<T, VEC>(d, dout, p * VEC);
        for (int j = 0; j < VEC; j++) d[j] *= act_df<ACT>(x[j]);
        st_vec<T, VEC>(din, p * VEC, d);
    }
}

template <class T, int ACT> static void act_fwd_launch(void *out, const void *in, int64_t n) {
    if (cu_vec_width(n, sizeof(T), out, in, in) == 4) {
        auto k = act_fwd_kernel<T, ACT, 4>;
        CUDA_LAUNCH(k, elemwise_blocks(n / 4), ELEMWISE_THREADS, 0, cuda_stream(), (T *)out, (const T *)in, n / 4);
    } else {
        auto k = act_fwd_kernel<T, ACT, 1>;
        CUDA_LAUNCH(k, elemwise_blocks(n), ELEMWISE_THREADS, 0, cuda_stream(), (T *)out, (const T *)in, n);
    }
}
template <class T, int ACT> static void act_bwd_launch(void *din, const void *dout, const void *in, int64_t n) {
    if (cu_vec_width(n, sizeof(T), din, dout, in) == 4) {
        auto k = act_bwd_kernel<T, ACT, 4>;
        CUDA_LAUNCH(k, elemwise_blocks(n / 4), ELEMWISE_THREADS, 0, cuda_stream(), (T *)din, (const T *)dout,
                    (const T *)in, n / 4);
    } else {
        auto k = act_bwd_kernel<T, ACT, 1>;
        CUDA_LAUNCH(k, elemwise_blocks(n), ELEMWISE_THREADS, 0, cuda_stream(), (T *)din, (const T *)dout,
                    (const T *)in, n);
    }
}

extern "C" void activation_forward_cuda(void *out, const void *in, int64_t n, int act, int dt) {
#define FWD(A) dt ? act_fwd_launch<__nv_bfloat16, A>(out, in, n) : act_fwd_launch<float, A>(out, in, n)
    CU_ACT_DISPATCH(act, FWD);
#undef FWD
}
extern "C" void activation_backward_cuda(void *din, const void *dout, const void *in, int64_t n, int act, int dt) {
#define BWD(A) dt ? act_bwd_launch<__nv_bfloat16, A>(din, dout, in, n) : act_bwd_launch<float, A>(din, dout, in, n)
    CU_ACT_DISPATCH(act, BWD);
#undef BWD
}

// ---------------------------------------------------------------------------------------------------------------
// GEGLU: in [N, 2D] = [h | g] -> out [N, D] = h gelu_erf(g); din [N, 2D] = [dout gelu_erf(g) | dout h gelu_erf'(g)].
// Rows on grid.x (any count), threads along the row in packs of VEC (D a multiple of VEC).

template <class T, int VEC> __global__ static void geglu_fwd_kernel(T *out, const T *in, int64_t D) {
    int64_t n = blockIdx.x;
    const T *h = in + n * 2 * D, *g = h + D;
    for (int64_t j = (int64_t)threadIdx.x * VEC; j < D; j += (int64_t)blockDim.x * VEC) {
        float hv[VEC], gv[VEC];
        ld_vec<T, VEC>(hv, h, j);
        ld_vec<T, VEC>(gv, g, j);
        for (int k = 0; k < VEC; k++) hv[k] *= gelu_erf_f(gv[k]);
        st_vec<T, VEC>(out, n * D + j, hv);
    }
}

template <class T, int VEC> __global__ static void geglu_bwd_kernel(T *din, const T *dout, const T *in, int64_t D) {
    int64_t n = blockIdx.x;
    const T *h = in + n * 2 * D, *g = h + D;
    T *dh = din + n * 2 * D, *dg = dh + D;
    for (int64_t j = (int64_t)threadIdx.x * VEC; j < D; j += (int64_t)blockDim.x * VEC) {
        float hv[VEC], gv[VEC], d[VEC], a[VEC], b[VEC];
        ld_vec<T, VEC>(hv, h, j);
        ld_vec<T, VEC>(gv, g, j);
        ld_vec<T, VEC>(d, dout, n * D + j);
        for (int k = 0; k < VEC; k++) {
            a[k] = d[k] * gelu_erf_f(gv[k]);
            b[k] = d[k] * hv[k] * gelu_erf_df(gv[k]);
        }
        st_vec<T, VEC>(dh, j, a);
        st_vec<T, VEC>(dg, j, b);
    }
}

template <class T> static void geglu_fwd_launch(void *out, const void *in, int64_t N, int64_t D) {
    if (cu_vec_width(D, sizeof(T), out, in, in) == 4) {
        auto k = geglu_fwd_kernel<T, 4>;
        CUDA_LAUNCH(k, (unsigned)N, cu_row_threads(D / 4), 0, cuda_stream(), (T *)out, (const T *)in, D);
    } else {
        auto k = geglu_fwd_kernel<T, 1>;
        CUDA_LAUNCH(k, (unsigned)N, cu_row_threads(D), 0, cuda_stream(), (T *)out, (const T *)in, D);
    }
}
template <class T> static void geglu_bwd_launch(void *din, const void *dout, const void *in, int64_t N, int64_t D) {
    if (cu_vec_width(D, sizeof(T), din, dout, in) == 4) {
        auto k = geglu_bwd_kernel<T, 4>;
        CUDA_LAUNCH(k, (unsigned)N, cu_row_threads(D / 4), 0, cuda_stream(), (T *)din, (const T *)dout, (const T *)in,
                    D);
    } else {
        auto k = geglu_bwd_kernel<T, 1>;
        CUDA_LAUNCH(k, (unsigned)N, cu_row_threads(D), 0, cuda_stream(), (T *)din, (const T *)dout, (const T *)in, D);
    }
}

extern "C" void geglu_forward_cuda(void *out, const void *in, int64_t N, int64_t D, int dt) {
    dt ? geglu_fwd_launch<__nv_bfloat16>(out, in, N, D) : geglu_fwd_launch<float>(out, in, N, D);
}
extern "C" void geglu_backward_cuda(void *din, const void *dout, const void *in, int64_t N, int64_t D, int dt) {
    dt ? geglu_bwd_launch<__nv_bfloat16>(din, dout, in, N, D) : geglu_bwd_launch<float>(din, dout, in, N, D);
}

// ---------------------------------------------------------------------------------------------------------------
// softmax over the last dim, one warp per row of C (8 rows per block). Forward: each lane keeps a running maximum
// and the sum of exp(x - maximum) over its elements (rescaled when the maximum grows); the lanes merge their pairs,
// and a second pass writes exp(x - max) / sum. Backward: din = out (dout - sum_c dout out).

#define SOFTMAX_ROWS 8

template <class T> __global__ static void softmax_fwd_kernel(T *out, const T *in, int64_t N, int64_t C) {
    int64_t n = (int64_t)blockIdx.x * SOFTMAX_ROWS + threadIdx.y;
    if (n >= N) return; // the whole warp leaves together
    const T *x = in + n * C;
    float m = -INFINITY, s = 0.0f;
    for (int64_t c = threadIdx.x; c < C; c += 32) {
        float v = ld_f32(x, c);
        if (v > m) {
            s = s * expf(m - v) + 1.0f;
            m = v;
        } else if (m != -INFINITY) { // v = m = -inf adds exp(-inf) = 0
            s += expf(v - m);
        }
    }
    // merge (m, s) across the lanes; a lane without elements has (-inf, 0) and contributes nothing
    for (int k = 16; k > 0; k >>= 1) {
        float mo = __shfl_xor_sync(0xffffffffu, m, k), so = __shfl_xor_sync(0xffffffffu, s, k);
        float mx = fmaxf(m, mo);
        s = (m == -INFINITY ? 0.0f : s * expf(m - mx)) + (mo == -INFINITY ? 0.0f : so * expf(mo - mx));
        m = mx;
    }
    float inv = 1.0f / s;
    T *y = out + n * C;
    for (int64_t c = threadIdx.x; c < C; c += 32) st_f32(y, c, expf(ld_f32(x, c) - m) * inv);
}

template <class T>
__global__ static void softmax_bwd_kernel(T *din, const T *dout, const T *out, int64_t N, int64_t C) {
    int64_t n = (int64_t)blockIdx.x * SOFTMAX_ROWS + threadIdx.y;
    if (n >= N) return;
    const T *dy = dout + n * C, *y = out + n * C;
    float dot = 0.0f;
    for (int64_t c = threadIdx.x; c < C; c += 32) dot += ld_f32(dy, c) * ld_f32(y, c);
    dot = warp_sum(dot);
    T *dx = din + n * C;
    for (int64_t c = threadIdx.x; c < C; c += 32) st_f32(dx, c, ld_f32(y, c) * (ld_f32(dy, c) - dot));
}

extern "C" void softmax_forward_cuda(void *out, const void *in, int64_t N, int64_t C, int dt) {
    dim3 block(32, SOFTMAX_ROWS);
    unsigned grid = cuda_blocks(N, SOFTMAX_ROWS);
    if (dt) CUDA_LAUNCH(softmax_fwd_kernel<__nv_bfloat16>, grid, block, 0, cuda_stream(), (__nv_bfloat16 *)out,
                        (const __nv_bfloat16 *)in, N, C);
    else CUDA_LAUNCH(softmax_fwd_kernel<float>, grid, block, 0, cuda_stream(), (float *)out, (const float *)in, N, C);
}
extern "C" void softmax_backward_cuda(void *din, const void *dout, const void *out, int64_t N, int64_t C, int dt) {
    dim3 block(32, SOFTMAX_ROWS);
    unsigned grid = cuda_blocks(N, SOFTMAX_ROWS);
    if (dt) CUDA_LAUNCH(softmax_bwd_kernel<__nv_bfloat16>, grid, block, 0, cuda_stream(), (__nv_bfloat16 *)din,
                        (const __nv_bfloat16 *)dout, (const __nv_bfloat16 *)out, N, C);
    else CUDA_LAUNCH(softmax_bwd_kernel<float>, grid, block, 0, cuda_stream(), (float *)din, (const float *)dout,
                     (const float *)out, N, C);
}
