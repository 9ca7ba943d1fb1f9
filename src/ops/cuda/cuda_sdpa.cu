// cuda_sdpa.cu: bf16 attention through cuDNN's fused scaled-dot-product attention (FlashAttention-2 on tensor cores),
// forward and backward, behind the attention launchers of cuda_attention.cu, which fall back to drtune's own kernels
// for whatever this file cannot plan (fp32, causal masks, head dims cuDNN does not take, a cuDNN older than 9.13 or
// one whose engines refuse the graph).
//
// A thin wrapper over cuDNN 9's backend (graph) C API: each shape and direction is planned once (a graph of one
// SDPA_FWD or SDPA_BWD operation, heuristics mode A, the first engine configuration that finalises into an execution
// plan, its workspace size) and cached; a call builds a variant pack of its pointers and executes the plan on the
// rank's compute stream (capturable into CUDA graphs). Any failure while planning is not an error: the shape is
// marked unavailable, the first reason is kept for `drtune bench gpu` to print, and the own kernels run instead.
//
// Layout: drtune's q, out [B, Tq, H*D] and k, v [B, Tk, H*D] are cuDNN's [B, H, T, D] tensors through strides (T H D,
// D, H D, 1): no transposes. The softmax statistics are drtune's lse [B, H, Tq] (fp32, natural-log log-sum-exp of
// the scaled scores), cuDNN's stats [B, H, Tq, 1]: the same quantity, so a cuDNN forward can feed drtune's own
// backward (used when the fused backward is unavailable or train.deterministic asks for a deterministic one).
#include "cuda_common.cuh"
#include "cuda_dnn.cuh"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../core/device_cuda.h"
#include "../../core/tensor.h"
#include "cuda_api.h"

enum { U_Q = 1, U_K, U_V, U_O, U_STATS, U_SCALE, U_DO, U_DQ, U_DK, U_DV };
#define SDPA_MAX_CFGS 8

#define SDPA_MAX_DESCS 32 // a plan's descriptors: 10 tensors, the operation, graph, heuristics, configurations, plan

typedef struct {
    int bwd, B, Tq, Tk, H, D;
    int ok; // 1: planned; 0: unavailable
    cudnnBackendDescriptor_t plan;
    int64_t ws;                                    // workspace bytes of the plan
    cudnnBackendDescriptor_t desc[SDPA_MAX_DESCS]; // every descriptor the plan was built from, kept with it
    int n_desc;
} SdpaPlan;

static SdpaPlan *g_plans;
static int g_nplans, g_cap;
static int g_mode = -1;      // 0 own kernels; 1 cuDNN forward; 2 cuDNN forward and backward (default)
static int g_deterministic;  // the fused backward is not deterministic (dq summed by atomics)
static char g_reason[256];   // why the first shape that could not be planned was refused
static long long g_calls[2]; // executions: forward, backward

static int sdpa_mode(void) {
    if (g_mode < 0) {
        const char *e = getenv("DRTUNE_CUDNN_ATTENTION");
        g_mode = e && *e ? (e[0] == '0' ? 0 : e[0] == '1' ? 1 : 2) : 2;
    }
    return g_mode;
}

extern "C" void attention_set_cudnn_cuda(int mode) { g_mode = mode < 0 ? 0 : mode > 2 ? 2 : mode; }
extern "C" void attention_set_deterministic_cuda(int on) { g_deterministic = on != 0; }
extern "C" const char *attention_cudnn_reason_cuda(void) { return g_reason; }
extern "C" void attention_cudnn_calls_cuda(long long *fwd, long long *bwd) {
    if (fwd) *fwd = g_calls[0];
    if (bwd) *bwd = g_calls[1];
}

