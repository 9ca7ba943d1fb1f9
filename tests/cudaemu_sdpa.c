// cudaemu_sdpa.c: bf16 attention through cuDNN's fused attention (ops/cuda/cuda_sdpa.cu) against the CPU op, and
// the choice between it and drtune's own kernels. At the head dims of SD 1.5 (40, 80, 160) and SDXL (64), self and
// cross attention (77 text tokens), token counts off every tile size:
//   - cuDNN forward and backward (mode 2), cuDNN forward with the own backward fed by cuDNN's statistics (mode 1,
//     and what train.deterministic selects), against the CPU op;
//   - the own kernels wherever cuDNN does not apply (fp32, causal, head dims not a multiple of 8 or over 256, mode 0,
//     a gradient not wanted), which must then give the own kernels' exact bits;
//   - the multi-head layer through its reserved workspace, and a captured CUDA graph replaying the fused calls to the
//     same bits.
// In emulation the cuDNN stand-in (cudaemu_dnn_graph.cc) is also told to refuse a direction, to drive the fallback.
// On a GPU whose cuDNN cannot plan the fused attention (older than 9.13, or its engines refuse), the test prints why
// and checks the fallback only.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../src/core/device_cuda.h"
#include "../src/ops/cuda/cuda_api.h"
#include "../src/ops/ops.h"
#include "cudaemu_util.h"

// the emulator's test hook (cudaemu_dnn_graph.h); absent from the real GPU build
extern void cudaemu_dnn_sdpa_support(int fwd, int bwd) __attribute__((weak));

// Tolerances, relative to the largest reference magnitude (cu_compare). Inputs are bf16 values on both sides.
// Emulation: the stand-in computes in fp32 and rounds each output once to bf16, as the own kernels do: half a bf16
// ulp (2^-8 of the largest value) plus fp32 summation-order differences (cudaemu_attention's TOL_BF16).
// GPU: the fused kernels also round the probabilities P (forward and backward) and dS (backward) to bf16 before
// their tensor-core products: each product term then carries up to 2^-9 relative error, bounded in the sum by 2^-9
// of the largest term magnitude sum, which for these softmax-weighted sums stays within the value's magnitude; with
// the output's own rounding that is 2^-8 + 2^-9 + 2^-9 = 2^-7. lse is fp32 from fp32 scores: 1e-5 (emulation) and
// 2^-8 on the GPU, whose scores come from a bf16 tensor-core product accumulated in fp32 in another order.
#define TOL_EMU (1.0 / 256 + 1e-5)
#define TOL_GPU (1.0 / 128)

typedef struct {
    const char *name;
    int64_t B, H, D, Tq, Tk;
} Case;

static Tensor cpu_t(int64_t a, int64_t b, int64_t c) {
    int64_t s[3] = {a, b, c};
    return cu_alloc(DEVICE_CPU, DTYPE_F32, 3, s);
}
static Tensor gpu_t(DType dt, int64_t a, int64_t b, int64_t c) {
    int64_t s[3] = {a, b, c};
    Tensor t = cu_alloc(DEVICE_CUDA, dt, 3, s);
    tensor_fill(&t, NAN);
    return t;
}

// One problem's inputs q, k, v and output gradient g: on the host (fp32 holding dt's values) and on the GPU.
typedef struct {
    Tensor q, k, v, g, gq, gk, gv, gg;
} Inputs;
static Inputs inputs_make(const Case *c, DType dt, uint64_t tag) {
    const int64_t HD = c->H * c->D;
    Inputs in = {.q = cpu_t(c->B, c->Tq, HD),
                 .k = cpu_t(c->B, c->Tk, HD),
                 .v = cpu_t(c->B, c->Tk, HD),
                 .g = cpu_t(c->B, c->Tq, HD)};
    const int round = dt == DTYPE_BF16;
    cu_fill(&in.q, tag, 1.5f, round);
    cu_fill(&in.k, tag + 1, 1.0f, round);
    cu_fill(&in.v, tag + 2, 1.0f, round);
    cu_fill(&in.g, tag + 3, 1.0f, round);
    in.gq = cu_upload(&in.q, dt), in.gk = cu_upload(&in.k, dt), in.gv = cu_upload(&in.v, dt);
    in.gg = cu_upload(&in.g, dt);
    return in;
}
static void inputs_free(Inputs *in) {
    Tensor *all[] = {&in->q, &in->k, &in->v, &in->g, &in->gq, &in->gk, &in->gv, &in->gg};
    for (int i = 0; i < 8; i++) cu_free(all[i]);
}

