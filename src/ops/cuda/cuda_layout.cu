// cuda_layout.cu: the layout ops of ops/layout.c on the GPU: nearest 2x upsampling, channel concat, zero padding,
// the sinusoidal timestep embedding, embedding lookup and sum/mean reductions, forward and backward. Same formulas
// and (where the CPU op fixes one) the same summation order as the CPU ops; every reduction is deterministic (fixed
// per-thread ranges, then a fixed butterfly; partial sums of a split row go through the workspace and one final pass).
#include "cuda_vec.cuh"
#include "../../core/device_cuda.h"
#include "cuda_api.h"

#define LAYOUT_THREADS CUDA_VEC_THREADS

// ---------------------------------------------------------------------------------------------------------------
// upsample2x: input row r [rows, W] feeds output rows 2r and 2r + 1 [2 rows, 2W]. A thread takes four consecutive
// elements j of the index space [rows, 2W] and writes each to both output rows, so reads and writes stay consecutive.
template <class T> __global__ static void upsample_fwd_kernel(T *out, const T *in, int64_t rows, int64_t W) {
    int64_t i0 = cuda_quad_index(), W2 = 2 * W, n = rows * W2;
    for (int64_t i = i0; i < n && i < i0 + 4; i++) {
        int64_t r = i / W2, j = i - r * W2;
        T v = in[r * W + (j >> 1)];
        out[r * 2 * W2 + j] = v;
        out[r * 2 * W2 + W2 + j] = v;
    }
}

// din [rows, W] = the sum of each 2x2 block of dout, in the CPU op's order
template <class T> __global__ static void upsample_bwd_kernel(T *din, const T *dout, int64_t rows, int64_t W) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * W) return;
    int64_t r = i / W, x = i - r * W;
    const T *g0 = dout + r * 4 * W + 2 * x, *g1 = g0 + 2 * W;
    st_f32(din, i, (ld_f32(g0, 0) + ld_f32(g0, 1)) + (ld_f32(g1, 0) + ld_f32(g1, 1)));
}

// channels last: in [B H, W, C] (rows = B H) -> out [B 2H, 2W, C], out[2r + dy, 2x + dx, c] = in[r, x, c]; one thread
// per output element (consecutive threads, consecutive channels)
template <class T>
__global__ static void upsample_fwd_nhwc_kernel(T *out, const T *in, int64_t rows, int64_t W, int64_t C) {
    int64_t n = rows * 4 * W * C;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t c = i % C, p = i / C, ox = p % (2 * W), oy = p / (2 * W); // oy: output row of all B 2H
        out[i] = in[((oy >> 1) * W + (ox >> 1)) * C + c];
    }
}
// din [rows, W, C] = the sum of each 2x2 block of dout, in the NCHW kernel's order
template <class T>
__global__ static void upsample_bwd_nhwc_kernel(T *din, const T *dout, int64_t rows, int64_t W, int64_t C) {
    int64_t n = rows * W * C;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t c = i % C, p = i / C, x = p % W, r = p / W;
        const T *g0 = dout + ((2 * r) * 2 * W + 2 * x) * C + c, *g1 = g0 + 2 * W * C;
        st_f32(din, i, (ld_f32(g0, 0) + ld_f32(g0, C)) + (ld_f32(g1, 0) + ld_f32(g1, C)));
    }
}
extern "C" void upsample2x_nhwc_forward_cuda(void *out, const void *in, int64_t rows, int64_t W, int64_t C, int dt) {
    unsigned blocks = cuda_stride_blocks(rows * 4 * W * C, LAYOUT_THREADS);
    CUDA_DT_DISPATCH(dt, T, CUDA_LAUNCH(upsample_fwd_nhwc_kernel<T>, blocks, LAYOUT_THREADS, 0, cuda_stream(), (T *)out,
                                        (const T *)in, rows, W, C));
}
extern "C" void upsample2x_nhwc_backward_cuda(void *din, const void *dout, int64_t rows, int64_t W, int64_t C, int dt) {
    unsigned blocks = cuda_stride_blocks(rows * W * C, LAYOUT_THREADS);
    CUDA_DT_DISPATCH(dt, T, CUDA_LAUNCH(upsample_bwd_nhwc_kernel<T>, blocks, LAYOUT_THREADS, 0, cuda_stream(), (T *)din,
                                        (const T *)dout, rows, W, C));
}

