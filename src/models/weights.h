// weights.h: a model's parameter arena <-> a .safetensors file, tensor by tensor under the diffusers names the
// arena was planned with. Loading converts each tensor straight from the file mapping into the arena and releases
// the mapped pages behind it, so peak memory stays about the size of the arena.
#pragma once

#include "../core/arena.h"

#ifdef __cplusplus
extern "C" {
#endif

// Fills every entry of params (allocated) from the file at path. A model tensor missing from the file, or present
// with another shape, is a user error naming the tensor, both shapes and the file. renames (NULL for none) lists
// alternative spellings as {model part, file part} pairs ending with {NULL, NULL}: a name absent from the file is
// retried with the first occurrence of each model part replaced by its file part (e.g. {".to_q.", ".query."}).
// File tensors the model does not use are counted and named in one line on stdout.
void weights_load(Arena *params, const char *path, const char *const (*renames)[2]);
// The same for a model loaded in part (a VAE decoder alone): file tensors whose names start with one of
// skipped_prefixes (NULL-terminated) are left out on purpose and not reported.
void weights_load_part(Arena *params, const char *path, const char *const (*renames)[2],
                       const char *const *skipped_prefixes);

// Writes every entry of params (allocated) under its name, in planning order.
void weights_save(const Arena *params, const char *path);
// The entries of n_arenas arenas (allocated, fp32) in one file as F16, arena after arena in planning order: the
// exported small models (a few MB instead of twice that).
void weights_save_f16(const Arena *const *arenas, int n_arenas, const char *path);

// The weights file of a diffusers/transformers model folder: dir/diffusion_pytorch_model.safetensors or
// dir/model.safetensors, whichever exists (user error when neither does). Free the result.
char *weights_folder_file(const char *dir);

#ifdef __cplusplus
}
#endif
