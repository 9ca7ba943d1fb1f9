// train_pretrain.c: `drtune pretrain` as a user runs it ($DRTUNE_BIN, repository root), at tiny sizes: the exported
// folder loads in info/sample/--eval; 2 + resume + 2 iterations end bit for bit where 4 straight do; bad
// configuration input ends with exit code 2 and one clear line.
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

static const char *g_bin;

// 1 stage-1 and 3 stage-2 iterations of batch 2; a checkpoint after each.
#define TINY                                                                                                        \
    "pretrain --config configs/pretrain.ini --data.vocab_captions=200 --data.latent_cache=16 --vae.iterations=1 "  \
    "--vae.batch=2 --unet.iterations=3 --unet.batch=2 --train.warmup=1 --train.threads=1 "                         \
    "--output.checkpoint_every=1 --output.keep=0 --output.log_every=1 --eval.prompts=4 --eval.batch=2 "            \
    "--eval.steps=2"

// Runs `drtune <args>` (printf-style); prints its output when it fails; returns the exit code.
static int run(TuChild *c, const char *fmt, ...) TU_PRINTF(2, 3);
static int run(TuChild *c, const char *fmt, ...) {
    char args[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    int rc = tu_run_drtune(args, c);
    if (rc != 0 && rc != 2) printf("     drtune %s\n%s%s", args, c->out, c->err);
    return rc;
}

static int same_file(const char *a, const char *b) {
    size_t na, nb;
    char *x = tu_read_all(a, &na), *y = tu_read_all(b, &nb);
    int same = x && y && na == nb && !memcmp(x, y, na);
    free(x);
    free(y);
    return same;
}

static int exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

static void check_run_and_resume(void) {
    const char *T = tu_tmpdir("pretrain");
    TuChild c;
    int rc = run(&c, TINY " --output.dir=%s/a --model.out=%s/a_model", T, T);
    tu_check(rc == 0, "a run of 1 + 3 iterations completes");
    tu_check(strstr(c.out, "stage 2 it      3/3") != NULL, "it logs the last stage-2 iteration");
    tu_child_free(&c);
    rc = run(&c, "info --model %s/a_model --load", T);
    tu_check(rc == 0 && strstr(c.out, "CLIPTokenizer") != NULL, "drtune info --load reads the exported folder");
    tu_child_free(&c);
    rc = run(&c, "sample --model %s/a_model --prompt 'a red circle on the left' --steps 2 --out %s/s.png", T, T);
    tu_check(rc == 0 && exists(tu_path("s.png")), "drtune sample samples from it");
    tu_child_free(&c);
    rc = run(&c, TINY " --output.dir=%s/a --eval --model %s/a_model", T, T);
    tu_check(rc == 0 && strstr(c.out, "colour correct") != NULL, "drtune pretrain --eval reports adherence");
    tu_child_free(&c);

    rc = run(&c, TINY " --output.dir=%s/b --model.out=%s/b_model --stop-after 2", T, T);
    tu_check(rc == 0 && !exists(tu_path("b_model/model_index.json")), "--stop-after 2 stops with no export");
    tu_child_free(&c);
    rc = run(&c, TINY " --output.dir=%s/b --model.out=%s/b_model --resume", T, T);
    tu_check(rc == 0 && strstr(c.out, "resuming from") && strstr(c.out, "stage 2, iteration 1"),
             "--resume continues from stage 2 iteration 1");
    tu_child_free(&c);
    static const char *const files[] = {
        "ckpt-s2-00000003/state.json",           "ckpt-s2-00000003/unet.safetensors",
        "ckpt-s2-00000003/text_encoder.safetensors", "ckpt-s2-00000003/vae.safetensors",
        "ckpt-s2-00000003/optimizer.safetensors", "tokenizer/vocab.json"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char a[1024], b[1024];
        snprintf(a, sizeof a, "%s/a/%s", T, files[i]);
        snprintf(b, sizeof b, "%s/b/%s", T, files[i]);
        tu_check(same_file(a, b), "2 + resume + 2 == 4 straight: %s identical", files[i]);
    }
    static const char *const exported[] = {"unet/diffusion_pytorch_model.safetensors",
                                           "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors",
                                           "vae/config.json", "text_encoder/config.json"};
    for (size_t i = 0; i < sizeof exported / sizeof exported[0]; i++) {
        char a[1024], b[1024];
        snprintf(a, sizeof a, "%s/a_model/%s", T, exported[i]);
        snprintf(b, sizeof b, "%s/b_model/%s", T, exported[i]);
        tu_check(same_file(a, b), "exported %s identical", exported[i]);
    }
}

// Exit code 2 and one line holding needle.
static void check_user_error(const char *args, const char *needle, const char *what) {
    TuChild c;
    run(&c, "%s", args);
    tu_check(tu_is_user_error(&c, needle), "%s", what);
    printf("     %s", c.err);
    tu_child_free(&c);
}

static void check_bad_input(void) {
    const char *T = tu_tmpdir("pretrain");
    char args[2048];
    tu_write_text(tu_path("bad_key.ini"), "[vae]\nbatchh = 3\n");
    snprintf(args, sizeof args, "pretrain --config %s", tu_path("bad_key.ini"));
    check_user_error(args, "batchh", "unknown key in the file");
    tu_write_text(tu_path("bad_value.ini"), "[unet]\nlr = fast\n");
    snprintf(args, sizeof args, "pretrain --config %s", tu_path("bad_value.ini"));
    check_user_error(args, "unet.lr", "bad value in the file");
    tu_write_text(tu_path("bad_line.ini"), "[unet]\nthis line has no equals sign\n");
    snprintf(args, sizeof args, "pretrain --config %s", tu_path("bad_line.ini"));
    check_user_error(args, "malformed", "malformed line");
    check_user_error("pretrain --config configs/pretrain.ini --vae.loss=l3", "l1 or l2", "bad override value");
    check_user_error("pretrain --config configs/pretrain.ini --vae.batch=0", "vae.batch", "out-of-range override");
    check_user_error("pretrain --config configs/pretrain.ini --unet.speed=2", "unet.speed", "unknown override");
    check_user_error("pretrain", "--config", "missing --config");
    snprintf(args, sizeof args, "pretrain --config %s/missing.ini", T);
    check_user_error(args, "missing.ini", "missing file");
    snprintf(args, sizeof args, "pretrain --config configs/pretrain.ini --model.config=%s --output.dir=%s/c", T, T);
    check_user_error(args, "config.json", "architecture folder without configs");
}

int main(void) {
    g_bin = getenv("DRTUNE_BIN");
    if (!g_bin || !*g_bin) {
        printf("DRTUNE_BIN is not set (ctest sets it): skipped\n");
        return 77;
    }
    check_run_and_resume();
    check_bad_input();
    return tu_report();
}
