// prompts.h: the training prompt file: UTF-8 text, one prompt per line. Blank lines and lines starting with '#'
// are skipped and surrounding whitespace is trimmed; anything that is not clean text is rejected with file:line.
#pragma once
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PROMPTS_LINE_MAX 4096

// Reads the prompts of path: a NULL-terminated array of strings (count in *n when n != NULL), freed with
// prompts_free. User error (file:line) on a NUL byte, invalid UTF-8, a line over PROMPTS_LINE_MAX bytes, or a
// file without any prompt.
char **prompts_read(const char *path, int *n);
void prompts_free(char **prompts);

#ifdef __cplusplus
}
#endif