// Planning: every call checked; the first failure names itself in g_reason and abandons the plan.
#define PLAN_TRY(call)                                                                                                 \
    do {                                                                                                               \
        cudnnStatus_t _s = (call);                                                                                     \
        if (_s != CUDNN_STATUS_SUCCESS) {                                                                              \
            if (!g_reason[0])                                                                                          \
                snprintf(g_reason, sizeof g_reason, "%s (B %d, Tq %d, Tk %d, H %d, D %d): %s: %s",                     \
                         bwd ? "SDPA backward" : "SDPA forward", B, Tq, Tk, H, D, #call, cudnnGetErrorString(_s));     \
            return 0;                                                                                                  \
        }                                                                                                              \
    } while (0)

// A new descriptor of the plan being built, kept with it (destroyed with the rest if the plan fails).
static cudnnStatus_t sdpa_create(SdpaPlan *p, cudnnBackendDescriptorType_t type, cudnnBackendDescriptor_t *d) {
    if (p->n_desc == SDPA_MAX_DESCS) return CUDNN_STATUS_NOT_SUPPORTED;
    cudnnStatus_t st = cudnnBackendCreateDescriptor(type, d);
    if (st == CUDNN_STATUS_SUCCESS) p->desc[p->n_desc++] = *d;
    return st;
}

// A finalised [B, H, T, D]-shaped tensor descriptor (dims and strides in elements), or 0 with the reason kept.
static int sdpa_tensor(SdpaPlan *p, cudnnBackendDescriptor_t *t, int64_t uid, cudnnDataType_t dt, const int64_t dims[4],
                       const int64_t strides[4], bool by_value, int bwd, int B, int Tq, int Tk, int H, int D) {
    int64_t align = 16;
    PLAN_TRY(sdpa_create(p, CUDNN_BACKEND_TENSOR_DESCRIPTOR, t));
    PLAN_TRY(cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt));
    PLAN_TRY(cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims));
    PLAN_TRY(cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides));
    PLAN_TRY(cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid));
    PLAN_TRY(cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align));
    if (by_value)
        PLAN_TRY(cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &by_value));
    PLAN_TRY(cudnnBackendFinalize(*t));
    return 1;
}

