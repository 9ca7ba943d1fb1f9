// reward_clip.c: the CLIP-based rewards against open_clip / transformers (fixtures from
// tools/reference/make_reward_fixtures.py: small random-weight models with the real architectures' options):
// text features, the preprocessed model input, image features, the score and the gradient of the score with
// respect to the input image, for a 64 x 64 and a non-square 24 x 40 image; the same gradient with checkpointing
// (recomputed layers: bit-identical); and a finite-difference check of each reward's full image gradient
// (preprocessing included).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fixture.h"
#include "reward_cases.h"
#include "gradcheck.h"

// Parity tolerance, per tensor: max|got - ref| <= PARITY_TOL max|ref|. Both sides compute in float32 from the
// same float16-representable weights; measured worst 2.1e-6 (clipscore gradient of the non-square image).
#define PARITY_TOL 1e-5
// The scores are cosines of O(1) features, small differences of larger terms: their float32 rounding is judged
// relative to the features' scale, i.e. a looser bound relative to max|score| itself.
#define SCORE_TOL 5e-5
// Directional finite differences (fd() below), relative to |grad| |v|: measured worst 6.5e-6 (aesthetic). A
// gradient off by 1% in scale gives about 1e-2 |<grad, v>| / (|grad| |v|), about 2e-4 here.
#define FD_TOL 5e-5

// The fixture's test image (make_reward_fixtures.py image_values): exact in float32 on both sides.
static Tensor image_values(int64_t H, int64_t W, uint64_t salt) {
    Tensor t = GC_TENSOR(1, 3, H, W);
    float *x = t.data;
    for (int64_t i = 0; i < 3 * H * W; i++) {
        uint64_t h = (((uint64_t)i + salt) * 2654435761ull) % (1ull << 32);
        x[i] = (float)((double)(h >> 8) / (double)(1 << 24) * 2.5 - 1.25);
    }
    return t;
}

static int g_pass, g_n;
static void count(int ok) { g_pass += ok, g_n++; }

static void parity(const Case *k) {
    char path[256], n[128];
    snprintf(path, sizeof path, "tests/fixtures/reward_%s_ref.safetensors", k->reward);
    SafeTensors st;
    safetensors_open(&st, path);
    ClipReward c, cc;
    Reward r, rc;
    case_load(&c, &r, k, 0, 1.0f);
    case_load(&cc, &rc, k, 1, 1.0f);
    Tensor ids = fixture_get(&st, "ids");
    int T = (int)ids.shape[1];
    if (c.model.has_text) { // text features of both prompts, and the cache the score reads
        ClipTextRun run;
        clip_text_run_init(&run, &c.model.text, 2, T, NULL, 0, 1);
        clip_text_forward(&c.model.text, &run, ids.data);
        Tensor ref = fixture_get(&st, "text_features");
        count(fixture_compare((snprintf(n, sizeof n, "%s text_features", k->reward), n), &run.projected, &ref,
                              PARITY_TOL));
        clip_text_run_free(&run);
        clip_reward_cache_ids(&c, "p0", ids.data, T);
        clip_reward_cache_ids(&cc, "p0", ids.data, T);
    }
    const char *tags[] = {"sq", "ns"};
    const int64_t shapes[2][2] = {{64, 64}, {24, 40}};
    const uint64_t salts[] = {11, 23};
    for (int i = 0; i < 2; i++) {
        Tensor x = image_values(shapes[i][0], shapes[i][1], salts[i]);
        Tensor dx = GC_TENSOR(1, 3, shapes[i][0], shapes[i][1]), dxc = GC_TENSOR(1, 3, shapes[i][0], shapes[i][1]);
        const char *prompts[] = {"p0"};
        float score = 0, score_c = 0, one = 1.0f;
        clip_reward_score(&r, &x, prompts, &score, &dx, &one);
#define CMP(got, what)                                                                                          \
    (snprintf(n, sizeof n, "%s.%s", tags[i], what), ref = fixture_get(&st, n),                                   \
     snprintf(n, sizeof n, "%s %s.%s", k->reward, tags[i], what),                                               \
     count(fixture_compare(n, got, &ref, strcmp(what, "score") ? PARITY_TOL : SCORE_TOL)))
        Tensor ref, s = tensor_f32_1d(&score, 1);
        CMP(&c.run.pixels, "pixel_values");
        CMP(&c.run.features, "image_features");
        CMP(&s, "score");
        CMP(&dx, "grad");
#undef CMP
        clip_reward_score(&rc, &x, prompts, &score_c, &dxc, &one);
        int same = score_c == score && !memcmp(dx.data, dxc.data, tensor_bytes(&dx));
        printf("%s %s %s: checkpointed score and gradient bit-identical (activations %.1f KiB vs %.1f KiB)\n",
               same ? "ok  " : "FAIL", k->reward, tags[i], clip_reward_activation_bytes(&c) / 1024.0,
               clip_reward_activation_bytes(&cc) / 1024.0);
        count(same && clip_reward_activation_bytes(&cc) < clip_reward_activation_bytes(&c));
        gc_free(x.data), gc_free(dx.data), gc_free(dxc.data);
    }
    clip_reward_free(&c);
    clip_reward_free(&cc);
    safetensors_close(&st);
}

