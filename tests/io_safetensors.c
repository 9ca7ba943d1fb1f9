// io_safetensors.c: the safetensors reader and writer: exact round trips for every dtype, conversion on read
// (including misaligned data), and a catalogue of malformed files that must each be rejected with one clear line
// (through the buffer API, and through the file API as exit code 2 with a single "drtune: error:" line).
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../src/core/common.h"
#include "../src/io/safetensors.h"
#include "testutil.h"

// ---------------------------------------------------------------------------------------------------------------
// building files

typedef struct {
    uint8_t *b;
    size_t n;
} Buf;

static void put_le64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

// An 8-byte length N followed by exactly `n` bytes (N need not equal n).
static Buf raw_file(uint64_t N, const void *bytes, size_t n) {
    Buf f = {malloc(8 + n + 1), 8 + n};
    put_le64(f.b, N);
    if (n) memcpy(f.b + 8, bytes, n);
    return f;
}

// A header written with ' for " (readability), then data_len bytes of a fixed pattern.
static Buf json_file(const char *header, size_t data_len) {
    size_t h = strlen(header);
    Buf f = {malloc(8 + h + data_len + 1), 8 + h + data_len};
    put_le64(f.b, h);
    for (size_t i = 0; i < h; i++) f.b[8 + i] = header[i] == '\'' ? '"' : (uint8_t)header[i];
    for (size_t i = 0; i < data_len; i++) f.b[8 + h + i] = (uint8_t)(i * 7 + 1);
    return f;
}

// A header taken verbatim (hlen bytes), then data_len zero bytes for the caller to fill.
static Buf header_file(const char *header, size_t hlen, size_t data_len) {
    Buf f = {calloc(8 + hlen + data_len, 1), 8 + hlen + data_len};
    put_le64(f.b, hlen);
    memcpy(f.b + 8, header, hlen);
    return f;
}

// Fewer than 8 bytes: not even a header length.
static Buf short_file(size_t n) {
    Buf f = {calloc(8, 1), n};
    return f;
}

// ---------------------------------------------------------------------------------------------------------------
// running a call that is expected to exit, in a child process

typedef struct {
    const char *path;
    const char *tensor;
    Tensor dst;
} ChildArgs;

static void child_open(const void *arg) {
    const ChildArgs *a = arg;
    SafeTensors st;
    safetensors_open(&st, a->path);
}

static void child_read(const void *arg) {
    const ChildArgs *a = arg;
    SafeTensors st;
    safetensors_open(&st, a->path);
    Tensor d = a->dst;
    safetensors_read_into(&st, a->tensor, &d);
}

static void child_write_bad_dir(const void *arg) {
    const ChildArgs *a = arg;
    float v = 1;
    Tensor t = tensor_f32_1d(&v, 1);
    const char *names[] = {"x"};
    safetensors_write(a->path, 1, names, &t, NULL);
}

// Exit code 2 and exactly one line "drtune: error: <prefix>...<needle>...", as four checks.
static void expect_user_error(TuChildFn fn, const ChildArgs *a, const char *prefix, const char *needle,
                              const char *what) {
    TuChild c;
    int rc = tu_run_child(fn, a, &c);
    const char *out = c.err;
    TU_EXPECT(rc == 2, "%s: exit code %d, expected 2 (stderr: %s)", what, rc, out);
    size_t lines = 0;
    for (const char *p = out; *p; p++) lines += *p == '\n';
    TU_EXPECT(lines == 1 && out[strlen(out) - 1] == '\n', "%s: expected one line, got: %s", what, out);
    char head[600];
    snprintf(head, sizeof head, "drtune: error: %s", prefix);
    TU_EXPECT(!strncmp(out, head, strlen(head)), "%s: line does not start with \"%s\": %s", what, head, out);
    TU_EXPECT(!needle || strstr(out, needle), "%s: \"%s\" missing from: %s", what, needle, out);
    tu_child_free(&c);
}

// ---------------------------------------------------------------------------------------------------------------
// malformed and edge-case files

typedef struct {
    const char *what;
    Buf file;
    int valid;
    const char *needle; // expected in the message
} Case;

static Case bad(const char *what, Buf f, const char *needle) { return (Case){what, f, 0, needle}; }
static Case good(const char *what, Buf f) { return (Case){what, f, 1, NULL}; }

#define T2F32 "'dtype':'F32','shape':[2]"

