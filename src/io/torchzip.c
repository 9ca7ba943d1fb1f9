// torchzip.c: the torch checkpoint reader of torchzip.h: the zip container (stored entries, ZIP64, CRC-32
// checked), the restricted unpickler, and the flattening of the unpickled dicts into named contiguous tensors.
// Bad input never exits: every check fails through fail(), which unwinds to torchzip_parse_buffer with a reason.
#include "torchzip.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/common.h"

#define MAX_ENTRIES (1 << 20)
#define MAX_STACK (1 << 20)
#define MAX_MEMO (1 << 24)
#define MAX_DEPTH 64           // dict / list nesting of the flattened object
#define MAX_VISITS (1 << 22)   // nodes visited while flattening (memo references can share sub-objects)
#define MAX_NAME 1024

typedef struct {
    const char *name;  // not NUL-terminated: name_len bytes
    size_t name_len;
    const uint8_t *data;
    uint64_t size;
} ZipEntry;

enum { O_NONE, O_BOOL, O_INT, O_FLOAT, O_STR, O_TUPLE, O_LIST, O_DICT, O_GLOBAL, O_STORAGE, O_TENSOR, O_MARK };
enum { G_ORDERED_DICT, G_REBUILD_TENSOR, G_REBUILD_PARAMETER, G_FLOAT, G_HALF, G_BF16, G_LONG, G_INT };

typedef struct {
    uint8_t kind;
    int64_t i;          // int / bool value; global id; storage numel
    double f;
    const char *s;      // str (points into the pickle); storage key
    size_t slen;
    int32_t *items;     // tuple / list items; dict: key, value, key, value, ...
    int n, cap;
    int32_t storage;    // tensor: the storage object
    int storage_type;   // storage: G_FLOAT ... G_INT
    int64_t offset;
    int ndim;
    int64_t size[TORCHZIP_MAX_DIMS], stride[TORCHZIP_MAX_DIMS];
} Obj;

typedef struct {
    jmp_buf jb;
    char *err;
    size_t errlen;
    const uint8_t *buf;
    size_t len;
    ZipEntry *entries;
    int n_entries;
    char prefix[MAX_NAME];  // "<archive>/" of data.pkl
    size_t prefix_len;
    Obj *objs;
    int n_objs, cap_objs;
    int32_t *stack;
    int sp, cap_stack;
    int32_t *memo;          // -1 = unset
    int64_t cap_memo, memo_len; // memo_len: entries set (MEMOIZE's next index, as Python's len(memo))
    size_t max_bytes, out_bytes;
    int64_t visits;
    TorchZip *out;
    int cap_out;
} Ctx;

static void fail(Ctx *c, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
static void fail(Ctx *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, c->errlen, fmt, ap);
    va_end(ap);
    for (char *p = c->err; *p; p++) // names from the file may hold any bytes: keep the message one printable line
        if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
    longjmp(c->jb, 1);
}

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

// ---------------------------------------------------------------------------------------------------------------
// zip container

#ifndef TORCHZIP_NO_CRC
static uint32_t crc32_of(const uint8_t *p, uint64_t n) {
    static uint32_t table[256];
    static int ready;
    if (!ready) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t v = i;
            for (int k = 0; k < 8; k++) v = v & 1 ? 0xedb88320u ^ (v >> 1) : v >> 1;
            table[i] = v;
        }
        ready = 1;
    }
    uint32_t v = 0xffffffffu;
    for (uint64_t i = 0; i < n; i++) v = table[(v ^ p[i]) & 0xff] ^ (v >> 8);
    return v ^ 0xffffffffu;
}
#endif

// [off, off + n) lies inside the buffer
static int inside(const Ctx *c, uint64_t off, uint64_t n) { return off <= c->len && n <= c->len - off; }

