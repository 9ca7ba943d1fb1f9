// cudaemu_graphs.c: CUDA graphs, from the runtime up to the rollout. (a) What a capture records and a launch
// replays: nothing runs while capturing; kernel arguments are the values at capture, device memory is read at each
// replay; clears and device copies are recorded; cuBLASLt and cuDNN calls keep the descriptors they were captured
// with (the GEMM plan's bias pointer is reset per call); a replay allocates nothing. (b) The calls a capture must
// refuse (synchronising, allocating, synchronous and pageable copies) fail and invalidate it, through the raw
// runtime and through drtune's own device calls. (c) The guided rollout of the small model (data/models/tiny) with
// the UNet evaluation replayed as a graph gives the same latents, bit for bit, as with every kernel launched, with
// and without DDIM noise, fp32 and bf16. Emulated GPU in CI (label cudaemu); cuda_graphs on a real one.
#include <string.h>

#include "cudaemu_util.h"
#include "../src/ops/ops.h"
#include "../src/rewards/reward.h"
#include "../src/train/model.h"
#include "../src/train/setup.h"

void gr_axpy(float *y, const float *x, float a, int n);
void gr_count(int *c);
int gr_capture_call(int which, void *dev, size_t bytes, int *end, int *after);

enum { CAPTURE_UNSUPPORTED = 900, CAPTURE_INVALIDATED = 901 }; // cudaErrorStreamCapture{Unsupported,Invalidated}

static void up(void *d, const void *h, size_t bytes) { device_copy(d, DEVICE_CUDA, h, DEVICE_CPU, bytes); }
static void down(void *h, const void *d, size_t bytes) { device_copy(h, DEVICE_CPU, d, DEVICE_CUDA, bytes); }

// integer-valued floats: every product and sum below is exact, on any GPU (FMA or not)
static void int_fill(float *x, int n, int k) {
    for (int i = 0; i < n; i++) x[i] = (float)((i * 7 + k * 13) % 23 - 11);
}

static void test_record_replay(void) {
    const int n = 1000; // not a multiple of the block
    size_t bytes = sizeof(float) * n;
    float *x = device_alloc(DEVICE_CUDA, bytes), *y = device_alloc(DEVICE_CUDA, bytes);
    float *z = device_alloc(DEVICE_CUDA, bytes);
    int *cnt = device_alloc(DEVICE_CUDA, sizeof(int));
    float *hx = xmalloc(bytes), *hx2 = xmalloc(bytes), *hy = xmalloc(bytes), *want = xmalloc(bytes);
    float *got = xmalloc(bytes), *gz = xmalloc(bytes);
    int_fill(hx, n, 1), int_fill(hx2, n, 2), int_fill(hy, n, 3);
    up(x, hx, bytes), up(y, hy, bytes);
    float a = 2.0f;
    tu_check(!cuda_graph_capturing(), "no capture before cuda_graph_begin");
    cuda_graph_begin();
    tu_check(cuda_graph_capturing(), "the compute stream captures after cuda_graph_begin");
    gr_axpy(y, x, a, n);                                   // y = 2 x + y
    gr_count(cnt);                                         // cnt += 1
    device_copy(z, DEVICE_CUDA, y, DEVICE_CUDA, bytes);    // z = y
    device_zero(DEVICE_CUDA, x, sizeof(float));            // x[0] = 0 (a recorded clear)
    CudaGraph *g = cuda_graph_end();
    a = 5.0f; // the kernel keeps the value it was captured with
    tu_check(!cuda_graph_capturing(), "no capture after cuda_graph_end");
    tu_check(cuda_graph_nodes(g) == 4, "the graph holds the 4 captured operations (%zu)", cuda_graph_nodes(g));
    int c = -1;
    down(got, y, bytes), down(gz, z, bytes), down(&c, cnt, sizeof c);
    int ran = memcmp(got, hy, bytes) != 0 || c != 0;
    for (int i = 0; i < n; i++) ran |= gz[i] != 0.0f;
    tu_check(!ran, "nothing runs while capturing (y, z and the counter unchanged)");

    long long allocs = device_alloc_count();
    cuda_graph_launch(g);
    for (int i = 0; i < n; i++) want[i] = 2.0f * hx[i] + hy[i];
    down(got, y, bytes), down(gz, z, bytes), down(&c, cnt, sizeof c);
    tu_check(!memcmp(got, want, bytes) && !memcmp(gz, want, bytes) && c == 1,
             "first replay: y = 2 x + y with the captured a = 2, z = y, one count (%d)", c);
    float x0;
    down(&x0, x, sizeof x0);
    tu_check(x0 == 0.0f, "first replay: the recorded clear ran");
    up(x, hx2, bytes); // new contents: the replay reads them
    cuda_graph_launch(g);
    for (int i = 0; i < n; i++) want[i] = 2.0f * hx2[i] + want[i];
    down(got, y, bytes), down(gz, z, bytes), down(&c, cnt, sizeof c);
    tu_check(!memcmp(got, want, bytes) && !memcmp(gz, want, bytes) && c == 2,
             "second replay reads x as it is now (kernel arguments by value, memory at replay); count %d", c);
    tu_check(device_alloc_count() == allocs, "replays allocate no device memory (%lld)", device_alloc_count() - allocs);
    cuda_graph_free(g);
    device_free(DEVICE_CUDA, x), device_free(DEVICE_CUDA, y), device_free(DEVICE_CUDA, z);
    device_free(DEVICE_CUDA, cnt);
    free(hx), free(hx2), free(hy), free(want), free(got), free(gz);
}

