// trainer.c: the training loop of `drtune train`. Each iteration takes the prompts and noise of its global sample
// indices, runs one engine iteration (docs/METHOD.md), clips the gradient by its global norm, skips the update when
// the gradient is not finite, and applies AdamW to the trainable set (LoRA adapters or the whole UNet). It writes
// the run folder: config.ini, metrics.jsonl, sample grids at fixed seeds, a reward curve and the exported weights.
#include "trainer.h"

#include <math.h>
#include <string.h>

#include "../core/common.h"
#include "../core/device.h"
#include "../io/plot.h"
#include "../io/png.h"
#include "../io/prompts.h"
#include "../models/weights.h"
#include "../ops/ops.h"
#include "lora.h"
#include "model.h"
#include "optim.h"

typedef struct {
    const Config *cfg;
    Model model;
    RewardSet rewards;
    Reward items[CONFIG_MAX_REWARDS];
    // trainable set: flat fp32 buffers of n floats (parameters, gradients, Adam moments)
    UNet grads;             // gradient slots the UNet backward accumulates into
    Arena grad_mem;         // full fine-tuning: the UNet's gradient arena
    Lora lora;              // LoRA: adapters and their gradients
    float *p, *g, *m, *v;
    int64_t n;
    Engine eng;
    int B, h, w, H, W;
    char **prompts;
    int n_prompts;
} Trainer;

static void trainer_setup(Trainer *t, const Config *c) {
    memset(t, 0, sizeof *t);
    t->cfg = c;
    if (c->train.threads > 0) ops_set_threads(c->train.threads);
    model_load(&t->model, c->model.path, c->sampler.steps);
    for (int i = 0; i < c->reward.n_names; i++) {
        float col[3] = {(float)c->reward.colour[0], (float)c->reward.colour[1], (float)c->reward.colour[2]};
        int np = !strcmp(c->reward.names[i], "colour") ? 3 : 0;
        reward_init(&t->items[i], c->reward.names[i], (float)c->reward.weights[i], col, np);
    }
    t->rewards = (RewardSet){t->items, c->reward.n_names};
    t->prompts = prompts_read(c->data.prompts, &t->n_prompts);
    int f = 1 << (t->model.vae.cfg.levels - 1);
    USER_CHECK(c->sampler.height % f == 0 && c->sampler.width % f == 0,
               "sampler.height and sampler.width must be multiples of %d for this VAE", f);
    t->H = c->sampler.height, t->W = c->sampler.width, t->h = t->H / f, t->w = t->W / f;
    t->B = c->train.batch;
    // trainable set
    Arena unet_grad_plan;
    arena_init(&unet_grad_plan, "grads", DEVICE_CPU);
    unet_plan_params(&unet_grad_plan, &t->grads, &t->model.unet.cfg); // slots without data: no base gradients
    if (c->train.trainable == TRAINABLE_FULL) {
        t->grad_mem = unet_grad_plan;
        arena_alloc(&t->grad_mem);
        t->p = t->model.unet_params.base;
        t->g = t->grad_mem.base;
        t->n = (int64_t)(t->model.unet_params.size / sizeof(float));
    } else {
        arena_free(&unet_grad_plan); // the slots keep their shapes and NULL data
        const char *targets[CONFIG_MAX_TARGETS];
        for (int i = 0; i < c->train.n_lora_targets; i++) targets[i] = c->train.lora_targets[i];
        lora_attach(&t->lora, &t->model.unet, &t->model.unet_params, &t->grads, c->train.lora_rank, (float)c->train.lora_alpha, targets,
                    c->train.n_lora_targets, (uint64_t)c->train.seed);
        t->p = t->lora.params.base;
        t->g = t->lora.grads.base;
        t->n = (int64_t)(t->lora.params.size / sizeof(float));
    }
    t->m = xcalloc((size_t)t->n, sizeof(float));
    t->v = xcalloc((size_t)t->n, sizeof(float));
    float guidance = c->method.cfg ? (float)c->sampler.guidance : 1.0f;
    engine_init(&t->eng, &t->model.unet, &t->grads, &t->model.vae, &t->model.sched, &t->rewards, guidance,
                (float)c->sampler.eta, t->B, t->h, t->w, 77);
}

