// dist_train.c: distributed training as users launch it (mpirun, oversubscribed on one machine), for LoRA and for
// full fine-tuning with sharded optimizer state: 3 iterations on 1 rank x batch 4, 2 ranks x 2 and 4 ranks x 1
// agree within 1e-5 (relative, in norm) in parameters and Adam moments; the gradient reduction started during the
// backward in small buckets equals the one after it bit for bit on 2 ranks; 6 iterations straight equal 3, a
// checkpoint and 3 more in a new process bit for bit on the same rank count and within 1e-5 on another. Also: one
// rank's fatal error stops the job promptly with the rank named, SIGUSR1 stops it cleanly with a checkpoint, and a
// batch the ranks cannot share is a user error.
#include "dist_harness.h"

#define TOL 1e-5
#define BUCKET "0.01" // MiB: the small model's gradients are 0.1-4 MiB

static const char *ckpt(char *buf, size_t n, const char *run, int it) {
    snprintf(buf, n, "%s/%s/checkpoints/ckpt-%06d.h5", dh_tmp, run, it);
    return buf;
}

// One run: `ranks` (0: without mpirun), output folder dh_tmp/run, extra arguments; checks the exit code is 0.
static int train(int ranks, const char *run, const char *extra) {
    char args[4096], log[512];
    snprintf(args, sizeof args, "%s --output.dir=%s/%s %s", dh_common(), dh_tmp, run, extra);
    snprintf(log, sizeof log, "%s/%s.log", dh_tmp, run);
    double t0 = dh_now();
    int rc = dh_run(ranks, "", args, log);
    dh_check(rc == 0, "%s: %d rank%s, exit %d (%.1f s)", run, ranks ? ranks : 1, ranks > 1 ? "s" : "", rc,
             dh_now() - t0);
    if (rc != 0) {
        char *text = dh_read(log);
        printf("%s\n", text);
        free(text);
    }
    return rc == 0;
}

static void compare(const char *what, const char *a, const char *b, double tol) {
    static const char *groups[3] = {"params", "adam_m", "adam_v"};
    for (int i = 0; i < 3; i++) {
        double d = dh_rel_diff(a, b, groups[i]);
        dh_check(d <= tol, "%s: /%s relative difference %.3g (limit %g)", what, groups[i], d, tol);
    }
}

static void same_bits(const char *what, const char *a, const char *b, const char *metrics_a, const char *metrics_b) {
    static const char *groups[3] = {"params", "adam_m", "adam_v"};
    for (int i = 0; i < 3; i++) dh_check(dh_same_bits(a, b, groups[i]), "%s: /%s bit for bit", what, groups[i]);
    static const char *keys[3] = {"loss", "grad_norm", "reward_mean"};
    int same = 1;
    for (int row = 0; row < 6; row++)
        for (int k = 0; k < 3; k++) {
            double x = dh_metric(metrics_a, row, keys[k]), y = dh_metric(metrics_b, row, keys[k]);
            same &= x == y; // NaN (a missing row) fails
        }
    dh_check(same, "%s: metrics.jsonl loss, grad_norm and reward_mean of iterations 1-6 identical", what);
    dh_check(dh_attr(a, "applied_steps") == 6 && dh_attr(b, "applied_steps") == 6, "%s: 6 optimizer steps each",
             what);
}

