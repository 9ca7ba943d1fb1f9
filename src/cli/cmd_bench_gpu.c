// cmd_bench_gpu.c: `drtune bench gpu`, the GPU numbers of the GPU check (tools/gpu/check.sh) in one run: a large
// GEMM in the compute dtype through the same linear op (cuBLASLt on the GPU) as the yardstick, then per model
// (default: SD 1.5 at a 64 x 64 latent and SDXL at 128 x 128, random weights) the heaviest ops at the model's first
// attention level (the 3x3 convolution in NCHW and channels last) and the whole UNet forward and forward + backward:
// milliseconds, TFLOP/s from the matrix-product FLOPs of the configuration (bench_unet.h), the fraction of the
// measured GEMM rate (MFU), and memory (on the GPU the forward also captured once as a CUDA graph and replayed, and
// the UNet run again channels last, train.channels_last). One `result` line per model carries the figures for
// scripts. Then (unless --no-iteration) a whole DRTune iteration of the same
// random-weight model (UNet, VAE decoder, DDIM, the symmetry reward, random conditioning) with K = 1 and K = N
// trained steps: seconds per iteration and the peak of the device memory in buffers (device_bytes_peak), which
// must not grow with K. It also runs on the CPU (--device cpu) and on the emulated GPU at
// small shapes (--model, --latent), where the figures check the program, not the speed.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "bench_time.h"
#include "bench_unet.h"
#include "core/common.h"
#include "core/device.h"
#include "core/device_cuda.h"
#include "models/vae.h"
#include "ops/cuda/cuda_api.h"
#include "ops/ops.h"
#include "train/engine.h"
#include "train/setup.h"

#define MAX_MODELS 4

static void gpu_usage(FILE *f) {
    fprintf(f,
            "usage: drtune bench gpu [--model DIR [--latent N]]... [--batch B] [--device auto|cpu|cuda]\n"
            "                        [--precision fp32|bf16] [--reps R] [--gemm N] [--no-ops] [--flops]\n"
            "                        [--no-iteration] [--steps N] [--guidance W] [--trainable lora|full]\n"
            "\n"
            "GPU throughput of the UNet with random weights: a bf16 (or fp32) N x N x N GEMM as the reference rate\n"
            "(default N 8192 on a GPU, 512 on the CPU or the emulated GPU), then for each model the heaviest ops of\n"
            "its first attention level (the 3x3 convolution also channels last) and the VAE's mid-block attention\n"
            "(--no-ops: skipped), and the whole UNet forward (on the GPU also replayed as one CUDA graph) and\n"
            "forward + backward at batch B (default 1), on the GPU both again channels last (train.channels_last),\n"
            "context 77: median of R timed calls (default 5) after a warm-up, TFLOP/s of the matrix products\n"
            "counted from the configuration, MFU = that rate / the GEMM rate, and memory.\n"
            "Models: default configs/models/sd15 at 64 and configs/models/sdxl at 128; each --model DIR replaces\n"
            "them, its --latent (default: the config's sample_size) following it. Precision: default bf16 on the GPU,\n"
            "fp32 on the CPU. --flops: print each model's FLOP counts and stop (nothing runs).\n"
            "Iteration (--no-iteration: skipped): one whole DRTune iteration of each model with random weights (UNet,\n"
            "VAE decoder, DDIM at N steps (default 10), the symmetry reward, random conditioning in place of text\n"
            "encoders) at batch B, guidance W (default 5: both CFG branches), LoRA (default) or full fine-tuning,\n"
            "with K = 1 and K = N trained steps and no early stop: seconds per iteration (median of R after a\n"
            "warm-up) and the peak device memory in buffers (weights, gradients, activations, workspaces), whose\n"
            "ratio K = N / K = 1 must be about 1: DRTune's memory does not grow with K.\n");
}

