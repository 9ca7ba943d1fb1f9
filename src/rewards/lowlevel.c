// lowlevel.c: the built-in differentiable low-level rewards (symmetry, brightness, saturation, sharpness, colour
// target, JPEG-size proxy) and the weighted combination. Each score and its image gradient side by side. Images on
// the GPU are scored there (ops/cuda/cuda_train.cu, the same arithmetic); scores, dscore and the combination's totals
// are then device arrays.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../core/common.h"
#include "../ops/ops_internal.h"
#include "adherence_cuda.h"
#include "clip_reward.h"
#include "reward.h"

#define LUMA_R 0.299f
#define LUMA_G 0.587f
#define LUMA_B 0.114f

typedef struct {
    int64_t B, H, W, HW;
    const float *x;  // [B, 3, H, W]
    float *dx;       // same, or NULL
} Img;

static Img img_of(const Tensor *images, Tensor *dimages) {
    CHECK(images->ndim == 4 && images->shape[1] == 3, "", "rewards take [B, 3, H, W] images");
    Img m = {images->shape[0], images->shape[2], images->shape[3], images->shape[2] * images->shape[3],
             tensor_f32(images), dimages ? tensor_f32(dimages) : NULL};
    if (dimages) CHECK(tensor_numel(dimages) == tensor_numel(images), "", "reward gradient shape mismatch");
    return m;
}

static inline float u_of(float x) { return 0.5f * x + 0.5f; }

// the JPEG proxy's quality-50 luminance quantisation table (compress_score)
static const float JPEG_Q50[64] = {16, 11, 10, 16, 24,  40,  51,  61,  12, 12, 14, 19, 26,  58,  60,  55,
                                   14, 13, 16, 24, 40,  57,  69,  56,  14, 17, 22, 29, 51,  87,  80,  62,
                                   18, 22, 37, 56, 68,  109, 103, 77,  24, 35, 55, 64, 81,  104, 113, 92,
                                   49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99};
// the orthonormal DCT-II basis D[k][n], as JPEG
static void jpeg_dct(double D[8][8]) {
    for (int k = 0; k < 8; k++)
        for (int n = 0; n < 8; n++) D[k][n] = (k ? sqrt(2.0 / 8) : sqrt(1.0 / 8)) * cos(M_PI * (2 * n + 1) * k / 16.0);
}

// ---------------------------------------------------------------------------------------------------------------
// the GPU path. Kind codes of reward_lowlevel_cuda, in the order of BUILTIN below.
enum { LL_SYMMETRY, LL_BRIGHTNESS, LL_SATURATION, LL_SHARPNESS, LL_COLOUR, LL_COMPRESS, LL_KINDS };

// Checks images [B, 3, H, W] (and dimages) on the GPU for reward `kind`.
static void lowlevel_cuda_check(int kind, const Tensor *images, const Tensor *dimages) {
    CHECK(images->ndim == 4 && images->shape[1] == 3, "", "rewards take [B, 3, H, W] images");
    OPS_EXPECT_CUDA(images, "reward");
    if (dimages) {
        CHECK(tensor_numel(dimages) == tensor_numel(images), "", "reward gradient shape mismatch");
        OPS_EXPECT_CUDA(dimages, "reward");
    }
    if (kind == LL_SHARPNESS)
        CHECK(images->shape[2] >= 3 && images->shape[3] >= 3, "", "sharpness needs images of at least 3x3");
    if (kind == LL_COMPRESS)
        CHECK(images->shape[2] >= 8 && images->shape[3] >= 8, "", "the JPEG proxy needs images of at least 8x8");
}

// One reward of `weight` on the GPU: scores [B] written; dimages += the gradient of weight dscore[b] score[b].
static void lowlevel_cuda(int kind, const Reward *r, float weight, const Tensor *images, float *scores,
                          Tensor *dimages, const float *dscore, void *ws) {
    lowlevel_cuda_check(kind, images, dimages);
    double D[8][8];
    jpeg_dct(D);
    reward_lowlevel_cuda(kind, images->data, ops_dt(images), dimages ? dimages->data : NULL,
                         dimages ? ops_dt(dimages) : DTYPE_F32, scores, dscore, weight, images->shape[0],
                         images->shape[2], images->shape[3], r->params, JPEG_Q50, &D[0][0], ws);
}

