// data_scenes.c: the procedural scene set: sampling and rendering are deterministic (pinned hashes), the training
// and held-out splits share no (colour, shape, position) combination, captions parse back to their scenes, and the
// checker is accurate on rendered scenes, clean and with Gaussian noise, at 32x32 and 64x64.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../src/core/common.h"
#include "../src/core/rng.h"
#include "../src/data/scenes.h"
#include "testutil.h"

static uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static float dist3(const float *a, const float *b) {
    return sqrtf((a[0] - b[0]) * (a[0] - b[0]) + (a[1] - b[1]) * (a[1] - b[1]) + (a[2] - b[2]) * (a[2] - b[2]));
}

// Palette colours are far apart and far from every background, so the checker's nearest-colour vote is clear.
static void test_palette(void) {
    float a[3], b[3], worst = INFINITY, worst_bg = INFINITY;
    for (int i = 0; i < COLOUR_COUNT; i++) {
        scene_colour_rgb((SceneColour)i, a);
        for (int c = 0; c < 3; c++)
            TU_EXPECT(a[c] >= 0 && a[c] <= 1, "%s channel %d is %g", scene_colour_name((SceneColour)i), c, a[c]);
        for (int j = i + 1; j < COLOUR_COUNT; j++) {
            scene_colour_rgb((SceneColour)j, b);
            worst = fminf(worst, dist3(a, b));
        }
        for (int g = 0; g < SCENE_BACKGROUND_COUNT; g++) {
            scene_background_rgb(g, b);
            worst_bg = fminf(worst_bg, dist3(a, b));
        }
    }
    tu_check(worst >= 0.45f, "closest palette colours are %.3f apart (>= 0.45)", worst);
    tu_check(worst_bg >= 0.55f, "closest palette colour and background are %.3f apart (>= 0.55)", worst_bg);
}

// Same (seed, index, split) -> the same bytes; the pinned hashes catch any change of the set across machines.
static void test_determinism(void) {
    enum { H = 32, W = 32 };
    static float x[3 * H * W], y[3 * H * W];
    uint64_t hcap = 0xcbf29ce484222325ull, hpix = hcap;
    int same = 0, differ = 0;
    for (int split = 0; split < 2; split++)
        for (uint64_t i = 0; i < 1000; i++) {
            Scene s, t, u;
            scene_sample(&s, 7, i, split);
            scene_sample(&t, 7, i, split);
            scene_sample(&u, 8, i, split);
            int ok = !memcmp(&s, &t, sizeof s);
            differ += strcmp(s.caption, u.caption) != 0;
            hcap = fnv1a(hcap, s.caption, strlen(s.caption) + 1);
            if (i < 100) {
                scene_render(&s, x, H, W);
                scene_render(&t, y, H, W);
                ok = ok && !memcmp(x, y, sizeof x);
                hpix = fnv1a(hpix, x, sizeof x);
            }
            same += ok;
        }
    tu_check(same == 2000, "sampling and rendering twice give the same bytes (%d of 2000 scenes)", same);
    tu_check(differ > 1700, "another seed gives other captions (%d of 2000 differ)", differ);
    const uint64_t want_cap = 0xb0d2dec1f2ba7f8full, want_pix = 0xd57f82c0c7969796ull;
    tu_check(hcap == want_cap, "caption hash %016llx (pinned %016llx)", (unsigned long long)hcap,
             (unsigned long long)want_cap);
    tu_check(hpix == want_pix, "pixel hash %016llx (pinned %016llx)", (unsigned long long)hpix,
             (unsigned long long)want_pix);
}

