// json.c: the checked configuration readers of json.h (cJSON underneath).
#include "json.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/common.h"

void json_load(JsonDoc *doc, const char *path) {
    size_t len;
    char *text = dt_read_file(path, &len);
    USER_CHECK(strlen(text) == len, "'%s': contains a NUL byte, not a JSON text file", path);
    const char *end = NULL;
    doc->root = cJSON_ParseWithOpts(text, &end, 1);
    if (!doc->root || !cJSON_IsObject(doc->root)) {
        size_t at = end ? (size_t)(end - text) : 0;
        free(text);
        if (doc->root) cJSON_Delete(doc->root);
        dt_user_error("'%s': not a valid JSON object (parse error near byte %zu)", path, at);
    }
    free(text);
    doc->path = xstrdup(path);
}

void json_load_config(JsonDoc *doc, const char *path) {
    size_t len = strlen(path);
    char *file = xmalloc(len + 16);
    snprintf(file, len + 16, len >= 5 && !strcmp(path + len - 5, ".json") ? "%s" : "%s/config.json", path);
    json_load(doc, file);
    free(file);
}

void json_free(JsonDoc *doc) {
    cJSON_Delete(doc->root);
    free(doc->path);
    doc->root = NULL;
    doc->path = NULL;
}

static const cJSON *get(const JsonDoc *doc, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc->root, key);
    return (v && !cJSON_IsNull(v)) ? v : NULL;
}

int json_has(const JsonDoc *doc, const char *key) { return get(doc, key) != NULL; }

static int as_int(const JsonDoc *doc, const char *key, const cJSON *v) {
    USER_CHECK(cJSON_IsNumber(v) && v->valuedouble == floor(v->valuedouble) && fabs(v->valuedouble) < 2e9,
               "'%s': key '%s' must be an integer", doc->path, key);
    return (int)v->valuedouble;
}

int json_get_int(const JsonDoc *doc, const char *key, int def) {
    const cJSON *v = get(doc, key);
    return v ? as_int(doc, key, v) : def;
}

double json_get_number(const JsonDoc *doc, const char *key, double def) {
    const cJSON *v = get(doc, key);
    if (!v) return def;
    USER_CHECK(cJSON_IsNumber(v), "'%s': key '%s' must be a number", doc->path, key);
    return v->valuedouble;
}

int json_get_bool(const JsonDoc *doc, const char *key, int def) {
    const cJSON *v = get(doc, key);
    if (!v) return def;
    USER_CHECK(cJSON_IsBool(v), "'%s': key '%s' must be true or false", doc->path, key);
    return cJSON_IsTrue(v);
}

const char *json_get_string(const JsonDoc *doc, const char *key, const char *def) {
    const cJSON *v = get(doc, key);
    if (!v) return def;
    USER_CHECK(cJSON_IsString(v), "'%s': key '%s' must be a string", doc->path, key);
    return v->valuestring;
}

int json_get_int_list(const JsonDoc *doc, const char *key, int *out, int max, int scalar_repeat, int def) {
    const cJSON *v = get(doc, key);
    if (!v || cJSON_IsNumber(v)) {
        int x = v ? as_int(doc, key, v) : def;
        USER_CHECK(scalar_repeat <= max, "'%s': key '%s' needs %d values, at most %d supported", doc->path, key,
                   scalar_repeat, max);
        for (int i = 0; i < scalar_repeat; i++) out[i] = x;
        return scalar_repeat;
    }
    USER_CHECK(cJSON_IsArray(v), "'%s': key '%s' must be an integer or a list of integers", doc->path, key);
    int n = cJSON_GetArraySize(v);
    USER_CHECK(n <= max, "'%s': key '%s' has %d entries, at most %d supported", doc->path, key, n, max);
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, v) out[i++] = as_int(doc, key, e);
    return n;
}

int json_get_required_int_list(const JsonDoc *doc, const char *key, int *out, int max) {
    USER_CHECK(get(doc, key), "'%s': key '%s' is missing", doc->path, key);
    return json_get_int_list(doc, key, out, max, 1, 0);
}

void json_check_multiple(const JsonDoc *doc, const char *key, int v, const char *of_key, int m) {
    USER_CHECK(v > 0 && v % m == 0, "'%s': %s %d is not a positive multiple of %s %d", doc->path, key, v, of_key, m);
}

int json_get_string_list(const JsonDoc *doc, const char *key, const char **out, int max) {
    const cJSON *v = get(doc, key);
    USER_CHECK(v && cJSON_IsArray(v), "'%s': key '%s' must be a list of strings", doc->path, key);
    int n = cJSON_GetArraySize(v);
    USER_CHECK(n <= max, "'%s': key '%s' has %d entries, at most %d supported", doc->path, key, n, max);
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, v) {
        USER_CHECK(cJSON_IsString(e), "'%s': key '%s' must be a list of strings", doc->path, key);
        out[i++] = e->valuestring;
    }
    return n;
}
