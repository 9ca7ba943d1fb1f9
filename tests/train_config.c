// train_config.c: the training configuration: defaults, a complete INI file, command-line overrides, every kind
// of bad input (each must end the program with exit code 2 and one "drtune: error:" line naming the key), the
// resolved INI round trip, and docs/CONFIG.md matching the schema (run with --write-docs to regenerate it).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/core/common.h"
#include "../src/train/config.h"
#include "testutil.h"

static char *memstream_text(void (*fn)(FILE *)) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    fn(f);
    fclose(f);
    return text;
}

// ---------------------------------------------------------------------------------------------------------------
// errors, each checked in a child process

typedef struct {
    const char *ini;        // parsed with config_parse_string as "test.ini" (NULL: none)
    const char *file;       // parsed with config_parse_file (NULL: none)
    const char *args[4];    // overrides
    int validate;           // run config_validate at the end
} Case;

static void run_case(const void *arg) {
    const Case *c = arg;
    Config cfg;
    config_defaults(&cfg);
    if (c->ini) config_parse_string(&cfg, c->ini, "test.ini");
    if (c->file) config_parse_file(&cfg, c->file);
    int n = 0;
    while (n < 4 && c->args[n]) n++;
    config_apply_overrides(&cfg, n, (char *const *)c->args);
    if (c->validate) config_validate(&cfg);
}

// The case must succeed silently.
static void expect_ok(int line, const Case *c) {
    TuChild child;
    tu_run_child(run_case, c, &child);
    TU_EXPECT(child.code == 0 && !child.err[0], "case at line %d: exit %d, stderr: %s", line, child.code, child.err);
    tu_child_free(&child);
}

// The case must fail with exit code 2 and exactly one line "drtune: error: ..." holding every needle (NULL: none).
#define ERR(needle1, needle2, ...)                                                                                 \
    tu_expect_user_error(__FILE__, __LINE__, run_case, &(Case){__VA_ARGS__}, needle1, needle2, (const char *)NULL)
#define OK(...) expect_ok(__LINE__, &(Case){__VA_ARGS__})