extern "C" void upsample2x_forward_cuda(void *out, const void *in, int64_t rows, int64_t W, int dt) {
    CUDA_DT_DISPATCH(dt, T, CUDA_LAUNCH(upsample_fwd_kernel<T>, cuda_quad_blocks(rows * 2 * W), LAYOUT_THREADS, 0,
                                        cuda_stream(), (T *)out, (const T *)in, rows, W));
}
extern "C" void upsample2x_backward_cuda(void *din, const void *dout, int64_t rows, int64_t W, int dt) {
    CUDA_DT_DISPATCH(dt, T, CUDA_LAUNCH(upsample_bwd_kernel<T>, cuda_blocks(rows * W, LAYOUT_THREADS), LAYOUT_THREADS,
                                        0, cuda_stream(), (T *)din, (const T *)dout, rows, W));
}

// ---------------------------------------------------------------------------------------------------------------
// concat: whole [B, C, S] = [a [B, Ca, S] | b [B, Cb, S]]. One pass over the whole tensor in either direction; with
// S % 4 == 0 the four elements of a thread share one channel plane and move as one vector.
template <class T> __device__ static T *concat_part(int64_t i, T *a, T *b, int64_t Ca, int64_t C, int64_t S,
                                                     int64_t *off) {
    int64_t plane = i / S, s = i - plane * S, bb = plane / C, c = plane - bb * C;
    if (c < Ca) {
        *off = (bb * Ca + c) * S + s;
        return a;
    }
    *off = (bb * (C - Ca) + c - Ca) * S + s;
    return b;
}

// to_whole: whole = concat(a, b) (forward); else a, b = the channel ranges of whole (backward; either may be NULL)
template <class T> __global__ static void concat_kernel(T *whole, T *a, T *b, int64_t n, int64_t Ca, int64_t C,
                                                        int64_t S, int to_whole, int vec) {
    int64_t i0 = cuda_quad_index(), off;
    if (vec && i0 + 4 <= n) {
        T *p = concat_part(i0, a, b, Ca, C, S, &off);
        if (to_whole) st_vec4(whole, i0, ld_vec4((const T *)p, off));
        else if (p) st_vec4(p, off, ld_vec4((const T *)whole, i0));
        return;
    }
    for (int64_t i = i0; i < n && i < i0 + 4; i++) {
        T *p = concat_part(i, a, b, Ca, C, S, &off);
        if (to_whole) whole[i] = p[off];
        else if (p) p[off] = whole[i];
    }
}

static void concat_launch(void *whole, void *a, void *b, int64_t B, int64_t Ca, int64_t Cb, int64_t S, int to_whole,
                          int dt) {
    int64_t C = Ca + Cb, n = B * C * S;
    CUDA_DT_DISPATCH(dt, T, {
        int vec = S % 4 == 0 && cuda_vec_aligned(whole, sizeof(T)) && cuda_vec_aligned(a, sizeof(T)) &&
                  cuda_vec_aligned(b, sizeof(T));
        CUDA_LAUNCH(concat_kernel<T>, cuda_quad_blocks(n), LAYOUT_THREADS, 0, cuda_stream(), (T *)whole, (T *)a, (T *)b,
                    n, Ca, C, S, to_whole, vec);
    });
}
extern "C" void concat_channels_forward_cuda(void *out, const void *a, const void *b, int64_t B, int64_t Ca,
                                             int64_t Cb, int64_t S, int dt) {
    concat_launch(out, (void *)a, (void *)b, B, Ca, Cb, S, 1, dt);
}
extern "C" void concat_channels_backward_cuda(void *da, void *db, const void *dout, int64_t B, int64_t Ca, int64_t Cb,
                                              int64_t S, int dt) {
    concat_launch((void *)dout, da, db, B, Ca, Cb, S, 0, dt);
}