static int make_cases(Case *c) {
    int n = 0;
    c[n++] = bad("empty file", short_file(0), "too short");
    c[n++] = bad("7-byte file", short_file(7), "too short");
    c[n++] = bad("header length over 100 MB", raw_file(100000001ull, "{}", 2), "exceeds the limit");
    c[n++] = bad("header length 2^64-1", raw_file(UINT64_MAX, "{}", 2), "exceeds the limit");
    c[n++] = bad("header length 2^64-8 (8+N wraps)", raw_file(UINT64_MAX - 7, "{}", 2), "exceeds the limit");
    c[n++] = bad("header length past the end", raw_file(64, "{}", 2), "runs past the end");
    c[n++] = bad("header length 0", raw_file(0, "{}", 2), "start with '{'");
    c[n++] = bad("leading space", json_file(" {}", 0), "start with '{'");
    c[n++] = bad("array header", json_file("[]", 0), "start with '{'");
    c[n++] = bad("invalid UTF-8 byte", json_file("{'a\xff':{}}", 0), "UTF-8");
    c[n++] = bad("overlong UTF-8", json_file("{'a\xc0\xaf':{}}", 0), "UTF-8");
    c[n++] = bad("UTF-8 surrogate", json_file("{'a\xed\xa0\x80':{}}", 0), "UTF-8");
    c[n++] = bad("UTF-8 above U+10FFFF", json_file("{'a\xf4\x90\x80\x80':{}}", 0), "UTF-8");
    c[n++] = bad("UTF-8 cut at the header end", json_file("{}\xe2\x82", 0), "UTF-8");
    c[n++] = bad("garbage after the JSON", json_file("{} x", 0), "after its JSON");
    c[n++] = bad("newline padding", json_file("{}\n", 0), "after its JSON");
    c[n++] = bad("two objects", json_file("{}{}", 0), "after its JSON");
    c[n++] = bad("truncated JSON", json_file("{'a':", 0), "not valid JSON");
    c[n++] = bad("invalid escape", json_file("{'a\\x':{}}", 0), "not valid JSON");
    c[n++] = bad("lone surrogate escape", json_file("{'a\\udc00':{}}", 0), "not valid JSON");
    c[n++] = bad("control byte outside strings", json_file("{\x01}", 0), "control byte");
    c[n++] = bad("raw tab in a name", json_file("{'a\tb':{" T2F32 ",'data_offsets':[0,8]}}", 8), "raw control");
    c[n++] = bad("\\u0000 in a name", json_file("{'a\\u0000b':{" T2F32 ",'data_offsets':[0,8]}}", 8), "\\u0000");
    c[n++] = bad("nesting too deep", json_file("{'a':{'dtype':'F32','shape':[[[[[[[[[1]]]]]]]]]}}", 0), "nests");
    c[n++] = bad("duplicate tensor",
                 json_file("{'a':{" T2F32 ",'data_offsets':[0,8]},'a':{" T2F32 ",'data_offsets':[8,16]}}", 16),
                 "duplicate key 'a'");
    c[n++] = bad("duplicate after unescaping",
                 json_file("{'a':{" T2F32 ",'data_offsets':[0,8]},'\\u0061':{" T2F32 ",'data_offsets':[8,16]}}", 16),
                 "duplicate key 'a'");
    c[n++] = bad("duplicate __metadata__", json_file("{'__metadata__':{},'__metadata__':{}}", 0),
                 "duplicate key '__metadata__'");
    c[n++] = bad("duplicate field", json_file("{'a':{" T2F32 ",'dtype':'F32','data_offsets':[0,8]}}", 8),
                 "duplicate field 'dtype'");
    c[n++] = bad("duplicate metadata key", json_file("{'__metadata__':{'k':'1','k':'2'}}", 0), "duplicate key 'k'");
    c[n++] = bad("unknown dtype", json_file("{'w':{'dtype':'F33','shape':[2],'data_offsets':[0,8]}}", 8),
                 "tensor 'w' has unknown dtype 'F33'");
    c[n++] = bad("unsupported dtype", json_file("{'w':{'dtype':'F64','shape':[1],'data_offsets':[0,8]}}", 8),
                 "tensor 'w' has dtype F64");
    c[n++] = bad("dtype not a string", json_file("{'a':{'dtype':4,'shape':[2],'data_offsets':[0,8]}}", 8),
                 "'dtype' is not a string");
    c[n++] = bad("missing dtype", json_file("{'a':{'shape':[2],'data_offsets':[0,8]}}", 8), "missing 'dtype'");
    c[n++] = bad("missing shape", json_file("{'a':{'dtype':'F32','data_offsets':[0,8]}}", 8), "missing 'shape'");
    c[n++] = bad("missing data_offsets", json_file("{'a':{" T2F32 "}}", 8), "missing 'data_offsets'");
    c[n++] = bad("extra field", json_file("{'a':{" T2F32 ",'data_offsets':[0,8],'foo':1}}", 8),
                 "unexpected field 'foo'");
    c[n++] = bad("negative dim", json_file("{'a':{'dtype':'F32','shape':[-2],'data_offsets':[0,8]}}", 8),
                 "shape[0] is negative");
    c[n++] = bad("fractional dim", json_file("{'a':{'dtype':'F32','shape':[2.5],'data_offsets':[0,8]}}", 8),
                 "shape[0] is not an integer");
    c[n++] = bad("dim 2.0", json_file("{'a':{'dtype':'F32','shape':[2.0],'data_offsets':[0,8]}}", 8),
                 "'2.0' at byte 29 is an integer written as a float");
    c[n++] = bad("dim 2e0", json_file("{'a':{'dtype':'F32','shape':[2e0],'data_offsets':[0,8]}}", 8),
                 "'2e0' at byte 29 is an integer written as a float");
    c[n++] = bad("offset 8.0", json_file("{'a':{" T2F32 ",'data_offsets':[0,8.0]}}", 8), "'8.0' at byte");
    c[n++] = bad("dim above 2^53",
                 json_file("{'a':{'dtype':'F32','shape':[9007199254740994],'data_offsets':[0,8]}}", 8),
                 "larger than 2^53");
    c[n++] = bad("dim 1e300", json_file("{'a':{'dtype':'F32','shape':[1e300],'data_offsets':[0,8]}}", 8),
                 "larger than 2^53");
    c[n++] = bad("dim as a string", json_file("{'a':{'dtype':'F32','shape':['2'],'data_offsets':[0,8]}}", 8),
                 "shape[0] is not a number");
    c[n++] = bad("shape not an array", json_file("{'a':{'dtype':'F32','shape':2,'data_offsets':[0,8]}}", 8),
                 "'shape' is not an array");
    c[n++] = bad("nine dims",
                 json_file("{'a':{'dtype':'F32','shape':[1,1,1,1,1,1,1,1,2],'data_offsets':[0,8]}}", 8),
                 "9 dimensions");
    c[n++] = bad("element count overflow",
                 json_file("{'a':{'dtype':'F32','shape':[4294967296,4294967296,16],'data_offsets':[0,8]}}", 8),
                 "element count overflows");
    c[n++] = bad("byte size overflow",
                 json_file("{'a':{'dtype':'F32','shape':[1073741824,1073741824,8],'data_offsets':[0,8]}}", 8),
                 "byte size overflows");
    c[n++] = bad("three data_offsets", json_file("{'a':{" T2F32 ",'data_offsets':[0,8,8]}}", 8), "two integers");
    c[n++] = bad("one data_offset", json_file("{'a':{" T2F32 ",'data_offsets':[0]}}", 8), "two integers");
    c[n++] = bad("data_offsets not an array", json_file("{'a':{" T2F32 ",'data_offsets':'0,8'}}", 8),
                 "two integers");
    c[n++] = bad("negative offset", json_file("{'a':{" T2F32 ",'data_offsets':[-8,0]}}", 8), "is negative");
    c[n++] = bad("fractional offset", json_file("{'a':{" T2F32 ",'data_offsets':[0,8.5]}}", 8), "not an integer");
    c[n++] = bad("huge offset", json_file("{'a':{" T2F32 ",'data_offsets':[0,1e20]}}", 8), "larger than 2^53");
    c[n++] = bad("end before begin", json_file("{'a':{'dtype':'F32','shape':[0],'data_offsets':[8,0]}}", 8),
                 "end before they begin");
    c[n++] = bad("byte length mismatch", json_file("{'a':{" T2F32 ",'data_offsets':[0,4]}}", 4),
                 "span 4 bytes but F32 [2] needs 8");
    c[n++] = bad("overlap",
                 json_file("{'a':{" T2F32 ",'data_offsets':[0,8]},'b':{" T2F32 ",'data_offsets':[4,12]}}", 12),
                 "overlap tensor 'a'");
    c[n++] = bad("hole",
                 json_file("{'a':{" T2F32 ",'data_offsets':[0,8]},'b':{" T2F32 ",'data_offsets':[12,20]}}", 20),
                 "4-byte hole after tensor 'a'");
    c[n++] = bad("not starting at 0", json_file("{'a':{" T2F32 ",'data_offsets':[4,12]}}", 12), "not 0");
    c[n++] = bad("buffer not covered", json_file("{'a':{" T2F32 ",'data_offsets':[0,8]}}", 12),
                 "cover 8 bytes but the data buffer holds 12");
    c[n++] = bad("data past the end", json_file("{'a':{" T2F32 ",'data_offsets':[0,8]}}", 4),
                 "cover 8 bytes but the data buffer holds 4");
    c[n++] = bad("data without tensors", json_file("{}", 4), "cover 0 bytes");
    c[n++] = bad("metadata value a number", json_file("{'__metadata__':{'format':1}}", 0),
                 "value of 'format' is not a string");
    c[n++] = bad("metadata value an object", json_file("{'__metadata__':{'format':{}}}", 0), "not a string");
    c[n++] = bad("metadata not an object", json_file("{'__metadata__':'pt'}", 0), "not an object");
    c[n++] = bad("entry not an object", json_file("{'a':[1,2]}", 0), "entry is not an object");
    static char longname[6000];
    memset(longname, 0, sizeof longname);
    strcpy(longname, "{'");
    memset(longname + 2, 'n', 5000);
    strcat(longname, "':{'dtype':'F32','shape':[0],'data_offsets':[0,0]}}");
    c[n++] = bad("name over 4096 bytes", json_file(longname, 0), "longer than 4096");
    static char many[ST_MAX_JSON_ITEMS + 4]; // one separator too many
    memset(many, ',', sizeof many - 1);
    many[0] = '{', many[sizeof many - 2] = '}';
    c[n++] = bad("too many JSON values", json_file(many, 0), "more than 4000000 JSON values");

    c[n++] = good("no tensors", json_file("{}", 0));
    c[n++] = good("0-rank tensor", json_file("{'s':{'dtype':'F32','shape':[],'data_offsets':[0,4]}}", 4));
    c[n++] = good("empty tensor next to data",
                  json_file("{'e':{'dtype':'F16','shape':[0,3],'data_offsets':[0,0]},'a':{" T2F32
                            ",'data_offsets':[0,8]}}", 8));
    c[n++] = good("only an empty tensor", json_file("{'e':{'dtype':'BF16','shape':[3,0],'data_offsets':[0,0]}}", 0));
    c[n++] = good("2^53 dim times 0",
                  json_file("{'e':{'dtype':'F32','shape':[9007199254740992,0],'data_offsets':[0,0]}}", 0));
    c[n++] = good("metadata only", json_file("{'__metadata__':{'format':'pt','x':''}}", 0));
    c[n++] = good("space padding", json_file("{'a':{" T2F32 ",'data_offsets':[0,8]}}       ", 8));
    c[n++] = good("whitespace between tokens", json_file("{\n\t'a' : {" T2F32 ",\r\n'data_offsets':[0, 8]}\n}", 8));
    c[n++] = good("out-of-order entries",
                  json_file("{'b':{" T2F32 ",'data_offsets':[8,16]},'a':{" T2F32 ",'data_offsets':[0,8]}}", 16));
    c[n++] = good("UTF-8 names", json_file("{'\xc3\xb1\xe2\x82\xac\xf0\x9d\x84\x9e':{" T2F32
                                           ",'data_offsets':[0,8]}}", 8));
    c[n++] = good("I64 and I32", json_file("{'p':{'dtype':'I64','shape':[1,2],'data_offsets':[0,16]},"
                                           "'i':{'dtype':'I32','shape':[2],'data_offsets':[16,24]}}", 24));
    return n;
}

