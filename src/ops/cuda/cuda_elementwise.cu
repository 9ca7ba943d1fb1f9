// cuda_elementwise.cu: activations on the GPU, the same formulas as the CPU op (ops/activation.c).
// Activation codes are the Activation enum of ops.h.
#include "cuda_common.cuh"
#include "../../core/device_cuda.h"
#include "cuda_api.h"

enum { A_SILU = 0, A_GELU = 1, A_GELU_TANH = 2, A_QUICK_GELU = 3 };

__device__ static float act_f(float x, int act) {
    switch (act) {
    case A_SILU: return x / (1.0f + expf(-x));
    case A_GELU: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case A_GELU_TANH: return 0.5f * x * (1.0f + tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x)));
    default: return x / (1.0f + expf(-1.702f * x));
    }
}

__device__ static float act_df(float x, int act) {
    switch (act) {
    case A_SILU: {
        float s = 1.0f / (1.0f + expf(-x));
        return s * (1.0f + x * (1.0f - s));
    }
    case A_GELU: {
        float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
        float pdf = 0.39894228040143268f * expf(-0.5f * x * x);
        return cdf + x * pdf;
    }
    case A_GELU_TANH: {
        float u = 0.79788456080286536f * (x + 0.044715f * x * x * x);
        float t = tanhf(u);
        float du = 0.79788456080286536f * (1.0f + 3.0f * 0.044715f * x * x);
        return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * du;
    }
    default: {
        float s = 1.0f / (1.0f + expf(-1.702f * x));
        return s + 1.702f * x * s * (1.0f - s);
    }
    }
}

__global__ static void act_fwd_kernel(float *out, const float *in, int64_t n, int act) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = act_f(in[i], act);
}
__global__ static void act_bwd_kernel(float *din, const float *dout, const float *in, int64_t n, int act) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) din[i] = dout[i] * act_df(in[i], act);
}

#define LAUNCH(kernel, n, ...) CUDA_LAUNCH(kernel, cuda_blocks((n), 256), 256, 0, cuda_stream(), __VA_ARGS__)

extern "C" void activation_forward_cuda(void *out, const void *in, int64_t n, int act) {
    LAUNCH(act_fwd_kernel, n, (float *)out, (const float *)in, n, act);
}
extern "C" void activation_backward_cuda(void *din, const void *dout, const void *in, int64_t n, int act) {
    LAUNCH(act_bwd_kernel, n, (float *)din, (const float *)dout, (const float *)in, n, act);
}
