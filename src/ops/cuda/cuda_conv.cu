// cuda_conv.cu: 2-D convolution on the GPU through cuDNN (forward, data gradient, weight gradient), matching
// ops/conv2d.c: NCHW, weight [OC, IC, KH, KW], square stride, symmetric zero pad, cross-correlation as torch.
// A thin wrapper over cuDNN's descriptor API (cudnnConvolutionForward / BackwardData / BackwardFilter; deprecated in
// cuDNN 9 in favour of the graph API, still supported there): each shape is planned once (descriptors, one algorithm
// per direction from cuDNN's heuristics, its workspace), and the calls only look the plan up. The handle runs on
// the rank's compute stream; workspace comes from ops_workspace through the caller, sized by conv2d_plan_cuda.
//
// Precision: fp32 storage runs GEMM-like algorithms with CUDNN_FMA_MATH (no TF32, no FFT or Winograd transforms), so
// it matches the CPU op to fp32 rounding; bf16 storage runs on tensor cores with fp32 accumulation. cuDNN writes the
// weight gradient in the operands' type, so a bf16 convolution writes its dW into a bf16 scratch in the workspace
// and a kernel adds it to the fp32 gradient (each call's dW is rounded to bf16 once, as under PyTorch autocast; the
// sum across calls stays fp32). The bias is broadcast into the output by a kernel and the convolution adds to it
// (beta = 1), as does a residual (conv2d_forward_residual: the add costs no pass of its own); the bias gradient is a
// deterministic two-pass reduction.
// Layout: NCHW (conv2d), or NHWC with filters [OC, KH, KW, IC] (conv2d_nhwc and channels-last models): cuDNN's bf16
// tensor-core kernels are fastest channels last, and NCHW problems may be transposed inside cuDNN. An NHWC problem's
// weight gradient always goes through the scratch (fp32 too), so a kernel can add it to an NCHW fp32 gradient,
// permuted (a channels-last compute filter of an NCHW master).
#include "cuda_vec.cuh"
#include "cuda_dnn.cuh"
#include <string.h>

#include "../../core/device_cuda.h"
#include "../../core/tensor.h"
#include "cuda_api.h"

// Algorithms needing more workspace than this are passed over (cuDNN's FFT algorithms can ask for gigabytes).
#define CONV_WORKSPACE_MAX ((size_t)256 << 20)
#define CONV_ALIGN ((size_t)256)

// ---------------------------------------------------------------------------------------------------------------
// kernels

// y [B, OC, S] = b[o] (+ res [B, OC, S]) on every row r = n OC + o (grid.x = rows, grid.y strides each row), b f32
// or bf16 or NULL (none), res in y's type or NULL: the bias and the residual are put in first and the convolution
// adds to them (beta = 1).
template <class T>
__global__ static void conv_bias_fill_kernel(T *y, const void *b, int bias_bf16, const T *res, int OC, int64_t S) {
    int64_t r = blockIdx.x;
    int o = (int)(r % OC);
    float bv = !b ? 0.0f : bias_bf16 ? __bfloat162float(((const __nv_bfloat16 *)b)[o]) : ((const float *)b)[o];
    T *row = y + r * S;
    const T *rr = res ? res + r * S : nullptr;
    for (int64_t i = (int64_t)blockIdx.y * blockDim.x + threadIdx.x; i < S; i += (int64_t)gridDim.y * blockDim.x)
        st_f32(row, i, rr ? ld_f32(rr, i) + bv : bv);
}

// NHWC: y [R, OC] = b[o] (+ res [R, OC]) for every pixel row (R = B OH OW), one thread per element
template <class T>
__global__ static void conv_bias_fill_nhwc_kernel(T *y, const void *b, int bias_bf16, const T *res, int OC, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int o = (int)(i % OC);
        float bv = !b ? 0.0f : bias_bf16 ? __bfloat162float(((const __nv_bfloat16 *)b)[o]) : ((const float *)b)[o];
        st_f32(y, i, res ? ld_f32(res, i) + bv : bv);
    }
}

