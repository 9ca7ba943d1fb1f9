// arena.h: one allocation per memory group (parameters, gradients, activations, optimizer state).
// Use in two passes: a planning pass registers every tensor of the group (name, dtype, shape, and the Tensor
// slot in the owner's struct that should point at it); arena_alloc then makes the single allocation and points
// every registered slot into it. Lookup by name is a hash table. Slots must stay at a fixed address until
// arena_alloc has run (they live inside long-lived model structs).
#pragma once
#include <stddef.h>

#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ARENA_ALIGN 256 /* bytes: cache lines, AVX-512 and CUDA vector loads */
// Entries start on multiples of 64 elements of their own dtype (256 bytes in fp32, 128 in bf16), so two arenas
// planned with the same entries in different dtypes place every entry at the same element offset: a bf16 copy of
// an fp32 arena is refreshed by one cast over the whole buffer.
#define ARENA_ALIGN_ELEMS 64

typedef struct {
    char *name;
    size_t offset;     // bytes from the arena base
    Tensor desc;       // data is filled by arena_alloc
    Tensor *slot;      // optional: where to write the bound descriptor
} ArenaEntry;

typedef struct {
    char group[32];
    Device device;
    ArenaEntry *entries;
    int n, cap;
    int *table;        // open-addressing hash of entry indices, -1 = empty
    int table_cap;
    size_t size;       // planned bytes
    void *base;        // NULL until arena_alloc
    const char *reduce; // the settings that shrink this group, for the memory-plan error (arena_set_reduce)
    DType float_dtype;  // storage of the floating-point tensors models plan here (plan_tensor): f32 unless set
    uint8_t channels_last; // every tensor planned here from now on carries Tensor.channels_last (4-D: NHWC)
} Arena;

void arena_init(Arena *a, const char *group, Device device);
// Registers a tensor; returns its entry index. The name must be unique in the arena (internal failure otherwise).
int arena_add(Arena *a, Tensor *slot, const char *name, DType dtype, int ndim, const int64_t *shape);
// Names the settings that shrink this group (static text), for the error of arena_alloc when it does not fit.
void arena_set_reduce(Arena *a, const char *settings);
// The storage dtype models plan their weights and activations in (f32 or bf16; statistics stay f32).
void arena_set_float_dtype(Arena *a, DType dt);
// Tensors planned from now on are channels last (GPU only: their 4-D tensors, images and conv filters, are stored
// NHWC; see Tensor.channels_last).
void arena_set_channels_last(Arena *a, int on);
// Makes the single allocation (zero-filled) and binds every slot. Further arena_add calls are an error. The planned
// size is first compared with what the device has available (device_available_bytes): a group that does not fit
// is a user error giving its size, the plan's total with the groups already allocated, what is available and
// the settings to reduce, instead of an allocation failure (or the kernel's out-of-memory kill) later.
void arena_alloc(Arena *a);
// The entry for name, or NULL.
const ArenaEntry *arena_find(const Arena *a, const char *name);
// The bound tensor for name; internal failure if absent or not allocated yet.
Tensor arena_get(const Arena *a, const char *name);
// Moves an allocated arena to device d in one copy (e.g. weights read on the host, then put on the GPU) and rebinds
// every entry and slot; nothing when it is there already.
void arena_to_device(Arena *a, Device d);
int64_t arena_numel(const Arena *a);   // total elements over all entries
void arena_zero(Arena *a);
// One line: "params      123 tensors   1.23 GiB (cpu)".
void arena_print(const Arena *a);
void arena_free(Arena *a);

#ifdef __cplusplus
}
#endif
