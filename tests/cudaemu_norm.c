// cudaemu_norm.c: the CUDA GroupNorm (plain and fused with an activation) and LayerNorm against the CPU ops, forward
// and backward, in fp32 and bf16 storage, at shapes that are and are not multiples of the kernels' block and pack
// sizes, with groups large enough to be split over several blocks. Runs on the emulated GPU (label cudaemu) and, as
// cuda_norm, on a real one.
//
// Tolerances (max |gpu - cpu| / max |cpu| per tensor):
//   fp32: the CPU sums in double, the GPU in fp32 in another order (Welford/Chan merges, block trees). Sums of up to
//         n ~ 4e4 terms carry a relative error of a few 2^-24 sqrt(n) (~1e-6 at worst); the input gradient subtracts
//         two such means from dz gamma, so 1e-5 bounds every tensor with margin (measured: a few 1e-7).
//   bf16: inputs are rounded to bf16 before either side sees them, so both compute on identical values; an output
//         stored in bf16 is off by at most half an ulp, 2^-8 of its magnitude, plus the fp32 differences above:
//         tolerance 2^-8 + 1e-5. Statistics and parameter gradients stay fp32: the fp32 tolerance.
#include <string.h>

#include "../src/ops/ops.h"
#include "cudaemu_util.h"

#define TOL_F32 1e-5
#define TOL_BF16 (1.0 / 256 + 1e-5)

// poison: NaN bytes in a device tensor (or the op's workspace), so a value the kernels fail to write shows up
static void poison(void *p, size_t bytes) {
    if (!bytes) return;
    unsigned char *h = xmalloc(bytes);
    memset(h, 0xff, bytes);
    device_copy(p, DEVICE_CUDA, h, DEVICE_CPU, bytes);
    free(h);
}
static void poison_t(Tensor *t) { poison(t->data, tensor_bytes(t)); }
static void poison_ws(size_t bytes) { poison(ops_workspace(DEVICE_CUDA, bytes), bytes); }

static Tensor cpu(int ndim, const int64_t *shape) { return cu_alloc(DEVICE_CPU, DTYPE_F32, ndim, shape); }

