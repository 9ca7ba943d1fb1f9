// cmd_bench_cpu.c: `drtune bench cpu`, drtune's CPU speed on the work users run, row by row (a DRTune iteration
// of the default job, sampling the small model, the SD 1.5 UNet and a reduced-width one), and, given a PyTorch
// environment (--torch PYTHON), the same work in PyTorch + diffusers timed in the same run: the two are called
// alternately on the same machine and threads, so load from other jobs falls on both, and the ratio is printed.
// The PyTorch side is tools/reference/bench_cpu.py, run as a child process that answers one line per command.
#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "args.h"
#include "bench_time.h"
#include "bench_unet.h"
#include "core/common.h"
#include "io/prompts.h"
#include "train/config.h"
#include "train/engine.h"
#include "train/model.h"
#include "train/optim.h"
#include "train/setup.h"

#define CPU_MAX_THREADS 8

static void cpu_usage(FILE *f) {
    fprintf(f,
            "usage: drtune bench cpu [--rows LIST] [--threads LIST] [--reps R] [--config FILE]\n"
            "                        [--torch PYTHON [--torch-script FILE]]\n"
            "\n"
            "Times on the CPU, per row and thread count, the median of R calls (default 5, at most 16) after one\n"
            "warm-up. Rows (default: all, in this order):\n"
            "  iter              one DRTune iteration of the default job (--config, default configs/default.ini) with\n"
            "                    the random draws fixed (phase 1, early stop at t_min 3): text encoding, rollout,\n"
            "                    decode, rewards, backward, gradient clip and AdamW step\n"
            "  sample            sampling the default job's model: its first 4 prompts, its steps and guidance, decoded\n"
            "  sd15-fwd          the SD 1.5 UNet (configs/models/sd15, random weights), 32x32 latent, batch 1: forward\n"
            "  sd15-fwdbwd       the same, forward + backward of every parameter\n"
            "  sd15-small-fwd    the reduced-width SD 1.5 UNet (configs/models/sd15-small): forward\n"
            "  sd15-small-fwdbwd the same, forward + backward\n"
            "--threads: comma-separated thread counts (default 1,2; at most %d each).\n"
            "--torch PYTHON: also time the same work in PyTorch + diffusers with that interpreter (an environment\n"
            "with torch, diffusers and transformers, e.g. tools/reference/.venv/bin/python), running --torch-script\n"
            "(default tools/reference/bench_cpu.py); the two alternate call by call and the ratio PyTorch time /\n"
            "drtune time is printed (above 1: drtune is faster).\n",
            CPU_MAX_THREADS);
}

// ---------------------------------------------------------------------------------------------------------------
// The PyTorch side: a child process answering "time ROW THREADS" with "ok SECONDS"
// ---------------------------------------------------------------------------------------------------------------

typedef struct {
    pid_t pid;
    FILE *to, *from;
    const char *python;
} Torch;

static void torch_start(Torch *t, const char *python, const char *script) {
    USER_CHECK(access(script, R_OK) == 0, "--torch-script %s: cannot read it (%s)", script, strerror(errno));
    int in[2], out[2];
    CHECK(pipe(in) == 0 && pipe(out) == 0, "", "pipe: %s", strerror(errno));
    t->pid = fork();
    CHECK(t->pid >= 0, "", "fork: %s", strerror(errno));
    if (t->pid == 0) {
        dup2(in[0], STDIN_FILENO);
        dup2(out[1], STDOUT_FILENO);
        close(in[0]), close(in[1]), close(out[0]), close(out[1]);
        execlp(python, python, script, "--serve", (char *)NULL);
        _exit(127); // reported by the parent, which sees no answer
    }
    close(in[0]), close(out[1]);
    t->python = python;
    signal(SIGPIPE, SIG_IGN); // a child that died is reported by the read below
    t->to = fdopen(in[1], "w");
    t->from = fdopen(out[0], "r");
    CHECK(t->to && t->from, "", "fdopen: %s", strerror(errno));
}

