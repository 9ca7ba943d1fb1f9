// plot.c: the line-chart renderer declared in plot.h: a small RGB canvas with lines, rectangles and a 5x7 bitmap
// font, nice tick steps (1, 2 or 5 times a power of ten) and a legend; written through pngio_write_rgb8.
#include "plot.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "../core/common.h"
#include "png.h"

// ---------------------------------------------------------------------------------------------------------------
// the font: 7 rows of 5 pixels per glyph, bit 4 the leftmost column

typedef struct {
    char c;
    uint8_t rows[7];
} Glyph;

static const Glyph GLYPHS[] = {
    {' ', {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}}, {'?', {0x0E, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04}},
    {'0', {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E}}, {'1', {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'2', {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F}}, {'3', {0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E}},
    {'4', {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02}}, {'5', {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E}},
    {'6', {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E}}, {'7', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08}},
    {'8', {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E}}, {'9', {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C}},
    {'A', {0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11}}, {'B', {0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E}},
    {'C', {0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E}}, {'D', {0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C}},
    {'E', {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F}}, {'F', {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10}},
    {'G', {0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F}}, {'H', {0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11}},
    {'I', {0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E}}, {'J', {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C}},
    {'K', {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11}}, {'L', {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F}},
    {'M', {0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11}}, {'N', {0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11}},
    {'O', {0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}}, {'P', {0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10}},
    {'Q', {0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D}}, {'R', {0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11}},
    {'S', {0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E}}, {'T', {0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04}},
    {'U', {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}}, {'V', {0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04}},
    {'W', {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A}}, {'X', {0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11}},
    {'Y', {0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04}}, {'Z', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F}},
    {'a', {0x00, 0x00, 0x0E, 0x01, 0x0F, 0x11, 0x0F}}, {'b', {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1E}},
    {'c', {0x00, 0x00, 0x0E, 0x10, 0x10, 0x11, 0x0E}}, {'d', {0x01, 0x01, 0x0D, 0x13, 0x11, 0x11, 0x0F}},
    {'e', {0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0E}}, {'f', {0x06, 0x09, 0x08, 0x1C, 0x08, 0x08, 0x08}},
    {'g', {0x00, 0x0F, 0x11, 0x11, 0x0F, 0x01, 0x0E}}, {'h', {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11}},
    {'i', {0x04, 0x00, 0x0C, 0x04, 0x04, 0x04, 0x0E}}, {'j', {0x02, 0x00, 0x06, 0x02, 0x02, 0x12, 0x0C}},
    {'k', {0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12}}, {'l', {0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'m', {0x00, 0x00, 0x1A, 0x15, 0x15, 0x11, 0x11}}, {'n', {0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11}},
    {'o', {0x00, 0x00, 0x0E, 0x11, 0x11, 0x11, 0x0E}}, {'p', {0x00, 0x00, 0x1E, 0x11, 0x1E, 0x10, 0x10}},
    {'q', {0x00, 0x00, 0x0D, 0x13, 0x0F, 0x01, 0x01}}, {'r', {0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10}},
    {'s', {0x00, 0x00, 0x0E, 0x10, 0x0E, 0x01, 0x1E}}, {'t', {0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06}},
    {'u', {0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0D}}, {'v', {0x00, 0x00, 0x11, 0x11, 0x11, 0x0A, 0x04}},
    {'w', {0x00, 0x00, 0x11, 0x11, 0x15, 0x15, 0x0A}}, {'x', {0x00, 0x00, 0x11, 0x0A, 0x04, 0x0A, 0x11}},
    {'y', {0x00, 0x00, 0x11, 0x11, 0x0F, 0x01, 0x0E}}, {'z', {0x00, 0x00, 0x1F, 0x02, 0x04, 0x08, 0x1F}},
    {'.', {0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C}}, {'-', {0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00}},
    {'+', {0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00}}, {':', {0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00}},
    {'%', {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03}}, {'_', {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F}},
    {'(', {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02}}, {')', {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08}},
    {'/', {0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00}}, {',', {0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08}},
    {'=', {0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00}},
};

