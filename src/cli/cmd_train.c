// cmd_train.c: `drtune train` (the training job) and `drtune sample` (images from a model with fixed seeds, the
// same latents as diffusers' pipeline when they are read from a file).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "core/common.h"
#include "core/device.h"
#include "dist/dist.h"
#include "dist/signals.h"
#include "io/png.h"
#include "io/prompts.h"
#include "io/safetensors.h"
#include "train/setup.h"
#include "train/model.h"
#include "train/trainer.h"

int cmd_train(int argc, char **argv) {
    signals_install(); // first: a stop request during start-up (MPI, loading the model) is honoured, not fatal
    const char *config = NULL, *resume = "none";
    int print_config = 0;
    char **overrides = xmalloc(sizeof(char *) * (size_t)(argc + 1));
    int n = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: drtune train --config FILE.ini [--resume auto|none|PATH] [--section.key=value ...]\n"
                   "       mpirun -np R drtune train ...   (R ranks share each iteration's batch; docs/DISTRIBUTED.md)"
                   "\n\n"
                   "  --resume auto   continue from the newest valid checkpoint in OUTPUT.DIR/checkpoints (start\n"
                   "                  from the beginning when there is none)\n"
                   "  --resume PATH   continue from a checkpoint file, or the newest valid one in a folder\n"
                   "  --resume none   start from the beginning (the default; replaces an earlier run's checkpoints)\n"
                   "  --print-config  check the configuration and print it resolved (INI), without training\n"
                   "SIGTERM or SIGUSR1 (sbatch --signal=USR1@300) writes a checkpoint and exits 0. docs/CHECKPOINT.md\n"
                   "describes the checkpoints.\n\n"
                   "Every key of the configuration (docs/CONFIG.md) can be set in the file or overridden here.\n\n");
            config_print_help(stdout);
            free(overrides);
            return 0;
        }
        if (!strcmp(argv[i], "--config")) {
            USER_CHECK(i + 1 < argc, "--config needs a file");
            config = argv[++i];
        } else if (!strncmp(argv[i], "--config=", 9)) {
            config = argv[i] + 9;
        } else if (!strcmp(argv[i], "--resume")) {
            USER_CHECK(i + 1 < argc, "--resume needs auto, none or a checkpoint path");
            resume = argv[++i];
        } else if (!strncmp(argv[i], "--resume=", 9)) {
            resume = argv[i] + 9;
        } else if (!strcmp(argv[i], "--print-config")) {
            print_config = 1;
        } else if (!strncmp(argv[i], "--", 2) && strchr(argv[i], '.')) {
            overrides[n++] = argv[i];
        } else {
            dt_user_error("drtune train: unexpected argument '%s' (see drtune train --help)", argv[i]);
        }
    }
    USER_CHECK(resume[0], "--resume needs auto, none or a checkpoint path");
    if (print_config) { // what launch/retrain.sh reads its settings from: the same resolution as a run's
        Config cfg;
        config_load(&cfg, config, n, overrides);
        char *ini;
        size_t len = config_to_ini(&cfg, &ini);
        fwrite(ini, 1, len, stdout);
        free(ini);
        free(overrides);
        return 0;
    }
    dist_init(NULL, NULL); // MPI when started by mpirun or srun; a job of one rank otherwise
    Config cfg;
    config_load(&cfg, config, n, overrides);
    free(overrides);
    int rc = trainer_run(&cfg, resume);
    dist_finalize();
    return rc;
}

// A prompt from the command line, under the same rule as a prompt file's lines (prompts.h).
static const char *sample_prompt(const char *v, int index) {
    char why[128];
    if (prompt_problem(v, strlen(v), why, sizeof why)) dt_user_error("drtune sample: --prompt %d: %s", index, why);
    return v;
}

