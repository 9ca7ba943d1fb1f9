// cmd_bench_memory.c: `drtune bench memory`, the peak memory of one training iteration per method and number of
// trained steps K, to check that DRTune's memory does not grow with K. Each case loads the model and runs one
// iteration in its own forked child, and its peak resident memory is the kernel's ru_maxrss from wait4().
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "args.h"
#include "core/common.h"
#include "rewards/clip_reward.h"
#include "train/setup.h"

typedef struct {
    Method method;
    int all_steps;     // K = N (else K = 1)
    const char *label;
    int checkpoint;    // reward.checkpoint (only with a learned reward)
} MemCase;

static const MemCase CASES[] = {
    {METHOD_DRTUNE, 0, "drtune", 0},
    {METHOD_DRTUNE, 1, "drtune", 0},
    {METHOD_DRAFT, 0, "draft", 0},
    {METHOD_DRAFT, 1, "draft", 0},
    {METHOD_ALIGNPROP, 1, "alignprop (k = K)", 0},
    {METHOD_DRTUNE, 0, "drtune, reward ckpt", 1}, // run only with a learned reward (--reward)
};
#define N_CASES ((int)(sizeof CASES / sizeof CASES[0]))

// What a child reports through its pipe.
typedef struct {
    double rss_setup;  // peak RSS after loading and planning, before the iteration (bytes)
    double sec_iter, sec_total;
    double loss;
    double reward_bytes; // the learned reward's planned activations (tower and preprocessing)
} MemResult;

static void mem_usage(FILE *f) {
    fprintf(f,
            "usage: drtune bench memory --model DIR [--steps N] [--batch B] [--guidance W] [--trainable lora|full]\n"
            "                           [--height H --width W] [--threads N] [--reward NAME --reward-path NAME=PATH]\n"
            "\n"
            "Peak resident memory of one training iteration for DRTune with K = 1 and K = N (no early stop), and\n"
            "for contrast DRaFT with K = 1 and K = N and AlignProp with k = N. Each case runs in a fresh forked\n"
            "process (model load, planning, one iteration); its peak is the kernel's ru_maxrss. Defaults: 10 steps,\n"
            "batch 1, guidance 5 (both CFG branches), LoRA, the UNet's default image size, all cores.\n"
            "With --reward (a learned reward: hps, pickscore, clipscore or aesthetic, its model given by\n"
            "--reward-path as in drtune eval) every case uses that reward, one more DRTune K = 1 case runs with\n"
            "reward.checkpoint = true, and the reward's planned activations are reported as a share of the peak.\n");
}

