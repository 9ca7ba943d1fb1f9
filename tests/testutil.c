// testutil.c: the shared test helpers of testutil.h. Plain C library and POSIX calls only, so a broken drtune
// library cannot take the checking machinery down with it.
#include "testutil.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <ftw.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int tu_checks, tu_failed;

// ---------------------------------------------------------------------------------------------------------------
// checks

int tu_expect(int ok, const char *file, int line, const char *fmt, ...) {
    tu_checks++;
    if (ok) return 1;
    tu_failed++;
    printf("FAIL %s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    return 0;
}

int tu_check(int ok, const char *fmt, ...) {
    tu_count(ok);
    printf("%s ", ok ? "ok  " : "FAIL");
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    return ok;
}

int tu_count(int ok) {
    tu_checks++;
    tu_failed += !ok;
    return ok;
}

int tu_report(void) {
    printf("%d passed, %d failed\n", tu_checks - tu_failed, tu_failed);
    return tu_failed ? 1 : 0;
}

// ---------------------------------------------------------------------------------------------------------------
// files

static char tu_dir[4096];
static pid_t tu_dir_owner;

static void *tu_realloc(void *p, size_t n) {
    void *q = realloc(p, n);
    if (!q) {
        printf("testutil: out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return q;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static void remove_tmpdir(void) {
    if (getpid() != tu_dir_owner) return; // a child running code under test exits through here too
    if (tu_failed) {
        printf("kept %s for inspection\n", tu_dir);
        return;
    }
    if (nftw(tu_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0) printf("could not remove %s\n", tu_dir);
}

const char *tu_tmpdir(const char *tag) {
    if (tu_dir[0]) return tu_dir;
    const char *base = getenv("TMPDIR");
    int n = snprintf(tu_dir, sizeof tu_dir, "%s/drtune_%s_XXXXXX", base && *base ? base : "/tmp", tag ? tag : "test");
    if (n < 0 || (size_t)n >= sizeof tu_dir || !mkdtemp(tu_dir)) {
        printf("testutil: cannot create a temporary folder %s: %s\n", tu_dir, strerror(errno));
        exit(1);
    }
    tu_dir_owner = getpid();
    atexit(remove_tmpdir);
    return tu_dir;
}

const char *tu_path(const char *name) {
    static char buf[8][4096 + 256];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, sizeof buf[0], "%s/%s", tu_tmpdir(NULL), name);
    return p;
}

void tu_write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(data, 1, n, f) == n;
    if (f && fclose(f) != 0) ok = 0;
    if (!ok) {
        printf("testutil: cannot write %s: %s\n", path, strerror(errno));
        exit(1);
    }
}

void tu_write_text(const char *path, const char *text) { tu_write_bytes(path, text, strlen(text)); }

char *tu_read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, len = 0;
    char *buf = tu_realloc(NULL, cap);
    for (size_t r; (r = fread(buf + len, 1, cap - len - 1, f)) > 0;) {
        len += r;
        if (len + 1 == cap) buf = tu_realloc(buf, cap *= 2);
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return NULL;
    }
    buf[len] = 0;
    if (n) *n = len;
    return buf;
}

// ---------------------------------------------------------------------------------------------------------------
// child processes

typedef struct {
    char *data;
    size_t len, cap;
} Sink;

// Reads what is available on fd into s; returns 0 at end of file.
static int drain(int fd, Sink *s) {
    if (s->len + 4096 + 1 > s->cap) s->data = tu_realloc(s->data, s->cap = 2 * s->cap + 4096 + 1);
    ssize_t r = read(fd, s->data + s->len, s->cap - s->len - 1);
    if (r < 0 && (errno == EINTR || errno == EAGAIN)) return 1;
    if (r <= 0) return 0;
    s->len += (size_t)r;
    return 1;
}

int tu_run_child(TuChildFn fn, const void *arg, TuChild *c) {
    int out[2], err[2];
    if (pipe(out) != 0 || pipe(err) != 0) {
        perror("testutil: pipe");
        exit(1);
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        perror("testutil: fork");
        exit(1);
    }
    if (pid == 0) {
        dup2(out[1], 1);
        dup2(err[1], 2);
        close(out[0]), close(out[1]), close(err[0]), close(err[1]);
        fn(arg);
        fflush(stdout);
        fflush(stderr);
        _exit(0);
    }
    close(out[1]);
    close(err[1]);
    Sink sink[2] = {{0}, {0}};
    struct pollfd p[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
    for (int open = 2; open > 0;) {
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR) continue;
            perror("testutil: poll");
            exit(1);
        }
        for (int i = 0; i < 2; i++)
            if (p[i].fd >= 0 && p[i].revents && !drain(p[i].fd, &sink[i])) {
                close(p[i].fd);
                p[i].fd = -1;
                open--;
            }
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    c->code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    for (int i = 0; i < 2; i++) {
        if (!sink[i].data) sink[i].data = tu_realloc(NULL, 1);
        sink[i].data[sink[i].len] = 0;
    }
    c->out = sink[0].data, c->out_len = sink[0].len;
    c->err = sink[1].data, c->err_len = sink[1].len;
    return c->code;
}

void tu_child_free(TuChild *c) {
    free(c->out);
    free(c->err);
    c->out = c->err = NULL;
}

int tu_is_user_error(const TuChild *c, const char *needle) {
    size_t n = c->err_len;
    int one_line = n > 0 && c->err[n - 1] == '\n' && memchr(c->err, '\n', n - 1) == NULL;
    return c->code == 2 && one_line && !strncmp(c->err, "drtune: error: ", 15) && (!needle || strstr(c->err, needle));
}

int tu_expect_user_error(const char *file, int line, TuChildFn fn, const void *arg, ...) {
    TuChild c;
    tu_run_child(fn, arg, &c);
    int ok = tu_is_user_error(&c, NULL);
    char wanted[2048] = "";
    size_t w = 0;
    va_list ap;
    va_start(ap, arg);
    for (const char *needle; (needle = va_arg(ap, const char *)) != NULL;) {
        ok &= strstr(c.err, needle) != NULL;
        int k = snprintf(wanted + w, sizeof wanted - w, "%s'%s'", w ? " and " : "", needle);
        if (k > 0) w = w + (size_t)k < sizeof wanted ? w + (size_t)k : sizeof wanted - 1;
    }
    va_end(ap);
    if (ok) {
        tu_count(1);
        printf("ok   %s", c.err);
    } else {
        tu_expect(0, file, line, "exit %d, stderr: %s(wanted %s)", c.code, c.err,
                  w ? wanted : "one \"drtune: error:\" line");
    }
    tu_child_free(&c);
    return ok;
}

// The child's work for tu_run_drtune: the drtune binary ctest names in DRTUNE_BIN, through the shell.
static void exec_drtune(const void *args) {
    const char *bin = getenv("DRTUNE_BIN");
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "exec '%s' %s", bin ? bin : "drtune", (const char *)args);
    execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
    perror("/bin/sh");
    _exit(127);
}

int tu_run_drtune(const char *args, TuChild *c) { return tu_run_child(exec_drtune, args, c); }

int tu_metrics_ok(const char *dir, int rows) {
    char path[4300];
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    char *text = tu_read_all(path, NULL), *save = NULL;
    if (!text) return 0;
    int n = 0, ok = 1;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save), n++) {
        cJSON *row = cJSON_Parse(line);
        cJSON *r = cJSON_GetObjectItemCaseSensitive(row, "reward_mean");
        ok &= cJSON_IsNumber(r) && isfinite(r->valuedouble);
        cJSON_Delete(row);
    }
    free(text);
    return ok && n == rows;
}
