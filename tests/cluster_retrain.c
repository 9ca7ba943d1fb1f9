// cluster_retrain.c: launch/retrain.sh, the periodic retraining a crontab line runs, on the small model (brightness,
// a reward a few updates raise reliably, so every honest round improves it): two concurrent calls (one trains, one
// exits 0 with a note); a round killed with SIGKILL mid-training is continued by the next call; three rounds in a
// row are promoted, `current` follows them and only retrain.keep = 2 promoted rounds remain; a round whose gate
// cannot pass exits 3 and leaves `current` alone; every decision is a JSON line in retrain.log; user errors exit 2.
#include <cjson/cJSON.h>

#include "cluster_harness.h"

#define ROUND                                                                                                      \
    "configs/default.ini --reward.names=brightness --reward.weights=1 --train.iterations=6 --train.warmup=0 "      \
    "--train.lr=1e-2 --train.batch=2 --sampler.steps=10 --log.sample_seeds=0 --log.progress=off "                  \
    "--output.checkpoint_every=1 --retrain.seeds=0,1,2 --retrain.keep=2"

static char g_root[4200];

// launch/retrain.sh ROUND --output.dir=ROOT EXTRA, in the background (its own process group), output in log.
static pid_t retrain_spawn(const char *extra, const char *log) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "exec env OMP_NUM_THREADS=1 DRTUNE_BIN='%s' launch/retrain.sh " ROUND " --output.dir='%s' %s", ch_bin,
             g_root, extra);
    return ch_spawn(cmd, log);
}

static int retrain_run(const char *extra, const char *log) { return ch_wait(retrain_spawn(extra, log), 300); }

// Where ROOT/current points ("" when absent).
static void current_target(char *buf, size_t n) {
    char path[4300];
    snprintf(path, sizeof path, "%s/current", g_root);
    ssize_t len = readlink(path, buf, n - 1);
    buf[len > 0 ? len : 0] = 0;
}

// The decisions in retrain.log, as "round:decision" words ("1:promoted 2:promoted ..."); every line must be a JSON
// object with a round, a decision and a time, and promoted or rejected lines must carry the gate's numbers.
static int log_decisions(char *buf, size_t n) {
    char path[4300];
    snprintf(path, sizeof path, "%s/retrain.log", g_root);
    char *text = tu_read_all(path, NULL), *save = NULL;
    int valid = text != NULL;
    size_t used = 0;
    buf[0] = 0;
    for (char *line = text ? strtok_r(text, "\n", &save) : NULL; line; line = strtok_r(NULL, "\n", &save)) {
        cJSON *o = cJSON_Parse(line);
        const cJSON *round = cJSON_GetObjectItem(o, "round"), *dec = cJSON_GetObjectItem(o, "decision");
        valid &= cJSON_IsNumber(round) && cJSON_IsString(dec) && cJSON_IsString(cJSON_GetObjectItem(o, "time"));
        if (cJSON_IsString(dec) && strcmp(dec->valuestring, "failed") != 0) {
            const cJSON *before = cJSON_GetObjectItem(o, "before"), *after = cJSON_GetObjectItem(o, "after");
            valid &= cJSON_IsNumber(cJSON_GetObjectItem(before, "brightness")) &&
                     cJSON_IsNumber(cJSON_GetObjectItem(after, "brightness"));
        }
        if (valid && used < n)
            used += (size_t)snprintf(buf + used, n - used, "%s%d:%s", used ? " " : "", round->valueint,
                                     dec->valuestring);
        cJSON_Delete(o);
    }
    free(text);
    return valid;
}