typedef struct {
    Tensor in, w, out, din, dw, dout; // conv and linear (no bias: the bias is not a matrix product)
    Tensor q, k, v, lse, dq, dk, dv;  // attention (out, dout shared)
    int kind;                         // 0 conv 3x3, 1 linear, 2 attention, 3 conv 3x3 channels last
    int heads, backward;
} OpRun;

static void op_call(void *arg) {
    OpRun *r = arg;
    if (r->kind == 0) {
        if (!r->backward) conv2d_forward(&r->out, &r->in, &r->w, NULL, 1, 1);
        else conv2d_backward(&r->din, &r->dw, NULL, &r->dout, &r->in, &r->w, 1, 1);
    } else if (r->kind == 3) {
        if (!r->backward) conv2d_nhwc_forward(&r->out, &r->in, &r->w, NULL, 1, 1);
        else conv2d_nhwc_backward(&r->din, &r->dw, NULL, &r->dout, &r->in, &r->w, 1, 1);
    } else if (r->kind == 1) {
        if (!r->backward) linear_forward(&r->out, &r->in, &r->w, NULL);
        else linear_backward(&r->din, &r->dw, NULL, &r->dout, &r->in, &r->w);
    } else {
        if (!r->backward) attention_forward(&r->out, &r->lse, &r->q, &r->k, &r->v, r->heads, 0);
        else attention_backward(&r->dq, &r->dk, &r->dv, &r->dout, &r->out, &r->lse, &r->q, &r->k, &r->v, r->heads, 0);
    }
}

static void op_free(OpRun *r, Device d) {
    Tensor *all[] = {&r->in, &r->w, &r->out, &r->din, &r->dw, &r->dout, &r->q, &r->k, &r->v, &r->lse,
                     &r->dq, &r->dk, &r->dv};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i]->data) device_free(d, all[i]->data);
    memset(r, 0, sizeof *r);
}

#define DT(dt, ...) \
    bench_device_tensor(d, (dt), (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[]){__VA_ARGS__}, \
                        1.0f, 0.0f, stream++)

typedef struct {
    Device d;
    DType dt;
    int reps;
    double gemm_rate; // FLOP/s
} Ctx;

// Times one op forward and backward and prints its two rows; flops: the forward's.
static void op_time(const Ctx *x, OpRun *r, const char *name, const char *shape, double flops, double bwd_factor) {
    for (int p = 0; p < 2; p++) {
        r->backward = p;
        if (p) op_call(r); // the backward reads the forward's outputs (attention: out, lse); warm it once
        double t = bench_median(op_call, r, x->d, x->reps), f = flops * (p ? bwd_factor : 1.0);
        printf("  %-18s %-30s %-4s %10.3f %9.2f %6.1f%%\n", p ? "" : name, p ? "" : shape, p ? "bwd" : "fwd", t * 1e3,
               f / t * 1e-12, 100.0 * f / t / x->gemm_rate);
    }
}

// Times attention of B x T queries over Tk keys, h heads of C / h (its inputs, outputs and workspace made and freed
// here); stream: the random streams of its tensors.
static void attention_time(const Ctx *x, const char *name, int B, int64_t T, int64_t Tk, int64_t C, int64_t h,
                           uint64_t stream) {
    Device d = x->d;
    DType dt = x->dt;
    OpRun r;
    memset(&r, 0, sizeof r);
    r.kind = 2, r.heads = (int)h;
    r.q = DT(dt, B, T, C), r.dq = DT(dt, B, T, C), r.out = DT(dt, B, T, C), r.dout = DT(dt, B, T, C);
    r.k = DT(dt, B, Tk, C), r.dk = DT(dt, B, Tk, C), r.v = DT(dt, B, Tk, C), r.dv = DT(dt, B, Tk, C);
    r.lse = DT(DTYPE_F32, B, h, T);
    ops_workspace_reserve(d, attention_workspace_bytes(d, dt, B, T, Tk, (int)h, C / h));
    char shape[128];
    snprintf(shape, sizeof shape, "B%d H%lld Tq%lld Tk%lld D%lld", B, (long long)h, (long long)T, (long long)Tk,
             (long long)(C / h));
    op_time(x, &r, name, shape, 4.0 * B * T * Tk * C, 2.5);
    op_free(&r, d);
}