// ---------------------------------------------------------------------------------------------------------------
// pad2d: big [BC, OH, OW] holds small [BC, H, W] at (top, left), zeros around it. The forward writes every element
// of big (four per thread, one vector store when OW % 4 == 0); the backward reads the interior into small.
template <class T> __device__ __forceinline__ float pad_value(const T *in, int64_t i, int64_t H, int64_t W,
                                                              int64_t OH, int64_t OW, int top, int left) {
    int64_t r = i / OW, ix = i - r * OW - left, bc = r / OH, iy = r - bc * OH - top;
    return iy >= 0 && iy < H && ix >= 0 && ix < W ? ld_f32(in, (bc * H + iy) * W + ix) : 0.0f;
}
template <class T> __global__ static void pad_fwd_kernel(T *out, const T *in, int64_t n, int64_t H, int64_t W,
                                                         int64_t OH, int64_t OW, int top, int left, int vec) {
    int64_t i0 = cuda_quad_index();
    if (vec && i0 + 4 <= n) {
        Vec4<T> o;
        for (int k = 0; k < 4; k++) st_f32(o.v, k, pad_value(in, i0 + k, H, W, OH, OW, top, left));
        st_vec4(out, i0, o);
        return;
    }
    for (int64_t i = i0; i < n && i < i0 + 4; i++) st_f32(out, i, pad_value(in, i, H, W, OH, OW, top, left));
}
template <class T> __global__ static void pad_bwd_kernel(T *din, const T *dout, int64_t n, int64_t H, int64_t W,
                                                         int64_t OH, int64_t OW, int top, int left) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    int64_t r = i / W, x = i - r * W, bc = r / H, y = r - bc * H;
    din[i] = dout[(bc * OH + y + top) * OW + x + left];
}

extern "C" void pad2d_forward_cuda(void *out, const void *in, int64_t BC, int64_t H, int64_t W, int top, int bottom,
                                   int left, int right, int dt) {
    int64_t OH = H + top + bottom, OW = W + left + right, n = BC * OH * OW;
    CUDA_DT_DISPATCH(dt, T, {
        int vec = cuda_vec_aligned(out, sizeof(T));
        CUDA_LAUNCH(pad_fwd_kernel<T>, cuda_quad_blocks(n), LAYOUT_THREADS, 0, cuda_stream(), (T *)out, (const T *)in, n,
                    H, W, OH, OW, top, left, vec);
    });
}
extern "C" void pad2d_backward_cuda(void *din, const void *dout, int64_t BC, int64_t H, int64_t W, int top, int bottom,
                                    int left, int right, int dt) {
    int64_t OH = H + top + bottom, OW = W + left + right, n = BC * H * W;
    CUDA_DT_DISPATCH(dt, T, CUDA_LAUNCH(pad_bwd_kernel<T>, cuda_blocks(n, LAYOUT_THREADS), LAYOUT_THREADS, 0,
                                        cuda_stream(), (T *)din, (const T *)dout, n, H, W, OH, OW, top, left));
}

// ---------------------------------------------------------------------------------------------------------------
// timestep embedding. The CPU op evaluates expf, sinf and cosf with the C library, whose fp32 results are the
// correctly rounded ones (computed in double); the kernels round the double functions to fp32 likewise, so a 1-ulp
// difference in a frequency cannot grow into 1e-4 of sin(t f) at t ~ 1000. ln10000 = logf(10000) from the host.
__device__ __forceinline__ float timestep_freq_dev(int64_t i, int64_t half, float freq_shift, float ln10000) {
    float exponent = -ln10000 * (float)i;
    exponent = exponent / ((float)half - freq_shift);
    return (float)exp((double)exponent);
}

