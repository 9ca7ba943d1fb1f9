// checkpoint.c: HDF5 checkpoints (checkpoint.h, docs/CHECKPOINT.md). Every rank writes its range of each flat
// buffer as hyperslabs of the tensors' logical datasets in collective parallel I/O; rank 0 publishes the file by
// rename and keeps the folder's `latest` pointer and retention. Loading reads independently, so a checksum error
// on one rank cannot stall the others in a collective; the ranks then agree on the verdict.
#include "checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "../core/common.h"
#include "dist.h"

void ckpt_state_free(CkptState *s) {
    free(s->config);
    free(s->rows);
    memset(s, 0, sizeof *s);
}

#ifdef DRTUNE_DIST
#include <hdf5.h>
#include <mpi.h>

#define CHUNK_ELEMS ((hsize_t)1 << 18) // 1 MiB of fp32 per chunk: checksums localise damage, reads stay large
#define WHY 256

// ---------------------------------------------------------------------------------------------------------------
// HDF5 plumbing

static herr_t keep_deepest(unsigned n, const H5E_error2_t *e, void *out) {
    (void)n;
    snprintf(out, WHY, "%s", e->desc);
    return 0;
}

// The innermost message of HDF5's error stack: the cause ("data error detected by Fletcher32 checksum").
static const char *h5_error(char *buf) {
    buf[0] = 0;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, keep_deepest, buf);
    if (!buf[0]) snprintf(buf, WHY, "unknown HDF5 error");
    return buf;
}

// The checkpoint being written: its file while open, its temporary and final names ("" outside ckpt_save).
static struct {
    hid_t file;
    char tmp[2048], final[2048];
} g_write = {-1, "", ""};

// A write of the checkpoint failed (a full disk, a quota, a lost mount): the file is closed as far as HDF5 can,
// the temporary removed, and the run ends with one line. The previous checkpoint stays published: `latest` only
// moves after a complete write.
// With several ranks the others may be inside another collective HDF5 call, so nothing collective is tried: the
// job is aborted (dist_set_abort_on_error, set while writing). One rank closes HDF5 first, so that MPI_Finalize
// does not meet a half-written file.
static DT_NORETURN void write_failed(const char *why) {
    if (dist_size() == 1) {
        if (g_write.file >= 0) H5Fclose(g_write.file); // best effort: the data cannot reach the disk anyway
        H5close();
    }
    g_write.file = -1;
    unlink(g_write.tmp);
    dt_user_error("cannot write checkpoint '%s' (disk full?): %s; the temporary file was removed and the previous "
                  "checkpoint (if any) is still the latest", g_write.final, why);
}

static hid_t h5w(hid_t id, const char *file, int line, const char *call) {
    if (id < 0) {
        int err = errno;
        char m[WHY], why[WHY + 128];
        if (!g_write.tmp[0])
            dt_fatal(file, line, "", "checkpoint: %s failed: %s", call, h5_error(m));
        if (err == ENOSPC || err == EDQUOT || err == EFBIG || err == EIO || err == EROFS || err == EACCES)
            snprintf(why, sizeof why, "%s (%s)", h5_error(m), strerror(err));
        else snprintf(why, sizeof why, "%s", h5_error(m));
        write_failed(why);
    }
    return id;
}
// Checks a call made while writing; a failure ends the job with a user error (write_failed), on every rank it
// reaches (dist.h describes how the ranks then end).
#define H5W(call) h5w((call), __FILE__, __LINE__, #call)

static hid_t file_access(void) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); // failures are reported by this file, with context
    hid_t fapl = H5W(H5Pcreate(H5P_FILE_ACCESS));
    H5W(H5Pset_fapl_mpio(fapl, MPI_COMM_WORLD, MPI_INFO_NULL));
    H5W(H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_LATEST)); // checksummed metadata too
#if H5_VERSION_GE(1, 10, 7)
    H5W(H5Pset_file_locking(fapl, 0, 1)); // publication is by rename; locks fail on some parallel file systems
#endif
    return fapl;
}

static void attr_write(hid_t obj, const char *name, hid_t ftype, hid_t mtype, const void *v) {
    hid_t sp = H5W(H5Screate(H5S_SCALAR));
    hid_t a = H5W(H5Acreate2(obj, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT));
    H5W(H5Awrite(a, mtype, v));
    H5W(H5Aclose(a));
    H5W(H5Sclose(sp));
}

static void attr_int(hid_t obj, const char *name, int64_t v) {
    attr_write(obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &v);
}

static void attr_double(hid_t obj, const char *name, double v) {
    attr_write(obj, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &v);
}

static void attr_text(hid_t obj, const char *name, const char *s) {
    hid_t t = H5W(H5Tcopy(H5T_C_S1));
    H5W(H5Tset_size(t, strlen(s) + 1));
    attr_write(obj, name, t, t, s);
    H5W(H5Tclose(t));
}

