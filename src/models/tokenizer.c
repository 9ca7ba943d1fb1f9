// tokenizer.c: CLIP byte-level BPE tokenizer (see tokenizer.h for the pipeline): loading a diffusers tokenizer
// folder and turning prompts into the 77 ids the text encoders take.
#include "tokenizer.h"

#include <string.h>
#include <unistd.h>

#include "../core/common.h"
#include "../io/json.h"
#include "tokenizer_unicode.h"

// ---------------------------------------------------------------------------------------------------------------
// loading

// vocab.json as a temporary string -> id table; keys point into the parsed JSON document.
typedef struct {
    const char **keys;
    int32_t *ids;
    size_t cap;  // power of two
} VocabMap;

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;  // FNV-1a
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static uint64_t hash_u64(uint64_t x) {  // splitmix64 finaliser
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

static void vocab_build(VocabMap *m, const JsonDoc *doc) {
    m->cap = pow2_at_least(2 * (size_t)cJSON_GetArraySize(doc->root) + 1);
    m->keys = xcalloc(m->cap, sizeof *m->keys);
    m->ids = xmalloc(m->cap * sizeof *m->ids);
    for (const cJSON *e = doc->root->child; e; e = e->next) {
        USER_CHECK(cJSON_IsNumber(e) && e->valuedouble >= 0 && e->valuedouble < 2147483647.0 &&
                       e->valuedouble == (double)(int32_t)e->valuedouble,
                   "'%s': the id of token \"%s\" is not a non-negative integer", doc->path, e->string);
        size_t slot = hash_bytes(e->string, strlen(e->string)) & (m->cap - 1);
        while (m->keys[slot] && strcmp(m->keys[slot], e->string) != 0) slot = (slot + 1) & (m->cap - 1);
        m->keys[slot] = e->string;  // a repeated key keeps its last id, as Python's json does
        m->ids[slot] = (int32_t)e->valuedouble;
    }
}

static int32_t vocab_find(const VocabMap *m, const char *s) {
    size_t slot = hash_bytes(s, strlen(s)) & (m->cap - 1);
    while (m->keys[slot]) {
        if (strcmp(m->keys[slot], s) == 0) return m->ids[slot];
        slot = (slot + 1) & (m->cap - 1);
    }
    return -1;
}

static void vocab_free(VocabMap *m) {
    free(m->keys);
    free(m->ids);
}

static uint64_t merge_key(int32_t a, int32_t b) { return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b; }

static size_t merge_slot(const Tokenizer *t, uint64_t key) {
    size_t slot = hash_u64(key) & (t->merge_cap - 1);
    while (t->merge_keys[slot] != UINT64_MAX && t->merge_keys[slot] != key) slot = (slot + 1) & (t->merge_cap - 1);
    return slot;
}

// Rank and merged id of the pair (a, b); 0 when the pair never merges.
static int merge_find(const Tokenizer *t, int32_t a, int32_t b, int32_t *rank, int32_t *id) {
    size_t slot = merge_slot(t, merge_key(a, b));
    if (t->merge_keys[slot] == UINT64_MAX) return 0;
    *rank = t->merge_rank[slot];
    *id = t->merge_id[slot];
    return 1;
}

// merges.txt: "#version" lines are skipped, every other line is "left right" (one space); the rank is the merge's
// position. A pair listed twice keeps its last rank, as the `tokenizers` loader does.
static void merges_load(Tokenizer *t, const VocabMap *vocab, const char *path, const char *vocab_path) {
    size_t len;
    char *text = dt_read_file(path, &len);
    USER_CHECK(strlen(text) == len, "'%s': contains a NUL byte, not a merges text file", path);
    size_t lines = 1;
    for (size_t i = 0; i < len; i++) lines += text[i] == '\n';
    t->merge_cap = pow2_at_least(2 * lines + 1);
    t->merge_keys = xmalloc(t->merge_cap * sizeof *t->merge_keys);
    t->merge_rank = xmalloc(t->merge_cap * sizeof *t->merge_rank);
    t->merge_id = xmalloc(t->merge_cap * sizeof *t->merge_id);
    memset(t->merge_keys, 0xFF, t->merge_cap * sizeof *t->merge_keys);
    t->n_merges = 0;

    size_t cat_cap = 64;
    char *cat = xmalloc(cat_cap);
    char *p = text, *end = text + len;
    for (int line_no = 1; p < end; line_no++) {
        char *eol = memchr(p, '\n', (size_t)(end - p));
        char *next = eol ? eol + 1 : end;
        if (!eol) eol = end;
        if (eol > p && eol[-1] == '\r') eol--;
        *eol = '\0';
        if (strncmp(p, "#version", 8) != 0) {
            char *space = strchr(p, ' ');
            USER_CHECK(space && !strchr(space + 1, ' '), "'%s': line %d is not \"left right\" (one space): \"%s\"",
                       path, line_no, p);
            *space = '\0';
            const char *left = p, *right = space + 1;
            size_t need = strlen(left) + strlen(right) + 1;
            if (need > cat_cap) cat = xrealloc(cat, cat_cap = need);
            snprintf(cat, cat_cap, "%s%s", left, right);
            int32_t a = vocab_find(vocab, left), b = vocab_find(vocab, right), ab = vocab_find(vocab, cat);
            USER_CHECK(a >= 0 && b >= 0 && ab >= 0, "'%s': line %d merges \"%s\" + \"%s\", but \"%s\" is not in '%s'",
                       path, line_no, left, right, a < 0 ? left : b < 0 ? right : cat, vocab_path);
            size_t slot = merge_slot(t, merge_key(a, b));
            t->merge_keys[slot] = merge_key(a, b);
            t->merge_rank[slot] = t->n_merges++;
            t->merge_id[slot] = ab;
        }
        p = next;
    }
    free(cat);
    free(text);
}

// GPT-2/CLIP byte symbols: printable Latin-1 bytes stand for themselves, the others map to U+0100 onwards.
static uint32_t byte_symbol(int b) {
    if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) return (uint32_t)b;
    int n = 0;
    for (int c = 0; c < b; c++)
        if (!((c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF))) n++;
    return 256u + (uint32_t)n;
}

