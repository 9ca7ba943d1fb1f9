// cli_train.c: `drtune train`, `eval` and `grad` as a user runs them ($DRTUNE_BIN, repository root) on a tiny random
// pipeline: three iterations of every method with LoRA and one full fine-tuning run (exit 0, three finite metrics
// rows, sample images, PEFT-named LoRA export), eval's JSON (and its agreement with the run's sample grid), grad's
// tensors, their agreement with the run's first iteration and their bitwise reproducibility, and the error
// contract (exit 2, one "drtune: error:" line naming the problem).
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../src/core/common.h"
#include "../src/io/safetensors.h"
#include "testutil.h"

static const char *g_bin;

// Runs `drtune <args>`; returns the exit code, and prints the output of a run that neither succeeded nor ended
// as a user error.
static int run(const char *args, TuChild *c) {
    TuChild own;
    TuChild *r = c ? c : &own;
    int rc = tu_run_drtune(args, r);
    if (rc != 0 && rc != 2) printf("drtune %s (exit %d)\n%s%s", args, rc, r->out, r->err);
    if (!c) tu_child_free(&own);
    return rc;
}

static int exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size > 0;
}

// The runs' configuration: the tiny model, 4 steps, batch 2, 3 iterations, two sample seeds, one thread (the
// model is too small to gain from more, and a busy machine makes waiting threads expensive).
static void write_config(const char *path) {
    char text[2048];
    snprintf(text, sizeof text,
             "[model]\npath = %s\n[sampler]\nsteps = 4\n[method]\nk = 2\nm = 2\n"
             "[reward]\nnames = symmetry, colour\nweights = 1.0, 0.5\n"
             "[train]\nbatch = 2\niterations = 3\nseed = 5\nthreads = 1\n"
             "[data]\nprompts = data/prompts/default.txt\n[log]\nsample_seeds = 0, 1\nprogress = off\n",
             tu_path("model"));
    tu_write_text(path, text);
}

// metrics.jsonl of a run: `rows` lines, each with finite loss, grad_norm and reward_mean. Returns the first row's
// loss and grad_norm.
static int check_metrics(const char *dir, int rows, double *loss0, double *norm0) {
    char path[4300];
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    char *text = tu_read_all(path, NULL), *save = NULL;
    if (!text) return 0;
    int n = 0, ok = 1;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save), n++) {
        cJSON *row = cJSON_Parse(line);
        const char *keys[3] = {"loss", "grad_norm", "reward_mean"};
        double v[3];
        for (int k = 0; k < 3; k++) {
            cJSON *item = cJSON_GetObjectItemCaseSensitive(row, keys[k]);
            v[k] = cJSON_IsNumber(item) ? item->valuedouble : NAN;
            ok &= isfinite(v[k]);
        }
        if (n == 0) *loss0 = v[0], *norm0 = v[1];
        cJSON_Delete(row);
    }
    free(text);
    return ok && n == rows;
}

// The LoRA export: every tensor "unet.<module>.lora_A.weight" / "lora_B.weight" of an attention projection.
static int check_lora_file(const char *path) {
    if (!exists(path)) return 0;
    SafeTensors st;
    safetensors_open(&st, path);
    int ok = st.n > 0;
    for (int i = 0; i < st.n; i++) {
        const char *name = st.tensors[i].name;
        size_t l = strlen(name), k = strlen(".lora_A.weight");
        int suffix = l > k && (!strcmp(name + l - k, ".lora_A.weight") || !strcmp(name + l - k, ".lora_B.weight"));
        ok &= !strncmp(name, "unet.", 5) && suffix && strstr(name, ".transformer_blocks.") && strstr(name, ".attn") &&
              st.tensors[i].ndim == 2;
    }
    safetensors_close(&st);
    return ok;
}

// One training run with --method.name=method and extra overrides, in run_<tag>. Returns the first metrics row
// through loss0 / norm0 and the mean reward of the "before" sample grid that train prints, when asked.
static void train_case(const char *config, const char *method, const char *extra, const char *tag, double *loss0,
                       double *norm0, double *before) {
    char dir[4200], args[8192], path[4300];
    snprintf(dir, sizeof dir, "%s/run_%s", tu_tmpdir(NULL), tag);
    snprintf(args, sizeof args, "train --config %s --method.name=%s --output.dir=%s %s", config, method, dir, extra);
    double t0 = dt_now();
    TuChild c;
    int rc = run(args, &c);
    tu_check(rc == 0, "train %s (%s): exit 0 in %.1f s", method, tag, dt_now() - t0);
    const char *b = strstr(c.out, "(mean reward ");
    if (before) *before = b ? atof(b + 13) : NAN;
    tu_child_free(&c);
    double l = NAN, g = NAN;
    tu_check(check_metrics(dir, 3, &l, &g), "train %s (%s): metrics.jsonl has 3 rows of finite loss, grad_norm, "
             "reward_mean", method, tag);
    if (loss0) *loss0 = l, *norm0 = g;
    int images = 1;
    const char *pngs[] = {"samples/before.png", "samples/after.png", "reward_curve.png"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, pngs[i]);
        images &= exists(path);
    }
    tu_check(images, "train %s (%s): before/after sample grids and the reward curve exist", method, tag);
}

