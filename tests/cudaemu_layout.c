// cudaemu_layout.c: the CUDA layout and arithmetic ops against their CPU ops, forward and backward, in fp32 and bf16
// storage, at shapes that are and are not multiples of the block size and of the 4-wide vector accesses (and at
// unaligned views, which take the scalar path): upsample2x, concat, pad2d, add, add_bcast, axpy, scale, fill,
// tensor_cast, timestep embedding, embedding lookup, sum/mean reductions.
//
// Tolerances (max |gpu - cpu| / max |cpu|). Inputs are rounded to bf16 in the bf16 runs, so the CPU op sees the
// stored values; then:
//   - copies (upsample forward, concat, pad, embedding forward, reduce backward, casts, fill): exact in both dtypes;
//   - one fp32 operation per element in the CPU op's order (add, add_bcast, scale, upsample backward, embedding
//     backward's ordered sum): exact in fp32; axpy 2^-22 (nvcc may fuse y + a x into one FMA, one rounding fewer);
//   - bf16 outputs of computed values: 2^-8, the rounding of the output (half an ulp of an 8-bit significand: at most
//     2^-8 of the value; every such output is rounded once, from fp32 values the CPU reference also sees);
//   - the timestep embedding: sin, cos and exp correctly rounded on both sides (1 ulp of slack, 2^-22);
//     its backward sums in double on both sides (1e-6);
//   - reductions: fp32 partial sums on the GPU against the CPU's double sum: at most ~70 roundings of partial sums no
//     larger than the row's sum of magnitudes, which is < 2 sqrt(M) max|out| for these Gaussian rows: 1e-5.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cudaemu_util.h"
#include "../src/ops/ops.h"

#define BF16_TOL (1.0 / 256.0)
#define FMA_TOL (1.0 / 4194304.0)

static const char *dtn(DType dt) { return dt == DTYPE_BF16 ? "bf16" : "f32"; }
static double tol_of(DType dt, double f32_tol, int computed) {
    return dt == DTYPE_BF16 && computed ? BF16_TOL + f32_tol : f32_tol;
}

// A CPU f32 tensor of normal values (bf16-representable when dt is bf16), and its device copy in dt.
static Tensor rnd(int ndim, const int64_t *shape, uint64_t tag, DType dt, Tensor *gpu) {
    Tensor c = cu_alloc(DEVICE_CPU, DTYPE_F32, ndim, shape);
    cu_fill(&c, tag, 1.0f, dt == DTYPE_BF16);
    if (gpu) *gpu = cu_upload(&c, dt);
    return c;
}
static Tensor cpu0(int ndim, const int64_t *shape) { return cu_alloc(DEVICE_CPU, DTYPE_F32, ndim, shape); }
static Tensor gpu0(int ndim, const int64_t *shape, DType dt) { return cu_alloc(DEVICE_CUDA, dt, ndim, shape); }
static void check(const char *op, DType dt, const int64_t *s, int nd, const Tensor *g, const Tensor *c, double tol) {
    char what[128], dims[64];
    tensor_dims_str(nd, s, dims, sizeof dims);
    snprintf(what, sizeof what, "%s %s %s", op, dtn(dt), dims);
    cu_compare(what, g, c, tol);
}
static void release(Tensor *ts, int n) {
    for (int i = 0; i < n; i++) cu_free(&ts[i]);
}

static void test_upsample(DType dt, int64_t B, int64_t C, int64_t H, int64_t W) {
    int64_t s[4] = {B, C, H, W}, so[4] = {B, C, 2 * H, 2 * W};
    Tensor gx, gdy, x = rnd(4, s, 1, dt, &gx), dy = rnd(4, so, 2, dt, &gdy);
    Tensor y = cpu0(4, so), gy = gpu0(4, so, dt), dx = cpu0(4, s), gdx = gpu0(4, s, dt);
    upsample2x_forward(&y, &x);
    upsample2x_forward(&gy, &gx);
    check("upsample2x fwd", dt, s, 4, &gy, &y, 0);
    upsample2x_backward(&dx, &dy);
    upsample2x_backward(&gdx, &gdy);
    check("upsample2x bwd", dt, s, 4, &gdx, &dx, tol_of(dt, 0, 1));
    release((Tensor[]){x, gx, dy, gdy, y, gy, dx, gdx}, 8);
}

