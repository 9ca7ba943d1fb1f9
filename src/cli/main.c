// main.c: the drtune command line: subcommand dispatch and help.
#include <stdio.h>
#include <string.h>

#include "core/common.h"

static void usage(FILE *f) {
    fprintf(f,
            "drtune: reward fine-tuning of text-to-image diffusion models (DRTune and baselines)\n"
            "\n"
            "usage: drtune <command> [options]\n"
            "\n"
            "commands:\n"
            "  train          reward fine-tuning: drtune train --config configs/default.ini [--section.key=value ...]\n"
            "  sample         images from a model at fixed seeds (a PNG grid)\n"
            "  pretrain       train the small model of data/models/tiny from scratch (drtune pretrain --help)\n"
            "  pretrain-clip  train the small CLIP of data/models/clip, the clipscore reward's weights\n"
            "  eval           fixed-seed evaluation of a model (and LoRA) under several rewards, as JSON\n"
            "  grad           one iteration's parameter gradient, without an update (comparison with other code)\n"
            "  report         a markdown table comparing runs (reward before/after, time, memory)\n"
            "  plot           reward curves of one or more runs (metrics.jsonl) in one PNG\n"
            "  smoke          run a short end-to-end check of the numerical core (ops, rng, memory plan)\n"
            "  bench cpu      CPU time of the default job's iteration, sampling and the SD 1.5 UNet (vs PyTorch)\n"
            "  bench ops      CPU throughput of conv2d, linear and attention next to the sgemm rate\n"
            "  bench memory   peak memory of one training iteration per method and K, each in a fresh process\n"
            "  bench overlap  (under mpirun) backward + gradient reduction, reduced after vs during the backward\n"
            "  bench plan     the memory plan of one rank (weights, gradients, moments, activations) from configs\n"
            "  bench unet     one UNet forward and forward + backward timed on a device, random weights, fp32 or bf16\n"
            "  bench gpu      GPU throughput: UNet ops and whole SD 1.5 / SDXL UNets, TFLOP/s and MFU vs a GEMM\n"
            "  info           describe a diffusers folder: architecture, tensor and parameter counts (--load: memory)\n"
            "  init-weights   write a diffusers folder with random weights for a folder's configs\n"
            "  probe          run one component (UNet, VAE, text encoder, tokenizer) on tensors from a file\n"
            "  convert        a PyTorch checkpoint (.pt, .pth, .bin) to safetensors, without running its pickle\n"
            "  --help         this text\n"
            "  --version      version\n");
}

int cmd_train(int argc, char **argv);
int cmd_sample(int argc, char **argv);
int cmd_pretrain(int argc, char **argv);
int cmd_pretrain_clip(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_grad(int argc, char **argv);
int cmd_bench_memory(int argc, char **argv);
int cmd_bench_overlap(int argc, char **argv);
int cmd_bench_plan(int argc, char **argv);
int cmd_bench_unet(int argc, char **argv);
int cmd_bench_gpu(int argc, char **argv);
int cmd_bench_cpu(int argc, char **argv);
int cmd_smoke(int argc, char **argv);
int cmd_plot(int argc, char **argv);
int cmd_report(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_init_weights(int argc, char **argv);
int cmd_probe(int argc, char **argv);
int cmd_convert(int argc, char **argv);

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("drtune 0.1.0\n");
        return 0;
    }
    if (!strcmp(argv[1], "train")) return cmd_train(argc - 1, argv + 1);
    if (!strcmp(argv[1], "sample")) return cmd_sample(argc - 1, argv + 1);
    if (!strcmp(argv[1], "pretrain")) return cmd_pretrain(argc - 1, argv + 1);
    if (!strcmp(argv[1], "pretrain-clip")) return cmd_pretrain_clip(argc - 1, argv + 1);
    if (!strcmp(argv[1], "eval")) return cmd_eval(argc - 1, argv + 1);
    if (!strcmp(argv[1], "grad")) return cmd_grad(argc - 1, argv + 1);
    if (!strcmp(argv[1], "plot")) return cmd_plot(argc - 1, argv + 1);
    if (!strcmp(argv[1], "report")) return cmd_report(argc - 1, argv + 1);
    if (!strcmp(argv[1], "smoke")) return cmd_smoke(argc - 1, argv + 1);
    if (!strcmp(argv[1], "bench") && argc > 2 && !strcmp(argv[2], "memory"))
        return cmd_bench_memory(argc - 2, argv + 2);
    if (!strcmp(argv[1], "bench") && argc > 2 && !strcmp(argv[2], "overlap"))
        return cmd_bench_overlap(argc - 2, argv + 2);
    if (!strcmp(argv[1], "bench") && argc > 2 && !strcmp(argv[2], "plan"))
        return cmd_bench_plan(argc - 2, argv + 2);
    if (!strcmp(argv[1], "bench") && argc > 2 && !strcmp(argv[2], "cpu"))
        return cmd_bench_cpu(argc - 2, argv + 2);
    if (!strcmp(argv[1], "bench") && argc > 2 && !strcmp(argv[2], "unet"))
        return cmd_bench_unet(argc - 2, argv + 2);
    if (!strcmp(argv[1], "bench") && argc > 2 && !strcmp(argv[2], "gpu")) return cmd_bench_gpu(argc - 2, argv + 2);
    if (!strcmp(argv[1], "bench")) return cmd_bench(argc - 1, argv + 1);
    if (!strcmp(argv[1], "info")) return cmd_info(argc - 1, argv + 1);
    if (!strcmp(argv[1], "init-weights")) return cmd_init_weights(argc - 1, argv + 1);
    if (!strcmp(argv[1], "probe")) return cmd_probe(argc - 1, argv + 1);
    if (!strcmp(argv[1], "convert")) return cmd_convert(argc - 1, argv + 1);
    usage(stderr);
    dt_user_error("unknown command '%s'", argv[1]);
}
