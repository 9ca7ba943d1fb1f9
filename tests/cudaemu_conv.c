// cudaemu_conv.c: conv2d on the GPU (cuDNN behind src/ops/cuda/cuda_conv.cu; the emulator's cuDNN in ctest -L
// cudaemu) against the CPU op through the same calls: forward (with and without bias, with a residual: two bf16
// roundings, the residual-plus-bias fill and the sum), data gradient (written) and
// weight and bias gradients (accumulated over two backward calls), in fp32 and bf16, at 3x3 stride 1 and 2 (also
// after the VAE's asymmetric pad2d), 1x1, odd sizes and channel counts, batch 2; the same for conv2d_nhwc (channels
// last) against its CPU op. Then the deterministic algorithm
// restriction, the wrapper's refusals, and (emulation only) the emulated cuDNN's own statuses and alpha/beta.
#include <math.h>
#include <string.h>

#include "../src/cudaemu/cudaemu_dnn.h"
#include "../src/ops/cuda/cuda_api.h"
#include "../src/ops/ops.h"
#include "cudaemu_util.h"

// fp32: the CPU op sums K = IC KH KW <= 153 products (weight gradient: B OH OW <= 9240) in fp32 through OpenBLAS,
// the GPU in fp32 without TF32 in its own order (the emulator in double): a few fp32 ulps of the largest value,
// measured <= 5e-7 relative; 2e-6 leaves room for a real GPU's summation order.
#define TOL_F32 2e-6
// bf16: a bf16 value is rounded to 8 significant bits, an error of at most 2^-8 of its magnitude. Outputs and data
// gradients are rounded once (TOL_BF16 = 2^-8 of the largest reference value). Two roundings (TOL_BF16_2 = 2^-7):
// the weight gradient, whose two calls are each rounded to bf16 once before their fp32 accumulation, and the output
// with an f32 bias, which is rounded to bf16 when broadcast into the bf16 output. Bias gradients are fp32 sums of
// exact bf16 inputs: TOL_F32.
#define TOL_BF16 (1.0 / 256)
#define TOL_BF16_2 (1.0 / 128)

typedef struct {
    const char *name;
    int B, IC, OC, H, W, K, stride, pad, bias;
    int pad_br; // 1: the input is first padded by pad2d (top 0, bottom 1, left 0, right 1), as the VAE encoder does
} Case;

static Tensor cpu4(int64_t a, int64_t b, int64_t c, int64_t d) {
    int64_t s[4] = {a, b, c, d};
    return cu_alloc(DEVICE_CPU, DTYPE_F32, 4, s);
}
static Tensor cpu1(int64_t a) { return cu_alloc(DEVICE_CPU, DTYPE_F32, 1, &a); }

// The label of a case's storage: f32, bf16, or bf16 with an f32 bias.
static const char *case_dts(const Case *c, DType dt, DType bias_dt) {
    return dt != DTYPE_BF16 ? "f32" : c->bias && bias_dt != dt ? "bf16, f32 bias" : "bf16";
}

// The gradients after two backward calls (labels "<prefix><name> (<dts>) ..."): dx written, within tol; dw
// accumulated, within tol2; db accumulated (fp32 sums of exact inputs), within TOL_F32.
static void compare_grads(const char *prefix, const Case *c, const char *dts, const Tensor *gdx, const Tensor *dx,
                          const Tensor *gdw, const Tensor *dw, const Tensor *gdb, const Tensor *db, double tol,
                          double tol2) {
    char what[160];
    snprintf(what, sizeof what, "%s%s (%s) dx", prefix, c->name, dts);
    cu_compare(what, gdx, dx, tol);
    snprintf(what, sizeof what, "%s%s (%s) dw += twice", prefix, c->name, dts);
    cu_compare(what, gdw, dw, tol2);
    if (c->bias) {
        snprintf(what, sizeof what, "%s%s (%s) db += twice", prefix, c->name, dts);
        cu_compare(what, gdb, db, TOL_F32);
    }
}