static void test_errors(void) {
    // sections and keys
    ERR("test.ini:2: unknown section [sampeler]", "did you mean [sampler]?", .ini = "\n[sampeler]\nsteps = 3\n");
    ERR("test.ini:1: unknown section [dist]", "sections: model, sampler", .ini = "[dist]\n");
    ERR("test.ini:1: unknown section [ sampler ]", "did you mean [sampler]?", .ini = "[ sampler ]\n");
    ERR("test.ini:3: unknown key 'stpes' in [sampler]", "did you mean 'steps'?", .ini = "[sampler]\n\nstpes = 3\n");
    ERR("unknown key 'lr' in [sampler]", "did you mean 'lr' in [train]?", .ini = "[sampler]\nlr = 0.1\n");
    ERR("test.ini:2: unknown key 'frobnicate' in [train]", NULL, .ini = "[train]\nfrobnicate = 1\n");
    ERR("test.ini:1: key 'steps' before any [section] header", "did you mean 'steps' in [sampler]?",
        .ini = "steps = 3\n");
    ERR("test.ini:3: duplicate key sampler.steps", "first set at line 2", .ini = "[sampler]\nsteps = 3\nsteps = 4\n");
    ERR("test.ini:4: duplicate key sampler.steps", NULL, .ini = "[sampler]\nsteps = 3\n[sampler]\nsteps = 4\n");
    ERR("test.ini:2: cannot parse 'steps'", "expected '[section]' or 'key = value'", .ini = "[sampler]\nsteps\n");
    ERR("test.ini:1: cannot parse '[sampler'", NULL, .ini = "[sampler\n");
    // values
    ERR("test.ini:2: sampler.steps = 'abc'", "expected an integer in [1, 1000]", .ini = "[sampler]\nsteps = abc\n");
    ERR("sampler.steps = '0'", "expected an integer in [1, 1000]", .ini = "[sampler]\nsteps = 0\n");
    ERR("sampler.steps = '2.5'", "an integer", .ini = "[sampler]\nsteps = 2.5\n");
    ERR("sampler.steps = '99999999999999999999'", "an integer", .ini = "[sampler]\nsteps = 99999999999999999999\n");
    ERR("sampler.steps = ''", "an integer", .ini = "[sampler]\nsteps =\n");
    ERR("train.lr = '0'", "expected a number in (0, 1]", .ini = "[train]\nlr = 0\n");
    ERR("train.lr = '1e-4x'", "a number", .ini = "[train]\nlr = 1e-4x\n");
    ERR("train.lr = 'nan'", "not a finite number", .ini = "[train]\nlr = nan\n");
    ERR("train.beta2 = '1'", "in [0, 1)", .ini = "[train]\nbeta2 = 1\n");
    ERR("method.cfg = 'maybe'", "expected true or false", .ini = "[method]\ncfg = maybe\n");
    ERR("method.name = 'drtun'", "did you mean 'drtune'?", .ini = "[method]\nname = drtun\n");
    ERR("method.name = 'DRTune'", "one of drtune, refl, draft, draft-lv, alignprop",
        .ini = "[method]\nname = DRTune\n");
    ERR("train.schedule = 'linear'", "one of constant, cosine", .ini = "[train]\nschedule = linear\n");
    ERR("reward.colour = '0.9, 0.1'", "exactly 3 comma-separated numbers in [0, 1] (2 given)",
        .ini = "[reward]\ncolour = 0.9, 0.1\n");
    ERR("reward.colour = '0.9, 2, 0.1'", "item 2 is '2'", .ini = "[reward]\ncolour = 0.9, 2, 0.1\n");
    ERR("reward.weights = '1,,2'", "item 2 is empty", .ini = "[reward]\nweights = 1,,2\n");
    ERR("reward.weights = '1,'", "item 2 is empty", .ini = "[reward]\nweights = 1,\n");
    ERR("reward.weights = '1,2,3,4,5,6,7,8,9'", "more than 8 items", .ini = "[reward]\nweights = 1,2,3,4,5,6,7,8,9\n");
    ERR("reward.names = ''", "(0 given)", .ini = "[reward]\nnames =\n");
    ERR("reward.names = 'symmetry, symmetry'", "'symmetry' appears twice",
        .ini = "[reward]\nnames = symmetry, symmetry\n");
    ERR("train.lora_targets", "longer than 63 bytes",
        .ini = "[train]\nlora_targets = to_q, aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n");
    ERR("log.sample_seeds = '1, -2'", "item 2 is '-2'", .ini = "[log]\nsample_seeds = 1, -2\n");
    ERR("model.path = ''", "non-empty text", .ini = "[model]\npath =\n");
    ERR("model.path = '\"\"'", "non-empty text", .ini = "[model]\npath = \"\"\n");
    ERR("test.ini:2: invalid UTF-8", NULL, .ini = "[sampler]\nnegative_prompt = bad \xC3\x28 byte\n");
    {
        static char big[1200 + 64];
        snprintf(big, sizeof big, "[sampler]\nnegative_prompt = %01200d\n", 0);
        ERR("sampler.negative_prompt = '000000", "text of at most 1023 bytes", .ini = big);
        static char longline[5000 + 64];
        snprintf(longline, sizeof longline, "[sampler]\n# %05000d\n", 0);
        ERR("test.ini:2: line longer than 4096 bytes", NULL, .ini = longline);
    }
    // files
    tu_write_bytes(tu_path("nul.ini"), "[sampler]\nsteps = 3\n\0\n", 22);
    ERR("nul.ini:3: NUL byte", NULL, .file = tu_path("nul.ini"));
    ERR("cannot open", "missing.ini", .file = tu_path("missing.ini"));
    // overrides
    ERR("unknown option --sampler.stpes", "did you mean --sampler.steps?", .args = {"--sampler.stpes=3"});
    ERR("unknown option --sampler.lr", "did you mean --train.lr?", .args = {"--sampler.lr=0.1"});
    ERR("unknown option --sampeler.steps", "did you mean --sampler.steps?", .args = {"--sampeler.steps=3"});
    ERR("unknown option --foo.bar", "no section [foo]", .args = {"--foo.bar=1"});
    ERR("unknown option --train.frobnicate", "no key 'frobnicate' in [train]", .args = {"--train.frobnicate=1"});
    ERR("unexpected argument 'steps=3'", "--section.key=value", .args = {"steps=3"});
    ERR("unexpected argument '--sampler.steps'", NULL, .args = {"--sampler.steps"});
    ERR("option --steps: expected --section.key=value", NULL, .args = {"--steps=3"});
    ERR("command line: sampler.steps = 'x'", "expected an integer in [1, 1000]", .args = {"--sampler.steps=x"});
    ERR("option --sampler.steps given twice", NULL, .args = {"--sampler.steps=3", "--sampler.steps=4"});
    ERR("command line: sampler.negative_prompt", "control character", .args = {"--sampler.negative_prompt=a\nb"});
    // rules across keys
    ERR("method.k = 3 exceeds sampler.steps = 2", NULL, .args = {"--sampler.steps=2"}, .validate = 1);
    ERR("method.m = 5 exceeds sampler.steps = 4", NULL, .args = {"--sampler.steps=4"}, .validate = 1);
    ERR("method.m = 0", "refl", .args = {"--method.name=refl", "--method.m=0"}, .validate = 1);
    ERR("sampler.height = 60", "multiples of 8", .args = {"--sampler.height=60"}, .validate = 1);
    ERR("sampler.width = 100", "multiples of 8", .args = {"--sampler.width=100"}, .validate = 1);
    ERR("reward.weights has 1 value(s) but reward.names has 2", NULL, .args = {"--reward.names=symmetry,colour"},
        .validate = 1);
    ERR("reward.scales has 1 value(s) but reward.names has 2", NULL,
        .args = {"--reward.names=symmetry,colour", "--reward.weights=1,1", "--reward.scales=2"}, .validate = 1);
    ERR("reward.scales = '0'", "item 1 is '0'", .args = {"--reward.scales=0"}, .validate = 1);
    ERR("reward.names: unknown reward 'symetry'", "did you mean 'symmetry'?", .args = {"--reward.names=symetry"},
        .validate = 1);
    ERR("method.phase = 9 is outside 1..8", NULL, .args = {"--method.phase=9"}, .validate = 1);
    ERR("method.phase = 0 is outside 1..8", NULL, .args = {"--method.phase=0"}, .validate = 1);
    ERR("method.phase = 2 is only used by drtune", NULL, .args = {"--method.phase=2", "--method.name=refl"},
        .validate = 1);
    ERR("method.phase = 3 is outside 1..2", NULL,
        .args = {"--method.phase=3", "--method.draw_in_executed=true", "--method.t_min=5", "--sampler.steps=10"},
        .validate = 1);
    ERR("method.t_min = 6 is outside 1..5", NULL, .args = {"--method.t_min=6"}, .validate = 1);
    ERR("method.t_min = 2 needs an early stop", NULL, .args = {"--method.t_min=2", "--method.m=0"}, .validate = 1);
    ERR("method.t_min = 2 is only used by drtune and refl", NULL, .args = {"--method.t_min=2", "--method.name=draft"},
        .validate = 1);
    ERR("method.k_fixed = 2 is only used by alignprop", NULL, .args = {"--method.k_fixed=2"}, .validate = 1);
    ERR("method.k_fixed = 4 is outside 1..3", NULL, .args = {"--method.k_fixed=4", "--method.name=alignprop"},
        .validate = 1);
    ERR("method.draw_in_executed is only used by drtune", NULL,
        .args = {"--method.draw_in_executed=yes", "--method.name=draft"}, .validate = 1);
    ERR("method.draw_in_executed: method.k = 7 does not fit", NULL,
        .args = {"--method.draw_in_executed=yes", "--sampler.steps=10", "--method.k=7"}, .validate = 1);
    ERR("train.warmup = 200 exceeds train.iterations = 100", NULL, .args = {"--train.warmup=200"}, .validate = 1);
    ERR("output.export = lora needs train.trainable = lora", NULL,
        .args = {"--output.export=lora", "--train.trainable=full"}, .validate = 1);
    // and what the rules allow
    OK(.args = {"--method.phase=8"}, .validate = 1);
    OK(.args = {"--method.name=refl", "--method.k=50"}, .validate = 1);
    OK(.args = {"--method.name=draft-lv", "--sampler.steps=1", "--method.m=0"}, .validate = 1);
    OK(.args = {"--method.name=alignprop", "--method.k_fixed=3", "--method.m=50"}, .validate = 1);
    OK(.args = {"--method.draw_in_executed=yes", "--sampler.steps=10", "--method.k=6", "--method.phase=1"},
       .validate = 1);
    OK(.args = {"--train.trainable=full", "--output.export=both"}, .validate = 1);
}

