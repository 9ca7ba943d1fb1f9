// engine_methods.c: every gradient method's parameter gradient for one iteration against the PyTorch autograd
// implementation of the same method (tests/fixtures/engine_ref.safetensors, tools/reference/make_engine_fixture.py:
// diffusers UNet and VAE, same weights, noise and choices): ||a - b|| / ||b|| <= 1e-3 over all parameters, plus the
// loss, rewards and read-out latents; DRTune's step-by-step weights against the closed form; and central
// differences of the iteration's loss along random parameter directions.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../src/core/common.h"
#include "../src/core/device.h"
#include "../src/core/rng.h"
#include "../src/models/pipeline.h"
#include "../src/train/engine.h"
#include "../src/train/lora.h"
#include "engine_setup.h"
#include "fixture.h"
#include "testutil.h"

typedef EngineSetup Setup;

static void setup(Setup *s, const SafeTensors *ref) {
    engine_setup_models(s);
    Tensor cond = fixture_get(ref, "cond"), uncond = fixture_get(ref, "uncond");
    int64_t B = cond.shape[0], T = cond.shape[1], D = cond.shape[2];
    s->ctx = tensor_make(NULL, DTYPE_F32, DEVICE_CPU, 3, (int64_t[]){2 * B, T, D});
    s->ctx.data = xmalloc(tensor_bytes(&s->ctx));
    memcpy(s->ctx.data, uncond.data, tensor_bytes(&uncond)); // unconditional rows first
    memcpy((float *)s->ctx.data + B * T * D, cond.data, tensor_bytes(&cond));
    s->cond = (UNetCond){&s->ctx, NULL, NULL};
    Tensor g = fixture_get(ref, "guidance_scale");
    engine_init(&s->e, &s->unet, &s->grads, &s->vae, &s->sched, &s->rewards, ((float *)g.data)[0], 0.0f, (int)B, 8,
                8, (int)T);
}

static int get_int(const SafeTensors *ref, const char *name, int def) {
    if (!safetensors_find(ref, name)) return def;
    Tensor t = fixture_get(ref, name);
    int v = ((int32_t *)t.data)[0];
    free(t.data);
    return v;
}

static Lora *g_lora; // set while the LoRA cases run

// ||a - b|| / ||b|| over every gradient in grads (a) against the reference's "<case>.<kind>.<name>" (b): at most 1e-3.
static void check_grads(const Arena *grads, const SafeTensors *ref, const char *cas, const char *kind,
                        const char *what) {
    double num = 0, den = 0;
    for (int i = 0; i < grads->n; i++) {
        const ArenaEntry *en = &grads->entries[i];
        char name[700];
        snprintf(name, sizeof name, "%s.%s.%s", cas, kind, en->name);
        Tensor r = fixture_get(ref, name);
        const float *a = en->desc.data, *b = r.data;
        for (int64_t k = 0; k < tensor_numel(&r); k++) {
            num += ((double)a[k] - b[k]) * ((double)a[k] - b[k]);
            den += (double)b[k] * b[k];
        }
        free(r.data);
    }
    double err = sqrt(num / den);
    tu_check(err <= 1e-3, "%s %s ||a - b|| / ||b|| = %.3e (tol 1e-3)", cas, what, err);
}