static void test_cases(void) {
    Case cases[128];
    int n = make_cases(cases);
    int rejected = 0, accepted = 0;
    for (int i = 0; i < n; i++) {
        Case *c = &cases[i];
        char err[512];
        SafeTensors st;
        int rc = safetensors_parse_buffer(c->file.b, c->file.n, err, sizeof err, &st);
        int count = -1;
        if (c->valid) {
            TU_EXPECT(rc == 0, "%s: rejected a valid file: %s", c->what, err);
            if (rc == 0) {
                accepted++;
                count = st.n;
                for (int k = 0; k < st.n; k++)
                    TU_EXPECT(safetensors_find(&st, st.tensors[k].name) == &st.tensors[k], "%s: find", c->what);
                safetensors_close(&st);
            }
        } else {
            TU_EXPECT(rc != 0, "%s: accepted a malformed file", c->what);
            if (rc == 0) {
                safetensors_close(&st);
                continue;
            }
            rejected++;
            TU_EXPECT(err[0] && !strchr(err, '\n'), "%s: message must be one non-empty line: '%s'", c->what, err);
            TU_EXPECT(!c->needle || strstr(err, c->needle), "%s: message '%s' lacks \"%s\"", c->what, err, c->needle);
        }
        // the same bytes as a file: the file API must agree (exit 2 with one line naming the file)
        char name[64];
        snprintf(name, sizeof name, "case%02d.safetensors", i);
        const char *path = tu_path(name);
        tu_write_bytes(path, c->file.b, c->file.n);
        if (c->valid) {
            SafeTensors fst;
            safetensors_open(&fst, path);
            TU_EXPECT(fst.n == count, "%s: file API found %d tensors, buffer API %d", c->what, fst.n, count);
            safetensors_close(&fst);
        } else {
            char prefix[600];
            snprintf(prefix, sizeof prefix, "'%s': ", path);
            ChildArgs a = {.path = path};
            expect_user_error(child_open, &a, prefix, c->needle, c->what);
        }
        unlink(path);
        free(c->file.b);
    }
    printf("malformed files rejected: %d, valid edge cases accepted: %d\n", rejected, accepted);
}