static void zip_read(Ctx *c) {
    if (c->len < 22) fail(c, "not a torch checkpoint (too short for a zip archive)");
    int64_t eocd = -1;
    for (int64_t p = (int64_t)c->len - 22; p >= 0 && p >= (int64_t)c->len - 22 - 65535; p--)
        if (rd32(c->buf + p) == 0x06054b50u) {
            eocd = p;
            break;
        }
    if (eocd < 0) fail(c, "not a torch checkpoint (no zip end-of-directory record; a legacy non-zip torch file?)");
    const uint8_t *e = c->buf + eocd;
    uint64_t n = rd16(e + 10), cd_size = rd32(e + 12), cd_off = rd32(e + 16);
    if (rd16(e + 4) || rd16(e + 6)) fail(c, "multi-disk zip archives are not supported");
    if (n == 0xffff || cd_size == 0xffffffffu || cd_off == 0xffffffffu) { // ZIP64
        if (eocd < 20 || rd32(c->buf + eocd - 20) != 0x07064b50u) fail(c, "ZIP64 locator missing");
        uint64_t z = rd64(c->buf + eocd - 20 + 8);
        if (!inside(c, z, 56) || rd32(c->buf + z) != 0x06064b50u) fail(c, "ZIP64 end-of-directory record missing");
        n = rd64(c->buf + z + 32), cd_size = rd64(c->buf + z + 40), cd_off = rd64(c->buf + z + 48);
    }
    if (!inside(c, cd_off, cd_size)) fail(c, "zip central directory outside the file (truncated?)");
    if (n > MAX_ENTRIES || n > cd_size / 46) fail(c, "zip archive claims %llu entries", (unsigned long long)n);
    c->entries = xcalloc((size_t)n + 1, sizeof *c->entries);
    uint64_t p = cd_off, end = cd_off + cd_size;
    for (uint64_t i = 0; i < n; i++) {
        if (p + 46 > end || rd32(c->buf + p) != 0x02014b50u) fail(c, "zip central directory entry %llu is malformed",
                                                                    (unsigned long long)i);
        const uint8_t *h = c->buf + p;
        uint16_t flags = rd16(h + 8), method = rd16(h + 10), nl = rd16(h + 28), xl = rd16(h + 30), cl = rd16(h + 32);
        uint32_t crc = rd32(h + 16);
        uint64_t csize = rd32(h + 20), usize = rd32(h + 24), loff = rd32(h + 42);
        if (p + 46 + (uint64_t)nl + xl + cl > end) fail(c, "zip central directory entry %llu overruns it",
                                                        (unsigned long long)i);
        const uint8_t *x = h + 46 + nl, *xe = x + xl; // ZIP64 extra field: the sizes and offset that overflowed
        while (x + 4 <= xe) {
            uint16_t id = rd16(x), sz = rd16(x + 2);
            if (x + 4 + sz > xe) fail(c, "zip extra field overruns its entry");
            if (id == 1) {
                const uint8_t *q = x + 4, *qe = q + sz;
                if (usize == 0xffffffffu) { if (q + 8 > qe) fail(c, "short ZIP64 field"); usize = rd64(q), q += 8; }
                if (csize == 0xffffffffu) { if (q + 8 > qe) fail(c, "short ZIP64 field"); csize = rd64(q), q += 8; }
                if (loff == 0xffffffffu) { if (q + 8 > qe) fail(c, "short ZIP64 field"); loff = rd64(q), q += 8; }
            }
            x += 4 + sz;
        }
        ZipEntry *z = &c->entries[c->n_entries++];
        z->name = (const char *)h + 46, z->name_len = nl;
        if (flags & 1) fail(c, "zip entry '%.*s' is encrypted", (int)nl, z->name);
        if (method != 0 || csize != usize)
            fail(c, "zip entry '%.*s' is compressed (method %u); torch.save writes stored entries", (int)nl, z->name,
                 (unsigned)method);
        if (!inside(c, loff, 30) || rd32(c->buf + loff) != 0x04034b50u)
            fail(c, "zip entry '%.*s': local header missing (truncated file?)", (int)nl, z->name);
        uint64_t data = loff + 30 + rd16(c->buf + loff + 26) + rd16(c->buf + loff + 28);
        if (!inside(c, data, usize)) fail(c, "zip entry '%.*s' extends past the end of the file (truncated?)", (int)nl,
                                           z->name);
        z->data = c->buf + data, z->size = usize;
#ifndef TORCHZIP_NO_CRC // the fuzz target compiles the check out, so that its mutations reach the unpickler
        if (crc32_of(z->data, usize) != crc) fail(c, "zip entry '%.*s' fails its CRC-32 check (corrupt file)", (int)nl,
                                                  z->name);
#else
        (void)crc;
#endif
        p += 46 + (uint64_t)nl + xl + cl;
    }
}