// The held-out rule, and 100k training scenes without a held-out combination in any object.
static void test_splits(void) {
    int heldout = 0, per_pair_ok = 1, per_colour[COLOUR_COUNT] = {0}, per_colour_ok = 1;
    for (int s = 0; s < SHAPE_COUNT; s++)
        for (int p = 0; p < POSITION_COUNT; p++) {
            int n = 0;
            for (int c = 0; c < COLOUR_COUNT; c++) {
                int h = scene_is_heldout((SceneColour)c, (SceneShape)s, (ScenePosition)p);
                n += h;
                per_colour[c] += h;
            }
            heldout += n;
            per_pair_ok = per_pair_ok && n == 1;
        }
    for (int c = 0; c < COLOUR_COUNT; c++) per_colour_ok = per_colour_ok && per_colour[c] >= 1 && per_colour[c] <= 2;
    tu_check(heldout == 15 && per_pair_ok && per_colour_ok,
             "%d held-out combinations: one colour per (shape, position), each colour once or twice", heldout);

    int seen[COLOUR_COUNT][SHAPE_COUNT][POSITION_COUNT] = {{{0}}}, bad = 0, kinds[4] = {0};
    const int N = 100000;
    for (uint64_t i = 0; i < (uint64_t)N; i++) {
        Scene sc;
        scene_sample(&sc, 1, i, 0);
        kinds[sc.n == 1 ? 0 : sc.n == 3 ? 2 : sc.obj[1].colour == sc.obj[0].colour ? 1 : 3]++;
        for (int j = 0; j < sc.n; j++) {
            const SceneObject *o = &sc.obj[j];
            ScenePosition p = scene_position_of(o->cx, o->cy);
            bad += scene_is_heldout(o->colour, o->shape, p);
            seen[o->colour][o->shape][p]++;
        }
    }
    int missing = 0;
    for (int c = 0; c < COLOUR_COUNT; c++)
        for (int s = 0; s < SHAPE_COUNT; s++)
            for (int p = 0; p < POSITION_COUNT; p++) missing += !scene_is_heldout(c, s, p) && !seen[c][s][p];
    tu_check(bad == 0, "%d objects of %d training scenes have a held-out combination", bad, N);
    tu_check(missing == 0, "%d training combinations never appear in %d scenes", missing, N);
    tu_check(kinds[0] > 0.67 * N && kinds[0] < 0.73 * N && kinds[1] > 0.08 * N && kinds[2] > 0.04 * N &&
                 kinds[3] > 0.13 * N,
             "training kinds: %d single, %d two alike, %d three alike, %d related", kinds[0], kinds[1], kinds[2],
             kinds[3]);

    int held_bad = 0;
    for (uint64_t i = 0; i < 10000; i++) {
        Scene sc, parsed;
        scene_sample(&sc, 1, i, 1);
        const SceneObject *o = &sc.obj[0];
        ScenePosition p = scene_position_of(o->cx, o->cy);
        int named = scene_parse(sc.caption, &parsed) && parsed.obj[0].cx >= 0 &&
                    scene_position_of(parsed.obj[0].cx, parsed.obj[0].cy) == p;
        held_bad += sc.n != 1 || !scene_is_heldout(o->colour, o->shape, p) || !named;
    }
    tu_check(held_bad == 0, "%d of 10000 held-out scenes are not one held-out object named with its position",
             held_bad);
}