// ---------------------------------------------------------------------------------------------------------------
// values that parse

static void test_defaults(void) {
    Config c;
    config_defaults(&c);
    config_validate(&c);
    TU_EXPECT(!strcmp(c.model.path, "data/models/tiny"), "model.path %s", c.model.path);
    TU_EXPECT(c.sampler.steps == 20 && c.sampler.guidance == 5.0 && c.sampler.eta == 0.0, "sampler");
    TU_EXPECT(c.sampler.height == 64 && c.sampler.width == 64 && c.sampler.negative_prompt[0] == 0, "sampler size");
    TU_EXPECT(c.method.name == METHOD_DRTUNE && c.method.k == 3 && c.method.m == 5, "method");
    TU_EXPECT(c.method.phase == -1 && c.method.t_min == -1 && c.method.k_fixed == -1, "method draws");
    TU_EXPECT(!c.method.draw_in_executed && c.method.lv_copies == 2 && c.method.cfg, "method flags");
    TU_EXPECT(c.reward.n_names == 1 && !strcmp(c.reward.names[0], "symmetry"), "reward.names");
    TU_EXPECT(c.reward.n_weights == 1 && c.reward.weights[0] == 1.0, "reward.weights");
    double w[CONFIG_MAX_REWARDS];
    config_reward_weights(&c, w);
    TU_EXPECT(c.reward.n_scales == 0 && w[0] == 1.0, "reward.scales: none, the weight as given");
    c.reward.names[1][0] = 'x', c.reward.n_names = c.reward.n_weights = c.reward.n_scales = 2;
    c.reward.weights[1] = -3.0, c.reward.scales[0] = 4.0, c.reward.scales[1] = 0.5;
    config_reward_weights(&c, w);
    TU_EXPECT(w[0] == 0.25 && w[1] == -6.0, "reward.scales: weights / scales (%g, %g)", w[0], w[1]);
    config_defaults(&c);
    TU_EXPECT(c.reward.n_colour == 3 && c.reward.colour[0] == 0.9 && c.reward.colour[1] == 0.1 &&
                  c.reward.colour[2] == 0.1, "reward.colour");
    TU_EXPECT(c.train.trainable == TRAINABLE_LORA && c.train.lora_rank == 4 && c.train.lora_alpha == 4.0, "lora");
    TU_EXPECT(c.train.n_lora_targets == 4 && !strcmp(c.train.lora_targets[0], "to_q") &&
                  !strcmp(c.train.lora_targets[3], "to_out.0"), "lora_targets");
    TU_EXPECT(c.train.iterations == 100 && c.train.batch == 4 && c.train.seed == 0, "train");
    TU_EXPECT(c.train.lr == 1e-4 && c.train.weight_decay == 0 && c.train.beta1 == 0.9 && c.train.beta2 == 0.999 &&
                  c.train.adam_eps == 1e-8, "adam");
    TU_EXPECT(c.train.warmup == 0 && c.train.schedule == SCHEDULE_CONSTANT && c.train.min_lr_ratio == 0 &&
                  c.train.grad_clip == 1.0 && c.train.threads == 0, "schedule");
    TU_EXPECT(!strcmp(c.data.prompts, "data/prompts/default.txt"), "data.prompts");
    TU_EXPECT(c.log.every == 1 && c.log.sample_every == 0 && c.log.n_sample_seeds == 4 && c.log.sample_seeds[3] == 3 &&
                  c.log.progress == PROGRESS_AUTO, "log");
    TU_EXPECT(!strcmp(c.output.dir, "runs/default") && c.output.checkpoint_every == 50 && c.output.keep == 3 &&
                  c.output.export_mode == EXPORT_BOTH, "output");
}

