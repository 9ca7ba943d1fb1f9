// common.h: error reporting, checked allocation and small utilities shared by every layer.
// Two kinds of failure exist and they are reported differently:
//   - user errors (bad path, bad config value, malformed file, wrong tensor shape from a file): one clear line
//     "drtune: error: ..." and exit code 2, never a crash;
//   - internal failures (a violated invariant, an allocation failure, a failing library call): file:line, what
//     failed, a hint, and exit code 1.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#if defined(__GNUC__)
#define DT_NORETURN __attribute__((noreturn))
#define DT_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define DT_NORETURN
#define DT_PRINTF(a, b)
#endif

#ifdef __cplusplus
extern "C" {
#endif

// Internal failure: prints "drtune: fatal at file:line: msg (hint: ...)" and exits 1.
DT_NORETURN void dt_fatal(const char *file, int line, const char *hint, const char *fmt, ...) DT_PRINTF(4, 5);
// User error: prints "drtune: error: msg" and exits 2.
DT_NORETURN void dt_user_error(const char *fmt, ...) DT_PRINTF(1, 2);
// Optional hook that ends the process instead of the plain print-and-exit: it receives the exit code and the
// error line without its prefix, and prints it (or lets rank 0 print it) before ending the job. The distributed
// layer uses it to end every rank cleanly when all of them failed alike, or to abort the job naming the rank.
// A hook that returns leaves the printing and the exit to the caller.
void dt_set_exit_hook(void (*hook)(int code, const char *line));
// The error-line prefix ("[rank 3] ", or "").
const char *dt_error_prefix(void);
// Prefix for error lines ("[rank 3] "), set by the distributed layer.
void dt_set_error_prefix(const char *prefix);

#define CHECK(cond, hint, ...) \
    do { if (!(cond)) dt_fatal(__FILE__, __LINE__, (hint), __VA_ARGS__); } while (0)
#define FATAL(hint, ...) dt_fatal(__FILE__, __LINE__, (hint), __VA_ARGS__)
#define USER_CHECK(cond, ...) \
    do { if (!(cond)) dt_user_error(__VA_ARGS__); } while (0)

void *dt_malloc_(size_t bytes, const char *file, int line);
void *dt_calloc_(size_t n, size_t size, const char *file, int line);
void *dt_realloc_(void *p, size_t bytes, const char *file, int line);
// 64-byte aligned allocation (cache lines and AVX-512), freed with free().
void *dt_aligned_alloc_(size_t bytes, const char *file, int line);
char *dt_strdup_(const char *s, const char *file, int line);
#define xmalloc(b) dt_malloc_((b), __FILE__, __LINE__)
#define xcalloc(n, s) dt_calloc_((n), (s), __FILE__, __LINE__)
#define xrealloc(p, b) dt_realloc_((p), (b), __FILE__, __LINE__)
#define xaligned_alloc(b) dt_aligned_alloc_((b), __FILE__, __LINE__)
#define xstrdup(s) dt_strdup_((s), __FILE__, __LINE__)

// Checked fopen: a user error naming the path and the reason when it fails.
FILE *dt_fopen(const char *path, const char *mode);
// Reads a whole file into a NUL-terminated buffer; *len receives the size. User error on failure.
char *dt_read_file(const char *path, size_t *len);
// Writes bytes to path atomically (temporary file in the same folder, fsync, rename). User error on failure.
void dt_write_file_atomic(const char *path, const void *data, size_t len);
// Copies a file: dt_read_file, then dt_write_file_atomic.
void dt_copy_file(const char *src, const char *dst);

// snprintf into a path buffer; a user error (naming the start of the path) when it does not fit.
const char *dt_path(char *buf, size_t n, const char *fmt, ...) DT_PRINTF(3, 4);
// mkdir -p; user error naming the folder when it cannot be created.
void dt_mkdirs(const char *path);

// A decimal integer in [lo, hi] written plainly: an optional '-' and digits, nothing else (no '+', no spaces, no
// other base). Returns 1 and sets *out, or 0. Every integer setting and option is read with it.
int dt_parse_int(const char *s, long lo, long hi, long *out);

// Monotonic wall clock in seconds.
double dt_now(void);
// Peak resident memory of this process in bytes (from the kernel's accounting).
size_t dt_peak_rss(void);
// Human-readable byte count into buf ("1.50 GiB").
const char *dt_format_bytes(char *buf, size_t bufsize, double bytes);

#ifdef __cplusplus
}
#endif
