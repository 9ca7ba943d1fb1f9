// args.h: option values of the eval, grad and bench memory commands, checked the same way everywhere: a bad value
// is one "drtune: error:" line naming the option, the value and what it accepts.
#pragma once

// The value after option argv[*i] (advancing *i); user error when it is missing.
const char *args_value(int argc, char **argv, int *i);
// An integer in [lo, hi].
int args_int(const char *opt, const char *v, int lo, int hi);
// A finite number in [lo, hi].
double args_double(const char *opt, const char *v, double lo, double hi);
// A comma-separated list of 1..max integers in [lo, hi] into out; returns the count.
int args_int_list(const char *opt, const char *v, int *out, int max, int lo, int hi);
// A comma-separated list of 1..max distinct names of at most 31 bytes into out; returns the count.
int args_name_list(const char *opt, const char *v, char (*out)[32], int max);
// A comma-separated list of 1..max finite numbers in [lo, hi] into out; returns the count.
int args_double_list(const char *opt, const char *v, double *out, int max, double lo, double hi);
