// cuda_attention.cu: the memory-efficient attention core of ops/attention.c on the GPU, forward and backward, for
// every head dim, any query/key counts, causal or not, f32 or bf16 storage with fp32 compute. Nothing of size
// [Tq, Tk] is ever stored: the forward keeps the log-sum-exp of each score row (fp32 [B, H, Tq]) and the backward
// rebuilds the probabilities from it (FlashAttention-2 style, SIMT fp32). The launchers first offer the problem to
// cuDNN's fused attention (cuda_sdpa.cu: bf16, non-causal, head dims in multiples of 8 up to 256, where cuDNN plans
// it); non-causal attention with head dims over 256 runs as chunked cuBLASLt GEMMs (below); these kernels run
// everything else.
//
// Tiled kernels (head dim D <= 256): a block of 128 threads owns BR rows of one (batch, head) and walks tiles of
// BC = 32 rows of the other side through shared memory. The threads form 16 groups of 8 lanes; group g owns R rows
// (BR = 16 R; R = 1, 2 or 4 by kernel and head dim), lane s of the group owns the tile columns s + 8 i (i < 4) of the
// score block and the head columns s + 8 i (i < DP/8) of the accumulators, DP being D rounded up to one of the
// compiled capacities (32, 64, 96, 128, 160, 256).
//   forward   : rows = queries; online softmax over key tiles (max and sum reduced across the group by shuffles).
//   backward  : delta_i = rowsum(dout * out) first (attn_delta_kernel, into the ops workspace); then
//               rows = keys   (attn_bwd_kv_kernel): dv += P^T dout, dk += dS^T q, over query tiles (split over
//               blocks when the keys are few, the fp32 partials summed by attn_kv_reduce_kernel);
//               rows = queries (attn_bwd_q_kernel): dq += dS k, over key tiles;
//               with P = exp(S - lse), dS = P (dout v^T - delta). Two kernels instead of atomics on dq: deterministic
//               results and no fp32 dq buffer, for recomputing S and dout v^T once more.
// Generic kernels (D > 256): one warp per row, dot products reduced across the warp, the accumulators in chunks of
// 256 head columns (the scores recomputed per chunk). Slower, but correct for any D with bounded registers.
//
// Scores are scaled by log2(e) / sqrt(D) and exponentiated with exp2f: IEEE in, IEEE out (NaN and Inf propagate,
// nothing is converted to an integer). A row whose visible scores so far are all -Inf uses 0 as its reference
// maximum, so no -Inf - -Inf appears.
#include "cuda_common.cuh"
#include "../../core/device_cuda.h"
#include "../../core/tensor.h"
#include "cuda_api.h"

#ifdef DRTUNE_CUDAEMU
#define ATT_UNROLL
#else
#define ATT_UNROLL _Pragma("unroll")
#endif

#define ATT_THREADS 128 // 4 warps = 16 groups of 8 lanes
#define ATT_BC 32       // rows of the other side per tile
#define ATT_NJ 4        // tile columns per lane: s + 8 i
#define ATT_GEN_CHUNK 256 // generic kernels: head columns per accumulator pass (8 per lane)
// query rows per group in the forward and dq kernels: 4 for heads up to 64 (each K/V element read from shared memory
// feeds 4 FMAs, and a K/V tile serves 64 queries), 2 above, where the R DP/8 accumulators and 8 R scores per lane
// would pass ~128 registers (nvcc -Xptxas -v: at most 128, no spills, at every capacity)
#define ATT_ROWS(DP) ((DP) <= 64 ? 4 : 2)
// key rows per group in the dk/dv kernel: 2 R DP/8 accumulators per lane stay at or under 80
#define ATT_KV_ROWS(DP) ((DP) > 160 ? 1 : 2)
// The dk/dv kernel has one block per 16 R keys and (batch, head): cross-attention (77 keys) gives few blocks, each
// walking every query. The queries are then split over blockIdx.z so that about this many blocks run, each split
// keeping at least ATT_KV_MIN_TILES query tiles; the splits' fp32 partials (workspace) are summed in split order.
#define ATT_KV_TARGET_BLOCKS 512
#define ATT_KV_MIN_TILES 4

static const float ATT_LOG2E = 1.4426950408889634f, ATT_LN2 = 0.69314718055994531f;

// Strides (floats) of the shared tiles. Own-row tiles (R rows per group): DP + 8 / R, so the rows g R + r that the
// 4 groups of a warp read at one column lie 8 banks apart (DP is a multiple of 32). Other-side tiles: DP + 1, an odd
// stride, so the 8 rows s + 8 i that a group's lanes read at one column fall in 8 banks.
template <int DP, int R> struct AttTile {
    static constexpr int NC = DP / 8;      // accumulator columns per lane
    static constexpr int OWN = DP + 8 / R; // own-row tile stride
    static constexpr int OTH = DP + 1;     // other-side tile stride
    static constexpr int PS = ATT_BC + 8 / R; // score tile stride: rows 8 banks apart again
    static constexpr int BR = 16 * R;         // own rows per block
    // dynamic shared memory (bytes) of each kernel, in the order the kernels lay their tiles out
    static constexpr size_t FWD = sizeof(float) * (BR * OWN + 2 * ATT_BC * OTH + BR * PS);
    static constexpr size_t BWD_Q = sizeof(float) * (2 * BR * OWN + 2 * ATT_BC * OTH + BR * PS);
    static constexpr size_t BWD_KV = sizeof(float) * (2 * BR * OWN + 2 * ATT_BC * OTH + 2 * ATT_BC + 2 * BR * PS);
};

// Sum / max over the 8 lanes of a group (lanes 8g .. 8g + 7 of one warp).
__device__ __forceinline__ float grp_sum(float x) {
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    x += __shfl_xor_sync(0xffffffffu, x, 2);
    x += __shfl_xor_sync(0xffffffffu, x, 4);
    return x;
}
__device__ __forceinline__ float grp_max(float x) {
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 4));
    return x;
}