static const ZipEntry *zip_find(const Ctx *c, const char *suffix) {
    size_t sl = strlen(suffix);
    for (int i = 0; i < c->n_entries; i++) {
        const ZipEntry *z = &c->entries[i];
        if (z->name_len == c->prefix_len + sl && !memcmp(z->name, c->prefix, c->prefix_len) &&
            !memcmp(z->name + c->prefix_len, suffix, sl))
            return z;
    }
    return NULL;
}

// ---------------------------------------------------------------------------------------------------------------
// the restricted unpickler

static int32_t obj_new(Ctx *c, int kind) {
    if (c->n_objs == c->cap_objs) {
        c->cap_objs = c->cap_objs ? 2 * c->cap_objs : 256;
        c->objs = xrealloc(c->objs, sizeof *c->objs * (size_t)c->cap_objs);
    }
    Obj *o = &c->objs[c->n_objs];
    memset(o, 0, sizeof *o);
    o->kind = (uint8_t)kind;
    return c->n_objs++;
}

static void obj_add(Ctx *c, int32_t o, int32_t item) {
    Obj *x = &c->objs[o];
    if (x->n == x->cap) {
        if (x->cap >= (1 << 28)) fail(c, "a container holds too many items");
        x->cap = x->cap ? 2 * x->cap : 4;
        x->items = xrealloc(x->items, sizeof *x->items * (size_t)x->cap);
    }
    x->items[x->n++] = item;
}

static void push(Ctx *c, int32_t o) {
    if (c->sp == c->cap_stack) {
        if (c->cap_stack >= MAX_STACK) fail(c, "pickle stack deeper than %d", MAX_STACK);
        c->cap_stack = c->cap_stack ? 2 * c->cap_stack : 256;
        c->stack = xrealloc(c->stack, sizeof *c->stack * (size_t)c->cap_stack);
    }
    c->stack[c->sp++] = o;
}

static int32_t pop(Ctx *c) {
    if (c->sp == 0 || c->objs[c->stack[c->sp - 1]].kind == O_MARK) fail(c, "pickle stack underflow");
    return c->stack[--c->sp];
}

static int32_t top(Ctx *c) {
    if (c->sp == 0 || c->objs[c->stack[c->sp - 1]].kind == O_MARK) fail(c, "pickle stack underflow");
    return c->stack[c->sp - 1];
}

// Index of the topmost mark (the items above it are the mark's contents).
static int find_mark(Ctx *c) {
    for (int i = c->sp - 1; i >= 0; i--)
        if (c->objs[c->stack[i]].kind == O_MARK) return i;
    fail(c, "pickle MARK missing");
}

static void memo_put(Ctx *c, uint64_t idx, int32_t o) {
    if (idx >= MAX_MEMO) fail(c, "pickle memo index %llu too large", (unsigned long long)idx);
    if ((int64_t)idx >= c->cap_memo) {
        int64_t cap = c->cap_memo ? c->cap_memo : 256;
        while (cap <= (int64_t)idx) cap *= 2;
        c->memo = xrealloc(c->memo, sizeof *c->memo * (size_t)cap);
        for (int64_t i = c->cap_memo; i < cap; i++) c->memo[i] = -1;
        c->cap_memo = cap;
    }
    c->memo_len += c->memo[idx] < 0;
    c->memo[idx] = o;
}

static int32_t memo_get(Ctx *c, uint64_t idx) {
    if ((int64_t)idx >= c->cap_memo || c->memo[idx] < 0) fail(c, "pickle memo entry %llu is not defined",
                                                                (unsigned long long)idx);
    return c->memo[idx];
}

static int str_is(const Obj *o, const char *s) {
    return o->kind == O_STR && o->slen == strlen(s) && !memcmp(o->s, s, o->slen);
}

static const struct {
    const char *module, *name;
    int id;
} GLOBALS[] = {{"collections", "OrderedDict", G_ORDERED_DICT},
               {"torch._utils", "_rebuild_tensor_v2", G_REBUILD_TENSOR},
               {"torch._utils", "_rebuild_parameter", G_REBUILD_PARAMETER},
               {"torch", "FloatStorage", G_FLOAT},
               {"torch", "HalfStorage", G_HALF},
               {"torch", "BFloat16Storage", G_BF16},
               {"torch", "LongStorage", G_LONG},
               {"torch", "IntStorage", G_INT}};