static void run_case(Setup *s, const SafeTensors *ref, const char *cas, Method m, int full_grads) {
    char name[128];
    MethodConfig mc = {.method = m, .phase = -1, .t_min = -1, .k = -1};
    snprintf(name, sizeof name, "%s.K", cas);
    mc.K = get_int(ref, name, 1);
    snprintf(name, sizeof name, "%s.phase", cas);
    mc.phase = get_int(ref, name, -1);
    snprintf(name, sizeof name, "%s.t_min", cas);
    mc.t_min = get_int(ref, name, -1);
    mc.m = mc.t_min > 0 ? mc.t_min : 0;
    snprintf(name, sizeof name, "%s.k", cas);
    mc.k = get_int(ref, name, -1);
    if (m == METHOD_ALIGNPROP) mc.K = mc.k;
    snprintf(name, sizeof name, "%s.n", cas);
    mc.lv_copies = get_int(ref, name, 0);
    IterPlan plan;
    iter_plan_draw(&plan, &mc, 6, 0, 0);
    // the plan's trained steps are the reference's
    snprintf(name, sizeof name, "%s.trained", cas);
    Tensor tr = fixture_get(ref, name);
    int same = 1;
    for (int64_t i = 0; i < tensor_numel(&tr); i++) {
        int t = ((int32_t *)tr.data)[i];
        if (t >= 1 && t <= 6 && !plan.trained[t]) same = 0;
    }
    int count = 0;
    for (int t = 1; t <= 6; t++) count += plan.trained[t];
    same &= count == (int)tensor_numel(&tr) || m == METHOD_DRAFT_LV;
    tu_check(same, "%s: trained steps as in the reference", cas);

    Tensor xT = fixture_get(ref, "x_T");
    Tensor z = {0}, lv = {0};
    snprintf(name, sizeof name, "%s.eta", cas);
    float eta = 0.0f;
    if (safetensors_find(ref, name)) {
        Tensor et = fixture_get(ref, name);
        eta = ((float *)et.data)[0];
    }
    s->e.eta = eta;
    snprintf(name, sizeof name, "%s.z", cas);
    if (eta > 0) z = fixture_get(ref, name);
    if (m == METHOD_DRAFT_LV) lv = fixture_get(ref, name);
    arena_zero(&s->gradmem);
    if (g_lora) arena_zero(&g_lora->grads);
    IterResult res;
    const char *prompts[2] = {"", ""};
    engine_iteration(&s->e, &plan, &s->cond, prompts, &xT, eta > 0 ? &z : NULL, m == METHOD_DRAFT_LV ? &lv : NULL,
                     &res);
    if (g_lora) {
        snprintf(name, sizeof name, "%s.lora_loss", cas);
        Tensor rl = fixture_get(ref, name);
        Tensor got_loss = tensor_f32_1d((float[]){(float)res.loss}, 1);
        snprintf(name, sizeof name, "%s LoRA loss", cas);
        tu_count(fixture_compare(name, &got_loss, &rl, 1e-5));
        check_grads(&g_lora->grads, ref, cas, "lora_grad", "LoRA-gradient");
        return;
    }
    snprintf(name, sizeof name, "%s.loss", cas);
    Tensor rl = fixture_get(ref, name);
    Tensor got_loss = tensor_f32_1d((float[]){(float)res.loss}, 1);
    snprintf(name, sizeof name, "%s loss", cas);
    tu_count(fixture_compare(name, &got_loss, &rl, 1e-5));
    snprintf(name, sizeof name, "%s.reward", cas);
    Tensor rr = fixture_get(ref, name);
    Tensor got_r = tensor_f32_1d(res.reward, s->e.B);
    snprintf(name, sizeof name, "%s rewards", cas);
    tu_count(fixture_compare(name, &got_r, &rr, 1e-5));
    if (m != METHOD_DRAFT_LV) {
        snprintf(name, sizeof name, "%s.x0", cas);
        Tensor rx = fixture_get(ref, name);
        snprintf(name, sizeof name, "%s read-out latent", cas);
        tu_count(fixture_compare(name, &s->e.x0, &rx, 1e-4));
    }
    if (full_grads) check_grads(&s->gradmem, ref, cas, "grad", "full-gradient");
}

// The reference's cases, run with full and then with LoRA gradients; full_grads: also compare every parameter's
// full gradient.
static const struct {
    const char *name;
    Method method;
    int full_grads;
} CASES[] = {
    {"drtune_k2", METHOD_DRTUNE, 1}, {"draft_k2", METHOD_DRAFT, 1}, {"drtune_k3_noes", METHOD_DRTUNE, 0},
    {"drtune_eta", METHOD_DRTUNE, 0}, {"refl", METHOD_REFL, 0}, {"draftlv", METHOD_DRAFT_LV, 0},
    {"alignprop_k3", METHOD_ALIGNPROP, 0},
};
enum { N_CASES = sizeof CASES / sizeof CASES[0] };

// The loss as a function of the parameters with everything the method detaches held fixed (its "surrogate"),
// evaluated at theta + h v: DRTune / ReFL move only the trained steps' eps at the stored latents, so
// x0(theta) = x0(theta_0) + sum_t w_t (eps_t(theta) - eps_t(theta_0)); DRaFT reruns its last k steps from x_k.
typedef struct {
    Setup *s;
    const IterPlan *plan;
    Tensor base_x0, *base_eps, v;
    double w[ENGINE_MAX_STEPS + 1];
} Surrogate;