// cuBLASLt (linear) and cuDNN (3x3 convolution) inside a capture: two calls of one shape with different weights
// and biases share a GEMM plan whose bias pointer is set per call; each replayed call must keep its own.
static void test_libraries(void) {
    const int64_t N = 37, IC = 24, OC = 40, B = 2, C = 5, K = 6, H = 9, W = 11;
    Tensor in = cu_alloc(DEVICE_CPU, DTYPE_F32, 2, (int64_t[]){N, IC});
    Tensor w[2], b[2], wc = cu_alloc(DEVICE_CPU, DTYPE_F32, 4, (int64_t[]){K, C, 3, 3});
    Tensor bc = cu_alloc(DEVICE_CPU, DTYPE_F32, 1, (int64_t[]){K}), xc = cu_alloc(DEVICE_CPU, DTYPE_F32, 4, (int64_t[]){B, C, H, W});
    cu_fill(&in, 1, 1.0f, 0), cu_fill(&wc, 2, 0.2f, 0), cu_fill(&bc, 3, 1.0f, 0), cu_fill(&xc, 4, 1.0f, 0);
    Tensor gin = cu_upload(&in, DTYPE_F32), gw[2], gb[2];
    for (int i = 0; i < 2; i++) {
        w[i] = cu_alloc(DEVICE_CPU, DTYPE_F32, 2, (int64_t[]){OC, IC});
        b[i] = cu_alloc(DEVICE_CPU, DTYPE_F32, 1, (int64_t[]){OC});
        cu_fill(&w[i], 10 + i, 0.2f, 0), cu_fill(&b[i], 20 + i, 1.0f, 0);
        gw[i] = cu_upload(&w[i], DTYPE_F32), gb[i] = cu_upload(&b[i], DTYPE_F32);
    }
    Tensor gwc = cu_upload(&wc, DTYPE_F32), gbc = cu_upload(&bc, DTYPE_F32), gxc = cu_upload(&xc, DTYPE_F32);
    Tensor ref[3], out[3];
    for (int i = 0; i < 2; i++) {
        ref[i] = cu_alloc(DEVICE_CUDA, DTYPE_F32, 2, (int64_t[]){N, OC});
        out[i] = cu_alloc(DEVICE_CUDA, DTYPE_F32, 2, (int64_t[]){N, OC});
    }
    ref[2] = cu_alloc(DEVICE_CUDA, DTYPE_F32, 4, (int64_t[]){B, K, H, W});
    out[2] = cu_alloc(DEVICE_CUDA, DTYPE_F32, 4, (int64_t[]){B, K, H, W});
    // launched (this also plans the calls and grows the workspaces, as the engine's planning pass does)
    for (int i = 0; i < 2; i++) linear_forward(&ref[i], &gin, &gw[i], &gb[i]);
    conv2d_forward(&ref[2], &gxc, &gwc, &gbc, 1, 1);
    long long allocs = device_alloc_count();
    cuda_graph_begin();
    for (int i = 0; i < 2; i++) linear_forward(&out[i], &gin, &gw[i], &gb[i]);
    conv2d_forward(&out[2], &gxc, &gwc, &gbc, 1, 1);
    CudaGraph *g = cuda_graph_end();
    cuda_graph_launch(g);
    const char *what[3] = {"linear (bias 0)", "linear (bias 1, same GEMM plan)", "conv 3x3"};
    for (int i = 0; i < 3; i++) {
        float *r = cu_download(&ref[i]), *o = cu_download(&out[i]);
        tu_check(!memcmp(r, o, tensor_bytes(&ref[i])), "%s replayed from a graph: bit-identical to the launched call",
                 what[i]);
        free(r), free(o);
    }
    tu_check(device_alloc_count() == allocs, "library calls: capture and replay allocate nothing");
    cuda_graph_free(g);
    Tensor fr[] = {gin, gw[0], gw[1], gb[0], gb[1], gwc, gbc, gxc, ref[0], ref[1], ref[2], out[0], out[1], out[2]};
    for (int i = 0; i < 14; i++) cu_free(&fr[i]);
    Tensor hs[] = {in, w[0], w[1], b[0], b[1], wc, bc, xc};
    for (int i = 0; i < 8; i++) free(hs[i].data);
}

