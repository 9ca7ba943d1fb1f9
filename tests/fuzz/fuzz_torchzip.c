// fuzz_torchzip.c: fuzz target for the torch checkpoint reader (src/io/torchzip.c). Any byte string must either be
// rejected with a one-line message, or yield named tensors whose byte counts match their shapes and whose every
// byte is readable; built with libFuzzer and sanitizers by cmake/fuzz.cmake (with the CRC-32 check compiled out,
// TORCHZIP_NO_CRC, so mutations reach the unpickler), or driven by fuzz_driver.c where libFuzzer is missing.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/io/torchzip.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint8_t g_sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    TorchZip z;
    char err[512];
    if (torchzip_parse_buffer(data, size, 1 << 24, err, sizeof err, &z)) {
        if (!err[0] || strchr(err, '\n')) abort(); // every rejection carries one line of explanation
        return 0;
    }
    uint8_t acc = 0;
    for (int i = 0; i < z.n; i++) {
        const TorchZipTensor *t = &z.tensors[i];
        size_t numel = 1;
        for (int d = 0; d < t->ndim; d++) numel *= (size_t)t->shape[d];
        if (!t->name[0] || numel * dtype_size(t->dtype) != t->nbytes) abort();
        if (i && strcmp(z.tensors[i - 1].name, t->name) >= 0) abort(); // sorted, unique
        const uint8_t *p = t->data;
        for (size_t k = 0; k < t->nbytes; k++) acc ^= p[k];
    }
    g_sink = acc;
    torchzip_free(&z);
    return 0;
}