static void byte_symbols_load(Tokenizer *t, const VocabMap *vocab, const char *vocab_path) {
    for (int b = 0; b < 256; b++) {
        char s[16];
        int n = unicode_encode_utf8(byte_symbol(b), (unsigned char *)s);
        s[n] = '\0';
        t->byte_id[b] = vocab_find(vocab, s);
        memcpy(s + n, "</w>", 5);
        t->byte_end_id[b] = vocab_find(vocab, s);
        USER_CHECK(t->byte_id[b] >= 0 && t->byte_end_id[b] >= 0,
                   "'%s': byte symbol \"%s\" is missing; not a byte-level BPE vocabulary", vocab_path, s);
    }
}

static uint32_t *decode_cps(const char *s, size_t *n) {
    size_t len = strlen(s);
    uint32_t *cps = xmalloc((len + 1) * sizeof *cps);
    *n = unicode_decode_utf8(s, len, cps);
    return cps;
}

// The normaliser of CLIPTokenizer: NFC, each whitespace run -> " ", per-character lowercase.
static uint32_t *normalize(const uint32_t *in, size_t n, size_t *out_n) {
    size_t m;
    uint32_t *nfc = unicode_nfc(in, n, &m);
    uint32_t *out = xmalloc((2 * m + 1) * sizeof *out);
    size_t w = 0;
    for (size_t i = 0; i < m; i++) {
        if (!unicode_is_space(nfc[i])) w += (size_t)unicode_lower(nfc[i], out + w);
        else if (i == 0 || !unicode_is_space(nfc[i - 1])) out[w++] = ' ';
    }
    free(nfc);
    *out_n = w;
    return out;
}

// Registers an added token; one with the same id is replaced (the last registration wins, as in tokenizers).
static void added_put(Tokenizer *t, const char *content, int32_t id, int normalized) {
    size_t n;
    uint32_t *cps = decode_cps(content, &n);
    if (normalized) {
        size_t m;
        uint32_t *norm = normalize(cps, n, &m);
        free(cps);
        cps = norm, n = m;
    }
    for (int i = 0; i < t->n_added; i++) {
        TokenizerAddedToken *a = &t->added[i];
        if (a->id == id) {
            free(a->cps);
            a->cps = cps, a->n_cps = n, a->normalized = normalized;
            return;
        }
    }
    t->added = xrealloc(t->added, (size_t)(t->n_added + 1) * sizeof *t->added);
    t->added[t->n_added++] = (TokenizerAddedToken){.cps = cps, .n_cps = n, .id = id, .normalized = normalized};
}

// "normalized" of an added_tokens_decoder entry; AddedToken's default is the opposite of "special".
static int decoder_normalized(const cJSON *entry) {
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(entry, "normalized");
    return cJSON_IsBool(norm) ? cJSON_IsTrue(norm) : !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(entry, "special"));
}