static void test_concat(DType dt, int64_t B, int64_t Ca, int64_t Cb, int64_t H, int64_t W) {
    int64_t sa[4] = {B, Ca, H, W}, sb[4] = {B, Cb, H, W}, so[4] = {B, Ca + Cb, H, W};
    Tensor ga, gb, gdy, a = rnd(4, sa, 3, dt, &ga), b = rnd(4, sb, 4, dt, &gb), dy = rnd(4, so, 5, dt, &gdy);
    Tensor y = cpu0(4, so), gy = gpu0(4, so, dt);
    Tensor da = cpu0(4, sa), db = cpu0(4, sb), gda = gpu0(4, sa, dt), gdb = gpu0(4, sb, dt);
    concat_channels_forward(&y, &a, &b);
    concat_channels_forward(&gy, &ga, &gb);
    check("concat fwd", dt, so, 4, &gy, &y, 0);
    concat_channels_backward(&da, &db, &dy);
    concat_channels_backward(&gda, &gdb, &gdy);
    check("concat bwd da", dt, sa, 4, &gda, &da, 0);
    check("concat bwd db", dt, sb, 4, &gdb, &db, 0);
    tensor_fill(&gda, 7.0f); // only db wanted: da stays untouched
    concat_channels_backward(NULL, &gdb, &gdy);
    check("concat bwd db alone", dt, sb, 4, &gdb, &db, 0);
    float *h = cu_download(&gda);
    tu_check(h[0] == 7.0f && h[tensor_numel(&gda) - 1] == 7.0f, "concat bwd leaves an unwanted da alone");
    free(h);
    release((Tensor[]){a, ga, b, gb, dy, gdy, y, gy, da, db, gda, gdb}, 12);
}

static void test_pad(DType dt, int64_t B, int64_t C, int64_t H, int64_t W, int t, int bo, int l, int r) {
    int64_t s[4] = {B, C, H, W}, so[4] = {B, C, H + t + bo, W + l + r};
    Tensor gx, gdy, x = rnd(4, s, 6, dt, &gx), dy = rnd(4, so, 7, dt, &gdy);
    Tensor y = cpu0(4, so), gy = gpu0(4, so, dt), dx = cpu0(4, s), gdx = gpu0(4, s, dt);
    tensor_fill(&gy, NAN); // every element must be written, the zeros included
    pad2d_forward(&y, &x, t, bo, l, r);
    pad2d_forward(&gy, &gx, t, bo, l, r);
    check("pad2d fwd", dt, so, 4, &gy, &y, 0);
    pad2d_backward(&dx, &dy, t, bo, l, r);
    pad2d_backward(&gdx, &gdy, t, bo, l, r);
    check("pad2d bwd", dt, s, 4, &gdx, &dx, 0);
    release((Tensor[]){x, gx, dy, gdy, y, gy, dx, gdx}, 8);
}

