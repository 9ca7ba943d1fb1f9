// weights.c: parameter arenas loaded from and saved to .safetensors files by tensor name (see weights.h).
#include "weights.h"

#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/common.h"
#include "../io/safetensors.h"

#define WEIGHTS_NAME_MAX 1024

// Hands the mapped pages holding one tensor's bytes back to the kernel. The mapping is private and never written,
// so its pages are clean copies of the file: a later read of a shared boundary page faults it back in.
static void release_pages(const void *data, size_t nbytes) {
    if (nbytes == 0) return;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = (uintptr_t)data & ~(page - 1), hi = ((uintptr_t)data + nbytes + page - 1) & ~(page - 1);
    (void)madvise((void *)lo, hi - lo, MADV_DONTNEED); // only memory use depends on it
}

// The file tensor for model tensor name: the name itself, else the first rename that exists in the file.
// file_name receives the name found.
static const StTensor *find_tensor(const SafeTensors *st, const char *name, const char *const (*renames)[2],
                                   char *file_name, size_t n) {
    snprintf(file_name, n, "%s", name);
    const StTensor *t = safetensors_find(st, name);
    for (int i = 0; !t && renames && renames[i][0]; i++) {
        const char *at = strstr(name, renames[i][0]);
        if (!at) continue;
        int len = snprintf(file_name, n, "%.*s%s%s", (int)(at - name), name, renames[i][1],
                           at + strlen(renames[i][0]));
        CHECK(len >= 0 && (size_t)len < n, "", "renamed tensor name of '%s' is too long", name);
        t = safetensors_find(st, file_name);
    }
    return t;
}

static int has_prefix(const char *name, const char *const *prefixes) {
    for (; prefixes && *prefixes; prefixes++)
        if (!strncmp(name, *prefixes, strlen(*prefixes))) return 1;
    return 0;
}

// One line naming the first few file tensors the model did not read (except those of parts not loaded on purpose).
static void report_ignored(const SafeTensors *st, const char *path, unsigned char *used, const char *const *skipped) {
    int n = 0;
    for (int i = 0; i < st->n; i++) {
        if (!used[i] && has_prefix(st->tensors[i].name, skipped)) used[i] = 1;
        n += !used[i];
    }
    if (n == 0) return;
    printf("'%s': ignored %d tensor%s (", path, n, n == 1 ? "" : "s");
    int shown = 0;
    for (int i = 0; i < st->n && shown < 3; i++)
        if (!used[i]) printf("%s%s", shown++ ? ", " : "", st->tensors[i].name);
    printf("%s)\n", n > shown ? ", ..." : "");
}

void weights_load(Arena *params, const char *path, const char *const (*renames)[2]) {
    weights_load_part(params, path, renames, NULL);
}

void weights_load_part(Arena *params, const char *path, const char *const (*renames)[2],
                       const char *const *skipped_prefixes) {
    CHECK(params->base != NULL, "call arena_alloc before weights_load", "arena '%s' is not allocated",
          params->group);
    SafeTensors st;
    safetensors_open(&st, path);
    unsigned char *used = xcalloc((size_t)st.n + 1, 1);
    char file_name[WEIGHTS_NAME_MAX];
    for (int i = 0; i < params->n; i++) {
        ArenaEntry *e = &params->entries[i];
        const StTensor *t = find_tensor(&st, e->name, renames, file_name, sizeof file_name);
        if (!t)
            dt_user_error("'%s': tensor '%s' is missing (the file has %d tensors; do the config and the weights "
                          "belong to the same model?)", path, e->name, st.n);
        int same = t->ndim == e->desc.ndim;
        for (int d = 0; same && d < t->ndim; d++) same = t->shape[d] == e->desc.shape[d];
        if (!same) {
            char a[160], b[160];
            dt_user_error("'%s': tensor '%s' has shape %s in the file but the model expects %s (do the config and "
                          "the weights belong to the same model?)", path, file_name,
                          tensor_dims_str(t->ndim, t->shape, a, sizeof a),
                          tensor_dims_str(e->desc.ndim, e->desc.shape, b, sizeof b));
        }
        safetensors_read_tensor(&st, t, &e->desc);
        release_pages(t->data, t->nbytes);
        used[t - st.tensors] = 1;
    }
    report_ignored(&st, path, used, skipped_prefixes);
    free(used);
    safetensors_close(&st);
}

void weights_save(const Arena *params, const char *path) {
    CHECK(params->base != NULL, "call arena_alloc before weights_save", "arena '%s' is not allocated",
          params->group);
    const char **names = xmalloc(sizeof(char *) * (size_t)(params->n + 1));
    Tensor *tensors = xmalloc(sizeof(Tensor) * (size_t)(params->n + 1));
    for (int i = 0; i < params->n; i++) {
        names[i] = params->entries[i].name;
        tensors[i] = params->entries[i].desc;
    }
    safetensors_write(path, params->n, names, tensors, "{\"format\": \"pt\"}");
    free(names);
    free(tensors);
}

void weights_save_f16(const Arena *const *arenas, int n_arenas, const char *path) {
    int n = 0;
    int64_t numel = 0;
    for (int k = 0; k < n_arenas; k++) {
        CHECK(arenas[k]->base != NULL, "call arena_alloc before weights_save_f16", "arena '%s' is not allocated",
              arenas[k]->group);
        n += arenas[k]->n, numel += arena_numel(arenas[k]);
    }
    const char **names = xmalloc(sizeof(char *) * (size_t)(n + 1));
    Tensor *ts = xmalloc(sizeof(Tensor) * (size_t)(n + 1));
    uint16_t *buf = xmalloc(sizeof(uint16_t) * (size_t)(numel + 1));
    int64_t off = 0;
    int i = 0;
    for (int k = 0; k < n_arenas; k++)
        for (int e = 0; e < arenas[k]->n; e++, i++) {
            const Tensor *d = &arenas[k]->entries[e].desc;
            int64_t m = tensor_numel(d);
            dtype_convert(buf + off, DTYPE_F16, d->data, DTYPE_F32, m);
            names[i] = arenas[k]->entries[e].name;
            ts[i] = tensor_make(buf + off, DTYPE_F16, DEVICE_CPU, d->ndim, d->shape);
            off += m;
        }
    safetensors_write(path, n, names, ts, "{\"format\": \"pt\"}");
    free(names);
    free(ts);
    free(buf);
}

char *weights_folder_file(const char *dir) {
    static const char *const files[] = {"diffusion_pytorch_model.safetensors", "model.safetensors"};
    size_t n = strlen(dir) + 64;
    char *path = xmalloc(n);
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        struct stat sb;
        snprintf(path, n, "%s/%s", dir, files[i]);
        if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode)) return path;
    }
    free(path);
    dt_user_error("'%s': no weights file (looked for %s and %s)", dir, files[0], files[1]);
}
