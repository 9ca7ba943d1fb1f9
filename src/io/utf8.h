// utf8.h: the strict UTF-8 check of every text drtune takes byte for byte from a file (prompt files, safetensors
// headers) or writes into one (safetensors tensor names and metadata): one definition of what valid means. Inline,
// so the safetensors fuzz target, which compiles its sources one by one, needs no other file.
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Length of the longest prefix of text[0..n) that is valid UTF-8 (n when all of it is), which is also the offset of
// the first bad byte: no overlong forms, no surrogates, nothing above U+10FFFF, no truncated sequence.
static inline size_t utf8_valid_prefix(const void *text, size_t n) {
    const uint8_t *s = (const uint8_t *)text;
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp, min;
        if (c >= 0xc2 && c <= 0xdf) len = 2, cp = c & 0x1fu, min = 0x80; // 0xc0, 0xc1 only start overlong forms
        else if (c >= 0xe0 && c <= 0xef) len = 3, cp = c & 0x0fu, min = 0x800;
        else if (c >= 0xf0 && c <= 0xf4) len = 4, cp = c & 0x07u, min = 0x10000;
        else return i;
        if (n - i < len) return i;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return i;
            cp = (cp << 6) | (s[i + k] & 0x3fu);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
        i += len;
    }
    return n;
}

#ifdef __cplusplus
}
#endif