static void gn_case(const char *name, int ndim, const int64_t *shape, int groups, int act, DType dt, DType pdt,
                    float offset) {
    int64_t C = shape[1];
    int64_t sc[1] = {C}, ss[2] = {shape[0], groups};
    int bf = dt == DTYPE_BF16, pbf = pdt == DTYPE_BF16;
    double tol = bf ? TOL_BF16 : TOL_F32;
    Tensor x = cpu(ndim, shape), y = cpu(ndim, shape), dy = cpu(ndim, shape), dx = cpu(ndim, shape);
    Tensor ga = cpu(1, sc), be = cpu(1, sc), dga = cpu(1, sc), dbe = cpu(1, sc), mean = cpu(2, ss), rstd = cpu(2, ss);
    cu_fill(&x, 1, 1.5f, bf);
    for (int64_t i = 0; i < tensor_numel(&x); i++) ((float *)x.data)[i] += offset; // a non-zero mean
    if (bf) cu_round_bf16(x.data, tensor_numel(&x));
    cu_fill(&dy, 2, 1.0f, bf);
    cu_fill(&ga, 3, 0.3f, 0);
    cu_fill(&be, 4, 0.5f, pbf);
    for (int64_t c = 0; c < C; c++) ((float *)ga.data)[c] += 1.0f;
    if (pbf) cu_round_bf16(ga.data, C);
    cu_fill(&dga, 5, 1.0f, 0); // parameter gradients accumulate onto these
    cu_fill(&dbe, 6, 1.0f, 0);
    Tensor gx = cu_upload(&x, dt), gdy = cu_upload(&dy, dt), gga = cu_upload(&ga, pdt), gbe = cu_upload(&be, pdt);
    Tensor gdga = cu_upload(&dga, DTYPE_F32), gdbe = cu_upload(&dbe, DTYPE_F32);
    Tensor gy = cu_nan(y.ndim, y.shape, dt, 0), gdx = cu_nan(dx.ndim, dx.shape, dt, 0);
    Tensor gmean = cu_nan(mean.ndim, mean.shape, DTYPE_F32, 0), grstd = cu_nan(rstd.ndim, rstd.shape, DTYPE_F32, 0);
    size_t ws = groupnorm_workspace_bytes(&x, groups);
    char what[160], tag[120];
    snprintf(tag, sizeof tag, "%s%s %s%s %s", name, offset > 1.0f ? " +30" : "", dtype_name(dt),
             pdt != dt ? "/f32 params" : "", act < 0 ? "groupnorm" : activation_name((Activation)act));

    if (act < 0) groupnorm_forward(&y, &mean, &rstd, &x, &ga, &be, groups, 1e-5f);
    else groupnorm_act_forward(&y, &mean, &rstd, &x, &ga, &be, groups, 1e-5f, (Activation)act);
    poison_ws(ws);
    if (act < 0) groupnorm_forward(&gy, &gmean, &grstd, &gx, &gga, &gbe, groups, 1e-5f);
    else groupnorm_act_forward(&gy, &gmean, &grstd, &gx, &gga, &gbe, groups, 1e-5f, (Activation)act);
    snprintf(what, sizeof what, "%s fwd y", tag);
    cu_compare(what, &gy, &y, tol);
    snprintf(what, sizeof what, "%s fwd mean", tag);
    cu_compare(what, &gmean, &mean, TOL_F32);
    snprintf(what, sizeof what, "%s fwd rstd", tag);
    cu_compare(what, &grstd, &rstd, TOL_F32);

    if (act < 0) groupnorm_backward(&dx, &dga, &dbe, &dy, &x, &mean, &rstd, &ga, groups);
    else groupnorm_act_backward(&dx, &dga, &dbe, &dy, &x, &mean, &rstd, &ga, &be, groups, (Activation)act);
    poison_ws(ws);
    if (act < 0) groupnorm_backward(&gdx, &gdga, &gdbe, &gdy, &gx, &gmean, &grstd, &gga, groups);
    else groupnorm_act_backward(&gdx, &gdga, &gdbe, &gdy, &gx, &gmean, &grstd, &gga, &gbe, groups, (Activation)act);
    snprintf(what, sizeof what, "%s bwd dx", tag);
    cu_compare(what, &gdx, &dx, tol);
    snprintf(what, sizeof what, "%s bwd dgamma (+=)", tag);
    cu_compare(what, &gdga, &dga, TOL_F32);
    snprintf(what, sizeof what, "%s bwd dbeta (+=)", tag);
    cu_compare(what, &gdbe, &dbe, TOL_F32);

    // skipped gradients: din alone, then dgamma alone, give the same values
    Tensor none = {0};
    poison_t(&gdx);
    poison_ws(ws);
    if (act < 0) groupnorm_backward(&gdx, NULL, &none, &gdy, &gx, &gmean, &grstd, &gga, groups);
    else groupnorm_act_backward(&gdx, NULL, &none, &gdy, &gx, &gmean, &grstd, &gga, &gbe, groups, (Activation)act);
    snprintf(what, sizeof what, "%s bwd dx alone", tag);
    cu_compare(what, &gdx, &dx, tol);
    Tensor dga2 = cu_upload(&dga, DTYPE_F32); // the accumulated value: one more backward adds dgamma again
    if (act < 0) groupnorm_backward(NULL, &dga2, NULL, &gdy, &gx, &gmean, &grstd, &gga, groups);
    else groupnorm_act_backward(NULL, &dga2, NULL, &gdy, &gx, &gmean, &grstd, &gga, &gbe, groups, (Activation)act);
    if (act < 0) groupnorm_backward(NULL, &dga, NULL, &dy, &x, &mean, &rstd, &ga, groups);
    else groupnorm_act_backward(NULL, &dga, NULL, &dy, &x, &mean, &rstd, &ga, &be, groups, (Activation)act);
    snprintf(what, sizeof what, "%s bwd dgamma alone (+=)", tag);
    cu_compare(what, &dga2, &dga, TOL_F32);

    Tensor *all[] = {&x, &y, &dy, &dx, &ga, &be, &dga, &dbe, &mean, &rstd, &gx, &gdy, &gga, &gbe, &gdga, &gdbe, &gy,
                     &gdx, &gmean, &grstd, &dga2};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) cu_free(all[i]);
}

