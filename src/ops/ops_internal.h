// ops_internal.h: helpers shared by the op implementations (not part of the public op API).
#pragma once
#include <cblas.h>
#include <string.h>

#include "../core/common.h"
#include "../core/device.h"
#include "ops.h"
#ifdef DRTUNE_CUDA
#include "cuda/cuda_api.h"
#endif

// A NULL gradient pointer or a descriptor without data both mean "not wanted".
static inline int ops_want(const Tensor *t) { return t != NULL && t->data != NULL; }
// A tensor reaching a CPU kernel must be an fp32 CPU tensor; anything else is a caller error with a clear message.
// Tensors not wanted (ops_want) are not checked.
void ops_expect_cpu_(const Tensor *t, const char *op, const char *file, int line);
#define OPS_EXPECT_CPU(t, op) do { if (ops_want(t)) ops_expect_cpu_((t), (op), __FILE__, __LINE__); } while (0)
// CHECKs that a and b hold as many elements (an op's operands of one shape, possibly viewed differently).
void ops_expect_same_numel(const Tensor *a, const Tensor *b, const char *op);
// d[o] += sum over n < B, s < S of g[(n OC + o) S + s], summed in double: the bias gradient of a linear layer
// (S = 1) or a convolution (S output pixels).
void ops_bias_grad_add(float *d, const float *g, int64_t B, int64_t OC, int64_t S);
// 1 if the op should run on CUDA (out lives there). Without the CUDA backend a CUDA tensor is a clear error.
int ops_on_cuda_(const Tensor *t, const char *op);
#define OPS_ON_CUDA(t) ops_on_cuda_((t), __func__)
