// trainer.c: the training loop of `drtune train`, run by every rank of a job (docs/DISTRIBUTED.md). Rank r of R
// takes the slice [r B / R, (r + 1) B / R) of each iteration's global batch, with prompts and noise keyed by global
// sample index, runs one engine iteration (docs/METHOD.md) with the loss scaled by 1 / B, and the ranks sum their
// gradients: an all-reduce for LoRA (every rank holds the adapters and their Adam moments), a reduce-scatter for
// full fine-tuning (each rank updates its shard of the fp32 weights and moments, then the weights are all-gathered),
// both started in buckets during the iteration's last UNet backward (grad_sync.h).
// Clipping and the non-finite guard use the global norm. Rank 0 writes the run folder (config.ini, metrics.jsonl,
// sample grids, reward curve, exported weights); all ranks write the HDF5 checkpoints together, resume from them,
// and stop cleanly on SIGTERM / SIGUSR1 after a checkpoint.
#include "trainer.h"

#include <math.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "../core/common.h"
#include "../core/device.h"
#include "../dist/checkpoint.h"
#include "../dist/dist.h"
#include "../dist/signals.h"
#include "../io/plot.h"
#include "../io/png.h"
#include "../io/prompts.h"
#include "../models/weights.h"
#include "../ops/ops.h"
#include "../rewards/clip_reward.h"
#include "grad_sync.h"
#include "lora.h"
#include "model.h"
#include "optim.h"
#include "setup.h"

typedef struct {
    const Config *cfg;
    Model model;
    SetupRewards rw;
    Device device;          // where the iteration runs (train.device): weights, gradients, moments and activations
    TrainSet ts;            // the trainable set: flat fp32 parameters p and gradients g (setup.h)
    float *m, *v;           // Adam moments: this rank's shard (full fine-tuning) or all of them (LoRA)
    int64_t moments;        // floats in m and v
    float *hp, *hm, *hv;    // GPU: host copies of p, m and v for checkpoints (on the CPU: p, m and v themselves)
    double *dsumsq;         // GPU: the gradient's sum of squares (a device double)
    DistShard shard;        // this rank's range of the flat buffers (sharded state; checkpoint writes)
    float *gshard;          // sharded on several ranks: this rank's shard of the summed gradient [shard.shard]
    GradSync sync;          // the reduction, started during the last backward (grad_sync.h)
    DistRequest gather;     // GPU, sharded on several ranks: the all-gather of the updated shards, in flight until
    int gathering;          // the next use of the weights (trainer_weights_ready)
    Engine eng;
    Engine sample_eng;      // one image at a time for the fixed-seed sample grids (planned with the rest)
    int B, Bl, b0;          // global batch; this rank's slice [b0, b0 + Bl)
    int h, w, H, W;
    char **prompts;
    int n_prompts;
} Trainer;

// Full fine-tuning shards the fp32 weights' update and the moments; LoRA replicates them.
static int sharded(const Trainer *t) { return t->ts.kind == TRAINABLE_FULL; }
// The adapters under LoRA (their compute copies are what an update refreshes), NULL under full fine-tuning.
static Lora *lora_of(Trainer *t) { return t->ts.kind == TRAINABLE_LORA ? &t->ts.lora : NULL; }

// Before anything reads the weights on the GPU: the compute stream waits for the all-gather in flight (the host
// does not), then refreshes the compute copies (bf16) from the gathered weights.
static void trainer_weights_ready(Trainer *t) {
    if (!t->gathering) return;
    t->gathering = 0;
    dist_device_wait(&t->gather, 0);
    dist_device_release(&t->gather);
    model_sync_compute(&t->model, lora_of(t));
}

