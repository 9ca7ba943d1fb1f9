// fuzz_safetensors.c: fuzz target for the safetensors parser. Any byte string must either be rejected with a
// one-line message, or index tensors that lie wholly inside the input and convert without faults; built with
// libFuzzer and sanitizers by cmake/fuzz.cmake, or driven by fuzz_driver.c where libFuzzer is missing.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_CONVERT_ELEMS 65536

static volatile uint8_t g_sink;

// Reads every tensor through read_into (float data into f32 and bf16, I32 as is); I64 is only touched, since an
// out-of-range value is, correctly, a user error that exits, and float data holding a NaN or an infinity is only
// scanned (safetensors_first_nonfinite), since reading it is a user error too.
static void convert_all(const SafeTensors *st) {
    for (int i = 0; i < st->n; i++) {
        const StTensor *t = &st->tensors[i];
        if (t->ndim > TENSOR_MAX_DIMS || t->dtype == ST_I64 || safetensors_first_nonfinite(t, NULL) >= 0) continue;
        size_t elems = t->nbytes / safetensors_dtype_size(t->dtype);
        if (elems > MAX_CONVERT_ELEMS) continue;
        void *buf = malloc(elems * 4 + 1);
        if (t->dtype == ST_I32) {
            Tensor d = tensor_make(buf, DTYPE_I32, DEVICE_CPU, t->ndim, t->shape);
            safetensors_read_into(st, t->name, &d);
        } else {
            Tensor d = tensor_make(buf, DTYPE_F32, DEVICE_CPU, t->ndim, t->shape);
            safetensors_read_into(st, t->name, &d);
            d = tensor_make(buf, DTYPE_BF16, DEVICE_CPU, t->ndim, t->shape);
            safetensors_read_into(st, t->name, &d);
        }
        free(buf);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    SafeTensors st;
    char err[512];
    if (safetensors_parse_buffer(data, size, err, sizeof err, &st)) {
        if (!err[0] || strchr(err, '\n')) abort(); // every rejection carries one line of explanation
        return 0;
    }
    uint8_t acc = 0;
    for (int i = 0; i < st.n; i++) {
        const StTensor *t = &st.tensors[i];
        if (safetensors_find(&st, t->name) != t) abort();
        uintptr_t begin = (uintptr_t)t->data, lo = (uintptr_t)data;
        if (begin < lo || begin - lo > size || t->nbytes > size - (begin - lo)) abort();
        const uint8_t *p = t->data;
        for (size_t k = 0; k < t->nbytes; k++) acc ^= p[k]; // every indexed byte must be readable
    }
    for (int i = 0; i < st.n_meta; i++)
        if (safetensors_metadata(&st, st.meta_keys[i]) == NULL) abort();
    convert_all(&st);
    g_sink = acc;
    safetensors_close(&st);
    return 0;
}