// The child: one iteration of case mc under config c; writes a MemResult to fd.
static void mem_child(const Config *cfg, const MemCase *mc, int print_plan, int fd) {
    double t0 = dt_now();
    Config cc = *cfg, *c = &cc;
    c->reward.checkpoint = mc->checkpoint;
    setup_threads(c->train.threads);
    Model m;
    model_load(&m, c->model.path, c->sampler.steps);
    SetupRewards rewards;
    RewardModels models = setup_reward_models(c);
    double rw_weights[CONFIG_MAX_REWARDS];
    config_reward_weights(c, rw_weights);
    setup_rewards(&rewards, c->reward.n_names, c->reward.names, rw_weights, c->reward.colour, &models);
    int H = c->sampler.height, W = c->sampler.width, h, w, B = c->train.batch, N = c->sampler.steps;
    if (H <= 0) H = W = m.unet.cfg.sample_size * (1 << (m.vae.cfg.levels - 1));
    setup_latent_size(&m, H, W, "--height and --width", &h, &w);
    TrainSet ts;
    setup_trainable(&ts, &m, c, 0);
    Engine e;
    engine_init(&e, &m.unet, &ts.slots, &m.vae, &m.sched, &rewards.set, (float)c->sampler.guidance, 0.0f, B, h, w,
                77);
    if (print_plan) {
        printf("planned memory (every case plans the same; %dx%d images, batch %d, %s):\n", H, W, B,
               c->sampler.guidance > 1.0 ? "both CFG branches" : "no CFG");
        arena_print(&m.unet_params);
        arena_print(&m.vae_params);
        if (ts.params != &m.unet_params) arena_print(ts.params); // LoRA adapters
        arena_print(ts.grads);
        arena_print(&e.unet_mem);
        arena_print(&e.vae_mem);
        arena_print(&e.mem);
        fflush(stdout);
    }
    MethodConfig mcfg = setup_method(c);
    mcfg.method = mc->method;
    mcfg.K = mc->all_steps ? N : 1;
    mcfg.m = 0;
    mcfg.k = mc->method == METHOD_ALIGNPROP ? N : -1;
    IterPlan plan;
    iter_plan_draw(&plan, &mcfg, N, 0, 0);
    const char **prompts = xmalloc(sizeof(char *) * (size_t)B);
    int64_t *ids = xmalloc(sizeof(int64_t) * (size_t)B);
    for (int b = 0; b < B; b++) prompts[b] = "a photo of a red circle", ids[b] = b;
    Tensor xT = tensor_f32_4d(xmalloc(sizeof(float) * (size_t)B * (size_t)(e.C * h * w)), B, e.C, h, w);
    noise_latents(&xT, 0, ids);
    PromptEmbeds emb;
    UNetCond cond;
    model_condition(&m, prompts, "", B, c->sampler.guidance > 1.0, H, W, &emb, &cond);
    MemResult r = {.rss_setup = (double)dt_peak_rss()};
    double ti = dt_now();
    IterResult res;
    engine_iteration(&e, &plan, &cond, prompts, &xT, NULL, NULL, &res);
    r.sec_iter = dt_now() - ti;
    r.sec_total = dt_now() - t0;
    r.loss = res.loss;
    for (int k = 0; k < CONFIG_MAX_REWARDS; k++)
        if (rewards.learned[k]) r.reward_bytes += (double)clip_reward_activation_bytes(rewards.learned[k]);
    CHECK(write(fd, &r, sizeof r) == (ssize_t)sizeof r, "", "cannot report to the parent process (%s)",
          strerror(errno));
}

