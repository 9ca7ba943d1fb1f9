// cudaemu_reward_ops.c: the CUDA ops of the CLIP rewards' preprocessing and heads against their CPU ops, forward and
// backward, fp32 and bf16 storage: resize (bilinear and bicubic, antialias off and on, up and down, square and
// non-square, sizes that are not multiples of the block), crop2d, clamp_affine, normalize, patch_tokens,
// token_select, l2normalize and rowdot.
//
// Tolerances (max |gpu - cpu| / max |cpu|). In the bf16 runs the inputs are rounded to bf16, so the CPU op sees the
// stored values; every bf16 output is rounded once from an fp32 value the CPU also computes, adding 2^-8.
//   - copies (crop, token_select, patch_tokens' dpatches): exact;
//   - resize: the same tap tables and the same summation order as the CPU op in fp32 intermediates; a GPU may fuse
//     each w x + acc into one FMA (one rounding fewer per tap): at most ~2 x 21 taps x 2^-24 of sum |w x|, and
//     sum |w| <= 1.3 for these filters, so 4e-6;
//   - one or two fp32 operations per element (clamp_affine, normalize, patch_tokens' add, rowdot's backward):
//     2^-22 (one rounding of slack for a fused multiply-add);
//   - sums over the batch (patch_tokens' dcls, dpos: fp32 on the GPU, double on the CPU, <= 3 terms): 1e-6;
//   - row reductions (l2normalize, rowdot: fp32 lanes and a butterfly against the CPU's double sum): at most
//     C / 32 + 5 roundings of partial sums no larger than sum |a b| ~ 0.8 C, against max |out| ~ sqrt(C) or 1:
//     1e-5 for C <= 1000.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cudaemu_util.h"
#include "../src/ops/ops.h"

#define BF16_TOL (1.0 / 256.0)
#define FMA_TOL (1.0 / 4194304.0)
#define RESIZE_TOL 4e-6
#define SUM_TOL 1e-6
#define ROW_TOL 1e-5

static const char *dtn(DType dt) { return dt == DTYPE_BF16 ? "bf16" : "f32"; }
static double tol_of(DType dt, double f32_tol) { return dt == DTYPE_BF16 ? BF16_TOL + f32_tol : f32_tol; }

// A CPU f32 tensor of normal values (bf16-representable when dt is bf16), and its device copy in dt.
static Tensor rnd(int ndim, const int64_t *shape, uint64_t tag, DType dt, Tensor *gpu) {
    Tensor c = cu_alloc(DEVICE_CPU, DTYPE_F32, ndim, shape);
    cu_fill(&c, tag, 1.0f, dt == DTYPE_BF16);
    if (gpu) *gpu = cu_upload(&c, dt);
    return c;
}
static Tensor cpu0(int ndim, const int64_t *shape) { return cu_alloc(DEVICE_CPU, DTYPE_F32, ndim, shape); }
static Tensor gpu0(int ndim, const int64_t *shape, DType dt) { return cu_alloc(DEVICE_CUDA, dt, ndim, shape); }
static void release(Tensor *ts, int n) {
    for (int i = 0; i < n; i++) cu_free(&ts[i]);
}

static void test_resize(DType dt, int64_t B, int64_t H, int64_t W, int64_t OH, int64_t OW, ResizeKernel k, int aa) {
    int64_t s[4] = {B, 3, H, W}, so[4] = {B, 3, OH, OW};
    Tensor gx, gdy, x = rnd(4, s, 1, dt, &gx), dy = rnd(4, so, 2, dt, &gdy);
    Tensor y = cpu0(4, so), gy = gpu0(4, so, dt), dx = cpu0(4, s), gdx = gpu0(4, s, dt);
    char what[128];
    snprintf(what, sizeof what, "resize %s aa%d %s %lldx%lld->%lldx%lld fwd", resize_kernel_name(k), aa, dtn(dt),
             (long long)H, (long long)W, (long long)OH, (long long)OW);
    resize_forward(&y, &x, k, aa);
    resize_forward(&gy, &gx, k, aa);
    cu_compare(what, &gy, &y, tol_of(dt, RESIZE_TOL));
    memcpy(what + strlen(what) - 3, "bwd", 3);
    resize_backward(&dx, &dy, k, aa);
    resize_backward(&gdx, &gdy, k, aa);
    cu_compare(what, &gdx, &dx, tol_of(dt, RESIZE_TOL));
    release((Tensor[]){x, gx, dy, gdy, y, gy, dx, gdx}, 8);
}

