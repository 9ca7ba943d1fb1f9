// cmd_report.c: `drtune report`, a markdown table comparing training runs: the evaluated reward before and after
// (drtune eval JSON), seconds per iteration and peak memory (metrics.jsonl). Runs that share a label (one method
// trained with several seeds) are one row: the mean and the spread across seeds of the evaluated reward and of its
// change, so a difference between methods can be told from seed-to-seed noise. launch/compare_methods.sh uses it.
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

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// One run: its evaluated mean and std over the images, median seconds per iteration and peak memory.
typedef struct {
    double mean, std, sec, peak;
} Run;

static Run run_read(const char *dir) {
    char path[4096];
    Run r = {0};
    eval_total(dt_path(path, sizeof path, "%s/eval.json", dir), &r.mean, &r.std);
    MetricsLog log = metrics_read(dt_path(path, sizeof path, "%s/metrics.jsonl", dir));
    USER_CHECK(log.n > 0, "'%s': no metrics rows", path);
    double *sec = xmalloc(sizeof(double) * (size_t)log.n);
    for (int i = 0; i < log.n; i++) {
        const MetricsRow *m = &log.rows[i];
        sec[i] = m->t_rollout + m->t_decode + m->t_reward + m->t_backward + m->t_update;
        if (m->peak_rss_bytes > r.peak) r.peak = m->peak_rss_bytes;
    }
    qsort(sec, (size_t)log.n, sizeof *sec, cmp_double);
    r.sec = sec[log.n / 2];
    free(sec);
    metrics_free(&log);
    return r;
}

// mean and sample standard deviation (n - 1; 0 for one value)
static void mean_sd(const double *x, int n, double *mean, double *sd) {
    double s = 0.0, q = 0.0;
    for (int i = 0; i < n; i++) s += x[i];
    *mean = s / n;
    for (int i = 0; i < n; i++) q += (x[i] - *mean) * (x[i] - *mean);
    *sd = n > 1 ? sqrt(q / (n - 1)) : 0.0;
}

int cmd_report(int argc, char **argv) {
    const char *before = NULL;
    int first = 1;
    for (; first < argc; first++) {
        if (!strcmp(argv[first], "--help") || !strcmp(argv[first], "-h")) {
            printf("usage: drtune report --before EVAL.json RUN_DIR[:LABEL] ...\n"
                   "  each RUN_DIR holds metrics.jsonl and eval.json (drtune eval of the trained model);\n"
                   "  prints a markdown table: reward before/after (mean +- std over the evaluation images),\n"
                   "  change, seconds per iteration (median) and peak memory. Runs with the same LABEL (one\n"
                   "  method, several training seeds) form one row: reward after and change as mean +- standard\n"
                   "  deviation across the runs, with each run's change listed\n");
            return 0;
        }
        if (strcmp(argv[first], "--before")) break;
        USER_CHECK(first + 1 < argc, "--before needs a file");
        before = argv[++first];
    }
    USER_CHECK(before != NULL && first < argc, "drtune report: give --before EVAL.json and at least one run");
    double b_mean, b_std;
    eval_total(before, &b_mean, &b_std);
    int n = argc - first, *done = xcalloc((size_t)n, sizeof(int)), multi = 0;
    char **dirs = xmalloc(sizeof(char *) * (size_t)n);
    const char **labels = xmalloc(sizeof(char *) * (size_t)n);
    for (int i = 0; i < n; i++) {
        dirs[i] = xstrdup(argv[first + i]);
        char *colon = strrchr(dirs[i], ':');
        if (colon) *colon = 0;
        labels[i] = colon ? colon + 1 : dirs[i];
    }
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) multi |= !strcmp(labels[i], labels[j]);
    if (multi) {
        printf("| method | runs | reward before | reward after (across runs) | change (across runs) | change per run | "
               "s / iteration | peak memory |\n");
        printf("|---|---|---|---|---|---|---|---|\n");
    } else {
        printf("| method | reward before | reward after | change | s / iteration | peak memory |\n");
        printf("|---|---|---|---|---|---|\n");
    }
    double *after = xmalloc(sizeof(double) * (size_t)n), *sec = xmalloc(sizeof(double) * (size_t)n);
    for (int i = 0; i < n; i++) {
        if (done[i]) continue;
        int k = 0;
        double peak = 0.0, a_std = 0.0;
        char per[1024] = "";
        size_t len = 0;
        for (int j = i; j < n; j++) {
            if (done[j] || strcmp(labels[i], labels[j])) continue;
            Run r = run_read(dirs[j]);
            done[j] = 1;
            after[k] = r.mean, sec[k] = r.sec, a_std = r.std, k++;
            if (r.peak > peak) peak = r.peak;
            if (len < sizeof per - 32) len += (size_t)snprintf(per + len, sizeof per - len, "%s%+.4f", k > 1 ? ", " : "",
                                                               r.mean - b_mean);
        }
        double am, asd, sm, ssd;
        mean_sd(after, k, &am, &asd);
        mean_sd(sec, k, &sm, &ssd);
        char mem[32];
        dt_format_bytes(mem, sizeof mem, peak);
        if (multi)
            printf("| %s | %d | %.4f ± %.4f | %.4f ± %.4f | %+.4f ± %.4f | %s | %.2f | %s |\n", labels[i], k, b_mean,
                   b_std, am, asd, am - b_mean, asd, per, sm, mem);
        else
            printf("| %s | %.4f ± %.4f | %.4f ± %.4f | %+.4f | %.2f | %s |\n", labels[i], b_mean, b_std, am, a_std,
                   am - b_mean, sm, mem);
    }
    for (int i = 0; i < n; i++) free(dirs[i]);
    free(dirs), free(labels), free(done), free(after), free(sec);
    return 0;
}
