// cuda_train.cu: the memory-bound kernels of a training iteration outside the network: the DDIM step (forward,
// backward, x0 prediction, add_noise) and the classifier-free-guidance combine (diffusion/ddim.c, ops/arith.c), AdamW
// on the fp32 master weights and the global gradient sum of squares (train/optim.c), and the low-level rewards with
// their image gradients (rewards/lowlevel.c).
// The elementwise kernels use explicitly rounded operations (__fmul_rn, ...) in the CPU code's order, so nvcc cannot
// fuse them into FMAs and the results equal the CPU's bit for bit. Every sum is deterministic: fixed per-thread
// ranges, a fixed butterfly per block, block partials through the workspace and one final pass; no float atomics.
#include "cuda_vec.cuh"
#include "../../core/device_cuda.h"
#include "cuda_api.h"

#define TRAIN_THREADS CUDA_VEC_THREADS

// ---------------------------------------------------------------------------------------------------------------
// DDIM. pred: 0 epsilon, 1 v, 2 sample (PredictionType); coefficients are fp32 kernel arguments computed by the host.
struct DdimArgs {
    float sa, sb, sp, dir, std_dev, lim;
    int pred, clip;
};

// x0 and eps of one element in diffusers' operation order (ddim.c: predict)
__device__ __forceinline__ void ddim_predict(const DdimArgs &a, float m, float x, float *x0, float *eps) {
    if (a.pred == 0) {
        *x0 = __fdiv_rn(__fsub_rn(x, __fmul_rn(a.sb, m)), a.sa), *eps = m;
    } else if (a.pred == 1) {
        *x0 = __fsub_rn(__fmul_rn(a.sa, x), __fmul_rn(a.sb, m));
        *eps = __fadd_rn(__fmul_rn(a.sa, m), __fmul_rn(a.sb, x));
    } else {
        *x0 = m, *eps = __fdiv_rn(__fsub_rn(x, __fmul_rn(a.sa, m)), a.sb);
    }
}

// x_prev = sp x0 + dir eps (+ std z) and/or x0 (clamped when clipping); either output may be NULL
template <class T> __global__ static void ddim_step_kernel(T *x_prev, T *x0_out, const T *m, const T *x, const T *z,
                                                           DdimArgs a, int64_t n) {
    int64_t i0 = cuda_quad_index();
    for (int64_t i = i0; i < n && i < i0 + 4; i++) {
        float x0, eps;
        ddim_predict(a, ld_f32(m, i), ld_f32(x, i), &x0, &eps);
        if (a.clip) x0 = fminf(fmaxf(x0, -a.lim), a.lim);
        if (x0_out) st_f32(x0_out, i, x0);
        if (!x_prev) continue;
        float v = __fadd_rn(__fmul_rn(a.sp, x0), __fmul_rn(a.dir, eps));
        if (z) v = __fadd_rn(v, __fmul_rn(a.std_dev, ld_f32(z, i)));
        st_f32(x_prev, i, v);
    }
}

// the linear form's coefficients in double (DdimStep), as ddim_step_backward computes them
struct DdimBwdArgs {
    double sp, dir, cx, cm, ex, em;
};
template <class T> __global__ static void ddim_bwd_kernel(T *dm, T *dx, const T *g, const T *g0, const T *m,
                                                          const T *x, DdimArgs a, DdimBwdArgs b, int64_t n) {
    int64_t i0 = cuda_quad_index();
    for (int64_t i = i0; i < n && i < i0 + 4; i++) {
        double gx0 = __dadd_rn(g ? __dmul_rn(b.sp, (double)ld_f32(g, i)) : 0.0, g0 ? (double)ld_f32(g0, i) : 0.0);
        if (a.clip) {
            float x0, eps;
            ddim_predict(a, ld_f32(m, i), ld_f32(x, i), &x0, &eps);
            if (x0 < -a.lim || x0 > a.lim) gx0 = 0.0;
        }
        double geps = g ? __dmul_rn(b.dir, (double)ld_f32(g, i)) : 0.0;
        if (dm) st_f32(dm, i, (float)__dadd_rn(__dmul_rn(gx0, b.cm), __dmul_rn(geps, b.em)));
        if (dx) st_f32(dx, i, (float)__dadd_rn(__dmul_rn(gx0, b.cx), __dmul_rn(geps, b.ex)));
    }
}

