// cmd_report.c: `drtune report`, a markdown table comparing training runs: the evaluated reward before and after
// (drtune eval JSON), seconds per iteration and peak memory (metrics.jsonl). launch/compare_methods.sh uses it.
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "train/metrics.h"

// summary.total.mean (and std) of a drtune eval JSON
static void eval_total(const char *path, double *mean, double *std) {
    size_t len;
    char *text = dt_read_file(path, &len);
    cJSON *root = cJSON_Parse(text);
    free(text);
    USER_CHECK(root != NULL, "'%s': not valid JSON", path);
    const cJSON *total = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(root, "summary"), "total");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(total, "mean"), *s = cJSON_GetObjectItemCaseSensitive(total, "std");
    USER_CHECK(cJSON_IsNumber(m) && cJSON_IsNumber(s), "'%s': no summary.total (not a drtune eval result?)", path);
    *mean = m->valuedouble;
    *std = s->valuedouble;
    cJSON_Delete(root);
}

int cmd_report(int argc, char **argv) {
    const char *before = NULL;
    int first = 1;
    for (; first < argc; first++) {
        if (!strcmp(argv[first], "--help") || !strcmp(argv[first], "-h")) {
            printf("usage: drtune report --before EVAL.json RUN_DIR[:LABEL] ...\n"
                   "  each RUN_DIR holds metrics.jsonl and eval.json (drtune eval of the trained model);\n"
                   "  prints a markdown table: reward before/after (mean +- std over the evaluation images),\n"
                   "  change, seconds per iteration (median) and peak memory\n");
            return 0;
        }
        if (strcmp(argv[first], "--before")) break;
        USER_CHECK(first + 1 < argc, "--before needs a file");
        before = argv[++first];
    }
    USER_CHECK(before != NULL && first < argc, "drtune report: give --before EVAL.json and at least one run");
    double b_mean, b_std;
    eval_total(before, &b_mean, &b_std);
    printf("| method | reward before | reward after | change | s / iteration | peak memory |\n");
    printf("|---|---|---|---|---|---|\n");
    for (int i = first; i < argc; i++) {
        char *spec = xstrdup(argv[i]), *colon = strrchr(spec, ':'), path[4096];
        if (colon) *colon = 0;
        const char *label = colon ? colon + 1 : spec;
        double a_mean, a_std;
        eval_total(dt_path(path, sizeof path, "%s/eval.json", spec), &a_mean, &a_std);
        MetricsLog log = metrics_read(dt_path(path, sizeof path, "%s/metrics.jsonl", spec));
        USER_CHECK(log.n > 0, "'%s': no metrics rows", path);
        double *sec = xmalloc(sizeof(double) * (size_t)log.n), peak = 0;
        for (int r = 0; r < log.n; r++) {
            const MetricsRow *m = &log.rows[r];
            sec[r] = m->t_rollout + m->t_decode + m->t_reward + m->t_backward + m->t_update;
            if (m->peak_rss_bytes > peak) peak = m->peak_rss_bytes;
        }
        for (int r = 1; r < log.n; r++) // insertion sort for the median
            for (int k = r; k > 0 && sec[k] < sec[k - 1]; k--) {
                double t = sec[k];
                sec[k] = sec[k - 1], sec[k - 1] = t;
            }
        char mem[32];
        printf("| %s | %.4f ± %.4f | %.4f ± %.4f | %+.4f | %.2f | %s |\n", label, b_mean, b_std, a_mean, a_std,
               a_mean - b_mean, sec[log.n / 2], dt_format_bytes(mem, sizeof mem, peak));
        free(sec);
        metrics_free(&log);
        free(spec);
    }
    return 0;
}
