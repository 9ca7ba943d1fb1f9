// cudaemu_concat.c: the ops that read a channel concatenation [a | b] where its parts lie (the UNet up path's
// [hidden | skip], never copied into one tensor) on the GPU against the CPU ops: GroupNorm fused with SiLU, forward
// and backward (statistics over groups inside either part and straddling the two; the input gradient written to both
// parts), and the 1x1 convolution (two GEMMs on the weight's column slices: bias, input gradients, the weight
// gradient into its column slices, accumulated twice); NCHW and channels last, fp32 and bf16; part widths and image
// sizes with and without the kernels' packs of 4. Every output the GPU writes starts as NaN.
//
// Tolerances (max |gpu - cpu| / max |cpu|): as cudaemu_norm / cudaemu_conv for the same ops on one tensor. fp32:
// 1e-5 for the GroupNorm (fp32 sums in another order than the CPU's double ones), 2e-6 for the convolution. bf16:
// inputs are bf16 on both sides; an output rounded once to bf16 is within 2^-8 (+ 1e-5); the convolution's output
// is rounded twice (the first part's product is stored in bf16 before the second is added to it): 2^-7. Statistics
// and parameter gradients stay fp32.
#include <string.h>

#include "../src/ops/ops.h"
#include "cudaemu_util.h"

#define TOL_F32 1e-5
#define TOL_CONV_F32 2e-6
#define TOL_BF16 (1.0 / 256 + 1e-5)
#define TOL_BF16_2 (1.0 / 128 + 1e-5)

static Tensor cpu_t(int ndim, const int64_t *shape) { return cu_alloc(DEVICE_CPU, DTYPE_F32, ndim, shape); }

static const char *layout(int cl) { return cl ? "channels last" : "NCHW"; }