static void ln_case(const char *name, int ndim, const int64_t *shape, DType dt, DType pdt) {
    int64_t C = shape[ndim - 1];
    int64_t sc[1] = {C};
    int bf = dt == DTYPE_BF16, pbf = pdt == DTYPE_BF16;
    double tol = bf ? TOL_BF16 : TOL_F32;
    Tensor x = cpu(ndim, shape), y = cpu(ndim, shape), dy = cpu(ndim, shape), dx = cpu(ndim, shape);
    Tensor ga = cpu(1, sc), be = cpu(1, sc), dga = cpu(1, sc), dbe = cpu(1, sc);
    Tensor mean = cpu(ndim - 1, shape), rstd = cpu(ndim - 1, shape);
    cu_fill(&x, 11, 2.0f, 0);
    for (int64_t i = 0; i < tensor_numel(&x); i++) ((float *)x.data)[i] -= 1.3f;
    if (bf) cu_round_bf16(x.data, tensor_numel(&x));
    cu_fill(&dy, 12, 1.0f, bf);
    cu_fill(&ga, 13, 0.3f, 0);
    for (int64_t c = 0; c < C; c++) ((float *)ga.data)[c] += 1.0f;
    if (pbf) cu_round_bf16(ga.data, C);
    cu_fill(&be, 14, 0.5f, pbf);
    cu_fill(&dga, 15, 1.0f, 0);
    cu_fill(&dbe, 16, 1.0f, 0);
    Tensor gx = cu_upload(&x, dt), gdy = cu_upload(&dy, dt), gga = cu_upload(&ga, pdt), gbe = cu_upload(&be, pdt);
    Tensor gdga = cu_upload(&dga, DTYPE_F32), gdbe = cu_upload(&dbe, DTYPE_F32);
    Tensor gy = cu_nan(y.ndim, y.shape, dt, 0), gdx = cu_nan(dx.ndim, dx.shape, dt, 0);
    Tensor gmean = cu_nan(mean.ndim, mean.shape, DTYPE_F32, 0), grstd = cu_nan(rstd.ndim, rstd.shape, DTYPE_F32, 0);
    size_t ws = layernorm_workspace_bytes(&x);
    char what[160], tag[120];
    snprintf(tag, sizeof tag, "%s %s%s layernorm", name, dtype_name(dt), pdt != dt ? "/f32 params" : "");

    layernorm_forward(&y, &mean, &rstd, &x, &ga, &be, 1e-5f);
    layernorm_forward(&gy, &gmean, &grstd, &gx, &gga, &gbe, 1e-5f);
    snprintf(what, sizeof what, "%s fwd y", tag);
    cu_compare(what, &gy, &y, tol);
    snprintf(what, sizeof what, "%s fwd mean", tag);
    cu_compare(what, &gmean, &mean, TOL_F32);
    snprintf(what, sizeof what, "%s fwd rstd", tag);
    cu_compare(what, &grstd, &rstd, TOL_F32);

    layernorm_backward(&dx, &dga, &dbe, &dy, &x, &mean, &rstd, &ga);
    poison_ws(ws);
    layernorm_backward(&gdx, &gdga, &gdbe, &gdy, &gx, &gmean, &grstd, &gga);
    snprintf(what, sizeof what, "%s bwd dx", tag);
    cu_compare(what, &gdx, &dx, tol);
    snprintf(what, sizeof what, "%s bwd dgamma (+=)", tag);
    cu_compare(what, &gdga, &dga, TOL_F32);
    snprintf(what, sizeof what, "%s bwd dbeta (+=)", tag);
    cu_compare(what, &gdbe, &dbe, TOL_F32);

    // dbeta alone adds the same again; din alone is the same
    Tensor none = {0};
    poison_ws(ws);
    layernorm_backward(&none, NULL, &gdbe, &gdy, &gx, &gmean, &grstd, &gga);
    layernorm_backward(&none, NULL, &dbe, &dy, &x, &mean, &rstd, &ga);
    snprintf(what, sizeof what, "%s bwd dbeta alone (+=)", tag);
    cu_compare(what, &gdbe, &dbe, TOL_F32);
    poison_t(&gdx);
    layernorm_backward(&gdx, NULL, NULL, &gdy, &gx, &gmean, &grstd, &gga);
    snprintf(what, sizeof what, "%s bwd dx alone", tag);
    cu_compare(what, &gdx, &dx, tol);

    Tensor *all[] = {&x, &y, &dy, &dx, &ga, &be, &dga, &dbe, &mean, &rstd, &gx, &gdy, &gga, &gbe, &gdga, &gdbe, &gy,
                     &gdx, &gmean, &grstd};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) cu_free(all[i]);
}

