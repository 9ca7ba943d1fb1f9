// tools_torch_unet.c: tools/gpu/torch_unet.py, the PyTorch reference timing of the GPU check, on the CPU at
// tiny-random's small shapes through the reference venv: it runs, prints its result line, and torch.utils.flop_counter
// counts the same forward and forward + backward FLOPs as drtune's hand-checked count (bench_gpu_check.h). Skipped
// (77) without tools/reference/.venv (CI has no Python).
#include <unistd.h>

#include "bench_gpu_check.h"

int main(void) {
    const char *py = "tools/reference/.venv/bin/python";
    if (access(py, X_OK) != 0) {
        printf("skip: %s missing (tools/reference/README.md)\n", py);
        return 77;
    }
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s tools/gpu/torch_unet.py --model configs/models/tiny-random --latent 8 --device cpu "
             "--dtype fp32 --reps 1 --warmup 0 --count-flops 2>&1", py);
    FILE *f = popen(cmd, "r");
    char line[2048], result[2048] = "";
    while (f && fgets(line, sizeof line, f)) {
        fputs(line, stdout);
        if (!strncmp(line, "result ", 7)) snprintf(result, sizeof result, "%s", line);
    }
    int rc = f ? pclose(f) : -1;
    tu_check(rc == 0, "torch_unet.py exits 0");
    if (tu_check(result[0] != 0, "torch_unet.py prints a result line")) {
        tu_check(strstr(result, "model=tiny-random latent=8 batch=1 dtype=fp32 device=cpu ") != NULL,
                 "the result line names the run");
        double ff = bg_field(result, "fwd_flops"), fb = bg_field(result, "fwdbwd_flops");
        tu_check(ff == BG_FLOPS_FORWARD, "forward FLOPs (flop_counter) %.0f = drtune's count %.0f", ff,
                 BG_FLOPS_FORWARD);
        tu_check(fb == BG_FLOPS_FORWARD_BACKWARD, "forward+backward FLOPs (flop_counter) %.0f = drtune's count %.0f",
                 fb, BG_FLOPS_FORWARD_BACKWARD);
        double ms[2] = {bg_field(result, "fwd_ms"), bg_field(result, "fwdbwd_ms")};
        tu_check(ms[0] > 0 && ms[1] > 0, "times positive: %g, %g ms", ms[0], ms[1]);
    }
    // the check's channels_last run: bf16 weights and latents in torch.channels_last
    snprintf(cmd, sizeof cmd, "%s tools/gpu/torch_unet.py --model configs/models/tiny-random --latent 8 --device cpu "
             "--dtype bf16 --channels-last --reps 1 --warmup 0 2>&1", py);
    f = popen(cmd, "r");
    result[0] = 0;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "result ", 7)) snprintf(result, sizeof result, "%s", line);
    rc = f ? pclose(f) : -1;
    tu_check(rc == 0 && strstr(result, " dtype=bf16 device=cpu layout=channels_last ") && bg_field(result, "fwd_ms") > 0,
             "torch_unet.py --channels-last runs and says so: %s", result);
    return tu_report();
}
