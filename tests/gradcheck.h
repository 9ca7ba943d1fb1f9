// gradcheck.h: finite-difference gradient checking for ops and layers.
//
// The checked scalar is L = sum_k <R_k, out_k> with fixed random R_k, accumulated in double. For each checked tensor
// (input or parameter) the harness compares the analytic gradient from the op's backward with a central difference
// refined by Richardson extrapolation, D = (4 D(h/2) - D(h)) / 3, whose truncation error is O(h^4): with h = 1e-2 and
// fp32 forwards the remaining error is dominated by fp32 rounding of the outputs, about
// 2^-24 * sum|R * out| / h per element, which the harness adds to the tolerance explicitly (printed as "noise").
// A tensor passes when max|analytic - numeric| <= rtol * max|numeric| + noise.
// It also checks the accumulation contract: a second backward call must double parameter gradients and leave input
// gradients unchanged (written, not accumulated).
#pragma once
#include <stdint.h>

#include "../src/core/tensor.h"

#define GC_MAX 12

typedef struct {
    const char *name;          // op name for the report
    void *ctx;                 // passed to forward / backward
    void (*forward)(void *ctx);  // computes every output from the current inputs
    void (*backward)(void *ctx); // reads douts, writes input grads, accumulates param grads
    int n_wrt;                 // tensors checked
    Tensor *wrt[GC_MAX];       // the values perturbed
    Tensor *grad[GC_MAX];      // their analytic gradients (same shape)
    int is_param[GC_MAX];      // 1: gradient accumulates (+=); 0: written
    int n_out;
    Tensor *out[GC_MAX];       // outputs read by L
    Tensor *dout[GC_MAX];      // upstream gradients (filled with R by the harness)
    double h;                  // step (default 1e-2)
    double rtol;               // default 2e-4
    int max_elems;             // elements checked per tensor (default 4096; a random subset beyond)
} GradCheck;

// Runs the check; prints one line per tensor; returns the number of failures.
int gradcheck_run(GradCheck *gc);

// Test helpers: fp32 CPU tensors owned by the test (freed at exit by the OS).
// A zero-filled fp32 CPU tensor, freed when the program exits unless gc_free releases its data earlier.
Tensor gc_tensor(int ndim, const int64_t *shape);
// free(p), and p is no longer freed at exit when gc_tensor made it (any pointer may be given).
void gc_free(void *p);
#define GC_TENSOR(...) gc_tensor((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[]){__VA_ARGS__})
// Fills with uniform values in [lo, hi) from a fixed stream.
void gc_fill_uniform(Tensor *t, float lo, float hi, uint64_t stream);
void gc_fill_normal(Tensor *t, float scale, uint64_t stream);
// Returns 0 if the tests passed; prints "N passed, M failed".
int gc_report(int failures, int checks);
