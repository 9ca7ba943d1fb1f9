// testutil.h: what the test programs share: counted checks and the closing "N passed, M failed" report, a private
// temporary folder, whole-file reads and writes, and running code in a child process to check how it ends (above
// all the user-error contract: exit code 2 after exactly one "drtune: error:" line on stderr).
#pragma once
#include <stddef.h>

#if defined(__GNUC__)
#define TU_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define TU_PRINTF(a, b)
#endif

// ---------------------------------------------------------------------------------------------------------------
// checks

extern int tu_checks, tu_failed;

// Counts one check and returns ok; a failure prints "FAIL file:line: <message>".
int tu_expect(int ok, const char *file, int line, const char *fmt, ...) TU_PRINTF(4, 5);
// tu_expect at the caller's line; the message and its arguments are evaluated only when cond fails.
#define TU_EXPECT(cond, ...)                                                                                       \
    ((cond) ? tu_expect(1, __FILE__, __LINE__, "ok") : tu_expect(0, __FILE__, __LINE__, __VA_ARGS__))
// Counts one check and prints "ok   <message>" or "FAIL <message>" either way; returns ok.
int tu_check(int ok, const char *fmt, ...) TU_PRINTF(2, 3);
// Counts one check whose outcome the caller has already printed; returns ok.
int tu_count(int ok);
// Prints "N passed, M failed" and returns the exit code for main: 0 when nothing failed, else 1.
int tu_report(void);

// ---------------------------------------------------------------------------------------------------------------
// files

// The test's own temporary folder, $TMPDIR (or /tmp) / drtune_<tag>_XXXXXX, created by the first call (later calls
// return it; tag NULL means "test"). At exit it is removed with its contents if no check failed, else kept and named.
const char *tu_tmpdir(const char *tag);
// tu_tmpdir()/name; the result lives until eight later calls.
const char *tu_path(const char *name);
// Writes exactly n bytes (or the text) to path, replacing the file; exits 1 if it cannot.
void tu_write_bytes(const char *path, const void *data, size_t n);
void tu_write_text(const char *path, const char *text);
// The whole file, NUL-terminated (free it), with its size in *n when n is not NULL; NULL if it cannot be read.
char *tu_read_all(const char *path, size_t *n);

// ---------------------------------------------------------------------------------------------------------------
// child processes

typedef void (*TuChildFn)(const void *arg);

typedef struct {
    int code;       // exit code; 128 + the signal number when a signal ended it
    char *out;      // what it wrote to stdout, NUL-terminated
    char *err;      // what it wrote to stderr, NUL-terminated
    size_t out_len, err_len;
} TuChild;

// Runs fn(arg) in a child process (a child whose fn returns exits 0), capturing its stdout and stderr separately;
// returns the exit code, also in c->code. Release c with tu_child_free.
int tu_run_child(TuChildFn fn, const void *arg, TuChild *c);
// `$DRTUNE_BIN <args>` through /bin/sh in a child (args may carry shell redirections); as tu_run_child.
int tu_run_drtune(const char *args, TuChild *c);
void tu_child_free(TuChild *c);
// Whether DIR/metrics.jsonl of a drtune train run has exactly `rows` rows, each with a finite reward_mean.
int tu_metrics_ok(const char *dir, int rows);
// Whether the child ended as a user error: exit code 2 and exactly one stderr line, starting "drtune: error: " and
// containing needle (NULL: any).
int tu_is_user_error(const TuChild *c, const char *needle);
// Runs fn(arg) in a child and counts one check that it ends as a user error whose line holds every needle given
// (the list ends at the first NULL); prints "ok   <the line>", or a FAIL naming file:line, the exit code and stderr.
int tu_expect_user_error(const char *file, int line, TuChildFn fn, const void *arg, ...);
#define TU_EXPECT_USER_ERROR(fn, arg, ...)                                                                         \
    tu_expect_user_error(__FILE__, __LINE__, fn, arg, __VA_ARGS__, (const char *)NULL)
