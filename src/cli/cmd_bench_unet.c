// cmd_bench_unet.c: `drtune bench unet`, one UNet forward and one forward + backward (every parameter gradient)
// timed on a device, from a model folder's unet/config.json alone: the weights are random (nothing is read), so the
// SDXL-shaped UNet can be timed on a GPU without its 10 GB of weights (tools/gpu/check.sh), in fp32 or with the bf16
// compute copy of train.precision = bf16. Prints the median milliseconds per call and the memory of each part.
#include <stdio.h>
#include <string.h>

#include "args.h"
#include "bench_time.h"
#include "core/common.h"
#include "core/device.h"
#include "core/rng.h"
#include "models/unet.h"
#include "ops/ops.h"
#include "train/setup.h"

static void unet_usage(FILE *f) {
    fprintf(f,
            "usage: drtune bench unet --model DIR [--latent N] [--batch B] [--device auto|cpu|cuda]\n"
            "                         [--precision fp32|bf16] [--reps R]\n"
            "\n"
            "Times one UNet forward and one forward + backward (all parameter gradients) of DIR/unet/config.json with\n"
            "random weights, on N x N latents (default: the config's sample_size), batch B (default 1), context 77,\n"
            "on the device (default auto), median of R timed calls (default 5, at most 16) after one warm-up.\n");
}

typedef struct {
    const UNet *net;
    UNet *grads;
    UNetActs *acts;
    Tensor x, t, ctx, te, tid, eps, deps, dx;
    int text_time, backward;
} UNetBench;

static void bench_call(void *arg) {
    UNetBench *b = arg;
    unet_forward(b->net, b->acts, &b->eps, &b->x, &b->t, &b->ctx, b->text_time ? &b->te : NULL,
                 b->text_time ? &b->tid : NULL);
    if (b->backward) unet_backward(b->net, b->grads, b->acts, &b->deps, &b->dx, NULL);
}

// a tensor of the given shape on d, filled with standard normal values (scaled) or a constant
static Tensor bench_tensor(Device d, int ndim, const int64_t *shape, float scale, float value, uint64_t stream) {
    Tensor h = tensor_make(NULL, DTYPE_F32, DEVICE_CPU, ndim, shape);
    int64_t n = tensor_numel(&h);
    h.data = xmalloc(tensor_bytes(&h));
    float *p = h.data;
    if (scale != 0.0f) {
        rng_normal_fill(p, n, 0, RNG_STREAM(RNG_PURPOSE_TEST, stream, 0), 0);
        for (int64_t i = 0; i < n; i++) p[i] *= scale;
    } else {
        for (int64_t i = 0; i < n; i++) p[i] = value;
    }
    Tensor t = h;
    t.device = d;
    t.data = device_alloc(d, tensor_bytes(&h));
    device_copy(t.data, d, h.data, DEVICE_CPU, tensor_bytes(&h));
    free(h.data);
    return t;
}

