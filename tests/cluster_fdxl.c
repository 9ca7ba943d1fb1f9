// cluster_fdxl.c: the FDXL recipe's code path, end to end, at CI size. configs/fdxl.ini parses with every key valid
// (LoRA and the documented full fine-tuning variant); while the HPS reward is not built in, drtune train names it
// as the missing reward (exit 2, one line); and one iteration of `mpirun -np 2 drtune train --config
// configs/fdxl.ini` runs on a random-weights SDXL-architecture folder (configs/models/sdxl-small: two text encoders,
// text_time conditioning, four-level VAE) with a built-in reward in place of hps.
#include <math.h>

#include "cluster_harness.h"

// What the small folder cannot take from the recipe: its size, a LoRA rank that fits 16-wide projections, and a
// reward that exists. Everything else (DRTune with K = 5 of 25 steps, guidance, optimizer) is configs/fdxl.ini's.
#define SMALL                                                                                                      \
    "--reward.names=symmetry --reward.weights=1 --retrain.target= --sampler.height=64 --sampler.width=64 "           \
    "--train.iterations=1 --train.warmup=0 --train.batch=2 --log.sample_seeds=0"

int main(void) {
    ch_bin = getenv("DRTUNE_BIN");
    const char *mpiexec = getenv("DRTUNE_MPIEXEC");
    if (!ch_bin || !*ch_bin) {
        printf("DRTUNE_BIN is not set (ctest sets it): skipped\n");
        return 77;
    }
    const char *tmp = tu_tmpdir("cluster_fdxl");
    double t_start = dt_now();
    char *out = NULL;

    int rc = ch_sh(&out, "'%s' train --config configs/fdxl.ini --output.dir='%s/none'", ch_bin, tmp);
    int one_line = out && strchr(out, '\n') == out + strlen(out) - 1;
    tu_check(rc == 2 && one_line && strstr(out, "drtune: error: ") == out && strstr(out, "models/hps_v2.1"),
             "drtune train --config configs/fdxl.ini parses and names the missing HPS model folder: exit %d, %s", rc,
             out ? out : "");
    free(out);
    tu_check(!ch_exists(tu_path("none")), "and starts nothing (no run folder)");

    rc = ch_sh(&out, "'%s' train --config configs/fdxl.ini " SMALL " --print-config", ch_bin);
    tu_check(rc == 0 && out && strstr(out, "path = models/stable-diffusion-xl-base-1.0") &&
                 strstr(out, "name = drtune\nk = 5\nm = 10") && strstr(out, "lora_rank = 32"),
             "configs/fdxl.ini parses: every key is valid (exit %d)", rc);
    free(out);
    rc = ch_sh(&out,
               "'%s' train --config configs/fdxl.ini --reward.names=symmetry --reward.weights=1 --retrain.target= "
               "--train.trainable=full --train.lr=1e-5 --output.export=merged --print-config",
               ch_bin);
    tu_check(rc == 0 && out && strstr(out, "trainable = full") && strstr(out, "height = 1024"),
             "the full fine-tuning variant of docs/FDXL.md parses (exit %d)", rc);
    free(out);

    rc = ch_sh(NULL, "'%s' init-weights --model configs/models/sdxl-small --out '%s/sdxl' --seed 3", ch_bin, tmp);
    rc |= ch_sh(&out, "'%s' info --model '%s/sdxl'", ch_bin, tmp);
    tu_check(rc == 0 && out && strstr(out, "SDXL-like: two text encoders, text_time conditioning"),
             "drtune init-weights writes a random-weights SDXL-architecture folder");
    free(out);

    if (!mpiexec || !*mpiexec) {
        printf("DRTUNE_MPIEXEC is not set (a build without MPI): the mpirun runs are skipped\n");
        printf("cluster_fdxl: %.1f s\n", dt_now() - t_start);
        return tu_report() ? 1 : 77;
    }
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1); // CI containers run as root
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    const char *variants[2][2] = {{"lora", "--train.lora_rank=4 --train.lora_alpha=4"},
                                  {"full", "--train.trainable=full --train.lr=1e-5 --output.export=merged"}};
    for (int v = 0; v < 2; v++) {
        double t0 = dt_now();
        rc = ch_sh(&out,
                   "env OMP_NUM_THREADS=1 '%s' --oversubscribe -np 2 '%s' train --config configs/fdxl.ini "
                   "--model.path='%s/sdxl' " SMALL " %s --output.dir='%s/run_%s'",
                   mpiexec, ch_bin, tmp, variants[v][1], tmp, variants[v][0]);
        char path[4200];
        snprintf(path, sizeof path, "%s/run_%s/metrics.jsonl", tmp, variants[v][0]);
        char *metrics = tu_read_all(path, NULL);
        char *g = metrics ? strstr(metrics, "\"grad_norm\":") : NULL;
        double norm = g ? strtod(g + strlen("\"grad_norm\":"), NULL) : NAN;
        snprintf(path, sizeof path, "%s/run_%s/export/unet/diffusion_pytorch_model.safetensors", tmp,
                 variants[v][0]);
        tu_check(rc == 0 && out && strstr(out, "ranks: 2") && ch_exists(path) &&
                     isfinite(norm) && norm > 0,
                 "mpirun -np 2 drtune train --config configs/fdxl.ini (%s): one iteration on 2 ranks, gradient norm "
                 "%.3g, exported (%.1f s)",
                 variants[v][0], norm, dt_now() - t0);
        if (rc != 0) printf("%s\n", out ? out : "");
        free(metrics);
        free(out);
    }
    printf("cluster_fdxl: %.1f s\n", dt_now() - t_start);
    return tu_report();
}
