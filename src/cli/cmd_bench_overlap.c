// cmd_bench_overlap.c: `drtune bench overlap`, run under mpirun: what starting the gradient reduction during the
// UNet backward (src/train/grad_sync.h) saves against reducing after it. Each repetition times both ways in turn on
// the same ranks, model and activations (UNet forward outside the timing; backward + reduction inside), so the
// two columns share the machine's state and the ratio is measured side by side. The model's weights may be random
// (drtune init-weights: timing does not depend on them); the gradient is the trainable set of `drtune train`: the
// full UNet's (reduce-scatter into shards) or the LoRA adapters' (all-reduce).
#include <stdio.h>
#include <string.h>

#include "args.h"
#include "core/common.h"
#include "core/rng.h"
#include "dist/dist.h"
#include "train/grad_sync.h"
#include "train/setup.h"

static void overlap_usage(FILE *f) {
    fprintf(f,
            "usage: mpirun -np R drtune bench overlap --model DIR [--trainable full|lora] [--batch B] [--size S]\n"
            "                                        [--bucket-mb X] [--reps N] [--threads N]\n"
            "\n"
            "Times one UNet backward plus the gradient reduction over the ranks, with the reduction after the\n"
            "backward and started during it in buckets of X MiB, alternating the two in each of N repetitions.\n"
            "DIR is a diffusers model folder (e.g. drtune init-weights --model configs/models/sd15-small --out DIR).\n"
            "Defaults: full, batch 1, latent 16 x 16, 1 MiB buckets, 5 repetitions, the host's cores shared between\n"
            "its ranks.\n");
}

static double median(double *v, int n) {
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && v[j] < v[j - 1]; j--) {
            double t = v[j];
            v[j] = v[j - 1], v[j - 1] = t;
        }
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int cmd_bench_overlap(int argc, char **argv) {
    const char *model = NULL;
    int B = 1, S = 16, reps = 5, threads = 0;
    double bucket_mb = 1.0;
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
    Model m;
    model_load(&m, model, 1);
    const UNet *net = &m.unet;
    const UNetConfig cfg = net->cfg;
    int64_t f = (int64_t)1 << (cfg.levels - 1), T = 77;
    USER_CHECK(S % f == 0, "--size %d: this UNet needs multiples of %lld", S, (long long)f);
    TrainSet ts;
    setup_trainable(&ts, &m, &c, R);
    DistShard shard;
    dist_shard_init(&shard, ts.n, R, dist_rank());
    int64_t end = full ? shard.padded : ts.n;
    float *out = full ? xaligned_alloc(sizeof(float) * (size_t)shard.shard) : NULL, *g = ts.g;
    GradSync after, during;
    grad_sync_init(&after, ts.grads, &cfg, ts.n, end, full ? &shard : NULL, out, 0.0);
    grad_sync_init(&during, ts.grads, &cfg, ts.n, end, full ? &shard : NULL, out, bucket_mb);

    UNetActs acts;
    Arena am;
    arena_init(&am, "acts", DEVICE_CPU);
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

    char nb[32];
    if (root) {
        char what[32];
        snprintf(what, sizeof what, full ? "full UNet" : "LoRA r%d", c.train.lora_rank);
        printf("drtune bench overlap: %s UNet, %d ranks x %d threads, %s gradient %s, batch %d, latent %dx%d, "
               "%g MiB buckets, %d repetitions\n",
               model, R, threads, what, dt_format_bytes(nb, sizeof nb, (double)end * sizeof(float)), B, S, S,
               bucket_mb, reps);
    }
    double *tot[2], *wait[2], overlap = 0;
    for (int k = 0; k < 2; k++) {
        tot[k] = xmalloc(sizeof(double) * (size_t)reps);
        wait[k] = xmalloc(sizeof(double) * (size_t)reps);
    }
    for (int r = -1; r < reps; r++) { // r = -1: warm-up
        for (int k = 0; k < 2; k++) {
            GradSync *s = k ? &during : &after;
            unet_forward(net, &acts, &eps, &x, &tsteps, &ctx, cfg.text_time ? &te : NULL, cfg.text_time ? &tid : NULL);
            memset(g, 0, sizeof(float) * (size_t)end);
            dist_barrier();
            double t0 = dt_now();
            grad_sync_begin(s);
            acts.ready = grad_sync_ready, acts.ready_ctx = s;
            unet_backward(net, &ts.slots, &acts, &deps, NULL, NULL);
            grad_sync_finish(s);
            double t = dt_now() - t0, w = s->sec_wait;
            dist_allreduce_max_f64(&t, 1); // the slowest rank sets the pace
            dist_allreduce_max_f64(&w, 1);
            if (r >= 0) tot[k][r] = t, wait[k][r] = w;
            if (k) overlap = grad_sync_overlap(s);
        }
    }
    double ta = median(tot[0], reps), tb = median(tot[1], reps), wa = median(wait[0], reps),
           wb = median(wait[1], reps);
    if (root) {
        printf("%-34s %14s %18s\n", "reduction", "median s", "waiting after bwd");
        printf("%-34s %14.4f %18.4f\n", "after the backward", ta, wa);
        printf("%-34s %14.4f %18.4f\n", "during the backward (buckets)", tb, wb);
        printf("during / after: %.3f of the time (backward + reduction); %.1f%% of the gradient started during the "
               "backward; waiting reduced %.1fx\n",
               tb / ta, 100.0 * overlap, wb > 0 ? wa / wb : 0.0);
    }
    for (int k = 0; k < 2; k++) free(tot[k]), free(wait[k]);
    grad_sync_free(&after);
    grad_sync_free(&during);
    free(x.data), free(eps.data), free(deps.data), free(tsteps.data), free(ctx.data), free(te.data), free(tid.data);
    free(out);
    unet_acts_free(&acts);
    arena_free(&am);
    setup_trainable_free(&ts);
    model_free(&m);
    dist_finalize();
    return 0;
}