// crop, clamp_affine and normalize (the rest of the preprocessing) on [B, 3, H, W]
static void test_pixels(DType dt, int64_t B, int64_t H, int64_t W, int top, int left, int64_t OH, int64_t OW) {
    int64_t s[4] = {B, 3, H, W}, so[4] = {B, 3, OH, OW};
    Tensor gx, gdy, gd, x = rnd(4, s, 3, dt, &gx), dy = rnd(4, so, 4, dt, &gdy), d = rnd(4, s, 5, dt, &gd);
    Tensor y = cpu0(4, so), gy = gpu0(4, so, dt), dx = cpu0(4, s), gdx = gpu0(4, s, dt);
    char what[128];
    snprintf(what, sizeof what, "crop2d %s %lldx%lld at (%d, %d)", dtn(dt), (long long)OH, (long long)OW, top, left);
    crop2d_forward(&y, &x, top, left);
    crop2d_forward(&gy, &gx, top, left);
    cu_compare(what, &gy, &y, 0);
    crop2d_backward(&dx, &dy, top, left);
    crop2d_backward(&gdx, &gdy, top, left);
    cu_compare("crop2d bwd", &gdx, &dx, 0);

    Tensor z = cpu0(4, s), gz = gpu0(4, s, dt), dz = cpu0(4, s), gdz = gpu0(4, s, dt);
    snprintf(what, sizeof what, "clamp_affine %s fwd", dtn(dt));
    clamp_affine_forward(&z, &x, 0.5f, 0.5f, 0.0f, 1.0f);
    clamp_affine_forward(&gz, &gx, 0.5f, 0.5f, 0.0f, 1.0f);
    cu_compare(what, &gz, &z, tol_of(dt, FMA_TOL));
    clamp_affine_backward(&dz, &d, &x, 0.5f, 0.5f, 0.0f, 1.0f);
    clamp_affine_backward(&gdz, &gd, &gx, 0.5f, 0.5f, 0.0f, 1.0f);
    cu_compare("clamp_affine bwd", &gdz, &dz, tol_of(dt, FMA_TOL));

    const float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f}, std[3] = {0.26862954f, 0.26130258f, 0.27577711f};
    snprintf(what, sizeof what, "normalize %s fwd", dtn(dt));
    normalize_forward(&z, &x, mean, std);
    normalize_forward(&gz, &gx, mean, std);
    cu_compare(what, &gz, &z, tol_of(dt, FMA_TOL));
    normalize_backward(&dz, &d, std);
    normalize_backward(&gdz, &gd, std);
    cu_compare("normalize bwd", &gdz, &dz, tol_of(dt, FMA_TOL));
    release((Tensor[]){x, gx, dy, gdy, d, gd, y, gy, dx, gdx, z, gz, dz, gdz}, 14);
}

// patch_tokens and token_select: patches [B, D, gh, gw] -> tokens [B, 1 + gh gw, D] -> rows [B, D]
static void test_tokens(DType dt, int64_t B, int64_t D, int64_t gh, int64_t gw) {
    int64_t T = 1 + gh * gw, sp[4] = {B, D, gh, gw}, st[3] = {B, T, D}, sr[2] = {B, D}, sc[1] = {D}, se[2] = {T, D};
    Tensor gp, gc, ge, gdt, gdr, p = rnd(4, sp, 6, dt, &gp), c = rnd(1, sc, 7, dt, &gc), e = rnd(2, se, 8, dt, &ge);
    Tensor dtok = rnd(3, st, 9, dt, &gdt), drow = rnd(2, sr, 10, dt, &gdr);
    Tensor tok = cpu0(3, st), gtok = gpu0(3, st, dt), dp = cpu0(4, sp), gdp = gpu0(4, sp, dt);
    Tensor dc = rnd(1, sc, 11, DTYPE_F32, NULL), de = rnd(2, se, 12, DTYPE_F32, NULL);
    Tensor gdc = cu_upload(&dc, DTYPE_F32), gde = cu_upload(&de, DTYPE_F32); // accumulated into
    char what[128];
    snprintf(what, sizeof what, "patch_tokens %s B%lld D%lld %lldx%lld fwd", dtn(dt), (long long)B, (long long)D,
             (long long)gh, (long long)gw);
    patch_tokens_forward(&tok, &p, &c, &e);
    patch_tokens_forward(&gtok, &gp, &gc, &ge);
    cu_compare(what, &gtok, &tok, tol_of(dt, FMA_TOL));
    patch_tokens_backward(&dp, &dc, &de, &dtok);
    patch_tokens_backward(&gdp, &gdc, &gde, &gdt);
    cu_compare("patch_tokens dpatches", &gdp, &dp, 0);
    cu_compare("patch_tokens dcls (f32, accumulated)", &gdc, &dc, SUM_TOL);
    cu_compare("patch_tokens dpos (f32, accumulated)", &gde, &de, SUM_TOL);

    int32_t idx[8];
    for (int64_t b = 0; b < B; b++) idx[b] = (int32_t)((b * 7 + 3) % T);
    idx[0] = 0, idx[B - 1] = (int32_t)(T - 1); // the class token and the last token
    Tensor row = cpu0(2, sr), grow = gpu0(2, sr, dt), dtk = cpu0(3, st), gdtk = gpu0(3, st, dt);
    snprintf(what, sizeof what, "token_select %s fwd", dtn(dt));
    token_select_forward(&row, &tok, idx);
    token_select_forward(&grow, &gtok, idx);
    cu_compare(what, &grow, &row, dt == DTYPE_BF16 ? BF16_TOL : 0); // gtok holds bf16-rounded tokens
    token_select_backward(&dtk, &drow, idx);
    token_select_backward(&gdtk, &gdr, idx);
    cu_compare("token_select bwd", &gdtk, &dtk, 0);
    release((Tensor[]){p, gp, c, gc, e, ge, dtok, gdt, drow, gdr, tok, gtok, dp, gdp, dc, de, gdc, gde, row, grow,
                       dtk, gdtk},
            22);
}