// rows [r0, r0 + n) of a [*, HD] head slice (head columns [0, D)) into a shared tile [n][stride], times mul;
// rows past `rows` and columns past D are zero.
template <typename T>
__device__ __forceinline__ void att_load(float *dst, int stride, int n, int dp, const T *src, int64_t HD, int r0,
                                         int rows, int D, float mul) {
    for (int idx = threadIdx.x; idx < n * dp; idx += ATT_THREADS) {
        int r = idx / dp, c = idx - r * dp;
        dst[r * stride + c] = (r0 + r < rows && c < D) ? ld_f32(src, (int64_t)(r0 + r) * HD + c) * mul : 0.0f;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// forward: grid (ceil(Tq / BR), B H). out [B, Tq, H*D], lse [B, H, Tq].
template <typename T, int DP, int R>
__global__ void __launch_bounds__(ATT_THREADS) attn_fwd_kernel(T *out, float *lse, const T *q, const T *k,
                                                               const T *v, int Tq, int Tk, int H, int D, int causal,
                                                               float scale_log2) {
    typedef AttTile<DP, R> L;
    constexpr int BR = L::BR;
    CUDA_DYN_SHARED(float, sm);
    float *Qs = sm;                      // [BR][OWN] q * scale log2(e)
    float *Ks = Qs + BR * L::OWN;        // [BC][OTH]
    float *Vs = Ks + ATT_BC * L::OTH;    // [BC][OTH]
    float *Ps = Vs + ATT_BC * L::OTH;    // [BR][PS] probabilities of the tile (unnormalised)
    const int g = threadIdx.x >> 3, s = threadIdx.x & 7, bh = blockIdx.y, b = bh / H, h = bh - b * H;
    const int q0 = blockIdx.x * BR;
    const int64_t HD = (int64_t)H * D;
    const T *qb = q + (int64_t)b * Tq * HD + (int64_t)h * D;
    const T *kb = k + (int64_t)b * Tk * HD + (int64_t)h * D, *vb = v + (int64_t)b * Tk * HD + (int64_t)h * D;
    att_load(Qs, L::OWN, BR, DP, qb, HD, q0, Tq, D, scale_log2);
    __syncthreads(); // every block reaches a barrier (the emulator decides fibers on a block's first barrier)

    float o[R][L::NC], m[R], l[R];
    ATT_UNROLL for (int r = 0; r < R; r++) {
        m[r] = -INFINITY, l[r] = 0.0f;
        ATT_UNROLL for (int c = 0; c < L::NC; c++) o[r][c] = 0.0f;
    }
    const int kend = causal ? min(Tk, q0 + BR) : Tk; // keys any row of the block sees
    for (int k0 = 0; k0 < kend; k0 += ATT_BC) {
        __syncthreads(); // the previous tile's K, V are consumed (and Q is loaded)
        att_load(Ks, L::OTH, ATT_BC, DP, kb, HD, k0, Tk, D, 1.0f);
        att_load(Vs, L::OTH, ATT_BC, DP, vb, HD, k0, Tk, D, 1.0f);
        __syncthreads();
        float sc[R][ATT_NJ];
        ATT_UNROLL for (int r = 0; r < R; r++) ATT_UNROLL for (int i = 0; i < ATT_NJ; i++) sc[r][i] = 0.0f;
        for (int d = 0; d < D; d++) {
            float qv[R];
            ATT_UNROLL for (int r = 0; r < R; r++) qv[r] = Qs[(g * R + r) * L::OWN + d];
            ATT_UNROLL for (int i = 0; i < ATT_NJ; i++) {
                float kv = Ks[(s + 8 * i) * L::OTH + d];
                ATT_UNROLL for (int r = 0; r < R; r++) sc[r][i] += qv[r] * kv;
            }
        }
        ATT_UNROLL for (int r = 0; r < R; r++) {
            const int iq = q0 + g * R + r;
            float mx = -INFINITY;
            ATT_UNROLL for (int i = 0; i < ATT_NJ; i++) {
                int j = k0 + s + 8 * i;
                if (!(j < Tk && (!causal || j <= iq))) sc[r][i] = -INFINITY;
                mx = fmaxf(mx, sc[r][i]);
            }
            const float mnew = fmaxf(m[r], grp_max(mx));
            const float mref = mnew == -INFINITY ? 0.0f : mnew;
            const float alpha = exp2f(m[r] - mref);
            float rs = 0.0f;
            ATT_UNROLL for (int i = 0; i < ATT_NJ; i++) {
                float p = exp2f(sc[r][i] - mref);
                Ps[(g * R + r) * L::PS + s + 8 * i] = p;
                rs += p;
            }
            l[r] = l[r] * alpha + grp_sum(rs);
            m[r] = mnew;
            ATT_UNROLL for (int c = 0; c < L::NC; c++) o[r][c] *= alpha;
        }
        __syncwarp(); // the group's P row is written
        const int jn = min(ATT_BC, kend - k0);
        for (int j = 0; j < jn; j++) {
            float p[R];
            ATT_UNROLL for (int r = 0; r < R; r++) p[r] = Ps[(g * R + r) * L::PS + j];
            ATT_UNROLL for (int c = 0; c < L::NC; c++) {
                float vv = Vs[j * L::OTH + s + 8 * c];
                ATT_UNROLL for (int r = 0; r < R; r++) o[r][c] += p[r] * vv;
            }
        }
    }
    T *ob = out + (int64_t)b * Tq * HD + (int64_t)h * D;
    ATT_UNROLL for (int r = 0; r < R; r++) {
        const int iq = q0 + g * R + r;
        if (iq >= Tq) continue;
        const float inv = 1.0f / l[r];
        ATT_UNROLL for (int c = 0; c < L::NC; c++) {
            int col = s + 8 * c;
            if (col < D) st_f32(ob, (int64_t)iq * HD + col, o[r][c] * inv);
        }
        if (s == 0) lse[(int64_t)bh * Tq + iq] = (m[r] + log2f(l[r])) * ATT_LN2;
    }
}

// delta [B, H, Tq] = rowsum(dout * out) per head row: one warp per (b, t, h).
template <typename T>
__global__ void attn_delta_kernel(float *delta, const T *dout, const T *out, int Tq, int H, int D, int64_t rows) {
    const int64_t row = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); // (b Tq + t) H + h
    if (row >= rows) return;
    const int lane = threadIdx.x & 31;
    const int64_t bt = row / H, b = bt / Tq, t = bt - b * Tq;
    const int h = (int)(row - bt * H);
    const int64_t base = row * D; // [B, Tq, H*D] flattened: (b Tq + t) H D + h D
    float acc = 0.0f;
    for (int c = lane; c < D; c += 32) acc += ld_f32(dout, base + c) * ld_f32(out, base + c);
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (lane == 0) delta[(b * H + h) * Tq + t] = acc;
}

// backward, rows = keys: grid (ceil(Tk / BR), B H). dk, dv [B, Tk, H*D] written (either may be NULL).
template <typename T, int DP, int R>
__global__ void __launch_bounds__(ATT_THREADS) attn_bwd_kv_kernel(T *dk, T *dv, float *part, const T *dout,
                                                                  const float *lse, const float *delta, const T *q,
                                                                  const T *k, const T *v, int Tq, int Tk, int H,
                                                                  int D, int causal, int q_split, float scale,
                                                                  float scale_log2) {
    typedef AttTile<DP, R> L;
    constexpr int BR = L::BR;
    CUDA_DYN_SHARED(float, sm);
    float *Ks = sm;                       // [BR][OWN]
    float *Vs = Ks + BR * L::OWN;         // [BR][OWN]
    float *Qs = Vs + BR * L::OWN;         // [BC][OTH]
    float *Gs = Qs + ATT_BC * L::OTH;     // [BC][OTH] dout
    float *Ls = Gs + ATT_BC * L::OTH;     // [BC] lse log2(e)
    float *Ds = Ls + ATT_BC;              // [BC] delta
    float *Ps = Ds + ATT_BC;              // [BR][PS] P^T of the tile
    float *Ss = Ps + BR * L::PS;          // [BR][PS] dS^T of the tile
    const int g = threadIdx.x >> 3, s = threadIdx.x & 7, bh = blockIdx.y, b = bh / H, h = bh - b * H;
    const int k0 = blockIdx.x * BR;
    const int64_t HD = (int64_t)H * D;
    const int64_t qoff = (int64_t)b * Tq * HD + (int64_t)h * D, koff = (int64_t)b * Tk * HD + (int64_t)h * D;
    att_load(Ks, L::OWN, BR, DP, k + koff, HD, k0, Tk, D, 1.0f);
    att_load(Vs, L::OWN, BR, DP, v + koff, HD, k0, Tk, D, 1.0f);
    const float *lb = lse + (int64_t)bh * Tq, *db = delta + (int64_t)bh * Tq;
    __syncthreads(); // causal blocks past the last query run no tile: still one barrier for every block

    float gk[R][L::NC], gv[R][L::NC];
    ATT_UNROLL for (int r = 0; r < R; r++) ATT_UNROLL for (int c = 0; c < L::NC; c++) gk[r][c] = gv[r][c] = 0.0f;
    // this block's queries: split blockIdx.z of q_split (all of them when not split); causal: query i sees keys <= i
    const int qs = blockIdx.z * q_split, qe = min(Tq, qs + q_split);
    for (int j0 = causal ? max(qs, k0) : qs; j0 < qe; j0 += ATT_BC) {
        __syncthreads();
        att_load(Qs, L::OTH, ATT_BC, DP, q + qoff, HD, j0, qe, D, 1.0f);
        att_load(Gs, L::OTH, ATT_BC, DP, dout + qoff, HD, j0, qe, D, 1.0f);
        if (threadIdx.x < ATT_BC) {
            int j = j0 + threadIdx.x;
            Ls[threadIdx.x] = j < qe ? lb[j] * ATT_LOG2E : 0.0f;
            Ds[threadIdx.x] = j < qe ? db[j] : 0.0f;
        }
        __syncthreads();
        float sc[R][ATT_NJ], dp[R][ATT_NJ];
        ATT_UNROLL for (int r = 0; r < R; r++) ATT_UNROLL for (int i = 0; i < ATT_NJ; i++) sc[r][i] = dp[r][i] = 0.0f;
        for (int d = 0; d < D; d++) {
            float kv[R], vv[R];
            ATT_UNROLL for (int r = 0; r < R; r++) {
                kv[r] = Ks[(g * R + r) * L::OWN + d];
                vv[r] = Vs[(g * R + r) * L::OWN + d];
            }
            ATT_UNROLL for (int i = 0; i < ATT_NJ; i++) {
                float qv = Qs[(s + 8 * i) * L::OTH + d], gq = Gs[(s + 8 * i) * L::OTH + d];
                ATT_UNROLL for (int r = 0; r < R; r++) sc[r][i] += kv[r] * qv, dp[r][i] += vv[r] * gq;
            }
        }
        ATT_UNROLL for (int r = 0; r < R; r++) {
            const int key = k0 + g * R + r;
            ATT_UNROLL for (int i = 0; i < ATT_NJ; i++) {
                const int jj = s + 8 * i, j = j0 + jj;
                const bool vis = key < Tk && j < qe && (!causal || key <= j);
                const float p = vis ? exp2f(sc[r][i] * scale_log2 - Ls[jj]) : 0.0f;
                Ps[(g * R + r) * L::PS + jj] = p;
                Ss[(g * R + r) * L::PS + jj] = vis ? p * (dp[r][i] - Ds[jj]) : 0.0f;
            }
        }
        __syncwarp();
        const int jn = min(ATT_BC, qe - j0);
        for (int j = 0; j < jn; j++) {
            float p[R], ds[R];
            ATT_UNROLL for (int r = 0; r < R; r++) {
                p[r] = Ps[(g * R + r) * L::PS + j];
                ds[r] = Ss[(g * R + r) * L::PS + j];
            }
            ATT_UNROLL for (int c = 0; c < L::NC; c++) {
                float gq = Gs[j * L::OTH + s + 8 * c], qv = Qs[j * L::OTH + s + 8 * c];
                ATT_UNROLL for (int r = 0; r < R; r++) gv[r][c] += p[r] * gq, gk[r][c] += ds[r] * qv;
            }
        }
    }
    // split: this split's fp32 partials, part [split][dk, dv][B, Tk, H*D], summed by attn_kv_reduce_kernel
    const int64_t pn = (int64_t)gridDim.y / H * Tk * HD;
    float *pk = part ? part + 2 * (int64_t)blockIdx.z * pn : NULL, *pv = part ? pk + pn : NULL;
    ATT_UNROLL for (int r = 0; r < R; r++) {
        const int key = k0 + g * R + r;
        if (key >= Tk) continue;
        ATT_UNROLL for (int c = 0; c < L::NC; c++) {
            int col = s + 8 * c;
            if (col >= D) continue;
            int64_t at = koff + (int64_t)key * HD + col;
            if (pk) {
                pk[at] = gk[r][c] * scale;
                pv[at] = gv[r][c];
                continue;
            }
            if (dk) st_f32(dk, at, gk[r][c] * scale);
            if (dv) st_f32(dv, at, gv[r][c]);
        }
    }
}

// dk, dv [n = B Tk H D] = the sums of the splits' partials, in split order (deterministic).
template <typename T>
__global__ void attn_kv_reduce_kernel(T *dk, T *dv, const float *part, int splits, int64_t n) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float a = 0.0f, b = 0.0f;
    for (int z = 0; z < splits; z++) a += part[2 * z * n + i], b += part[(2 * z + 1) * n + i];
    if (dk) st_f32(dk, i, a);
    if (dv) st_f32(dv, i, b);
}

