// json.h: reading configuration JSON (diffusers/transformers config.json, tokenizer configs) with clear errors.
// Every getter names the file and the key when a value is missing or has the wrong type.
#pragma once
#include <cjson/cJSON.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    cJSON *root;
    char *path;
} JsonDoc;

// Parses path; user error (naming the file and the position) if unreadable or not a JSON object.
void json_load(JsonDoc *doc, const char *path);
// json_load of a diffusers model config: path itself when it ends in ".json", else path/config.json.
void json_load_config(JsonDoc *doc, const char *path);
void json_free(JsonDoc *doc);
int json_has(const JsonDoc *doc, const char *key);            // present and not null
int json_get_int(const JsonDoc *doc, const char *key, int def); // def when absent or null; error if not integral
double json_get_number(const JsonDoc *doc, const char *key, double def);
int json_get_bool(const JsonDoc *doc, const char *key, int def);
// Returned string is owned by doc; def when absent or null.
const char *json_get_string(const JsonDoc *doc, const char *key, const char *def);
// Integer list: a JSON array of integers, or a single integer repeated n_default times (diffusers allows both for
// per-block settings). Returns the count written (at most max); error when longer than max.
int json_get_int_list(const JsonDoc *doc, const char *key, int *out, int max, int scalar_repeat, int def);
// A key that must be present (error "key '<key>' is missing" otherwise) holding an integer list, or one integer
// (count 1).
int json_get_required_int_list(const JsonDoc *doc, const char *key, int *out, int max);
// Error "<key> <v> is not a positive multiple of <of_key> <m>" unless it is (m > 0).
void json_check_multiple(const JsonDoc *doc, const char *key, int v, const char *of_key, int m);
// String list (pointers owned by doc); returns the count; error when longer than max.
int json_get_string_list(const JsonDoc *doc, const char *key, const char **out, int max);

#ifdef __cplusplus
}
#endif