int cmd_bench_memory(int argc, char **argv) {
    Config c;
    config_defaults(&c);
    c.sampler.steps = 10;
    c.sampler.height = c.sampler.width = -1;
    c.train.batch = 1;
    const char *model = NULL, *reward = NULL;
    RewardModels paths = {0};
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            mem_usage(stdout);
            return 0;
        }
        const char *v = args_value(argc, argv, &i);
        if (!strcmp(o, "--model")) model = v;
        else if (!strcmp(o, "--steps")) c.sampler.steps = args_int(o, v, 1, ENGINE_MAX_STEPS);
        else if (!strcmp(o, "--batch")) c.train.batch = args_int(o, v, 1, 4096);
        else if (!strcmp(o, "--guidance")) c.sampler.guidance = args_double(o, v, 0.0, 100.0);
        else if (!strcmp(o, "--height")) c.sampler.height = args_int(o, v, 8, 8192);
        else if (!strcmp(o, "--width")) c.sampler.width = args_int(o, v, 8, 8192);
        else if (!strcmp(o, "--threads")) c.train.threads = args_int(o, v, 0, 4096);
        else if (!strcmp(o, "--reward")) reward = v;
        else if (!strcmp(o, "--reward-path")) setup_reward_path(&paths, o, v);
        else if (!strcmp(o, "--trainable")) {
            USER_CHECK(!strcmp(v, "lora") || !strcmp(v, "full"), "--trainable: '%s' is not lora or full", v);
            c.train.trainable = !strcmp(v, "lora") ? TRAINABLE_LORA : TRAINABLE_FULL;
        } else dt_user_error("drtune bench memory: unknown option '%s' (see drtune bench memory --help)", o);
    }
    USER_CHECK(model, "drtune bench memory: --model DIR is required");
    USER_CHECK((c.sampler.height < 0) == (c.sampler.width < 0),
               "drtune bench memory: give --height and --width together");
    struct stat sb;
    USER_CHECK(stat(model, &sb) == 0 && S_ISDIR(sb.st_mode), "model folder '%s' does not exist", model);
    snprintf(c.model.path, sizeof c.model.path, "%s", model);
    if (reward) { // the learned reward alone, its paths as config keys
        USER_CHECK(clip_reward_known(reward), "--reward: '%s' is not hps, pickscore, clipscore or aesthetic", reward);
        snprintf(c.reward.names[0], sizeof c.reward.names[0], "%s", reward);
        c.reward.n_names = c.reward.n_weights = 1, c.reward.weights[0] = 1.0, c.reward.n_scales = 0;
        const char *from[] = {paths.hps, paths.pickscore, paths.clipscore, paths.aesthetic, paths.aesthetic_clip};
        char *to[] = {c.reward.hps_path, c.reward.pickscore_path, c.reward.clipscore_path, c.reward.aesthetic_path,
                      c.reward.aesthetic_clip_path};
        for (int k = 0; k < 5; k++)
            if (from[k]) snprintf(to[k], CONFIG_PATH_MAX, "%s", from[k]);
    }
    int n_cases = reward ? N_CASES : N_CASES - 1;
    int N = c.sampler.steps;
    char b1[32], b2[32], b3[32];
    printf("drtune bench memory: %s, %d steps, batch %d, guidance %g, %s; one iteration per forked process\n", model,
           N, c.train.batch, c.sampler.guidance, c.train.trainable == TRAINABLE_LORA ? "LoRA" : "full fine-tuning");
    printf("this (forking) process: peak RSS %s before the first fork\n",
           dt_format_bytes(b1, sizeof b1, (double)dt_peak_rss()));
    fflush(stdout);
    MemResult r[N_CASES];
    double peak[N_CASES];
    for (int k = 0; k < n_cases; k++) {
        int fd[2];
        CHECK(pipe(fd) == 0, "", "pipe failed (%s)", strerror(errno));
        fflush(NULL);
        pid_t pid = fork();
        CHECK(pid >= 0, "", "fork failed (%s)", strerror(errno));
        if (pid == 0) {
            close(fd[0]);
            mem_child(&c, &CASES[k], k == 0, fd[1]);
            fflush(NULL);
            _exit(0);
        }
        close(fd[1]);
        int status;
        struct rusage ru;
        pid_t got;
        while ((got = wait4(pid, &status, 0, &ru)) < 0 && errno == EINTR) {}
        CHECK(got == pid, "", "wait4 failed (%s)", strerror(errno));
        ssize_t n = read(fd[0], &r[k], sizeof r[k]);
        close(fd[0]);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || n != (ssize_t)sizeof r[k]) {
            if (WIFEXITED(status) && WEXITSTATUS(status) != 0) return WEXITSTATUS(status); // it printed why
            FATAL("", "the child process of case %d ended without a result (%s %d)", k,
                  WIFSIGNALED(status) ? "signal" : "status",
                  WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
        }
        peak[k] = (double)ru.ru_maxrss * 1024.0; // Linux: KiB
    }
    printf("\n%-20s %5s %12s %9s %14s %12s %10s\n", "method", "K", "peak RSS", "/ DRTune1", "before iter.",
           "iteration +", "iter. s");
    for (int k = 0; k < n_cases; k++)
        printf("%-20s %5d %12s %9.3f %14s %12s %10.2f\n", CASES[k].label, CASES[k].all_steps ? N : 1,
               dt_format_bytes(b1, sizeof b1, peak[k]), peak[k] / peak[0],
               dt_format_bytes(b2, sizeof b2, r[k].rss_setup),
               dt_format_bytes(b3, sizeof b3, peak[k] - r[k].rss_setup), r[k].sec_iter);
    printf("\npeak RSS: ru_maxrss of the case's process (load, planning and the iteration); before iter.: its peak\n"
           "after loading and planning; iteration +: what the iteration added on top.\n");
    if (reward)
        for (int k = 0; k < n_cases; k += n_cases - 1)
            printf("reward '%s' (DRTune K = 1, reward.checkpoint = %s): activations %s planned, %.1f%% of the peak "
                   "RSS\n",
                   reward, CASES[k].checkpoint ? "true" : "false", dt_format_bytes(b1, sizeof b1, r[k].reward_bytes),
                   100.0 * r[k].reward_bytes / peak[k]);
    double worst = peak[1] / peak[0];
    printf("DRTune K = %d vs K = 1: %.3f (%s 10%%)\n", N, worst, worst <= 1.10 ? "within" : "NOT within");
    return 0;
}
