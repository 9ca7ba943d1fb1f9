// parity.h: helpers shared by the model parity tests (parity_*.c): reference tensors read from a *_ref.safetensors
// fixture, and a per-tensor comparison max|got - ref| <= PARITY_RTOL * max|ref| with a report of the worst tensors.
#pragma once
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../src/core/common.h"
#include "../src/io/safetensors.h"

#define PARITY_RTOL 1e-4
// A parameter gradient whose reference is below PARITY_ZERO times the median gradient scale of the model is zero in
// exact arithmetic (e.g. an attention key bias, which shifts every score of a softmax row equally): both sides hold
// rounding noise, so it passes when the computed one is below that level too.
#define PARITY_ZERO 1e-5

typedef struct {
    char name[320];
    double diff, ref, got; // max |got - ref|, max |ref|, max |got|
    int bad;               // missing reference or other shape
} ParityRow;

typedef struct {
    ParityRow *rows;
    int n, cap;
} Parity;

static inline int parity_have(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

// A CPU f32 tensor holding the reference tensor name (its shape from the file).
static inline Tensor parity_load(const SafeTensors *st, const char *name) {
    const StTensor *t = safetensors_find(st, name);
    CHECK(t != NULL, "regenerate the fixtures (tools/reference/make_model_fixtures.py)", "'%s' has no tensor '%s'",
          st->path, name);
    Tensor out = tensor_make(NULL, DTYPE_F32, DEVICE_CPU, t->ndim, t->shape);
    out.data = xcalloc((size_t)tensor_numel(&out) + 1, sizeof(float));
    safetensors_read_into(st, name, &out);
    return out;
}

// Records got against the reference ref_name of st (judged by parity_report).
static inline void parity_check(Parity *p, const char *label, const Tensor *got, const SafeTensors *st,
                                const char *ref_name) {
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 256;
        p->rows = xrealloc(p->rows, sizeof(ParityRow) * (size_t)p->cap);
    }
    ParityRow *r = &p->rows[p->n++];
    memset(r, 0, sizeof *r);
    snprintf(r->name, sizeof r->name, "%s", label);
    const StTensor *t = safetensors_find(st, ref_name);
    int same = t && t->ndim == got->ndim;
    for (int d = 0; same && d < t->ndim; d++) same = t->shape[d] == got->shape[d];
    if (!same) {
        printf("FAIL %s: reference '%s' %s\n", label, ref_name, t ? "has another shape" : "is missing");
        r->bad = 1;
        return;
    }
    Tensor ref = parity_load(st, ref_name);
    const float *a = tensor_f32(got), *b = tensor_f32(&ref);
    for (int64_t i = 0; i < tensor_numel(got); i++) {
        double e = fabs((double)a[i] - (double)b[i]);
        r->diff = e > r->diff || isnan(e) ? e : r->diff;
        r->ref = fabs((double)b[i]) > r->ref ? fabs((double)b[i]) : r->ref;
        r->got = fabs((double)a[i]) > r->got || isnan(a[i]) ? fabs((double)a[i]) : r->got;
    }
    free(ref.data);
}

static inline double parity_rel(const ParityRow *r) { return r->ref > 0 ? r->diff / r->ref : r->diff; }

static inline int parity_cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

static inline int parity_cmp_rel(const void *x, const void *y) {
    double a = parity_rel(x), b = parity_rel(y);
    return a < b ? 1 : a > b ? -1 : 0;
}

// Judges every recorded tensor, prints the failures, the zero gradients and the worst tensors; returns the failures.
static inline int parity_report(Parity *p, const char *model) {
    double *scales = xmalloc(sizeof(double) * (size_t)(p->n + 1)), median = 0.0;
    int ns = 0, failures = 0;
    for (int i = 0; i < p->n; i++)
        if (!strncmp(p->rows[i].name, "grad.", 5) && !p->rows[i].bad) scales[ns++] = p->rows[i].ref;
    if (ns) {
        qsort(scales, (size_t)ns, sizeof *scales, parity_cmp_double);
        median = scales[ns / 2];
    }
    free(scales);
    double zero = PARITY_ZERO * median;
    for (int i = 0; i < p->n; i++) {
        ParityRow *r = &p->rows[i];
        if (r->bad) {
            failures++;
        } else if (!strncmp(r->name, "grad.", 5) && r->ref < zero) {
            int ok = r->got < zero;
            printf("%s %-60s zero gradient: max|ref| %.3e, max|got| %.3e (below %.0e x median scale %.3e)\n",
                   ok ? "ok  " : "FAIL", r->name, r->ref, r->got, PARITY_ZERO, median);
            failures += !ok;
            r->diff = 0.0; // judged; keep it out of the worst list
        } else if (!(r->diff <= PARITY_RTOL * r->ref)) {
            printf("FAIL %-60s max|diff| %.3e  max|ref| %.3e  rel %.3e\n", r->name, r->diff, r->ref, parity_rel(r));
            failures++;
        }
    }
    qsort(p->rows, (size_t)p->n, sizeof *p->rows, parity_cmp_rel);
    printf("%s: %d tensors compared, %d failed (max|diff| <= %.0e * max|ref| per tensor); worst:\n", model, p->n,
           failures, PARITY_RTOL);
    for (int i = 0; i < p->n && i < 8; i++)
        printf("  %-64s rel %.3e  (max|diff| %.3e, max|ref| %.3e)\n", p->rows[i].name, parity_rel(&p->rows[i]),
               p->rows[i].diff, p->rows[i].ref);
    free(p->rows);
    memset(p, 0, sizeof *p);
    return failures;
}