// out = sa x0 + sb noise
template <class T> __global__ static void ddim_add_noise_kernel(T *out, const T *x0, const T *noise, float sa,
                                                                float sb, int64_t n) {
    int64_t i0 = cuda_quad_index();
    for (int64_t i = i0; i < n && i < i0 + 4; i++)
        st_f32(out, i, __fadd_rn(__fmul_rn(sa, ld_f32(x0, i)), __fmul_rn(sb, ld_f32(noise, i))));
}

extern "C" void ddim_step_cuda(void *x_prev, void *x0, const void *m, const void *x, const void *z, float sa, float sb,
                               float sp, float dir, float std_dev, float lim, int pred, int clip, int64_t n, int dt) {
    DdimArgs a = {sa, sb, sp, dir, std_dev, lim, pred, clip};
    CUDA_DT_DISPATCH(dt, T, CUDA_LAUNCH(ddim_step_kernel<T>, cuda_quad_blocks(n), TRAIN_THREADS, 0, cuda_stream(),
                                        (T *)x_prev, (T *)x0, (const T *)m, (const T *)x, (const T *)z, a, n));
}
extern "C" void ddim_step_backward_cuda(void *dm, void *dx, const void *dx_prev, const void *dx0, const void *m,
                                        const void *x, float sa, float sb, float lim, int pred, int clip, double sp,
                                        double dir, double cx, double cm, double ex, double em, int64_t n, int dt) {
    DdimArgs a = {sa, sb, 0.0f, 0.0f, 0.0f, lim, pred, clip};
    DdimBwdArgs b = {sp, dir, cx, cm, ex, em};
    CUDA_DT_DISPATCH(dt, T, CUDA_LAUNCH(ddim_bwd_kernel<T>, cuda_quad_blocks(n), TRAIN_THREADS, 0, cuda_stream(), (T *)dm,
                                        (T *)dx, (const T *)dx_prev, (const T *)dx0, (const T *)m, (const T *)x, a, b,
                                        n));
}
extern "C" void ddim_add_noise_cuda(void *out, const void *x0, const void *noise, float sa, float sb, int64_t n,
                                    int dt) {
    CUDA_DT_DISPATCH(dt, T, CUDA_LAUNCH(ddim_add_noise_kernel<T>, cuda_quad_blocks(n), TRAIN_THREADS, 0, cuda_stream(),
                                        (T *)out, (const T *)x0, (const T *)noise, sa, sb, n));
}

// ---------------------------------------------------------------------------------------------------------------
// classifier-free guidance over rows [2, n] = [uncond | cond]: out = u + w (c - u); the backward writes
// drows = [ca dout | cb dout] with ca = (1 - w) scale, cb = w scale in double (the host computes both), or only
// ca dout when there is one row (no guidance: ca = scale).
template <class T> __global__ static void cfg_fwd_kernel(T *out, const T *rows, float w, int64_t n) {
    int64_t i0 = cuda_quad_index();
    for (int64_t i = i0; i < n && i < i0 + 4; i++) {
        float u = ld_f32(rows, i), c = ld_f32(rows, n + i);
        st_f32(out, i, __fadd_rn(u, __fmul_rn(w, __fsub_rn(c, u))));
    }
}
template <class T> __global__ static void cfg_bwd_kernel(T *drows, const T *dout, double ca, double cb, int two,
                                                         int64_t n) {
    int64_t i0 = cuda_quad_index();
    for (int64_t i = i0; i < n && i < i0 + 4; i++) {
        double d = (double)ld_f32(dout, i);
        st_f32(drows, i, (float)__dmul_rn(ca, d));
        if (two) st_f32(drows, n + i, (float)__dmul_rn(cb, d));
    }
}
extern "C" void cfg_combine_forward_cuda(void *out, const void *rows, float w, int64_t n, int dt) {
    CUDA_DT_DISPATCH(dt, T, CUDA_LAUNCH(cfg_fwd_kernel<T>, cuda_quad_blocks(n), TRAIN_THREADS, 0, cuda_stream(), (T *)out,
                                        (const T *)rows, w, n));
}
extern "C" void cfg_combine_backward_cuda(void *drows, const void *dout, double ca, double cb, int two, int64_t n,
                                          int dt) {
    CUDA_DT_DISPATCH(dt, T, CUDA_LAUNCH(cfg_bwd_kernel<T>, cuda_quad_blocks(n), TRAIN_THREADS, 0, cuda_stream(),
                                        (T *)drows, (const T *)dout, ca, cb, two, n));
}