// l2normalize and rowdot over [N, C]
static void test_rows(DType dt, int64_t N, int64_t C) {
    int64_t s[2] = {N, C}, sn[1] = {N};
    Tensor gx, gb, gd, x = rnd(2, s, 13, dt, &gx), b = rnd(2, s, 14, dt, &gb), d = rnd(2, s, 15, dt, &gd);
    Tensor y = cpu0(2, s), gy = gpu0(2, s, dt), nr = cpu0(1, sn), gnr = gpu0(1, sn, DTYPE_F32);
    Tensor dx = cpu0(2, s), gdx = gpu0(2, s, dt);
    char what[128];
    snprintf(what, sizeof what, "l2normalize %s %lldx%lld fwd", dtn(dt), (long long)N, (long long)C);
    l2normalize_forward(&y, &nr, &x);
    l2normalize_forward(&gy, &gnr, &gx);
    cu_compare(what, &gy, &y, tol_of(dt, ROW_TOL));
    cu_compare("l2normalize norms (f32)", &gnr, &nr, ROW_TOL);
    // the backward from the CPU's own (bf16-representable in bf16 runs) outputs, so only this op is compared
    if (dt == DTYPE_BF16) cu_round_bf16(y.data, N * C);
    Tensor gyy = cu_upload(&y, dt);
    l2normalize_backward(&dx, &d, &y, &nr);
    l2normalize_backward(&gdx, &gd, &gyy, &gnr);
    cu_compare("l2normalize bwd", &gdx, &dx, tol_of(dt, ROW_TOL));

    Tensor o = cpu0(1, sn), go = gpu0(1, sn, DTYPE_F32), g = rnd(1, sn, 16, DTYPE_F32, NULL);
    Tensor gg = cu_upload(&g, DTYPE_F32), da = cpu0(2, s), gda = gpu0(2, s, dt), db = cpu0(2, s), gdb = gpu0(2, s, dt);
    snprintf(what, sizeof what, "rowdot %s fwd (f32 out)", dtn(dt));
    rowdot_forward(&o, &x, &b);
    rowdot_forward(&go, &gx, &gb);
    cu_compare(what, &go, &o, ROW_TOL);
    rowdot_backward(&da, &db, &g, &x, &b);
    rowdot_backward(&gda, &gdb, &gg, &gx, &gb);
    cu_compare("rowdot da", &gda, &da, tol_of(dt, FMA_TOL));
    cu_compare("rowdot db", &gdb, &db, tol_of(dt, FMA_TOL));
    release((Tensor[]){x, gx, b, gb, d, gd, y, gy, nr, gnr, dx, gdx, gyy, o, go, g, gg, da, gda, db, gdb}, 21);
}

int main(void) {
    cu_require_gpu();
    for (int d = 0; d < 2; d++) {
        DType dt = d ? DTYPE_BF16 : DTYPE_F32;
        for (int aa = 0; aa < 2; aa++)
            for (int k = 0; k < 2; k++) {
                ResizeKernel rk = k ? RESIZE_BICUBIC : RESIZE_BILINEAR;
                test_resize(dt, 1, 64, 64, 224, 224, rk, aa);  // up
                test_resize(dt, 1, 37, 53, 224, 224, rk, aa);  // up, non-square input
                test_resize(dt, 1, 300, 200, 224, 224, rk, aa); // down in one axis, up in the other
                test_resize(dt, 2, 9, 70, 3, 31, rk, aa);       // strong down, non-square output, batch 2
            }
        test_resize(dt, 1, 512, 512, 224, 224, RESIZE_BICUBIC, 1); // SD's output to CLIP's input (11 taps)
        test_pixels(dt, 2, 37, 53, 5, 11, 29, 33);
        test_pixels(dt, 1, 256, 300, 16, 38, 224, 224);
        test_tokens(dt, 3, 40, 4, 5);
        test_tokens(dt, 1, 64, 7, 7);
        test_rows(dt, 3, 40);
        test_rows(dt, 5, 1000);
        test_rows(dt, 1, 7);
    }
    return tu_report();
}