int main(void) {
    ch_bin = getenv("DRTUNE_BIN");
    if (!ch_bin || !*ch_bin) {
        printf("DRTUNE_BIN is not set (ctest sets it): skipped\n");
        return 77;
    }
    if (ch_sh(NULL, "command -v jq && command -v flock") != 0) {
        printf("skip: launch/retrain.sh needs jq and flock (Debian packages jq, util-linux: launch/deps.sh)\n");
        return 77;
    }
    const char *tmp = tu_tmpdir("cluster_retrain");
    double t_start = dt_now();
    snprintf(g_root, sizeof g_root, "%s/rt", tmp);
    char path[4300], cur[256], decisions[512], *out = NULL;

    // Two concurrent calls: the second finds the lock held and exits 0.
    pid_t first = retrain_spawn("", tu_path("round1.log"));
    snprintf(path, sizeof path, "%s/rounds/000001", g_root);
    for (double t0 = dt_now(); !ch_exists(path) && dt_now() - t0 < 60;) ch_sleep(0.05);
    int rc = ch_wait(retrain_spawn("", tu_path("second.log")), 60);
    tu_check(rc == 0 && ch_contains(tu_path("second.log"), "another round is running"),
             "a second call while a round runs: exit %d with a one-line note", rc);
    rc = ch_wait(first, 300);
    current_target(cur, sizeof cur);
    tu_check(rc == 0 && !strcmp(cur, "promoted/000001"),
             "the first call's round 1 is promoted (exit %d, current -> %s)", rc, cur);

    // Round 2 killed with SIGKILL after its second checkpoint; the next call continues it.
    pid_t victim = retrain_spawn("", tu_path("round2_killed.log"));
    snprintf(path, sizeof path, "%s/rounds/000002/metrics.jsonl", g_root);
    int mid = ch_wait_lines(path, 2, 120);
    kill(-victim, SIGKILL);
    ch_wait(victim, 30);
    snprintf(path, sizeof path, "%s/rounds/000002/decision.json", g_root);
    tu_check(mid && !ch_exists(path), "round 2 killed with SIGKILL mid-training, undecided");
    rc = retrain_run("", tu_path("round2.log"));
    current_target(cur, sizeof cur);
    tu_check(rc == 0 && ch_contains(tu_path("round2.log"), "continuing round 2") &&
                 ch_contains(tu_path("round2.log"), "resumed from") && !strcmp(cur, "promoted/000002"),
             "the next call continues round 2 from its checkpoint and promotes it (exit %d, current -> %s)", rc, cur);

    // Round 3: the third promotion in a row; keep = 2 leaves rounds 2 and 3.
    rc = retrain_run("", tu_path("round3.log"));
    current_target(cur, sizeof cur);
    snprintf(path, sizeof path, "%s/promoted/000001", g_root);
    char p2[4300], p3[4300];
    snprintf(p2, sizeof p2, "%s/promoted/000002/model/unet/diffusion_pytorch_model.safetensors", g_root);
    snprintf(p3, sizeof p3, "%s/current/model/model_index.json", g_root);
    tu_check(rc == 0 && !strcmp(cur, "promoted/000003") && !ch_exists(path) && ch_exists(p2) && ch_exists(p3),
             "three rounds promoted in a row: current -> %s, promoted/ keeps 000002 and 000003", cur);
    rc = ch_sh(&out, "'%s' info --model '%s/current/model'", ch_bin, g_root);
    tu_check(rc == 0, "the promoted model folder loads (drtune info)");
    free(out);

    // Round 4: a gate nothing can pass.
    rc = retrain_run("--retrain.min_gain=1000000", tu_path("round4.log"));
    current_target(cur, sizeof cur);
    tu_check(rc == 3 && !strcmp(cur, "promoted/000003") && ch_contains(tu_path("round4.log"), "rejected"),
             "a round the gate rejects: exit %d, current unchanged (-> %s)", rc, cur);

    tu_check(log_decisions(decisions, sizeof decisions) &&
                 !strcmp(decisions, "1:promoted 2:promoted 3:promoted 4:rejected"),
             "retrain.log: one JSON line per decision with the gate's numbers (%s)", decisions);

    // User errors: exit 2.
    rc = retrain_run("--retrain.bogus=1", tu_path("bogus.log"));
    tu_check(rc == 2 && ch_contains(tu_path("bogus.log"), "drtune: error:"), "an unknown key: exit %d", rc);
    snprintf(path, sizeof path, "--retrain.prompts='%s/none.txt'", tmp);
    rc = retrain_run(path, tu_path("noprompts.log"));
    tu_check(rc == 2 && ch_contains(tu_path("noprompts.log"), "retrain.prompts"), "a missing held-out prompt file: "
             "exit %d", rc);
    printf("cluster_retrain: %.1f s\n", dt_now() - t_start);
    return tu_report();
}
