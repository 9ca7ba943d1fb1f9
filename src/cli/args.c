// args.c: the option-value parsers of args.h.
#include "args.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"

const char *args_value(int argc, char **argv, int *i) {
    USER_CHECK(*i + 1 < argc, "option %s needs a value", argv[*i]);
    return argv[++*i];
}

int args_int(const char *opt, const char *v, int lo, int hi) {
    long x;
    USER_CHECK(dt_parse_int(v, lo, hi, &x), "%s: '%.60s' is not an integer in [%d, %d]", opt, v, lo, hi);
    return (int)x;
}

double args_double(const char *opt, const char *v, double lo, double hi) {
    char *end;
    double x = strtod(v, &end);
    USER_CHECK(*v && !*end && isfinite(x) && x >= lo && x <= hi, "%s: '%.60s' is not a number in [%g, %g]", opt, v,
               lo, hi);
    return x;
}

// Splits v at commas into at most max items (trimmed of spaces); returns the count. The items point into *copy.
static int split(const char *opt, const char *v, char **copy, char **items, int max) {
    *copy = xstrdup(v);
    int n = 0;
    for (char *p = *copy;;) {
        char *comma = strchr(p, ',');
        if (comma) *comma = 0;
        while (*p == ' ') p++;
        size_t len = strlen(p);
        while (len && p[len - 1] == ' ') p[--len] = 0;
        USER_CHECK(len > 0, "%s: empty item in '%.60s'", opt, v);
        USER_CHECK(n < max, "%s: more than %d items in '%.60s'", opt, max, v);
        items[n++] = p;
        if (!comma) break;
        p = comma + 1;
    }
    return n;
}

int args_int_list(const char *opt, const char *v, int *out, int max, int lo, int hi) {
    char *copy, **items = xmalloc(sizeof(char *) * (size_t)max);
    int n = split(opt, v, &copy, items, max);
    for (int i = 0; i < n; i++) out[i] = args_int(opt, items[i], lo, hi);
    free(items);
    free(copy);
    return n;
}

int args_name_list(const char *opt, const char *v, char (*out)[32], int max) {
    char *copy, **items = xmalloc(sizeof(char *) * (size_t)max);
    int n = split(opt, v, &copy, items, max);
    for (int i = 0; i < n; i++) {
        USER_CHECK(strlen(items[i]) < 32, "%s: name '%.60s' is longer than 31 bytes", opt, items[i]);
        for (int j = 0; j < i; j++) USER_CHECK(strcmp(out[j], items[i]) != 0, "%s: '%s' appears twice", opt, items[i]);
        strcpy(out[i], items[i]);
    }
    free(items);
    free(copy);
    return n;
}

int args_double_list(const char *opt, const char *v, double *out, int max, double lo, double hi) {
    char *copy, **items = xmalloc(sizeof(char *) * (size_t)max);
    int n = split(opt, v, &copy, items, max);
    for (int i = 0; i < n; i++) out[i] = args_double(opt, items[i], lo, hi);
    free(items);
    free(copy);
    return n;
}
