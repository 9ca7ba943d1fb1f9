// cuda_norm.cu: GroupNorm (optionally followed by an activation, fused) and LayerNorm on the GPU, forward and
// backward, matching ops/norm.c: compute in fp32 on f32 or bf16 activations, statistics (mean, rstd) and parameter
// gradients in fp32, parameter gradients accumulated (+=) in a fixed order (deterministic, no atomics).
//
// GroupNorm, in [B, C, S] with G groups of Cg = C / G channels (a group is Cg S contiguous values; channels last,
// [B, S, C], below the NCHW kernels). The input (and its gradient) may be a channel concatenation [a | b] read and
// written where its parts lie (CatPtr): a group is then one contiguous run or two, one in each part.
//   forward   1. stats: P blocks per group, Welford moments per thread (by packs) merged (Chan) per block;
//             2. final: one thread per group merges the partials into mean and rstd (the saved statistics);
//             3. apply: y = act((x - mean) rstd gamma + beta), rows of S on blocks of (tx, ty) threads.
//   backward  1. reduce: per (sample, channel) row, partial sums over P2 chunks of sum dz and sum dz xhat, where
//                dz = dout act'(z) with z recomputed from x and the statistics (nothing but x is kept);
//             2. channel: one thread per channel sums the partials: the row sums, dgamma += , dbeta +=;
//             3. group: one thread per (sample, group): the two means of the din formula;
//             4. apply: din = rstd (dz gamma - mean(dz gamma) - xhat mean(dz gamma xhat)).
//   Each pass over the activations reads memory once, in packs of 4 where S (or Cg S) and the pointers allow.
// LayerNorm, in [N, C]: a warp per row (two-pass statistics over the row, re-read from cache, then the write);
// backward: din a warp per row; dgamma/dbeta from per-chunk column partials (coalesced 32-column tiles) summed in
// order by a final kernel.
#include "cuda_common.cuh"
#include "../../core/device_cuda.h"
#include "cuda_activation.cuh"
#include "cuda_api.h"

#define NORM_CHUNK 8192 // elements per block in the GroupNorm reductions
#define NORM_MAX_PARTS 64
#define NORM_THREADS 256

// ---------------------------------------------------------------------------------------------------------------
// block reductions (blockDim a multiple of 32, at most 1024); the result is valid in thread 0

