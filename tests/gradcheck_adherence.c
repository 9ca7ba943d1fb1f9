// gradcheck_adherence.c: the adherence reward's image gradient against finite differences for prompts of several
// colours and kinds, and its values on rendered scenes: the scene's own prompt beats a prompt of any other colour,
// (one-object scenes), and a prompt that does not parse scores 0 with zero gradient.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../src/core/common.h"
#include "../src/data/scenes.h"
#include "../src/rewards/reward.h"
#include "gradcheck.h"
#include "testutil.h"

enum { B = 4 };

typedef struct {
    Reward r;
    const char *prompts[B];
    Tensor img, dimg, score, dscore;
} Ctx;

static void fwd(void *p) {
    Ctx *c = p;
    c->r.score(&c->r, &c->img, c->prompts, c->score.data, NULL, NULL);
}
static void bwd(void *p) {
    Ctx *c = p;
    float tmp[B];
    c->r.score(&c->r, &c->img, c->prompts, tmp, &c->dimg, c->dscore.data);
}

// Images whose pixels are, in turn, near the first prompt colour of the batch, near palette colour `other`, and
// uniform noise: every kernel of the reward sees pixels close to its centre.
static void fill_images(Ctx *c, const SceneColour *near, SceneColour other, int64_t H, int64_t W) {
    gc_fill_uniform(&c->img, -1.0f, 1.0f, 21);
    Tensor jitter = gc_tensor(4, c->img.shape);
    gc_fill_normal(&jitter, 0.15f, 22);
    float *x = c->img.data, *j = jitter.data;
    int64_t HW = H * W;
    for (int b = 0; b < B; b++)
        for (int64_t p = 0; p < HW; p++) {
            if (p % 3 == 2) continue;
            float rgb[3];
            scene_colour_rgb(p % 3 ? other : near[b], rgb);
            for (int ch = 0; ch < 3; ch++) {
                int64_t i = (b * 3 + ch) * HW + p;
                x[i] = 2.0f * rgb[ch] - 1.0f + j[i];
            }
        }
    gc_free(jitter.data);
}

static int check(const char *name, const char *const prompts[B], const SceneColour near[B], SceneColour other) {
    const int64_t H = 6, W = 7;
    Ctx c = {0};
    reward_init(&c.r, "adherence", 1.0f, NULL, 0);
    memcpy(c.prompts, prompts, sizeof c.prompts);
    c.img = GC_TENSOR(B, 3, H, W), c.dimg = GC_TENSOR(B, 3, H, W);
    c.score = GC_TENSOR(B), c.dscore = GC_TENSOR(B);
    fill_images(&c, near, other, H, W);
    GradCheck g = {.name = name, .ctx = &c, .forward = fwd, .backward = bwd, .n_wrt = 1, .n_out = 1};
    g.wrt[0] = &c.img, g.grad[0] = &c.dimg;
    g.out[0] = &c.score, g.dout[0] = &c.dscore;
    return tu_count(gradcheck_run(&g) == 0);
}

// On rendered one-object scenes: own prompt > the same prompt with any other colour; unparsable and missing prompts
// score 0.
static void check_values(void) {
    enum { N = 200, H = 32 };
    float *x = xmalloc(sizeof(float) * (size_t)(3 * H * H)), *dx = xmalloc(sizeof(float) * (size_t)(3 * H * H));
    Tensor img = tensor_f32_4d(x, 1, 3, H, H), dimg = tensor_f32_4d(dx, 1, 3, H, H);
    Reward r;
    reward_init(&r, "adherence", 1.0f, NULL, 0);
    int wins = 0;
    double own_mean = 0;
    for (int i = 0, k = 0; i < N; k++) {
        Scene sc;
        scene_sample(&sc, 9, (uint64_t)k, k % 2);
        if (sc.n != 1) continue;
        i++;
        scene_render(&sc, x, H, H);
        const char *p[1] = {sc.caption};
        float own, s;
        r.score(&r, &img, p, &own, NULL, NULL);
        own_mean += own / N;
        int best = 1;
        for (int c = 0; c < COLOUR_COUNT; c++) {
            if (c == (int)sc.obj[0].colour) continue;
            char other[SCENE_CAPTION_MAX];
            snprintf(other, sizeof other, "a %s %s", scene_colour_name((SceneColour)c),
                     scene_shape_name(sc.obj[0].shape));
            p[0] = other;
            r.score(&r, &img, p, &s, NULL, NULL);
            if (own <= s) printf("  \"%s\" %.4f <= \"%s\" %.4f\n", sc.caption, own, other, s);
            best = best && own > s;
        }
        wins += best;
    }
    tu_check(wins == N, "own prompt scores above every other colour on %d of %d rendered scenes (mean %.3f)", wins, N,
             own_mean);

    const char *junk[1] = {"a red hexagon"};
    float s = 1.0f, ds = 1.0f;
    for (int q = 0; q < 3 * H * H; q++) dx[q] = 1.0f;
    r.score(&r, &img, junk, &s, &dimg, &ds);
    int nonzero = 0;
    for (int q = 0; q < 3 * H * H; q++) nonzero += dx[q] != 0.0f;
    TU_EXPECT(s == 0.0f && nonzero == 0, "unparsable prompt: score %g, %d nonzero gradient values", s, nonzero);
    s = 1.0f;
    r.score(&r, &img, NULL, &s, NULL, NULL);
    TU_EXPECT(s == 0.0f, "no prompts: score %g", s);

    // an image entirely of the target colour: F_t = 1, so the score is 1 minus the smooth maximum of the others
    float rgb[3];
    scene_colour_rgb(COLOUR_GREEN, rgb);
    for (int c = 0; c < 3; c++)
        for (int q = 0; q < H * H; q++) x[c * H * H + q] = 2.0f * rgb[c] - 1.0f;
    const char *green[1] = {"a green circle"};
    r.score(&r, &img, green, &s, NULL, NULL);
    tu_check(s > 0.9f && s < 1.0f, "an all-green image for \"a green circle\" scores %.4f", s);
    gc_free(x);
    gc_free(dx);
}

int main(void) {
    const char *const mixed[B] = {"a red circle", "an orange square on the left", "two cyan triangles",
                                  "a white circle above a blue square"};
    const SceneColour mixed_near[B] = {COLOUR_RED, COLOUR_ORANGE, COLOUR_CYAN, COLOUR_WHITE};
    check("adherence red/orange/cyan/white", mixed, mixed_near, COLOUR_YELLOW);
    const char *const more[B] = {"a large purple triangle at the bottom on a grey background", "three yellow squares",
                                 "a green circle", "not a scene"};
    const SceneColour more_near[B] = {COLOUR_PURPLE, COLOUR_YELLOW, COLOUR_GREEN, COLOUR_BLUE};
    check("adherence purple/yellow/green/unparsable", more, more_near, COLOUR_BLUE);
    check_values();
    return tu_report();
}
