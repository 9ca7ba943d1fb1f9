// cli_bench_gpu.c: `drtune bench gpu` on the CPU (--device cpu): the FLOP count of tiny-random against the hand count
// of bench_gpu_check.h, sane times and rates, the DRTune iteration part (LoRA and full fine-tuning: positive times
// and peaks, the K = N peak within 2% of the K = 1 peak), and its user errors (exit 2, one "drtune: error:" line).
#include "bench_gpu_check.h"

static void expect_user_error(const char *args, const char *needle) {
    TuChild c;
    tu_run_drtune(args, &c);
    if (!tu_check(tu_is_user_error(&c, needle), "drtune %s: user error naming '%s'", args, needle))
        fprintf(stderr, "exit %d, stderr: %s\n", c.code, c.err);
    tu_child_free(&c);
}

int main(void) {
    bg_check("CPU", "--device cpu");
    bg_iteration_check("CPU full fine-tuning", "--device cpu --trainable full");
    TuChild c;
    tu_run_drtune("bench gpu --flops --model configs/models/tiny-random --latent 8", &c);
    tu_check(c.code == 0 && strstr(c.out, "forward 6.32e+06 FLOP (conv 2.213e+06, linear 2.291e+06, attention "
                                          "1.817e+06), forward+backward 1.876e+07 FLOP"),
             "--flops prints the counts alone");
    tu_child_free(&c);
    expect_user_error("bench gpu --device cpu --model configs/models/tiny-random --latent 6", "multiple of 4");
    expect_user_error("bench gpu --device cpu --latent 8", "--latent follows the --model");
    expect_user_error("bench gpu --device cpu --precision bf16 --model configs/models/tiny-random",
                      "bf16 runs on the GPU");
    expect_user_error("bench gpu --frobnicate 1", "unknown option '--frobnicate'");
    expect_user_error("bench gpu --device cpu --trainable half", "'half' is not lora or full");
    expect_user_error("bench gpu --device cpu --steps 0", "--steps");
    expect_user_error("bench gpu --device cpu --model configs/models/no-such-model", "no-such-model");
    return tu_report();
}