static int32_t global(Ctx *c, const char *mod, size_t ml, const char *name, size_t nl) {
    for (size_t i = 0; i < sizeof GLOBALS / sizeof GLOBALS[0]; i++)
        if (strlen(GLOBALS[i].module) == ml && !memcmp(GLOBALS[i].module, mod, ml) &&
            strlen(GLOBALS[i].name) == nl && !memcmp(GLOBALS[i].name, name, nl)) {
            int32_t o = obj_new(c, O_GLOBAL);
            c->objs[o].i = GLOBALS[i].id;
            return o;
        }
    fail(c, "global '%.*s.%.*s' is not allowed in a state dict (only tensors, storages and OrderedDict)",
         (int)(ml > 64 ? 64 : ml), mod, (int)(nl > 64 ? 64 : nl), name);
}

static int64_t as_int(Ctx *c, int32_t o, const char *what) {
    if (c->objs[o].kind != O_INT) fail(c, "%s is not an integer", what);
    return c->objs[o].i;
}

// _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
static int32_t rebuild_tensor(Ctx *c, int32_t args) {
    Obj *a = &c->objs[args];
    if (a->n < 4) fail(c, "_rebuild_tensor_v2 called with %d arguments", a->n);
    int32_t st = a->items[0], size = a->items[2], stride = a->items[3];
    if (c->objs[st].kind != O_STORAGE) fail(c, "_rebuild_tensor_v2: the first argument is not a storage");
    int64_t offset = as_int(c, a->items[1], "a tensor's storage offset");
    Obj *sz = &c->objs[size], *sd = &c->objs[stride];
    if (sz->kind != O_TUPLE || sd->kind != O_TUPLE || sz->n != sd->n)
        fail(c, "_rebuild_tensor_v2: size and stride are not tuples of one length");
    if (sz->n > TORCHZIP_MAX_DIMS) fail(c, "a tensor has %d dims (at most %d)", sz->n, TORCHZIP_MAX_DIMS);
    int32_t t = obj_new(c, O_TENSOR);
    Obj *o = &c->objs[t];
    sz = &c->objs[size], sd = &c->objs[stride];
    o->storage = st, o->offset = offset, o->ndim = sz->n;
    for (int d = 0; d < o->ndim; d++) {
        o->size[d] = as_int(c, sz->items[d], "a tensor size");
        o->stride[d] = as_int(c, sd->items[d], "a tensor stride");
    }
    return t;
}

static void reduce(Ctx *c) {
    int32_t args = pop(c), fn = pop(c);
    if (c->objs[fn].kind != O_GLOBAL) fail(c, "REDUCE of something that is not an allowed global");
    if (c->objs[args].kind != O_TUPLE) fail(c, "REDUCE arguments are not a tuple");
    switch (c->objs[fn].i) {
    case G_ORDERED_DICT:
        if (c->objs[args].n != 0) fail(c, "OrderedDict called with arguments");
        push(c, obj_new(c, O_DICT));
        return;
    case G_REBUILD_TENSOR: push(c, rebuild_tensor(c, args)); return;
    case G_REBUILD_PARAMETER:
        if (c->objs[args].n < 1 || c->objs[c->objs[args].items[0]].kind != O_TENSOR)
            fail(c, "_rebuild_parameter called without a tensor");
        push(c, c->objs[args].items[0]);
        return;
    default: fail(c, "a storage type may not be called");
    }
}

// ('storage', <storage type>, key, location, numel)
static int32_t persistent_load(Ctx *c, int32_t pid) {
    Obj *p = &c->objs[pid];
    if (p->kind != O_TUPLE || p->n < 5 || !str_is(&c->objs[p->items[0]], "storage"))
        fail(c, "persistent id is not a ('storage', type, key, location, numel) tuple");
    Obj *type = &c->objs[p->items[1]], *key = &c->objs[p->items[2]];
    if (type->kind != O_GLOBAL || type->i < G_FLOAT) fail(c, "persistent id names no storage type");
    if (key->kind != O_STR) fail(c, "storage key is not a string");
    int64_t numel = as_int(c, p->items[4], "a storage's element count");
    if (numel < 0) fail(c, "a storage has %lld elements", (long long)numel);
    int32_t s = obj_new(c, O_STORAGE);
    Obj *o = &c->objs[s];
    p = &c->objs[pid];
    o->storage_type = (int)c->objs[p->items[1]].i, o->s = c->objs[p->items[2]].s, o->slen = c->objs[p->items[2]].slen;
    o->i = numel;
    return s;
}

