// safetensors.c: the safetensors reader and writer of safetensors.h. Validation follows the reference parser
// (huggingface/safetensors tensor.rs) and the checklist of model_specs.md §1.5: every size, offset and
// string in the header is checked before the data are indexed, with overflow-safe arithmetic throughout.
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/common.h"
#include "../core/device.h"
#include "utf8.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data are little-endian; this reader assumes a little-endian host"
#endif

#define MAX_EXACT_INT 9007199254740992.0 // 2^53: larger JSON numbers are not exact in a double
#define CONVERT_CHUNK ((int64_t)1 << 20) // elements converted per staging step

// ---------------------------------------------------------------------------------------------------------------
// dtypes

static const struct {
    const char *name;
    StDType dtype;
    size_t size;
} SUPPORTED[] = {
    {"F32", ST_F32, 4}, {"F16", ST_F16, 2}, {"BF16", ST_BF16, 2}, {"I32", ST_I32, 4}, {"I64", ST_I64, 8},
};

// Valid safetensors dtypes that drtune does not read (named in the error so the user knows the file is not corrupt).
static const char *const UNSUPPORTED[] = {
    "BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F8_E4M3FNUZ",
    "F8_E5M2FNUZ", "I16", "U16", "U32", "C64", "F64", "U64",
};

const char *safetensors_dtype_name(StDType t) {
    for (size_t i = 0; i < sizeof SUPPORTED / sizeof SUPPORTED[0]; i++)
        if (SUPPORTED[i].dtype == t) return SUPPORTED[i].name;
    return "?";
}

size_t safetensors_dtype_size(StDType t) {
    for (size_t i = 0; i < sizeof SUPPORTED / sizeof SUPPORTED[0]; i++)
        if (SUPPORTED[i].dtype == t) return SUPPORTED[i].size;
    FATAL("", "unknown safetensors dtype %d", (int)t);
}

static int is_float_dtype(StDType t) { return t == ST_F32 || t == ST_F16 || t == ST_BF16; }

static DType float_dtype_to_dtype(StDType t) {
    return t == ST_F32 ? DTYPE_F32 : t == ST_F16 ? DTYPE_F16 : DTYPE_BF16;
}

// ---------------------------------------------------------------------------------------------------------------
// error text

typedef struct {
    char *buf;
    size_t len;
} ErrOut;

DT_PRINTF(2, 3) static int fail(ErrOut *e, const char *fmt, ...) {
    if (e->buf && e->len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->buf, e->len, fmt, ap);
        va_end(ap);
    }
    return -1;
}

// A name from the file, quoted for a one-line message: control bytes escaped, long names shortened.
static const char *quote(char *out, size_t n, const char *s) {
    size_t o = 0;
    const size_t keep = n > 16 ? n - 8 : 0; // room for an escape, the ellipsis and the closing quote
    out[o++] = '\'';
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (o >= keep) {
            while (o > 1 && ((unsigned char)out[o - 1] & 0xc0) == 0x80) o--; // do not split a UTF-8 sequence
            if (o > 1 && (unsigned char)out[o - 1] >= 0xc0) o--;
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        if (*p < 0x20 || *p == 0x7f)
            o += (size_t)snprintf(out + o, n - o, "\\x%02x", *p);
        else
            out[o++] = (char)*p;
    }
    out[o++] = '\'';
    out[o] = 0;
    return out;
}
#define QUOTE_LEN 160

// ---------------------------------------------------------------------------------------------------------------
// header pre-scan: encoding and shape of the raw JSON text, before cJSON sees it

