// scenes.c: sampling, rendering, caption grammar and checker of the procedural scene set (docs/DATA.md). Sampling
// and rendering use only integer Philox draws and correctly rounded float operations, so a scene's caption and
// pixels are the same on every machine.
#include "scenes.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "../core/common.h"
#include "../core/rng.h"

static const char *const COLOUR_NAMES[COLOUR_COUNT] = {"red",    "green",  "blue", "yellow",
                                                       "purple", "orange", "cyan", "white"};
static const float PALETTE[COLOUR_COUNT][3] = {
    {0.85f, 0.05f, 0.10f}, {0.05f, 0.80f, 0.10f}, {0.10f, 0.20f, 0.95f}, {0.95f, 0.95f, 0.15f},
    {0.60f, 0.00f, 0.95f}, {1.00f, 0.50f, 0.00f}, {0.00f, 0.85f, 0.90f}, {0.95f, 0.95f, 0.95f}};
static const char *const SHAPE_NAMES[SHAPE_COUNT] = {"circle", "square", "triangle"};
static const char *const SHAPE_PLURALS[SHAPE_COUNT] = {"circles", "squares", "triangles"};
static const char *const SIZE_NAMES[3] = {"small", "medium", "large"};
static const char *const POSITION_NAMES[POSITION_COUNT] = {"on the left", "on the right", "at the top",
                                                           "at the bottom", "in the middle"};
static const char *const BACKGROUND_NAMES[SCENE_BACKGROUND_COUNT] = {"black", "grey", "dark blue"};
static const float BACKGROUNDS[SCENE_BACKGROUND_COUNT][3] = {{0.0f, 0.0f, 0.0f}, {0.5f, 0.5f, 0.5f},
                                                             {0.03f, 0.05f, 0.25f}};
// "A x <relation> a y": the positions of x and y.
static const struct {
    const char *words;
    ScenePosition first, second;
} RELATIONS[4] = {{"above", POSITION_TOP, POSITION_BOTTOM},
                  {"below", POSITION_BOTTOM, POSITION_TOP},
                  {"to the left of", POSITION_LEFT, POSITION_RIGHT},
                  {"to the right of", POSITION_RIGHT, POSITION_LEFT}};

// Objects of one size have equal areas: a circle of radius r, a square of half side 0.886 r (sqrt(pi)/2) and an
// upright triangle whose base and height are 2 h with h = 1.253 r (sqrt(pi/2)).
static const float SIZE_RADIUS[3] = {0.11f, 0.17f, 0.23f};
static const float SHAPE_HALF[SHAPE_COUNT] = {1.0f, 0.886227f, 1.253314f};

const char *scene_colour_name(SceneColour c) {
    CHECK((unsigned)c < COLOUR_COUNT, "", "scene colour %d out of range", (int)c);
    return COLOUR_NAMES[c];
}
const char *scene_shape_name(SceneShape s) {
    CHECK((unsigned)s < SHAPE_COUNT, "", "scene shape %d out of range", (int)s);
    return SHAPE_NAMES[s];
}
void scene_colour_rgb(SceneColour c, float rgb[3]) {
    CHECK((unsigned)c < COLOUR_COUNT, "", "scene colour %d out of range", (int)c);
    memcpy(rgb, PALETTE[c], sizeof PALETTE[c]);
}
void scene_background_rgb(int background, float rgb[3]) {
    CHECK((unsigned)background < SCENE_BACKGROUND_COUNT, "", "scene background %d out of range", background);
    memcpy(rgb, BACKGROUNDS[background], sizeof BACKGROUNDS[background]);
}

int scene_is_heldout(SceneColour c, SceneShape s, ScenePosition p) {
    return (int)c == (5 * (int)s + (int)p) % COLOUR_COUNT;
}

ScenePosition scene_position_of(float cx, float cy) {
    float dx = cx - 0.5f, dy = cy - 0.5f;
    if (fabsf(dx) < 0.1f && fabsf(dy) < 0.1f) return POSITION_MIDDLE;
    if (fabsf(dx) >= fabsf(dy)) return dx < 0 ? POSITION_LEFT : POSITION_RIGHT;
    return dy < 0 ? POSITION_TOP : POSITION_BOTTOM;
}