static void unpickle(Ctx *c, const uint8_t *p, size_t n) {
    size_t i = 0;
#define NEED(k) do { if (n - i < (size_t)(k)) fail(c, "pickle truncated at byte %zu", i); } while (0)
    for (;;) {
        NEED(1);
        uint8_t op = p[i++];
        switch (op) {
        case 0x80: NEED(1); if (p[i] > 5) fail(c, "pickle protocol %u", p[i]); i++; break;   // PROTO
        case 0x95: NEED(8); i += 8; break;                                                     // FRAME
        case '.':                                                                              // STOP
            if (c->sp != 1) fail(c, "pickle ended with %d objects on the stack", c->sp);
            return;
        case 'c': { // GLOBAL module\nname\n
            const uint8_t *m = p + i, *e1 = memchr(m, '\n', n - i);
            if (!e1) fail(c, "pickle GLOBAL truncated");
            const uint8_t *nm = e1 + 1, *e2 = memchr(nm, '\n', n - (size_t)(nm - p));
            if (!e2) fail(c, "pickle GLOBAL truncated");
            push(c, global(c, (const char *)m, (size_t)(e1 - m), (const char *)nm, (size_t)(e2 - nm)));
            i = (size_t)(e2 - p) + 1;
            break;
        }
        case 0x93: { // STACK_GLOBAL (protocol 4)
            int32_t name = pop(c), mod = pop(c);
            Obj *a = &c->objs[mod], *b = &c->objs[name];
            if (a->kind != O_STR || b->kind != O_STR) fail(c, "STACK_GLOBAL of non-strings");
            push(c, global(c, a->s, a->slen, b->s, b->slen));
            break;
        }
        case 'q': NEED(1); memo_put(c, p[i], top(c)); i += 1; break;         // BINPUT
        case 'r': NEED(4); memo_put(c, rd32(p + i), top(c)); i += 4; break;  // LONG_BINPUT
        case 0x94: memo_put(c, (uint64_t)c->memo_len, top(c)); break;        // MEMOIZE
        case 'h': NEED(1); push(c, memo_get(c, p[i])); i += 1; break;       // BINGET
        case 'j': NEED(4); push(c, memo_get(c, rd32(p + i))); i += 4; break; // LONG_BINGET
        case '(': push(c, obj_new(c, O_MARK)); break;
        case ')': push(c, obj_new(c, O_TUPLE)); break;
        case ']': push(c, obj_new(c, O_LIST)); break;
        case '}': push(c, obj_new(c, O_DICT)); break;
        case 'N': push(c, obj_new(c, O_NONE)); break;
        case 0x88: case 0x89: { int32_t o = obj_new(c, O_BOOL); c->objs[o].i = op == 0x88; push(c, o); break; }
        case 'J': {
            NEED(4);
            int32_t o = obj_new(c, O_INT);
            c->objs[o].i = (int32_t)rd32(p + i);
            i += 4;
            push(c, o);
            break;
        }
        case 'K': { NEED(1); int32_t o = obj_new(c, O_INT); c->objs[o].i = p[i]; i += 1; push(c, o); break; }
        case 'M': { NEED(2); int32_t o = obj_new(c, O_INT); c->objs[o].i = rd16(p + i); i += 2; push(c, o); break; }
        case 0x8a: { // LONG1: little-endian two's complement of n <= 8 bytes
            NEED(1);
            size_t k = p[i++];
            if (k > 8) fail(c, "pickle integer of %zu bytes", k);
            NEED(k);
            uint64_t v = 0;
            for (size_t b = 0; b < k; b++) v |= (uint64_t)p[i + b] << (8 * b);
            if (k && k < 8 && (p[i + k - 1] & 0x80)) v |= ~0ull << (8 * k);
            int32_t o = obj_new(c, O_INT);
            c->objs[o].i = (int64_t)v;
            i += k;
            push(c, o);
            break;
        }
        case 'G': { // BINFLOAT, big-endian
            NEED(8);
            uint64_t v = 0;
            for (int b = 0; b < 8; b++) v = v << 8 | p[i + b];
            int32_t o = obj_new(c, O_FLOAT);
            memcpy(&c->objs[o].f, &v, 8);
            i += 8;
            push(c, o);
            break;
        }
        case 'X': case 0x8c: case 'T': case 'U': { // BINUNICODE, SHORT_BINUNICODE, BINSTRING, SHORT_BINSTRING
            size_t k;
            if (op == 'X' || op == 'T') { NEED(4); k = rd32(p + i); i += 4; }
            else { NEED(1); k = p[i]; i += 1; }
            NEED(k);
            int32_t o = obj_new(c, O_STR);
            c->objs[o].s = (const char *)p + i, c->objs[o].slen = k;
            i += k;
            push(c, o);
            break;
        }
        case 't': case 'l': { // TUPLE, LIST from the items above the mark
            int m = find_mark(c);
            int32_t o = obj_new(c, op == 't' ? O_TUPLE : O_LIST);
            for (int k = m + 1; k < c->sp; k++) obj_add(c, o, c->stack[k]);
            c->sp = m;
            push(c, o);
            break;
        }
        case 0x85: case 0x86: case 0x87: { // TUPLE1..3
            int k = op - 0x84;
            if (c->sp < k) fail(c, "pickle stack underflow");
            int32_t o = obj_new(c, O_TUPLE);
            for (int j = c->sp - k; j < c->sp; j++) {
                if (c->objs[c->stack[j]].kind == O_MARK) fail(c, "pickle stack underflow");
                obj_add(c, o, c->stack[j]);
            }
            c->sp -= k;
            push(c, o);
            break;
        }
        case 'a': { // APPEND
            int32_t v = pop(c), l = top(c);
            if (c->objs[l].kind != O_LIST) fail(c, "APPEND to something that is not a list");
            obj_add(c, l, v);
            break;
        }
        case 'e': { // APPENDS
            int m = find_mark(c);
            if (m == 0 || c->objs[c->stack[m - 1]].kind != O_LIST) fail(c, "APPENDS to something that is not a list");
            for (int k = m + 1; k < c->sp; k++) obj_add(c, c->stack[m - 1], c->stack[k]);
            c->sp = m;
            break;
        }
        case 's': { // SETITEM
            int32_t v = pop(c), k = pop(c), d = top(c);
            if (c->objs[d].kind != O_DICT) fail(c, "SETITEM on something that is not a dict");
            obj_add(c, d, k), obj_add(c, d, v);
            break;
        }
        case 'u': { // SETITEMS
            int m = find_mark(c);
            if (m == 0 || c->objs[c->stack[m - 1]].kind != O_DICT) fail(c, "SETITEMS on something that is not a dict");
            if ((c->sp - m - 1) % 2) fail(c, "SETITEMS with an odd number of items");
            for (int k = m + 1; k < c->sp; k++) obj_add(c, c->stack[m - 1], c->stack[k]);
            c->sp = m;
            break;
        }
        case 'R': reduce(c); break;
        case 'b': { // BUILD: the state of an OrderedDict (its _metadata) or a tensor is dropped
            int32_t state = pop(c), o = top(c);
            int k = c->objs[o].kind;
            if (k != O_DICT && k != O_TENSOR) fail(c, "BUILD on an object that is not a dict or a tensor");
            (void)state;
            break;
        }
        case 'Q': push(c, persistent_load(c, pop(c))); break; // BINPERSID
        default: fail(c, "pickle opcode 0x%02x is not allowed in a state dict", op);
        }
    }
#undef NEED
}