// The heaviest ops of the UNet at its first attention level l: the resnets' 3x3 conv (C -> C at S x S), the
// feed-forward's GEGLU projection (C -> 8C over B S^2 tokens), self-attention and cross-attention (77 tokens).
static void bench_ops(const Ctx *x, const UNetConfig *c, int B, int N) {
    Device d = x->d;
    DType dt = x->dt;
    uint64_t stream = 100;
    int l = 0;
    while (l < c->levels - 1 && !c->down_attn[l]) l++;
    int64_t C = c->block_out[l], S = N >> l, T = S * S, h = c->heads[l], Tc = 77;
    char shape[128];
    printf("  %-18s %-30s %-4s %10s %9s %7s\n", "op (level)", "shape", "pass", "ms", "TFLOP/s", "MFU");
    OpRun r;
    memset(&r, 0, sizeof r);
    r.kind = 0;
    r.in = DT(dt, B, C, S, S), r.din = DT(dt, B, C, S, S), r.out = DT(dt, B, C, S, S), r.dout = DT(dt, B, C, S, S);
    r.w = DT(dt, C, C, 3, 3), r.dw = DT(DTYPE_F32, C, C, 3, 3);
    ops_workspace_reserve(d, conv2d_workspace_bytes(&r.in, &r.w, 1, 1));
    snprintf(shape, sizeof shape, "[%d,%lld,%lld,%lld]->%lld", B, (long long)C, (long long)S, (long long)S,
             (long long)C);
    op_time(x, &r, "conv2d 3x3", shape, 2.0 * B * C * C * 9 * T, 2.0);
    op_free(&r, d);
    // the same convolution channels last (conv2d_nhwc): the layout cuDNN's tensor-core kernels prefer
    r.kind = 3;
    r.in = DT(dt, B, S, S, C), r.din = DT(dt, B, S, S, C), r.out = DT(dt, B, S, S, C), r.dout = DT(dt, B, S, S, C);
    r.w = DT(dt, C, 3, 3, C), r.dw = DT(DTYPE_F32, C, 3, 3, C);
    ops_workspace_reserve(d, conv2d_nhwc_workspace_bytes(&r.in, &r.w, 1, 1));
    op_time(x, &r, "conv2d 3x3 NHWC", shape, 2.0 * B * C * C * 9 * T, 2.0);
    op_free(&r, d);

    r.kind = 1;
    r.in = DT(dt, B * T, C), r.din = DT(dt, B * T, C), r.out = DT(dt, B * T, 8 * C), r.dout = DT(dt, B * T, 8 * C);
    r.w = DT(dt, 8 * C, C), r.dw = DT(DTYPE_F32, 8 * C, C);
    ops_workspace_reserve(d, linear_workspace_bytes(d, B * T, 8 * C));
    snprintf(shape, sizeof shape, "[%lld,%lld]->%lld", (long long)(B * T), (long long)C, (long long)(8 * C));
    op_time(x, &r, "linear GEGLU", shape, 2.0 * B * T * C * 8 * C, 2.0);
    op_free(&r, d);

    // attention: in bf16 on the GPU, cuDNN's fused attention and drtune's own kernels side by side
    for (int cross = 0; cross < 2; cross++) {
        int64_t Tk = cross ? Tc : T;
        int fused = d == DEVICE_CUDA ? attention_cudnn_cuda(B, (int)T, (int)Tk, (int)h, (int)(C / h), 0, dt) : 0;
        if (d == DEVICE_CUDA && dt == DTYPE_BF16 && !fused) {
            int64_t D = C / h;
            if (D % 8 || D > 256)
                printf("  (cuDNN's fused attention: head dim %lld is not a multiple of 8 up to 256)\n", (long long)D);
            else
                printf("  (cuDNN's fused attention is not used: %s)\n",
                       attention_cudnn_reason_cuda()[0] ? attention_cudnn_reason_cuda() : "switched off");
        }
        for (int own = 0; own < (fused ? 2 : 1); own++) {
            if (fused) attention_set_cudnn(!own);
            const char *name = cross ? (!fused ? "attention cross" : own ? "attn cross own" : "attn cross cuDNN")
                                     : (!fused ? "attention self" : own ? "attn self own" : "attn self cuDNN");
            attention_time(x, name, B, T, Tk, C, h, stream);
        }
        if (fused) attention_set_cudnn(1);
    }
}

