// pretrain_eval.c: `drtune pretrain --eval`, the small model's prompt adherence: images for held-out captions
// (scenes.h split 1, combinations of colour, shape and position never trained on) sampled exactly as `drtune
// sample` does, judged by the procedural checker.
#include <stdio.h>
#include <string.h>

#include "../core/common.h"
#include "../data/scenes.h"
#include "../io/png.h"
#include "model.h"
#include "pretrain.h"
#include "setup.h"

#define GRID_MAX 64

double pretrain_eval(const PretrainConfig *c, const char *model_dir, double *shape_acc) {
    setup_threads(c->train.threads);
    const char *dir = model_dir ? model_dir : c->model.out;
    Model m;
    model_load(&m, dir, c->eval.steps);
    int f = 1 << (m.vae.cfg.levels - 1), H = c->data.image_size, h = H / f;
    int N = c->eval.prompts, B = c->eval.batch < N ? c->eval.batch : N, cfg = c->eval.guidance > 1.0;
    Engine e;
    RewardSet none = {.items = NULL, .n = 0};
    engine_init(&e, &m.unet, NULL, &m.vae, &m.sched, &none, (float)c->eval.guidance, 0.0f, B, h, h,
                TOKENIZER_MAX_LENGTH);
    int64_t lat = (int64_t)e.C * h * h, img = 3 * (int64_t)H * H;
    Tensor xT = tensor_f32_4d(xmalloc(sizeof(float) * (size_t)(lat * B)), B, e.C, h, h);
    Tensor x0 = tensor_f32_4d(xmalloc(sizeof(float) * (size_t)(lat * B)), B, e.C, h, h);
    Scene *sc = xmalloc(sizeof(Scene) * (size_t)B);
    const char **prompts = xmalloc(sizeof(char *) * (size_t)B);
    int64_t *ids = xmalloc(sizeof(int64_t) * (size_t)B);
    int *colour_ok = xmalloc(sizeof(int) * (size_t)B), *shape_ok = xmalloc(sizeof(int) * (size_t)B);
    int n_grid = N < GRID_MAX ? N : GRID_MAX, colours = 0, shapes = 0;
    float *grid = xmalloc(sizeof(float) * (size_t)(img * n_grid));
    char path[PRETRAIN_PATH_MAX + 32];
    dt_mkdirs(c->output.dir);
    FILE *log = dt_fopen(dt_path(path, sizeof path, "%s/eval.txt", c->output.dir), "w");
    double t0 = dt_now();
    for (int first = 0; first < N; first += B) {
        // the last call repeats its final prompt to fill the batch; only the first nb images count
        int nb = N - first < B ? N - first : B;
        for (int b = 0; b < B; b++) {
            int i = first + (b < nb ? b : nb - 1);
            scene_sample(&sc[b], (uint64_t)c->data.seed, (uint64_t)i, 1);
            prompts[b] = sc[b].caption;
            ids[b] = i;
        }
        PromptEmbeds emb;
        UNetCond cond;
        model_condition(&m, prompts, "", B, cfg, H, H, &emb, &cond);
        noise_latents(&xT, (uint64_t)c->eval.seed, ids);
        engine_sample(&e, &cond, &xT, NULL, &x0);
        engine_score(&e, &x0, prompts);
        scene_adherence_accuracy(e.image.data, nb, H, H, prompts, colour_ok, shape_ok);
        for (int b = 0; b < nb; b++) {
            colours += colour_ok[b], shapes += shape_ok[b];
            fprintf(log, "%d\tcolour %s\tshape %s\t%s\n", first + b, colour_ok[b] ? "ok" : "WRONG",
                    shape_ok[b] ? "ok" : "WRONG", prompts[b]);
            if (first + b < n_grid)
                memcpy(grid + (first + b) * img, (float *)e.image.data + b * img, sizeof(float) * (size_t)img);
        }
        prompt_embeds_free(&emb);
    }
    fclose(log);
    pngio_write_grid(dt_path(path, sizeof path, "%s/eval.png", c->output.dir), grid, n_grid, H, H, 8);
    double ca = (double)colours / N, sa = (double)shapes / N;
    printf("drtune pretrain --eval: %s, %d held-out captions, %d DDIM steps, guidance %.1f, seed %d (%.1f s)\n"
           "  colour correct %.1f%% (%d/%d)\n  shape correct  %.1f%% (%d/%d)\n"
           "  per caption: %s/eval.txt; first %d images: %s/eval.png\n",
           dir, N, c->eval.steps, c->eval.guidance, c->eval.seed, dt_now() - t0, 100.0 * ca, colours, N, 100.0 * sa,
           shapes, N, c->output.dir, n_grid, c->output.dir);
    if (shape_acc) *shape_acc = sa;
    free(xT.data);
    free(x0.data);
    free(sc);
    free(prompts);
    free(ids);
    free(colour_ok);
    free(shape_ok);
    free(grid);
    engine_free(&e);
    model_free(&m);
    return ca;
}