int cmd_sample(int argc, char **argv) {
    const char *model = NULL, *out = "sample.png", *latents = NULL, *save = NULL, *negative = "", *lora = NULL;
    const char *device = "auto", *precision = "fp32";
    const char **prompts = xmalloc(sizeof(char *) * (size_t)argc);
    int np = 0, seed = 0, steps = 50, height = -1, width = -1;
    float guidance = 7.5f, eta = 0.0f;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf("usage: drtune sample --model DIR --prompt TEXT [--prompt TEXT ...] [options]\n"
                   "  --prompt TEXT     a prompt of at most %d bytes of UTF-8 (the same rule as prompt files)\n"
                   "  --seed S          sample i uses noise stream (S, i) (default 0)\n"
                   "  --steps N         DDIM steps (default 50)\n"
                   "  --guidance W      classifier-free guidance scale (default 7.5; <= 1: off)\n"
                   "  --eta E           DDIM eta (default 0)\n"
                   "  --height H --width W   image size (default: the UNet's sample_size x VAE factor)\n"
                   "  --negative TEXT   negative prompt\n"
                   "  --latents FILE    read the initial latents [B, C, h, w] from tensor 'latents' of a safetensors file\n"
                   "  --lora FILE       apply LoRA adapters written by drtune train\n"
                   "  --device D        auto (the GPU when one is visible; default), cpu or cuda\n"
                   "  --precision P     fp32 (default) or bf16 (GPU: bf16 weights and activations)\n"
                   "  --out FILE.png    the image grid (default sample.png)\n"
                   "  --save FILE       also write the final latents and images as safetensors\n",
                   PROMPTS_LINE_MAX);
            free(prompts);
            return 0;
        }
        const char *v = args_value(argc, argv, &i);
        if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--prompt")) prompts[np] = sample_prompt(v, np + 1), np++;
        else if (!strcmp(a, "--seed")) seed = args_int(a, v, 0, 2000000000);
        else if (!strcmp(a, "--steps")) steps = args_int(a, v, 1, 1000);
        else if (!strcmp(a, "--guidance")) guidance = (float)args_double(a, v, 0.0, 100.0);
        else if (!strcmp(a, "--eta")) eta = (float)args_double(a, v, 0.0, 1.0);
        else if (!strcmp(a, "--height")) height = args_int(a, v, 8, 8192);
        else if (!strcmp(a, "--width")) width = args_int(a, v, 8, 8192);
        else if (!strcmp(a, "--negative")) negative = v;
        else if (!strcmp(a, "--latents")) latents = v;
        else if (!strcmp(a, "--lora")) lora = v;
        else if (!strcmp(a, "--device")) device = v;
        else if (!strcmp(a, "--precision")) precision = v;
        else if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--save")) save = v;
        else dt_user_error("drtune sample: unknown option '%s' (see drtune sample --help)", a);
    }
    USER_CHECK(model != NULL, "drtune sample: --model is required");
    USER_CHECK(np > 0, "drtune sample: give at least one --prompt");
    Device d = setup_device(setup_device_parse(device, "--device"), NULL, "--device");
    DType dt = setup_precision(setup_precision_parse(precision, "--precision"), d, "--precision", "--device");
    Model m;
    model_load(&m, model, steps);
    int f = 1 << (m.vae.cfg.levels - 1);
    if (height < 0) height = m.unet.cfg.sample_size * f;
    if (width < 0) width = m.unet.cfg.sample_size * f;
    USER_CHECK(height % f == 0 && width % f == 0, "--height and --width must be multiples of %d", f);
    int h = height / f, w = width / f, B = np, cfg = guidance > 1.0f;
    Lora l;
    UNet no_grads;
    if (lora) setup_lora_from_file(&l, &no_grads, &m, lora); // rank and targets from the file
    setup_model_to_device(&m, lora ? &l : NULL, d);
    model_set_precision(&m, lora ? &l : NULL, 0, dt, 0); // bf16: the compute copies
    Engine e;
    RewardSet none = {.items = NULL, .n = 0};
    engine_init(&e, model_compute_unet(&m), NULL, model_compute_vae(&m), &m.sched, &none, guidance, eta, B, h, w, 77);
    PromptEmbeds emb;
    UNetCond cond;
    model_condition(&m, prompts, negative, B, cfg, height, width, &emb, &cond);
    int64_t lat = (int64_t)e.C * h * w;
    Tensor xT = tensor_f32_4d(xmalloc(sizeof(float) * (size_t)(lat * B)), B, e.C, h, w);
    Tensor x0 = tensor_f32_4d(xmalloc(sizeof(float) * (size_t)(lat * B)), B, e.C, h, w);
    Tensor z = tensor_make(xmalloc(sizeof(float) * (size_t)(lat * B * steps)), DTYPE_F32, DEVICE_CPU, 5,
                           (int64_t[]){steps, B, e.C, h, w});
    int64_t *ids = xmalloc(sizeof(int64_t) * (size_t)B);
    for (int b = 0; b < B; b++) ids[b] = b;
    if (latents) {
        SafeTensors st;
        safetensors_open(&st, latents);
        safetensors_read_into(&st, "latents", &xT);
        safetensors_close(&st);
    } else {
        noise_latents(&xT, (uint64_t)seed, ids);
    }
    if (eta > 0) noise_steps(&z, (uint64_t)seed, ids);
    double t0 = dt_now();
    engine_sample(&e, &cond, &xT, eta > 0 ? &z : NULL, &x0);
    engine_score(&e, &x0, prompts);
    Tensor image = e.image; // on the host for the files
    image.device = DEVICE_CPU, image.data = xmalloc(tensor_bytes(&e.image));
    tensor_copy(&image, &e.image);
    pngio_write_grid(out, image.data, B, height, width, 0);
    printf("drtune sample: %d image%s of %dx%d, %d steps, guidance %.2f in %.1f s -> %s\n", B, B == 1 ? "" : "s",
           height, width, steps, guidance, dt_now() - t0, out);
    if (save) {
        const char *names[3] = {"latents", "x0", "image"};
        Tensor ts[3] = {xT, x0, image};
        safetensors_write(save, 3, names, ts, NULL);
        printf("  latents and images: %s\n", save);
    }
    free(image.data);
    free(xT.data);
    free(x0.data);
    free(z.data);
    free(ids);
    free(prompts);
    prompt_embeds_free(&emb);
    engine_free(&e);
    if (lora) {
        lora_free(&l);
        unet_free(&no_grads);
    }
    model_free(&m);
    return 0;
}