// ---------------------------------------------------------------------------------------------------------------
// values of the edge cases that are accepted

static void test_edge_values(void) {
    char err[512];
    SafeTensors st;
    // escaped names are decoded and found byte-exactly
    const char *hdr = "{\"a\\\"b\\n\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}";
    Buf f = header_file(hdr, strlen(hdr), 4);
    float v = -2.5f;
    memcpy(f.b + 8 + strlen(hdr), &v, 4);
    TU_EXPECT(safetensors_parse_buffer(f.b, f.n, err, sizeof err, &st) == 0, "escaped name: %s", err);
    const StTensor *t = safetensors_find(&st, "a\"b\n");
    TU_EXPECT(t && t->ndim == 0 && t->nbytes == 4, "escaped name not found");
    float got = 0;
    Tensor d = tensor_make(&got, DTYPE_F32, DEVICE_CPU, 0, NULL);
    safetensors_read_into(&st, "a\"b\n", &d);
    TU_EXPECT(got == -2.5f, "0-rank value %g", (double)got);
    safetensors_close(&st);
    free(f.b);

    // I64 position_ids into int32, I32 as is
    hdr = "{\"p\":{\"dtype\":\"I64\",\"shape\":[1,3],\"data_offsets\":[0,24]},"
          "\"i\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[24,32]}}";
    f = header_file(hdr, strlen(hdr), 32);
    int64_t pos[3] = {0, 1, 76};
    int32_t ids[2] = {-7, 49407};
    memcpy(f.b + 8 + strlen(hdr), pos, 24);
    memcpy(f.b + 8 + strlen(hdr) + 24, ids, 8);
    TU_EXPECT(safetensors_parse_buffer(f.b, f.n, err, sizeof err, &st) == 0, "ints: %s", err);
    int32_t p32[3] = {9, 9, 9}, i32[2] = {0, 0};
    Tensor tp = tensor_make(p32, DTYPE_I32, DEVICE_CPU, 2, (int64_t[]){1, 3});
    Tensor ti = tensor_make(i32, DTYPE_I32, DEVICE_CPU, 1, (int64_t[]){2});
    safetensors_read_into(&st, "p", &tp);
    safetensors_read_into(&st, "i", &ti);
    TU_EXPECT(p32[0] == 0 && p32[1] == 1 && p32[2] == 76, "I64 -> i32: %d %d %d", p32[0], p32[1], p32[2]);
    TU_EXPECT(i32[0] == -7 && i32[1] == 49407, "I32: %d %d", i32[0], i32[1]);
    TU_EXPECT(safetensors_find(&st, "p")->dtype == ST_I64, "I64 dtype");
    safetensors_close(&st);
    free(f.b);
}