struct Moments { // count, mean, sum of squared deviations
    float n, m, M2;
};
static __device__ __forceinline__ Moments moments_merge(Moments a, Moments b) {
    float n = a.n + b.n;
    if (b.n == 0.0f) return a;
    if (a.n == 0.0f) return b;
    float d = b.m - a.m, f = b.n / n;
    Moments r;
    r.n = n, r.m = a.m + d * f, r.M2 = a.M2 + b.M2 + d * d * a.n * f;
    return r;
}
static __device__ __forceinline__ Moments warp_moments(Moments a) {
    for (int k = 16; k > 0; k >>= 1) {
        Moments o;
        o.n = __shfl_xor_sync(0xffffffffu, a.n, k);
        o.m = __shfl_xor_sync(0xffffffffu, a.m, k);
        o.M2 = __shfl_xor_sync(0xffffffffu, a.M2, k);
        a = moments_merge(a, o);
    }
    return a;
}
static __device__ Moments block_moments(Moments a) {
    __shared__ Moments sh[32];
    int t = threadIdx.x + blockDim.x * threadIdx.y, w = t >> 5, l = t & 31, nw = (blockDim.x * blockDim.y) >> 5;
    a = warp_moments(a);
    if (l == 0) sh[w] = a;
    __syncthreads();
    if (w == 0) {
        Moments z = {0.0f, 0.0f, 0.0f};
        a = warp_moments(l < nw ? sh[l] : z);
    }
    return a;
}
static __device__ void block_sum2(float &a, float &b) {
    __shared__ float sh[2][32];
    int t = threadIdx.x + blockDim.x * threadIdx.y, w = t >> 5, l = t & 31, nw = (blockDim.x * blockDim.y) >> 5;
    a = warp_sum(a), b = warp_sum(b);
    if (l == 0) sh[0][w] = a, sh[1][w] = b;
    __syncthreads();
    if (w == 0) {
        a = warp_sum(l < nw ? sh[0][l] : 0.0f);
        b = warp_sum(l < nw ? sh[1][l] : 0.0f);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// GroupNorm

static int norm_parts(int64_t n) {
    int64_t p = (n + NORM_CHUNK - 1) / NORM_CHUNK;
    return (int)(p < 1 ? 1 : p > NORM_MAX_PARTS ? NORM_MAX_PARTS : p);
}
// Channels last, the backward's chunks of pixels: a block covers 32 channels of its chunk, so chunks of
// NORM_NHWC_PIXELS pixels (not NORM_CHUNK values) keep as many blocks busy as the NCHW kernels have
#define NORM_NHWC_PIXELS 256
static int norm_parts_nhwc(int64_t S) { return norm_parts((S + NORM_NHWC_PIXELS - 1) / NORM_NHWC_PIXELS * NORM_CHUNK); }

// A GroupNorm input or input gradient: one tensor (a, with Ca = C), or the channels [a | b] of a [B, Ca, S] and
// b [B, C - Ca, S] (channels last: [B, S, Ca] and [B, S, C - Ca])
template <class T> struct CatPtr {
    T *a, *b;
    int64_t Ca, C;
    // NCHW: the S values of channel c of sample n
    __device__ __forceinline__ T *row(int64_t n, int64_t c, int64_t S) const {
        return c < Ca ? a + (n * Ca + c) * S : b + (n * (C - Ca) + c - Ca) * S;
    }
    // channels last: channel c of pixel p (of all B S pixels)
    __device__ __forceinline__ T *px(int64_t p, int64_t c) const {
        return c < Ca ? a + p * Ca + c : b + p * (C - Ca) + c - Ca;
    }
};

// workspace (floats): forward partials [BG, P, 3]; backward partials [B C, P2, 2] (P2: the larger of the two
// layouts' chunk counts), row sums [B C, 2], coefficients [BG, 2]
extern "C" size_t groupnorm_workspace_bytes_cuda(int64_t B, int64_t C, int64_t S, int groups) {
    int64_t BG = B * groups, rows = B * C, P2 = norm_parts(S) > norm_parts_nhwc(S) ? norm_parts(S) : norm_parts_nhwc(S);
    int64_t fwd = BG * norm_parts(C / groups * S) * 3, bwd = rows * P2 * 2 + rows * 2 + BG * 2;
    return sizeof(float) * (size_t)(fwd > bwd ? fwd : bwd);
}

// part[bg, p] = moments of chunk p of group bg's n = Cg S values (in packs of VEC): the na values of its channels in
// x.a, then the rest in x.b (S is a multiple of VEC, so no pack straddles the two); grid (BG, P)
template <class T, int VEC>
__global__ static void gn_stats_kernel(float *part, CatPtr<const T> x, int64_t S, int64_t G, int64_t Cg) {
    int64_t bg = blockIdx.x, n = Cg * S, packs = n / VEC, c0 = bg % G * Cg;
    int64_t na = (c0 < x.Ca ? (x.Ca - c0 < Cg ? x.Ca - c0 : Cg) : 0) * S;
    int p = blockIdx.y, P = gridDim.y;
    const T *r0 = x.row(bg / G, c0, S), *r1 = x.row(bg / G, c0 + na / S, S);
    Moments a = {0.0f, 0.0f, 0.0f};
    for (int64_t i = packs * p / P + threadIdx.x; i < packs * (p + 1) / P; i += blockDim.x) {
        float v[VEC];
        int64_t j = i * VEC;
        ld_vec<T, VEC>(v, j < na ? r0 + j : r1 + (j - na), 0);
        // Welford update by a pack: its mean pm and squared deviations pM2, then (Chan) m += d VEC / n,
        // M2 += pM2 + d (pm - m) VEC with d = pm - m before the update: one division per pack
        float pm = 0.0f, pM2 = 0.0f;
        for (int j = 0; j < VEC; j++) pm += v[j];
        pm *= 1.0f / VEC;
        for (int j = 0; j < VEC; j++) pM2 += (v[j] - pm) * (v[j] - pm);
        a.n += (float)VEC;
        float d = pm - a.m;
        a.m += d * ((float)VEC / a.n);
        a.M2 += pM2 + d * (pm - a.m) * (float)VEC;
    }
    a = block_moments(a);
    if (threadIdx.x == 0) {
        float *o = part + (bg * P + p) * 3;
        o[0] = a.n, o[1] = a.m, o[2] = a.M2;
    }
}

// mean[bg], rstd[bg] from the P partials of each group, merged in order
__global__ static void gn_stats_final_kernel(float *mean, float *rstd, const float *part, int64_t BG, int P,
                                             float eps) {
    int64_t bg = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (bg >= BG) return;
    Moments a = {0.0f, 0.0f, 0.0f};
    for (int p = 0; p < P; p++) {
        const float *q = part + (bg * P + p) * 3;
        Moments b = {q[0], q[1], q[2]};
        a = moments_merge(a, b);
    }
    mean[bg] = a.m;
    rstd[bg] = 1.0f / sqrtf(fmaxf(a.M2 / a.n, 0.0f) + eps);
}

// row = b C + c of S values; block (tx, ty): ty rows of tx threads each; grid (rows / ty, chunks of S)
template <class T, int ACT, int VEC>
__global__ static void gn_fwd_apply_kernel(T *y, CatPtr<const T> x, const float *mean, const float *rstd,
                                           const void *gamma, const void *beta, int pdt, int64_t rows, int64_t C,
                                           int64_t S, int64_t Cg) {
    int64_t row = (int64_t)blockIdx.x * blockDim.y + threadIdx.y;
    if (row >= rows) return;
    int64_t n = row / C, c = row - n * C, bg = row / Cg; // (b C + c) / Cg = b G + c / Cg
    float m = mean[bg], a = rstd[bg] * ld_param(gamma, pdt, c), b0 = ld_param(beta, pdt, c);
    const T *xr = x.row(n, c, S);
    T *yr = y + row * S;
    for (int64_t s = ((int64_t)blockIdx.y * blockDim.x + threadIdx.x) * VEC; s < S;
         s += (int64_t)gridDim.y * blockDim.x * VEC) {
        float v[VEC];
        ld_vec<T, VEC>(v, xr, s);
        for (int j = 0; j < VEC; j++) v[j] = act_f<ACT>((v[j] - m) * a + b0);
        st_vec<T, VEC>(yr, s, v);
    }
}

// part[row, p] = (sum dz, sum dz xhat) over chunk p of the row's S values; grid (rows, P2)
template <class T, int ACT, int VEC>
__global__ static void gn_bwd_reduce_kernel(float *part, const T *dy, CatPtr<const T> x, const float *mean,
                                            const float *rstd, const void *gamma, const void *beta, int pdt, int64_t C,
                                            int64_t S, int64_t Cg) {
    int64_t row = blockIdx.x, packs = S / VEC, n = row / C, c = row - n * C, bg = row / Cg;
    int p = blockIdx.y, P = gridDim.y;
    float m = mean[bg], r = rstd[bg], a = 0.0f, b0 = 0.0f;
    if (ACT != ACT_ID) a = r * ld_param(gamma, pdt, c), b0 = ld_param(beta, pdt, c);
    const T *xr = x.row(n, c, S), *dyr = dy + row * S;
    float s1 = 0.0f, s2 = 0.0f;
    for (int64_t i = packs * p / P + threadIdx.x; i < packs * (p + 1) / P; i += blockDim.x) {
        float v[VEC], d[VEC];
        ld_vec<T, VEC>(v, xr, i * VEC);
        ld_vec<T, VEC>(d, dyr, i * VEC);
        for (int j = 0; j < VEC; j++) {
            float dz = d[j];
            if (ACT != ACT_ID) dz *= act_df<ACT>((v[j] - m) * a + b0);
            s1 += dz;
            s2 += dz * ((v[j] - m) * r);
        }
    }
    block_sum2(s1, s2);
    if (threadIdx.x == 0) {
        float *o = part + (row * P + p) * 2;
        o[0] = s1, o[1] = s2;
    }
}

// per channel c: rowsum[b C + c] = the partials summed; dgamma[c] += sum_b sum dz xhat; dbeta[c] += sum_b sum dz
__global__ static void gn_bwd_channel_kernel(float *rowsum, float *dgamma, float *dbeta, const float *part, int64_t B,
                                             int64_t C, int P) {
    int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float sg = 0.0f, sb = 0.0f;
    for (int64_t b = 0; b < B; b++) {
        int64_t row = b * C + c;
        float s1 = 0.0f, s2 = 0.0f;
        for (int p = 0; p < P; p++) s1 += part[(row * P + p) * 2], s2 += part[(row * P + p) * 2 + 1];
        rowsum[row * 2] = s1, rowsum[row * 2 + 1] = s2;
        sb += s1, sg += s2;
    }
    if (dgamma) dgamma[c] += sg;
    if (dbeta) dbeta[c] += sb;
}

// per (sample, group): coef = (mean(dz gamma) rstd, mean(dz gamma xhat) rstd) over the group's Cg S values
__global__ static void gn_bwd_group_kernel(float *coef, const float *rowsum, const float *rstd, const void *gamma,
                                           int pdt, int64_t BG, int64_t G, int64_t Cg, float inv_n) {
    int64_t bg = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (bg >= BG) return;
    int64_t row0 = bg * Cg, c0 = (bg % G) * Cg; // the group's first row (b C + g Cg) and channel
    float mdy = 0.0f, mdyx = 0.0f;
    for (int64_t k = 0; k < Cg; k++) {
        float g = ld_param(gamma, pdt, c0 + k);
        mdy += g * rowsum[(row0 + k) * 2];
        mdyx += g * rowsum[(row0 + k) * 2 + 1];
    }
    float r = rstd[bg];
    coef[bg * 2] = mdy * inv_n * r, coef[bg * 2 + 1] = mdyx * inv_n * r;
}

// din = (dz gamma rstd - coef0) - xhat coef1; the layout of gn_fwd_apply_kernel
template <class T, int ACT, int VEC>
__global__ static void gn_bwd_apply_kernel(CatPtr<T> dx, const T *dy, CatPtr<const T> x, const float *mean,
                                           const float *rstd, const float *coef, const void *gamma, const void *beta,
                                           int pdt, int64_t rows, int64_t C, int64_t S, int64_t Cg) {
    int64_t row = (int64_t)blockIdx.x * blockDim.y + threadIdx.y;
    if (row >= rows) return;
    int64_t n = row / C, c = row - n * C, bg = row / Cg;
    float m = mean[bg], r = rstd[bg], ga = ld_param(gamma, pdt, c), gr = ga * r, a = r * ga, b0 = 0.0f;
    if (ACT != ACT_ID) b0 = ld_param(beta, pdt, c);
    float c0 = coef[bg * 2], c1 = coef[bg * 2 + 1];
    const T *xr = x.row(n, c, S), *dyr = dy + row * S;
    T *dxr = dx.row(n, c, S);
    for (int64_t s = ((int64_t)blockIdx.y * blockDim.x + threadIdx.x) * VEC; s < S;
         s += (int64_t)gridDim.y * blockDim.x * VEC) {
        float v[VEC], d[VEC];
        ld_vec<T, VEC>(v, xr, s);
        ld_vec<T, VEC>(d, dyr, s);
        for (int j = 0; j < VEC; j++) {
            float dz = d[j];
            if (ACT != ACT_ID) dz *= act_df<ACT>((v[j] - m) * a + b0);
            d[j] = (dz * gr - c0) - ((v[j] - m) * r) * c1;
        }
        st_vec<T, VEC>(dxr, s, d);
    }
}

// ---- channels last: x [B, S, C] (Tensor.channels_last), a group's values Cg channels apart in every pixel.
// The statistics take the same partials and final kernel as above, each block reading its group's Cg-channel runs;
// the apply passes are elementwise over [B, S, C] (every thread its own (sample, group)); the backward's row sums
// per (sample, channel) come from column tiles of 32 channels (one warp reads 32 consecutive channels of a pixel),
// and then the channel and group kernels above run unchanged on them.

// part[bg, p] = moments of chunk p of group bg's Cg S values, taken pixel by pixel; grid (BG, P)
template <class T>
__global__ static void gn_stats_nhwc_kernel(float *part, CatPtr<const T> x, int64_t S, int64_t G, int64_t Cg) {
    int64_t bg = blockIdx.x, b = bg / G, n = Cg * S, c0 = bg % G * Cg;
    int p = blockIdx.y, P = gridDim.y;
    Moments a = {0.0f, 0.0f, 0.0f};
    for (int64_t j = n * p / P + threadIdx.x; j < n * (p + 1) / P; j += blockDim.x) {
        int64_t s = j / Cg;
        float v = ld_f32(x.px(b * S + s, c0 + (j - s * Cg)), 0);
        a.n += 1.0f;
        float d = v - a.m;
        a.m += d / a.n;
        a.M2 += d * (v - a.m);
    }
    a = block_moments(a);
    if (threadIdx.x == 0) {
        float *o = part + (bg * P + p) * 3;
        o[0] = a.n, o[1] = a.m, o[2] = a.M2;
    }
}

// y = act((x - mean) rstd gamma + beta) over [B, S, C], packs of VEC channels of one pixel
template <class T, int ACT, int VEC>
__global__ static void gn_fwd_apply_nhwc_kernel(T *y, CatPtr<const T> x, const float *mean, const float *rstd,
                                                const void *gamma, const void *beta, int pdt, int64_t n, int64_t S,
                                                int64_t C, int64_t G, int64_t Cg) {
    for (int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * VEC; i < n;
         i += (int64_t)gridDim.x * blockDim.x * VEC) {
        float v[VEC];
        int64_t px = i / C, c0 = i - px * C, b = px / S; // pixel px of all B S, sample b
        ld_vec<T, VEC>(v, x.px(px, c0), 0);
        for (int j = 0; j < VEC; j++) {
            int64_t c = c0 + j, bg = b * G + c / Cg;
            v[j] = act_f<ACT>((v[j] - mean[bg]) * (rstd[bg] * ld_param(gamma, pdt, c)) + ld_param(beta, pdt, c));
        }
        st_vec<T, VEC>(y, i, v);
    }
}

// part[(b C + c), p] = (sum dz, sum dz xhat) over chunk p of the S pixels; grid (B tiles, P) with tiles of 32
// channels; block 256: 8 pixel phases of 32 channels, summed in order at the end
template <class T, int ACT>
__global__ static void gn_bwd_reduce_nhwc_kernel(float *part, const T *dy, CatPtr<const T> x, const float *mean,
                                                 const float *rstd, const void *gamma, const void *beta, int pdt,
                                                 int64_t S, int64_t C, int64_t G, int64_t Cg) {
    __shared__ float sh[2][8][33];
    int64_t tiles = (C + 31) / 32, b = blockIdx.x / tiles, c = (blockIdx.x % tiles) * 32 + (threadIdx.x & 31);
    int ph = threadIdx.x >> 5, lane = threadIdx.x & 31, p = blockIdx.y, P = gridDim.y;
    float s1 = 0.0f, s2 = 0.0f;
    if (c < C) {
        int64_t bg = b * G + c / Cg;
        float m = mean[bg], r = rstd[bg], a = 0.0f, b0 = 0.0f;
        if (ACT != ACT_ID) a = r * ld_param(gamma, pdt, c), b0 = ld_param(beta, pdt, c);
        const T *xb = x.px(b * S, c), *dyb = dy + b * S * C + c;
        int64_t xs = c < x.Ca ? x.Ca : C - x.Ca; // the pixel stride of channel c's part
        for (int64_t s = S * p / P + ph; s < S * (p + 1) / P; s += 8) {
            float v = ld_f32(xb, s * xs), dz = ld_f32(dyb, s * C);
            if (ACT != ACT_ID) dz *= act_df<ACT>((v - m) * a + b0);
            s1 += dz;
            s2 += dz * ((v - m) * r);
        }
    }
    sh[0][ph][lane] = s1, sh[1][ph][lane] = s2;
    __syncthreads();
    if (ph == 0 && c < C) {
        for (int k = 1; k < 8; k++) s1 += sh[0][k][lane], s2 += sh[1][k][lane];
        float *o = part + ((b * C + c) * P + p) * 2;
        o[0] = s1, o[1] = s2;
    }
}

// din = (dz gamma rstd - coef0) - xhat coef1 over [B, S, C], packs as gn_fwd_apply_nhwc_kernel
template <class T, int ACT, int VEC>
__global__ static void gn_bwd_apply_nhwc_kernel(CatPtr<T> dx, const T *dy, CatPtr<const T> x, const float *mean,
                                                const float *rstd, const float *coef, const void *gamma,
                                                const void *beta, int pdt, int64_t n, int64_t S, int64_t C, int64_t G,
                                                int64_t Cg) {
    for (int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * VEC; i < n;
         i += (int64_t)gridDim.x * blockDim.x * VEC) {
        float v[VEC], d[VEC];
        int64_t px = i / C, c0 = i - px * C, b = px / S; // pixel px of all B S, sample b
        ld_vec<T, VEC>(v, x.px(px, c0), 0);
        ld_vec<T, VEC>(d, dy, i);
        for (int j = 0; j < VEC; j++) {
            int64_t c = c0 + j, bg = b * G + c / Cg;
            float m = mean[bg], r = rstd[bg], ga = ld_param(gamma, pdt, c), dz = d[j];
            if (ACT != ACT_ID) dz *= act_df<ACT>((v[j] - m) * (r * ga) + ld_param(beta, pdt, c));
            d[j] = (dz * (ga * r) - coef[bg * 2]) - ((v[j] - m) * r) * coef[bg * 2 + 1];
        }
        st_vec<T, VEC>(dx.px(px, c0), 0, d);
    }
}

// block and grid of the row-wise (NCHW) apply kernels: tx threads along S (packs of VEC), ty = 256 / tx rows a block
static void rows_layout(int64_t rows, int64_t S, int vec, dim3 *grid, dim3 *block) {
    int64_t packs = S / vec;
    int tx = cu_row_threads(packs), ty = NORM_THREADS / tx;
    int64_t gy = (packs + tx - 1) / tx;
    *block = dim3(tx, ty);
    *grid = dim3(cuda_blocks(rows, ty), (unsigned)(gy < 65535 ? gy : 65535));
}

// The forward and the backward on the input [x | xb] (xb NULL: x alone, Ca = C) and its gradient [dx | dxb], in
// either layout: channels last (nhwc), the [B, S, C] kernels with packs over channels; else [B, C, S], packs over the
// pixels of a row. The statistics' final merge, and the backward's channel and group passes, are the same for both.
template <class T, int ACT, int VEC>
static void gn_forward_any(int nhwc, void *y, float *mean, float *rstd, const void *x, const void *xb, int64_t Ca,
                           const void *gamma, const void *beta, int pdt, void *ws, int64_t B, int64_t C, int64_t S,
                           int64_t G, float eps) {
    CatPtr<const T> in = {(const T *)x, (const T *)xb, Ca, C};
    int64_t Cg = C / G, n = Cg * S, BG = B * G;
    int P = norm_parts(n);
    if (nhwc) {
        CUDA_LAUNCH(gn_stats_nhwc_kernel<T>, dim3((unsigned)BG, P), cu_row_threads((n + P - 1) / P), 0, cuda_stream(),
                    (float *)ws, in, S, G, Cg);
    } else {
        auto stats = gn_stats_kernel<T, VEC>;
        CUDA_LAUNCH(stats, dim3((unsigned)BG, P), cu_row_threads((n / VEC + P - 1) / P), 0, cuda_stream(), (float *)ws,
                    in, S, G, Cg);
    }
    CUDA_LAUNCH(gn_stats_final_kernel, cuda_blocks(BG, 128), 128, 0, cuda_stream(), mean, rstd, (float *)ws, BG, P,
                eps);
    if (nhwc) {
        auto apply = gn_fwd_apply_nhwc_kernel<T, ACT, VEC>;
        CUDA_LAUNCH(apply, cuda_stride_blocks(B * S * C / VEC, NORM_THREADS), NORM_THREADS, 0, cuda_stream(), (T *)y,
                    in, mean, rstd, gamma, beta, pdt, B * S * C, S, C, G, Cg);
    } else {
        dim3 grid, block;
        rows_layout(B * C, S, VEC, &grid, &block);
        auto apply = gn_fwd_apply_kernel<T, ACT, VEC>;
        CUDA_LAUNCH(apply, grid, block, 0, cuda_stream(), (T *)y, in, mean, rstd, gamma, beta, pdt, B * C, C, S, Cg);
    }
}

template <class T, int ACT, int VEC>
static void gn_backward_any(int nhwc, void *dx, void *dxb, float *dgamma, float *dbeta, const void *dy, const void *x,
                            const void *xb, int64_t Ca, const float *mean, const float *rstd, const void *gamma,
                            const void *beta, int pdt, void *ws, int64_t B, int64_t C, int64_t S, int64_t G) {
    CatPtr<const T> in = {(const T *)x, (const T *)xb, Ca, C};
    CatPtr<T> din = {(T *)dx, (T *)dxb, Ca, C};
    int64_t Cg = C / G, rows = B * C, BG = B * G;
    int P = nhwc ? norm_parts_nhwc(S) : norm_parts(S);
    float *part = (float *)ws, *rowsum = part + rows * P * 2, *coef = rowsum + rows * 2;
    if (nhwc) {
        auto reduce = gn_bwd_reduce_nhwc_kernel<T, ACT>;
        CUDA_LAUNCH(reduce, dim3((unsigned)(B * ((C + 31) / 32)), P), 256, 0, cuda_stream(), part, (const T *)dy, in,
                    mean, rstd, gamma, beta, pdt, S, C, G, Cg);
    } else {
        auto reduce = gn_bwd_reduce_kernel<T, ACT, VEC>;
        CUDA_LAUNCH(reduce, dim3((unsigned)rows, P), cu_row_threads((S / VEC + P - 1) / P), 0, cuda_stream(), part,
                    (const T *)dy, in, mean, rstd, gamma, beta, pdt, C, S, Cg);
    }
    CUDA_LAUNCH(gn_bwd_channel_kernel, cuda_blocks(C, 128), 128, 0, cuda_stream(), rowsum, dgamma, dbeta, part, B, C,
                P);
    if (!dx) return;
    CUDA_LAUNCH(gn_bwd_group_kernel, cuda_blocks(BG, 128), 128, 0, cuda_stream(), coef, rowsum, rstd, gamma, pdt, BG,
                G, Cg, 1.0f / (float)(Cg * S));
    if (nhwc) {
        auto apply = gn_bwd_apply_nhwc_kernel<T, ACT, VEC>;
        CUDA_LAUNCH(apply, cuda_stride_blocks(B * S * C / VEC, NORM_THREADS), NORM_THREADS, 0, cuda_stream(), din,
                    (const T *)dy, in, mean, rstd, coef, gamma, beta, pdt, B * S * C, S, C, G, Cg);
    } else {
        dim3 grid, block;
        rows_layout(rows, S, VEC, &grid, &block);
        auto apply = gn_bwd_apply_kernel<T, ACT, VEC>;
        CUDA_LAUNCH(apply, grid, block, 0, cuda_stream(), din, (const T *)dy, in, mean, rstd, coef, gamma, beta, pdt,
                    rows, C, S, Cg);
    }
}

// Packs of 4 when every row (of S pixels; channels last: of C channels, and of each part's channels) starts aligned
static int gn_vec(int channels_last, int64_t C, int64_t Ca, int64_t S, int dt, const void *p, const void *q,
                  const void *r) {
    int vec = cu_vec_width(channels_last ? C : S, dt ? 2 : 4, p, q, r);
    return channels_last && Ca % 4 ? 1 : vec;
}

extern "C" void groupnorm_forward_cuda(void *out, float *mean, float *rstd, const void *in, const void *in_b,
                                       int64_t Ca, const void *gamma, const void *beta, void *ws, int64_t B,
                                       int64_t C, int64_t S, int groups, float eps, int act, int dt, int pdt,
                                       int channels_last) {
    CHECK(in_b ? Ca > 0 && Ca < C : Ca == C, "", "groupnorm_forward_cuda: %lld of %lld channels in the first part",
          (long long)Ca, (long long)C);
    int vec = gn_vec(channels_last, C, Ca, S, dt, out, in, in_b);
#define FWD(A)                                                                                                    \
    if (dt && vec == 4)                                                                                           \
        gn_forward_any<__nv_bfloat16, A, 4>(channels_last, out, mean, rstd, in, in_b, Ca, gamma, beta, pdt, ws, B, \
                                            C, S, groups, eps);                                                   \
    else if (dt)                                                                                                  \
        gn_forward_any<__nv_bfloat16, A, 1>(channels_last, out, mean, rstd, in, in_b, Ca, gamma, beta, pdt, ws, B, \
                                            C, S, groups, eps);                                                   \
    else if (vec == 4)                                                                                            \
        gn_forward_any<float, A, 4>(channels_last, out, mean, rstd, in, in_b, Ca, gamma, beta, pdt, ws, B, C, S,   \
                                    groups, eps);                                                                 \
    else                                                                                                          \
        gn_forward_any<float, A, 1>(channels_last, out, mean, rstd, in, in_b, Ca, gamma, beta, pdt, ws, B, C, S,   \
                                    groups, eps)
    CU_ACT_DISPATCH(act, FWD);
#undef FWD
}

extern "C" void groupnorm_backward_cuda(void *din, void *din_b, float *dgamma, float *dbeta, const void *dout,
                                        const void *in, const void *in_b, int64_t Ca, const float *mean,
                                        const float *rstd, const void *gamma, const void *beta, void *ws, int64_t B,
                                        int64_t C, int64_t S, int groups, int act, int dt, int pdt,
                                        int channels_last) {
    CHECK(in_b ? Ca > 0 && Ca < C : Ca == C, "", "groupnorm_backward_cuda: %lld of %lld channels in the first part",
          (long long)Ca, (long long)C);
    CHECK(!din || !in_b || din_b, "",
          "groupnorm_backward_cuda: the input gradient of a concatenation wants both parts");
    int vec = gn_vec(channels_last, C, Ca, S, dt, din ? din : in, dout, in);
    if (in_b && gn_vec(channels_last, C, Ca, S, dt, in_b, din_b, din_b) == 1) vec = 1;
#define BWD(A)                                                                                                    \
    if (dt && vec == 4)                                                                                           \
        gn_backward_any<__nv_bfloat16, A, 4>(channels_last, din, din_b, dgamma, dbeta, dout, in, in_b, Ca, mean,   \
                                             rstd, gamma, beta, pdt, ws, B, C, S, groups);                        \
    else if (dt)                                                                                                  \
        gn_backward_any<__nv_bfloat16, A, 1>(channels_last, din, din_b, dgamma, dbeta, dout, in, in_b, Ca, mean,   \
                                             rstd, gamma, beta, pdt, ws, B, C, S, groups);                        \
    else if (vec == 4)                                                                                            \
        gn_backward_any<float, A, 4>(channels_last, din, din_b, dgamma, dbeta, dout, in, in_b, Ca, mean, rstd,     \
                                     gamma, beta, pdt, ws, B, C, S, groups);                                      \
    else                                                                                                          \
        gn_backward_any<float, A, 1>(channels_last, din, din_b, dgamma, dbeta, dout, in, in_b, Ca, mean, rstd,     \
                                     gamma, beta, pdt, ws, B, C, S, groups)
    CU_ACT_DISPATCH(act, BWD);
#undef BWD
}

// ---------------------------------------------------------------------------------------------------------------
// LayerNorm: a warp per row, LN_ROWS rows per block

#define LN_ROWS 8
#define LN_PART_ROWS 64 // rows per chunk of the parameter-gradient partials (at most LN_MAX_PARTS chunks)
#define LN_MAX_PARTS 128

static int ln_parts(int64_t N) {
    int64_t k = (N + LN_PART_ROWS - 1) / LN_PART_ROWS;
    return (int)(k < 1 ? 1 : k > LN_MAX_PARTS ? LN_MAX_PARTS : k);
}

// workspace (floats): the parameter-gradient partials [K, 2, C]
extern "C" size_t layernorm_workspace_bytes_cuda(int64_t N, int64_t C) {
    return sizeof(float) * 2 * (size_t)(ln_parts(N) * C);
}

template <class T>
__global__ static void ln_fwd_kernel(T *y, float *mean, float *rstd, const T *x, const void *gamma, const void *beta,
                                     int pdt, int64_t N, int64_t C, float eps) {
    int64_t n = (int64_t)blockIdx.x * LN_ROWS + threadIdx.y;
    if (n >= N) return; // the whole warp leaves together
    const T *xr = x + n * C;
    float s = 0.0f;
    for (int64_t c = threadIdx.x; c < C; c += 32) s += ld_f32(xr, c);
    float m = warp_sum(s) / (float)C, v = 0.0f;
    for (int64_t c = threadIdx.x; c < C; c += 32) {
        float d = ld_f32(xr, c) - m;
        v += d * d;
    }
    float r = 1.0f / sqrtf(warp_sum(v) / (float)C + eps);
    if (threadIdx.x == 0) mean[n] = m, rstd[n] = r;
    T *yr = y + n * C;
    for (int64_t c = threadIdx.x; c < C; c += 32)
        st_f32(yr, c, ((ld_f32(xr, c) - m) * r) * ld_param(gamma, pdt, c) + ld_param(beta, pdt, c));
}

// din = (dout gamma rstd - mean(dout gamma) rstd) - xhat mean(dout gamma xhat) rstd, per row
template <class T>
__global__ static void ln_bwd_dx_kernel(T *dx, const T *dy, const T *x, const float *mean, const float *rstd,
                                        const void *gamma, int pdt, int64_t N, int64_t C) {
    int64_t n = (int64_t)blockIdx.x * LN_ROWS + threadIdx.y;
    if (n >= N) return;
    const T *xr = x + n * C, *dyr = dy + n * C;
    float m = mean[n], r = rstd[n], mdy = 0.0f, mdyx = 0.0f;
    for (int64_t c = threadIdx.x; c < C; c += 32) {
        float g = ld_f32(dyr, c) * ld_param(gamma, pdt, c);
        mdy += g;
        mdyx += g * ((ld_f32(xr, c) - m) * r);
    }
    float inv_c = 1.0f / (float)C, a = warp_sum(mdy) * inv_c * r, e = warp_sum(mdyx) * inv_c * r;
    T *dxr = dx + n * C;
    for (int64_t c = threadIdx.x; c < C; c += 32)
        st_f32(dxr, c, (ld_f32(dyr, c) * ld_param(gamma, pdt, c) * r - a) - ((ld_f32(xr, c) - m) * r) * e);
}

// part[k, 0, c] = sum dout xhat, part[k, 1, c] = sum dout over the rows of chunk k; block (32 columns, 8 row lanes),
// grid (C / 32, K)
template <class T>
__global__ static void ln_bwd_param_part_kernel(float *part, const T *dy, const T *x, const float *mean,
                                                const float *rstd, int64_t N, int64_t C) {
    __shared__ float sh[2][8][33];
    int64_t c = (int64_t)blockIdx.x * 32 + threadIdx.x;
    int k = blockIdx.y, K = gridDim.y;
    float g = 0.0f, b = 0.0f;
    if (c < C)
        for (int64_t n = N * k / K + threadIdx.y; n < N * (k + 1) / K; n += 8) {
            float d = ld_f32(dy, n * C + c);
            g += d * ((ld_f32(x, n * C + c) - mean[n]) * rstd[n]);
            b += d;
        }
    sh[0][threadIdx.y][threadIdx.x] = g, sh[1][threadIdx.y][threadIdx.x] = b;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        for (int j = 1; j < 8; j++) g += sh[0][j][threadIdx.x], b += sh[1][j][threadIdx.x];
        part[(int64_t)k * 2 * C + c] = g, part[((int64_t)k * 2 + 1) * C + c] = b;
    }
}

__global__ static void ln_bwd_param_final_kernel(float *dgamma, float *dbeta, const float *part, int K, int64_t C) {
    int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float g = 0.0f, b = 0.0f;
    for (int k = 0; k < K; k++) g += part[(int64_t)k * 2 * C + c], b += part[((int64_t)k * 2 + 1) * C + c];
    if (dgamma) dgamma[c] += g;
    if (dbeta) dbeta[c] += b;
}

extern "C" void layernorm_forward_cuda(void *out, float *mean, float *rstd, const void *in, const void *gamma,
                                       const void *beta, int64_t N, int64_t C, float eps, int dt, int pdt) {
    dim3 block(32, LN_ROWS);
    unsigned grid = cuda_blocks(N, LN_ROWS);
    if (dt) CUDA_LAUNCH(ln_fwd_kernel<__nv_bfloat16>, grid, block, 0, cuda_stream(), (__nv_bfloat16 *)out, mean, rstd,
                        (const __nv_bfloat16 *)in, gamma, beta, pdt, N, C, eps);
    else CUDA_LAUNCH(ln_fwd_kernel<float>, grid, block, 0, cuda_stream(), (float *)out, mean, rstd, (const float *)in,
                     gamma, beta, pdt, N, C, eps);
}

template <class T>
static void ln_backward_t(T *dx, float *dgamma, float *dbeta, const T *dy, const T *x, const float *mean,
                          const float *rstd, const void *gamma, int pdt, float *ws, int64_t N, int64_t C) {
    if (dx) CUDA_LAUNCH(ln_bwd_dx_kernel<T>, cuda_blocks(N, LN_ROWS), dim3(32, LN_ROWS), 0, cuda_stream(), dx, dy, x,
                        mean, rstd, gamma, pdt, N, C);
    if (!dgamma && !dbeta) return;
    int K = ln_parts(N);
    CUDA_LAUNCH(ln_bwd_param_part_kernel<T>, dim3(cuda_blocks(C, 32), K), dim3(32, 8), 0, cuda_stream(), ws, dy, x,
                mean, rstd, N, C);
    CUDA_LAUNCH(ln_bwd_param_final_kernel, cuda_blocks(C, 128), 128, 0, cuda_stream(), dgamma, dbeta, ws, K, C);
}

extern "C" void layernorm_backward_cuda(void *din, float *dgamma, float *dbeta, const void *dout, const void *in,
                                        const float *mean, const float *rstd, const void *gamma, void *ws, int64_t N,
                                        int64_t C, int dt, int pdt) {
    if (dt) ln_backward_t<__nv_bfloat16>((__nv_bfloat16 *)din, dgamma, dbeta, (const __nv_bfloat16 *)dout,
                                         (const __nv_bfloat16 *)in, mean, rstd, gamma, pdt, (float *)ws, N, C);
    else ln_backward_t<float>((float *)din, dgamma, dbeta, (const float *)dout, (const float *)in, mean, rstd, gamma,
                              pdt, (float *)ws, N, C);
}