static void trainer_setup(Trainer *t, const Config *c) {
    memset(t, 0, sizeof *t);
    t->cfg = c;
    int R = dist_size(), r = dist_rank();
    USER_CHECK(c->train.batch % R == 0,
               "train.batch = %d is not divisible by the %d ranks of this job (each rank takes an equal slice of "
               "the global batch)",
               c->train.batch, R);
    setup_threads(c->train.threads);
    RewardModels models = setup_reward_models(c);
    double rw_weights[CONFIG_MAX_REWARDS];
    config_reward_weights(c, rw_weights);
    setup_rewards(&t->rw, c->reward.n_names, c->reward.names, rw_weights, c->reward.colour, &models);
    Device d = t->device = setup_device(c->train.device, &t->rw.set, "train.device");
    DType precision = setup_precision(c->train.precision, d, "train.precision", "train.device");
    if (d == DEVICE_CUDA) {
        conv2d_set_deterministic(c->train.deterministic);
        attention_set_deterministic(c->train.deterministic);
        attention_set_cudnn(c->train.cudnn_attention);
    }
    int channels_last = setup_channels_last(c->train.channels_last, d, "train.channels_last", "train.device");
    model_load(&t->model, c->model.path, c->sampler.steps);
    t->prompts = prompts_read(c->data.prompts, &t->n_prompts);
    t->H = c->sampler.height, t->W = c->sampler.width;
    setup_latent_size(&t->model, t->H, t->W, "sampler.height and sampler.width", &t->h, &t->w);
    t->B = c->train.batch, t->Bl = t->B / R, t->b0 = r * t->Bl;
    setup_trainable(&t->ts, &t->model, c, R);
    dist_shard_init(&t->shard, t->ts.n, R, r);
    int64_t moments = t->moments = sharded(t) ? dist_shard_count(&t->shard) : t->ts.n;
    size_t mbytes = sizeof(float) * (size_t)(moments > 0 ? moments : 1);
    if (d != DEVICE_CPU) { // loaded and initialised on the host, then moved in one copy per arena
        model_to_device(&t->model, d);
        arena_to_device((Arena *)t->ts.grads, d);
        if (t->ts.params != &t->model.unet_params) arena_to_device((Arena *)t->ts.params, d);
        t->ts.p = t->ts.params->base, t->ts.g = t->ts.grads->base;
        t->hp = xmalloc(sizeof(float) * (size_t)(t->ts.n > 0 ? t->ts.n : 1));
        t->hm = xcalloc(1, mbytes), t->hv = xcalloc(1, mbytes);
        t->dsumsq = device_alloc(d, sizeof(double));
        ops_workspace_reserve(d, grad_sumsq_device_workspace_bytes(moments));
        model_set_precision(&t->model, lora_of(t), sharded(t), precision, channels_last); // the compute copies
    }
    t->m = device_alloc(d, mbytes), t->v = device_alloc(d, mbytes); // zero-filled
    if (d == DEVICE_CPU) t->hp = t->ts.p, t->hm = t->m, t->hv = t->v;
    float guidance = c->method.cfg ? (float)c->sampler.guidance : 1.0f;
    engine_set_recompute(&(UNetRecompute){c->train.recompute, c->train.activation_budget_gb * (1 << 30)});
    engine_init(&t->eng, model_compute_unet(&t->model), &t->ts.slots, model_compute_vae(&t->model), &t->model.sched,
                &t->rw.set, guidance,
                (float)c->sampler.eta, t->Bl, t->h, t->w, 77);
    t->eng.loss_scale = 1.0f / (float)t->B; // the reduced gradient is the one of the global batch
    engine_set_graphs(&t->eng, c->train.cuda_graphs);
    // one rank: the shard is the whole buffer, so the gradient stays where the backward left it
    int scatter = sharded(t) && R > 1;
    if (scatter && d == DEVICE_CPU) t->gshard = xaligned_alloc(sizeof(float) * (size_t)t->shard.shard);
    grad_sync_init(&t->sync, t->ts.grads, &t->model.unet.cfg, t->ts.n, sharded(t) ? t->shard.padded : t->ts.n,
                   scatter ? &t->shard : NULL, t->gshard, c->train.reduce_bucket_mb);
    if (R > 1) t->eng.ready = grad_sync_ready, t->eng.ready_ctx = &t->sync;
    if (c->log.n_sample_seeds > 0)
        engine_init(&t->sample_eng, model_compute_unet(&t->model), NULL, model_compute_vae(&t->model),
                    &t->model.sched, &t->rw.set,
                    (float)c->sampler.guidance, (float)c->sampler.eta, 1, t->h, t->w, 77);
    if (c->log.n_sample_seeds > 0) engine_set_graphs(&t->sample_eng, c->train.cuda_graphs);
    // the memory plan is the whole GPU footprint: nothing may allocate device memory from here on
    if (d != DEVICE_CPU) device_freeze_allocations(1);
}