// A reward called alone on the GPU: dimages is written (cleared, then the gradient added).
static void lowlevel_cuda_alone(int kind, const Reward *r, const Tensor *images, float *scores, Tensor *dimages,
                                const float *dscore) {
    lowlevel_cuda_check(kind, images, dimages);
    if (dimages) tensor_fill(dimages, 0.0f);
    size_t ws = reward_lowlevel_workspace_bytes_cuda(kind, images->shape[0], images->shape[2], images->shape[3]);
    lowlevel_cuda(kind, r, 1.0f, images, scores, dimages, dscore, ops_workspace(DEVICE_CUDA, ws));
}

// symmetry: s = -1/(3HW) sum_{c,y,x} (u[c,y,x] - u[c,y,W-1-x])^2; ds/dx = 1/2 ds/du
static void symmetry_score(const Reward *r, const Tensor *images, const char *const *prompts, float *scores,
                           Tensor *dimages, const float *dscore) {
    if (images->device == DEVICE_CUDA) {
        lowlevel_cuda_alone(LL_SYMMETRY, r, images, scores, dimages, dscore);
        return;
    }
    (void)r, (void)prompts;
    Img m = img_of(images, dimages);
    double inv = 1.0 / (double)(3 * m.HW);
#pragma omp parallel for
    for (int64_t b = 0; b < m.B; b++) {
        const float *x = m.x + b * 3 * m.HW;
        double s = 0;
        for (int64_t c = 0; c < 3; c++)
            for (int64_t y = 0; y < m.H; y++)
                for (int64_t i = 0; i < m.W; i++) {
                    double d = u_of(x[(c * m.H + y) * m.W + i]) - u_of(x[(c * m.H + y) * m.W + (m.W - 1 - i)]);
                    s += d * d;
                }
        scores[b] = (float)(-s * inv);
        if (m.dx) {
            // each pair (i, W-1-i) appears twice in the sum: ds/du_i = -4 inv (u_i - u_mirror)
            float *d = m.dx + b * 3 * m.HW;
            for (int64_t c = 0; c < 3; c++)
                for (int64_t y = 0; y < m.H; y++)
                    for (int64_t i = 0; i < m.W; i++) {
                        double diff = u_of(x[(c * m.H + y) * m.W + i]) - u_of(x[(c * m.H + y) * m.W + (m.W - 1 - i)]);
                        d[(c * m.H + y) * m.W + i] = (float)(dscore[b] * -4.0 * inv * diff * 0.5);
                    }
        }
    }
}

// brightness: s = mean over pixels of luma(u)
static void brightness_score(const Reward *r, const Tensor *images, const char *const *prompts, float *scores,
                             Tensor *dimages, const float *dscore) {
    if (images->device == DEVICE_CUDA) {
        lowlevel_cuda_alone(LL_BRIGHTNESS, r, images, scores, dimages, dscore);
        return;
    }
    (void)r, (void)prompts;
    Img m = img_of(images, dimages);
    const float wc[3] = {LUMA_R, LUMA_G, LUMA_B};
#pragma omp parallel for
    for (int64_t b = 0; b < m.B; b++) {
        const float *x = m.x + b * 3 * m.HW;
        double s = 0;
        for (int64_t c = 0; c < 3; c++)
            for (int64_t p = 0; p < m.HW; p++) s += wc[c] * (double)u_of(x[c * m.HW + p]);
        scores[b] = (float)(s / (double)m.HW);
        if (m.dx)
            for (int64_t c = 0; c < 3; c++)
                for (int64_t p = 0; p < m.HW; p++)
                    m.dx[b * 3 * m.HW + c * m.HW + p] = (float)(dscore[b] * wc[c] * 0.5 / (double)m.HW);
    }
}