// The bias gradient db [OC] += sum over n, s of dy [B, OC, S] in two deterministic passes: every row of dy is cut
// into chunks of CONV_BIAS_CHUNK pixels, one block sums a chunk (fixed strided partial sums per thread, then a fixed
// warp/block tree) into part [OC, B * chunks]; then one thread per channel adds its partials in order. Every
// channel gets many blocks, so few channels over many pixels (a VAE's output conv) still fill the GPU.
#define CONV_BIAS_CHUNK 4096

// grid (B * chunks, OC): block (n chunks + c, o) sums dy[n, o, c CHUNK .. (c + 1) CHUNK) into part[o, n chunks + c]
template <class T>
__global__ static void conv_bias_grad_partial_kernel(float *part, const T *dy, int OC, int64_t S, int chunks) {
    __shared__ float warp_part[32];
    int o = blockIdx.y, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int n = blockIdx.x / chunks, c = blockIdx.x % chunks;
    const T *row = dy + ((int64_t)n * OC + o) * S;
    int64_t end = min((int64_t)(c + 1) * CONV_BIAS_CHUNK, S);
    float s = 0.0f;
    for (int64_t i = (int64_t)c * CONV_BIAS_CHUNK + threadIdx.x; i < end; i += blockDim.x) s += ld_f32(row, i);
    s = warp_sum(s);
    if (lane == 0) warp_part[warp] = s;
    __syncthreads();
    if (warp == 0) {
        s = lane < (int)(blockDim.x >> 5) ? warp_part[lane] : 0.0f;
        s = warp_sum(s);
        if (lane == 0) part[(int64_t)o * gridDim.x + blockIdx.x] = s;
    }
}

// NHWC: grid (chunks, ceil(OC / 32)), 256 threads as 8 row phases of 32 channels: block (c, t) sums the rows
// [c CHUNK, (c + 1) CHUNK) of dy [R, OC] for channels 32 t .. 32 t + 31 (each thread a fixed strided partial sum,
// then the 8 phases in order) into part[o, c]. A warp reads 32 consecutive channels of one row.
template <class T>
__global__ static void conv_bias_grad_partial_nhwc_kernel(float *part, const T *dy, int OC, int64_t R) {
    __shared__ float phase_part[8][33];
    int lane = threadIdx.x & 31, ph = threadIdx.x >> 5, o = blockIdx.y * 32 + lane;
    int64_t end = min((int64_t)(blockIdx.x + 1) * CONV_BIAS_CHUNK, R);
    float s = 0.0f;
    if (o < OC)
        for (int64_t r = (int64_t)blockIdx.x * CONV_BIAS_CHUNK + ph; r < end; r += 8) s += ld_f32(dy, r * OC + o);
    phase_part[ph][lane] = s;
    __syncthreads();
    if (ph == 0 && o < OC) {
        for (int i = 1; i < 8; i++) s += phase_part[i][lane];
        part[(int64_t)o * gridDim.x + blockIdx.x] = s;
    }
}

// db[o] += sum of part[o, 0 .. P) in order
__global__ static void conv_bias_grad_finish_kernel(float *db, const float *part, int OC, int P) {
    int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= OC) return;
    float s = 0.0f;
    for (int i = 0; i < P; i++) s += part[(int64_t)o * P + i];
    db[o] += s;
}

// dw += g: one call's weight gradient (bf16, or an NHWC problem's) into the fp32 gradient; with kcrs, g [OC, T, IC]
// (T = KH KW taps) goes to dw [OC, IC, T]
template <class T>
__global__ static void conv_dw_accumulate_kernel(float *dw, const T *g, int64_t n, int kcrs, int64_t IC, int64_t taps) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    int64_t j = i;
    if (kcrs) {
        int64_t o = i / (taps * IC), t = i / IC % taps, c = i % IC;
        j = (o * IC + c) * taps + t;
    }
    dw[j] += ld_f32(g, i);
}

// ---------------------------------------------------------------------------------------------------------------
// plans