// Every key set away from its default, with the syntax's corners: a byte-order mark, CRLF line ends, comments,
// indentation, "key: value", quotes, ';' and '#' inside values, boolean spellings, spaces in lists.
static const char FULL_INI[] =
    "\xEF\xBB\xBF# a complete configuration\r\n"
    "; both comment styles\r\n"
    "[model]\r\n"
    "path = /models/sd15 with space\r\n"
    "\r\n"
    "[sampler]\r\n"
    "  steps = 50\r\n"
    "guidance = 7.5\r\n"
    "eta: 1\r\n"
    "height = 512\r\n"
    "width = 768\r\n"
    "negative_prompt = \" blurry; low quality # not a comment \"\r\n"
    "[method]\n"
    "name = alignprop\n"
    "k = 10\n"
    "m = 0\n"
    "phase = -1\n"
    "t_min = -1\n"
    "k_fixed = 4\n"
    "draw_in_executed = off\n"
    "lv_copies = 3\n"
    "cfg = No\n"
    "[reward]\n"
    "names = colour ,symmetry,  compress\n"
    "weights = 1.5, -0.25, 3e-3\n"
    "colour = 1, 0, 0.5\n"
    "[train]\n"
    "trainable = full\n"
    "lora_rank = 16\n"
    "lora_alpha = 0.5\n"
    "lora_targets = to_q, ff.net.2\n"
    "iterations = 1000\n"
    "batch = 64\n"
    "seed = 1234567\n"
    "lr = 3e-5\n"
    "weight_decay = 0.01\n"
    "beta1 = 0\n"
    "beta2 = 0.95\n"
    "adam_eps = 1e-6\n"
    "warmup = 100\n"
    "schedule = cosine\n"
    "min_lr_ratio = 0.1\n"
    "grad_clip = 0\n"
    "threads = 8\n"
    "[data]\n"
    "prompts = prompts/animals.txt\n"
    "[log]\n"
    "every = 10\n"
    "sample_every = 25\n"
    "sample_seeds =\n"
    "progress = off\n"
    "[output]\n"
    "dir = runs/alignprop-colour\n"
    "checkpoint_every = 0\n"
    "keep = 0\n"
    "export = merged\n";

