// adherence_cuda.cu: the prompt-adherence reward (adherence.c, docs/DATA.md) on the GPU, with the CPU's numerics:
// the soft colour fractions F_k are summed in double, per block in a fixed order and then over blocks in a fixed
// order (deterministic), the per-image smooth maximum and its gradient weights are computed by one thread per
// image, and the image gradient is added in one pass over the pixels. Scores and dscore are device arrays, as for
// every reward on the GPU (rewards/reward.h).
#include "../ops/cuda/cuda_common.cuh"
#include "../core/device_cuda.h"
#include "../core/tensor.h"
#include "adherence_cuda.h"

enum { AD_THREADS = 256, AD_PIX_PER_BLOCK = 4096, AD_K = ADHERENCE_COLOURS };

struct AdPalette {
    double c[AD_K][3];
};

static int64_t chunks_of(int64_t HW) { return (HW + AD_PIX_PER_BLOCK - 1) / AD_PIX_PER_BLOCK; }

extern "C" size_t adherence_scratch_bytes(int64_t B, int64_t HW) {
    // partial sums [B, chunks, K], gradient weights [B, K] (double); targets [B] (int)
    return sizeof(double) * (size_t)(B * chunks_of(HW) * AD_K + B * AD_K) + sizeof(int) * (size_t)B;
}

__device__ static double ad_u(double x) { return 0.5 * x + 0.5; }

// partial[b, chunk, k] = sum over the chunk's pixels of exp(-|u - c_k|^2 inv2s2); grid (chunks, B)
template <class T>
__global__ static void ad_sums_kernel(double *partial, const T *img, int64_t HW, AdPalette pal, double inv2s2) {
    __shared__ double red[AD_THREADS];
    int64_t b = blockIdx.y, chunk = blockIdx.x, p0 = chunk * AD_PIX_PER_BLOCK;
    int64_t p1 = p0 + AD_PIX_PER_BLOCK < HW ? p0 + AD_PIX_PER_BLOCK : HW;
    const T *x = img + b * 3 * HW;
    double acc[AD_K];
    for (int k = 0; k < AD_K; k++) acc[k] = 0.0;
    for (int64_t p = p0 + threadIdx.x; p < p1; p += AD_THREADS) {
        double u0 = ad_u(ld_f32(x, p)), u1 = ad_u(ld_f32(x, HW + p)), u2 = ad_u(ld_f32(x, 2 * HW + p));
        for (int k = 0; k < AD_K; k++) {
            double d0 = u0 - pal.c[k][0], d1 = u1 - pal.c[k][1], d2 = u2 - pal.c[k][2];
            acc[k] += exp(-(d0 * d0 + d1 * d1 + d2 * d2) * inv2s2);
        }
    }
    double *out = partial + (b * gridDim.x + chunk) * AD_K;
    for (int k = 0; k < AD_K; k++) {
        red[threadIdx.x] = acc[k];
        __syncthreads();
        for (int w = AD_THREADS / 2; w > 0; w >>= 1) {
            if ((int)threadIdx.x < w) red[threadIdx.x] += red[threadIdx.x + w];
            __syncthreads();
        }
        if (threadIdx.x == 0) out[k] = red[0];
        __syncthreads();
    }
}

// one thread per image: F, the smooth maximum of the others, the score and dscore/dF_k (times dscore / HW)
__global__ static void ad_finish_kernel(float *scores, double *gk, const double *partial, const int *targets,
                                        const float *dscore, float weight, int64_t B, int64_t chunks, int64_t HW,
                                        double tau, int want_grad) {
    int64_t b = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= B) return;
    int t = targets[b];
    if (t < 0) { // the prompt does not parse: score 0, no gradient
        scores[b] = 0.0f;
        for (int k = 0; k < AD_K; k++) gk[b * AD_K + k] = 0.0;
        return;
    }
    double F[AD_K], w[AD_K], top = -1.0, z = 0.0, M = 0.0;
    for (int k = 0; k < AD_K; k++) {
        double s = 0.0;
        for (int64_t c = 0; c < chunks; c++) s += partial[(b * chunks + c) * AD_K + k];
        F[k] = s / (double)HW;
        if (k != t && F[k] > top) top = F[k];
    }
    for (int k = 0; k < AD_K; k++) {
        w[k] = k != t ? exp((F[k] - top) / tau) : 0.0;
        z += w[k];
    }
    for (int k = 0; k < AD_K; k++) M += (w[k] /= z) * F[k];
    scores[b] = (float)(F[t] - M);
    if (!want_grad) return;
    double ds = dscore ? (double)(weight * dscore[b]) : 0.0; // the CPU's ds[b] = weight * dscore[b] in fp32
    for (int k = 0; k < AD_K; k++)
        gk[b * AD_K + k] = (k == t ? 1.0 : -w[k] * (1.0 + (F[k] - M) / tau)) * ds / (double)HW;
}