// A special token's value: a string, or an AddedToken object {"content": ..., "normalized": ...}.
static const char *special_content(const cJSON *v, const char *path, const char *key, int *normalized) {
    *normalized = 0;
    if (cJSON_IsString(v)) return v->valuestring;
    const cJSON *c = cJSON_IsObject(v) ? cJSON_GetObjectItemCaseSensitive(v, "content") : NULL;
    USER_CHECK(cJSON_IsString(c), "'%s': '%s' must be a string or an object with a string \"content\"", path, key);
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(v, "normalized");
    *normalized = cJSON_IsTrue(norm);
    return c->valuestring;
}

// Added tokens and bos/eos/pad from tokenizer_config.json (+ special_tokens_map.json, whose values take
// precedence), following transformers: added_tokens_decoder entries first, then the special tokens in attribute
// order, each taking the flags of an added_tokens_decoder entry with the same content if there is one.
static void specials_load(Tokenizer *t, const VocabMap *vocab, const char *config_dir, const char *vocab_path) {
    static const char *const attrs[] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                        "pad_token", "cls_token", "mask_token"};
    static const char *const defaults[] = {"<|startoftext|>", "<|endoftext|>", "<|endoftext|>", NULL,
                                           "<|endoftext|>", NULL, NULL};
    size_t plen = strlen(config_dir) + 32;
    char *cfg_path = xmalloc(plen), *map_path = xmalloc(plen);
    snprintf(cfg_path, plen, "%s/tokenizer_config.json", config_dir);
    snprintf(map_path, plen, "%s/special_tokens_map.json", config_dir);
    JsonDoc cfg, map = {0};
    json_load(&cfg, cfg_path);
    if (access(map_path, F_OK) == 0) json_load(&map, map_path);
    t->model_max_length = json_get_int(&cfg, "model_max_length", TOKENIZER_MAX_LENGTH);

    const cJSON *decoder = cJSON_GetObjectItemCaseSensitive(cfg.root, "added_tokens_decoder");
    USER_CHECK(!decoder || cJSON_IsNull(decoder) || cJSON_IsObject(decoder),
               "'%s': 'added_tokens_decoder' must be an object", cfg_path);
    if (!cJSON_IsObject(decoder)) decoder = NULL;
    for (const cJSON *e = decoder ? decoder->child : NULL; e; e = e->next) {
        char *endp;
        long id = strtol(e->string, &endp, 10);
        USER_CHECK(*e->string && !*endp && id >= 0 && id < 2147483647L,
                   "'%s': added_tokens_decoder key \"%s\" is not a token id", cfg_path, e->string);
        const cJSON *c = cJSON_IsObject(e) ? cJSON_GetObjectItemCaseSensitive(e, "content") : NULL;
        USER_CHECK(cJSON_IsString(c), "'%s': added_tokens_decoder[\"%s\"] needs a string \"content\"", cfg_path,
                   e->string);
        added_put(t, c->valuestring, (int32_t)id, decoder_normalized(e));
    }

    int32_t attr_id[7];
    for (int k = 0; k < 7; k++) {
        attr_id[k] = -1;
        const char *path = map_path;
        const cJSON *v = map.root ? cJSON_GetObjectItemCaseSensitive(map.root, attrs[k]) : NULL;
        if (!v || cJSON_IsNull(v)) v = cJSON_GetObjectItemCaseSensitive(cfg.root, attrs[k]), path = cfg_path;
        int normalized = 0;
        const char *content = defaults[k];
        if (v && !cJSON_IsNull(v)) content = special_content(v, path, attrs[k], &normalized);
        if (!content) continue;
        int32_t id = -1;
        const cJSON *e = NULL;
        cJSON_ArrayForEach(e, decoder) {
            const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "content");
            if (cJSON_IsString(c) && strcmp(c->valuestring, content) == 0) {
                id = (int32_t)strtol(e->string, NULL, 10);
                normalized = decoder_normalized(e);
            }
        }
        if (id < 0) id = vocab_find(vocab, content);
        USER_CHECK(id >= 0, "'%s': %s \"%s\" is neither in '%s' nor in added_tokens_decoder", path, attrs[k], content,
                   vocab_path);
        added_put(t, content, id, normalized);
        attr_id[k] = id;
    }
    t->bos_id = attr_id[0], t->eos_id = attr_id[1], t->pad_id = attr_id[4];
    json_free(&cfg);
    if (map.root) json_free(&map);
    free(cfg_path);
    free(map_path);
}