// ---------------------------------------------------------------------------------------------------------------
// finite differences of the whole reward (preprocessing, tower, head) with respect to the images. A float32 forward
// of a deep network carries rounding noise of about 1e-7 of its activations, too much for per-pixel differences
// (each pixel's gradient is tiny); directional derivatives along random directions v over all pixels have a signal
// sqrt(#pixels) times larger: D(h) = (L(x + h v) - L(x - h v)) / 2h with Richardson extrapolation
// (4 D(h/2) - D(h)) / 3 against <dL/dx, v>, L = sum_b R_b score_b with fixed random R. The error is judged against
// |dL/dx| |v|, the largest value <dL/dx, v> can take (a direction nearly orthogonal to the gradient has a tiny
// derivative whose finite difference is all rounding noise).

static double weighted(Reward *r, const Tensor *x, const float *R, int B) {
    static const char *const prompts[] = {"p0", "p1"};
    float s[2];
    r->score(r, x, prompts, s, NULL, NULL);
    double L = 0;
    for (int b = 0; b < B; b++) L += (double)R[b] * s[b];
    return L;
}

static void fd(const Case *k) {
    SafeTensors st;
    char path[256];
    snprintf(path, sizeof path, "tests/fixtures/reward_%s_ref.safetensors", k->reward);
    safetensors_open(&st, path);
    ClipReward c;
    Reward r;
    case_load(&c, &r, k, 1, 1.0f);
    if (c.model.has_text) {
        Tensor ids = fixture_get(&st, "ids");
        clip_reward_cache_ids(&c, "p0", ids.data, (int)ids.shape[1]);
        clip_reward_cache_ids(&c, "p1", (int32_t *)ids.data + ids.shape[1], (int)ids.shape[1]);
    }
    // two non-square images well inside (-1, 1): no difference straddles the clamp's kinks
    const int B = 2;
    Tensor x = GC_TENSOR(B, 3, 20, 28), dx = GC_TENSOR(B, 3, 20, 28), v = GC_TENSOR(B, 3, 20, 28),
           xp = GC_TENSOR(B, 3, 20, 28);
    gc_fill_uniform(&x, -0.7f, 0.7f, 77);
    float R[2] = {0.8f, -1.3f}, s[2];
    static const char *const prompts[] = {"p0", "p1"};
    r.score(&r, &x, prompts, s, &dx, R);
    int64_t n = tensor_numel(&x);
    double worst = 0;
    const double h = 5e-2;
    for (int dir = 0; dir < 4; dir++) {
        gc_fill_uniform(&v, -1, 1, 300 + (uint64_t)dir);
        double an = 0, gg = 0, vv = 0, D[2];
        for (int64_t i = 0; i < n; i++) {
            double g = ((float *)dx.data)[i], w = ((float *)v.data)[i];
            an += g * w, gg += g * g, vv += w * w;
        }
        for (int j = 0; j < 2; j++) {
            double hj = j ? h / 2 : h, Lp, Lm;
            float *px = xp.data, *x0 = x.data, *dv = v.data;
            for (int64_t i = 0; i < n; i++) px[i] = x0[i] + (float)hj * dv[i];
            Lp = weighted(&r, &xp, R, B);
            for (int64_t i = 0; i < n; i++) px[i] = x0[i] - (float)hj * dv[i];
            Lm = weighted(&r, &xp, R, B);
            D[j] = (Lp - Lm) / (2 * hj);
        }
        double num = (4 * D[1] - D[0]) / 3, rel = fabs(an - num) / (sqrt(gg) * sqrt(vv));
        worst = rel > worst ? rel : worst;
        printf("     %s direction %d: <grad, v> %.8e  finite difference %.8e  |diff| / (|grad| |v|) %.1e\n",
               k->reward, dir, an, num, rel);
    }
    int ok = worst < FD_TOL;
    printf("%s %s full image gradient vs finite differences: worst |diff| / (|grad| |v|) %.1e (tol %.0e)\n",
           ok ? "ok  " : "FAIL", k->reward, worst, FD_TOL);
    count(ok);
    clip_reward_free(&c);
    safetensors_close(&st);
}

int main(void) {
    clock_t t0 = clock();
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) parity(&CASES[i]);
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) fd(&CASES[i]);
    printf("(%.2f s CPU)\n", (double)(clock() - t0) / CLOCKS_PER_SEC);
    printf("%d passed, %d failed\n", g_pass, g_n - g_pass);
    return g_pass == g_n ? 0 : 1;
}
