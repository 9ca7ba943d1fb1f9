// cmd_bench_cuda.c: `drtune bench cuda`, the CUDA backend next to the CPU backend through the same op calls
// (linear forward and backward at UNet-like shapes, activations, Gaussian noise), measured side by side in one run
// and printed with the GPU/CPU ratio. Without a GPU it says so and exits 0.
#include <stdio.h>
#include <string.h>

#include "bench_time.h"
#include "core/common.h"
#include "core/device.h"
#include "core/rng.h"
#include "ops/ops.h"
#include "core/device_cuda.h"
#include "ops/cuda/cuda_api.h"

typedef struct {
    const char *name;
    int64_t N, IC, OC;
} LinearCase;

static Tensor alloc_on(Device d, int64_t r, int64_t c) {
    Tensor t = tensor_make(NULL, DTYPE_F32, d, 2, (int64_t[]){r, c});
    t.data = device_alloc(d, tensor_bytes(&t));
    return t;
}

typedef struct {
    Tensor x, w, b, y, dx, dw, db;
    int pass;
} LinearRun;

static void linear_run(void *p) {
    LinearRun *r = p;
    if (r->pass == 0)
        linear_forward(&r->y, &r->x, &r->w, &r->b);
    else
        linear_backward(&r->dx, &r->dw, &r->db, &r->y, &r->x, &r->w);
}

typedef struct {
    Tensor x, y;
} ActRun;

static void act_run(void *p) {
    ActRun *r = p;
    activation_forward(&r->y, &r->x, ACT_SILU);
}

static void setup_linear(LinearRun *r, Device d, const LinearCase *c) {
    r->x = alloc_on(d, c->N, c->IC), r->dx = alloc_on(d, c->N, c->IC);
    r->w = alloc_on(d, c->OC, c->IC), r->dw = alloc_on(d, c->OC, c->IC);
    r->b = alloc_on(d, 1, c->OC), r->db = alloc_on(d, 1, c->OC);
    r->b = tensor_reshape(&r->b, 1, (int64_t[]){c->OC}), r->db = tensor_reshape(&r->db, 1, (int64_t[]){c->OC});
    r->y = alloc_on(d, c->N, c->OC);
    Tensor h[3] = {alloc_on(DEVICE_CPU, c->N, c->IC), alloc_on(DEVICE_CPU, c->OC, c->IC), alloc_on(DEVICE_CPU, 1, c->OC)};
    for (int i = 0; i < 3; i++) rng_normal_fill(h[i].data, tensor_numel(&h[i]), 1, (uint64_t)i, 0);
    device_copy(r->x.data, d, h[0].data, DEVICE_CPU, tensor_bytes(&h[0]));
    device_copy(r->w.data, d, h[1].data, DEVICE_CPU, tensor_bytes(&h[1]));
    device_copy(r->b.data, d, h[2].data, DEVICE_CPU, tensor_bytes(&h[2]));
    for (int i = 0; i < 3; i++) device_free(DEVICE_CPU, h[i].data);
}

static void free_linear(LinearRun *r, Device d) {
    Tensor *t[7] = {&r->x, &r->w, &r->b, &r->y, &r->dx, &r->dw, &r->db};
    for (int i = 0; i < 7; i++) device_free(d, t[i]->data);
}

int cmd_bench_cuda(int argc, char **argv) {
    USER_CHECK(argc == 1, "drtune bench cuda: unexpected argument '%s' (it takes none)", argv[1]);
    if (!device_cuda_available()) {
        printf("drtune bench cuda: no CUDA device (or built without CUDA); nothing to measure\n");
        return 0;
    }
    printf("drtune bench cuda: %s vs this CPU (fp32 exact: no TF32), median of 9 calls after a warm-up\n",
           cuda_device_name());
    const LinearCase cases[] = {{"GEGLU proj (SD 1.5, 64x64)", 2 * 4096, 320, 2560},
                                {"attn to_q (SD 1.5, 64x64)", 2 * 4096, 320, 320},
                                {"FF out (SD 1.5, 16x16)", 2 * 256, 5120, 1280},
                                {"SDXL GEGLU (32x32)", 2 * 1024, 1280, 10240}};
    printf("%-28s %-4s %10s %10s %10s %10s %8s\n", "linear", "pass", "GPU ms", "GPU TF/s", "CPU ms", "CPU GF/s",
           "GPU/CPU");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        LinearRun g, c;
        setup_linear(&g, DEVICE_CUDA, &cases[i]);
        setup_linear(&c, DEVICE_CPU, &cases[i]);
        for (int p = 0; p < 2; p++) {
            g.pass = c.pass = p;
            double flops = 2.0 * cases[i].N * cases[i].IC * cases[i].OC * (p ? 2 : 1);
            double tg = bench_median(linear_run, &g, DEVICE_CUDA, 9), tc = bench_median(linear_run, &c, DEVICE_CPU, 3);
            printf("%-28s %-4s %10.3f %10.2f %10.2f %10.1f %8.1f\n", p ? "" : cases[i].name, p ? "bwd" : "fwd",
                   tg * 1e3, flops / tg * 1e-12, tc * 1e3, flops / tc * 1e-9, tc / tg);
        }
        free_linear(&g, DEVICE_CUDA);
        free_linear(&c, DEVICE_CPU);
    }
    // SiLU over 64 M elements: bytes moved = read + write
    int64_t n = 64ll << 20;
    ActRun ga = {alloc_on(DEVICE_CUDA, n, 1), alloc_on(DEVICE_CUDA, n, 1)};
    ActRun ca = {alloc_on(DEVICE_CPU, n, 1), alloc_on(DEVICE_CPU, n, 1)};
    double tg = bench_median(act_run, &ga, DEVICE_CUDA, 9), tc = bench_median(act_run, &ca, DEVICE_CPU, 3);
    printf("%-28s %-4s %10.3f %9.0f* %10.2f %9.1f* %8.1f   (* GB/s)\n", "SiLU, 64M elements", "fwd", tg * 1e3,
           8.0 * n / tg * 1e-9, tc * 1e3, 8.0 * n / tc * 1e-9, tc / tg);
    rng_normal_fill_cuda(ga.x.data, n, 1, 2, 0); // warm-up
    device_synchronize(DEVICE_CUDA);
    double t0 = dt_now();
    rng_normal_fill_cuda(ga.x.data, n, 1, 2, 0);
    device_synchronize(DEVICE_CUDA);
    double tgr = dt_now() - t0;
    t0 = dt_now();
    rng_normal_fill(ca.x.data, n, 1, 2, 0);
    double tcr = dt_now() - t0;
    printf("%-28s %-4s %10.3f %9.2f* %10.2f %9.2f* %8.1f   (* G samples/s)\n",
           "normal noise, 64M samples", "", tgr * 1e3, n / tgr * 1e-9, tcr * 1e3, n / tcr * 1e-9, tcr / tgr);
    device_free(DEVICE_CUDA, ga.x.data), device_free(DEVICE_CUDA, ga.y.data);
    device_free(DEVICE_CPU, ca.x.data), device_free(DEVICE_CPU, ca.y.data);
    ops_workspace_free();
    return 0;
}