static Tensor load(const SafeTensors *st, const char *name) {
    const StTensor *t = safetensors_find(st, name);
    CHECK(t, "", "'%s' has no tensor '%s'", st->path, name);
    Tensor out = tensor_make(NULL, DTYPE_F32, DEVICE_CPU, t->ndim, t->shape);
    out.data = xmalloc(tensor_bytes(&out));
    safetensors_read_into(st, name, &out);
    return out;
}

// The grad file against the LoRA export (grad.* and lora_init.* named and shaped as its tensors) and against the
// first training iteration of the same configuration (loss and gradient norm).
static void check_grad_file(const char *path, const char *lora_path, double loss0, double norm0) {
    SafeTensors g, l;
    safetensors_open(&g, path);
    safetensors_open(&l, lora_path);
    int ok = 1, n_grad = 0;
    double sumsq = 0;
    for (int i = 0; i < l.n; i++) {
        const StTensor *lt = &l.tensors[i];
        const char *prefix[2] = {"grad.", "lora_init."};
        for (int p = 0; p < 2; p++) {
            char name[600];
            snprintf(name, sizeof name, "%s%s", prefix[p], lt->name + strlen("unet."));
            const StTensor *gt = safetensors_find(&g, name);
            ok &= gt && gt->ndim == 2 && gt->shape[0] == lt->shape[0] && gt->shape[1] == lt->shape[1];
        }
    }
    for (int i = 0; i < g.n; i++) {
        if (strncmp(g.tensors[i].name, "grad.", 5) != 0) continue;
        n_grad++;
        Tensor t = load(&g, g.tensors[i].name);
        for (int64_t k = 0; k < tensor_numel(&t); k++) sumsq += (double)((float *)t.data)[k] * ((float *)t.data)[k];
        free(t.data);
    }
    const StTensor *loss = safetensors_find(&g, "loss"), *reward = safetensors_find(&g, "reward");
    const StTensor *xT = safetensors_find(&g, "x_T");
    ok &= n_grad == l.n && loss && loss->shape[0] == 1 && reward && reward->shape[0] == 2 && xT && xT->ndim == 4 &&
          xT->shape[0] == 2 && safetensors_find(&g, "reward.symmetry") && safetensors_find(&g, "reward.colour") &&
          g.n == 2 * l.n + 5;
    tu_check(ok, "grad: %d grad.* and lora_init.* tensors named and shaped as the LoRA export; x_T, loss [1], "
             "reward, reward.symmetry, reward.colour [2]", n_grad);
    double lv = NAN;
    if (loss) {
        Tensor t = load(&g, "loss");
        lv = ((float *)t.data)[0];
        free(t.data);
    }
    double norm = sqrt(sumsq);
    tu_check(fabs(lv - loss0) <= 1e-6 * fabs(loss0) && fabs(norm - norm0) <= 1e-5 * norm0 && norm > 0,
             "grad: loss %.7g and |grad| %.7g equal the run's first iteration (%.7g, %.7g)", lv, norm, loss0, norm0);
    safetensors_close(&g);
    safetensors_close(&l);
}

static int same_file(const char *a, const char *b) {
    size_t la, lb;
    char *x = tu_read_all(a, &la), *y = tu_read_all(b, &lb);
    int same = x && y && la == lb && !memcmp(x, y, la);
    free(x);
    free(y);
    return same;
}

// Tensors named grad.* hold the same bytes in both files.
static int same_grads(const char *a, const char *b) {
    SafeTensors x, y;
    safetensors_open(&x, a);
    safetensors_open(&y, b);
    int same = 1;
    for (int i = 0; i < x.n; i++) {
        if (strncmp(x.tensors[i].name, "grad.", 5) != 0) continue;
        const StTensor *t = safetensors_find(&y, x.tensors[i].name);
        same &= t && t->nbytes == x.tensors[i].nbytes && !memcmp(t->data, x.tensors[i].data, t->nbytes);
    }
    safetensors_close(&x);
    safetensors_close(&y);
    return same;
}

