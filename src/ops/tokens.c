// tokens.c: the token-level ops a CLIP vision tower and the CLIP reward heads need around the transformer layers:
// patch tokens with the class token and positional embedding, selecting one token per row (pooling), L2
// normalisation of feature rows and the row-wise dot product (cosine similarity with a cached text feature).
#include <math.h>

#include "ops_internal.h"

// ---------------------------------------------------------------------------------------------------------------
// out [B, 1 + G, D]: out[b, 0] = cls + pos[0], out[b, 1 + g] = patches[b, :, g] + pos[1 + g]
// (patches [B, D, gh, gw] is the patch convolution's output, G = gh gw in row-major grid order)
static void patch_tokens_check(const Tensor *tok, const Tensor *patches, const Tensor *cls, const Tensor *pos,
                               const char *op) {
    char a[96], b[96];
    CHECK(patches->ndim == 4 && tok->ndim == 3 && tok->shape[0] == patches->shape[0] &&
              tok->shape[2] == patches->shape[1] && tok->shape[1] == 1 + patches->shape[2] * patches->shape[3],
          "", "%s: tokens %s do not fit patches %s", op, tensor_shape_str(tok, a, sizeof a),
          tensor_shape_str(patches, b, sizeof b));
    if (ops_want(cls)) tensor_expect_shape(cls, "class embedding", tok->shape[2]);
    if (ops_want(pos)) tensor_expect_shape(pos, "positional embedding", tok->shape[1], tok->shape[2]);
}

void patch_tokens_forward(Tensor *out, const Tensor *patches, const Tensor *cls, const Tensor *pos) {
    patch_tokens_check(out, patches, cls, pos, "patch_tokens_forward");
    if (OPS_ON_CUDA(out)) {
        OPS_EXPECT_CUDA(out, "patch_tokens_forward");
        OPS_EXPECT_CUDA(patches, "patch_tokens_forward");
        OPS_EXPECT_CUDA(cls, "patch_tokens_forward");
        OPS_EXPECT_CUDA(pos, "patch_tokens_forward");
        ops_expect_same_dtype(out, patches, "patch_tokens_forward");
        ops_expect_same_dtype(cls, pos, "patch_tokens_forward");
        patch_tokens_forward_cuda(out->data, patches->data, cls->data, pos->data, out->shape[0], out->shape[1],
                                  out->shape[2], ops_dt(out), ops_dt(pos));
        return;
    }
    OPS_EXPECT_CPU(out, "patch_tokens_forward");
    OPS_EXPECT_CPU(patches, "patch_tokens_forward");
    OPS_EXPECT_CPU(cls, "patch_tokens_forward");
    OPS_EXPECT_CPU(pos, "patch_tokens_forward");
    int64_t B = out->shape[0], T = out->shape[1], D = out->shape[2], G = T - 1;
    const float *p = tensor_f32(patches), *c = tensor_f32(cls), *e = tensor_f32(pos);
    float *o = tensor_f32(out);
#pragma omp parallel for if (B * T * D > 65536)
    for (int64_t r = 0; r < B * T; r++) {
        int64_t b = r / T, t = r % T;
        float *dst = o + r * D;
        const float *pe = e + t * D;
        if (t == 0)
            for (int64_t d = 0; d < D; d++) dst[d] = c[d] + pe[d];
        else
            for (int64_t d = 0; d < D; d++) dst[d] = p[(b * D + d) * G + t - 1] + pe[d];
    }
}