// The GPU's results of one problem (NaN-filled until written).
typedef struct {
    Tensor o, l, dq, dk, dv;
} GpuOut;
static GpuOut gpu_out_make(const Case *c, DType dt) {
    const int64_t HD = c->H * c->D;
    return (GpuOut){gpu_t(dt, c->B, c->Tq, HD), gpu_t(DTYPE_F32, c->B, c->H, c->Tq), gpu_t(dt, c->B, c->Tq, HD),
                    gpu_t(dt, c->B, c->Tk, HD), gpu_t(dt, c->B, c->Tk, HD)};
}

// One attention problem: CPU reference, the GPU in the current mode; returns the GPU results for bit comparisons.
static GpuOut run(const Case *c, DType dt, int causal, uint64_t tag, int check, double tol, double tol_lse,
                  const char *label) {
    const int H = (int)c->H;
    const int64_t HD = c->H * c->D;
    char what[128];
    Inputs in = inputs_make(c, dt, tag);
    Tensor q = in.q, k = in.k, v = in.v, g = in.g, gq = in.gq, gk = in.gk, gv = in.gv, gg = in.gg;
    Tensor o = cpu_t(c->B, c->Tq, HD), l = cpu_t(c->B, c->H, c->Tq);
    Tensor dq = cpu_t(c->B, c->Tq, HD), dk = cpu_t(c->B, c->Tk, HD), dv = cpu_t(c->B, c->Tk, HD);
    GpuOut r = gpu_out_make(c, dt);
    attention_forward(&r.o, &r.l, &gq, &gk, &gv, H, causal);
    // the backward from the GPU's own forward results (its statistics: cuDNN's when its forward ran)
    attention_backward(&r.dq, &r.dk, &r.dv, &gg, &r.o, &r.l, &gq, &gk, &gv, H, causal);
    if (check) {
        attention_forward(&o, &l, &q, &k, &v, H, causal);
        float *ob = cu_download(&r.o); // the CPU backward reads the same stored output
        memcpy(o.data, ob, sizeof(float) * (size_t)tensor_numel(&o));
        free(ob);
        attention_backward(&dq, &dk, &dv, &g, &o, &l, &q, &k, &v, H, causal);
        Tensor *gpu[] = {&r.o, &r.l, &r.dq, &r.dk, &r.dv}, *cpu[] = {&o, &l, &dq, &dk, &dv};
        const char *names[] = {"out", "lse", "dq", "dk", "dv"};
        for (int i = 0; i < 5; i++) {
            snprintf(what, sizeof what, "%s %s %s", c->name, label, names[i]);
            if (i == 0) { // the output against the CPU's own forward (recomputed: o now holds the GPU's)
                Tensor o2 = cpu_t(c->B, c->Tq, HD), l2 = cpu_t(c->B, c->H, c->Tq);
                attention_forward(&o2, &l2, &q, &k, &v, H, causal);
                cu_compare(what, gpu[i], &o2, tol);
                cu_free(&o2);
                cu_free(&l2);
            } else
                cu_compare(what, gpu[i], cpu[i], i == 1 ? tol_lse : tol);
        }
    }
    Tensor *all[] = {&o, &l, &dq, &dk, &dv};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) cu_free(all[i]);
    inputs_free(&in);
    return r;
}
static void gpu_out_free(GpuOut *r) {
    Tensor *all[] = {&r->o, &r->l, &r->dq, &r->dk, &r->dv};
    for (int i = 0; i < 5; i++) cu_free(all[i]);
}
static int gpu_out_same(const GpuOut *a, const GpuOut *b) {
    return cu_same_bits(&a->o, &b->o) && cu_same_bits(&a->l, &b->l) && cu_same_bits(&a->dq, &b->dq) &&
           cu_same_bits(&a->dk, &b->dk) && cu_same_bits(&a->dv, &b->dv);
}

