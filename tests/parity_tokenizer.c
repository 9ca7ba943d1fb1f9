// parity_tokenizer.c: the C CLIP tokenizer against transformers' CLIPTokenizer: every case of
// tests/fixtures/tokenizer_cases.json for both padding variants (SD 1.5/SDXL `tokenizer`, SDXL `tokenizer_2`), the
// test vectors of model_specs 5.6, random bytes, and the user errors of broken tokenizer folders.
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../src/core/common.h"
#include "../src/io/json.h"
#include "../src/models/tokenizer.h"
#include "testutil.h"

#define FIXTURE "tests/fixtures/tokenizer_cases.json"
#define MAX_PRINTED 25

static int g_printed;

static void print_escaped(const char *s, size_t max) {
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p && n < max; p++, n++) {
        if (*p == '\n') fputs("\\n", stdout);
        else if (*p == '\t') fputs("\\t", stdout);
        else if (*p < 0x20 || *p == 0x7F) printf("\\x%02x", *p);
        else putchar(*p);
    }
    if (strlen(s) > max) fputs("...", stdout);
}

static void print_ids(const char *label, const int32_t *ids, int n) {
    printf("    %s:", label);
    for (int i = 0; i < n; i++) printf(" %d", ids[i]);
    putchar('\n');
}

// Compares one encoding with the expected ids (bos .. eos) followed by pad up to 77.
static int check_ids(const Tokenizer *t, const char *input, const cJSON *expect, int pad, const char *what,
                     const char *category, const char *text, int verbose) {
    int32_t want[TOKENIZER_MAX_LENGTH], got[TOKENIZER_MAX_LENGTH];
    int n_want = cJSON_GetArraySize(expect);
    CHECK(n_want >= 2 && n_want <= TOKENIZER_MAX_LENGTH, "regenerate the fixture", "%s: bad id list", FIXTURE);
    for (int i = 0; i < TOKENIZER_MAX_LENGTH; i++)
        want[i] = i < n_want ? (int32_t)cJSON_GetArrayItem(expect, i)->valueint : pad;
    int n_got = tokenizer_encode(t, input, got, TOKENIZER_MAX_LENGTH);
    int ok = n_got == n_want && memcmp(want, got, sizeof want) == 0;
    if (!ok && verbose && g_printed++ < MAX_PRINTED) {
        printf("  MISMATCH [%s] %s \"", what, category);
        print_escaped(text, 120);
        printf("\" (%d vs %d ids)\n", n_got, n_want);
        print_ids("want", want, n_want);
        print_ids("got ", got, n_got);
    }
    return ok;
}

static void hex_decode(const char *hex, char *out) {
    size_t n = strlen(hex) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        CHECK(sscanf(hex + 2 * i, "%2x", &v) == 1, "regenerate the fixture", "bad utf8_hex \"%s\"", hex);
        out[i] = (char)v;
    }
    out[n] = '\0';
}

static void run_fixture(const Tokenizer *tok, const Tokenizer *tok2) {
    JsonDoc doc;
    json_load(&doc, FIXTURE);
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(doc.root, "cases");
    CHECK(cJSON_IsArray(cases), "regenerate the fixture", "%s: no \"cases\" array", FIXTURE);
    int n_cases = 0, known = 0, known_fixed = 0, ftfy = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cases) {
        const char *category = cJSON_GetObjectItemCaseSensitive(c, "category")->valuestring;
        const char *text = cJSON_GetObjectItemCaseSensitive(c, "text")->valuestring;
        const cJSON *hex = cJSON_GetObjectItemCaseSensitive(c, "utf8_hex");
        const cJSON *reason = cJSON_GetObjectItemCaseSensitive(c, "known_mismatch");
        char *input = xstrdup(text);
        if (cJSON_IsString(hex)) {
            input = xrealloc(input, strlen(hex->valuestring) / 2 + 1);
            hex_decode(hex->valuestring, input);
        }
        int ok = check_ids(tok, input, cJSON_GetObjectItemCaseSensitive(c, "ids"), tok->pad_id, "pad 49407",
                           category, text, !reason);
        ok &= check_ids(tok2, input, cJSON_GetObjectItemCaseSensitive(c, "ids_pad0"), tok2->pad_id, "pad 0",
                        category, text, !reason);
        n_cases++;
        ftfy += cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "ftfy_changes_text"));
        if (reason) {
            known++;
            known_fixed += ok;
            printf("  known mismatch%s: %s \"", ok ? " (now matches)" : "", category);
            print_escaped(text, 60);
            printf("\": %s\n", reason->valuestring);
        } else {
            tu_count(ok); // a mismatch is printed by check_ids
        }
        free(input);
    }
    printf("fixture: %d cases x 2 padding variants; %d known mismatches (%d now match); %d cases whose text ftfy "
           "(transformers 4.x) would have changed\n", n_cases, known, known_fixed, ftfy);
    json_free(&doc);
}

