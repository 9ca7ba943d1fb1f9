// cudaemu_dnn.cc: CPU stand-ins for the cuDNN convolution calls of cudaemu_dnn.h (see there for what is emulated).
// Convolutions run as im2col + OpenBLAS sgemm (fp32 products and sums, as cuDNN's fp32 compute type), then
// alpha and beta in fp32 and one rounding to the output type. The algorithm lists mimic cuDNN's shape (unsupported entries, non-
// deterministic ones ranked first for the backward, workspace needs that differ by algorithm) so the wrapper's
// choice is exercised; the numbers are this file's, not cuDNN's.
#include "cudaemu_dnn.h"

#include "cudaemu.h"

#include <stdlib.h>

#include <algorithm>
#include <memory>
#include <vector>

#include <cblas.h>

// im2col chunks of output rows keep the columns under this many floats (64 MiB)
static const int64_t COLS_MAX = (int64_t)1 << 24;

struct CudaemuDnn {
    cudaStream_t stream;
};
struct CudaemuDnnTensor {
    int set;
    cudnnDataType_t dt;
    int n, c, h, w;
    int nhwc; // memory order [n, h, w, c] (CUDNN_TENSOR_NHWC) instead of [n, c, h, w]
};
struct CudaemuDnnFilter {
    int set;
    cudnnDataType_t dt;
    int k, c, h, w;
    int nhwc; // memory order [k, h, w, c]
};
struct CudaemuDnnConv {
    int set;
    int pad_h, pad_w, u, v; // dilation 1
    cudnnConvolutionMode_t mode;
    cudnnDataType_t compute;
    cudnnMathType_t math;
};

size_t cudnnGetVersion(void) { return 91900; }

const char *cudnnGetErrorString(cudnnStatus_t s) {
    switch (s) {
    case CUDNN_STATUS_SUCCESS: return "CUDNN_STATUS_SUCCESS";
    case CUDNN_STATUS_NOT_INITIALIZED: return "CUDNN_STATUS_NOT_INITIALIZED";
    case CUDNN_STATUS_BAD_PARAM: return "CUDNN_STATUS_BAD_PARAM";
    case CUDNN_STATUS_BAD_PARAM_NULL_POINTER: return "CUDNN_STATUS_BAD_PARAM_NULL_POINTER";
    case CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED: return "CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED";
    case CUDNN_STATUS_BAD_PARAM_SIZE_INSUFFICIENT: return "CUDNN_STATUS_BAD_PARAM_SIZE_INSUFFICIENT";
    case CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH: return "CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH";
    case CUDNN_STATUS_NOT_SUPPORTED: return "CUDNN_STATUS_NOT_SUPPORTED";
    case CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE: return "CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE";
    case CUDNN_STATUS_NOT_SUPPORTED_LAYOUT: return "CUDNN_STATUS_NOT_SUPPORTED_LAYOUT";
    case CUDNN_STATUS_EXECUTION_FAILED: return "CUDNN_STATUS_EXECUTION_FAILED";
    }
    return "CUDNN_STATUS_UNKNOWN";
}