// Bounds what the JSON parser will be given: nesting depth, string lengths, the number of values, no raw control
// bytes (JSON forbids them), no \u0000 escape (a NUL would silently truncate a key and could merge two distinct
// names), and no integer written as a float ("8.0" or "8e0": shapes and offsets are integers in the format, and the
// parser would silently turn them into 8).
static int header_prescan(const uint8_t *h, size_t n, ErrOut *e) {
    int depth = 0, in_string = 0;
    size_t string_start = 0, separators = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = h[i];
        if (in_string) {
            if (c == '"') {
                in_string = 0;
            } else if (c == '\\') {
                if (i + 1 >= n) break; // unterminated: the JSON parser reports it
                if (h[i + 1] == 'u' && n - i >= 6 && !memcmp(h + i + 2, "0000", 4))
                    return fail(e, "header string at byte %zu contains \\u0000", string_start);
                i++;
            } else if (c < 0x20) {
                return fail(e, "header string at byte %zu contains the raw control byte 0x%02x", string_start, c);
            }
            if (i + 1 - string_start > ST_MAX_STRING_BYTES)
                return fail(e, "header string at byte %zu is longer than %u bytes", string_start,
                            (unsigned)ST_MAX_STRING_BYTES);
            continue;
        }
        if (c == '"') {
            in_string = 1;
            string_start = i;
        } else if (c == '{' || c == '[') {
            if (++depth > ST_MAX_NESTING)
                return fail(e, "header nests deeper than %d levels (at byte %zu)", ST_MAX_NESTING, i);
        } else if (c == '}' || c == ']') {
            depth--;
        } else if (c == '-' || (c >= '0' && c <= '9')) { // a number: written as an integer, or not integral
            size_t j = i;
            int plain = 1;
            while (j < n && strchr("+-0123456789.eE", h[j])) plain &= h[j] != '.' && h[j] != 'e' && h[j] != 'E', j++;
            char num[64];
            snprintf(num, sizeof num, "%.*s", (int)(j - i < 63 ? j - i : 63), (const char *)h + i);
            double v = strtod(num, NULL);
            if (!plain && v == floor(v) && fabs(v) <= MAX_EXACT_INT) // other numbers: the schema says what is wrong
                return fail(e, "header number '%s' at byte %zu is an integer written as a float (shapes and offsets "
                               "are integers)", num, i);
            i = j - 1;
        } else if (c == ',' || c == ':') {
            if (++separators > ST_MAX_JSON_ITEMS)
                return fail(e, "header holds more than %d JSON values", ST_MAX_JSON_ITEMS);
        } else if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') {
            return fail(e, "header contains the control byte 0x%02x at byte %zu", c, i);
        }
    }
    return 0;
}

// ---------------------------------------------------------------------------------------------------------------
// header schema

typedef struct {
    uint64_t begin, end;
    int index;
} Span;

static int cmp_span(const void *a, const void *b) {
    const Span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp(((const StTensor *)a)->name, ((const StTensor *)b)->name);
}

// A JSON number that is a non-negative integer no larger than 2^53. Returns 0, or a short reason.
static const char *json_to_u64(const cJSON *it, uint64_t *out) {
    if (!cJSON_IsNumber(it)) return "is not a number";
    double d = it->valuedouble;
    if (!(d >= 0)) return "is negative";
    if (d > MAX_EXACT_INT) return "is larger than 2^53";
    uint64_t u = (uint64_t)d;
    if ((double)u != d) return "is not an integer";
    *out = u;
    return NULL;
}

// Finds duplicate keys among the members of obj (cJSON keeps each one as its own item).
static int check_unique_keys(const cJSON *obj, const char *where, ErrOut *e) {
    int n = cJSON_GetArraySize(obj);
    if (n < 2) return 0;
    const char **keys = xmalloc((size_t)n * sizeof *keys);
    int k = 0;
    for (const cJSON *c = obj->child; c; c = c->next) keys[k++] = c->string;
    qsort(keys, (size_t)n, sizeof *keys, cmp_str_ptr);
    int rc = 0;
    for (int i = 1; i < n && !rc; i++)
        if (!strcmp(keys[i - 1], keys[i])) {
            char q[QUOTE_LEN];
            rc = fail(e, "duplicate key %s in %s", quote(q, sizeof q, keys[i]), where);
        }
    free(keys);
    return rc;
}

