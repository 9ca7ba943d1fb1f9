// tokenizer_unicode.c: UTF-8 decoding with replacement, character classes, lowercasing and NFC for the CLIP
// tokenizer, driven by the generated tables in tokenizer_unicode_tables.h.
#include "tokenizer_unicode.h"

#include "../core/common.h"
#include "tokenizer_unicode_tables.h"

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

// Hangul syllable composition constants (Unicode chapter 3.12).
enum { HANGUL_S = 0xAC00, HANGUL_L = 0x1100, HANGUL_V = 0x1161, HANGUL_T = 0x11A7,
       HANGUL_LCOUNT = 19, HANGUL_VCOUNT = 21, HANGUL_TCOUNT = 28, HANGUL_SCOUNT = 11172 };

size_t unicode_decode_utf8(const char *s, size_t len, uint32_t *out) {
    const unsigned char *p = (const unsigned char *)s;
    size_t n = 0, i = 0;
    while (i < len) {
        unsigned b = p[i];
        if (b < 0x80) {
            out[n++] = b;
            i++;
            continue;
        }
        int need;
        unsigned lo = 0x80, hi = 0xBF;  // allowed range of the first continuation byte
        uint32_t cp;
        if (b >= 0xC2 && b <= 0xDF) need = 1, cp = b & 0x1F;
        else if (b >= 0xE0 && b <= 0xEF) need = 2, cp = b & 0x0F, lo = b == 0xE0 ? 0xA0 : 0x80, hi = b == 0xED ? 0x9F : 0xBF;
        else if (b >= 0xF0 && b <= 0xF4) need = 3, cp = b & 0x07, lo = b == 0xF0 ? 0x90 : 0x80, hi = b == 0xF4 ? 0x8F : 0xBF;
        else {
            out[n++] = UNICODE_REPLACEMENT;
            i++;
            continue;
        }
        size_t j = i + 1;
        int ok = 1;
        for (int k = 0; k < need; k++, j++) {
            if (j >= len || p[j] < lo || p[j] > hi) {
                ok = 0;
                break;
            }
            cp = (cp << 6) | (p[j] & 0x3F);
            lo = 0x80, hi = 0xBF;
        }
        out[n++] = ok ? cp : UNICODE_REPLACEMENT;
        i = j;  // an ill-formed prefix is consumed as one unit; the offending byte starts the next unit
    }
    return n;
}

int unicode_encode_utf8(uint32_t cp, unsigned char *out) {
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xC0 | (cp >> 6));
        out[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xE0 | (cp >> 12));
        out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | (cp >> 18));
    out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

// Index of the last row whose first column is <= cp in a table sorted by its first column, or -1.
static long last_at_or_below(const uint32_t *table, size_t rows, size_t stride, uint32_t cp) {
    long lo = 0, hi = (long)rows - 1, found = -1;
    while (lo <= hi) {
        long mid = lo + (hi - lo) / 2;
        if (table[(size_t)mid * stride] <= cp) found = mid, lo = mid + 1;
        else hi = mid - 1;
    }
    return found;
}

static int in_ranges(const uint32_t (*ranges)[2], size_t rows, uint32_t cp) {
    long i = last_at_or_below(&ranges[0][0], rows, 2, cp);
    return i >= 0 && cp <= ranges[i][1];
}

int unicode_is_letter(uint32_t cp) { return in_ranges(uni_letter_ranges, COUNT_OF(uni_letter_ranges), cp); }
int unicode_is_number(uint32_t cp) { return in_ranges(uni_number_ranges, COUNT_OF(uni_number_ranges), cp); }

int unicode_is_space(uint32_t cp) {
    for (size_t i = 0; i < COUNT_OF(uni_space_chars); i++)
        if (uni_space_chars[i] == cp) return 1;
    return 0;
}

