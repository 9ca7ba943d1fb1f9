// prompts.c: the prompt file reader declared in prompts.h. Prompts reach the tokenizer and the run's records, so
// every byte is checked here and a bad file is reported by line instead of surfacing later as a garbled prompt.
#include "prompts.h"

#include <ctype.h>
#include <string.h>

#include "../core/common.h"
#include "utf8.h"


char **prompts_read(const char *path, int *count) {
    size_t len;
    char *text = dt_read_file(path, &len);
    size_t pos = len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3) ? 3 : 0; // a byte-order mark is not part of line 1
    int n = 0, cap = 16, line = 0;
    char **out = xmalloc(sizeof(char *) * (size_t)cap);
    while (pos < len) {
        const char *s = text + pos, *nl = memchr(s, '\n', len - pos);
        size_t l = nl ? (size_t)(nl - s) : len - pos;
        pos += l + (nl != NULL);
        line++;
        if (memchr(s, 0, l)) dt_user_error("%s:%d: NUL byte (not a UTF-8 text file?)", path, line);
        if (l && s[l - 1] == '\r') l--;
        if (l > PROMPTS_LINE_MAX)
            dt_user_error("%s:%d: line of %zu bytes (at most %d)", path, line, l, PROMPTS_LINE_MAX);
        size_t valid = utf8_valid_prefix(s, l);
        if (valid < l) dt_user_error("%s:%d: invalid UTF-8 at byte %zu of the line", path, line, valid + 1);
        size_t a = 0, b = l;
        while (a < b && isspace((unsigned char)s[a])) a++;
        while (b > a && isspace((unsigned char)s[b - 1])) b--;
        if (a == b || s[a] == '#') continue;
        if (n + 1 >= cap) {
            CHECK(cap < (1 << 29), "split the prompt file", "too many prompts in '%s'", path);
            cap *= 2;
            out = xrealloc(out, sizeof(char *) * (size_t)cap);
        }
        out[n] = xmalloc(b - a + 1);
        memcpy(out[n], s + a, b - a);
        out[n][b - a] = 0;
        n++;
    }
    free(text);
    if (n == 0) {
        free(out);
        if (len == 0) dt_user_error("prompt file '%s' is empty", path);
        dt_user_error("prompt file '%s' has no prompts (only blank lines and # comments)", path);
    }
    out[n] = NULL;
    if (count) *count = n;
    return out;
}

void prompts_free(char **prompts) {
    if (!prompts) return;
    for (char **p = prompts; *p; p++) free(*p);
    free(prompts);
}