// Dataset creation: chunked (whole trailing dimensions up to CHUNK_ELEMS) with the Fletcher32 checksum.
static hid_t dataset_create(hid_t loc, const char *name, hid_t type, int nd, const hsize_t *d) {
    hsize_t c[H5S_MAX_RANK], prod = 1;
    int i = nd - 1;
    for (; i >= 0 && prod * d[i] <= CHUNK_ELEMS; i--) c[i] = d[i], prod *= d[i];
    for (int j = i; j >= 0; j--) c[j] = j == i && CHUNK_ELEMS / prod > 0 ? CHUNK_ELEMS / prod : 1;
    hid_t dcpl = H5W(H5Pcreate(H5P_DATASET_CREATE));
    H5W(H5Pset_chunk(dcpl, nd, c));
    H5W(H5Pset_fletcher32(dcpl));
    hid_t sp = H5W(H5Screate_simple(nd, d, NULL));
    hid_t ds = H5W(H5Dcreate2(loc, name, type, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT));
    H5W(H5Sclose(sp));
    H5W(H5Pclose(dcpl));
    return ds;
}

// Adds the row-major elements [a, b) of a dataspace of nd dims d to its selection, as at most 2 nd hyperslabs;
// at[0 .. dim) fixes the leading indices.
static void select_range(hid_t space, int nd, const hsize_t *d, int dim, hsize_t *at, hsize_t a, hsize_t b,
                         int *first) {
    hsize_t inner = 1;
    for (int i = dim + 1; i < nd; i++) inner *= d[i];
    if (a % inner && a < b) { // the rest of a partly selected row
        hsize_t row = a / inner, end = (row + 1) * inner < b ? (row + 1) * inner : b;
        at[dim] = row;
        select_range(space, nd, d, dim + 1, at, a - row * inner, end - row * inner, first);
        a = end;
    }
    if (b - a >= inner) { // whole rows
        hsize_t start[H5S_MAX_RANK], count[H5S_MAX_RANK];
        for (int i = 0; i < nd; i++) {
            start[i] = i < dim ? at[i] : i == dim ? a / inner : 0;
            count[i] = i < dim ? 1 : i == dim ? (b - a) / inner : d[i];
        }
        H5W(H5Sselect_hyperslab(space, *first ? H5S_SELECT_SET : H5S_SELECT_OR, start, NULL, count, NULL));
        *first = 0;
        a += count[dim] * inner;
    }
    if (a < b) { // the start of a last row
        at[dim] = a / inner;
        select_range(space, nd, d, dim + 1, at, 0, b - a, first);
    }
}

// A tensor entry of the layout and this buffer's part of it: file space and selection, memory space, pointer.
typedef struct {
    int nd;
    hsize_t d[H5S_MAX_RANK];
    hid_t fspace, mspace;
    float *mem;
} Part;

static void part_make(Part *p, const ArenaEntry *e, const CkptBuffer *b) {
    CHECK(e->desc.dtype == DTYPE_F32 && e->offset % sizeof(float) == 0, "", "checkpoint tensor '%s' is not fp32",
          e->name);
    p->nd = e->desc.ndim > 0 ? e->desc.ndim : 1;
    for (int i = 0; i < p->nd; i++) p->d[i] = e->desc.ndim > 0 ? (hsize_t)e->desc.shape[i] : 1;
    int64_t off = (int64_t)(e->offset / sizeof(float)), numel = tensor_numel(&e->desc);
    int64_t a = b->lo > off ? b->lo : off, z = b->hi < off + numel ? b->hi : off + numel;
    p->fspace = H5W(H5Screate_simple(p->nd, p->d, NULL));
    hsize_t count = z > a ? (hsize_t)(z - a) : 1;
    p->mspace = H5W(H5Screate_simple(1, &count, NULL));
    p->mem = b->data;
    if (z > a) {
        hsize_t at[H5S_MAX_RANK];
        int first = 1;
        select_range(p->fspace, p->nd, p->d, 0, at, (hsize_t)(a - off), (hsize_t)(z - off), &first);
        p->mem = b->data + (a - b->base);
    } else {
        H5W(H5Sselect_none(p->fspace));
        H5W(H5Sselect_none(p->mspace));
    }
}

static void part_free(Part *p) {
    H5Sclose(p->fspace);
    H5Sclose(p->mspace);
}

// One metrics row as stored: the numeric fields of MetricsRow (per-reward means are not stored), without padding,
// so the memory layout is the file's (parallel writes through a filter cannot convert types).
typedef struct {
    int32_t iteration, skipped;
    double reward_mean, reward_std, loss, grad_norm, lr;
    double rollout, decode, reward, backward, update, peak_rss_bytes, reduce_wait, reduce_overlap;
} MetricsRecord;

