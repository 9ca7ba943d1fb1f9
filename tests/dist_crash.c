// dist_crash.c: crash safety of the HDF5 checkpoints. 20 trials kill a training process with SIGKILL at random
// moments, half of them while a checkpoint is being written (DRTUNE_TEST_CKPT_DELAY_MS slows the writes), and 4
// more kill one rank of a 2-rank mpirun job; each following `--resume auto` must resume from a valid checkpoint with
// at most one checkpoint interval lost, and the finished run must equal an uninterrupted one. Then damaged files: a
// flipped byte in tensor data and in the superblock, a truncated file and an unfinished write are reported and
// skipped (resume falls back to the previous checkpoint); with no valid checkpoint left, resume is a user error.
#include <dirent.h>

#include "dist_harness.h"

#define ITERS 24
#define EVERY 2
#define KILLS 20
#define RANK_KILLS 4

static unsigned g_seed = 12345;
static double uniform(double lo, double hi) { return lo + (hi - lo) * (double)rand_r(&g_seed) / RAND_MAX; }

static void train_args(char *buf, size_t n, const char *dir, const char *extra) {
    snprintf(buf, n, "%s --output.dir=%s/%s --train.iterations=%d --output.checkpoint_every=%d %s", dh_common(),
             dh_tmp, dir, ITERS, EVERY, extra);
}

// A write in progress in dir/checkpoints: the name of a ckpt-*.h5.tmp file, or "".
static void find_tmp(const char *dir, char *name, size_t n) {
    char path[400];
    snprintf(path, sizeof path, "%s/%.200s/checkpoints", dh_tmp, dir);
    name[0] = 0;
    DIR *d = opendir(path);
    for (struct dirent *e; d && (e = readdir(d));)
        if (strstr(e->d_name, ".h5.tmp")) snprintf(name, n, "%s/%.200s", path, e->d_name);
    if (d) closedir(d);
}

// Waits until the run's log says where it starts; returns the iteration resumed from (0: from the beginning),
// -1 when the process ended or the log shows an error first.
static int resumed_at(pid_t pid, const char *log) {
    double t0 = dh_now();
    while (dh_now() - t0 < 60) {
        char *s = dh_read(log), *at = strstr(s, "resumed from ");
        int it = -2;
        if (at && (at = strstr(at, ": iteration "))) it = atoi(at + 12);
        else if (strstr(s, "no checkpoint in ") || strstr(s, "memory plan")) it = 0;
        if (strstr(s, "drtune: error") || strstr(s, "drtune: fatal")) it = -1;
        free(s);
        if (it >= -1) return it;
        if (waitpid(pid, NULL, WNOHANG) == pid) return -1;
        dh_sleep(0.02);
    }
    return -1;
}

// The newest process named drtune whose parent is mpirun: one rank of the job.
static pid_t rank_of(pid_t mpirun) {
    pid_t best = 0;
    DIR *d = opendir("/proc");
    for (struct dirent *e; d && (e = readdir(d));) {
        char path[300], buf[512];
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        char *close = strrchr(buf, ')');
        int ppid = 0;
        if (close && sscanf(close + 2, "%*c %d", &ppid) == 1 && ppid == mpirun && strstr(buf, "(drtune)")) {
            pid_t pid = (pid_t)atoi(e->d_name);
            if (pid > best) best = pid;
        }
    }
    if (d) closedir(d);
    return best;
}

typedef struct {
    int kills, in_write, rank_kills, worst_loss, finished;
    char partial[512]; // a copy of a file whose write was cut short
} Trials;