// saturation: s = mean over pixels of sqrt(var_c(u) + 1e-6), var over the 3 channels (biased)
static void saturation_score(const Reward *r, const Tensor *images, const char *const *prompts, float *scores,
                             Tensor *dimages, const float *dscore) {
    if (images->device == DEVICE_CUDA) {
        lowlevel_cuda_alone(LL_SATURATION, r, images, scores, dimages, dscore);
        return;
    }
    (void)r, (void)prompts;
    Img m = img_of(images, dimages);
#pragma omp parallel for
    for (int64_t b = 0; b < m.B; b++) {
        const float *x = m.x + b * 3 * m.HW;
        double s = 0;
        for (int64_t p = 0; p < m.HW; p++) {
            double u[3], mean = 0, var = 0;
            for (int c = 0; c < 3; c++) mean += (u[c] = u_of(x[c * m.HW + p])) / 3.0;
            for (int c = 0; c < 3; c++) var += (u[c] - mean) * (u[c] - mean) / 3.0;
            double sd = sqrt(var + 1e-6);
            s += sd;
            if (m.dx) // d sd / d u_c = (u_c - mean) / (3 sd)
                for (int c = 0; c < 3; c++)
                    m.dx[b * 3 * m.HW + c * m.HW + p] =
                        (float)(dscore[b] / (double)m.HW * (u[c] - mean) / (3.0 * sd) * 0.5);
        }
        scores[b] = (float)(s / (double)m.HW);
    }
}

// sharpness: s = mean over interior pixels of (L * luma)^2, L the 4-neighbour Laplacian
static void sharpness_score(const Reward *r, const Tensor *images, const char *const *prompts, float *scores,
                            Tensor *dimages, const float *dscore) {
    if (images->device == DEVICE_CUDA) {
        lowlevel_cuda_alone(LL_SHARPNESS, r, images, scores, dimages, dscore);
        return;
    }
    (void)r, (void)prompts;
    Img m = img_of(images, dimages);
    CHECK(m.H >= 3 && m.W >= 3, "", "sharpness needs images of at least 3x3");
    const float wc[3] = {LUMA_R, LUMA_G, LUMA_B};
    int64_t H = m.H, W = m.W, n = (H - 2) * (W - 2);
    float *luma = xmalloc(sizeof(float) * (size_t)m.HW), *glum = xmalloc(sizeof(float) * (size_t)m.HW);
    for (int64_t b = 0; b < m.B; b++) {
        const float *x = m.x + b * 3 * m.HW;
        for (int64_t p = 0; p < m.HW; p++) {
            luma[p] = 0;
            for (int c = 0; c < 3; c++) luma[p] += wc[c] * u_of(x[c * m.HW + p]);
            glum[p] = 0;
        }
        double s = 0;
        for (int64_t y = 1; y < H - 1; y++)
            for (int64_t i = 1; i < W - 1; i++) {
                int64_t p = y * W + i;
                double lap = (double)luma[p - W] + luma[p + W] + luma[p - 1] + luma[p + 1] - 4.0 * luma[p];
                s += lap * lap;
                if (m.dx) {
                    double g = dscore[b] * 2.0 * lap / (double)n;
                    glum[p - W] += (float)g, glum[p + W] += (float)g, glum[p - 1] += (float)g, glum[p + 1] += (float)g;
                    glum[p] -= (float)(4.0 * g);
                }
            }
        scores[b] = (float)(s / (double)n);
        if (m.dx)
            for (int c = 0; c < 3; c++)
                for (int64_t p = 0; p < m.HW; p++) m.dx[b * 3 * m.HW + c * m.HW + p] = glum[p] * wc[c] * 0.5f;
    }
    free(luma);
    free(glum);
}

// colour target: s = -mean over pixels and channels of (u_c - target_c)^2
static void colour_score(const Reward *r, const Tensor *images, const char *const *prompts, float *scores,
                         Tensor *dimages, const float *dscore) {
    if (images->device == DEVICE_CUDA) {
        lowlevel_cuda_alone(LL_COLOUR, r, images, scores, dimages, dscore);
        return;
    }
    (void)prompts;
    Img m = img_of(images, dimages);
#pragma omp parallel for
    for (int64_t b = 0; b < m.B; b++) {
        const float *x = m.x + b * 3 * m.HW;
        double s = 0;
        for (int c = 0; c < 3; c++)
            for (int64_t p = 0; p < m.HW; p++) {
                double d = (double)u_of(x[c * m.HW + p]) - r->params[c];
                s += d * d;
                if (m.dx) m.dx[b * 3 * m.HW + c * m.HW + p] = (float)(dscore[b] * -2.0 * d / (3.0 * m.HW) * 0.5);
            }
        scores[b] = (float)(-s / (3.0 * m.HW));
    }
}

