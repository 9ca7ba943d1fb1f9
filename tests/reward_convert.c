// reward_convert.c: `drtune convert` on checkpoints written by torch.save (tests/fixtures/torch, from
// tools/reference/make_torch_checkpoints.py): F32 / F16 / BF16 / int64 tensors, non-contiguous views, storage
// offsets, shared storages, parameters, 0-d and empty tensors, nested dicts and lists convert bit for bit to the
// expected safetensors, and the layouts of the HPS and aesthetic checkpoints convert to exactly the reward models'
// files, also from a ZIP64 archive; every hostile file is refused with exit 2 and one line naming the problem;
// and the reader survives every truncation and single-byte corruption of a valid checkpoint (no crash; an error
// or a valid result).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/core/common.h"
#include "../src/io/safetensors.h"
#include "../src/io/torchzip.h"
#include "testutil.h"

// Every tensor of got equals the one of ref with the same name: dtype, shape and bytes.
static int same_files(const char *got_path, const char *ref_path) {
    SafeTensors a, b;
    safetensors_open(&a, got_path);
    safetensors_open(&b, ref_path);
    int ok = a.n == b.n;
    for (int i = 0; ok && i < b.n; i++) {
        const StTensor *x = safetensors_find(&a, b.tensors[i].name), *y = &b.tensors[i];
        ok = x && x->dtype == y->dtype && x->ndim == y->ndim && x->nbytes == y->nbytes &&
             !memcmp(x->shape, y->shape, sizeof(int64_t) * (size_t)y->ndim) && !memcmp(x->data, y->data, y->nbytes);
        if (!ok) printf("     differs: %s\n", y->name);
    }
    safetensors_close(&a);
    safetensors_close(&b);
    return ok;
}

static void roundtrip(const char *in, const char *ref, const char *what) {
    char args[8192], out[4200];
    snprintf(out, sizeof out, "%s/out.safetensors", tu_tmpdir(NULL));
    snprintf(args, sizeof args, "convert tests/fixtures/torch/%s %s", in, out);
    TuChild c;
    int rc = tu_run_drtune(args, &c);
    tu_check(rc == 0 && same_files(out, ref), "convert %s: %s, bit for bit", in, what);
    if (rc) printf("%s%s", c.out, c.err);
    tu_child_free(&c);
}

static void hostile(const char *name, const char *needle) {
    char args[8192];
    snprintf(args, sizeof args, "convert tests/fixtures/torch/hostile_%s.pt %s/h.safetensors", name, tu_tmpdir(NULL));
    TuChild c;
    tu_run_drtune(args, &c);
    tu_check(tu_is_user_error(&c, needle), "hostile_%s refused: %.*s", name,
             (int)strcspn(c.err, "\n"), c.err);
    tu_child_free(&c);
}

// The reader on every prefix and on single-byte corruptions of a valid checkpoint: each call returns (an error
// or a consistent result); the sanitizer builds of the fuzz target check the memory accesses.
static void corruptions(const char *file) {
    size_t n = 0;
    char path[256], err[256];
    snprintf(path, sizeof path, "tests/fixtures/torch/%s", file);
    char *good = tu_read_all(path, &n);
    if (!tu_check(good != NULL && n > 0, "%s is readable", path)) return;
    uint8_t *buf = malloc(n);
    int ok_prefix = 0, ok_byte = 0, full = 0;
    TorchZip z;
    for (size_t len = 0; len <= n; len++) {
        memcpy(buf, good, len);
        int rc = torchzip_parse_buffer(buf, len, 1 << 20, err, sizeof err, &z);
        if (!rc) torchzip_free(&z);
        ok_prefix += rc != 0 || len == n;
        full += len == n && rc == 0;
    }
    for (size_t i = 0; i < n; i++) {
        memcpy(buf, good, n);
        buf[i] ^= (uint8_t)(0x5a + i);
        int rc = torchzip_parse_buffer(buf, n, 1 << 20, err, sizeof err, &z);
        if (!rc) {
            ok_byte += z.n == 11; // a byte the reader does not read (zip comments, padding, version files)
            torchzip_free(&z);
        } else {
            ok_byte++;
        }
    }
    tu_check(full && ok_prefix == (int)n + 1, "every proper prefix of %s is refused (%zu prefixes)", file, n);
    tu_check(ok_byte == (int)n, "every single-byte corruption of %s is refused or harmless (%zu bytes)", file, n);
    free(buf);
    free(good);
}

int main(void) {
    if (!getenv("DRTUNE_BIN") || !*getenv("DRTUNE_BIN")) {
        printf("DRTUNE_BIN is not set (ctest sets it): skipped\n");
        return 77;
    }
    tu_tmpdir("reward_convert");
    roundtrip("state.pt", "tests/fixtures/torch/state_ref.safetensors",
              "its state_dict entry (F32, F16, BF16, int64, views, offsets, shared storage, 0-d)");
    roundtrip("state_zip64.pt", "tests/fixtures/torch/state_ref.safetensors",
              "the same checkpoint in ZIP64 form (as torch.save writes files over 4 GiB)");
    roundtrip("nested.pt", "tests/fixtures/torch/nested_ref.safetensors", "nested dicts and lists, dotted names");
    roundtrip("hps_like.pt", "tests/fixtures/models/reward_oc_gelu/open_clip_model.safetensors",
              "an HPS-layout checkpoint to the open_clip model file");
    roundtrip("aesthetic_like.pth", "tests/fixtures/models/reward_aesthetic/model.safetensors",
              "an aesthetic-MLP .pth to its safetensors");
    hostile("global_os_system", "global 'posix.system' is not allowed");
    hostile("global_eval", "global '__builtin__.eval' is not allowed");
    hostile("reduce_storage", "may not be called");
    hostile("cycle", "deeper than 64 levels");
    hostile("deep", "deeper than 64 levels");
    hostile("memo_undefined", "memo entry 5 is not defined");
    hostile("huge_size", "reach element");
    hostile("offset_outside", "reach element 4 of a storage of 4");
    hostile("storage_short", "fewer than 100 elements");
    hostile("int64_range", "does not fit int32");
    hostile("truncated", "no zip end-of-directory record");
    hostile("zip_bomb", "is compressed");
    hostile("entries_bomb", "claims 65534 entries");
    hostile("not_zip", "no zip end-of-directory record");
    hostile("crc", "CRC-32");
    TuChild c;
    tu_run_drtune("convert tests/fixtures/torch/state.pt out.bin", &c);
    tu_check(tu_is_user_error(&c, "must end in .safetensors"), "OUT without .safetensors is refused");
    tu_child_free(&c);
    corruptions("state.pt");
    corruptions("state_zip64.pt");
    return tu_report();
}