static void run_case(const Case *c, DType dt, DType bias_dt) {
    int rnd = dt == DTYPE_BF16;
    double tol = rnd ? TOL_BF16 : TOL_F32, tol2 = rnd ? TOL_BF16_2 : TOL_F32;
    int64_t H = c->H + c->pad_br, W = c->W + c->pad_br; // the convolution's input size
    int64_t OH = (H + 2 * c->pad - c->K) / c->stride + 1, OW = (W + 2 * c->pad - c->K) / c->stride + 1;
    Tensor x0 = cpu4(c->B, c->IC, c->H, c->W), x = cpu4(c->B, c->IC, H, W), w = cpu4(c->OC, c->IC, c->K, c->K);
    Tensor b = cpu1(c->OC), y = cpu4(c->B, c->OC, OH, OW), dy1 = cpu4(c->B, c->OC, OH, OW);
    Tensor dy2 = cpu4(c->B, c->OC, OH, OW), dx = cpu4(c->B, c->IC, H, W), dw = cpu4(c->OC, c->IC, c->K, c->K);
    Tensor db = cpu1(c->OC);
    cu_fill(&x0, 1, 1.0f, rnd);
    cu_fill(&w, 2, 0.3f, rnd);
    cu_fill(&b, 3, 0.5f, rnd || bias_dt == DTYPE_BF16);
    cu_fill(&dy1, 4, 1.0f, rnd);
    cu_fill(&dy2, 5, 1.0f, rnd);
    cu_fill(&dw, 6, 0.1f, 0); // earlier gradient the calls add to (fp32 on both sides)
    cu_fill(&db, 7, 0.1f, 0);
    if (c->pad_br) pad2d_forward(&x, &x0, 0, 1, 0, 1);
    else memcpy(x.data, x0.data, tensor_bytes(&x));

    Tensor gx = cu_upload(&x, dt), gw = cu_upload(&w, dt), gb = cu_upload(&b, bias_dt), gdy1 = cu_upload(&dy1, dt);
    Tensor gdy2 = cu_upload(&dy2, dt), gdw = cu_upload(&dw, DTYPE_F32), gdb = cu_upload(&db, DTYPE_F32);
    Tensor gy = cu_nan(y.ndim, y.shape, dt, 0), gdx = cu_nan(dx.ndim, dx.shape, dt, 0);
    Tensor *bias = c->bias ? &b : NULL, *gbias = c->bias ? &gb : NULL;

    conv2d_forward(&y, &x, &w, bias, c->stride, c->pad);
    conv2d_forward(&gy, &gx, &gw, gbias, c->stride, c->pad);
    // two backward calls: dx holds the second call's gradient, dw and db the sum of both added to their start
    conv2d_backward(&dx, &dw, bias ? &db : NULL, &dy1, &x, &w, c->stride, c->pad);
    conv2d_backward(&gdx, &gdw, gbias ? &gdb : NULL, &gdy1, &gx, &gw, c->stride, c->pad);
    conv2d_backward(&dx, &dw, bias ? &db : NULL, &dy2, &x, &w, c->stride, c->pad);
    conv2d_backward(&gdx, &gdw, gbias ? &gdb : NULL, &gdy2, &gx, &gw, c->stride, c->pad);

    char what[160];
    const char *dts = case_dts(c, dt, bias_dt);
    snprintf(what, sizeof what, "%s (%s) forward", c->name, dts);
    cu_compare(what, &gy, &y, c->bias && bias_dt != dt ? tol2 : tol);
    { // with a residual: put in with the bias before the convolution adds (1x1: the GEMM's C); CPU: added after
        Tensor r = cpu4(c->B, c->OC, OH, OW), yr = cpu4(c->B, c->OC, OH, OW), ya = cpu4(c->B, c->OC, OH, OW);
        cu_fill(&r, 8, 1.0f, rnd);
        Tensor gr = cu_upload(&r, dt), gyr = cu_nan(yr.ndim, yr.shape, dt, 0);
        conv2d_forward_residual(&yr, &x, &w, bias, &r, c->stride, c->pad);
        conv2d_forward_residual(&gyr, &gx, &gw, gbias, &gr, c->stride, c->pad);
        snprintf(what, sizeof what, "%s (%s) forward + residual", c->name, dts);
        cu_compare(what, &gyr, &yr, tol2);
        add_forward(&ya, &y, &r);
        tu_check(!memcmp(ya.data, yr.data, tensor_bytes(&ya)), "%s: CPU residual = conv then add, bit for bit",
                 c->name);
        Tensor *rt[] = {&r, &yr, &ya, &gr, &gyr};
        for (int i = 0; i < 5; i++) cu_free(rt[i]);
    }
    compare_grads("", c, dts, &gdx, &dx, &gdw, &dw, &gdb, &db, tol, tol2);
    Tensor *all[] = {&x0, &x,  &w,   &b,    &y,    &dy1, &dy2, &dx, &dw, &db,
                     &gx, &gw, &gb, &gdy1, &gdy2, &gdw, &gdb, &gy, &gdx};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) cu_free(all[i]);
}