// Builds p's plan; 0 when cuDNN cannot run it. The descriptors stay alive with the plan (the cache is never freed).
static int sdpa_build_try(SdpaPlan *p) {
    const int bwd = p->bwd, B = p->B, Tq = p->Tq, Tk = p->Tk, H = p->H, D = p->D;
    if (cudnnGetVersion() < 91300) {
        if (!g_reason[0])
            snprintf(g_reason, sizeof g_reason, "cuDNN %zu has no SDPA operation (9.13 or newer needed)",
                     (size_t)cudnnGetVersion());
        return 0;
    }
    const int64_t HD = (int64_t)H * D;
    const int64_t qd[4] = {B, H, Tq, D}, qs[4] = {(int64_t)Tq * HD, D, HD, 1};
    const int64_t kd[4] = {B, H, Tk, D}, ks[4] = {(int64_t)Tk * HD, D, HD, 1};
    const int64_t sd[4] = {B, H, Tq, 1}, ss[4] = {(int64_t)H * Tq, Tq, 1, 1};
    const int64_t one[4] = {1, 1, 1, 1};
    const cudnnDataType_t bf = CUDNN_DATA_BFLOAT16, f32 = CUDNN_DATA_FLOAT;
    cudnnBackendDescriptor_t t[11] = {0};
#define SDPA_T(u, dt, d, s, byv)                                                                                       \
    if (!sdpa_tensor(p, &t[u], u, dt, d, s, byv, bwd, B, Tq, Tk, H, D)) return 0
    SDPA_T(U_Q, bf, qd, qs, false);
    SDPA_T(U_K, bf, kd, ks, false);
    SDPA_T(U_V, bf, kd, ks, false);
    SDPA_T(U_O, bf, qd, qs, false);
    SDPA_T(U_STATS, f32, sd, ss, false);
    SDPA_T(U_SCALE, f32, one, one, true);
    cudnnBackendDescriptor_t op, graph, heur, cfg[SDPA_MAX_CFGS];
    // the operation's tensor attributes, by unique id: the forward's six, then the backward's four more
    typedef struct {
        cudnnBackendAttributeName_t a;
        int u;
    } Bind;
    static const Bind fwd_map[] = {
        {CUDNN_ATTR_OPERATION_SDPA_FWD_QDESC, U_Q},         {CUDNN_ATTR_OPERATION_SDPA_FWD_KDESC, U_K},
        {CUDNN_ATTR_OPERATION_SDPA_FWD_VDESC, U_V},         {CUDNN_ATTR_OPERATION_SDPA_FWD_ODESC, U_O},
        {CUDNN_ATTR_OPERATION_SDPA_FWD_STATSDESC, U_STATS}, {CUDNN_ATTR_OPERATION_SDPA_FWD_SCALEDESC, U_SCALE}};
    static const Bind bwd_map[] = {
        {CUDNN_ATTR_OPERATION_SDPA_BWD_QDESC, U_Q},         {CUDNN_ATTR_OPERATION_SDPA_BWD_KDESC, U_K},
        {CUDNN_ATTR_OPERATION_SDPA_BWD_VDESC, U_V},         {CUDNN_ATTR_OPERATION_SDPA_BWD_ODESC, U_O},
        {CUDNN_ATTR_OPERATION_SDPA_BWD_STATSDESC, U_STATS}, {CUDNN_ATTR_OPERATION_SDPA_BWD_SCALEDESC, U_SCALE},
        {CUDNN_ATTR_OPERATION_SDPA_BWD_DODDESC, U_DO},      {CUDNN_ATTR_OPERATION_SDPA_BWD_DQDESC, U_DQ},
        {CUDNN_ATTR_OPERATION_SDPA_BWD_DKDESC, U_DK},       {CUDNN_ATTR_OPERATION_SDPA_BWD_DVDESC, U_DV}};
    if (bwd) {
        SDPA_T(U_DO, bf, qd, qs, false);
        SDPA_T(U_DQ, bf, qd, qs, false);
        SDPA_T(U_DK, bf, kd, ks, false);
        SDPA_T(U_DV, bf, kd, ks, false);
    }
    const Bind *map = bwd ? bwd_map : fwd_map;
    const size_t n_map = bwd ? sizeof bwd_map / sizeof *bwd_map : sizeof fwd_map / sizeof *fwd_map;
    const cudnnBackendDescriptorType_t op_type =
        bwd ? CUDNN_BACKEND_OPERATION_SDPA_BWD_DESCRIPTOR : CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR;
    PLAN_TRY(sdpa_create(p, op_type, &op));
    for (size_t i = 0; i < n_map; i++)
        PLAN_TRY(cudnnBackendSetAttribute(op, map[i].a, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &t[map[i].u]));
#undef SDPA_T
    PLAN_TRY(cudnnBackendFinalize(op));
    cudnnHandle_t h = cuda_cudnn();
    PLAN_TRY(sdpa_create(p, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, &graph));
    PLAN_TRY(cudnnBackendSetAttribute(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &h));
    PLAN_TRY(cudnnBackendSetAttribute(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &op));
    PLAN_TRY(cudnnBackendFinalize(graph));
    cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;
    PLAN_TRY(sdpa_create(p, CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, &heur));
    PLAN_TRY(cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                                      &graph));
    PLAN_TRY(cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode));
    PLAN_TRY(cudnnBackendFinalize(heur));
    for (int i = 0; i < SDPA_MAX_CFGS; i++) PLAN_TRY(sdpa_create(p, CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, &cfg[i]));
    int64_t n = 0;
    PLAN_TRY(cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, SDPA_MAX_CFGS,
                                      &n, cfg));
    if (n > SDPA_MAX_CFGS) n = SDPA_MAX_CFGS;
    for (int64_t i = 0; i < n; i++) {
        cudnnBackendDescriptor_t plan;
        PLAN_TRY(sdpa_create(p, CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &plan));
        PLAN_TRY(cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &h));
        PLAN_TRY(cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                          1, &cfg[i]));
        if (cudnnBackendFinalize(plan) != CUDNN_STATUS_SUCCESS) { // this engine refuses the graph: try the next
            cudnnBackendDestroyDescriptor(plan);
            p->n_desc--;
            continue;
        }
        int64_t got = 0;
        PLAN_TRY(cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &got,
                                          &p->ws));
        p->plan = plan;
        return 1;
    }
    if (!g_reason[0])
        snprintf(g_reason, sizeof g_reason, "%s (B %d, Tq %d, Tk %d, H %d, D %d): no engine (%lld configurations)",
                 bwd ? "SDPA backward" : "SDPA forward", B, Tq, Tk, H, D, (long long)n);
    return 0;
}

static int sdpa_build(SdpaPlan *p) {
    if (sdpa_build_try(p)) return 1;
    for (int i = 0; i < p->n_desc; i++) cudnnBackendDestroyDescriptor(p->desc[i]);
    p->n_desc = 0;
    return 0;
}

