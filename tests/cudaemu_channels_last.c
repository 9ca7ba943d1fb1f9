// cudaemu_channels_last.c: the ops of the UNet and the VAE decoder on channels-last GPU tensors (Tensor.channels_last:
// NCHW shapes, NHWC storage; train.channels_last) against the CPU ops on NCHW tensors: the NCHW <-> NHWC casts,
// GroupNorm plain and fused with SiLU, the per-channel broadcast add, nearest 2x upsampling, channel concat, the
// token transposes (copies channels last), conv2d (3x3 stride 1 and 2, 1x1, bias, residual; weight gradient into a
// channels-last or an NCHW fp32 gradient), and arena_cast into a channels-last compute copy; forward and backward,
// fp32 and bf16; then the refusals (a channels-last tensor on the CPU path, mixed layouts). Every GPU result is cast
// back to NCHW on the GPU before it is compared, so the casts are checked first, bit for bit.
//
// Tolerances: as the NCHW tests of the same ops (cudaemu_norm, cudaemu_conv, cudaemu_layout): fp32 1e-5 for the
// reductions (GroupNorm's statistics and gradients, the broadcast add's and the bias's sums: fp32 sums of at most
// ~1e4 terms in another order than the CPU's double or fp32 ones), 2e-6 for the convolutions, exact for the copies;
// bf16 2^-8 (+ 1e-5) for a value rounded once to bf16, 2^-7 for the weight gradient of two calls and the sums an f32
// bias adds before its bf16 rounding.
#include <math.h>
#include <string.h>

#include "../src/models/blocks.h"
#include "../src/ops/ops.h"
#include "cudaemu_util.h"

#define TOL_F32 1e-5
#define TOL_CONV_F32 2e-6
#define TOL_BF16 (1.0 / 256 + 1e-5)
#define TOL_BF16_2 (1.0 / 128 + 1e-5)

static Tensor cpu_t(int ndim, const int64_t *shape) { return cu_alloc(DEVICE_CPU, DTYPE_F32, ndim, shape); }

// NCHW -> channels last -> NCHW is exact (a permutation; bf16 rounding once when the dtype narrows); the storage
// really is NHWC; and the per-sample tiles cover sizes that are not multiples of 32.
static void check_casts(void) {
    int64_t sh[4] = {2, 37, 5, 7};
    Tensor c = cpu_t(4, sh);
    cu_fill(&c, 1, 1.0f, 0);
    for (int bf = 0; bf < 2; bf++) {
        DType dt = bf ? DTYPE_BF16 : DTYPE_F32;
        Tensor g = cu_upload(&c, DTYPE_F32), t = cu_alloc(DEVICE_CUDA, dt, 4, sh), back = cu_alloc(DEVICE_CUDA,
                                                                                                    DTYPE_F32, 4, sh);
        t.channels_last = 1;
        tensor_cast(&t, &g);    // f32 NCHW -> dt NHWC
        tensor_cast(&back, &t); // dt NHWC -> f32 NCHW
        float *h = cu_download(&back), *s = cu_download(&t), *x = c.data;
        int bad = 0, misplaced = 0;
        for (int64_t i = 0; i < tensor_numel(&c); i++)
            bad += h[i] != (bf ? bf16_to_f32(f32_to_bf16(x[i])) : x[i]);
        for (int64_t n = 0; n < 2; n++) // storage [n, y, x, c]
            for (int64_t ch = 0; ch < 37; ch++)
                for (int64_t p = 0; p < 35; p++) {
                    float want = x[(n * 37 + ch) * 35 + p];
                    misplaced += s[(n * 35 + p) * 37 + ch] != (bf ? bf16_to_f32(f32_to_bf16(want)) : want);
                }
        tu_check(!bad && !misplaced, "%s NCHW -> channels last -> NCHW: %d values changed, %d misplaced in NHWC",
                 dtype_name(dt), bad, misplaced);
        free(h), free(s);
        cu_free(&g), cu_free(&t), cu_free(&back);
    }
    cu_free(&c);
    // a VAE image of 1536 x 1536: 73728 tiles of pixels, more than a grid's y or z dimension takes
    int64_t si[4] = {1, 3, 1536, 1536};
    Tensor img = cpu_t(4, si);
    cu_fill(&img, 9, 1.0f, 0);
    Tensor gi = cu_upload(&img, DTYPE_F32), ti = cu_alloc(DEVICE_CUDA, DTYPE_F32, 4, si);
    Tensor bi = cu_alloc(DEVICE_CUDA, DTYPE_F32, 4, si);
    ti.channels_last = 1;
    tensor_cast(&ti, &gi);
    tensor_cast(&bi, &ti);
    cu_compare("1536 x 1536 image to channels last and back", &bi, &img, 0.0);
    cu_free(&img), cu_free(&gi), cu_free(&ti), cu_free(&bi);
}