static hid_t metrics_type(void) {
    static const struct {
        const char *name;
        size_t off;
    } F[] = {
        {"iteration", offsetof(MetricsRecord, iteration)},   {"skipped", offsetof(MetricsRecord, skipped)},
        {"reward_mean", offsetof(MetricsRecord, reward_mean)}, {"reward_std", offsetof(MetricsRecord, reward_std)},
        {"loss", offsetof(MetricsRecord, loss)},             {"grad_norm", offsetof(MetricsRecord, grad_norm)},
        {"lr", offsetof(MetricsRecord, lr)},                 {"seconds_rollout", offsetof(MetricsRecord, rollout)},
        {"seconds_decode", offsetof(MetricsRecord, decode)}, {"seconds_reward", offsetof(MetricsRecord, reward)},
        {"seconds_backward", offsetof(MetricsRecord, backward)},
        {"seconds_update", offsetof(MetricsRecord, update)},
        {"peak_rss_bytes", offsetof(MetricsRecord, peak_rss_bytes)},
        {"seconds_reduce_wait", offsetof(MetricsRecord, reduce_wait)},
        {"reduce_overlap", offsetof(MetricsRecord, reduce_overlap)},
    };
    hid_t t = H5W(H5Tcreate(H5T_COMPOUND, sizeof(MetricsRecord)));
    for (size_t i = 0; i < sizeof F / sizeof F[0]; i++)
        H5W(H5Tinsert(t, F[i].name, F[i].off, i < 2 ? H5T_STD_I32LE : H5T_IEEE_F64LE));
    return t;
}

// A fixed-length string type of w bytes (NUL-terminated): the config's lines.
static hid_t line_type(size_t w) {
    hid_t t = H5W(H5Tcopy(H5T_C_S1));
    H5W(H5Tset_size(t, w));
    return t;
}

static int delay_ms(void) {
    const char *v = getenv("DRTUNE_TEST_CKPT_DELAY_MS"); // tests only: widen the window of a write in progress
    return v ? atoi(v) : 0;
}

// ---------------------------------------------------------------------------------------------------------------
// writing

// Rank 0 writes a whole small dataset; the others take part in the collective call with nothing selected.
static void write_small(hid_t ds, hid_t mtype, hid_t dxpl, const void *data) {
    hid_t fs = H5W(H5Dget_space(ds));
    if (dist_rank() != 0) H5W(H5Sselect_none(fs));
    H5W(H5Dwrite(ds, mtype, dist_rank() == 0 ? H5S_ALL : fs, fs, dxpl, data));
    H5W(H5Sclose(fs));
}

static void write_config(hid_t f, const char *text, hid_t dxpl) {
    hsize_t lines = 0, w = 1;
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (len + 1 > w) w = len + 1; // and the terminating NUL
        lines++;
        p += len + (nl != NULL);
    }
    if (lines == 0) lines = 1;
    char *buf = xcalloc(lines, w);
    hsize_t i = 0;
    for (const char *p = text; *p; i++) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        memcpy(buf + i * w, p, len);
        p += len + (nl != NULL);
    }
    hid_t t = line_type(w), ds = dataset_create(f, "config", t, 1, &lines);
    write_small(ds, t, dxpl, buf);
    H5W(H5Dclose(ds));
    H5W(H5Tclose(t));
    free(buf);
}

static void write_metrics(hid_t f, const CkptState *s, hid_t dxpl) {
    CHECK(s->n_rows >= 1, "", "a checkpoint needs the metrics of at least one iteration");
    MetricsRecord *rec = xcalloc((size_t)s->n_rows, sizeof *rec);
    for (int i = 0; i < s->n_rows; i++) {
        const MetricsRow *r = &s->rows[i];
        rec[i] = (MetricsRecord){r->iteration, r->skipped, r->reward_mean, r->reward_std, r->loss, r->grad_norm,
                                 r->lr, r->t_rollout, r->t_decode, r->t_reward, r->t_backward, r->t_update,
                                 r->peak_rss_bytes, r->t_reduce_wait, r->reduce_overlap};
    }
    hid_t t = metrics_type();
    hsize_t n = (hsize_t)s->n_rows;
    hid_t ds = dataset_create(f, "metrics", t, 1, &n);
    write_small(ds, t, dxpl, rec);
    H5W(H5Dclose(ds));
    H5W(H5Tclose(t));
    free(rec);
}

