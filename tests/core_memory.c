// core_memory.c: tensors, dtype conversion and arenas: exact fp16/bf16 rounding, planned single allocations with
// aligned, non-overlapping slots bound into the owner's structs, and name lookup.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../src/core/arena.h"
#include "../src/core/common.h"
#include "testutil.h"

static uint32_t bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

int main(void) {
    // f16: every finite half round-trips exactly through f32; known values
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        uint16_t x = (uint16_t)h;
        if ((x & 0x7c00u) == 0x7c00u && (x & 0x3ffu)) continue; // NaN payloads
        if (f32_to_f16(f16_to_f32(x)) != x) bad++;
    }
    TU_EXPECT(bad == 0, "%d half values do not round-trip", bad);
    TU_EXPECT(f16_to_f32(0x3c00) == 1.0f && f16_to_f32(0xc000) == -2.0f && f16_to_f32(0x7bff) == 65504.0f,
              "f16 known values");
    TU_EXPECT(f16_to_f32(0x0001) == ldexpf(1.0f, -24), "smallest f16 subnormal");
    TU_EXPECT(f32_to_f16(65520.0f) == 0x7c00 && f32_to_f16(65519.0f) == 0x7bff, "f16 overflow threshold");
    TU_EXPECT(f32_to_f16(1.0f + ldexpf(1.0f, -11)) == 0x3c00, "f16 ties to even (down)");
    TU_EXPECT(f32_to_f16(1.0f + 3 * ldexpf(1.0f, -11)) == 0x3c02, "f16 ties to even (up)");
    TU_EXPECT(f32_to_f16(ldexpf(1.0f, -25)) == 0x0000 && f32_to_f16(ldexpf(1.5f, -25)) == 0x0001,
              "f16 subnormal rounding");
    TU_EXPECT(isnan(f16_to_f32(f32_to_f16(NAN))) && isinf(f16_to_f32(f32_to_f16(INFINITY))), "f16 NaN/Inf");
    // bf16: round to nearest even on the dropped 16 bits
    TU_EXPECT(f32_to_bf16(1.0f) == 0x3f80 && bf16_to_f32(0x3f80) == 1.0f, "bf16 one");
    float tie_even, tie_odd;
    uint32_t u = 0x3f808000u; // exactly halfway between 0x3f80 and 0x3f81 -> even 0x3f80
    memcpy(&tie_even, &u, 4);
    u = 0x3f818000u;          // halfway between 0x3f81 and 0x3f82 -> even 0x3f82
    memcpy(&tie_odd, &u, 4);
    TU_EXPECT(f32_to_bf16(tie_even) == 0x3f80 && f32_to_bf16(tie_odd) == 0x3f82, "bf16 ties to even");
    TU_EXPECT(isnan(bf16_to_f32(f32_to_bf16(NAN))), "bf16 NaN stays NaN");
    float src[5] = {1.5f, -2.25f, 3.0e-5f, 1000.0f, 0.0f}, back[5];
    uint16_t mid[5];
    dtype_convert(mid, DTYPE_BF16, src, DTYPE_F32, 5);
    dtype_convert(back, DTYPE_F32, mid, DTYPE_BF16, 5);
    TU_EXPECT(back[0] == 1.5f && back[1] == -2.25f && back[3] == 1000.0f && back[4] == 0.0f, "bf16 convert");
    TU_EXPECT(bits(back[2]) == ((uint32_t)f32_to_bf16(3.0e-5f) << 16), "bf16 convert rounding");

    // arenas: planning, one allocation, bound slots, alignment, lookup
    struct { Tensor w, b, big; } model;
    Arena a;
    arena_init(&a, "params", DEVICE_CPU);
    arena_add(&a, &model.w, "layer.weight", DTYPE_F32, 2, (int64_t[]){3, 5});
    arena_add(&a, &model.b, "layer.bias", DTYPE_F32, 1, (int64_t[]){3});
    arena_add(&a, &model.big, "big", DTYPE_BF16, 3, (int64_t[]){7, 11, 13});
    TU_EXPECT(model.w.data == NULL && model.w.shape[1] == 5, "planned slot has shape and no data");
    TU_EXPECT(a.size == 256 + 256 + 2048, "planned size %zu", a.size);
    for (int i = 0; i < 2000; i++) {
        char name[32];
        snprintf(name, sizeof name, "extra.%d", i);
        arena_add(&a, NULL, name, DTYPE_F32, 1, (int64_t[]){i + 1});
    }
    arena_alloc(&a);
    TU_EXPECT(model.w.data != NULL && ((uintptr_t)model.w.data % ARENA_ALIGN) == 0, "slot bound and aligned");
    TU_EXPECT((char *)model.b.data - (char *)model.w.data == 256, "second tensor at the next aligned offset");
    TU_EXPECT(model.big.dtype == DTYPE_BF16 && tensor_bytes(&model.big) == 7 * 11 * 13 * 2, "bf16 entry size");
    Tensor got = arena_get(&a, "layer.bias");
    TU_EXPECT(got.data == model.b.data, "lookup by name");
    Tensor e = arena_get(&a, "extra.1999");
    TU_EXPECT(e.shape[0] == 2000 && (char *)e.data + 2000 * 4 <= (char *)a.base + a.size, "last entry inside arena");
    TU_EXPECT(arena_find(&a, "missing") == NULL, "absent name");
    // slots do not overlap: write each entry with its index and read back
    for (int i = 0; i < a.n; i++) {
        ArenaEntry *en = &a.entries[i];
        memset(en->desc.data, i & 0xff, tensor_bytes(&en->desc));
    }
    int overlap = 0;
    for (int i = 0; i < a.n; i++) {
        const unsigned char *p = a.entries[i].desc.data;
        for (size_t k = 0; k < tensor_bytes(&a.entries[i].desc); k++) overlap += p[k] != (i & 0xff);
    }
    TU_EXPECT(overlap == 0, "arena entries overlap (%d bytes)", overlap);
    TU_EXPECT(arena_numel(&a) == 15 + 3 + 7 * 11 * 13 + 2000 * 2001 / 2, "numel");
    arena_free(&a);

    // reshape keeps the data and checks the count
    float buf[24];
    Tensor t = tensor_f32_3d(buf, 2, 3, 4);
    Tensor r = tensor_reshape(&t, 2, (int64_t[]){6, 4});
    TU_EXPECT(r.data == buf && tensor_rows(&r) == 6 && tensor_numel(&r) == 24, "reshape");
    return tu_report();
}