static void check_full(const Config *c) {
    TU_EXPECT(!strcmp(c->model.path, "/models/sd15 with space"), "path '%s'", c->model.path);
    TU_EXPECT(c->sampler.steps == 50 && c->sampler.guidance == 7.5 && c->sampler.eta == 1.0, "sampler");
    TU_EXPECT(c->sampler.height == 512 && c->sampler.width == 768, "size");
    TU_EXPECT(!strcmp(c->sampler.negative_prompt, " blurry; low quality # not a comment "), "negative_prompt '%s'",
              c->sampler.negative_prompt);
    TU_EXPECT(c->method.name == METHOD_ALIGNPROP && c->method.k == 10 && c->method.m == 0 && c->method.k_fixed == 4,
              "method");
    TU_EXPECT(!c->method.draw_in_executed && c->method.lv_copies == 3 && !c->method.cfg, "method flags");
    TU_EXPECT(c->reward.n_names == 3 && !strcmp(c->reward.names[0], "colour") &&
                  !strcmp(c->reward.names[1], "symmetry") && !strcmp(c->reward.names[2], "compress"),
              "names");
    TU_EXPECT(c->reward.n_weights == 3 && c->reward.weights[0] == 1.5 && c->reward.weights[1] == -0.25 &&
                  c->reward.weights[2] == 3e-3, "weights");
    TU_EXPECT(c->reward.colour[0] == 1 && c->reward.colour[1] == 0 && c->reward.colour[2] == 0.5, "colour");
    TU_EXPECT(c->train.trainable == TRAINABLE_FULL && c->train.lora_rank == 16 && c->train.lora_alpha == 0.5, "lora");
    TU_EXPECT(c->train.n_lora_targets == 2 && !strcmp(c->train.lora_targets[1], "ff.net.2"), "targets");
    TU_EXPECT(c->train.iterations == 1000 && c->train.batch == 64 && c->train.seed == 1234567, "train");
    TU_EXPECT(c->train.lr == 3e-5 && c->train.weight_decay == 0.01 && c->train.beta1 == 0 && c->train.beta2 == 0.95 &&
                  c->train.adam_eps == 1e-6, "adam");
    TU_EXPECT(c->train.warmup == 100 && c->train.schedule == SCHEDULE_COSINE && c->train.min_lr_ratio == 0.1 &&
                  c->train.grad_clip == 0 && c->train.threads == 8, "schedule");
    TU_EXPECT(!strcmp(c->data.prompts, "prompts/animals.txt"), "prompts");
    TU_EXPECT(c->log.every == 10 && c->log.sample_every == 25 && c->log.n_sample_seeds == 0 &&
                  c->log.progress == PROGRESS_OFF, "log");
    TU_EXPECT(!strcmp(c->output.dir, "runs/alignprop-colour") && c->output.checkpoint_every == 0 &&
                  c->output.keep == 0 && c->output.export_mode == EXPORT_MERGED,
              "output");
}