// out [N, D]: thread (n, i < half) writes sin and cos of t[n] f_i; an odd D gets a zero last column
template <class T> __global__ static void timestep_fwd_kernel(T *out, const float *t, int64_t N, int64_t D,
                                                              int flip, float freq_shift, float ln10000) {
    int64_t half = D / 2, k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= N * half) return;
    int64_t n = k / half, i = k - n * half;
    float arg = t[n] * timestep_freq_dev(i, half, freq_shift, ln10000);
    T *row = out + n * D;
    st_f32(row, (flip ? half : 0) + i, (float)sin((double)arg));
    st_f32(row, (flip ? 0 : half) + i, (float)cos((double)arg));
    if (i == 0 && (D & 1)) st_f32(row, D - 1, 0.0f);
}

// dt[n] = sum_i f_i (dout_sin_i cos(t f_i) - dout_cos_i sin(t f_i)), one block per n, summed in double as the CPU op
template <class T> __global__ static void timestep_bwd_kernel(float *dt, const T *dout, const float *t, int64_t D,
                                                              int flip, float freq_shift, float ln10000) {
    __shared__ double sh[32];
    int64_t half = D / 2, n = blockIdx.x;
    const T *row = dout + n * D;
    const int64_t so = flip ? half : 0, co = flip ? 0 : half;
    double sum = 0.0;
    for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
        float f = timestep_freq_dev(i, half, freq_shift, ln10000), arg = t[n] * f;
        float c = (float)cos((double)arg), s = (float)sin((double)arg);
        sum += (double)f * ((double)ld_f32(row, so + i) * c - (double)ld_f32(row, co + i) * s);
    }
    sum = block_sum(sum, sh);
    if (threadIdx.x == 0) dt[n] = (float)sum;
}

extern "C" void timestep_embedding_forward_cuda(void *out, const float *t, int64_t N, int64_t D, int flip,
                                                float freq_shift, float ln10000, int dt) {
    CUDA_DT_DISPATCH(dt, T, CUDA_LAUNCH(timestep_fwd_kernel<T>, cuda_blocks(N * (D / 2), LAYOUT_THREADS),
                                        LAYOUT_THREADS, 0, cuda_stream(), (T *)out, t, N, D, flip, freq_shift,
                                        ln10000));
}
extern "C" void timestep_embedding_backward_cuda(float *dt_, const void *dout, const float *t, int64_t N, int64_t D,
                                                 int flip, float freq_shift, float ln10000, int dt) {
    CUDA_DT_DISPATCH(dt, T, CUDA_LAUNCH(timestep_bwd_kernel<T>, (unsigned)N, 128, 0, cuda_stream(), dt_,
                                        (const T *)dout, t, D, flip, freq_shift, ln10000));
}

// ---------------------------------------------------------------------------------------------------------------
// embedding lookup. The ids live on the GPU and cannot be checked on the host without a synchronisation: a row
// whose id is outside the table is written as NaN (so the step's non-finite check rejects it) and skipped by the
// backward.
template <class T> __global__ static void embedding_fwd_kernel(T *out, const int32_t *ids, const T *table, int64_t N,
                                                               int64_t V, int64_t C, int vec) {
    int64_t i0 = cuda_quad_index(), n = N * C;
    for (int64_t i = i0; i < n && i < i0 + 4; i++) {
        int64_t r = i / C, c = i - r * C, id = ids[r];
        if (vec) { // C % 4 == 0: the four elements are one vector of one row
            if (id >= 0 && id < V) st_vec4(out, i, ld_vec4(table, id * C + c));
            else for (int k = 0; k < 4; k++) st_f32(out, i + k, NAN);
            return;
        }
        if (id >= 0 && id < V) out[i] = table[id * C + c];
        else st_f32(out, i, NAN);
    }
}

// dtable [V, C] row ids[n] += dout row n: one thread per column walks the rows in order, so repeated ids never race
// and the sum order (n ascending, fp32) is the CPU op's.
template <class T> __global__ static void embedding_bwd_kernel(float *dtable, const T *dout, const int32_t *ids,
                                                               int64_t N, int64_t V, int64_t C) {
    int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    for (int64_t n = 0; n < N; n++) {
        int64_t id = ids[n];
        if (id >= 0 && id < V) dtable[id * C + c] += ld_f32(dout, n * C + c);
    }
}

