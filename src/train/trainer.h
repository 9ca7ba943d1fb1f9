// trainer.h: `drtune train`: the training loop around the engine (prompts and noise by global sample index,
// AdamW with clipping and the non-finite guard, metrics, progress, sample grids, reward curve, export).
#pragma once
#include "config.h"

#ifdef __cplusplus
extern "C" {
#endif

// Runs the configured training; returns 0 on success. `config_text` is the resolved configuration (stored in the
// run folder).
int trainer_run(const Config *cfg);

#ifdef __cplusplus
}
#endif