int unicode_lower(uint32_t cp, uint32_t out[2]) {
    if (cp < 0x80) {
        out[0] = (cp >= 'A' && cp <= 'Z') ? cp + 32 : cp;
        return 1;
    }
    for (size_t i = 0; i < COUNT_OF(uni_lower_special); i++) {
        if (uni_lower_special[i][0] == cp) {
            out[0] = uni_lower_special[i][1];
            out[1] = uni_lower_special[i][2];
            return 2;
        }
    }
    long lo = 0, hi = (long)COUNT_OF(uni_lower_runs) - 1, r = -1;
    while (lo <= hi) {
        long mid = lo + (hi - lo) / 2;
        if ((uint32_t)uni_lower_runs[mid][0] <= cp) r = mid, lo = mid + 1;
        else hi = mid - 1;
    }
    out[0] = cp;
    if (r >= 0) {
        uint32_t start = (uint32_t)uni_lower_runs[r][0], count = (uint32_t)uni_lower_runs[r][1];
        uint32_t stride = (uint32_t)uni_lower_runs[r][2];
        uint32_t k = (cp - start) / stride;
        if (k < count && (cp - start) % stride == 0) out[0] = (uint32_t)((int32_t)cp + uni_lower_runs[r][3]);
    }
    return 1;
}

static unsigned combining_class(uint32_t cp) {
    if (cp < 0x300) return 0;
    long i = last_at_or_below(&uni_ccc_runs[0][0], COUNT_OF(uni_ccc_runs), 3, cp);
    return (i >= 0 && cp <= uni_ccc_runs[i][1]) ? uni_ccc_runs[i][2] : 0;
}

// Appends the full canonical decomposition of cp to out and returns the number of code points written.
static size_t decompose(uint32_t cp, uint32_t *out) {
    long i = last_at_or_below(&uni_decompositions[0][0], COUNT_OF(uni_decompositions), 3, cp);
    if (i < 0 || uni_decompositions[i][0] != cp) {
        out[0] = cp;
        return 1;
    }
    size_t n = decompose(uni_decompositions[i][1], out);
    if (uni_decompositions[i][2]) n += decompose(uni_decompositions[i][2], out + n);
    return n;
}

// The primary composite of (a, b), or 0 when the pair does not compose.
static uint32_t compose_pair(uint32_t a, uint32_t b) {
    if (a >= HANGUL_L && a < HANGUL_L + HANGUL_LCOUNT && b >= HANGUL_V && b < HANGUL_V + HANGUL_VCOUNT)
        return HANGUL_S + ((a - HANGUL_L) * HANGUL_VCOUNT + (b - HANGUL_V)) * HANGUL_TCOUNT;
    if (a >= HANGUL_S && a < HANGUL_S + HANGUL_SCOUNT && (a - HANGUL_S) % HANGUL_TCOUNT == 0 && b > HANGUL_T &&
        b < HANGUL_T + HANGUL_TCOUNT)
        return a + (b - HANGUL_T);
    long lo = 0, hi = (long)COUNT_OF(uni_compose_index) - 1;
    while (lo <= hi) {
        long mid = lo + (hi - lo) / 2;
        const uint32_t *row = uni_decompositions[uni_compose_index[mid]];
        if (row[1] == a && row[2] == b) return row[0];
        if (row[1] < a || (row[1] == a && row[2] < b)) lo = mid + 1;
        else hi = mid - 1;
    }
    return 0;
}

uint32_t *unicode_nfc(const uint32_t *in, size_t n, size_t *out_n) {
    uint32_t *buf = xmalloc((4 * n + 1) * sizeof *buf);  // a canonical decomposition is at most 4 code points
    size_t m = 0;
    for (size_t i = 0; i < n; i++) m += in[i] < 0xC0 ? (buf[m] = in[i], 1) : decompose(in[i], buf + m);

    // canonical ordering: stable sort of every run of non-starters by combining class
    for (size_t i = 1; i < m; i++) {
        unsigned cc = combining_class(buf[i]);
        if (cc == 0) continue;
        uint32_t c = buf[i];
        size_t j = i;
        while (j > 0 && combining_class(buf[j - 1]) > cc) {
            buf[j] = buf[j - 1];
            j--;
        }
        buf[j] = c;
    }

    // canonical composition: a character combines with the last starter unless a character in between blocks it
    size_t w = 0;
    long starter = -1;
    unsigned last_cc = 0;
    for (size_t i = 0; i < m; i++) {
        uint32_t c = buf[i];
        unsigned cc = combining_class(c);
        if (starter >= 0 && (w == (size_t)starter + 1 || (last_cc != 0 && last_cc < cc))) {
            uint32_t comp = compose_pair(buf[starter], c);
            if (comp) {
                buf[starter] = comp;
                continue;
            }
        }
        if (cc == 0) starter = (long)w;
        last_cc = cc;
        buf[w++] = c;
    }
    *out_n = w;
    return buf;
}