void tokenizer_load_split(Tokenizer *t, const char *vocab_dir, const char *config_dir) {
    memset(t, 0, sizeof *t);
    size_t plen = strlen(vocab_dir) + 32;
    char *vocab_path = xmalloc(plen), *merges_path = xmalloc(plen);
    snprintf(vocab_path, plen, "%s/vocab.json", vocab_dir);
    snprintf(merges_path, plen, "%s/merges.txt", vocab_dir);
    JsonDoc doc;
    json_load(&doc, vocab_path);
    VocabMap vocab;
    vocab_build(&vocab, &doc);
    byte_symbols_load(t, &vocab, vocab_path);
    merges_load(t, &vocab, merges_path, vocab_path);
    specials_load(t, &vocab, config_dir, vocab_path);
    vocab_free(&vocab);
    json_free(&doc);
    free(vocab_path);
    free(merges_path);
}

void tokenizer_load(Tokenizer *t, const char *dir) { tokenizer_load_split(t, dir, dir); }

void tokenizer_free(Tokenizer *t) {
    free(t->merge_keys);
    free(t->merge_rank);
    free(t->merge_id);
    for (int i = 0; i < t->n_added; i++) free(t->added[i].cps);
    free(t->added);
    memset(t, 0, sizeof *t);
}

// ---------------------------------------------------------------------------------------------------------------
// encoding

typedef struct {
    int32_t rank, pos, id;
} Merge;

typedef struct {
    const Tokenizer *t;
    int32_t *out;  // content ids
    int n, cap;    // cap = max_len - 2: later ids would be truncated away, so work stops there
    // BPE scratch, grown on demand
    unsigned char *bytes;
    int32_t *sym, *prev, *next;
    Merge *heap;
    size_t scratch_cap;
} Encoder;

static void emit(Encoder *e, int32_t id) {
    if (e->n < e->cap) e->out[e->n++] = id;
}

static int merge_before(Merge a, Merge b) { return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos); }

static void heap_push(Merge *h, int *n, Merge m) {
    int i = (*n)++;
    while (i > 0 && merge_before(m, h[(i - 1) / 2])) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = m;
}

static Merge heap_pop(Merge *h, int *n) {
    Merge top = h[0], last = h[--(*n)];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && merge_before(h[c + 1], h[c])) c++;
        if (!merge_before(h[c], last)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = last;
    return top;
}

static void push_pair(Encoder *e, int *hn, int pos) {
    int32_t rank, id;
    if (pos >= 0 && e->next[pos] >= 0 && merge_find(e->t, e->sym[pos], e->sym[e->next[pos]], &rank, &id))
        heap_push(e->heap, hn, (Merge){rank, pos, id});
}

// BPE over one pre-token, the way the `tokenizers` BPE model does it: repeatedly apply the lowest-ranked
// (then leftmost) applicable merge.
static void encode_piece(Encoder *e, const uint32_t *cps, size_t n) {
    size_t nb = 4 * n;  // bytes, at most
    if (nb > e->scratch_cap) {
        e->scratch_cap = nb;
        e->bytes = xrealloc(e->bytes, nb);
        e->sym = xrealloc(e->sym, nb * sizeof *e->sym);
        e->prev = xrealloc(e->prev, nb * sizeof *e->prev);
        e->next = xrealloc(e->next, nb * sizeof *e->next);
        e->heap = xrealloc(e->heap, 3 * nb * sizeof *e->heap);
    }
    nb = 0;
    for (size_t i = 0; i < n; i++) nb += (size_t)unicode_encode_utf8(cps[i], e->bytes + nb);
    for (size_t i = 0; i < nb; i++) {
        e->sym[i] = i + 1 == nb ? e->t->byte_end_id[e->bytes[i]] : e->t->byte_id[e->bytes[i]];
        e->prev[i] = (int32_t)i - 1;
        e->next[i] = i + 1 == nb ? -1 : (int32_t)i + 1;
    }
    int hn = 0;
    for (size_t i = 0; i + 1 < nb; i++) push_pair(e, &hn, (int)i);
    while (hn > 0) {
        Merge m = heap_pop(e->heap, &hn);
        int32_t right = e->next[m.pos];
        if (e->sym[m.pos] < 0 || right < 0) continue;  // merged away, or now the last symbol
        int32_t rank, id;
        if (!merge_find(e->t, e->sym[m.pos], e->sym[right], &rank, &id) || id != m.id) continue;  // stale entry
        e->sym[m.pos] = m.id;
        e->sym[right] = -1;
        e->next[m.pos] = e->next[right];
        if (e->next[right] >= 0) e->prev[e->next[right]] = m.pos;
        push_pair(e, &hn, e->prev[m.pos]);
        push_pair(e, &hn, m.pos);
    }
    for (int32_t i = 0; i >= 0; i = e->next[i]) emit(e, e->sym[i]);
}

