// engine.h: one iteration of reward fine-tuning, for every gradient method (docs/METHOD.md): the no-gradient
// rollout with classifier-free guidance, decoding and scoring, and the method's backward into the UNet's trainable
// parameters. The same rollout serves plain sampling. Noise comes in from the caller (keyed by global sample index),
// so a run does not depend on how samples are split across ranks, and tools can feed noise from a file.
#pragma once
#include <stdint.h>

#include "../core/arena.h"
#include "../diffusion/ddim.h"
#include "../models/unet.h"
#include "../models/vae.h"
#include "../rewards/reward.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ENGINE_MAX_STEPS 1000

typedef enum { METHOD_DRTUNE, METHOD_REFL, METHOD_DRAFT, METHOD_DRAFT_LV, METHOD_ALIGNPROP } Method;
// Names by Method ("drtune", "refl", "draft", "draft-lv", "alignprop"), NULL-terminated: the config's choices.
extern const char *const METHOD_NAMES[];
const char *method_name(Method m);

typedef struct {
    Method method;
    int K;                 // DRTune trained steps; DRaFT K; AlignProp's largest k
    int m;                 // early stop drawn in [1, m] (DRTune, ReFL); 0: read the final x0
    int lv_copies;         // DRaFT-LV re-noised copies
    int phase, t_min, k;   // fixed choices for tests; -1: drawn
    int draw_in_executed;  // DRTune: space the trained steps inside [t_min, N]
} MethodConfig;

// One iteration's choices (docs/METHOD.md), by step t = 1..N.
typedef struct {
    int N;
    int t_min;                             // read-out step; 0: the final x0
    unsigned char trained[ENGINE_MAX_STEPS + 1];
    int full;                              // gradient through the UNet input (DRaFT, AlignProp)
    int lv_copies;                         // DRaFT-LV: copies re-noised to step 1
    int phase, k;                          // as drawn (for logs)
} IterPlan;

// Draws the plan of iteration `it` from (seed, RNG_PURPOSE_SCHEDULE): the same on every rank.
void iter_plan_draw(IterPlan *plan, const MethodConfig *mc, int N, uint64_t seed, uint64_t it);
// DRTune / ReFL: the scalar weight of each trained step's eps in the read-out, by the step-by-step walk (w[t],
// t = 1..N; 0 for steps that carry no gradient) and by the closed form of sigma differences (eta = 0, epsilon
// prediction only). Both include the read-out's own coefficient.
void drtune_weights_walk(const Ddim *s, float eta, const IterPlan *plan, double *w);
void drtune_weights_closed(const Ddim *s, const IterPlan *plan, double *w);

// UNet conditioning rows: with guidance, rows 0..B-1 unconditional then B..2B-1 conditional.
typedef struct {
    const Tensor *context;     // [rows, T, D]
    const Tensor *text_embeds; // [rows, P] or NULL
    const Tensor *time_ids;    // [rows, 6] or NULL
} UNetCond;

// A captured CUDA graph and the pointers it was captured with (when one moves, it is captured again).
typedef struct {
    struct CudaGraph *g;
    const void *key[8];
} EngineGraph;

