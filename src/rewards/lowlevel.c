// lowlevel.c: the built-in differentiable low-level rewards (symmetry, brightness, saturation, sharpness, colour
// target, JPEG-size proxy) and the weighted combination. Each score and its image gradient side by side.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../core/common.h"
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

// symmetry: s = -1/(3HW) sum_{c,y,x} (u[c,y,x] - u[c,y,W-1-x])^2; ds/dx = 1/2 ds/du
static void symmetry_score(const Reward *r, const Tensor *images, const char *const *prompts, float *scores,
                           Tensor *dimages, const float *dscore) {
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
static const float JPEG_Q50[64] = {16, 11, 10, 16, 24,  40,  51,  61,  12, 12, 14, 19, 26,  58,  60,  55,
                                   14, 13, 16, 24, 40,  57,  69,  56,  14, 17, 22, 29, 51,  87,  80,  62,
                                   18, 22, 37, 56, 68,  109, 103, 77,  24, 35, 55, 64, 81,  104, 113, 92,
                                   49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99};

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
    (void)r, (void)prompts;
    Img m = img_of(images, dimages);
    int64_t bh = m.H / 8, bw = m.W / 8, nblk = bh * bw;
    CHECK(nblk > 0, "", "the JPEG proxy needs images of at least 8x8");
    double D[8][8]; // orthonormal DCT-II basis, as JPEG
    for (int k = 0; k < 8; k++)
        for (int n = 0; n < 8; n++) D[k][n] = (k ? sqrt(2.0 / 8) : sqrt(1.0 / 8)) * cos(M_PI * (2 * n + 1) * k / 16.0);
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

void rewardset_score(const RewardSet *set, const Tensor *images, const char *const *prompts, float *total,
                     float *per_reward, Tensor *dimages, const float *dscore) {
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