// Exit 2 and stderr exactly one line "drtune: error: ..." containing needle.
static void check_user_error(const char *args, const char *needle, const char *what) {
    TuChild c;
    run(args, &c);
    tu_check(tu_is_user_error(&c, needle), "%s", what);
    printf("     %s", c.err);
    tu_child_free(&c);
}

static cJSON *item(const cJSON *o, const char *key) { return cJSON_GetObjectItemCaseSensitive(o, key); }

static void check_eval(const char *lora, double before) {
    char args[8192];
    const char *out = tu_path("eval.json");
    snprintf(args, sizeof args, "eval --model %s --prompts data/prompts/default.txt --rewards symmetry,colour "
             "--weights 1,0.5 --seeds 0,1 --steps 4 --threads 1 --lora %s --out %s", tu_path("model"), lora, out);
    tu_check(run(args, NULL) == 0, "eval with the exported LoRA: exit 0");
    char *text = tu_read_all(out, NULL);
    cJSON *root = text ? cJSON_Parse(text) : NULL;
    cJSON *images = item(root, "images"), *prompts = item(root, "prompts"), *summary = item(root, "summary");
    int ok = cJSON_IsArray(images) && cJSON_GetArraySize(images) == 2 && cJSON_IsArray(prompts) &&
             cJSON_GetArraySize(prompts) == 8 && cJSON_IsNumber(item(item(root, "settings"), "steps")) &&
             item(item(root, "settings"), "steps")->valueint == 4;
    for (cJSON *im = images ? images->child : NULL; im; im = im->next)
        ok &= cJSON_IsNumber(item(item(im, "scores"), "symmetry")) &&
              cJSON_IsNumber(item(item(im, "scores"), "colour")) && cJSON_IsNumber(item(im, "total"));
    const char *keys[3] = {"symmetry", "colour", "total"};
    for (int k = 0; k < 3; k++)
        ok &= cJSON_IsNumber(item(item(summary, keys[k]), "mean")) &&
              cJSON_IsNumber(item(item(summary, keys[k]), "std"));
    tu_check(ok, "eval: valid JSON with per-image scores of both rewards, per-reward mean/std, settings, prompts");
    cJSON_Delete(root);
    free(text);

    // the base model at the run's sample seeds and settings: the same images as the run's "before" grid
    snprintf(args, sizeof args, "eval --model %s --prompts data/prompts/default.txt --rewards symmetry,colour "
             "--weights 1,0.5 --seeds 0,1 --steps 4 --threads 1 --out %s", tu_path("model"), out);
    tu_check(run(args, NULL) == 0, "eval of the base model: exit 0");
    text = tu_read_all(out, NULL);
    root = text ? cJSON_Parse(text) : NULL;
    cJSON *mean = item(item(item(root, "summary"), "total"), "mean");
    double m = cJSON_IsNumber(mean) ? mean->valuedouble : NAN;
    tu_check(fabs(m - before) <= 1e-5, "eval mean reward %.5f equals the run's before-training sample grid (%.5f)", m,
             before);
    cJSON_Delete(root);
    free(text);
}

// grad of the first iteration of the drtune run: tensors, agreement with the run, reproducibility, noise file.
static void check_grad(const char *config, const char *lora, double loss0, double norm0) {
    char args[8192];
    const char *g1 = tu_path("grad1.safetensors"), *g2 = tu_path("grad2.safetensors");
    const char *noise = tu_path("noise.safetensors");
    snprintf(args, sizeof args, "grad --config %s --out %s --train.threads=2", config, g1);
    if (!tu_check(run(args, NULL) == 0 && exists(g1), "grad: exit 0")) return;
    check_grad_file(g1, lora, loss0, norm0);
    snprintf(args, sizeof args, "grad --config %s --out %s --iteration 0 --train.threads=2", config, g2);
    tu_check(run(args, NULL) == 0 && same_file(g1, g2), "grad: a second run writes the same file, byte for byte");
    snprintf(args, sizeof args, "grad --config %s --out %s --train.threads=2 --train.recompute=all", config, g2);
    tu_check(run(args, NULL) == 0 && same_file(g1, g2),
             "grad with train.recompute = all: the same file, byte for byte (docs/PERFORMANCE.md)");

    SafeTensors g;
    safetensors_open(&g, g1);
    Tensor xT = load(&g, "x_T");
    safetensors_close(&g);
    const char *name = "x_T";
    safetensors_write(noise, 1, &name, &xT, NULL);
    free(xT.data);
    snprintf(args, sizeof args, "grad --config %s --noise %s --out %s --train.threads=2", config, noise, g2);
    tu_check(run(args, NULL) == 0 && same_grads(g1, g2), "grad: x_T read from a noise file gives the same gradient "
             "bitwise");
    snprintf(args, sizeof args, "grad --config %s --noise %s --out %s --train.batch=3", config, noise, g2);
    check_user_error(args, "x_T", "grad with a noise tensor of the wrong shape: exit 2, one error line");

    snprintf(args, sizeof args, "grad --config %s --train.trainable=full --out %s", config, g2);
    int rc = run(args, NULL), n_full = 0, n_unet = 0;
    if (rc == 0) {
        SafeTensors u;
        safetensors_open(&g, g2);
        safetensors_open(&u, tu_path("model/unet/diffusion_pytorch_model.safetensors"));
        for (int i = 0; i < u.n; i++) {
            char gname[600];
            snprintf(gname, sizeof gname, "grad.%s", u.tensors[i].name);
            n_full += safetensors_find(&g, gname) != NULL;
        }
        n_unet = u.n;
        safetensors_close(&g);
        safetensors_close(&u);
    }
    tu_check(rc == 0 && n_unet > 0 && n_full == n_unet,
             "grad with full fine-tuning: a gradient for each of the %d UNet tensors (%d found)", n_unet, n_full);
}