static int parse_metadata(const cJSON *meta, SafeTensors *st, ErrOut *e) {
    if (!cJSON_IsObject(meta)) return fail(e, "__metadata__ is not an object");
    if (check_unique_keys(meta, "__metadata__", e)) return -1;
    int n = cJSON_GetArraySize(meta);
    st->meta_keys = xcalloc((size_t)n + 1, sizeof *st->meta_keys);
    st->meta_values = xcalloc((size_t)n + 1, sizeof *st->meta_values);
    for (const cJSON *c = meta->child; c; c = c->next) {
        char q[QUOTE_LEN];
        if (strlen(c->string) > ST_MAX_NAME_BYTES)
            return fail(e, "__metadata__ key %s is longer than %d bytes", quote(q, sizeof q, c->string),
                        ST_MAX_NAME_BYTES);
        if (!cJSON_IsString(c))
            return fail(e, "__metadata__ value of %s is not a string", quote(q, sizeof q, c->string));
        st->meta_keys[st->n_meta] = xstrdup(c->string);
        st->meta_values[st->n_meta] = xstrdup(c->valuestring);
        st->n_meta++;
    }
    return 0;
}

// One tensor entry: exactly {dtype, shape, data_offsets}. Fills t (name, dtype, shape, nbytes) and span.
static int parse_entry(const cJSON *entry, StTensor *t, Span *span, ErrOut *e) {
    char q[QUOTE_LEN];
    const char *tn = quote(q, sizeof q, entry->string);
    if (strlen(entry->string) > ST_MAX_NAME_BYTES)
        return fail(e, "tensor name %s is longer than %d bytes", tn, ST_MAX_NAME_BYTES);
    if (!cJSON_IsObject(entry)) return fail(e, "tensor %s: entry is not an object", tn);
    const cJSON *dtype = NULL, *shape = NULL, *offsets = NULL;
    for (const cJSON *c = entry->child; c; c = c->next) {
        const cJSON **slot = !strcmp(c->string, "dtype")          ? &dtype
                             : !strcmp(c->string, "shape")        ? &shape
                             : !strcmp(c->string, "data_offsets") ? &offsets
                                                                  : NULL;
        char qk[QUOTE_LEN];
        if (!slot) return fail(e, "tensor %s: unexpected field %s", tn, quote(qk, sizeof qk, c->string));
        if (*slot) return fail(e, "tensor %s: duplicate field '%s'", tn, c->string);
        *slot = c;
    }
    if (!dtype) return fail(e, "tensor %s: missing 'dtype'", tn);
    if (!shape) return fail(e, "tensor %s: missing 'shape'", tn);
    if (!offsets) return fail(e, "tensor %s: missing 'data_offsets'", tn);

    if (!cJSON_IsString(dtype)) return fail(e, "tensor %s: 'dtype' is not a string", tn);
    size_t esize = 0;
    for (size_t i = 0; i < sizeof SUPPORTED / sizeof SUPPORTED[0]; i++)
        if (!strcmp(dtype->valuestring, SUPPORTED[i].name)) t->dtype = SUPPORTED[i].dtype, esize = SUPPORTED[i].size;
    if (!esize) {
        char qd[QUOTE_LEN];
        for (size_t i = 0; i < sizeof UNSUPPORTED / sizeof UNSUPPORTED[0]; i++)
            if (!strcmp(dtype->valuestring, UNSUPPORTED[i]))
                return fail(e, "tensor %s has dtype %s, which drtune does not read (supported: F32, F16, BF16, I32, "
                               "I64)", tn, UNSUPPORTED[i]);
        return fail(e, "tensor %s has unknown dtype %s", tn, quote(qd, sizeof qd, dtype->valuestring));
    }

    if (!cJSON_IsArray(shape)) return fail(e, "tensor %s: 'shape' is not an array", tn);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > ST_MAX_DIMS) return fail(e, "tensor %s has %d dimensions (at most %d supported)", tn, ndim, ST_MAX_DIMS);
    t->ndim = ndim;
    uint64_t nelem = 1;
    int d = 0;
    for (const cJSON *c = shape->child; c; c = c->next, d++) {
        uint64_t dim;
        const char *why = json_to_u64(c, &dim);
        if (why) return fail(e, "tensor %s: shape[%d] %s", tn, d, why);
        t->shape[d] = (int64_t)dim;
        if (dim && nelem > UINT64_MAX / dim) return fail(e, "tensor %s: element count overflows", tn);
        nelem *= dim;
    }
    if (nelem > SIZE_MAX / esize) return fail(e, "tensor %s: byte size overflows", tn);
    t->nbytes = (size_t)(nelem * esize);

    if (!cJSON_IsArray(offsets) || cJSON_GetArraySize(offsets) != 2)
        return fail(e, "tensor %s: 'data_offsets' is not an array of two integers", tn);
    const char *why = json_to_u64(offsets->child, &span->begin);
    if (!why) why = json_to_u64(offsets->child->next, &span->end);
    if (why) return fail(e, "tensor %s: a data offset %s", tn, why);
    if (span->end < span->begin)
        return fail(e, "tensor %s: data_offsets [%llu, %llu] end before they begin", tn,
                    (unsigned long long)span->begin, (unsigned long long)span->end);
    if (span->end - span->begin != t->nbytes) {
        char s[160];
        return fail(e, "tensor %s: data_offsets [%llu, %llu] span %llu bytes but %s %s needs %zu", tn,
                    (unsigned long long)span->begin, (unsigned long long)span->end,
                    (unsigned long long)(span->end - span->begin), safetensors_dtype_name(t->dtype),
                    tensor_dims_str(t->ndim, t->shape, s, sizeof s), t->nbytes);
    }
    t->name = xstrdup(entry->string);
    return 0;
}

