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

#define TRAIN_THREADS 256
#define QUAD_INDEX() (((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * 4)
static inline unsigned quad_blocks(int64_t n) { return cuda_blocks((n + 3) / 4, TRAIN_THREADS); }

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
    int64_t i0 = QUAD_INDEX();
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
    int64_t i0 = QUAD_INDEX();
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
    int64_t i0 = QUAD_INDEX();
    for (int64_t i = i0; i < n && i < i0 + 4; i++)
        st_f32(out, i, __fadd_rn(__fmul_rn(sa, ld_f32(x0, i)), __fmul_rn(sb, ld_f32(noise, i))));
}

extern "C" void ddim_step_cuda(void *x_prev, void *x0, const void *m, const void *x, const void *z, float sa, float sb,
                               float sp, float dir, float std_dev, float lim, int pred, int clip, int64_t n, int dt) {
    DdimArgs a = {sa, sb, sp, dir, std_dev, lim, pred, clip};
    CUDA_DT_DISPATCH(dt, T, CUDA_LAUNCH(ddim_step_kernel<T>, quad_blocks(n), TRAIN_THREADS, 0, cuda_stream(),
                                        (T *)x_prev, (T *)x0, (const T *)m, (const T *)x, (const T *)z, a, n));
}
extern "C" void ddim_step_backward_cuda(void *dm, void *dx, const void *dx_prev, const void *dx0, const void *m,
                                        const void *x, float sa, float sb, float lim, int pred, int clip, double sp,
                                        double dir, double cx, double cm, double ex, double em, int64_t n, int dt) {
    DdimArgs a = {sa, sb, 0.0f, 0.0f, 0.0f, lim, pred, clip};
    DdimBwdArgs b = {sp, dir, cx, cm, ex, em};
    CUDA_DT_DISPATCH(dt, T, CUDA_LAUNCH(ddim_bwd_kernel<T>, quad_blocks(n), TRAIN_THREADS, 0, cuda_stream(), (T *)dm,
                                        (T *)dx, (const T *)dx_prev, (const T *)dx0, (const T *)m, (const T *)x, a, b,
                                        n));
}
extern "C" void ddim_add_noise_cuda(void *out, const void *x0, const void *noise, float sa, float sb, int64_t n,
                                    int dt) {
    CUDA_DT_DISPATCH(dt, T, CUDA_LAUNCH(ddim_add_noise_kernel<T>, quad_blocks(n), TRAIN_THREADS, 0, cuda_stream(),
                                        (T *)out, (const T *)x0, (const T *)noise, sa, sb, n));
}

// ---------------------------------------------------------------------------------------------------------------
// classifier-free guidance over rows [2, n] = [uncond | cond]: out = u + w (c - u); the backward writes
// drows = [ca dout | cb dout] with ca = (1 - w) scale, cb = w scale in double (the host computes both), or only
// ca dout when there is one row (no guidance: ca = scale).
template <class T> __global__ static void cfg_fwd_kernel(T *out, const T *rows, float w, int64_t n) {
    int64_t i0 = QUAD_INDEX();
    for (int64_t i = i0; i < n && i < i0 + 4; i++) {
        float u = ld_f32(rows, i), c = ld_f32(rows, n + i);
        st_f32(out, i, __fadd_rn(u, __fmul_rn(w, __fsub_rn(c, u))));
    }
}
template <class T> __global__ static void cfg_bwd_kernel(T *drows, const T *dout, double ca, double cb, int two,
                                                         int64_t n) {
    int64_t i0 = QUAD_INDEX();
    for (int64_t i = i0; i < n && i < i0 + 4; i++) {
        double d = (double)ld_f32(dout, i);
        st_f32(drows, i, (float)__dmul_rn(ca, d));
        if (two) st_f32(drows, n + i, (float)__dmul_rn(cb, d));
    }
}
extern "C" void cfg_combine_forward_cuda(void *out, const void *rows, float w, int64_t n, int dt) {
    CUDA_DT_DISPATCH(dt, T, CUDA_LAUNCH(cfg_fwd_kernel<T>, quad_blocks(n), TRAIN_THREADS, 0, cuda_stream(), (T *)out,
                                        (const T *)rows, w, n));
}
extern "C" void cfg_combine_backward_cuda(void *drows, const void *dout, double ca, double cb, int two, int64_t n,
                                          int dt) {
    CUDA_DT_DISPATCH(dt, T, CUDA_LAUNCH(cfg_bwd_kernel<T>, quad_blocks(n), TRAIN_THREADS, 0, cuda_stream(),
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
    int64_t i0 = QUAD_INDEX();
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
    CUDA_LAUNCH(adamw_kernel, quad_blocks(n), TRAIN_THREADS, 0, cuda_stream(), p, g, m, v, n, sumsq, a, vec);
}
