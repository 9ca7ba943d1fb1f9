// adherence_cuda.h: the GPU launcher of the prompt-adherence reward (adherence_cuda.cu), called by adherence.c when
// the images live on the GPU. Host arrays: palette, targets (the prompt's colour per image, -1 when it does not
// parse), dscore and the returned scores [B]; device arrays: images, dimages [B, 3, HW] (storage dt) and scratch
// (adherence_scratch_bytes).
#pragma once
#include <stddef.h>
#include <stdint.h>

#define ADHERENCE_COLOURS 8 /* COLOUR_COUNT of data/scenes.h (checked there) */

#ifdef __cplusplus
extern "C" {
#endif

size_t adherence_scratch_bytes(int64_t B, int64_t HW);
void adherence_score_cuda(const void *images, int dt, int64_t B, int64_t HW, const float palette[][3], double s,
                          double tau, const int *targets, const float *dscore, float *scores, void *dimages,
                          void *scratch);

#ifdef __cplusplus
}
#endif
