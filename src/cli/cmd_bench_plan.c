// cmd_bench_plan.c: `drtune bench plan`, the memory plan of one training rank computed from a model folder's configs
// alone (no weights are read, nothing is allocated), for sizing GPUs before a run: the UNet and VAE decoder weights,
// the trainable set's gradients and Adam moments (sharded over the ranks for full fine-tuning), and the activations
// of one guided UNet forward + backward and of the decoder, with the same planners a run uses, in fp32 or under
// train.precision = bf16 (bf16 compute copies of the weights, bf16 activations; the frozen fp32 weights stay on the
// host). --recompute plans the UNet activations with activation recompute (train.recompute) and prints the saving.
#include <stdio.h>
#include <string.h>

#include "args.h"
#include "core/common.h"
#include "models/unet.h"
#include "models/vae.h"

static void plan_usage(FILE *f) {
    fprintf(f,
            "usage: drtune bench plan --model DIR [--height H --width W] [--batch B] [--guidance W]\n"
            "                         [--trainable lora|full] [--lora-rank R] [--ranks N,N,...]\n"
            "                         [--precision fp32|bf16] [--recompute off|auto|all]\n"
            "                         [--activation-budget GB]\n"
            "\n"
            "The memory plan of one rank for one training iteration, from the configs of a diffusers folder (e.g.\n"
            "configs/models/sdxl): per group and in total, for each rank count. Defaults: the UNet's default image\n"
            "size, batch 1 per rank, guidance 5 (both CFG branches), LoRA of rank 4 on to_q, to_k, to_v, to_out.0,\n"
            "ranks 1,8,64, fp32, no recompute (train.recompute; --recompute auto needs --activation-budget, the\n"
            "GiB the UNet activations should fit in).\n");
}

static int ends_with(const char *s, const char *t) {
    size_t a = strlen(s), b = strlen(t);
    return a >= b && !strcmp(s + a - b, t);
}