// One trial on dir: start (ranks 0: one process), check where it resumed against the previous kill, then kill it
// (in_write: once a checkpoint write is under way). Returns 0 when the run finished before the kill.
static int trial(Trials *tr, const char *dir, int ranks, int in_write, int *done_before) {
    char args[4096], log[512], metrics[512], tmp[1024];
    train_args(args, sizeof args, dir, "--output.keep=2 --resume auto");
    snprintf(log, sizeof log, "%s/%s-%d.log", dh_tmp, dir, tr->kills + tr->rank_kills + tr->finished);
    snprintf(metrics, sizeof metrics, "%s/%s/metrics.jsonl", dh_tmp, dir);
    pid_t pid = dh_spawn(ranks, "DRTUNE_TEST_CKPT_DELAY_MS=1", args, log);
    int c = resumed_at(pid, log);
    int lost = *done_before - c;
    dh_check(c >= 0 && lost >= 0 && lost <= EVERY,
             "%s: resumed at iteration %d after a kill at %d done (lost %d <= %d)", dir, c, *done_before, lost, EVERY);
    if (lost > tr->worst_loss) tr->worst_loss = lost;
    int reaped = 0, status = 0; // the run ended (and was reaped here) while waiting for a write
    if (in_write) {
        double t0 = dh_now();
        for (find_tmp(dir, tmp, sizeof tmp); !tmp[0] && dh_now() - t0 < 20; find_tmp(dir, tmp, sizeof tmp)) {
            if (waitpid(pid, &status, WNOHANG) == pid) {
                reaped = 1;
                break;
            }
            dh_sleep(0.005);
        }
        dh_sleep(uniform(0, 0.3));
    } else { // a random moment of training: outside checkpoint writes
        dh_sleep(uniform(0.1, 1.0));
        double t0 = dh_now();
        for (find_tmp(dir, tmp, sizeof tmp); tmp[0] && dh_now() - t0 < 20; find_tmp(dir, tmp, sizeof tmp))
            dh_sleep(0.005);
        dh_sleep(uniform(0, 0.1));
    }
    pid_t victim = reaped ? 0 : ranks ? rank_of(pid) : pid;
    if (victim <= 0 || kill(victim, SIGKILL) != 0) { // finished already
        int rc = !reaped ? dh_wait(pid, 120) : WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
        dh_check(rc == 0, "%s: the run finished (exit %d)", dir, rc);
        tr->finished++;
        *done_before = 0;
        return 0;
    }
    int rc = dh_wait(pid, 120);
    find_tmp(dir, tmp, sizeof tmp);
    if (ranks) tr->rank_kills++;
    else tr->kills++, tr->in_write += tmp[0] != 0;
    if (tmp[0] && !tr->partial[0]) {
        snprintf(tr->partial, sizeof tr->partial, "%s/partial.h5", dh_tmp);
        char cmd[1200];
        snprintf(cmd, sizeof cmd, "cp '%s' '%s'", tmp, tr->partial);
        if (system(cmd) != 0) tr->partial[0] = 0;
    }
    *done_before = dh_lines(metrics);
    printf("     killed %s after %d iterations%s (exit %d)\n", ranks ? "one rank" : "the process", *done_before,
           tmp[0] ? " during a checkpoint write" : "", rc);
    return 1;
}

// The last run of a timeline: resume and finish; its final checkpoint must match the uninterrupted run.
static void finish(Trials *tr, const char *dir, int done_before, int exact) {
    char args[4096], log[512], got[512], ref[512];
    train_args(args, sizeof args, dir, "--output.keep=2 --resume auto");
    snprintf(log, sizeof log, "%s/%s-final.log", dh_tmp, dir);
    pid_t pid = dh_spawn(0, "", args, log);
    int c = resumed_at(pid, log);
    dh_check(c >= 0 && done_before - c <= EVERY, "%s: resumed at %d after %d done", dir, c, done_before);
    dh_check(dh_wait(pid, 120) == 0, "%s: finished", dir);
    tr->finished++;
    snprintf(got, sizeof got, "%s/%s/checkpoints/ckpt-%06d.h5", dh_tmp, dir, ITERS);
    snprintf(ref, sizeof ref, "%s/ref/checkpoints/ckpt-%06d.h5", dh_tmp, ITERS);
    if (exact) {
        int same = dh_same_bits(ref, got, "params") && dh_same_bits(ref, got, "adam_m");
        dh_check(same && dh_same_bits(ref, got, "adam_v"), "%s: final state bit for bit equal to the uninterrupted run",
                 dir);
    } else {
        double d = dh_rel_diff(ref, got, "params");
        dh_check(d <= 1e-5, "%s: final parameters within %.3g of the uninterrupted run (limit 1e-5)", dir, d);
    }
}

