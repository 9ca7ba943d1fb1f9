// cuda_reward_ops.cu: the ops of the CLIP rewards' preprocessing and heads on the GPU (ops/resize.c, ops/tokens.c):
// separable resize and its exact adjoint, centre crop, clamp_affine, per-channel normalisation, patch tokens, token
// selection, L2 row normalisation and the row dot product, forward and backward. Same formulas and, where the CPU
// op fixes one, the same summation order as the CPU ops, in fp32.
//
// The resize reads the CPU op's own tap tables (computed on the host, copied on the stream into the workspace), so
// both devices use the same weights. Its backward is a gather, not a scatter: each input pixel sums the outputs
// that read it (range lo..hi per input index, from the same tables) in increasing output order, which is the order
// in which the CPU adjoint accumulates; no atomics, deterministic.
#include "cuda_vec.cuh"
#include "../../core/device_cuda.h"
#include "cuda_api.h"

#define RW_THREADS 256

// ---------------------------------------------------------------------------------------------------------------
// resize. Axis tables on the device (see ResizeAxisCuda): output i reads in[start[i] + j] with w[i mt + j],
// j < count[i]; input c is read by the outputs lo[c] <= i < hi[c].
struct RzAxis {
    int64_t mt;
    const int32_t *start, *count, *lo, *hi;
    const float *w;
};

static RzAxis rz_axis(const ResizeAxisCuda &a, const void *tables) {
    const int32_t *b = (const int32_t *)tables;
    RzAxis r = {a.max_taps, b + a.start, b + a.count, b + a.lo, b + a.hi, (const float *)(b + a.w)};
    return r;
}

// tmp [P H, OW] (fp32) = in [P H, W] . Wx^T
template <class T>
__global__ static void resize_fwd_w_kernel(float *tmp, const T *in, RzAxis ax, int64_t rows, int64_t W, int64_t OW) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * OW) return;
    int64_t r = i / OW, o = i - r * OW, s = ax.start[o], n = ax.count[o];
    const float *w = ax.w + o * ax.mt;
    const T *src = in + r * W + s;
    float acc = 0.0f;
    for (int64_t j = 0; j < n; j++) acc += w[j] * ld_f32(src, j);
    tmp[i] = acc;
}

// out [P, OH, OW] = Wy . tmp [P, H, OW]
template <class T>
__global__ static void resize_fwd_h_kernel(T *out, const float *tmp, RzAxis ay, int64_t P, int64_t H, int64_t OH,
                                           int64_t OW) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= P * OH * OW) return;
    int64_t c = i % OW, q = i / OW, oh = q % OH, p = q / OH, s = ay.start[oh], n = ay.count[oh];
    const float *w = ay.w + oh * ay.mt, *src = tmp + (p * H + s) * OW + c;
    float acc = 0.0f;
    for (int64_t j = 0; j < n; j++) acc += w[j] * src[j * OW];
    st_f32(out, i, acc);
}

// tmp [P, H, OW] = Wy^T . dout [P, OH, OW]: input row h gathers the output rows lo[h] <= i < hi[h] that read it
template <class T>
__global__ static void resize_bwd_h_kernel(float *tmp, const T *dout, RzAxis ay, int64_t P, int64_t H, int64_t OH,
                                           int64_t OW) {
    int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= P * H * OW) return;
    int64_t c = e % OW, q = e / OW, h = q % H, p = q / H;
    const T *g = dout + p * OH * OW + c;
    float acc = 0.0f;
    for (int64_t i = ay.lo[h]; i < ay.hi[h]; i++) {
        int64_t j = h - ay.start[i];
        if (j >= 0 && j < ay.count[i]) acc += ay.w[i * ay.mt + j] * ld_f32(g, i * OW);
    }
    tmp[e] = acc;
}

