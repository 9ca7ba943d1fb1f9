// tensor.c: descriptor helpers and dtype conversion for tensor.h.
#include "tensor.h"

#include <stdio.h>

#include "common.h"

size_t dtype_size(DType t) {
    switch (t) {
    case DTYPE_F32: return 4;
    case DTYPE_BF16: return 2;
    case DTYPE_F16: return 2;
    case DTYPE_I32: return 4;
    }
    FATAL("", "unknown dtype %d", (int)t);
}

const char *dtype_name(DType t) {
    switch (t) {
    case DTYPE_F32: return "f32";
    case DTYPE_BF16: return "bf16";
    case DTYPE_F16: return "f16";
    case DTYPE_I32: return "i32";
    }
    return "?";
}

const char *device_name(Device d) { return d == DEVICE_CUDA ? "cuda" : "cpu"; }

Tensor tensor_make(void *data, DType dtype, Device device, int ndim, const int64_t *shape) {
    CHECK(ndim >= 0 && ndim <= TENSOR_MAX_DIMS, "", "tensor rank %d out of range", ndim);
    Tensor t;
    memset(&t, 0, sizeof t);
    t.data = data;
    t.dtype = dtype;
    t.device = device;
    t.ndim = ndim;
    for (int i = 0; i < TENSOR_MAX_DIMS; i++) t.shape[i] = i < ndim ? shape[i] : 1;
    for (int i = 0; i < ndim; i++) CHECK(shape[i] >= 0, "", "negative dimension %lld", (long long)shape[i]);
    return t;
}

Tensor tensor_f32_1d(float *data, int64_t d0) { return tensor_make(data, DTYPE_F32, DEVICE_CPU, 1, (int64_t[]){d0}); }
Tensor tensor_f32_2d(float *data, int64_t d0, int64_t d1) {
    return tensor_make(data, DTYPE_F32, DEVICE_CPU, 2, (int64_t[]){d0, d1});
}
Tensor tensor_f32_3d(float *data, int64_t d0, int64_t d1, int64_t d2) {
    return tensor_make(data, DTYPE_F32, DEVICE_CPU, 3, (int64_t[]){d0, d1, d2});
}
Tensor tensor_f32_4d(float *data, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    return tensor_make(data, DTYPE_F32, DEVICE_CPU, 4, (int64_t[]){d0, d1, d2, d3});
}

int64_t tensor_numel(const Tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

size_t tensor_bytes(const Tensor *t) { return (size_t)tensor_numel(t) * dtype_size(t->dtype); }

Tensor tensor_reshape(const Tensor *t, int ndim, const int64_t *shape) {
    Tensor r = tensor_make(t->data, t->dtype, t->device, ndim, shape);
    r.channels_last = t->channels_last;
    char a[96], b[96];
    CHECK(tensor_numel(&r) == tensor_numel(t), "", "cannot reshape %s to %s", tensor_shape_str(t, a, sizeof a),
          tensor_shape_str(&r, b, sizeof b));
    return r;
}

int64_t tensor_rows(const Tensor *t) {
    int64_t n = 1;
    for (int i = 0; i + 1 < t->ndim; i++) n *= t->shape[i];
    return n;
}

float *tensor_f32(const Tensor *t) {
    CHECK(t->dtype == DTYPE_F32, "convert to f32 first", "expected an f32 tensor, got %s", dtype_name(t->dtype));
    return (float *)t->data;
}

const char *tensor_dims_str(int ndim, const int64_t *shape, char *buf, size_t n) {
    size_t off = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (off < n) snprintf(buf + off, n - off, "]");
    return buf;
}

const char *tensor_shape_str(const Tensor *t, char *buf, size_t n) {
    return tensor_dims_str(t->ndim, t->shape, buf, n);
}

void tensor_expect_shape_(const Tensor *t, const char *what, int ndim, const int64_t *shape, const char *file,
                          int line) {
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == shape[i];
    if (!ok) {
        char a[96], b[96];
        Tensor e = tensor_make(NULL, t->dtype, t->device, ndim, shape);
        dt_fatal(file, line, "the caller passed a tensor of the wrong shape", "%s has shape %s, expected %s", what,
                 tensor_shape_str(t, a, sizeof a), tensor_shape_str(&e, b, sizeof b));
    }
}

float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { // subnormal: normalise
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while (!(man & 0x400u));
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t absu = u & 0x7fffffffu;
    if (absu > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);       // NaN
    if (absu >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);      // overflow to Inf (incl. rounding up)
    if (absu < 0x38800000u) {                                        // subnormal or zero in f16
        if (absu < 0x33000000u) return (uint16_t)sign;               // below half the smallest subnormal
        uint32_t e = absu >> 23, man = (absu & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e;                                    // 14 + (113 - e) - 1
        uint32_t half = 1u << (shift - 1), rem = man & ((1u << shift) - 1);
        uint32_t r = man >> shift;
        if (rem > half || (rem == half && (r & 1u))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = absu + 0xfffu + ((absu >> 13) & 1u);                // round to nearest even on the 13 dropped bits
    return (uint16_t)(sign | (((r >> 23) - 112) << 10) | ((r >> 13) & 0x3ffu));
}

void dtype_convert(void *dst, DType dt, const void *src, DType st, int64_t n) {
    CHECK((dt == DTYPE_I32) == (st == DTYPE_I32), "", "cannot convert between %s and %s", dtype_name(st),
          dtype_name(dt));
    if (dt == st) {
        memcpy(dst, src, (size_t)n * dtype_size(dt));
        return;
    }
    if (dt == DTYPE_F32) {
        float *d = dst;
        const uint16_t *s = src;
        if (st == DTYPE_BF16)
            for (int64_t i = 0; i < n; i++) d[i] = bf16_to_f32(s[i]);
        else
            for (int64_t i = 0; i < n; i++) d[i] = f16_to_f32(s[i]);
        return;
    }
    if (st == DTYPE_F32) {
        uint16_t *d = dst;
        const float *s = src;
        if (dt == DTYPE_BF16)
            for (int64_t i = 0; i < n; i++) d[i] = f32_to_bf16(s[i]);
        else
            for (int64_t i = 0; i < n; i++) d[i] = f32_to_f16(s[i]);
        return;
    }
    // bf16 <-> f16 through f32
    uint16_t *d = dst;
    const uint16_t *s = src;
    for (int64_t i = 0; i < n; i++) {
        float f = st == DTYPE_BF16 ? bf16_to_f32(s[i]) : f16_to_f32(s[i]);
        d[i] = dt == DTYPE_BF16 ? f32_to_bf16(f) : f32_to_f16(f);
    }
}