// Sorted by offset, the tensors must tile [0, data_len) exactly: no hole, no overlap, nothing left over.
static int check_tiling(Span *spans, int n, const StTensor *tensors, uint64_t data_len, ErrOut *e) {
    qsort(spans, (size_t)n, sizeof *spans, cmp_span);
    uint64_t pos = 0;
    char q[QUOTE_LEN], qp[QUOTE_LEN];
    for (int i = 0; i < n; i++) {
        const char *tn = quote(q, sizeof q, tensors[spans[i].index].name);
        if (spans[i].begin != pos) {
            if (i == 0) return fail(e, "the first tensor's data (%s) starts at %llu, not 0", tn,
                                    (unsigned long long)spans[i].begin);
            const char *prev = quote(qp, sizeof qp, tensors[spans[i - 1].index].name);
            if (spans[i].begin < pos)
                return fail(e, "tensor %s: data [%llu, %llu) overlap tensor %s, which ends at %llu", tn,
                            (unsigned long long)spans[i].begin, (unsigned long long)spans[i].end, prev,
                            (unsigned long long)pos);
            return fail(e, "tensor %s: data start at %llu, leaving a %llu-byte hole after tensor %s", tn,
                        (unsigned long long)spans[i].begin, (unsigned long long)(spans[i].begin - pos), prev);
        }
        pos = spans[i].end;
    }
    if (pos != data_len)
        return fail(e, "the tensors cover %llu bytes but the data buffer holds %llu", (unsigned long long)pos,
                    (unsigned long long)data_len);
    return 0;
}

static void release_tables(SafeTensors *st) {
    for (int i = 0; i < st->n; i++) free(st->tensors[i].name);
    for (int i = 0; i < st->n_meta; i++) {
        free(st->meta_keys[i]);
        free(st->meta_values[i]);
    }
    free(st->tensors);
    free(st->meta_keys);
    free(st->meta_values);
    st->tensors = NULL;
    st->meta_keys = st->meta_values = NULL;
    st->n = st->n_meta = 0;
}

static int parse_header_json(const uint8_t *h, size_t hlen, const uint8_t *data, uint64_t data_len, SafeTensors *st,
                             ErrOut *e) {
    // cJSON gets its own NUL-terminated copy of the header: it never reads the mapping itself
    char *text = xmalloc(hlen + 1);
    memcpy(text, h, hlen);
    text[hlen] = 0;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, hlen, &end, 0);
    Span *spans = NULL;
    int rc = 0;
    if (!root) {
        rc = fail(e, "header is not valid JSON (error at byte %zu of %zu)", end ? (size_t)(end - text) : 0, hlen);
        goto done;
    }
    for (const char *p = end; p < text + hlen; p++)
        if (*p != ' ') {
            rc = fail(e, "header has bytes after its JSON object (at byte %zu; only space padding is allowed)",
                      (size_t)(p - text));
            goto done;
        }
    if ((rc = check_unique_keys(root, "the header", e))) goto done;

    int n = cJSON_GetArraySize(root);
    st->tensors = xcalloc((size_t)n + 1, sizeof *st->tensors);
    spans = xmalloc(((size_t)n + 1) * sizeof *spans);
    for (const cJSON *c = root->child; c; c = c->next) {
        if (!strcmp(c->string, "__metadata__")) {
            if ((rc = parse_metadata(c, st, e))) goto done;
            continue;
        }
        StTensor *t = &st->tensors[st->n];
        spans[st->n].index = st->n;
        if ((rc = parse_entry(c, t, &spans[st->n], e))) goto done;
        st->n++;
    }
    if ((rc = check_tiling(spans, st->n, st->tensors, data_len, e))) goto done;
    for (int i = 0; i < st->n; i++) {
        st->tensors[spans[i].index].offset = (size_t)spans[i].begin;
        st->tensors[spans[i].index].data = data + spans[i].begin;
    }
    qsort(st->tensors, (size_t)st->n, sizeof *st->tensors, cmp_tensor_name);