// din [P H, W] = tmp [P H, OW] . Wx
template <class T>
__global__ static void resize_bwd_w_kernel(T *din, const float *tmp, RzAxis ax, int64_t rows, int64_t W, int64_t OW) {
    int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= rows * W) return;
    int64_t r = e / W, c = e - r * W;
    const float *g = tmp + r * OW;
    float acc = 0.0f;
    for (int64_t i = ax.lo[c]; i < ax.hi[c]; i++) {
        int64_t j = c - ax.start[i];
        if (j >= 0 && j < ax.count[i]) acc += ax.w[i * ax.mt + j] * g[i];
    }
    st_f32(din, e, acc);
}

static size_t rz_tmp_bytes(int64_t P, int64_t H, int64_t OW) {
    return ((sizeof(float) * (size_t)(P * H * OW)) + 255) / 256 * 256;
}

extern "C" size_t resize_workspace_bytes_cuda(int64_t P, int64_t H, int64_t OW, size_t table_bytes) {
    return rz_tmp_bytes(P, H, OW) + table_bytes;
}

// The tables go behind the fp32 intermediate in ws, copied on the compute stream (the host blob may be freed on
// return: a copy from pageable memory is staged before cudaMemcpyAsync returns).
static const void *rz_tables(void *ws, int64_t P, int64_t H, int64_t OW, const void *tables, size_t table_bytes) {
    char *dst = (char *)ws + rz_tmp_bytes(P, H, OW);
    CUDA_CHECK(cudaMemcpyAsync(dst, tables, table_bytes, cudaMemcpyHostToDevice, cuda_stream()));
    return dst;
}

extern "C" void resize_forward_cuda(void *out, const void *in, int64_t P, int64_t H, int64_t W, int64_t OH,
                                    int64_t OW, const void *tables, size_t table_bytes, ResizeAxisCuda ax,
                                    ResizeAxisCuda ay, void *ws, int dt) {
    const void *tb = rz_tables(ws, P, H, OW, tables, table_bytes);
    RzAxis x = rz_axis(ax, tb), y = rz_axis(ay, tb);
    float *tmp = (float *)ws;
    CUDA_DT_DISPATCH(dt, T, {
        CUDA_LAUNCH(resize_fwd_w_kernel<T>, cuda_blocks(P * H * OW, RW_THREADS), RW_THREADS, 0, cuda_stream(), tmp,
                    (const T *)in, x, P * H, W, OW);
        CUDA_LAUNCH(resize_fwd_h_kernel<T>, cuda_blocks(P * OH * OW, RW_THREADS), RW_THREADS, 0, cuda_stream(),
                    (T *)out, (const float *)tmp, y, P, H, OH, OW);
    });
}

extern "C" void resize_backward_cuda(void *din, const void *dout, int64_t P, int64_t H, int64_t W, int64_t OH,
                                     int64_t OW, const void *tables, size_t table_bytes, ResizeAxisCuda ax,
                                     ResizeAxisCuda ay, void *ws, int dt) {
    const void *tb = rz_tables(ws, P, H, OW, tables, table_bytes);
    RzAxis x = rz_axis(ax, tb), y = rz_axis(ay, tb);
    float *tmp = (float *)ws;
    CUDA_DT_DISPATCH(dt, T, {
        CUDA_LAUNCH(resize_bwd_h_kernel<T>, cuda_blocks(P * H * OW, RW_THREADS), RW_THREADS, 0, cuda_stream(), tmp,
                    (const T *)dout, y, P, H, OH, OW);
        CUDA_LAUNCH(resize_bwd_w_kernel<T>, cuda_blocks(P * H * W, RW_THREADS), RW_THREADS, 0, cuda_stream(), (T *)din,
                    (const float *)tmp, x, P * H, W, OW);
    });
}