// groupnorm_act_*_cat with SiLU on [a [B, Ca, H, W] | b [B, Cb, H, W]], G groups; parameter gradients accumulate
// onto 1.0
static void check_groupnorm(const char *name, int64_t B, int64_t Ca, int64_t Cb, int64_t H, int64_t W, int G,
                            DType dt, int cl) {
    int bf = dt == DTYPE_BF16;
    int64_t C = Ca + Cb, sa[4] = {B, Ca, H, W}, sb[4] = {B, Cb, H, W}, sy[4] = {B, C, H, W}, sc[1] = {C},
            ss[2] = {B, G};
    Tensor a = cpu_t(4, sa), b = cpu_t(4, sb), dy = cpu_t(4, sy), y = cpu_t(4, sy), da = cpu_t(4, sa);
    Tensor db = cpu_t(4, sb);
    Tensor ga = cpu_t(1, sc), be = cpu_t(1, sc), dga = cpu_t(1, sc), dbe = cpu_t(1, sc), mean = cpu_t(2, ss),
           rstd = cpu_t(2, ss);
    cu_fill(&a, 1, 1.5f, 0);
    cu_fill(&b, 2, 0.8f, 0);
    for (int64_t i = 0; i < tensor_numel(&a); i++) ((float *)a.data)[i] += 0.7f; // the parts' means differ
    if (bf) cu_round_bf16(a.data, tensor_numel(&a)), cu_round_bf16(b.data, tensor_numel(&b));
    cu_fill(&dy, 3, 1.0f, bf);
    cu_fill(&ga, 4, 0.3f, 0);
    for (int64_t c = 0; c < C; c++)
        ((float *)ga.data)[c] += 1.0f, ((float *)dga.data)[c] = ((float *)dbe.data)[c] = 1.0f;
    if (bf) cu_round_bf16(ga.data, C);
    cu_fill(&be, 5, 0.5f, bf);
    Tensor gA = cu_upload_cl(&a, dt, cl), gB = cu_upload_cl(&b, dt, cl), gdy = cu_upload_cl(&dy, dt, cl);
    Tensor gga = cu_upload(&ga, dt);
    Tensor gbe = cu_upload(&be, dt), gdga = cu_upload(&dga, DTYPE_F32), gdbe = cu_upload(&dbe, DTYPE_F32);
    Tensor gy = cu_nan(4, sy, dt, cl), gda = cu_nan(4, sa, dt, cl), gdb = cu_nan(4, sb, dt, cl);
    Tensor gm = cu_nan(2, ss, DTYPE_F32, 0), gr = cu_nan(2, ss, DTYPE_F32, 0);
    groupnorm_act_forward_cat(&y, &mean, &rstd, &a, &b, &ga, &be, G, 1e-5f, ACT_SILU);
    groupnorm_act_forward_cat(&gy, &gm, &gr, &gA, &gB, &gga, &gbe, G, 1e-5f, ACT_SILU);
    groupnorm_act_backward_cat(&da, &db, &dga, &dbe, &dy, &a, &b, &mean, &rstd, &ga, &be, G, ACT_SILU);
    groupnorm_act_backward_cat(&gda, &gdb, &gdga, &gdbe, &gdy, &gA, &gB, &gm, &gr, &gga, &gbe, G, ACT_SILU);
    char what[200], tag[160];
    snprintf(tag, sizeof tag, "groupnorm+SiLU [%s] %s %s", name, layout(cl), dtype_name(dt));
    double tol = bf ? TOL_BF16 : TOL_F32;
    snprintf(what, sizeof what, "%s out", tag);
    cu_compare_cl(what, &gy, &y, tol);
    snprintf(what, sizeof what, "%s mean, rstd", tag);
    cu_compare(what, &gm, &mean, TOL_F32);
    cu_compare(what, &gr, &rstd, TOL_F32);
    snprintf(what, sizeof what, "%s da", tag);
    cu_compare_cl(what, &gda, &da, tol);
    snprintf(what, sizeof what, "%s db", tag);
    cu_compare_cl(what, &gdb, &db, tol);
    snprintf(what, sizeof what, "%s dgamma, dbeta +=", tag);
    cu_compare(what, &gdga, &dga, TOL_F32);
    cu_compare(what, &gdbe, &dbe, TOL_F32);
    Tensor *all[] = {&a, &b, &dy, &y, &da, &db, &ga, &be, &dga, &dbe, &mean, &rstd, &gA, &gB, &gdy,
                     &gga, &gbe, &gdga, &gdbe, &gy, &gda, &gdb, &gm, &gr};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) cu_free(all[i]);
}

