// checkpoint.h: training state in one HDF5 file per checkpoint, written by all ranks together with parallel HDF5
// and published atomically (temporary name, flush, fsync, rename, then the `latest` pointer). Tensors are stored in
// their logical, unsharded layout with Fletcher32 checksums, so a run resumes bit for bit on the same number of
// ranks and on any other number too. docs/CHECKPOINT.md describes the file and the resume rules.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "../core/arena.h"
#include "../train/metrics.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CKPT_FORMAT "drtune-checkpoint"
#define CKPT_FORMAT_VERSION 1

// One flat fp32 buffer of the trainable set as this rank holds it: data[i] is flat element base + i. Saving
// stores the elements [lo, hi) (the ranks' ranges together cover the buffer); loading fills [lo, hi).
typedef struct {
    const char *group;  // "params", "adam_m" or "adam_v"
    float *data;
    int64_t base, lo, hi;
} CkptBuffer;

// The trainable set: the arena whose entries (fp32) name and shape the tensors of the flat buffers.
typedef struct {
    const Arena *layout;
    const char *trainable;  // "lora" or "full"
    CkptBuffer buf[3];
    int n_buf;
} CkptTensors;

// Everything else a resumed run needs.
typedef struct {
    int iteration;          // iterations done
    int applied, skipped;   // optimizer steps applied, and skipped for non-finite gradients
    int seed;               // train.seed: with the iteration it fixes every random draw (counter-based RNG)
    int batch;              // global batch
    int ranks;              // ranks that wrote the checkpoint
    int64_t prompt_cursor;  // global sample index of the next iteration's first sample
    double lr;              // learning rate of the last iteration (the schedule is a function of the iteration)
    char *config;           // the resolved configuration, INI text
    MetricsRow *rows;       // the metrics of iterations 1..iteration
    int n_rows;
} CkptState;

// Collective. Writes dir/ckpt-<iteration>.h5 (folder created), publishes it, points dir/latest at it and removes
// all but the newest `keep` checkpoints (0: keeps all). Returns the file's size in bytes on rank 0 (0 elsewhere).
double ckpt_save(const char *dir, const CkptState *s, const CkptTensors *t, int keep);

// Collective. Resolves `resume`: "none" starts fresh (removing an earlier run's checkpoints from dir); "auto"
// loads the newest valid checkpoint of dir, reporting and skipping corrupt, truncated or incomplete ones (fresh
// start when dir has none); any other text is a checkpoint file, or a folder searched like "auto". Returns 1 and
// fills the tensors and *s (free with ckpt_state_free) when a checkpoint was loaded, 0 for a fresh start; `used`
// receives the file's path. A checkpoint that does not fit the model (tensor names or shapes, trainable set) is a
// user error; so is "auto" when checkpoints exist but none is valid. Checkpoints of dir newer than the one
// loaded (invalid ones, or an abandoned continuation) are removed, so dir always holds one timeline.
int ckpt_resume(const char *resume, const char *dir, CkptState *s, const CkptTensors *t, char *used, size_t n);

void ckpt_state_free(CkptState *s);

#ifdef __cplusplus
}
#endif