// add (also in place), add_bcast forward/backward, axpy (also mixed storage), scale, fill, cast; `off` elements into
// an allocation (an unaligned view when off % 4 != 0)
static void test_arith(DType dt, int64_t B, int64_t C, int64_t S, int64_t off) {
    int64_t s[3] = {B, C, S}, sv[2] = {B, C}, n = B * C * S, sn[1] = {n + off};
    Tensor ga, gb, gv, gdy, a = rnd(3, s, 8, dt, &ga), b = rnd(3, s, 9, dt, &gb), v = rnd(2, sv, 10, dt, &gv);
    Tensor dy = rnd(3, s, 11, dt, &gdy);
    Tensor y = cpu0(3, s), big = gpu0(1, sn, dt), gy = big;
    gy.ndim = 3, memcpy(gy.shape, s, sizeof s), gy.data = (char *)big.data + off * dtype_size(dt);
    add_forward(&y, &a, &b);
    add_forward(&gy, &ga, &gb);
    check("add", dt, s, 3, &gy, &y, tol_of(dt, 0, 1));
    float *h = cu_download(&gy); // in place, from the sum as stored in dt
    memcpy(y.data, h, sizeof(float) * (size_t)n);
    free(h);
    add_forward(&y, &y, &a);
    add_forward(&gy, &gy, &ga);
    check("add in place", dt, s, 3, &gy, &y, tol_of(dt, 0, 1));
    add_bcast_forward(&y, &a, &v);
    add_bcast_forward(&gy, &ga, &gv);
    check("add_bcast fwd", dt, s, 3, &gy, &y, tol_of(dt, 0, 1));
    Tensor dv = cpu0(2, sv), gdv = gpu0(2, sv, dt), dx = cpu0(3, s);
    add_bcast_backward(&dx, &dv, &dy);
    add_bcast_backward(&gy, &gdv, &gdy);
    check("add_bcast bwd dx", dt, s, 3, &gy, &dx, 0);
    check("add_bcast bwd dv", dt, sv, 2, &gdv, &dv, tol_of(dt, 1e-5, 1));

    tensor_cast(&gy, &ga); // y = a, then axpy, scale
    tensor_copy(&y, &a);
    tensor_axpy(&y, -0.37f, &b);
    tensor_axpy(&gy, -0.37f, &gb);
    check("axpy", dt, s, 3, &gy, &y, tol_of(dt, FMA_TOL, 1));
    Tensor acc = gpu0(3, s, DTYPE_F32); // fp32 sum of a branch gradient stored in dt
    tensor_cast(&acc, &ga);
    tensor_axpy(&acc, 1.5f, &gb);
    tensor_copy(&y, &a);
    tensor_axpy(&y, 1.5f, &b);
    check("axpy into f32", dt, s, 3, &acc, &y, FMA_TOL);
    tensor_scale(&y, 0.3f);
    tensor_scale(&acc, 0.3f);
    check("scale (f32 sum)", dt, s, 3, &acc, &y, 0);
    h = cu_download(&gy); // the axpy result as stored in dt, scaled on both sides
    memcpy(y.data, h, sizeof(float) * (size_t)n);
    free(h);
    tensor_scale(&y, 0.3f);
    tensor_scale(&gy, 0.3f);
    check("scale", dt, s, 3, &gy, &y, tol_of(dt, 0, 1));
    tensor_fill(&y, -2.5f);
    tensor_fill(&gy, -2.5f);
    check("fill", dt, s, 3, &gy, &y, 0);

    // casts: f32 -> dt -> f32 against the CPU's rounding
    Tensor f = rnd(3, s, 12, DTYPE_F32, NULL), gf = cu_upload(&f, DTYPE_F32), hb = cu_alloc(DEVICE_CPU, dt, 3, s);
    tensor_cast(&hb, &f);
    tensor_cast(&y, &hb);
    tensor_cast(&gy, &gf);
    check("cast f32 ->", dt, s, 3, &gy, &y, 0);
    tensor_cast(&acc, &gy);
    check("cast -> f32", dt, s, 3, &acc, &y, 0);
    release((Tensor[]){a, ga, b, gb, v, gv, dy, gdy, y, big, dv, gdv, dx, acc, f, gf, hb}, 17);
}

static void test_timestep(DType dt, int64_t D, int flip, float shift) {
    const float tv[] = {0.0f, 1.0f, 999.0f, 500.5f, 261.0f, 37.25f};
    int64_t N = 6, st[1] = {N}, s[2] = {N, D};
    Tensor t = cpu0(1, st), dt_ = cpu0(1, st), gdt = gpu0(1, st, DTYPE_F32);
    memcpy(t.data, tv, sizeof tv);
    Tensor gt = cu_upload(&t, DTYPE_F32), gdy, dy = rnd(2, s, 13, dt, &gdy);
    Tensor y = cpu0(2, s), gy = gpu0(2, s, dt);
    tensor_fill(&gy, NAN);
    timestep_embedding_forward(&y, &t, flip, shift);
    timestep_embedding_forward(&gy, &gt, flip, shift);
    check(flip ? "timestep fwd (cos|sin)" : "timestep fwd (sin|cos)", dt, s, 2, &gy, &y, tol_of(dt, FMA_TOL, 1));
    timestep_embedding_backward(&dt_, &dy, &t, flip, shift);
    timestep_embedding_backward(&gdt, &gdy, &gt, flip, shift);
    check("timestep bwd", dt, s, 2, &gdt, &dt_, 1e-6);
    release((Tensor[]){t, dt_, gdt, gt, dy, gdy, y, gy}, 8);
}