// The VAE decoder's mid-block attention (one head over every latent pixel, head dim block_out[-1]) when the model has
// one: on the GPU, the chunked-GEMM path and (up to 4096 tokens: they re-read the keys once per query row) the
// generic kernels side by side.
static void bench_vae_attention(const Ctx *x, const char *model, int B, int N) {
    char path[1024];
    snprintf(path, sizeof path, "%s/vae/config.json", model);
    if (access(path, R_OK) != 0) return; // a UNet-only folder
    VAEConfig vc;
    vae_load_config(&vc, path);
    if (!vc.mid_attention) return;
    int64_t C = vc.block_out[vc.levels - 1], T = (int64_t)N * N;
    int gemm = x->d == DEVICE_CUDA && C > 256;
    for (int own = 0; own < (gemm && T <= 4096 ? 2 : 1); own++) {
        if (gemm) attention_set_gemm_cuda(!own);
        attention_time(x, !gemm ? "attention VAE mid" : own ? "attn VAE mid own" : "attn VAE mid GEMM", B, T, T, C, 1,
                       300);
    }
    if (gemm) attention_set_gemm_cuda(1);
}

// The reference rate: out [n, n] = in [n, n] w [n, n]^T in the compute dtype through linear_forward.
static double bench_gemm(const Ctx *x, int n) {
    Device d = x->d;
    uint64_t stream = 90;
    OpRun r;
    memset(&r, 0, sizeof r);
    r.kind = 1;
    r.in = DT(x->dt, n, n), r.w = DT(x->dt, n, n), r.out = DT(x->dt, n, n);
    ops_workspace_reserve(d, linear_workspace_bytes(d, n, n));
    double t = bench_median(op_call, &r, d, x->reps), rate = 2.0 * n * n * n / t;
    printf("gemm %s %dx%dx%d (linear_forward): %.3f ms, %.2f TFLOP/s: the MFU reference\n", dtype_name(x->dt), n, n,
           n, t * 1e3, rate * 1e-12);
    op_free(&r, d);
    return rate;
}

// Bytes in use on d: the GPU's total minus free memory (the CUDA context and the libraries' memory included), or
// the process's peak resident memory on the CPU.
static double memory_in_use(Device d) {
    if (d == DEVICE_CPU) return (double)dt_peak_rss();
    size_t free_b = 0, total = 0;
    cuda_mem_info(&free_b, &total);
    return (double)(total - free_b);
}

// The configuration of model and its latent size (N < 0: the config's), checked before anything runs.
static UNetConfig model_config(const char *model, int *N) {
    char path[4096];
    snprintf(path, sizeof path, "%s/unet", model);
    UNetConfig uc;
    unet_load_config(&uc, path);
    if (*N < 0) *N = uc.sample_size;
    int f = 1 << (uc.levels - 1);
    USER_CHECK(*N % f == 0, "drtune bench gpu: --latent %d: %s needs a multiple of %d", *N, model, f);
    return uc;
}


// ---------------------------------------------------------------------------------------------------------------
// a whole DRTune iteration

typedef struct {
    int steps, trainable; // N; Trainable
    double guidance;
} IterOpts;

