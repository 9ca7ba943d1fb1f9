// common.c: the error-reporting and allocation helpers declared in common.h.

#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void (*g_exit_hook)(int, const char *) = NULL;
static char g_prefix[64] = "";

void dt_set_exit_hook(void (*hook)(int code, const char *line)) { g_exit_hook = hook; }
void dt_set_error_prefix(const char *prefix) { snprintf(g_prefix, sizeof g_prefix, "%s", prefix ? prefix : ""); }
const char *dt_error_prefix(void) { return g_prefix; }

// Ends the process with one error line: through the hook when one is set, else printed with the prefix.
static DT_NORETURN void dt_exit(int code, const char *line) {
    fflush(stdout);
    fflush(stderr);
    if (g_exit_hook) g_exit_hook(code, line);
    fprintf(stderr, "%s%s\n", g_prefix, line);
    fflush(stderr);
    exit(code);
}

// "drtune: <kind>" + the formatted message (+ " (hint: ...)"), one line.
static void format_line(char *buf, size_t n, const char *head, const char *hint, const char *fmt, va_list ap) {
    size_t len = (size_t)snprintf(buf, n, "%s", head);
    if (len < n) vsnprintf(buf + len, n - len, fmt, ap);
    len = strlen(buf);
    if (hint && hint[0] && len < n) snprintf(buf + len, n - len, " (hint: %s)", hint);
    for (char *p = buf; *p; p++)
        if (*p == '\n') *p = ' '; // one line, whatever the message holds
}

void dt_fatal(const char *file, int line, const char *hint, const char *fmt, ...) {
    char head[512], msg[4096];
    snprintf(head, sizeof head, "drtune: fatal at %s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    format_line(msg, sizeof msg, head, hint, fmt, ap);
    va_end(ap);
    dt_exit(1, msg);
}

void dt_user_error(const char *fmt, ...) {
    char msg[4096];
    va_list ap;
    va_start(ap, fmt);
    format_line(msg, sizeof msg, "drtune: error: ", NULL, fmt, ap);
    va_end(ap);
    dt_exit(2, msg);
}

static DT_NORETURN void oom(size_t bytes, const char *file, int line) {
    char b[32];
    dt_fatal(file, line, "reduce the batch or the model size, or run on a machine with more memory",
             "out of memory allocating %s", dt_format_bytes(b, sizeof b, (double)bytes));
}

void *dt_malloc_(size_t bytes, const char *file, int line) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) oom(bytes, file, line);
    return p;
}

void *dt_calloc_(size_t n, size_t size, const char *file, int line) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) oom(n * size, file, line);
    return p;
}

void *dt_realloc_(void *p, size_t bytes, const char *file, int line) {
    void *q = realloc(p, bytes ? bytes : 1);
    if (!q) oom(bytes, file, line);
    return q;
}

void *dt_aligned_alloc_(size_t bytes, const char *file, int line) {
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) oom(bytes, file, line);
    return p;
}

char *dt_strdup_(const char *s, const char *file, int line) {
    size_t n = strlen(s) + 1;
    char *p = dt_malloc_(n, file, line);
    memcpy(p, s, n);
    return p;
}

FILE *dt_fopen(const char *path, const char *mode) {
    FILE *f = fopen(path, mode);
    if (!f) dt_user_error("cannot open '%s' (%s)", path, strerror(errno));
    return f;
}

char *dt_read_file(const char *path, size_t *len) {
    FILE *f = dt_fopen(path, "rb");
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        dt_user_error("'%s' is not a regular file", path);
    }
    size_t n = (size_t)st.st_size;
    char *buf = xmalloc(n + 1);
    if (n && fread(buf, 1, n, f) != n) {
        fclose(f);
        dt_user_error("cannot read '%s' (%s)", path, strerror(errno));
    }
    fclose(f);
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

void dt_write_file_atomic(const char *path, const void *data, size_t len) {
    size_t n = strlen(path);
    char *tmp = xmalloc(n + 32);
    snprintf(tmp, n + 32, "%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) dt_user_error("cannot write '%s' (%s)", tmp, strerror(errno));
    const char *p = data;
    size_t left = len;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR) continue;
            close(fd);
            unlink(tmp);
            dt_user_error("cannot write '%s' (%s)", tmp, strerror(errno));
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        unlink(tmp);
        dt_user_error("cannot flush '%s' (%s)", tmp, strerror(errno));
    }
    if (rename(tmp, path) != 0) {
        unlink(tmp);
        dt_user_error("cannot rename '%s' to '%s' (%s)", tmp, path, strerror(errno));
    }
    // make the rename itself durable
    char *dcopy = xstrdup(path);
    int dfd = open(dirname(dcopy), O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    free(dcopy);
    free(tmp);
}

void dt_copy_file(const char *src, const char *dst) {
    size_t len;
    char *data = dt_read_file(src, &len);
    dt_write_file_atomic(dst, data, len);
    free(data);
}

const char *dt_path(char *buf, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(buf, n, fmt, ap);
    va_end(ap);
    if (len < 0 || (size_t)len >= n) dt_user_error("path too long (%d bytes, at most %zu): '%.60s...'", len, n - 1, buf);
    return buf;
}

void dt_mkdirs(const char *path) {
    char buf[4096];
    dt_path(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(buf, 0755) != 0 && errno != EEXIST) dt_user_error("cannot create '%s' (%s)", buf, strerror(errno));
            *p = '/';
        }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) dt_user_error("cannot create '%s' (%s)", buf, strerror(errno));
}

int dt_parse_int(const char *s, long lo, long hi, long *out) {
    const char *d = s + (s[0] == '-');
    if (*d < '0' || *d > '9') return 0;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (*end || errno || v < lo || v > hi) return 0;
    *out = v;
    return 1;
}

double dt_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

size_t dt_peak_rss(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return (size_t)ru.ru_maxrss * 1024; // Linux reports KiB
}

const char *dt_format_bytes(char *buf, size_t bufsize, double bytes) {
    const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (bytes >= 1024.0 && u < 4) {
        bytes /= 1024.0;
        u++;
    }
    snprintf(buf, bufsize, u == 0 ? "%.0f %s" : "%.2f %s", bytes, units[u]);
    return buf;
}