// backward, rows = queries: grid (ceil(Tq / BR), B H). dq [B, Tq, H*D] written.
template <typename T, int DP, int R>
__global__ void __launch_bounds__(ATT_THREADS) attn_bwd_q_kernel(T *dq, const T *dout, const float *lse,
                                                                 const float *delta, const T *q, const T *k,
                                                                 const T *v, int Tq, int Tk, int H, int D,
                                                                 int causal, float scale, float scale_log2) {
    typedef AttTile<DP, R> L;
    constexpr int BR = L::BR;
    CUDA_DYN_SHARED(float, sm);
    float *Qs = sm;                   // [BR][OWN]
    float *Gs = Qs + BR * L::OWN;     // [BR][OWN] dout
    float *Ks = Gs + BR * L::OWN;     // [BC][OTH]
    float *Vs = Ks + ATT_BC * L::OTH; // [BC][OTH]
    float *Ss = Vs + ATT_BC * L::OTH; // [BR][PS] dS of the tile
    const int g = threadIdx.x >> 3, s = threadIdx.x & 7, bh = blockIdx.y, b = bh / H, h = bh - b * H;
    const int q0 = blockIdx.x * BR;
    const int64_t HD = (int64_t)H * D;
    const int64_t qoff = (int64_t)b * Tq * HD + (int64_t)h * D, koff = (int64_t)b * Tk * HD + (int64_t)h * D;
    att_load(Qs, L::OWN, BR, DP, q + qoff, HD, q0, Tq, D, 1.0f);
    att_load(Gs, L::OWN, BR, DP, dout + qoff, HD, q0, Tq, D, 1.0f);
    __syncthreads();
    float l2[R], dl[R], acc[R][L::NC];
    ATT_UNROLL for (int r = 0; r < R; r++) {
        const int iq = q0 + g * R + r;
        l2[r] = iq < Tq ? lse[(int64_t)bh * Tq + iq] * ATT_LOG2E : 0.0f;
        dl[r] = iq < Tq ? delta[(int64_t)bh * Tq + iq] : 0.0f;
        ATT_UNROLL for (int c = 0; c < L::NC; c++) acc[r][c] = 0.0f;
    }
    const int kend = causal ? min(Tk, q0 + BR) : Tk;
    for (int k0 = 0; k0 < kend; k0 += ATT_BC) {
        __syncthreads();
        att_load(Ks, L::OTH, ATT_BC, DP, k + koff, HD, k0, Tk, D, 1.0f);
        att_load(Vs, L::OTH, ATT_BC, DP, v + koff, HD, k0, Tk, D, 1.0f);
        __syncthreads();
        float sc[R][ATT_NJ], dp[R][ATT_NJ];
        ATT_UNROLL for (int r = 0; r < R; r++) ATT_UNROLL for (int i = 0; i < ATT_NJ; i++) sc[r][i] = dp[r][i] = 0.0f;
        for (int d = 0; d < D; d++) {
            float qv[R], gq[R];
            ATT_UNROLL for (int r = 0; r < R; r++) {
                qv[r] = Qs[(g * R + r) * L::OWN + d];
                gq[r] = Gs[(g * R + r) * L::OWN + d];
            }
            ATT_UNROLL for (int i = 0; i < ATT_NJ; i++) {
                float kv = Ks[(s + 8 * i) * L::OTH + d], vv = Vs[(s + 8 * i) * L::OTH + d];
                ATT_UNROLL for (int r = 0; r < R; r++) sc[r][i] += qv[r] * kv, dp[r][i] += gq[r] * vv;
            }
        }
        ATT_UNROLL for (int r = 0; r < R; r++) {
            const int iq = q0 + g * R + r;
            ATT_UNROLL for (int i = 0; i < ATT_NJ; i++) {
                const int j = k0 + s + 8 * i;
                const bool vis = iq < Tq && j < Tk && (!causal || j <= iq);
                const float p = vis ? exp2f(sc[r][i] * scale_log2 - l2[r]) : 0.0f;
                Ss[(g * R + r) * L::PS + s + 8 * i] = vis ? p * (dp[r][i] - dl[r]) : 0.0f;
            }
        }
        __syncwarp();
        const int jn = min(ATT_BC, kend - k0);
        for (int j = 0; j < jn; j++) {
            float ds[R];
            ATT_UNROLL for (int r = 0; r < R; r++) ds[r] = Ss[(g * R + r) * L::PS + j];
            ATT_UNROLL for (int c = 0; c < L::NC; c++) {
                float kv = Ks[j * L::OTH + s + 8 * c];
                ATT_UNROLL for (int r = 0; r < R; r++) acc[r][c] += ds[r] * kv;
            }
        }
    }
    ATT_UNROLL for (int r = 0; r < R; r++) {
        const int iq = q0 + g * R + r;
        if (iq >= Tq) continue;
        ATT_UNROLL for (int c = 0; c < L::NC; c++) {
            int col = s + 8 * c;
            if (col < D) st_f32(dq, qoff + (int64_t)iq * HD + col, acc[r][c] * scale);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// generic kernels (any D): one warp per row, 4 warps per block, grid (ceil(rows / 4), B H).

// a . b over D elements, the sum on every lane
template <typename T> __device__ __forceinline__ float warp_dot(const T *a, const T *b, int D, int lane) {
    float acc = 0.0f;
    for (int c = lane; c < D; c += 32) acc += ld_f32(a, c) * ld_f32(b, c);
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    return acc;
}

template <typename T>
__global__ void attn_fwd_generic_kernel(T *out, float *lse, const T *q, const T *k, const T *v, int Tq, int Tk,
                                        int H, int D, int causal, float scale_log2) {
    const int iq = blockIdx.x * 4 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (iq >= Tq) return;
    const int bh = blockIdx.y, b = bh / H, h = bh - b * H;
    const int64_t HD = (int64_t)H * D, qoff = (int64_t)b * Tq * HD + (int64_t)h * D;
    const int64_t koff = (int64_t)b * Tk * HD + (int64_t)h * D;
    const T *qr = q + qoff + (int64_t)iq * HD;
    const int n = causal ? min(Tk, iq + 1) : Tk;
    float m = -INFINITY, l = 0.0f; // pass 1: the row's max and sum (log2 domain)
    for (int j = 0; j < n; j++) {
        float sj = warp_dot(qr, k + koff + (int64_t)j * HD, D, lane) * scale_log2;
        float mnew = fmaxf(m, sj), mref = mnew == -INFINITY ? 0.0f : mnew;
        l = l * exp2f(m - mref) + exp2f(sj - mref);
        m = mnew;
    }
    const float l2 = m + log2f(l); // log2 sum_j 2^s_j
    if (lane == 0) lse[(int64_t)bh * Tq + iq] = l2 * ATT_LN2;
    for (int c0 = 0; c0 < D; c0 += ATT_GEN_CHUNK) { // pass 2 per chunk: out = sum_j 2^(s_j - l2) v_j
        float acc[ATT_GEN_CHUNK / 32];
        ATT_UNROLL for (int u = 0; u < ATT_GEN_CHUNK / 32; u++) acc[u] = 0.0f;
        for (int j = 0; j < n; j++) {
            const int64_t kj = koff + (int64_t)j * HD;
            float p = exp2f(warp_dot(qr, k + kj, D, lane) * scale_log2 - l2);
            ATT_UNROLL for (int u = 0; u < ATT_GEN_CHUNK / 32; u++) {
                int c = c0 + lane + 32 * u;
                if (c < D) acc[u] += p * ld_f32(v, kj + c);
            }
        }
        ATT_UNROLL for (int u = 0; u < ATT_GEN_CHUNK / 32; u++) {
            int c = c0 + lane + 32 * u;
            if (c < D) st_f32(out, qoff + (int64_t)iq * HD + c, acc[u]);
        }
    }
}

template <typename T>
__global__ void attn_bwd_q_generic_kernel(T *dq, const T *dout, const float *lse, const float *delta, const T *q,
                                          const T *k, const T *v, int Tq, int Tk, int H, int D, int causal,
                                          float scale, float scale_log2) {
    const int iq = blockIdx.x * 4 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (iq >= Tq) return;
    const int bh = blockIdx.y, b = bh / H, h = bh - b * H;
    const int64_t HD = (int64_t)H * D, qoff = (int64_t)b * Tq * HD + (int64_t)h * D + (int64_t)iq * HD;
    const int64_t koff = (int64_t)b * Tk * HD + (int64_t)h * D;
    const float l2 = lse[(int64_t)bh * Tq + iq] * ATT_LOG2E, dl = delta[(int64_t)bh * Tq + iq];
    const int n = causal ? min(Tk, iq + 1) : Tk;
    for (int c0 = 0; c0 < D; c0 += ATT_GEN_CHUNK) {
        float acc[ATT_GEN_CHUNK / 32];
        ATT_UNROLL for (int u = 0; u < ATT_GEN_CHUNK / 32; u++) acc[u] = 0.0f;
        for (int j = 0; j < n; j++) {
            const int64_t kj = koff + (int64_t)j * HD;
            float p = exp2f(warp_dot(q + qoff, k + kj, D, lane) * scale_log2 - l2);
            float ds = p * (warp_dot(dout + qoff, v + kj, D, lane) - dl);
            ATT_UNROLL for (int u = 0; u < ATT_GEN_CHUNK / 32; u++) {
                int c = c0 + lane + 32 * u;
                if (c < D) acc[u] += ds * ld_f32(k, kj + c);
            }
        }
        ATT_UNROLL for (int u = 0; u < ATT_GEN_CHUNK / 32; u++) {
            int c = c0 + lane + 32 * u;
            if (c < D) st_f32(dq, qoff + c, acc[u] * scale);
        }
    }
}

template <typename T>
__global__ void attn_bwd_kv_generic_kernel(T *dk, T *dv, const T *dout, const float *lse, const float *delta,
                                           const T *q, const T *k, const T *v, int Tq, int Tk, int H, int D,
                                           int causal, float scale, float scale_log2) {
    const int key = blockIdx.x * 4 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (key >= Tk) return;
    const int bh = blockIdx.y, b = bh / H, h = bh - b * H;
    const int64_t HD = (int64_t)H * D, qoff = (int64_t)b * Tq * HD + (int64_t)h * D;
    const int64_t koff = (int64_t)b * Tk * HD + (int64_t)h * D + (int64_t)key * HD;
    const float *lb = lse + (int64_t)bh * Tq, *db = delta + (int64_t)bh * Tq;
    __syncthreads(); // causal blocks past the last query run no tile: still one barrier for every block
    for (int c0 = 0; c0 < D; c0 += ATT_GEN_CHUNK) {
        float ak[ATT_GEN_CHUNK / 32], av[ATT_GEN_CHUNK / 32];
        ATT_UNROLL for (int u = 0; u < ATT_GEN_CHUNK / 32; u++) ak[u] = av[u] = 0.0f;
        for (int i = causal ? key : 0; i < Tq; i++) {
            const int64_t qi = qoff + (int64_t)i * HD;
            float p = exp2f(warp_dot(k + koff, q + qi, D, lane) * scale_log2 - lb[i] * ATT_LOG2E);
            float ds = p * (warp_dot(v + koff, dout + qi, D, lane) - db[i]);
            ATT_UNROLL for (int u = 0; u < ATT_GEN_CHUNK / 32; u++) {
                int c = c0 + lane + 32 * u;
                if (c < D) av[u] += p * ld_f32(dout, qi + c), ak[u] += ds * ld_f32(q, qi + c);
            }
        }
        ATT_UNROLL for (int u = 0; u < ATT_GEN_CHUNK / 32; u++) {
            int c = c0 + lane + 32 * u;
            if (c >= D) continue;
            if (dk) st_f32(dk, koff + c, ak[u] * scale);
            if (dv) st_f32(dv, koff + c, av[u]);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// launchers

// Lets a kernel use more than the default 48 KiB of dynamic shared memory (once per kernel instantiation).
template <typename K> static void att_allow_smem(K kernel, size_t bytes, int *done) {
    if (bytes > 48 * 1024 && !*done) {
        CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
        *done = 1;
    }
}

// The compiled head-dim capacities of the tiled kernels; D goes to the smallest that holds it (none: generic).
#define ATT_FOR_CAPS(X) X(32) X(64) X(96) X(128) X(160) X(256)
static int att_capacity(int D) {
#define ATT_CAP_TEST(DP) if (D <= DP) return DP;
    ATT_FOR_CAPS(ATT_CAP_TEST)
#undef ATT_CAP_TEST
    return 0;
}

// Query splits of the dk/dv kernel (1: none) for a shape; the workspace query and the launcher share it.
static int att_kv_splits(int B, int Tq, int Tk, int H, int D) {
    const int DP = att_capacity(D);
    if (DP == 0) return 1; // generic kernels: one warp per key, enough blocks already
    const long long blocks = (long long)cuda_blocks(Tk, 16 * ATT_KV_ROWS(DP)) * B * H;
    const long long want = (ATT_KV_TARGET_BLOCKS + blocks - 1) / blocks;
    const long long tiles = cuda_blocks(Tq, ATT_BC), most = tiles / ATT_KV_MIN_TILES;
    const long long n = want < most ? want : most;
    if (n <= 1) return 1;
    const long long per = (tiles + n - 1) / n; // query tiles per split; no split left empty
    return (int)((tiles + per - 1) / per);
}

// Workspace: delta [B, H, Tq] f32, then (when split) the dk/dv partials [splits][2][B, Tk, H*D] f32.
static size_t att_align(size_t n) { return (n + 255) & ~(size_t)255; }
static size_t att_delta_bytes(int B, int Tq, int H) { return att_align(sizeof(float) * (size_t)B * H * Tq); }
// ---------------------------------------------------------------------------------------------------------------
// GEMM attention for head dims beyond the tiled kernels (D > 256: the VAE's mid-block attention, one head of 512),
// non-causal: the generic kernels re-read every key and value once per query row, which at the VAE's 4096 to 16384
// tokens is far from the GPU's rate. Per (batch, head) and chunk of R query rows, with cuBLASLt (gemm_cuda) and fp32
// accumulation:
//   forward : S = q_c k^T (fp32 [R, Tk]); P = exp(scale S - lse) with lse saved (attg_softmax_kernel); out_c = P v
//   backward: S and dP = dout_c v^T (fp32); P and dS = P (dP - delta) scale (attg_ds_kernel); dq_c = dS k;
//             dk += dS^T q_c, dv += P^T dout_c into fp32 accumulators, stored at the end (attg_store_kernel).
// P and dS are stored in the activations' dtype for their products (bf16: rounded, as fused attention kernels do).
// The lse is the tiled kernels' (natural log), so either forward feeds either backward.
#define ATTG_CHUNK_FLOATS ((int64_t)1 << 23) // S per chunk: 32 MiB
#define ATTG_THREADS 256
static int64_t g_attg_chunk = ATTG_CHUNK_FLOATS;
static int g_attg_on = 1;
extern "C" void attention_set_gemm_chunk_cuda(int64_t floats) { g_attg_chunk = floats > 0 ? floats : ATTG_CHUNK_FLOATS; }
extern "C" void attention_set_gemm_cuda(int on) { g_attg_on = on != 0; }

static bool att_use_gemm(int D, int causal) { return g_attg_on && D > 256 && !causal; }
static int64_t attg_rows(int Tq, int Tk) {
    int64_t r = g_attg_chunk / (Tk > 0 ? Tk : 1);
    return r < 1 ? 1 : r > Tq ? Tq : r;
}
// Workspace: [delta [B, H, Tq] | S, dP (f32) | P, dS (dt) [R, Tk] | dk, dv accumulators (f32) [Tk, D]]
struct AttgWs {
    float *delta, *S, *dP, *dk, *dv;
    void *P, *dS;
};
static size_t attg_layout(int B, int Tq, int Tk, int H, int D, int dt, char *base, AttgWs *w) {
    const int64_t R = attg_rows(Tq, Tk);
    const size_t es = dt == DTYPE_BF16 ? 2 : 4, rt = (size_t)R * Tk, kd = (size_t)Tk * D;
    const size_t sizes[7] = {att_delta_bytes(B, Tq, H), att_align(4 * rt), att_align(4 * rt), att_align(es * rt),
                             att_align(es * rt), att_align(4 * kd), att_align(4 * kd)};
    size_t off[7], at = 0;
    for (int i = 0; i < 7; i++) off[i] = at, at += sizes[i];
    if (w) {
        w->delta = (float *)(base + off[0]), w->S = (float *)(base + off[1]), w->dP = (float *)(base + off[2]);
        w->P = base + off[3], w->dS = base + off[4], w->dk = (float *)(base + off[5]), w->dv = (float *)(base + off[6]);
    }
    return at;
}

// One block per row of S [rows, Tk]: lse[row] = log sum_j exp(scale s_j) (natural log), P = exp(scale s - lse).
template <typename T>
__global__ void attg_softmax_kernel(T *P, float *lse, const float *S, int Tk, float scale_log2) {
    __shared__ float red_m[ATTG_THREADS / 32], red_l[ATTG_THREADS / 32];
    const float *row = S + (int64_t)blockIdx.x * Tk;
    T *prow = P + (int64_t)blockIdx.x * Tk;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float m = -INFINITY, l = 0.0f; // this thread's max and sum (log2 domain)
    for (int j = threadIdx.x; j < Tk; j += ATTG_THREADS) {
        const float sj = row[j] * scale_log2, mn = fmaxf(m, sj), mr = mn == -INFINITY ? 0.0f : mn;
        l = l * exp2f(m - mr) + exp2f(sj - mr);
        m = mn;
    }
    for (int o = 16; o > 0; o >>= 1) { // merge (m, l) pairs across the warp, then the warps
        const float mo = __shfl_xor_sync(0xffffffffu, m, o), lo = __shfl_xor_sync(0xffffffffu, l, o);
        const float mn = fmaxf(m, mo), mr = mn == -INFINITY ? 0.0f : mn;
        l = l * exp2f(m - mr) + lo * exp2f(mo - mr);
        m = mn;
    }
    if (lane == 0) red_m[warp] = m, red_l[warp] = l;
    __syncthreads();
    m = -INFINITY, l = 0.0f;
    for (int w = 0; w < ATTG_THREADS / 32; w++) { // every thread merges the warps in the same order
        const float mn = fmaxf(m, red_m[w]), mr = mn == -INFINITY ? 0.0f : mn;
        l = l * exp2f(m - mr) + red_l[w] * exp2f(red_m[w] - mr);
        m = mn;
    }
    const float l2 = (m == -INFINITY ? 0.0f : m) + log2f(l);
    if (threadIdx.x == 0) lse[blockIdx.x] = l2 * ATT_LN2;
    for (int j = threadIdx.x; j < Tk; j += ATTG_THREADS) st_f32(prow, j, exp2f(row[j] * scale_log2 - l2));
}

// P = exp(scale S - lse), dS = P (dP - delta) scale over [rows, Tk] (lse, delta per row)
template <typename T>
__global__ void attg_ds_kernel(T *P, T *dS, const float *S, const float *dP, const float *lse, const float *delta,
                               int Tk, float scale, int64_t n) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const int64_t r = i / Tk;
    const float p = exp2f((S[i] * scale - lse[r]) * ATT_LOG2E);
    st_f32(P, i, p);
    st_f32(dS, i, p * (dP[i] - delta[r]) * scale);
}

// dst [rows, D] with row stride ld = acc [rows, D] (f32)
template <typename T> __global__ void attg_store_kernel(T *dst, const float *acc, int64_t rows, int D, int64_t ld) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * D) return;
    const int64_t r = i / D;
    st_f32(dst, r * ld + (i - r * D), acc[i]);
}

template <typename T>
static void attg_fwd(T *out, float *lse, const T *q, const T *k, const T *v, void *ws, int B, int Tq, int Tk, int H,
                     int D, int dt) {
    AttgWs w;
    attg_layout(B, Tq, Tk, H, D, dt, (char *)ws, &w);
    const int64_t HD = (int64_t)H * D, R = attg_rows(Tq, Tk);
    const float scale_log2 = ATT_LOG2E / sqrtf((float)D);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            const T *kb = k + (int64_t)b * Tk * HD + h * D, *vb = v + (int64_t)b * Tk * HD + h * D;
            for (int64_t i0 = 0; i0 < Tq; i0 += R) {
                const int64_t r = R < Tq - i0 ? R : Tq - i0, row0 = ((int64_t)b * Tq + i0) * HD + h * D;
                gemm_cuda(1, 0, Tk, r, D, kb, HD, q + row0, HD, 0.0f, w.S, Tk, dt, 1); // S^T [Tk, r] = k q_c^T
                CUDA_LAUNCH(attg_softmax_kernel<T>, (unsigned)r, ATTG_THREADS, 0, cuda_stream(), (T *)w.P,
                            lse + ((int64_t)b * H + h) * Tq + i0, (const float *)w.S, Tk, scale_log2);
                gemm_cuda(0, 0, D, r, Tk, vb, HD, w.P, Tk, 0.0f, out + row0, HD, dt, 0); // out_c^T = v^T P^T
            }
        }
}

template <typename T>
static void attg_bwd(T *dq, T *dk, T *dv, const T *dout, const T *out, const float *lse, void *ws, const T *q,
                     const T *k, const T *v, int B, int Tq, int Tk, int H, int D, int dt) {
    AttgWs w;
    attg_layout(B, Tq, Tk, H, D, dt, (char *)ws, &w);
    const int64_t HD = (int64_t)H * D, R = attg_rows(Tq, Tk), rows = (int64_t)B * Tq * H;
    const float scale = 1.0f / sqrtf((float)D);
    CUDA_LAUNCH(attn_delta_kernel<T>, cuda_blocks(rows, 8), 256, 0, cuda_stream(), w.delta, dout, out, Tq, H, D, rows);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            const int64_t kv0 = (int64_t)b * Tk * HD + h * D, bh = ((int64_t)b * H + h) * Tq;
            for (int64_t i0 = 0; i0 < Tq; i0 += R) {
                const int64_t r = R < Tq - i0 ? R : Tq - i0, row0 = ((int64_t)b * Tq + i0) * HD + h * D;
                const float beta = i0 ? 1.0f : 0.0f; // dk, dv: the first chunk writes, the others add
                gemm_cuda(1, 0, Tk, r, D, k + kv0, HD, q + row0, HD, 0.0f, w.S, Tk, dt, 1);       // S
                gemm_cuda(1, 0, Tk, r, D, v + kv0, HD, dout + row0, HD, 0.0f, w.dP, Tk, dt, 1); // dP = dout_c v^T
                const int64_t n = r * Tk;
                CUDA_LAUNCH(attg_ds_kernel<T>, cuda_blocks(n, 256), 256, 0, cuda_stream(), (T *)w.P, (T *)w.dS,
                            (const float *)w.S, (const float *)w.dP, lse + bh + i0, w.delta + bh + i0, Tk, scale, n);
                if (dv) gemm_cuda(0, 1, D, Tk, r, dout + row0, HD, w.P, Tk, beta, w.dv, D, dt, 1); // dv += P^T dout_c
                if (dk) gemm_cuda(0, 1, D, Tk, r, q + row0, HD, w.dS, Tk, beta, w.dk, D, dt, 1);  // dk += dS^T q_c
                if (dq) gemm_cuda(0, 0, D, r, Tk, k + kv0, HD, w.dS, Tk, 0.0f, dq + row0, HD, dt, 0); // dq_c = dS k
            }
            const int64_t nk = (int64_t)Tk * D;
            if (dk) CUDA_LAUNCH(attg_store_kernel<T>, cuda_blocks(nk, 256), 256, 0, cuda_stream(), dk + kv0,
                                (const float *)w.dk, (int64_t)Tk, D, HD);
            if (dv) CUDA_LAUNCH(attg_store_kernel<T>, cuda_blocks(nk, 256), 256, 0, cuda_stream(), dv + kv0,
                                (const float *)w.dv, (int64_t)Tk, D, HD);
        }
}

extern "C" size_t attention_workspace_bytes_cuda(int B, int Tq, int Tk, int H, int D, int dt) {
    if (att_use_gemm(D, 0)) { // the GEMM path when non-causal, the generic kernels' delta otherwise: the larger
        const size_t g = attg_layout(B, Tq, Tk, H, D, dt, NULL, NULL);
        return g > att_delta_bytes(B, Tq, H) ? g : att_delta_bytes(B, Tq, H);
    }
    const int splits = att_kv_splits(B, Tq, Tk, H, D);
    const size_t part = splits > 1 ? sizeof(float) * 2 * (size_t)splits * B * Tk * H * D : 0;
    const size_t own = att_delta_bytes(B, Tq, H) + att_align(part);
    const size_t dnn = attention_cudnn_workspace_bytes_cuda(B, Tq, Tk, H, D, dt);
    return own > dnn ? own : dnn;
}

template <typename T, int DP>
static void att_fwd_tiled(T *out, float *lse, const T *q, const T *k, const T *v, int B, int Tq, int Tk, int H, int D,
                          int causal, float scale_log2) {
    constexpr int R = ATT_ROWS(DP);
    static int big;
    void (*attn_fwd_tiled_kernel)(T *, float *, const T *, const T *, const T *, int, int, int, int, int, float) =
        attn_fwd_kernel<T, DP, R>;
    const size_t smem = AttTile<DP, R>::FWD;
    att_allow_smem(attn_fwd_tiled_kernel, smem, &big);
    dim3 grid(cuda_blocks(Tq, 16 * R), (unsigned)(B * H));
    CUDA_LAUNCH(attn_fwd_tiled_kernel, grid, ATT_THREADS, smem, cuda_stream(), out, lse, q, k, v, Tq, Tk, H, D,
                causal, scale_log2);
}

template <typename T>
static void att_fwd(T *out, float *lse, const T *q, const T *k, const T *v, int B, int Tq, int Tk, int H, int D,
                    int causal) {
    const float scale_log2 = ATT_LOG2E / sqrtf((float)D);
    switch (att_capacity(D)) {
#define ATT_FWD_CASE(DP)                                                                                     \
    case DP: att_fwd_tiled<T, DP>(out, lse, q, k, v, B, Tq, Tk, H, D, causal, scale_log2); break;
        ATT_FOR_CAPS(ATT_FWD_CASE)
#undef ATT_FWD_CASE
    default: {
        dim3 grid(cuda_blocks(Tq, 4), (unsigned)(B * H));
        CUDA_LAUNCH(attn_fwd_generic_kernel<T>, grid, 128, 0, cuda_stream(), out, lse, q, k, v, Tq, Tk, H, D, causal,
                    scale_log2);
    }
    }
}

template <typename T, int DP>
static void att_bwd_tiled(T *dq, T *dk, T *dv, const T *dout, const float *lse, const float *delta, float *part,
                          const T *q, const T *k, const T *v, int B, int Tq, int Tk, int H, int D, int causal,
                          float scale, float scale_log2) {
    constexpr int R = ATT_KV_ROWS(DP), RQ = ATT_ROWS(DP);
    static int big_kv, big_q;
    void (*attn_bwd_kv_tiled_kernel)(T *, T *, float *, const T *, const float *, const float *, const T *,
                                     const T *, const T *, int, int, int, int, int, int, float, float) =
        attn_bwd_kv_kernel<T, DP, R>;
    void (*attn_bwd_q_tiled_kernel)(T *, const T *, const float *, const float *, const T *, const T *, const T *,
                                    int, int, int, int, int, float, float) = attn_bwd_q_kernel<T, DP, RQ>;
    if (dk || dv) {
        const size_t smem = AttTile<DP, R>::BWD_KV;
        att_allow_smem(attn_bwd_kv_tiled_kernel, smem, &big_kv);
        const int splits = att_kv_splits(B, Tq, Tk, H, D);
        const int q_split = splits > 1 ? (int)cuda_blocks(Tq, splits * ATT_BC) * ATT_BC : Tq; // whole query tiles
        dim3 grid(cuda_blocks(Tk, 16 * R), (unsigned)(B * H), (unsigned)splits);
        CUDA_LAUNCH(attn_bwd_kv_tiled_kernel, grid, ATT_THREADS, smem, cuda_stream(), dk, dv,
                    splits > 1 ? part : (float *)NULL, dout, lse, delta, q, k, v, Tq, Tk, H, D, causal, q_split,
                    scale, scale_log2);
        if (splits > 1) {
            const int64_t n = (int64_t)B * Tk * H * D;
            CUDA_LAUNCH(attn_kv_reduce_kernel<T>, cuda_blocks(n, 256), 256, 0, cuda_stream(), dk, dv,
                        (const float *)part, splits, n);
        }
    }
    if (dq) {
        const size_t smem = AttTile<DP, RQ>::BWD_Q;
        att_allow_smem(attn_bwd_q_tiled_kernel, smem, &big_q);
        dim3 grid(cuda_blocks(Tq, 16 * RQ), (unsigned)(B * H));
        CUDA_LAUNCH(attn_bwd_q_tiled_kernel, grid, ATT_THREADS, smem, cuda_stream(), dq, dout, lse, delta, q, k, v,
                    Tq, Tk, H, D, causal, scale, scale_log2);
    }
}

template <typename T>
static void att_bwd(T *dq, T *dk, T *dv, const T *dout, const T *out, const float *lse, void *ws, const T *q,
                    const T *k, const T *v, int B, int Tq, int Tk, int H, int D, int causal) {
    const float scale = 1.0f / sqrtf((float)D), scale_log2 = ATT_LOG2E * scale;
    float *delta = (float *)ws, *part = (float *)((char *)ws + att_delta_bytes(B, Tq, H));
    const int64_t rows = (int64_t)B * Tq * H;
    CUDA_LAUNCH(attn_delta_kernel<T>, cuda_blocks(rows, 8), 256, 0, cuda_stream(), delta, dout, out, Tq, H, D, rows);
    switch (att_capacity(D)) {
#define ATT_BWD_CASE(DP)                                                                                     \
    case DP:                                                                                                 \
        att_bwd_tiled<T, DP>(dq, dk, dv, dout, lse, delta, part, q, k, v, B, Tq, Tk, H, D, causal, scale,       \
                             scale_log2);                                                                   \
        break;
        ATT_FOR_CAPS(ATT_BWD_CASE)
#undef ATT_BWD_CASE
    default:
        if (dk || dv) {
            dim3 grid(cuda_blocks(Tk, 4), (unsigned)(B * H));
            CUDA_LAUNCH(attn_bwd_kv_generic_kernel<T>, grid, 128, 0, cuda_stream(), dk, dv, dout, lse, delta, q, k, v,
                        Tq, Tk, H, D, causal, scale, scale_log2);
        }
        if (dq) {
            dim3 grid(cuda_blocks(Tq, 4), (unsigned)(B * H));
            CUDA_LAUNCH(attn_bwd_q_generic_kernel<T>, grid, 128, 0, cuda_stream(), dq, dout, lse, delta, q, k, v, Tq,
                        Tk, H, D, causal, scale, scale_log2);
        }
    }
}

extern "C" void attention_forward_cuda(void *out, float *lse, const void *q, const void *k, const void *v, void *ws,
                                       int B, int Tq, int Tk, int H, int D, int causal, int dt) {
    CHECK(B * H <= 65535, "", "attention on the GPU: %d batch x heads exceed the grid limit", B * H);
    if (attention_cudnn_cuda(B, Tq, Tk, H, D, causal, dt) & 1) {
        attention_forward_cudnn(out, lse, q, k, v, ws, B, Tq, Tk, H, D);
        return;
    }
    typedef __nv_bfloat16 bf;
    if (att_use_gemm(D, causal)) {
        if (dt == DTYPE_BF16)
            attg_fwd((bf *)out, lse, (const bf *)q, (const bf *)k, (const bf *)v, ws, B, Tq, Tk, H, D, dt);
        else attg_fwd((float *)out, lse, (const float *)q, (const float *)k, (const float *)v, ws, B, Tq, Tk, H, D, dt);
        return;
    }
    if (dt == DTYPE_BF16)
        att_fwd((__nv_bfloat16 *)out, lse, (const __nv_bfloat16 *)q, (const __nv_bfloat16 *)k,
                (const __nv_bfloat16 *)v, B, Tq, Tk, H, D, causal);
    else
        att_fwd((float *)out, lse, (const float *)q, (const float *)k, (const float *)v, B, Tq, Tk, H, D, causal);
}

extern "C" void attention_backward_cuda(void *dq, void *dk, void *dv, const void *dout, const void *out,
                                        const float *lse, const void *q, const void *k, const void *v, void *ws,
                                        int B, int Tq, int Tk, int H, int D, int causal, int dt) {
    CHECK(B * H <= 65535, "", "attention on the GPU: %d batch x heads exceed the grid limit", B * H);
    if (!dq && !dk && !dv) return;
    if (dq && dk && dv && (attention_cudnn_cuda(B, Tq, Tk, H, D, causal, dt) & 2)) {
        attention_backward_cudnn(dq, dk, dv, dout, out, lse, q, k, v, ws, B, Tq, Tk, H, D);
        return;
    }
    typedef __nv_bfloat16 bf;
    if (att_use_gemm(D, causal)) {
        if (dt == DTYPE_BF16)
            attg_bwd((bf *)dq, (bf *)dk, (bf *)dv, (const bf *)dout, (const bf *)out, lse, ws, (const bf *)q,
                     (const bf *)k, (const bf *)v, B, Tq, Tk, H, D, dt);
        else
            attg_bwd((float *)dq, (float *)dk, (float *)dv, (const float *)dout, (const float *)out, lse, ws,
                     (const float *)q, (const float *)k, (const float *)v, B, Tq, Tk, H, D, dt);
        return;
    }
    if (dt == DTYPE_BF16)
        att_bwd((bf *)dq, (bf *)dk, (bf *)dv, (const bf *)dout, (const bf *)out, lse, ws, (const bf *)q,
                (const bf *)k, (const bf *)v, B, Tq, Tk, H, D, causal);
    else
        att_bwd((float *)dq, (float *)dk, (float *)dv, (const float *)dout, (const float *)out, lse, ws,
                (const float *)q, (const float *)k, (const float *)v, B, Tq, Tk, H, D, causal);
}
