// cudaemu_attention.c: the GPU attention core (ops/cuda/cuda_attention.cu) against the CPU op, forward (out, lse) and
// backward (dq, dk, dv), at the head dims of SD 1.5 (40, 80, 160) and SDXL (64), small and odd ones (1, 8, 17, 33),
// every tile capacity (32, 64, 96, 128, 160, 256) and beyond it (264, 512 non-causal: the GEMM path, in several
// query chunks; 300 causal: the generic kernels); self and cross
// attention (77 text tokens), causal and not, query/key counts that are not multiples of the 16/32/64-row tiles, f32
// and bf16 storage; NaN containment and very large finite scores; and the multi-head layer (mha_forward/backward).
// cuDNN's fused attention is switched off here, so bf16 runs the own kernels too; cudaemu_sdpa tests the fused path.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../src/ops/cuda/cuda_api.h"
#include "../src/ops/ops.h"
#include "cudaemu_util.h"

typedef struct {
    const char *name;
    int64_t B, H, D, Tq, Tk;
    int causal;
    float qscale; // q ~ N(0, qscale^2), k, v, dout ~ N(0, 1): scores q.k / sqrt(D) ~ N(0, qscale^2)
    double tol32; // f32 tolerance when not TOL_F32 (see there)
} Case;

// Tolerances, relative to the largest reference magnitude (cu_compare).
// f32: both sides accumulate in fp32 over at most D = 300 head columns and Tk = 77 keys, in different orders and
// with different exponentials (CPU: Cephes polynomial, GPU: exp2f with the log2(e) folded into the scale); the
// observed differences are up to ~2e-6, so 1e-5 leaves a margin and still catches any indexing or masking error
// (those give O(1e-2) and more). At qscale 30 the scores reach ~100 and the 64 products summed into one are ~30
// each: a probability exp(s - m) inherits the absolute fp32 rounding of s, a few 1e-5 (observed 2e-5 in dq and dk),
// so that case gets 1e-4.
// bf16: the inputs are bf16 values on both sides and compute is fp32, so the only extra error is the rounding of
// the stored result to bf16 (7 fraction bits): half an ulp, at most 2^-8 of the value and so of the largest value,
// plus the fp32 difference above (a value next to a rounding midpoint may round the other way): 2^-8 + 1e-5.
// lse is fp32 in both modes.
#define TOL_F32 1e-5
#define TOL_BF16 (1.0 / 256 + 1e-5)
// bf16 on the GEMM path (head dims over 256, non-causal): the probabilities P and dS are rounded to bf16 before their
// products (tensor-core operands), each term of those sums then off by up to 2^-9 relative, and the sums are within
// the value's magnitude, so 2^-9 more in the output and 2^-8 more in the gradients (dS's rounding of P (dP - delta)
// on top): 2^-7 + 1e-5.
#define TOL_BF16_GEMM (1.0 / 128 + 1e-5)

static Tensor cpu_t(int64_t a, int64_t b, int64_t c) {
    int64_t s[3] = {a, b, c};
    return cu_alloc(DEVICE_CPU, DTYPE_F32, 3, s);
}
static Tensor gpu_t(DType dt, int64_t a, int64_t b, int64_t c) {
    int64_t s[3] = {a, b, c};
    return cu_alloc(DEVICE_CUDA, dt, 3, s);
}
// A GPU tensor holding NaN everywhere: an output element the kernels fail to write stays NaN and fails the check.
static Tensor gpu_nan(DType dt, int64_t a, int64_t b, int64_t c) {
    Tensor h = cpu_t(a, b, c);
    for (int64_t i = 0; i < tensor_numel(&h); i++) ((float *)h.data)[i] = NAN;
    Tensor g = cu_upload(&h, dt);
    cu_free(&h);
    return g;
}