// JPEG-size proxy: luma in [0, 255] minus 128, 8x8 block DCT-II (orthonormal, as JPEG), divided by the quality-50
// luminance quantisation table; the bits a coefficient costs grow like log(1 + |q|), smoothed as
// log(1 + sqrt(q^2 + 0.01)). s = -mean over coefficients. Only whole 8x8 blocks count.

// One 8x8 block of sample b at (y0, x0): returns its cost; with d != NULL writes d(scale * cost)/d image there.
static double jpeg_block(const Img *m, const double D[8][8], int64_t b, int64_t y0, int64_t x0, float *d,
                         double scale) {
    const float wc[3] = {LUMA_R, LUMA_G, LUMA_B};
    const float *x = m->x + b * 3 * m->HW;
    double f[8][8], t[8][8], g[8][8], gt[8][8], cost = 0;
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 8; j++) {
            int64_t p = (y0 + i) * m->W + x0 + j;
            double l = 0;
            for (int c = 0; c < 3; c++) l += wc[c] * (double)u_of(x[c * m->HW + p]);
            f[i][j] = 255.0 * l - 128.0;
        }
    for (int k = 0; k < 8; k++) // t = D f
        for (int j = 0; j < 8; j++) {
            double s = 0;
            for (int n = 0; n < 8; n++) s += D[k][n] * f[n][j];
            t[k][j] = s;
        }
    for (int k = 0; k < 8; k++) // F = t D^T; cost and g = dcost/dF
        for (int l = 0; l < 8; l++) {
            double F = 0;
            for (int n = 0; n < 8; n++) F += t[k][n] * D[l][n];
            double q = F / JPEG_Q50[k * 8 + l], a = sqrt(q * q + 0.01);
            cost += log1p(a);
            g[k][l] = (q / a) / (1.0 + a) / JPEG_Q50[k * 8 + l];
        }
    if (!d) return cost;
    for (int k = 0; k < 8; k++) // gt = g D = dcost/dt
        for (int n = 0; n < 8; n++) {
            double s = 0;
            for (int l = 0; l < 8; l++) s += g[k][l] * D[l][n];
            gt[k][n] = s;
        }
    for (int n = 0; n < 8; n++) // dcost/df = D^T gt; f = 255 luma - 128, luma linear in u, u = x/2 + 1/2
        for (int j = 0; j < 8; j++) {
            double s = 0;
            for (int k = 0; k < 8; k++) s += D[k][n] * gt[k][j];
            int64_t p = (y0 + n) * m->W + x0 + j;
            for (int c = 0; c < 3; c++) d[c * m->HW + p] = (float)(scale * s * 255.0 * wc[c] * 0.5);
        }
    return cost;
}

static void compress_score(const Reward *r, const Tensor *images, const char *const *prompts, float *scores,
                           Tensor *dimages, const float *dscore) {
    if (images->device == DEVICE_CUDA) {
        lowlevel_cuda_alone(LL_COMPRESS, r, images, scores, dimages, dscore);
        return;
    }
    (void)r, (void)prompts;
    Img m = img_of(images, dimages);
    int64_t bh = m.H / 8, bw = m.W / 8, nblk = bh * bw;
    CHECK(nblk > 0, "", "the JPEG proxy needs images of at least 8x8");
    double D[8][8];
    jpeg_dct(D);
    if (m.dx) memset(m.dx, 0, sizeof(float) * (size_t)(m.B * 3 * m.HW)); // pixels outside whole blocks
    double *cost = xmalloc(sizeof(double) * (size_t)(m.B * nblk));
#pragma omp parallel for collapse(2)
    for (int64_t b = 0; b < m.B; b++)
        for (int64_t k = 0; k < nblk; k++)
            cost[b * nblk + k] = jpeg_block(&m, D, b, (k / bw) * 8, (k % bw) * 8, m.dx ? m.dx + b * 3 * m.HW : NULL,
                                            m.dx ? -dscore[b] / (64.0 * (double)nblk) : 0.0);
    for (int64_t b = 0; b < m.B; b++) { // serial sum: deterministic whatever the thread count
        double s = 0;
        for (int64_t k = 0; k < nblk; k++) s += cost[b * nblk + k];
        scores[b] = (float)(-s / (64.0 * (double)nblk));
    }
    free(cost);
}