cudnnStatus_t cudnnCreate(cudnnHandle_t *h) {
    if (!h) return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
    if (!cudaemu_enabled()) return CUDNN_STATUS_NOT_INITIALIZED; // no (emulated) GPU visible
    if (cudaemu_capture_forbids_unsafe()) return CUDNN_STATUS_NOT_INITIALIZED; // it allocates and synchronises
    *h = new CudaemuDnn{nullptr};
    return CUDNN_STATUS_SUCCESS;
}
cudaStream_t cudaemu_dnn_stream(cudnnHandle_t h) { return h->stream; }
cudnnStatus_t cudnnDestroy(cudnnHandle_t h) {
    delete h;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetStream(cudnnHandle_t h, cudaStream_t s) {
    if (!h) return CUDNN_STATUS_NOT_INITIALIZED;
    h->stream = s;
    return CUDNN_STATUS_SUCCESS;
}

// ---------------------------------------------------------------------------------------------------------------
// descriptors

static int dt_supported(cudnnDataType_t dt) { return dt == CUDNN_DATA_FLOAT || dt == CUDNN_DATA_BFLOAT16; }
static size_t dt_size(cudnnDataType_t dt) { return dt == CUDNN_DATA_FLOAT ? 4 : 2; }

cudnnStatus_t cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t *d) {
    if (!d) return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
    *d = new CudaemuDnnTensor{};
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t d) {
    delete d;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t d, cudnnTensorFormat_t format, cudnnDataType_t dt,
                                         int n, int c, int h, int w) {
    if (!d) return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
    if (n < 1 || c < 1 || h < 1 || w < 1) return CUDNN_STATUS_BAD_PARAM;
    if (format != CUDNN_TENSOR_NCHW && format != CUDNN_TENSOR_NHWC) return CUDNN_STATUS_BAD_PARAM;
    if (!dt_supported(dt)) return CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE;
    *d = CudaemuDnnTensor{1, dt, n, c, h, w, format == CUDNN_TENSOR_NHWC};
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t *d) {
    if (!d) return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
    *d = new CudaemuDnnFilter{};
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t d) {
    delete d;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t d, cudnnDataType_t dt, cudnnTensorFormat_t format,
                                         int k, int c, int h, int w) {
    if (!d) return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
    if (k < 1 || c < 1 || h < 1 || w < 1) return CUDNN_STATUS_BAD_PARAM;
    if (format != CUDNN_TENSOR_NCHW && format != CUDNN_TENSOR_NHWC) return CUDNN_STATUS_BAD_PARAM;
    if (!dt_supported(dt)) return CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE;
    *d = CudaemuDnnFilter{1, dt, k, c, h, w, format == CUDNN_TENSOR_NHWC};
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t *d) {
    if (!d) return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
    *d = new CudaemuDnnConv{};
    (*d)->math = CUDNN_DEFAULT_MATH;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t d) {
    delete d;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t d, int pad_h, int pad_w, int u, int v,
                                              int dilation_h, int dilation_w, cudnnConvolutionMode_t mode,
                                              cudnnDataType_t compute) {
    if (!d) return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
    if (pad_h < 0 || pad_w < 0 || u < 1 || v < 1 || dilation_h < 1 || dilation_w < 1 ||
        (mode != CUDNN_CONVOLUTION && mode != CUDNN_CROSS_CORRELATION))
        return CUDNN_STATUS_BAD_PARAM;
    if (compute != CUDNN_DATA_FLOAT) return CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE; // fp32 accumulation only
    // not emulated (drtune uses neither): dilated filters, true convolution (flipped filters)
    if (dilation_h != 1 || dilation_w != 1 || mode != CUDNN_CROSS_CORRELATION) return CUDNN_STATUS_NOT_SUPPORTED;
    cudnnMathType_t math = d->math;
    *d = CudaemuDnnConv{1, pad_h, pad_w, u, v, mode, compute, math};
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t d, cudnnMathType_t m) {
    if (!d) return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
    if (m < CUDNN_DEFAULT_MATH || m > CUDNN_FMA_MATH) return CUDNN_STATUS_BAD_PARAM;
    d->math = m;
    return CUDNN_STATUS_SUCCESS;
}

static int out_dim(int in, int pad, int k, int stride) { return (in + 2 * pad - k) / stride + 1; }

cudnnStatus_t cudnnGetConvolution2dForwardOutputDim(const cudnnConvolutionDescriptor_t conv,
                                                    const cudnnTensorDescriptor_t x, const cudnnFilterDescriptor_t w,
                                                    int *n, int *c, int *h, int *wd) {
    if (!conv || !x || !w || !n || !c || !h || !wd) return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
    if (!conv->set || !x->set || !w->set) return CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED;
    if (x->c != w->c) return CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH;
    *n = x->n, *c = w->k;
    *h = out_dim(x->h, conv->pad_h, w->h, conv->u);
    *wd = out_dim(x->w, conv->pad_w, w->w, conv->v);
    if (*h < 1 || *wd < 1) return CUDNN_STATUS_BAD_PARAM; // filter larger than the padded input
    return CUDNN_STATUS_SUCCESS;
}

// ---------------------------------------------------------------------------------------------------------------
// one convolution problem: the descriptors checked against each other

struct Problem {
    const CudaemuDnnTensor *x, *y;
    const CudaemuDnnFilter *w;
    const CudaemuDnnConv *conv;
    size_t x_bytes, y_bytes, w_bytes;
};