static void write_group(hid_t f, const CkptTensors *t, const CkptBuffer *b, hid_t dxpl, int delay) {
    hid_t g = H5W(H5Gcreate2(f, b->group, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    for (int i = 0; i < t->layout->n; i++) {
        const ArenaEntry *e = &t->layout->entries[i];
        Part p;
        part_make(&p, e, b);
        hid_t ds = dataset_create(g, e->name, H5T_IEEE_F32LE, p.nd, p.d);
        H5W(H5Dwrite(ds, H5T_NATIVE_FLOAT, p.mspace, p.fspace, dxpl, p.mem));
        H5W(H5Dclose(ds));
        part_free(&p);
        if (delay > 0) usleep((useconds_t)delay * 1000);
    }
    H5W(H5Gclose(g));
}

static void fsync_path(const char *path, int dir) {
    int fd = open(path, O_RDONLY | (dir ? O_DIRECTORY : 0));
    if (fd < 0 || fsync(fd) != 0) {
        char why[2200];
        snprintf(why, sizeof why, "cannot flush '%s' to disk (%s)", path, strerror(errno));
        if (fd >= 0) close(fd);
        if (g_write.tmp[0]) write_failed(why);
        dt_user_error("%s", why);
    }
    close(fd);
}

// ---------------------------------------------------------------------------------------------------------------
// the folder: ckpt-<iteration>.h5 files, temporaries of unfinished writes, and the latest pointer (rank 0)

static int ckpt_iteration(const char *name) {
    if (strncmp(name, "ckpt-", 5) != 0) return -1;
    char *end;
    long it = strtol(name + 5, &end, 10);
    return end > name + 5 && !strcmp(end, ".h5") && it >= 0 && it < 1000000000 ? (int)it : -1;
}

static int compare_desc(const void *a, const void *b) { return *(const int *)b - *(const int *)a; }

// Iterations of the folder's checkpoints, newest first, the same on every rank. Rank 0 also deletes temporaries
// left by interrupted writes (never valid).
static int list_ckpts(const char *dir, int **its) {
    int n = 0, cap = 16;
    *its = xmalloc(sizeof(int) * (size_t)cap);
    if (dist_rank() == 0) {
        DIR *d = opendir(dir);
        for (struct dirent *e; d && (e = readdir(d));) {
            size_t len = strlen(e->d_name);
            if (!strncmp(e->d_name, "ckpt-", 5) && len > 7 && !strcmp(e->d_name + len - 7, ".h5.tmp")) {
                char path[2048];
                unlink(dt_path(path, sizeof path, "%s/%s", dir, e->d_name));
                continue;
            }
            int it = ckpt_iteration(e->d_name);
            if (it < 0) continue;
            if (n == cap) *its = xrealloc(*its, sizeof(int) * (size_t)(cap *= 2));
            (*its)[n++] = it;
        }
        if (d) closedir(d);
        qsort(*its, (size_t)n, sizeof(int), compare_desc);
    }
    dist_bcast(&n, sizeof n, 0);
    if (dist_rank() != 0) *its = xrealloc(*its, sizeof(int) * (size_t)(n ? n : 1));
    if (n) dist_bcast(*its, (int)sizeof(int) * n, 0);
    return n;
}

static const char *ckpt_path(char *buf, size_t n, const char *dir, int it, const char *suffix) {
    return dt_path(buf, n, "%s/ckpt-%06d.h5%s", dir, it, suffix);
}

// Removes the checkpoints newer than `newest` (newest < 0: all) and all but the `keep` newest of the others (keep 0:
// no limit), then points `latest` at the newest one left; `why` (or NULL) is printed for each removal. Rank 0 does
// the work; every rank calls.
static void prune(const char *dir, int newest, int keep, const char *why) {
    int *its, n = list_ckpts(dir, &its);
    if (dist_rank() == 0) {
        char path[2048];
        int kept = 0;
        for (int i = 0; i < n; i++) {
            if (its[i] > newest || (keep > 0 && kept >= keep)) {
                unlink(ckpt_path(path, sizeof path, dir, its[i], ""));
                if (why) printf("removed %s (%s)\n", path, why);
                continue;
            }
            if (!kept) {
                char name[64];
                int len = snprintf(name, sizeof name, "ckpt-%06d.h5\n", its[i]);
                dt_write_file_atomic(dt_path(path, sizeof path, "%s/latest", dir), name, (size_t)len);
            }
            kept++;
        }
        if (!kept) unlink(dt_path(path, sizeof path, "%s/latest", dir));
    }
    free(its);
}

// Bytes a checkpoint of t with s's metrics takes, about: its tensors, the metrics and the configuration, or the
// newest checkpoint already in dir when that is larger (the same tensors plus HDF5's own structures).
static double size_estimate(const char *dir, const CkptState *s, const CkptTensors *t) {
    double bytes = 4.0 * (double)arena_numel(t->layout) * t->n_buf + (double)s->n_rows * sizeof(MetricsRecord) +
                   (s->config ? (double)strlen(s->config) : 0);
    char path[2048];
    struct stat st;
    FILE *f = fopen(dt_path(path, sizeof path, "%s/latest", dir), "r");
    char name[64] = "";
    if (f) {
        if (fscanf(f, "%63s", name) != 1) name[0] = 0;
        fclose(f);
    }
    if (ckpt_iteration(name) >= 0 && stat(dt_path(path, sizeof path, "%s/%s", dir, name), &st) == 0 &&
        (double)st.st_size > bytes)
        bytes = (double)st.st_size;
    return bytes;
}

// Before writing: a file system without room for the checkpoint is a clear error now, with nothing written. Rank 0
// looks and every rank takes its answer, so all of them stop alike (one line, docs/DISTRIBUTED.md).
static void check_space(const char *dir, const CkptState *s, const CkptTensors *t) {
    double need[2] = {0, 0}; // bytes needed, bytes free (0 and 0 when unknown)
    if (dist_rank() == 0) {
        struct statvfs fs;
        need[0] = size_estimate(dir, s, t);
        if (statvfs(dir, &fs) == 0) need[1] = (double)fs.f_bavail * (double)fs.f_frsize;
        else need[0] = 0;
    }
    dist_bcast(need, (int)sizeof need, 0);
    if (need[0] > need[1]) {
        char a[32], b[32], path[2048];
        dt_user_error("not enough disk space for checkpoint '%s': it needs about %s, %s is free; free some space "
                      "or move output.dir (the previous checkpoint, if any, is still the latest)",
                      ckpt_path(path, sizeof path, dir, s->iteration, ""), dt_format_bytes(a, sizeof a, need[0]),
                      dt_format_bytes(b, sizeof b, need[1]));
    }
}

double ckpt_save(const char *dir, const CkptState *s, const CkptTensors *t, int keep) {
    char *tmp = g_write.tmp, *final = g_write.final;
    if (dist_rank() == 0) dt_mkdirs(dir);
    dist_barrier();
    check_space(dir, s, t);
    ckpt_path(tmp, sizeof g_write.tmp, dir, s->iteration, ".tmp");
    ckpt_path(final, sizeof g_write.final, dir, s->iteration, "");
    dist_set_abort_on_error(1);
    hid_t fapl = file_access();
    hid_t f = g_write.file = H5W(H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl));
    H5W(H5Pclose(fapl));
    hid_t dxpl = H5W(H5Pcreate(H5P_DATASET_XFER));
    H5W(H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE));
    attr_text(f, "format", CKPT_FORMAT);
    attr_int(f, "format_version", CKPT_FORMAT_VERSION);
    attr_int(f, "iteration", s->iteration);
    attr_int(f, "applied_steps", s->applied);
    attr_int(f, "skipped_steps", s->skipped);
    attr_int(f, "seed", s->seed);
    attr_int(f, "batch", s->batch);
    attr_int(f, "ranks", dist_size());
    attr_int(f, "prompt_cursor", s->prompt_cursor);
    attr_double(f, "lr", s->lr);
    attr_text(f, "trainable", t->trainable);
    attr_int(f, "elements", arena_numel(t->layout));
    write_config(f, s->config, dxpl);
    write_metrics(f, s, dxpl);
    int delay = delay_ms();
    for (int i = 0; i < t->n_buf; i++) write_group(f, t, &t->buf[i], dxpl, delay);
    attr_int(f, "complete", 1); // last: a file without it was cut short
    H5W(H5Pclose(dxpl));
    H5W(H5Fflush(f, H5F_SCOPE_GLOBAL));
    g_write.file = -1;
    H5W(H5Fclose(f));
    dist_barrier(); // every rank's data is in the file
    double bytes = 0;
    if (dist_rank() == 0) {
        fsync_path(tmp, 0);
        if (rename(tmp, final) != 0) {
            char why[2200];
            snprintf(why, sizeof why, "cannot rename it from '%s' (%s)", tmp, strerror(errno));
            write_failed(why);
        }
        g_write.tmp[0] = 0; // published: nothing to remove on a failure from here on
        fsync_path(dir, 1);
        struct stat st;
        if (stat(final, &st) == 0) bytes = (double)st.st_size;
    }
    g_write.tmp[0] = g_write.final[0] = 0;
    dist_set_abort_on_error(0);
    prune(dir, INT_MAX, keep, NULL);
    dist_barrier();
    return bytes;
}

