// cmd_eval.c: `drtune eval`, a fixed-seed evaluation of a model (optionally with LoRA adapters) under several
// rewards, so runs and methods can be compared on the same images: sample i uses prompt i mod (number of prompts)
// and the i-th seed, with the same noise as the training run's sample grids, and every reward scores every image.
#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "core/common.h"
#include "io/prompts.h"
#include "train/setup.h"

#define EVAL_MAX_SEEDS 100000

typedef struct {
    const char *model, *prompts, *lora, *out, *negative, *device, *precision;
    char rewards[CONFIG_MAX_REWARDS][32];
    double weights[CONFIG_MAX_REWARDS], colour[3];
    int n_rewards, n_weights;
    int *seeds, n;
    int steps, height, width, threads;
    double guidance, eta;
    RewardModels models;     // the learned rewards' models (--reward-path NAME=PATH)
} EvalArgs;

typedef struct {
    double mean, std, min, max;
} Stats;

static void eval_usage(FILE *f) {
    fprintf(f,
            "usage: drtune eval --model DIR --prompts FILE --rewards NAME[,NAME...] --out results.json [options]\n"
            "\n"
            "Samples image i from prompt i mod (number of prompts) with the i-th seed (the noise of the training\n"
            "run's sample grids) and scores it with every reward. Writes per-image scores, per-reward mean / std\n"
            "(population) / min / max, the settings and the prompts as JSON, and prints a summary table.\n"
            "\n"
            "  --model DIR        diffusers model folder\n"
            "  --prompts FILE     prompt file (one prompt per line)\n"
            "  --rewards LIST     rewards to score (%s)\n"
            "  --weights LIST     weight of each reward in the total (default 1 each)\n"
            "  --colour R,G,B     target of the colour reward, in [0, 1] (default 0.9,0.1,0.1)\n"
            "  --reward-path NAME=PATH  model of a learned reward: hps, pickscore, clipscore, aesthetic (the MLP)\n"
            "                     or aesthetic_clip (its CLIP image tower); repeat for each (docs/REWARDS.md)\n"
            "  --reward-resize K  bicubic (default) or bilinear; --reward-antialias 0|1 (default 1)\n"
            "  --seeds LIST       one image per seed (default 0,1,2,3)\n"
            "  --n N              N images with seeds 0..N-1 (instead of --seeds)\n"
            "  --steps N          DDIM steps (default 20)\n"
            "  --guidance W       classifier-free guidance scale (default 5; <= 1: off)\n"
            "  --eta E            DDIM eta (default 0)\n"
            "  --height H --width W   image size (default: the UNet's sample_size x VAE factor)\n"
            "  --negative TEXT    negative prompt\n"
            "  --lora FILE        LoRA adapters written by drtune train\n"
            "  --threads N        CPU threads (default 0: all cores)\n"
            "  --device D         auto (the GPU when one is visible; default), cpu or cuda\n"
            "  --precision P      fp32 (default) or bf16 (GPU: bf16 weights and activations)\n"
            "  --out FILE         the JSON results (written atomically)\n",
            reward_known_names());
}

