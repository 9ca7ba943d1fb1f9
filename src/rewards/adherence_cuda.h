// adherence_cuda.h: the GPU launcher of the prompt-adherence reward (adherence_cuda.cu), called by adherence.c and
// the reward set when the images live on the GPU. Host arrays: palette, targets (the prompt's colour per image, -1
// when it does not parse); device arrays: images [B, 3, HW] (storage dt), dscore [B] (NULL: zero) and scores [B]
// (fp32), dimages (storage dt_dx) to which the gradient of sum_b weight dscore[b] score[b] is ADDED, and the
// workspace ws (adherence_scratch_bytes).
#pragma once
#include <stddef.h>
#include <stdint.h>

#define ADHERENCE_COLOURS 8 /* COLOUR_COUNT of data/scenes.h (checked there) */

#ifdef __cplusplus
extern "C" {
#endif

size_t adherence_scratch_bytes(int64_t B, int64_t HW);
void adherence_score_cuda(const void *images, int dt, int64_t B, int64_t HW, const float palette[][3], double s,
                          double tau, const int *targets, const float *dscore, float weight, float *scores,
                          void *dimages, int dt_dx, void *ws);

#ifdef __cplusplus
}
#endif