typedef struct {
    Engine *e;
    TrainSet *ts;
    IterPlan plan;
    const UNetCond *cond;
    const char *const *prompts;
    const Tensor *xT;
    Device d;
    double loss;
} IterRun;

// One iteration as the trainer runs it: zeroed gradients, then the engine's iteration of the plan.
static void iter_call(void *arg) {
    IterRun *r = arg;
    device_zero(r->d, r->ts->g, sizeof(float) * (size_t)r->ts->n);
    IterResult res;
    engine_iteration(r->e, &r->plan, r->cond, r->prompts, r->xT, NULL, NULL, &res);
    r->loss = res.loss;
}

typedef struct {
    double sec[2], peak[2], added[2]; // K = 1, K = N: seconds per iteration, peak bytes, bytes the iteration added
    double loss[2];
    int K[2];
} IterFigures;

// Builds the random-weight model, its trainable set and an engine on the device as drtune grad does, then times
// one iteration with K = 1 and with K = N. The peak of each case counts from the state before its warm-up (the
// model, trainable set and engine planned and allocated), so it is the whole planned footprint plus anything the
// iterations allocate (op workspaces grown on first use).
static IterFigures bench_iteration(const Ctx *x, const char *model, int N, int B, const IterOpts *o) {
    Device d = x->d;
    Config c;
    config_defaults(&c);
    c.train.trainable = o->trainable;
    Model m;
    bench_model_random(&m, model, o->steps);
    int f = 1 << (m.vae.cfg.levels - 1), H = N * f, W = N * f, h, w;
    setup_latent_size(&m, H, W, "--latent", &h, &w);
    SetupRewards rewards;
    const char names[1][32] = {"symmetry"};
    setup_rewards(&rewards, 1, names, (double[]){1.0}, c.reward.colour, NULL);
    TrainSet ts;
    setup_trainable(&ts, &m, &c, 0);
    Lora *l = ts.kind == TRAINABLE_LORA ? &ts.lora : NULL;
    if (d != DEVICE_CPU) {
        setup_model_to_device(&m, l, d);
        if (ts.kind == TRAINABLE_FULL) arena_to_device(&ts.grad_mem, d);
        ts.p = ts.params->base, ts.g = ts.grads->base;
        model_set_precision(&m, l, ts.kind == TRAINABLE_FULL, x->dt, 0);
    }
    Engine e;
    engine_init(&e, model_compute_unet(&m), &ts.slots, model_compute_vae(&m), &m.sched, &rewards.set,
                (float)o->guidance, 0.0f, B, h, w, 77);
    int rows = o->guidance > 1.0 ? 2 * B : B;
    UNetCond cond;
    Tensor ct[3];
    bench_random_cond(&cond, ct, &m.unet.cfg, rows, H, W);
    const char **prompts = xmalloc(sizeof(char *) * (size_t)B);
    int64_t *ids = xmalloc(sizeof(int64_t) * (size_t)B);
    for (int b = 0; b < B; b++) prompts[b] = "", ids[b] = b;
    Tensor xT = tensor_f32_4d(xmalloc(sizeof(float) * (size_t)B * (size_t)(e.C * h * w)), B, e.C, h, w);
    noise_latents(&xT, 0, ids);
    IterRun r = {.e = &e, .ts = &ts, .cond = &cond, .prompts = prompts, .xT = &xT, .d = d};
    IterFigures fig;
    memset(&fig, 0, sizeof fig);
    for (int k = 0; k < 2; k++) {
        MethodConfig mc = setup_method(&c);
        mc.method = METHOD_DRTUNE, mc.K = k ? o->steps : 1, mc.m = 0, mc.k = -1;
        iter_plan_draw(&r.plan, &mc, o->steps, 0, 0);
        fig.K[k] = mc.K;
        device_synchronize(d);
        device_bytes_peak_reset(d);
        double before = (double)device_bytes_in_use(d);
        fig.sec[k] = bench_median(iter_call, &r, d, x->reps);
        fig.peak[k] = (double)device_bytes_peak(d);
        fig.added[k] = fig.peak[k] - before;
        fig.loss[k] = r.loss;
    }
    free(xT.data), free(ids), free(prompts);
    bench_random_cond_free(ct);
    engine_free(&e);
    setup_trainable_free(&ts);
    setup_rewards_free(&rewards);
    model_free(&m);
    ops_workspace_free();
    return fig;
}