// ---------------------------------------------------------------------------------------------------------------
// global gradient sum of squares: pass 1, SUMSQ_BLOCKS(n) blocks each sum (double) a fixed grid-stride share into
// the workspace; pass 2, one block adds the partials in a fixed order into *sumsq (added to it when accumulate).
// The grid depends on n only, so the result is the same on every GPU and every run.
#define SUMSQ_MAX_BLOCKS 1024
static int64_t sumsq_blocks(int64_t n) {
    int64_t b = (n + 4 * 4 * TRAIN_THREADS - 1) / (4 * 4 * TRAIN_THREADS); // >= 4 vectors per thread
    return b < 1 ? 1 : (b > SUMSQ_MAX_BLOCKS ? SUMSQ_MAX_BLOCKS : b);
}
extern "C" size_t grad_sumsq_workspace_bytes_cuda(int64_t n) { return sizeof(double) * (size_t)sumsq_blocks(n); }

__global__ static void sumsq_partial_kernel(double *part, const float *g, int64_t n, int vec) {
    __shared__ double sh[32];
    double s = 0.0;
    int64_t stride = (int64_t)gridDim.x * blockDim.x, t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (vec) {
        for (int64_t i = 4 * t; i + 4 <= n; i += 4 * stride) {
            Vec4<float> v = ld_vec4(g, i);
            for (int k = 0; k < 4; k++) s += (double)v.v[k] * (double)v.v[k];
        }
        for (int64_t i = n / 4 * 4 + t; i < n; i += stride) s += (double)g[i] * (double)g[i]; // tail
    } else {
        for (int64_t i = t; i < n; i += stride) s += (double)g[i] * (double)g[i];
    }
    s = block_sum(s, sh);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}
__global__ static void sumsq_final_kernel(double *sumsq, const double *part, int64_t parts, int accumulate) {
    __shared__ double sh[32];
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < parts; i += blockDim.x) s += part[i];
    s = block_sum(s, sh);
    if (threadIdx.x == 0) *sumsq = accumulate ? *sumsq + s : s;
}
extern "C" void grad_sumsq_cuda(double *sumsq, const float *g, int64_t n, int accumulate, void *ws) {
    int64_t blocks = sumsq_blocks(n);
    CHECK(ws != NULL, "reserve grad_sumsq_workspace_bytes", "grad_sumsq: no workspace");
    CUDA_LAUNCH(sumsq_partial_kernel, (unsigned)blocks, TRAIN_THREADS, 0, cuda_stream(), (double *)ws, g, n,
                cuda_vec_aligned(g, sizeof(float)));
    CUDA_LAUNCH(sumsq_final_kernel, 1, TRAIN_THREADS, 0, cuda_stream(), sumsq, (const double *)ws, blocks,
                accumulate);
}