static void trainer_free(Trainer *t) {
    trainer_weights_ready(t);
    engine_free(&t->eng);
    if (t->cfg->log.n_sample_seeds > 0) engine_free(&t->sample_eng);
    grad_sync_free(&t->sync);
    free(t->gshard);
    setup_trainable_free(&t->ts);
    device_free(t->device, t->m);
    device_free(t->device, t->v);
    if (t->device != DEVICE_CPU) {
        free(t->hp), free(t->hm), free(t->hv);
        device_free(t->device, t->dsumsq);
    }
    prompts_free(t->prompts);
    model_free(&t->model);
}

// The checkpointed tensors: saving stores this rank's shard range of every buffer; loading fills the parameters'
// shard range (all-gathered afterwards) and the moments this rank keeps (its shard, or everything for LoRA).
static CkptTensors trainer_tensors(Trainer *t, int loading) {
    int64_t lo = dist_shard_lo(&t->shard), hi = lo + dist_shard_count(&t->shard), n = t->ts.n;
    int whole = !sharded(t) && loading; // LoRA: every rank loads all of it
    CkptTensors k = {.layout = t->ts.params, .trainable = sharded(t) ? "full" : "lora", .n_buf = 3};
    k.buf[0] = (CkptBuffer){"params", t->hp, 0, whole ? 0 : lo, whole ? n : hi};
    k.buf[1] = (CkptBuffer){"adam_m", t->hm, sharded(t) ? lo : 0, whole ? 0 : lo, whole ? n : hi};
    k.buf[2] = (CkptBuffer){"adam_v", t->hv, sharded(t) ? lo : 0, whole ? 0 : lo, whole ? n : hi};
    return k;
}

// GPU: the checkpointed buffers between the device and their host copies (to_host: for a save; else after a load).
static void trainer_sync_host(Trainer *t, int to_host) {
    if (t->device == DEVICE_CPU) return;
    trainer_weights_ready(t);
    size_t pb = sizeof(float) * (size_t)t->ts.n, mb = sizeof(float) * (size_t)t->moments;
    if (to_host) {
        device_copy(t->hp, DEVICE_CPU, t->ts.p, t->device, pb);
        device_copy(t->hm, DEVICE_CPU, t->m, t->device, mb);
        device_copy(t->hv, DEVICE_CPU, t->v, t->device, mb);
    } else {
        device_copy(t->ts.p, t->device, t->hp, DEVICE_CPU, pb);
        device_copy(t->m, t->device, t->hm, DEVICE_CPU, mb);
        device_copy(t->v, t->device, t->hv, DEVICE_CPU, mb);
    }
}

// Shares the weights after this rank's part was updated (or loaded): the sharded weights are all-gathered, and the
// compute copies (bf16 on the GPU) refreshed. On the GPU with several ranks the all-gather is only started, in place
// on the communication stream: this iteration's metrics and the next one's host work (the prompts' text encoding on
// the CPU, noise, the plan) run meanwhile, and the compute stream waits for it at the first use of the weights.
static void trainer_share(Trainer *t) {
    if (sharded(t) && t->device == DEVICE_CPU) dist_allgather_f32(t->ts.p, &t->shard);
    if (sharded(t) && t->device != DEVICE_CPU && dist_size() > 1) {
        dist_device_allgather_start(t->ts.p, &t->shard, &t->gather);
        t->gathering = 1;
        // tests only: the blocking form (waited for at once), which the overlapped one must match bit for bit
        if (getenv("DRTUNE_TEST_BLOCKING_GATHER")) trainer_weights_ready(t);
        return;
    }
    model_sync_compute(&t->model, lora_of(t));
}