static void trainer_free(Trainer *t) {
    engine_free(&t->eng);
    if (t->cfg->train.trainable == TRAINABLE_FULL) arena_free(&t->grad_mem);
    else lora_free(&t->lora);
    free(t->m);
    free(t->v);
    prompts_free(t->prompts);
    model_free(&t->model);
}

// Samples the fixed-seed grid with the sampler's guidance: seeds[i] with prompt i (cycling through the file).
static void write_samples(Trainer *t, const char *path, float *mean_reward) {
    const Config *c = t->cfg;
    int n = c->log.n_sample_seeds, cfg = c->sampler.guidance > 1.0;
    Engine e;
    engine_init(&e, &t->model.unet, NULL, &t->model.vae, &t->model.sched, &t->rewards, (float)c->sampler.guidance,
                (float)c->sampler.eta, 1, t->h, t->w, 77);
    int64_t img = (int64_t)t->model.vae.cfg.out_channels * t->H * t->W, lat = (int64_t)e.C * t->h * t->w;
    float *grid = xmalloc(sizeof(float) * (size_t)(img * n));
    Tensor xT = tensor_f32_4d(xmalloc(sizeof(float) * (size_t)lat), 1, e.C, t->h, t->w);
    Tensor x0 = tensor_f32_4d(xmalloc(sizeof(float) * (size_t)lat), 1, e.C, t->h, t->w);
    Tensor z = tensor_make(xmalloc(sizeof(float) * (size_t)(lat * c->sampler.steps)), DTYPE_F32, DEVICE_CPU, 5,
                           (int64_t[]){c->sampler.steps, 1, e.C, t->h, t->w});
    double sum = 0;
    for (int i = 0; i < n; i++) {
        const char *prompt = t->prompts[i % t->n_prompts];
        PromptEmbeds emb;
        UNetCond cond;
        model_condition(&t->model, &prompt, c->sampler.negative_prompt, 1, cfg, t->H, t->W, &emb, &cond);
        int64_t id = 0;
        noise_latents(&xT, (uint64_t)c->log.sample_seeds[i], &id);
        if (c->sampler.eta > 0) noise_steps(&z, (uint64_t)c->log.sample_seeds[i], &id);
        engine_sample(&e, &cond, &xT, c->sampler.eta > 0 ? &z : NULL, &x0);
        engine_score(&e, &x0, &prompt);
        sum += e.reward[0];
        memcpy(grid + i * img, e.image.data, sizeof(float) * (size_t)img);
        prompt_embeds_free(&emb);
    }
    pngio_write_grid(path, grid, n, t->H, t->W, 0);
    if (mean_reward) *mean_reward = (float)(sum / n);
    free(grid);
    free(xT.data);
    free(x0.data);
    free(z.data);
    engine_free(&e);
}

static void write_reward_curve(const char *metrics_path, const char *png_path) {
    MetricsLog log = metrics_read(metrics_path);
    if (log.n == 0) {
        metrics_free(&log);
        return;
    }
    double *x = xmalloc(sizeof(double) * (size_t)log.n), *y = xmalloc(sizeof(double) * (size_t)log.n);
    metrics_column(&log, "iteration", x);
    metrics_column(&log, "reward_mean", y);
    PlotSeries s = {"reward (batch mean)", x, y, log.n};
    PlotOptions o = {"reward during training", "iteration", "reward", 0, 0};
    plot_write_png(png_path, &o, &s, 1);
    free(x);
    free(y);
    metrics_free(&log);
}

static void export_weights(Trainer *t, const char *dir) {
    const Config *c = t->cfg;
    char path[2048];
    dt_mkdirs(dir);
    if (c->train.trainable == TRAINABLE_LORA && (c->output.export_mode == EXPORT_LORA || c->output.export_mode == EXPORT_BOTH)) {
        dt_path(path, sizeof path, "%s/pytorch_lora_weights.safetensors", dir);
        lora_save(&t->lora, path);
        printf("  LoRA adapters:  %s\n", path);
    }
    if (c->output.export_mode == EXPORT_MERGED || c->output.export_mode == EXPORT_BOTH ||
        c->train.trainable == TRAINABLE_FULL) {
        if (c->output.export_mode == EXPORT_NONE) return;
        dt_path(path, sizeof path, "%s/unet", dir);
        dt_mkdirs(path);
        if (c->train.trainable == TRAINABLE_LORA) lora_merge(&t->lora); // W += scale B A, in place (end of run)
        dt_path(path, sizeof path, "%s/unet/diffusion_pytorch_model.safetensors", dir);
        weights_save(&t->model.unet_params, path);
        char src[2048], dst[2048];
        dt_path(src, sizeof src, "%s/unet/config.json", c->model.path);
        dt_path(dst, sizeof dst, "%s/unet/config.json", dir);
        size_t len;
        char *text = dt_read_file(src, &len);
        dt_write_file_atomic(dst, text, len);
        free(text);
        printf("  merged UNet:    %s/unet\n", dir);
    }
}

