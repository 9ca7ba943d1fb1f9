// tokenizer.h: the CLIP byte-level BPE tokenizer of the SD 1.5 / SDXL text encoders, reading a diffusers tokenizer
// folder and producing the same ids as transformers' CLIPTokenizer(prompt, padding="max_length", max_length=77,
// truncation=True).
//
// Pipeline (as the `tokenizers`-backed CLIPTokenizer of transformers 5 runs it):
//   1. UTF-8 decoding; invalid bytes become U+FFFD (maximal subparts, like Python's errors="replace").
//   2. Added tokens are cut out first: the special tokens (bos/eos/unk/pad) and tokenizer_config.json's
//      added_tokens_decoder, leftmost-longest. Tokens marked "normalized": false match the raw text; the others match
//      after step 3. This is where SDXL tokenizer_2's quirk comes from: its pad token "!" is an added special token,
//      so every literal "!" becomes id 0 instead of going through BPE (diffusers issue 4153).
//   3. Normalisation of the remaining text: NFC, every whitespace run -> one space, per-character lowercasing.
//   4. Pre-tokenisation with CLIP's pattern
//        <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
//      (one digit per piece). A literal "<|startoftext|>"/"<|endoftext|>" piece is split again by the byte-level
//      stage into "<|", the word, "|>".
//   5. Each piece's UTF-8 bytes map to the 256 byte symbols, the last one with "</w>", and BPE merges them by rank.
//   6. [bos] + first (max_len - 2) ids + [eos], then the pad id up to max_len.
//
// Target: transformers 5, whose CLIPTokenizer is backed by `tokenizers`. Not replicated: the Python CLIPTokenizer of
// transformers 4.x, which with ftfy installed fed whitespace_clean(ftfy.fix_text(text)).lower() to BPE, i.e. ftfy's
// mojibake repair, HTML entity unescaping, curly-quote straightening, ligature and full-width folding and
// control-character removal, plus Python's final-sigma lowercasing and its slightly wider \s. Both agree on ordinary
// prompts; tests/fixtures/tokenizer_cases.json flags the cases where the text would differ. CJK compatibility
// ideographs are not NFC-mapped (see tokenizer_unicode.h).
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TOKENIZER_MAX_LENGTH 77

typedef struct {
    uint32_t *cps;  // content as code points (normalised for normalized tokens)
    size_t n_cps;
    int32_t id;
    int normalized;  // 1: matched after normalisation, 0: matched on the raw text
} TokenizerAddedToken;

typedef struct {
    // merges: open-addressing table keyed by (left id, right id) -> rank and merged id
    uint64_t *merge_keys;
    int32_t *merge_rank;
    int32_t *merge_id;
    size_t merge_cap;  // power of two; empty slots hold UINT64_MAX
    int32_t n_merges;
    int32_t byte_id[256];      // id of each byte's symbol
    int32_t byte_end_id[256];  // id of each byte's symbol + "</w>"
    TokenizerAddedToken *added;
    int n_added;
    int32_t bos_id, eos_id, pad_id;
    int model_max_length;  // tokenizer_config.json "model_max_length" (77 for CLIP)
} Tokenizer;

// Loads vocab.json, merges.txt, tokenizer_config.json and (if present) special_tokens_map.json from dir.
// A missing or malformed file is a user error naming it.
void tokenizer_load(Tokenizer *t, const char *dir);
// Same, with vocab.json and merges.txt from vocab_dir and the two config files from config_dir (the repository
// keeps one vocabulary in data/tokenizer/clip and SDXL tokenizer_2's configs alone in data/tokenizer/clip_pad0).
void tokenizer_load_split(Tokenizer *t, const char *vocab_dir, const char *config_dir);
void tokenizer_free(Tokenizer *t);
// Tokenises text (UTF-8, NUL-terminated) into exactly max_len ids (max_len >= 2): bos, at most max_len - 2 content
// ids, eos, then padding. Returns the number of ids before the padding (the eos sits at index return - 1).
int tokenizer_encode(const Tokenizer *t, const char *text, int32_t *ids, int max_len);

#ifdef __cplusplus
}
#endif
