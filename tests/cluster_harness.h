// cluster_harness.h: what the cluster tests share: shell commands with their output and a deadline, process groups
// that can be killed whole, and a private single-node Slurm (tests/slurm_harness.sh) with job polling. Header-only
// (static inline) because every tests/<label>_<name>.c file becomes a test of its own.
#pragma once
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../src/core/common.h"
#include "testutil.h"

static const char *ch_bin; // $DRTUNE_BIN

static inline void ch_sleep(double s) { usleep((useconds_t)(s * 1e6)); }

// `sh -c cmd` with stdout and stderr together in *out (malloc'd, may be NULL); returns the exit code (128 + signal).
static inline int ch_sh(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline int ch_sh(char **out, const char *fmt, ...) {
    char cmd[16384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    char full[16400];
    snprintf(full, sizeof full, "%s 2>&1", cmd);
    fflush(stdout);
    FILE *p = popen(full, "r");
    if (!p) return -1;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    size_t r;
    while ((r = fread(buf + n, 1, cap - n - 1, p)) > 0) {
        n += r;
        if (n + 1 == cap) buf = realloc(buf, cap *= 2);
    }
    buf[n] = 0;
    int st = pclose(p);
    if (out) *out = buf;
    else free(buf);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

// `sh -c cmd > log 2>&1` in a new process group (kill(-pid, ...) reaches everything it starts); returns the pid.
static inline pid_t ch_spawn(const char *cmd, const char *log) {
    char full[16400];
    snprintf(full, sizeof full, "exec >'%s' 2>&1; %s", log, cmd);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        execl("/bin/sh", "sh", "-c", full, (char *)NULL);
        _exit(127);
    }
    setpgid(pid, pid);
    return pid;
}

// Exit code of pid (128 + signal); -1 after killing its group at the deadline.
static inline int ch_wait(pid_t pid, double timeout_s) {
    double t0 = dt_now();
    int st;
    for (;;) {
        if (waitpid(pid, &st, WNOHANG) == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        if (dt_now() - t0 > timeout_s) {
            kill(-pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        ch_sleep(0.05);
    }
}

static inline int ch_exists(const char *path) {
    struct stat s;
    return stat(path, &s) == 0;
}

// Lines in a file (0 when it cannot be read).
static inline int ch_lines(const char *path) {
    char *t = tu_read_all(path, NULL);
    int n = 0;
    for (char *p = t; p && *p; p++) n += *p == '\n';
    free(t);
    return n;
}

// Waits until path has at least n lines; returns whether it did before the deadline.
static inline int ch_wait_lines(const char *path, int n, double timeout_s) {
    for (double t0 = dt_now(); dt_now() - t0 < timeout_s; ch_sleep(0.05))
        if (ch_lines(path) >= n) return 1;
    return 0;
}

// Whether two files hold the same bytes (both readable).
static inline int ch_same_file(const char *a, const char *b) {
    size_t na, nb;
    char *x = tu_read_all(a, &na), *y = tu_read_all(b, &nb);
    int same = x && y && na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return same;
}

static inline int ch_contains(const char *path, const char *needle) {
    char *t = tu_read_all(path, NULL);
    int has = t && strstr(t, needle) != NULL;
    free(t);
    return has;
}

// ---------------------------------------------------------------------------------------------------------------
// the private Slurm

static char ch_slurm_dir[4200];

static inline void ch_slurm_stop(void) {
    if (!ch_slurm_dir[0]) return;
    ch_sh(NULL, "tests/slurm_harness.sh stop '%s'", ch_slurm_dir);
    ch_slurm_dir[0] = 0;
}

// Starts the private Slurm (SLURM_CONF set for everything this test runs next) and returns 1; prints why and
// returns 0 when Slurm cannot run here. It stops at exit, and by itself if this process dies first.
static inline int ch_slurm_start(void) {
    snprintf(ch_slurm_dir, sizeof ch_slurm_dir, "%s", tu_path("slurm"));
    mkdir(ch_slurm_dir, 0700);
    char *out = NULL;
    double t0 = dt_now();
    int rc = ch_sh(&out, "tests/slurm_harness.sh start '%s' %d", ch_slurm_dir, (int)getpid());
    char *conf = out ? strstr(out, "SLURM_CONF=") : NULL;
    if (rc != 0 || !conf) {
        printf("skip: %s", out && *out ? out : "tests/slurm_harness.sh failed\n");
        free(out);
        ch_slurm_dir[0] = 0;
        return 0;
    }
    conf[strcspn(conf, "\n")] = 0;
    setenv("SLURM_CONF", conf + strlen("SLURM_CONF="), 1);
    printf("private Slurm up in %.1f s (%s)\n", dt_now() - t0, conf);
    free(out);
    atexit(ch_slurm_stop);
    return 1;
}

// sbatch ARGS (with DRTUNE_BIN=$DRTUNE_BIN and the env words given); returns the job id, 0 on failure.
static inline long ch_sbatch(const char *env, const char *args) {
    char *out = NULL;
    int rc = ch_sh(&out, "env DRTUNE_BIN='%s' %s sbatch --parsable %s", ch_bin, env, args);
    long id = rc == 0 && out ? strtol(out, NULL, 10) : 0;
    if (!id) printf("sbatch %s failed (exit %d): %s\n", args, rc, out ? out : "");
    free(out);
    return id;
}

// A field of `scontrol show job -o ID` ("JobState", "Reason", "Restarts", ...) into buf; "" when absent.
static inline void ch_job_field(long id, const char *field, char *buf, size_t n) {
    char *out = NULL, key[64];
    buf[0] = 0;
    ch_sh(&out, "scontrol show job -o %ld", id);
    snprintf(key, sizeof key, " %s=", field);
    char *p = out ? strstr(out, key) : NULL;
    if (p) {
        p += strlen(key);
        snprintf(buf, n, "%.*s", (int)strcspn(p, " \n"), p);
    }
    free(out);
}

// Waits for the job to end; returns its final state (COMPLETED, FAILED, ...) in state and its restart count.
// Slurm holds a requeued batch job back for about two minutes before it may start again; the wait lifts that hold
// (scontrol update StartTime=now) so the requeue path runs in seconds.
static inline int ch_job_wait(long id, double timeout_s, char *state, size_t n) {
    char reason[128], restarts[32];
    for (double t0 = dt_now(); dt_now() - t0 < timeout_s; ch_sleep(0.2)) {
        ch_job_field(id, "JobState", state, n);
        ch_job_field(id, "Reason", reason, sizeof reason);
        if (!strcmp(state, "PENDING") && !strcmp(reason, "BeginTime"))
            ch_sh(NULL, "scontrol update JobId=%ld StartTime=now", id);
        if (state[0] && strcmp(state, "PENDING") && strcmp(state, "RUNNING") && strcmp(state, "REQUEUED") &&
            strcmp(state, "COMPLETING") && strcmp(state, "CONFIGURING")) {
            ch_job_field(id, "Restarts", restarts, sizeof restarts);
            return atoi(restarts);
        }
    }
    char last[64];
    snprintf(last, sizeof last, "%.63s", state);
    snprintf(state, n, "TIMEOUT (still %s after %.0f s)", last, timeout_s);
    ch_sh(NULL, "scancel %ld", id);
    return -1;
}
