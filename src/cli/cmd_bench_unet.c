// cmd_bench_unet.c: `drtune bench unet`, one UNet forward and one forward + backward (every parameter gradient)
// timed on a device, from a model folder's unet/config.json alone: the weights are random (nothing is read), so the
// SDXL-shaped UNet can be timed on a GPU without its 10 GB of weights (tools/gpu/check.sh), in fp32 or with the bf16
// compute copy of train.precision = bf16. Prints the median milliseconds per call and the memory of each part.
#include <stdio.h>
#include <string.h>

#include "args.h"
#include "bench_time.h"
#include "bench_unet.h"
#include "core/common.h"
#include "core/device.h"
#include "models/unet.h"
#include "train/setup.h"

static void unet_usage(FILE *f) {
    fprintf(f,
            "usage: drtune bench unet --model DIR [--latent N] [--batch B] [--device auto|cpu|cuda]\n"
            "                         [--precision fp32|bf16] [--recompute off|all] [--reps R]\n"
            "\n"
            "Times one UNet forward and one forward + backward (all parameter gradients) of DIR/unet/config.json with\n"
            "random weights, on N x N latents (default: the config's sample_size), batch B (default 1), context 77,\n"
            "on the device (default auto), median of R timed calls (default 5, at most 16) after one warm-up;\n"
            "--recompute all re-runs every block's forward in the backward (train.recompute).\n");
}

int cmd_bench_unet(int argc, char **argv) {
    const char *model = NULL;
    int N = -1, B = 1, reps = 5;
    TrainDevice choice = TRAIN_DEVICE_AUTO;
    TrainPrecision prec = PRECISION_FP32;
    UNetRecompute rc = {UNET_RECOMPUTE_OFF, 0};
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
        else if (!strcmp(o, "--recompute")) {
            USER_CHECK(!strcmp(v, "off") || !strcmp(v, "all"), "--recompute: '%s' is not off or all", v);
            rc.mode = (UNetRecomputeMode)unet_recompute_parse(v);
        } else dt_user_error("drtune bench unet: unknown option '%s' (see drtune bench unet --help)", o);
    }
    USER_CHECK(model, "drtune bench unet: --model DIR is required");
    char path[4096];
    snprintf(path, sizeof path, "%s/unet", model);
    UNetConfig uc;
    unet_load_config(&uc, path);
    if (N < 0) N = uc.sample_size;
    Device d = setup_device(choice, NULL, "--device");
    DType dt = setup_precision(prec, d, "--precision", "--device");
    UNetBench b;
    unet_bench_init_recompute(&b, &uc, d, dt, B, N, &rc, 0);

    char mb[4][32];
    printf("drtune bench unet: %s, batch %d, %dx%d latents, context 77, %s on %s, %lld parameters\n", model, B, N, N,
           dtype_name(dt), device_name(d), (long long)unet_param_count(&uc));
    printf("memory: weights %s%s%s, gradients %s, activations %s\n", dt_format_bytes(mb[0], 32, (double)b.pa.size),
           dt != DTYPE_F32 ? " + bf16 copy " : "", dt != DTYPE_F32 ? dt_format_bytes(mb[1], 32, (double)b.ca.size) : "",
           dt_format_bytes(mb[2], 32, (double)b.ga.size), dt_format_bytes(mb[3], 32, (double)b.aa.size));
    if (rc.mode != UNET_RECOMPUTE_OFF)
        printf("recompute %s: %d of %d blocks re-run in the backward; activations without: %s\n",
               unet_recompute_name(rc.mode), b.acts->n_recompute, unet_units(&uc),
               dt_format_bytes(mb[0], 32, (double)b.acts->bytes_off));
    b.backward = 0;
    double tf = bench_median(unet_bench_call, &b, d, reps);
    b.backward = 1;
    double tb = bench_median(unet_bench_call, &b, d, reps);
    printf("forward:            %10.2f ms\nforward + backward: %10.2f ms   (median of %d after a warm-up)\n",
           1e3 * tf, 1e3 * tb, reps);
    unet_bench_free(&b);
    return 0;
}