static int uses(const Case *c, int causal, DType dt) {
    return attention_cudnn_cuda((int)c->B, (int)c->Tq, (int)c->Tk, (int)c->H, (int)c->D, causal, (int)dt);
}

// Shapes cuDNN does not take run the own kernels, bit for bit as with cuDNN switched off.
static void check_fallback(void) {
    const Case odd = {"D20 self 33", 2, 2, 20, 33, 33}, big = {"D264 cross 9x13", 1, 1, 264, 9, 13};
    const Case sd = {"D40 self 50", 1, 2, 40, 50, 50};
    struct {
        const Case *c;
        int causal;
        DType dt;
        const char *why;
    } f[] = {{&sd, 0, DTYPE_F32, "fp32"},
             {&sd, 1, DTYPE_BF16, "causal"},
             {&odd, 0, DTYPE_BF16, "head dim 20"},
             {&big, 0, DTYPE_BF16, "head dim 264"}};
    for (size_t i = 0; i < sizeof f / sizeof *f; i++) {
        tu_check(uses(f[i].c, f[i].causal, f[i].dt) == 0, "%s: cuDNN not used (%d)", f[i].why,
                 uses(f[i].c, f[i].causal, f[i].dt));
        long long c0, c1, d0, d1;
        attention_cudnn_calls_cuda(&c0, &c1);
        GpuOut a = run(f[i].c, f[i].dt, f[i].causal, 900 + i, 0, 0, 0, "");
        attention_cudnn_calls_cuda(&d0, &d1);
        attention_set_cudnn_cuda(0);
        GpuOut b = run(f[i].c, f[i].dt, f[i].causal, 900 + i, 0, 0, 0, "");
        attention_set_cudnn_cuda(2);
        tu_check(d0 == c0 && d1 == c1 && gpu_out_same(&a, &b), "%s: the own kernels' bits, no cuDNN call", f[i].why);
        gpu_out_free(&a);
        gpu_out_free(&b);
    }
}

// A gradient not wanted: the own backward (cuDNN's writes all three), with the forward still on cuDNN.
static void check_partial(const Case *c, double tol) {
    const int H = (int)c->H;
    const int64_t HD = c->H * c->D;
    GpuOut full = run(c, DTYPE_BF16, 0, 500, 0, 0, 0, "");
    Inputs in = inputs_make(c, DTYPE_BF16, 500);
    Tensor dq = gpu_t(DTYPE_BF16, c->B, c->Tq, HD);
    long long b0, b1;
    attention_cudnn_calls_cuda(NULL, &b0);
    attention_backward(&dq, NULL, NULL, &in.gg, &full.o, &full.l, &in.gq, &in.gk, &in.gv, H, 0);
    attention_cudnn_calls_cuda(NULL, &b1);
    double e = cu_rel_l2(&dq, &full.dq);
    tu_check(b1 == b0 && e <= tol, "dq alone: the own backward (no cuDNN call: %lld), %.2e from the fused dq (<= %.1e)",
             b1 - b0, e, tol);
    cu_free(&dq);
    inputs_free(&in);
    gpu_out_free(&full);
}