struct ConvPlan {
    Conv2dCudaShape shape;
    int deterministic;
    cudnnTensorDescriptor_t x, y;          // [B, IC, H, W], [B, OC, OH, OW]
    cudnnFilterDescriptor_t w;             // [OC, IC, KH, KW]
    cudnnConvolutionDescriptor_t conv[3];  // forward, data, filter: each with its algorithm's math type
    cudnnConvolutionFwdAlgo_t fwd;
    cudnnConvolutionBwdDataAlgo_t bwd_data;
    cudnnConvolutionBwdFilterAlgo_t bwd_filter;
    // workspace layout: [dW scratch | bias-gradient partials | cuDNN], each part a CONV_ALIGN multiple
    size_t dw_scratch; // bf16 only: one call's weight gradient (cuDNN writes it in the operands' type)
    int bias_chunks;   // chunks per row of the bias gradient: partials [OC, B * bias_chunks] fp32
    size_t db_part;
    size_t ws_dnn;     // the largest need of the three algorithms
};

static int conv_out_dim(int n, int k, const Conv2dCudaShape *s) { return (n + 2 * s->pad - k) / s->stride + 1; }
static int64_t conv_out_pixels(const Conv2dCudaShape *s) {
    return (int64_t)conv_out_dim(s->H, s->KH, s) * conv_out_dim(s->W, s->KW, s);
}

static size_t conv_align(size_t bytes) { return (bytes + CONV_ALIGN - 1) / CONV_ALIGN * CONV_ALIGN; }

static ConvPlan *g_plans;
static int g_nplans, g_cap_plans;
static int g_deterministic;

cudnnHandle_t cuda_cudnn(void) {
    static cudnnHandle_t h = nullptr;
    if (!h) {
        DNN_CHECK(cudnnCreate(&h));
        DNN_CHECK(cudnnSetStream(h, cuda_stream()));
    }
    return h;
}

// FFT and Winograd algorithms compute in a transformed domain whose rounding exceeds an fp32 GEMM's; fp32 (the
// parity mode) keeps to the GEMM-like ones.
static int conv_transform(cudnnConvolutionFwdAlgo_t a) {
    return a == CUDNN_CONVOLUTION_FWD_ALGO_FFT || a == CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING ||
           a == CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD || a == CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED;
}
static int conv_transform(cudnnConvolutionBwdDataAlgo_t a) {
    return a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT || a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING ||
           a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD || a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED;
}
static int conv_transform(cudnnConvolutionBwdFilterAlgo_t a) {
    return a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT || a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING ||
           a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD || a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED;
}

// The first heuristic entry that runs the problem within the workspace cap, deterministic when asked, and for fp32
// GEMM-like without tensor-core math; -1 if none.
template <class Perf> static int conv_pick(const Perf *perf, int n, int fp32, int deterministic) {
    for (int i = 0; i < n; i++) {
        const Perf &p = perf[i];
        if (p.status != CUDNN_STATUS_SUCCESS || p.memory > CONV_WORKSPACE_MAX) continue;
        if (deterministic && p.determinism != CUDNN_DETERMINISTIC) continue;
        if (fp32 && (conv_transform(p.algo) || p.mathType == CUDNN_TENSOR_OP_MATH ||
                     p.mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION))
            continue;
        return i;
    }
    return -1;
}

DT_NORETURN static void conv_no_algo(const Conv2dCudaShape *s, const char *dir) {
    FATAL("a cuDNN without convolution kernels for this GPU? check `drtune info --device`",
          "conv2d: cuDNN offers no %s%s algorithm for in [%d, %d, %d, %d], w [%d, %d, %d, %d], stride %d, pad %d "
          "(%s, %s) within %zu MiB of workspace", g_deterministic ? "deterministic " : "", dir, s->B, s->IC, s->H,
          s->W, s->OC, s->IC, s->KH, s->KW, s->stride, s->pad, s->dt == DTYPE_BF16 ? "bf16" : "f32",
          s->nhwc ? "NHWC" : "NCHW", CONV_WORKSPACE_MAX >> 20);
}