// GroupNorm (act < 0: none) forward and backward, parameter gradients accumulated onto 1.0
static void check_groupnorm(const char *name, int64_t B, int64_t C, int64_t H, int64_t W, int G, int act, DType dt) {
    int bf = dt == DTYPE_BF16;
    int64_t sh[4] = {B, C, H, W}, sc[1] = {C}, ss[2] = {B, G};
    Tensor x = cpu_t(4, sh), y = cpu_t(4, sh), dy = cpu_t(4, sh), dx = cpu_t(4, sh), ga = cpu_t(1, sc);
    Tensor be = cpu_t(1, sc);
    Tensor dga = cpu_t(1, sc), dbe = cpu_t(1, sc), mean = cpu_t(2, ss), rstd = cpu_t(2, ss);
    cu_fill(&x, 2, 1.5f, 0);
    for (int64_t i = 0; i < tensor_numel(&x); i++) ((float *)x.data)[i] += 0.7f; // a non-zero mean
    if (bf) cu_round_bf16(x.data, tensor_numel(&x));
    cu_fill(&dy, 3, 1.0f, bf);
    cu_fill(&ga, 4, 0.3f, bf);
    cu_fill(&be, 5, 0.5f, bf);
    for (int64_t c = 0; c < C; c++) ((float *)dga.data)[c] = ((float *)dbe.data)[c] = 1.0f;
    Tensor gx = cu_upload_cl(&x, dt, 1), gdy = cu_upload_cl(&dy, dt, 1), gy = cu_nan(4, sh, dt, 1);
    Tensor gdx = cu_nan(4, sh, dt, 1);
    Tensor gga = cu_upload(&ga, dt), gbe = cu_upload(&be, dt), gdga = cu_upload(&dga, DTYPE_F32);
    Tensor gdbe = cu_upload(&dbe, DTYPE_F32), gm = cu_alloc(DEVICE_CUDA, DTYPE_F32, 2, ss);
    Tensor gr = cu_alloc(DEVICE_CUDA, DTYPE_F32, 2, ss);
    if (act >= 0) {
        groupnorm_act_forward(&y, &mean, &rstd, &x, &ga, &be, G, 1e-5f, (Activation)act);
        groupnorm_act_forward(&gy, &gm, &gr, &gx, &gga, &gbe, G, 1e-5f, (Activation)act);
        groupnorm_act_backward(&dx, &dga, &dbe, &dy, &x, &mean, &rstd, &ga, &be, G, (Activation)act);
        groupnorm_act_backward(&gdx, &gdga, &gdbe, &gdy, &gx, &gm, &gr, &gga, &gbe, G, (Activation)act);
    } else {
        groupnorm_forward(&y, &mean, &rstd, &x, &ga, &be, G, 1e-5f);
        groupnorm_forward(&gy, &gm, &gr, &gx, &gga, &gbe, G, 1e-5f);
        groupnorm_backward(&dx, &dga, &dbe, &dy, &x, &mean, &rstd, &ga, G);
        groupnorm_backward(&gdx, &gdga, &gdbe, &gdy, &gx, &gm, &gr, &gga, G);
    }
    char what[160];
    snprintf(what, sizeof what, "%s %s out", name, dtype_name(dt));
    cu_compare_cl(what, &gy, &y, bf ? TOL_BF16 : TOL_F32);
    snprintf(what, sizeof what, "%s %s mean, rstd", name, dtype_name(dt));
    cu_compare(what, &gm, &mean, TOL_F32);
    cu_compare(what, &gr, &rstd, TOL_F32);
    snprintf(what, sizeof what, "%s %s din", name, dtype_name(dt));
    cu_compare_cl(what, &gdx, &dx, bf ? TOL_BF16 : TOL_F32);
    snprintf(what, sizeof what, "%s %s dgamma, dbeta +=", name, dtype_name(dt));
    cu_compare(what, &gdga, &dga, TOL_F32);
    cu_compare(what, &gdbe, &dbe, TOL_F32);
    Tensor *all[] = {&x, &y, &dy, &dx, &ga, &be, &dga, &dbe, &mean, &rstd, &gx, &gdy, &gy, &gdx,
                     &gga, &gbe, &gdga, &gdbe, &gm, &gr};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) cu_free(all[i]);
}