// Every caption parses back to its scene; the vocabulary is small; malformed captions are rejected.
static void test_captions(void) {
    char vocab[64][16];
    int nvocab = 0, bad = 0, longest = 0;
    for (int split = 0; split < 2; split++)
        for (uint64_t i = 0; i < 20000; i++) {
            Scene sc, pr;
            scene_sample(&sc, 3, i, split);
            int len = (int)strlen(sc.caption);
            if (len > longest) longest = len;
            int ok = scene_parse(sc.caption, &pr) && pr.n == sc.n && !strcmp(pr.caption, sc.caption);
            for (int j = 0; ok && j < sc.n; j++) {
                const SceneObject *a = &sc.obj[j], *b = &pr.obj[j];
                ok = a->colour == b->colour && a->shape == b->shape && (b->size < 0 || b->size == a->size) &&
                     (b->cx < 0 || scene_position_of(a->cx, a->cy) == scene_position_of(b->cx, b->cy));
            }
            ok = ok && (pr.background < 0 || pr.background == sc.background);
            if (!ok && bad++ < 5) printf("FAIL caption does not parse back: \"%s\"\n", sc.caption);
            char words[SCENE_CAPTION_MAX];
            memcpy(words, sc.caption, sizeof words);
            for (char *w = strtok(words, " "); w; w = strtok(NULL, " ")) {
                int k = 0;
                while (k < nvocab && strcmp(vocab[k], w)) k++;
                if (k == nvocab && nvocab < 64) snprintf(vocab[nvocab++], sizeof vocab[0], "%s", w);
            }
        }
    tu_check(bad == 0, "%d of 40000 captions do not parse back to their scene", bad);
    tu_check(nvocab <= 40, "captions use %d distinct words (<= 40); the longest has %d characters", nvocab, longest);

    const char *rejected[] = {"", "a", "a red", "red circle", "a red hexagon", "a red circles", "two red circle",
                              "the red circle", "a red circle on the top", "a red circle on a grey",
                              "a red circle above", "a red circle on the left on the right",
                              "a red circle on a pink background", "a red circle above a blue square on the left",
                              "four red circles", "a red circle on a grey background please"};
    int accepted = 0;
    for (size_t i = 0; i < sizeof rejected / sizeof rejected[0]; i++) {
        Scene pr;
        if (scene_parse(rejected[i], &pr)) accepted++, printf("FAIL parsed \"%s\"\n", rejected[i]);
    }
    tu_check(accepted == 0, "malformed captions are rejected (%d accepted)", accepted);
    Scene pr;
    TU_EXPECT(scene_parse("  A Large  ORANGE square\tat the bottom on a dark blue background ", &pr) && pr.n == 1 &&
                  pr.obj[0].colour == COLOUR_ORANGE && pr.obj[0].shape == SHAPE_SQUARE && pr.obj[0].size == 2 &&
                  scene_position_of(pr.obj[0].cx, pr.obj[0].cy) == POSITION_BOTTOM && pr.background == 2,
              "case and spacing are free");
    TU_EXPECT(scene_parse("three small white triangles", &pr) && pr.n == 3 && pr.obj[2].colour == COLOUR_WHITE &&
                  pr.obj[2].shape == SHAPE_TRIANGLE && pr.obj[0].cx < 0 && pr.background < 0,
              "counts repeat the object without positions");
    TU_EXPECT(scene_parse("a cyan square to the left of a red circle", &pr) && pr.n == 2 &&
                  pr.obj[1].colour == COLOUR_RED && pr.obj[1].shape == SHAPE_CIRCLE &&
                  scene_position_of(pr.obj[0].cx, pr.obj[0].cy) == POSITION_LEFT &&
                  scene_position_of(pr.obj[1].cx, pr.obj[1].cy) == POSITION_RIGHT,
              "relations name both objects and their positions");
}

// Values in [-1, 1] at several sizes; corners are background (objects keep a margin from the image edge).
static void test_render(void) {
    const int sizes[3][2] = {{32, 32}, {64, 64}, {17, 23}};
    int out_of_range = 0, corner_bad = 0;
    for (int k = 0; k < 3; k++) {
        int H = sizes[k][0], W = sizes[k][1];
        float *x = xmalloc(sizeof(float) * (size_t)(3 * H * W));
        for (uint64_t i = 0; i < 500; i++) {
            Scene sc;
            scene_sample(&sc, 4, i, (int)(i % 2));
            scene_render(&sc, x, H, W);
            for (int q = 0; q < 3 * H * W; q++) out_of_range += !(x[q] >= -1.0f && x[q] <= 1.0f);
            float bg[3];
            scene_background_rgb(sc.background, bg);
            for (int c = 0; c < 3; c++) {
                const float *ch = x + c * H * W;
                float want = 2.0f * bg[c] - 1.0f;
                corner_bad += fabsf(ch[0] - want) > 1e-6f || fabsf(ch[W - 1] - want) > 1e-6f ||
                              fabsf(ch[(H - 1) * W] - want) > 1e-6f || fabsf(ch[H * W - 1] - want) > 1e-6f;
            }
        }
        free(x);
    }
    tu_check(out_of_range == 0, "rendered values outside [-1, 1]: %d", out_of_range);
    tu_check(corner_bad == 0, "corners that are not background: %d", corner_bad);

    // objects of one scene keep apart: at 64x64 no pixel is touched by two of them (each rendered alone)
    enum { S = 64 };
    static float one[3 * S * S];
    static unsigned char owner[S * S];
    int multi = 0, shared = 0;
    for (uint64_t i = 0; multi < 1000; i++) {
        Scene sc;
        scene_sample(&sc, 10, i, 0);
        if (sc.n == 1) continue;
        multi++;
        memset(owner, 0, sizeof owner);
        for (int j = 0; j < sc.n; j++) {
            Scene alone = sc;
            alone.n = 1;
            alone.obj[0] = sc.obj[j];
            scene_render(&alone, one, S, S);
            float bg[3];
            scene_background_rgb(sc.background, bg);
            for (int q = 0; q < S * S; q++) {
                int touched = 0;
                for (int c = 0; c < 3; c++) touched |= fabsf(one[c * S * S + q] - (2.0f * bg[c] - 1.0f)) > 1e-6f;
                if (touched && owner[q]) shared++;
                if (touched) owner[q] = 1;
            }
        }
    }
    tu_check(shared == 0, "pixels touched by two objects in %d scenes of two or three objects: %d", multi, shared);
}