static void eval_parse(EvalArgs *a, int argc, char **argv) {
    memset(a, 0, sizeof *a);
    a->negative = "", a->device = "auto", a->precision = "fp32";
    a->steps = 20, a->height = -1, a->width = -1;
    a->guidance = 5.0;
    a->colour[0] = 0.9, a->colour[1] = 0.1, a->colour[2] = 0.1;
    a->models = (RewardModels){.kernel = RESIZE_BICUBIC, .antialias = 1};
    int have_seeds = 0, have_n = 0;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            eval_usage(stdout);
            exit(0);
        }
        const char *v = args_value(argc, argv, &i);
        if (!strcmp(o, "--model")) a->model = v;
        else if (!strcmp(o, "--prompts")) a->prompts = v;
        else if (!strcmp(o, "--rewards")) a->n_rewards = args_name_list(o, v, a->rewards, CONFIG_MAX_REWARDS);
        else if (!strcmp(o, "--weights"))
            a->n_weights = args_double_list(o, v, a->weights, CONFIG_MAX_REWARDS, -1e6, 1e6);
        else if (!strcmp(o, "--colour")) {
            USER_CHECK(args_double_list(o, v, a->colour, 3, 0.0, 1.0) == 3, "--colour needs three values R,G,B");
        } else if (!strcmp(o, "--reward-path")) {
            setup_reward_path(&a->models, o, v);
        } else if (!strcmp(o, "--reward-resize")) {
            USER_CHECK(!strcmp(v, "bicubic") || !strcmp(v, "bilinear"), "--reward-resize: bicubic or bilinear");
            a->models.kernel = !strcmp(v, "bicubic") ? RESIZE_BICUBIC : RESIZE_BILINEAR;
        } else if (!strcmp(o, "--reward-antialias")) {
            a->models.antialias = args_int(o, v, 0, 1);
        } else if (!strcmp(o, "--seeds")) {
            free(a->seeds);
            a->seeds = xmalloc(sizeof(int) * EVAL_MAX_SEEDS);
            a->n = args_int_list(o, v, a->seeds, EVAL_MAX_SEEDS, 0, INT_MAX);
            have_seeds = 1;
        } else if (!strcmp(o, "--n")) {
            a->n = args_int(o, v, 1, EVAL_MAX_SEEDS);
            have_n = 1;
        } else if (!strcmp(o, "--steps")) a->steps = args_int(o, v, 1, ENGINE_MAX_STEPS);
        else if (!strcmp(o, "--guidance")) a->guidance = args_double(o, v, 0.0, 100.0);
        else if (!strcmp(o, "--eta")) a->eta = args_double(o, v, 0.0, 1.0);
        else if (!strcmp(o, "--height")) a->height = args_int(o, v, 8, 8192);
        else if (!strcmp(o, "--width")) a->width = args_int(o, v, 8, 8192);
        else if (!strcmp(o, "--negative")) a->negative = v;
        else if (!strcmp(o, "--lora")) a->lora = v;
        else if (!strcmp(o, "--threads")) a->threads = args_int(o, v, 0, 4096);
        else if (!strcmp(o, "--device")) a->device = v;
        else if (!strcmp(o, "--precision")) a->precision = v;
        else if (!strcmp(o, "--out")) a->out = v;
        else dt_user_error("drtune eval: unknown option '%s' (see drtune eval --help)", o);
    }
    USER_CHECK(a->model && a->prompts && a->n_rewards && a->out,
               "drtune eval: --model, --prompts, --rewards and --out are required (see drtune eval --help)");
    USER_CHECK(!(have_seeds && have_n), "drtune eval: give --seeds or --n, not both");
    char dir[4096];
    const char *slash = strrchr(a->out, '/');
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - a->out) + 1 : 1, slash ? a->out : ".");
    USER_CHECK(access(dir, W_OK) == 0, "drtune eval: cannot write into folder '%s' (%s) for --out", dir,
               strerror(errno));
    if (!have_seeds) {
        if (!have_n) a->n = 4;
        a->seeds = xmalloc(sizeof(int) * (size_t)a->n);
        for (int i = 0; i < a->n; i++) a->seeds[i] = i;
    }
    if (!a->n_weights)
        for (int k = 0; k < a->n_rewards; k++) a->weights[k] = 1.0;
    else
        USER_CHECK(a->n_weights == a->n_rewards, "--weights has %d value(s) but --rewards names %d reward(s)",
                   a->n_weights, a->n_rewards);
}

static Stats stats_of(const double *v, int n) {
    Stats s = {0, 0, v[0], v[0]};
    for (int i = 0; i < n; i++) {
        s.mean += v[i] / n;
        s.min = v[i] < s.min ? v[i] : s.min;
        s.max = v[i] > s.max ? v[i] : s.max;
    }
    for (int i = 0; i < n; i++) s.std += (v[i] - s.mean) * (v[i] - s.mean) / n;
    s.std = sqrt(s.std);
    return s;
}

static cJSON *stats_json(const Stats *s) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "mean", s->mean);
    cJSON_AddNumberToObject(o, "std", s->std);
    cJSON_AddNumberToObject(o, "min", s->min);
    cJSON_AddNumberToObject(o, "max", s->max);
    return o;
}

// scores [K + 1][n]: reward k of image i at [k][i], the weighted total at [K][i]
static void eval_write(const EvalArgs *a, char **prompts, int n_prompts, double **scores, const Stats *st) {
    int K = a->n_rewards;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "model", a->model);
    if (a->lora) cJSON_AddStringToObject(root, "lora", a->lora);
    else cJSON_AddNullToObject(root, "lora");
    cJSON *set = cJSON_AddObjectToObject(root, "settings");
    cJSON_AddNumberToObject(set, "steps", a->steps);
    cJSON_AddNumberToObject(set, "guidance", a->guidance);
    cJSON_AddNumberToObject(set, "eta", a->eta);
    cJSON_AddNumberToObject(set, "height", a->height);
    cJSON_AddNumberToObject(set, "width", a->width);
    cJSON_AddStringToObject(set, "negative_prompt", a->negative);
    cJSON_AddItemToObject(set, "seeds", cJSON_CreateIntArray(a->seeds, a->n));
    cJSON_AddStringToObject(set, "noise", "image i: stream (seeds[i], LATENT, sample 0), as drtune train's grids");
    cJSON *rw = cJSON_AddArrayToObject(set, "rewards");
    for (int k = 0; k < K; k++) {
        cJSON *r = cJSON_CreateObject();
        cJSON_AddStringToObject(r, "name", a->rewards[k]);
        cJSON_AddNumberToObject(r, "weight", a->weights[k]);
        if (!strcmp(a->rewards[k], "colour")) cJSON_AddItemToObject(r, "target", cJSON_CreateDoubleArray(a->colour, 3));
        cJSON_AddItemToArray(rw, r);
    }
    cJSON_AddItemToObject(root, "prompts", cJSON_CreateStringArray((const char *const *)prompts, n_prompts));
    cJSON *images = cJSON_AddArrayToObject(root, "images");
    for (int i = 0; i < a->n; i++) {
        cJSON *im = cJSON_CreateObject();
        cJSON_AddNumberToObject(im, "index", i);
        cJSON_AddNumberToObject(im, "seed", a->seeds[i]);
        cJSON_AddNumberToObject(im, "prompt_index", i % n_prompts);
        cJSON_AddStringToObject(im, "prompt", prompts[i % n_prompts]);
        cJSON *sc = cJSON_AddObjectToObject(im, "scores");
        for (int k = 0; k < K; k++) cJSON_AddNumberToObject(sc, a->rewards[k], scores[k][i]);
        cJSON_AddNumberToObject(im, "total", scores[K][i]);
        cJSON_AddItemToArray(images, im);
    }
    cJSON *sum = cJSON_AddObjectToObject(root, "summary");
    for (int k = 0; k < K; k++) cJSON_AddItemToObject(sum, a->rewards[k], stats_json(&st[k]));
    cJSON_AddItemToObject(sum, "total", stats_json(&st[K]));
    char *text = cJSON_Print(root);
    CHECK(text, "", "cJSON_Print failed");
    size_t len = strlen(text);
    text[len] = '\n'; // replaces the terminator: the file ends with a newline
    dt_write_file_atomic(a->out, text, len + 1);
    cJSON_free(text);
    cJSON_Delete(root);
}

