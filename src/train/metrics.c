// metrics.c: metrics.jsonl writing and reading, and the progress display (metrics.h). Numbers are written as the
// shortest text that reads back to the same double, so plots and resumed runs see exactly what was logged.
#include "metrics.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

#include "../core/common.h"

// The numeric fields of a row by name: one table for writing, reading and metrics_column.
typedef struct {
    const char *name;
    size_t offset;
} Field;

static const Field NUMBERS[] = {
    {"reward_mean", offsetof(MetricsRow, reward_mean)}, {"reward_std", offsetof(MetricsRow, reward_std)},
    {"loss", offsetof(MetricsRow, loss)},               {"grad_norm", offsetof(MetricsRow, grad_norm)},
    {"lr", offsetof(MetricsRow, lr)},                   {"peak_rss_bytes", offsetof(MetricsRow, peak_rss_bytes)},
    {"reduce_overlap", offsetof(MetricsRow, reduce_overlap)},
};
static const Field SECONDS[] = {
    {"rollout", offsetof(MetricsRow, t_rollout)}, {"decode", offsetof(MetricsRow, t_decode)},
    {"reward", offsetof(MetricsRow, t_reward)},   {"backward", offsetof(MetricsRow, t_backward)},
    {"update", offsetof(MetricsRow, t_update)},   {"reduce_wait", offsetof(MetricsRow, t_reduce_wait)},
};
#define N_NUMBERS (sizeof NUMBERS / sizeof NUMBERS[0])
#define N_SECONDS (sizeof SECONDS / sizeof SECONDS[0])

static double *row_number(MetricsRow *r, const Field *f) { return (double *)(void *)((char *)r + f->offset); }
static double row_get(const MetricsRow *r, const Field *f) {
    return *(const double *)(const void *)((const char *)r + f->offset);
}

// ---------------------------------------------------------------------------------------------------------------
// writing

// A JSON number that reads back exactly (shortest such text), or null when not finite.
static cJSON *json_number(double v) {
    char buf[40] = "null";
    if (isfinite(v))
        for (int p = 1; p <= 17; p++) {
            snprintf(buf, sizeof buf, "%.*g", p, v);
            if (strtod(buf, NULL) == v) break;
        }
    cJSON *item = cJSON_CreateRaw(buf);
    CHECK(item, "", "cJSON allocation failed");
    return item;
}

static void json_add(cJSON *obj, const char *name, cJSON *item) {
    CHECK(item && cJSON_AddItemToObject(obj, name, item), "", "cJSON allocation failed");
}

static char *row_json(const MetricsRow *r) {
    cJSON *o = cJSON_CreateObject(), *sec = cJSON_CreateObject(), *rew = cJSON_CreateObject();
    CHECK(o && sec && rew, "", "cJSON allocation failed");
    json_add(o, "iteration", cJSON_CreateNumber(r->iteration));
    for (size_t i = 0; i < N_NUMBERS; i++) json_add(o, NUMBERS[i].name, json_number(row_get(r, &NUMBERS[i])));
    json_add(o, "skipped", cJSON_CreateBool(r->skipped != 0));
    for (size_t i = 0; i < N_SECONDS; i++) json_add(sec, SECONDS[i].name, json_number(row_get(r, &SECONDS[i])));
    json_add(o, "seconds", sec);
    CHECK(r->n_rewards >= 0 && r->n_rewards <= METRICS_MAX_REWARDS, "", "%d rewards in a metrics row", r->n_rewards);
    for (int k = 0; k < r->n_rewards; k++) json_add(rew, r->reward_names[k], json_number(r->reward_means[k]));
    json_add(o, "rewards", rew);
    char *text = cJSON_PrintUnformatted(o);
    CHECK(text, "", "cJSON allocation failed");
    cJSON_Delete(o);
    return text;
}

// ---------------------------------------------------------------------------------------------------------------
// reading

// A number: a JSON number, or NaN for null. Returns 0 for any other type.
static int json_value(const cJSON *it, double *out) {
    *out = cJSON_IsNumber(it) ? it->valuedouble : NAN;
    return cJSON_IsNumber(it) || cJSON_IsNull(it);
}

// A number field of obj; absent reads as NaN.
static int json_field(const cJSON *obj, const char *name, double *out) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name); // NULL obj: absent
    *out = NAN;
    return !it || json_value(it, out);
}