static void run_case(const Case *c, DType dt, uint64_t tag) {
    const int round = dt == DTYPE_BF16, H = (int)c->H;
    const double tol32 = c->tol32 > 0 ? c->tol32 : TOL_F32;
    const int gemm = c->D > 256 && !c->causal; // the GEMM path (cuda_attention.cu): P and dS stored in bf16
    const double tol = round ? (gemm ? TOL_BF16_GEMM : TOL_BF16) : c->tol32 > 0 ? c->tol32 : TOL_F32;
    const int64_t HD = c->H * c->D;
    char what[96];
    Tensor q = cpu_t(c->B, c->Tq, HD), k = cpu_t(c->B, c->Tk, HD), v = cpu_t(c->B, c->Tk, HD);
    Tensor o = cpu_t(c->B, c->Tq, HD), l = cpu_t(c->B, c->H, c->Tq), g = cpu_t(c->B, c->Tq, HD);
    Tensor dq = cpu_t(c->B, c->Tq, HD), dk = cpu_t(c->B, c->Tk, HD), dv = cpu_t(c->B, c->Tk, HD);
    cu_fill(&q, tag, c->qscale, round);
    cu_fill(&k, tag + 1, 1.0f, round);
    cu_fill(&v, tag + 2, 1.0f, round);
    cu_fill(&g, tag + 3, 1.0f, round);
    Tensor gq = cu_upload(&q, dt), gk = cu_upload(&k, dt), gv = cu_upload(&v, dt), gg = cu_upload(&g, dt);
    Tensor go = gpu_nan(dt, c->B, c->Tq, HD), gl = gpu_nan(DTYPE_F32, c->B, c->H, c->Tq);

    attention_forward(&o, &l, &q, &k, &v, H, c->causal);
    attention_forward(&go, &gl, &gq, &gk, &gv, H, c->causal);
    const char *dn = round ? "bf16" : "f32";
    snprintf(what, sizeof what, "%s %s out", c->name, dn);
    cu_compare(what, &go, &o, tol);
    snprintf(what, sizeof what, "%s %s lse", c->name, dn);
    cu_compare(what, &gl, &l, tol32);

    // backward on the same stored forward results: out as stored (bf16-rounded), lse from the CPU
    if (round) cu_round_bf16(o.data, tensor_numel(&o));
    Tensor go2 = cu_upload(&o, dt), gl2 = cu_upload(&l, DTYPE_F32);
    Tensor gdq = gpu_nan(dt, c->B, c->Tq, HD), gdk = gpu_nan(dt, c->B, c->Tk, HD), gdv = gpu_nan(dt, c->B, c->Tk, HD);
    attention_backward(&dq, &dk, &dv, &g, &o, &l, &q, &k, &v, H, c->causal);
    attention_backward(&gdq, &gdk, &gdv, &gg, &go2, &gl2, &gq, &gk, &gv, H, c->causal);
    snprintf(what, sizeof what, "%s %s dq", c->name, dn);
    cu_compare(what, &gdq, &dq, tol);
    snprintf(what, sizeof what, "%s %s dk", c->name, dn);
    cu_compare(what, &gdk, &dk, tol);
    snprintf(what, sizeof what, "%s %s dv", c->name, dn);
    cu_compare(what, &gdv, &dv, tol);

    Tensor *all[] = {&q, &k, &v, &o, &l, &g, &dq, &dk, &dv, &gq, &gk, &gv, &gg, &go, &gl, &go2, &gl2, &gdq, &gdk, &gdv};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) cu_free(all[i]);
}

// Gradients not wanted are skipped: dv alone, then dq alone, equal the full backward's.
static void check_partial(void) {
    const int64_t B = 1, H = 2, D = 24, Tq = 35, Tk = 20, HD = H * D;
    Tensor q = cpu_t(B, Tq, HD), k = cpu_t(B, Tk, HD), v = cpu_t(B, Tk, HD), g = cpu_t(B, Tq, HD);
    Tensor o = cpu_t(B, Tq, HD), l = cpu_t(B, H, Tq), dq = cpu_t(B, Tq, HD), dk = cpu_t(B, Tk, HD),
           dv = cpu_t(B, Tk, HD);
    cu_fill(&q, 70, 1.0f, 0), cu_fill(&k, 71, 1.0f, 0), cu_fill(&v, 72, 1.0f, 0), cu_fill(&g, 73, 1.0f, 0);
    attention_forward(&o, &l, &q, &k, &v, (int)H, 1);
    attention_backward(&dq, &dk, &dv, &g, &o, &l, &q, &k, &v, (int)H, 1);
    Tensor gq = cu_upload(&q, DTYPE_F32), gk = cu_upload(&k, DTYPE_F32), gv = cu_upload(&v, DTYPE_F32),
           gg = cu_upload(&g, DTYPE_F32), go = cu_upload(&o, DTYPE_F32), gl = cu_upload(&l, DTYPE_F32);
    Tensor gdq = gpu_nan(DTYPE_F32, B, Tq, HD), gdv = gpu_nan(DTYPE_F32, B, Tk, HD);
    attention_backward(NULL, NULL, &gdv, &gg, &go, &gl, &gq, &gk, &gv, (int)H, 1);
    cu_compare("partial: dv alone", &gdv, &dv, TOL_F32);
    attention_backward(&gdq, NULL, NULL, &gg, &go, &gl, &gq, &gk, &gv, (int)H, 1);
    cu_compare("partial: dq alone", &gdq, &dq, TOL_F32);
    Tensor *all[] = {&q, &k, &v, &g, &o, &l, &dq, &dk, &dv, &gq, &gk, &gv, &gg, &go, &gl, &gdq, &gdv};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) cu_free(all[i]);
}