// ---------------------------------------------------------------------------------------------------------------
// round trip through the writer

static int files_with(const char *needle) {
    DIR *d = opendir(tu_tmpdir(NULL));
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += strstr(e->d_name, needle) != NULL;
    closedir(d);
    return n;
}

static void test_round_trip(void) {
    // edge values, all finite (non-finite data is refused when read: test_non_finite)
    float a[6] = {1.0f, -0.0f, 3.14159265f, 3.40282347e38f, 1e-40f, -1.17549435e-38f};
    uint16_t b[5] = {0x3c00, 0x8001, 0x7bff, 0x0400, 0xfbff};     // f16 bit patterns: subnormal, max, min normal
    uint16_t c[8] = {0x3f80, 0xc049, 0x0001, 0x7f7f, 0xff7f, 0, 0x8000, 0x4120}; // bf16
    float s = 42.0f;
    int32_t ids[4] = {-1, 0, 7, 2147483647};
    Tensor tensors[6] = {
        tensor_make(a, DTYPE_F32, DEVICE_CPU, 2, (int64_t[]){2, 3}),
        tensor_make(b, DTYPE_F16, DEVICE_CPU, 1, (int64_t[]){5}),
        tensor_make(c, DTYPE_BF16, DEVICE_CPU, 3, (int64_t[]){2, 2, 2}),
        tensor_make(&s, DTYPE_F32, DEVICE_CPU, 0, NULL),
        tensor_make(NULL, DTYPE_F32, DEVICE_CPU, 2, (int64_t[]){0, 3}),
        tensor_make(ids, DTYPE_I32, DEVICE_CPU, 1, (int64_t[]){4}),
    };
    const char *names[6] = {"z.weight", "b16", "y.bf16", "scalar", "empty", "ids"};
    const char *path = tu_path("roundtrip.safetensors");
    safetensors_write(path, 6, names, tensors, "{\"format\":\"pt\",\"note\":\"say \\\"hi\\\"\\nbye\"}");
    TU_EXPECT(files_with(".tmp.") == 0, "temporary file left behind");

    SafeTensors st;
    safetensors_open(&st, path);
    TU_EXPECT(st.n == 6, "tensor count %d", st.n);
    TU_EXPECT(st.size >= 8, "size");
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | st.map[i];
    TU_EXPECT(hlen % 8 == 0, "header length %llu not a multiple of 8", (unsigned long long)hlen);
    TU_EXPECT(st.map[8 + hlen - 1] == ' ' || st.map[8 + hlen - 1] == '}', "header padding");
    const char *fmt = safetensors_metadata(&st, "format"), *note = safetensors_metadata(&st, "note");
    TU_EXPECT(fmt && !strcmp(fmt, "pt"), "metadata format");
    TU_EXPECT(note && !strcmp(note, "say \"hi\"\nbye"), "metadata note");
    TU_EXPECT(!safetensors_metadata(&st, "missing"), "absent metadata key");
    const StDType want_dt[6] = {ST_F32, ST_F16, ST_BF16, ST_F32, ST_F32, ST_I32};
    size_t offset = 0;
    for (int i = 0; i < 6; i++) {
        const StTensor *t = safetensors_find(&st, names[i]);
        TU_EXPECT(t != NULL, "%s missing", names[i]);
        if (!t) continue;
        TU_EXPECT(t->dtype == want_dt[i], "%s dtype %s", names[i], safetensors_dtype_name(t->dtype));
        TU_EXPECT(t->ndim == tensors[i].ndim, "%s rank %d", names[i], t->ndim);
        for (int k = 0; k < t->ndim; k++) TU_EXPECT(t->shape[k] == tensors[i].shape[k], "%s shape", names[i]);
        TU_EXPECT(t->offset == offset, "%s at offset %zu, expected %zu (order given)", names[i], t->offset, offset);
        TU_EXPECT(t->nbytes == tensor_bytes(&tensors[i]), "%s nbytes", names[i]);
        TU_EXPECT(t->nbytes == 0 || !memcmp(t->data, tensors[i].data, t->nbytes), "%s bytes differ", names[i]);
        offset += t->nbytes;
    }
    TU_EXPECT(!safetensors_find(&st, "nope"), "find of an absent name");

    // read_into: same dtype is bit-exact; conversions match the scalar converters bit for bit
    float a2[6];
    uint16_t b2[5], c2[8];
    float bf[5], cf[8];
    uint16_t abf[6], ch[8];
    int32_t ids2[4];
    Tensor t;
    t = tensor_make(a2, DTYPE_F32, DEVICE_CPU, 2, (int64_t[]){2, 3}), safetensors_read_into(&st, "z.weight", &t);
    TU_EXPECT(!memcmp(a2, a, sizeof a), "f32 -> f32 not exact");
    t = tensor_make(b2, DTYPE_F16, DEVICE_CPU, 1, (int64_t[]){5}), safetensors_read_into(&st, "b16", &t);
    TU_EXPECT(!memcmp(b2, b, sizeof b), "f16 -> f16 not exact");
    t = tensor_make(c2, DTYPE_BF16, DEVICE_CPU, 3, (int64_t[]){2, 2, 2}), safetensors_read_into(&st, "y.bf16", &t);
    TU_EXPECT(!memcmp(c2, c, sizeof c), "bf16 -> bf16 not exact");
    t = tensor_make(bf, DTYPE_F32, DEVICE_CPU, 1, (int64_t[]){5}), safetensors_read_into(&st, "b16", &t);
    for (int i = 0; i < 5; i++) {
        float w = f16_to_f32(b[i]);
        TU_EXPECT(!memcmp(&bf[i], &w, 4), "f16 -> f32 [%d]", i);
    }
    t = tensor_make(cf, DTYPE_F32, DEVICE_CPU, 3, (int64_t[]){2, 2, 2}), safetensors_read_into(&st, "y.bf16", &t);
    for (int i = 0; i < 8; i++) {
        float w = bf16_to_f32(c[i]);
        TU_EXPECT(!memcmp(&cf[i], &w, 4), "bf16 -> f32 [%d]", i);
    }
    t = tensor_make(abf, DTYPE_BF16, DEVICE_CPU, 2, (int64_t[]){2, 3}), safetensors_read_into(&st, "z.weight", &t);
    for (int i = 0; i < 6; i++) TU_EXPECT(abf[i] == f32_to_bf16(a[i]), "f32 -> bf16 [%d]", i);
    t = tensor_make(ch, DTYPE_F16, DEVICE_CPU, 3, (int64_t[]){2, 2, 2}), safetensors_read_into(&st, "y.bf16", &t);
    for (int i = 0; i < 8; i++) TU_EXPECT(ch[i] == f32_to_f16(bf16_to_f32(c[i])), "bf16 -> f16 [%d]", i);
    t = tensor_make(ids2, DTYPE_I32, DEVICE_CPU, 1, (int64_t[]){4}), safetensors_read_into(&st, "ids", &t);
    TU_EXPECT(!memcmp(ids2, ids, sizeof ids), "i32 -> i32 not exact");
    t = tensor_make(NULL, DTYPE_BF16, DEVICE_CPU, 2, (int64_t[]){0, 3}), safetensors_read_into(&st, "empty", &t);
    safetensors_close(&st);

    // overwriting an existing file replaces it whole
    safetensors_write(path, 1, names + 3, tensors + 3, NULL);
    safetensors_open(&st, path);
    TU_EXPECT(st.n == 1 && st.n_meta == 0 && safetensors_find(&st, "scalar"), "rewrite");
    safetensors_close(&st);
    unlink(path);
}

