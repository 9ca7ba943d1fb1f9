// reward_resize.c: the rewards' resize against torch.nn.functional.interpolate (tests/fixtures/resize_ref, written by
// tools/reference/make_reward_fixtures.py): forward and adjoint for bilinear / bicubic x antialias off / on, two
// downscales (one with many antialias taps) and an upscale; plus the adjoint identity <A x, y> = <x, A^T y> at the
// real reward geometry (1024 -> 224 and a non-square 768 x 512 -> 224 x 336) where no torch reference is stored.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "../src/ops/ops.h"
#include "fixture.h"
#include "gradcheck.h"

// float32 resize against torch's float32 resize: both round each product; 2e-6 of max|ref| covers the different
// summation orders (measured worst: see the printed rel).
#define RESIZE_TOL 2e-6

static int check_case(const SafeTensors *st, ResizeKernel k, int aa, const char *dir) {
    char p[96], n[128];
    snprintf(p, sizeof p, "%s_aa%d_%s.", resize_kernel_name(k), aa, dir);
#define GET(s) (snprintf(n, sizeof n, "%s%s", p, s), fixture_get(st, n))
    Tensor in = GET("in"), ref = GET("out"), dout = GET("dout"), gref = GET("grad");
    Tensor out = gc_tensor(4, ref.shape), din = gc_tensor(4, in.shape);
    resize_forward(&out, &in, k, aa);
    resize_backward(&din, &dout, k, aa);
    int ok = fixture_compare((snprintf(n, sizeof n, "%sforward", p), n), &out, &ref, RESIZE_TOL);
    ok &= fixture_compare((snprintf(n, sizeof n, "%sadjoint", p), n), &din, &gref, RESIZE_TOL);
#undef GET
    return ok;
}

static double dot(const Tensor *a, const Tensor *b) {
    double s = 0;
    for (int64_t i = 0; i < tensor_numel(a); i++) s += (double)((float *)a->data)[i] * ((float *)b->data)[i];
    return s;
}

// <resize(x), y> == <x, resize^T(y)> to float32 accumulation accuracy
static int check_adjoint(ResizeKernel k, int aa, int64_t H, int64_t W, int64_t OH, int64_t OW) {
    Tensor x = GC_TENSOR(1, 3, H, W), dx = GC_TENSOR(1, 3, H, W), y = GC_TENSOR(1, 3, OH, OW),
           out = GC_TENSOR(1, 3, OH, OW);
    gc_fill_uniform(&x, -1, 1, 7);
    gc_fill_uniform(&y, -1, 1, 8);
    resize_forward(&out, &x, k, aa);
    resize_backward(&dx, &y, k, aa);
    double a = dot(&out, &y), b = dot(&x, &dx), rel = fabs(a - b) / fabs(a);
    int ok = rel < 1e-5;
    printf("%s adjoint %s aa%d %lldx%lld -> %lldx%lld: <Ax,y> %.8e <x,A^T y> %.8e rel %.1e\n", ok ? "ok  " : "FAIL",
           resize_kernel_name(k), aa, (long long)H, (long long)W, (long long)OH, (long long)OW, a, b, rel);
    gc_free(x.data), gc_free(dx.data), gc_free(y.data), gc_free(out.data);
    return ok;
}

int main(void) {
    const char *path = "tests/fixtures/resize_ref.safetensors";
    SafeTensors st;
    safetensors_open(&st, path);
    int pass = 0, n = 0;
    const char *dirs[] = {"down", "down2", "up"};
    for (int k = 0; k < 2; k++)
        for (int aa = 0; aa < 2; aa++)
            for (int d = 0; d < 3; d++) pass += check_case(&st, (ResizeKernel)k, aa, dirs[d]), n++;
    for (int k = 0; k < 2; k++)
        for (int aa = 0; aa < 2; aa++) {
            pass += check_adjoint((ResizeKernel)k, aa, 1024, 1024, 224, 224), n++;
            pass += check_adjoint((ResizeKernel)k, aa, 512, 768, 224, 336), n++;
        }
    safetensors_close(&st);
    printf("%d passed, %d failed\n", pass, n - pass);
    return pass == n ? 0 : 1;
}