#define GLYPH_ADVANCE 6 // 5 columns and a blank one

static const uint8_t *glyph_rows(char c) {
    for (size_t i = 0; i < sizeof GLYPHS / sizeof GLYPHS[0]; i++)
        if (GLYPHS[i].c == c) return GLYPHS[i].rows;
    return GLYPHS[1].rows; // '?'
}

// ---------------------------------------------------------------------------------------------------------------
// the canvas

typedef struct {
    uint8_t *px; // [h, w, 3]
    int w, h;
} Canvas;

typedef struct {
    uint8_t r, g, b;
} Rgb;

static const Rgb BLACK = {0, 0, 0}, WHITE = {255, 255, 255}, GRID = {228, 228, 228}, FRAME = {150, 150, 150};
static const Rgb SERIES_COLOURS[PLOT_MAX_SERIES] = {{31, 119, 180}, {255, 127, 14},  {44, 160, 44},
                                                    {214, 39, 40},  {148, 103, 189}, {140, 86, 75}};

static void canvas_set(Canvas *cv, int x, int y, Rgb c) {
    if (x < 0 || y < 0 || x >= cv->w || y >= cv->h) return;
    uint8_t *p = cv->px + ((size_t)y * (size_t)cv->w + (size_t)x) * 3;
    p[0] = c.r, p[1] = c.g, p[2] = c.b;
}

// Rectangle [x0, x1) x [y0, y1).
static void canvas_fill(Canvas *cv, int x0, int y0, int x1, int y1, Rgb c) {
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++) canvas_set(cv, x, y, c);
}

// Bresenham line drawn with square dots of side `thick`.
static void canvas_line(Canvas *cv, int x0, int y0, int x1, int y1, Rgb c, int thick) {
    int dx = abs(x1 - x0), dy = -abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1, err = dx + dy;
    for (;;) {
        canvas_fill(cv, x0, y0, x0 + thick, y0 + thick, c);
        if (x0 == x1 && y0 == y1) break;
        int e2 = 2 * err;
        if (e2 >= dy) err += dy, x0 += sx;
        if (e2 <= dx) err += dx, y0 += sy;
    }
}

static int text_width(const char *s, int scale) {
    int n = (int)strlen(s);
    return n ? (n * GLYPH_ADVANCE - 1) * scale : 0;
}

// Text with its top-left corner at (x, y).
static void draw_text(Canvas *cv, int x, int y, const char *s, Rgb c, int scale) {
    for (; *s; s++, x += GLYPH_ADVANCE * scale) {
        const uint8_t *rows = glyph_rows(*s);
        for (int r = 0; r < 7; r++)
            for (int col = 0; col < 5; col++)
                if (rows[r] & (0x10 >> col))
                    canvas_fill(cv, x + col * scale, y + r * scale, x + (col + 1) * scale, y + (r + 1) * scale, c);
    }
}