// A NaN or an infinity anywhere in float data (F32, F16, BF16) is a user error naming the file, the tensor and the
// element, whatever dtype it is read into.
static void read_first(const void *path) {
    SafeTensors st;
    safetensors_open(&st, path);
    float out[4];
    Tensor t = tensor_make(out, DTYPE_F32, DEVICE_CPU, 1, (int64_t[]){4});
    safetensors_read_into(&st, "x", &t);
    safetensors_close(&st);
}

static void test_non_finite(void) {
    float f[4] = {1, 2, 3, 4};
    uint16_t h[4] = {0x3c00, 0x3c00, 0x3c00, 0x3c00};
    struct { DType dt; int at; uint32_t bits; const char *what; } cases[] = {
        {DTYPE_F32, 2, 0x7fc00000u, "holds NaN at element 2"}, {DTYPE_F32, 0, 0xff800000u, "holds infinity at element 0"},
        {DTYPE_F16, 3, 0x7c00u, "holds infinity at element 3"}, {DTYPE_F16, 1, 0x7e01u, "holds NaN at element 1"},
        {DTYPE_BF16, 1, 0x7f80u, "holds infinity at element 1"}, {DTYPE_BF16, 2, 0xff81u, "holds NaN at element 2"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        float fv[4];
        uint16_t hv[4];
        memcpy(fv, f, sizeof f);
        memcpy(hv, h, sizeof h);
        if (cases[i].dt == DTYPE_F32) memcpy(&fv[cases[i].at], &cases[i].bits, 4);
        else hv[cases[i].at] = (uint16_t)cases[i].bits;
        Tensor t = tensor_make(cases[i].dt == DTYPE_F32 ? (void *)fv : (void *)hv, cases[i].dt, DEVICE_CPU, 1,
                               (int64_t[]){4});
        const char *name = "x", *path = tu_path("nonfinite.safetensors");
        safetensors_write(path, 1, &name, &t, NULL);
        TU_EXPECT_USER_ERROR(read_first, path, "nonfinite.safetensors", "tensor 'x'", cases[i].what);
    }
}

// Misaligned data (an odd-sized f16 tensor first) and more elements than one conversion chunk.
static void test_misaligned_large(void) {
    const int64_t n = 1500001;
    float *big = malloc((size_t)n * 4);
    for (int64_t i = 0; i < n; i++) big[i] = (float)((double)(i % 9973) * 0.37 - 1800.0) * (i % 3 ? 1.0f : -1e-3f);
    uint16_t one = 0x3555;
    Tensor ts[2] = {tensor_make(&one, DTYPE_F16, DEVICE_CPU, 1, (int64_t[]){1}),
                    tensor_make(big, DTYPE_F32, DEVICE_CPU, 2, (int64_t[]){1, n})};
    const char *names[2] = {"h", "big"};
    const char *path = tu_path("misaligned.safetensors");
    safetensors_write(path, 2, names, ts, NULL);
    SafeTensors st;
    safetensors_open(&st, path);
    const StTensor *t = safetensors_find(&st, "big");
    TU_EXPECT(t && (uintptr_t)t->data % 4 == 2, "test setup: data should be misaligned by 2");
    uint16_t *bf = malloc((size_t)n * 2);
    float *back = malloc((size_t)n * 4);
    Tensor d = tensor_make(bf, DTYPE_BF16, DEVICE_CPU, 2, (int64_t[]){1, n});
    safetensors_read_into(&st, "big", &d);
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) bad += bf[i] != f32_to_bf16(big[i]);
    TU_EXPECT(bad == 0, "misaligned f32 -> bf16: %lld wrong", (long long)bad);
    d = tensor_make(back, DTYPE_F32, DEVICE_CPU, 2, (int64_t[]){1, n});
    safetensors_read_into(&st, "big", &d);
    TU_EXPECT(!memcmp(back, big, (size_t)n * 4), "misaligned f32 -> f32 not exact");
    safetensors_close(&st);

    // and the reverse: half-precision data at an odd address, converted up
    // (a hand-made header whose length puts the data at an odd file offset)
    uint16_t *h = malloc((size_t)n * 2);
    for (int64_t i = 0; i < n; i++) h[i] = f32_to_f16(big[i]);
    char hdr[256];
    int hl = snprintf(hdr, sizeof hdr, "{\"h\":{\"dtype\":\"F16\",\"shape\":[%lld],\"data_offsets\":[0,%lld]}}",
                      (long long)n, (long long)(2 * n));
    while ((8 + hl) % 2 == 0) hdr[hl++] = ' ';
    Buf f = header_file(hdr, (size_t)hl, (size_t)n * 2);
    memcpy(f.b + 8 + hl, h, (size_t)n * 2);
    char err[512];
    TU_EXPECT(safetensors_parse_buffer(f.b, f.n, err, sizeof err, &st) == 0, "odd offset: %s", err);
    TU_EXPECT((uintptr_t)safetensors_find(&st, "h")->data % 2 == 1, "test setup: data should be at an odd address");
    d = tensor_make(back, DTYPE_F32, DEVICE_CPU, 1, (int64_t[]){n});
    safetensors_read_into(&st, "h", &d);
    bad = 0;
    for (int64_t i = 0; i < n; i++) bad += memcmp(&back[i], &(float){f16_to_f32(h[i])}, 4) != 0;
    TU_EXPECT(bad == 0, "odd-address f16 -> f32: %lld wrong", (long long)bad);
    safetensors_close(&st);
    free(f.b);
    free(h);
    free(bf);
    free(back);
    free(big);
    unlink(path);
}

