// metrics.h: the training record. metrics.jsonl holds one JSON object per iteration, appended and flushed as each
// iteration ends, so a crashed or running job can be inspected, plotted and resumed; the progress display on
// stderr is a bar on a terminal and a plain line every few iterations in log files.
#pragma once
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define METRICS_MAX_REWARDS 8

// One iteration. Non-finite numbers are written as JSON null and read back as NaN.
typedef struct {
    int iteration;                          // 1-based
    double reward_mean, reward_std;         // over the global batch, of the weighted total
    double loss, grad_norm, lr;
    int skipped;                            // 1: the update was skipped (non-finite gradients)
    double t_rollout, t_decode, t_reward, t_backward, t_update; // seconds per phase
    double t_reduce_wait;                   // seconds waiting for the gradient reduction after the backward
    double reduce_overlap;                  // fraction of the gradient whose reduction started during the backward
    double peak_rss_bytes;
    int n_rewards;
    char reward_names[METRICS_MAX_REWARDS][32];
    double reward_means[METRICS_MAX_REWARDS]; // per reward, unweighted
} MetricsRow;

typedef struct {
    FILE *f;
    char *path;
} MetricsWriter;

// Opens path for appending. keep_through < 0 starts a new file; otherwise the rows with iteration <= keep_through
// are kept verbatim (a resumed run drops what was logged after its checkpoint) and later rows append.
void metrics_open(MetricsWriter *w, const char *path, int keep_through);
// Appends one line and flushes it.
void metrics_write(MetricsWriter *w, const MetricsRow *row);
void metrics_close(MetricsWriter *w);

typedef struct {
    MetricsRow *rows;
    int n;
} MetricsLog;

// Reads a metrics.jsonl. User error (file:line) on a malformed line, except a final line without its newline (a
// write cut short by a crash), which is ignored. Missing fields read as NaN (0 for skipped).
MetricsLog metrics_read(const char *path);
void metrics_free(MetricsLog *log);
// One column as doubles: "iteration", "reward_mean", "reward_std", "loss", "grad_norm", "lr", "skipped",
// "seconds.rollout" (and decode, reward, backward, update, reduce_wait), "reduce_overlap", "peak_rss_bytes" or
// "reward.<name>" (NaN where a row lacks that reward). out has log->n entries. Internal failure on an unknown column.
void metrics_column(const MetricsLog *log, const char *column, double *out);

// Progress display. AUTO: a bar when `out` is a terminal, otherwise a plain line every `every` iterations (and at
// the last); ON: always the bar; OFF: nothing.
typedef enum { PROGRESS_AUTO, PROGRESS_ON, PROGRESS_OFF } ProgressMode;
typedef struct {
    FILE *out;
    int bar;                                // 1: redrawn bar; 0: plain lines; -1: silent
    int total, start, every;
    double t_start;
} Progress;

// `start` iterations are already done (a resumed run); `total` is the last iteration.
void progress_init(Progress *p, FILE *out, int total, int start, ProgressMode mode, int every);
// Reports that `iteration` (1-based) finished with the given mean reward.
void progress_update(Progress *p, int iteration, double reward);
// Ends the bar's line.
void progress_finish(Progress *p);

#ifdef __cplusplus
}
#endif
