// tokenizer_unicode.h: the Unicode text processing the CLIP tokenizer needs (UTF-8 decoding, character classes,
// lowercasing, NFC), matching what transformers' CLIPTokenizer runs (the `tokenizers` library: Oniguruma classes,
// Rust lowercasing, NFC).
//
// Coverage: letter (\p{L}), number (\p{N}) and whitespace (\s) classes and lowercasing are complete tables taken
// from the `tokenizers` library. NFC is complete (canonical decomposition, reordering by combining class,
// composition including Hangul) and follows tokenizers' own Unicode data where it lags (about a hundred recent
// combining marks have class 0 there, U+11935 U+11930 does not compose), except that the 1,002 CJK compatibility
// ideographs (U+F900-U+FAFF, U+2F800-U+2FA1F) are not mapped to their unified ideographs.
#pragma once
#include <stddef.h>
#include <stdint.h>

#define UNICODE_REPLACEMENT 0xFFFDu

// Decodes len bytes of UTF-8 into out (room for len code points) and returns the count. Each maximal ill-formed
// subsequence becomes one U+FFFD, as Python's bytes.decode("utf-8", errors="replace") does.
size_t unicode_decode_utf8(const char *s, size_t len, uint32_t *out);
// Writes the UTF-8 encoding of cp (at most 4 bytes) to out and returns its length.
int unicode_encode_utf8(uint32_t cp, unsigned char *out);

int unicode_is_letter(uint32_t cp);  // \p{L}
int unicode_is_number(uint32_t cp);  // \p{N}
int unicode_is_space(uint32_t cp);   // \s
// Lowercase of cp, character by character (no context rules such as final sigma); writes 1 or 2 code points to
// out and returns the count.
int unicode_lower(uint32_t cp, uint32_t out[2]);
// NFC of the n code points in; returns a new array (free()) and its length in *out_n.
uint32_t *unicode_nfc(const uint32_t *in, size_t n, size_t *out_n);