static void print_iteration(const IterFigures *fig, const IterOpts *o, int B) {
    char m[2][32];
    printf("  DRTune iteration: %d steps, batch %d, guidance %g (%s), %s, symmetry reward, no early stop\n",
           o->steps, B, o->guidance, o->guidance > 1.0 ? "both CFG branches" : "no CFG",
           o->trainable == TRAINABLE_LORA ? "LoRA" : "full fine-tuning");
    printf("  %-20s %12s %14s %16s %12s\n", "trained steps", "s / iter.", "peak memory", "iteration adds", "loss");
    for (int k = 0; k < 2; k++)
        printf("  K = %-16d %12.4f %14s %16s %12.5g\n", fig->K[k], fig->sec[k],
               dt_format_bytes(m[0], 32, fig->peak[k]), dt_format_bytes(m[1], 32, fig->added[k]), fig->loss[k]);
    printf("  peak K = %d / K = 1: %.4f (memory flat in K: %s); peak memory: device_alloc buffers (weights, "
           "gradients, activations, workspaces; not the CUDA context)\n",
           fig->K[1], fig->peak[1] / fig->peak[0], fig->peak[1] <= 1.02 * fig->peak[0] ? "yes" : "NO");
}

static void graph_call(void *g) { cuda_graph_launch(g); }

// One whole-UNet row: t seconds for flops FLOPs, their rate and the fraction of the GEMM rate.
static void unet_row(const Ctx *x, const char *label, double t, double flops) {
    printf("  %-53s %10.2f %9.2f %6.1f%%\n", label, t * 1e3, flops / t * 1e-12, 100.0 * flops / t / x->gemm_rate);
}