// dimg += d(weight dscore score) / d img, one thread per pixel; grid (pixel blocks, B)
template <class T, class G>
__global__ static void ad_grad_kernel(G *dimg, const T *img, const double *gk, int64_t HW, AdPalette pal,
                                      double inv2s2) {
    int64_t b = blockIdx.y, p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= HW) return;
    const T *x = img + b * 3 * HW;
    G *dx = dimg + b * 3 * HW;
    const double *g = gk + b * AD_K;
    double u[3] = {ad_u(ld_f32(x, p)), ad_u(ld_f32(x, HW + p)), ad_u(ld_f32(x, 2 * HW + p))}, du[3] = {0, 0, 0};
    for (int k = 0; k < AD_K; k++) {
        double d0 = u[0] - pal.c[k][0], d1 = u[1] - pal.c[k][1], d2 = u[2] - pal.c[k][2];
        double e = g[k] * exp(-(d0 * d0 + d1 * d1 + d2 * d2) * inv2s2) * 2.0 * inv2s2;
        du[0] -= e * d0, du[1] -= e * d1, du[2] -= e * d2;
    }
    for (int c = 0; c < 3; c++) // du/dx = 1/2; added in fp32 as the CPU's reward set adds
        st_f32(dx, c * HW + p, __fadd_rn(ld_f32(dx, c * HW + p), (float)(0.5 * du[c])));
}

// the gradient pass for image storage T into gradient storage G
template <class T, class G>
static void ad_grad(void *dimages, const void *images, const double *gk, int64_t B, int64_t HW, const AdPalette &pal,
                    double inv2s2) {
    dim3 pix(cuda_blocks(HW, 256), (unsigned)B);
    void (*kernel)(G *, const T *, const double *, int64_t, AdPalette, double) = ad_grad_kernel<T, G>;
    CUDA_LAUNCH(kernel, pix, 256, 0, cuda_stream(), (G *)dimages, (const T *)images, gk, HW, pal, inv2s2);
}

extern "C" void adherence_score_cuda(const void *images, int dt, int64_t B, int64_t HW, const float palette[][3],
                                     double s, double tau, const int *targets, const float *dscore, float weight,
                                     float *scores, void *dimages, int dt_dx, void *ws) {
    AdPalette pal;
    for (int k = 0; k < AD_K; k++)
        for (int c = 0; c < 3; c++) pal.c[k][c] = palette[k][c];
    const double inv2s2 = 1.0 / (2.0 * s * s);
    int64_t chunks = chunks_of(HW);
    double *partial = (double *)ws, *gk = partial + B * chunks * AD_K;
    int *d_targets = (int *)(gk + B * AD_K);
    cudaStream_t st = cuda_stream();
    // the prompts' colours come from the host; a pageable copy is staged before this call returns
    CUDA_CHECK(cudaMemcpyAsync(d_targets, targets, sizeof(int) * B, cudaMemcpyHostToDevice, st));
    dim3 sums(chunks, B);
    if (dt == DTYPE_BF16)
        CUDA_LAUNCH(ad_sums_kernel<__nv_bfloat16>, sums, AD_THREADS, 0, st, partial, (const __nv_bfloat16 *)images,
                    HW, pal, inv2s2);
    else
        CUDA_LAUNCH(ad_sums_kernel<float>, sums, AD_THREADS, 0, st, partial, (const float *)images, HW, pal, inv2s2);
    CUDA_LAUNCH(ad_finish_kernel, cuda_blocks(B, 64), 64, 0, st, scores, gk, partial, d_targets, dscore, weight, B,
                chunks, HW, tau, dimages != NULL);
    if (!dimages) return;
    int bf = dt == DTYPE_BF16, gbf = dt_dx == DTYPE_BF16;
    if (bf && gbf) ad_grad<__nv_bfloat16, __nv_bfloat16>(dimages, images, gk, B, HW, pal, inv2s2);
    else if (bf) ad_grad<__nv_bfloat16, float>(dimages, images, gk, B, HW, pal, inv2s2);
    else if (gbf) ad_grad<float, __nv_bfloat16>(dimages, images, gk, B, HW, pal, inv2s2);
    else ad_grad<float, float>(dimages, images, gk, B, HW, pal, inv2s2);
}