// ---------------------------------------------------------------------------------------------------------------
// loading

// The first problem this rank found in a file (corrupt, truncated, unfinished); empty when none.
typedef struct {
    char why[WHY];
} Fault;

static int fault(Fault *f, const char *fmt, ...) DT_PRINTF(2, 3);
static int fault(Fault *f, const char *fmt, ...) {
    if (!f->why[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(f->why, WHY, fmt, ap);
        va_end(ap);
    }
    return 0;
}

static int attr_read(hid_t obj, const char *name, hid_t mtype, void *out, Fault *ft) {
    char m[WHY];
    htri_t ex = H5Aexists(obj, name);
    if (ex < 0) return fault(ft, "attribute '%s': %s", name, h5_error(m));
    if (ex == 0) return fault(ft, "no attribute '%s'", name);
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0 || H5Aread(a, mtype, out) < 0) fault(ft, "attribute '%s': %s", name, h5_error(m));
    if (a >= 0) H5Aclose(a);
    return 1;
}

static int64_t attr_i64(hid_t obj, const char *name, Fault *ft) {
    int64_t v = 0;
    attr_read(obj, name, H5T_NATIVE_INT64, &v, ft);
    return v;
}

static void attr_str(hid_t obj, const char *name, char *buf, size_t n, Fault *ft) {
    buf[0] = 0;
    char m[WHY];
    hid_t a = H5Aexists(obj, name) > 0 ? H5Aopen(obj, name, H5P_DEFAULT) : -1;
    hid_t t = a >= 0 ? H5Aget_type(a) : -1;
    size_t size = t >= 0 ? H5Tget_size(t) : 0;
    if (size == 0 || size >= n) {
        fault(ft, "attribute '%s' missing or malformed", name);
    } else {
        hid_t mt = H5W(H5Tcopy(H5T_C_S1));
        H5W(H5Tset_size(mt, size));
        if (H5Aread(a, mt, buf) < 0) fault(ft, "attribute '%s': %s", name, h5_error(m));
        buf[size] = 0;
        H5Tclose(mt);
    }
    if (t >= 0) H5Tclose(t);
    if (a >= 0) H5Aclose(a);
}