static void test_full_and_overrides(void) {
    Config c;
    config_defaults(&c);
    config_parse_string(&c, FULL_INI, "full.ini");
    config_validate(&c);
    check_full(&c);

    // the same through a file and config_load, then overrides on top
    tu_write_bytes(tu_path("full.ini"), FULL_INI, sizeof FULL_INI - 1);
    char *args[] = {"--sampler.steps=12", "--reward.weights= 2, 3 ,4 ", "--sampler.negative_prompt=\"\"",
                    "--method.cfg=TRUE", "--log.sample_seeds=7,8", "--model.path=x"};
    config_load(&c, tu_path("full.ini"), 6, args);
    TU_EXPECT(c.sampler.steps == 12 && c.sampler.guidance == 7.5, "steps overridden, guidance from the file");
    TU_EXPECT(c.reward.n_weights == 3 && c.reward.weights[0] == 2 && c.reward.weights[2] == 4, "weights overridden");
    TU_EXPECT(c.sampler.negative_prompt[0] == 0 && c.method.cfg == 1, "negative prompt emptied, cfg on");
    TU_EXPECT(c.log.n_sample_seeds == 2 && c.log.sample_seeds[0] == 7 && c.log.sample_seeds[2] == 0, "seeds");
    TU_EXPECT(!strcmp(c.model.path, "x") && !memchr(c.model.path + 2, '/', sizeof c.model.path - 2),
              "a shorter string leaves no trace of the longer one");
}

