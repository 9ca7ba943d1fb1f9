// bench_gpu_check.h: what the tests of `drtune bench gpu` check on the CPU (cli_bench_gpu) and on the emulated or
// real GPU (cudaemu_bench_gpu / cuda_bench_gpu): configs/models/tiny-random at an 8 x 8 latent, its FLOP counts
// against the hand count below, and every time, rate and memory figure positive and finite; with the iteration
// part (BG_STEPS steps, K = 1 and K = BG_STEPS), its times and peaks positive and the K = BG_STEPS peak within 2% of
// the K = 1 peak: the engine recomputes the trained steps, so its memory must not grow with K.
//
// Hand count, tiny-random (block_out 8, 12, 12; 2 layers per block; attention in down levels 0, 1, up levels 1, 2
// and the mid block; 1 transformer layer; cross_attention_dim 32; temb 32; conv projections), batch 1, latent 8 x 8
// (64, 16, 4 pixels at levels 0, 1, 2), context 77. 2 M N K per product.
//   conv      conv_in 36864; down 0: resnets 2 x 147456, projections 2 x 16384, downsampler 18432; down 1: resnets
//             72192 (8 -> 12 with its shortcut) + 82944, projections 2 x 9216, downsampler 10368; down 2: resnets
//             2 x 20736; mid: resnets 41472, projections 2304; up 0: 3 resnets 24 -> 12 at 4 px 3 x 33408,
//             upsampler 41472; up 1: 2 x 133632 (24 -> 12) + 118272 (20 -> 12), projections 3 x 9216, upsampler
//             165888; up 2: 278528 (20 -> 8) + 2 x 237568 (16 -> 8), projections 3 x 16384; conv_out 36864
//             = 2212608
//   linear    time embedding 2 (8 x 32 + 32 x 32) = 2560; resnet time projections 5 x 512 + 12 x 768 = 11776;
//             per transformer at T tokens, C channels: 18 x 2 T C^2 (self q k v out, cross q out, GEGLU 8C, out
//             4C) + 4 x 77 x 32 C (cross k v): 5 at (64, 8), 6 at (16, 12) or (4, 12) = 2290944
//   attention per transformer 4 T^2 C + 4 T 77 C = 1816512
// Forward 6320064. Forward + backward: 3 x (conv + linear) - 1104384 (time_embedding.linear_1 512 and the cross
// k, v over the context 1103872 need no input gradient) + 3.5 x attention = 18764064. torch.utils.flop_counter
// gives both totals for diffusers' UNet2DConditionModel of this config (tools/gpu/torch_unet.py --count-flops).
#pragma once
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define BG_FLOPS_CONV 2212608.0
#define BG_FLOPS_LINEAR 2290944.0
#define BG_FLOPS_ATTENTION 1816512.0
#define BG_FLOPS_FORWARD 6320064.0
#define BG_FLOPS_FORWARD_BACKWARD 18764064.0
#define BG_STEPS 3

// The value of `key=` in the line, or NAN.
static inline double bg_field(const char *line, const char *key) {
    char k[64];
    snprintf(k, sizeof k, " %s=", key);
    const char *p = strstr(line, k);
    return p ? strtod(p + strlen(k), NULL) : NAN;
}

// The iteration part's figures in result line `line` of output `out` after a run with `steps` steps (0: a run with
// --no-iteration, which must leave them out).
static inline void bg_iteration_fields(const char *what, const char *line, const char *out, int steps) {
    if (!steps) {
        tu_check(strstr(line, "iter_") == NULL, "%s: --no-iteration leaves the iteration out", what);
        return;
    }
    const char *keys[] = {"iter_k1_s", "iter_kn_s", "iter_k1_peak_mib", "iter_kn_peak_mib"};
    for (int i = 0; i < 4; i++) {
        double v = bg_field(line, keys[i]);
        tu_check(isfinite(v) && v > 0, "%s: %s = %g is positive", what, keys[i], v);
    }
    double k1 = bg_field(line, "iter_k1_peak_mib"), kn = bg_field(line, "iter_kn_peak_mib");
    double ratio = bg_field(line, "iter_peak_ratio");
    tu_check(bg_field(line, "iter_steps") == steps, "%s: iter_steps = %d", what, steps);
    // flat in K: the engine plans the same buffers for any K and recomputes each trained step in its backward, so
    // the K = N iteration may not allocate more than the K = 1 one; 2% is room for an op workspace grown on first use
    tu_check(kn <= 1.02 * k1 && kn >= 0.98 * k1, "%s: peak K = %d %.3f MiB within 2%% of K = 1 %.3f MiB", what,
             steps, kn, k1);
    tu_check(fabs(ratio - kn / k1) < 1e-3, "%s: iter_peak_ratio %g = %g / %g", what, ratio, kn, k1);
    char row[32];
    snprintf(row, sizeof row, "K = %d ", steps);
    tu_check(strstr(out, "K = 1 ") && strstr(out, row), "%s: the K = 1 and K = %d rows", what, steps);
}

// The result line of output out (copied into line), or 0.
static inline int bg_result_line(const char *out, char *line, size_t n) {
    const char *res = strstr(out, "\nresult ");
    if (!res) return 0;
    snprintf(line, n, "%s", res + 1);
    char *nl = strchr(line, '\n');
    if (nl) *nl = 0;
    return 1;
}

