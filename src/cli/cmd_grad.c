// cmd_grad.c: `drtune grad`, the parameter gradient of one training iteration, written to safetensors without any
// update, so drtune can be compared tensor by tensor with another implementation fed the same noise: the initial
// latents, DDIM noise and DRaFT-LV noise come from a file when it has them, otherwise from the seed as in training.
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "core/common.h"
#include "core/device.h"
#include "io/prompts.h"
#include "io/safetensors.h"
#include "train/setup.h"

static void grad_usage(FILE *f) {
    fprintf(f,
            "usage: drtune grad --config FILE.ini [--section.key=value ...] --out grad.safetensors\n"
            "                   [--noise noise.safetensors] [--iteration I]\n"
            "\n"
            "Runs iteration I (default 0) of the configured training, from the initial weights, and writes the\n"
            "gradient of its loss with respect to the trainable set without updating anything. The batch is the\n"
            "global batch of the configuration (samples I*B .. I*B+B-1 and their prompts, as drtune train).\n"
            "\n"
            "  --noise FILE   tensors replacing the noise drawn from train.seed (each optional):\n"
            "                   x_T [B, C, h, w]       initial latents\n"
            "                   z   [N, B, C, h, w]    DDIM noise of step t at index N - t (used when eta > 0)\n"
            "                   lv  [n, B, C, h, w]    DRaFT-LV re-noising noise of copy j at index j\n"
            "  --out FILE     written: grad.<name> for every trainable tensor (UNet parameter names, or\n"
            "                 <module>.lora_A.weight / lora_B.weight for LoRA), lora_init.<name> (the LoRA values\n"
            "                 the gradient is taken at; scale alpha / r in the metadata), x_T, loss [1],\n"
            "                 reward [B] (weighted total) and reward.<name> [B] (each reward, unweighted);\n"
            "                 the iteration's choices and settings in the metadata\n"
            "\n"
            "The method's random choices are method.phase / t_min / k_fixed when set, otherwise drawn for I.\n"
            "loss = -(1 / B) sum_b sum_k w_k r_k(image_b); every grad.* is d loss / d tensor.\n");
}

typedef struct {
    Tensor t;
    const char *name;
    int from_file;
} NoiseInput;

// Reads the tensors the noise file provides into the inputs this run uses (shape-checked); unknown names are user
// errors.
static void noise_read(const char *path, NoiseInput *in, const int *used, int n) {
    SafeTensors st;
    safetensors_open(&st, path);
    for (int i = 0; i < st.n; i++) {
        int known = 0;
        for (int k = 0; k < n; k++) known |= !strcmp(st.tensors[i].name, in[k].name);
        USER_CHECK(known, "'%s': unexpected tensor '%s' (a noise file holds x_T, z and lv)", path, st.tensors[i].name);
    }
    for (int k = 0; k < n; k++) {
        if (!used[k] || !safetensors_find(&st, in[k].name)) continue;
        safetensors_read_into(&st, in[k].name, &in[k].t);
        in[k].from_file = 1;
    }
    safetensors_close(&st);
}

static void meta_int(cJSON *o, const char *key, long long v) {
    char b[32];
    snprintf(b, sizeof b, "%lld", v);
    cJSON_AddStringToObject(o, key, b);
}

static void meta_num(cJSON *o, const char *key, double v) {
    char b[40];
    snprintf(b, sizeof b, "%.17g", v);
    cJSON_AddStringToObject(o, key, b);
}

