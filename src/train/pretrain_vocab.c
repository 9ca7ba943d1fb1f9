// pretrain_vocab.c: the small model's own CLIP tokenizer (CLIP's 49408 tokens would outweigh the model): the byte
// symbols, their "</w>" forms, BPE merges learnt from the caption words until each is one symbol, and the two special
// tokens as the largest ids, in the layout transformers' CLIPTokenizer and src/models/tokenizer.c read.
#include <cjson/cJSON.h>
#include <ctype.h>
#include <string.h>

#include "../core/common.h"
#include "pretrain.h"

// GPT-2 / CLIP bytes_to_unicode: printable Latin-1 bytes map to themselves, the rest to U+0100 onwards. order[i] is
// the byte of vocabulary id i (ids 0..255 follow this order, as in CLIP's vocab.json).
static void byte_symbols(char sym[256][4], int order[256]) {
    int n = 0, extra = 0, is_direct[256] = {0};
    for (int b = 0; b < 256; b++)
        is_direct[b] = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    for (int b = 0; b < 256; b++)
        if (is_direct[b]) order[n++] = b;
    for (int b = 0; b < 256; b++)
        if (!is_direct[b]) order[n++] = b;
    for (int i = 0; i < 256; i++) {
        int b = order[i];
        unsigned cp = is_direct[b] ? (unsigned)b : 256u + (unsigned)extra++;
        if (cp < 0x80) {
            sym[b][0] = (char)cp, sym[b][1] = 0;
        } else { // two UTF-8 bytes suffice below U+0800
            sym[b][0] = (char)(0xC0 | (cp >> 6)), sym[b][1] = (char)(0x80 | (cp & 0x3F)), sym[b][2] = 0;
        }
    }
}

#define WORD_MAX 64

typedef struct {
    int sym[WORD_MAX]; // symbol ids
    int n, count;
    char text[WORD_MAX];
} Word;

typedef struct {
    char **names; // symbol id -> text ("</w>" included)
    int n, cap;
} Symbols;

static int symbol_add(Symbols *s, const char *name) {
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 1024;
        s->names = xrealloc(s->names, sizeof(char *) * (size_t)s->cap);
    }
    s->names[s->n] = xstrdup(name);
    return s->n++;
}

// Pieces of CLIP's pre-tokeniser on lower-case ASCII captions: letter runs, single digits, other non-space runs.
static void collect_words(Word **words, int *n_words, int *cap, const char *caption) {
    const char *p = caption;
    while (*p) {
        unsigned char ch = (unsigned char)*p;
        if (isspace(ch)) { p++; continue; }
        const char *q = p + 1;
        if (isalpha(ch))
            while (*q && isalpha((unsigned char)*q)) q++;
        else if (!isdigit(ch))
            while (*q && !isspace((unsigned char)*q) && !isalnum((unsigned char)*q)) q++;
        size_t len = (size_t)(q - p);
        USER_CHECK(len < WORD_MAX, "caption word of %zu bytes in \"%s\": at most %d", len, caption, WORD_MAX - 1);
        char w[WORD_MAX];
        for (size_t i = 0; i < len; i++) w[i] = (char)tolower((unsigned char)p[i]);
        w[len] = 0;
        int found = -1;
        for (int i = 0; i < *n_words && found < 0; i++)
            if (!strcmp((*words)[i].text, w)) found = i;
        if (found < 0) {
            if (*n_words == *cap) {
                *cap = *cap ? 2 * *cap : 64;
                *words = xrealloc(*words, sizeof(Word) * (size_t)*cap);
            }
            found = (*n_words)++;
            memset(&(*words)[found], 0, sizeof(Word));
            snprintf((*words)[found].text, WORD_MAX, "%s", w);
        }
        (*words)[found].count++;
        p = q;
    }
}

