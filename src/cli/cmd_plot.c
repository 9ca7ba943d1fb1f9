// cmd_plot.c: `drtune plot`: reward curves of one or more runs in one PNG, from their metrics.jsonl files
// (used by launch/compare_methods.sh to put every method on one chart).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "io/plot.h"
#include "train/metrics.h"

int cmd_plot(int argc, char **argv) {
    const char *out = "reward_curves.png", *title = "reward during training", *column = "reward_mean";
    const char *runs[PLOT_MAX_SERIES];
    int n = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf("usage: drtune plot [--out FILE.png] [--title TEXT] [--column NAME] METRICS.jsonl[:LABEL] ...\n"
                   "  up to %d runs; column is any metrics column (reward_mean, loss, grad_norm, reward.<name>, ...)\n",
                   PLOT_MAX_SERIES);
            return 0;
        }
        if (!strcmp(a, "--out") || !strcmp(a, "--title") || !strcmp(a, "--column")) {
            USER_CHECK(i + 1 < argc, "%s needs a value", a);
            const char *v = argv[++i];
            if (!strcmp(a, "--out")) out = v;
            else if (!strcmp(a, "--title")) title = v;
            else column = v;
            continue;
        }
        USER_CHECK(a[0] != '-', "drtune plot: unknown option '%s'", a);
        USER_CHECK(n < PLOT_MAX_SERIES, "drtune plot: at most %d runs", PLOT_MAX_SERIES);
        runs[n++] = a;
    }
    USER_CHECK(n > 0, "drtune plot: give at least one metrics.jsonl");
    PlotSeries s[PLOT_MAX_SERIES];
    MetricsLog logs[PLOT_MAX_SERIES];
    char *labels[PLOT_MAX_SERIES];
    double *xs[PLOT_MAX_SERIES], *ys[PLOT_MAX_SERIES];
    for (int k = 0; k < n; k++) {
        char *spec = xstrdup(runs[k]), *colon = strrchr(spec, ':');
        if (colon) *colon = 0;
        labels[k] = xstrdup(colon ? colon + 1 : spec);
        logs[k] = metrics_read(spec);
        USER_CHECK(logs[k].n > 0, "'%s': no metrics rows", spec);
        xs[k] = xmalloc(sizeof(double) * (size_t)logs[k].n);
        ys[k] = xmalloc(sizeof(double) * (size_t)logs[k].n);
        metrics_column(&logs[k], "iteration", xs[k]);
        metrics_column(&logs[k], column, ys[k]);
        s[k] = (PlotSeries){labels[k], xs[k], ys[k], logs[k].n};
        free(spec);
    }
    PlotOptions o = {title, "iteration", column, 0, 0};
    plot_write_png(out, &o, s, n);
    printf("drtune plot: %d run%s -> %s\n", n, n == 1 ? "" : "s", out);
    for (int k = 0; k < n; k++) {
        metrics_free(&logs[k]);
        free(xs[k]);
        free(ys[k]);
        free(labels[k]);
    }
    return 0;
}
