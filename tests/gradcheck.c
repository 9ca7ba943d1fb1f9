// gradcheck.c: the finite-difference harness of gradcheck.h.
#include "gradcheck.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/core/common.h"
#include "../src/core/rng.h"
#include "../src/ops/ops.h"

// Every tensor gc_tensor made, freed at exit (the checks keep them for the whole program; a leak check at exit
// would otherwise report each one).
static void **g_made;
static int g_n_made, g_cap_made;

static void free_made(void) {
    for (int i = 0; i < g_n_made; i++) free(g_made[i]);
    free(g_made);
}

void gc_free(void *p) {
    for (int i = g_n_made - 1; i >= 0; i--)
        if (g_made[i] == p) {
            g_made[i] = g_made[--g_n_made];
            break;
        }
    free(p);
}

Tensor gc_tensor(int ndim, const int64_t *shape) {
    Tensor t = tensor_make(NULL, DTYPE_F32, DEVICE_CPU, ndim, shape);
    t.data = xcalloc((size_t)tensor_numel(&t) + 1, sizeof(float));
    if (g_n_made == g_cap_made) {
        if (!g_cap_made) atexit(free_made);
        g_cap_made = g_cap_made ? 2 * g_cap_made : 256;
        g_made = xrealloc(g_made, sizeof(void *) * (size_t)g_cap_made);
    }
    g_made[g_n_made++] = t.data;
    return t;
}

void gc_fill_uniform(Tensor *t, float lo, float hi, uint64_t stream) {
    float *p = tensor_f32(t);
    int64_t n = tensor_numel(t);
    rng_uniform_fill(p, n, 1234, RNG_STREAM(RNG_PURPOSE_TEST, stream, 0), 0);
    for (int64_t i = 0; i < n; i++) p[i] = lo + (hi - lo) * p[i];
}

void gc_fill_normal(Tensor *t, float scale, uint64_t stream) {
    float *p = tensor_f32(t);
    int64_t n = tensor_numel(t);
    rng_normal_fill(p, n, 1234, RNG_STREAM(RNG_PURPOSE_TEST, stream, 1), 0);
    for (int64_t i = 0; i < n; i++) p[i] *= scale;
}

static float **g_saved; // outputs of the +h evaluation

// Central difference of L along one element, computed term by term: outputs that x does not influence are
// recomputed identically and cancel exactly, so only the changed outputs contribute rounding noise, which is
// returned in *noise (2^-24 relative per changed output, both evaluations).
static double central(GradCheck *gc, float *x, double h, double *noise) {
    float x0 = *x;
    *x = (float)(x0 + h);
    double step = (double)*x - x0;
    gc->forward(gc->ctx);
    for (int k = 0; k < gc->n_out; k++)
        memcpy(g_saved[k], gc->out[k]->data, sizeof(float) * (size_t)tensor_numel(gc->out[k]));
    *x = (float)(x0 - h);
    step += x0 - (double)*x;
    gc->forward(gc->ctx);
    *x = x0;
    double diff = 0.0, nz = 0.0;
    for (int k = 0; k < gc->n_out; k++) {
        const float *om = tensor_f32(gc->out[k]), *r = tensor_f32(gc->dout[k]), *op = g_saved[k];
        int64_t n = tensor_numel(gc->out[k]);
        for (int64_t i = 0; i < n; i++) {
            if (op[i] == om[i]) continue;
            diff += (double)r[i] * ((double)op[i] - (double)om[i]);
            nz += fabs((double)r[i]) * (fabs((double)op[i]) + fabs((double)om[i]));
        }
    }
    *noise = nz * 5.96e-8 / step;
    return diff / step;
}

