// plot.h: line charts as PNG files (reward curves of a run: x = iteration, y = reward). No plotting library exists
// for C on the machines drtune runs on, so this draws axes, ticks, labels, a legend and a title itself, with a
// built-in 5x7 bitmap font.
#pragma once

#ifdef __cplusplus
extern "C" {
#endif

#define PLOT_MAX_SERIES 6

typedef struct {
    const char *name;  // legend text
    const double *x;   // NULL: 0, 1, 2, ...
    const double *y;   // non-finite values leave a gap
    int n;
} PlotSeries;

typedef struct {
    const char *title;
    const char *xlabel, *ylabel; // may be NULL
    int width, height;           // pixels; 0 = 800 x 480
} PlotOptions;

// Renders up to PLOT_MAX_SERIES series to an RGB8 PNG at path (atomic write). A constant series or a single point
// gets a padded range; series without any finite point draw nothing.
void plot_write_png(const char *path, const PlotOptions *opt, const PlotSeries *series, int n_series);

#ifdef __cplusplus
}
#endif