// conv2d_nhwc (channels last: cuDNN with NHWC descriptors, the bias kernels indexing channels last; 1x1 the linear
// route) against the CPU's conv2d_nhwc through the same calls as run_case: forward with NaN-filled output, data
// gradient written, weight and bias gradients accumulated over two calls. Tolerances as run_case's.
static void run_nhwc_case(const Case *c, DType dt, DType bias_dt) {
    int rnd = dt == DTYPE_BF16;
    double tol = rnd ? TOL_BF16 : TOL_F32, tol2 = rnd ? TOL_BF16_2 : TOL_F32;
    int64_t OH = (c->H + 2 * c->pad - c->K) / c->stride + 1, OW = (c->W + 2 * c->pad - c->K) / c->stride + 1;
    Tensor x = cpu4(c->B, c->H, c->W, c->IC), w = cpu4(c->OC, c->K, c->K, c->IC), b = cpu1(c->OC);
    Tensor y = cpu4(c->B, OH, OW, c->OC), dy1 = cpu4(c->B, OH, OW, c->OC), dy2 = cpu4(c->B, OH, OW, c->OC);
    Tensor dx = cpu4(c->B, c->H, c->W, c->IC), dw = cpu4(c->OC, c->K, c->K, c->IC), db = cpu1(c->OC);
    cu_fill(&x, 31, 1.0f, rnd);
    cu_fill(&w, 32, 0.3f, rnd);
    cu_fill(&b, 33, 0.5f, rnd || bias_dt == DTYPE_BF16);
    cu_fill(&dy1, 34, 1.0f, rnd);
    cu_fill(&dy2, 35, 1.0f, rnd);
    cu_fill(&dw, 36, 0.1f, 0);
    cu_fill(&db, 37, 0.1f, 0);
    Tensor gx = cu_upload(&x, dt), gw = cu_upload(&w, dt), gb = cu_upload(&b, bias_dt), gdy1 = cu_upload(&dy1, dt);
    Tensor gdy2 = cu_upload(&dy2, dt), gdw = cu_upload(&dw, DTYPE_F32), gdb = cu_upload(&db, DTYPE_F32);
    Tensor gy = cu_nan(y.ndim, y.shape, dt, 0), gdx = cu_nan(dx.ndim, dx.shape, dt, 0);
    Tensor *bias = c->bias ? &b : NULL, *gbias = c->bias ? &gb : NULL;
    ops_workspace_reserve(DEVICE_CUDA, conv2d_nhwc_workspace_bytes(&gx, &gw, c->stride, c->pad));
    conv2d_nhwc_forward(&y, &x, &w, bias, c->stride, c->pad);
    conv2d_nhwc_forward(&gy, &gx, &gw, gbias, c->stride, c->pad);
    for (int r = 0; r < 2; r++) {
        conv2d_nhwc_backward(&dx, &dw, bias ? &db : NULL, r ? &dy2 : &dy1, &x, &w, c->stride, c->pad);
        conv2d_nhwc_backward(&gdx, &gdw, gbias ? &gdb : NULL, r ? &gdy2 : &gdy1, &gx, &gw, c->stride, c->pad);
    }
    char what[160];
    const char *dts = case_dts(c, dt, bias_dt);
    snprintf(what, sizeof what, "NHWC %s (%s) forward", c->name, dts);
    cu_compare(what, &gy, &y, c->bias && bias_dt != dt ? tol2 : tol);
    compare_grads("NHWC ", c, dts, &gdx, &dx, &gdw, &dw, &gdb, &db, tol, tol2);
    Tensor *all[] = {&x, &w, &b, &y, &dy1, &dy2, &dx, &dw, &db, &gx, &gw, &gb, &gdy1, &gdy2, &gdw, &gdb, &gy, &gdx};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) cu_free(all[i]);
}