done:
    free(spans);
    cJSON_Delete(root);
    free(text);
    return rc;
}

int safetensors_parse_buffer(const uint8_t *buf, size_t len, char *err, size_t errlen, SafeTensors *st) {
    ErrOut e = {err, errlen};
    memset(st, 0, sizeof *st);
    if (err && errlen) err[0] = 0;
    if (len < 8) return fail(&e, "file is %zu bytes, too short for the 8-byte header length", len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | buf[i];
    if (hlen > ST_MAX_HEADER_BYTES)
        return fail(&e, "header length %llu exceeds the limit of %llu bytes", (unsigned long long)hlen,
                    ST_MAX_HEADER_BYTES);
    if (hlen > len - 8)
        return fail(&e, "header length %llu runs past the end of the %zu-byte file", (unsigned long long)hlen, len);
    const uint8_t *h = buf + 8;
    if (hlen == 0 || h[0] != '{') return fail(&e, "header does not start with '{'");
    size_t bad = utf8_valid_prefix(h, (size_t)hlen);
    if (bad != hlen) return fail(&e, "header is not valid UTF-8 (byte %zu)", bad);
    if (header_prescan(h, (size_t)hlen, &e)) return -1;
    if (parse_header_json(h, (size_t)hlen, h + hlen, len - 8 - hlen, st, &e)) {
        release_tables(st);
        return -1;
    }
    st->map = buf;
    st->size = len;
    return 0;
}

// ---------------------------------------------------------------------------------------------------------------
// file API

void safetensors_open(SafeTensors *st, const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) dt_user_error("cannot open '%s' (%s)", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        dt_user_error("'%s' is not a regular file", path);
    }
    size_t size = (size_t)sb.st_size;
    const uint8_t *map = NULL;
    if (size) {
        void *m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            int er = errno;
            close(fd);
            dt_user_error("cannot map '%s' (%s)", path, strerror(er));
        }
        map = m;
    }
    close(fd); // the mapping keeps the file open
    char err[512];
    if (safetensors_parse_buffer(map, size, err, sizeof err, st)) {
        if (map) munmap((void *)map, size);
        dt_user_error("'%s': %s", path, err);
    }
    st->path = xstrdup(path);
}

void safetensors_close(SafeTensors *st) {
    release_tables(st);
    if (st->path && st->map) munmap((void *)st->map, st->size);
    free(st->path);
    memset(st, 0, sizeof *st);
}

const StTensor *safetensors_find(const SafeTensors *st, const char *name) {
    StTensor key;
    key.name = (char *)name;
    return st->n ? bsearch(&key, st->tensors, (size_t)st->n, sizeof *st->tensors, cmp_tensor_name) : NULL;
}

const char *safetensors_metadata(const SafeTensors *st, const char *key) {
    for (int i = 0; i < st->n_meta; i++)
        if (!strcmp(st->meta_keys[i], key)) return st->meta_values[i];
    return NULL;
}

// ---------------------------------------------------------------------------------------------------------------
// reading into tensors

