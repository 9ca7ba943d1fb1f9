// cmd_pretrain.c: `drtune pretrain`, training the small latent diffusion model of data/models/tiny from scratch on
// procedural scenes (src/train/pretrain.h, docs/SMALL_MODEL.md), and its prompt-adherence evaluation; `drtune
// pretrain-clip`, the small CLIP of data/models/clip (src/train/pretrain_clip.h) and its retrieval evaluation.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "data/scenes.h"
#include "train/pretrain.h"
#include "train/pretrain_clip.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: drtune pretrain --config FILE.ini [--section.key=value ...] [--resume] [--stop-after N]\n"
            "       drtune pretrain --eval [--model DIR] [--config FILE.ini] [--section.key=value ...]\n"
            "       drtune pretrain --captions N [--config FILE.ini] [--section.key=value ...]\n"
            "\n"
            "Trains the small model: stage 1 the autoencoder on rendered scenes, stage 2 the UNet and the text\n"
            "encoder (epsilon loss), then exports a diffusers folder (model.out). Checkpoints go to output.dir.\n"
            "\n"
            "  --resume        continue from the newest checkpoint in output.dir (exactly as if never stopped)\n"
            "  --stop-after N  stop after N iterations of this invocation, with a checkpoint written\n"
            "  --eval          sample eval.prompts held-out captions with model.out (or --model DIR) and report\n"
            "                  the fraction with the right colour and shape\n"
            "  --captions N    print the first N training and N held-out captions, one a line (tokenizer checks)\n"
            "\n"
            "keys (docs/SMALL_MODEL.md):\n");
    pretrain_config_print_help(f);
}

int cmd_pretrain(int argc, char **argv) {
    const char *config = NULL, *model = NULL;
    char **overrides = xmalloc(sizeof(char *) * (size_t)(argc + 1));
    int n = 0, resume = 0, eval = 0, stop_after = 0, captions = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            free(overrides);
            return 0;
        } else if (!strcmp(a, "--config") || !strcmp(a, "--model")) {
            USER_CHECK(i + 1 < argc, "drtune pretrain: %s needs a value", a);
            *(!strcmp(a, "--config") ? &config : &model) = argv[++i];
        } else if (!strcmp(a, "--stop-after") || !strcmp(a, "--captions")) {
            USER_CHECK(i + 1 < argc, "drtune pretrain: %s needs a value", a);
            const char *v = argv[++i];
            char *end;
            long x = strtol(v, &end, 10);
            USER_CHECK(*v && !*end && x >= 1 && x <= 1000000000, "drtune pretrain: %s '%s' is not a positive integer",
                       a, v);
            *(!strcmp(a, "--stop-after") ? &stop_after : &captions) = (int)x;
        } else if (!strcmp(a, "--resume")) {
            resume = 1;
        } else if (!strcmp(a, "--eval")) {
            eval = 1;
        } else if (!strncmp(a, "--", 2) && strchr(a, '.') && strchr(a, '=')) {
            overrides[n++] = argv[i];
        } else {
            dt_user_error("drtune pretrain: unexpected argument '%s' (see drtune pretrain --help)", a);
        }
    }
    USER_CHECK(eval || captions || config, "drtune pretrain: --config FILE.ini is required (configs/pretrain.ini)");
    USER_CHECK(!eval || (!resume && !stop_after), "drtune pretrain: --eval takes no --resume or --stop-after");
    USER_CHECK(eval || !model, "drtune pretrain: --model goes with --eval (training writes model.out)");
    PretrainConfig c;
    pretrain_config_load(&c, config, n, overrides);
    free(overrides);
    if (eval) {
        pretrain_eval(&c, model, NULL);
        return 0;
    }
    for (int split = 0; split < 2 && captions; split++)
        for (int i = 0; i < captions; i++) {
            Scene s;
            scene_sample(&s, (uint64_t)c.data.seed, (uint64_t)i, split);
            printf("%s\n", s.caption);
        }
    if (captions) return 0;
    return pretrain_run(&c, resume, stop_after);
}