void scene_position_centre(ScenePosition p, float *cx, float *cy) {
    static const float C[POSITION_COUNT][2] = {{0.25f, 0.5f}, {0.75f, 0.5f}, {0.5f, 0.25f}, {0.5f, 0.75f},
                                               {0.5f, 0.5f}};
    CHECK((unsigned)p < POSITION_COUNT, "", "scene position %d out of range", (int)p);
    *cx = C[p][0];
    *cy = C[p][1];
}

static float object_half(const SceneObject *o) { return SIZE_RADIUS[o->size] * SHAPE_HALF[o->shape]; }

// ---------------------------------------------------------------------------------------------------------------
// sampling

typedef struct {
    uint64_t seed, stream, k; // k: the next draw; each draw uses its own Philox block
} Draw;

static int draw_int(Draw *d, int n) { return (int)rng_randint(d->seed, d->stream, d->k++, 0, n - 1); }
static float draw_unit(Draw *d) { return rng_uniform_at(d->seed, d->stream, 4 * d->k++); }

// A colour and shape allowed in `split` at every one of the positions (training: no held-out combination;
// held-out: only held-out ones), drawn uniformly; `avoid` excludes one colour (-1: none).
static void draw_kind(Draw *d, int split, const ScenePosition *pos, int npos, int avoid, SceneObject *o) {
    int cand[COLOUR_COUNT * SHAPE_COUNT], n = 0;
    for (int c = 0; c < COLOUR_COUNT; c++)
        for (int s = 0; s < SHAPE_COUNT; s++) {
            int ok = c != avoid;
            for (int j = 0; j < npos; j++) ok = ok && scene_is_heldout(c, s, pos[j]) == split;
            if (ok) cand[n++] = c * SHAPE_COUNT + s;
        }
    CHECK(n > 0, "", "no colour and shape fits split %d", split);
    int k = cand[draw_int(d, n)];
    o->colour = (SceneColour)(k / SHAPE_COUNT);
    o->shape = (SceneShape)(k % SHAPE_COUNT);
}

// Centre of o (shape and size set) in region p: `along` in [0, 1] moves it away from the image edge it sits at,
// `across` in [-1, 1] along that edge; in the middle both jitter by up to 0.05. The object stays inside the image
// and scene_position_of(centre) == p.
static void place(SceneObject *o, ScenePosition p, float along, float across) {
    float edge = object_half(o) + 0.02f + 0.04f * along, side = 0.5f + 0.08f * across;
    switch (p) {
    case POSITION_LEFT: o->cx = edge, o->cy = side; break;
    case POSITION_RIGHT: o->cx = 1.0f - edge, o->cy = side; break;
    case POSITION_TOP: o->cx = side, o->cy = edge; break;
    case POSITION_BOTTOM: o->cx = side, o->cy = 1.0f - edge; break;
    default: o->cx = 0.5f + 0.05f * (2.0f * along - 1.0f), o->cy = 0.5f + 0.05f * across; break;
    }
}

static void caption_add(Scene *s, const char *fmt, ...) DT_PRINTF(2, 3);
static void caption_add(Scene *s, const char *fmt, ...) {
    size_t len = strlen(s->caption);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(s->caption + len, SCENE_CAPTION_MAX - len, fmt, ap);
    va_end(ap);
    CHECK(n >= 0 && (size_t)n < SCENE_CAPTION_MAX - len, "", "scene caption longer than %d", SCENE_CAPTION_MAX);
}

// "[size ]colour shape[s]", after "a " or "an " (before a vowel) when article is set
static void caption_noun(Scene *s, const SceneObject *o, int article, int with_size, int plural) {
    const char *first = with_size ? SIZE_NAMES[o->size] : COLOUR_NAMES[o->colour];
    if (article) caption_add(s, "%s ", strchr("aeiou", first[0]) ? "an" : "a");
    if (with_size) caption_add(s, "%s ", SIZE_NAMES[o->size]);
    caption_add(s, "%s %s", COLOUR_NAMES[o->colour], plural ? SHAPE_PLURALS[o->shape] : SHAPE_NAMES[o->shape]);
}

