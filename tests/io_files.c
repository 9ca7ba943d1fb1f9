// io_files.c: the small file formats around a run: prompt files (good ones, and each kind of bad one, which must
// end the program with exit code 2 and one "drtune: error:" line naming file and line), PNG images (exact round
// trips, diffusers' rounding, grids), reward plots, metrics.jsonl (exact round trip, torn last line, resume) and
// the progress display.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/core/common.h"
#include "../src/io/plot.h"
#include "../src/io/png.h"
#include "../src/io/prompts.h"
#include "../src/io/utf8.h"
#include "../src/train/metrics.h"
#include "testutil.h"

static void append_text(const char *path, const char *text) {
    FILE *f = fopen(path, "ab");
    if (!f) exit(1);
    fputs(text, f);
    fclose(f);
}

// ---------------------------------------------------------------------------------------------------------------
// prompts

static void read_prompts(const void *path) { prompts_read(path, NULL); }

static void test_prompts(void) {
    static char good[6000];
    size_t n = 0;
    n += (size_t)sprintf(good + n, "\xEF\xBB\xBF# animals\r\n");
    n += (size_t)sprintf(good + n, "  a cat  \r\n\r\n");
    n += (size_t)sprintf(good + n, "\t# indented comment\n");
    n += (size_t)sprintf(good + n, "une pomme \xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x90\x88\n");
    n += (size_t)sprintf(good + n, "   \n");
    n += (size_t)sprintf(good + n, "a dog # not a comment");
    tu_write_bytes(tu_path("good.txt"), good, n);
    int count = 0;
    char **p = prompts_read(tu_path("good.txt"), &count);
    TU_EXPECT(count == 3 && p[3] == NULL, "count %d", count);
    TU_EXPECT(count == 3 && !strcmp(p[0], "a cat") &&
                  !strcmp(p[1], "une pomme \xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x90\x88") &&
                  !strcmp(p[2], "a dog # not a comment"),
              "prompts '%s' '%s' '%s'", p[0], p[1], p[2]);
    prompts_free(p);

    // a line of exactly PROMPTS_LINE_MAX bytes is accepted, one more is not
    static char longest[PROMPTS_LINE_MAX + 8];
    memset(longest, 'x', PROMPTS_LINE_MAX);
    longest[PROMPTS_LINE_MAX] = '\n';
    tu_write_bytes(tu_path("longest.txt"), longest, PROMPTS_LINE_MAX + 1);
    p = prompts_read(tu_path("longest.txt"), &count);
    TU_EXPECT(count == 1 && strlen(p[0]) == PROMPTS_LINE_MAX, "longest line");
    prompts_free(p);
    static char too_long[PROMPTS_LINE_MAX + 16];
    n = (size_t)sprintf(too_long, "ok\n");
    memset(too_long + n, 'y', PROMPTS_LINE_MAX + 1);
    tu_write_bytes(tu_path("long.txt"), too_long, n + PROMPTS_LINE_MAX + 1);
    TU_EXPECT_USER_ERROR(read_prompts, tu_path("long.txt"), "long.txt:2: prompt of 4097 bytes (at most 4096)");

    tu_write_bytes(tu_path("nul.txt"), "a\nb\nc\0d\n", 8);
    TU_EXPECT_USER_ERROR(read_prompts, tu_path("nul.txt"), "nul.txt:3: NUL byte");
    tu_write_bytes(tu_path("empty.txt"), "", 0);
    TU_EXPECT_USER_ERROR(read_prompts, tu_path("empty.txt"), "empty.txt' is empty");
    tu_write_text(tu_path("blank.txt"), "# only\n\n   \n#comments\n");
    TU_EXPECT_USER_ERROR(read_prompts, tu_path("blank.txt"), "has no prompts");
    TU_EXPECT_USER_ERROR(read_prompts, tu_path("missing.txt"), "cannot open");
    static const struct {
        const char *bytes, *name;
    } bad[] = {
        {"ok\nbad \xC0\x80 overlong\n", "overlong NUL"},      {"ok\n\xE0\x80\xAF overlong slash\n", "overlong 3"},
        {"ok\nsurrogate \xED\xA0\x80\n", "surrogate"},        {"ok\nbeyond \xF4\x90\x80\x80\n", "above U+10FFFF"},
        {"ok\nstray \x80 continuation\n", "continuation"},    {"ok\nlead \xF5\x80\x80\x80\n", "F5 lead"},
        {"ok\ncut \xE2\x82\n", "truncated at line end"},       {"ok\ncut at the end \xE2\x82", "truncated at EOF"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tu_write_text(tu_path("utf8.txt"), bad[i].bytes);
        TU_EXPECT_USER_ERROR(read_prompts, tu_path("utf8.txt"), "utf8.txt:2: invalid UTF-8");
    }
    TU_EXPECT(utf8_valid_prefix("ab\xC3\xA9\xC3", 5) == 4, "prefix stops before a cut sequence");
    TU_EXPECT(utf8_valid_prefix("\xF4\x8F\xBF\xBF", 4) == 4, "U+10FFFF is valid");
    TU_EXPECT(utf8_valid_prefix("\xEF\xBF\xBF", 3) == 3, "U+FFFF is valid");
}

// ---------------------------------------------------------------------------------------------------------------
// PNG

static void test_quantize(void) {
    TU_EXPECT(pngio_quantize(-1.0f) == 0 && pngio_quantize(1.0f) == 255 && pngio_quantize(0.0f) == 128, "ends, middle");
    TU_EXPECT(pngio_quantize(-7.0f) == 0 && pngio_quantize(3.0f) == 255 && pngio_quantize(NAN) == 0, "clamped, NaN");
    // inputs whose u * 255 lands exactly on k + 0.5 must round to the even neighbour, as numpy does
    int ties = 0, wrong = 0;
    for (int k = 0; k < 255; k++) {
        float x = 2.0f * ((float)k + 0.5f) / 255.0f - 1.0f;
        for (int i = 0; i < 64; i++) x = nextafterf(x, -2.0f);
        for (int i = 0; i < 128; i++, x = nextafterf(x, 2.0f)) {
            float u = x / 2.0f + 0.5f, v = u * 255.0f;
            if (v != (float)k + 0.5f) continue;
            ties++;
            wrong += pngio_quantize(x) != (k % 2 == 0 ? k : k + 1);
        }
    }
    TU_EXPECT(ties > 10 && wrong == 0, "%d exact ties, %d rounded away from even", ties, wrong);
}

static void write_png(const void *path) {
    float img[3 * 2 * 2] = {0};
    pngio_write(path, img, 2, 2);
}
static void read_png(const void *path) {
    int h, w;
    pngio_read(path, &h, &w);
}

static void test_png(void) {
    const int H = 13, W = 17;
    float *img = malloc(sizeof(float) * 3 * (size_t)H * (size_t)W);
    uint32_t s = 12345;
    for (int i = 0; i < 3 * H * W; i++) {
        s = s * 1664525u + 1013904223u;
        img[i] = ((float)(s >> 8) / 16777216.0f) * 2.6f - 1.3f; // some values outside [-1, 1]
    }
    img[5] = NAN;
    pngio_write(tu_path("a.png"), img, H, W);
    int h = 0, w = 0;
    float *back = pngio_read(tu_path("a.png"), &h, &w);
    TU_EXPECT(h == H && w == W, "size %d x %d", h, w);
    int diff = 0;
    for (int i = 0; i < 3 * H * W && h == H && w == W; i++)
        diff += back[i] != (float)pngio_quantize(img[i]) / 255.0f * 2.0f - 1.0f;
    TU_EXPECT(diff == 0, "%d values differ after the round trip", diff);
    // the image read back writes the same file again
    pngio_write(tu_path("b.png"), back, h, w);
    size_t na, nb;
    char *fa = tu_read_all(tu_path("a.png"), &na), *fb = tu_read_all(tu_path("b.png"), &nb);
    TU_EXPECT(fa && fb && na == nb && !memcmp(fa, fb, na) && !memcmp(fa, "\x89PNG\r\n\x1a\n", 8), "files differ");
    free(fa);
    free(fb);
    free(back);
    free(img);

    // a grid of 5 images of 4 x 6 in 3 columns: 2 rows, 2-pixel white gaps, a white empty cell
    const int n = 5, gh = 4, gw = 6;
    float *imgs = malloc(sizeof(float) * (size_t)n * 3 * gh * gw);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < 3 * gh * gw; j++) imgs[i * 3 * gh * gw + j] = -0.9f + 0.35f * (float)i + 0.001f * (float)j;
    pngio_write_grid(tu_path("grid.png"), imgs, n, gh, gw, 3);
    float *g = pngio_read(tu_path("grid.png"), &h, &w);
    TU_EXPECT(h == 2 * gh + 2 && w == 3 * gw + 2 * 2, "grid size %d x %d", h, w);
    if (h == 2 * gh + 2 && w == 3 * gw + 4) {
        size_t plane = (size_t)h * (size_t)w;
        int bad = 0;
        for (int i = 0; i < n; i++)
            for (int c = 0; c < 3; c++)
                for (int y = 0; y < gh; y++)
                    for (int x = 0; x < gw; x++) {
                        int gy = (i / 3) * (gh + 2) + y, gx = (i % 3) * (gw + 2) + x;
                        float want = (float)pngio_quantize(imgs[(i * 3 + c) * gh * gw + y * gw + x]) / 255.0f * 2 - 1;
                        bad += g[(size_t)c * plane + (size_t)gy * (size_t)w + (size_t)gx] != want;
                    }
        TU_EXPECT(bad == 0, "%d grid pixels differ", bad);
        TU_EXPECT(g[(size_t)0 * w + gw] == 1.0f && g[(size_t)0 * w + gw + 1] == 1.0f && g[(size_t)gh * w] == 1.0f,
                  "gaps are white");
        TU_EXPECT(g[(size_t)(gh + 2) * w + 2 * (gw + 2)] == 1.0f &&
                      g[plane * 2 + (size_t)(h - 1) * w + (w - 1)] == 1.0f,
                  "the empty cell is white");
    }
    free(g);
    pngio_write_grid(tu_path("auto.png"), imgs, n, gh, gw, 0);
    g = pngio_read(tu_path("auto.png"), &h, &w);
    TU_EXPECT(h == 2 * gh + 2 && w == 3 * gw + 4, "about square: 3 columns for 5 images, got %d x %d", h, w);
    free(g);
    free(imgs);

    TU_EXPECT_USER_ERROR(write_png, tu_path("no/such/dir/x.png"), "cannot write");
    TU_EXPECT_USER_ERROR(write_png, "", "empty PNG output path");
    tu_write_text(tu_path("fake.png"), "not a png at all");
    TU_EXPECT_USER_ERROR(read_png, tu_path("fake.png"), "is not a readable PNG");
}