// config_to_ini gives text that parses back to the same Config, bit for bit, and to the same text.
static void round_trip(const Config *c, const char *what) {
    char *text1, *text2;
    config_to_ini(c, &text1);
    Config back;
    config_defaults(&back);
    config_parse_string(&back, text1, "resolved.ini");
    config_to_ini(&back, &text2);
    TU_EXPECT(!memcmp(c, &back, sizeof back), "%s: round trip changed the Config", what);
    TU_EXPECT(!strcmp(text1, text2), "%s: round trip changed the text:\n%s\n---\n%s", what, text1, text2);
    free(text1);
    free(text2);
}

static void test_round_trip(void) {
    Config c;
    config_defaults(&c);
    round_trip(&c, "defaults");
    config_parse_string(&c, FULL_INI, "full.ini");
    round_trip(&c, "full");
    char *args[] = {"--train.lr=0.30000000000000004", "--sampler.guidance=7.123456789012345",
                    "--train.adam_eps=4.9e-324", "--sampler.negative_prompt=\"quoted\"",
                    "--reward.weights=1e5,-0.1,0.7", "--model.path= lead and trail ", "--data.prompts=a\"b"};
    config_apply_overrides(&c, 7, args);
    TU_EXPECT(!strcmp(c.sampler.negative_prompt, "quoted"), "quotes stripped: '%s'", c.sampler.negative_prompt);
    TU_EXPECT(!strcmp(c.model.path, "lead and trail"), "override trimmed: '%s'", c.model.path);
    char *args2[] = {"--sampler.negative_prompt=\"\"quoted\"\"", "--model.path=\" padded \""};
    config_apply_overrides(&c, 2, args2);
    TU_EXPECT(!strcmp(c.sampler.negative_prompt, "\"quoted\""), "inner quotes kept: '%s'", c.sampler.negative_prompt);
    round_trip(&c, "awkward values");
    char *text;
    config_to_ini(&c, &text);
    TU_EXPECT(strstr(text, "lr = 0.30000000000000004\n") && strstr(text, "adam_eps = 5e-324\n") &&
                  strstr(text, "path = \" padded \"\n") && strstr(text, "negative_prompt = \"\"quoted\"\"\n"),
              "resolved text:\n%s", text);
    free(text);
}

static void test_help_and_docs(int write_docs) {
    char *help = memstream_text(config_print_help);
    TU_EXPECT(strstr(help, "--sampler.steps=INT") &&
                  strstr(help, "--method.name=drtune|refl|draft|draft-lv|alignprop") &&
                  strstr(help, "--reward.colour=NUM,...") && strstr(help, "default 0.9, 0.1, 0.1") &&
                  strstr(help, "--output.export=lora|merged|both|none") && strstr(help, "default 0.0001;") &&
                  strstr(help, "default 1e-8;"),
              "help text:\n%s", help);
    TU_EXPECT(!strstr(help, "`"), "help text has markdown quotes");
    free(help);

    char *md = memstream_text(config_write_markdown);
    if (write_docs) {
        dt_write_file_atomic("docs/CONFIG.md", md, strlen(md));
        printf("wrote docs/CONFIG.md\n");
    }
    char *doc = tu_read_all("docs/CONFIG.md", NULL);
    TU_EXPECT(doc && !strcmp(doc, md),
              "docs/CONFIG.md is missing or differs from the schema: regenerate it with build/tests/train_config "
              "--write-docs (run from the repository root)");
    TU_EXPECT(strstr(md, "| `steps` | integer | `20` | an integer in [1, 1000] | DDIM sampling steps N |"),
              "markdown row for steps");
    free(doc);
    free(md);
}

int main(int argc, char **argv) {
    int write_docs = argc > 1 && !strcmp(argv[1], "--write-docs");
    tu_tmpdir("train_config");
    test_defaults();
    test_full_and_overrides();
    test_round_trip();
    test_errors();
    test_help_and_docs(write_docs);
    return tu_report();
}
