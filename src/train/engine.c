// engine.c: the gradient methods of docs/METHOD.md as one engine: phase 1 rolls the sampler out without gradients
// and keeps only the latents of the steps that will train; the read-out is decoded and scored, and the reward
// gradient is carried back through the reward and the decoder to g = d loss / d x0; phase 2 recomputes one UNet
// evaluation per trained step and backpropagates its share of g (scalar weights for DRTune and ReFL, whose UNet
// input is detached; a step-by-step walk with the UNet input gradient for DRaFT and AlignProp).
#include "engine.h"

#include <math.h>
#include <string.h>

#include "../core/common.h"
#include "../core/device.h"
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
    static const char *reduce = "the batch per rank (train.batch, or the number of prompts) or the image size "
                                "(sampler.height and sampler.width, or --height and --width)";
    arena_init(&e->unet_mem, "unet-acts", DEVICE_CPU);
    arena_set_reduce(&e->unet_mem, reduce);
    unet_plan_acts(&e->unet_mem, &e->acts, unet, e->rows, h, w, T);
    arena_alloc(&e->unet_mem);
    arena_init(&e->vae_mem, "vae-acts", DEVICE_CPU);
    arena_set_reduce(&e->vae_mem, reduce);
    vae_plan_decode_acts(&e->vae_mem, &e->vacts, vae, B, h, w);
    arena_alloc(&e->vae_mem);
    Arena *a = &e->mem;
    arena_init(a, "engine", DEVICE_CPU);
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
    arena_alloc(a);
    e->reward = xcalloc((size_t)B, sizeof(float));
    e->dscore = xcalloc((size_t)B, sizeof(float));
    e->per_reward = xcalloc((size_t)(B * (rewards->n > 0 ? rewards->n : 1)), sizeof(float));
}

void engine_free(Engine *e) {
    unet_acts_free(&e->acts);
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

// e->eps = CFG(UNet(x)) at step t, keeping the UNet activations for unet_eval_backward
static void unet_eval(Engine *e, const UNetCond *c, int t, const Tensor *x) {
    int64_t n = tensor_numel(x);
    float *xin = e->xin.data;
    for (int r = 0; r < e->rows / e->B; r++) memcpy(xin + r * n, x->data, sizeof(float) * (size_t)n);
    float tau = (float)e->sched->timesteps[e->sched->num_inference_steps - t];
    tensor_fill(&e->tsteps, tau);
    unet_forward(e->unet, &e->acts, &e->eps_rows, &e->xin, &e->tsteps, c->context, c->text_embeds, c->time_ids);
    float *eps = e->eps.data;
    const float *er = e->eps_rows.data;
    if (e->rows == e->B) {
        memcpy(eps, er, sizeof(float) * (size_t)n);
        return;
    }
    const float w = e->guidance;
    for (int64_t i = 0; i < n; i++) eps[i] = er[i] + w * (er[n + i] - er[i]); // uncond + w (cond - uncond)
}

// backward of the last unet_eval with upstream deps [B, ...] scaled by `scale`: parameter gradients accumulate;
// dx (optional) receives the gradient at x summed over both guidance branches. `last`: the iteration's last
// backward, which reports finished gradient parts to e->ready.
static void unet_eval_backward(Engine *e, const Tensor *deps, double scale, Tensor *dx, int last) {
    int64_t n = tensor_numel(deps);
    const float *d = deps->data;
    float *dr = e->deps_rows.data;
    if (e->rows == e->B) {
        for (int64_t i = 0; i < n; i++) dr[i] = (float)(scale * d[i]);
    } else { // eps = (1 - w) eps_u + w eps_c
        const double w = e->guidance;
        for (int64_t i = 0; i < n; i++) {
            dr[i] = (float)((1.0 - w) * scale * d[i]);
            dr[n + i] = (float)(w * scale * d[i]);
        }
    }
    e->acts.ready = last ? e->ready : NULL;
    e->acts.ready_ctx = e->ready_ctx;
    unet_backward(e->unet, e->grads, &e->acts, &e->deps_rows, dx ? &e->dx_rows : NULL, NULL);
    e->acts.ready = NULL;
    if (!dx) return;
    float *o = dx->data;
    const float *r = e->dx_rows.data;
    for (int64_t i = 0; i < n; i++) o[i] = e->rows == e->B ? r[i] : r[i] + r[n + i];
}

// ---------------------------------------------------------------------------------------------------------------
// decoding and scoring

double engine_score(Engine *e, const Tensor *x0, const char *const *prompts) {
    vae_decode(e->vae, &e->vacts, &e->image, x0);
    rewardset_score(e->rewards, &e->image, prompts, e->reward, e->per_reward, NULL, NULL);
    double loss = 0;
    for (int b = 0; b < e->B; b++) loss -= (double)e->loss_scale * e->reward[b];
    return loss;
}

void engine_eps(Engine *e, const UNetCond *c, int t, const Tensor *x, Tensor *eps) {
    unet_eval(e, c, t, x);
    tensor_copy(eps, &e->eps);
}

// Decodes x0, scores it and, when g != NULL, writes g = d(-scale sum_b reward_b) / d x0. Returns that loss.
static double decode_score_backward(Engine *e, const Tensor *x0, const char *const *prompts, double scale, Tensor *g,
                                    IterResult *res) {
    double t0 = dt_now();
    vae_decode(e->vae, &e->vacts, &e->image, x0);
    double t1 = dt_now();
    for (int b = 0; b < e->B; b++) e->dscore[b] = (float)-scale;
    rewardset_score(e->rewards, &e->image, prompts, e->reward, e->per_reward, g ? &e->dimage : NULL, e->dscore);
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

static const Tensor *step_noise(const Engine *e, const Tensor *z, int t, Tensor *view) {
    if (e->eta <= 0.0f) return NULL;
    CHECK(z != NULL, "pass the step noise", "eta > 0 needs step noise");
    int64_t n = (int64_t)e->B * e->C * e->h * e->w;
    *view = tensor_f32_4d((float *)z->data + (int64_t)(e->sched->num_inference_steps - t) * n, e->B, e->C, e->h, e->w);
    return view;
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
    rollout(e, c, xT, z, 0, NULL);
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
    rollout(e, c, xT, z, p->t_min, p->trained);
    res->sec_rollout = dt_now() - t0;

    if (p->lv_copies > 0) { // DRaFT-LV: re-noise the final x0 to step 1, one step with gradient per copy
        CHECK(lv_noise != NULL, "", "draft-lv needs its re-noising noise");
        int64_t n = tensor_numel(&e->x);
        int K = e->rewards->n;
        float *mean_reward = xcalloc((size_t)e->B, sizeof(float));
        float *mean_per = xcalloc((size_t)(e->B * (K > 0 ? K : 1)), sizeof(float));
        double scale = e->loss_scale / p->lv_copies;
        tensor_copy(&e->tmp, &e->x0); // the rollout's x0
        DdimStep c1 = ddim_step_coef(e->sched, N - 1, e->eta);
        for (int j = 0; j < p->lv_copies; j++) {
            Tensor nz = tensor_f32_4d((float *)lv_noise->data + j * n, e->B, e->C, e->h, e->w), zv;
            ddim_add_noise(e->sched, e->sched->timesteps[N - 1], &e->x, &e->tmp, &nz);
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