static void sample_single(Scene *s, Draw *d, int split) {
    SceneObject *o = &s->obj[0];
    ScenePosition p = (ScenePosition)draw_int(d, POSITION_COUNT);
    draw_kind(d, split, &p, 1, -1, o);
    o->size = draw_int(d, 3);
    float along = draw_unit(d), across = 2.0f * draw_unit(d) - 1.0f;
    place(o, p, along, across);
    s->n = 1;
    int with_size = draw_int(d, 2), with_position = draw_int(d, 5) < 3;
    caption_noun(s, o, 1, with_size, 0);
    if (with_position || split) caption_add(s, " %s", POSITION_NAMES[p]); // held-out captions name the combination
}

// n = 2: left and right or top and bottom, small or medium; n = 3: a centred row of small objects.
static void sample_count(Scene *s, Draw *d, int split, int n) {
    static const ScenePosition ROWS[2][3] = {{POSITION_LEFT, POSITION_RIGHT, POSITION_MIDDLE},
                                             {POSITION_TOP, POSITION_BOTTOM, POSITION_MIDDLE}};
    int vertical = draw_int(d, 2);
    const ScenePosition *pos = ROWS[vertical];
    draw_kind(d, split, pos, n, -1, &s->obj[0]);
    s->obj[0].size = n == 2 ? draw_int(d, 2) : 0;
    float across = 2.0f * draw_unit(d) - 1.0f;
    for (int j = 0; j < n; j++) {
        SceneObject *o = &s->obj[j];
        *o = s->obj[0];
        if (n == 2) {
            float along = draw_unit(d);
            place(o, pos[j], along, 2.0f * draw_unit(d) - 1.0f);
            continue;
        }
        place(o, pos[j], 0.0f, across); // a straight row through the image centre, shifted across by 0.08 at most
        float *side = vertical ? &o->cx : &o->cy, *run = vertical ? &o->cy : &o->cx;
        *side = 0.5f + 0.08f * across;
        if (pos[j] == POSITION_MIDDLE) *run = 0.5f;
    }
    s->n = n;
    caption_add(s, "%s ", n == 2 ? "two" : "three");
    caption_noun(s, &s->obj[0], 0, draw_int(d, 2), 1);
}

static void sample_relation(Scene *s, Draw *d, int split) {
    int r = draw_int(d, 4);
    ScenePosition p[2] = {RELATIONS[r].first, RELATIONS[r].second};
    for (int j = 0; j < 2; j++) {
        SceneObject *o = &s->obj[j];
        draw_kind(d, split, &p[j], 1, j ? (int)s->obj[0].colour : -1, o);
        o->size = draw_int(d, 2);
        float along = draw_unit(d), across = 2.0f * draw_unit(d) - 1.0f;
        place(o, p[j], along, across);
    }
    s->n = 2;
    caption_noun(s, &s->obj[0], 1, 0, 0);
    caption_add(s, " %s ", RELATIONS[r].words);
    caption_noun(s, &s->obj[1], 1, 0, 0);
}

void scene_sample(Scene *s, uint64_t seed, uint64_t index, int split) {
    CHECK(split == 0 || split == 1, "split 0 is training, 1 held-out", "scene_sample: split %d", split);
    memset(s, 0, sizeof *s);
    uint64_t step = (1ull << 27) | ((index >> 28) << 1) | (uint64_t)split;
    Draw d = {seed, RNG_STREAM(RNG_PURPOSE_DATA, index, step), 0};
    s->background = draw_int(&d, SCENE_BACKGROUND_COUNT);
    // training: 70% one object, 10% two alike, 5% three alike, 15% two related; held-out: one object
    int kind = split ? 0 : draw_int(&d, 20);
    if (kind < 14)
        sample_single(s, &d, split);
    else if (kind < 17)
        sample_count(s, &d, split, kind < 16 ? 2 : 3);
    else
        sample_relation(s, &d, split);
    if (draw_int(&d, 2)) caption_add(s, " on a %s background", BACKGROUND_NAMES[s->background]);
}

