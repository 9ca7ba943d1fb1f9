// job_compare.h: comparing two runs of a drtune command (tests that run a job on two devices or precisions): the
// per-iteration values of metrics.jsonl, and the relative L2 distance between the tensors of two safetensors files.
#pragma once
#include <math.h>
#include <string.h>

#include "../src/io/safetensors.h"
#include "testutil.h"

// The values of `key` on each line of metrics.jsonl, in order; returns how many.
static inline int job_metric(const char *path, const char *key, double *v, int max) {
    char *text = tu_read_all(path, NULL), pat[64];
    int n = 0;
    snprintf(pat, sizeof pat, "\"%s\":", key);
    for (char *p = text; p && n < max && (p = strstr(p, pat)); p += strlen(pat)) v[n++] = strtod(p + strlen(pat), NULL);
    free(text);
    return n;
}

// ||a - b|| / ||b|| over the tensors of two safetensors files whose names start with prefix ("" for all); infinite
// when a lacks one of them
static inline double job_files_rel_l2(const char *a, const char *b, const char *prefix) {
    SafeTensors x, y;
    safetensors_open(&x, a);
    safetensors_open(&y, b);
    double num = 0, den = 0;
    for (int i = 0; i < y.n; i++) {
        const StTensor *t = &y.tensors[i], *u = safetensors_find(&x, t->name);
        if (strncmp(t->name, prefix, strlen(prefix)) != 0) continue;
        if (!u) return INFINITY;
        Tensor p = tensor_make(NULL, DTYPE_F32, DEVICE_CPU, t->ndim, t->shape), q = p;
        p.data = xmalloc(tensor_bytes(&p) + 4), q.data = xmalloc(tensor_bytes(&q) + 4);
        safetensors_read_tensor(&x, u, &p);
        safetensors_read_tensor(&y, t, &q);
        const float *pp = p.data, *qq = q.data;
        for (int64_t k = 0; k < tensor_numel(&p); k++)
            num += ((double)pp[k] - qq[k]) * ((double)pp[k] - qq[k]), den += (double)qq[k] * qq[k];
        free(p.data), free(q.data);
    }
    safetensors_close(&x), safetensors_close(&y);
    return sqrt(num / (den > 0 ? den : 1));
}