static void conv_plan_make(ConvPlan *p, const Conv2dCudaShape *s) {
    CHECK(s->dt == DTYPE_F32 || s->dt == DTYPE_BF16, "", "conv2d: storage dtype %d (want f32 or bf16)", s->dt);
    CHECK(s->OC <= 65535, "", "conv2d: %d output channels (the bias-gradient grid takes at most 65535)", s->OC);
    int64_t in_elems = (int64_t)s->B * s->IC * s->H * s->W, out_elems = (int64_t)s->B * s->OC * conv_out_pixels(s);
    CHECK(in_elems < ((int64_t)1 << 31) && out_elems < ((int64_t)1 << 31), "split the batch",
          "conv2d: a tensor of 2^31 elements or more (cuDNN's 4-d descriptors)");
    cudnnHandle_t h = cuda_cudnn();
    int fp32 = s->dt == DTYPE_F32;
    cudnnDataType_t dt = fp32 ? CUDNN_DATA_FLOAT : CUDNN_DATA_BFLOAT16;
    int OH = conv_out_dim(s->H, s->KH, s), OW = conv_out_dim(s->W, s->KW, s);
    memset(p, 0, sizeof *p);
    p->shape = *s;
    p->deterministic = g_deterministic;
    DNN_CHECK(cudnnCreateTensorDescriptor(&p->x));
    DNN_CHECK(cudnnCreateTensorDescriptor(&p->y));
    DNN_CHECK(cudnnCreateFilterDescriptor(&p->w));
    cudnnTensorFormat_t f = s->nhwc ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW; // dims are given n, c, h, w in both
    DNN_CHECK(cudnnSetTensor4dDescriptor(p->x, f, dt, s->B, s->IC, s->H, s->W));
    DNN_CHECK(cudnnSetTensor4dDescriptor(p->y, f, dt, s->B, s->OC, OH, OW));
    DNN_CHECK(cudnnSetFilter4dDescriptor(p->w, dt, f, s->OC, s->IC, s->KH, s->KW));
    for (int d = 0; d < 3; d++) {
        DNN_CHECK(cudnnCreateConvolutionDescriptor(&p->conv[d]));
        DNN_CHECK(cudnnSetConvolution2dDescriptor(p->conv[d], s->pad, s->pad, s->stride, s->stride, 1, 1,
                                                  CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
        DNN_CHECK(cudnnSetConvolutionMathType(p->conv[d], fp32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH));
    }
    int n, i;
    size_t ws[3];
    cudnnConvolutionFwdAlgoPerf_t pf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    DNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(h, p->x, p->w, p->conv[0], p->y, CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
                                                     &n, pf));
    if ((i = conv_pick(pf, n, fp32, p->deterministic)) < 0) conv_no_algo(s, "forward");
    p->fwd = pf[i].algo;
    if (!fp32) DNN_CHECK(cudnnSetConvolutionMathType(p->conv[0], pf[i].mathType));
    DNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(h, p->x, p->w, p->conv[0], p->y, p->fwd, &ws[0]));

    cudnnConvolutionBwdDataAlgoPerf_t pd[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    DNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, p->w, p->y, p->conv[1], p->x,
                                                          CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &n, pd));
    if ((i = conv_pick(pd, n, fp32, p->deterministic)) < 0) conv_no_algo(s, "data-gradient");
    p->bwd_data = pd[i].algo;
    if (!fp32) DNN_CHECK(cudnnSetConvolutionMathType(p->conv[1], pd[i].mathType));
    DNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(h, p->w, p->y, p->conv[1], p->x, p->bwd_data, &ws[1]));

    cudnnConvolutionBwdFilterAlgoPerf_t pw[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    DNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, p->x, p->y, p->conv[2], p->w,
                                                            CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &n, pw));
    if ((i = conv_pick(pw, n, fp32, p->deterministic)) < 0) conv_no_algo(s, "weight-gradient");
    p->bwd_filter = pw[i].algo;
    if (!fp32) DNN_CHECK(cudnnSetConvolutionMathType(p->conv[2], pw[i].mathType));
    DNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(h, p->x, p->y, p->conv[2], p->w, p->bwd_filter, &ws[2]));

    p->ws_dnn = ws[0] > ws[1] ? ws[0] : ws[1];
    if (ws[2] > p->ws_dnn) p->ws_dnn = ws[2];
    // bf16, and every NHWC problem (its gradient may go to an NCHW filter's): one call's dW in the operands' type
    size_t wn = (size_t)s->OC * s->IC * s->KH * s->KW;
    p->dw_scratch = conv_align(!fp32 ? sizeof(__nv_bfloat16) * wn : s->nhwc ? sizeof(float) * wn : 0);
    int64_t rows = s->nhwc ? s->B * conv_out_pixels(s) : conv_out_pixels(s); // NHWC chunks all B OH OW rows
    p->bias_chunks = (int)((rows + CONV_BIAS_CHUNK - 1) / CONV_BIAS_CHUNK);
    p->db_part = conv_align(sizeof(float) * (size_t)s->OC * (s->nhwc ? 1 : s->B) * p->bias_chunks);
}