// Separable Gaussian blur of a [3, H, W] image (radius 3, edges clamped), the softness of a generated image.
static void blur(float *x, int H, int W, float sigma) {
    float k[7], sum = 0, *t = xmalloc(sizeof(float) * (size_t)(3 * H * W));
    for (int i = 0; i < 7; i++) sum += k[i] = expf(-(float)((i - 3) * (i - 3)) / (2 * sigma * sigma));
    for (int pass = 0; pass < 2; pass++) {
        const float *src = pass ? t : x;
        float *dst = pass ? x : t;
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < H; y++)
                for (int i = 0; i < W; i++) {
                    float acc = 0;
                    for (int j = -3; j <= 3; j++) {
                        int yy = pass ? y + j : y, xx = pass ? i : i + j;
                        yy = yy < 0 ? 0 : yy >= H ? H - 1 : yy;
                        xx = xx < 0 ? 0 : xx >= W ? W - 1 : xx;
                        acc += k[j + 3] / sum * src[(c * H + yy) * W + xx];
                    }
                    dst[(c * H + y) * W + i] = acc;
                }
    }
    free(t);
}

// Checker accuracy on 2000 training and 2000 held-out single-object scenes, blurred by a Gaussian of `sigma` pixels
// and with Gaussian noise of std `noise` added; at least min_shape of the shapes must be right, and 99% of colours.
static void test_checker_at(int H, float sigma, float noise, double min_shape) {
    float *x = xmalloc(sizeof(float) * (size_t)(3 * H * H)), z[4];
    int n = 0, colour_ok = 0, shape_ok = 0, per_shape[SHAPE_COUNT][2] = {{0}};
    double conf = 0;
    for (int split = 0; split < 2; split++)
        for (uint64_t i = 0, got = 0; got < 2000; i++) {
            Scene sc;
            scene_sample(&sc, 5, i, split);
            if (sc.n != 1) continue;
            got++;
            scene_render(&sc, x, H, H);
            if (sigma > 0) blur(x, H, H, sigma);
            if (noise > 0) // serial draws: thousands of small parallel fills cost more than they save
                for (int q = 0; q < 3 * H * H; q += 4) {
                    rng_normal4(z, 5, RNG_STREAM(RNG_PURPOSE_TEST, i, split), (uint64_t)q / 4);
                    for (int l = 0; l < 4; l++) x[q + l] += noise * z[l];
                }
            SceneCheck ck;
            scene_check(x, H, H, &ck);
            n++;
            colour_ok += ck.colour == sc.obj[0].colour;
            shape_ok += ck.shape == sc.obj[0].shape;
            per_shape[sc.obj[0].shape][0]++;
            per_shape[sc.obj[0].shape][1] += ck.shape == sc.obj[0].shape;
            conf += ck.shape_conf;
        }
    double ca = (double)colour_ok / n, sa = (double)shape_ok / n;
    printf("checker %dx%d blur %.1f noise %.2f: colour %.2f%%, shape %.2f%% (circle %.2f%%, square %.2f%%, "
           "triangle %.2f%%), mean shape confidence %.3f, %d scenes\n",
           H, H, sigma, noise, 100 * ca, 100 * sa, 100.0 * per_shape[0][1] / per_shape[0][0],
           100.0 * per_shape[1][1] / per_shape[1][0], 100.0 * per_shape[2][1] / per_shape[2][0], conf / n, n);
    tu_check(ca >= 0.99 && sa >= min_shape, "checker at %dx%d, blur %.1f, noise %.2f: colour %.4f (>= 0.99), shape "
             "%.4f (>= %.2f)", H, H, sigma, noise, ca, sa, min_shape);
    free(x);
}

