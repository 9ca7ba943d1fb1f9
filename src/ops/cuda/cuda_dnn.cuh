// cuda_dnn.cuh: what the cuDNN wrappers (cuda_conv.cu: convolutions; cuda_sdpa.cu: fused attention) share: the real
// cuDNN headers or the emulator's stand-ins, the error check, and the one handle of the rank, on its compute stream.
#pragma once
#ifdef DRTUNE_CUDAEMU
#include "../../cudaemu/cudaemu_dnn.h"
#else
#include <cudnn.h>
#endif

#define DNN_CHECK(call)                                                                                      \
    do {                                                                                                     \
        cudnnStatus_t _s = (call);                                                                           \
        if (_s != CUDNN_STATUS_SUCCESS)                                                                      \
            dt_fatal(__FILE__, __LINE__, "", "%s: %s", #call, cudnnGetErrorString(_s));                      \
    } while (0)

// Created on first use (cuda_conv.cu), bound to cuda_stream().
cudnnHandle_t cuda_cudnn(void);