static cudnnStatus_t problem_make(Problem *p, const cudnnTensorDescriptor_t x, const cudnnFilterDescriptor_t w,
                                  const cudnnConvolutionDescriptor_t conv, const cudnnTensorDescriptor_t y) {
    if (!x || !w || !conv || !y) return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
    if (!x->set || !w->set || !conv->set || !y->set) return CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED;
    int n, c, h, wd;
    cudnnStatus_t s = cudnnGetConvolution2dForwardOutputDim(conv, x, w, &n, &c, &h, &wd);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    if (y->n != n || y->c != c || y->h != h || y->w != wd) return CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH;
    // FLOAT_CONFIG and PSEUDO_BFLOAT16_CONFIG: x, w and y of one type, fp32 compute
    if (x->dt != w->dt || x->dt != y->dt) return CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE;
    // one layout for x, w and y (what drtune describes; cuDNN's mixed-layout support varies by algorithm)
    if (x->nhwc != w->nhwc || x->nhwc != y->nhwc) return CUDNN_STATUS_NOT_SUPPORTED_LAYOUT;
    *p = Problem{x, y, w, conv, (size_t)x->n * x->c * x->h * x->w * dt_size(x->dt),
                 (size_t)y->n * y->c * y->h * y->w * dt_size(y->dt),
                 (size_t)w->k * w->c * w->h * w->w * dt_size(w->dt)};
    return CUDNN_STATUS_SUCCESS;
}

// ---------------------------------------------------------------------------------------------------------------
// algorithms: each direction lists its entries in "heuristic" order with the workspace this emulation asks for
// (SIZE_MAX: not supported). Forward algorithms are deterministic; backward ALGO_0 (data and filter) and filter
// ALGO_3 are not, as in cuDNN.

enum Dir { FWD, BWD_DATA, BWD_FILTER };
struct AlgoInfo {
    int algo;
    int deterministic;
};
static const AlgoInfo k_fwd[] = {{CUDNN_CONVOLUTION_FWD_ALGO_FFT, 1},
                                 {CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED, 1},
                                 {CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, 1},
                                 {CUDNN_CONVOLUTION_FWD_ALGO_GEMM, 1},
                                 {CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, 1}};
static const AlgoInfo k_bwd_data[] = {{CUDNN_CONVOLUTION_BWD_DATA_ALGO_0, 0}, {CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, 1}};
static const AlgoInfo k_bwd_filter[] = {{CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3, 0},
                                        {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0, 0},
                                        {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD, 1},
                                        {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, 1}};

static const AlgoInfo *algo_find(Dir d, int algo, int *count_out) {
    const AlgoInfo *t = d == FWD ? k_fwd : d == BWD_DATA ? k_bwd_data : k_bwd_filter;
    int n = d == FWD ? 5 : d == BWD_DATA ? 2 : 4;
    if (count_out) *count_out = n;
    if (algo < 0) return t;
    for (int i = 0; i < n; i++)
        if (t[i].algo == algo) return &t[i];
    return nullptr;
}

static size_t algo_workspace(Dir d, int algo, const Problem *p) {
    size_t K = (size_t)p->w->c * p->w->h * p->w->w, es = dt_size(p->x->dt);
    size_t OHW = (size_t)p->y->h * p->y->w, wsz = (size_t)p->w->k * K;
    switch (d) {
    case FWD:
        if (algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM) return sizeof(int) * K;  // tap offsets
        if (algo == CUDNN_CONVOLUTION_FWD_ALGO_GEMM) return es * K * OHW;                      // one image's im2col
        if (algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM) return 0;
        if (algo == CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED) { // NCHW 3x3 stride 1: filters as 6x6 tiles
            int ok = p->w->h == 3 && p->w->w == 3 && p->conv->u == 1 && p->conv->v == 1 && !p->x->nhwc;
            return ok ? sizeof(float) * 36 * p->w->k * p->w->c : SIZE_MAX;
        }
        return SIZE_MAX;
    case BWD_DATA:
        if (algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_0) return 0;
        if (algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_1) return sizeof(float) * p->x->c * p->x->h * p->x->w; // fp32 image
        return SIZE_MAX;
    case BWD_FILTER:
        if (algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0) return 0;
        if (algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3) return sizeof(float) * wsz;     // fp32 partials
        if (algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1) return sizeof(float) * 2 * wsz; // fp32 split-K partials
        return SIZE_MAX;
    }
    return SIZE_MAX;
}