// Planning: conv2d_workspace_bytes on shape descriptors (no data) plans the shape and answers what its calls need;
// with that reserved, the calls neither grow the workspace nor need more (the workspace pointer stays).
static void check_planning(DType dt) {
    int64_t sx[4] = {2, 6, 11, 10}, sw[4] = {5, 6, 3, 3}, sy[4] = {2, 5, 6, 5}, sb[1] = {5};
    Tensor xd = tensor_make(NULL, dt, DEVICE_CUDA, 4, sx), wd = tensor_make(NULL, dt, DEVICE_CUDA, 4, sw);
    size_t need = conv2d_workspace_bytes(&xd, &wd, 2, 1);
    Conv2dCudaShape s = {.dt = dt, .B = 2, .IC = 6, .H = 11, .W = 10, .OC = 5, .KH = 3, .KW = 3, .stride = 2, .pad = 1};
    tu_check(need == conv2d_plan_cuda(&s, NULL) && (dt == DTYPE_F32 || need >= 2 * 5 * 6 * 9),
             "%s plan from descriptors: workspace %zu bytes", dtype_name(dt), need);
    ops_workspace_reserve(DEVICE_CUDA, need);
    void *before = ops_workspace(DEVICE_CUDA, 0);
    Tensor x = cu_alloc(DEVICE_CUDA, dt, 4, sx), w = cu_alloc(DEVICE_CUDA, dt, 4, sw);
    Tensor y = cu_alloc(DEVICE_CUDA, dt, 4, sy);
    Tensor b = cu_alloc(DEVICE_CUDA, dt, 1, sb), dx = cu_alloc(DEVICE_CUDA, dt, 4, sx);
    Tensor dw = cu_alloc(DEVICE_CUDA, DTYPE_F32, 4, sw), db = cu_alloc(DEVICE_CUDA, DTYPE_F32, 1, sb);
    conv2d_forward(&y, &x, &w, &b, 2, 1);
    conv2d_backward(&dx, &dw, &db, &y, &x, &w, 2, 1);
    tu_check(ops_workspace(DEVICE_CUDA, 0) == before, "%s calls stay within the reserved workspace", dtype_name(dt));
    Tensor *all[] = {&x, &w, &y, &b, &dx, &dw, &db};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) cu_free(all[i]);
}