// ---------------------------------------------------------------------------------------------------------------
// crop: small [P, OH, OW] at (top, left) of big [P, H, W]. Forward: a copy; backward: din written everywhere (the
// window from dout, zero outside), one pass over din.
template <class T>
__global__ static void crop_fwd_kernel(T *out, const T *in, int64_t P, int64_t H, int64_t W, int64_t OH, int64_t OW,
                                       int top, int left) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= P * OH * OW) return;
    int64_t c = i % OW, q = i / OW, h = q % OH, p = q / OH;
    out[i] = in[(p * H + top + h) * W + left + c];
}
template <class T>
__global__ static void crop_bwd_kernel(T *din, const T *dout, int64_t P, int64_t H, int64_t W, int64_t OH, int64_t OW,
                                       int top, int left) {
    int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= P * H * W) return;
    int64_t c = e % W - left, q = e / W, h = q % H - top, p = q / H;
    if (h >= 0 && h < OH && c >= 0 && c < OW) din[e] = dout[(p * OH + h) * OW + c];
    else st_f32(din, e, 0.0f);
}

extern "C" void crop2d_forward_cuda(void *out, const void *in, int64_t P, int64_t H, int64_t W, int64_t OH, int64_t OW,
                                    int top, int left, int dt) {
    CUDA_DT_DISPATCH(dt, T, CUDA_LAUNCH(crop_fwd_kernel<T>, cuda_blocks(P * OH * OW, RW_THREADS), RW_THREADS, 0,
                                        cuda_stream(), (T *)out, (const T *)in, P, H, W, OH, OW, top, left));
}
extern "C" void crop2d_backward_cuda(void *din, const void *dout, int64_t P, int64_t H, int64_t W, int64_t OH,
                                     int64_t OW, int top, int left, int dt) {
    CUDA_DT_DISPATCH(dt, T, CUDA_LAUNCH(crop_bwd_kernel<T>, cuda_blocks(P * H * W, RW_THREADS), RW_THREADS, 0,
                                        cuda_stream(), (T *)din, (const T *)dout, P, H, W, OH, OW, top, left));
}

// ---------------------------------------------------------------------------------------------------------------
// clamp_affine: out = min(max(a x + b, lo), hi); din = a dout strictly inside the bounds, else 0
template <class T>
__global__ static void clamp_affine_fwd_kernel(T *out, const T *in, int64_t n, float a, float b, float lo, float hi) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = a * ld_f32(in, i) + b;
    st_f32(out, i, v < lo ? lo : v > hi ? hi : v);
}
template <class T>
__global__ static void clamp_affine_bwd_kernel(T *din, const T *dout, const T *in, int64_t n, float a, float b,
                                               float lo, float hi) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = a * ld_f32(in, i) + b;
    st_f32(din, i, v > lo && v < hi ? a * ld_f32(dout, i) : 0.0f);
}

extern "C" void clamp_affine_forward_cuda(void *out, const void *in, int64_t n, float a, float b, float lo, float hi,
                                          int dt) {
    CUDA_DT_DISPATCH(dt, T, CUDA_LAUNCH(clamp_affine_fwd_kernel<T>, cuda_blocks(n, RW_THREADS), RW_THREADS, 0,
                                        cuda_stream(), (T *)out, (const T *)in, n, a, b, lo, hi));
}
extern "C" void clamp_affine_backward_cuda(void *din, const void *dout, const void *in, int64_t n, float a, float b,
                                           float lo, float hi, int dt) {
    CUDA_DT_DISPATCH(dt, T, CUDA_LAUNCH(clamp_affine_bwd_kernel<T>, cuda_blocks(n, RW_THREADS), RW_THREADS, 0,
                                        cuda_stream(), (T *)din, (const T *)dout, (const T *)in, n, a, b, lo, hi));
}

// ---------------------------------------------------------------------------------------------------------------
// normalize over [P = B C, S]: out = (in - mean[c]) / std[c] (backward: din = dout / std[c]); mean and std travel
// as kernel arguments (C <= 4)
struct NormStats {
    float mean[4], std[4];
};
template <class T>
__global__ static void normalize_kernel(T *out, const T *in, NormStats st, int64_t n, int64_t C, int64_t S,
                                        int backward) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    int c = (int)((i / S) % C);
    // constant indices keep the argument in the constant bank (a dynamic index would copy it to the stack)
    float m = c == 0 ? st.mean[0] : c == 1 ? st.mean[1] : c == 2 ? st.mean[2] : st.mean[3];
    float sd = c == 0 ? st.std[0] : c == 1 ? st.std[1] : c == 2 ? st.std[2] : st.std[3];
    float v = ld_f32(in, i);
    st_f32(out, i, backward ? v / sd : (v - m) / sd);
}

