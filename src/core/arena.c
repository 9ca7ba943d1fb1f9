// arena.c: planned single-allocation memory groups (see arena.h).
#include "arena.h"

#include <stdio.h>
#include <string.h>

#include "common.h"
#include "device.h"

static uint64_t hash_name(const char *s) {
    uint64_t h = 1469598103934665603ull; // FNV-1a
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

void arena_init(Arena *a, const char *group, Device device) {
    memset(a, 0, sizeof *a);
    snprintf(a->group, sizeof a->group, "%s", group);
    a->device = device;
    a->float_dtype = DTYPE_F32;
}

static void table_insert(Arena *a, int idx) {
    uint64_t h = hash_name(a->entries[idx].name);
    for (int i = (int)(h & (uint64_t)(a->table_cap - 1));; i = (i + 1) & (a->table_cap - 1)) {
        if (a->table[i] < 0) {
            a->table[i] = idx;
            return;
        }
    }
}

static void table_grow(Arena *a) {
    int cap = a->table_cap ? a->table_cap * 2 : 256;
    free(a->table);
    a->table = xmalloc(sizeof(int) * (size_t)cap);
    for (int i = 0; i < cap; i++) a->table[i] = -1;
    a->table_cap = cap;
    for (int i = 0; i < a->n; i++) table_insert(a, i);
}

const ArenaEntry *arena_find(const Arena *a, const char *name) {
    if (!a->table_cap) return NULL;
    uint64_t h = hash_name(name);
    for (int i = (int)(h & (uint64_t)(a->table_cap - 1));; i = (i + 1) & (a->table_cap - 1)) {
        int idx = a->table[i];
        if (idx < 0) return NULL;
        if (strcmp(a->entries[idx].name, name) == 0) return &a->entries[idx];
    }
}

int arena_add(Arena *a, Tensor *slot, const char *name, DType dtype, int ndim, const int64_t *shape) {
    CHECK(a->base == NULL, "register every tensor before arena_alloc", "arena '%s': '%s' added after allocation",
          a->group, name);
    CHECK(arena_find(a, name) == NULL, "", "arena '%s': duplicate tensor name '%s'", a->group, name);
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 64;
        a->entries = xrealloc(a->entries, sizeof(ArenaEntry) * (size_t)a->cap);
    }
    if (2 * (a->n + 1) > a->table_cap) table_grow(a);
    ArenaEntry *e = &a->entries[a->n];
    e->name = xstrdup(name);
    e->desc = tensor_make(NULL, dtype, a->device, ndim, shape);
    e->desc.channels_last = a->channels_last;
    e->slot = slot;
    size_t unit = ARENA_ALIGN_ELEMS * dtype_size(dtype);
    e->offset = (a->size + unit - 1) / unit * unit;
    a->size = e->offset + (tensor_bytes(&e->desc) + unit - 1) / unit * unit;
    if (slot) *slot = e->desc;
    table_insert(a, a->n);
    return a->n++;
}

void arena_set_reduce(Arena *a, const char *settings) { a->reduce = settings; }

void arena_set_channels_last(Arena *a, int on) { a->channels_last = on != 0; }

void arena_set_float_dtype(Arena *a, DType dt) {
    CHECK(dt == DTYPE_F32 || dt == DTYPE_BF16, "", "arena '%s': models store f32 or bf16, not %s", a->group,
          dtype_name(dt));
    a->float_dtype = dt;
}

static size_t g_allocated[2]; // bytes of the arenas allocated and not yet freed, per device (the plan so far)

static void arena_check_fits(const Arena *a) {
    size_t avail = device_available_bytes(a->device);
    if (!avail || a->size <= avail) return; // 0: unknown
    char need[32], total[32], have[32];
    dt_user_error("the memory plan does not fit: the '%s' group needs %s (%s with the groups already allocated), "
                  "but only %s of %s memory is available; reduce %s",
                  a->group, dt_format_bytes(need, sizeof need, (double)a->size),
                  dt_format_bytes(total, sizeof total, (double)(a->size + g_allocated[a->device != DEVICE_CPU])),
                  dt_format_bytes(have, sizeof have, (double)avail), a->device == DEVICE_CPU ? "host" : "GPU",
                  a->reduce ? a->reduce : "the batch, the image size or the model size");
}

void arena_alloc(Arena *a) {
    CHECK(a->base == NULL, "", "arena '%s' allocated twice", a->group);
    arena_check_fits(a);
    a->base = device_alloc(a->device, a->size ? a->size : ARENA_ALIGN);
    g_allocated[a->device != DEVICE_CPU] += a->size;
    for (int i = 0; i < a->n; i++) {
        ArenaEntry *e = &a->entries[i];
        e->desc.data = (char *)a->base + e->offset;
        if (e->slot) *e->slot = e->desc;
    }
}

void arena_to_device(Arena *a, Device d) {
    CHECK(a->base != NULL, "call arena_alloc first", "arena '%s' is not allocated", a->group);
    if (a->device == d) return;
    size_t bytes = a->size ? a->size : ARENA_ALIGN;
    void *base = device_alloc(d, bytes);
    device_copy(base, d, a->base, a->device, bytes);
    device_free(a->device, a->base);
    a->base = base, a->device = d;
    for (int i = 0; i < a->n; i++) {
        ArenaEntry *e = &a->entries[i];
        e->desc.data = (char *)base + e->offset, e->desc.device = d;
        if (e->slot) *e->slot = e->desc;
    }
}

Tensor arena_get(const Arena *a, const char *name) {
    const ArenaEntry *e = arena_find(a, name);
    CHECK(e != NULL, "", "arena '%s' has no tensor '%s'", a->group, name);
    CHECK(a->base != NULL, "call arena_alloc first", "arena '%s' is not allocated", a->group);
    return e->desc;
}

int64_t arena_numel(const Arena *a) {
    int64_t n = 0;
    for (int i = 0; i < a->n; i++) n += tensor_numel(&a->entries[i].desc);
    return n;
}

void arena_zero(Arena *a) {
    if (a->base) device_zero(a->device, a->base, a->size);
}

void arena_print(const Arena *a) {
    char b[32];
    printf("  %-12s %6d tensors %12lld elements %12s (%s)%s\n", a->group, a->n, (long long)arena_numel(a),
           dt_format_bytes(b, sizeof b, (double)a->size), device_name(a->device),
           a->channels_last ? " channels last" : "");
}

void arena_free(Arena *a) {
    if (a->base) g_allocated[a->device != DEVICE_CPU] -= a->size;
    device_free(a->device, a->base);
    for (int i = 0; i < a->n; i++) free(a->entries[i].name);
    free(a->entries);
    free(a->table);
    memset(a, 0, sizeof *a);
}
