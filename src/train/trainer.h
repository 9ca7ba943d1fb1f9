// trainer.h: `drtune train`: the training loop around the engine, as one rank of a job (prompts and noise by global
// sample index, gradient reduction across ranks, AdamW with clipping and the non-finite guard, metrics, progress,
// sample grids, reward curve, export, HDF5 checkpoints and resume).
#pragma once
#include "config.h"

#ifdef __cplusplus
extern "C" {
#endif

// Runs the configured training on this rank (dist_init has run). `resume` is "none", "auto", or a checkpoint file
// or folder (ckpt_resume in src/dist/checkpoint.h). Returns 0 on success, also when SIGTERM or SIGUSR1 stopped the
// run after a checkpoint.
int trainer_run(const Config *cfg, const char *resume);

#ifdef __cplusplus
}
#endif