// ---------------------------------------------------------------------------------------------------------------
// drtune pretrain-clip

static void clip_usage(FILE *f, const ClipPretrainConfig *d) {
    fprintf(f,
            "usage: drtune pretrain-clip [--out DIR] [--iterations N] [--batch N] [--lr X] [--seed N] [--threads N]\n"
            "       drtune pretrain-clip --eval [--model DIR] [--n N]\n"
            "\n"
            "Trains the small CLIP of data/models/clip contrastively on rendered training scenes (a ViT image tower and\n"
            "a text tower with the small model's tokenizer) and exports a transformers CLIPModel folder that the\n"
            "clipscore reward loads (docs/SMALL_MODEL.md). --eval prints its image -> text and text -> image\n"
            "retrieval accuracy on N held-out scenes (default 256).\n"
            "\n"
            "defaults: --out %s --iterations %d --batch %d --lr %g --seed %d; image %d, patch %d, width %d, %d layers,\n"
            "          %d heads; text width %d, %d layers, context %d; projection %d; tokenizer %s\n",
            d->out, d->iterations, d->batch, d->lr, d->seed, d->image_size, d->patch, d->width, d->layers, d->heads,
            d->text_width, d->text_layers, d->context, d->proj_dim, d->tokenizer);
}

static int parse_int(const char *opt, const char *v, int lo) {
    char *end;
    long x = strtol(v, &end, 10);
    USER_CHECK(*v && !*end && x >= lo && x <= 1000000000, "drtune pretrain-clip: %s '%s' is not an integer >= %d",
               opt, v, lo);
    return (int)x;
}

int cmd_pretrain_clip(int argc, char **argv) {
    ClipPretrainConfig c;
    clip_pretrain_defaults(&c);
    int eval = 0, n = 256;
    const char *model = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            clip_usage(stdout, &c);
            return 0;
        }
        if (!strcmp(a, "--eval")) {
            eval = 1;
            continue;
        }
        USER_CHECK(i + 1 < argc, "drtune pretrain-clip: %s needs a value (see drtune pretrain-clip --help)", a);
        const char *v = argv[++i];
        if (!strcmp(a, "--out")) {
            USER_CHECK(strlen(v) < sizeof c.out, "drtune pretrain-clip: --out path too long");
            snprintf(c.out, sizeof c.out, "%s", v);
        } else if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--iterations")) c.iterations = parse_int(a, v, 1);
        else if (!strcmp(a, "--batch")) c.batch = parse_int(a, v, 2);
        else if (!strcmp(a, "--seed")) c.seed = parse_int(a, v, 0);
        else if (!strcmp(a, "--threads")) c.threads = parse_int(a, v, 0);
        else if (!strcmp(a, "--n")) n = parse_int(a, v, 5);
        else if (!strcmp(a, "--lr")) {
            char *end;
            c.lr = strtod(v, &end);
            USER_CHECK(*v && !*end && c.lr > 0 && c.lr < 1, "drtune pretrain-clip: --lr '%s' is not in (0, 1)", v);
        } else {
            dt_user_error("drtune pretrain-clip: unexpected argument '%s' (see drtune pretrain-clip --help)", a);
        }
    }
    if (!eval) return clip_pretrain_run(&c);
    ClipRetrieval r;
    clip_retrieval_eval(model ? model : c.out, c.data_seed, 0, n, &r);
    printf("held-out retrieval on %d scenes (%s): image->text top-1 %.1f%%, top-5 %.1f%%; text->image top-1 %.1f%%, "
           "top-5 %.1f%% (top-1 by chance %.1f%%)\n",
           r.n, model ? model : c.out, 100 * r.i2t_top1, 100 * r.i2t_top5, 100 * r.t2i_top1, 100 * r.t2i_top5,
           100 * r.chance_top1);
    return 0;
}