// Completes the sum of the ranks' gradients (started during the backward) and applies AdamW to this rank's part
// (then shares the updated weights when they are sharded). Returns the global gradient norm; a non-finite norm
// skips the update on every rank.
static double trainer_update(Trainer *t, const AdamWConfig *oc, float lr, int *applied, int *skipped) {
    float *g = grad_sync_finish(&t->sync), *p = t->ts.p;
    int64_t count = t->ts.n;
    if (sharded(t)) {
        p = t->ts.p + dist_shard_lo(&t->shard);
        count = dist_shard_count(&t->shard);
    }
    if (t->device != DEVICE_CPU) { // the norm, the clip and the skip are decided on the GPU; one scalar comes back
        double sumsq;
        grad_sumsq_device(t->dsumsq, g, count, 0);
        if (sharded(t) && dist_size() > 1) {
            device_copy(&sumsq, DEVICE_CPU, t->dsumsq, t->device, sizeof sumsq);
            dist_allreduce_sum_f64(&sumsq, 1);
            device_copy(t->dsumsq, t->device, &sumsq, DEVICE_CPU, sizeof sumsq);
        }
        adamw_update_device(oc, lr, *applied + 1, t->dsumsq, p, g, t->m, t->v, count);
        device_copy(&sumsq, DEVICE_CPU, t->dsumsq, t->device, sizeof sumsq);
        double norm = sqrt(sumsq);
        if (!isfinite(norm)) {
            (*skipped)++;
            return norm;
        }
        (*applied)++;
        trainer_share(t);
        return norm;
    }
    double sumsq = grad_sumsq(g, count);
    if (sharded(t)) dist_allreduce_sum_f64(&sumsq, 1);
    double norm = sqrt(sumsq);
    if (!isfinite(norm)) {
        (*skipped)++;
        return norm;
    }
    (*applied)++;
    adamw_update(oc, lr, *applied, grad_clip_coef(oc, norm), p, g, t->m, t->v, count);
    trainer_share(t);
    return norm;
}

// Samples the fixed-seed grid with the sampler's guidance: seeds[i] with prompt i (cycling through the file).
static void write_samples(Trainer *t, const char *path, float *mean_reward) {
    const Config *c = t->cfg;
    trainer_weights_ready(t);
    int n = c->log.n_sample_seeds;
    if (n == 0) { // log.sample_seeds empty: no sample grids
        if (mean_reward) *mean_reward = NAN;
        return;
    }
    Engine *e = &t->sample_eng;
    int64_t img = (int64_t)t->model.vae.cfg.out_channels * t->H * t->W;
    float *grid = xmalloc(sizeof(float) * (size_t)(img * n));
    double sum = 0;
    for (int i = 0; i < n; i++) {
        model_sample_seeded(&t->model, e, t->prompts[i % t->n_prompts], c->sampler.negative_prompt, t->H, t->W,
                            (uint64_t)c->log.sample_seeds[i]);
        sum += e->reward[0];
        device_copy(grid + i * img, DEVICE_CPU, e->image.data, e->image.device, sizeof(float) * (size_t)img);
    }
    pngio_write_grid(path, grid, n, t->H, t->W, 0);
    if (mean_reward) *mean_reward = (float)(sum / n);
    free(grid);
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
    trainer_weights_ready(t);
    if (t->device != DEVICE_CPU) { // the end of the run: the weights go back to the host to be written
        arena_to_device(&t->model.unet_params, DEVICE_CPU);
        if (t->ts.params != &t->model.unet_params) arena_to_device((Arena *)t->ts.params, DEVICE_CPU);
    }
    if (c->train.trainable == TRAINABLE_LORA && (c->output.export_mode == EXPORT_LORA || c->output.export_mode == EXPORT_BOTH)) {
        dt_path(path, sizeof path, "%s/pytorch_lora_weights.safetensors", dir);
        lora_save(&t->ts.lora, path);
        printf("  LoRA adapters:  %s\n", path);
    }
    if (c->output.export_mode == EXPORT_MERGED || c->output.export_mode == EXPORT_BOTH ||
        c->train.trainable == TRAINABLE_FULL) {
        if (c->output.export_mode == EXPORT_NONE) return;
        dt_path(path, sizeof path, "%s/unet", dir);
        dt_mkdirs(path);
        if (c->train.trainable == TRAINABLE_LORA) lora_merge(&t->ts.lora); // W += scale B A, in place (end of run)
        dt_path(path, sizeof path, "%s/unet/diffusion_pytorch_model.safetensors", dir);
        weights_save(&t->model.unet_params, path);
        char src[2048], dst[2048];
        dt_path(src, sizeof src, "%s/unet/config.json", c->model.path);
        dt_path(dst, sizeof dst, "%s/unet/config.json", dir);
        dt_copy_file(src, dst);
        printf("  merged UNet:    %s/unet\n", dir);
    }
}