// The fused calls captured into a CUDA graph and replayed give the bits of direct execution. cuDNN's fused backward
// sums dq with atomics, so with it (det 0) only the forward must repeat bit for bit and the gradients to tol; with
// the deterministic backward (det 1: drtune's own, behind cuDNN's forward) everything does.
static void check_graph(const Case *c, int det, double tol) {
    const int H = (int)c->H;
    attention_set_deterministic_cuda(det);
    const int u = uses(c, 0, DTYPE_BF16);
    Inputs in = inputs_make(c, DTYPE_BF16, 700);
    Tensor gq = in.gq, gk = in.gk, gv = in.gv, gg = in.gg;
    GpuOut a = gpu_out_make(c, DTYPE_BF16), b = gpu_out_make(c, DTYPE_BF16);
    ops_workspace_reserve(DEVICE_CUDA, attention_workspace_bytes(DEVICE_CUDA, DTYPE_BF16, c->B, c->Tq, c->Tk, H, c->D));
    attention_forward(&a.o, &a.l, &gq, &gk, &gv, H, 0);
    attention_backward(&a.dq, &a.dk, &a.dv, &gg, &a.o, &a.l, &gq, &gk, &gv, H, 0);
    long long f0, b0, f1, b1;
    attention_cudnn_calls_cuda(&f0, &b0);
    cuda_graph_begin();
    attention_forward(&b.o, &b.l, &gq, &gk, &gv, H, 0);
    attention_backward(&b.dq, &b.dk, &b.dv, &gg, &b.o, &b.l, &gq, &gk, &gv, H, 0);
    CudaGraph *graph = cuda_graph_end();
    attention_cudnn_calls_cuda(&f1, &b1);
    int before = cu_same_bits(&b.o, &a.o); // nothing ran during the capture: b still holds its NaN fill
    cuda_graph_launch(graph);
    cuda_graph_launch(graph);
    const int fused_bwd = (u & 2) != 0;
    double e = fmax(cu_rel_l2(&b.dq, &a.dq), fmax(cu_rel_l2(&b.dk, &a.dk), cu_rel_l2(&b.dv, &a.dv)));
    int ok = fused_bwd ? cu_same_bits(&a.o, &b.o) && cu_same_bits(&a.l, &b.l) && e <= tol : gpu_out_same(&a, &b);
    tu_check(f1 - f0 == 1 && b1 - b0 == fused_bwd && !before && ok,
             "a captured cuDNN forward + %s backward (%zu nodes) replays as direct execution (gradients %.1e apart)",
             fused_bwd ? "cuDNN" : "own", cuda_graph_nodes(graph), e);
    cuda_graph_free(graph);
    inputs_free(&in);
    gpu_out_free(&a);
    gpu_out_free(&b);
    attention_set_deterministic_cuda(0);
}