// ---------------------------------------------------------------------------------------------------------------
// rendering

static int object_contains(const SceneObject *o, float h, float px, float py) {
    float dx = px - o->cx, dy = py - o->cy;
    switch (o->shape) {
    case SHAPE_CIRCLE: return dx * dx + dy * dy <= h * h;
    case SHAPE_SQUARE: return fabsf(dx) <= h && fabsf(dy) <= h;
    default: return dy <= h && fabsf(dx) <= 0.5f * (dy + h); // apex (cx, cy - h), base y = cy + h, half base h
    }
}

void scene_render(const Scene *s, float *chw, int H, int W) {
    CHECK(H > 0 && W > 0, "", "scene_render: empty image %dx%d", H, W);
    CHECK(s->n >= 1 && s->n <= SCENE_MAX_OBJECTS, "render sampled scenes", "scene_render: %d objects", s->n);
    CHECK((unsigned)s->background < SCENE_BACKGROUND_COUNT, "render sampled scenes", "scene_render: background %d",
          s->background);
    float half[SCENE_MAX_OBJECTS];
    for (int j = 0; j < s->n; j++) {
        const SceneObject *o = &s->obj[j];
        CHECK((unsigned)o->colour < COLOUR_COUNT && (unsigned)o->shape < SHAPE_COUNT && o->size >= 0 && o->size < 3,
              "render sampled scenes", "scene_render: object %d has no colour, shape or size", j);
        half[j] = object_half(o);
    }
    const int64_t HW = (int64_t)H * W;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            float acc[3] = {0, 0, 0};
            for (int sy = 0; sy < 4; sy++)
                for (int sx = 0; sx < 4; sx++) {
                    float px = ((float)x + 0.125f + 0.25f * (float)sx) / (float)W;
                    float py = ((float)y + 0.125f + 0.25f * (float)sy) / (float)H;
                    const float *col = BACKGROUNDS[s->background];
                    for (int j = 0; j < s->n; j++)
                        if (object_contains(&s->obj[j], half[j], px, py)) col = PALETTE[s->obj[j].colour];
                    for (int c = 0; c < 3; c++) acc[c] += col[c];
                }
            for (int c = 0; c < 3; c++) chw[c * HW + (int64_t)y * W + x] = acc[c] * (2.0f / 16.0f) - 1.0f;
        }
}

// ---------------------------------------------------------------------------------------------------------------
// caption grammar

enum { PARSE_MAX_WORDS = 32, PARSE_WORD_MAX = 16 };

typedef struct {
    char w[PARSE_MAX_WORDS][PARSE_WORD_MAX];
    int n, i; // word count, next word
} Words;

// Lower-cased whitespace-separated words; 0 when there are too many or one is longer than any in the vocabulary.
static int words_split(const char *s, Words *ws) {
    ws->n = ws->i = 0;
    while (*s) {
        while (isspace((unsigned char)*s)) s++;
        if (!*s) break;
        if (ws->n == PARSE_MAX_WORDS) return 0;
        int len = 0;
        for (; *s && !isspace((unsigned char)*s); s++) {
            if (len == PARSE_WORD_MAX - 1) return 0;
            ws->w[ws->n][len++] = (char)tolower((unsigned char)*s);
        }
        ws->w[ws->n++][len] = 0;
    }
    return 1;
}

// Consumes the words of `phrase` (single spaces) when they come next; otherwise consumes nothing.
static int words_accept(Words *ws, const char *phrase) {
    int i = ws->i;
    while (*phrase) {
        size_t len = strcspn(phrase, " ");
        if (i == ws->n || strlen(ws->w[i]) != len || memcmp(ws->w[i], phrase, len) != 0) return 0;
        i++;
        phrase += len + (phrase[len] == ' ');
    }
    ws->i = i;
    return 1;
}

