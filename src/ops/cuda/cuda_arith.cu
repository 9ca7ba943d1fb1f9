// cuda_arith.cu: the elementwise arithmetic of ops/arith.c on the GPU: residual add, the per-(sample, channel)
// broadcast add, axpy, scale, fill and the f32 <-> bf16 cast. Every kernel is one pass over memory in fp32 compute,
// moving four elements per access when the pointers allow (cuda_vec.cuh).
#include "cuda_vec.cuh"
#include "../../core/device_cuda.h"
#include "cuda_api.h"


// out = a + b (out may alias a or b)
template <class T> __global__ static void add_kernel(T *out, const T *a, const T *b, int64_t n, int vec) {
    int64_t i0 = cuda_quad_index();
    if (vec && i0 + 4 <= n) {
        Vec4<T> x = ld_vec4(a, i0), y = ld_vec4(b, i0), o;
        for (int k = 0; k < 4; k++) st_f32(o.v, k, ld_f32(x.v, k) + ld_f32(y.v, k));
        st_vec4(out, i0, o);
        return;
    }
    for (int64_t i = i0; i < n && i < i0 + 4; i++) st_f32(out, i, ld_f32(a, i) + ld_f32(b, i));
}

// out[bc, s] = x[bc, s] + v[bc] for x [BC, S]
template <class T> __global__ static void add_bcast_kernel(T *out, const T *x, const T *v, int64_t BC, int64_t S,
                                                           int vec) {
    int64_t i0 = cuda_quad_index(), n = BC * S;
    if (vec && i0 + 4 <= n) { // vec implies S % 4 == 0: the four elements share one (b, c)
        float add = ld_f32(v, i0 / S);
        Vec4<T> a = ld_vec4(x, i0), o;
        for (int k = 0; k < 4; k++) st_f32(o.v, k, ld_f32(a.v, k) + add);
        st_vec4(out, i0, o);
        return;
    }
    for (int64_t i = i0; i < n && i < i0 + 4; i++) st_f32(out, i, ld_f32(x, i) + ld_f32(v, i / S));
}

// y += alpha x; y and x may have different storage (a bf16 branch gradient into an fp32 sum)
template <class TY, class TX> __global__ static void axpy_kernel(TY *y, float alpha, const TX *x, int64_t n, int vec) {
    int64_t i0 = cuda_quad_index();
    if (vec && i0 + 4 <= n) {
        Vec4<TY> a = ld_vec4(y, i0);
        Vec4<TX> b = ld_vec4(x, i0);
        for (int k = 0; k < 4; k++) st_f32(a.v, k, ld_f32(a.v, k) + alpha * ld_f32(b.v, k));
        st_vec4(y, i0, a);
        return;
    }
    for (int64_t i = i0; i < n && i < i0 + 4; i++) st_f32(y, i, ld_f32(y, i) + alpha * ld_f32(x, i));
}

// dst = src converted (round to nearest even into bf16); also a same-dtype copy
template <class TD, class TS> __global__ static void cast_kernel(TD *dst, const TS *src, int64_t n, int vec) {
    int64_t i0 = cuda_quad_index();
    if (vec && i0 + 4 <= n) {
        Vec4<TS> s = ld_vec4(src, i0);
        Vec4<TD> d;
        for (int k = 0; k < 4; k++) st_f32(d.v, k, ld_f32(s.v, k));
        st_vec4(dst, i0, d);
        return;
    }
    for (int64_t i = i0; i < n && i < i0 + 4; i++) st_f32(dst, i, ld_f32(src, i));
}

// y = alpha y (scale) or y = value (fill, when set)
template <class T> __global__ static void scale_fill_kernel(T *y, float alpha, int set, int64_t n, int vec) {
    int64_t i0 = cuda_quad_index();
    if (vec && i0 + 4 <= n) {
        Vec4<T> a = set ? Vec4<T>() : ld_vec4(y, i0);
        for (int k = 0; k < 4; k++) st_f32(a.v, k, set ? alpha : alpha * ld_f32(a.v, k));
        st_vec4(y, i0, a);
        return;
    }
    for (int64_t i = i0; i < n && i < i0 + 4; i++) st_f32(y, i, set ? alpha : alpha * ld_f32(y, i));
}

#define ARITH_LAUNCH(kernel, n, ...)                                                                         \
    CUDA_LAUNCH(kernel, cuda_quad_blocks(n), CUDA_VEC_THREADS, 0, cuda_stream(), __VA_ARGS__)

extern "C" void add_forward_cuda(void *out, const void *a, const void *b, int64_t n, int dt) {
    CUDA_DT_DISPATCH(dt, T, {
        int vec = cuda_vec_aligned(out, sizeof(T)) && cuda_vec_aligned(a, sizeof(T)) && cuda_vec_aligned(b, sizeof(T));
        ARITH_LAUNCH(add_kernel<T>, n, (T *)out, (const T *)a, (const T *)b, n, vec);
    });
}