// Sends one command; returns the reply after "ok " (static buffer). A failure of the child is a user error: its
// environment lacks something, or the script failed.
static const char *torch_ask(Torch *t, const char *fmt, ...) {
    static char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vfprintf(t->to, fmt, ap);
    va_end(ap);
    fputc('\n', t->to);
    fflush(t->to);
    if (!fgets(line, sizeof line, t->from)) {
        int status = 0;
        waitpid(t->pid, &status, 0);
        USER_CHECK(!(WIFEXITED(status) && WEXITSTATUS(status) == 127), "--torch %s: cannot run it", t->python);
        dt_user_error("--torch %s: the PyTorch process ended without answering (status %d; its messages, if any, "
                      "are above)", t->python, WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    }
    line[strcspn(line, "\n")] = 0;
    USER_CHECK(!strncmp(line, "ok", 2), "--torch: the PyTorch side failed: %s",
               !strncmp(line, "err ", 4) ? line + 4 : line);
    return line[2] == ' ' ? line + 3 : line + 2;
}

static void torch_stop(Torch *t) {
    fprintf(t->to, "quit\n");
    fclose(t->to);
    fclose(t->from);
    waitpid(t->pid, NULL, 0);
}

// ---------------------------------------------------------------------------------------------------------------
// drtune's rows
// ---------------------------------------------------------------------------------------------------------------

// The default job's model, conditioning and noise: what the iteration and sampling rows share.
typedef struct {
    Config c;
    Model m;
    SetupRewards rewards;
    TrainSet ts;
    Engine e;
    MethodConfig mc;
    AdamWConfig oc;
    float *mom1, *mom2; // AdamW moments [ts.n]
    const char *prompts[4];
    char **lines;
    int n_lines, B, H, W, train, it;
    Tensor xT, x0;
    int64_t ids[4];
} JobRow;

static void job_init(JobRow *j, const char *config, int train) {
    memset(j, 0, sizeof *j);
    Config *c = &j->c;
    config_load(c, config, 0, NULL);
    c->method.phase = 1; // the draws fixed, as the PyTorch side fixes them
    c->method.t_min = c->method.m > 0 ? (c->method.m < 3 ? c->method.m : 3) : -1;
    j->train = train;
    model_load(&j->m, c->model.path, c->sampler.steps);
    j->lines = prompts_read(c->data.prompts, &j->n_lines);
    j->B = train ? c->train.batch : 4;
    USER_CHECK(j->B <= 4, "drtune bench cpu: --config %s: train.batch %d (the rows use at most 4)", config, j->B);
    for (int b = 0; b < j->B; b++) j->prompts[b] = j->lines[b % j->n_lines], j->ids[b] = b;
    j->H = c->sampler.height, j->W = c->sampler.width;
    int h, w;
    setup_latent_size(&j->m, j->H, j->W, "sampler.height and sampler.width", &h, &w);
    RewardSet none = {.items = NULL, .n = 0};
    const RewardSet *rs = &none;
    UNet *slots = NULL;
    if (train) {
        RewardModels models = setup_reward_models(c);
        double wts[CONFIG_MAX_REWARDS];
        config_reward_weights(c, wts);
        setup_rewards(&j->rewards, c->reward.n_names, c->reward.names, wts, c->reward.colour, &models);
        rs = &j->rewards.set;
        setup_trainable(&j->ts, &j->m, c, 0);
        slots = &j->ts.slots;
        j->mc = setup_method(c);
        j->oc = (AdamWConfig){.lr = (float)c->train.lr, .beta1 = (float)c->train.beta1,
                              .beta2 = (float)c->train.beta2, .eps = (float)c->train.adam_eps,
                              .weight_decay = (float)c->train.weight_decay, .grad_clip = (float)c->train.grad_clip};
        j->mom1 = xcalloc((size_t)j->ts.n, sizeof(float));
        j->mom2 = xcalloc((size_t)j->ts.n, sizeof(float));
    }
    engine_init(&j->e, &j->m.unet, slots, &j->m.vae, &j->m.sched, rs, (float)c->sampler.guidance, 0.0f, j->B, h, w,
                77);
    j->xT = tensor_f32_4d(xmalloc(sizeof(float) * (size_t)j->B * (size_t)(j->e.C * h * w)), j->B, j->e.C, h, w);
    j->x0 = tensor_f32_4d(xmalloc(sizeof(float) * (size_t)j->B * (size_t)(j->e.C * h * w)), j->B, j->e.C, h, w);
}

static void job_free(JobRow *j) {
    free(j->xT.data), free(j->x0.data);
    engine_free(&j->e);
    if (j->train) {
        free(j->mom1), free(j->mom2);
        setup_trainable_free(&j->ts);
        setup_rewards_free(&j->rewards);
    }
    for (int i = 0; i < j->n_lines; i++) free(j->lines[i]);
    free(j->lines);
    model_free(&j->m);
}

// One training iteration as the trainer runs it on one rank: noise, draw, condition, zeroed gradients, the
// engine's iteration, the global norm, clip and AdamW.
static void job_iteration(void *arg) {
    JobRow *j = arg;
    const Config *c = &j->c;
    for (int b = 0; b < j->B; b++) j->ids[b] = (int64_t)j->it * j->B + b;
    noise_latents(&j->xT, (uint64_t)c->train.seed, j->ids);
    IterPlan plan;
    iter_plan_draw(&plan, &j->mc, c->sampler.steps, (uint64_t)c->train.seed, (uint64_t)j->it);
    PromptEmbeds emb;
    UNetCond cond;
    model_condition(&j->m, j->prompts, c->sampler.negative_prompt, j->B, c->method.cfg, j->H, j->W, &emb, &cond);
    device_zero(DEVICE_CPU, j->ts.g, sizeof(float) * (size_t)j->ts.n);
    IterResult res;
    engine_iteration(&j->e, &plan, &cond, j->prompts, &j->xT, NULL, NULL, &res);
    prompt_embeds_free(&emb);
    double norm = sqrt(grad_sumsq(j->ts.g, j->ts.n));
    CHECK(isfinite(norm), "", "bench cpu: the gradient of iteration %d is not finite", j->it + 1);
    j->it++;
    adamw_update(&j->oc, j->oc.lr, j->it, grad_clip_coef(&j->oc, norm), j->ts.p, j->ts.g, j->mom1, j->mom2,
                 j->ts.n);
}

// Sampling as `drtune sample` runs it: condition, the rollout, decode.
static void job_sample(void *arg) {
    JobRow *j = arg;
    PromptEmbeds emb;
    UNetCond cond;
    model_condition(&j->m, j->prompts, j->c.sampler.negative_prompt, j->B, j->c.sampler.guidance > 1.0, j->H,
                    j->W, &emb, &cond);
    noise_latents(&j->xT, 0, j->ids);
    engine_sample(&j->e, &cond, &j->xT, NULL, &j->x0);
    engine_score(&j->e, &j->x0, j->prompts);
    prompt_embeds_free(&emb);
}

typedef struct {
    const char *name, *label, *model; // model: a configs/models folder for the UNet rows
    int backward;
} CpuRow;

static const CpuRow ROWS[] = {
    {"iter", "one DRTune iteration of the default job (small model, LoRA)", NULL, 1},
    {"sample", "sampling the small model, 4 prompts", NULL, 0},
    {"sd15-fwd", "SD 1.5 UNet (860M), 32x32 latent, forward", "sd15", 0},
    {"sd15-fwdbwd", "same, forward + backward of every parameter", "sd15", 1},
    {"sd15-small-fwd", "reduced-width SD 1.5 UNet, forward", "sd15-small", 0},
    {"sd15-small-fwdbwd", "same, forward + backward", "sd15-small", 1},
};
#define N_ROWS ((int)(sizeof ROWS / sizeof ROWS[0]))

// One row being timed: its drtune state and call.
typedef struct {
    JobRow job;
    UNetBench unet;
    BenchFn fn;
    void *arg;
} RowState;

static void row_init(RowState *s, const CpuRow *r, const char *config) {
    memset(s, 0, sizeof *s);
    if (r->model) {
        char path[4096];
        snprintf(path, sizeof path, "configs/models/%s/unet", r->model);
        UNetConfig uc;
        unet_load_config(&uc, path);
        unet_bench_init(&s->unet, &uc, DEVICE_CPU, DTYPE_F32, 1, 32);
        s->unet.backward = r->backward;
        s->fn = unet_bench_call, s->arg = &s->unet;
    } else {
        int train = !strcmp(r->name, "iter");
        job_init(&s->job, config, train);
        s->fn = train ? job_iteration : job_sample, s->arg = &s->job;
    }
}

static void row_free(RowState *s, const CpuRow *r) {
    if (r->model) unet_bench_free(&s->unet);
    else job_free(&s->job);
}

static double time_call(BenchFn fn, void *arg) {
    double t0 = dt_now();
    fn(arg);
    return dt_now() - t0;
}

static void print_machine(void) {
    char model[256] = "unknown CPU", line[512];
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        while (fgets(line, sizeof line, f))
            if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
                snprintf(model, sizeof model, "%s", strchr(line, ':') + 2);
                model[strcspn(model, "\n")] = 0;
                break;
            }
        fclose(f);
    }
    printf("machine: %s, %ld cores online\n", model, sysconf(_SC_NPROCESSORS_ONLN));
}