typedef struct {
    const UNet *unet;
    UNet *grads;               // parameter gradients (accumulated); NULL: sampling only
    const VAE *vae;
    const Ddim *sched;         // timesteps set: N = sched->num_inference_steps
    const RewardSet *rewards;
    float guidance;            // > 1: classifier-free guidance
    float eta;
    float loss_scale;          // 1 / global batch: the loss is -loss_scale * sum of this call's rewards
    void (*ready)(void *ctx, int part); // called during an iteration's last UNet backward as the parameter
    void *ready_ctx;                    // gradients of each UNet part become final (unet.h); NULL: not called
    int B, C, h, w;            // images per call, latent channels and size
    int rows;                  // B, or 2B with guidance
    Device device;             // where the UNet and VAE weights live: everything of an iteration runs there
    Arena mem, unet_mem, vae_mem; // latents and buffers below; UNet activations; decoder activations
    UNetActs acts;
    VAEDecodeActs vacts;
    Tensor x, xnext, eps, x0, g, G, dx, tmp;          // [B, C, h, w]
    Tensor xin, eps_rows, deps_rows, dx_rows, tsteps; // [rows, C, h, w], [rows]
    Tensor image, dimage;                             // [B, 3, 8h?, ...] decoder output
    // on the GPU, the caller's host inputs are copied here: conditioning [rows, T, D], [rows, P], [rows, 6]; one
    // step's DDIM noise and one DRaFT-LV copy's noise [B, C, h, w]
    Tensor ctx, text_embeds, time_ids, zstep, nz;
    Tensor dev_reward, dev_per_reward, dev_dscore;    // the rewards' device arrays [B], [K, B], [B]
    UNetCond dcond;
    Tensor *xs;                                       // [N + 1] stored latents by step
    float *reward, *dscore;                           // [B]
    float *per_reward;                                // [K, B] each reward's unweighted score
    // GPU: the guided UNet evaluation (both guidance branches) and its backward (without, with the input
    // gradient) as CUDA graphs, each captured at its first use and replayed after
    int graphs;
    EngineGraph graph_fwd, graph_bwd[2];
} Engine;

// Plans and allocates the engine's memory for B images of latent C x h x w, context length T, N steps, on the
// device of the UNet's weights (the VAE's must be there too). Inputs (noise, conditioning, latents) may come from
// the host: the engine copies them to its device.
void engine_init(Engine *e, const UNet *unet, UNet *grads, const VAE *vae, const Ddim *sched, const RewardSet *rewards,
                 float guidance, float eta, int B, int h, int w, int T);
void engine_free(Engine *e);
// GPU: on (the default there, unless DRTUNE_CUDA_GRAPHS=0) runs each guided UNet evaluation of the rollout and of
// phase 2, and each phase-2 UNet backward but the last of an iteration with a gradient-ready hook (engine.ready),
// as the replay of a CUDA graph: the same results, bit for bit, with one launch instead of hundreds; off launches
// every kernel. Nothing on the CPU.
void engine_set_graphs(Engine *e, int on);
// Activation recompute of the UNet for the engines initialised after this call (train.recompute; default off).
// Auto with budget 0: 3/4 of the memory the device has available when the engine plans its UNet activations, the
// rest left for the decoder's activations, the latents and the ops' workspaces.
void engine_set_recompute(const UNetRecompute *rc);

typedef struct {
    double loss;               // this call's share of the loss
    float *reward;             // [B] total reward per image (mean over copies for DRaFT-LV); points into the engine
    float *per_reward;         // [K, B] each configured reward's unweighted score (same averaging)
    double sec_rollout, sec_decode, sec_reward, sec_backward;
} IterResult;

// Rollout without gradients: x0 [B, C, h, w] from x_T (z: [N, B, C, h, w] step noise when eta > 0, index N - t).
void engine_sample(Engine *e, const UNetCond *c, const Tensor *xT, const Tensor *z, Tensor *x0);
// Decodes latents into e->image and scores them into e->reward (no gradient); returns the loss
// -loss_scale * sum_b reward_b.
double engine_score(Engine *e, const Tensor *x0, const char *const *prompts);
// eps [B, C, h, w] = the guided UNet output at step t (1..N) for latents x (no gradient).
void engine_eps(Engine *e, const UNetCond *c, int t, const Tensor *x, Tensor *eps);
// One iteration: accumulates d loss / d theta into e->grads. lv_noise: [copies, B, C, h, w] for DRaFT-LV.
void engine_iteration(Engine *e, const IterPlan *plan, const UNetCond *c, const char *const *prompts,
                      const Tensor *xT, const Tensor *z, const Tensor *lv_noise, IterResult *res);

#ifdef __cplusplus
}
#endif