// The resnets' time-embedding add, upsampling, the up path's concat and the transformer's token transposes
static void check_layout_ops(DType dt) {
    int bf = dt == DTYPE_BF16;
    double tol_sum = bf ? TOL_BF16 : TOL_F32;
    int64_t sh[4] = {2, 37, 5, 6}, sv[2] = {2, 37};
    Tensor x = cpu_t(4, sh), v = cpu_t(2, sv), y = cpu_t(4, sh), dv = cpu_t(2, sv);
    cu_fill(&x, 10, 1.0f, bf);
    cu_fill(&v, 11, 1.0f, bf);
    Tensor gx = cu_upload_cl(&x, dt, 1), gv = cu_upload(&v, dt), gy = cu_nan(4, sh, dt, 1);
    Tensor gdv = cu_alloc(DEVICE_CUDA, dt, 2, sv);
    add_bcast_forward(&y, &x, &v);
    add_bcast_forward(&gy, &gx, &gv);
    cu_compare_cl(bf ? "add_bcast bf16 forward" : "add_bcast f32 forward", &gy, &y, bf ? TOL_BF16 : 0.0);
    add_bcast_backward(NULL, &dv, &x); // dv = the sum over the pixels of each (b, c)
    add_bcast_backward(NULL, &gdv, &gx);
    cu_compare(bf ? "add_bcast bf16 dv" : "add_bcast f32 dv", &gdv, &dv, tol_sum);
    Tensor *a1[] = {&x, &v, &y, &dv, &gx, &gv, &gy, &gdv};
    for (size_t i = 0; i < sizeof a1 / sizeof *a1; i++) cu_free(a1[i]);

    int64_t si[4] = {2, 5, 3, 4}, so[4] = {2, 5, 6, 8};
    Tensor u = cpu_t(4, si), uo = cpu_t(4, so), du = cpu_t(4, si);
    cu_fill(&u, 12, 1.0f, bf);
    Tensor gu = cu_upload_cl(&u, dt, 1), guo = cu_nan(4, so, dt, 1), gdu = cu_nan(4, si, dt, 1);
    upsample2x_forward(&uo, &u);
    upsample2x_forward(&guo, &gu);
    cu_compare_cl(bf ? "upsample2x bf16 forward" : "upsample2x f32 forward", &guo, &uo, 0.0);
    upsample2x_backward(&du, &uo); // the sum of each 2x2 block (of the forward's output as the gradient)
    upsample2x_backward(&gdu, &guo);
    cu_compare_cl(bf ? "upsample2x bf16 backward" : "upsample2x f32 backward", &gdu, &du, bf ? TOL_BF16 : 0.0);
    Tensor *a2[] = {&u, &uo, &du, &gu, &guo, &gdu};
    for (size_t i = 0; i < sizeof a2 / sizeof *a2; i++) cu_free(a2[i]);

    int64_t sa[4] = {2, 3, 4, 5}, sb[4] = {2, 6, 4, 5}, sw[4] = {2, 9, 4, 5};
    Tensor a = cpu_t(4, sa), b = cpu_t(4, sb), w = cpu_t(4, sw), da = cpu_t(4, sa), db = cpu_t(4, sb);
    cu_fill(&a, 13, 1.0f, bf);
    cu_fill(&b, 14, 1.0f, bf);
    Tensor ga = cu_upload_cl(&a, dt, 1), gb = cu_upload_cl(&b, dt, 1), gw = cu_nan(4, sw, dt, 1);
    Tensor gda = cu_nan(4, sa, dt, 1), gdb = cu_nan(4, sb, dt, 1);
    concat_channels_forward(&w, &a, &b);
    concat_channels_forward(&gw, &ga, &gb);
    cu_compare_cl(bf ? "concat bf16 forward" : "concat f32 forward", &gw, &w, 0.0);
    concat_channels_backward(&da, &db, &w);
    concat_channels_backward(&gda, &gdb, &gw);
    cu_compare_cl(bf ? "concat bf16 backward a" : "concat f32 backward a", &gda, &da, 0.0);
    cu_compare_cl(bf ? "concat bf16 backward b" : "concat f32 backward b", &gdb, &db, 0.0);
    Tensor *a3[] = {&a, &b, &w, &da, &db, &ga, &gb, &gw, &gda, &gdb};
    for (size_t i = 0; i < sizeof a3 / sizeof *a3; i++) cu_free(a3[i]);

    // tokens [B, H W, C] of an image [B, C, H, W], and back with the residual
    int64_t si2[4] = {2, 37, 5, 6}, st[3] = {2, 30, 37};
    Tensor img = cpu_t(4, si2), res = cpu_t(4, si2), tok = cpu_t(3, st), out = cpu_t(4, si2);
    cu_fill(&img, 15, 1.0f, bf);
    cu_fill(&res, 16, 1.0f, bf);
    Tensor gimg = cu_upload_cl(&img, dt, 1), gres = cu_upload_cl(&res, dt, 1), gtok = cu_alloc(DEVICE_CUDA, dt, 3, st);
    Tensor gout = cu_nan(4, si2, dt, 1);
    nchw_to_tokens_forward(&tok, &img);
    nchw_to_tokens_forward(&gtok, &gimg);
    cu_compare(bf ? "tokens of an image bf16" : "tokens of an image f32", &gtok, &tok, 0.0);
    tokens_to_nchw_forward_residual(&out, &tok, &res);
    tokens_to_nchw_forward_residual(&gout, &gtok, &gres);
    cu_compare_cl(bf ? "image of tokens + residual bf16" : "image of tokens + residual f32", &gout, &out,
                  bf ? TOL_BF16 : 0.0);
    Tensor *a4[] = {&img, &res, &tok, &out, &gimg, &gres, &gtok, &gout};
    for (size_t i = 0; i < sizeof a4 / sizeof *a4; i++) cu_free(a4[i]);
}