// A NaN in one query row stays in that row (its output and lse are NaN); every other value is bit-identical to the
// run without it. Runs the tiled and the generic kernels. (The GPU only: NaN is not a valid CPU op input.)
static void check_nan(int64_t D) {
    const int64_t B = 1, H = 2, Tq = 37, Tk = 21, HD = H * D, bad = 33; // query row 33, head 1
    Tensor q = cpu_t(B, Tq, HD), k = cpu_t(B, Tk, HD), v = cpu_t(B, Tk, HD);
    cu_fill(&q, 80, 1.0f, 0), cu_fill(&k, 81, 1.0f, 0), cu_fill(&v, 82, 1.0f, 0);
    Tensor gq = cu_upload(&q, DTYPE_F32), gk = cu_upload(&k, DTYPE_F32), gv = cu_upload(&v, DTYPE_F32);
    ((float *)q.data)[bad * HD + D + 3] = NAN;
    Tensor gqn = cu_upload(&q, DTYPE_F32);
    Tensor o1 = gpu_t(DTYPE_F32, B, Tq, HD), o2 = gpu_t(DTYPE_F32, B, Tq, HD);
    Tensor l1 = gpu_t(DTYPE_F32, B, H, Tq), l2 = gpu_t(DTYPE_F32, B, H, Tq);
    attention_forward(&o1, &l1, &gq, &gk, &gv, (int)H, 0);
    attention_forward(&o2, &l2, &gqn, &gk, &gv, (int)H, 0);
    float *a = cu_download(&o1), *b = cu_download(&o2), *la = cu_download(&l1), *lb = cu_download(&l2);
    int64_t wrong = 0;
    for (int64_t t = 0; t < Tq; t++)
        for (int64_t c = 0; c < HD; c++) {
            int in_bad = t == bad && c >= D;
            float x = a[t * HD + c], y = b[t * HD + c];
            wrong += in_bad ? !isnan(y) : (isnan(y) || memcmp(&x, &y, 4) != 0);
        }
    for (int64_t h = 0; h < H; h++)
        for (int64_t t = 0; t < Tq; t++) {
            int in_bad = t == bad && h == 1;
            float x = la[h * Tq + t], y = lb[h * Tq + t];
            wrong += in_bad ? !isnan(y) : (isnan(y) || memcmp(&x, &y, 4) != 0);
        }
    tu_check(wrong == 0, "NaN in one query row, D %lld: %lld values outside that row changed or inside it not NaN",
             (long long)D, (long long)wrong);
    free(a), free(b), free(la), free(lb);
    Tensor *all[] = {&q, &k, &v, &gq, &gk, &gv, &gqn, &o1, &o2, &l1, &l2};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) cu_free(all[i]);
}