static int words_article(Words *ws) { return words_accept(ws, "a") || words_accept(ws, "an"); }

// Index of the first of n phrases that comes next (consumed), or -1.
static int words_choose(Words *ws, const char *const *phrases, int n) {
    for (int k = 0; k < n; k++)
        if (words_accept(ws, phrases[k])) return k;
    return -1;
}

// "[size] colour shape" (plural shapes when plural); 0 when the words do not follow.
static int parse_noun(Words *ws, int plural, SceneObject *o) {
    o->size = words_choose(ws, SIZE_NAMES, 3);
    int c = words_choose(ws, COLOUR_NAMES, COLOUR_COUNT);
    int s = words_choose(ws, plural ? SHAPE_PLURALS : SHAPE_NAMES, SHAPE_COUNT);
    if (c < 0 || s < 0) return 0;
    o->colour = (SceneColour)c;
    o->shape = (SceneShape)s;
    o->cx = o->cy = -1.0f;
    return 1;
}

int scene_parse(const char *caption, Scene *out) {
    Words ws;
    memset(out, 0, sizeof *out);
    out->background = -1;
    if (!words_split(caption, &ws)) return 0;
    if (words_article(&ws)) {
        if (!parse_noun(&ws, 0, &out->obj[0])) return 0;
        out->n = 1;
        int p = words_choose(&ws, POSITION_NAMES, POSITION_COUNT);
        if (p >= 0) scene_position_centre((ScenePosition)p, &out->obj[0].cx, &out->obj[0].cy);
        for (int r = 0; p < 0 && r < 4; r++) {
            if (!words_accept(&ws, RELATIONS[r].words)) continue;
            if (!words_article(&ws) || !parse_noun(&ws, 0, &out->obj[1])) return 0;
            out->n = 2;
            scene_position_centre(RELATIONS[r].first, &out->obj[0].cx, &out->obj[0].cy);
            scene_position_centre(RELATIONS[r].second, &out->obj[1].cx, &out->obj[1].cy);
            break;
        }
    } else {
        static const char *const COUNTS[2] = {"two", "three"};
        int k = words_choose(&ws, COUNTS, 2);
        if (k < 0 || !parse_noun(&ws, 1, &out->obj[0])) return 0;
        out->n = k + 2;
        for (int j = 1; j < out->n; j++) out->obj[j] = out->obj[0];
    }
    if (words_accept(&ws, "on a")) {
        out->background = words_choose(&ws, BACKGROUND_NAMES, SCENE_BACKGROUND_COUNT);
        if (out->background < 0 || !words_accept(&ws, "background")) return 0;
    }
    if (ws.i != ws.n) return 0;
    snprintf(out->caption, sizeof out->caption, "%s", caption);
    return 1;
}

// ---------------------------------------------------------------------------------------------------------------
// checker

#define CHECK_FG_DIST 0.2f   // a pixel is foreground when this far from the background colour (u units)
#define CHECK_VOTE_DIST 0.3f // a foreground pixel votes for its nearest palette colour when this near it
#define CHECK_RESIDUAL 0.4f  // a pixel is a blend of background and colour c when this near that segment
#define CHECK_SOFT 0.2f      // blend fractions below this count as 0, above 1 - this as 1 (noise on flat areas)

typedef struct {
    int H, W;
    float *u;   // [3, H, W], u = x/2 + 1/2
    float bg[3];
    int votes[COLOUR_COUNT], voted, fg;
} Checker;