static int starts_with(const uint32_t *cps, size_t n, const char *ascii) {
    size_t k = strlen(ascii);
    if (k > n) return 0;
    for (size_t i = 0; i < k; i++)
        if (cps[i] != (unsigned char)ascii[i]) return 0;
    return 1;
}

// CLIP's pre-tokenisation pattern, scanned by hand over normalised text; every match goes to BPE.
static void encode_pretokens(Encoder *e, const uint32_t *cps, size_t n) {
    static const char *const specials[] = {"<|startoftext|>", "<|endoftext|>"};
    static const char *const contractions[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
    size_t i = 0;
    while (i < n && e->n < e->cap) {
        uint32_t c = cps[i];
        if (unicode_is_space(c)) {
            i++;
            continue;
        }
        size_t len = 0;
        for (int k = 0; k < 2 && !len; k++) {
            if (starts_with(cps + i, n - i, specials[k])) {
                // the byte-level stage splits this match again with the GPT-2 pattern: "<|", letters, "|>"
                len = strlen(specials[k]);
                encode_piece(e, cps + i, 2);
                encode_piece(e, cps + i + 2, len - 4);
                encode_piece(e, cps + i + len - 2, 2);
            }
        }
        if (len) {
            i += len;
            continue;
        }
        for (int k = 0; k < 7 && !len; k++)
            if (starts_with(cps + i, n - i, contractions[k])) len = strlen(contractions[k]);
        if (!len) {
            if (unicode_is_letter(c)) {
                while (i + len < n && unicode_is_letter(cps[i + len])) len++;
            } else if (unicode_is_number(c)) {
                len = 1;
            } else {
                while (i + len < n && !unicode_is_space(cps[i + len]) && !unicode_is_letter(cps[i + len]) &&
                       !unicode_is_number(cps[i + len]))
                    len++;
            }
        }
        encode_piece(e, cps + i, len);
        i += len;
    }
}

// Cuts the added tokens with the given normalized flag out of cps (leftmost, then longest match); the text
// between them goes to `between`.
static void split_added(Encoder *e, const uint32_t *cps, size_t n, int normalized,
                        void (*between)(Encoder *, const uint32_t *, size_t)) {
    const Tokenizer *t = e->t;
    size_t start = 0, i = 0;
    while (i < n && e->n < e->cap) {
        int best = -1;
        for (int k = 0; k < t->n_added; k++) {
            const TokenizerAddedToken *a = &t->added[k];
            if (a->normalized != normalized || a->n_cps == 0 || a->n_cps > n - i) continue;
            if (memcmp(a->cps, cps + i, a->n_cps * sizeof *cps) != 0) continue;
            if (best < 0 || a->n_cps > t->added[best].n_cps) best = k;
        }
        if (best < 0) {
            i++;
            continue;
        }
        if (i > start) between(e, cps + start, i - start);
        emit(e, t->added[best].id);
        i += t->added[best].n_cps;
        start = i;
    }
    if (n > start && e->n < e->cap) between(e, cps + start, n - start);
}

static void encode_raw_segment(Encoder *e, const uint32_t *cps, size_t n) {
    size_t m;
    uint32_t *norm = normalize(cps, n, &m);
    split_added(e, norm, m, 1, encode_pretokens);
    free(norm);
}

int tokenizer_encode(const Tokenizer *t, const char *text, int32_t *ids, int max_len) {
    CHECK(max_len >= 2, "pass room for at least the bos and eos ids", "tokenizer_encode: max_len %d < 2", max_len);
    size_t n;
    uint32_t *cps = decode_cps(text, &n);
    Encoder e = {.t = t, .out = ids + 1, .cap = max_len - 2};
    split_added(&e, cps, n, 0, encode_raw_segment);
    free(cps);
    free(e.bytes);
    free(e.sym);
    free(e.prev);
    free(e.next);
    free(e.heap);
    ids[0] = t->bos_id;
    ids[e.n + 1] = t->eos_id;
    for (int i = e.n + 2; i < max_len; i++) ids[i] = t->pad_id;
    return e.n + 2;
}
