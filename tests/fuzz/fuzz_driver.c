// fuzz_driver.c: runs the fuzz target without libFuzzer: every file of a seed corpus, then deterministic random
// mutations of them (byte edits, splices, header-length rewrites, dictionary tokens), so the parser is exercised
// on machines without clang. Usage: fuzz_driver <corpus_dir> [mutations] [seed]
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_SEEDS 256
#define MAX_INPUT_BYTES 8192

typedef struct {
    uint8_t *b;
    size_t n;
} Input;

static uint64_t g_rng;

static uint64_t next_u64(void) { // splitmix64
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static size_t below(size_t n) { return n ? (size_t)(next_u64() % n) : 0; }

static const char *const TOKENS[] = {
    "{", "}", "[", "]", ",", ":", "\"", "\\", "\\u0000", "\\ud800", " ", "0", "-1", "1.5", "1e300",
    "9007199254740993", "4294967296", "\"dtype\"", "\"shape\"", "\"data_offsets\"", "\"__metadata__\"", "\"F32\"",
    "\"F16\"", "\"BF16\"", "\"I32\"", "\"I64\"", "\"F64\"", "\"F8_E4M3\"", "[]", "{}", "\xff", "\xc0\xaf",
    "\xed\xa0\x80", "\xf0\x9d\x84\x9e",
};

// Replaces len bytes at pos of in (capacity MAX_INPUT_BYTES) by the n bytes of s; returns the change in size.
static long splice(Input *in, size_t pos, size_t len, const void *s, size_t n) {
    if (in->n - len + n > MAX_INPUT_BYTES) return 0;
    memmove(in->b + pos + n, in->b + pos + len, in->n - pos - len);
    memcpy(in->b + pos, s, n);
    in->n = in->n - len + n;
    return (long)n - (long)len;
}

static uint64_t read_len(const Input *in) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | in->b[i];
    return v;
}

static void write_len(Input *in, uint64_t v) {
    if (in->n < 8) return;
    for (int i = 0; i < 8; i++) in->b[i] = (uint8_t)(v >> (8 * i));
}

// Mostly edits the JSON header and then repairs the length field, so the edits reach the schema and layout
// checks; otherwise edits anywhere, length field included.
static void mutate(Input *in, const Input *seeds, int n_seeds) {
    size_t lo = 0, hi = in->n; // edits land in [lo, hi]
    int fix_len = 0;
    if (in->n >= 8 && read_len(in) <= in->n - 8 && below(4)) {
        lo = 8;
        hi = 8 + (size_t)read_len(in);
        fix_len = 1;
    }
    int steps = 1 + (int)below(4);
    for (int s = 0; s < steps; s++) {
        size_t pos = lo + below(hi - lo + 1), len = hi - pos;
        switch (below(9)) {
        case 0: // flip one bit
            if (hi > lo) in->b[lo + below(hi - lo)] ^= (uint8_t)(1u << below(8));
            break;
        case 1: // random byte
            if (hi > lo) in->b[lo + below(hi - lo)] = (uint8_t)next_u64();
            break;
        case 2: { // insert a token
            const char *t = TOKENS[below(sizeof TOKENS / sizeof TOKENS[0])];
            hi += splice(in, pos, 0, t, strlen(t));
            break;
        }
        case 3: { // overwrite with a token
            const char *t = TOKENS[below(sizeof TOKENS / sizeof TOKENS[0])];
            size_t n = strlen(t);
            hi += splice(in, pos, n < len ? n : len, t, n);
            break;
        }
        case 4: // delete a range
            hi += splice(in, pos, below(len < 32 ? len + 1 : 33), "", 0);
            break;
        case 5: { // duplicate a range
            size_t n = below(len < 64 ? len + 1 : 65);
            uint8_t tmp[64];
            memcpy(tmp, in->b + pos, n);
            hi += splice(in, pos, 0, tmp, n);
            break;
        }
        case 6: { // splice in a piece of another seed
            const Input *o = &seeds[below((size_t)n_seeds)];
            size_t op = below(o->n + 1), n = below(o->n - op + 1);
            hi += splice(in, pos, below(len + 1), o->b + op, n);
            break;
        }
        case 7: { // a header length near the true one, or far from it, kept as is
            uint64_t v = below(2) ? (uint64_t)in->n - 8 - below(16) + below(16)
                                  : (uint64_t[]){0, 1, 100000000, 100000001, UINT64_MAX, UINT64_MAX - 7,
                                                 1ull << 32}[below(7)];
            write_len(in, v);
            fix_len = 0;
            break;
        }
        default: // truncate (the data only, when editing the header)
            in->n = hi + below(in->n - hi + 1);
            if (!fix_len) hi = in->n;
            break;
        }
    }
    if (fix_len) write_len(in, hi - 8);
}

static int load_corpus(const char *dir, Input *seeds) {
    DIR *d = opendir(dir);
    if (!d) {
        perror(dir);
        exit(1);
    }
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) && n < MAX_SEEDS;) {
        if (e->d_name[0] == '.') continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        if (!f) continue;
        seeds[n].b = malloc(MAX_INPUT_BYTES);
        seeds[n].n = fread(seeds[n].b, 1, MAX_INPUT_BYTES, f);
        fclose(f);
        n++;
    }
    closedir(d);
    return n;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s <corpus_dir> [mutations] [seed]\n", argv[0]);
        return 2;
    }
    long mutations = argc > 2 ? atol(argv[2]) : 300000;
    g_rng = argc > 3 ? strtoull(argv[3], NULL, 10) : 1;
    static Input seeds[MAX_SEEDS];
    int n_seeds = load_corpus(argv[1], seeds);
    if (!n_seeds) {
        fprintf(stderr, "%s: no seed files\n", argv[1]);
        return 1;
    }
    clock_t t0 = clock();
    for (int i = 0; i < n_seeds; i++) {
        uint8_t *exact = malloc(seeds[i].n ? seeds[i].n : 1); // exact-size copies, so an over-read trips the sanitizer
        memcpy(exact, seeds[i].b, seeds[i].n);
        LLVMFuzzerTestOneInput(exact, seeds[i].n);
        free(exact);
    }
    Input work = {malloc(MAX_INPUT_BYTES), 0};
    for (long k = 0; k < mutations; k++) {
        const Input *s = &seeds[below((size_t)n_seeds)];
        memcpy(work.b, s->b, s->n);
        work.n = s->n;
        mutate(&work, seeds, n_seeds);
        uint8_t *exact = malloc(work.n ? work.n : 1);
        memcpy(exact, work.b, work.n);
        LLVMFuzzerTestOneInput(exact, work.n);
        free(exact);
    }
    printf("fuzz_driver: %d seeds and %ld mutations in %.1f s, no faults\n", n_seeds, mutations,
           (double)(clock() - t0) / CLOCKS_PER_SEC);
    free(work.b);
    for (int i = 0; i < n_seeds; i++) free(seeds[i].b);
    return 0;
}