static void crash_trials(Trials *tr) {
    printf("--- SIGKILL at random moments (one process), %d trials\n", KILLS);
    int done = 0;
    while (tr->kills < KILLS)
        if (!trial(tr, "crash", 0, tr->kills % 2, &done)) { // a finished timeline: start another one
            char cmd[600];
            snprintf(cmd, sizeof cmd, "rm -rf '%s/crash'", dh_tmp);
            if (system(cmd) != 0) break;
        }
    finish(tr, "crash", done, 1);
    printf("--- SIGKILL of one rank of a 2-rank job, %d trials\n", RANK_KILLS);
    done = 0;
    while (tr->rank_kills < RANK_KILLS && trial(tr, "crash2", 2, 0, &done)) {}
    finish(tr, "crash2", done, 0);
    dh_check(tr->kills >= KILLS && tr->in_write >= KILLS / 4 && tr->rank_kills >= RANK_KILLS,
             "%d kills of a process (%d during a checkpoint write, %d during training) and %d of one rank; at most "
             "%d iterations lost (interval %d)",
             tr->kills, tr->in_write, tr->kills - tr->in_write, tr->rank_kills, tr->worst_loss, EVERY);
}

// ---------------------------------------------------------------------------------------------------------------
// damaged files

static void copy(const char *from, const char *to) {
    char cmd[2100];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", from, to);
    if (system(cmd) != 0) printf("note: %s failed\n", cmd);
}

static void flip_byte(const char *path, long offset) {
    FILE *f = fopen(path, "r+b");
    if (!f) return;
    fseek(f, offset, SEEK_SET);
    int c = fgetc(f);
    fseek(f, offset, SEEK_SET);
    fputc(c ^ 0x10, f);
    fclose(f);
}

// File offset of the middle of the first data chunk of dataset `name`.
static long chunk_middle(const char *path, const char *name) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT), ds = H5Dopen2(f, name, H5P_DEFAULT), sp = H5Dget_space(ds);
    haddr_t addr = 0;
    hsize_t size = 0, off[H5S_MAX_RANK];
    unsigned mask;
    H5Dget_chunk_info(ds, sp, 0, off, &mask, &addr, &size);
    H5Sclose(sp);
    H5Dclose(ds);
    H5Fclose(f);
    return (long)(addr + size / 2);
}

// A folder holding the reference's last three checkpoints, the newest damaged by `damage`; resume must skip the
// newest with a report naming `reason`, continue from the one before, and finish equal to the reference.
static void damaged(const char *dir, const char *what, const char *reason, void (*damage)(const char *path)) {
    char folder[512], from[1024], to[1024], args[4096], log[512];
    snprintf(folder, sizeof folder, "%s/%s/checkpoints", dh_tmp, dir);
    snprintf(to, sizeof to, "mkdir -p '%s'", folder);
    if (system(to) != 0) return;
    for (int it = ITERS - 2 * EVERY; it <= ITERS; it += EVERY) {
        snprintf(from, sizeof from, "%s/ref/checkpoints/ckpt-%06d.h5", dh_tmp, it);
        snprintf(to, sizeof to, "%s/ckpt-%06d.h5", folder, it);
        copy(from, to);
    }
    damage(to);
    train_args(args, sizeof args, dir, "--resume auto");
    snprintf(log, sizeof log, "%s/%s.log", dh_tmp, dir);
    int rc = dh_run(0, "", args, log);
    char expect[1200];
    snprintf(expect, sizeof expect, "skipping checkpoint '%s'", to);
    dh_check(rc == 0 && dh_contains(log, expect) && dh_contains(log, reason), "%s: reported (\"%s\") and skipped",
             what, reason);
    snprintf(expect, sizeof expect, "ckpt-%06d.h5: iteration %d", ITERS - EVERY, ITERS - EVERY);
    dh_check(dh_contains(log, expect), "%s: resumed from the previous checkpoint (iteration %d)", what, ITERS - EVERY);
    snprintf(from, sizeof from, "%s/ref/checkpoints/ckpt-%06d.h5", dh_tmp, ITERS);
    dh_check(dh_same_bits(from, to, "params") && dh_same_bits(from, to, "adam_v"),
             "%s: the redone iterations reproduce the reference bit for bit", what);
}