// ---------------------------------------------------------------------------------------------------------------
// AdamW (torch.optim.AdamW's single-tensor order, as optim.c) with the clip coefficient and the non-finite guard read
// from the device: norm = sqrt(*sumsq); nothing is written when it is not finite.
struct AdamArgs {
    float one_minus_b1, b2, one_minus_b2, eps, decay, step_size, sqrt_bc2, clip;
};
__device__ __forceinline__ void adam_one(const AdamArgs &a, float gs, float &p, float g, float &m, float &v) {
    float gi = __fmul_rn(g, gs);
    m = __fadd_rn(m, __fmul_rn(__fsub_rn(gi, m), a.one_minus_b1));
    v = __fadd_rn(__fmul_rn(v, a.b2), __fmul_rn(__fmul_rn(a.one_minus_b2, gi), gi));
    float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), a.sqrt_bc2), a.eps);
    p = __fsub_rn(__fmul_rn(p, a.decay), __fmul_rn(a.step_size, __fdiv_rn(m, denom)));
}
__global__ static void adamw_kernel(float *p, const float *g, float *m, float *v, int64_t n, const double *sumsq,
                                    AdamArgs a, int vec) {
    double norm = sqrt(*sumsq);
    if (!(norm - norm == 0.0)) return; // NaN or Inf: the step is skipped
    float gs = (a.clip <= 0.0f || norm <= (double)a.clip) ? 1.0f : (float)((double)a.clip / (norm + 1e-6));
    int64_t i0 = cuda_quad_index();
    if (vec && i0 + 4 <= n) {
        Vec4<float> pp = ld_vec4(p, i0), gg = ld_vec4(g, i0), mm = ld_vec4(m, i0), vv = ld_vec4(v, i0);
        for (int k = 0; k < 4; k++) adam_one(a, gs, pp.v[k], gg.v[k], mm.v[k], vv.v[k]);
        st_vec4(p, i0, pp), st_vec4(m, i0, mm), st_vec4(v, i0, vv);
        return;
    }
    for (int64_t i = i0; i < n && i < i0 + 4; i++) adam_one(a, gs, p[i], g[i], m[i], v[i]);
}
extern "C" void adamw_update_cuda(float *p, const float *g, float *m, float *v, int64_t n, const double *sumsq,
                                  float one_minus_b1, float b2, float one_minus_b2, float eps, float decay,
                                  float step_size, float sqrt_bc2, float clip) {
    AdamArgs a = {one_minus_b1, b2, one_minus_b2, eps, decay, step_size, sqrt_bc2, clip};
    int vec = cuda_vec_aligned(p, 4) && cuda_vec_aligned(g, 4) && cuda_vec_aligned(m, 4) && cuda_vec_aligned(v, 4);
    CUDA_LAUNCH(adamw_kernel, cuda_quad_blocks(n), TRAIN_THREADS, 0, cuda_stream(), p, g, m, v, n, sumsq, a, vec);
}

// ---------------------------------------------------------------------------------------------------------------
// low-level rewards (rewards/lowlevel.c). Per sample b the score is a sum over elements (pixels, or 8x8 blocks for the
// JPEG proxy) in double: grid (parts, B) blocks each write one partial sum to the workspace, then one block per
// sample adds them and applies the reward's normalisation. Image gradients (of weight dscore[b] score[b]) are
// elementwise and ADDED to dx, so a weighted set of rewards accumulates into one gradient without a scratch image.
enum { RW_SYMMETRY, RW_BRIGHTNESS, RW_SATURATION, RW_SHARPNESS, RW_COLOUR, RW_COMPRESS };
#define RW_MAX_PARTS 128

struct RwArgs {
    int kind;
    int64_t H, W, HW, parts;
    float weight, target[3];
    const float *luma; // sharpness: [B, HW]
    float q50[64];     // compress: the quality-50 luminance table
    double dct[64];    // compress: the orthonormal 8x8 DCT-II basis D[k][n]
};

__device__ __forceinline__ float rw_u(float x) { return __fadd_rn(__fmul_rn(0.5f, x), 0.5f); }
__device__ __forceinline__ float rw_wc(int c) { return c == 0 ? 0.299f : (c == 1 ? 0.587f : 0.114f); }

