// dist_harness.h: what the distributed tests share: launching `drtune train` as one process or under mpirun
// ($DRTUNE_BIN, $DRTUNE_MPIEXEC from ctest), waiting with a deadline, and reading checkpoints back with serial HDF5
// to compare runs. Header-only (static inline) because every tests/<label>_<name>.c file becomes a test of its own.
#pragma once
#include <hdf5.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char dh_tmp[128];
static const char *dh_bin, *dh_mpiexec;
static int dh_fails, dh_checks;

static inline void dh_check(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline void dh_check(int ok, const char *fmt, ...) {
    va_list ap;
    dh_checks++;
    dh_fails += !ok;
    printf("%s ", ok ? "ok  " : "FAIL");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
}

static inline double dh_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline void dh_sleep(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

// Starts `env drtune train ARGS` (ranks 0: a plain process without mpirun; otherwise mpirun -np ranks) with its
// output in log. env: extra VAR=value words or "". Returns the pid (of drtune, or of mpirun).
static inline pid_t dh_spawn(int ranks, const char *env, const char *args, const char *log) {
    char cmd[8192], launcher[512] = "";
    if (ranks > 0)
        snprintf(launcher, sizeof launcher, "'%s' --oversubscribe -np %d ", dh_mpiexec, ranks);
    snprintf(cmd, sizeof cmd, "exec env OMP_NUM_THREADS=1 %s %s'%s' train %s >'%s' 2>&1", env, launcher, dh_bin, args,
             log);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    return pid;
}

// Exit code of pid; -signal when killed by a signal; -1000 after killing it at the deadline.
static inline int dh_wait(pid_t pid, double timeout_s) {
    double t0 = dh_now();
    int status;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
        if (dh_now() - t0 > timeout_s) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1000;
        }
        dh_sleep(0.02);
    }
}

static inline int dh_run(int ranks, const char *env, const char *args, const char *log) {
    return dh_wait(dh_spawn(ranks, env, args, log), 300);
}

static inline char *dh_read(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return calloc(1, 1);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = calloc((size_t)n + 1, 1);
    if (n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n) buf[0] = 0;
    fclose(f);
    return buf;
}

static inline int dh_contains(const char *path, const char *text) {
    char *s = dh_read(path);
    int found = strstr(s, text) != NULL;
    free(s);
    return found;
}

static inline int dh_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

// Complete lines of a file (metrics.jsonl rows that were flushed).
static inline int dh_lines(const char *path) {
    char *s = dh_read(path);
    int n = 0;
    for (char *p = s; *p; p++) n += *p == '\n';
    free(s);
    return n;
}

static inline void dh_init(const char *name) {
    dh_bin = getenv("DRTUNE_BIN");
    dh_mpiexec = getenv("DRTUNE_MPIEXEC");
    if (!dh_bin || !dh_mpiexec) {
        printf("skipped: DRTUNE_BIN and DRTUNE_MPIEXEC come from ctest\n");
        exit(77);
    }
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1); // CI containers run as root
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    setenv("OMPI_MCA_rmaps_base_oversubscribe", "1", 1);
    setbuf(stdout, NULL);
    snprintf(dh_tmp, sizeof dh_tmp, "/tmp/drtune_%s_XXXXXX", name);
    if (!mkdtemp(dh_tmp)) exit(1);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' init-weights --model configs/models/tiny-random --out %s/model --seed 1 >/dev/null",
             dh_bin, dh_tmp);
    if (system(cmd) != 0) {
        printf("FAIL cannot create the tiny random pipeline\n");
        exit(1);
    }
}

static inline int dh_finish(void) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dh_tmp);
    if (!dh_fails && system(cmd) != 0) printf("note: could not remove %s\n", dh_tmp);
    if (dh_fails) printf("files kept in %s\n", dh_tmp);
    printf("%d of %d checks passed\n", dh_checks - dh_fails, dh_checks);
    return dh_fails ? 1 : 0;
}