// ---------------------------------------------------------------------------------------------------------------
// user errors from the file API and read_into

static void test_user_errors(void) {
    float a[6] = {0};
    int32_t i32[6];
    Tensor ts[2] = {tensor_make(a, DTYPE_F32, DEVICE_CPU, 2, (int64_t[]){2, 3}),
                    tensor_make(a, DTYPE_F32, DEVICE_CPU, 1, (int64_t[]){1})};
    const char *names[2] = {"w", "b"};
    const char *path = tu_path("errors.safetensors");
    safetensors_write(path, 2, names, ts, NULL);
    char prefix[600];
    snprintf(prefix, sizeof prefix, "'%s': ", path);

    ChildArgs a1 = {.path = tu_path("does_not_exist.safetensors")};
    expect_user_error(child_open, &a1, "cannot open", "does_not_exist", "missing file");
    ChildArgs a2 = {.path = tu_tmpdir(NULL)};
    expect_user_error(child_open, &a2, "", "not a regular file", "directory");
    ChildArgs a3 = {.path = path, .tensor = "missing.weight",
                    .dst = tensor_make(a, DTYPE_F32, DEVICE_CPU, 1, (int64_t[]){6})};
    expect_user_error(child_read, &a3, prefix, "tensor 'missing.weight' not found", "missing tensor");
    ChildArgs a4 = {.path = path, .tensor = "w", .dst = tensor_make(a, DTYPE_F32, DEVICE_CPU, 2, (int64_t[]){3, 2})};
    expect_user_error(child_read, &a4, prefix, "shape [2, 3] in the file, expected [3, 2]", "shape mismatch");
    ChildArgs a5 = {.path = path, .tensor = "w", .dst = tensor_make(i32, DTYPE_I32, DEVICE_CPU, 2, (int64_t[]){2, 3})};
    expect_user_error(child_read, &a5, prefix, "is F32 in the file", "float into int");
    ChildArgs a6 = {.path = tu_path("no/such/dir/out.safetensors")};
    expect_user_error(child_write_bad_dir, &a6, "cannot write", "no/such/dir", "write into a missing folder");
    unlink(path);

    // an I64 value outside int32
    const char *hdr = "{\"p\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}";
    Buf f = header_file(hdr, strlen(hdr), 8);
    int64_t big = (int64_t)1 << 40;
    memcpy(f.b + 8 + strlen(hdr), &big, 8);
    const char *ipath = tu_path("i64.safetensors");
    tu_write_bytes(ipath, f.b, f.n);
    snprintf(prefix, sizeof prefix, "'%s': ", ipath);
    ChildArgs a7 = {.path = ipath, .tensor = "p", .dst = tensor_make(i32, DTYPE_I32, DEVICE_CPU, 1, (int64_t[]){1})};
    expect_user_error(child_read, &a7, prefix, "does not fit in int32", "I64 out of range");
    unlink(ipath);
    free(f.b);
}

int main(void) {
    tu_tmpdir("st");
    test_cases();
    test_edge_values();
    test_round_trip();
    test_non_finite();
    test_misaligned_large();
    test_user_errors();
    return tu_report();
}