// metrics.jsonl of a resumed run: the file's own lines when it holds exactly the iterations up to the checkpoint
// (later ones were lost with the crash and are dropped), otherwise rebuilt from the checkpoint's copy.
static void metrics_resume(MetricsWriter *w, const char *path, const MetricsRow *rows, int n) {
    int have = 0;
    if (access(path, F_OK) == 0) {
        MetricsLog log = metrics_read(path);
        for (int i = 0; i < log.n; i++) have += log.rows[i].iteration <= n;
        metrics_free(&log);
    }
    if (have == n) {
        metrics_open(w, path, n);
        return;
    }
    metrics_open(w, path, -1);
    for (int i = 0; i < n; i++) metrics_write(w, &rows[i]);
}

// The line "key = value" of [section] in resolved INI text (config_to_ini), into buf; "" when absent.
static void ini_line(const char *text, const char *section, const char *key, size_t klen, char *buf, size_t n) {
    char cur[64] = "";
    buf[0] = 0;
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        int len = (int)(nl ? (size_t)(nl - p) : strlen(p));
        if (p[0] == '[') snprintf(cur, sizeof cur, "%.*s", len, p);
        else if (!strcmp(cur, section) && (size_t)len > klen && !strncmp(p, key, klen) && p[klen] == ' ')
            snprintf(buf, n, "%.*s", len, p);
        p += len + (nl != NULL);
    }
}

// Prints the keys whose values differ between the checkpoint's configuration and this run's (this run's apply).
static void note_config_changes(const char *old_text, const char *new_text) {
    char section[64] = "", was[CONFIG_TEXT_MAX + 64], *copy = xstrdup(new_text), *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        const char *eq = strstr(line, " = ");
        if (line[0] == '[') snprintf(section, sizeof section, "%s", line);
        if (line[0] == '[' || line[0] == '#' || !eq) continue;
        ini_line(old_text, section, line, (size_t)(eq - line), was, sizeof was);
        if (strcmp(was, line) != 0)
            printf("note: changed since the checkpoint: %s %s (was: %s)\n", section, line, was[0] ? was : "absent");
    }
    free(copy);
}

// Tests only: DRTUNE_TEST_FAULT=RANK:ITERATION makes that rank fail at the start of that iteration (an internal
// failure; RANK:ITERATION:user, a user error), to check that one rank's failure stops the whole job promptly.
static void test_fault(int it) {
    const char *v = getenv("DRTUNE_TEST_FAULT");
    int r, i;
    if (v && sscanf(v, "%d:%d", &r, &i) == 2 && r == dist_rank() && i == it + 1) {
        if (strstr(v, ":user")) dt_user_error("injected user error at iteration %d (DRTUNE_TEST_FAULT=%s)", i, v);
        FATAL("", "injected failure at iteration %d (DRTUNE_TEST_FAULT=%s)", i, v);
    }
}

static const char *signal_name(int sig) {
    return sig == SIGTERM ? "SIGTERM" : sig == SIGUSR1 ? "SIGUSR1" : "a stop signal";
}