static void bench_model(const Ctx *x, const char *model, int N, int B, int ops, const IterOpts *it) {
    UNetConfig uc = model_config(model, &N);
    UNetFlops fl = unet_flops(&uc, B, N, N, 77);
    double ff = unet_flops_forward(&fl), fb = unet_flops_forward_backward(&fl);
    printf("\nmodel %s: latent %dx%d, batch %d, context 77, %lld parameters, %s on %s\n", model, N, N, B,
           (long long)unet_param_count(&uc), dtype_name(x->dt), device_name(x->d));
    printf("flops forward: %.0f = conv %.0f + linear %.0f + attention %.0f\n", ff, fl.conv, fl.linear, fl.attention);
    printf("flops forward+backward: %.0f\n", fb);
    if (ops) bench_ops(x, &uc, B, N), bench_vae_attention(x, model, B, N);
    ops_workspace_free();
    UNetBench b;
    unet_bench_init(&b, &uc, x->d, x->dt, B, N);
    b.backward = 0;
    double tf = bench_median(unet_bench_call, &b, x->d, x->reps);
    double tg = 0; // the GPU: the same forward captured once as a CUDA graph and replayed
    size_t nodes = 0;
    if (x->d == DEVICE_CUDA) {
        cuda_graph_begin();
        unet_bench_call(&b);
        CudaGraph *g = cuda_graph_end();
        nodes = cuda_graph_nodes(g);
        tg = bench_median(graph_call, g, x->d, x->reps);
        cuda_graph_free(g);
    }
    b.backward = 1;
    double tb = bench_median(unet_bench_call, &b, x->d, x->reps);
    double planned = (double)(b.pa.size + b.ca.size + b.ga.size + b.aa.size + ops_workspace_size(x->d, 0) +
                              ops_workspace_size(x->d, 1));
    double used = memory_in_use(x->d);
    unet_row(x, "unet forward", tf, ff);
    if (tg > 0) {
        char label[64];
        snprintf(label, sizeof label, "unet forward, CUDA graph (%zu nodes)", nodes);
        unet_row(x, label, tg, ff);
    }
    unet_row(x, "unet forward+backward", tb, fb);
    char m[2][32];
    printf("  memory: planned %s (weights, %sgradients, activations, op scratch); %s %s\n",
           dt_format_bytes(m[0], 32, planned), x->dt != DTYPE_F32 ? "their bf16 copy, " : "",
           x->d == DEVICE_CPU ? "peak resident" : "GPU memory in use (context and libraries included)",
           dt_format_bytes(m[1], 32, used));
    unet_bench_free(&b);
    ops_workspace_free();
    double tfl = 0, tbl = 0; // the GPU: the same UNet channels last (train.channels_last)
    if (x->d == DEVICE_CUDA) {
        unet_bench_init_recompute(&b, &uc, x->d, x->dt, B, N, NULL, 1);
        b.backward = 0;
        tfl = bench_median(unet_bench_call, &b, x->d, x->reps);
        b.backward = 1;
        tbl = bench_median(unet_bench_call, &b, x->d, x->reps);
        unet_row(x, "unet forward, channels last", tfl, ff);
        unet_row(x, "unet forward+backward, channels last", tbl, fb);
        unet_bench_free(&b);
        ops_workspace_free();
    }
    IterFigures fig;
    if (it) {
        fig = bench_iteration(x, model, N, B, it);
        print_iteration(&fig, it, B);
    }
    const char *name = strrchr(model, '/') ? strrchr(model, '/') + 1 : model;
    printf("result model=%s latent=%d batch=%d dtype=%s device=%s fwd_ms=%.4g fwdbwd_ms=%.4g fwd_tflops=%.4g "
           "fwdbwd_tflops=%.4g mfu_fwd=%.4g mfu_fwdbwd=%.4g planned_mib=%.1f used_mib=%.1f",
           name, N, B, dtype_name(x->dt), device_name(x->d), tf * 1e3, tb * 1e3, ff / tf * 1e-12, fb / tb * 1e-12,
           ff / tf / x->gemm_rate, fb / tb / x->gemm_rate, planned / (1 << 20), used / (1 << 20));
    if (it)
        printf(" iter_steps=%d iter_trainable=%s iter_k1_s=%.4g iter_kn_s=%.4g iter_k1_peak_mib=%.3f "
               "iter_kn_peak_mib=%.3f iter_peak_ratio=%.4f",
               it->steps, it->trainable == TRAINABLE_LORA ? "lora" : "full", fig.sec[0], fig.sec[1],
               fig.peak[0] / (1 << 20), fig.peak[1] / (1 << 20), fig.peak[1] / fig.peak[0]);
    if (tg > 0) printf(" fwd_graph_ms=%.4g", tg * 1e3);
    if (tfl > 0) printf(" fwd_cl_ms=%.4g fwdbwd_cl_ms=%.4g", tfl * 1e3, tbl * 1e3);
    printf("\n");
    fflush(stdout);
}

