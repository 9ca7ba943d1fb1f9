// dist.c: MPI start-up, the local rank, abort-on-fatal and the CPU collectives of dist.h. Without DRTUNE_DIST (a
// build without MPI) the same calls describe a job of one rank, so callers never need #ifdefs.
#include "dist.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../core/common.h"

#ifdef DRTUNE_DIST
#include <limits.h>
#include <mpi.h>
#endif

static struct {
    int init, rank, size, local_rank, local_size, abort_on_error;
} g = {0, 0, 1, 0, 1, 0};

void dist_set_abort_on_error(int on) { g.abort_on_error = on; }

void dist_device_finalize(void); // device_comm.cu: the NCCL communicator

int dist_rank(void) { return g.rank; }
int dist_size(void) { return g.size; }
int dist_local_rank(void) { return g.local_rank; }
int dist_local_size(void) { return g.local_size; }

void dist_shard_init(DistShard *s, int64_t n, int size, int rank) {
    CHECK(n >= 0 && size >= 1 && rank >= 0 && rank < size, "", "bad shard layout: n %lld, rank %d of %d",
          (long long)n, rank, size);
    int64_t per = (n + size - 1) / size;
    s->n = n, s->size = size, s->rank = rank;
    s->shard = (per + 63) / 64 * 64;
    s->padded = s->shard * size;
}

int64_t dist_shard_lo(const DistShard *s) {
    int64_t lo = (int64_t)s->rank * s->shard;
    return lo < s->n ? lo : s->n;
}

int64_t dist_shard_count(const DistShard *s) {
    int64_t lo = dist_shard_lo(s), hi = lo + s->shard;
    return (hi < s->n ? hi : s->n) - lo;
}

#ifdef DRTUNE_DIST

// Counts per MPI call: MPI takes int counts, so long buffers go in pieces.
#define MPI_PIECE ((int64_t)1 << 28)

