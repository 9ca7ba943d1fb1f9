// cmd_bench_overlap.c: `drtune bench overlap`, run under mpirun: what starting the gradient reduction during the
// UNet backward (src/train/grad_sync.h) saves against reducing after it, on the CPU (MPI) or the GPU (NCCL). Each
// repetition times the backward alone, then backward + reduction after it, then with the reduction started during
// it, on the same ranks, model and activations (UNet forward outside the timing), so the columns share the
// machine's state. The fraction of the communication hidden is (after - during) / (after - alone): the reduction's
// own time is what reducing after the backward adds to it. On the GPU with full fine-tuning it also times the
// all-gather of the updated weights against the next iteration's host preparation (the prompts' text encoding and
// the noise) that the training loop overlaps it with. The model's weights may be random
// (drtune init-weights: timing does not depend on them); the gradient is the trainable set of `drtune train`: the
// full UNet's (reduce-scatter into shards) or the LoRA adapters' (all-reduce).
#include <stdio.h>
#include <string.h>

#include "args.h"
#include "core/common.h"
#include "core/device.h"
#include "core/rng.h"
#include "dist/dist.h"
#include "train/grad_sync.h"
#include "train/model.h"
#include "train/setup.h"

static void overlap_usage(FILE *f) {
    fprintf(f,
            "usage: mpirun -np R drtune bench overlap --model DIR [--trainable full|lora] [--batch B] [--size S]\n"
            "                                        [--bucket-mb X] [--reps N] [--threads N] [--device cpu|cuda]\n"
            "\n"
            "Times one UNet backward alone and plus the gradient reduction over the ranks, with the reduction after\n"
            "the backward and started during it in buckets of X MiB, in turn in each of N repetitions, and prints\n"
            "the fraction of the communication hidden. On the GPU with full fine-tuning, also the all-gather of the\n"
            "weights alone, the next iteration's text encoding and noise alone, and both overlapped.\n"
            "DIR is a diffusers model folder (e.g. drtune init-weights --model configs/models/sd15-small --out DIR).\n"
            "Defaults: full, batch 1, latent 16 x 16, 1 MiB buckets, 5 repetitions, the host's cores shared between\n"
            "its ranks, the CPU.\n");
}

static double median(double *v, int n) {
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && v[j] < v[j - 1]; j--) {
            double t = v[j];
            v[j] = v[j - 1], v[j - 1] = t;
        }
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// A copy of host tensor t on d (t itself on the CPU).
static Tensor on_device(const Tensor *t, Device d) {
    if (d == DEVICE_CPU) return *t;
    Tensor c = *t;
    c.device = d;
    c.data = device_alloc(d, tensor_bytes(t));
    device_copy(c.data, d, t->data, DEVICE_CPU, tensor_bytes(t));
    return c;
}

// Seconds since t0 when the slowest rank is done (the device's queued work included).
static double elapsed(Device d, double t0) {
    device_synchronize(d);
    double t = dt_now() - t0;
    dist_allreduce_max_f64(&t, 1);
    return t;
}

// The next iteration's host preparation that the training loop runs beside the all-gather: the batch's prompts
// encoded (with the unconditional row) and its latent noise drawn.
static void prepare_next(const Model *m, int B, Tensor *noise) {
    const char **prompts = xmalloc(sizeof(char *) * (size_t)B);
    int64_t *ids = xmalloc(sizeof(int64_t) * (size_t)B);
    for (int b = 0; b < B; b++) prompts[b] = "a red circle above a blue square", ids[b] = b;
    PromptEmbeds emb;
    UNetCond cond;
    model_condition(m, prompts, "", B, 1, 512, 512, &emb, &cond);
    noise_latents(noise, 1, ids);
    prompt_embeds_free(&emb);
    free(prompts), free(ids);
}

// GPU, full fine-tuning: the weights' all-gather alone, the host preparation alone, and the all-gather started
// before the preparation and waited for after it (as trainer.c does); prints the fraction of the all-gather hidden.
static void bench_gather(Model *m, float *p, const DistShard *shard, int B, Tensor *noise, int reps, int root) {
    double *v[3];
    for (int k = 0; k < 3; k++) v[k] = xmalloc(sizeof(double) * (size_t)reps);
    for (int r = -1; r < reps; r++) {
        for (int k = 0; k < 3; k++) {
            DistRequest req;
            device_synchronize(DEVICE_CUDA);
            dist_barrier();
            double t0 = dt_now();
            if (k != 1) dist_device_allgather_start(p, shard, &req);
            if (k != 0) prepare_next(m, B, noise);
            if (k != 1) dist_device_wait(&req, 1), dist_device_release(&req);
            double t = elapsed(DEVICE_CUDA, t0);
            if (r >= 0) v[k][r] = t;
        }
    }
    double g = median(v[0], reps), h = median(v[1], reps), both = median(v[2], reps);
    if (root) {
        printf("%-34s %14s\n", "weights' all-gather (full)", "median s");
        printf("%-34s %14.4f\n", "all-gather alone", g);
        printf("%-34s %14.4f\n", "text encoding + noise alone", h);
        printf("%-34s %14.4f\n", "both, overlapped", both);
        printf("all-gather hidden: %.1f%% of its %.4f s (behind %.4f s of host preparation)%s\n",
               g > 0 ? 100.0 * (g + h - both) / g : 0.0, g, h,
               device_cuda_emulated() ? "; emulated GPU: its streams run one after another at the call, so nothing "
                                        "can overlap here" : "");
    }
    for (int k = 0; k < 3; k++) free(v[k]);
}

