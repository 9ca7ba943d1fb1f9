// prompts.c: the prompt file reader declared in prompts.h. Prompts reach the tokenizer and the run's records, so
// every byte is checked here and a bad file is reported by line instead of surfacing later as a garbled prompt.
#include "prompts.h"

#include <ctype.h>
#include <string.h>

#include "../core/common.h"
#include "utf8.h"

const char *prompt_problem(const char *s, size_t len, char *why, size_t n) {
    size_t valid;
    if (memchr(s, 0, len)) snprintf(why, n, "NUL byte (not a UTF-8 text file?)");
    else if (len > PROMPTS_LINE_MAX) snprintf(why, n, "prompt of %zu bytes (at most %d)", len, PROMPTS_LINE_MAX);
    else if ((valid = utf8_valid_prefix(s, len)) < len) snprintf(why, n, "invalid UTF-8 at byte %zu", valid + 1);
    else return NULL;
    return why;
}

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
        if (l && s[l - 1] == '\r') l--;
        char why[128];
        if (prompt_problem(s, l, why, sizeof why)) dt_user_error("%s:%d: %s", path, line, why);
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