// The plan of a shape under the current determinism setting, made on first use.
static const ConvPlan *conv_plan_get(const Conv2dCudaShape *s) {
    for (int i = 0; i < g_nplans; i++)
        if (!memcmp(&g_plans[i].shape, s, sizeof *s) && g_plans[i].deterministic == g_deterministic)
            return &g_plans[i];
    if (g_nplans == g_cap_plans) {
        g_cap_plans = g_cap_plans ? 2 * g_cap_plans : 32;
        g_plans = (ConvPlan *)xrealloc(g_plans, sizeof(ConvPlan) * (size_t)g_cap_plans);
    }
    conv_plan_make(&g_plans[g_nplans], s);
    return &g_plans[g_nplans++];
}

static size_t conv_plan_bytes(const ConvPlan *p) { return p->dw_scratch + p->db_part + p->ws_dnn; }

// The plan for a call, checked against the workspace the caller passes; *dnn_ws receives cuDNN's part of it.
static const ConvPlan *conv_plan_call(const Conv2dCudaShape *s, void *ws, size_t ws_bytes, void **dnn_ws) {
    const ConvPlan *p = conv_plan_get(s);
    CHECK(ws_bytes >= conv_plan_bytes(p) && (ws || !conv_plan_bytes(p)), "size it with conv2d_workspace_bytes",
          "conv2d: workspace of %zu bytes, the plan needs %zu", ws_bytes, conv_plan_bytes(p));
    *dnn_ws = p->ws_dnn ? (char *)ws + p->dw_scratch + p->db_part : nullptr;
    return p;
}

extern "C" void conv2d_set_deterministic_cuda(int on) { g_deterministic = on != 0; }

extern "C" size_t conv2d_plan_cuda(const Conv2dCudaShape *s, int algos[3]) {
    const ConvPlan *p = conv_plan_get(s);
    if (algos) algos[0] = (int)p->fwd, algos[1] = (int)p->bwd_data, algos[2] = (int)p->bwd_filter;
    return conv_plan_bytes(p);
}

// ---------------------------------------------------------------------------------------------------------------
// launchers

extern "C" void conv2d_forward_cuda(void *out, const void *in, const void *w, const void *b, int bias_dt,
                                    const void *res, const Conv2dCudaShape *s, void *ws, size_t ws_bytes) {
    void *dnn_ws;
    const ConvPlan *p = conv_plan_call(s, ws, ws_bytes, &dnn_ws);
    if ((b || res) && s->nhwc) {
        int64_t n = (int64_t)s->B * conv_out_pixels(s) * s->OC;
        CUDA_DT_DISPATCH(s->dt, T, CUDA_LAUNCH(conv_bias_fill_nhwc_kernel<T>, cuda_stride_blocks(n, 256), 256, 0,
                                               cuda_stream(), (T *)out,
                                               b, bias_dt == DTYPE_BF16, (const T *)res, s->OC, n));
    } else if (b || res) {
        int64_t S = conv_out_pixels(s);
        unsigned chunks = cuda_blocks(S, 256);
        dim3 grid((unsigned)(s->B * s->OC), chunks < 1024 ? chunks : 1024);
        CUDA_DT_DISPATCH(s->dt, T, CUDA_LAUNCH(conv_bias_fill_kernel<T>, grid, 256, 0, cuda_stream(), (T *)out, b,
                                               bias_dt == DTYPE_BF16, (const T *)res, s->OC, S));
    }
    const float one = 1.0f, beta = b || res ? 1.0f : 0.0f;
    DNN_CHECK(cudnnConvolutionForward(cuda_cudnn(), &one, p->x, in, p->w, w, p->conv[0], p->fwd, dnn_ws, p->ws_dnn,
                                      &beta, p->y, out));
}