static double surrogate_loss(Surrogate *q, double h) {
    Setup *s = q->s;
    Engine *e = &s->e;
    float *p = s->params.base;
    const float *v = q->v.data;
    int64_t n = (int64_t)(s->params.size / sizeof(float));
    for (int64_t i = 0; i < n; i++) p[i] += (float)(h * v[i]);
    const char *prompts[2] = {"", ""};
    float xb[2 * 4 * 8 * 8], eb[2 * 4 * 8 * 8], nb[2 * 4 * 8 * 8];
    Tensor x0 = tensor_f32_4d(xb, 2, 4, 8, 8), eps = tensor_f32_4d(eb, 2, 4, 8, 8), nx = tensor_f32_4d(nb, 2, 4, 8, 8);
    if (!q->plan->full) {
        tensor_copy(&x0, &q->base_x0);
        for (int t = 1; t <= q->plan->N; t++) {
            if (q->w[t] == 0.0) continue;
            engine_eps(e, &s->cond, t, &e->xs[t], &eps);
            for (int k = 0; k < 2 * 4 * 8 * 8; k++)
                xb[k] += (float)(q->w[t] * ((double)eb[k] - ((float *)q->base_eps[t].data)[k]));
        }
    } else {
        tensor_copy(&x0, &e->xs[q->plan->k]);
        for (int t = q->plan->k; t >= 1; t--) {
            engine_eps(e, &s->cond, t, &x0, &eps);
            ddim_step(&s->sched, q->plan->N - t, 0.0f, &nx, NULL, &eps, &x0, NULL);
            tensor_copy(&x0, &nx);
        }
    }
    double loss = engine_score(e, &x0, prompts);
    for (int64_t i = 0; i < n; i++) p[i] -= (float)(h * v[i]);
    return loss;
}

// d loss / d h along random directions: central differences with Richardson extrapolation against <grad, v>
static void finite_difference_check(Setup *s, Method m, const char *what) {
    MethodConfig mc = {.method = m, .K = 2, .m = 2, .phase = 1, .t_min = m == METHOD_DRAFT ? -1 : 2, .k = -1};
    IterPlan plan;
    iter_plan_draw(&plan, &mc, 6, 0, 0);
    Tensor xT = tensor_f32_4d(xmalloc(sizeof(float) * 512), 2, 4, 8, 8);
    rng_normal_fill(xT.data, 512, 5, RNG_STREAM(RNG_PURPOSE_LATENT, 0, 0), 0);
    const char *prompts[2] = {"", ""};
    s->e.eta = 0.0f;
    arena_zero(&s->gradmem);
    IterResult res;
    engine_iteration(&s->e, &plan, &s->cond, prompts, &xT, NULL, NULL, &res);
    Surrogate q = {.s = s, .plan = &plan};
    q.base_x0 = tensor_f32_4d(xmalloc(sizeof(float) * 512), 2, 4, 8, 8);
    tensor_copy(&q.base_x0, &s->e.x0);
    q.base_eps = xcalloc(7, sizeof(Tensor));
    drtune_weights_walk(&s->sched, 0.0f, &plan, q.w);
    for (int t = 1; t <= 6 && !plan.full; t++)
        if (q.w[t] != 0.0) {
            q.base_eps[t] = tensor_f32_4d(xmalloc(sizeof(float) * 512), 2, 4, 8, 8);
            engine_eps(&s->e, &s->cond, t, &s->e.xs[t], &q.base_eps[t]);
        }
    int64_t n = (int64_t)(s->params.size / sizeof(float));
    q.v = tensor_f32_1d(xmalloc(sizeof(float) * (size_t)n), n);
    for (int dir = 0; dir < 3; dir++) {
        rng_normal_fill(q.v.data, n, 11, RNG_STREAM(RNG_PURPOSE_TEST, dir, 0), 0);
        double dot = 0, h = 2e-3;
        const float *g = s->gradmem.base, *v = q.v.data;
        for (int64_t i = 0; i < n; i++) dot += (double)g[i] * v[i];
        double d1 = (surrogate_loss(&q, h) - surrogate_loss(&q, -h)) / (2 * h);
        double d2 = (surrogate_loss(&q, h / 2) - surrogate_loss(&q, -h / 2)) / h;
        double num = (4 * d2 - d1) / 3;
        // the loss (~0.3) carries fp32 rounding of ~3e-8 per evaluation; over steps of 1e-3 and 2e-3 and the
        // extrapolation that is ~1e-5 absolute on derivatives of 2e-3 .. 3e-2, so 1% relative is the honest bound
        double err = fabs(num - dot) / fabs(num);
        tu_check(err < 1e-2, "%s finite differences along direction %d: numeric %.6e analytic %.6e (rel %.1e)", what,
                 dir, num, dot, err);
    }
}