int trainer_run(const Config *c) {
    Trainer t;
    trainer_setup(&t, c);
    char path[2048], samples[2048];
    dt_mkdirs(c->output.dir);
    dt_path(samples, sizeof samples, "%s/samples", c->output.dir);
    dt_mkdirs(samples);
    char *ini;
    size_t ini_len = config_to_ini(c, &ini);
    dt_path(path, sizeof path, "%s/config.ini", c->output.dir);
    dt_write_file_atomic(path, ini, ini_len);
    free(ini);

    printf("drtune train: %s on %s, %d iterations of %d images, %d steps, %s\n", method_name(c->method.name),
           c->model.path, c->train.iterations, t.B, c->sampler.steps,
           c->train.trainable == TRAINABLE_LORA ? "LoRA" : "full fine-tuning");
    printf("memory plan:\n");
    arena_print(&t.model.unet_params);
    arena_print(&t.model.vae_params);
    if (c->train.trainable == TRAINABLE_FULL) arena_print(&t.grad_mem);
    else arena_print(&t.lora.params), arena_print(&t.lora.grads);
    char nb[32];
    printf("  %-12s %6d tensors %12lld elements %12s (cpu)\n", "optimizer", 2, (long long)(2 * t.n),
           dt_format_bytes(nb, sizeof nb, 8.0 * (double)t.n));
    arena_print(&t.eng.unet_mem);
    arena_print(&t.eng.vae_mem);
    arena_print(&t.eng.mem);

    float before, after;
    dt_path(path, sizeof path, "%s/before.png", samples);
    write_samples(&t, path, &before);
    printf("samples before training: %s (mean reward %.5f)\n", path, before);

    AdamWConfig oc = {.lr = (float)c->train.lr, .beta1 = (float)c->train.beta1, .beta2 = (float)c->train.beta2,
                      .eps = (float)c->train.adam_eps, .weight_decay = (float)c->train.weight_decay,
                      .warmup = c->train.warmup, .cosine = c->train.schedule == SCHEDULE_COSINE,
                      .min_lr_ratio = (float)c->train.min_lr_ratio, .total = c->train.iterations,
                      .grad_clip = (float)c->train.grad_clip};
    MetricsWriter mw;
    char metrics_path[2048];
    dt_path(metrics_path, sizeof metrics_path, "%s/metrics.jsonl", c->output.dir);
    metrics_open(&mw, metrics_path, -1);
    Progress prog;
    progress_init(&prog, stderr, c->train.iterations, 0, c->log.progress, c->log.every);

    int B = t.B, N = c->sampler.steps, C = t.eng.C;
    int64_t lat = (int64_t)C * t.h * t.w;
    Tensor xT = tensor_f32_4d(xmalloc(sizeof(float) * (size_t)(lat * B)), B, C, t.h, t.w);
    Tensor z = tensor_make(xmalloc(sizeof(float) * (size_t)(lat * B * N)), DTYPE_F32, DEVICE_CPU, 5,
                           (int64_t[]){N, B, C, t.h, t.w});
    int copies = c->method.lv_copies > 0 ? c->method.lv_copies : 1;
    Tensor lv = tensor_make(xmalloc(sizeof(float) * (size_t)(lat * B * copies)), DTYPE_F32, DEVICE_CPU, 5,
                            (int64_t[]){copies, B, C, t.h, t.w});
    int64_t *ids = xmalloc(sizeof(int64_t) * (size_t)B);
    const char **batch_prompts = xmalloc(sizeof(char *) * (size_t)B);
    MethodConfig mc = {.method = c->method.name, .K = c->method.k, .m = c->method.m, .lv_copies = c->method.lv_copies,
                       .phase = c->method.phase, .t_min = c->method.t_min, .k = c->method.k_fixed,
                       .draw_in_executed = c->method.draw_in_executed};
    int applied = 0, skipped = 0;
    for (int it = 0; it < c->train.iterations; it++) {
        double t0 = dt_now();
        for (int b = 0; b < B; b++) {
            ids[b] = (int64_t)it * B + b;
            batch_prompts[b] = t.prompts[ids[b] % t.n_prompts];
        }
        noise_latents(&xT, (uint64_t)c->train.seed, ids);
        if (c->sampler.eta > 0) noise_steps(&z, (uint64_t)c->train.seed, ids);
        if (mc.method == METHOD_DRAFT_LV) noise_copies(&lv, (uint64_t)c->train.seed, ids, it);
        IterPlan plan;
        iter_plan_draw(&plan, &mc, N, (uint64_t)c->train.seed, (uint64_t)it);
        PromptEmbeds emb;
        UNetCond cond;
        model_condition(&t.model, batch_prompts, c->sampler.negative_prompt, B, c->method.cfg, t.H, t.W, &emb, &cond);
        memset(t.g, 0, sizeof(float) * (size_t)t.n);
        IterResult res;
        engine_iteration(&t.eng, &plan, &cond, batch_prompts, &xT, c->sampler.eta > 0 ? &z : NULL,
                         mc.method == METHOD_DRAFT_LV ? &lv : NULL, &res);
        prompt_embeds_free(&emb);
        double tu = dt_now();
        double norm = sqrt(grad_sumsq(t.g, t.n));
        float lr = adamw_lr(&oc, it);
        int skip = !isfinite(norm);
        if (skip) {
            skipped++;
            fprintf(stderr, "drtune: warning: iteration %d: gradient not finite, update skipped\n", it + 1);
        } else {
            applied++;
            adamw_update(&oc, lr, applied, grad_clip_coef(&oc, norm), t.p, t.g, t.m, t.v, t.n);
        }
        MetricsRow row = {.iteration = it + 1, .loss = res.loss, .grad_norm = norm, .lr = lr, .skipped = skip,
                          .t_rollout = res.sec_rollout, .t_decode = res.sec_decode, .t_reward = res.sec_reward,
                          .t_backward = res.sec_backward, .t_update = dt_now() - tu,
                          .peak_rss_bytes = (double)dt_peak_rss()};
        double mean = 0, var = 0;
        for (int b = 0; b < B; b++) mean += res.reward[b] / B;
        for (int b = 0; b < B; b++) var += (res.reward[b] - mean) * (res.reward[b] - mean) / B;
        row.reward_mean = mean, row.reward_std = sqrt(var);
        row.n_rewards = 0; // per-reward means are logged for multi-reward runs
        metrics_write(&mw, &row);
        progress_update(&prog, it + 1, mean);
        if (c->log.sample_every > 0 && (it + 1) % c->log.sample_every == 0 && it + 1 < c->train.iterations) {
            dt_path(path, sizeof path, "%s/iter_%06d.png", samples, it + 1);
            write_samples(&t, path, NULL);
        }
        (void)t0;
    }
    progress_finish(&prog);
    metrics_close(&mw);
    dt_path(path, sizeof path, "%s/after.png", samples);
    write_samples(&t, path, &after);
    char curve[2048];
    dt_path(curve, sizeof curve, "%s/reward_curve.png", c->output.dir);
    write_reward_curve(metrics_path, curve);
    printf("done: %d updates, %d skipped; sample mean reward %.5f -> %.5f\n", applied, skipped, before, after);
    printf("outputs in %s:\n  metrics:        %s\n  samples:        %s/before.png, %s/after.png\n"
           "  reward curve:   %s\n",
           c->output.dir, metrics_path, samples, samples, curve);
    dt_path(path, sizeof path, "%s/export", c->output.dir);
    export_weights(&t, path);
    free(xT.data);
    free(z.data);
    free(lv.data);
    free(ids);
    free(batch_prompts);
    trainer_free(&t);
    return 0;
}