// conv2d on channels-last input, output, filter (and residual) against the CPU's NCHW conv2d: forward with bias and
// residual, two backward calls (din written; dw, db accumulated onto 0.1) with dw channels last or an NCHW fp32
// gradient (the model's: the compute filter channels last, its master's gradient not)
static void check_conv(const char *name, int64_t B, int64_t IC, int64_t OC, int64_t H, int64_t W, int64_t K,
                       int stride, int pad, DType dt, int dw_nchw) {
    int bf = dt == DTYPE_BF16;
    int64_t OH = (H + 2 * pad - K) / stride + 1, OW = (W + 2 * pad - K) / stride + 1;
    int64_t sx[4] = {B, IC, H, W}, sw[4] = {OC, IC, K, K}, sy[4] = {B, OC, OH, OW}, sb[1] = {OC};
    Tensor x = cpu_t(4, sx), w = cpu_t(4, sw), b = cpu_t(1, sb), r = cpu_t(4, sy), y = cpu_t(4, sy);
    Tensor dy1 = cpu_t(4, sy), dy2 = cpu_t(4, sy), dx = cpu_t(4, sx), dw = cpu_t(4, sw), db = cpu_t(1, sb);
    cu_fill(&x, 20, 1.0f, bf);
    cu_fill(&w, 21, 0.3f, bf);
    cu_fill(&b, 22, 0.5f, bf);
    cu_fill(&r, 23, 1.0f, bf);
    cu_fill(&dy1, 24, 1.0f, bf);
    cu_fill(&dy2, 25, 1.0f, bf);
    for (int64_t i = 0; i < tensor_numel(&dw); i++) ((float *)dw.data)[i] = 0.1f;
    for (int64_t i = 0; i < OC; i++) ((float *)db.data)[i] = 0.1f;
    Tensor gx = cu_upload_cl(&x, dt, 1), gw = cu_upload_cl(&w, dt, 1), gb = cu_upload(&b, dt);
    Tensor gr = cu_upload_cl(&r, dt, 1);
    Tensor gdy1 = cu_upload_cl(&dy1, dt, 1), gdy2 = cu_upload_cl(&dy2, dt, 1), gy = cu_nan(4, sy, dt, 1);
    Tensor gdx = cu_nan(4, sx, dt, 1);
    Tensor gdw = dw_nchw ? cu_upload(&dw, DTYPE_F32) : cu_upload_cl(&dw, DTYPE_F32, 1), gdb = cu_upload(&db, DTYPE_F32);
    ops_workspace_reserve(DEVICE_CUDA, conv2d_workspace_bytes(&gx, &gw, stride, pad));
    conv2d_forward_residual(&y, &x, &w, &b, &r, stride, pad);
    conv2d_forward_residual(&gy, &gx, &gw, &gb, &gr, stride, pad);
    for (int k = 0; k < 2; k++) {
        conv2d_backward(&dx, &dw, &db, k ? &dy2 : &dy1, &x, &w, stride, pad);
        conv2d_backward(&gdx, &gdw, &gdb, k ? &gdy2 : &gdy1, &gx, &gw, stride, pad);
    }
    char what[160];
    const char *dts = dtype_name(dt), *dwl = dw_nchw ? "NCHW dw" : "channels-last dw";
    snprintf(what, sizeof what, "conv %s %s forward + bias + residual", name, dts);
    cu_compare_cl(what, &gy, &y, bf ? TOL_BF16_2 : TOL_CONV_F32);
    snprintf(what, sizeof what, "conv %s %s dx", name, dts);
    cu_compare_cl(what, &gdx, &dx, bf ? TOL_BF16 : TOL_CONV_F32);
    snprintf(what, sizeof what, "conv %s %s %s += twice", name, dts, dwl);
    if (dw_nchw) cu_compare(what, &gdw, &dw, bf ? TOL_BF16_2 : TOL_CONV_F32);
    else cu_compare_cl(what, &gdw, &dw, bf ? TOL_BF16_2 : TOL_CONV_F32);
    snprintf(what, sizeof what, "conv %s %s db += twice", name, dts);
    cu_compare(what, &gdb, &db, TOL_CONV_F32);
    Tensor *all[] = {&x, &w, &b, &r, &y, &dy1, &dy2, &dx, &dw, &db, &gx, &gw, &gb, &gr, &gdy1, &gdy2, &gy, &gdx,
                     &gdw, &gdb};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) cu_free(all[i]);
}

