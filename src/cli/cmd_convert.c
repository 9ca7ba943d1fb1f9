// cmd_convert.c: `drtune convert IN OUT.safetensors`: a PyTorch checkpoint (torch.save zip: .pt, .pth, .bin) to
// safetensors through the restricted reader of io/torchzip.h, so reward models published as torch pickles (HPS,
// the LAION aesthetic MLP, open_clip .bin files) load without Python. Nothing in the input is executed.
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/common.h"
#include "io/safetensors.h"
#include "io/torchzip.h"

static void convert_usage(FILE *f) {
    fprintf(f,
            "usage: drtune convert IN OUT.safetensors\n"
            "\n"
            "Converts a PyTorch checkpoint written by torch.save (.pt, .pth, .bin) into a safetensors file. Only\n"
            "state dicts are read: dicts (nested ones give dotted names), tensors of float32, float16, bfloat16,\n"
            "int64 (stored as int32) or int32; other values (ints, strings) are left out. A checkpoint holding a\n"
            "\"state_dict\" entry converts that entry. Pickled code (any global but OrderedDict, the tensor rebuild\n"
            "functions and the storage types) is refused, never run. The output is written atomically.\n");
}

int cmd_convert(int argc, char **argv) {
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        convert_usage(stdout);
        return 0;
    }
    if (argc != 3) {
        convert_usage(stderr);
        dt_user_error("drtune convert takes IN and OUT.safetensors");
    }
    const char *in = argv[1], *out = argv[2];
    size_t ol = strlen(out);
    USER_CHECK(ol > 12 && !strcmp(out + ol - 12, ".safetensors"), "drtune convert: OUT '%s' must end in .safetensors",
               out);
    int fd = open(in, O_RDONLY);
    USER_CHECK(fd >= 0, "'%s': %s", in, strerror(errno));
    struct stat sb;
    USER_CHECK(fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode), "'%s': not a regular file", in);
    size_t len = (size_t)sb.st_size;
    USER_CHECK(len > 0, "'%s': empty file", in);
    const uint8_t *buf = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    USER_CHECK(buf != MAP_FAILED, "'%s': cannot map the file (%s)", in, strerror(errno));
    close(fd);
    TorchZip z;
    char err[512];
    if (torchzip_parse_buffer(buf, len, SIZE_MAX / 2, err, sizeof err, &z)) dt_user_error("'%s': %s", in, err);
    munmap((void *)buf, len);
    const char **names = xmalloc(sizeof(char *) * (size_t)z.n);
    Tensor *ts = xmalloc(sizeof(Tensor) * (size_t)z.n);
    size_t bytes = 0;
    int counts[4] = {0};
    for (int i = 0; i < z.n; i++) {
        names[i] = z.tensors[i].name;
        ts[i] = tensor_make(z.tensors[i].data, z.tensors[i].dtype, DEVICE_CPU, z.tensors[i].ndim, z.tensors[i].shape);
        bytes += z.tensors[i].nbytes;
        counts[z.tensors[i].dtype]++;
    }
    safetensors_write(out, z.n, names, ts, "{\"format\": \"pt\"}");
    printf("'%s'%s%s: %d tensors (F32 %d, BF16 %d, F16 %d, I32 %d), %.1f MiB; %d non-tensor values left out -> %s\n",
           in, z.root[0] ? " entry " : "", z.root, z.n, counts[DTYPE_F32], counts[DTYPE_BF16], counts[DTYPE_F16],
           counts[DTYPE_I32], bytes / 1048576.0, z.skipped, out);
    free(names);
    free(ts);
    torchzip_free(&z);
    return 0;
}