extern "C" void embedding_forward_cuda(void *out, const int32_t *ids, const void *table, int64_t N, int64_t V,
                                       int64_t C, int dt) {
    CUDA_DT_DISPATCH(dt, T, {
        int vec = C % 4 == 0 && cuda_vec_aligned(out, sizeof(T)) && cuda_vec_aligned(table, sizeof(T));
        CUDA_LAUNCH(embedding_fwd_kernel<T>, cuda_quad_blocks(N * C), LAYOUT_THREADS, 0, cuda_stream(), (T *)out, ids,
                    (const T *)table, N, V, C, vec);
    });
}
extern "C" void embedding_backward_cuda(float *dtable, const void *dout, const int32_t *ids, int64_t N, int64_t V,
                                        int64_t C, int dt) {
    CUDA_DT_DISPATCH(dt, T, CUDA_LAUNCH(embedding_bwd_kernel<T>, cuda_blocks(C, 128), 128, 0, cuda_stream(), dtable,
                                        (const T *)dout, ids, N, V, C));
}

// ---------------------------------------------------------------------------------------------------------------
// reductions: in [N, M] -> out [N], fp32 sums. Rows of up to REDUCE_WARP_MAX elements: one warp per row. Longer rows:
// `splits` blocks per row, each summing a fixed chunk; with more than one split the partial sums [N, splits] go to
// the workspace and the warp-per-row kernel adds them (the only pass that writes out).
#define REDUCE_WARP_MAX 1024
#define REDUCE_CHUNK 16384
#define REDUCE_MAX_SPLITS 1024

static int64_t reduce_splits(int64_t M) {
    if (M <= REDUCE_WARP_MAX) return 0; // warp per row
    int64_t s = (M + REDUCE_CHUNK - 1) / REDUCE_CHUNK;
    return s < REDUCE_MAX_SPLITS ? s : REDUCE_MAX_SPLITS;
}

extern "C" size_t reduce_workspace_bytes_cuda(int64_t N, int64_t M) {
    int64_t s = reduce_splits(M);
    return s > 1 ? sizeof(float) * (size_t)(N * s) : 0;
}

// out[n] = sum_m in[n, m] / div, one warp per row (8 rows per block)
template <class TO, class TI> __global__ static void reduce_warp_kernel(TO *out, const TI *in, int64_t N, int64_t M,
                                                                        float div) {
    int64_t n = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    if (n >= N) return; // the whole warp leaves together
    const TI *x = in + n * M;
    float s = 0.0f;
    for (int64_t m = lane; m < M; m += 32) s += ld_f32(x, m);
    s = warp_sum(s);
    if (lane == 0) st_f32(out, n, s / div);
}

// block (n, split) of a long row: the sum of its chunk [split * chunk, +chunk), four elements per access when vec
template <class TO, class TI> __global__ static void reduce_block_kernel(TO *out, const TI *in, int64_t M,
                                                                         int64_t splits, int64_t chunk, float div,
                                                                         int vec) {
    __shared__ float sh[32];
    int64_t n = blockIdx.x / splits, sp = blockIdx.x - n * splits;
    int64_t lo = sp * chunk, hi = lo + chunk < M ? lo + chunk : M;
    const TI *x = in + n * M;
    float s = 0.0f;
    if (vec) { // M and chunk multiples of 4, x aligned
        for (int64_t m = lo + 4 * (int64_t)threadIdx.x; m < hi; m += 4 * (int64_t)blockDim.x) {
            Vec4<TI> v = ld_vec4(x, m);
            s += (ld_f32(v.v, 0) + ld_f32(v.v, 1)) + (ld_f32(v.v, 2) + ld_f32(v.v, 3));
        }
    } else {
        for (int64_t m = lo + threadIdx.x; m < hi; m += blockDim.x) s += ld_f32(x, m);
    }
    s = block_sum(s, sh);
    if (threadIdx.x == 0) st_f32(out, blockIdx.x, s / div);
}

