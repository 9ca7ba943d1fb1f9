// prompts.h: the training prompt file: UTF-8 text, one prompt per line. Blank lines and lines starting with '#'
// are skipped and surrounding whitespace is trimmed; anything that is not clean text is rejected with file:line.
#pragma once
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

// The longest prompt accepted, in bytes, from a file line or the command line alike. The text encoders read the
// first 77 tokens of a prompt, far fewer bytes than this; the limit only bounds what is read and recorded.
#define PROMPTS_LINE_MAX 4096

// Why the prompt s[0, len) is refused (a NUL byte, invalid UTF-8, more than PROMPTS_LINE_MAX bytes), written into
// why; NULL when it is accepted. One rule for prompt files and prompts given on the command line.
const char *prompt_problem(const char *s, size_t len, char *why, size_t n);
// Reads the prompts of path: a NULL-terminated array of strings (count in *n when n != NULL), freed with
// prompts_free. User error (file:line) on a line prompt_problem refuses, or a file without any prompt.
char **prompts_read(const char *path, int *n);
void prompts_free(char **prompts);

#ifdef __cplusplus
}
#endif