template <class Perf>
static cudnnStatus_t algo_list(Dir d, const Problem *p, int requested, int *returned, Perf *perf) {
    if (!returned || !perf) return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
    if (requested < 1) return CUDNN_STATUS_BAD_PARAM;
    int n;
    const AlgoInfo *t = algo_find(d, -1, &n);
    int m = n < requested ? n : requested;
    for (int i = 0; i < m; i++) {
        size_t ws = algo_workspace(d, t[i].algo, p);
        Perf r{};
        r.algo = (decltype(r.algo))t[i].algo;
        r.status = ws == SIZE_MAX ? CUDNN_STATUS_NOT_SUPPORTED : CUDNN_STATUS_SUCCESS;
        r.time = -1.0f;
        r.memory = ws == SIZE_MAX ? 0 : ws;
        r.determinism = t[i].deterministic ? CUDNN_DETERMINISTIC : CUDNN_NON_DETERMINISTIC;
        r.mathType = p->conv->math;
        perf[i] = r;
    }
    *returned = m;
    return CUDNN_STATUS_SUCCESS;
}

static cudnnStatus_t workspace_query(Dir d, int algo, const Problem *p, size_t *bytes) {
    if (!bytes) return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
    if (!algo_find(d, algo, nullptr)) return CUDNN_STATUS_BAD_PARAM;
    size_t ws = algo_workspace(d, algo, p);
    if (ws == SIZE_MAX) return CUDNN_STATUS_NOT_SUPPORTED;
    *bytes = ws;
    return CUDNN_STATUS_SUCCESS;
}

#define PROBLEM_OR_RETURN(p, x, w, conv, y)                                                                  \
    Problem p;                                                                                               \
    do {                                                                                                     \
        if (!h) return CUDNN_STATUS_NOT_INITIALIZED;                                                         \
        cudnnStatus_t s_ = problem_make(&p, x, w, conv, y);                                                  \
        if (s_ != CUDNN_STATUS_SUCCESS) return s_;                                                           \
    } while (0)

cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(cudnnHandle_t h, const cudnnTensorDescriptor_t x,
                                                     const cudnnFilterDescriptor_t w,
                                                     const cudnnConvolutionDescriptor_t conv,
                                                     const cudnnTensorDescriptor_t y, const int requested,
                                                     int *returned, cudnnConvolutionFwdAlgoPerf_t *perf) {
    PROBLEM_OR_RETURN(p, x, w, conv, y);
    return algo_list(FWD, &p, requested, returned, perf);
}
cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(cudnnHandle_t h, const cudnnFilterDescriptor_t w,
                                                          const cudnnTensorDescriptor_t dy,
                                                          const cudnnConvolutionDescriptor_t conv,
                                                          const cudnnTensorDescriptor_t dx, const int requested,
                                                          int *returned, cudnnConvolutionBwdDataAlgoPerf_t *perf) {
    PROBLEM_OR_RETURN(p, dx, w, conv, dy);
    return algo_list(BWD_DATA, &p, requested, returned, perf);
}
cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(cudnnHandle_t h, const cudnnTensorDescriptor_t x,
                                                            const cudnnTensorDescriptor_t dy,
                                                            const cudnnConvolutionDescriptor_t conv,
                                                            const cudnnFilterDescriptor_t dw, const int requested,
                                                            int *returned, cudnnConvolutionBwdFilterAlgoPerf_t *perf) {
    PROBLEM_OR_RETURN(p, x, dw, conv, dy);
    return algo_list(BWD_FILTER, &p, requested, returned, perf);
}
cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(cudnnHandle_t h, const cudnnTensorDescriptor_t x,
                                                      const cudnnFilterDescriptor_t w,
                                                      const cudnnConvolutionDescriptor_t conv,
                                                      const cudnnTensorDescriptor_t y, cudnnConvolutionFwdAlgo_t algo,
                                                      size_t *bytes) {
    PROBLEM_OR_RETURN(p, x, w, conv, y);
    return workspace_query(FWD, algo, &p, bytes);
}
cudnnStatus_t cudnnGetConvolutionBackwardDataWorkspaceSize(cudnnHandle_t h, const cudnnFilterDescriptor_t w,
                                                           const cudnnTensorDescriptor_t dy,
                                                           const cudnnConvolutionDescriptor_t conv,
                                                           const cudnnTensorDescriptor_t dx,
                                                           cudnnConvolutionBwdDataAlgo_t algo, size_t *bytes) {
    PROBLEM_OR_RETURN(p, dx, w, conv, dy);
    return workspace_query(BWD_DATA, algo, &p, bytes);
}
cudnnStatus_t cudnnGetConvolutionBackwardFilterWorkspaceSize(cudnnHandle_t h, const cudnnTensorDescriptor_t x,
                                                             const cudnnTensorDescriptor_t dy,
                                                             const cudnnConvolutionDescriptor_t conv,
                                                             const cudnnFilterDescriptor_t dw,
                                                             cudnnConvolutionBwdFilterAlgo_t algo, size_t *bytes) {
    PROBLEM_OR_RETURN(p, x, dw, conv, dy);
    return workspace_query(BWD_FILTER, algo, &p, bytes);
}