// The multi-head layer in bf16 (head dim 64, as SDXL's) with cuDNN and with the own kernels, forward and dx, through
// the workspace mha_workspace_bytes reserves: the same to bf16 rounding.
static void check_mha(double tol) {
    const int64_t B = 2, T = 70, H = 2, D = 64, C = H * D;
    for (int cross = 0; cross < 2; cross++) {
        const int64_t Tk = cross ? 77 : T, Ckv = cross ? 96 : C;
        MHAParams p, g[2];
        Tensor *w[8] = {&p.wq, &p.wk, &p.wv, &p.wo, &p.bq, &p.bk, &p.bv, &p.bo};
        MHAParams gw;
        Tensor *gwt[8] = {&gw.wq, &gw.wk, &gw.wv, &gw.wo, &gw.bq, &gw.bk, &gw.bv, &gw.bo};
        for (int i = 0; i < 8; i++) {
            int64_t s[2] = {C, i == 1 || i == 2 ? Ckv : C};
            *w[i] = cu_alloc(DEVICE_CPU, DTYPE_F32, i < 4 ? 2 : 1, s);
            cu_fill(w[i], 820 + (uint64_t)i, 0.1f, 1);
            *gwt[i] = cu_upload(w[i], DTYPE_BF16);
            for (int m = 0; m < 2; m++) {
                Tensor *gm[8] = {&g[m].wq, &g[m].wk, &g[m].wv, &g[m].wo, &g[m].bq, &g[m].bk, &g[m].bv, &g[m].bo};
                *gm[i] = cu_alloc(DEVICE_CUDA, DTYPE_F32, i < 4 ? 2 : 1, s);
            }
        }
        Tensor x = cpu_t(B, T, C), ctx = cpu_t(B, Tk, Ckv), dout = cpu_t(B, T, C);
        cu_fill(&x, 800, 1.0f, 1);
        cu_fill(&ctx, 801, 1.0f, 1);
        cu_fill(&dout, 802, 1.0f, 1);
        Tensor gx = cu_upload(&x, DTYPE_BF16), gctx = cu_upload(&ctx, DTYPE_BF16), gd = cu_upload(&dout, DTYPE_BF16);
        Tensor out[2], dx[2], dctx[2];
        for (int m = 0; m < 2; m++) {
            attention_set_cudnn_cuda(m ? 2 : 0);
            ops_workspace_reserve(DEVICE_CUDA, mha_workspace_bytes(DEVICE_CUDA, DTYPE_BF16, B, T, Tk, C, Ckv, (int)H));
            MHACache c = {.q = gpu_t(DTYPE_BF16, B, T, C),
                          .k = gpu_t(DTYPE_BF16, B, Tk, C),
                          .v = gpu_t(DTYPE_BF16, B, Tk, C),
                          .attn = gpu_t(DTYPE_BF16, B, T, C),
                          .lse = gpu_t(DTYPE_F32, B, H, T)};
            out[m] = gpu_t(DTYPE_BF16, B, T, C), dx[m] = gpu_t(DTYPE_BF16, B, T, C);
            dctx[m] = gpu_t(DTYPE_BF16, B, Tk, Ckv);
            mha_forward(&out[m], &c, &gx, cross ? &gctx : NULL, &gw, (int)H, 0);
            mha_backward(&dx[m], cross ? &dctx[m] : NULL, &g[m], &gd, &c, &gx, cross ? &gctx : NULL, &gw, (int)H, 0);
            Tensor *ct[] = {&c.q, &c.k, &c.v, &c.attn, &c.lse};
            for (int i = 0; i < 5; i++) cu_free(ct[i]);
        }
        attention_set_cudnn_cuda(2);
        double eo = cu_rel_l2(&out[1], &out[0]), ex = cu_rel_l2(&dx[1], &dx[0]), ew = cu_rel_l2(&g[1].wq, &g[0].wq);
        tu_check(eo <= tol && ex <= tol && ew <= tol,
                 "mha %s bf16, cuDNN vs own kernels: out %.2e, dx %.2e, dwq %.2e (<= %.1e)", cross ? "cross" : "self",
                 eo, ex, ew, tol);
        Tensor *all[] = {&x, &ctx, &dout, &gx, &gctx, &gd, &out[0], &out[1], &dx[0], &dx[1], &dctx[0], &dctx[1]};
        for (size_t i = 0; i < sizeof all / sizeof *all; i++) cu_free(all[i]);
        for (int i = 0; i < 8; i++) {
            Tensor *g0[8] = {&g[0].wq, &g[0].wk, &g[0].wv, &g[0].wo, &g[0].bq, &g[0].bk, &g[0].bv, &g[0].bo};
            Tensor *g1[8] = {&g[1].wq, &g[1].wk, &g[1].wv, &g[1].wo, &g[1].bq, &g[1].bk, &g[1].bv, &g[1].bo};
            cu_free(w[i]), cu_free(gwt[i]), cu_free(g0[i]), cu_free(g1[i]);
        }
    }
}