template <class TO, class TI> static void reduce_launch(void *out, const void *in, int64_t N, int64_t M, float div,
                                                        void *ws) {
    void (*warp_k)(TO *, const TI *, int64_t, int64_t, float) = reduce_warp_kernel<TO, TI>;
    int64_t splits = reduce_splits(M);
    if (splits == 0) {
        CUDA_LAUNCH(warp_k, cuda_blocks(N * 32, LAYOUT_THREADS), LAYOUT_THREADS, 0, cuda_stream(), (TO *)out,
                    (const TI *)in, N, M, div);
        return;
    }
    int64_t chunk = ((M + splits - 1) / splits + 3) / 4 * 4;
    int vec = M % 4 == 0 && cuda_vec_aligned(in, sizeof(TI));
    if (splits == 1) {
        void (*k)(TO *, const TI *, int64_t, int64_t, int64_t, float, int) = reduce_block_kernel<TO, TI>;
        CUDA_LAUNCH(k, (unsigned)N, LAYOUT_THREADS, 0, cuda_stream(), (TO *)out, (const TI *)in, M, 1, chunk, div,
                    vec);
        return;
    }
    CHECK(ws != NULL, "reserve reduce_workspace_bytes", "reduce: no workspace for %lld partial sums",
          (long long)(N * splits));
    void (*k)(float *, const TI *, int64_t, int64_t, int64_t, float, int) = reduce_block_kernel<float, TI>;
    void (*fin)(TO *, const float *, int64_t, int64_t, float) = reduce_warp_kernel<TO, float>;
    CUDA_LAUNCH(k, (unsigned)(N * splits), LAYOUT_THREADS, 0, cuda_stream(), (float *)ws, (const TI *)in, M, splits,
                chunk, 1.0f, vec);
    CUDA_LAUNCH(fin, cuda_blocks(N * 32, LAYOUT_THREADS), LAYOUT_THREADS, 0, cuda_stream(), (TO *)out,
                (const float *)ws, N, splits, div);
}
// the mean divides the fp32 sum by M (exactly rounded, as the CPU op's double quotient rounded to fp32)
extern "C" void reduce_forward_cuda(void *out, int dt_out, const void *in, int dt_in, int64_t N, int64_t M, int mean,
                                    void *ws) {
    float div = mean ? (float)M : 1.0f;
    CUDA_DT_DISPATCH(dt_out, TO, CUDA_DT_DISPATCH(dt_in, TI, reduce_launch<TO, TI>(out, in, N, M, div, ws)));
}

// din [N, M] = dout[n] / div, four elements per thread (one vector store when M % 4 == 0)
template <class TI, class TO> __global__ static void reduce_bwd_kernel(TI *din, const TO *dout, int64_t N, int64_t M,
                                                                       float div, int vec) {
    int64_t i0 = cuda_quad_index(), n = N * M;
    if (vec && i0 + 4 <= n) {
        float v = ld_f32(dout, i0 / M) / div;
        Vec4<TI> o;
        for (int k = 0; k < 4; k++) st_f32(o.v, k, v);
        st_vec4(din, i0, o);
        return;
    }
    for (int64_t i = i0; i < n && i < i0 + 4; i++) st_f32(din, i, ld_f32(dout, i / M) / div);
}
template <class TI, class TO> static void reduce_bwd_launch(void *din, const void *dout, int64_t N, int64_t M,
                                                            float div) {
    void (*k)(TI *, const TO *, int64_t, int64_t, float, int) = reduce_bwd_kernel<TI, TO>;
    int vec = M % 4 == 0 && cuda_vec_aligned(din, sizeof(TI));
    CUDA_LAUNCH(k, cuda_quad_blocks(N * M), LAYOUT_THREADS, 0, cuda_stream(), (TI *)din, (const TO *)dout, N, M, div,
                vec);
}
extern "C" void reduce_backward_cuda(void *din, int dt_in, const void *dout, int dt_out, int64_t N, int64_t M,
                                     int mean) {
    float div = mean ? (float)M : 1.0f; // g / M in fp32 equals the CPU op's double quotient rounded to fp32
    CUDA_DT_DISPATCH(dt_in, TI, CUDA_DT_DISPATCH(dt_out, TO, reduce_bwd_launch<TI, TO>(din, dout, N, M, div)));
}