int cmd_bench_plan(int argc, char **argv) {
    const char *model = NULL;
    int H = -1, W = -1, B = 1, rank = 4, full = 0, nranks = 3, bf16 = 0;
    int ranks[16] = {1, 8, 64};
    double guidance = 5.0, budget = 0;
    UNetRecompute rc = {UNET_RECOMPUTE_OFF, 0};
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            plan_usage(stdout);
            return 0;
        }
        const char *v = args_value(argc, argv, &i);
        if (!strcmp(o, "--model")) model = v;
        else if (!strcmp(o, "--height")) H = args_int(o, v, 8, 16384);
        else if (!strcmp(o, "--width")) W = args_int(o, v, 8, 16384);
        else if (!strcmp(o, "--batch")) B = args_int(o, v, 1, 4096);
        else if (!strcmp(o, "--guidance")) guidance = args_double(o, v, 0.0, 100.0);
        else if (!strcmp(o, "--lora-rank")) rank = args_int(o, v, 1, 1024);
        else if (!strcmp(o, "--precision")) {
            USER_CHECK(!strcmp(v, "fp32") || !strcmp(v, "bf16"), "--precision: '%s' is not fp32 or bf16", v);
            bf16 = !strcmp(v, "bf16");
        } else if (!strcmp(o, "--recompute")) {
            int m = unet_recompute_parse(v);
            USER_CHECK(m >= 0, "--recompute: '%s' is not off, auto or all", v);
            rc.mode = (UNetRecomputeMode)m;
        } else if (!strcmp(o, "--activation-budget")) budget = args_double(o, v, 0.001, 1e6);
        else if (!strcmp(o, "--trainable")) {
            USER_CHECK(!strcmp(v, "lora") || !strcmp(v, "full"), "--trainable: '%s' is not lora or full", v);
            full = !strcmp(v, "full");
        } else if (!strcmp(o, "--ranks")) {
            char *copy = xstrdup(v), *save = NULL;
            nranks = 0;
            for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                USER_CHECK(nranks < 16, "--ranks: at most 16 counts");
                ranks[nranks++] = args_int(o, t, 1, 1 << 20);
            }
            free(copy);
            USER_CHECK(nranks > 0, "--ranks: give at least one rank count");
        } else dt_user_error("drtune bench plan: unknown option '%s' (see drtune bench plan --help)", o);
    }
    USER_CHECK(model, "drtune bench plan: --model DIR is required");
    USER_CHECK((H < 0) == (W < 0), "drtune bench plan: give --height and --width together");
    USER_CHECK(rc.mode != UNET_RECOMPUTE_AUTO || budget > 0, "drtune bench plan: --recompute auto needs "
               "--activation-budget GB");
    rc.budget = budget * (1 << 30);
    char path[4096];
    UNetConfig uc;
    VAEConfig vc;
    snprintf(path, sizeof path, "%s/unet", model);
    unet_load_config(&uc, path);
    snprintf(path, sizeof path, "%s/vae", model);
    vae_load_config(&vc, path);
    int f = 1 << (vc.levels - 1);
    if (H < 0) H = W = uc.sample_size * f;
    USER_CHECK(H % f == 0 && W % f == 0, "--height and --width must be multiples of %d for this VAE", f);
    int rows = guidance > 1.0 ? 2 * B : B, T = 77;

    Arena up, vp, ua, va, cp, cv;
    UNet *net = xcalloc(1, sizeof *net), *cnet = xcalloc(1, sizeof *cnet);
    VAE *vae = xcalloc(1, sizeof *vae), *cvae = xcalloc(1, sizeof *cvae);
    UNetActs *acts = xcalloc(1, sizeof *acts);
    VAEDecodeActs *vacts = xcalloc(1, sizeof *vacts);
    arena_init(&up, "unet", DEVICE_CPU);
    arena_init(&vp, "vae", DEVICE_CPU);
    arena_init(&ua, "unet-acts", DEVICE_CPU);
    arena_init(&va, "vae-acts", DEVICE_CPU);
    arena_init(&cp, "unet-compute", DEVICE_CPU);
    arena_init(&cv, "vae-compute", DEVICE_CPU);
    arena_set_float_dtype(&cp, DTYPE_BF16);
    arena_set_float_dtype(&cv, DTYPE_BF16);
    unet_plan_params(&up, net, &uc);
    vae_plan_params(&vp, vae, &vc, VAE_DECODER);
    if (bf16) unet_plan_params(&cp, cnet, &uc), vae_plan_params(&cv, cvae, &vc, VAE_DECODER);
    // activations in the dtype of the weights that compute
    unet_plan_acts_recompute(&ua, acts, bf16 ? cnet : net, rows, H / f, W / f, T, &rc);
    UNetRecompute vrc = vae_recompute_share(&rc, ua.size);
    vae_plan_decode_acts_recompute(&va, vacts, bf16 ? cvae : vae, B, H / f, W / f, &vrc);
    // LoRA: r (in + out) per adapted projection of the attention blocks
    int64_t lora = 0;
    const char *targets[] = {".to_q.weight", ".to_k.weight", ".to_v.weight", ".to_out.0.weight"};
    for (int i = 0; i < up.n; i++)
        for (int k = 0; k < 4; k++)
            if (strstr(up.entries[i].name, "transformer_blocks.") && ends_with(up.entries[i].name, targets[k]))
                lora += (int64_t)rank * (up.entries[i].desc.shape[0] + up.entries[i].desc.shape[1]);
    // on the GPU: fp32 weights, or the bf16 copies and, under full fine-tuning, the fp32 UNet they are refreshed from
    double weights = bf16 ? (double)cp.size + (double)cv.size + (full ? (double)up.size : 0.0)
                          : (double)up.size + (double)vp.size;
    double trained = full ? (double)up.size : 4.0 * (double)lora;
    double acts_b = (double)ua.size + (double)va.size;
    double latents = 4.0 * (double)B * uc.in_channels * (H / f) * (W / f);
    char a[32], b[32], c[32], d[32], e[32];
    printf("drtune bench plan: %s, %dx%d images, batch %d per rank, %s, %s, %s\n", model, H, W, B,
           rows > B ? "both CFG branches" : "one branch", full ? "full fine-tuning" : "LoRA",
           bf16 ? "bf16 compute copies and activations" : "fp32 storage");
    printf("  %-28s %12s%s\n", "UNet weights", dt_format_bytes(a, sizeof a, (double)up.size),
           bf16 && !full ? " (host: frozen)" : "");
    printf("  %-28s %12s%s\n", "VAE decoder weights", dt_format_bytes(a, sizeof a, (double)vp.size),
           bf16 ? " (host: frozen)" : "");
    if (bf16) {
        printf("  %-28s %12s\n", "UNet bf16 copy", dt_format_bytes(a, sizeof a, (double)cp.size));
        printf("  %-28s %12s\n", "VAE decoder bf16 copy", dt_format_bytes(a, sizeof a, (double)cv.size));
    }
    if (!full)
        printf("  %-28s %12s (rank %d, %lld parameters)\n", "LoRA adapters",
               dt_format_bytes(a, sizeof a, 4.0 * (double)lora), rank, (long long)lora);
    printf("  %-28s %12s (%d rows of %dx%d latents)\n", "UNet activations",
           dt_format_bytes(a, sizeof a, (double)ua.size), rows, H / f, W / f);
    if (rc.mode != UNET_RECOMPUTE_OFF)
        printf("    recompute %s: %d of %d blocks re-run in the backward, %s less than the %s kept without\n",
               unet_recompute_name(rc.mode), acts->n_recompute, unet_units(&uc),
               dt_format_bytes(b, sizeof b, (double)acts->bytes_off - (double)ua.size),
               dt_format_bytes(c, sizeof c, (double)acts->bytes_off));
    printf("  %-28s %12s\n", "VAE decoder activations", dt_format_bytes(a, sizeof a, (double)va.size));
    if (rc.mode != UNET_RECOMPUTE_OFF)
        printf("    recompute %s: %d of %d units (the mid block, each up-level resnet) re-run in the backward, %s less "
               "than the %s kept without\n",
               unet_recompute_name(rc.mode), vacts->n_recompute, 1 + vc.levels * (vc.layers + 1),
               dt_format_bytes(b, sizeof b, (double)vacts->bytes_off - (double)va.size),
               dt_format_bytes(c, sizeof c, (double)vacts->bytes_off));
    printf("\n%8s %14s %14s %14s %14s %14s\n", "ranks", "weights", "gradients", "Adam m, v", "activations", "total");
    for (int i = 0; i < nranks; i++) {
        int R = ranks[i];
        // gradients: the whole trainable set on every rank (reduce-scattered after the backward); moments: this
        // rank's shard for full fine-tuning, all of them for LoRA; latents: x_t of every step is small next to these
        double grads = trained, moments = 2.0 * (full ? trained / R : trained);
        double lora_w = full ? 0.0 : trained * (bf16 ? 1.5 : 1.0); // bf16: with the adapters' bf16 copies
        double total = weights + lora_w + grads + moments + acts_b + latents * 30;
        printf("%8d %14s %14s %14s %14s %14s\n", R, dt_format_bytes(a, sizeof a, weights + lora_w),
               dt_format_bytes(b, sizeof b, grads), dt_format_bytes(c, sizeof c, moments),
               dt_format_bytes(d, sizeof d, acts_b), dt_format_bytes(e, sizeof e, total));
    }
    printf("\ntotal: weights + gradients + moments + activations + 30 stored latents (the engine's buffers); the\n"
           "ops' scratch (cuDNN, cuBLASLt and attention workspaces, at most a few hundred MiB) comes on top.\n");
    unet_acts_free(acts);
    vae_decode_acts_free(vacts);
    unet_free(net);
    if (bf16) unet_free(cnet);
    free(net), free(cnet), free(vae), free(cvae), free(acts), free(vacts);
    arena_free(&up), arena_free(&vp), arena_free(&ua), arena_free(&va), arena_free(&cp), arena_free(&cv);
    return 0;
}
