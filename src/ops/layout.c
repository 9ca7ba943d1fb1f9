// layout.c: ops that move or combine values without learned weights: nearest 2x upsampling, channel concat, zero
// padding, the sinusoidal timestep embedding, embedding lookup and sum/mean reductions, forward and backward. The
// CUDA branches run the kernels of ops/cuda/cuda_layout.cu on f32 or bf16 storage (fp32 compute).
#include <math.h>

#include "ops_internal.h"

// ---------------------------------------------------------------------------------------------------------------
// out [B, C, 2H, 2W], out[y][x] = in[y / 2][x / 2]
void upsample2x_forward(Tensor *out, const Tensor *in) {
    char a[96];
    CHECK(in->ndim == 4, "", "upsample2x_forward: want an NCHW input, got %s", tensor_shape_str(in, a, sizeof a));
    int64_t W = in->shape[3], rows = in->shape[0] * in->shape[1] * in->shape[2];
    tensor_expect_shape(out, "upsample2x output", in->shape[0], in->shape[1], 2 * in->shape[2], 2 * W);
    if (OPS_ON_CUDA(out)) {
        OPS_EXPECT_CUDA(out, "upsample2x_forward");
        OPS_EXPECT_CUDA(in, "upsample2x_forward");
        ops_expect_same_dtype(out, in, "upsample2x_forward");
        ops_expect_same_layout(out, in, "upsample2x_forward");
        if (tensor_channels_last(in)) // rows of B H pixel rows of W pixels of C channels
            upsample2x_nhwc_forward_cuda(out->data, in->data, in->shape[0] * in->shape[2], W, in->shape[1],
                                         ops_dt(out));
        else
            upsample2x_forward_cuda(out->data, in->data, rows, W, ops_dt(out));
        return;
    }
    OPS_EXPECT_CPU(out, "upsample2x_forward");
    OPS_EXPECT_CPU(in, "upsample2x_forward");
    float *o = tensor_f32(out);
    const float *x = tensor_f32(in);
#pragma omp parallel for if (rows * W > 16384)
    for (int64_t r = 0; r < rows; r++) { // input row r feeds output rows 2r and 2r + 1 (of width 2W)
        const float *src = x + r * W;
        float *dst = o + r * 4 * W;
        for (int64_t i = 0; i < W; i++) dst[2 * i] = dst[2 * i + 1] = src[i];
        memcpy(dst + 2 * W, dst, sizeof(float) * (size_t)(2 * W));
    }
}