// ---------------------------------------------------------------------------------------------------------------
// flattening and tensor data

static size_t storage_elem(int type) { return type == G_FLOAT || type == G_INT ? 4 : type == G_LONG ? 8 : 2; }

static void emit_tensor(Ctx *c, const char *name, const Obj *t) {
    const Obj *s = &c->objs[t->storage];
    char key[MAX_NAME + 8];
    if (s->slen > 256) fail(c, "%s: storage key too long", name);
    snprintf(key, sizeof key, "data/%.*s", (int)s->slen, s->s);
    const ZipEntry *z = zip_find(c, key);
    if (!z) fail(c, "%s: storage '%.*s' is not in the archive", name, (int)s->slen, s->s);
    size_t es = storage_elem(s->storage_type);
    if (z->size / es < (uint64_t)s->i) fail(c, "%s: storage '%.*s' holds %llu bytes, fewer than %lld elements", name,
                                            (int)s->slen, s->s, (unsigned long long)z->size, (long long)s->i);
    // every element addressed by size/stride/offset lies inside the storage
    int64_t numel = 1, last = t->offset;
    if (t->offset < 0) fail(c, "%s: negative storage offset", name);
    for (int d = 0; d < t->ndim; d++) {
        if (t->size[d] < 0 || t->stride[d] < 0) fail(c, "%s: negative size or stride", name);
        if (t->size[d] && numel > INT64_MAX / t->size[d]) fail(c, "%s: too many elements", name);
        numel *= t->size[d];
    }
    if (numel > 0)
        for (int d = 0; d < t->ndim; d++) {
            if (t->stride[d] && t->size[d] - 1 > (INT64_MAX - last) / t->stride[d])
                fail(c, "%s: stride overflow", name);
            last += (t->size[d] - 1) * t->stride[d];
        }
    if (numel > 0 && last >= s->i)
        fail(c, "%s: sizes, strides and offset reach element %lld of a storage of %lld", name, (long long)last,
             (long long)s->i);
    DType dt = s->storage_type == G_FLOAT ? DTYPE_F32 : s->storage_type == G_HALF ? DTYPE_F16
               : s->storage_type == G_BF16 ? DTYPE_BF16 : DTYPE_I32;
    size_t os = dtype_size(dt);
    if ((uint64_t)numel > (c->max_bytes - c->out_bytes) / os) fail(c, "%s: the tensors exceed %zu bytes", name,
                                                                    c->max_bytes);
    size_t nbytes = (size_t)numel * os;
    uint8_t *dst = malloc(nbytes ? nbytes : 1);
    if (!dst) fail(c, "%s: out of memory for %zu bytes", name, nbytes);
    c->out_bytes += nbytes;
    if (c->out->n == c->cap_out) {
        c->cap_out = c->cap_out ? 2 * c->cap_out : 64;
        c->out->tensors = xrealloc(c->out->tensors, sizeof *c->out->tensors * (size_t)c->cap_out);
    }
    TorchZipTensor *o = &c->out->tensors[c->out->n++];
    memset(o, 0, sizeof *o);
    o->name = xstrdup(name), o->dtype = dt, o->ndim = t->ndim, o->data = dst, o->nbytes = nbytes;
    memcpy(o->shape, t->size, sizeof o->shape);
    int64_t idx[TORCHZIP_MAX_DIMS] = {0};
    for (int64_t k = 0; k < numel; k++) { // row-major walk of the view
        int64_t src = t->offset;
        for (int d = 0; d < t->ndim; d++) src += idx[d] * t->stride[d];
        const uint8_t *from = z->data + (size_t)src * es;
        if (s->storage_type == G_LONG) {
            int64_t v = (int64_t)rd64(from);
            if (v < INT32_MIN || v > INT32_MAX) fail(c, "%s: int64 value %lld does not fit int32", name, (long long)v);
            int32_t w = (int32_t)v;
            memcpy(dst + (size_t)k * 4, &w, 4);
        } else {
            memcpy(dst + (size_t)k * os, from, os);
        }
        for (int d = t->ndim - 1; d >= 0; d--) {
            if (++idx[d] < t->size[d]) break;
            idx[d] = 0;
        }
    }
}

