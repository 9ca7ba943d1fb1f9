// cluster_slurm.c: the Slurm batch scripts against a real Slurm (a private single-node controller and node daemon,
// tests/slurm_harness.sh): slurm/tiny.sh completes with one task and with two (MPI through srun); a job stopped
// with SIGUSR1 mid-run checkpoints, requeues itself, resumes and ends with the same weights, bit for bit, as an
// uninterrupted job; a job that fails is not requeued; `launch/retrain.sh --submit` runs a round as a batch job.
// Skips (77) with the reason where Slurm cannot start.
#include "cluster_harness.h"

// The small job, short: 12 iterations, one sample image, no intermediate checkpoint (the stop writes one).
#define TINY "--train.iterations=12 --train.warmup=0 --log.sample_seeds=0 --output.checkpoint_every=100"

int main(void) {
    ch_bin = getenv("DRTUNE_BIN");
    if (!ch_bin || !*ch_bin) {
        printf("DRTUNE_BIN is not set (ctest sets it): skipped\n");
        return 77;
    }
    const char *tmp = tu_tmpdir("cluster_slurm");
    double t_start = dt_now();
    if (!ch_slurm_start()) return 77;
    char env[8192], args[8192], state[128], a[4200], b[4200];

    // An uninterrupted job (the reference) and one that is stopped mid-run, side by side (one CPU each).
    snprintf(env, sizeof env, "DRTUNE_RUN_DIR='%s/run_ref'", tmp);
    snprintf(args, sizeof args, "--job-name=tiny-ref --output='%s/ref.out' slurm/tiny.sh " TINY, tmp);
    long ref = ch_sbatch(env, args);
    snprintf(env, sizeof env, "DRTUNE_RUN_DIR='%s/run_stop'", tmp);
    snprintf(args, sizeof args, "--job-name=tiny-stop --output='%s/stop.out' slurm/tiny.sh " TINY, tmp);
    long stop = ch_sbatch(env, args);
    tu_check(ref && stop, "sbatch slurm/tiny.sh: jobs %ld and %ld submitted", ref, stop);

    snprintf(a, sizeof a, "%s/run_stop/metrics.jsonl", tmp);
    int mid = ch_wait_lines(a, 2, 180);
    int before_end = ch_lines(a) < 12;
    // to the batch shell only: slurm/job.sh passes it on to the ranks
    ch_sh(NULL, "scancel --signal=USR1 --batch %ld", stop);
    tu_check(mid && before_end, "SIGUSR1 sent to job %ld mid-run (after iteration %d of 12)", stop, ch_lines(a));

    int restarts = ch_job_wait(ref, 240, state, sizeof state);
    snprintf(a, sizeof a, "%s/run_ref/export/pytorch_lora_weights.safetensors", tmp);
    snprintf(b, sizeof b, "%s/run_ref/metrics.jsonl", tmp);
    tu_check(!strcmp(state, "COMPLETED") && restarts == 0 && ch_exists(a) && ch_lines(b) == 12,
             "one task: the job completes (%s, %d restarts) with 12 metrics lines and the exported LoRA", state,
             restarts);
    snprintf(a, sizeof a, "%s/ref.out", tmp);
    tu_check(ch_contains(a, "drtune-job: done: 12 iterations"), "its log ends with the job script's done line");

    restarts = ch_job_wait(stop, 300, state, sizeof state);
    snprintf(a, sizeof a, "%s/stop.out", tmp);
    tu_check(!strcmp(state, "COMPLETED") && restarts == 1, "the stopped job was requeued once and completed (%s, %d)",
             state, restarts);
    tu_check(ch_contains(a, "SIGUSR1 received") && ch_contains(a, "requeueing (requeue 1 of") &&
                 ch_contains(a, "resumed from") && ch_contains(a, "drtune-job: done: 12 iterations"),
             "its log: checkpoint on SIGUSR1, requeue, resume, done");
    const char *files[2] = {"export/pytorch_lora_weights.safetensors",
                            "export/unet/diffusion_pytorch_model.safetensors"};
    for (int i = 0; i < 2; i++) {
        snprintf(a, sizeof a, "%s/run_ref/%s", tmp, files[i]);
        snprintf(b, sizeof b, "%s/run_stop/%s", tmp, files[i]);
        tu_check(ch_same_file(a, b), "stopped, requeued and resumed = uninterrupted, bit for bit: %s", files[i]);
    }

    // Two tasks: MPI through srun (PMIx). The node may have fewer cores than ranks and threads: ranks that wait
    // yield the core instead of spinning.
    snprintf(env, sizeof env, "DRTUNE_RUN_DIR='%s/run_two' OMPI_MCA_mpi_yield_when_idle=1", tmp);
    snprintf(args, sizeof args,
             "--ntasks=2 --job-name=tiny-two --output='%s/two.out' slurm/tiny.sh --train.iterations=3 "
             "--train.warmup=0 --log.sample_seeds=0",
             tmp);
    long two = ch_sbatch(env, args);
    restarts = ch_job_wait(two, 240, state, sizeof state);
    snprintf(a, sizeof a, "%s/two.out", tmp);
    snprintf(b, sizeof b, "%s/run_two/export/pytorch_lora_weights.safetensors", tmp);
    tu_check(two && !strcmp(state, "COMPLETED") && ch_contains(a, "ranks: 2 (") && ch_exists(b),
             "two tasks: srun starts 2 MPI ranks, the job completes (%s) and exports", state);

    // A real error: the job fails once, is not requeued. Submitted the way docs/FDXL.md shows for settings from
    // the environment: DRTUNE_NODES makes the script submit itself; Slurm's SBATCH_* variables do the rest.
    char *sub = NULL;
    int rc = ch_sh(&sub,
                   "env DRTUNE_BIN='%s' DRTUNE_NODES=1 DRTUNE_RUN_DIR='%s/run_fail' SBATCH_JOB_NAME=tiny-fail "
                   "SBATCH_OUTPUT='%s/fail.out' slurm/tiny.sh --data.prompts='%s/missing.txt'",
                   ch_bin, tmp, tmp, tmp);
    char *at = sub ? strstr(sub, "Submitted batch job ") : NULL;
    long bad = at ? strtol(at + strlen("Submitted batch job "), NULL, 10) : 0;
    tu_check(rc == 0 && bad > 0, "DRTUNE_NODES=1 slurm/tiny.sh submits itself (exit %d): %s", rc, sub ? sub : "");
    free(sub);
    restarts = ch_job_wait(bad, 120, state, sizeof state);
    snprintf(a, sizeof a, "%s/fail.out", tmp);
    tu_check(bad && !strcmp(state, "FAILED") && restarts == 0 && ch_contains(a, "not requeued"),
             "a failing job ends FAILED without a requeue (%s, %d restarts)", state, restarts);

    // Retraining submitted to Slurm: one round as a batch job (--dependency=singleton).
    char *out = NULL;
    rc = ch_sh(&out,
               "env OMP_NUM_THREADS=1 DRTUNE_BIN='%s' launch/retrain.sh --submit configs/default.ini "
               "--reward.names=brightness --reward.weights=1 --train.iterations=4 --train.warmup=0 "
               "--train.lr=1e-2 --train.batch=2 --sampler.steps=10 --log.sample_seeds=0 --retrain.seeds=0,1 "
               "--output.dir='%s/rt'",
               ch_bin, tmp);
    char *id = out ? strstr(out, "submitted round job ") : NULL;
    long job = id ? strtol(id + strlen("submitted round job "), NULL, 10) : 0;
    tu_check(rc == 0 && job > 0, "launch/retrain.sh --submit: exit %d, %s", rc, out ? out : "");
    free(out);
    if (job) {
        ch_job_wait(job, 240, state, sizeof state);
        snprintf(a, sizeof a, "%s/rt/retrain.log", tmp);
        snprintf(b, sizeof b, "%s/rt/current/model/unet/diffusion_pytorch_model.safetensors", tmp);
        tu_check(!strcmp(state, "COMPLETED") && ch_contains(a, "\"decision\":\"promoted\"") && ch_exists(b),
                 "the submitted round ran in the allocation (%s), was promoted, current holds its model", state);
    }
    ch_slurm_stop();
    printf("cluster_slurm: %.1f s\n", dt_now() - t_start);
    return tu_report();
}
