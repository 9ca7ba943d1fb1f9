// cudaemu_parity.c: the CUDA backend against the CPU ops through the same op calls: linear forward/backward,
// activations, arithmetic, and bit-identical Gaussian noise. Runs on the emulated GPU (label cudaemu) and, as
// cuda_parity, on a real one (skipped without a GPU).
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../src/core/common.h"
#include "../src/core/device.h"
#include "../src/core/rng.h"
#include "../src/ops/ops.h"
#include "../src/core/device_cuda.h"
#include "../src/ops/cuda/cuda_api.h"

static int checks, failures;

static Tensor on(Device d, int ndim, const int64_t *shape) {
    Tensor t = tensor_make(NULL, DTYPE_F32, d, ndim, shape);
    t.data = device_alloc(d, tensor_bytes(&t));
    return t;
}
static void upload(Tensor *g, const Tensor *c) { tensor_copy(g, c); }

// max |gpu - cpu| / max |cpu| over a tensor; fp32 GEMMs differ only in summation order
static void compare(const char *what, const Tensor *gpu, const Tensor *cpu, double tol) {
    int64_t n = tensor_numel(cpu);
    float *h = xmalloc(sizeof(float) * (size_t)n);
    device_copy(h, DEVICE_CPU, gpu->data, DEVICE_CUDA, sizeof(float) * (size_t)n);
    const float *c = cpu->data;
    double err = 0, mx = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)h[i] - c[i]);
        if (e > err || isnan(e)) err = isnan(e) ? INFINITY : e;
        if (fabs(c[i]) > mx) mx = fabs(c[i]);
    }
    double rel = err / (mx > 0 ? mx : 1);
    checks++;
    int ok = rel <= tol;
    failures += !ok;
    printf("%s %-28s max rel err %.3e (tol %.0e)\n", ok ? "ok  " : "FAIL", what, rel, tol);
    free(h);
}

int main(void) {
    if (!device_cuda_available()) {
        printf("skipped: no CUDA device (or built without CUDA)\n");
        return 77;
    }
    printf("device: %s\n", cuda_device_name());
    const int64_t N = 1031, IC = 517, OC = 263;
    int64_t sx[2] = {N, IC}, sw[2] = {OC, IC}, sb[1] = {OC}, sy[2] = {N, OC};
    Tensor x = on(DEVICE_CPU, 2, sx), w = on(DEVICE_CPU, 2, sw), b = on(DEVICE_CPU, 1, sb), y = on(DEVICE_CPU, 2, sy);
    Tensor dy = on(DEVICE_CPU, 2, sy), dx = on(DEVICE_CPU, 2, sx), dw = on(DEVICE_CPU, 2, sw), db = on(DEVICE_CPU, 1, sb);
    rng_normal_fill(x.data, N * IC, 1, 1, 0);
    rng_normal_fill(w.data, OC * IC, 1, 2, 0);
    rng_normal_fill(b.data, OC, 1, 3, 0);
    rng_normal_fill(dy.data, N * OC, 1, 4, 0);
    Tensor gx = on(DEVICE_CUDA, 2, sx), gw = on(DEVICE_CUDA, 2, sw), gb = on(DEVICE_CUDA, 1, sb),
           gy = on(DEVICE_CUDA, 2, sy), gdy = on(DEVICE_CUDA, 2, sy), gdx = on(DEVICE_CUDA, 2, sx),
           gdw = on(DEVICE_CUDA, 2, sw), gdb = on(DEVICE_CUDA, 1, sb);
    upload(&gx, &x), upload(&gw, &w), upload(&gb, &b), upload(&gdy, &dy);

    // fp32 GEMM over K = 517 / 1031 terms: relative differences of a few 1e-7 from summation order
    linear_forward(&y, &x, &w, &b);
    linear_forward(&gy, &gx, &gw, &gb);
    compare("linear forward", &gy, &y, 2e-6);
    linear_backward(&dx, &dw, &db, &dy, &x, &w);
    linear_backward(&gdx, &gdw, &gdb, &gdy, &gx, &gw);
    compare("linear backward dx", &gdx, &dx, 2e-6);
    compare("linear backward dw", &gdw, &dw, 2e-6);
    compare("linear backward db", &gdb, &db, 2e-6);

    // activations: same formulas; expf/erff/tanhf differ by an ulp or two between libm and CUDA
    Tensor dxv = on(DEVICE_CPU, 2, sy), gdxv = on(DEVICE_CUDA, 2, sy);
    const char *names[] = {"silu", "gelu", "gelu_tanh", "quick_gelu"};
    for (int a = 0; a < 4; a++) {
        char what[64];
        activation_forward(&y, &dy, (Activation)a);
        activation_forward(&gy, &gdy, (Activation)a);
        snprintf(what, sizeof what, "%s forward", names[a]);
        compare(what, &gy, &y, 1e-6);
        activation_backward(&dxv, &y, &dy, (Activation)a);
        activation_backward(&gdxv, &gy, &gdy, (Activation)a);
        snprintf(what, sizeof what, "%s backward", names[a]);
        compare(what, &gdxv, &dxv, 1e-6);
    }
    // arithmetic is exact
    add_forward(&y, &dy, &dy);
    add_forward(&gy, &gdy, &gdy);
    compare("add", &gy, &y, 0);
    tensor_axpy(&y, 0.5f, &dy);
    tensor_axpy(&gy, 0.5f, &gdy);
    compare("axpy", &gy, &y, 0);

    // noise: bit-identical for any offset
    const int64_t n = 1 << 22;
    float *cpu = xmalloc(sizeof(float) * n), *gpu = xmalloc(sizeof(float) * n);
    int64_t sn[1] = {n};
    Tensor gz = on(DEVICE_CUDA, 1, sn);
    for (int off = 0; off < 3; off++) {
        uint64_t o = off == 0 ? 0 : off == 1 ? 3 : 123457;
        rng_normal_fill(cpu, n, 2024, RNG_STREAM(RNG_PURPOSE_LATENT, 17, off), o);
        rng_normal_fill_cuda(gz.data, n, 2024, RNG_STREAM(RNG_PURPOSE_LATENT, 17, off), o);
        device_copy(gpu, DEVICE_CPU, gz.data, DEVICE_CUDA, sizeof(float) * n);
        int64_t diff = 0;
        for (int64_t i = 0; i < n; i++) diff += memcmp(&cpu[i], &gpu[i], 4) != 0;
        checks++;
        failures += diff != 0;
        printf("%s normal noise, offset %-7llu %lld of %lld samples differ bitwise\n", diff ? "FAIL" : "ok  ",
               (unsigned long long)o, (long long)diff, (long long)n);
    }
    printf("%d passed, %d failed\n", checks - failures, failures);
    return failures ? 1 : 0;
}
