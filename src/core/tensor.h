// tensor.h: the tensor descriptor every op and model takes. A Tensor does not own memory: it points into an arena
// (or a caller's buffer) and carries the storage dtype, the device it lives on and a row-major shape. Ops dispatch
// on `device`, so the same call runs on the CPU today and on CUDA when that backend is built.
#pragma once
#include <stdint.h>
#include <stddef.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { DTYPE_F32 = 0, DTYPE_BF16 = 1, DTYPE_F16 = 2, DTYPE_I32 = 3 } DType; // I32: token ids
typedef enum { DEVICE_CPU = 0, DEVICE_CUDA = 1 } Device;

#define TENSOR_MAX_DIMS 5

typedef struct {
    void *data;                       // first element (row-major, contiguous)
    DType dtype;                      // storage type; compute is fp32
    Device device;
    int ndim;
    int64_t shape[TENSOR_MAX_DIMS];
    // 4-D tensors only: the shape is [N, C, H, W] and the data is stored [N, H, W, C] (channels last; conv filters
    // [OC, KH, KW, IC]). GPU activations and compute weights of a model planned channels last (arena_set_channels_last)
    // carry it, as do views and reshapes of them; CPU ops refuse it. Ops ignore it on tensors that are not 4-D.
    uint8_t channels_last;
} Tensor;

// 1 if t is a 4-D tensor stored channels last (Tensor.channels_last; GPU only).
static inline int tensor_channels_last(const Tensor *t) { return t != NULL && t->ndim == 4 && t->channels_last; }
// 1 if a and b store their elements alike: one dtype and one memory layout (a plain copy moves one to the other).
static inline int tensor_same_storage(const Tensor *a, const Tensor *b) {
    return a->dtype == b->dtype && tensor_channels_last(a) == tensor_channels_last(b);
}

size_t dtype_size(DType t);
const char *dtype_name(DType t);
const char *device_name(Device d);

// Descriptor constructors (no allocation). Unused trailing dims are 1.
Tensor tensor_make(void *data, DType dtype, Device device, int ndim, const int64_t *shape);
Tensor tensor_f32_1d(float *data, int64_t d0);
Tensor tensor_f32_2d(float *data, int64_t d0, int64_t d1);
Tensor tensor_f32_3d(float *data, int64_t d0, int64_t d1, int64_t d2);
Tensor tensor_f32_4d(float *data, int64_t d0, int64_t d1, int64_t d2, int64_t d3);

int64_t tensor_numel(const Tensor *t);
size_t tensor_bytes(const Tensor *t);
// Same data, new shape with the same element count (internal failure otherwise).
Tensor tensor_reshape(const Tensor *t, int ndim, const int64_t *shape);
// Product of all dims but the last ("rows" of a [..., C] tensor).
int64_t tensor_rows(const Tensor *t);
// fp32 CPU pointer: internal failure if the tensor is not fp32 (ops convert at their boundary).
float *tensor_f32(const Tensor *t);
// "[2, 320, 64, 64]" into buf.
const char *tensor_shape_str(const Tensor *t, char *buf, size_t n);
// The same for ndim dims of any rank (file tensors may have more than TENSOR_MAX_DIMS).
const char *tensor_dims_str(int ndim, const int64_t *shape, char *buf, size_t n);
// Internal failure with both shapes printed when t does not have exactly the expected shape.
void tensor_expect_shape_(const Tensor *t, const char *what, int ndim, const int64_t *shape, const char *file,
                          int line);
#define tensor_expect_shape(t, what, ...)                                                                    \
    do {                                                                                                     \
        const int64_t _s[] = {__VA_ARGS__};                                                                  \
        tensor_expect_shape_((t), (what), (int)(sizeof _s / sizeof _s[0]), _s, __FILE__, __LINE__);          \
    } while (0)

// fp32 <-> bf16 / f16 conversion (round to nearest even; NaN and Inf preserved).
static inline uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
// Converts n elements of src (dtype st) into dst (dtype dt) on the CPU.
void dtype_convert(void *dst, DType dt, const void *src, DType st, int64_t n);

#ifdef __cplusplus
}
#endif