// din [B, C, H, W] = sum of each 2x2 block of dout (written)
void upsample2x_backward(Tensor *din, const Tensor *dout) {
    if (!ops_want(din)) return;
    char a[96];
    CHECK(din->ndim == 4, "", "upsample2x_backward: want an NCHW grad, got %s", tensor_shape_str(din, a, sizeof a));
    int64_t W = din->shape[3], rows = din->shape[0] * din->shape[1] * din->shape[2];
    tensor_expect_shape(dout, "upsample2x output grad", din->shape[0], din->shape[1], 2 * din->shape[2], 2 * W);
    if (OPS_ON_CUDA(din)) {
        OPS_EXPECT_CUDA(din, "upsample2x_backward");
        OPS_EXPECT_CUDA(dout, "upsample2x_backward");
        ops_expect_same_dtype(din, dout, "upsample2x_backward");
        ops_expect_same_layout(din, dout, "upsample2x_backward");
        if (tensor_channels_last(din))
            upsample2x_nhwc_backward_cuda(din->data, dout->data, din->shape[0] * din->shape[2], W, din->shape[1],
                                          ops_dt(din));
        else
            upsample2x_backward_cuda(din->data, dout->data, rows, W, ops_dt(din));
        return;
    }
    OPS_EXPECT_CPU(din, "upsample2x_backward");
    OPS_EXPECT_CPU(dout, "upsample2x_backward");
    float *d = tensor_f32(din);
    const float *g = tensor_f32(dout);
#pragma omp parallel for if (rows * W > 16384)
    for (int64_t r = 0; r < rows; r++) {
        const float *g0 = g + r * 4 * W, *g1 = g0 + 2 * W;
        for (int64_t i = 0; i < W; i++) d[r * W + i] = (g0[2 * i] + g0[2 * i + 1]) + (g1[2 * i] + g1[2 * i + 1]);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Checks that part [B, Cp, *] matches whole [B, C, *] in every dim but the channels; returns the spatial size.
static int64_t concat_part(const Tensor *part, const Tensor *whole, const char *op) {
    char a[96], b[96];
    int ok = part->ndim == whole->ndim && part->ndim >= 2 && part->shape[0] == whole->shape[0] &&
             part->shape[1] <= whole->shape[1];
    for (int d = 2; ok && d < part->ndim; d++) ok = part->shape[d] == whole->shape[d];
    CHECK(ok, "", "%s: %s and %s differ outside the channel dim", op, tensor_shape_str(part, a, sizeof a),
          tensor_shape_str(whole, b, sizeof b));
    return tensor_numel(whole) / (whole->shape[0] * whole->shape[1]);
}

// Copies channel planes between part [B, Cp, S] and channels [c0, c0 + Cp) of whole [B, C, S].
static void concat_copy(float *dst, const float *src, int64_t B, int64_t Cp, int64_t C, int64_t c0, int64_t S,
                        int to_whole) {
#pragma omp parallel for if (B * Cp * S > 65536)
    for (int64_t r = 0; r < B * Cp; r++) {
        int64_t whole_off = ((r / Cp) * C + c0 + r % Cp) * S, part_off = r * S;
        memcpy(dst + (to_whole ? whole_off : part_off), src + (to_whole ? part_off : whole_off),
               sizeof(float) * (size_t)S);
    }
}

// out [B, Ca + Cb, *] = [a [B, Ca, *] | b [B, Cb, *]] along the channels
void concat_channels_forward(Tensor *out, const Tensor *a, const Tensor *b) {
    int64_t S = concat_part(a, out, "concat_channels_forward");
    concat_part(b, out, "concat_channels_forward");
    int64_t B = out->shape[0], Ca = a->shape[1], Cb = b->shape[1], C = out->shape[1];
    char x[96], y[96], z[96];
    CHECK(Ca + Cb == C, "", "concat_channels_forward: %s + %s does not make %s", tensor_shape_str(a, x, sizeof x),
          tensor_shape_str(b, y, sizeof y), tensor_shape_str(out, z, sizeof z));
    if (OPS_ON_CUDA(out)) {
        OPS_EXPECT_CUDA(out, "concat_channels_forward");
        OPS_EXPECT_CUDA(a, "concat_channels_forward");
        OPS_EXPECT_CUDA(b, "concat_channels_forward");
        ops_expect_same_dtype(out, a, "concat_channels_forward");
        ops_expect_same_dtype(out, b, "concat_channels_forward");
        ops_expect_same_layout(out, a, "concat_channels_forward");
        ops_expect_same_layout(out, b, "concat_channels_forward");
        if (tensor_channels_last(out)) // every pixel a row [Ca | Cb]
            concat_channels_forward_cuda(out->data, a->data, b->data, B * S, Ca, Cb, 1, ops_dt(out));
        else
            concat_channels_forward_cuda(out->data, a->data, b->data, B, Ca, Cb, S, ops_dt(out));
        return;
    }
    OPS_EXPECT_CPU(out, "concat_channels_forward");
    OPS_EXPECT_CPU(a, "concat_channels_forward");
    OPS_EXPECT_CPU(b, "concat_channels_forward");
    concat_copy(tensor_f32(out), tensor_f32(a), B, Ca, C, 0, S, 1);
    concat_copy(tensor_f32(out), tensor_f32(b), B, Cb, C, Ca, S, 1);
}

// da [B, Ca, *], db [B, Cb, *] = the two channel ranges of dout (written)
void concat_channels_backward(Tensor *da, Tensor *db, const Tensor *dout) {
    if (!ops_want(da) && !ops_want(db)) return;
    int64_t B = dout->shape[0], C = dout->shape[1], S = 0;
    int64_t Ca = ops_want(da) ? da->shape[1] : C - db->shape[1];
    if (ops_want(da)) S = concat_part(da, dout, "concat_channels_backward");
    if (ops_want(db)) {
        S = concat_part(db, dout, "concat_channels_backward");
        char x[96], y[96];
        CHECK(Ca + db->shape[1] == C, "", "concat_channels_backward: grads %s (%lld channels before it) do not fit %s",
              tensor_shape_str(db, x, sizeof x), (long long)Ca, tensor_shape_str(dout, y, sizeof y));
    }
    if (OPS_ON_CUDA(dout)) {
        OPS_EXPECT_CUDA(dout, "concat_channels_backward");
        OPS_EXPECT_CUDA(da, "concat_channels_backward");
        OPS_EXPECT_CUDA(db, "concat_channels_backward");
        if (ops_want(da)) ops_expect_same_dtype(da, dout, "concat_channels_backward");
        if (ops_want(db)) ops_expect_same_dtype(db, dout, "concat_channels_backward");
        ops_expect_same_layout(da, dout, "concat_channels_backward");
        ops_expect_same_layout(db, dout, "concat_channels_backward");
        int cl = tensor_channels_last(dout);
        concat_channels_backward_cuda(ops_want(da) ? da->data : NULL, ops_want(db) ? db->data : NULL, dout->data,
                                      cl ? B * S : B, Ca, C - Ca, cl ? 1 : S, ops_dt(dout));
        return;
    }
    OPS_EXPECT_CPU(dout, "concat_channels_backward");
    OPS_EXPECT_CPU(da, "concat_channels_backward");
    OPS_EXPECT_CPU(db, "concat_channels_backward");
    if (ops_want(da)) concat_copy(tensor_f32(da), tensor_f32(dout), B, Ca, C, 0, S, 0);
    if (ops_want(db)) concat_copy(tensor_f32(db), tensor_f32(dout), B, C - Ca, C, Ca, S, 0);
}

// ---------------------------------------------------------------------------------------------------------------
// Checks that big is the NCHW tensor small padded by (top, bottom, left, right), all >= 0.
static void pad_check(const Tensor *small, const Tensor *big, int top, int bottom, int left, int right,
                      const char *op) {
    char a[96];
    CHECK(small->ndim == 4, "", "%s: want an NCHW tensor, got %s", op, tensor_shape_str(small, a, sizeof a));
    CHECK(!tensor_channels_last(small) && !tensor_channels_last(big), "",
          "%s: channels-last tensors are not padded (the VAE encoder runs NCHW)", op);
    CHECK(top >= 0 && bottom >= 0 && left >= 0 && right >= 0, "", "%s: negative padding (%d, %d, %d, %d)", op, top,
          bottom, left, right);
    tensor_expect_shape(big, "pad2d output", small->shape[0], small->shape[1], small->shape[2] + top + bottom,
                        small->shape[3] + left + right);
}

// out [B, C, H + top + bottom, W + left + right]: in at (top, left), zeros around it
void pad2d_forward(Tensor *out, const Tensor *in, int top, int bottom, int left, int right) {
    pad_check(in, out, top, bottom, left, right, "pad2d_forward");
    int64_t H = in->shape[2], W = in->shape[3], OH = out->shape[2], OW = out->shape[3];
    if (OPS_ON_CUDA(out)) {
        OPS_EXPECT_CUDA(out, "pad2d_forward");
        OPS_EXPECT_CUDA(in, "pad2d_forward");
        ops_expect_same_dtype(out, in, "pad2d_forward");
        pad2d_forward_cuda(out->data, in->data, in->shape[0] * in->shape[1], H, W, top, bottom, left, right,
                           ops_dt(out));
        return;
    }
    OPS_EXPECT_CPU(out, "pad2d_forward");
    OPS_EXPECT_CPU(in, "pad2d_forward");
    int64_t rows = in->shape[0] * in->shape[1] * OH;
    float *o = tensor_f32(out);
    const float *x = tensor_f32(in);
#pragma omp parallel for if (rows * OW > 65536)
    for (int64_t r = 0; r < rows; r++) {
        int64_t bc = r / OH, iy = r % OH - top;
        float *dst = o + r * OW;
        if (iy < 0 || iy >= H) {
            memset(dst, 0, sizeof(float) * (size_t)OW);
            continue;
        }
        memset(dst, 0, sizeof(float) * (size_t)left);
        memcpy(dst + left, x + (bc * H + iy) * W, sizeof(float) * (size_t)W);
        memset(dst + left + W, 0, sizeof(float) * (size_t)right);
    }
}

// din [B, C, H, W] = the interior of dout (written)
void pad2d_backward(Tensor *din, const Tensor *dout, int top, int bottom, int left, int right) {
    if (!ops_want(din)) return;
    pad_check(din, dout, top, bottom, left, right, "pad2d_backward");
    int64_t H = din->shape[2], W = din->shape[3], OH = dout->shape[2], OW = dout->shape[3];
    if (OPS_ON_CUDA(din)) {
        OPS_EXPECT_CUDA(din, "pad2d_backward");
        OPS_EXPECT_CUDA(dout, "pad2d_backward");
        ops_expect_same_dtype(din, dout, "pad2d_backward");
        pad2d_backward_cuda(din->data, dout->data, din->shape[0] * din->shape[1], H, W, top, bottom, left, right,
                            ops_dt(din));
        return;
    }
    OPS_EXPECT_CPU(din, "pad2d_backward");
    OPS_EXPECT_CPU(dout, "pad2d_backward");
    int64_t rows = din->shape[0] * din->shape[1] * H;
    float *d = tensor_f32(din);
    const float *g = tensor_f32(dout);
#pragma omp parallel for if (rows * W > 65536)
    for (int64_t r = 0; r < rows; r++) {
        int64_t bc = r / H, y = r % H;
        memcpy(d + r * W, g + (bc * OH + y + top) * OW + left, sizeof(float) * (size_t)W);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Frequency i of the embedding, in the fp32 operation order of diffusers get_timestep_embedding:
// exp((-ln(10000) * i) / (half - freq_shift)).
static float timestep_freq(int64_t i, int64_t half, float freq_shift) {
    float exponent = -logf(10000.0f) * (float)i;
    exponent = exponent / ((float)half - freq_shift);
    return expf(exponent);
}

static void timestep_check(const Tensor *emb, const Tensor *t, float freq_shift, const char *op) {
    char a[96];
    CHECK(emb->ndim == 2 && emb->shape[1] >= 2, "", "%s: want an [N, D] embedding with D >= 2, got %s", op,
          tensor_shape_str(emb, a, sizeof a));
    tensor_expect_shape(emb, "timestep embedding", tensor_numel(t), emb->shape[1]);
    CHECK((float)(emb->shape[1] / 2) != freq_shift, "", "%s: freq_shift %g equals D/2", op, (double)freq_shift);
}

// out [N, D] = [sin(t f) | cos(t f)] (or [cos | sin] when flipped) for t [N], f [D/2]; an odd D gets a zero column.
void timestep_embedding_forward(Tensor *out, const Tensor *t, int flip_sin_to_cos, float freq_shift) {
    timestep_check(out, t, freq_shift, "timestep_embedding_forward");
    if (OPS_ON_CUDA(out)) { // t lives on the GPU: no host read of the timesteps
        OPS_EXPECT_CUDA(out, "timestep_embedding_forward");
        OPS_EXPECT_CUDA_F32(t, "timestep_embedding_forward");
        timestep_embedding_forward_cuda(out->data, t->data, out->shape[0], out->shape[1], flip_sin_to_cos, freq_shift,
                                        logf(10000.0f), ops_dt(out));
        return;
    }
    OPS_EXPECT_CPU(out, "timestep_embedding_forward");
    OPS_EXPECT_CPU(t, "timestep_embedding_forward");
    int64_t N = out->shape[0], D = out->shape[1], half = D / 2;
    int64_t sin_off = flip_sin_to_cos ? half : 0, cos_off = flip_sin_to_cos ? 0 : half;
    float *o = tensor_f32(out);
    const float *tt = tensor_f32(t);
#pragma omp parallel for if (N * D > 16384)
    for (int64_t n = 0; n < N; n++) {
        float *row = o + n * D;
        for (int64_t i = 0; i < half; i++) {
            float arg = tt[n] * timestep_freq(i, half, freq_shift);
            row[sin_off + i] = sinf(arg);
            row[cos_off + i] = cosf(arg);
        }
        if (D % 2) row[D - 1] = 0.0f;
    }
}

// dt [N] = sum_i f_i (dout_sin_i cos(t f_i) - dout_cos_i sin(t f_i)) (written)
void timestep_embedding_backward(Tensor *dt, const Tensor *dout, const Tensor *t, int flip_sin_to_cos,
                                 float freq_shift) {
    if (!ops_want(dt)) return;
    timestep_check(dout, t, freq_shift, "timestep_embedding_backward");
    CHECK(tensor_numel(dt) == tensor_numel(t), "", "timestep_embedding_backward: dt has %lld elements, t %lld",
          (long long)tensor_numel(dt), (long long)tensor_numel(t));
    if (OPS_ON_CUDA(dt)) {
        OPS_EXPECT_CUDA_F32(dt, "timestep_embedding_backward");
        OPS_EXPECT_CUDA(dout, "timestep_embedding_backward");
        OPS_EXPECT_CUDA_F32(t, "timestep_embedding_backward");
        timestep_embedding_backward_cuda(dt->data, dout->data, t->data, dout->shape[0], dout->shape[1],
                                         flip_sin_to_cos, freq_shift, logf(10000.0f), ops_dt(dout));
        return;
    }
    OPS_EXPECT_CPU(dt, "timestep_embedding_backward");
    OPS_EXPECT_CPU(dout, "timestep_embedding_backward");
    OPS_EXPECT_CPU(t, "timestep_embedding_backward");
    int64_t N = dout->shape[0], D = dout->shape[1], half = D / 2;
    int64_t sin_off = flip_sin_to_cos ? half : 0, cos_off = flip_sin_to_cos ? 0 : half;
    float *d = tensor_f32(dt);
    const float *g = tensor_f32(dout), *tt = tensor_f32(t);
#pragma omp parallel for if (N * D > 16384)
    for (int64_t n = 0; n < N; n++) {
        const float *row = g + n * D;
        double sum = 0.0;
        for (int64_t i = 0; i < half; i++) {
            float f = timestep_freq(i, half, freq_shift), arg = tt[n] * f;
            sum += (double)f * ((double)row[sin_off + i] * cosf(arg) - (double)row[cos_off + i] * sinf(arg));
        }
        d[n] = (float)sum;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Checks ids (i32 on the device of `rows`) against out or dout [N, C] (N = numel(ids)). On the CPU every id must be a
// row of the [V, C] table; ids on the GPU are not read back (the kernels give an id outside the table a NaN row).
static void embedding_check(const Tensor *rows, const Tensor *ids, int64_t V, int64_t C, const char *op) {
    char a[96], b[96];
    CHECK(ids->dtype == DTYPE_I32 && ids->device == rows->device, "", "%s: ids must be an i32 %s tensor, got %s on %s",
          op, device_name(rows->device), dtype_name(ids->dtype), device_name(ids->device));
    CHECK(tensor_rows(rows) == tensor_numel(ids) && rows->shape[rows->ndim - 1] == C, "",
          "%s: rows %s do not match ids %s and %lld columns", op, tensor_shape_str(rows, a, sizeof a),
          tensor_shape_str(ids, b, sizeof b), (long long)C);
    if (ids->device != DEVICE_CPU) return;
    const int32_t *id = ids->data;
    for (int64_t n = 0; n < tensor_numel(ids); n++)
        CHECK(id[n] >= 0 && id[n] < V, "the token ids and the embedding table come from different vocabularies",
              "%s: id %d at position %lld is outside the table of %lld rows", op, (int)id[n], (long long)n,
              (long long)V);
}

// out [N, C] = table [V, C] rows ids [N]
void embedding_forward(Tensor *out, const Tensor *ids, const Tensor *table) {
    int64_t V = table->shape[0], C = table->shape[table->ndim - 1];
    tensor_expect_shape(table, "embedding table", V, C);
    embedding_check(out, ids, V, C, "embedding_forward");
    int64_t N = tensor_numel(ids);
    if (OPS_ON_CUDA(out)) {
        OPS_EXPECT_CUDA(out, "embedding_forward");
        OPS_EXPECT_CUDA(table, "embedding_forward");
        ops_expect_same_dtype(out, table, "embedding_forward");
        embedding_forward_cuda(out->data, ids->data, table->data, N, V, C, ops_dt(out));
        return;
    }
    OPS_EXPECT_CPU(out, "embedding_forward");
    OPS_EXPECT_CPU(table, "embedding_forward");
    float *o = tensor_f32(out);
    const float *tab = tensor_f32(table);
    const int32_t *id = ids->data;
#pragma omp parallel for if (N * C > 65536)
    for (int64_t n = 0; n < N; n++) memcpy(o + n * C, tab + (int64_t)id[n] * C, sizeof(float) * (size_t)C);
}

// dtable [V, C] row ids[n] += dout [N, C] row n. Threads own column blocks, so repeated ids never race and the
// sum order is fixed (n ascending; the CUDA kernel sums in the same order, one thread per column).
void embedding_backward(Tensor *dtable, const Tensor *dout, const Tensor *ids) {
    if (!ops_want(dtable)) return;
    int64_t V = dtable->shape[0], C = dtable->shape[dtable->ndim - 1];
    tensor_expect_shape(dtable, "embedding table grad", V, C);
    embedding_check(dout, ids, V, C, "embedding_backward");
    int64_t N = tensor_numel(ids), blocks = (C + 63) / 64;
    if (OPS_ON_CUDA(dtable)) {
        OPS_EXPECT_CUDA_F32(dtable, "embedding_backward");
        OPS_EXPECT_CUDA(dout, "embedding_backward");
        embedding_backward_cuda(dtable->data, dout->data, ids->data, N, V, C, ops_dt(dout));
        return;
    }
    OPS_EXPECT_CPU(dtable, "embedding_backward");
    OPS_EXPECT_CPU(dout, "embedding_backward");
    float *d = tensor_f32(dtable);
    const float *g = tensor_f32(dout);
    const int32_t *id = ids->data;
#pragma omp parallel for if (N * C > 65536)
    for (int64_t blk = 0; blk < blocks; blk++) {
        int64_t c0 = blk * 64, c1 = c0 + 64 < C ? c0 + 64 : C;
        for (int64_t n = 0; n < N; n++) {
            float *dst = d + (int64_t)id[n] * C;
            const float *src = g + n * C;
            for (int64_t c = c0; c < c1; c++) dst[c] += src[c];
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Returns M for in viewed as [N, M], N = numel(out).
static int64_t reduce_width(const Tensor *in, const Tensor *out, const char *op) {
    char a[96], b[96];
    int64_t N = tensor_numel(out), total = tensor_numel(in);
    CHECK(N > 0 && total % N == 0, "", "%s: %s does not reduce to %s", op, tensor_shape_str(in, a, sizeof a),
          tensor_shape_str(out, b, sizeof b));
    return total / N;
}

size_t reduce_workspace_bytes(const Tensor *out, const Tensor *in) {
    if (out->device != DEVICE_CUDA) return 0;
    return reduce_workspace_bytes_cuda(tensor_numel(out), reduce_width(in, out, "reduce_workspace_bytes"));
}

// out[n] = sum_m in[n, m] (or the mean), summed in double on the CPU; in fp32 on the GPU (per-thread sums of at most
// 64 elements' worth of a row, then a fixed tree), a rounding error of a few 1e-7 of the row's magnitude sum
void reduce_forward(Tensor *out, const Tensor *in, ReduceOp op) {
    int64_t M = reduce_width(in, out, "reduce_forward"), N = tensor_numel(out);
    if (OPS_ON_CUDA(out)) {
        OPS_EXPECT_CUDA(out, "reduce_forward");
        OPS_EXPECT_CUDA(in, "reduce_forward");
        size_t ws = reduce_workspace_bytes_cuda(N, M);
        reduce_forward_cuda(out->data, ops_dt(out), in->data, ops_dt(in), N, M, op == REDUCE_MEAN,
                            ws ? ops_workspace(DEVICE_CUDA, ws) : NULL);
        return;
    }
    OPS_EXPECT_CPU(out, "reduce_forward");
    OPS_EXPECT_CPU(in, "reduce_forward");
    float *o = tensor_f32(out);
    const float *x = tensor_f32(in);
#pragma omp parallel for if (N * M > 65536)
    for (int64_t n = 0; n < N; n++) {
        double sum = 0.0;
        for (int64_t m = 0; m < M; m++) sum += x[n * M + m];
        o[n] = (float)(op == REDUCE_MEAN ? sum / (double)M : sum);
    }
}

// din[n, m] = dout[n] (or dout[n] / M) (written)
void reduce_backward(Tensor *din, const Tensor *dout, ReduceOp op) {
    if (!ops_want(din)) return;
    int64_t M = reduce_width(din, dout, "reduce_backward"), N = tensor_numel(dout);
    if (OPS_ON_CUDA(din)) {
        OPS_EXPECT_CUDA(din, "reduce_backward");
        OPS_EXPECT_CUDA(dout, "reduce_backward");
        reduce_backward_cuda(din->data, ops_dt(din), dout->data, ops_dt(dout), N, M, op == REDUCE_MEAN);
        return;
    }
    OPS_EXPECT_CPU(din, "reduce_backward");
    OPS_EXPECT_CPU(dout, "reduce_backward");
    float *d = tensor_f32(din);
    const float *g = tensor_f32(dout);
#pragma omp parallel for if (N * M > 65536)
    for (int64_t n = 0; n < N; n++) {
        float v = op == REDUCE_MEAN ? (float)((double)g[n] / (double)M) : g[n];
        for (int64_t m = 0; m < M; m++) d[n * M + m] = v;
    }
}
