// bench_unet.h: what `drtune bench unet` and `drtune bench gpu` share: a UNet with random weights on a device (from
// a model folder's unet/config.json alone, nothing else read), its inputs and activation plan, one timed call
// (forward, or forward + backward with every parameter gradient), and the matrix-product FLOPs of a forward counted
// from the configuration.
#pragma once
#include "core/arena.h"
#include "core/device.h"
#include "models/unet.h"
#include "train/model.h"

// Forward FLOPs of the UNet's matrix products (2 M N K each), by kind; elementwise work, norms and softmax are not
// counted. conv: every convolution (1x1 projections of non-linear-projection transformers included); linear: the
// transformers' and time embeddings' linears; attention: q k^T and P v, 4 B Tq Tk C per attention.
typedef struct {
    double conv, linear, attention;
    double no_input_grad; // part of conv + linear whose input needs no gradient: time_embedding.linear_1,
                          // add_embedding.linear_1, the cross-attentions' k and v (over the context)
} UNetFlops;

// FLOPs of one forward at batch B, latent H x W, context length T.
UNetFlops unet_flops(const UNetConfig *c, int64_t B, int64_t H, int64_t W, int64_t T);
double unet_flops_forward(const UNetFlops *f);
// Forward + backward (every parameter gradient and the latents' gradient, as unet_bench_call runs it): 3x the
// forward's conv and linear products (the weight and input gradients are one product of the same size each) less
// the input gradients not computed, and 14/4 of the attention's (the backward recomputes q k^T, then dout v^T,
// P^T dout, dS k, dS^T q: 10 B Tq Tk C). torch.utils.flop_counter counts the same products the same way.
double unet_flops_forward_backward(const UNetFlops *f);

typedef struct {
    UNetConfig cfg;
    Device d;
    DType dt;                 // the compute dtype: f32, or bf16 through a cast copy of the fp32 weights
    int B, N;                 // batch, latent size (N x N)
    Arena pa, ca, ga, aa;     // fp32 weights, their compute copy (bf16, or channels last; else empty), gradients,
                              // activations
    UNet *net, *cnet, *grads; // cnet: the bf16 copy
    const UNet *run;          // the UNet the calls use (net or cnet)
    UNetActs *acts;
    Tensor x, t, ctx, te, tid, eps, deps, dx; // inputs [B, in, N, N], [B], [B, 77, cross], SDXL's added conditions
    int backward;             // what unet_bench_call does: 0 forward, 1 forward + backward
} UNetBench;

// Plans and fills everything on d: weights N(0, 0.02^2) from a fixed stream, inputs standard normal, timesteps 500.
void unet_bench_init(UNetBench *b, const UNetConfig *cfg, Device d, DType dt, int B, int N);
// The same with the activations planned for recompute rc (NULL: off), channels last when cl (train.channels_last).
void unet_bench_init_recompute(UNetBench *b, const UNetConfig *cfg, Device d, DType dt, int B, int N,
                               const UNetRecompute *rc, int cl);
// One forward (+ backward): a BenchFn for bench_median.
void unet_bench_call(void *arg);
void unet_bench_free(UNetBench *b);

// A tensor [shape] of dtype dt on d, standard normal times scale (scale 0: every element = value), from stream.
Tensor bench_device_tensor(Device d, DType dt, int ndim, const int64_t *shape, float scale, float value,
                           uint64_t stream);

// A Model from a folder's configs alone (unet/config.json, vae/config.json, scheduler/scheduler_config.json; no
// weights file read, no text encoders): UNet and VAE-decoder weights N(0, 0.02^2) on the host from fixed streams,
// the DDIM scheduler at `steps` steps. Conditioning comes from bench_random_cond, not from prompts. Free with
// model_free.
void bench_model_random(Model *m, const char *dir, int steps);
// Random conditioning of the UNet for `rows` rows on the host (the engine copies it to its device): context [rows,
// 77, cross_dim] standard normal, and for SDXL pooled text embeddings [rows, text_embed_dim] standard normal and
// time ids (H, W, 0, 0, H, W) for H x W pixel images. Free with bench_random_cond_free.
void bench_random_cond(UNetCond *c, Tensor t[3], const UNetConfig *cfg, int rows, int H, int W);
void bench_random_cond_free(Tensor t[3]);