static void normalize_launch(void *out, const void *in, const float *mean, const float *std, int64_t P, int64_t C,
                             int64_t S, int backward, int dt) {
    NormStats st = {{0}, {0}};
    for (int64_t c = 0; c < C; c++) st.mean[c] = mean ? mean[c] : 0.0f, st.std[c] = std[c];
    CUDA_DT_DISPATCH(dt, T, CUDA_LAUNCH(normalize_kernel<T>, cuda_blocks(P * S, RW_THREADS), RW_THREADS, 0,
                                        cuda_stream(), (T *)out, (const T *)in, st, P * S, C, S, backward));
}
extern "C" void normalize_forward_cuda(void *out, const void *in, const float *mean, const float *std, int64_t P,
                                       int64_t C, int64_t S, int dt) {
    normalize_launch(out, in, mean, std, P, C, S, 0, dt);
}
extern "C" void normalize_backward_cuda(void *din, const void *dout, const float *std, int64_t P, int64_t C, int64_t S,
                                        int dt) {
    normalize_launch(din, dout, NULL, std, P, C, S, 1, dt);
}

// ---------------------------------------------------------------------------------------------------------------
// patch tokens: out [B, T, D], T = 1 + G; patches [B, D, G] (dt); cls [D], pos [T, D] (pdt)
template <class T, class PT>
__global__ static void patch_tokens_fwd_kernel(T *out, const T *patches, const PT *cls, const PT *pos, int64_t B,
                                               int64_t Tn, int64_t D) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= B * Tn * D) return;
    int64_t d = i % D, r = i / D, t = r % Tn, b = r / Tn;
    float v = t == 0 ? ld_f32(cls, d) : ld_f32(patches, (b * D + d) * (Tn - 1) + t - 1);
    st_f32(out, i, v + ld_f32(pos, t * D + d));
}
// dpatches [B, D, G] written
template <class T>
__global__ static void patch_tokens_bwd_kernel(T *dpatches, const T *dout, int64_t B, int64_t Tn, int64_t D) {
    int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, G = Tn - 1;
    if (e >= B * D * G) return;
    int64_t g = e % G, q = e / G, d = q % D, b = q / D;
    dpatches[e] = dout[(b * Tn + 1 + g) * D + d];
}
// dpos [T, D] += sum_b dout[b]; dcls [D] += sum_b dout[b, 0] (fp32, either may be NULL)
template <class T>
__global__ static void patch_tokens_param_kernel(float *dcls, float *dpos, const T *dout, int64_t B, int64_t Tn,
                                                 int64_t D) {
    int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= Tn * D) return;
    float s = 0.0f;
    for (int64_t b = 0; b < B; b++) s += ld_f32(dout, b * Tn * D + e);
    if (dpos) dpos[e] += s;
    if (dcls && e < D) dcls[e] += s;
}

extern "C" void patch_tokens_forward_cuda(void *out, const void *patches, const void *cls, const void *pos, int64_t B,
                                          int64_t Tn, int64_t D, int dt, int pdt) {
    CUDA_DT_DISPATCH(dt, T, CUDA_DT_DISPATCH(pdt, PT, {
        auto kernel = patch_tokens_fwd_kernel<T, PT>;
        CUDA_LAUNCH(kernel, cuda_blocks(B * Tn * D, RW_THREADS), RW_THREADS, 0, cuda_stream(), (T *)out,
                    (const T *)patches, (const PT *)cls, (const PT *)pos, B, Tn, D);
    }));
}
extern "C" void patch_tokens_backward_cuda(void *dpatches, float *dcls, float *dpos, const void *dout, int64_t B,
                                           int64_t Tn, int64_t D, int dt) {
    CUDA_DT_DISPATCH(dt, T, {
        if (dpatches)
            CUDA_LAUNCH(patch_tokens_bwd_kernel<T>, cuda_blocks(B * D * (Tn - 1), RW_THREADS), RW_THREADS, 0,
                        cuda_stream(), (T *)dpatches, (const T *)dout, B, Tn, D);
        if (dcls || dpos)
            CUDA_LAUNCH(patch_tokens_param_kernel<T>, cuda_blocks(Tn * D, RW_THREADS), RW_THREADS, 0, cuda_stream(),
                        dcls, dpos, (const T *)dout, B, Tn, D);
    });
}