static void mpi_fail(const char *file, int line, const char *call, int rc) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    dt_fatal(file, line, "an MPI peer may have died or the network failed; see the other ranks' messages",
             "%s failed: %s", call, msg);
}
#define MPI_OK(call)                                                                  \
    do {                                                                              \
        int rc_ = (call);                                                             \
        if (rc_ != MPI_SUCCESS) mpi_fail(__FILE__, __LINE__, #call, rc_);             \
    } while (0)

// How long a rank that hit a user error waits for the others to report one too before it aborts the job.
#define AGREE_SECONDS 10.0

static MPI_Comm g_errcomm = MPI_COMM_NULL; // a duplicate of MPI_COMM_WORLD used only when ending on an error

static uint64_t fnv1a(const char *s);

// Whether every rank is ending with a user error: 1 with the same line everywhere, 2 with different lines, 0 when
// some rank did not join within AGREE_SECONDS (it is busy elsewhere, most likely waiting for this one).
static int all_ranks_failed(const char *line) {
    MPI_Request req;
    if (MPI_Ibarrier(g_errcomm, &req) != MPI_SUCCESS) return 0;
    int done = 0;
    for (double t0 = dt_now(); !done && dt_now() - t0 < AGREE_SECONDS;) {
        if (MPI_Test(&req, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) return 0;
        if (!done) usleep(2000);
    }
    if (!done) return 0;
    unsigned long long h[2] = {fnv1a(line), ~fnv1a(line)}; // the smallest hash and the largest one, at once
    if (MPI_Allreduce(MPI_IN_PLACE, h, 2, MPI_UNSIGNED_LONG_LONG, MPI_MIN, g_errcomm) != MPI_SUCCESS) return 0;
    return h[0] == ~h[1] ? 1 : 2;
}

// Ends the process on a fatal or user error (common.h's exit hook). One rank: the line, then MPI ends quietly.
// Several ranks: a user error that every rank hit alike (a bad setting, a missing file) ends every rank cleanly
// with the same exit code and one line from rank 0; different lines end the same way with each rank's own line.
// An internal failure, or an error only some ranks hit, prints the line with the rank and aborts the job at once,
// so the other ranks do not wait forever in their next collective.
static void end_job(int code, const char *line) {
    int ini = 0, fin = 0;
    MPI_Initialized(&ini);
    MPI_Finalized(&fin);
    if (!ini || fin) return; // the caller prints and exits
    if (g.size == 1) {
        fprintf(stderr, "%s\n", line);
        fflush(stderr);
        MPI_Finalize();
        exit(code);
    }
    int agreed = code == 2 && g_errcomm != MPI_COMM_NULL && !g.abort_on_error ? all_ranks_failed(line) : 0;
    if (agreed == 0 || agreed == 2 || g.rank == 0)
        fprintf(stderr, "%s%s\n", agreed == 1 ? "" : dt_error_prefix(), line);
    fflush(stderr);
    if (!agreed) MPI_Abort(MPI_COMM_WORLD, code);
    MPI_Finalize();
    exit(code);
}

static uint64_t fnv1a(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int env_int(const char *name, int *out) {
    const char *v = getenv(name);
    if (!v || !*v) return 0;
    char *end;
    long x = strtol(v, &end, 10);
    if (*end || x < 0 || x > INT_MAX) return 0;
    *out = (int)x;
    return 1;
}

// Ranks on this host: group by a hash of the host name, then compare the names themselves (a hash collision
// between two hosts cannot merge them). The launcher's own local rank wins when it sets one (Open MPI, Slurm).
static void find_local_rank(void) {
    char name[MPI_MAX_PROCESSOR_NAME] = {0};
    int len = 0;
    MPI_OK(MPI_Get_processor_name(name, &len));
    MPI_Comm node;
    MPI_OK(MPI_Comm_split(MPI_COMM_WORLD, (int)(fnv1a(name) & 0x7fffffff), g.rank, &node));
    int nr, ns;
    MPI_OK(MPI_Comm_rank(node, &nr));
    MPI_OK(MPI_Comm_size(node, &ns));
    char *all = xcalloc((size_t)ns, MPI_MAX_PROCESSOR_NAME);
    MPI_OK(MPI_Allgather(name, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, all, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, node));
    g.local_rank = g.local_size = 0;
    for (int i = 0; i < ns; i++)
        if (!strncmp(all + (size_t)i * MPI_MAX_PROCESSOR_NAME, name, MPI_MAX_PROCESSOR_NAME)) {
            g.local_size++;
            if (i < nr) g.local_rank++;
        }
    free(all);
    MPI_OK(MPI_Comm_free(&node));
    int v;
    if (env_int("OMPI_COMM_WORLD_LOCAL_RANK", &v) || env_int("SLURM_LOCALID", &v)) g.local_rank = v;
}

void dist_init(int *argc, char ***argv) {
    if (g.init) return;
    int provided;
    MPI_OK(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided)); // OpenMP threads never call MPI
    g.init = 1;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_OK(MPI_Comm_dup(MPI_COMM_WORLD, &g_errcomm));
    dt_set_exit_hook(end_job);
    MPI_OK(MPI_Comm_rank(MPI_COMM_WORLD, &g.rank));
    MPI_OK(MPI_Comm_size(MPI_COMM_WORLD, &g.size));
    if (g.size > 1) {
        char prefix[32];
        snprintf(prefix, sizeof prefix, "[rank %d] ", g.rank);
        dt_set_error_prefix(prefix);
        find_local_rank();
    }
}

void dist_finalize(void) {
    if (!g.init) return;
    dist_device_finalize();
    dt_set_exit_hook(NULL);
    MPI_OK(MPI_Comm_free(&g_errcomm));
    MPI_OK(MPI_Finalize());
    g.init = 0;
}

void dist_barrier(void) {
    if (g.size > 1) MPI_OK(MPI_Barrier(MPI_COMM_WORLD));
}

void dist_bcast(void *buf, int bytes, int root) {
    if (g.size > 1) MPI_OK(MPI_Bcast(buf, bytes, MPI_BYTE, root, MPI_COMM_WORLD));
}

void dist_allreduce_sum_f32(float *buf, int64_t n) {
    DistQueue q = {0};
    dist_allreduce_start_f32(buf, n, &q);
    dist_queue_wait(&q);
    dist_queue_free(&q);
}

static MPI_Request *queue_push(DistQueue *q, int *counts) {
    if (q->n == q->cap) {
        q->cap = q->cap ? 2 * q->cap : 32;
        q->reqs = xrealloc(q->reqs, sizeof(MPI_Request) * (size_t)q->cap);
        q->counts = xrealloc(q->counts, sizeof(int *) * (size_t)q->cap);
    }
    q->counts[q->n] = counts;
    return (MPI_Request *)q->reqs + q->n++;
}

void dist_allreduce_start_f32(float *buf, int64_t n, DistQueue *q) {
    if (g.size == 1) return;
    for (int64_t i = 0; i < n; i += MPI_PIECE) {
        int64_t c = n - i < MPI_PIECE ? n - i : MPI_PIECE;
        MPI_OK(MPI_Iallreduce(MPI_IN_PLACE, buf + i, (int)c, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, queue_push(q, NULL)));
    }
}

void dist_reduce_scatter_start_f32(const float *buf, int64_t lo, int64_t hi, const DistShard *s, float *shard,
                                   DistQueue *q) {
    CHECK(0 <= lo && lo <= hi && hi <= s->padded && s->size == g.size && s->rank == g.rank, "",
          "reduce-scatter of [%lld, %lld) in a layout of %lld floats over %d ranks", (long long)lo, (long long)hi,
          (long long)s->padded, s->size);
    int64_t mine = (int64_t)g.rank * s->shard;
    if (g.size == 1) {
        if (hi > lo) memcpy(shard + lo, buf + lo, sizeof(float) * (size_t)(hi - lo));
        return;
    }
    for (int64_t a = lo; a < hi; a += MPI_PIECE) { // the ranks' pieces of [a, b), in rank order
        int64_t b = hi - a < MPI_PIECE ? hi : a + MPI_PIECE;
        int *counts = xmalloc(sizeof(int) * (size_t)g.size);
        for (int r = 0; r < g.size; r++) {
            int64_t x = a > (int64_t)r * s->shard ? a : (int64_t)r * s->shard;
            int64_t y = b < (int64_t)(r + 1) * s->shard ? b : (int64_t)(r + 1) * s->shard;
            counts[r] = y > x ? (int)(y - x) : 0;
        }
        float *dst = shard + (counts[g.rank] > 0 ? (a > mine ? a : mine) - mine : 0);
        MPI_OK(MPI_Ireduce_scatter(buf + a, dst, counts, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, queue_push(q, counts)));
    }
}

void dist_queue_test(DistQueue *q) {
    int done = 0;
    if (q->n) MPI_OK(MPI_Testall(q->n, q->reqs, &done, MPI_STATUSES_IGNORE));
}

void dist_queue_wait(DistQueue *q) {
    if (q->n) MPI_OK(MPI_Waitall(q->n, q->reqs, MPI_STATUSES_IGNORE));
    for (int i = 0; i < q->n; i++) free(q->counts[i]);
    q->n = 0;
}

void dist_queue_free(DistQueue *q) {
    CHECK(q->n == 0, "", "%d reductions still queued", q->n);
    free(q->reqs);
    free(q->counts);
    memset(q, 0, sizeof *q);
}

void dist_allreduce_sum_f64(double *buf, int n) {
    if (g.size > 1) MPI_OK(MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
}

void dist_allreduce_max_f64(double *buf, int n) {
    if (g.size > 1) MPI_OK(MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD));
}

int dist_allreduce_max_int(int x) {
    if (g.size > 1) MPI_OK(MPI_Allreduce(MPI_IN_PLACE, &x, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
    return x;
}

void dist_allgather_f64(const double *mine, int n, double *all) {
    if (g.size == 1) {
        memcpy(all, mine, sizeof(double) * (size_t)n);
        return;
    }
    MPI_OK(MPI_Allgather(mine, n, MPI_DOUBLE, all, n, MPI_DOUBLE, MPI_COMM_WORLD));
}

void dist_allgather_f32(float *buf, const DistShard *s) {
    if (g.size == 1) return;
    // Whole blocks of 64 floats (shards are multiples of 64, so counts and displacements in blocks fit an int
    // for any model), then the one partial block at the end of the buffer from the rank that holds it.
    MPI_Datatype block;
    MPI_OK(MPI_Type_contiguous(64, MPI_FLOAT, &block));
    MPI_OK(MPI_Type_commit(&block));
    int *counts = xmalloc(sizeof(int) * (size_t)g.size), *displs = xmalloc(sizeof(int) * (size_t)g.size);
    int64_t tail_lo = s->n / 64 * 64;
    CHECK(s->padded / 64 <= INT_MAX, "", "buffer of %lld floats is too long for MPI", (long long)s->padded);
    for (int r = 0; r < g.size; r++) {
        int64_t lo = (int64_t)r * s->shard, hi = lo + s->shard;
        if (hi > tail_lo) hi = tail_lo;
        counts[r] = hi > lo ? (int)((hi - lo) / 64) : 0;
        displs[r] = (int)(lo / 64);
    }
    MPI_OK(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, counts, displs, block, MPI_COMM_WORLD));
    if (s->n > tail_lo)
        MPI_OK(MPI_Bcast(buf + tail_lo, (int)(s->n - tail_lo), MPI_FLOAT, (int)(tail_lo / s->shard), MPI_COMM_WORLD));
    MPI_OK(MPI_Type_free(&block));
    free(counts);
    free(displs);
}

#else // a build without MPI: one rank

void dist_init(int *argc, char ***argv) {
    (void)argc, (void)argv;
    if (g.init) return;
    g.init = 1;
}

void dist_finalize(void) {
    if (!g.init) return;
    dist_device_finalize();
    g.init = 0;
}

void dist_barrier(void) {}
void dist_bcast(void *buf, int bytes, int root) { (void)buf, (void)bytes, (void)root; }
void dist_allreduce_sum_f32(float *buf, int64_t n) { (void)buf, (void)n; }
void dist_allreduce_start_f32(float *buf, int64_t n, DistQueue *q) { (void)buf, (void)n, (void)q; }
void dist_reduce_scatter_start_f32(const float *buf, int64_t lo, int64_t hi, const DistShard *s, float *shard,
                                   DistQueue *q) {
    CHECK(0 <= lo && lo <= hi && hi <= s->padded && s->size == 1, "", "reduce-scatter of [%lld, %lld) over %d ranks",
          (long long)lo, (long long)hi, s->size);
    (void)q;
    if (hi > lo) memcpy(shard + lo, buf + lo, sizeof(float) * (size_t)(hi - lo));
}
void dist_queue_test(DistQueue *q) { (void)q; }
void dist_queue_wait(DistQueue *q) { (void)q; }
void dist_queue_free(DistQueue *q) { (void)q; }
void dist_allreduce_sum_f64(double *buf, int n) { (void)buf, (void)n; }
void dist_allreduce_max_f64(double *buf, int n) { (void)buf, (void)n; }
int dist_allreduce_max_int(int x) { return x; }
void dist_allgather_f64(const double *mine, int n, double *all) { memcpy(all, mine, sizeof(double) * (size_t)n); }
void dist_allgather_f32(float *buf, const DistShard *s) { (void)buf, (void)s; }

#endif