int gradcheck_run(GradCheck *gc) {
    double h = gc->h > 0 ? gc->h : 1e-2, rtol = gc->rtol > 0 ? gc->rtol : 2e-4;
    int max_elems = gc->max_elems > 0 ? gc->max_elems : 4096;
    for (int k = 0; k < gc->n_out; k++) gc_fill_uniform(gc->dout[k], -1.0f, 1.0f, 900 + (uint64_t)k);
    // analytic gradients, twice, to check the accumulation contract
    for (int j = 0; j < gc->n_wrt; j++) tensor_fill(gc->grad[j], 0.0f);
    gc->forward(gc->ctx);
    gc->backward(gc->ctx);
    g_saved = xmalloc(sizeof(float *) * (size_t)gc->n_out);
    for (int k = 0; k < gc->n_out; k++) g_saved[k] = xmalloc(sizeof(float) * (size_t)tensor_numel(gc->out[k]));
    float **first = xmalloc(sizeof(float *) * (size_t)gc->n_wrt);
    for (int j = 0; j < gc->n_wrt; j++) {
        size_t n = (size_t)tensor_numel(gc->grad[j]);
        first[j] = xmalloc(sizeof(float) * n);
        memcpy(first[j], gc->grad[j]->data, sizeof(float) * n);
    }
    gc->forward(gc->ctx);
    gc->backward(gc->ctx);
    int failures = 0;
    for (int j = 0; j < gc->n_wrt; j++) {
        int64_t n = tensor_numel(gc->grad[j]);
        const float *g2 = tensor_f32(gc->grad[j]);
        double worst = 0.0;
        for (int64_t i = 0; i < n; i++) {
            double want = gc->is_param[j] ? 2.0 * first[j][i] : first[j][i];
            double e = fabs(g2[i] - want) / (fabs(want) + 1e-30);
            if (fabs(g2[i] - want) > 1e-6 * fabs(want) + 1e-30 && e > worst) worst = e;
        }
        if (worst > 0.0) {
            printf("FAIL %-28s wrt %d: second backward %s (rel err %.3g)\n", gc->name, j,
                   gc->is_param[j] ? "did not accumulate (+=)" : "accumulated instead of writing", worst);
            failures++;
        }
    }
    // numeric gradients
    for (int j = 0; j < gc->n_wrt; j++) {
        int64_t n = tensor_numel(gc->wrt[j]);
        float *x = tensor_f32(gc->wrt[j]);
        const float *a = first[j];
        int64_t count = n < max_elems ? n : max_elems;
        double max_err = 0.0, max_num = 0.0, noise = 0.0;
        int64_t worst_i = -1;
        double worst_a = 0, worst_n = 0;
        for (int64_t c = 0; c < count; c++) {
            int64_t i = n <= max_elems ? c : rng_randint(7, 77, (uint64_t)c, 0, n - 1);
            double n1, n2;
            double d1 = central(gc, &x[i], h, &n1);
            double d2 = central(gc, &x[i], h / 2, &n2);
            double num = (4.0 * d2 - d1) / 3.0;
            double nz = (4.0 * n2 + n1) / 3.0; // rounding noise carried through the extrapolation
            if (nz > noise) noise = nz;
            double err = fabs(num - a[i]);
            if (fabs(num) > max_num) max_num = fabs(num);
            if (err > max_err) {
                max_err = err;
                worst_i = i;
                worst_a = a[i];
                worst_n = num;
            }
        }
        double bound = rtol * max_num + noise;
        int ok = max_err <= bound && isfinite(max_err);
        printf("%s %-28s wrt %d (%s, %lld el): max|a-n| %.3e  max|n| %.3e  bound %.3e (noise %.1e)\n",
               ok ? "ok  " : "FAIL", gc->name, j, gc->is_param[j] ? "param" : "input", (long long)count, max_err,
               max_num, bound, noise);
        if (!ok) {
            printf("     worst element %lld: analytic %.8g numeric %.8g\n", (long long)worst_i, worst_a, worst_n);
            failures++;
        }
    }
    for (int j = 0; j < gc->n_wrt; j++) free(first[j]);
    free(first);
    for (int k = 0; k < gc->n_out; k++) free(g_saved[k]);
    free(g_saved);
    return failures;
}

int gc_report(int failures, int checks) {
    // failures counts failing tensors (a check may fail on several); report checks
    int failed = failures < checks ? failures : checks;
    printf("%d passed, %d failed\n", checks - failed, failed);
    return failures ? 1 : 0;
}
