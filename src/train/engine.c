// engine.c: the gradient methods of docs/METHOD.md as one engine: phase 1 rolls the sampler out without gradients
// and keeps only the latents of the steps that will train; the read-out is decoded and scored, and the reward
// gradient is carried back through the reward and the decoder to g = d loss / d x0; phase 2 recomputes one UNet
// evaluation per trained step and backpropagates its share of g (scalar weights for DRTune and ReFL, whose UNet
// input is detached; a step-by-step walk with the UNet input gradient for DRaFT and AlignProp).
#include "engine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/common.h"
#include "../core/device.h"
#include "../core/device_cuda.h"
#include "../core/rng.h"
#include "../ops/ops.h"

const char *const METHOD_NAMES[] = {"drtune", "refl", "draft", "draft-lv", "alignprop", NULL};

const char *method_name(Method m) { return METHOD_NAMES[m]; }

// ---------------------------------------------------------------------------------------------------------------
// plans

void iter_plan_draw(IterPlan *p, const MethodConfig *mc, int N, uint64_t seed, uint64_t it) {
    CHECK(N >= 1 && N <= ENGINE_MAX_STEPS, "", "steps %d out of range", N);
    memset(p, 0, sizeof *p);
    p->N = N;
    uint64_t stream = RNG_STREAM(RNG_PURPOSE_SCHEDULE, it, 0);
    int K = mc->K < 1 ? 1 : (mc->K > N ? N : mc->K);
    switch (mc->method) {
    case METHOD_DRTUNE: {
        p->t_min = mc->m <= 0 ? 0 : (mc->t_min >= 0 ? mc->t_min : (int)rng_randint(seed, stream, 0, 1, mc->m));
        int lo = (mc->draw_in_executed && p->t_min > 0) ? p->t_min : 1, span = N - lo + 1;
        if (K > span) K = span;
        int s = span / K;
        p->phase = mc->phase >= 0 ? mc->phase : (int)rng_randint(seed, stream, 1, 1, s + span % K);
        USER_CHECK(p->phase >= 1 && p->phase <= s + span % K, "method.phase %d outside [1, %d]", p->phase,
                   s + span % K);
        for (int i = 0; i < K; i++) p->trained[lo - 1 + p->phase + i * s] = 1;
        break;
    }
    case METHOD_REFL:
        USER_CHECK(mc->m >= 1, "refl needs method.m >= 1 (the range of its gradient step)");
        p->t_min = mc->t_min >= 1 ? mc->t_min : (int)rng_randint(seed, stream, 0, 1, mc->m);
        p->trained[p->t_min] = 1;
        break;
    case METHOD_DRAFT:
    case METHOD_ALIGNPROP:
        p->full = 1;
        p->k = mc->method == METHOD_DRAFT ? K : (mc->k >= 1 ? mc->k : (int)rng_randint(seed, stream, 2, 1, K));
        USER_CHECK(p->k >= 1 && p->k <= N, "method.k %d outside [1, %d]", p->k, N);
        for (int t = 1; t <= p->k; t++) p->trained[t] = 1;
        break;
    case METHOD_DRAFT_LV:
        p->lv_copies = mc->lv_copies < 1 ? 1 : mc->lv_copies;
        p->trained[1] = 1;
        break;
    }
    USER_CHECK(p->t_min <= N, "method.t_min %d beyond the %d sampling steps", p->t_min, N);
}

void drtune_weights_walk(const Ddim *s, float eta, const IterPlan *p, double *w) {
    int N = p->N;
    for (int t = 0; t <= N; t++) w[t] = 0.0;
    double carry; // d x_read / d x_t along the linear path, starting at the read-out
    int t0;
    if (p->t_min > 0) {
        DdimStep c = ddim_step_coef(s, N - p->t_min, eta);
        if (p->trained[p->t_min]) w[p->t_min] = c.cm;
        carry = c.cx;
        t0 = p->t_min + 1;
    } else {
        carry = 1.0;
        t0 = 1;
    }
    for (int t = t0; t <= N; t++) {
        DdimStep c = ddim_step_coef(s, N - t, eta);
        if (p->trained[t]) w[t] = c.B * carry;
        carry *= c.A;
    }
}