int main(void) {
    SafeTensors ref;
    safetensors_open(&ref, "tests/fixtures/engine_ref.safetensors");
    Setup s;
    setup(&s, &ref);
    Tensor ts = fixture_get(&ref, "timesteps");
    Tensor ours = tensor_make(s.sched.timesteps, DTYPE_I32, DEVICE_CPU, 1, (int64_t[]){6});
    tu_count(fixture_compare_i32("timesteps", &ours, &ts));

    for (int i = 0; i < N_CASES; i++) run_case(&s, &ref, CASES[i].name, CASES[i].method, CASES[i].full_grads);

    // DRTune weights: step-by-step walk == closed form == reference
    const char *cases[3] = {"drtune_k2", "drtune_k3_noes", "refl"};
    for (int c = 0; c < 3; c++) {
        char name[64];
        MethodConfig mc = {.method = c == 2 ? METHOD_REFL : METHOD_DRTUNE, .K = c == 1 ? 3 : 2, .m = c == 1 ? 0 : 2,
                           .phase = 1, .t_min = c == 1 ? -1 : 2, .k = -1};
        IterPlan plan;
        iter_plan_draw(&plan, &mc, 6, 0, 0);
        double w1[ENGINE_MAX_STEPS + 1], w2[ENGINE_MAX_STEPS + 1];
        drtune_weights_walk(&s.sched, 0.0f, &plan, w1);
        drtune_weights_closed(&s.sched, &plan, w2);
        snprintf(name, sizeof name, "%s.weights", cases[c]);
        Tensor rw = fixture_get(&ref, name);
        double worst = 0;
        for (int t = 1; t <= 6; t++) {
            double a = fabs(w1[t] - w2[t]), b = fabs(w1[t] - ((float *)rw.data)[t - 1]);
            if (a > worst) worst = a;
            if (b > worst) worst = b;
        }
        // walk (products of fp32 coefficients, in double) vs sigma differences: fp32 rounding of 1 - abar
        tu_check(worst < 1e-6, "%s: walk, closed form and reference weights agree (max diff %.2e)", cases[c], worst);
    }
    // LoRA: adapters rank 2, alpha 2 on every attention projection, initialised from the reference
    UNet lgrads;
    Arena plan_only;
    arena_init(&plan_only, "plan", DEVICE_CPU);
    unet_plan_params(&plan_only, &lgrads, &s.unet.cfg);
    arena_free(&plan_only);
    Lora lora;
    const char *targets[4] = {"to_q", "to_k", "to_v", "to_out.0"};
    lora_attach(&lora, &s.unet, &s.params, &lgrads, 2, 2.0f, targets, 4, 0, "test");
    for (int i = 0; i < lora.params.n; i++) {
        char name[700];
        snprintf(name, sizeof name, "lora_init.%s", lora.params.entries[i].name);
        safetensors_read_into(&ref, name, &lora.params.entries[i].desc);
    }
    UNet *full = s.e.grads;
    s.e.grads = &lgrads;
    g_lora = &lora;
    for (int i = 0; i < N_CASES; i++) run_case(&s, &ref, CASES[i].name, CASES[i].method, 0);
    g_lora = NULL;
    s.e.grads = full;
    lora_free(&lora);
    unet_free(&lgrads);

    finite_difference_check(&s, METHOD_DRTUNE, "drtune");
    finite_difference_check(&s, METHOD_DRAFT, "draft");
    engine_free(&s.e);
    safetensors_close(&ref);
    return tu_report();
}