// ---------------------------------------------------------------------------------------------------------------
// plots

static void test_plot(void) {
    enum { N = 120 };
    double x[N], a[N], b[N], c[N];
    for (int i = 0; i < N; i++) {
        x[i] = i + 1;
        a[i] = 0.1 * log(1.0 + i);
        b[i] = (i > 30 && i < 40) || i == 80 ? NAN : -0.02 + 0.001 * i;
        c[i] = 0.25;
    }
    PlotSeries series[] = {{"reward_mean", x, a, N}, {"symmetry", x, b, N}, {"constant", NULL, c, N}};
    PlotOptions opt = {"Reward vs iteration", "iteration", "reward", 0, 0};
    plot_write_png(tu_path("plot.png"), &opt, series, 3);
    int h = 0, w = 0;
    float *img = pngio_read(tu_path("plot.png"), &h, &w);
    TU_EXPECT(h == 480 && w == 800, "plot size %d x %d", h, w);
    size_t plane = (size_t)h * (size_t)w, ink = 0, blue = 0;
    for (size_t p = 0; p < plane; p++) {
        int r = (int)lroundf((img[p] + 1) * 127.5f), gr = (int)lroundf((img[plane + p] + 1) * 127.5f),
            bl = (int)lroundf((img[2 * plane + p] + 1) * 127.5f);
        ink += r != 255 || gr != 255 || bl != 255;
        blue += r == 31 && gr == 119 && bl == 180;
    }
    TU_EXPECT(ink > plane / 50 && blue > 200, "plot looks blank: %zu inked pixels, %zu of the first series", ink, blue);
    free(img);

    // a constant series alone, a single point, nothing finite, and no series: no division by zero, a valid image
    PlotOptions small = {"constant", NULL, NULL, 320, 200};
    plot_write_png(tu_path("const.png"), &small, &series[2], 1);
    double one = 3.0, nan_only[3] = {NAN, NAN, NAN};
    PlotSeries single = {"one point", &one, &one, 1}, empty = {"nothing", NULL, nan_only, 3};
    plot_write_png(tu_path("single.png"), &small, &single, 1);
    plot_write_png(tu_path("nan.png"), &small, &empty, 1);
    plot_write_png(tu_path("none.png"), &small, NULL, 0);
    const char *names[] = {"const.png", "single.png", "nan.png", "none.png"};
    for (int i = 0; i < 4; i++) {
        img = pngio_read(tu_path(names[i]), &h, &w);
        TU_EXPECT(h == 200 && w == 320, "%s: %d x %d", names[i], h, w);
        free(img);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// metrics

static MetricsRow make_row(int it) {
    MetricsRow r;
    memset(&r, 0, sizeof r);
    r.iteration = it;
    r.reward_mean = 0.1 + 0.2 * it; // digits that need 17 significant figures
    r.reward_std = 1.0 / 3.0;
    r.loss = -r.reward_mean;
    r.grad_norm = it == 2 ? INFINITY : 1e-300 * it;
    r.lr = 1e-4 * (it + 1) / 7.0;
    r.skipped = it == 2;
    r.t_rollout = 1.25, r.t_decode = 0.5 / 3, r.t_reward = 5e-7, r.t_backward = 2.0 * it, r.t_update = NAN;
    r.peak_rss_bytes = 34359738368.0 + it;
    r.n_rewards = 2;
    strcpy(r.reward_names[0], "symmetry");
    strcpy(r.reward_names[1], "colour \"x\"");
    r.reward_means[0] = -1.0 / 7.0;
    r.reward_means[1] = 2.5e-310;
    return r;
}

static int same(double a, double b) { return (isnan(a) && isnan(b)) || a == b; }

static int rows_equal(const MetricsRow *a, const MetricsRow *b) {
    int ok = a->iteration == b->iteration && a->skipped == b->skipped && a->n_rewards == b->n_rewards;
    ok &= same(a->reward_mean, b->reward_mean) && same(a->reward_std, b->reward_std) && same(a->loss, b->loss);
    ok &= same(isinf(a->grad_norm) ? NAN : a->grad_norm, b->grad_norm) && same(a->lr, b->lr); // inf -> null -> NaN
    ok &= same(a->t_rollout, b->t_rollout) && same(a->t_decode, b->t_decode) && same(a->t_reward, b->t_reward);
    ok &= same(a->t_backward, b->t_backward) && same(a->t_update, b->t_update);
    ok &= same(a->peak_rss_bytes, b->peak_rss_bytes);
    for (int k = 0; ok && k < a->n_rewards; k++)
        ok &= !strcmp(a->reward_names[k], b->reward_names[k]) && same(a->reward_means[k], b->reward_means[k]);
    return ok;
}

static void read_metrics(const void *path) {
    MetricsLog log = metrics_read(path);
    metrics_free(&log);
}

static void test_metrics(void) {
    const char *path = tu_path("metrics.jsonl");
    MetricsWriter w;
    metrics_open(&w, path, -1);
    MetricsRow rows[4];
    for (int i = 0; i < 4; i++) {
        rows[i] = make_row(i + 1);
        metrics_write(&w, &rows[i]);
    }
    metrics_close(&w);
    MetricsLog log = metrics_read(path);
    TU_EXPECT(log.n == 4, "%d rows", log.n);
    for (int i = 0; i < log.n && i < 4; i++) TU_EXPECT(rows_equal(&rows[i], &log.rows[i]), "row %d differs", i + 1);
    double col[4];
    metrics_column(&log, "reward_mean", col);
    TU_EXPECT(col[3] == rows[3].reward_mean, "reward_mean column");
    metrics_column(&log, "seconds.backward", col);
    TU_EXPECT(col[1] == 4.0, "seconds.backward column");
    metrics_column(&log, "reward.colour \"x\"", col);
    TU_EXPECT(col[0] == 2.5e-310, "per-reward column");
    metrics_column(&log, "reward.brightness", col);
    TU_EXPECT(isnan(col[0]) && isnan(col[3]), "absent reward reads NaN");
    metrics_column(&log, "skipped", col);
    TU_EXPECT(col[0] == 0 && col[1] == 1, "skipped column");
    metrics_free(&log);

    // a crash mid-line: the torn last line is ignored; a resumed run keeps rows up to its checkpoint
    append_text(path, "{\"iteration\": 5, \"reward_m");
    log = metrics_read(path);
    TU_EXPECT(log.n == 4, "torn line: %d rows", log.n);
    metrics_free(&log);
    metrics_open(&w, path, 2);
    MetricsRow r3 = make_row(3);
    r3.reward_mean = 42;
    r3.n_rewards = 0;
    metrics_write(&w, &r3);
    metrics_close(&w);
    log = metrics_read(path);
    TU_EXPECT(log.n == 3 && log.rows[1].iteration == 2 && log.rows[2].iteration == 3 && log.rows[2].reward_mean == 42 &&
                  rows_equal(&rows[0], &log.rows[0]),
              "resume: %d rows", log.n);
    metrics_free(&log);

    // missing fields read as NaN; a malformed complete line is a user error naming it
    tu_write_text(tu_path("sparse.jsonl"), "{\"iteration\":7}\n\n{\"iteration\":8,\"loss\":null}");
    log = metrics_read(tu_path("sparse.jsonl"));
    TU_EXPECT(log.n == 2 && log.rows[0].iteration == 7 && isnan(log.rows[0].loss) && isnan(log.rows[1].t_update) &&
                  log.rows[1].n_rewards == 0,
              "sparse rows");
    metrics_free(&log);
    tu_write_text(tu_path("bad.jsonl"), "{\"iteration\":1}\n{\"iteration\":2} x\n{\"iteration\":3}\n");
    TU_EXPECT_USER_ERROR(read_metrics, tu_path("bad.jsonl"), "bad.jsonl:2: not a metrics record");
    tu_write_text(tu_path("bad2.jsonl"), "{\"iteration\":1.5}\n");
    TU_EXPECT_USER_ERROR(read_metrics, tu_path("bad2.jsonl"), "bad2.jsonl:1: not a metrics record");
    tu_write_text(tu_path("bad3.jsonl"), "{\"iteration\":1,\"loss\":\"high\"}\n");
    TU_EXPECT_USER_ERROR(read_metrics, tu_path("bad3.jsonl"), "bad3.jsonl:1: not a metrics record");
}

static void test_progress(void) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    Progress p;
    progress_init(&p, f, 100, 0, PROGRESS_ON, 10);
    progress_update(&p, 37, 0.123);
    progress_finish(&p);
    fclose(f);
    TU_EXPECT(strstr(text, "\r[#######.............] 37/100 it  ") && strstr(text, "reward 0.123") &&
                  text[len - 1] == '\n',
              "bar: '%s'", text);
    free(text);

    f = open_memstream(&text, &len);
    progress_init(&p, f, 25, 0, PROGRESS_AUTO, 10); // a memory stream is not a terminal: plain lines
    for (int it = 1; it <= 25; it++) progress_update(&p, it, -0.5);
    progress_finish(&p);
    fclose(f);
    int lines = 0;
    for (size_t i = 0; i < len; i++) lines += text[i] == '\n';
    TU_EXPECT(lines == 3 && !strncmp(text, "it 10/25  ", 10) && strstr(text, "it 25/25  ") && !strchr(text, '\r') &&
                  strstr(text, "ETA 0s  reward -0.5\n"),
              "plain lines: '%s'", text);
    free(text);

    f = open_memstream(&text, &len);
    progress_init(&p, f, 5, 2, PROGRESS_OFF, 1);
    progress_update(&p, 3, 1.0);
    progress_finish(&p);
    fclose(f);
    TU_EXPECT(len == 0, "off prints nothing");
    free(text);
}

int main(void) {
    tu_tmpdir("io_files");
    test_prompts();
    test_quantize();
    test_png();
    test_plot();
    test_metrics();
    test_progress();
    return tu_report();
}