// The gradient reduction overlapped with the backward (small buckets, so that the small model's gradients make
// many) gives the same bits as one reduction after the backward on 2 ranks, and really starts during the backward.
static void overlap(const char *name, const char *flags) {
    char run[128], extra[1024], a[512], b[512], ma[512], mb[512];
    snprintf(run, sizeof run, "%s-r2-after", name);
    snprintf(extra, sizeof extra, "%s --train.iterations=3 --train.reduce_bucket_mb=0", flags);
    if (!train(2, run, extra)) return;
    ckpt(a, sizeof a, run, 3);
    snprintf(ma, sizeof ma, "%s/%s/metrics.jsonl", dh_tmp, run);
    snprintf(run, sizeof run, "%s-r2", name);
    ckpt(b, sizeof b, run, 3);
    snprintf(mb, sizeof mb, "%s/%s/metrics.jsonl", dh_tmp, run);
    static const char *groups[3] = {"params", "adam_m", "adam_v"};
    for (int i = 0; i < 3; i++)
        dh_check(dh_same_bits(a, b, groups[i]), "reduction during the backward vs after it, 2 ranks: /%s bit for bit",
                 groups[i]);
    double lo = 1, hi = 0;
    for (int row = 0; row < 3; row++) {
        double x = dh_metric(mb, row, "reduce_overlap"), y = dh_metric(ma, row, "reduce_overlap");
        lo = x < lo ? x : lo; // NaN (a missing row) fails below
        hi = y > hi ? y : hi;
        if (x != x || y != y) lo = -1;
    }
    dh_check(lo > 0.5 && hi == 0, "reduce_overlap: at least %.2f of the gradient started during the backward with "
             "%s buckets, %.2f with reduce_bucket_mb = 0", lo, BUCKET, hi);
}

static void mode(const char *name, const char *mode_flags) {
    printf("--- %s\n", name);
    char run[128], extra[2048], a[512], b[512], c[512], ma[512], mb[512], flags[512];
    snprintf(flags, sizeof flags, "%s --train.reduce_bucket_mb=%s", mode_flags, BUCKET);
    // rank invariance: 3 iterations on 1, 2 and 4 ranks (the 2-rank run also is the first half of the resume tests)
    const int ranks[3] = {0, 2, 4};
    for (int i = 0; i < 3; i++) {
        snprintf(run, sizeof run, "%s-r%d", name, ranks[i] ? ranks[i] : 1);
        snprintf(extra, sizeof extra, "%s --train.iterations=3", flags);
        train(ranks[i], run, extra);
    }
    snprintf(run, sizeof run, "%s-r1", name);
    ckpt(a, sizeof a, run, 3);
    snprintf(run, sizeof run, "%s-r2", name);
    compare("1 rank x 4 vs 2 ranks x 2", a, ckpt(b, sizeof b, run, 3), TOL);
    snprintf(run, sizeof run, "%s-r4", name);
    compare("1 rank x 4 vs 4 ranks x 1", a, ckpt(b, sizeof b, run, 3), TOL);
    overlap(name, mode_flags);

    // exact resume: 6 straight on 2 ranks vs 3 (the r2 run), checkpoint, a new job resuming, 3 more
    char half[512];
    snprintf(run, sizeof run, "%s-r2", name);
    ckpt(half, sizeof half, run, 3);
    snprintf(run, sizeof run, "%s-straight", name);
    snprintf(extra, sizeof extra, "%s --train.iterations=6", flags);
    train(2, run, extra);
    ckpt(a, sizeof a, run, 6);
    snprintf(ma, sizeof ma, "%s/%s/metrics.jsonl", dh_tmp, run);
    const int again[3] = {2, 0, 4};
    for (int i = 0; i < 3; i++) {
        if (again[i] == 4 && strstr(flags, "lora")) continue; // LoRA: 2 -> 1 suffices (replicated state)
        snprintf(run, sizeof run, "%s-resume-r%d", name, again[i] ? again[i] : 1);
        snprintf(extra, sizeof extra, "%s --train.iterations=6 --resume %s", flags, half);
        if (!train(again[i], run, extra)) continue;
        ckpt(b, sizeof b, run, 6);
        snprintf(mb, sizeof mb, "%s/%s/metrics.jsonl", dh_tmp, run);
        snprintf(c, sizeof c, "%s/%s.log", dh_tmp, run);
        dh_check(dh_contains(c, "resumed from") && dh_contains(c, "iteration 3 (written by 2 ranks)"),
                 "%s: the run says it resumed at iteration 3", run);
        if (again[i] == 2) {
            same_bits("6 straight vs 3 + resume + 3 on 2 ranks", a, b, ma, mb);
        } else {
            snprintf(c, sizeof c, "6 straight on 2 ranks vs 3 on 2 + resume + 3 on %d", again[i] ? again[i] : 1);
            compare(c, a, b, TOL);
        }
    }
}