// mha_forward / mha_backward on the GPU (projections through linear, attention through the kernels above), f32
// (linear's GPU path is f32 today), biases present: self-attention (the k and v paths' input gradients summed into
// dx) and cross-attention (77 context tokens of width 48, dctx written).
static void check_mha(int cross) {
    const int64_t B = 1, T = 19, H = 2, D = 40, C = H * D, Tk = cross ? 77 : T, Ckv = cross ? 48 : C;
    const char *tag = cross ? "mha cross-attention" : "mha self-attention";
    char what[96];
    Tensor x = cpu_t(B, T, C), dx = cpu_t(B, T, C), out = cpu_t(B, T, C), dout = cpu_t(B, T, C);
    Tensor ctx = cpu_t(B, Tk, Ckv), dctx = cpu_t(B, Tk, Ckv);
    MHACache cc = {.q = cpu_t(B, T, C), .k = cpu_t(B, Tk, C), .v = cpu_t(B, Tk, C), .attn = cpu_t(B, T, C),
                   .lse = cpu_t(B, H, T)};
    MHAParams p, gp, dp, gdp;
    Tensor *w[8] = {&p.wq, &p.wk, &p.wv, &p.wo, &p.bq, &p.bk, &p.bv, &p.bo};
    Tensor *gw[8] = {&gp.wq, &gp.wk, &gp.wv, &gp.wo, &gp.bq, &gp.bk, &gp.bv, &gp.bo};
    Tensor *dw[8] = {&dp.wq, &dp.wk, &dp.wv, &dp.wo, &dp.bq, &dp.bk, &dp.bv, &dp.bo};
    Tensor *gdw[8] = {&gdp.wq, &gdp.wk, &gdp.wv, &gdp.wo, &gdp.bq, &gdp.bk, &gdp.bv, &gdp.bo};
    for (int i = 0; i < 8; i++) {
        int64_t s[2] = {C, i == 1 || i == 2 ? Ckv : C}; // wk, wv [C, Ckv]
        *w[i] = cu_alloc(DEVICE_CPU, DTYPE_F32, i < 4 ? 2 : 1, s);
        *dw[i] = cu_alloc(DEVICE_CPU, DTYPE_F32, i < 4 ? 2 : 1, s);
        *gdw[i] = cu_alloc(DEVICE_CUDA, DTYPE_F32, i < 4 ? 2 : 1, s);
        cu_fill(w[i], 90 + (uint64_t)i, 0.15f, 0);
        *gw[i] = cu_upload(w[i], DTYPE_F32);
    }
    cu_fill(&x, 100, 1.0f, 0), cu_fill(&dout, 101, 1.0f, 0), cu_fill(&ctx, 102, 1.0f, 0);
    Tensor gx = cu_upload(&x, DTYPE_F32), gdout = cu_upload(&dout, DTYPE_F32), gctx = cu_upload(&ctx, DTYPE_F32);
    Tensor gdx = gpu_nan(DTYPE_F32, B, T, C), gout = gpu_nan(DTYPE_F32, B, T, C);
    Tensor gdctx = gpu_nan(DTYPE_F32, B, Tk, Ckv);
    MHACache gc = {.q = gpu_t(DTYPE_F32, B, T, C), .k = gpu_t(DTYPE_F32, B, Tk, C), .v = gpu_t(DTYPE_F32, B, Tk, C),
                   .attn = gpu_t(DTYPE_F32, B, T, C), .lse = gpu_t(DTYPE_F32, B, H, T)};
    mha_forward(&out, &cc, &x, cross ? &ctx : NULL, &p, (int)H, 0);
    mha_forward(&gout, &gc, &gx, cross ? &gctx : NULL, &gp, (int)H, 0);
    snprintf(what, sizeof what, "%s forward", tag);
    cu_compare(what, &gout, &out, TOL_F32);
    mha_backward(&dx, cross ? &dctx : NULL, &dp, &dout, &cc, &x, cross ? &ctx : NULL, &p, (int)H, 0);
    mha_backward(&gdx, cross ? &gdctx : NULL, &gdp, &gdout, &gc, &gx, cross ? &gctx : NULL, &gp, (int)H, 0);
    snprintf(what, sizeof what, "%s dx", tag);
    cu_compare(what, &gdx, &dx, TOL_F32);
    if (cross) {
        snprintf(what, sizeof what, "%s dctx", tag);
        cu_compare(what, &gdctx, &dctx, TOL_F32);
    }
    const char *names[8] = {"dwq", "dwk", "dwv", "dwo", "dbq", "dbk", "dbv", "dbo"};
    for (int i = 0; i < 8; i++) {
        snprintf(what, sizeof what, "%s %s", tag, names[i]);
        if (i != 5) cu_compare(what, gdw[i], dw[i], TOL_F32);
    }
    // dbk is exactly zero (a bias on every key shifts each score row by a constant, which softmax ignores): both
    // sides hold rounding noise only, so it is compared absolutely, on the scale of dbq
    float *gbk = cu_download(&gdp.bk), *gbq = cu_download(&gdp.bq);
    double err = 0, ref = 0;
    for (int64_t i = 0; i < C; i++) {
        err = fmax(err, fabs((double)gbk[i] - ((float *)dp.bk.data)[i]));
        ref = fmax(ref, fabs((double)gbq[i]));
    }
    tu_check(err <= TOL_F32 * ref, "%s dbk (zero) max abs err %.3e (tol 1e-5 max|dbq| = %.1e)", tag, err,
             TOL_F32 * ref);
    free(gbk), free(gbq);
    Tensor *all[] = {&x, &dx, &out, &dout, &ctx, &dctx, &cc.q, &cc.k, &cc.v, &cc.attn, &cc.lse, &gx, &gdout, &gctx,
                     &gdx, &gout, &gdctx, &gc.q, &gc.k, &gc.v, &gc.attn, &gc.lse};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) cu_free(all[i]);
    for (int i = 0; i < 8; i++) cu_free(w[i]), cu_free(gw[i]), cu_free(dw[i]), cu_free(gdw[i]);
}