// dpatches [B, D, gh, gw] written from dout [B, 1 + G, D]; dcls [D] and dpos [1 + G, D] accumulate (may be NULL)
void patch_tokens_backward(Tensor *dpatches, Tensor *dcls, Tensor *dpos, const Tensor *dout) {
    const Tensor *shape_of = ops_want(dpatches) ? dpatches : NULL;
    if (shape_of) patch_tokens_check(dout, dpatches, dcls, dpos, "patch_tokens_backward");
    if (OPS_ON_CUDA(dout)) {
        OPS_EXPECT_CUDA(dout, "patch_tokens_backward");
        OPS_EXPECT_CUDA(dpatches, "patch_tokens_backward");
        OPS_EXPECT_CUDA_F32(dcls, "patch_tokens_backward");
        OPS_EXPECT_CUDA_F32(dpos, "patch_tokens_backward");
        ops_expect_same_dtype(dpatches, dout, "patch_tokens_backward");
        patch_tokens_backward_cuda(ops_want(dpatches) ? dpatches->data : NULL, ops_want(dcls) ? dcls->data : NULL,
                                   ops_want(dpos) ? dpos->data : NULL, dout->data, dout->shape[0], dout->shape[1],
                                   dout->shape[2], ops_dt(dout));
        return;
    }
    OPS_EXPECT_CPU(dout, "patch_tokens_backward");
    OPS_EXPECT_CPU(dpatches, "patch_tokens_backward");
    OPS_EXPECT_CPU(dcls, "patch_tokens_backward");
    OPS_EXPECT_CPU(dpos, "patch_tokens_backward");
    int64_t B = dout->shape[0], T = dout->shape[1], D = dout->shape[2], G = T - 1;
    const float *g = tensor_f32(dout);
    if (ops_want(dpatches)) {
        float *dp = tensor_f32(dpatches);
#pragma omp parallel for if (B * T * D > 65536)
        for (int64_t r = 0; r < B * D; r++) {
            int64_t b = r / D, d = r % D;
            for (int64_t t = 1; t < T; t++) dp[r * G + t - 1] = g[(b * T + t) * D + d];
        }
    }
    if (ops_want(dcls)) {
        float *dc = tensor_f32(dcls);
        for (int64_t d = 0; d < D; d++) {
            double s = 0.0;
            for (int64_t b = 0; b < B; b++) s += g[b * T * D + d];
            dc[d] += (float)s;
        }
    }
    if (ops_want(dpos)) {
        float *de = tensor_f32(dpos);
#pragma omp parallel for if (T * D > 16384)
        for (int64_t i = 0; i < T * D; i++) {
            double s = 0.0;
            for (int64_t b = 0; b < B; b++) s += g[b * T * D + i];
            de[i] += (float)s;
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// out [B, C] = in[b, idx[b], :] (idx: B host integers in [0, T))
static void token_select_check(const Tensor *rows, const Tensor *tok, const int32_t *idx, const char *op) {
    char a[96], b[96];
    CHECK(tok->ndim == 3 && rows->ndim == 2 && rows->shape[0] == tok->shape[0] && rows->shape[1] == tok->shape[2],
          "", "%s: rows %s do not fit tokens %s", op, tensor_shape_str(rows, a, sizeof a),
          tensor_shape_str(tok, b, sizeof b));
    for (int64_t n = 0; n < tok->shape[0]; n++)
        CHECK(idx[n] >= 0 && idx[n] < tok->shape[1], "", "%s: token %d of %lld", op, (int)idx[n],
              (long long)tok->shape[1]);
}

void token_select_forward(Tensor *out, const Tensor *in, const int32_t *idx) {
    token_select_check(out, in, idx, "token_select_forward");
    if (OPS_ON_CUDA(out)) {
        OPS_EXPECT_CUDA(out, "token_select_forward");
        OPS_EXPECT_CUDA(in, "token_select_forward");
        ops_expect_same_dtype(out, in, "token_select_forward");
        token_select_forward_cuda(out->data, in->data, idx, in->shape[0], in->shape[1], in->shape[2], ops_dt(out));
        return;
    }
    OPS_EXPECT_CPU(out, "token_select_forward");
    OPS_EXPECT_CPU(in, "token_select_forward");
    int64_t B = in->shape[0], T = in->shape[1], C = in->shape[2];
    for (int64_t b = 0; b < B; b++)
        memcpy(tensor_f32(out) + b * C, tensor_f32(in) + (b * T + idx[b]) * C, sizeof(float) * (size_t)C);
}

// din [B, T, C] = dout at the selected tokens, zero elsewhere (written)
void token_select_backward(Tensor *din, const Tensor *dout, const int32_t *idx) {
    if (!ops_want(din)) return;
    token_select_check(dout, din, idx, "token_select_backward");
    if (OPS_ON_CUDA(din)) {
        OPS_EXPECT_CUDA(din, "token_select_backward");
        OPS_EXPECT_CUDA(dout, "token_select_backward");
        ops_expect_same_dtype(din, dout, "token_select_backward");
        token_select_backward_cuda(din->data, dout->data, idx, din->shape[0], din->shape[1], din->shape[2],
                                   ops_dt(din));
        return;
    }
    OPS_EXPECT_CPU(din, "token_select_backward");
    OPS_EXPECT_CPU(dout, "token_select_backward");
    int64_t B = din->shape[0], T = din->shape[1], C = din->shape[2];
    memset(din->data, 0, tensor_bytes(din));
    for (int64_t b = 0; b < B; b++)
        memcpy(tensor_f32(din) + (b * T + idx[b]) * C, tensor_f32(dout) + b * C, sizeof(float) * (size_t)C);
}

// ---------------------------------------------------------------------------------------------------------------
// out [N, C] = in / max(|in|, 1e-12) per row (F.normalize); norm [N] = max(|in|, 1e-12) is saved for the backward
void l2normalize_forward(Tensor *out, Tensor *norm, const Tensor *in) {
    ops_expect_same_numel(out, in, "l2normalize_forward");
    int64_t N = tensor_rows(in), C = in->shape[in->ndim - 1];
    tensor_expect_shape(norm, "l2normalize norms", N);
    if (OPS_ON_CUDA(out)) {
        OPS_EXPECT_CUDA(out, "l2normalize_forward");
        OPS_EXPECT_CUDA_F32(norm, "l2normalize_forward");
        OPS_EXPECT_CUDA(in, "l2normalize_forward");
        ops_expect_same_dtype(out, in, "l2normalize_forward");
        l2normalize_forward_cuda(out->data, norm->data, in->data, N, C, ops_dt(out));
        return;
    }
    OPS_EXPECT_CPU(out, "l2normalize_forward");
    OPS_EXPECT_CPU(norm, "l2normalize_forward");
    OPS_EXPECT_CPU(in, "l2normalize_forward");
    const float *x = tensor_f32(in);
    float *o = tensor_f32(out), *nr = tensor_f32(norm);
    for (int64_t n = 0; n < N; n++) {
        double s = 0.0;
        for (int64_t c = 0; c < C; c++) s += (double)x[n * C + c] * x[n * C + c];
        float len = (float)sqrt(s);
        nr[n] = len > 1e-12f ? len : 1e-12f;
        for (int64_t c = 0; c < C; c++) o[n * C + c] = x[n * C + c] / nr[n];
    }
}

// din = (dout - out <dout, out>) / norm per row (written); with the norm clamped at 1e-12, din = dout / 1e-12
void l2normalize_backward(Tensor *din, const Tensor *dout, const Tensor *out, const Tensor *norm) {
    if (!ops_want(din)) return;
    ops_expect_same_numel(din, out, "l2normalize_backward");
    ops_expect_same_numel(dout, out, "l2normalize_backward");
    if (OPS_ON_CUDA(din)) {
        OPS_EXPECT_CUDA(din, "l2normalize_backward");
        OPS_EXPECT_CUDA(dout, "l2normalize_backward");
        OPS_EXPECT_CUDA(out, "l2normalize_backward");
        OPS_EXPECT_CUDA_F32(norm, "l2normalize_backward");
        ops_expect_same_dtype(din, dout, "l2normalize_backward");
        ops_expect_same_dtype(din, out, "l2normalize_backward");
        l2normalize_backward_cuda(din->data, dout->data, out->data, norm->data, tensor_rows(out),
                                  out->shape[out->ndim - 1], ops_dt(din));
        return;
    }
    OPS_EXPECT_CPU(din, "l2normalize_backward");
    OPS_EXPECT_CPU(dout, "l2normalize_backward");
    OPS_EXPECT_CPU(out, "l2normalize_backward");
    OPS_EXPECT_CPU(norm, "l2normalize_backward");
    int64_t N = tensor_rows(out), C = out->shape[out->ndim - 1];
    const float *g = tensor_f32(dout), *y = tensor_f32(out), *nr = tensor_f32(norm);
    float *d = tensor_f32(din);
    for (int64_t n = 0; n < N; n++) {
        double s = 0.0;
        for (int64_t c = 0; c < C; c++) s += (double)g[n * C + c] * y[n * C + c];
        float proj = nr[n] > 1e-12f ? (float)s : 0.0f;
        for (int64_t c = 0; c < C; c++) d[n * C + c] = (g[n * C + c] - y[n * C + c] * proj) / nr[n];
    }
}

// out [N] = sum_c a[n, c] b[n, c]
void rowdot_forward(Tensor *out, const Tensor *a, const Tensor *b) {
    ops_expect_same_numel(a, b, "rowdot_forward");
    int64_t N = tensor_rows(a), C = a->shape[a->ndim - 1];
    tensor_expect_shape(out, "rowdot output", N);
    if (OPS_ON_CUDA(out)) {
        OPS_EXPECT_CUDA_F32(out, "rowdot_forward");
        OPS_EXPECT_CUDA(a, "rowdot_forward");
        OPS_EXPECT_CUDA(b, "rowdot_forward");
        ops_expect_same_dtype(a, b, "rowdot_forward");
        rowdot_forward_cuda(out->data, a->data, b->data, N, C, ops_dt(a));
        return;
    }
    OPS_EXPECT_CPU(out, "rowdot_forward");
    OPS_EXPECT_CPU(a, "rowdot_forward");
    OPS_EXPECT_CPU(b, "rowdot_forward");
    const float *x = tensor_f32(a), *y = tensor_f32(b);
    float *o = tensor_f32(out);
    for (int64_t n = 0; n < N; n++) {
        double s = 0.0;
        for (int64_t c = 0; c < C; c++) s += (double)x[n * C + c] * y[n * C + c];
        o[n] = (float)s;
    }
}

// da = dout[n] b, db = dout[n] a (written; either may be NULL)
void rowdot_backward(Tensor *da, Tensor *db, const Tensor *dout, const Tensor *a, const Tensor *b) {
    if (OPS_ON_CUDA(dout)) {
        OPS_EXPECT_CUDA(da, "rowdot_backward");
        OPS_EXPECT_CUDA(db, "rowdot_backward");
        OPS_EXPECT_CUDA_F32(dout, "rowdot_backward");
        OPS_EXPECT_CUDA(a, "rowdot_backward");
        OPS_EXPECT_CUDA(b, "rowdot_backward");
        ops_expect_same_dtype(a, b, "rowdot_backward");
        ops_expect_same_dtype(da, a, "rowdot_backward");
        ops_expect_same_dtype(db, a, "rowdot_backward");
        if (ops_want(da)) ops_expect_same_numel(da, a, "rowdot_backward");
        if (ops_want(db)) ops_expect_same_numel(db, b, "rowdot_backward");
        rowdot_backward_cuda(ops_want(da) ? da->data : NULL, ops_want(db) ? db->data : NULL, dout->data, a->data,
                             b->data, tensor_rows(a), a->shape[a->ndim - 1], ops_dt(a));
        return;
    }
    OPS_EXPECT_CPU(da, "rowdot_backward");
    OPS_EXPECT_CPU(db, "rowdot_backward");
    OPS_EXPECT_CPU(dout, "rowdot_backward");
    OPS_EXPECT_CPU(a, "rowdot_backward");
    OPS_EXPECT_CPU(b, "rowdot_backward");
    int64_t N = tensor_rows(a), C = a->shape[a->ndim - 1];
    const float *g = tensor_f32(dout), *x = tensor_f32(a), *y = tensor_f32(b);
    if (ops_want(da)) {
        ops_expect_same_numel(da, a, "rowdot_backward");
        float *d = tensor_f32(da);
        for (int64_t i = 0; i < N * C; i++) d[i] = g[i / C] * y[i];
    }
    if (ops_want(db)) {
        ops_expect_same_numel(db, b, "rowdot_backward");
        float *d = tensor_f32(db);
        for (int64_t i = 0; i < N * C; i++) d[i] = g[i / C] * x[i];
    }
}