int cmd_bench_unet(int argc, char **argv) {
    const char *model = NULL;
    int N = -1, B = 1, reps = 5;
    TrainDevice choice = TRAIN_DEVICE_AUTO;
    TrainPrecision prec = PRECISION_FP32;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            unet_usage(stdout);
            return 0;
        }
        const char *v = args_value(argc, argv, &i);
        if (!strcmp(o, "--model")) model = v;
        else if (!strcmp(o, "--latent")) N = args_int(o, v, 1, 4096);
        else if (!strcmp(o, "--batch")) B = args_int(o, v, 1, 1024);
        else if (!strcmp(o, "--reps")) reps = args_int(o, v, 1, BENCH_MAX_REPS);
        else if (!strcmp(o, "--device")) choice = setup_device_parse(v, "--device");
        else if (!strcmp(o, "--precision")) prec = setup_precision_parse(v, "--precision");
        else dt_user_error("drtune bench unet: unknown option '%s' (see drtune bench unet --help)", o);
    }
    USER_CHECK(model, "drtune bench unet: --model DIR is required");
    char path[4096];
    snprintf(path, sizeof path, "%s/unet", model);
    UNetConfig uc;
    unet_load_config(&uc, path);
    if (N < 0) N = uc.sample_size;
    Device d = setup_device(choice, NULL, "--device");
    DType dt = setup_precision(prec, d, "--precision", "--device");

    // weights: standard normal times 0.02 on the host, moved to the device in one copy; the bf16 copy by one cast
    Arena pa, ca, ga, aa;
    UNet *net = xcalloc(1, sizeof *net), *cnet = xcalloc(1, sizeof *cnet), *grads = xcalloc(1, sizeof *grads);
    UNetActs *acts = xcalloc(1, sizeof *acts);
    arena_init(&pa, "unet", DEVICE_CPU);
    unet_plan_params(&pa, net, &uc);
    arena_alloc(&pa);
    int64_t n = (int64_t)(pa.size / sizeof(float));
    rng_normal_fill(pa.base, n, 0, RNG_STREAM(RNG_PURPOSE_INIT, 0, 0), 0);
    for (int64_t i = 0; i < n; i++) ((float *)pa.base)[i] *= 0.02f;
    arena_to_device(&pa, d);
    arena_init(&ca, "unet-compute", d);
    if (dt != DTYPE_F32) {
        arena_set_float_dtype(&ca, dt);
        unet_plan_params(&ca, cnet, &uc);
        arena_alloc(&ca);
        arena_cast(&ca, &pa);
    }
    const UNet *run = dt != DTYPE_F32 ? cnet : net;
    arena_init(&ga, "unet-grads", d);
    unet_plan_params(&ga, grads, &uc);
    arena_alloc(&ga);
    arena_init(&aa, "unet-acts", d);
    unet_plan_acts(&aa, acts, run, B, N, N, 77);
    arena_alloc(&aa);

    UNetBench b = {.net = run, .grads = grads, .acts = acts, .text_time = uc.text_time};
    int64_t lat[4] = {B, uc.in_channels, N, N}, out[4] = {B, uc.out_channels, N, N};
    b.x = bench_tensor(d, 4, lat, 1.0f, 0, 1);
    b.t = bench_tensor(d, 1, (int64_t[]){B}, 0.0f, 500.0f, 2);
    b.ctx = bench_tensor(d, 3, (int64_t[]){B, 77, uc.cross_dim}, 1.0f, 0, 3);
    if (uc.text_time) {
        b.te = bench_tensor(d, 2, (int64_t[]){B, uc.text_embed_dim}, 1.0f, 0, 4);
        b.tid = bench_tensor(d, 2, (int64_t[]){B, 6}, 0.0f, 64.0f, 5);
    }
    b.eps = bench_tensor(d, 4, out, 0.0f, 0.0f, 6);
    b.deps = bench_tensor(d, 4, out, 1.0f, 0, 7);
    b.dx = bench_tensor(d, 4, lat, 0.0f, 0.0f, 8);

    char mb[4][32];
    printf("drtune bench unet: %s, batch %d, %dx%d latents, context 77, %s on %s, %lld parameters\n", model, B, N, N,
           dtype_name(dt), device_name(d), (long long)unet_param_count(&uc));
    printf("memory: weights %s%s%s, gradients %s, activations %s\n", dt_format_bytes(mb[0], 32, (double)pa.size),
           dt != DTYPE_F32 ? " + bf16 copy " : "", dt != DTYPE_F32 ? dt_format_bytes(mb[1], 32, (double)ca.size) : "",
           dt_format_bytes(mb[2], 32, (double)ga.size), dt_format_bytes(mb[3], 32, (double)aa.size));
    b.backward = 0;
    double tf = bench_median(bench_call, &b, d, reps);
    b.backward = 1;
    double tb = bench_median(bench_call, &b, d, reps);
    printf("forward:            %10.2f ms\nforward + backward: %10.2f ms   (median of %d after a warm-up)\n",
           1e3 * tf, 1e3 * tb, reps);

    Tensor *ts[] = {&b.x, &b.t, &b.ctx, &b.te, &b.tid, &b.eps, &b.deps, &b.dx};
    for (int i = 0; i < 8; i++)
        if (ts[i]->data) device_free(d, ts[i]->data);
    unet_acts_free(acts);
    unet_free(net), unet_free(grads);
    if (dt != DTYPE_F32) unet_free(cnet);
    free(net), free(cnet), free(grads), free(acts);
    arena_free(&pa), arena_free(&ca), arena_free(&ga), arena_free(&aa);
    return 0;
}