// the 4-neighbour Laplacian of the luma at interior pixel (y, i), in the CPU's order
__device__ __forceinline__ double rw_lap(const float *l, int64_t W, int64_t p) {
    double s = __dadd_rn(__dadd_rn(__dadd_rn((double)l[p - W], (double)l[p + W]), (double)l[p - 1]), (double)l[p + 1]);
    return __dsub_rn(s, __dmul_rn(4.0, (double)l[p]));
}
__device__ __forceinline__ int rw_interior(const RwArgs &a, int64_t y, int64_t i) {
    return y >= 1 && y < a.H - 1 && i >= 1 && i < a.W - 1;
}

// element e of sample b: returns its score term; with dx adds its gradient scaled by ds = weight dscore[b]
template <class T, class TD> __device__ double rw_term(const RwArgs &a, const T *x, TD *dx, const float *luma,
                                                       float ds, int64_t e) {
    switch (a.kind) {
    case RW_SYMMETRY: { // e over [3, H, W]: (u - mirror(u))^2; gradient -4 / (3HW) (u - mirror) / 2
        int64_t row = e / a.W, i = e - row * a.W;
        double d = (double)__fsub_rn(rw_u(ld_f32(x, e)), rw_u(ld_f32(x, row * a.W + a.W - 1 - i)));
        if (dx) {
            double inv = 1.0 / (double)(3 * a.HW);
            float g = (float)__dmul_rn(__dmul_rn(__dmul_rn(__dmul_rn((double)ds, -4.0), inv), d), 0.5);
            st_f32(dx, e, __fadd_rn(ld_f32(dx, e), g));
        }
        return __dmul_rn(d, d);
    }
    case RW_BRIGHTNESS: { // e over [3, HW]: luma weight of u
        int c = (int)(e / a.HW);
        if (dx) {
            float g = (float)__ddiv_rn(__dmul_rn((double)__fmul_rn(ds, rw_wc(c)), 0.5), (double)a.HW);
            st_f32(dx, e, __fadd_rn(ld_f32(dx, e), g));
        }
        return __dmul_rn((double)rw_wc(c), (double)rw_u(ld_f32(x, e)));
    }
    case RW_SATURATION: { // e over pixels: sqrt(var_c(u) + 1e-6)
        double u[3], mean = 0.0, var = 0.0;
        for (int c = 0; c < 3; c++) mean = __dadd_rn(mean, __ddiv_rn(u[c] = (double)rw_u(ld_f32(x, c * a.HW + e)), 3.0));
        for (int c = 0; c < 3; c++) {
            double d = __dsub_rn(u[c], mean);
            var = __dadd_rn(var, __ddiv_rn(__dmul_rn(d, d), 3.0));
        }
        double sd = sqrt(__dadd_rn(var, 1e-6));
        if (dx)
            for (int c = 0; c < 3; c++) {
                double q = __dmul_rn(__ddiv_rn((double)ds, (double)a.HW), __dsub_rn(u[c], mean));
                float g = (float)__dmul_rn(__ddiv_rn(q, __dmul_rn(3.0, sd)), 0.5);
                st_f32(dx, c * a.HW + e, __fadd_rn(ld_f32(dx, c * a.HW + e), g));
            }
        return sd;
    }
    case RW_SHARPNESS: { // e over pixels: Laplacian^2 at interior pixels; the luma gradient in the CPU's order
        const float *l = luma;
        int64_t y = e / a.W, i = e - y * a.W, n = (a.H - 2) * (a.W - 2);
        if (dx) { // glum[e] gathers g(p) = ds 2 lap(p) / n from p = e - W, e - 1, e (-4 g), e + 1, e + W
            const int64_t dy[5] = {-1, 0, 0, 0, 1}, di[5] = {0, -1, 0, 1, 0};
            float acc = 0.0f;
            for (int k = 0; k < 5; k++) {
                int64_t py = y + dy[k], pi = i + di[k];
                if (!rw_interior(a, py, pi)) continue;
                double g = __ddiv_rn(__dmul_rn(__dmul_rn((double)ds, 2.0), rw_lap(l, a.W, py * a.W + pi)), (double)n);
                acc = k == 2 ? __fsub_rn(acc, (float)__dmul_rn(4.0, g)) : __fadd_rn(acc, (float)g);
            }
            for (int c = 0; c < 3; c++) {
                float g = __fmul_rn(__fmul_rn(acc, rw_wc(c)), 0.5f);
                st_f32(dx, c * a.HW + e, __fadd_rn(ld_f32(dx, c * a.HW + e), g));
            }
        }
        if (!rw_interior(a, y, i)) return 0.0;
        double lap = rw_lap(l, a.W, e);
        return __dmul_rn(lap, lap);
    }
    default: { // RW_COLOUR, e over [3, HW]: (u - target)^2
        int c = (int)(e / a.HW);
        double d = __dsub_rn((double)rw_u(ld_f32(x, e)), (double)a.target[c]);
        if (dx) {
            double q = __ddiv_rn(__dmul_rn(__dmul_rn((double)ds, -2.0), d), __dmul_rn(3.0, (double)a.HW));
            st_f32(dx, e, __fadd_rn(ld_f32(dx, e), (float)__dmul_rn(q, 0.5)));
        }
        return __dmul_rn(d, d);
    }
    }
}