int trainer_run(const Config *c, const char *resume) {
    int root = dist_rank() == 0;
    if (root) setvbuf(stdout, NULL, _IOLBF, 0); // job logs show each line as it happens
    else if (!freopen("/dev/null", "w", stdout)) FATAL("", "cannot silence stdout on rank %d", dist_rank());
    signals_install(); // cmd_train installed them already; callers other than drtune train need them too
    Trainer t;
    trainer_setup(&t, c);
    // a stop request during start-up: nothing was trained, so there is nothing to save
    int early = dist_allreduce_max_int(signals_pending());
    if (early) {
        printf("drtune: %s received during start-up: stopped before the first iteration, nothing to save\n",
               signal_name(early));
        dist_barrier();
        trainer_free(&t);
        return 0;
    }
    char path[2048], samples[2048], ckdir[2048];
    dt_path(samples, sizeof samples, "%s/samples", c->output.dir);
    dt_path(ckdir, sizeof ckdir, "%s/checkpoints", c->output.dir);
    char *ini;
    config_to_ini(c, &ini);
    if (root) {
        dt_mkdirs(samples);
        dt_path(path, sizeof path, "%s/config.ini", c->output.dir);
        dt_write_file_atomic(path, ini, strlen(ini));
    }

    CkptState st;
    CkptTensors load = trainer_tensors(&t, 1);
    char used[2048];
    int resumed = ckpt_resume(resume, ckdir, &st, &load, used, sizeof used);
    if (resumed) trainer_sync_host(&t, 0);
    if (resumed) trainer_share(&t);
    int start = resumed ? st.iteration : 0, applied = st.applied, skipped = st.skipped;
    int n_rows = st.n_rows, cap_rows = c->train.iterations > n_rows ? c->train.iterations : n_rows;
    MetricsRow *rows = xcalloc((size_t)(cap_rows > 0 ? cap_rows : 1), sizeof(MetricsRow));
    if (n_rows) memcpy(rows, st.rows, sizeof(MetricsRow) * (size_t)n_rows);

    printf("drtune train: %s on %s, %d iterations of %d images, %d steps, %s\n", method_name(c->method.name),
           c->model.path, c->train.iterations, t.B, c->sampler.steps,
           c->train.trainable == TRAINABLE_LORA ? "LoRA" : "full fine-tuning");
    const char *how = dist_size() == 1 ? "" : sharded(&t) ? "; weights and Adam moments sharded for the update"
                                                        : "; LoRA replicated";
    printf("ranks: %d (%d image%s each per iteration)%s\n", dist_size(), t.Bl, t.Bl == 1 ? "" : "s", how);
    if (resumed) {
        printf("resumed from %s: iteration %d (written by %d rank%s)\n", used, start, st.ranks,
               st.ranks == 1 ? "" : "s");
        note_config_changes(st.config, ini);
    }
    ckpt_state_free(&st);
    printf("memory plan (per rank):\n");
    arena_print(&t.model.unet_params);
    arena_print(&t.model.vae_params);
    if (t.model.has_compute) { // train.precision = bf16 or train.channels_last: what the iteration computes with
        arena_print(&t.model.unet_c_params);
        arena_print(&t.model.vae_c_params);
        if (lora_of(&t)) arena_print(&t.ts.lora.compute);
    }
    if (t.ts.params != &t.model.unet_params) arena_print(t.ts.params); // LoRA adapters
    arena_print(t.ts.grads);
    char nb[32], nb2[32];
    int64_t moments = sharded(&t) ? dist_shard_count(&t.shard) : t.ts.n;
    printf("  %-12s %6d tensors %12lld elements %12s (%s)%s\n", "optimizer", 2, (long long)(2 * moments),
           dt_format_bytes(nb, sizeof nb, 8.0 * (double)moments), device_name(t.device),
           sharded(&t) && dist_size() > 1 ? " this rank's shard" : "");
    if (t.gshard)
        printf("  %-12s %6d tensors %12lld elements %12s (cpu) the summed gradient's shard\n", "grad-shard", 1,
               (long long)t.shard.shard, dt_format_bytes(nb, sizeof nb, 4.0 * (double)t.shard.shard));
    arena_print(&t.eng.unet_mem);
    arena_print(&t.eng.vae_mem);
    arena_print(&t.eng.mem);
    for (int k = 0; k < c->reward.n_names; k++) { // a learned reward's tower: weights and one batch's activations
        const ClipReward *cr = t.rw.learned[k];
        if (!cr) continue;
        double w = (double)cr->model.vision.params.size + (cr->n_head ? (double)cr->head.size : 0.0);
        printf("  %-12s %s weights + %s activations (%s)\n", c->reward.names[k], dt_format_bytes(nb, sizeof nb, w),
               dt_format_bytes(nb2, sizeof nb2, (double)clip_reward_activation_bytes(cr)),
               device_name(cr->model.vision.params.device));
    }
    if (t.device != DEVICE_CPU)
        printf("  %-12s %s ops scratch + %s GEMM (%s), sized by a planning evaluation\n", "workspaces",
               dt_format_bytes(nb, sizeof nb, (double)ops_workspace_size(t.device, 0)),
               dt_format_bytes(nb2, sizeof nb2, (double)ops_workspace_size(t.device, 1)), device_name(t.device));

    float before = NAN, after = NAN;
    int grids = c->log.n_sample_seeds > 0; // log.sample_seeds empty: no sample grids, no sample reward
    if (root && !resumed && grids) {
        dt_path(path, sizeof path, "%s/before.png", samples);
        write_samples(&t, path, &before);
        printf("samples before training: %s (mean reward %.5f)\n", path, before);
    }

    AdamWConfig oc = {.lr = (float)c->train.lr, .beta1 = (float)c->train.beta1, .beta2 = (float)c->train.beta2,
                      .eps = (float)c->train.adam_eps, .weight_decay = (float)c->train.weight_decay,
                      .warmup = c->train.warmup, .cosine = c->train.schedule == SCHEDULE_COSINE,
                      .min_lr_ratio = (float)c->train.min_lr_ratio, .total = c->train.iterations,
                      .grad_clip = (float)c->train.grad_clip};
    MetricsWriter mw = {0};
    char metrics_path[2048];
    dt_path(metrics_path, sizeof metrics_path, "%s/metrics.jsonl", c->output.dir);
    if (root && resumed) metrics_resume(&mw, metrics_path, rows, n_rows);
    else if (root) metrics_open(&mw, metrics_path, -1);
    Progress prog;
    progress_init(&prog, stderr, c->train.iterations, start, root ? c->log.progress : PROGRESS_OFF, c->log.every);

    int B = t.B, Bl = t.Bl, N = c->sampler.steps, C = t.eng.C;
    int64_t lat = (int64_t)C * t.h * t.w;
    Tensor xT = tensor_f32_4d(xmalloc(sizeof(float) * (size_t)(lat * Bl)), Bl, C, t.h, t.w);
    Tensor z = tensor_make(xmalloc(sizeof(float) * (size_t)(lat * Bl * N)), DTYPE_F32, DEVICE_CPU, 5,
                           (int64_t[]){N, Bl, C, t.h, t.w});
    int copies = c->method.lv_copies > 0 ? c->method.lv_copies : 1;
    Tensor lv = tensor_make(xmalloc(sizeof(float) * (size_t)(lat * Bl * copies)), DTYPE_F32, DEVICE_CPU, 5,
                            (int64_t[]){copies, Bl, C, t.h, t.w});
    int64_t *ids = xmalloc(sizeof(int64_t) * (size_t)Bl);
    const char **batch_prompts = xmalloc(sizeof(char *) * (size_t)Bl);
    double *rewards = xmalloc(sizeof(double) * (size_t)B), *mine = xmalloc(sizeof(double) * (size_t)Bl);
    MethodConfig mc = setup_method(c);
    int stop = 0;
    for (int it = start; it < c->train.iterations && !stop; it++) {
        test_fault(it);
        for (int b = 0; b < Bl; b++) {
            ids[b] = (int64_t)it * B + t.b0 + b; // global sample index: the same data whatever the rank count
            batch_prompts[b] = t.prompts[ids[b] % t.n_prompts];
        }
        noise_latents(&xT, (uint64_t)c->train.seed, ids);
        if (c->sampler.eta > 0) noise_steps(&z, (uint64_t)c->train.seed, ids);
        if (mc.method == METHOD_DRAFT_LV) noise_copies(&lv, (uint64_t)c->train.seed, ids, it);
        IterPlan plan;
        iter_plan_draw(&plan, &mc, N, (uint64_t)c->train.seed, (uint64_t)it);
        PromptEmbeds emb;
        UNetCond cond;
        model_condition(&t.model, batch_prompts, c->sampler.negative_prompt, Bl, c->method.cfg, t.H, t.W, &emb,
                        &cond);
        device_zero(t.device, t.ts.g, sizeof(float) * (size_t)t.sync.end); // with the shard padding
        IterResult res;
        grad_sync_begin(&t.sync);
        trainer_weights_ready(&t); // the rollout's first UNet evaluation reads them
        engine_iteration(&t.eng, &plan, &cond, batch_prompts, &xT, c->sampler.eta > 0 ? &z : NULL,
                         mc.method == METHOD_DRAFT_LV ? &lv : NULL, &res);
        prompt_embeds_free(&emb);
        double tu = dt_now();
        float lr = adamw_lr(&oc, it);
        int was_skipped = skipped;
        double norm = trainer_update(&t, &oc, lr, &applied, &skipped);
        int skip = skipped > was_skipped;
        if (skip && root)
            fprintf(stderr, "drtune: warning: iteration %d: gradient not finite, update skipped\n", it + 1);
        // the global batch's loss and rewards, the largest resident memory of any rank
        double loss = res.loss, rss = (double)dt_peak_rss();
        for (int b = 0; b < Bl; b++) mine[b] = res.reward[b];
        dist_allreduce_sum_f64(&loss, 1);
        dist_allreduce_max_f64(&rss, 1);
        dist_allgather_f64(mine, Bl, rewards);
        MetricsRow row = {.iteration = it + 1, .loss = loss, .grad_norm = norm, .lr = lr, .skipped = skip,
                          .t_rollout = res.sec_rollout, .t_decode = res.sec_decode, .t_reward = res.sec_reward,
                          .t_backward = res.sec_backward, .t_update = dt_now() - tu, .peak_rss_bytes = rss,
                          .t_reduce_wait = t.sync.sec_wait,
                          .reduce_overlap = grad_sync_overlap(&t.sync)};
        double mean = 0, var = 0;
        for (int b = 0; b < B; b++) mean += rewards[b] / B;
        for (int b = 0; b < B; b++) var += (rewards[b] - mean) * (rewards[b] - mean) / B;
        row.reward_mean = mean, row.reward_std = sqrt(var);
        row.n_rewards = t.rw.set.n < METRICS_MAX_REWARDS ? t.rw.set.n : METRICS_MAX_REWARDS;
        double per[METRICS_MAX_REWARDS] = {0}; // each reward's unweighted mean over the global batch
        for (int k = 0; k < row.n_rewards; k++) {
            for (int b = 0; b < Bl; b++) per[k] += res.per_reward[k * Bl + b];
            snprintf(row.reward_names[k], sizeof row.reward_names[k], "%s", t.rw.set.items[k].name);
        }
        dist_allreduce_sum_f64(per, row.n_rewards);
        for (int k = 0; k < row.n_rewards; k++) row.reward_means[k] = per[k] / B;
        rows[n_rows++] = row;
        if (root) {
            metrics_write(&mw, &row);
            progress_update(&prog, it + 1, mean);
            if (c->log.sample_every > 0 && (it + 1) % c->log.sample_every == 0 && it + 1 < c->train.iterations) {
                dt_path(path, sizeof path, "%s/iter_%06d.png", samples, it + 1);
                write_samples(&t, path, NULL);
            }
        }
        // checkpoint at the interval, at the end, and when any rank was asked to stop
        stop = dist_allreduce_max_int(signals_pending());
        int done = it + 1, every = c->output.checkpoint_every;
        if ((every > 0 && done % every == 0) || done == c->train.iterations || stop) {
            double t0 = dt_now();
            CkptState s = {.iteration = done, .applied = applied, .skipped = skipped, .seed = c->train.seed,
                           .batch = B, .prompt_cursor = (int64_t)done * B, .lr = lr, .config = ini,
                           .rows = rows, .n_rows = n_rows};
            CkptTensors save = trainer_tensors(&t, 0);
            trainer_sync_host(&t, 1);
            double bytes = ckpt_save(ckdir, &s, &save, c->output.keep);
            if (root && prog.bar == 1) fputc('\n', stderr);
            printf("checkpoint %s/ckpt-%06d.h5: iteration %d, %s in %.2f s\n", ckdir, done, done,
                   dt_format_bytes(nb, sizeof nb, bytes), dt_now() - t0);
        }
        if (stop)
            printf("drtune: %s received: stopped after iteration %d with checkpoint %s/ckpt-%06d.h5; continue with "
                   "the same command and --resume auto\n",
                   signal_name(stop), done, ckdir, done);
    }
    if (root) {
        progress_finish(&prog);
        metrics_close(&mw);
    }
    if (root && !stop) {
        dt_path(path, sizeof path, "%s/after.png", samples);
        if (grids) write_samples(&t, path, &after);
        char curve[2048];
        dt_path(curve, sizeof curve, "%s/reward_curve.png", c->output.dir);
        write_reward_curve(metrics_path, curve);
        printf("done: %d updates, %d skipped", applied, skipped);
        if (!grids) printf(" (log.sample_seeds is empty: no sample grids)\n");
        else if (resumed) printf("; sample mean reward %.5f\n", after);
        else printf("; sample mean reward %.5f -> %.5f\n", before, after);
        printf("outputs in %s:\n  metrics:        %s\n", c->output.dir, metrics_path);
        if (grids) printf("  samples:        %s/before.png, %s/after.png\n", samples, samples);
        printf("  reward curve:   %s\n  checkpoints:    %s\n", curve, ckdir);
        dt_path(path, sizeof path, "%s/export", c->output.dir);
        export_weights(&t, path);
    }
    dist_barrier(); // the other ranks stay until rank 0 has written the outputs
    free(xT.data);
    free(z.data);
    free(lv.data);
    free(ids);
    free(batch_prompts);
    free(rewards);
    free(mine);
    free(rows);
    free(ini);
    trainer_free(&t);
    return 0;
}
