// reward_train.c: the learned rewards as a user runs them ($DRTUNE_BIN, repository root): a tiny random-weight
// HPS-architecture model (reward_hps_model.h) written here, then `drtune train` with reward.names = hps (with and
// without reward.checkpoint), `drtune eval --rewards hps`, `drtune bench memory --reward hps`, and the error contract
// (exit 2, one line) for a missing path and a folder that is not a CLIP model.
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/core/common.h"
#include "../src/io/safetensors.h"
#include "../src/ops/ops.h"
#include "gradcheck.h"
#include "reward_hps_model.h"
#include "testutil.h"

static int run(const char *args, TuChild *c) {
    int rc = tu_run_drtune(args, c);
    if (rc != 0 && rc != 2) printf("drtune %s (exit %d)\n%s%s", args, rc, c->out, c->err);
    return rc;
}

int main(void) {
    if (!getenv("DRTUNE_BIN") || !*getenv("DRTUNE_BIN")) {
        printf("DRTUNE_BIN is not set (ctest sets it): skipped\n");
        return 77;
    }
    const char *tmp = tu_tmpdir("reward_train");
    char hps[4200], config[4200], args[16384], dir[4200];
    snprintf(hps, sizeof hps, "%s/hps", tmp);
    write_hps_model(hps);
    snprintf(config, sizeof config, "%s/run.ini", tmp);
    char text[8192];
    snprintf(text, sizeof text,
             "[model]\npath = data/models/tiny\n[sampler]\nsteps = 4\n[method]\nk = 2\nm = 2\n"
             "[reward]\nnames = hps, symmetry\nweights = 10.0, 1.0\nhps_path = %s\n"
             "[train]\nbatch = 2\niterations = 2\nseed = 3\nthreads = 1\n"
             "[data]\nprompts = data/prompts/default.txt\n[log]\nsample_seeds = 0\nprogress = off\n",
             hps);
    tu_write_text(config, text);
    for (int ck = 0; ck < 2; ck++) {
        TuChild c;
        snprintf(dir, sizeof dir, "%s/run%d", tmp, ck);
        snprintf(args, sizeof args, "train --config %s --output.dir=%s --reward.checkpoint=%s", config, dir,
                 ck ? "true" : "false");
        double t0 = dt_now();
        int rc = run(args, &c);
        tu_check(rc == 0, "train with reward.names = hps, symmetry (checkpoint %d): exit 0 in %.1f s", ck,
                 dt_now() - t0);
        tu_child_free(&c);
        tu_check(tu_metrics_ok(dir, 2), "train (checkpoint %d): 2 metrics rows with a finite reward_mean", ck);
    }
    {
        TuChild c;
        snprintf(args, sizeof args,
                 "eval --model data/models/tiny --prompts data/prompts/default.txt --rewards hps,aesthetic "
                 "--reward-path hps=%s --seeds 0,1 --steps 4 --threads 1 --out %s/eval.json",
                 hps, tmp);
        int rc = run(args, &c);
        tu_check(rc == 2 && tu_is_user_error(&c, "reward.aesthetic_clip_path"),
                 "eval --rewards hps,aesthetic without the aesthetic model: one-line user error");
        tu_child_free(&c);
        snprintf(args, sizeof args,
                 "eval --model data/models/tiny --prompts data/prompts/default.txt --rewards hps "
                 "--reward-path hps=%s --seeds 0,1 --steps 4 --threads 1 --out %s/eval.json",
                 hps, tmp);
        rc = run(args, &c);
        char path[4300];
        snprintf(path, sizeof path, "%s/eval.json", tmp);
        char *json = tu_read_all(path, NULL);
        cJSON *doc = json ? cJSON_Parse(json) : NULL;
        cJSON *sum = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(doc, "summary"), "hps");
        cJSON *mean = cJSON_GetObjectItemCaseSensitive(sum, "mean");
        tu_check(rc == 0 && cJSON_IsNumber(mean) && fabs(mean->valuedouble) <= 1.0,
                 "eval --rewards hps: exit 0, a mean cosine in [-1, 1] (%g)",
                 cJSON_IsNumber(mean) ? mean->valuedouble : NAN);
        cJSON_Delete(doc);
        free(json);
        tu_child_free(&c);
    }
    { // the reward's share of the peak memory, with and without checkpointing
        TuChild c;
        snprintf(args, sizeof args,
                 "bench memory --model data/models/tiny --steps 1 --threads 1 --reward hps --reward-path hps=%s", hps);
        int rc = run(args, &c);
        const char *off = strstr(c.out, "reward.checkpoint = false): activations ");
        const char *on = strstr(c.out, "reward.checkpoint = true): activations ");
        tu_check(rc == 0 && off && on && strstr(off, "of the peak RSS") && strstr(on, "of the peak RSS"),
                 "bench memory --reward hps reports the reward's activations with and without checkpointing");
        tu_child_free(&c);
    }
    {
        TuChild c;
        snprintf(args, sizeof args, "train --config %s --output.dir=%s/bad --reward.hps_path=", config, tmp);
        int rc = run(args, &c);
        tu_check(rc == 2 && tu_is_user_error(&c, "reward.hps_path"), "hps without reward.hps_path: one-line error");
        tu_child_free(&c);
        snprintf(args, sizeof args, "train --config %s --output.dir=%s/bad --reward.hps_path=%s", config, tmp, tmp);
        rc = run(args, &c);
        tu_check(rc == 2 && tu_is_user_error(&c, "not a CLIP model folder"),
                 "a folder without a model: one-line error");
        tu_child_free(&c);
    }
    return tu_report();
}