// model_specs 5.6 test vectors (pad 49407) and the SDXL tokenizer_2 "!" case of diffusers issue 4153.
static void run_spec_vectors(const Tokenizer *tok, const Tokenizer *tok2) {
    static const struct {
        const char *text;
        int32_t ids[12];
        int n;
        int pad0;
    } vec[] = {
        {"a photo of a cat", {49406, 320, 1125, 539, 320, 2368, 49407}, 7, 0},
        {"A cat with two horns on its head", {49406, 320, 2368, 593, 1237, 22109, 525, 902, 1375, 49407}, 10, 0},
        {"an astronaut riding a horse, 4k!!", {49406, 550, 18376, 6765, 320, 4558, 267, 275, 330, 748, 49407}, 11, 0},
        {"", {49406, 49407}, 2, 0},
        {"! !! !!!", {49406, 0, 0, 0, 0, 0, 0, 49407}, 8, 1},
    };
    for (size_t v = 0; v < sizeof vec / sizeof vec[0]; v++) {
        const Tokenizer *t = vec[v].pad0 ? tok2 : tok;
        int32_t got[TOKENIZER_MAX_LENGTH];
        int n = tokenizer_encode(t, vec[v].text, got, TOKENIZER_MAX_LENGTH);
        int ok = n == vec[v].n && memcmp(got, vec[v].ids, (size_t)n * sizeof *got) == 0;
        for (int i = n; i < TOKENIZER_MAX_LENGTH; i++) ok &= got[i] == t->pad_id;
        if (!tu_count(ok)) {
            printf("  MISMATCH spec vector \"%s\"\n", vec[v].text);
            print_ids("want", vec[v].ids, vec[v].n);
            print_ids("got ", got, n);
        }
    }
}

// Arbitrary bytes must never crash and always give a well-formed sequence.
static void run_random_bytes(const Tokenizer *tok) {
    uint64_t s = 0x9E3779B97F4A7C15ull;
    int bad = 0;
    for (int k = 0; k < 2000; k++) {
        char buf[256];
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        int len = 1 + (int)((s >> 33) % 255);
        for (int i = 0; i < len; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            buf[i] = (char)(1 + (s >> 33) % 255);
        }
        buf[len] = '\0';
        int32_t ids[TOKENIZER_MAX_LENGTH];
        int n = tokenizer_encode(tok, buf, ids, TOKENIZER_MAX_LENGTH);
        int ok = n >= 2 && n <= TOKENIZER_MAX_LENGTH && ids[0] == 49406 && ids[n - 1] == 49407;
        for (int i = 0; i < TOKENIZER_MAX_LENGTH; i++) ok &= ids[i] >= 0 && ids[i] < 49408;
        bad += !ok;
    }
    TU_EXPECT(bad == 0, "random bytes: %d malformed sequences", bad);
}

// The child's work in run_broken_folders: loading a tokenizer folder, which must end in a user error.
static void load_tokenizer(const void *dir) {
    Tokenizer t;
    tokenizer_load(&t, dir);
}

static void link_clip_file(const char *dir, const char *name) {
    char cwd[400], target[512], path[512];
    CHECK(getcwd(cwd, sizeof cwd), "", "getcwd failed");
    snprintf(target, sizeof target, "%s/data/tokenizer/clip/%s", cwd, name);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    unlink(path);
    CHECK(symlink(target, path) == 0, "", "symlink %s failed", path);
}

static void run_broken_folders(void) {
    const char *dir = tu_tmpdir("tok");
    TU_EXPECT_USER_ERROR(load_tokenizer, "/nonexistent/drtune/tokenizer", "vocab.json");
    tu_write_text(tu_path("vocab.json"), "{\"a\": 0,");
    TU_EXPECT_USER_ERROR(load_tokenizer, dir, "vocab.json");
    tu_write_text(tu_path("vocab.json"), "{\"a\": 0}");
    TU_EXPECT_USER_ERROR(load_tokenizer, dir, "vocab.json");  // no byte symbols
    link_clip_file(dir, "vocab.json");
    TU_EXPECT_USER_ERROR(load_tokenizer, dir, "merges.txt");  // missing
    tu_write_text(tu_path("merges.txt"), "#version: 0.2\ni n\nt h e\n");
    TU_EXPECT_USER_ERROR(load_tokenizer, dir, "merges.txt");
    tu_write_text(tu_path("merges.txt"), "#version: 0.2\ni n\nq \xc3\xbf\xc3\xbf\n");
    TU_EXPECT_USER_ERROR(load_tokenizer, dir, "merges.txt");  // merge of tokens missing from the vocabulary
    link_clip_file(dir, "merges.txt");
    TU_EXPECT_USER_ERROR(load_tokenizer, dir, "tokenizer_config.json");  // missing
    tu_write_text(tu_path("tokenizer_config.json"), "{\"pad_token\": \"<|no such token|>\"}");
    TU_EXPECT_USER_ERROR(load_tokenizer, dir, "pad_token");
}

int main(void) {
    Tokenizer tok, tok2;
    double t0 = dt_now();
    tokenizer_load(&tok, "data/tokenizer/clip");
    tokenizer_load_split(&tok2, "data/tokenizer/clip", "data/tokenizer/clip_pad0");
    printf("loaded both tokenizers in %.3f s (pad ids %d and %d)\n", dt_now() - t0, tok.pad_id, tok2.pad_id);
    CHECK(tok.pad_id == 49407 && tok2.pad_id == 0 && tok.bos_id == 49406 && tok.eos_id == 49407, "",
          "unexpected special ids");

    t0 = dt_now();
    run_fixture(&tok, &tok2);
    printf("fixture encoded in %.3f s\n", dt_now() - t0);
    run_spec_vectors(&tok, &tok2);
    run_random_bytes(&tok);
    run_broken_folders();

    tokenizer_free(&tok);
    tokenizer_free(&tok2);
    return tu_report();
}