static void test_refused(void) {
    const char *name[8] = {"cudaStreamSynchronize of the capturing stream", "cudaMalloc", "cudaMemcpy",
                           "cudaMemcpyAsync from pageable host memory", "cudaDeviceSynchronize", "cudaFree",
                           "cudaMalloc in relaxed mode", "cudaMemsetAsync"};
    void *d = device_alloc(DEVICE_CUDA, 256);
    int strict = device_cuda_emulated(); // the emulator's exact codes; a GPU only has to refuse
    for (int k = 0; k < 8; k++) {
        int end = -1, after = -1, e = gr_capture_call(k, d, 256, &end, &after);
        if (k < 6)
            tu_check(e != 0 && (!strict || (e == CAPTURE_UNSUPPORTED && end == CAPTURE_INVALIDATED)) && !after,
                     "%s inside a capture is refused (error %d) and invalidates it (end capture: %d)", name[k], e, end);
        else
            tu_check(e == 0 && end == 0 && !after, "%s inside a capture is accepted (%d, end capture %d)", name[k], e,
                     end);
    }
    device_free(DEVICE_CUDA, d);
}

// drtune's own calls inside a capture: an internal failure naming the refused call
static void read_back_in_capture(const void *arg) {
    float *d = (float *)arg, h[4];
    cuda_graph_begin();
    device_copy(h, DEVICE_CPU, d, DEVICE_CUDA, sizeof h);
}
static void sync_in_capture(const void *arg) {
    (void)arg;
    cuda_graph_begin();
    device_synchronize(DEVICE_CUDA);
}
static void free_in_capture(const void *arg) {
    cuda_graph_begin();
    device_free(DEVICE_CUDA, (void *)arg);
}
static void test_refused_drtune(void) {
    float *d = device_alloc(DEVICE_CUDA, sizeof(float) * 4);
    TuChildFn fn[3] = {read_back_in_capture, sync_in_capture, free_in_capture};
    const char *what[3] = {"a copy to the host", "device_synchronize", "device_free"};
    for (int k = 0; k < 3; k++) {
        TuChild c;
        tu_run_child(fn[k], d, &c);
        tu_check(c.code == 1 && strstr(c.err, "operation not permitted when stream is capturing"),
                 "%s inside a capture is an internal failure naming the refusal (exit %d)", what[k], c.code);
        tu_child_free(&c);
    }
    device_free(DEVICE_CUDA, d);
}

// ---------------------------------------------------------------------------------------------------------------
// the rollout of the small model