// ---------------------------------------------------------------------------------------------------------------
// token select: rows [B, C] = tok[b, idx[b]] of tok [B, T, C]. The host indices travel as a kernel argument, in
// chunks of TS_CHUNK rows per launch.
#define TS_CHUNK 256
struct TokIdx {
    int32_t idx[TS_CHUNK];
};
template <class T>
__global__ static void token_select_fwd_kernel(T *rows, const T *tok, TokIdx ix, int64_t nb, int64_t Tn, int64_t C) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= nb * C) return;
    int64_t b = i / C, c = i - b * C;
    rows[i] = tok[(b * Tn + ix.idx[b]) * C + c];
}
// dtok [B, T, C] written: drows at the selected tokens, zero elsewhere
template <class T>
__global__ static void token_select_bwd_kernel(T *dtok, const T *drows, TokIdx ix, int64_t nb, int64_t Tn, int64_t C) {
    int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= nb * Tn * C) return;
    int64_t c = e % C, q = e / C, t = q % Tn, b = q / Tn;
    if (t == ix.idx[b]) dtok[e] = drows[b * C + c];
    else st_f32(dtok, e, 0.0f);
}

static void token_select_launch(void *rows, void *tok, const int32_t *idx, int64_t B, int64_t Tn, int64_t C,
                                int backward, int dt) {
    for (int64_t b0 = 0; b0 < B; b0 += TS_CHUNK) {
        int64_t nb = B - b0 < TS_CHUNK ? B - b0 : TS_CHUNK;
        TokIdx ix;
        memset(&ix, 0, sizeof ix);
        memcpy(ix.idx, idx + b0, sizeof(int32_t) * (size_t)nb);
        CUDA_DT_DISPATCH(dt, T, {
            T *r = (T *)rows + b0 * C, *t = (T *)tok + b0 * Tn * C;
            if (backward)
                CUDA_LAUNCH(token_select_bwd_kernel<T>, cuda_blocks(nb * Tn * C, RW_THREADS), RW_THREADS, 0,
                            cuda_stream(), t, (const T *)r, ix, nb, Tn, C);
            else
                CUDA_LAUNCH(token_select_fwd_kernel<T>, cuda_blocks(nb * C, RW_THREADS), RW_THREADS, 0, cuda_stream(),
                            r, (const T *)t, ix, nb, Tn, C);
        });
    }
}
extern "C" void token_select_forward_cuda(void *out, const void *in, const int32_t *idx, int64_t B, int64_t Tn,
                                          int64_t C, int dt) {
    token_select_launch(out, (void *)in, idx, B, Tn, C, 0, dt);
}
extern "C" void token_select_backward_cuda(void *din, const void *dout, const int32_t *idx, int64_t B, int64_t Tn,
                                           int64_t C, int dt) {
    token_select_launch((void *)dout, din, idx, B, Tn, C, 1, dt);
}

// ---------------------------------------------------------------------------------------------------------------
// Row reductions: a warp per row of [N, C] (RW_ROWS rows per block), lanes strided over C, a fixed butterfly.
#define RW_ROWS 4