static void damage_data(const char *path) {
    flip_byte(path, chunk_middle(path, "/params/mid_block.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight"));
}
static void damage_superblock(const char *path) { flip_byte(path, 20); }
static void damage_truncate(const char *path) {
    struct stat st;
    if (stat(path, &st) == 0 && truncate(path, st.st_size * 3 / 5) != 0) printf("note: truncate failed\n");
}

static void damaged_files(const Trials *tr) {
    printf("--- damaged checkpoints\n");
    damaged("flip-data", "a flipped byte in tensor data", "Fletcher32", damage_data);
    damaged("flip-meta", "a flipped byte in the superblock", "checksum", damage_superblock);
    damaged("truncated", "a truncated file", "truncated file", damage_truncate);
    char args[4096], log[512], path[512], cmd[2400];
    if (tr->partial[0]) { // a file whose write was killed, published by hand under a checkpoint name
        snprintf(path, sizeof path, "%s/unfinished/checkpoints", dh_tmp);
        snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp '%s/ref/checkpoints/ckpt-%06d.h5' '%s/' && cp '%s' "
                 "'%s/ckpt-%06d.h5'", path, dh_tmp, ITERS, path, tr->partial, path, ITERS + 2);
        if (system(cmd) == 0) {
            train_args(args, sizeof args, "unfinished", "--resume auto");
            snprintf(log, sizeof log, "%s/unfinished.log", dh_tmp);
            int rc = dh_run(0, "", args, log);
            char expect[64];
            snprintf(expect, sizeof expect, "ckpt-%06d.h5: iteration %d", ITERS, ITERS);
            dh_check(rc == 0 && dh_contains(log, "skipping checkpoint") && dh_contains(log, expect),
                     "a file cut short by a kill during its write: reported and skipped");
        }
    }
    // nothing valid left: a user error, not a silent fresh start
    snprintf(path, sizeof path, "%s/flip-data/checkpoints", dh_tmp);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/novalid/checkpoints' && cp '%s/ref/checkpoints/ckpt-%06d.h5' "
             "'%s/novalid/checkpoints/'", dh_tmp, dh_tmp, ITERS, dh_tmp);
    if (system(cmd) != 0) return;
    snprintf(path, sizeof path, "%s/novalid/checkpoints/ckpt-%06d.h5", dh_tmp, ITERS);
    damage_truncate(path);
    train_args(args, sizeof args, "novalid", "--resume auto");
    snprintf(log, sizeof log, "%s/novalid.log", dh_tmp);
    int rc = dh_run(0, "", args, log);
    dh_check(rc == 2 && dh_contains(log, "none of the 1 checkpoint(s)"), "no valid checkpoint: exit 2 (exit %d)", rc);
    train_args(args, sizeof args, "novalid", "");
    char extra[5000];
    snprintf(extra, sizeof extra, "%s --resume %s", args, path);
    rc = dh_run(0, "", extra, log);
    dh_check(rc == 2 && dh_contains(log, "is not a valid checkpoint: ") && dh_contains(log, "truncated"),
             "--resume FILE of a truncated file: exit 2 with the reason (exit %d)", rc);
}

int main(void) {
    dh_init("dist_crash");
    printf("--- the uninterrupted run\n");
    char args[4096], log[512];
    train_args(args, sizeof args, "ref", "--output.keep=0");
    snprintf(log, sizeof log, "%s/ref.log", dh_tmp);
    dh_check(dh_run(0, "", args, log) == 0, "%d iterations, a checkpoint every %d", ITERS, EVERY);
    Trials tr = {0};
    crash_trials(&tr);
    damaged_files(&tr);
    return dh_finish();
}