// Float data in chunks: through an aligned copy when the mapped bytes are misaligned for their type, and through
// a host staging buffer when dst lives on a GPU.
static void read_float(const StTensor *t, Tensor *dst, int64_t n) {
    DType st = float_dtype_to_dtype(t->dtype);
    size_t ss = dtype_size(st), ds = dtype_size(dst->dtype);
    if (st == dst->dtype) {
        device_copy(dst->data, dst->device, t->data, DEVICE_CPU, t->nbytes);
        return;
    }
    int aligned = (uintptr_t)t->data % ss == 0;
    int64_t chunk = n < CONVERT_CHUNK ? n : CONVERT_CHUNK;
    void *src_stage = aligned ? NULL : xaligned_alloc((size_t)chunk * ss);
    void *dst_stage = dst->device == DEVICE_CPU ? NULL : xaligned_alloc((size_t)chunk * ds);
    const uint8_t *src = t->data;
    for (int64_t i = 0; i < n; i += chunk) {
        int64_t m = n - i < chunk ? n - i : chunk;
        const void *s = src + (size_t)i * ss;
        if (src_stage) s = memcpy(src_stage, s, (size_t)m * ss);
        void *d = (uint8_t *)dst->data + (size_t)i * ds;
        dtype_convert(dst_stage ? dst_stage : d, dst->dtype, s, st, m);
        if (dst_stage) device_copy(d, dst->device, dst_stage, DEVICE_CPU, (size_t)m * ds);
    }
    free(src_stage);
    free(dst_stage);
}

// Integer data into int32, each value range-checked (position_ids are stored as I64).
static void read_int(const SafeTensors *file, const StTensor *t, Tensor *dst, int64_t n) {
    if (t->dtype == ST_I32) {
        device_copy(dst->data, dst->device, t->data, DEVICE_CPU, t->nbytes);
        return;
    }
    int64_t chunk = n < CONVERT_CHUNK ? n : CONVERT_CHUNK;
    int32_t *stage = dst->device == DEVICE_CPU ? NULL : xaligned_alloc((size_t)chunk * 4);
    const uint8_t *src = t->data;
    for (int64_t i = 0; i < n; i += chunk) {
        int64_t m = n - i < chunk ? n - i : chunk;
        int32_t *d = stage ? stage : (int32_t *)dst->data + i;
        for (int64_t k = 0; k < m; k++) {
            int64_t v;
            memcpy(&v, src + (size_t)(i + k) * 8, 8);
            if (v < INT32_MIN || v > INT32_MAX) {
                char q[QUOTE_LEN];
                dt_user_error("'%s': tensor %s: value %lld at index %lld does not fit in int32",
                              file->path ? file->path : "<memory>", quote(q, sizeof q, t->name), (long long)v,
                              (long long)(i + k));
            }
            d[k] = (int32_t)v;
        }
        if (stage) device_copy((int32_t *)dst->data + i, dst->device, stage, DEVICE_CPU, (size_t)m * 4);
    }
    free(stage);
}

int64_t safetensors_first_nonfinite(const StTensor *t, int *is_nan) {
    if (!is_float_dtype(t->dtype)) return -1;
    const uint8_t *p = t->data;
    size_t es = safetensors_dtype_size(t->dtype);
    int64_t n = (int64_t)(t->nbytes / es);
    uint32_t mask = t->dtype == ST_F32 ? 0x7F800000u : t->dtype == ST_F16 ? 0x7C00u : 0x7F80u;
    for (int64_t i = 0; i < n; i++) {
        uint32_t bits = 0;
        memcpy(&bits, p + (size_t)i * es, es); // little-endian host, like the file
        if ((bits & mask) != mask) continue;
        if (is_nan) *is_nan = (bits & ~mask & (t->dtype == ST_F32 ? 0x7FFFFFu : t->dtype == ST_F16 ? 0x3FFu : 0x7Fu)) != 0;
        return i;
    }
    return -1;
}

// Float data must be finite: a NaN or infinity in weights, adapters or latents would spread through every result.
static void check_finite(const SafeTensors *file, const StTensor *t) {
    int is_nan = 0;
    int64_t i = safetensors_first_nonfinite(t, &is_nan);
    if (i < 0) return;
    char q[QUOTE_LEN];
    dt_user_error("'%s': tensor %s holds %s at element %lld (only finite values are accepted)",
                  file->path ? file->path : "<memory>", quote(q, sizeof q, t->name), is_nan ? "NaN" : "infinity",
                  (long long)i);
}

