// lora.h: LoRA adapters on the UNet's attention projections (diffusers / PEFT conventions): for each target
// projection y = W x + b + (alpha / r) B (A x) with lora_A.weight [r, in] and lora_B.weight [out, r]; A starts
// Kaiming-uniform (PEFT's default), B at zero, so training starts from the base model. Files use the names
// diffusers' load_lora_weights reads: "unet.<module>.lora_A.weight" / "lora_B.weight".
#pragma once
#include <stdint.h>

#include "../models/unet.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct Lora {
    Arena params, grads;   // adapters and their gradients, planned alike ("<module>.lora_A.weight", ...)
    Arena compute;         // train.precision = bf16: the adapters' bf16 copies in the compute UNet (lora_bind_compute)
    AttnProj **compute_proj; // [n] in the compute UNet (NULL without compute copies)
    int rank;
    float alpha, scale;    // scale = alpha / rank
    int n;                 // adapted projections
    AttnProj **proj;       // [n] in the model
    AttnProj **grad_proj;  // [n] in the gradient struct
    char **modules;        // [n] diffusers module paths ("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q")
} Lora;

// Adds adapters to every attention projection of net whose module path ends with ".<target>" for one of targets
// (e.g. to_q, to_k, to_v, to_out.0, or attn2.to_k); grads is the gradient struct the UNet backward accumulates
// into (its base slots stay without data, so only the adapters get gradients). User error when no projection
// matches a target, naming `source`, where the targets come from ("train.lora_targets", or a file).
// net_params is the arena the UNet was planned into (it names the modules).
void lora_attach(Lora *l, UNet *net, const Arena *net_params, UNet *grads, int rank, float alpha,
                 const char *const *targets, int n_targets, uint64_t seed, const char *source);
// Plans and allocates bf16 (dt) copies of the adapters on device d, bound into cnet, a second UNet planned like
// the one the adapters were attached to (net); model_sync_compute fills them.
void lora_bind_compute(Lora *l, UNet *net, UNet *cnet, DType dt, Device d);
// Writes the adapters with the scale folded into lora_B (so any loader's default alpha = rank reproduces them).
void lora_save(const Lora *l, const char *path);
// Reads adapters written by lora_save into an attached Lora of the same rank and targets; the scale becomes 1, as
// the file carries it folded into lora_B. User error (naming the file and tensor) when an attached adapter is
// missing from the file, or the file holds an adapter of a module this UNet does not have.
void lora_load(Lora *l, const char *path);
// W += scale B A for every adapted projection, then detaches the adapters (the base model now carries them).
void lora_merge(Lora *l);
void lora_free(Lora *l);

#ifdef __cplusplus
}
#endif