// The settings every run shares: the tiny model, 4 DDIM steps, 32 x 32 images (8 x 8 latents), global batch 4.
static inline const char *dh_common(void) {
    static char s[1024];
    snprintf(s, sizeof s,
             "--model.path=%s/model --sampler.steps=4 --sampler.height=32 --sampler.width=32 --train.batch=4 "
             "--method.k=2 --method.m=2 --train.threads=1 --log.sample_seeds=0 --log.progress=off "
             "--output.export=none --data.prompts=data/prompts/default.txt",
             dh_tmp);
    return s;
}

// ---------------------------------------------------------------------------------------------------------------
// reading checkpoints (serial HDF5)

typedef struct {
    float *data;
    size_t n, cap;
} DhFlat;

static inline herr_t dh_visit(hid_t g, const char *name, const H5L_info_t *info, void *ctx) {
    (void)info;
    DhFlat *f = ctx;
    hid_t ds = H5Dopen2(g, name, H5P_DEFAULT);
    if (ds < 0) return -1;
    hid_t sp = H5Dget_space(ds);
    size_t n = (size_t)H5Sget_simple_extent_npoints(sp);
    if (f->n + n > f->cap) f->data = realloc(f->data, sizeof(float) * (f->cap = 2 * (f->n + n)));
    herr_t rc = H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, f->data + f->n);
    f->n += n;
    H5Sclose(sp);
    H5Dclose(ds);
    return rc;
}

// All tensors of one group (params, adam_m, adam_v) in name order, concatenated; n = 0 when unreadable.
static inline float *dh_group(const char *path, const char *group, size_t *n) {
    DhFlat f = {NULL, 0, 0};
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t g = file >= 0 ? H5Gopen2(file, group, H5P_DEFAULT) : -1;
    if (g < 0 || H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, dh_visit, &f) < 0) f.n = 0;
    if (g >= 0) H5Gclose(g);
    if (file >= 0) H5Fclose(file);
    *n = f.n;
    return f.data;
}

static inline int64_t dh_attr(const char *path, const char *name) {
    int64_t v = -1;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t a = file >= 0 ? H5Aopen(file, name, H5P_DEFAULT) : -1;
    if (a < 0 || H5Aread(a, H5T_NATIVE_INT64, &v) < 0) v = -1;
    if (a >= 0) H5Aclose(a);
    if (file >= 0) H5Fclose(file);
    return v;
}

// ||a - b|| / ||a|| over one group of two checkpoints; INFINITY when they differ in size or cannot be read.
static inline double dh_rel_diff(const char *pa, const char *pb, const char *group) {
    size_t na, nb;
    float *a = dh_group(pa, group, &na), *b = dh_group(pb, group, &nb);
    double d = 0, s = 0;
    for (size_t i = 0; i < na && na == nb; i++) {
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        s += (double)a[i] * a[i];
    }
    free(a);
    free(b);
    return na == nb && na > 0 ? sqrt(d) / (s > 0 ? sqrt(s) : 1) : INFINITY;
}

// 1 when one group of two checkpoints is bit for bit the same.
static inline int dh_same_bits(const char *pa, const char *pb, const char *group) {
    size_t na, nb;
    float *a = dh_group(pa, group, &na), *b = dh_group(pb, group, &nb);
    int same = na == nb && na > 0 && !memcmp(a, b, sizeof(float) * na);
    free(a);
    free(b);
    return same;
}

// Field `key` of row `row` (0-based) of a metrics.jsonl; NAN when absent.
static inline double dh_metric(const char *path, int row, const char *key) {
    char *s = dh_read(path), *line = s, pat[64];
    for (int i = 0; i < row && line; i++) line = strchr(line, '\n'), line = line ? line + 1 : NULL;
    snprintf(pat, sizeof pat, "\"%s\":", key);
    char *end = line ? strchr(line, '\n') : NULL, *at = line ? strstr(line, pat) : NULL;
    double v = at && (!end || at < end) ? strtod(at + strlen(pat), NULL) : NAN;
    free(s);
    return v;
}