int main(void) {
    cu_require_gpu();
    const int emu = device_cuda_emulated();
    const double tol = emu ? TOL_EMU : TOL_GPU, tol_lse = emu ? 1e-5 : 1.0 / 256;
    attention_set_cudnn_cuda(2);
    static const Case cases[] = {
        {"sd15 D40 self 70", 2, 2, 40, 70, 70},    {"sd15 D40 cross 70x77", 2, 2, 40, 70, 77},
        {"sdxl D64 self 100", 1, 3, 64, 100, 100}, {"sdxl D64 cross 33x77", 2, 1, 64, 33, 77},
        {"sd15 D80 self 45", 1, 2, 80, 45, 45},    {"sd15 D160 cross 20x77", 1, 1, 160, 20, 77},
        {"D256 self 17", 1, 1, 256, 17, 17},
    };
    int fused = uses(&cases[0], 0, DTYPE_BF16);
    if (emu)
        tu_check(fused == 3, "the cuDNN stand-in plans both directions (%d): %s", fused, attention_cudnn_reason_cuda());
    if (fused == 0)
        printf("cuDNN's fused attention is unavailable here, so only the fallback is checked: %s\n",
               attention_cudnn_reason_cuda());
    if (fused) {
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
            const Case *c = &cases[i];
            int u = uses(c, 0, DTYPE_BF16);
            tu_check(u == fused, "%s: cuDNN directions %d", c->name, u);
            long long f0, b0, f1, b1;
            attention_cudnn_calls_cuda(&f0, &b0);
            GpuOut r = run(c, DTYPE_BF16, 0, 10 * i + 1, 1, tol, tol_lse, "cuDNN");
            attention_cudnn_calls_cuda(&f1, &b1);
            tu_check(f1 - f0 == 1 && b1 - b0 == (u & 2 ? 1 : 0), "%s: one cuDNN forward, %d backward", c->name,
                     u & 2 ? 1 : 0);
            gpu_out_free(&r);
            // cuDNN's forward, the own backward from cuDNN's statistics
            attention_set_cudnn_cuda(1);
            tu_check(uses(c, 0, DTYPE_BF16) == 1, "%s mode 1: the forward only", c->name);
            r = run(c, DTYPE_BF16, 0, 10 * i + 1, 1, tol, tol_lse, "cuDNN fwd + own bwd");
            gpu_out_free(&r);
            attention_set_cudnn_cuda(2);
        }
        attention_set_deterministic_cuda(1);
        tu_check(uses(&cases[0], 0, DTYPE_BF16) == 1, "deterministic: the fused backward is not used");
        attention_set_deterministic_cuda(0);
        check_partial(&cases[2], tol);
        check_graph(&cases[1], 0, tol);
        check_graph(&cases[1], 1, 0.0);
        check_mha(emu ? 1.0 / 128 : 1.0 / 64);
    }
    if (emu) { // the stand-in refuses the backward, then both directions, for shapes not planned yet
        cudaemu_dnn_sdpa_support(1, 0);
        const Case c1 = {"D48 self 24", 1, 2, 48, 24, 24}, c2 = {"D56 self 24", 1, 2, 56, 24, 24};
        int u = uses(&c1, 0, DTYPE_BF16);
        tu_check(u == 1 && strstr(attention_cudnn_reason_cuda(), "SDPA backward") != NULL,
                 "no backward engine: the forward alone (%d); reason \"%s\"", u, attention_cudnn_reason_cuda());
        GpuOut r = run(&c1, DTYPE_BF16, 0, 300, 1, tol, tol_lse, "cuDNN fwd, refused bwd");
        gpu_out_free(&r);
        cudaemu_dnn_sdpa_support(0, 0);
        tu_check(uses(&c2, 0, DTYPE_BF16) == 0, "no forward engine: the own kernels");
        r = run(&c2, DTYPE_BF16, 0, 310, 1, tol, tol_lse, "refused");
        gpu_out_free(&r);
        cudaemu_dnn_sdpa_support(1, 1);
        tu_check(uses(&cases[0], 0, DTYPE_BF16) == 3, "plans made before stay usable");
    }
    check_fallback();
    return tu_report();
}