// engine_sample with graphs off, then on twice (the capture, then a replay only): x0 of each run in out[3]
static void sample_three(Model *m, float eta, float *out[3], long long *replay_allocs, size_t *nodes) {
    const int B = 2, steps = m->sched.num_inference_steps;
    int H = m->unet.cfg.sample_size * 8, W = H, h = H / 8, w = W / 8;
    RewardSet none = {.items = NULL, .n = 0};
    Engine e;
    engine_init(&e, model_compute_unet(m), NULL, model_compute_vae(m), &m->sched, &none, 5.0f, eta, B, h, w, 77);
    PromptEmbeds emb;
    UNetCond cond;
    const char *prompts[2] = {"a red circle", "two blue squares"};
    model_condition(m, prompts, NULL, B, 1, H, W, &emb, &cond);
    int64_t lat = (int64_t)e.C * h * w, ids[2] = {0, 1};
    Tensor xT = tensor_f32_4d(xmalloc(sizeof(float) * (size_t)(lat * B)), B, e.C, h, w);
    Tensor z = tensor_make(xmalloc(sizeof(float) * (size_t)(lat * B * steps)), DTYPE_F32, DEVICE_CPU, 5,
                           (int64_t[]){steps, B, e.C, h, w});
    noise_latents(&xT, 11, ids);
    noise_steps(&z, 11, ids);
    for (int r = 0; r < 3; r++) {
        engine_set_graphs(&e, r > 0);
        out[r] = xmalloc(sizeof(float) * (size_t)(lat * B));
        Tensor x0 = tensor_f32_4d(out[r], B, e.C, h, w);
        long long before = device_alloc_count();
        engine_sample(&e, &cond, &xT, eta > 0 ? &z : NULL, &x0);
        if (r == 2) *replay_allocs = device_alloc_count() - before;
        if (r == 1) tu_check(e.graph_fwd.g != NULL, "graphs on: the UNet evaluation was captured");
    }
    *nodes = e.graph_fwd.g ? cuda_graph_nodes(e.graph_fwd.g) : 0;
    free(xT.data), free(z.data);
    prompt_embeds_free(&emb);
    engine_free(&e);
}

static void test_rollout(Model *m, DType dt) {
    const char *pn = dt == DTYPE_BF16 ? "bf16" : "fp32";
    for (int k = 0; k < (dt == DTYPE_BF16 ? 1 : 2); k++) {
        float eta = k ? 1.0f : 0.0f, *x0[3];
        long long allocs = -1;
        size_t nodes = 0;
        sample_three(m, eta, x0, &allocs, &nodes);
        int64_t n = 2LL * m->unet.cfg.in_channels * m->unet.cfg.sample_size * m->unet.cfg.sample_size;
        size_t bytes = sizeof(float) * (size_t)n;
        int finite = 1;
        for (int64_t i = 0; i < n; i++) finite &= isfinite(x0[0][i]);
        tu_check(finite, "%s eta %.0f: the launched rollout is finite", pn, (double)eta);
        tu_check(!memcmp(x0[0], x0[1], bytes),
                 "%s eta %.0f, %d steps, guidance 5: capture + replays give x0 bit-identical to launching (%zu graph "
                 "nodes per UNet evaluation)", pn, (double)eta, m->sched.num_inference_steps, nodes);
        tu_check(!memcmp(x0[0], x0[2], bytes), "%s eta %.0f: a later rollout of replays only, bit-identical too", pn,
                 (double)eta);
        tu_check(allocs == 0, "%s eta %.0f: a rollout of replays allocates no device memory (%lld)", pn, (double)eta,
                 allocs);
        for (int r = 0; r < 3; r++) free(x0[r]);
    }
}