template <class T, class TD> __global__ static void rw_elem_kernel(const T *x, TD *dx, const float *dscore,
                                                                   double *part, RwArgs a) {
    __shared__ double sh[32];
    int64_t b = blockIdx.y, E = (a.kind == RW_SATURATION || a.kind == RW_SHARPNESS) ? a.HW : 3 * a.HW;
    const T *xb = x + b * 3 * a.HW;
    TD *db = dx ? dx + b * 3 * a.HW : nullptr;
    const float *lb = a.luma ? a.luma + b * a.HW : nullptr;
    float ds = dscore ? __fmul_rn(a.weight, dscore[b]) : 0.0f;
    double s = 0.0;
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < E; e += (int64_t)gridDim.x * blockDim.x)
        s += rw_term(a, xb, db, lb, ds, e);
    s = block_sum(s, sh);
    if (threadIdx.x == 0) part[b * a.parts + blockIdx.x] = s;
}

// sharpness: luma [B, HW] in fp32, accumulated over the channels in the CPU's order
template <class T> __global__ static void rw_luma_kernel(float *luma, const T *x, int64_t B, int64_t HW) {
    int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= B * HW) return;
    int64_t b = k / HW, p = k - b * HW;
    float l = 0.0f;
    for (int c = 0; c < 3; c++) l = __fadd_rn(l, __fmul_rn(rw_wc(c), rw_u(ld_f32(x, (b * 3 + c) * HW + p))));
    luma[k] = l;
}