static void test_embedding(DType dt, int64_t V, int64_t C, int64_t N) {
    int64_t si[1] = {N}, st[2] = {V, C}, so[2] = {N, C};
    Tensor ids = cu_alloc(DEVICE_CPU, DTYPE_I32, 1, si);
    for (int64_t n = 0; n < N; n++) ((int32_t *)ids.data)[n] = (int32_t)((n * 7 + 3) % V); // repeats when N > V
    ((int32_t *)ids.data)[N - 1] = ((int32_t *)ids.data)[0];
    Tensor gids = cu_alloc(DEVICE_CUDA, DTYPE_I32, 1, si);
    device_copy(gids.data, DEVICE_CUDA, ids.data, DEVICE_CPU, tensor_bytes(&ids));
    Tensor gtab, gdy, tab = rnd(2, st, 14, dt, &gtab), dy = rnd(2, so, 15, dt, &gdy);
    Tensor y = cpu0(2, so), gy = gpu0(2, so, dt);
    embedding_forward(&y, &ids, &tab);
    embedding_forward(&gy, &gids, &gtab);
    check("embedding fwd", dt, so, 2, &gy, &y, 0);
    Tensor gdt, dtab = rnd(2, st, 16, DTYPE_F32, &gdt); // accumulated into an existing fp32 gradient
    embedding_backward(&dtab, &dy, &ids);
    embedding_backward(&gdt, &gdy, &gids);
    check("embedding bwd (accumulated)", dt, st, 2, &gdt, &dtab, 0);
    ((int32_t *)ids.data)[1] = (int32_t)V; // an id outside the table: a NaN row on the GPU
    device_copy(gids.data, DEVICE_CUDA, ids.data, DEVICE_CPU, tensor_bytes(&ids));
    embedding_forward(&gy, &gids, &gtab);
    float *h = cu_download(&gy);
    tu_check(isnan(h[C]) && isnan(h[2 * C - 1]) && !isnan(h[0]) && !isnan(h[2 * C]), "embedding: a bad id gives a NaN row");
    free(h);
    release((Tensor[]){ids, gids, tab, gtab, dy, gdy, y, gy, dtab, gdt}, 10);
}

static void test_reduce(DType dt, int64_t N, int64_t M) {
    int64_t si[2] = {N, M}, so[1] = {N};
    Tensor gx, gdy, x = rnd(2, si, 17, dt, &gx), dy = rnd(1, so, 18, dt, &gdy);
    Tensor y = cpu0(1, so), gy = gpu0(1, so, dt), dx = cpu0(2, si), gdx = gpu0(2, si, dt);
    Tensor gy32 = gpu0(1, so, DTYPE_F32);
    for (int op = 0; op < 2; op++) {
        const char *nm = op ? "mean" : "sum";
        char what[64];
        ops_workspace_reserve(DEVICE_CUDA, reduce_workspace_bytes(&gy, &gx));
        reduce_forward(&y, &x, (ReduceOp)op);
        reduce_forward(&gy, &gx, (ReduceOp)op);
        snprintf(what, sizeof what, "reduce %s fwd", nm);
        check(what, dt, si, 2, &gy, &y, tol_of(dt, 1e-5, 1));
        reduce_forward(&gy32, &gx, (ReduceOp)op); // fp32 result of dt input
        snprintf(what, sizeof what, "reduce %s fwd -> f32", nm);
        check(what, dt, si, 2, &gy32, &y, 1e-5);
        reduce_backward(&dx, &dy, (ReduceOp)op);
        reduce_backward(&gdx, &gdy, (ReduceOp)op);
        snprintf(what, sizeof what, "reduce %s bwd", nm);
        check(what, dt, si, 2, &gdx, &dx, tol_of(dt, 0, op == REDUCE_MEAN));
    }
    release((Tensor[]){x, gx, dy, gdy, y, gy, dx, gdx, gy32}, 9);
}

int main(void) {
    cu_require_gpu();
    for (int d = 0; d < 2; d++) {
        DType dt = d ? DTYPE_BF16 : DTYPE_F32;
        test_upsample(dt, 2, 3, 5, 7);
        test_upsample(dt, 1, 4, 16, 16);
        test_concat(dt, 2, 3, 5, 7, 9);
        test_concat(dt, 2, 4, 12, 8, 8);
        test_concat(dt, 3, 6, 2, 1, 1);
        test_pad(dt, 2, 3, 5, 7, 0, 1, 0, 1); // the VAE encoder's asymmetric pad
        test_pad(dt, 1, 2, 9, 13, 2, 3, 1, 2);
        test_pad(dt, 2, 2, 8, 6, 1, 1, 1, 1);
        test_pad(dt, 1, 3, 5, 5, 1, 1, 1, 1); // 147 elements: a scalar tail
        test_arith(dt, 2, 5, 3 * 7, 0);
        test_arith(dt, 2, 8, 16, 0);
        test_arith(dt, 3, 7, 300, 1); // unaligned: the scalar path
        test_timestep(dt, 320, 1, 0.0f);
        test_timestep(dt, 257, 0, 1.0f);
        test_embedding(dt, 50, 37, 23);
        test_embedding(dt, 11, 64, 40);
        test_reduce(dt, 7, 33);         // one warp per row
        test_reduce(dt, 300, 1000);     // one warp per row, many rows
        test_reduce(dt, 3, 5000);       // one block per row
        test_reduce(dt, 2, 70001);      // five parts per row through the workspace, scalar loads
        test_reduce(dt, 1, 3 * 65536);  // twelve parts, vector loads
    }
    return tu_report();
}