int cmd_grad(int argc, char **argv) {
    const char *config = NULL, *noise = NULL, *out = NULL;
    int it = 0;
    char **overrides = xmalloc(sizeof(char *) * (size_t)(argc + 1));
    int n_over = 0;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            grad_usage(stdout);
            free(overrides);
            return 0;
        }
        if (!strcmp(o, "--config")) config = args_value(argc, argv, &i);
        else if (!strcmp(o, "--noise")) noise = args_value(argc, argv, &i);
        else if (!strcmp(o, "--out")) out = args_value(argc, argv, &i);
        else if (!strcmp(o, "--iteration")) it = args_int(o, args_value(argc, argv, &i), 0, 1 << 30);
        else if (!strncmp(o, "--", 2) && strchr(o, '.') && strchr(o, '=')) overrides[n_over++] = argv[i];
        else dt_user_error("drtune grad: unexpected argument '%s' (see drtune grad --help)", o);
    }
    USER_CHECK(config && out, "drtune grad: --config and --out are required (see drtune grad --help)");
    Config c;
    config_load(&c, config, n_over, overrides);
    free(overrides);
    setup_threads(c.train.threads);

    SetupRewards rewards;
    RewardModels models = setup_reward_models(&c);
    double rw_weights[CONFIG_MAX_REWARDS];
    config_reward_weights(&c, rw_weights);
    setup_rewards(&rewards, c.reward.n_names, c.reward.names, rw_weights, c.reward.colour, &models);
    Device d = setup_device(c.train.device, &rewards.set, "train.device");
    DType precision = setup_precision(c.train.precision, d, "train.precision", "train.device");
    int channels_last = setup_channels_last(c.train.channels_last, d, "train.channels_last", "train.device");
    Model m;
    model_load(&m, c.model.path, c.sampler.steps);
    int n_prompts, h, w, H = c.sampler.height, W = c.sampler.width, B = c.train.batch, N = c.sampler.steps;
    char **prompts = prompts_read(c.data.prompts, &n_prompts);
    setup_latent_size(&m, H, W, "sampler.height and sampler.width", &h, &w);
    TrainSet ts;
    setup_trainable(&ts, &m, &c, 0);
    if (d != DEVICE_CPU) { // the iteration on the GPU; the gradients come back to the host to be written
        setup_model_to_device(&m, ts.kind == TRAINABLE_LORA ? &ts.lora : NULL, d);
        if (ts.kind == TRAINABLE_FULL) arena_to_device(&ts.grad_mem, d);
        ts.p = ts.params->base, ts.g = ts.grads->base;
        model_set_precision(&m, ts.kind == TRAINABLE_LORA ? &ts.lora : NULL, ts.kind == TRAINABLE_FULL, precision,
                            channels_last);
    }
    float guidance = c.method.cfg ? (float)c.sampler.guidance : 1.0f;
    Engine e;
    engine_set_recompute(&(UNetRecompute){c.train.recompute, c.train.activation_budget_gb * (1 << 30)});
    engine_init(&e, model_compute_unet(&m), &ts.slots, model_compute_vae(&m), &m.sched, &rewards.set, guidance, (float)c.sampler.eta, B, h, w, 77);
    engine_set_graphs(&e, c.train.cuda_graphs);

    MethodConfig mc = setup_method(&c);
    IterPlan plan;
    iter_plan_draw(&plan, &mc, N, (uint64_t)c.train.seed, (uint64_t)it);
    int64_t *ids = xmalloc(sizeof(int64_t) * (size_t)B);
    const char **batch = xmalloc(sizeof(char *) * (size_t)B);
    for (int b = 0; b < B; b++) {
        ids[b] = (int64_t)it * B + b;
        batch[b] = prompts[ids[b] % n_prompts];
    }
    int copies = plan.lv_copies > 0 ? plan.lv_copies : 1, C = e.C;
    int64_t lat = (int64_t)B * C * h * w;
    NoiseInput in[3] = {
        {tensor_f32_4d(xmalloc(sizeof(float) * (size_t)lat), B, C, h, w), "x_T", 0},
        {tensor_make(xmalloc(sizeof(float) * (size_t)(lat * N)), DTYPE_F32, DEVICE_CPU, 5,
                     (int64_t[]){N, B, C, h, w}), "z", 0},
        {tensor_make(xmalloc(sizeof(float) * (size_t)(lat * copies)), DTYPE_F32, DEVICE_CPU, 5,
                     (int64_t[]){copies, B, C, h, w}), "lv", 0},
    };
    int used[3] = {1, c.sampler.eta > 0, plan.lv_copies > 0};
    if (noise) noise_read(noise, in, used, 3);
    uint64_t seed = (uint64_t)c.train.seed;
    if (!in[0].from_file) noise_latents(&in[0].t, seed, ids);
    if (used[1] && !in[1].from_file) noise_steps(&in[1].t, seed, ids);
    if (used[2] && !in[2].from_file) noise_copies(&in[2].t, seed, ids, it);

    PromptEmbeds emb;
    UNetCond cond;
    model_condition(&m, batch, c.sampler.negative_prompt, B, c.method.cfg, H, W, &emb, &cond);
    device_zero(d, ts.g, sizeof(float) * (size_t)ts.n);
    IterResult res;
    engine_iteration(&e, &plan, &cond, batch, &in[0].t, used[1] ? &in[1].t : NULL, used[2] ? &in[2].t : NULL, &res);
    prompt_embeds_free(&emb);
    if (d != DEVICE_CPU) {
        arena_to_device((Arena *)ts.grads, DEVICE_CPU);
        if (ts.params != &m.unet_params) arena_to_device((Arena *)ts.params, DEVICE_CPU);
        ts.p = ts.params->base, ts.g = ts.grads->base;
    }
    double sumsq = 0;
    for (int64_t i = 0; i < ts.n; i++) sumsq += (double)ts.g[i] * ts.g[i];

    // tensors: grad.*, lora_init.* (LoRA), x_T, loss, reward, reward.<name>
    int lora = ts.kind == TRAINABLE_LORA, ng = ts.grads->n, nr = rewards.set.n, nt = ng * (1 + lora) + 3 + nr;
    const char **names = xmalloc(sizeof(char *) * (size_t)nt);
    Tensor *tensors = xmalloc(sizeof(Tensor) * (size_t)nt);
    int k = 0;
    for (int i = 0; i < ng; i++) {
        const ArenaEntry *en = &ts.grads->entries[i];
        char *name = xmalloc(strlen(en->name) + 16);
        sprintf(name, "grad.%s", en->name);
        names[k] = name;
        tensors[k++] = en->desc;
    }
    for (int i = 0; lora && i < ts.params->n; i++) {
        const ArenaEntry *en = &ts.params->entries[i];
        char *name = xmalloc(strlen(en->name) + 16);
        sprintf(name, "lora_init.%s", en->name);
        names[k] = name;
        tensors[k++] = en->desc;
    }
    float loss = (float)res.loss;
    names[k] = xstrdup("x_T"), tensors[k++] = in[0].t;
    names[k] = xstrdup("loss"), tensors[k++] = tensor_f32_1d(&loss, 1);
    names[k] = xstrdup("reward"), tensors[k++] = tensor_f32_1d(res.reward, B);
    for (int r = 0; r < nr; r++) {
        char *name = xmalloc(strlen(rewards.items[r].name) + 16);
        sprintf(name, "reward.%s", rewards.items[r].name);
        names[k] = name;
        tensors[k++] = tensor_f32_1d(res.per_reward + (int64_t)r * B, B);
    }

    char trained[8 * ENGINE_MAX_STEPS] = "";
    size_t tl = 0;
    for (int t = 1; t <= N; t++)
        if (plan.trained[t] && t >= plan.t_min) // steps below the early stop are not run
            tl += (size_t)snprintf(trained + tl, sizeof trained - tl, "%s%d", tl ? "," : "", t);
    cJSON *meta = cJSON_CreateObject();
    cJSON_AddStringToObject(meta, "format", "pt");
    cJSON_AddStringToObject(meta, "method", method_name(c.method.name));
    cJSON_AddStringToObject(meta, "convention", "loss = -(1/B) sum_b sum_k w_k r_k(image_b); grad.X = d loss / d X");
    meta_num(meta, "loss", res.loss);
    meta_int(meta, "iteration", it);
    meta_int(meta, "seed", c.train.seed);
    meta_int(meta, "steps", N);
    meta_int(meta, "batch", B);
    meta_int(meta, "height", H);
    meta_int(meta, "width", W);
    meta_num(meta, "guidance", guidance);
    meta_num(meta, "eta", c.sampler.eta);
    cJSON_AddStringToObject(meta, "negative_prompt", c.sampler.negative_prompt);
    meta_int(meta, "t_min", plan.t_min);
    meta_int(meta, "phase", plan.phase);
    meta_int(meta, "k", plan.k);
    meta_int(meta, "lv_copies", plan.lv_copies);
    cJSON_AddStringToObject(meta, "trained_steps", trained);
    cJSON_AddStringToObject(meta, "trainable", lora ? "lora" : "full");
    if (lora) {
        meta_int(meta, "lora_rank", ts.lora.rank);
        meta_num(meta, "lora_alpha", ts.lora.alpha);
        meta_num(meta, "lora_scale", ts.lora.scale);
    }
    const char *source[3];
    for (int i = 0; i < 3; i++) {
        source[i] = !used[i] ? "unused" : in[i].from_file ? "file" : "seed";
        char key[32];
        snprintf(key, sizeof key, "noise.%s", in[i].name);
        cJSON_AddStringToObject(meta, key, source[i]);
    }
    cJSON *plist = cJSON_CreateStringArray(batch, B);
    char *ptext = cJSON_PrintUnformatted(plist);
    cJSON_AddStringToObject(meta, "prompts", ptext);
    cJSON_free(ptext);
    cJSON_Delete(plist);
    char *meta_text = cJSON_PrintUnformatted(meta);
    safetensors_write(out, nt, names, tensors, meta_text);
    cJSON_free(meta_text);
    cJSON_Delete(meta);

    char readout[64];
    if (plan.lv_copies) snprintf(readout, sizeof readout, "x_0 of %d re-noised copies", plan.lv_copies);
    else if (plan.t_min) snprintf(readout, sizeof readout, "x0_hat at step %d", plan.t_min);
    else snprintf(readout, sizeof readout, "the final x_0");
    printf("drtune grad: %s, iteration %d, %d images, %d steps; trained steps {%s}, read-out %s\n",
           method_name(c.method.name), it, B, N, trained, readout);
    printf("  noise: x_T %s, z %s, lv %s\n", source[0], source[1], source[2]);
    printf("  loss %.9g, |grad| %.9g over %d %s tensors -> %s\n", res.loss, sqrt(sumsq), ng, lora ? "LoRA" : "UNet",
           out);
    for (int i = 0; i < nt; i++) free((char *)names[i]);
    free(names);
    free(tensors);
    for (int i = 0; i < 3; i++) free(in[i].t.data);
    free(ids);
    free(batch);
    engine_free(&e);
    setup_trainable_free(&ts);
    prompts_free(prompts);
    model_free(&m);
    return 0;
}