// out = in / norm, norm [N] (fp32) = max(|in|, 1e-12)
template <class T> __global__ static void l2normalize_fwd_kernel(T *out, float *norm, const T *in, int64_t N, int64_t C) {
    int64_t n = (int64_t)blockIdx.x * RW_ROWS + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (n >= N) return; // a whole warp leaves together
    const T *x = in + n * C;
    float s = 0.0f;
    for (int64_t c = lane; c < C; c += 32) {
        float v = ld_f32(x, c);
        s += v * v;
    }
    s = warp_sum(s);
    float len = sqrtf(s), nr = len > 1e-12f ? len : 1e-12f;
    if (lane == 0) norm[n] = nr;
    for (int64_t c = lane; c < C; c += 32) st_f32(out, n * C + c, ld_f32(x, c) / nr);
}
// din = (dout - out <dout, out>) / norm (the projection dropped where the norm was clamped)
template <class T>
__global__ static void l2normalize_bwd_kernel(T *din, const T *dout, const T *out, const float *norm, int64_t N,
                                              int64_t C) {
    int64_t n = (int64_t)blockIdx.x * RW_ROWS + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (n >= N) return;
    const T *g = dout + n * C, *y = out + n * C;
    float s = 0.0f;
    for (int64_t c = lane; c < C; c += 32) s += ld_f32(g, c) * ld_f32(y, c);
    s = warp_sum(s);
    float nr = norm[n], proj = nr > 1e-12f ? s : 0.0f;
    for (int64_t c = lane; c < C; c += 32) st_f32(din, n * C + c, (ld_f32(g, c) - ld_f32(y, c) * proj) / nr);
}
// out [N] (fp32) = <a[n], b[n]>
template <class T> __global__ static void rowdot_fwd_kernel(float *out, const T *a, const T *b, int64_t N, int64_t C) {
    int64_t n = (int64_t)blockIdx.x * RW_ROWS + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (n >= N) return;
    float s = 0.0f;
    for (int64_t c = lane; c < C; c += 32) s += ld_f32(a, n * C + c) * ld_f32(b, n * C + c);
    s = warp_sum(s);
    if (lane == 0) out[n] = s;
}
// da = dout[n] b, db = dout[n] a (either may be NULL)
template <class T>
__global__ static void rowdot_bwd_kernel(T *da, T *db, const float *dout, const T *a, const T *b, int64_t N,
                                         int64_t C) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * C) return;
    float g = dout[i / C];
    if (da) st_f32(da, i, g * ld_f32(b, i));
    if (db) st_f32(db, i, g * ld_f32(a, i));
}

extern "C" void l2normalize_forward_cuda(void *out, float *norm, const void *in, int64_t N, int64_t C, int dt) {
    CUDA_DT_DISPATCH(dt, T, CUDA_LAUNCH(l2normalize_fwd_kernel<T>, cuda_blocks(N, RW_ROWS), 32 * RW_ROWS, 0,
                                        cuda_stream(), (T *)out, norm, (const T *)in, N, C));
}
extern "C" void l2normalize_backward_cuda(void *din, const void *dout, const void *out, const float *norm, int64_t N,
                                          int64_t C, int dt) {
    CUDA_DT_DISPATCH(dt, T, CUDA_LAUNCH(l2normalize_bwd_kernel<T>, cuda_blocks(N, RW_ROWS), 32 * RW_ROWS, 0,
                                        cuda_stream(), (T *)din, (const T *)dout, (const T *)out, norm, N, C));
}
extern "C" void rowdot_forward_cuda(float *out, const void *a, const void *b, int64_t N, int64_t C, int dt) {
    CUDA_DT_DISPATCH(dt, T, CUDA_LAUNCH(rowdot_fwd_kernel<T>, cuda_blocks(N, RW_ROWS), 32 * RW_ROWS, 0, cuda_stream(),
                                        out, (const T *)a, (const T *)b, N, C));
}
extern "C" void rowdot_backward_cuda(void *da, void *db, const float *dout, const void *a, const void *b, int64_t N,
                                     int64_t C, int dt) {
    CUDA_DT_DISPATCH(dt, T, CUDA_LAUNCH(rowdot_bwd_kernel<T>, cuda_blocks(N * C, RW_THREADS), RW_THREADS, 0,
                                        cuda_stream(), (T *)da, (T *)db, dout, (const T *)a, (const T *)b, N, C));
}