// ---------------------------------------------------------------------------------------------------------------
// execution

// An operand as fp32; fp32 data under a tensor-core math type is first rounded to TF32 (10 mantissa bits).
static std::vector<float> load(const void *p, size_t n, cudnnDataType_t dt, cudnnMathType_t math) {
    std::vector<float> v(n);
    int tf32 = dt == CUDNN_DATA_FLOAT && math != CUDNN_FMA_MATH;
    for (size_t i = 0; i < n; i++) {
        if (dt == CUDNN_DATA_FLOAT) {
            float f = ((const float *)p)[i];
            if (tf32 && isfinite(f)) {
                uint32_t u;
                memcpy(&u, &f, 4);
                u = (u + 0xfffu + ((u >> 13) & 1u)) & ~0x1fffu;
                memcpy(&f, &u, 4);
            }
            v[i] = f;
        } else {
            v[i] = __bfloat162float(((const __nv_bfloat16 *)p)[i]);
        }
    }
    return v;
}

// v [a, c, h, w] (one image or filter per a) reordered to [a, h, w, c] (to_nhwc) or back: the convolutions below
// compute in NCHW order, so NHWC operands are reordered after load and NHWC results before store.
static std::vector<float> reorder(const std::vector<float> &v, int a, int c, int h, int w, int to_nhwc) {
    std::vector<float> r(v.size());
    int64_t hw = (int64_t)h * w;
    for (int64_t n = 0; n < a; n++)
        for (int64_t ch = 0; ch < c; ch++)
            for (int64_t s = 0; s < hw; s++) {
                int64_t nchw = (n * c + ch) * hw + s, nhwc = (n * hw + s) * c + ch;
                if (to_nhwc) r[nhwc] = v[nchw];
                else r[nchw] = v[nhwc];
            }
    return r;
}
// An operand (tensor or filter: the first dim n or k) as fp32 in NCHW order: loaded, then reordered from NHWC when
// so described.
static int lead_dim(const CudaemuDnnTensor *d) { return d->n; }
static int lead_dim(const CudaemuDnnFilter *d) { return d->k; }
template <class D> static std::vector<float> load_nchw(const void *p, const D *d, cudnnMathType_t math) {
    int a = lead_dim(d);
    std::vector<float> v = load(p, (size_t)a * d->c * d->h * d->w, d->dt, math);
    return d->nhwc ? reorder(v, a, d->c, d->h, d->w, 0) : v;
}

// out = alpha acc + beta out in fp32, rounded once to the output type; beta = 0 never reads out (it may hold NaN).
static void store(void *out, const std::vector<float> &acc, cudnnDataType_t dt, float alpha, float beta) {
#pragma omp parallel for if (acc.size() > 65536)
    for (size_t i = 0; i < acc.size(); i++) {
        float r = alpha * acc[i];
        if (beta != 0.0f)
            r = fmaf(beta, dt == CUDNN_DATA_FLOAT ? ((float *)out)[i] : __bfloat162float(((__nv_bfloat16 *)out)[i]), r);
        if (dt == CUDNN_DATA_FLOAT) ((float *)out)[i] = r;
        else ((__nv_bfloat16 *)out)[i] = __float2bfloat16(r);
    }
}

static int overlaps(const void *a, size_t na, const void *b, size_t nb) {
    uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;
    return na && nb && x < y + nb && y < x + na;
}