// arena_cast into a channels-last compute copy: filters of more than one tap are transposed, the rest copied
static void check_arena_cast(void) {
    Arena src, dst;
    Tensor s3, s1, sb, d3, d1, db;
    arena_init(&src, "master", DEVICE_CUDA);
    arena_init(&dst, "compute", DEVICE_CUDA);
    arena_set_float_dtype(&dst, DTYPE_BF16);
    arena_set_channels_last(&dst, 1);
    int64_t w3[4] = {5, 7, 3, 3}, w1[4] = {4, 5, 1, 1}, b1[1] = {4};
    arena_add(&src, &s3, "conv3.weight", DTYPE_F32, 4, w3), arena_add(&dst, &d3, "conv3.weight", DTYPE_BF16, 4, w3);
    arena_add(&src, &s1, "conv1.weight", DTYPE_F32, 4, w1), arena_add(&dst, &d1, "conv1.weight", DTYPE_BF16, 4, w1);
    arena_add(&src, &sb, "conv1.bias", DTYPE_F32, 1, b1), arena_add(&dst, &db, "conv1.bias", DTYPE_BF16, 1, b1);
    arena_alloc(&src), arena_alloc(&dst);
    Tensor c3 = cpu_t(4, w3), c1 = cpu_t(4, w1), cb = cpu_t(1, b1);
    cu_fill(&c3, 30, 1.0f, 1), cu_fill(&c1, 31, 1.0f, 1), cu_fill(&cb, 32, 1.0f, 1);
    device_copy(s3.data, DEVICE_CUDA, c3.data, DEVICE_CPU, tensor_bytes(&c3));
    device_copy(s1.data, DEVICE_CUDA, c1.data, DEVICE_CPU, tensor_bytes(&c1));
    device_copy(sb.data, DEVICE_CUDA, cb.data, DEVICE_CPU, tensor_bytes(&cb));
    arena_cast(&dst, &src);
    tu_check(d3.channels_last && d1.channels_last, "compute filters planned channels last");
    cu_compare_cl("arena_cast 3x3 filter (transposed)", &d3, &c3, 0.0);
    cu_compare_cl("arena_cast 1x1 filter", &d1, &c1, 0.0);
    cu_compare("arena_cast bias", &db, &cb, 0.0);
    cu_free(&c3), cu_free(&c1), cu_free(&cb);
    arena_free(&src), arena_free(&dst);
}