int cmd_bench_gpu(int argc, char **argv) {
    const char *models[MAX_MODELS] = {"configs/models/sd15", "configs/models/sdxl"};
    int latents[MAX_MODELS] = {64, 128}, n_models = 0, B = 1, reps = 5, gemm = -1, ops = 1, prec_set = 0;
    int flops_only = 0, iteration = 1;
    IterOpts it = {.steps = 10, .trainable = TRAINABLE_LORA, .guidance = 5.0};
    TrainDevice choice = TRAIN_DEVICE_AUTO;
    TrainPrecision prec = PRECISION_BF16;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            gpu_usage(stdout);
            return 0;
        }
        if (!strcmp(o, "--no-ops") || !strcmp(o, "--flops") || !strcmp(o, "--no-iteration")) {
            if (!strcmp(o, "--no-ops")) ops = 0;
            else if (!strcmp(o, "--no-iteration")) iteration = 0;
            else flops_only = 1;
            continue;
        }
        const char *v = args_value(argc, argv, &i);
        if (!strcmp(o, "--model")) {
            USER_CHECK(n_models < MAX_MODELS, "drtune bench gpu: at most %d --model options", MAX_MODELS);
            models[n_models] = v, latents[n_models++] = -1;
        } else if (!strcmp(o, "--latent")) {
            USER_CHECK(n_models > 0, "drtune bench gpu: --latent follows the --model it applies to");
            latents[n_models - 1] = args_int(o, v, 1, 4096);
        } else if (!strcmp(o, "--batch")) B = args_int(o, v, 1, 1024);
        else if (!strcmp(o, "--reps")) reps = args_int(o, v, 1, BENCH_MAX_REPS);
        else if (!strcmp(o, "--gemm")) gemm = args_int(o, v, 16, 32768);
        else if (!strcmp(o, "--device")) choice = setup_device_parse(v, "--device");
        else if (!strcmp(o, "--precision")) prec = setup_precision_parse(v, "--precision"), prec_set = 1;
        else if (!strcmp(o, "--steps")) it.steps = args_int(o, v, 1, ENGINE_MAX_STEPS);
        else if (!strcmp(o, "--guidance")) it.guidance = args_double(o, v, 0.0, 100.0);
        else if (!strcmp(o, "--trainable")) {
            USER_CHECK(!strcmp(v, "lora") || !strcmp(v, "full"), "--trainable: '%s' is not lora or full", v);
            it.trainable = !strcmp(v, "lora") ? TRAINABLE_LORA : TRAINABLE_FULL;
        }
        else dt_user_error("drtune bench gpu: unknown option '%s' (see drtune bench gpu --help)", o);
    }
    if (n_models == 0) n_models = 2;
    for (int i = 0; i < n_models; i++) {
        UNetConfig uc = model_config(models[i], &latents[i]);
        if (!flops_only) continue;
        UNetFlops f = unet_flops(&uc, B, latents[i], latents[i], 77);
        printf("%s at %dx%d, batch %d: forward %.4g FLOP (conv %.4g, linear %.4g, attention %.4g), "
               "forward+backward %.4g FLOP\n", models[i], latents[i], latents[i], B, unet_flops_forward(&f), f.conv,
               f.linear, f.attention, unet_flops_forward_backward(&f));
    }
    if (flops_only) return 0;
    Device d = setup_device(choice, NULL, "--device");
    if (d == DEVICE_CPU && !prec_set) prec = PRECISION_FP32;
    Ctx x = {.d = d, .dt = setup_precision(prec, d, "--precision", "--device"), .reps = reps};
    int real_gpu = d == DEVICE_CUDA && !device_cuda_emulated();
    if (gemm < 0) gemm = real_gpu ? 8192 : 512;
    printf("drtune bench gpu: %s, %s storage with fp32 accumulation, median of %d calls after a warm-up\n",
           d == DEVICE_CUDA ? cuda_device_name() : "CPU", dtype_name(x.dt), reps);
    printf("FLOPs: 2 M N K per matrix product (conv, linear, attention q k^T and P v; bench_unet.h); forward +\n"
           "backward: the weight and input gradients (not those of inputs that need none) and the attention backward\n"
           "with its recomputed scores, as torch.utils.flop_counter counts them\n");
    x.gemm_rate = bench_gemm(&x, gemm);
    for (int i = 0; i < n_models; i++) bench_model(&x, models[i], latents[i], B, ops, iteration ? &it : NULL);
    ops_workspace_free();
    return 0;
}