// One rank fails at iteration 2 of 40: the job ends at once (not at a timeout) and names the rank.
static void fatal_stops_job(void) {
    printf("--- a fatal error on one rank\n");
    char args[2048], log[512];
    snprintf(args, sizeof args, "%s --output.dir=%s/fault --train.iterations=40", dh_common(), dh_tmp);
    snprintf(log, sizeof log, "%s/fault.log", dh_tmp);
    double t0 = dh_now();
    int rc = dh_wait(dh_spawn(2, "DRTUNE_TEST_FAULT=1:2", args, log), 60);
    double dt = dh_now() - t0;
    dh_check(rc != 0 && rc != -1000, "the job failed (exit %d) in %.1f s instead of hanging", rc, dt);
    dh_check(dh_contains(log, "[rank 1] drtune: fatal at"), "the failure is reported with its rank ([rank 1])");
    dh_check(dh_lines(log) < 400, "the report is short");
}

// SIGUSR1 to mpirun (forwarded to every rank): a checkpoint at the next iteration boundary, exit 0, and the run
// continues from it with --resume auto.
static void signal_stops_cleanly(void) {
    printf("--- SIGUSR1\n");
    char args[2048], log[512], metrics[512], path[512];
    snprintf(args, sizeof args, "%s --output.dir=%s/signal --train.iterations=300 --output.checkpoint_every=0",
             dh_common(), dh_tmp);
    snprintf(log, sizeof log, "%s/signal.log", dh_tmp);
    snprintf(metrics, sizeof metrics, "%s/signal/metrics.jsonl", dh_tmp);
    pid_t pid = dh_spawn(2, "", args, log);
    double t0 = dh_now();
    while (dh_lines(metrics) < 2 && dh_now() - t0 < 60) dh_sleep(0.05);
    kill(pid, SIGUSR1);
    int rc = dh_wait(pid, 60);
    int rows = dh_lines(metrics);
    snprintf(path, sizeof path, "%s/signal/checkpoints/ckpt-%06d.h5", dh_tmp, rows);
    dh_check(rc == 0, "exit 0 after SIGUSR1 (exit %d)", rc);
    dh_check(dh_contains(log, "SIGUSR1 received: stopped after iteration"), "the stop is reported");
    dh_check(rows >= 2 && rows < 300 && dh_attr(path, "iteration") == rows,
             "checkpoint of the last finished iteration (%d) written", rows);
    snprintf(args, sizeof args, "%s --output.dir=%s/signal --train.iterations=%d --resume auto", dh_common(), dh_tmp,
             rows + 2);
    rc = dh_run(2, "", args, log);
    dh_check(rc == 0 && dh_lines(metrics) == rows + 2, "--resume auto continues to iteration %d (exit %d)", rows + 2,
             rc);
}

static void batch_not_divisible(void) {
    printf("--- a batch the ranks cannot share\n");
    char args[2048], log[512];
    snprintf(args, sizeof args, "%s --output.dir=%s/odd --train.iterations=1", dh_common(), dh_tmp);
    snprintf(log, sizeof log, "%s/odd.log", dh_tmp);
    int rc = dh_wait(dh_spawn(3, "", args, log), 60);
    dh_check(rc == 2 && dh_contains(log, "train.batch = 4 is not divisible by the 3 ranks"),
             "batch 4 on 3 ranks: exit 2 with the reason (exit %d)", rc);
}

int main(void) {
    dh_init("dist_train");
    mode("lora", "--train.trainable=lora");
    mode("full", "--train.trainable=full");
    fatal_stops_job();
    signal_stops_cleanly();
    batch_not_divisible();
    return dh_finish();
}