// Opens a dataset and checks its element count is sane; returns -1 (with a fault) otherwise.
static hid_t dataset_open(hid_t loc, const char *name, hsize_t *count, Fault *ft) {
    char m[WHY];
    hid_t ds = H5Dopen2(loc, name, H5P_DEFAULT);
    if (ds < 0) {
        fault(ft, "dataset '%s': %s", name, h5_error(m));
        return -1;
    }
    hid_t sp = H5Dget_space(ds);
    hssize_t np = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
    if (sp >= 0) H5Sclose(sp);
    if (np <= 0 || np > ((hssize_t)1 << 40)) {
        fault(ft, "dataset '%s': bad extent", name);
        H5Dclose(ds);
        return -1;
    }
    *count = (hsize_t)np;
    return ds;
}

static char *read_config(hid_t f, Fault *ft) {
    hsize_t lines;
    hid_t ds = dataset_open(f, "config", &lines, ft);
    if (ds < 0) return NULL;
    char m[WHY], *text = NULL;
    hid_t t = H5Dget_type(ds);
    size_t w = t >= 0 ? H5Tget_size(t) : 0;
    if (w == 0 || w > ((size_t)1 << 20) || lines > ((hsize_t)1 << 20)) {
        fault(ft, "dataset 'config': malformed");
    } else {
        char *buf = xcalloc(lines, w);
        hid_t mt = line_type(w);
        if (H5Dread(ds, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
            fault(ft, "dataset 'config': %s", h5_error(m));
        } else {
            text = xmalloc(lines * (w + 1) + 1);
            size_t len = 0;
            for (hsize_t i = 0; i < lines; i++) {
                size_t l = strnlen(buf + i * w, w);
                memcpy(text + len, buf + i * w, l);
                len += l;
                text[len++] = '\n';
            }
            text[len] = 0;
        }
        H5Tclose(mt);
        free(buf);
    }
    if (t >= 0) H5Tclose(t);
    H5Dclose(ds);
    return text;
}

static MetricsRow *read_metrics(hid_t f, int *n, Fault *ft) {
    hsize_t count;
    *n = 0;
    hid_t ds = dataset_open(f, "metrics", &count, ft);
    if (ds < 0) return NULL;
    char m[WHY];
    MetricsRow *rows = NULL;
    if (count > (hsize_t)INT_MAX / 2) {
        fault(ft, "dataset 'metrics': malformed");
    } else {
        MetricsRecord *rec = xcalloc(count, sizeof *rec);
        hid_t t = metrics_type();
        if (H5Dread(ds, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, rec) < 0) fault(ft, "dataset 'metrics': %s", h5_error(m));
        rows = xcalloc(count, sizeof(MetricsRow));
        for (hsize_t i = 0; i < count; i++) {
            const MetricsRecord *r = &rec[i];
            rows[i] = (MetricsRow){.iteration = r->iteration, .skipped = r->skipped, .reward_mean = r->reward_mean,
                                   .reward_std = r->reward_std, .loss = r->loss, .grad_norm = r->grad_norm,
                                   .lr = r->lr, .t_rollout = r->rollout, .t_decode = r->decode,
                                   .t_reward = r->reward, .t_backward = r->backward, .t_update = r->update,
                                   .peak_rss_bytes = r->peak_rss_bytes, .t_reduce_wait = r->reduce_wait,
                                   .reduce_overlap = r->reduce_overlap};
        }
        *n = (int)count;
        H5Tclose(t);
        free(rec);
    }
    H5Dclose(ds);
    return rows;
}

static const char *shape_text(char *buf, size_t n, int nd, const hsize_t *d) {
    size_t used = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < nd && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, "%s%llu", i ? ", " : "", (unsigned long long)d[i]);
    if (used < n) snprintf(buf + used, n - used, "]");
    return buf;
}