// JPEG-size proxy: 64 threads per 8x8 block (thread (i, j) of the block), four blocks per 256-thread CUDA block.
// Block costs go to part[b * nblk + k]; with dx, the gradient of -weight dscore[b] / (64 nblk) cost is added. The
// quantisation table and the DCT basis come from the CPU code in the kernel arguments.
template <class T, class TD> __global__ static void rw_jpeg_kernel(const T *x, TD *dx, const float *dscore,
                                                                   double *part, RwArgs a, int64_t B) {
    __shared__ double D[64], f[4][64], t[4][64], gq[4][64], csum[4][2];
    int lb = threadIdx.x >> 6, e = threadIdx.x & 63, r = e >> 3, j = e & 7;
    int64_t bw = a.W / 8, nblk = (a.H / 8) * bw, id = (int64_t)blockIdx.x * 4 + lb;
    int active = id < B * nblk;
    int64_t b = active ? id / nblk : 0, k = id - b * nblk, y0 = (k / bw) * 8, x0 = (k % bw) * 8;
    if (threadIdx.x < 64) D[e] = a.dct[e];
    const T *xb = x + b * 3 * a.HW;
    int64_t p = (y0 + r) * a.W + x0 + j;
    double l = 0.0;
    if (active)
        for (int c = 0; c < 3; c++) l = __dadd_rn(l, __dmul_rn((double)rw_wc(c), (double)rw_u(ld_f32(xb, c * a.HW + p))));
    f[lb][e] = __dsub_rn(__dmul_rn(255.0, l), 128.0);
    __syncthreads();
    double s = 0.0; // t = D f
    for (int n = 0; n < 8; n++) s = __dadd_rn(s, __dmul_rn(D[r * 8 + n], f[lb][n * 8 + j]));
    t[lb][e] = s;
    __syncthreads();
    double F = 0.0; // F = t D^T at (r, j); cost and dcost/dF
    for (int n = 0; n < 8; n++) F = __dadd_rn(F, __dmul_rn(t[lb][r * 8 + n], D[j * 8 + n]));
    double q = F / a.q50[e], aa = sqrt(__dadd_rn(__dmul_rn(q, q), 0.01));
    double cost = active ? log1p(aa) : 0.0;
    gq[lb][e] = (q / aa) / (1.0 + aa) / a.q50[e];
    cost = warp_sum(cost);
    if ((threadIdx.x & 31) == 0) csum[lb][(e >> 5)] = cost;
    __syncthreads();
    if (active && e == 0) part[b * a.parts + k] = csum[lb][0] + csum[lb][1];
    if (!dx) return; // uniform over the block: no barrier follows for anyone
    s = 0.0; // gt = g D (into f)
    for (int n = 0; n < 8; n++) s = __dadd_rn(s, __dmul_rn(gq[lb][r * 8 + n], D[n * 8 + j]));
    f[lb][e] = s;
    __syncthreads();
    s = 0.0; // dcost/df = D^T gt at (r, j)
    for (int n = 0; n < 8; n++) s = __dadd_rn(s, __dmul_rn(D[n * 8 + r], f[lb][n * 8 + j]));
    if (!active) return;
    float ds = dscore ? __fmul_rn(a.weight, dscore[b]) : 0.0f;
    double scale = (double)(-ds) / (64.0 * (double)nblk);
    TD *db = dx + b * 3 * a.HW;
    for (int c = 0; c < 3; c++) {
        float g = (float)__dmul_rn(__dmul_rn(__dmul_rn(__dmul_rn(scale, s), 255.0), (double)rw_wc(c)), 0.5);
        st_f32(db, c * a.HW + p, __fadd_rn(ld_f32(db, c * a.HW + p), g));
    }
}

// scores[b] = (float)(sign sum_k part[b, k] / div)
__global__ static void rw_final_kernel(float *scores, const double *part, int64_t parts, double sign, double div) {
    __shared__ double sh[32];
    int64_t b = blockIdx.x;
    double s = 0.0;
    for (int64_t k = threadIdx.x; k < parts; k += blockDim.x) s += part[b * parts + k];
    s = block_sum(s, sh);
    if (threadIdx.x == 0) scores[b] = (float)((sign * s) / div);
}

static int64_t rw_parts(int kind, int64_t H, int64_t W) {
    if (kind == RW_COMPRESS) return (H / 8) * (W / 8);
    int64_t E = (kind == RW_SATURATION || kind == RW_SHARPNESS) ? H * W : 3 * H * W;
    int64_t p = (E + 4 * TRAIN_THREADS - 1) / (4 * TRAIN_THREADS);
    return p < RW_MAX_PARTS ? p : RW_MAX_PARTS;
}

extern "C" size_t reward_lowlevel_workspace_bytes_cuda(int kind, int64_t B, int64_t H, int64_t W) {
    size_t part = sizeof(double) * (size_t)(B * rw_parts(kind, H, W));
    part = (part + 255) / 256 * 256;
    return part + (kind == RW_SHARPNESS ? sizeof(float) * (size_t)(B * H * W) : 0);
}

