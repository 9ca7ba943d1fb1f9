// torchzip.h: a safe reader of PyTorch checkpoints (`torch.save` files: .pt, .pth, .bin), so that reward models
// published as torch pickles convert to safetensors without Python (`drtune convert`).
//
// The file is a zip archive (stored, not compressed; ZIP64 for files over 4 GiB) holding <name>/data.pkl, the
// pickled object, and <name>/data/<key>, the raw little-endian bytes of each storage. The pickle is read by a
// restricted unpickler that understands only what state dicts use: the protocol 2-4 opcodes for None, bools, ints,
// floats, strings, tuples, lists and dicts, the memo, persistent ids of storages, and calls of exactly these
// globals: collections.OrderedDict, torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter and the
// storage types torch.{Float,Half,BFloat16,Long,Int}Storage. Every other global (os.system, builtins.eval, ...),
// every other opcode, and every inconsistency (sizes, strides or offsets outside the storage, truncated or
// compressed entries, cycles, excessive nesting) is refused with a one-line reason; nothing is ever executed.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "../core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TORCHZIP_MAX_DIMS 8

typedef struct {
    char *name;                         // dotted path of dict keys / list indices ("visual.conv1.weight")
    DType dtype;                        // F32, F16, BF16 as stored; I32 for int64 / int32 storages (range-checked)
    int ndim;
    int64_t shape[TORCHZIP_MAX_DIMS];
    void *data;                         // contiguous row-major copy (owned)
    size_t nbytes;
} TorchZipTensor;

typedef struct {
    TorchZipTensor *tensors;            // in the order of the pickle's dicts
    int n;
    int skipped;                        // non-tensor leaves (ints, floats, strings, None) left out
    char root[64];                      // "state_dict" when the tensors were taken from that entry, else ""
} TorchZip;

// Parses a complete checkpoint held in memory (buf stays owned by the caller). When the top-level object is a
// dict with a "state_dict" dict (HPS, many training checkpoints), only that entry is converted. max_bytes bounds
// the total size of the tensors produced. Returns 0 on success; otherwise nonzero with a one-line reason in err,
// and out holds nothing to release. Never exits on bad input, so a fuzzer can call it directly.
int torchzip_parse_buffer(const uint8_t *buf, size_t len, size_t max_bytes, char *err, size_t errlen, TorchZip *out);
void torchzip_free(TorchZip *z);

#ifdef __cplusplus
}
#endif