// Reads this rank's range of one buffer. Names or shapes that differ from the model are a user error (the file
// is fine, it belongs to another model or configuration); damage is a fault.
static void read_group(hid_t f, const char *path, const CkptTensors *t, const CkptBuffer *b, Fault *ft) {
    char m[WHY];
    hid_t g = H5Gopen2(f, b->group, H5P_DEFAULT);
    H5G_info_t info;
    if (g < 0 || H5Gget_info(g, &info) < 0) {
        fault(ft, "group '/%s': %s", b->group, h5_error(m));
        if (g >= 0) H5Gclose(g);
        return;
    }
    if (info.nlinks != (hsize_t)t->layout->n)
        dt_user_error("checkpoint '%s' has %llu tensors in /%s, the trainable set of this configuration %d: it was "
                      "written for another model or configuration",
                      path, (unsigned long long)info.nlinks, b->group, t->layout->n);
    for (int i = 0; i < t->layout->n; i++) {
        const ArenaEntry *e = &t->layout->entries[i];
        htri_t ex = H5Lexists(g, e->name, H5P_DEFAULT);
        if (ex == 0)
            dt_user_error("checkpoint '%s' has no tensor /%s/%s: it was written for another model or trainable set",
                          path, b->group, e->name);
        hid_t ds = ex > 0 ? H5Dopen2(g, e->name, H5P_DEFAULT) : -1;
        if (ds < 0) {
            fault(ft, "/%s/%s: %s", b->group, e->name, h5_error(m));
            continue;
        }
        Part p;
        part_make(&p, e, b);
        hid_t sp = H5Dget_space(ds);
        hsize_t d[H5S_MAX_RANK];
        int nd = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
        if (nd < 0 || nd > H5S_MAX_RANK || H5Sget_simple_extent_dims(sp, d, NULL) < 0) {
            fault(ft, "/%s/%s: malformed dataspace", b->group, e->name);
        } else {
            int same = nd == p.nd;
            for (int k = 0; same && k < nd; k++) same = d[k] == p.d[k];
            char s1[96], s2[96];
            if (!same)
                dt_user_error("checkpoint '%s': /%s/%s has shape %s, the model %s: it was written for another model "
                              "or configuration",
                              path, b->group, e->name, shape_text(s1, sizeof s1, nd, d),
                              shape_text(s2, sizeof s2, p.nd, p.d));
            if (H5Dread(ds, H5T_NATIVE_FLOAT, p.mspace, p.fspace, H5P_DEFAULT, p.mem) < 0)
                fault(ft, "/%s/%s: %s", b->group, e->name, h5_error(m));
        }
        if (sp >= 0) H5Sclose(sp);
        part_free(&p);
        H5Dclose(ds);
    }
    H5Gclose(g);
}

// All ranks learn whether every rank read the file cleanly; if not, why receives the first faulty rank's reason.
static int agree(const Fault *ft, char *why, size_t n) {
    int size = dist_size(), first = size - dist_allreduce_max_int(ft->why[0] ? size - dist_rank() : 0);
    if (first == size) return 1;
    char msg[WHY];
    memcpy(msg, ft->why, WHY);
    dist_bcast(msg, WHY, first);
    if (size > 1) snprintf(why, n, "rank %d: %s", first, msg);
    else snprintf(why, n, "%s", msg);
    return 0;
}