// Text turned a quarter turn anticlockwise (read bottom to top), its first character's bottom-left at (x, y).
static void draw_text_up(Canvas *cv, int x, int y, const char *s, Rgb c) {
    for (int i = 0; s[i]; i++) {
        const uint8_t *rows = glyph_rows(s[i]);
        for (int r = 0; r < 7; r++)
            for (int col = 0; col < 5; col++)
                if (rows[r] & (0x10 >> col)) canvas_set(cv, x + r, y - (i * GLYPH_ADVANCE + col), c);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// axes

typedef struct {
    double lo, hi, step; // lo and hi are multiples of step
    int ticks;           // tick count (lo, lo + step, ..., hi)
} Axis;

// A range covering [lo, hi] with 4 to 10 ticks at 1, 2 or 5 times a power of ten. No finite data: [0, 1]; a
// single value: padded around it.
static Axis axis_make(double lo, double hi) {
    if (!(lo <= hi)) lo = 0, hi = 1;
    if (!(hi - lo > 1e-12 * fmax(fabs(lo), fabs(hi)))) {
        double pad = lo != 0 ? 0.1 * fabs(lo) : 0.5;
        lo -= pad, hi += pad;
    }
    double raw = (hi - lo) / 5, mag = pow(10, floor(log10(raw))), f = raw / mag;
    Axis a;
    a.step = (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
    a.lo = floor(lo / a.step) * a.step;
    a.hi = ceil(hi / a.step) * a.step;
    a.ticks = (int)lround((a.hi - a.lo) / a.step) + 1;
    return a;
}

static double axis_tick(const Axis *a, int i) {
    double v = a->lo + i * a->step;
    return fabs(v) < a->step * 1e-9 ? 0.0 : v; // no "-0"
}

static void axis_label(const Axis *a, double v, char *buf, size_t n) {
    double big = fmax(fabs(a->lo), fabs(a->hi));
    int decimals = (int)fmax(0, -floor(log10(a->step) + 1e-9));
    if (big >= 1e6 || decimals > 5)
        snprintf(buf, n, "%.3g", v);
    else
        snprintf(buf, n, "%.*f", decimals, v);
}

// ---------------------------------------------------------------------------------------------------------------
// the chart

void plot_write_png(const char *path, const PlotOptions *opt, const PlotSeries *series, int n_series) {
    CHECK(n_series >= 0 && n_series <= PLOT_MAX_SERIES, "plot fewer series", "%d series (at most %d)", n_series,
          PLOT_MAX_SERIES);
    Canvas cv = {NULL, opt->width ? opt->width : 800, opt->height ? opt->height : 480};
    CHECK(cv.w >= 160 && cv.h >= 120 && cv.w <= 8192 && cv.h <= 8192, "", "plot of %d x %d pixels", cv.w, cv.h);
    cv.px = xmalloc((size_t)cv.w * (size_t)cv.h * 3);
    memset(cv.px, 255, (size_t)cv.w * (size_t)cv.h * 3);

    double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
    for (int s = 0; s < n_series; s++) {
        CHECK(series[s].name && series[s].n >= 0, "", "series %d has no name or a negative length", s);
        for (int i = 0; i < series[s].n; i++) {
            double x = series[s].x ? series[s].x[i] : i, y = series[s].y[i];
            if (!isfinite(x) || !isfinite(y)) continue;
            xlo = fmin(xlo, x), xhi = fmax(xhi, x), ylo = fmin(ylo, y), yhi = fmax(yhi, y);
        }
    }
    Axis ax = axis_make(xlo, xhi), ay = axis_make(ylo, yhi);

    char label[32];
    int ylabel_w = 0;
    for (int i = 0; i < ay.ticks; i++) {
        axis_label(&ay, axis_tick(&ay, i), label, sizeof label);
        int w = text_width(label, 1);
        if (w > ylabel_w) ylabel_w = w;
    }
    int left = 8 + (opt->ylabel ? 14 : 0) + ylabel_w + 8, right = cv.w - 16;
    int top = opt->title ? 36 : 14, bottom = cv.h - (8 + 6 + 7 + (opt->xlabel ? 16 : 0) + 8);
    CHECK(right - left >= 40 && bottom - top >= 40, "make the plot larger", "no room for the plot area");
    int pw = right - left, ph = bottom - top;

    // grid, ticks and their labels
    for (int i = 0; i < ax.ticks; i++) {
        double v = axis_tick(&ax, i);
        int x = left + (int)lround((v - ax.lo) / (ax.hi - ax.lo) * pw);
        canvas_fill(&cv, x, top, x + 1, bottom, GRID);
        canvas_fill(&cv, x, bottom, x + 1, bottom + 5, BLACK);
        axis_label(&ax, v, label, sizeof label);
        draw_text(&cv, x - text_width(label, 1) / 2, bottom + 8, label, BLACK, 1);
    }
    for (int i = 0; i < ay.ticks; i++) {
        double v = axis_tick(&ay, i);
        int y = bottom - (int)lround((v - ay.lo) / (ay.hi - ay.lo) * ph);
        canvas_fill(&cv, left, y, right, y + 1, GRID);
        canvas_fill(&cv, left - 5, y, left, y + 1, BLACK);
        axis_label(&ay, v, label, sizeof label);
        draw_text(&cv, left - 8 - text_width(label, 1), y - 3, label, BLACK, 1);
    }
    // frame
    canvas_fill(&cv, left, top, right + 1, top + 1, BLACK);
    canvas_fill(&cv, left, bottom, right + 1, bottom + 1, BLACK);
    canvas_fill(&cv, left, top, left + 1, bottom + 1, BLACK);
    canvas_fill(&cv, right, top, right + 1, bottom + 1, BLACK);

    // series: consecutive finite points are joined; an isolated one is a dot
    for (int s = 0; s < n_series; s++) {
        const PlotSeries *se = &series[s];
        Rgb c = SERIES_COLOURS[s];
        int have_prev = 0, px = 0, py = 0;
        for (int i = 0; i < se->n; i++) {
            double x = se->x ? se->x[i] : i, y = se->y[i];
            if (!isfinite(x) || !isfinite(y)) {
                have_prev = 0;
                continue;
            }
            int cx = left + (int)lround((x - ax.lo) / (ax.hi - ax.lo) * pw);
            int cy = bottom - (int)lround((y - ay.lo) / (ay.hi - ay.lo) * ph);
            if (have_prev) canvas_line(&cv, px, py, cx, cy, c, 2);
            int next_finite = i + 1 < se->n && isfinite(se->x ? se->x[i + 1] : i + 1) && isfinite(se->y[i + 1]);
            if (!have_prev && !next_finite) canvas_fill(&cv, cx - 1, cy - 1, cx + 2, cy + 2, c);
            have_prev = 1, px = cx, py = cy;
        }
    }

    // legend, in the top-right corner of the plot area
    if (n_series > 0) {
        int lw = 0;
        for (int s = 0; s < n_series; s++) {
            int w = text_width(series[s].name, 1);
            if (w > lw) lw = w;
        }
        int bw = lw + 34, bh = n_series * 12 + 8, bx = right - 8 - bw, by = top + 8;
        canvas_fill(&cv, bx, by, bx + bw, by + bh, WHITE);
        canvas_fill(&cv, bx, by, bx + bw, by + 1, FRAME);
        canvas_fill(&cv, bx, by + bh - 1, bx + bw, by + bh, FRAME);
        canvas_fill(&cv, bx, by, bx + 1, by + bh, FRAME);
        canvas_fill(&cv, bx + bw - 1, by, bx + bw, by + bh, FRAME);
        for (int s = 0; s < n_series; s++) {
            int y = by + 5 + s * 12;
            canvas_fill(&cv, bx + 6, y + 3, bx + 24, y + 5, SERIES_COLOURS[s]);
            draw_text(&cv, bx + 29, y, series[s].name, BLACK, 1);
        }
    }

    if (opt->title) {
        int scale = text_width(opt->title, 2) <= cv.w - 16 ? 2 : 1; // a long title in the small font
        draw_text(&cv, (cv.w - text_width(opt->title, scale)) / 2, 10, opt->title, BLACK, scale);
    }
    if (opt->xlabel) draw_text(&cv, left + (pw - text_width(opt->xlabel, 1)) / 2, cv.h - 15, opt->xlabel, BLACK, 1);
    if (opt->ylabel) draw_text_up(&cv, 8, top + (ph + text_width(opt->ylabel, 1)) / 2, opt->ylabel, BLACK);

    pngio_write_rgb8(path, cv.px, cv.h, cv.w);
    free(cv.px);
}