int cmd_bench_overlap(int argc, char **argv) {
    const char *model = NULL;
    int B = 1, S = 16, reps = 5, threads = 0;
    double bucket_mb = 1.0;
    TrainDevice choice = TRAIN_DEVICE_CPU;
    Config c;
    config_defaults(&c);
    c.train.trainable = TRAINABLE_FULL;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            overlap_usage(stdout);
            return 0;
        }
        const char *v = args_value(argc, argv, &i);
        if (!strcmp(o, "--model")) model = v;
        else if (!strcmp(o, "--batch")) B = args_int(o, v, 1, 4096);
        else if (!strcmp(o, "--size")) S = args_int(o, v, 8, 1024);
        else if (!strcmp(o, "--bucket-mb")) bucket_mb = args_double(o, v, 1e-3, 1024);
        else if (!strcmp(o, "--reps")) reps = args_int(o, v, 1, 1000);
        else if (!strcmp(o, "--threads")) threads = args_int(o, v, 0, 4096);
        else if (!strcmp(o, "--device")) choice = setup_device_parse(v, "--device");
        else if (!strcmp(o, "--trainable")) {
            USER_CHECK(!strcmp(v, "lora") || !strcmp(v, "full"), "--trainable: '%s' is not lora or full", v);
            c.train.trainable = !strcmp(v, "full") ? TRAINABLE_FULL : TRAINABLE_LORA;
        } else dt_user_error("drtune bench overlap: unknown option '%s' (see drtune bench overlap --help)", o);
    }
    USER_CHECK(model, "drtune bench overlap: --model DIR is required (see drtune bench overlap --help)");
    dist_init(NULL, NULL);
    int R = dist_size(), root = dist_rank() == 0, full = c.train.trainable == TRAINABLE_FULL;
    USER_CHECK(R > 1, "drtune bench overlap: one rank has nothing to reduce; start it with mpirun -np R (R >= 2)");
    threads = setup_threads(threads);
    Device d = setup_device(choice, NULL, "--device");
    USER_CHECK(d == DEVICE_CPU || dist_device_ready(), "drtune bench overlap --device cuda: this build or machine "
               "has no NCCL (%s)", dist_device_library());
    Model m;
    model_load(&m, model, 1);
    const UNetConfig cfg = m.unet.cfg;
    int64_t f = (int64_t)1 << (cfg.levels - 1), T = 77;
    USER_CHECK(S % f == 0, "--size %d: this UNet needs multiples of %lld", S, (long long)f);
    TrainSet ts;
    setup_trainable(&ts, &m, &c, R);
    if (d != DEVICE_CPU) { // as drtune train places them
        model_to_device(&m, d);
        arena_to_device((Arena *)ts.grads, d);
        if (ts.params != &m.unet_params) arena_to_device((Arena *)ts.params, d);
        ts.p = ts.params->base, ts.g = ts.grads->base;
    }
    const UNet *net = &m.unet;
    DistShard shard;
    dist_shard_init(&shard, ts.n, R, dist_rank());
    int64_t end = full ? shard.padded : ts.n;
    float *out = full && d == DEVICE_CPU ? xaligned_alloc(sizeof(float) * (size_t)shard.shard) : NULL, *g = ts.g;
    GradSync after, during;
    grad_sync_init(&after, ts.grads, &cfg, ts.n, end, full ? &shard : NULL, out, 0.0);
    grad_sync_init(&during, ts.grads, &cfg, ts.n, end, full ? &shard : NULL, out, bucket_mb);

    UNetActs acts;
    Arena am;
    arena_init(&am, "acts", d);
    unet_plan_acts(&am, &acts, net, B, S, S, T);
    arena_alloc(&am);
    int64_t C = cfg.in_channels;
    Tensor x = tensor_f32_4d(xmalloc(sizeof(float) * (size_t)(B * C * S * S)), B, C, S, S);
    Tensor eps = tensor_f32_4d(xmalloc(sizeof(float) * (size_t)(B * cfg.out_channels * S * S)), B, cfg.out_channels,
                               S, S);
    Tensor deps = eps;
    deps.data = xmalloc(tensor_bytes(&eps));
    Tensor tsteps = tensor_make(xmalloc(sizeof(float) * (size_t)B), DTYPE_F32, DEVICE_CPU, 1, (int64_t[]){B});
    Tensor ctx = tensor_make(xmalloc(sizeof(float) * (size_t)(B * T * cfg.cross_dim)), DTYPE_F32, DEVICE_CPU, 3,
                             (int64_t[]){B, T, cfg.cross_dim});
    Tensor te = tensor_make(xcalloc((size_t)B * (size_t)(cfg.text_embed_dim + 1), sizeof(float)), DTYPE_F32,
                            DEVICE_CPU, 2, (int64_t[]){B, cfg.text_embed_dim});
    Tensor tid = tensor_make(xcalloc((size_t)B * 6, sizeof(float)), DTYPE_F32, DEVICE_CPU, 2, (int64_t[]){B, 6});
    rng_normal_fill(x.data, tensor_numel(&x), 2, (uint64_t)dist_rank(), 0);
    rng_normal_fill(ctx.data, tensor_numel(&ctx), 3, (uint64_t)dist_rank(), 0);
    rng_normal_fill(deps.data, tensor_numel(&deps), 4, (uint64_t)dist_rank(), 0);
    for (int b = 0; b < B; b++) ((float *)tsteps.data)[b] = 500.0f;
    Tensor host[6] = {x, eps, deps, tsteps, ctx, te}, dev[7];
    for (int i = 0; i < 6; i++) dev[i] = on_device(&host[i], d);
    dev[6] = on_device(&tid, d);

    char nb[32];
    if (root) {
        char what[32];
        snprintf(what, sizeof what, full ? "full UNet" : "LoRA r%d", c.train.lora_rank);
        printf("drtune bench overlap: %s UNet, %d ranks x %d threads, %s, %s gradient %s, batch %d, latent %dx%d, "
               "%g MiB buckets, %d repetitions\n",
               model, R, threads, d == DEVICE_CPU ? "CPU (MPI)" : device_cuda_emulated() ? "emulated GPU (NCCL over "
               "MPI)" : "GPU (NCCL)", what, dt_format_bytes(nb, sizeof nb, (double)end * sizeof(float)), B, S, S,
               bucket_mb, reps);
    }
    double *tot[3], *wait[3], overlap = 0;
    for (int k = 0; k < 3; k++) {
        tot[k] = xmalloc(sizeof(double) * (size_t)reps);
        wait[k] = xmalloc(sizeof(double) * (size_t)reps);
    }
    for (int r = -1; r < reps; r++) { // r = -1: warm-up
        for (int k = 0; k < 3; k++) { // the backward alone, the reduction after it, the reduction during it
            GradSync *s = k == 2 ? &during : &after;
            unet_forward(net, &acts, &dev[1], &dev[0], &dev[3], &dev[4], cfg.text_time ? &dev[5] : NULL,
                         cfg.text_time ? &dev[6] : NULL);
            device_zero(d, g, sizeof(float) * (size_t)end);
            device_synchronize(d);
            dist_barrier();
            double t0 = dt_now();
            if (k) grad_sync_begin(s);
            acts.ready = k ? grad_sync_ready : NULL, acts.ready_ctx = s;
            unet_backward(net, &ts.slots, &acts, &dev[2], NULL, NULL);
            if (k) grad_sync_finish(s);
            double t = elapsed(d, t0), w = k ? s->sec_wait : 0;
            dist_allreduce_max_f64(&w, 1);
            if (r >= 0) tot[k][r] = t, wait[k][r] = w;
            if (k == 2) overlap = grad_sync_overlap(s);
        }
    }
    double t_bwd = median(tot[0], reps), ta = median(tot[1], reps), tb = median(tot[2], reps);
    double wa = median(wait[1], reps), wb = median(wait[2], reps), comm = ta - t_bwd;
    if (root) {
        printf("%-34s %14s %18s\n", "reduction", "median s", "waiting after bwd");
        printf("%-34s %14.4f %18s\n", "none (backward alone)", t_bwd, "-");
        printf("%-34s %14.4f %18.4f\n", "after the backward", ta, wa);
        printf("%-34s %14.4f %18.4f\n", "during the backward (buckets)", tb, wb);
        printf("during / after: %.3f of the time (backward + reduction); %.1f%% of the gradient started during the "
               "backward\n", tb / ta, 100.0 * overlap);
        if (comm > 0)
            printf("communication hidden: %.1f%% of the reduction's %.4f s ((after - during) / (after - alone))%s\n",
                   100.0 * (ta - tb) / comm, comm,
                   d != DEVICE_CPU && device_cuda_emulated() ? "; emulated GPU: its streams run one after another "
                                                               "at the call, so nothing can overlap here" : "");
        else
            printf("communication hidden: not resolved (the reduction adds %.4f s to the backward: within the "
                   "noise; more repetitions or a larger gradient)\n", comm);
    }
    if (d != DEVICE_CPU && full) bench_gather(&m, ts.p, &shard, B, &host[0], reps, root);
    for (int k = 0; k < 3; k++) free(tot[k]), free(wait[k]);
    grad_sync_free(&after);
    grad_sync_free(&during);
    for (int i = 0; i < 7; i++)
        if (d != DEVICE_CPU) device_free(d, dev[i].data);
    free(x.data), free(eps.data), free(deps.data), free(tsteps.data), free(ctx.data), free(te.data), free(tid.data);
    free(out);
    unet_acts_free(&acts);
    arena_free(&am);
    setup_trainable_free(&ts);
    model_free(&m);
    dist_finalize();
    return 0;
}