extern "C" void conv2d_backward_cuda(void *din, float *dw, float *db, const void *dout, const void *in, const void *w,
                                     const Conv2dCudaShape *s, int dw_kcrs, void *ws, size_t ws_bytes) {
    void *dnn_ws;
    const ConvPlan *p = conv_plan_call(s, ws, ws_bytes, &dnn_ws);
    cudnnHandle_t h = cuda_cudnn();
    const float one = 1.0f, zero = 0.0f;
    if (din) // written
        DNN_CHECK(cudnnConvolutionBackwardData(h, &one, p->w, w, p->y, dout, p->conv[1], p->bwd_data, dnn_ws,
                                               p->ws_dnn, &zero, p->x, din));
    CHECK(!dw_kcrs || s->nhwc, "", "conv2d: an [OC, IC, KH, KW] weight gradient of an NCHW problem is not permuted");
    if (dw) { // accumulated in fp32
        if (s->dt == DTYPE_F32 && !s->nhwc) {
            DNN_CHECK(cudnnConvolutionBackwardFilter(h, &one, p->x, in, p->y, dout, p->conv[2], p->bwd_filter, dnn_ws,
                                                     p->ws_dnn, &one, p->w, dw));
        } else { // into the scratch, then added (and permuted for dw_kcrs)
            DNN_CHECK(cudnnConvolutionBackwardFilter(h, &one, p->x, in, p->y, dout, p->conv[2], p->bwd_filter, dnn_ws,
                                                     p->ws_dnn, &zero, p->w, ws));
            int64_t n = (int64_t)s->OC * s->IC * s->KH * s->KW, taps = (int64_t)s->KH * s->KW;
            CUDA_DT_DISPATCH(s->dt, T, CUDA_LAUNCH(conv_dw_accumulate_kernel<T>, cuda_blocks(n, 256), 256, 0,
                                                   cuda_stream(), dw, (const T *)ws, n, dw_kcrs, (int64_t)s->IC, taps));
        }
    }
    if (db && s->nhwc) { // accumulated in fp32
        float *part = (float *)((char *)ws + p->dw_scratch);
        dim3 grid((unsigned)p->bias_chunks, (unsigned)((s->OC + 31) / 32));
        int64_t R = (int64_t)s->B * conv_out_pixels(s);
        CUDA_DT_DISPATCH(s->dt, T, CUDA_LAUNCH(conv_bias_grad_partial_nhwc_kernel<T>, grid, 256, 0, cuda_stream(), part,
                                               (const T *)dout, s->OC, R));
        CUDA_LAUNCH(conv_bias_grad_finish_kernel, cuda_blocks(s->OC, 128), 128, 0, cuda_stream(), db, part, s->OC,
                    p->bias_chunks);
    } else if (db) { // accumulated in fp32
        float *part = (float *)((char *)ws + p->dw_scratch);
        int64_t S = conv_out_pixels(s);
        dim3 grid((unsigned)(s->B * p->bias_chunks), (unsigned)s->OC);
        CUDA_DT_DISPATCH(s->dt, T, CUDA_LAUNCH(conv_bias_grad_partial_kernel<T>, grid, 256, 0, cuda_stream(), part,
                                               (const T *)dout, s->OC, S, p->bias_chunks));
        CUDA_LAUNCH(conv_bias_grad_finish_kernel, cuda_blocks(s->OC, 128), 128, 0, cuda_stream(), db, part, s->OC,
                    s->B * p->bias_chunks);
    }
}