// channels last: out[b, s, c] = x[b, s, c] + v[b, c] for x [B, S, C]
template <class T>
__global__ static void add_bcast_nhwc_kernel(T *out, const T *x, const T *v, int64_t n, int64_t SC, int64_t C) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        st_f32(out, i, ld_f32(x, i) + ld_f32(v, i / SC * C + i % C));
}

// dv[b, c] = sum over s of dout[b, s, c] (written), grid (B tiles of 32 channels), block 256: 8 pixel phases of 32
// channels, summed in order
template <class T> __global__ static void bcast_sum_nhwc_kernel(T *dv, const T *dout, int64_t S, int64_t C) {
    __shared__ float sh[8][33];
    int64_t tiles = (C + 31) / 32, b = blockIdx.x / tiles, c = (blockIdx.x % tiles) * 32 + (threadIdx.x & 31);
    int ph = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float s = 0.0f;
    if (c < C)
        for (int64_t p = ph; p < S; p += 8) s += ld_f32(dout, (b * S + p) * C + c);
    sh[ph][lane] = s;
    __syncthreads();
    if (ph == 0 && c < C) {
        for (int k = 1; k < 8; k++) s += sh[k][lane];
        st_f32(dv, b * C + c, s);
    }
}

extern "C" void add_bcast_nhwc_forward_cuda(void *out, const void *x, const void *v, int64_t B, int64_t S, int64_t C,
                                            int dt) {
    int64_t n = B * S * C;
    CUDA_DT_DISPATCH(dt, T, CUDA_LAUNCH(add_bcast_nhwc_kernel<T>, cuda_stride_blocks(n, 256), 256, 0,
                                        cuda_stream(), (T *)out, (const T *)x, (const T *)v, n, S * C, C));
}
extern "C" void add_bcast_nhwc_backward_cuda(void *dv, const void *dout, int64_t B, int64_t S, int64_t C, int dt) {
    CUDA_DT_DISPATCH(dt, T, CUDA_LAUNCH(bcast_sum_nhwc_kernel<T>, (unsigned)(B * ((C + 31) / 32)), 256, 0,
                                        cuda_stream(), (T *)dv, (const T *)dout, S, C));
}

extern "C" void add_bcast_forward_cuda(void *out, const void *x, const void *v, int64_t BC, int64_t S, int dt) {
    CUDA_DT_DISPATCH(dt, T, {
        int vec = S % 4 == 0 && cuda_vec_aligned(out, sizeof(T)) && cuda_vec_aligned(x, sizeof(T));
        ARITH_LAUNCH(add_bcast_kernel<T>, BC * S, (T *)out, (const T *)x, (const T *)v, BC, S, vec);
    });
}

template <class TY, class TX> static void axpy_launch(void *y, float alpha, const void *x, int64_t n) {
    void (*k)(TY *, float, const TX *, int64_t, int) = axpy_kernel<TY, TX>;
    int vec = cuda_vec_aligned(y, sizeof(TY)) && cuda_vec_aligned(x, sizeof(TX));
    ARITH_LAUNCH(k, n, (TY *)y, alpha, (const TX *)x, n, vec);
}
extern "C" void axpy_cuda(void *y, int dty, float alpha, const void *x, int dtx, int64_t n) {
    CUDA_DT_DISPATCH(dty, TY, CUDA_DT_DISPATCH(dtx, TX, axpy_launch<TY, TX>(y, alpha, x, n)));
}

template <class TD, class TS> static void cast_launch(void *dst, const void *src, int64_t n) {
    void (*k)(TD *, const TS *, int64_t, int) = cast_kernel<TD, TS>;
    int vec = cuda_vec_aligned(dst, sizeof(TD)) && cuda_vec_aligned(src, sizeof(TS));
    ARITH_LAUNCH(k, n, (TD *)dst, (const TS *)src, n, vec);
}
extern "C" void cast_cuda(void *dst, int dt_dst, const void *src, int dt_src, int64_t n) {
    CUDA_DT_DISPATCH(dt_dst, TD, CUDA_DT_DISPATCH(dt_src, TS, cast_launch<TD, TS>(dst, src, n)));
}

extern "C" void scale_cuda(void *y, float alpha, int64_t n, int dt) {
    CUDA_DT_DISPATCH(dt, T, ARITH_LAUNCH(scale_fill_kernel<T>, n, (T *)y, alpha, 0, n, cuda_vec_aligned(y, sizeof(T))));
}
extern "C" void fill_cuda(void *y, float value, int64_t n, int dt) {
    CUDA_DT_DISPATCH(dt, T, ARITH_LAUNCH(scale_fill_kernel<T>, n, (T *)y, value, 1, n, cuda_vec_aligned(y, sizeof(T))));
}