// Checks the call's pointers and workspace: operands are device memory of their described size, the output (x, w
// or y by direction) overlaps no input (cuDNN convolutions are not in place), the workspace holds what the
// algorithm needs and overlaps no operand.
static cudnnStatus_t call_check(Dir d, int algo, const Problem *p, const void *x, const void *w, const void *y,
                                void *ws, size_t ws_bytes, const void *alpha, const void *beta) {
    if (!alpha || !beta || !x || !w || !y) return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
    if (!algo_find(d, algo, nullptr)) return CUDNN_STATUS_BAD_PARAM;
    size_t need = algo_workspace(d, algo, p);
    if (need == SIZE_MAX) return CUDNN_STATUS_NOT_SUPPORTED;
    if (!cudaemu_is_device(x, p->x_bytes) || !cudaemu_is_device(w, p->w_bytes) || !cudaemu_is_device(y, p->y_bytes))
        return CUDNN_STATUS_BAD_PARAM;
    const void *out = d == FWD ? y : d == BWD_DATA ? x : w;
    size_t out_bytes = d == FWD ? p->y_bytes : d == BWD_DATA ? p->x_bytes : p->w_bytes;
    if ((out != x && overlaps(out, out_bytes, x, p->x_bytes)) ||
        (out != w && overlaps(out, out_bytes, w, p->w_bytes)) || (out != y && overlaps(out, out_bytes, y, p->y_bytes)))
        return CUDNN_STATUS_BAD_PARAM;
    if (ws_bytes < need) return CUDNN_STATUS_BAD_PARAM_SIZE_INSUFFICIENT;
    if (need) {
        if (!ws || !cudaemu_is_device(ws, need)) return CUDNN_STATUS_BAD_PARAM;
        if (overlaps(ws, need, x, p->x_bytes) || overlaps(ws, need, w, p->w_bytes) || overlaps(ws, need, y, p->y_bytes))
            return CUDNN_STATUS_BAD_PARAM;
    }
    return CUDNN_STATUS_SUCCESS;
}

// Before a call runs: its workspace is filled with NaN bytes (nothing may be kept there across calls).
static void ws_garbage(Dir d, int algo, const Problem *p, void *ws) {
    size_t need = algo_workspace(d, algo, p);
    if (need) memset(ws, 0xff, need);
}

// A call on a capturing stream is recorded with copies of its descriptors and scalars, read now as cuDNN reads them
// at the call; the closure runs the call again when the graph runs (operands are read then).
struct Saved {
    CudaemuDnnTensor x, y;
    CudaemuDnnFilter w;
    CudaemuDnnConv conv;
    float alpha, beta;
};
static std::shared_ptr<Saved> saved_of(const Problem *p, const void *alpha, const void *beta) {
    return std::make_shared<Saved>(
        Saved{*p->x, *p->y, *p->w, *p->conv, *(const float *)alpha, *(const float *)beta});
}
static void replayed(cudnnStatus_t s, const char *call) {
    if (s != CUDNN_STATUS_SUCCESS) cudaemu_fail(call, "a captured call failed when its graph ran");
}
#define CAPTURE_OR_RUN(h, p, alpha, beta, replay)                                                            \
    do {                                                                                                     \
        cudaStreamCaptureStatus cap_ = cudaemu_capture_status((h)->stream);                                  \
        if (cap_ == cudaStreamCaptureStatusInvalidated) return CUDNN_STATUS_EXECUTION_FAILED;                \
        if (cap_ == cudaStreamCaptureStatusActive) {                                                         \
            std::shared_ptr<Saved> c = saved_of(&(p), alpha, beta);                                          \
            cudaemu_capture_add((h)->stream, [=] { replay; });                                               \
            return CUDNN_STATUS_SUCCESS;                                                                     \
        }                                                                                                    \
    } while (0)

// Geometry of a problem: filter tap (r, q) of output (oy, ox) reads input (iy, ix) = (oy u - pad_h + r,
// ox v - pad_w + q) (cross-correlation, no dilation). The convolutions run as GEMMs over im2col columns
// cols [C R S, rows of output pixels], in chunks of output rows that keep the columns under COLS_MAX floats.
struct Geom {
    int N, C, H, W, K, R, S, OH, OW, ph, pw, u, v;
    int64_t taps() const { return (int64_t)C * R * S; }
    int chunk_rows() const {
        int64_t rows = COLS_MAX / (taps() * OW);
        return rows < 1 ? 1 : rows > OH ? OH : (int)rows;
    }
};
static Geom geom_of(const Problem *p) {
    const CudaemuDnnConv *c = p->conv;
    return Geom{p->x->n, p->x->c, p->x->h, p->x->w, p->w->k, p->w->h, p->w->w, p->y->h, p->y->w, c->pad_h,
                c->pad_w, c->u, c->v};
}