static int float_cmp(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

// u, the background (per-channel median of the border pixels) and the colour votes of the foreground pixels.
static void checker_prepare(Checker *k, const float *chw, int H, int W) {
    CHECK(H > 0 && W > 0, "", "scene_check: empty image %dx%d", H, W);
    memset(k, 0, sizeof *k);
    k->H = H, k->W = W;
    int64_t HW = (int64_t)H * W;
    k->u = xmalloc(sizeof(float) * (size_t)(3 * HW));
    for (int64_t i = 0; i < 3 * HW; i++) k->u[i] = 0.5f * chw[i] + 0.5f;
    float *border = xmalloc(sizeof(float) * (size_t)HW);
    for (int c = 0; c < 3; c++) {
        int64_t n = 0;
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                if (y == 0 || y == H - 1 || x == 0 || x == W - 1) border[n++] = k->u[c * HW + (int64_t)y * W + x];
        qsort(border, (size_t)n, sizeof(float), float_cmp);
        k->bg[c] = n % 2 ? border[n / 2] : 0.5f * (border[n / 2 - 1] + border[n / 2]);
    }
    free(border);
    for (int64_t p = 0; p < HW; p++) {
        float v[3], dbg = 0;
        for (int c = 0; c < 3; c++) v[c] = k->u[c * HW + p], dbg += (v[c] - k->bg[c]) * (v[c] - k->bg[c]);
        if (dbg <= CHECK_FG_DIST * CHECK_FG_DIST) continue;
        k->fg++;
        int best = 0;
        float bd = INFINITY;
        for (int j = 0; j < COLOUR_COUNT; j++) {
            float d = 0;
            for (int c = 0; c < 3; c++) d += (v[c] - PALETTE[j][c]) * (v[c] - PALETTE[j][c]);
            if (d < bd) bd = d, best = j;
        }
        if (bd < CHECK_VOTE_DIST * CHECK_VOTE_DIST) k->votes[best]++, k->voted++;
    }
}

// Fill ratio of the largest connected region of colour c. Each pixel's coverage a is its position along the
// segment from the background to c, mapped from [CHECK_SOFT, 1 - CHECK_SOFT] to [0, 1], or 0 when the pixel lies
// farther than CHECK_RESIDUAL from that segment or nearer to another palette colour. The region is the largest
// 8-connected set of pixels with a >= 1/2 plus the pixels next to it; fill = sum a / (width * height), where width
// (height) sums the largest coverage of each column (row), which measures anti-aliased extents to a fraction of a
// pixel. Returns 0 when c has no region.
static float checker_fill(const Checker *k, SceneColour c) {
    const int H = k->H, W = k->W;
    const int64_t HW = (int64_t)H * W;
    float cb[3], n2 = 0;
    for (int j = 0; j < 3; j++) cb[j] = PALETTE[c][j] - k->bg[j], n2 += cb[j] * cb[j];
    if (n2 < CHECK_FG_DIST * CHECK_FG_DIST) return 0.0f; // the background itself has that colour
    float *a = xmalloc(sizeof(float) * (size_t)HW);
    int *label = xcalloc((size_t)HW, sizeof(int)), *stack = xmalloc(sizeof(int) * (size_t)HW);
    for (int64_t p = 0; p < HW; p++) {
        float v[3], t = 0, r2 = 0;
        for (int j = 0; j < 3; j++) v[j] = k->u[j * HW + p] - k->bg[j], t += v[j] * cb[j];
        t = t / n2 < 0 ? 0.0f : t / n2 > 1 ? 1.0f : t / n2;
        for (int j = 0; j < 3; j++) r2 += (v[j] - t * cb[j]) * (v[j] - t * cb[j]);
        int blend = r2 <= CHECK_RESIDUAL * CHECK_RESIDUAL;
        for (int o = 0; o < COLOUR_COUNT && blend; o++) {
            float d2 = 0;
            for (int j = 0; j < 3; j++) {
                float e = k->u[j * HW + p] - PALETTE[o][j];
                d2 += e * e;
            }
            blend = o == (int)c || d2 >= r2;
        }
        t = (t - CHECK_SOFT) / (1.0f - 2.0f * CHECK_SOFT);
        a[p] = !blend ? 0.0f : t < 0 ? 0.0f : t > 1 ? 1.0f : t;
    }
    int best = 0, nlabel = 0;
    float best_mass = 0;
    for (int64_t p0 = 0; p0 < HW; p0++) {
        if (a[p0] < 0.5f || label[p0]) continue;
        int top = 0;
        float mass = 0;
        label[p0] = ++nlabel;
        stack[top++] = (int)p0;
        while (top) {
            int p = stack[--top], y = p / W, x = p % W;
            mass += a[p];
            for (int dy = -1; dy <= 1; dy++)
                for (int dx = -1; dx <= 1; dx++) {
                    int yy = y + dy, xx = x + dx;
                    if (yy < 0 || yy >= H || xx < 0 || xx >= W) continue;
                    int q = yy * W + xx;
                    if (a[q] >= 0.5f && !label[q]) label[q] = nlabel, stack[top++] = q;
                }
        }
        if (mass > best_mass) best_mass = mass, best = nlabel;
    }
    float fill = 0;
    if (best) {
        float *colmax = xcalloc((size_t)W, sizeof(float)), *rowmax = xcalloc((size_t)H, sizeof(float)), area = 0;
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                int p = y * W + x, near = 0;
                if (a[p] <= 0 || (label[p] && label[p] != best)) continue;
                for (int dy = -1; dy <= 1 && !near; dy++)
                    for (int dx = -1; dx <= 1 && !near; dx++) {
                        int yy = y + dy, xx = x + dx;
                        near = yy >= 0 && yy < H && xx >= 0 && xx < W && label[yy * W + xx] == best;
                    }
                if (!near) continue;
                area += a[p];
                if (a[p] > colmax[x]) colmax[x] = a[p];
                if (a[p] > rowmax[y]) rowmax[y] = a[p];
            }
        float w = 0, h = 0;
        for (int x = 0; x < W; x++) w += colmax[x];
        for (int y = 0; y < H; y++) h += rowmax[y];
        fill = area / (w * h);
        free(colmax);
        free(rowmax);
    }
    free(a);
    free(label);
    free(stack);
    return fill;
}