int main(void) {
    cu_require_gpu();
    struct {
        const char *name;
        int ndim;
        int64_t shape[4];
        int groups;
    } gn[] = {
        {"[2,8,5,7]/4", 4, {2, 8, 5, 7}, 4},         // S = 35: scalar path
        {"[1,64,16,16]/32", 4, {1, 64, 16, 16}, 32}, // S = 256: packs of 4, two channels a group
        {"[3,6,50]/3", 3, {3, 6, 50}, 3},            // [B, C, S] input, S not a multiple of 4
        {"[1,6,72,129]/2", 4, {1, 6, 72, 129}, 2},   // groups of 27864 over 4 blocks; rows of 9288 over 2
        {"[2,4,96,96]/1", 4, {2, 4, 96, 96}, 1},     // one group: 36864 values over 5 blocks, packs of 4
    };
    int acts[] = {-1, ACT_SILU};
    for (size_t i = 0; i < sizeof gn / sizeof gn[0]; i++)
        for (int a = 0; a < 2; a++)
            for (int d = 0; d < 2; d++) {
                DType dt = d ? DTYPE_BF16 : DTYPE_F32;
                gn_case(gn[i].name, gn[i].ndim, gn[i].shape, gn[i].groups, acts[a], dt, dt, 0.7f);
            }
    // every other activation through the fused kernels, and bf16 activations with f32 gamma/beta
    for (int a = ACT_GELU; a <= ACT_QUICK_GELU; a++)
        gn_case(gn[0].name, gn[0].ndim, gn[0].shape, gn[0].groups, a, DTYPE_F32, DTYPE_F32, 0.7f);
    gn_case(gn[1].name, gn[1].ndim, gn[1].shape, gn[1].groups, ACT_SILU, DTYPE_BF16, DTYPE_F32, 0.7f);
    // a mean 20 standard deviations away from zero: the fp32 Welford statistics keep their accuracy
    gn_case(gn[3].name, gn[3].ndim, gn[3].shape, gn[3].groups, ACT_SILU, DTYPE_F32, DTYPE_F32, 30.0f);

    struct {
        const char *name;
        int ndim;
        int64_t shape[3];
    } ln[] = {
        {"[37,77]", 2, {37, 77}},        // C not a multiple of 32
        {"[2,150,320]", 3, {2, 150, 320}}, // N = 300: parameter partials over 5 row chunks
        {"[5,20]", 2, {5, 20}},          // C < 32: idle lanes
        {"[3,1280]", 2, {3, 1280}},
    };
    for (size_t i = 0; i < sizeof ln / sizeof ln[0]; i++)
        for (int d = 0; d < 2; d++) {
            DType dt = d ? DTYPE_BF16 : DTYPE_F32;
            ln_case(ln[i].name, ln[i].ndim, ln[i].shape, dt, dt);
        }
    ln_case(ln[1].name, ln[1].ndim, ln[1].shape, DTYPE_BF16, DTYPE_F32);
    return tu_report();
}