static int row_from_json(const cJSON *o, MetricsRow *r) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, "iteration");
    if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble) || fabs(it->valuedouble) > 1e9) return 0;
    r->iteration = (int)it->valuedouble;
    for (size_t i = 0; i < N_NUMBERS; i++)
        if (!json_field(o, NUMBERS[i].name, row_number(r, &NUMBERS[i]))) return 0;
    const cJSON *skipped = cJSON_GetObjectItemCaseSensitive(o, "skipped");
    if (skipped && !cJSON_IsBool(skipped)) return 0;
    r->skipped = cJSON_IsTrue(skipped);
    const cJSON *sec = cJSON_GetObjectItemCaseSensitive(o, "seconds");
    if (sec && !cJSON_IsObject(sec)) return 0;
    for (size_t i = 0; i < N_SECONDS; i++)
        if (!json_field(sec, SECONDS[i].name, row_number(r, &SECONDS[i]))) return 0;
    const cJSON *rew = cJSON_GetObjectItemCaseSensitive(o, "rewards");
    if (rew && !cJSON_IsObject(rew)) return 0;
    for (const cJSON *e = rew ? rew->child : NULL; e; e = e->next) {
        if (r->n_rewards == METRICS_MAX_REWARDS || strlen(e->string) >= sizeof r->reward_names[0]) return 0;
        strcpy(r->reward_names[r->n_rewards], e->string);
        if (!json_value(e, &r->reward_means[r->n_rewards])) return 0;
        r->n_rewards++;
    }
    return 1;
}

// Parses one line; 0 when it is not a metrics record (one JSON object, nothing after it but whitespace).
static int row_parse(const char *line, size_t len, MetricsRow *r) {
    memset(r, 0, sizeof *r);
    const char *end = NULL;
    cJSON *o = cJSON_ParseWithLengthOpts(line, len, &end, 0);
    int ok = cJSON_IsObject(o) && row_from_json(o, r);
    for (; ok && end < line + len; end++) ok = isspace((unsigned char)*end) != 0;
    cJSON_Delete(o);
    return ok;
}

// Calls visit for each record of text: a malformed complete line is a user error; a final line without its
// newline that does not parse (a write cut short) ends the file. Returns the number of records.
static int records_scan(const char *text, size_t len, const char *path,
                        void (*visit)(void *ctx, const MetricsRow *row, const char *line, size_t n), void *ctx) {
    size_t pos = 0;
    int line = 0, count = 0;
    while (pos < len) {
        const char *s = text + pos, *nl = memchr(s, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - s) : len - pos;
        pos += n + (nl != NULL);
        line++;
        size_t blank = 0;
        while (blank < n && isspace((unsigned char)s[blank])) blank++;
        if (blank == n) continue;
        MetricsRow row;
        if (!row_parse(s, n, &row)) {
            if (!nl) break;
            dt_user_error("%s:%d: not a metrics record (a JSON object with an integer \"iteration\" and numbers)",
                          path, line);
        }
        visit(ctx, &row, s, n + (nl != NULL));
        count++;
    }
    return count;
}

static void collect_row(void *ctx, const MetricsRow *row, const char *line, size_t n) {
    (void)line, (void)n;
    MetricsLog *log = ctx;
    if ((log->n & (log->n - 1)) == 0) // capacity doubles at powers of two
        log->rows = xrealloc(log->rows, sizeof(MetricsRow) * (size_t)(log->n ? 2 * log->n : 1));
    log->rows[log->n++] = *row;
}

MetricsLog metrics_read(const char *path) {
    size_t len;
    char *text = dt_read_file(path, &len);
    MetricsLog log = {NULL, 0};
    records_scan(text, len, path, collect_row, &log);
    free(text);
    return log;
}

void metrics_free(MetricsLog *log) {
    free(log->rows);
    log->rows = NULL;
    log->n = 0;
}