// Runs `drtune bench gpu <device args>` on tiny-random at latent 8 and checks its output (the iteration part's
// figures unless device_args has --no-iteration).
static inline void bg_check(const char *what, const char *device_args) {
    char args[512];
    snprintf(args, sizeof args,
             "bench gpu %s --model configs/models/tiny-random --latent 8 --reps 2 --gemm 64 --steps %d", device_args,
             BG_STEPS);
    int iteration = strstr(device_args, "--no-iteration") == NULL;
    TuChild c;
    int rc = tu_run_drtune(args, &c);
    if (!tu_check(rc == 0, "%s: drtune %s exits 0", what, args)) {
        fprintf(stderr, "%s%s", c.out, c.err);
        tu_child_free(&c);
        return;
    }
    double f = NAN, conv = NAN, lin = NAN, att = NAN, fb = NAN;
    const char *p = strstr(c.out, "flops forward: ");
    if (p) sscanf(p, "flops forward: %lf = conv %lf + linear %lf + attention %lf", &f, &conv, &lin, &att);
    p = strstr(c.out, "flops forward+backward: ");
    if (p) sscanf(p, "flops forward+backward: %lf", &fb);
    tu_check(conv == BG_FLOPS_CONV && lin == BG_FLOPS_LINEAR && att == BG_FLOPS_ATTENTION,
             "%s: forward FLOPs by kind %.0f, %.0f, %.0f (hand count %.0f, %.0f, %.0f)", what, conv, lin, att,
             BG_FLOPS_CONV, BG_FLOPS_LINEAR, BG_FLOPS_ATTENTION);
    tu_check(f == BG_FLOPS_FORWARD, "%s: forward FLOPs %.0f (hand count %.0f)", what, f, BG_FLOPS_FORWARD);
    tu_check(fb == BG_FLOPS_FORWARD_BACKWARD, "%s: forward+backward FLOPs %.0f (hand count %.0f)", what, fb,
             BG_FLOPS_FORWARD_BACKWARD);
    // the per-op rows: 4 UNet ops (the 3x3 convolution in both layouts) and the VAE's mid-block attention
    // (tiny-random: 1 head of 16), each forward and backward
    int rows = 0;
    const char *ops[] = {"conv2d 3x3 ", "conv2d 3x3 NHWC", "linear GEGLU", "attention self", "attention cross",
                         "attention VAE mid"};
    for (int i = 0; i < 6; i++) rows += strstr(c.out, ops[i]) != NULL;
    tu_check(rows == 6, "%s: %d of the 6 op rows printed", what, rows);
    const char *gemm = strstr(c.out, "TFLOP/s: the MFU reference");
    tu_check(gemm != NULL, "%s: the GEMM reference line", what);
    char line[1024];
    if (tu_check(bg_result_line(c.out, line, sizeof line), "%s: a result line", what)) {
        tu_check(strstr(line, "model=tiny-random latent=8 batch=1 ") != NULL, "%s: result names the model", what);
        const char *keys[] = {"fwd_ms", "fwdbwd_ms", "fwd_tflops", "fwdbwd_tflops", "mfu_fwd", "mfu_fwdbwd",
                              "planned_mib", "used_mib"};
        for (int i = 0; i < 8; i++) {
            double v = bg_field(line, keys[i]);
            tu_check(isfinite(v) && v > 0, "%s: %s = %g is positive", what, keys[i], v);
        }
        // on the GPU the forward replayed as one CUDA graph too (a row and fwd_graph_ms); not on the CPU
        int gpu = strstr(device_args, "--device cuda") != NULL;
        double g = bg_field(line, "fwd_graph_ms");
        tu_check(gpu ? isfinite(g) && g > 0 && strstr(c.out, "unet forward, CUDA graph (") != NULL
                     : strstr(line, "fwd_graph_ms") == NULL,
                 "%s: the CUDA-graph forward %s (fwd_graph_ms %g)", what, gpu ? "timed" : "absent", g);
        // on the GPU the UNet channels last too (two rows, fwd_cl_ms and fwdbwd_cl_ms); not on the CPU
        double cf = bg_field(line, "fwd_cl_ms"), cb = bg_field(line, "fwdbwd_cl_ms");
        tu_check(gpu ? isfinite(cf) && cf > 0 && isfinite(cb) && cb > 0 &&
                           strstr(c.out, "unet forward+backward, channels last") != NULL
                     : strstr(line, "_cl_ms") == NULL,
                 "%s: the channels-last UNet %s (fwd_cl_ms %g, fwdbwd_cl_ms %g)", what, gpu ? "timed" : "absent", cf,
                 cb);
        bg_iteration_fields(what, line, c.out, iteration ? BG_STEPS : 0);
    }
    tu_child_free(&c);
}

// The iteration part alone at the smallest shapes (tiny-random at latent 4, 2 steps, one timed call; the UNet part
// runs too but its figures are checked by bg_check), for the emulated GPU, where an iteration is slow: `extra`
// picks the device, precision and trainable set.
static inline void bg_iteration_check(const char *what, const char *extra) {
    char args[512];
    snprintf(args, sizeof args, "bench gpu %s --model configs/models/tiny-random --latent 4 --reps 1 --gemm 16 "
             "--no-ops --steps 2", extra);
    TuChild c;
    int rc = tu_run_drtune(args, &c);
    char line[1024];
    if (tu_check(rc == 0, "%s: drtune %s exits 0", what, args) &&
        tu_check(bg_result_line(c.out, line, sizeof line), "%s: a result line", what))
        bg_iteration_fields(what, line, c.out, 2);
    else
        fprintf(stderr, "%s%s", c.out, c.err);
    tu_child_free(&c);
}