int cmd_bench_cpu(int argc, char **argv) {
    const char *rows = NULL, *config = "configs/default.ini", *python = NULL;
    const char *script = "tools/reference/bench_cpu.py";
    int reps = 5, threads[CPU_MAX_THREADS], n_threads = 2;
    threads[0] = 1, threads[1] = 2;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            cpu_usage(stdout);
            return 0;
        }
        const char *v = args_value(argc, argv, &i);
        if (!strcmp(o, "--rows")) rows = v;
        else if (!strcmp(o, "--reps")) reps = args_int(o, v, 1, BENCH_MAX_REPS);
        else if (!strcmp(o, "--config")) config = v;
        else if (!strcmp(o, "--torch")) python = v;
        else if (!strcmp(o, "--torch-script")) script = v;
        else if (!strcmp(o, "--threads")) {
            n_threads = 0;
            for (const char *p = v; *p;) {
                USER_CHECK(n_threads < CPU_MAX_THREADS, "--threads: at most %d counts", CPU_MAX_THREADS);
                char *end;
                long n = strtol(p, &end, 10);
                USER_CHECK(end != p && n >= 1 && n <= 4096 && (*end == ',' || !*end),
                           "--threads: expected comma-separated counts in 1..4096, got '%s'", v);
                threads[n_threads++] = (int)n;
                p = *end ? end + 1 : end;
            }
        } else dt_user_error("drtune bench cpu: unknown option '%s' (see drtune bench cpu --help)", o);
    }
    int want[N_ROWS];
    for (int r = 0; r < N_ROWS; r++) want[r] = rows == NULL;
    for (const char *p = rows; p && *p;) {
        size_t len = strcspn(p, ",");
        int found = 0;
        for (int r = 0; r < N_ROWS; r++)
            if (strlen(ROWS[r].name) == len && !strncmp(ROWS[r].name, p, len)) want[r] = found = 1;
        USER_CHECK(found, "--rows: unknown row '%.*s' (iter, sample, sd15-fwd, sd15-fwdbwd, sd15-small-fwd, "
                   "sd15-small-fwdbwd)", (int)len, p);
        p += len + (p[len] == ',');
    }
    // Workspaces are sized for the thread count at planning time: plan with the largest, time any fewer.
    int max_threads = 1;
    for (int i = 0; i < n_threads; i++) max_threads = threads[i] > max_threads ? threads[i] : max_threads;
    ops_set_threads(max_threads);

    Torch torch = {0};
    print_machine();
    if (python) {
        torch_start(&torch, python, script);
        printf("PyTorch side: %s %s: %s\n", python, script, torch_ask(&torch, "info"));
    }
    printf("drtune: %s; median of %d calls after a warm-up%s\n\n", openblas_get_config(), reps,
           python ? ", drtune and PyTorch called alternately" : "");
    printf("| work | threads | drtune s |%s\n|---|---|---|%s\n", python ? " PyTorch s | PyTorch / drtune |" : "",
           python ? "---|---|" : "");
    fflush(stdout);
    for (int r = 0; r < N_ROWS; r++) {
        if (!want[r]) continue;
        RowState s;
        row_init(&s, &ROWS[r], config);
        for (int ti = 0; ti < n_threads; ti++) {
            int T = threads[ti];
            double ours[BENCH_MAX_REPS], theirs[BENCH_MAX_REPS];
            ops_set_threads(T);
            time_call(s.fn, s.arg); // warm-up
            if (python) torch_ask(&torch, "time %s %d", ROWS[r].name, T);
            for (int k = 0; k < reps; k++) {
                ops_set_threads(T); // the PyTorch call in between does not touch ours, but be explicit
                ours[k] = time_call(s.fn, s.arg);
                if (python) theirs[k] = atof(torch_ask(&torch, "time %s %d", ROWS[r].name, T));
            }
            double a = bench_median_of(ours, reps);
            printf("| %s | %d | %.3f |", ROWS[r].label, T, a);
            if (python) {
                double b = bench_median_of(theirs, reps);
                printf(" %.3f | %.2f |", b, b / a);
            }
            printf("\n");
            fflush(stdout);
        }
        ops_set_threads(max_threads);
        row_free(&s, &ROWS[r]);
        if (python) torch_ask(&torch, "drop %s", ROWS[r].name);
    }
    if (python) torch_stop(&torch);
    return 0;
}