// The evaluation helper on rendered training scenes of every kind, with their own prompts and with prompts of
// another colour or shape.
static void test_accuracy_helper(void) {
    enum { B = 400, H = 32 };
    float *x = xmalloc(sizeof(float) * (size_t)(B * 3 * H * H));
    static char own[B][SCENE_CAPTION_MAX], other[B][SCENE_CAPTION_MAX];
    const char *p_own[B], *p_colour[B];
    for (int b = 0; b < B; b++) {
        Scene sc;
        scene_sample(&sc, 6, (uint64_t)b, 0);
        scene_render(&sc, x + (size_t)b * 3 * H * H, H, H);
        snprintf(own[b], sizeof own[b], "%s", sc.caption);
        snprintf(other[b], sizeof other[b], "a %s %s", scene_colour_name((sc.obj[0].colour + 1) % COLOUR_COUNT),
                 scene_shape_name(sc.obj[0].shape));
        p_own[b] = own[b], p_colour[b] = other[b];
    }
    int cok[B], sok[B];
    double acc = scene_adherence_accuracy(x, B, H, H, p_own, cok, sok);
    double wrong = scene_adherence_accuracy(x, B, H, H, p_colour, cok, NULL);
    int colour_hits = 0;
    for (int b = 0; b < B; b++) colour_hits += cok[b];
    printf("accuracy helper on %d rendered training scenes of every kind: %.2f%% with their own prompts\n", B,
           100 * acc);
    tu_check(acc >= 0.97, "own prompts: accuracy %.4f (>= 0.97)", acc);
    tu_check(wrong <= 0.03 && colour_hits <= 0.1 * B, "prompts of another colour: accuracy %.4f, colour hits %d",
             wrong, colour_hits);
    const char *junk[2] = {"a red hexagon", NULL};
    TU_EXPECT(scene_adherence_accuracy(x, 2, H, H, junk, cok, sok) == 0.0 && !cok[0] && !sok[0] && !cok[1],
              "prompts that do not parse fail");

    SceneCheck ck;
    float bg[3 * H * H];
    for (int q = 0; q < 3 * H * H; q++) bg[q] = -0.2f;
    scene_check(bg, H, H, &ck);
    TU_EXPECT(ck.colour_conf == 0 && ck.shape_conf == 0 && ck.fg_fraction == 0,
              "an empty image has no confidence (%g %g %g)", ck.colour_conf, ck.shape_conf, ck.fg_fraction);
    free(x);
}

int main(void) {
    test_palette();
    test_determinism();
    test_splits();
    test_captions();
    test_render();
    test_checker_at(32, 0.0f, 0.0f, 0.95);
    test_checker_at(32, 0.0f, 0.1f, 0.95);
    test_checker_at(64, 0.0f, 0.0f, 0.95);
    test_checker_at(64, 0.0f, 0.1f, 0.95);
    // beyond the specification: heavier noise, and the blur of a generated image
    test_checker_at(32, 0.0f, 0.2f, 0.85);
    test_checker_at(32, 0.7f, 0.0f, 0.95);
    test_accuracy_helper();
    return tu_report();
}