void safetensors_read_tensor(const SafeTensors *st, const StTensor *t, Tensor *dst) {
    int64_t n = tensor_numel(dst);
    CHECK(n * (int64_t)safetensors_dtype_size(t->dtype) == (int64_t)t->nbytes, "give dst the file tensor's shape",
          "safetensors_read_tensor: %zu bytes of %s into %lld elements", t->nbytes, safetensors_dtype_name(t->dtype),
          (long long)n);
    int dst_float = dst->dtype != DTYPE_I32;
    if (dst_float != is_float_dtype(t->dtype)) {
        char q[QUOTE_LEN];
        dt_user_error("'%s': tensor %s is %s in the file, which cannot be read into a %s tensor",
                      st->path ? st->path : "<memory>", quote(q, sizeof q, t->name), safetensors_dtype_name(t->dtype),
                      dtype_name(dst->dtype));
    }
    if (n == 0) return;
    if (dst_float) {
        check_finite(st, t);
        read_float(t, dst, n);
    } else {
        read_int(st, t, dst, n);
    }
}

void safetensors_read_into(const SafeTensors *st, const char *name, Tensor *dst) {
    const char *path = st->path ? st->path : "<memory>";
    char q[QUOTE_LEN];
    const StTensor *t = safetensors_find(st, name);
    if (!t) dt_user_error("'%s': tensor %s not found in the file", path, quote(q, sizeof q, name));
    int same = t->ndim == dst->ndim;
    for (int i = 0; same && i < t->ndim; i++) same = t->shape[i] == dst->shape[i];
    if (!same) {
        char a[192], b[192];
        dt_user_error("'%s': tensor %s has shape %s in the file, expected %s", path, quote(q, sizeof q, name),
                      tensor_dims_str(t->ndim, t->shape, a, sizeof a),
                      tensor_dims_str(dst->ndim, dst->shape, b, sizeof b));
    }
    safetensors_read_tensor(st, t, dst);
}

// ---------------------------------------------------------------------------------------------------------------
// writer

typedef struct {
    char *s;
    size_t len, cap;
} StrBuf;

static void sb_put(StrBuf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->s = xrealloc(b->s, b->cap);
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}

static void sb_puts(StrBuf *b, const char *s) { sb_put(b, s, strlen(s)); }

DT_PRINTF(2, 3) static void sb_printf(StrBuf *b, const char *fmt, ...) {
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    CHECK(n >= 0 && (size_t)n < sizeof tmp, "", "header field too long");
    sb_put(b, tmp, (size_t)n);
}

// A JSON string literal; s must be valid UTF-8.
static void sb_json_string(StrBuf *b, const char *s) {
    CHECK(utf8_valid_prefix(s, strlen(s)) == strlen(s), "tensor names and metadata must be UTF-8",
          "cannot write a safetensors string that is not valid UTF-8");
    sb_puts(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            char esc[2] = {'\\', (char)*p};
            sb_put(b, esc, 2);
        } else if (*p < 0x20) {
            sb_printf(b, "\\u%04x", *p);
        } else {
            sb_put(b, (const char *)p, 1);
        }
    }
    sb_puts(b, "\"");
}

static const char *dtype_st_name(DType t) {
    switch (t) {
    case DTYPE_F32: return "F32";
    case DTYPE_F16: return "F16";
    case DTYPE_BF16: return "BF16";
    case DTYPE_I32: return "I32";
    }
    FATAL("", "unknown dtype %d", (int)t);
}

static void write_all(int fd, const char *tmp, const void *p, size_t len) {
    const uint8_t *q = p;
    while (len) {
        ssize_t w = write(fd, q, len);
        if (w < 0) {
            if (errno == EINTR) continue;
            int er = errno;
            close(fd);
            unlink(tmp);
            dt_user_error("cannot write '%s' (%s)", tmp, strerror(er));
        }
        q += w;
        len -= (size_t)w;
    }
}

static void write_tensor_data(int fd, const char *tmp, const Tensor *t) {
    size_t nbytes = tensor_bytes(t);
    if (!nbytes) return;
    if (t->device == DEVICE_CPU) {
        write_all(fd, tmp, t->data, nbytes);
        return;
    }
    size_t chunk = 64u << 20;
    void *stage = xaligned_alloc(nbytes < chunk ? nbytes : chunk);
    for (size_t off = 0; off < nbytes; off += chunk) {
        size_t m = nbytes - off < chunk ? nbytes - off : chunk;
        device_copy(stage, DEVICE_CPU, (const uint8_t *)t->data + off, t->device, m);
        write_all(fd, tmp, stage, m);
    }
    free(stage);
}