int cmd_eval(int argc, char **argv) {
    EvalArgs a;
    eval_parse(&a, argc, argv);
    setup_threads(a.threads);
    SetupRewards rewards;
    setup_rewards(&rewards, a.n_rewards, a.rewards, a.weights, a.colour, &a.models);
    Device d = setup_device(setup_device_parse(a.device, "--device"), &rewards.set, "--device");
    DType dt = setup_precision(setup_precision_parse(a.precision, "--precision"), d, "--precision", "--device");
    int n_prompts;
    char **prompts = prompts_read(a.prompts, &n_prompts);
    Model m;
    model_load(&m, a.model, a.steps);
    int f = 1 << (m.vae.cfg.levels - 1), h, w;
    if (a.height < 0) a.height = m.unet.cfg.sample_size * f;
    if (a.width < 0) a.width = m.unet.cfg.sample_size * f;
    setup_latent_size(&m, a.height, a.width, "--height and --width", &h, &w);
    Lora lora;
    UNet no_grads;
    if (a.lora) setup_lora_from_file(&lora, &no_grads, &m, a.lora);
    setup_model_to_device(&m, a.lora ? &lora : NULL, d);
    model_set_precision(&m, a.lora ? &lora : NULL, 0, dt, 0); // bf16: the compute copies
    int K = a.n_rewards;
    Engine e;
    engine_init(&e, model_compute_unet(&m), NULL, model_compute_vae(&m), &m.sched, &rewards.set, (float)a.guidance,
                (float)a.eta, 1, h, w, 77);
    double **scores = xmalloc(sizeof(double *) * (size_t)(K + 1));
    for (int k = 0; k <= K; k++) scores[k] = xmalloc(sizeof(double) * (size_t)a.n);
    printf("drtune eval: %d image%s of %dx%d from %s%s%s, %d steps, guidance %.2f, eta %.2f\n", a.n,
           a.n == 1 ? "" : "s", a.height, a.width, a.model, a.lora ? " + " : "", a.lora ? a.lora : "", a.steps,
           a.guidance, a.eta);
    fflush(stdout);
    double t0 = dt_now();
    for (int i = 0; i < a.n; i++) {
        model_sample_seeded(&m, &e, prompts[i % n_prompts], a.negative, a.height, a.width, (uint64_t)a.seeds[i]);
        for (int k = 0; k < K; k++) scores[k][i] = e.per_reward[k]; // [K, B] with B = 1
        scores[K][i] = e.reward[0];
    }
    Stats *st = xmalloc(sizeof(Stats) * (size_t)(K + 1));
    for (int k = 0; k <= K; k++) st[k] = stats_of(scores[k], a.n);
    eval_write(&a, prompts, n_prompts, scores, st);
    printf("%-14s %9s %12s %12s %12s %12s\n", "reward", "weight", "mean", "std", "min", "max");
    for (int k = 0; k <= K; k++) {
        char wt[32] = "";
        if (k < K) snprintf(wt, sizeof wt, "%g", a.weights[k]);
        printf("%-14s %9s %12.6f %12.6f %12.6f %12.6f\n", k < K ? a.rewards[k] : "total", wt, st[k].mean, st[k].std,
               st[k].min, st[k].max);
    }
    printf("%d images in %.1f s -> %s\n", a.n, dt_now() - t0, a.out);
    for (int k = 0; k <= K; k++) free(scores[k]);
    free(scores);
    free(st);
    free(a.seeds);
    engine_free(&e);
    if (a.lora) {
        lora_free(&lora);
        unet_free(&no_grads);
    }
    model_free(&m);
    prompts_free(prompts);
    return 0;
}