static void flatten(Ctx *c, int32_t o, char *name, size_t len, int depth) {
    if (++c->visits > MAX_VISITS) fail(c, "the pickled object is too large or shares sub-objects too often");
    if (depth > MAX_DEPTH) fail(c, "the pickled object nests deeper than %d levels (or has a cycle)", MAX_DEPTH);
    const Obj *x = &c->objs[o];
    if (x->kind == O_TENSOR) {
        if (!len) fail(c, "the checkpoint is a single tensor, not a dict of tensors");
        emit_tensor(c, name, x);
        return;
    }
    if (x->kind != O_DICT && x->kind != O_LIST && x->kind != O_TUPLE) {
        if (x->kind == O_STORAGE || x->kind == O_GLOBAL) fail(c, "%s: a bare storage or global", len ? name : "(root)");
        c->out->skipped++;
        return;
    }
    int dict = x->kind == O_DICT, n = dict ? x->n / 2 : x->n;
    for (int k = 0; k < n; k++) {
        x = &c->objs[o]; // objs may not move during flattening, but stay safe
        int32_t child = dict ? x->items[2 * k + 1] : x->items[k];
        char part[MAX_NAME];
        if (dict) {
            const Obj *key = &c->objs[x->items[2 * k]];
            if (key->kind == O_STR) {
                if (key->slen >= sizeof part || memchr(key->s, 0, key->slen)) fail(c, "a dict key is too long or "
                                                                                      "holds a NUL byte");
                snprintf(part, sizeof part, "%.*s", (int)key->slen, key->s);
            } else if (key->kind == O_INT) {
                snprintf(part, sizeof part, "%lld", (long long)key->i);
            } else {
                fail(c, "a dict key is neither a string nor an integer");
            }
        } else {
            snprintf(part, sizeof part, "%d", k);
        }
        size_t pl = strlen(part);
        if (len + 1 + pl >= MAX_NAME) fail(c, "a tensor name is longer than %d bytes", MAX_NAME - 1);
        size_t l2 = len;
        if (len) name[l2++] = '.';
        memcpy(name + l2, part, pl + 1);
        flatten(c, child, name, l2 + pl, depth + 1);
        name[len] = 0;
    }
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(((const TorchZipTensor *)a)->name, ((const TorchZipTensor *)b)->name);
}