// cols [C R S, (oy1 - oy0) OW] from one image x [C, H, W], output rows [oy0, oy1); padding reads zero.
static void im2col(float *cols, const float *x, const Geom &g, int oy0, int oy1) {
    int64_t n = (int64_t)(oy1 - oy0) * g.OW;
#pragma omp parallel for if (g.taps() * n > 65536)
    for (int64_t t = 0; t < g.taps(); t++) {
        int c = (int)(t / (g.R * g.S)), r = (int)(t / g.S % g.R), q = (int)(t % g.S);
        float *dst = cols + t * n;
        for (int oy = oy0; oy < oy1; oy++) {
            int iy = oy * g.u - g.ph + r;
            for (int ox = 0; ox < g.OW; ox++) {
                int ix = ox * g.v - g.pw + q;
                *dst++ = iy < 0 || iy >= g.H || ix < 0 || ix >= g.W ? 0.0f : x[((int64_t)c * g.H + iy) * g.W + ix];
            }
        }
    }
}

// dx [C, H, W] += the column gradient cols [C R S, (oy1 - oy0) OW] scattered back to the pixels each column read
// (one thread per channel: the taps of a channel write only its own plane).
static void col2im_add(float *dx, const float *cols, const Geom &g, int oy0, int oy1) {
    int64_t n = (int64_t)(oy1 - oy0) * g.OW;
#pragma omp parallel for if (g.taps() * n > 65536)
    for (int c = 0; c < g.C; c++)
        for (int r = 0; r < g.R; r++)
            for (int q = 0; q < g.S; q++) {
                const float *src = cols + (((int64_t)c * g.R + r) * g.S + q) * n;
                for (int oy = oy0; oy < oy1; oy++) {
                    int iy = oy * g.u - g.ph + r;
                    for (int ox = 0; ox < g.OW; ox++, src++) {
                        int ix = ox * g.v - g.pw + q;
                        if (iy >= 0 && iy < g.H && ix >= 0 && ix < g.W) dx[((int64_t)c * g.H + iy) * g.W + ix] += *src;
                    }
                }
            }
}

cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t h, const void *alpha, const cudnnTensorDescriptor_t xd,
                                      const void *x, const cudnnFilterDescriptor_t wd, const void *w,
                                      const cudnnConvolutionDescriptor_t conv, cudnnConvolutionFwdAlgo_t algo,
                                      void *ws, size_t ws_bytes, const void *beta, const cudnnTensorDescriptor_t yd,
                                      void *y) {
    PROBLEM_OR_RETURN(p, xd, wd, conv, yd);
    cudnnStatus_t s = call_check(FWD, algo, &p, x, w, y, ws, ws_bytes, alpha, beta);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    CAPTURE_OR_RUN(h, p, alpha, beta,
                   replayed(cudnnConvolutionForward(h, &c->alpha, &c->x, x, &c->w, w, &c->conv, algo, ws, ws_bytes,
                                                    &c->beta, &c->y, y),
                            "cudnnConvolutionForward"));
    ws_garbage(FWD, algo, &p, ws);
    Geom g = geom_of(&p);
    std::vector<float> X = load_nchw(x, xd, conv->math), Wt = load_nchw(w, wd, conv->math);
    int64_t T = g.taps(), P = (int64_t)g.OH * g.OW;
    int rows = g.chunk_rows();
    std::vector<float> acc((size_t)g.N * g.K * P), cols((size_t)(T * rows * g.OW));
    // y_n [K, P] = w [K, T] cols_n [T, P], by chunks of output rows
    for (int n = 0; n < g.N; n++)
        for (int oy0 = 0; oy0 < g.OH; oy0 += rows) {
            int oy1 = std::min(oy0 + rows, g.OH), cs = (oy1 - oy0) * g.OW;
            im2col(cols.data(), &X[(size_t)n * g.C * g.H * g.W], g, oy0, oy1);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g.K, cs, (int)T, 1.0f, Wt.data(), (int)T,
                        cols.data(), cs, 0.0f, &acc[(size_t)n * g.K * P + (size_t)oy0 * g.OW], (int)P);
        }
    if (yd->nhwc) acc = reorder(acc, g.N, g.K, g.OH, g.OW, 1);
    store(y, acc, yd->dt, *(const float *)alpha, *(const float *)beta);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t h, const void *alpha, const cudnnFilterDescriptor_t wd,
                                           const void *w, const cudnnTensorDescriptor_t dyd, const void *dy,
                                           const cudnnConvolutionDescriptor_t conv, cudnnConvolutionBwdDataAlgo_t algo,
                                           void *ws, size_t ws_bytes, const void *beta,
                                           const cudnnTensorDescriptor_t dxd, void *dx) {
    PROBLEM_OR_RETURN(p, dxd, wd, conv, dyd);
    cudnnStatus_t s = call_check(BWD_DATA, algo, &p, dx, w, dy, ws, ws_bytes, alpha, beta);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    CAPTURE_OR_RUN(h, p, alpha, beta,
                   replayed(cudnnConvolutionBackwardData(h, &c->alpha, &c->w, w, &c->y, dy, &c->conv, algo, ws,
                                                         ws_bytes, &c->beta, &c->x, dx),
                            "cudnnConvolutionBackwardData"));
    ws_garbage(BWD_DATA, algo, &p, ws);
    Geom g = geom_of(&p);
    std::vector<float> DY = load_nchw(dy, dyd, conv->math), Wt = load_nchw(w, wd, conv->math);
    int64_t T = g.taps(), P = (int64_t)g.OH * g.OW;
    int rows = g.chunk_rows();
    std::vector<float> acc((size_t)g.N * g.C * g.H * g.W), cols((size_t)(T * rows * g.OW));
    // dx_n = col2im(w^T [T, K] dy_n [K, P]), by chunks of output rows
    for (int n = 0; n < g.N; n++)
        for (int oy0 = 0; oy0 < g.OH; oy0 += rows) {
            int oy1 = std::min(oy0 + rows, g.OH), cs = (oy1 - oy0) * g.OW;
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)T, cs, g.K, 1.0f, Wt.data(), (int)T,
                        &DY[(size_t)n * g.K * P + (size_t)oy0 * g.OW], (int)P, 0.0f, cols.data(), cs);
            col2im_add(&acc[(size_t)n * g.C * g.H * g.W], cols.data(), g, oy0, oy1);
        }
    if (dxd->nhwc) acc = reorder(acc, g.N, g.C, g.H, g.W, 1);
    store(dx, acc, dxd->dt, *(const float *)alpha, *(const float *)beta);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t h, const void *alpha, const cudnnTensorDescriptor_t xd,
                                             const void *x, const cudnnTensorDescriptor_t dyd, const void *dy,
                                             const cudnnConvolutionDescriptor_t conv,
                                             cudnnConvolutionBwdFilterAlgo_t algo, void *ws, size_t ws_bytes,
                                             const void *beta, const cudnnFilterDescriptor_t dwd, void *dw) {
    PROBLEM_OR_RETURN(p, xd, dwd, conv, dyd);
    cudnnStatus_t s = call_check(BWD_FILTER, algo, &p, x, dw, dy, ws, ws_bytes, alpha, beta);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    CAPTURE_OR_RUN(h, p, alpha, beta,
                   replayed(cudnnConvolutionBackwardFilter(h, &c->alpha, &c->x, x, &c->y, dy, &c->conv, algo, ws,
                                                           ws_bytes, &c->beta, &c->w, dw),
                            "cudnnConvolutionBackwardFilter"));
    ws_garbage(BWD_FILTER, algo, &p, ws);
    Geom g = geom_of(&p);
    std::vector<float> X = load_nchw(x, xd, conv->math), DY = load_nchw(dy, dyd, conv->math);
    int64_t T = g.taps(), P = (int64_t)g.OH * g.OW;
    int rows = g.chunk_rows();
    std::vector<float> acc((size_t)(g.K * T)), cols((size_t)(T * rows * g.OW));
    // dw [K, T] = sum over images and chunks of dy_n [K, P] cols_n^T [P, T], accumulated in fp32
    for (int n = 0; n < g.N; n++)
        for (int oy0 = 0; oy0 < g.OH; oy0 += rows) {
            int oy1 = std::min(oy0 + rows, g.OH), cs = (oy1 - oy0) * g.OW;
            im2col(cols.data(), &X[(size_t)n * g.C * g.H * g.W], g, oy0, oy1);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g.K, (int)T, cs, 1.0f,
                        &DY[(size_t)n * g.K * P + (size_t)oy0 * g.OW], (int)P, cols.data(), cs,
                        n == 0 && oy0 == 0 ? 0.0f : 1.0f, acc.data(), (int)T);
        }
    if (dwd->nhwc) acc = reorder(acc, g.K, g.C, g.R, g.S, 1);
    store(dw, acc, dwd->dt, *(const float *)alpha, *(const float *)beta);
    return CUDNN_STATUS_SUCCESS;
}