// Class of a fill ratio and its confidence: 1 at or beyond the class's typical ratio, 0 at the boundary (midway
// between neighbouring typical ratios). A triangle's sharp corners lose coverage on a pixel grid, so its typical
// ratio at 32x32 is 0.56 rather than 1/2; circles (pi/4) and squares (1) keep theirs.
static void checker_classify(float fill, SceneShape *shape, float *conf) {
    const float tri = 0.56f, circ = 0.785398f, sq = 1.0f, t_tc = 0.5f * (tri + circ), t_cs = 0.5f * (circ + sq);
    if (!(fill > 0)) { // no region (or a NaN image)
        *shape = SHAPE_CIRCLE, *conf = 0.0f;
    } else if (fill < t_tc) {
        *shape = SHAPE_TRIANGLE, *conf = fill <= tri ? 1.0f : (t_tc - fill) / (t_tc - tri);
    } else if (fill < t_cs) {
        *shape = SHAPE_CIRCLE, *conf = fill < circ ? (fill - t_tc) / (circ - t_tc) : (t_cs - fill) / (t_cs - circ);
    } else {
        *shape = SHAPE_SQUARE, *conf = fill >= sq ? 1.0f : (fill - t_cs) / (sq - t_cs);
    }
}

static void checker_run(const float *chw, int H, int W, int colour, SceneCheck *out) {
    Checker k;
    checker_prepare(&k, chw, H, W);
    int c = colour;
    if (c < 0) {
        c = 0;
        for (int j = 1; j < COLOUR_COUNT; j++)
            if (k.votes[j] > k.votes[c]) c = j;
    }
    out->colour = (SceneColour)c;
    out->colour_conf = k.voted ? (float)k.votes[c] / (float)k.voted : 0.0f;
    out->fg_fraction = (float)k.fg / ((float)H * (float)W);
    checker_classify(checker_fill(&k, (SceneColour)c), &out->shape, &out->shape_conf);
    free(k.u);
}

void scene_check(const float *chw, int H, int W, SceneCheck *out) { checker_run(chw, H, W, -1, out); }

void scene_check_colour(const float *chw, int H, int W, SceneColour c, SceneCheck *out) {
    CHECK((unsigned)c < COLOUR_COUNT, "", "scene colour %d out of range", (int)c);
    checker_run(chw, H, W, (int)c, out);
}