// The plan of one shape and direction (planned on first use), or NULL when cuDNN cannot run it.
static const SdpaPlan *sdpa_plan(int bwd, int B, int Tq, int Tk, int H, int D) {
    for (int i = 0; i < g_nplans; i++) {
        SdpaPlan *p = &g_plans[i];
        if (p->bwd == bwd && p->B == B && p->Tq == Tq && p->Tk == Tk && p->H == H && p->D == D) return p->ok ? p : NULL;
    }
    if (g_nplans == g_cap) {
        g_cap = g_cap ? 2 * g_cap : 16;
        g_plans = (SdpaPlan *)xrealloc(g_plans, sizeof(SdpaPlan) * (size_t)g_cap);
    }
    SdpaPlan *p = &g_plans[g_nplans++];
    memset(p, 0, sizeof *p);
    p->bwd = bwd, p->B = B, p->Tq = Tq, p->Tk = Tk, p->H = H, p->D = D;
    p->ok = sdpa_build(p);
    return p->ok ? p : NULL;
}

// Which directions of this attention run on cuDNN: bit 0 the forward, bit 1 the backward (the backward only with
// the forward, so that its statistics are cuDNN's own).
extern "C" int attention_cudnn_cuda(int B, int Tq, int Tk, int H, int D, int causal, int dt) {
    int mode = sdpa_mode();
    if (mode == 0 || causal || dt != DTYPE_BF16 || D % 8 != 0 || D > 256) return 0;
    if (!sdpa_plan(0, B, Tq, Tk, H, D)) return 0;
    if (mode < 2 || g_deterministic || !sdpa_plan(1, B, Tq, Tk, H, D)) return 1;
    return 3;
}

extern "C" size_t attention_cudnn_workspace_bytes_cuda(int B, int Tq, int Tk, int H, int D, int dt) {
    int use = attention_cudnn_cuda(B, Tq, Tk, H, D, 0, dt);
    size_t ws = 0;
    for (int bwd = 0; bwd < 2; bwd++)
        if (use & (1 << bwd)) {
            size_t w = (size_t)sdpa_plan(bwd, B, Tq, Tk, H, D)->ws;
            ws = w > ws ? w : ws;
        }
    return ws;
}

// Executes a plan with the pointers of its tensors (uids[i] -> ptrs[i]).
static void sdpa_execute(const SdpaPlan *p, const int64_t *uids, void **ptrs, int n, void *ws) {
    cudnnBackendDescriptor_t pack;
    DNN_CHECK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &pack));
    DNN_CHECK(cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, n, uids));
    DNN_CHECK(cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, n, ptrs));
    DNN_CHECK(cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws));
    DNN_CHECK(cudnnBackendFinalize(pack));
    DNN_CHECK(cudnnBackendExecute(cuda_cudnn(), p->plan, pack));
    DNN_CHECK(cudnnBackendDestroyDescriptor(pack));
}

// out [B, Tq, H*D], lse [B, H, Tq] from q, k, v (bf16); ws: attention_cudnn_workspace_bytes_cuda bytes
extern "C" void attention_forward_cudnn(void *out, float *lse, const void *q, const void *k, const void *v, void *ws,
                                        int B, int Tq, int Tk, int H, int D) {
    const SdpaPlan *p = sdpa_plan(0, B, Tq, Tk, H, D);
    if (!p) dt_fatal(__FILE__, __LINE__, "", "attention: no cuDNN plan for this shape: %s", g_reason);
    float scale = 1.0f / sqrtf((float)D); // as the own kernels and the CPU op: 1 / sqrt(D) in fp32
    const int64_t uids[] = {U_Q, U_K, U_V, U_O, U_STATS, U_SCALE};
    void *ptrs[] = {(void *)q, (void *)k, (void *)v, out, lse, &scale};
    sdpa_execute(p, uids, ptrs, 6, ws);
    g_calls[0]++;
}

// dq, dk, dv (all three written) from dout, out, lse and q, k, v (bf16)
extern "C" void attention_backward_cudnn(void *dq, void *dk, void *dv, const void *dout, const void *out,
                                         const float *lse, const void *q, const void *k, const void *v, void *ws, int B,
                                         int Tq, int Tk, int H, int D) {
    const SdpaPlan *p = sdpa_plan(1, B, Tq, Tk, H, D);
    if (!p) dt_fatal(__FILE__, __LINE__, "", "attention: no cuDNN plan for this shape: %s", g_reason);
    float scale = 1.0f / sqrtf((float)D);
    const int64_t uids[] = {U_Q, U_K, U_V, U_O, U_STATS, U_SCALE, U_DO, U_DQ, U_DK, U_DV};
    void *ptrs[] = {(void *)q, (void *)k, (void *)v, (void *)out, (void *)lse, &scale, (void *)dout, dq, dk, dv};
    sdpa_execute(p, uids, ptrs, 10, ws);
    g_calls[1]++;
}