// Algorithm choice: fp32 plans use no FFT or Winograd forward; with train.deterministic the planned backward
// algorithms are deterministic ones (cuDNN's data ALGO_0 and filter ALGO_0 / ALGO_3 are not), and two backward runs
// give the same bits.
static void check_deterministic(void) {
    Conv2dCudaShape s = {.dt = DTYPE_F32, .B = 2, .IC = 5, .H = 9, .W = 9, .OC = 7, .KH = 3, .KW = 3, .stride = 1,
                         .pad = 1};
    int a[3];
    conv2d_set_deterministic(0);
    conv2d_plan_cuda(&s, a);
    if (cuda_is_emulated()) // the emulation ranks a non-deterministic weight-gradient algorithm first
        tu_check(a[2] == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3, "default plan takes the first heuristic (filter algo %d)",
                 a[2]);
    tu_check(a[0] != CUDNN_CONVOLUTION_FWD_ALGO_FFT && a[0] != CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING &&
                 a[0] != CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD && a[0] != CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED,
             "f32 plan: a GEMM-like forward algorithm (%d)", a[0]);
    if (cuda_is_emulated()) { // bf16 takes the emulation's first heuristic, Winograd
        Conv2dCudaShape sb = s;
        sb.dt = DTYPE_BF16;
        conv2d_plan_cuda(&sb, a);
        tu_check(a[0] == CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED, "bf16 plan: forward algorithm %d", a[0]);
    }
    conv2d_set_deterministic(1);
    conv2d_plan_cuda(&s, a);
    tu_check(a[1] != CUDNN_CONVOLUTION_BWD_DATA_ALGO_0 && a[2] != CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0 &&
                 a[2] != CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3,
             "deterministic plan: algorithms fwd %d, data %d, filter %d", a[0], a[1], a[2]);
    Tensor x = cpu4(2, 5, 9, 9), w = cpu4(7, 5, 3, 3), dy = cpu4(2, 7, 9, 9), dw = cpu4(7, 5, 3, 3);
    cu_fill(&x, 11, 1.0f, 0);
    cu_fill(&w, 12, 0.3f, 0);
    cu_fill(&dy, 13, 1.0f, 0);
    memset(dw.data, 0, tensor_bytes(&dw));
    Tensor gx = cu_upload(&x, DTYPE_F32), gw = cu_upload(&w, DTYPE_F32), gdy = cu_upload(&dy, DTYPE_F32);
    Tensor gdx[2], gdw[2];
    float *hx[2], *hw[2];
    for (int r = 0; r < 2; r++) {
        gdx[r] = cu_nan(x.ndim, x.shape, DTYPE_F32, 0);
        gdw[r] = cu_upload(&dw, DTYPE_F32); // zeros
        conv2d_backward(&gdx[r], &gdw[r], NULL, &gdy, &gx, &gw, 1, 1);
        hx[r] = cu_download(&gdx[r]);
        hw[r] = cu_download(&gdw[r]);
    }
    tu_check(!memcmp(hx[0], hx[1], tensor_bytes(&x)) && !memcmp(hw[0], hw[1], tensor_bytes(&dw)),
             "deterministic backward: two runs bitwise equal");
    conv2d_set_deterministic(0);
    for (int r = 0; r < 2; r++) free(hx[r]), free(hw[r]), cu_free(&gdx[r]), cu_free(&gdw[r]);
    Tensor *all[] = {&x, &w, &dy, &dw, &gx, &gw, &gdy};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) cu_free(all[i]);
}

// The wrapper's refusals, each in a child process: internal failure (exit 1) naming the problem.
static void child_mixed_dtypes(const void *arg) {
    (void)arg;
    int64_t sx[4] = {1, 2, 5, 5}, sw[4] = {3, 2, 3, 3}, sy[4] = {1, 3, 5, 5};
    Tensor x = cu_alloc(DEVICE_CUDA, DTYPE_F32, 4, sx), w = cu_alloc(DEVICE_CUDA, DTYPE_BF16, 4, sw);
    Tensor y = cu_alloc(DEVICE_CUDA, DTYPE_F32, 4, sy);
    conv2d_forward(&y, &x, &w, NULL, 1, 1);
}
static const Conv2dCudaShape k_small = {.dt = DTYPE_F32, .B = 1, .IC = 2, .H = 5, .W = 5, .OC = 3, .KH = 3, .KW = 3,
                                        .stride = 1, .pad = 1};
static void child_small_workspace(const void *arg) {
    size_t need = *(const size_t *)arg;
    int64_t sx[4] = {1, 2, 5, 5}, sw[4] = {3, 2, 3, 3}, sy[4] = {1, 3, 5, 5};
    Tensor x = cu_alloc(DEVICE_CUDA, DTYPE_F32, 4, sx), w = cu_alloc(DEVICE_CUDA, DTYPE_F32, 4, sw);
    Tensor y = cu_alloc(DEVICE_CUDA, DTYPE_F32, 4, sy);
    conv2d_forward_cuda(y.data, x.data, w.data, NULL, 0, NULL, &k_small, ops_workspace(DEVICE_CUDA, need), need - 1);
}
static void check_refusals(void) {
    TuChild ch;
    tu_run_child(child_mixed_dtypes, NULL, &ch);
    tu_check(ch.code == 1 && strstr(ch.err, "operands stored as"), "bf16 weight with f32 input refused (exit %d)",
             ch.code);
    tu_child_free(&ch);
    size_t need = conv2d_plan_cuda(&k_small, NULL);
    if (!need) { // a real cuDNN may need no workspace here: nothing to cut short
        printf("note: the small plan needs no workspace; short-workspace check not run\n");
        return;
    }
    tu_run_child(child_small_workspace, &need, &ch);
    tu_check(ch.code == 1 && strstr(ch.err, "the plan needs"), "workspace one byte short refused (exit %d)", ch.code);
    tu_child_free(&ch);
}