int main(void) {
    g_bin = getenv("DRTUNE_BIN");
    if (!g_bin || !*g_bin) {
        printf("DRTUNE_BIN is not set (ctest sets it): skipped\n");
        return 77;
    }
    const char *tmp = tu_tmpdir("cli_train");
    double t_start = dt_now();
    char args[8192], config[4200], lora[4200];
    snprintf(args, sizeof args, "init-weights --model configs/models/tiny-random --out %s --seed 1", tu_path("model"));
    tu_check(run(args, NULL) == 0, "init-weights of a tiny pipeline");
    snprintf(config, sizeof config, "%s/run.ini", tmp);
    write_config(config);

    double loss0 = NAN, norm0 = NAN, before = NAN;
    train_case(config, "drtune", "", "drtune", &loss0, &norm0, &before);
    train_case(config, "refl", "", "refl", NULL, NULL, NULL);
    train_case(config, "draft", "", "draft", NULL, NULL, NULL);
    train_case(config, "draft-lv", "", "draft-lv", NULL, NULL, NULL);
    train_case(config, "alignprop", "", "alignprop", NULL, NULL, NULL);
    train_case(config, "drtune", "--train.trainable=full --output.export=merged", "full", NULL, NULL, NULL);
    snprintf(lora, sizeof lora, "%s/run_drtune/export/pytorch_lora_weights.safetensors", tmp);
    tu_check(check_lora_file(lora), "the LoRA export loads and has PEFT names unet.<module>.lora_{A,B}.weight");
    tu_check(exists(tu_path("run_full/export/unet/diffusion_pytorch_model.safetensors")),
             "full fine-tuning exports the merged UNet");

    check_eval(lora, before);
    check_grad(config, lora, loss0, norm0);

    // the error contract of train
    snprintf(args, sizeof args, "train --config %s --output.dir=%s --train.bogus=1", config, tu_path("err"));
    check_user_error(args, "bogus", "train with an unknown key on the command line: exit 2, one error line");
    tu_write_text(tu_path("bad.ini"), "[train]\nbatch = 2\nbogus_key = 3\n");
    snprintf(args, sizeof args, "train --config %s", tu_path("bad.ini"));
    check_user_error(args, "bogus_key", "train with an unknown key in the file: exit 2, one error line");
    snprintf(args, sizeof args, "train --config %s --output.dir=%s --train.batch=two", config, tu_path("err"));
    check_user_error(args, "train.batch", "train with a bad value: exit 2, one error line");
    snprintf(args, sizeof args, "train --config %s --output.dir=%s --data.prompts=%s", config, tu_path("err"),
             tu_path("missing.txt"));
    check_user_error(args, "missing.txt", "train with a missing prompts file: exit 2, one error line");
    tu_write_text(tu_path("bad_prompts.txt"), "a red circle\na blue \xff\xfe square\n");
    snprintf(args, sizeof args, "train --config %s --output.dir=%s --data.prompts=%s", config, tu_path("err"),
             tu_path("bad_prompts.txt"));
    check_user_error(args, "invalid UTF-8", "train with a prompts file of invalid UTF-8: exit 2, one error line");

    printf("%.1f s\n", dt_now() - t_start);
    return tu_report();
}
