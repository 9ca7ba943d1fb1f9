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

// A tensor reaching a CPU kernel must be an fp32 CPU tensor; anything else is a caller error with a clear message.
void ops_expect_cpu_(const Tensor *t, const char *op, const char *file, int line);
#define OPS_EXPECT_CPU(t, op) do { if (t) ops_expect_cpu_((t), (op), __FILE__, __LINE__); } while (0)
// A NULL gradient pointer or a descriptor without data both mean "not wanted".
static inline int ops_want(const Tensor *t) { return t != NULL && t->data != NULL; }
// 1 if the op should run on CUDA (out lives there). Without the CUDA backend a CUDA tensor is a clear error.
int ops_on_cuda_(const Tensor *t, const char *op);
#define OPS_ON_CUDA(t) ops_on_cuda_((t), __func__)