// One training iteration (rollout, decode, reward, phase 2) of the small model with full-UNet gradients, graphs off
// and on (twice: the capture, then replays only). DRTune's plan replays the phase-2 backward without the input
// gradient; DRaFT's walks back with it. With a gradient-ready hook (several ranks), the iteration's last backward
// launches its kernels (the hooks start reductions on another stream) and the hook must still be called.
static int g_ready_calls;
static void count_ready(void *ctx, int part) {
    (void)ctx, (void)part;
    g_ready_calls++;
}
static void test_iteration(Model *mp, int full, int hook) {
    Model m = *mp;
    const int B = 1, steps = m.sched.num_inference_steps;
    UNet grads;
    Arena gm;
    arena_init(&gm, "grads", DEVICE_CUDA);
    unet_plan_params(&gm, &grads, &m.unet.cfg);
    arena_alloc(&gm);
    Reward item;
    reward_init(&item, "symmetry", 1.0f, NULL, 0);
    RewardSet rs = {.items = &item, .n = 1};
    int H = m.unet.cfg.sample_size * 8, h = H / 8;
    Engine e;
    engine_init(&e, &m.unet, &grads, &m.vae, &m.sched, &rs, 5.0f, 0.0f, B, h, h, 77);
    if (hook) e.ready = count_ready, e.ready_ctx = NULL;
    PromptEmbeds emb;
    UNetCond cond;
    const char *prompts[1] = {"a green triangle"};
    model_condition(&m, prompts, NULL, B, 1, H, H, &emb, &cond);
    int64_t ids[1] = {0};
    Tensor xT = tensor_f32_4d(xmalloc(sizeof(float) * (size_t)(e.C * h * h)), B, e.C, h, h);
    noise_latents(&xT, 5, ids);
    IterPlan plan;
    memset(&plan, 0, sizeof plan);
    plan.N = steps;
    if (full) plan.full = 1, plan.k = 2, plan.trained[1] = plan.trained[2] = 1;
    else plan.t_min = 1, plan.trained[1] = plan.trained[3] = 1;
    float *g[3];
    double loss[3];
    int calls[3];
    long long allocs = -1;
    for (int r = 0; r < 3; r++) {
        engine_set_graphs(&e, r > 0);
        device_zero(DEVICE_CUDA, gm.base, gm.size);
        IterResult res;
        g_ready_calls = 0;
        long long before = device_alloc_count();
        engine_iteration(&e, &plan, &cond, prompts, &xT, NULL, NULL, &res);
        if (r == 2) allocs = device_alloc_count() - before;
        calls[r] = g_ready_calls;
        loss[r] = res.loss;
        g[r] = xmalloc(gm.size);
        device_copy(g[r], DEVICE_CPU, gm.base, DEVICE_CUDA, gm.size);
    }
    const char *name = full ? "DRaFT (backward with the input gradient)" : "DRTune (backward without it)";
    double norm = 0;
    for (size_t i = 0; i < gm.size / sizeof(float); i++) norm += (double)g[0][i] * g[0][i];
    tu_check(norm > 0 && isfinite(norm), "%s%s: the launched iteration has a nonzero gradient (%.3e)", name,
             hook ? ", ready hook" : "", sqrt(norm));
    for (int r = 1; r < 3; r++)
        tu_check(!memcmp(g[0], g[r], gm.size) && loss[r] == loss[0],
                 "%s%s: %s gives the loss and every UNet parameter gradient bit-identical to launching", name,
                 hook ? ", ready hook" : "", r == 1 ? "capture + replays" : "replays only");
    tu_check(allocs == 0, "%s: an iteration of replays allocates no device memory (%lld)", name, allocs);
    tu_check(e.graph_fwd.g && (hook || e.graph_bwd[0].g) && (!full || e.graph_bwd[1].g),
             "%s: the forward and the backward%s were captured", name, full ? " with dx" : "");
    if (hook)
        tu_check(calls[0] > 0 && calls[1] == calls[0] && calls[2] == calls[0],
                 "the ready hook is called as often with graphs as without (%d, %d, %d)", calls[0], calls[1], calls[2]);
    for (int r = 0; r < 3; r++) free(g[r]);
    free(xT.data);
    prompt_embeds_free(&emb);
    engine_free(&e);
    arena_free(&gm);
}

int main(void) {
    cu_require_gpu();
    test_record_replay();
    test_libraries();
    test_refused();
    test_refused_drtune();
    for (int bf = 0; bf < 2; bf++) { // the small model, 3 sampling steps
        Model m;
        model_load(&m, "data/models/tiny", 3);
        setup_model_to_device(&m, NULL, DEVICE_CUDA);
        model_set_precision(&m, NULL, 0, bf ? DTYPE_BF16 : DTYPE_F32, 0);
        test_rollout(&m, bf ? DTYPE_BF16 : DTYPE_F32);
        if (!bf) test_iteration(&m, 0, 0), test_iteration(&m, 1, 1);
        model_free(&m);
    }
    return tu_report();
}