// Refusals, each in a child process: internal failure (exit 1) naming the problem.
static void child_cpu_cl(const void *arg) {
    (void)arg;
    int64_t sh[4] = {1, 4, 3, 3}, sc[1] = {4}, ss[2] = {1, 2};
    Tensor x = cpu_t(4, sh), y = cpu_t(4, sh), g = cpu_t(1, sc), m = cpu_t(2, ss), r = cpu_t(2, ss);
    x.channels_last = 1;
    groupnorm_forward(&y, &m, &r, &x, &g, &g, 2, 1e-5f);
}
static void child_cpu_cl_conv(const void *arg) {
    (void)arg;
    int64_t sx[4] = {1, 2, 5, 5}, sw[4] = {3, 2, 3, 3}, sy[4] = {1, 3, 5, 5};
    Tensor x = cpu_t(4, sx), w = cpu_t(4, sw), y = cpu_t(4, sy);
    x.channels_last = w.channels_last = y.channels_last = 1;
    conv2d_forward(&y, &x, &w, NULL, 1, 1);
}
static void child_mixed_conv(const void *arg) {
    (void)arg;
    int64_t sx[4] = {1, 2, 5, 5}, sw[4] = {3, 2, 3, 3}, sy[4] = {1, 3, 5, 5};
    Tensor x = cu_alloc(DEVICE_CUDA, DTYPE_F32, 4, sx), w = cu_alloc(DEVICE_CUDA, DTYPE_F32, 4, sw);
    Tensor y = cu_alloc(DEVICE_CUDA, DTYPE_F32, 4, sy);
    x.channels_last = w.channels_last = 1; // the output NCHW
    conv2d_forward(&y, &x, &w, NULL, 1, 1);
}
static void child_mixed_norm(const void *arg) {
    (void)arg;
    int64_t sh[4] = {1, 4, 3, 3}, sc[1] = {4}, ss[2] = {1, 2};
    Tensor x = cu_alloc(DEVICE_CUDA, DTYPE_F32, 4, sh), y = cu_alloc(DEVICE_CUDA, DTYPE_F32, 4, sh);
    Tensor g = cu_alloc(DEVICE_CUDA, DTYPE_F32, 1, sc), m = cu_alloc(DEVICE_CUDA, DTYPE_F32, 2, ss);
    x.channels_last = 1;
    groupnorm_forward(&y, &m, &m, &x, &g, &g, 2, 1e-5f);
}
static void check_refusals(void) {
    struct {
        void (*fn)(const void *);
        const char *want, *what;
    } k[] = {{child_cpu_cl, "channels-last tensor on the CPU path", "a channels-last tensor on the CPU refused"},
             {child_cpu_cl_conv, "channels-last tensor on the CPU path", "a channels-last conv2d on the CPU refused"},
             {child_mixed_conv, "is stored NCHW in a channels-last convolution", "conv2d with mixed layouts refused"},
             {child_mixed_norm, "operands stored NCHW and channels last", "groupnorm with mixed layouts refused"}};
    for (size_t i = 0; i < sizeof k / sizeof *k; i++) {
        TuChild ch;
        tu_run_child(k[i].fn, NULL, &ch);
        tu_check(ch.code == 1 && strstr(ch.err, k[i].want), "%s (exit %d)", k[i].what, ch.code);
        if (ch.code != 1 || !strstr(ch.err, k[i].want)) fprintf(stderr, "%s", ch.err);
        tu_child_free(&ch);
    }
}

int main(void) {
    cu_require_gpu();
    check_casts();
    for (int bf = 0; bf < 2; bf++) {
        DType dt = bf ? DTYPE_BF16 : DTYPE_F32;
        // Cg 2 (the SD models' 32 groups at 64 channels), Cg 10 (not a multiple of the 4-channel packs), C not a
        // multiple of 4 (no packs), and a group split over several blocks (Cg S = 49152: 6 partials; S = 12288:
        // 2 backward chunks)
        check_groupnorm("groupnorm 64ch/32g 5x7", 2, 64, 5, 7, 32, -1, dt);
        check_groupnorm("groupnorm+SiLU 40ch/4g 9x9", 1, 40, 9, 9, 4, ACT_SILU, dt);
        check_groupnorm("groupnorm+SiLU 6ch/3g 3x5", 2, 6, 3, 5, 3, ACT_SILU, dt);
        check_groupnorm("groupnorm+SiLU 8ch/2g 128x96", 1, 8, 128, 96, 2, ACT_SILU, dt);
        check_layout_ops(dt);
        check_conv("k3 s1 p1 7x6 5->17", 2, 5, 17, 7, 6, 3, 1, 1, dt, 1);
        check_conv("k3 s1 p1 7x6 5->17", 2, 5, 17, 7, 6, 3, 1, 1, dt, 0);
        check_conv("k3 s2 p1 9x8 6->5", 2, 6, 5, 9, 8, 3, 2, 1, dt, 1);
        check_conv("k1 s1 p0 5x7 9->4", 2, 9, 4, 5, 7, 1, 1, 0, dt, 1);
    }
    check_arena_cast();
    check_refusals();
    return tu_report();
}