void drtune_weights_closed(const Ddim *s, const IterPlan *p, double *w) {
    CHECK(s->cfg.prediction == PRED_EPSILON, "", "the closed form is for epsilon prediction");
    int N = p->N;
    // sig(t) = sqrt((1 - abar) / abar) at step t's timestep; sig(0) at the final alpha (no early stop)
    double sig[ENGINE_MAX_STEPS + 1];
    for (int t = 1; t <= N; t++) {
        double a = s->alphas_cumprod[s->timesteps[N - t]];
        sig[t] = sqrt((1.0 - a) / a);
    }
    double af = s->final_alpha_cumprod;
    sig[0] = sqrt((1.0 - af) / af);
    for (int t = 0; t <= N; t++) w[t] = 0.0;
    if (p->t_min > 0) { // x0_hat = x_T / sqrt(abar_T) + sum_{t > t_min} (sig_{t-1} - sig_t) eps_t - sig_{t_min} eps_{t_min}
        for (int t = p->t_min; t <= N; t++)
            if (p->trained[t]) w[t] = t == p->t_min ? -sig[t] : sig[t - 1] - sig[t];
    } else { // x_0 = sqrt(abar_final) (x_T / sqrt(abar_T) + sum_t (sig_{t-1} - sig_t) eps_t)
        for (int t = 1; t <= N; t++)
            if (p->trained[t]) w[t] = sqrt(af) * (sig[t - 1] - sig[t]);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// memory

static Tensor plan_latent(Arena *a, Tensor *slot, const char *name, int64_t B, int64_t C, int64_t h, int64_t w) {
    arena_add(a, slot, name, DTYPE_F32, 4, (int64_t[]){B, C, h, w});
    return *slot;
}

// GPU: one UNet evaluation with its backward and one decode with its backward on the planned buffers (zero-filled
// inputs and upstream gradients), so that the ops' workspaces (cuDNN, cuBLASLt, attention, norms) reach their
// largest need during planning and an iteration allocates nothing. The zero upstream gradients add exactly zero to
// the parameter gradients.
static void plan_workspaces(Engine *e) {
    const UNetConfig *uc = &e->unet->cfg;
    unet_forward(e->unet, &e->acts, &e->eps_rows, &e->xin, &e->tsteps, &e->ctx, uc->text_time ? &e->text_embeds : NULL,
                 uc->text_time ? &e->time_ids : NULL);
    vae_decode(e->vae, &e->vacts, &e->image, &e->x0);
    if (!e->grads) return; // sampling only
    unet_backward(e->unet, e->grads, &e->acts, &e->deps_rows, &e->dx_rows, NULL);
    vae_decode_backward(e->vae, NULL, &e->vacts, &e->dimage, &e->g);
}

static UNetRecompute g_recompute; // engine_set_recompute: off until set

void engine_set_recompute(const UNetRecompute *rc) { g_recompute = *rc; }

void engine_init(Engine *e, const UNet *unet, UNet *grads, const VAE *vae, const Ddim *sched, const RewardSet *rewards,
                 float guidance, float eta, int B, int h, int w, int T) {
    memset(e, 0, sizeof *e);
    e->unet = unet, e->grads = grads, e->vae = vae, e->sched = sched, e->rewards = rewards;
    e->guidance = guidance, e->eta = eta, e->B = B, e->h = h, e->w = w;
    e->C = unet->cfg.in_channels;
    USER_CHECK(vae->cfg.latent_channels == e->C, "the VAE has %d latent channels, the UNet %d",
               vae->cfg.latent_channels, e->C);
    e->rows = guidance > 1.0f ? 2 * B : B;
    e->loss_scale = 1.0f / (float)B;
    int N = sched->num_inference_steps;
    CHECK(N >= 1, "call ddim_set_timesteps first", "scheduler has no timesteps");
    int f = 1 << (vae->cfg.levels - 1);
    Device d = e->device = unet->conv_in.weight.device;
    CHECK(vae->dec_conv_in.weight.device == d, "", "the UNet and the VAE live on different devices");
    static const char *reduce = "the batch per rank (train.batch, or the number of prompts) or the image size "
                                "(sampler.height and sampler.width, or --height and --width)";
    arena_init(&e->unet_mem, "unet-acts", d);
    arena_set_reduce(&e->unet_mem, reduce);
    UNetRecompute rc = g_recompute;
    if (rc.mode == UNET_RECOMPUTE_AUTO && rc.budget <= 0) rc.budget = 0.75 * (double)device_available_bytes(d);
    unet_plan_acts_recompute(&e->unet_mem, &e->acts, unet, e->rows, h, w, T, &rc);
    arena_alloc(&e->unet_mem);
    arena_init(&e->vae_mem, "vae-acts", d);
    arena_set_reduce(&e->vae_mem, reduce);
    UNetRecompute vrc = vae_recompute_share(&rc, e->unet_mem.size);
    vae_plan_decode_acts_recompute(&e->vae_mem, &e->vacts, vae, B, h, w, &vrc);
    arena_alloc(&e->vae_mem);
    Arena *a = &e->mem;
    arena_init(a, "engine", d);
    arena_set_reduce(a, reduce);
    const char *names[] = {"x", "xnext", "eps", "x0", "g", "G", "dx", "tmp"};
    Tensor *slots[] = {&e->x, &e->xnext, &e->eps, &e->x0, &e->g, &e->G, &e->dx, &e->tmp};
    for (int i = 0; i < 8; i++) plan_latent(a, slots[i], names[i], B, e->C, h, w);
    plan_latent(a, &e->xin, "xin", e->rows, e->C, h, w);
    plan_latent(a, &e->eps_rows, "eps_rows", e->rows, e->C, h, w);
    plan_latent(a, &e->deps_rows, "deps_rows", e->rows, e->C, h, w);
    plan_latent(a, &e->dx_rows, "dx_rows", e->rows, e->C, h, w);
    arena_add(a, &e->tsteps, "timesteps", DTYPE_F32, 1, (int64_t[]){e->rows});
    plan_latent(a, &e->image, "image", B, vae->cfg.out_channels, (int64_t)h * f, (int64_t)w * f);
    plan_latent(a, &e->dimage, "dimage", B, vae->cfg.out_channels, (int64_t)h * f, (int64_t)w * f);
    e->xs = xcalloc((size_t)N + 1, sizeof(Tensor));
    for (int t = 1; t <= N; t++) {
        char name[32];
        snprintf(name, sizeof name, "x_t.%d", t);
        plan_latent(a, &e->xs[t], name, B, e->C, h, w);
    }
    if (d != DEVICE_CPU) {
        const UNetConfig *uc = &unet->cfg;
        arena_add(a, &e->ctx, "context", DTYPE_F32, 3, (int64_t[]){e->rows, T, uc->cross_dim});
        if (uc->text_time) {
            arena_add(a, &e->text_embeds, "text_embeds", DTYPE_F32, 2, (int64_t[]){e->rows, uc->text_embed_dim});
            arena_add(a, &e->time_ids, "time_ids", DTYPE_F32, 2, (int64_t[]){e->rows, 6});
        }
        if (eta > 0.0f) plan_latent(a, &e->zstep, "step_noise", B, e->C, h, w);
        plan_latent(a, &e->nz, "lv_noise", B, e->C, h, w);
        int K = rewards->n > 0 ? rewards->n : 1; // the rewards' device arrays (reward.h)
        arena_add(a, &e->dev_reward, "reward", DTYPE_F32, 1, (int64_t[]){B});
        arena_add(a, &e->dev_per_reward, "per_reward", DTYPE_F32, 1, (int64_t[]){(int64_t)K * B});
        arena_add(a, &e->dev_dscore, "dscore", DTYPE_F32, 1, (int64_t[]){B});
    }
    arena_alloc(a);
    rewardset_plan(rewards, &e->image); // the learned rewards' towers on the device
    ops_workspace_reserve(d, rewardset_workspace_bytes(rewards, &e->image));
    e->reward = xcalloc((size_t)B, sizeof(float));
    e->dscore = xcalloc((size_t)B, sizeof(float));
    e->per_reward = xcalloc((size_t)(B * (rewards->n > 0 ? rewards->n : 1)), sizeof(float));
    if (d != DEVICE_CPU) plan_workspaces(e);
    const char *g = getenv("DRTUNE_CUDA_GRAPHS"); // the default of the commands without a configuration
    engine_set_graphs(e, !(g && (!strcmp(g, "0") || !strcmp(g, "off"))));
}

static void graphs_free(Engine *e) {
    EngineGraph *gs[3] = {&e->graph_fwd, &e->graph_bwd[0], &e->graph_bwd[1]};
    for (int i = 0; i < 3; i++) {
        cuda_graph_free(gs[i]->g);
        memset(gs[i], 0, sizeof *gs[i]);
    }
}

void engine_set_graphs(Engine *e, int on) {
    if (!on) graphs_free(e);
    e->graphs = on && e->device == DEVICE_CUDA;
}

void engine_free(Engine *e) {
    graphs_free(e);
    unet_acts_free(&e->acts);
    vae_decode_acts_free(&e->vacts);
    arena_free(&e->unet_mem);
    arena_free(&e->vae_mem);
    arena_free(&e->mem);
    free(e->xs);
    free(e->reward);
    free(e->dscore);
    free(e->per_reward);
    memset(e, 0, sizeof *e);
}

// ---------------------------------------------------------------------------------------------------------------
// one guided UNet evaluation and its backward

// The conditioning as the UNet on e's device takes it: the caller's own on the CPU, copies on the GPU.
static const UNetCond *device_cond(Engine *e, const UNetCond *c) {
    if (e->device == DEVICE_CPU) return c;
    tensor_copy(&e->ctx, c->context);
    if (c->text_embeds) tensor_copy(&e->text_embeds, c->text_embeds);
    if (c->time_ids) tensor_copy(&e->time_ids, c->time_ids);
    e->dcond = (UNetCond){&e->ctx, c->text_embeds ? &e->text_embeds : NULL, c->time_ids ? &e->time_ids : NULL};
    return &e->dcond;
}

// rows [rows, ...] viewed as its guidance branch i ([B, C, h, w])
static Tensor branch(const Engine *e, const Tensor *rows, int i) {
    int64_t n = (int64_t)e->B * e->C * e->h * e->w;
    Tensor v = tensor_make((char *)rows->data + (size_t)(i * n) * dtype_size(rows->dtype), rows->dtype, rows->device, 4,
                           (int64_t[]){e->B, e->C, e->h, e->w});
    return v;
}

// e->eps = CFG(UNet(e->xin, e->tsteps)): everything on the engine's fixed buffers, nothing step-dependent on the host
static void eval_forward(Engine *e, const UNetCond *c) {
    unet_forward(e->unet, &e->acts, &e->eps_rows, &e->xin, &e->tsteps, c->context, c->text_embeds, c->time_ids);
    cfg_combine_forward(&e->eps, &e->eps_rows, e->guidance);
}

// GPU graphs: the work of run (on the engine's fixed buffers, nothing step-dependent on the host) captured into
// eg at its first use, and replayed. A graph holds the pointers it was captured with, so it is captured again when
// one of key moved: the ops' shared workspaces (they grow by reallocation), the weights, the conditioning.
static void graph_run(Engine *e, EngineGraph *eg, const void *const key[6], const UNetCond *c,
                      void (*run)(Engine *, const UNetCond *, int), int arg) {
    const void *k[8] = {ops_workspace(DEVICE_CUDA, 0), ops_gemm_workspace(DEVICE_CUDA, 0)};
    memcpy(k + 2, key, sizeof(void *) * 6);
    if (eg->g && memcmp(k, eg->key, sizeof k)) {
        cuda_graph_free(eg->g);
        eg->g = NULL;
    }
    if (!eg->g) {
        cuda_graph_begin();
        run(e, c, arg);
        eg->g = cuda_graph_end();
        memcpy(eg->key, k, sizeof k);
    }
    cuda_graph_launch(eg->g);
}

static void eval_forward_run(Engine *e, const UNetCond *c, int arg) {
    (void)arg;
    eval_forward(e, c);
}

static void eval_forward_graph(Engine *e, const UNetCond *c) {
    const void *key[6] = {e->unet->conv_in.weight.data, c->context->data, c->text_embeds ? c->text_embeds->data : NULL,
                          c->time_ids ? c->time_ids->data : NULL};
    graph_run(e, &e->graph_fwd, key, c, eval_forward_run, 0);
}

// e->eps = CFG(UNet(x)) at step t, keeping the UNet activations for unet_eval_backward. The step's inputs go to
// the fixed buffers xin (both guidance branches) and tsteps first, on the stream, outside any graph.
static void unet_eval(Engine *e, const UNetCond *c, int t, const Tensor *x) {
    for (int r = 0; r < e->rows / e->B; r++) {
        Tensor xr = branch(e, &e->xin, r);
        tensor_copy(&xr, x);
    }
    float tau = (float)e->sched->timesteps[e->sched->num_inference_steps - t];
    tensor_fill(&e->tsteps, tau);
    if (e->graphs)
        eval_forward_graph(e, c);
    else
        eval_forward(e, c);
}

// the UNet backward on the fixed buffers: deps_rows in, dx_rows out when wanted (c: unused, graph_run's shape)
static void eval_backward_run(Engine *e, const UNetCond *c, int want_dx) {
    (void)c;
    unet_backward(e->unet, e->grads, &e->acts, &e->deps_rows, want_dx ? &e->dx_rows : NULL, NULL);
}

// backward of the last unet_eval with upstream deps [B, ...] scaled by `scale`: parameter gradients accumulate;
// dx (optional) receives the gradient at x summed over both guidance branches. `last`: the iteration's last
// backward, which reports finished gradient parts to e->ready.
static void unet_eval_backward(Engine *e, const Tensor *deps, double scale, Tensor *dx, int last) {
    cfg_combine_backward(&e->deps_rows, deps, e->guidance, scale); // the step's scale: outside any graph
    e->acts.ready = last ? e->ready : NULL;
    e->acts.ready_ctx = e->ready_ctx;
    if (e->graphs && !e->acts.ready) { // the hooks start reductions on another stream: those backwards launch
        const void *key[6] = {e->unet->conv_in.weight.data, e->grads->conv_in.weight.data};
        graph_run(e, &e->graph_bwd[dx != NULL], key, NULL, eval_backward_run, dx != NULL);
    } else {
        eval_backward_run(e, NULL, dx != NULL);
    }
    e->acts.ready = NULL;
    if (!dx) return;
    if (e->rows == e->B) {
        tensor_copy(dx, &e->dx_rows);
        return;
    }
    Tensor u = branch(e, &e->dx_rows, 0), c = branch(e, &e->dx_rows, 1);
    add_forward(dx, &u, &c);
}

// ---------------------------------------------------------------------------------------------------------------
// decoding and scoring

// Scores e->image into e->reward and e->per_reward (host arrays) and, when dimage != NULL, writes the gradient of
// -scale sum_b reward_b into it. On the GPU the rewards work on device arrays; the scores are read back once.
static void score_images(Engine *e, const char *const *prompts, Tensor *dimage, double scale) {
    int K = e->rewards->n;
    if (e->device == DEVICE_CPU) {
        for (int b = 0; b < e->B; b++) e->dscore[b] = (float)-scale;
        rewardset_score(e->rewards, &e->image, prompts, e->reward, e->per_reward, dimage, e->dscore);
        return;
    }
    tensor_fill(&e->dev_dscore, (float)-scale);
    rewardset_score(e->rewards, &e->image, prompts, e->dev_reward.data, e->dev_per_reward.data, dimage,
                    e->dev_dscore.data);
    device_copy(e->reward, DEVICE_CPU, e->dev_reward.data, e->device, sizeof(float) * (size_t)e->B);
    if (K > 0)
        device_copy(e->per_reward, DEVICE_CPU, e->dev_per_reward.data, e->device, sizeof(float) * (size_t)(K * e->B));
}

double engine_score(Engine *e, const Tensor *x0, const char *const *prompts) {
    if (x0->device != e->device) { // decode on the engine's device
        tensor_copy(&e->x0, x0);
        x0 = &e->x0;
    }
    vae_decode(e->vae, &e->vacts, &e->image, x0);
    score_images(e, prompts, NULL, 0.0);
    double loss = 0;
    for (int b = 0; b < e->B; b++) loss -= (double)e->loss_scale * e->reward[b];
    return loss;
}

void engine_eps(Engine *e, const UNetCond *c, int t, const Tensor *x, Tensor *eps) {
    c = device_cond(e, c);
    if (x->device != e->device) {
        tensor_copy(&e->tmp, x);
        x = &e->tmp;
    }
    unet_eval(e, c, t, x);
    tensor_copy(eps, &e->eps);
}

// Decodes x0, scores it and, when g != NULL, writes g = d(-scale sum_b reward_b) / d x0. Returns that loss.
static double decode_score_backward(Engine *e, const Tensor *x0, const char *const *prompts, double scale, Tensor *g,
                                    IterResult *res) {
    double t0 = dt_now();
    vae_decode(e->vae, &e->vacts, &e->image, x0);
    double t1 = dt_now();
    score_images(e, prompts, g ? &e->dimage : NULL, scale);
    double t2 = dt_now();
    if (g) vae_decode_backward(e->vae, NULL, &e->vacts, &e->dimage, g);
    double t3 = dt_now();
    res->sec_decode += (t1 - t0) + (t3 - t2);
    res->sec_reward += t2 - t1;
    double loss = 0;
    for (int b = 0; b < e->B; b++) loss -= scale * e->reward[b];
    return loss;
}

// ---------------------------------------------------------------------------------------------------------------
// rollout

// One [B, C, h, w] slice of a caller's [n, B, C, h, w] noise, on e's device (copied into dev when needed).
static const Tensor *noise_slice(const Engine *e, const Tensor *z, int64_t i, Tensor *view, Tensor *dev) {
    int64_t n = (int64_t)e->B * e->C * e->h * e->w;
    *view = tensor_make((float *)z->data + i * n, DTYPE_F32, z->device, 4, (int64_t[]){e->B, e->C, e->h, e->w});
    if (z->device == e->device) return view;
    tensor_copy(dev, view);
    return dev;
}

static const Tensor *step_noise(Engine *e, const Tensor *z, int t, Tensor *view) {
    if (e->eta <= 0.0f) return NULL;
    CHECK(z != NULL, "pass the step noise", "eta > 0 needs step noise");
    return noise_slice(e, z, e->sched->num_inference_steps - t, view, &e->zstep);
}

// x_T -> the read-out latent in e->x0, storing x_t for the steps flagged in keep (by t; may be NULL)
static void rollout(Engine *e, const UNetCond *c, const Tensor *xT, const Tensor *z, int t_min,
                    const unsigned char *keep) {
    int N = e->sched->num_inference_steps;
    tensor_copy(&e->x, xT);
    for (int t = N; t >= 1; t--) {
        if (keep && keep[t]) tensor_copy(&e->xs[t], &e->x);
        unet_eval(e, c, t, &e->x);
        if (t == t_min) {
            ddim_predict_x0(e->sched, N - t, &e->x0, &e->eps, &e->x);
            return;
        }
        Tensor zv;
        ddim_step(e->sched, N - t, e->eta, &e->xnext, NULL, &e->eps, &e->x, step_noise(e, z, t, &zv));
        tensor_copy(&e->x, &e->xnext);
    }
    tensor_copy(&e->x0, &e->x);
}

void engine_sample(Engine *e, const UNetCond *c, const Tensor *xT, const Tensor *z, Tensor *x0) {
    rollout(e, device_cond(e, c), xT, z, 0, NULL);
    tensor_copy(x0, &e->x0);
}

// ---------------------------------------------------------------------------------------------------------------
// the iteration

void engine_iteration(Engine *e, const IterPlan *p, const UNetCond *c, const char *const *prompts, const Tensor *xT,
                      const Tensor *z, const Tensor *lv_noise, IterResult *res) {
    CHECK(e->grads != NULL, "", "engine_iteration needs a gradient target");
    CHECK(p->N == e->sched->num_inference_steps, "", "plan for %d steps, scheduler has %d", p->N,
          e->sched->num_inference_steps);
    memset(res, 0, sizeof *res);
    res->reward = e->reward;
    res->per_reward = e->per_reward;
    int N = p->N;
    double t0 = dt_now();
    c = device_cond(e, c);
    rollout(e, c, xT, z, p->t_min, p->trained);
    res->sec_rollout = dt_now() - t0;

    if (p->lv_copies > 0) { // DRaFT-LV: re-noise the final x0 to step 1, one step with gradient per copy
        CHECK(lv_noise != NULL, "", "draft-lv needs its re-noising noise");
        int K = e->rewards->n;
        float *mean_reward = xcalloc((size_t)e->B, sizeof(float));
        float *mean_per = xcalloc((size_t)(e->B * (K > 0 ? K : 1)), sizeof(float));
        double scale = e->loss_scale / p->lv_copies;
        tensor_copy(&e->tmp, &e->x0); // the rollout's x0
        DdimStep c1 = ddim_step_coef(e->sched, N - 1, e->eta);
        for (int j = 0; j < p->lv_copies; j++) {
            Tensor view, zv;
            const Tensor *nz = noise_slice(e, lv_noise, j, &view, &e->nz);
            ddim_add_noise(e->sched, e->sched->timesteps[N - 1], &e->x, &e->tmp, nz);
            double tb = dt_now();
            unet_eval(e, c, 1, &e->x);
            ddim_step(e->sched, N - 1, e->eta, &e->x0, NULL, &e->eps, &e->x, step_noise(e, z, 1, &zv));
            res->sec_rollout += dt_now() - tb;
            res->loss += decode_score_backward(e, &e->x0, prompts, scale, &e->g, res);
            for (int b = 0; b < e->B; b++) mean_reward[b] += e->reward[b] / (float)p->lv_copies;
            for (int k = 0; k < K * e->B; k++) mean_per[k] += e->per_reward[k] / (float)p->lv_copies;
            tb = dt_now();
            unet_eval_backward(e, &e->g, c1.B, NULL, j == p->lv_copies - 1);
            res->sec_backward += dt_now() - tb;
        }
        memcpy(e->reward, mean_reward, sizeof(float) * (size_t)e->B);
        memcpy(e->per_reward, mean_per, sizeof(float) * (size_t)(K * e->B));
        free(mean_reward);
        free(mean_per);
        return;
    }

    res->loss = decode_score_backward(e, &e->x0, prompts, e->loss_scale, &e->g, res);
    double tb = dt_now();
    if (!p->full) { // DRTune, ReFL: the UNet input is detached; each trained step gets w_t g
        double w[ENGINE_MAX_STEPS + 1];
        drtune_weights_walk(e->sched, e->eta, p, w);
        int last = 0;
        for (int t = 1; t <= N; t++)
            if (w[t] != 0.0) last = t;
        for (int t = 1; t <= N; t++) {
            if (w[t] == 0.0) continue;
            unet_eval(e, c, t, &e->xs[t]);
            unet_eval_backward(e, &e->g, w[t], NULL, t == last);
        }
    } else { // DRaFT, AlignProp: walk back through the last k steps with the UNet input gradient
        tensor_copy(&e->G, &e->g);
        for (int t = 1; t <= p->k; t++) {
            DdimStep cf = ddim_step_coef(e->sched, N - t, e->eta);
            unet_eval(e, c, t, &e->xs[t]);
            int last = t == p->k;
            unet_eval_backward(e, &e->G, cf.B, last ? NULL : &e->dx, last);
            if (last) break;
            tensor_scale(&e->G, (float)cf.A); // G_t = A_t G_{t-1} + B_t J_t^T G_{t-1}
            tensor_axpy(&e->G, 1.0f, &e->dx);
        }
    }
    res->sec_backward = dt_now() - tb;
}