// The emulated cuDNN itself: statuses for bad descriptors, pointers and workspaces; alpha/beta; TF32 under the
// default math type. (Emulation only: the real library's statuses differ in detail.)
static void check_emulated_dnn(void) {
    cudnnHandle_t h;
    cudnnTensorDescriptor_t xd, yd, bad;
    cudnnFilterDescriptor_t wd, wbf;
    cudnnConvolutionDescriptor_t cd;
    cudnnCreate(&h);
    cudnnCreateTensorDescriptor(&xd), cudnnCreateTensorDescriptor(&yd), cudnnCreateTensorDescriptor(&bad);
    cudnnCreateFilterDescriptor(&wd), cudnnCreateFilterDescriptor(&wbf);
    cudnnCreateConvolutionDescriptor(&cd);
    int ok = cudnnSetTensor4dDescriptor(xd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 2, 3, 6, 5) == 0 &&
             cudnnSetTensor4dDescriptor(yd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 2, 4, 6, 5) == 0 &&
             cudnnSetFilter4dDescriptor(wd, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, 4, 3, 3, 3) == 0 &&
             cudnnSetFilter4dDescriptor(wbf, CUDNN_DATA_BFLOAT16, CUDNN_TENSOR_NCHW, 4, 3, 3, 3) == 0 &&
             cudnnSetConvolution2dDescriptor(cd, 1, 1, 1, 1, 1, 1, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT) == 0 &&
             cudnnSetConvolutionMathType(cd, CUDNN_FMA_MATH) == 0;
    tu_check(ok, "emulated cuDNN: descriptors set");
    size_t ws_need = 0;
    cudnnStatus_t st;
    st = cudnnSetConvolution2dDescriptor(cd, 1, 1, 0, 1, 1, 1, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT);
    tu_check(st == CUDNN_STATUS_BAD_PARAM, "stride 0 refused (%s)", cudnnGetErrorString(st));
    st = cudnnSetConvolution2dDescriptor(cd, 1, 1, 1, 1, 2, 2, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT);
    tu_check(st == CUDNN_STATUS_NOT_SUPPORTED, "dilation not emulated (%s)", cudnnGetErrorString(st));
    st = cudnnSetConvolution2dDescriptor(cd, 1, 1, 1, 1, 1, 1, CUDNN_CONVOLUTION, CUDNN_DATA_FLOAT);
    tu_check(st == CUDNN_STATUS_NOT_SUPPORTED, "convolution mode not emulated (%s)", cudnnGetErrorString(st));
    st = cudnnSetTensor4dDescriptor(bad, (cudnnTensorFormat_t)7, CUDNN_DATA_FLOAT, 2, 3, 6, 5);
    tu_check(st == CUDNN_STATUS_BAD_PARAM, "unknown tensor format refused (%s)", cudnnGetErrorString(st));
    cudnnTensorDescriptor_t xn;
    cudnnCreateTensorDescriptor(&xn);
    st = cudnnSetTensor4dDescriptor(xn, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, 2, 3, 6, 5);
    tu_check(st == 0, "NHWC tensor descriptor set (%s)", cudnnGetErrorString(st));
    st = cudnnGetConvolutionForwardWorkspaceSize(h, xn, wd, cd, yd, CUDNN_CONVOLUTION_FWD_ALGO_GEMM, &ws_need);
    tu_check(st == CUDNN_STATUS_NOT_SUPPORTED_LAYOUT, "NHWC input with NCHW filter and output refused (%s)",
             cudnnGetErrorString(st));
    cudnnDestroyTensorDescriptor(xn);
    st = cudnnGetConvolutionForwardWorkspaceSize(h, bad, wd, cd, yd, CUDNN_CONVOLUTION_FWD_ALGO_GEMM, &ws_need);
    tu_check(st == CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED, "unset descriptor refused (%s)", cudnnGetErrorString(st));
    st = cudnnGetConvolutionForwardWorkspaceSize(h, xd, wd, cd, xd, CUDNN_CONVOLUTION_FWD_ALGO_GEMM, &ws_need);
    tu_check(st == CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH, "wrong output shape refused (%s)", cudnnGetErrorString(st));
    st = cudnnGetConvolutionForwardWorkspaceSize(h, xd, wbf, cd, yd, CUDNN_CONVOLUTION_FWD_ALGO_GEMM, &ws_need);
    tu_check(st == CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE, "f32 input with bf16 filter refused (%s)",
             cudnnGetErrorString(st));
    st = cudnnGetConvolutionForwardWorkspaceSize(h, xd, wd, cd, yd, CUDNN_CONVOLUTION_FWD_ALGO_GEMM, &ws_need);
    tu_check(st == 0 && ws_need > 0, "GEMM forward workspace %zu bytes", ws_need);

    Tensor x = cpu4(2, 3, 6, 5), w = cpu4(4, 3, 3, 3), y = cpu4(2, 4, 6, 5), y0 = cpu4(2, 4, 6, 5);
    cu_fill(&x, 21, 1.0f, 0);
    cu_fill(&w, 22, 0.3f, 0);
    cu_fill(&y0, 23, 1.0f, 0);
    conv2d_forward(&y, &x, &w, NULL, 1, 1);
    Tensor gx = cu_upload(&x, DTYPE_F32), gw = cu_upload(&w, DTYPE_F32), gy = cu_upload(&y0, DTYPE_F32);
    void *ws = device_alloc(DEVICE_CUDA, ws_need);
    float alpha = 2.0f, beta = 1.0f, zero = 0.0f;
    st = cudnnConvolutionForward(h, &alpha, xd, gx.data, wd, gw.data, cd, CUDNN_CONVOLUTION_FWD_ALGO_GEMM, ws,
                                 ws_need - 1, &beta, yd, gy.data);
    tu_check(st == CUDNN_STATUS_BAD_PARAM_SIZE_INSUFFICIENT, "workspace one byte short refused (%s)",
             cudnnGetErrorString(st));
    st = cudnnConvolutionForward(h, &alpha, xd, x.data, wd, gw.data, cd, CUDNN_CONVOLUTION_FWD_ALGO_GEMM, ws, ws_need,
                                 &beta, yd, gy.data);
    tu_check(st == CUDNN_STATUS_BAD_PARAM, "host input pointer refused (%s)", cudnnGetErrorString(st));
    st = cudnnConvolutionForward(h, &alpha, xd, gx.data, wd, gw.data, cd, CUDNN_CONVOLUTION_FWD_ALGO_GEMM, gy.data,
                                 ws_need, &beta, yd, gy.data);
    tu_check(st == CUDNN_STATUS_BAD_PARAM, "workspace overlapping the output refused (%s)", cudnnGetErrorString(st));
    // y = 2 conv(x, w) + 1 y0
    st = cudnnConvolutionForward(h, &alpha, xd, gx.data, wd, gw.data, cd, CUDNN_CONVOLUTION_FWD_ALGO_GEMM, ws, ws_need,
                                 &beta, yd, gy.data);
    float *ref = (float *)y.data, *start = (float *)y0.data;
    for (int64_t i = 0; i < tensor_numel(&y); i++) ref[i] = 2.0f * ref[i] + start[i];
    tu_check(st == 0, "alpha 2, beta 1 forward ran");
    cu_compare("emulated cuDNN: y = 2 conv + y", &gy, &y, TOL_F32);
    // TF32: under the default math type the emulation rounds fp32 operands to 10 mantissa bits (errors ~1e-3)
    conv2d_forward(&y, &x, &w, NULL, 1, 1);
    cudnnSetConvolutionMathType(cd, CUDNN_DEFAULT_MATH);
    st = cudnnConvolutionForward(h, &alpha, xd, gx.data, wd, gw.data, cd, CUDNN_CONVOLUTION_FWD_ALGO_GEMM, ws, ws_need,
                                 &zero, yd, gy.data);
    for (int64_t i = 0; i < tensor_numel(&y); i++) ref[i] *= 2.0f;
    float *got = cu_download(&gy);
    double err = 0, mx = 0;
    for (int64_t i = 0; i < tensor_numel(&y); i++) err = fmax(err, fabs(got[i] - ref[i])), mx = fmax(mx, fabs(ref[i]));
    tu_check(st == 0 && err / mx > 1e-5 && err / mx < 4e-3, "default math type rounds fp32 to TF32 (rel err %.2e)",
             err / mx);
    free(got);
    device_free(DEVICE_CUDA, ws);
    Tensor *all[] = {&x, &w, &y, &y0, &gx, &gw, &gy};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) cu_free(all[i]);
    cudnnDestroyTensorDescriptor(xd), cudnnDestroyTensorDescriptor(yd), cudnnDestroyTensorDescriptor(bad);
    cudnnDestroyFilterDescriptor(wd), cudnnDestroyFilterDescriptor(wbf);
    cudnnDestroyConvolutionDescriptor(cd);
    cudnnDestroy(h);
}