int main(void) {
    cu_require_gpu();
    attention_set_cudnn_cuda(0); // drtune's own kernels; cuDNN's fused attention is tested by cudaemu_sdpa
    attention_set_gemm_chunk_cuda(45 * 16); // GEMM path: chunks of 16 query rows at 45 keys (several per problem)
    static const Case cases[] = {
        {"sd15 D40 self 37", 2, 2, 40, 37, 37, 0, 1.5f, 0},
        {"sd15 D80 cross 20x77", 1, 2, 80, 20, 77, 0, 1.5f, 0},
        {"sd15 D160 cross 17x77", 1, 1, 160, 17, 77, 0, 1.5f, 0},
        {"sdxl D64 cross 33x77", 1, 2, 64, 33, 77, 0, 1.5f, 0},
        {"sdxl D64 self causal 40", 1, 2, 64, 40, 40, 1, 1.5f, 0},
        {"D8 self causal 45", 2, 3, 8, 45, 45, 1, 1.5f, 0},
        {"D17 causal 41x29", 1, 2, 17, 41, 29, 1, 1.5f, 0},
        {"D17 causal 9x70", 1, 1, 17, 9, 70, 1, 1.5f, 0},
        {"D128 self 2x70", 2, 1, 128, 70, 70, 0, 1.5f, 0},
        {"D33 cross 66x77", 1, 2, 33, 66, 77, 0, 1.5f, 0},
        {"D1 causal 5x3", 1, 3, 1, 5, 3, 1, 1.5f, 0},
        {"D200 cross 35x13", 1, 1, 200, 35, 13, 0, 1.5f, 0},
        {"D40 cross split 300x13", 1, 2, 40, 300, 13, 0, 1.5f, 0},
        {"D80 causal split 270", 1, 1, 80, 270, 270, 1, 1.5f, 0},
        {"D264 gemm 6x11", 1, 2, 264, 6, 11, 0, 1.5f, 0},
        {"D512 gemm chunked 2x70x45", 2, 1, 512, 70, 45, 0, 1.5f, 0}, // 45 * 16 floats per chunk: 5 chunks
        {"D300 generic causal 12x7", 1, 1, 300, 12, 7, 1, 1.5f, 0},
        {"D64 scores ~30 sigma 33", 1, 1, 64, 33, 33, 0, 30.0f, 1e-4},
    };
    // the two "split" cases split the queries of the dk/dv kernel: their workspace holds fp32 partials beyond
    // delta [B, H, Tq] (2400 and 1080 bytes, 256-aligned)
    tu_check(attention_workspace_bytes(DEVICE_CUDA, DTYPE_F32, 1, 300, 13, 2, 40) > 2560 &&
                 attention_workspace_bytes(DEVICE_CUDA, DTYPE_F32, 1, 270, 270, 1, 80) > 1280,
             "query splits of the dk/dv kernel at 300x13 (D 40) and 270x270 (D 80): %zu and %zu workspace bytes",
             attention_workspace_bytes(DEVICE_CUDA, DTYPE_F32, 1, 300, 13, 2, 40),
             attention_workspace_bytes(DEVICE_CUDA, DTYPE_F32, 1, 270, 270, 1, 80));
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        run_case(&cases[i], DTYPE_F32, 10 * i + 1);
        run_case(&cases[i], DTYPE_BF16, 10 * i + 1);
    }
    check_partial();
    check_nan(40);
    check_nan(264);
    check_mha(0);
    check_mha(1);
    return tu_report();
}