// Collective. Loads one checkpoint into the buffers and *s; 0 (with the reason) when it is not a valid checkpoint.
static int ckpt_load(const char *path, CkptState *s, const CkptTensors *t, char *why, size_t n) {
    Fault ft = {{0}};
    char m[WHY];
    memset(s, 0, sizeof *s);
    hid_t fapl = file_access();
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    if (f < 0) fault(&ft, "not a readable HDF5 file: %s", h5_error(m)); // before any other call clears the stack
    H5Pclose(fapl);
    if (f >= 0) {
        char format[64] = "", trainable[16] = "";
        attr_str(f, "format", format, sizeof format, &ft);
        int64_t version = attr_i64(f, "format_version", &ft);
        if (!ft.why[0] && strcmp(format, CKPT_FORMAT) != 0) fault(&ft, "not a drtune checkpoint ('%s')", format);
        if (!ft.why[0] && version != CKPT_FORMAT_VERSION)
            fault(&ft, "format version %lld; this drtune reads version %d", (long long)version, CKPT_FORMAT_VERSION);
        if (!ft.why[0] && H5Aexists(f, "complete") <= 0) fault(&ft, "incomplete: its write did not finish");
        if (!ft.why[0]) {
            s->iteration = (int)attr_i64(f, "iteration", &ft);
            s->applied = (int)attr_i64(f, "applied_steps", &ft);
            s->skipped = (int)attr_i64(f, "skipped_steps", &ft);
            s->seed = (int)attr_i64(f, "seed", &ft);
            s->batch = (int)attr_i64(f, "batch", &ft);
            s->ranks = (int)attr_i64(f, "ranks", &ft);
            s->prompt_cursor = attr_i64(f, "prompt_cursor", &ft);
            attr_read(f, "lr", H5T_NATIVE_DOUBLE, &s->lr, &ft);
            attr_str(f, "trainable", trainable, sizeof trainable, &ft);
        }
        if (!ft.why[0] && strcmp(trainable, t->trainable) != 0)
            dt_user_error("checkpoint '%s' holds %s training state, but train.trainable = %s", path, trainable,
                          t->trainable);
        if (!ft.why[0]) {
            s->config = read_config(f, &ft);
            s->rows = read_metrics(f, &s->n_rows, &ft);
            if (!ft.why[0] && s->n_rows != s->iteration)
                fault(&ft, "%d metrics rows for %d iterations", s->n_rows, s->iteration);
            for (int i = 0; i < t->n_buf; i++) read_group(f, path, t, &t->buf[i], &ft);
        }
        H5Fclose(f);
    }
    if (agree(&ft, why, n)) return 1;
    ckpt_state_free(s);
    return 0;
}

int ckpt_resume(const char *resume, const char *dir, CkptState *s, const CkptTensors *t, char *used, size_t n) {
    memset(s, 0, sizeof *s);
    if (!resume || !strcmp(resume, "none")) {
        prune(dir, -1, 0, "left by an earlier run; this run starts from the beginning");
        return 0;
    }
    char why[WHY + 32], path[2048];
    const char *search = dir;
    if (strcmp(resume, "auto") != 0) {
        struct stat st;
        if (stat(resume, &st) != 0) dt_user_error("--resume '%s': %s", resume, strerror(errno));
        if (!S_ISDIR(st.st_mode)) {
            if (!ckpt_load(resume, s, t, why, sizeof why))
                dt_user_error("--resume '%s' is not a valid checkpoint: %s", resume, why);
            snprintf(used, n, "%s", resume);
            prune(dir, s->iteration, 0, "newer than the checkpoint resumed from");
            return 1;
        }
        search = resume;
    }
    int *its, count = list_ckpts(search, &its);
    for (int i = 0; i < count; i++) {
        ckpt_path(path, sizeof path, search, its[i], "");
        if (ckpt_load(path, s, t, why, sizeof why)) {
            free(its);
            snprintf(used, n, "%s", path);
            prune(dir, s->iteration, 0, "newer than the checkpoint resumed from");
            return 1;
        }
        if (dist_rank() == 0) fprintf(stderr, "drtune: warning: skipping checkpoint '%s': %s\n", path, why);
    }
    free(its);
    if (count)
        dt_user_error("none of the %d checkpoint(s) in '%s' is valid (see the warnings above); pass --resume none to "
                      "start over",
                      count, search);
    if (dist_rank() == 0) printf("no checkpoint in %s: starting from the beginning\n", search);
    return 0;
}

#else // a build without MPI and HDF5 (DRTUNE_DIST=OFF)

double ckpt_save(const char *dir, const CkptState *s, const CkptTensors *t, int keep) {
    (void)dir, (void)s, (void)t, (void)keep;
    static int warned = 0;
    if (!warned) fprintf(stderr, "drtune: warning: this build has no HDF5 (DRTUNE_DIST=OFF): no checkpoints\n");
    warned = 1;
    return 0;
}

int ckpt_resume(const char *resume, const char *dir, CkptState *s, const CkptTensors *t, char *used, size_t n) {
    (void)dir, (void)t, (void)used, (void)n;
    memset(s, 0, sizeof *s);
    if (!resume || !strcmp(resume, "none")) return 0;
    dt_user_error("--resume %s: this build has no HDF5 checkpoints (configured with -DDRTUNE_DIST=OFF)", resume);
}

#endif