int main(void) {
    cu_require_gpu();
    static const Case cases[] = {
        {"k3 s1 p1 7x7 3->5", 2, 3, 5, 7, 7, 3, 1, 1, 1, 0},
        {"k3 s1 p1 9x9 17->5 no bias", 2, 17, 5, 9, 9, 3, 1, 1, 0, 0},
        {"k3 s2 p1 9x9 5->17", 2, 5, 17, 9, 9, 3, 2, 1, 1, 0},
        {"k3 s2 p0 pad2d(0,1,0,1) 7x7 5->3", 2, 5, 3, 7, 7, 3, 2, 0, 1, 1},
        {"k3 s2 p0 pad2d(0,1,0,1) 9x9 3->5", 2, 3, 5, 9, 9, 3, 2, 0, 0, 1},
        {"k1 s1 p0 7x9 17->3", 2, 17, 3, 7, 9, 1, 1, 0, 1, 0},
        {"k1 s1 p0 5x6 9->4 no bias", 2, 9, 4, 5, 6, 1, 1, 0, 0, 0}, // a residual alone: the 1x1 GEMM's C
        {"k3 s1 p0 9x7 3->17 no bias", 2, 3, 17, 9, 7, 3, 1, 0, 0, 0},
        // more output pixels than a block has threads: the bias kernels' strided loops, several blocks per row
        {"k3 s1 p1 37x37 3->4", 2, 3, 4, 37, 37, 3, 1, 1, 1, 0},
        {"k3 s2 p1 38x37 4->3", 2, 4, 3, 38, 37, 3, 2, 1, 1, 0},
        // more output pixels per row than one bias-gradient chunk (4096)
        {"k3 s1 p1 70x66 2->3", 2, 2, 3, 70, 66, 3, 1, 1, 1, 0},
    };
    check_planning(DTYPE_BF16); // first: nothing has grown the workspace yet
    check_planning(DTYPE_F32);
    int n = (int)(sizeof cases / sizeof *cases);
    for (int i = 0; i < n; i++) run_case(&cases[i], DTYPE_F32, DTYPE_F32);
    for (int i = 0; i < n; i++) run_case(&cases[i], DTYPE_BF16, i % 2 ? DTYPE_F32 : DTYPE_BF16);
    static const Case nhwc[] = {
        {"k3 s1 p1 7x7 3->5", 2, 3, 5, 7, 7, 3, 1, 1, 1, 0},
        {"k3 s2 p1 9x8 5->17", 2, 5, 17, 9, 8, 3, 2, 1, 1, 0},
        {"k3 s1 p0 9x7 3->6 no bias", 2, 3, 6, 9, 7, 3, 1, 0, 0, 0},
        {"k1 s1 p0 7x9 17->3 (linear)", 2, 17, 3, 7, 9, 1, 1, 0, 1, 0},
        // B OH OW = 9240 rows: three bias-gradient chunks of 4096; 37 channels: two channel tiles of 32
        {"k3 s1 p1 70x66 2->37", 2, 2, 37, 70, 66, 3, 1, 1, 1, 0},
    };
    for (int i = 0; i < (int)(sizeof nhwc / sizeof *nhwc); i++) {
        run_nhwc_case(&nhwc[i], DTYPE_F32, DTYPE_F32);
        run_nhwc_case(&nhwc[i], DTYPE_BF16, i % 2 ? DTYPE_F32 : DTYPE_BF16);
    }
    check_deterministic();
    check_refusals();
    if (cuda_is_emulated()) check_emulated_dnn();
    return tu_report();
}