void metrics_column(const MetricsLog *log, const char *column, double *out) {
    for (int i = 0; i < log->n; i++) {
        const MetricsRow *r = &log->rows[i];
        if (!strcmp(column, "iteration")) {
            out[i] = r->iteration;
        } else if (!strcmp(column, "skipped")) {
            out[i] = r->skipped;
        } else if (!strncmp(column, "reward.", 7)) {
            out[i] = NAN;
            for (int k = 0; k < r->n_rewards; k++)
                if (!strcmp(r->reward_names[k], column + 7)) out[i] = r->reward_means[k];
        } else {
            const Field *f = NULL;
            for (size_t j = 0; j < N_NUMBERS; j++)
                if (!strcmp(column, NUMBERS[j].name)) f = &NUMBERS[j];
            for (size_t j = 0; j < N_SECONDS; j++)
                if (!strncmp(column, "seconds.", 8) && !strcmp(column + 8, SECONDS[j].name)) f = &SECONDS[j];
            CHECK(f, "see metrics.h for the column names", "unknown metrics column '%s'", column);
            out[i] = row_get(r, f);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// the writer

typedef struct {
    int keep_through;
    char *text;
    size_t len;
} KeepCtx;

static void keep_row(void *ctx, const MetricsRow *row, const char *line, size_t n) {
    KeepCtx *k = ctx;
    if (row->iteration > k->keep_through) return;
    memcpy(k->text + k->len, line, n);
    k->len += n;
    if (line[n - 1] != '\n') k->text[k->len++] = '\n';
}

void metrics_open(MetricsWriter *w, const char *path, int keep_through) {
    if (keep_through >= 0 && access(path, F_OK) == 0) {
        size_t len;
        char *text = dt_read_file(path, &len);
        KeepCtx k = {keep_through, xmalloc(len + 1), 0};
        records_scan(text, len, path, keep_row, &k);
        dt_write_file_atomic(path, k.text, k.len);
        free(k.text);
        free(text);
    } else {
        dt_write_file_atomic(path, "", 0);
    }
    w->f = dt_fopen(path, "a");
    w->path = xstrdup(path);
}

void metrics_write(MetricsWriter *w, const MetricsRow *row) {
    char *text = row_json(row);
    fputs(text, w->f);
    fputc('\n', w->f);
    free(text);
    if (fflush(w->f) != 0 || ferror(w->f)) dt_user_error("cannot write '%s' (disk full?)", w->path);
}

void metrics_close(MetricsWriter *w) {
    if (!w->f) return;
    if (fclose(w->f) != 0) dt_user_error("cannot write '%s' (disk full?)", w->path);
    w->f = NULL;
    free(w->path);
    w->path = NULL;
}

// ---------------------------------------------------------------------------------------------------------------
// progress

void progress_init(Progress *p, FILE *out, int total, int start, ProgressMode mode, int every) {
    p->out = out;
    p->total = total;
    p->start = start;
    p->every = every > 0 ? every : 1;
    p->t_start = dt_now();
    p->bar = mode == PROGRESS_OFF ? -1 : mode == PROGRESS_ON ? 1 : isatty(fileno(out)) ? 1 : 0;
}

// "45s", "1m15s", "2h05m"; "?" before any iteration finished.
static void format_duration(char *buf, size_t n, double s) {
    if (!(s >= 0 && s < 1e9)) {
        snprintf(buf, n, "?");
        return;
    }
    long t = lround(s);
    if (t < 60)
        snprintf(buf, n, "%lds", t);
    else if (t < 3600)
        snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
    else
        snprintf(buf, n, "%ldh%02ldm", t / 3600, t % 3600 / 60);
}

void progress_update(Progress *p, int iteration, double reward) {
    if (p->bar < 0) return;
    if (!p->bar && iteration % p->every != 0 && iteration != p->total) return;
    int done = iteration - p->start;
    double per_it = done > 0 ? (dt_now() - p->t_start) / done : NAN;
    char eta[32], rate[32] = "?";
    format_duration(eta, sizeof eta, per_it * (p->total - iteration));
    if (isfinite(per_it)) snprintf(rate, sizeof rate, "%.3g", per_it);
    if (p->bar) {
        char bar[21];
        int fill = p->total > 0 ? (int)(20LL * iteration / p->total) : 20;
        for (int i = 0; i < 20; i++) bar[i] = i < fill ? '#' : '.';
        bar[20] = 0;
        fprintf(p->out, "\r[%s] %d/%d it  %s s/it  ETA %s  reward %.4g\033[K", bar, iteration, p->total, rate, eta,
                reward);
    } else {
        fprintf(p->out, "it %d/%d  %s s/it  ETA %s  reward %.4g\n", iteration, p->total, rate, eta, reward);
    }
    fflush(p->out);
}

void progress_finish(Progress *p) {
    if (p->bar != 1) return;
    fputc('\n', p->out);
    fflush(p->out);
}
