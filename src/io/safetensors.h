// safetensors.h: reading and writing .safetensors files, the weight format of every diffusers folder.
// The reader maps the file read-only and validates the whole header before any tensor is touched (a malformed or
// hostile file is a user error, never a crash); the writer streams tensors into a temporary file and renames it.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "../core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ST_MAX_DIMS 8
#define ST_MAX_HEADER_BYTES 100000000ull // the reference parser's MAX_HEADER_SIZE
#define ST_MAX_NAME_BYTES 4096           // tensor names and metadata keys
#define ST_MAX_STRING_BYTES (16u << 20)  // any JSON string in the header (metadata values can be large)
#define ST_MAX_NESTING 8                 // a valid header nests 3 deep
#define ST_MAX_JSON_ITEMS 4000000        // ',' and ':' in the header: bounds the parser's memory (~10 per tensor)

// On-disk element types drtune reads. I64 exists for CLIP's position_ids buffer.
typedef enum { ST_F32 = 0, ST_F16, ST_BF16, ST_I32, ST_I64 } StDType;

typedef struct {
    char *name;
    StDType dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t offset;          // bytes from the start of the data buffer (data_offsets[0])
    size_t nbytes;
    const void *data;       // into the mapping; not aligned in general (read through memcpy)
} StTensor;

typedef struct {
    char *path;             // NULL when parsed from memory
    const uint8_t *map;     // the whole file (owned and unmapped by safetensors_close when path is set)
    size_t size;
    StTensor *tensors;      // sorted by name (byte order)
    int n;
    char **meta_keys;       // __metadata__, in file order
    char **meta_values;
    int n_meta;
} SafeTensors;

const char *safetensors_dtype_name(StDType t); // "F32", "F16", ...
size_t safetensors_dtype_size(StDType t);

// Validates and indexes a complete file image held in memory (buf stays owned by the caller and must outlive st).
// Returns 0 on success; otherwise nonzero with a one-line reason in err, and st holds nothing to release.
// Never exits on bad input, so a fuzzer can call it directly. Release a successful result with safetensors_close.
int safetensors_parse_buffer(const uint8_t *buf, size_t len, char *err, size_t errlen, SafeTensors *st);

// Maps and validates path; any problem with the file is a user error "'<path>': <reason>".
void safetensors_open(SafeTensors *st, const char *path);
void safetensors_close(SafeTensors *st);

// The tensor called name (exact bytes), or NULL.
const StTensor *safetensors_find(const SafeTensors *st, const char *name);
// The __metadata__ value for key, or NULL.
const char *safetensors_metadata(const SafeTensors *st, const char *key);

// Copies tensor name into dst (CPU or CUDA), which must already have the file's exact shape. Float data (F32, F16,
// BF16) converts to dst's float dtype; integer data (I32, I64) goes to an I32 dst, range-checked. A missing
// tensor, a shape mismatch, a float/integer mismatch or a NaN or infinity in float data is a user error naming
// the tensor and the file.
void safetensors_read_into(const SafeTensors *st, const char *name, Tensor *dst);
// The first element of float tensor t that is NaN or infinite (checked on the file's bits; *is_nan says which
// when is_nan is not NULL), or -1 when all are finite or t is not float data. Reading refuses such a tensor.
int64_t safetensors_first_nonfinite(const StTensor *t, int *is_nan);
// The copy alone, for a tensor t of st the caller has found and whose shape dst already has (internal failure when
// the element counts differ); a float/integer mismatch is the same user error.
void safetensors_read_tensor(const SafeTensors *st, const StTensor *t, Tensor *dst);

// Writes n tensors (F32, F16, BF16 or I32; CPU or CUDA) to path in the order given, with optional metadata given
// as a JSON object of string values. The header is padded with spaces to a multiple of 8 bytes. The data are
// streamed to a temporary file in the same folder, synced and renamed over path, so readers never see a partial
// file. I/O failures are user errors; duplicate names or malformed metadata are internal failures.
void safetensors_write(const char *path, int n, const char *const *names, const Tensor *tensors,
                       const char *metadata_json);

#ifdef __cplusplus
}
#endif