static void parse(Ctx *c) {
    zip_read(c);
    const ZipEntry *pkl = NULL;
    for (int i = 0; i < c->n_entries; i++) {
        const ZipEntry *z = &c->entries[i];
        size_t l = z->name_len;
        if (l >= 8 && !memcmp(z->name + l - 8, "data.pkl", 8) && (l == 8 || z->name[l - 9] == '/')) {
            if (pkl) fail(c, "the archive holds more than one data.pkl");
            pkl = z;
        }
    }
    if (!pkl) fail(c, "no data.pkl in the archive (not a torch.save checkpoint)");
    c->prefix_len = pkl->name_len - 8;
    if (c->prefix_len >= sizeof c->prefix) fail(c, "archive folder name too long");
    memcpy(c->prefix, pkl->name, c->prefix_len);
    const ZipEntry *bo = zip_find(c, "byteorder");
    if (bo && !(bo->size == 6 && !memcmp(bo->data, "little", 6))) fail(c, "big-endian checkpoints are not supported");
    unpickle(c, pkl->data, pkl->size);
    int32_t root = c->stack[0];
    const Obj *r = &c->objs[root];
    if (r->kind != O_DICT) fail(c, "the checkpoint is not a dict (a pickled module or other object?)");
    for (int k = 0; k < r->n / 2; k++)
        if (str_is(&c->objs[r->items[2 * k]], "state_dict") && c->objs[r->items[2 * k + 1]].kind == O_DICT) {
            root = r->items[2 * k + 1];
            snprintf(c->out->root, sizeof c->out->root, "state_dict");
            break;
        }
    char name[MAX_NAME] = "";
    flatten(c, root, name, 0, 0);
    if (c->out->n == 0) fail(c, "the checkpoint holds no tensors");
    qsort(c->out->tensors, (size_t)c->out->n, sizeof *c->out->tensors, cmp_name);
    for (int i = 1; i < c->out->n; i++)
        if (!strcmp(c->out->tensors[i].name, c->out->tensors[i - 1].name))
            fail(c, "two tensors are both named '%s'", c->out->tensors[i].name);
}

void torchzip_free(TorchZip *z) {
    for (int i = 0; i < z->n; i++) {
        free(z->tensors[i].name);
        free(z->tensors[i].data);
    }
    free(z->tensors);
    memset(z, 0, sizeof *z);
}

int torchzip_parse_buffer(const uint8_t *buf, size_t len, size_t max_bytes, char *err, size_t errlen, TorchZip *out) {
    memset(out, 0, sizeof *out);
    Ctx *c = xcalloc(1, sizeof *c);
    c->buf = buf, c->len = len, c->err = err, c->errlen = errlen, c->max_bytes = max_bytes, c->out = out;
    int rc = 0;
    if (setjmp(c->jb) == 0) parse(c);
    else rc = 1;
    for (int i = 0; i < c->n_objs; i++) free(c->objs[i].items);
    free(c->objs);
    free(c->stack);
    free(c->memo);
    free(c->entries);
    free(c);
    if (rc) torchzip_free(out);
    return rc;
}