static const struct {
    const char *name;
    void (*score)(const Reward *, const Tensor *, const char *const *, float *, Tensor *, const float *);
    int nparams;
} BUILTIN[] = {{"symmetry", symmetry_score, 0},     {"brightness", brightness_score, 0},
               {"saturation", saturation_score, 0}, {"sharpness", sharpness_score, 0},
               {"colour", colour_score, 3},         {"compress", compress_score, 0},
               {"adherence", adherence_score, 0}};

const char *reward_known_names(void) {
    return "symmetry, brightness, saturation, sharpness, colour, compress, adherence, hps, pickscore, clipscore, "
           "aesthetic";
}

void reward_init(Reward *r, const char *name, float weight, const float *params, int nparams) {
    memset(r, 0, sizeof *r);
    for (size_t i = 0; i < sizeof BUILTIN / sizeof BUILTIN[0]; i++) {
        if (strcmp(name, BUILTIN[i].name) != 0) continue;
        USER_CHECK(nparams == BUILTIN[i].nparams, "reward '%s' takes %d parameter(s), got %d", name,
                   BUILTIN[i].nparams, nparams);
        snprintf(r->name, sizeof r->name, "%s", name);
        r->weight = weight;
        for (int k = 0; k < nparams && k < 4; k++) r->params[k] = params[k];
        r->score = BUILTIN[i].score;
        return;
    }
    dt_user_error("unknown reward '%s' (known: %s)", name, reward_known_names());
}

// The GPU kind code of a built-in reward (-1: it has no GPU kernel).
static int lowlevel_kind(const Reward *r) {
    for (int i = 0; i < LL_KINDS; i++)
        if (r->score == BUILTIN[i].score) return i;
    return -1;
}

// scores [B] floats, then the largest kernel workspace of the set, then (bf16 images) an fp32 image gradient
static size_t rewardset_scores_bytes(int64_t B) { return (sizeof(float) * (size_t)B + 255) / 256 * 256; }
static size_t rewardset_kernel_bytes(const RewardSet *set, const Tensor *images) {
    int64_t B = images->shape[0], H = images->shape[2], W = images->shape[3];
    size_t most = 0;
    for (int k = 0; k < set->n; k++) {
        int kind = lowlevel_kind(&set->items[k]);
        size_t b = kind >= 0 ? reward_lowlevel_workspace_bytes_cuda(kind, B, H, W)
                   : set->items[k].score == adherence_score ? adherence_scratch_bytes(B, H * W) : 0;
        if (b > most) most = b;
    }
    return (most + 255) / 256 * 256;
}

int rewardset_on_gpu(const RewardSet *set) {
    for (int k = 0; k < set->n; k++) {
        const Reward *r = &set->items[k];
        if (lowlevel_kind(r) < 0 && r->score != adherence_score && r->score != clip_reward_score) return 0;
    }
    return 1;
}

void rewardset_plan(const RewardSet *set, const Tensor *images) {
    if (images->device == DEVICE_CPU) return;
    for (int k = 0; k < set->n; k++)
        if (set->items[k].score == clip_reward_score) clip_reward_plan_device(set->items[k].ctx, images);
}

// The learned rewards' ops use the bottom of the ops' scratch (rewardset_plan), so the set's own arrays start above
// the largest such need.
static size_t rewardset_learned_bytes(const RewardSet *set, const Tensor *images) {
    size_t most = 0;
    for (int k = 0; k < set->n; k++)
        if (set->items[k].score == clip_reward_score) {
            size_t b = clip_reward_device_bytes(set->items[k].ctx, images);
            if (b > most) most = b;
        }
    return (most + 255) / 256 * 256;
}