int pretrain_write_tokenizer(const char *dir, const char *const *captions, int n) {
    char sym[256][4];
    int order[256], byte_id[256], byte_end_id[256];
    byte_symbols(sym, order);
    Symbols S = {0};
    char buf[4 * WORD_MAX + 8];
    for (int i = 0; i < 256; i++) byte_id[order[i]] = symbol_add(&S, sym[order[i]]);
    for (int i = 0; i < 256; i++) {
        snprintf(buf, sizeof buf, "%s</w>", sym[order[i]]);
        byte_end_id[order[i]] = symbol_add(&S, buf);
    }
    Word *words = NULL;
    int n_words = 0, cap = 0;
    for (int i = 0; i < n; i++) collect_words(&words, &n_words, &cap, captions[i]);
    for (int i = 0; i < n_words; i++) {
        Word *w = &words[i];
        w->n = (int)strlen(w->text);
        for (int j = 0; j < w->n; j++) {
            unsigned char b = (unsigned char)w->text[j];
            w->sym[j] = j == w->n - 1 ? byte_end_id[b] : byte_id[b];
        }
    }
    // Learn merges: the most frequent adjacent pair (ties: the smaller pair of ids) until every word is one symbol.
    char *merges = NULL;
    size_t merges_len = 0;
    FILE *mf = open_memstream(&merges, &merges_len);
    CHECK(mf, "", "open_memstream failed");
    fprintf(mf, "#version: 0.2\n");
    for (;;) {
        int best_a = -1, best_b = -1;
        long best = 0;
        for (int i = 0; i < n_words; i++)
            for (int j = 0; j + 1 < words[i].n; j++) {
                int a = words[i].sym[j], b = words[i].sym[j + 1];
                long cnt = 0;
                for (int k = 0; k < n_words; k++)
                    for (int m = 0; m + 1 < words[k].n; m++)
                        if (words[k].sym[m] == a && words[k].sym[m + 1] == b) cnt += words[k].count;
                if (cnt > best || (cnt == best && (a < best_a || (a == best_a && b < best_b))))
                    best = cnt, best_a = a, best_b = b;
            }
        if (best_a < 0) break;
        snprintf(buf, sizeof buf, "%s%s", S.names[best_a], S.names[best_b]);
        int id = symbol_add(&S, buf);
        fprintf(mf, "%s %s\n", S.names[best_a], S.names[best_b]);
        for (int i = 0; i < n_words; i++) {
            Word *w = &words[i];
            int k = 0;
            for (int j = 0; j < w->n; j++) {
                if (j + 1 < w->n && w->sym[j] == best_a && w->sym[j + 1] == best_b) {
                    w->sym[k++] = id;
                    j++;
                } else {
                    w->sym[k++] = w->sym[j];
                }
            }
            w->n = k;
        }
    }
    fclose(mf);
    int bos = symbol_add(&S, "<|startoftext|>"), eos = symbol_add(&S, "<|endoftext|>");
    dt_mkdirs(dir);
    char path[PRETRAIN_PATH_MAX + 64];
    dt_write_file_atomic(dt_path(path, sizeof path, "%s/merges.txt", dir), merges, merges_len);
    cJSON *vocab = cJSON_CreateObject();
    for (int i = 0; i < S.n; i++) cJSON_AddItemToObject(vocab, S.names[i], cJSON_CreateNumber(i));
    char *text = cJSON_PrintUnformatted(vocab);
    CHECK(text, "", "cJSON_PrintUnformatted failed");
    dt_write_file_atomic(dt_path(path, sizeof path, "%s/vocab.json", dir), text, strlen(text));
    cJSON_free(text);
    cJSON_Delete(vocab);
    static const char special[] = "{\n  \"bos_token\": \"<|startoftext|>\",\n  \"eos_token\": \"<|endoftext|>\",\n"
                                  "  \"pad_token\": \"<|endoftext|>\",\n  \"unk_token\": \"<|endoftext|>\"\n}\n";
    dt_write_file_atomic(dt_path(path, sizeof path, "%s/special_tokens_map.json", dir), special, strlen(special));
    char cfg[2048];
    int len = snprintf(cfg, sizeof cfg,
                       "{\n  \"add_prefix_space\": false,\n  \"added_tokens_decoder\": {\n"
                       "    \"%d\": {\"content\": \"<|startoftext|>\", \"lstrip\": false, \"normalized\": true, "
                       "\"rstrip\": false, \"single_word\": false, \"special\": true},\n"
                       "    \"%d\": {\"content\": \"<|endoftext|>\", \"lstrip\": false, \"normalized\": false, "
                       "\"rstrip\": false, \"single_word\": false, \"special\": true}\n  },\n"
                       "  \"bos_token\": \"<|startoftext|>\",\n  \"clean_up_tokenization_spaces\": true,\n"
                       "  \"do_lower_case\": true,\n  \"eos_token\": \"<|endoftext|>\",\n  \"errors\": \"replace\",\n"
                       "  \"model_max_length\": 77,\n  \"pad_token\": \"<|endoftext|>\",\n"
                       "  \"tokenizer_class\": \"CLIPTokenizer\",\n  \"unk_token\": \"<|endoftext|>\"\n}\n",
                       bos, eos);
    dt_write_file_atomic(dt_path(path, sizeof path, "%s/tokenizer_config.json", dir), cfg, (size_t)len);
    int vocab_size = S.n;
    for (int i = 0; i < S.n; i++) free(S.names[i]);
    free(S.names);
    free(words);
    free(merges);
    return vocab_size;
}