// conv1x1_*_cat on [a | b] -> OC channels with a bias; two backward calls (the weight and bias gradients accumulate
// onto 0.1, the input gradients are written)
static void check_conv(const char *name, int64_t B, int64_t Ca, int64_t Cb, int64_t OC, int64_t H, int64_t W, DType dt,
                       int cl) {
    int bf = dt == DTYPE_BF16;
    int64_t IC = Ca + Cb, sa[4] = {B, Ca, H, W}, sb[4] = {B, Cb, H, W}, sw[4] = {OC, IC, 1, 1}, sy[4] = {B, OC, H, W},
            so[1] = {OC};
    Tensor a = cpu_t(4, sa), b = cpu_t(4, sb), w = cpu_t(4, sw), bias = cpu_t(1, so), y = cpu_t(4, sy);
    Tensor dy1 = cpu_t(4, sy), dy2 = cpu_t(4, sy), da = cpu_t(4, sa), db = cpu_t(4, sb), dw = cpu_t(4, sw),
           dbias = cpu_t(1, so);
    cu_fill(&a, 10, 1.0f, bf);
    cu_fill(&b, 11, 1.0f, bf);
    cu_fill(&w, 12, 0.3f, bf);
    cu_fill(&bias, 13, 0.5f, bf);
    cu_fill(&dy1, 14, 1.0f, bf);
    cu_fill(&dy2, 15, 1.0f, bf);
    for (int64_t i = 0; i < tensor_numel(&dw); i++) ((float *)dw.data)[i] = 0.1f;
    for (int64_t i = 0; i < OC; i++) ((float *)dbias.data)[i] = 0.1f;
    // a 1x1 filter is one layout either way: the weight is uploaded as is and flagged like the activations
    Tensor gA = cu_upload_cl(&a, dt, cl), gB = cu_upload_cl(&b, dt, cl), gw = cu_upload(&w, dt);
    Tensor gbias = cu_upload(&bias, dt);
    Tensor gdy1 = cu_upload_cl(&dy1, dt, cl), gdy2 = cu_upload_cl(&dy2, dt, cl), gy = cu_nan(4, sy, dt, cl);
    Tensor gda = cu_nan(4, sa, dt, cl);
    Tensor gdb = cu_nan(4, sb, dt, cl), gdw = cu_upload(&dw, DTYPE_F32), gdbias = cu_upload(&dbias, DTYPE_F32);
    gw.channels_last = (uint8_t)cl;
    conv1x1_forward_cat(&y, &a, &b, &w, &bias);
    conv1x1_forward_cat(&gy, &gA, &gB, &gw, &gbias);
    for (int k = 0; k < 2; k++) {
        conv1x1_backward_cat(&da, &db, &dw, &dbias, k ? &dy2 : &dy1, &a, &b, &w);
        conv1x1_backward_cat(&gda, &gdb, &gdw, &gdbias, k ? &gdy2 : &gdy1, &gA, &gB, &gw);
    }
    char what[200], tag[160];
    snprintf(tag, sizeof tag, "conv1x1 [%s] %s %s", name, layout(cl), dtype_name(dt));
    snprintf(what, sizeof what, "%s forward + bias", tag);
    cu_compare_cl(what, &gy, &y, bf ? TOL_BF16_2 : TOL_CONV_F32);
    snprintf(what, sizeof what, "%s da", tag);
    cu_compare_cl(what, &gda, &da, bf ? TOL_BF16 : TOL_CONV_F32);
    snprintf(what, sizeof what, "%s db", tag);
    cu_compare_cl(what, &gdb, &db, bf ? TOL_BF16 : TOL_CONV_F32);
    snprintf(what, sizeof what, "%s dw += twice", tag);
    cu_compare(what, &gdw, &dw, TOL_CONV_F32);
    snprintf(what, sizeof what, "%s dbias += twice", tag);
    cu_compare(what, &gdbias, &dbias, TOL_CONV_F32);
    Tensor *all[] = {&a, &b, &w, &bias, &y, &dy1, &dy2, &da, &db, &dw, &dbias, &gA, &gB, &gw, &gbias,
                     &gdy1, &gdy2, &gy, &gda, &gdb, &gdw, &gdbias};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) cu_free(all[i]);
}

int main(void) {
    cu_require_gpu();
    for (int cl = 0; cl < 2; cl++)
        for (int bf = 0; bf < 2; bf++) {
            DType dt = bf ? DTYPE_BF16 : DTYPE_F32;
            // groups of 12 with a's 20 channels: group 1 straddles (NCHW packs of 4 over 8x8 pixels; channels last
            // packs of 4 over channels); a split at a group boundary; channels and pixels that allow no packs
            // (a's 6 channels, 5x3 pixels; groups of 3 straddling); a group over several blocks (Cg S = 36864)
            check_groupnorm("2,20|16,8x8 /3", 2, 20, 16, 8, 8, 3, dt, cl);
            check_groupnorm("1,8|8,4x4 /4", 1, 8, 8, 4, 4, 4, dt, cl);
            check_groupnorm("2,7|5,5x3 /4", 2, 7, 5, 5, 3, 4, dt, cl);
            check_groupnorm("1,6|2,96x96 /2", 1, 6, 2, 96, 96, 2, dt, cl);
            check_conv("2,12|8,5x7 ->16", 2, 12, 8, 16, 5, 7, dt, cl);
            check_conv("3,5|3,4x3 ->7", 3, 5, 3, 7, 4, 3, dt, cl);
        }
    return tu_report();
}