size_t rewardset_workspace_bytes(const RewardSet *set, const Tensor *images) {
    if (images->device != DEVICE_CUDA) return 0;
    size_t acc = images->dtype == DTYPE_F32 ? 0 : sizeof(float) * (size_t)tensor_numel(images);
    return rewardset_learned_bytes(set, images) + rewardset_scores_bytes(images->shape[0]) +
           rewardset_kernel_bytes(set, images) + acc;
}

// The GPU combination: every reward adds its weighted gradient into one fp32 image gradient (cleared once), in the
// CPU's order of fp32 additions (dimages itself when it is fp32, else workspace cast into dimages at the end);
// totals accumulate on the device.
static void rewardset_score_cuda(const RewardSet *set, const Tensor *images, const char *const *prompts,
                                 float *total, float *per_reward, Tensor *dimages, const float *dscore) {
    int64_t B = images->shape[0];
    char *ws = (char *)ops_workspace(DEVICE_CUDA, rewardset_workspace_bytes(set, images)) +
               rewardset_learned_bytes(set, images);
    Tensor acc = dimages ? *dimages : (Tensor){0};
    if (dimages) {
        lowlevel_cuda_check(LL_SYMMETRY, images, dimages);
        if (dimages->dtype != DTYPE_F32) {
            CHECK(images->dtype != DTYPE_F32, "", "rewardset_score: an fp32 gradient for fp32 images");
            acc.dtype = DTYPE_F32;
            acc.data = ws + rewardset_scores_bytes(B) + rewardset_kernel_bytes(set, images);
        }
        tensor_fill(&acc, 0.0f);
    }
    if (set->n == 0) fill_cuda(total, 0.0f, B, DTYPE_F32);
    for (int k = 0; k < set->n; k++) {
        const Reward *r = &set->items[k];
        int kind = lowlevel_kind(r);
        float *s = per_reward ? per_reward + (int64_t)k * B : (float *)ws;
        void *kws = ws + rewardset_scores_bytes(B);
        if (r->score == adherence_score)
            adherence_score_cuda_add(r, r->weight, images, prompts, s, dimages ? &acc : NULL, dscore, kws);
        else if (kind >= 0)
            lowlevel_cuda(kind, r, r->weight, images, s, dimages ? &acc : NULL, dscore, kws);
        else if (r->score == clip_reward_score)
            clip_reward_score_cuda_add(r, r->weight, images, prompts, s, dimages ? &acc : NULL, dscore);
        else
            dt_user_error("reward '%s' has no GPU kernel yet: use it on the CPU (train.device = cpu, --device cpu)",
                          r->name);
        reward_total_cuda(total, s, r->weight, B, k == 0);
    }
    if (dimages && acc.data != dimages->data) tensor_cast(dimages, &acc);
}

void rewardset_score(const RewardSet *set, const Tensor *images, const char *const *prompts, float *total,
                     float *per_reward, Tensor *dimages, const float *dscore) {
    if (images->device == DEVICE_CUDA) {
        rewardset_score_cuda(set, images, prompts, total, per_reward, dimages, dscore);
        return;
    }
    int64_t B = images->shape[0], n = tensor_numel(images);
    float *s = xmalloc(sizeof(float) * (size_t)B), *ds = xmalloc(sizeof(float) * (size_t)B);
    Tensor tmp = *images;
    tmp.data = dimages ? xmalloc(sizeof(float) * (size_t)n) : NULL;
    for (int64_t b = 0; b < B; b++) total[b] = 0.0f;
    if (dimages) memset(dimages->data, 0, sizeof(float) * (size_t)n);
    for (int k = 0; k < set->n; k++) {
        const Reward *r = &set->items[k];
        for (int64_t b = 0; b < B; b++) ds[b] = dscore ? r->weight * dscore[b] : 0.0f;
        r->score(r, images, prompts, s, dimages ? &tmp : NULL, ds);
        for (int64_t b = 0; b < B; b++) {
            total[b] += r->weight * s[b];
            if (per_reward) per_reward[k * B + b] = s[b];
        }
        if (dimages) {
            float *d = dimages->data;
            const float *t = tmp.data;
            for (int64_t i = 0; i < n; i++) d[i] += t[i];
        }
    }
    free(tmp.data);
    free(s);
    free(ds);
}
