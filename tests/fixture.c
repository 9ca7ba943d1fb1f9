// fixture.c: the reference-tensor helpers of fixture.h.
#include "fixture.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../src/core/common.h"

Tensor fixture_get(const SafeTensors *st, const char *name) {
    const StTensor *t = safetensors_find(st, name);
    CHECK(t != NULL, "regenerate the fixtures with tools/reference/", "fixture has no tensor '%s'", name);
    DType dt = (t->dtype == ST_I32 || t->dtype == ST_I64) ? DTYPE_I32 : DTYPE_F32;
    Tensor out = tensor_make(NULL, dt, DEVICE_CPU, t->ndim, t->shape);
    out.data = xmalloc(tensor_bytes(&out) + 4);
    safetensors_read_into(st, name, &out);
    return out;
}

int fixture_compare(const char *what, const Tensor *got, const Tensor *ref, double tol) {
    int64_t n = tensor_numel(ref);
    CHECK(tensor_numel(got) == n, "", "%s: %lld elements, reference has %lld", what, (long long)tensor_numel(got),
          (long long)n);
    const float *a = tensor_f32(got), *b = tensor_f32(ref);
    double err = 0, mx = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)b[i]);
        if (!(e <= err)) err = isnan(e) ? INFINITY : e;
        if (fabs(b[i]) > mx) mx = fabs(b[i]);
    }
    double rel = err / (mx > 0 ? mx : 1.0);
    int ok = rel <= tol;
    printf("%s %-40s max|diff| %.3e  max|ref| %.3e  rel %.2e (tol %.0e)\n", ok ? "ok  " : "FAIL", what, err, mx, rel,
           tol);
    return ok;
}

int fixture_compare_i32(const char *what, const Tensor *got, const Tensor *ref) {
    int ok = tensor_numel(got) == tensor_numel(ref) &&
             !memcmp(got->data, ref->data, sizeof(int32_t) * (size_t)tensor_numel(ref));
    printf("%s %s\n", ok ? "ok  " : "FAIL", what);
    return ok;
}