static void build_header(StrBuf *h, int n, const char *const *names, const Tensor *tensors, const char *meta_json) {
    sb_puts(h, "{");
    if (meta_json) {
        cJSON *meta = cJSON_Parse(meta_json);
        CHECK(meta && cJSON_IsObject(meta), "pass a JSON object such as {\"format\":\"pt\"}",
              "safetensors metadata is not a JSON object: %s", meta_json);
        ErrOut quiet = {NULL, 0};
        CHECK(check_unique_keys(meta, "metadata", &quiet) == 0, "", "safetensors metadata repeats a key: %s",
              meta_json);
        sb_puts(h, "\"__metadata__\":{");
        for (const cJSON *c = meta->child; c; c = c->next) {
            CHECK(cJSON_IsString(c), "", "safetensors metadata value of '%s' is not a string", c->string);
            if (c != meta->child) sb_puts(h, ",");
            sb_json_string(h, c->string);
            sb_puts(h, ":");
            sb_json_string(h, c->valuestring);
        }
        sb_puts(h, "}");
        cJSON_Delete(meta);
    }
    uint64_t offset = 0;
    for (int i = 0; i < n; i++) {
        const Tensor *t = &tensors[i];
        CHECK(strcmp(names[i], "__metadata__") != 0, "", "'__metadata__' cannot name a tensor");
        if (meta_json || i) sb_puts(h, ",");
        sb_json_string(h, names[i]);
        sb_printf(h, ":{\"dtype\":\"%s\",\"shape\":[", dtype_st_name(t->dtype));
        for (int d = 0; d < t->ndim; d++) sb_printf(h, d ? ",%lld" : "%lld", (long long)t->shape[d]);
        uint64_t nbytes = tensor_bytes(t);
        sb_printf(h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)offset,
                  (unsigned long long)(offset + nbytes));
        offset += nbytes;
    }
    sb_puts(h, "}");
    while (h->len % 8) sb_puts(h, " ");
}

void safetensors_write(const char *path, int n, const char *const *names, const Tensor *tensors,
                       const char *metadata_json) {
    CHECK(n >= 0 && (n == 0 || (names && tensors)), "", "bad arguments to safetensors_write");
    const char **sorted = xmalloc(((size_t)n + 1) * sizeof *sorted);
    for (int i = 0; i < n; i++) sorted[i] = names[i];
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_str_ptr);
    for (int i = 1; i < n; i++)
        CHECK(strcmp(sorted[i - 1], sorted[i]) != 0, "tensor names must be unique", "'%s' written twice to '%s'",
              sorted[i], path);
    free(sorted);

    StrBuf h = {0};
    build_header(&h, n, names, tensors, metadata_json);
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)h.len >> (8 * i));

    size_t plen = strlen(path);
    char *tmp = xmalloc(plen + 32);
    snprintf(tmp, plen + 32, "%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) dt_user_error("cannot write '%s' (%s)", tmp, strerror(errno));
    write_all(fd, tmp, len8, 8);
    write_all(fd, tmp, h.s, h.len);
    free(h.s);
    for (int i = 0; i < n; i++) write_tensor_data(fd, tmp, &tensors[i]);
    if (fsync(fd) != 0) {
        int er = errno;
        close(fd);
        unlink(tmp);
        dt_user_error("cannot flush '%s' (%s)", tmp, strerror(er));
    }
    if (close(fd) != 0) {
        int er = errno;
        unlink(tmp);
        dt_user_error("cannot flush '%s' (%s)", tmp, strerror(er));
    }
    if (rename(tmp, path) != 0) {
        int er = errno;
        unlink(tmp);
        dt_user_error("cannot rename '%s' to '%s' (%s)", tmp, path, strerror(er));
    }
    char *dcopy = xstrdup(path); // make the rename itself durable
    int dfd = open(dirname(dcopy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    free(dcopy);
    free(tmp);
}