template <class T, class TD> static void rw_launch(int kind, const void *x, void *dx, float *scores, const float *dscore,
                                         float weight, int64_t B, int64_t H, int64_t W, const float *target,
                                         const float *q50, const double *dct, void *ws) {
    RwArgs a = {kind, H, W, H * W, rw_parts(kind, H, W), weight, {target[0], target[1], target[2]}, nullptr, {0}, {0}};
    if (q50) memcpy(a.q50, q50, sizeof a.q50);
    if (dct) memcpy(a.dct, dct, sizeof a.dct);
    double *part = (double *)ws;
    size_t part_bytes = (sizeof(double) * (size_t)(B * a.parts) + 255) / 256 * 256;
    if (kind == RW_COMPRESS) {
        void (*k)(const T *, TD *, const float *, double *, RwArgs, int64_t) = rw_jpeg_kernel<T, TD>;
        CUDA_LAUNCH(k, cuda_blocks(B * a.parts, 4), 256, 0, cuda_stream(), (const T *)x, (TD *)dx, dscore, part, a,
                    B);
    } else {
        if (kind == RW_SHARPNESS) {
            a.luma = (const float *)((char *)ws + part_bytes);
            CUDA_LAUNCH(rw_luma_kernel<T>, cuda_blocks(B * H * W, TRAIN_THREADS), TRAIN_THREADS, 0, cuda_stream(),
                        (float *)a.luma, (const T *)x, B, H * W);
        }
        void (*k)(const T *, TD *, const float *, double *, RwArgs) = rw_elem_kernel<T, TD>;
        CUDA_LAUNCH(k, dim3((unsigned)a.parts, (unsigned)B), TRAIN_THREADS, 0, cuda_stream(), (const T *)x, (TD *)dx,
                    dscore, part, a);
    }
    // the CPU's normalisations: symmetry -s / (3HW) (as -s * inv), brightness and saturation s / HW, sharpness
    // s / ((H - 2)(W - 2)), colour -s / (3HW), compress -s / (64 nblk)
    double HW = (double)(H * W), sign = 1.0, div = HW;
    if (kind == RW_SYMMETRY) sign = -1.0 / (double)(3 * H * W), div = 1.0;
    if (kind == RW_SHARPNESS) div = (double)((H - 2) * (W - 2));
    if (kind == RW_COLOUR) sign = -1.0, div = 3.0 * HW;
    if (kind == RW_COMPRESS) sign = -1.0, div = 64.0 * (double)a.parts;
    CUDA_LAUNCH(rw_final_kernel, (unsigned)B, TRAIN_THREADS, 0, cuda_stream(), scores, (const double *)part, a.parts,
                sign, div);
}

extern "C" void reward_lowlevel_cuda(int kind, const void *x, int dt, void *dx, int dt_dx, float *scores,
                                     const float *dscore, float weight, int64_t B, int64_t H, int64_t W,
                                     const float *target, const float *q50, const double *dct, void *ws) {
    CUDA_DT_DISPATCH(dt, T, CUDA_DT_DISPATCH(dt_dx, TD, rw_launch<T, TD>(kind, x, dx, scores, dscore, weight, B, H, W,
                                                                        target, q50, dct, ws)));
}

// total[b] = (first ? 0 : total[b]) + weight scores[b]
__global__ static void rw_total_kernel(float *total, const float *scores, float weight, int64_t B, int first) {
    int64_t b = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (b < B) total[b] = __fadd_rn(first ? 0.0f : total[b], __fmul_rn(weight, scores[b]));
}
extern "C" void reward_total_cuda(float *total, const float *scores, float weight, int64_t B, int first) {
    CUDA_LAUNCH(rw_total_kernel, cuda_blocks(B, 128), 128, 0, cuda_stream(), total, scores, weight, B, first);
}
