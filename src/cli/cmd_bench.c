// cmd_bench.c: `drtune bench ops`, the CPU throughput of the ops that dominate a UNet step (conv2d, linear,
// attention), forward and backward, each next to the OpenBLAS sgemm rate measured in the same run at the GEMM shapes
// the op reduces to, so the op/sgemm ratio says how much of this machine's GEMM speed the op reaches.
//
// FLOP counts (2 M N K per matrix product; bias, softmax, im2col and reductions are not counted):
//   conv2d     fwd 2 B OC OH OW IC KH KW;  bwd twice that (input and weight gradients)
//   linear     fwd 2 N IC OC;              bwd twice that
//   attention  fwd 4 B H Tq Tk D (q k^T, P v);  bwd 10 B H Tq Tk D (recomputed q k^T, dout v^T, P^T dout, dS k, dS^T q)
// The sgemm reference runs the same products as plain GEMMs on all threads: per image for conv2d (im2col layout),
// whole for linear, per head with the full [Tq, Tk] score matrix for attention.
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "core/rng.h"
#include "ops/ops.h"

typedef enum { BENCH_CONV, BENCH_LINEAR, BENCH_ATTENTION } BenchKind;

typedef struct {
    BenchKind kind;
    const char *name;
    // conv (stride 1, pad kernel / 2): B, IC, H, W, OC, kernel; linear: N, IC, OC; attention: B, H, Tq, Tk, D
    int64_t a[6];
} BenchCase;

static const BenchCase CASES[] = {
    {BENCH_CONV, "conv2d 3x3", {2, 320, 32, 32, 320, 3}},
    {BENCH_CONV, "conv2d 3x3", {2, 640, 16, 16, 640, 3}},
    {BENCH_CONV, "conv2d 1x1", {2, 320, 64, 64, 320, 1}},
    {BENCH_LINEAR, "linear", {2 * 1024, 320, 1280}},
    {BENCH_LINEAR, "linear", {2 * 77, 768, 320}},
    {BENCH_ATTENTION, "attention self", {2, 8, 1024, 1024, 40}},
    {BENCH_ATTENTION, "attention self", {2, 8, 4096, 4096, 40}},
    {BENCH_ATTENTION, "attention cross", {2, 8, 4096, 77, 40}},
};

// One plain GEMM C[M, N] = op(A) op(B) of the reference, repeated `count` times per measurement.
typedef struct {
    int ta, tb, M, N, K, count;
} Gemm;

typedef struct {
    const BenchCase *c;
    Tensor in, w, b, out, din, dw, db, dout; // conv and linear
    Tensor q, k, v, lse, dq, dk, dv;         // attention (out, dout shared)
    double flops[2];                         // fwd, bwd
    Gemm ref[2][5];
    int n_ref[2];
    float *ra, *rb, *rc; // reference operands, sized for the largest reference GEMM
} Bench;

static Tensor bench_tensor(int ndim, const int64_t *shape, uint64_t stream) {
    Tensor t = tensor_make(NULL, DTYPE_F32, DEVICE_CPU, ndim, shape);
    t.data = xaligned_alloc(tensor_bytes(&t));
    rng_uniform_fill(t.data, tensor_numel(&t), 7, RNG_STREAM(RNG_PURPOSE_TEST, stream, 0), 0);
    return t;
}
#define BT(stream, ...) \
    bench_tensor((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[]){__VA_ARGS__}, (stream))

static void add_ref(Bench *b, int pass, int ta, int tb, int64_t M, int64_t N, int64_t K, int64_t count) {
    b->ref[pass][b->n_ref[pass]++] = (Gemm){ta, tb, (int)M, (int)N, (int)K, (int)count};
}

static void ref_alloc(Bench *b) {
    int64_t na = 0, nb = 0, nc = 0;
    for (int p = 0; p < 2; p++)
        for (int j = 0; j < b->n_ref[p]; j++) {
            const Gemm *g = &b->ref[p][j];
            int64_t ma = (int64_t)g->M * g->K, mb = (int64_t)g->K * g->N, mc = (int64_t)g->M * g->N;
            na = ma > na ? ma : na, nb = mb > nb ? mb : nb, nc = mc > nc ? mc : nc;
        }
    b->ra = BT(10, na).data, b->rb = BT(11, nb).data, b->rc = BT(12, nc).data;
}

static void bench_setup(Bench *b, const BenchCase *c) {
    memset(b, 0, sizeof *b);
    b->c = c;
    const int64_t *a = c->a;
    if (c->kind == BENCH_CONV) {
        int64_t B = a[0], IC = a[1], H = a[2], W = a[3], OC = a[4], k = a[5], S = H * W, K = IC * k * k;
        b->in = BT(1, B, IC, H, W), b->din = BT(2, B, IC, H, W);
        b->w = BT(3, OC, IC, k, k), b->dw = BT(4, OC, IC, k, k);
        b->b = BT(5, OC), b->db = BT(6, OC);
        b->out = BT(7, B, OC, H, W), b->dout = BT(8, B, OC, H, W);
        b->flops[0] = 2.0 * B * OC * S * K;
        b->flops[1] = 2.0 * b->flops[0];
        add_ref(b, 0, 0, 0, OC, S, K, B);  // out = w cols
        add_ref(b, 1, 0, 1, OC, K, S, B);  // dw += dout cols^T
        add_ref(b, 1, 1, 0, K, S, OC, B);  // dcols = w^T dout
    } else if (c->kind == BENCH_LINEAR) {
        int64_t N = a[0], IC = a[1], OC = a[2];
        b->in = BT(1, N, IC), b->din = BT(2, N, IC);
        b->w = BT(3, OC, IC), b->dw = BT(4, OC, IC);
        b->b = BT(5, OC), b->db = BT(6, OC);
        b->out = BT(7, N, OC), b->dout = BT(8, N, OC);
        b->flops[0] = 2.0 * N * IC * OC;
        b->flops[1] = 2.0 * b->flops[0];
        add_ref(b, 0, 0, 1, N, OC, IC, 1);  // out = in w^T
        add_ref(b, 1, 0, 0, N, IC, OC, 1);  // din = dout w
        add_ref(b, 1, 1, 0, OC, IC, N, 1);  // dw += dout^T in
    } else if (c->kind == BENCH_ATTENTION) {
        int64_t B = a[0], H = a[1], Tq = a[2], Tk = a[3], D = a[4];
        b->q = BT(1, B, Tq, H * D), b->dq = BT(2, B, Tq, H * D);
        b->k = BT(3, B, Tk, H * D), b->dk = BT(4, B, Tk, H * D);
        b->v = BT(5, B, Tk, H * D), b->dv = BT(6, B, Tk, H * D);
        b->out = BT(7, B, Tq, H * D), b->dout = BT(8, B, Tq, H * D);
        b->lse = BT(9, B, H, Tq);
        b->flops[0] = 4.0 * B * H * Tq * Tk * D;
        b->flops[1] = 10.0 * B * H * Tq * Tk * D;
        add_ref(b, 0, 0, 1, Tq, Tk, D, 1);  // S = q k^T
        add_ref(b, 0, 0, 0, Tq, D, Tk, 1);  // out = P v
        add_ref(b, 1, 0, 1, Tq, Tk, D, 2);  // S = q k^T, dP = dout v^T
        add_ref(b, 1, 1, 0, Tk, D, Tq, 2);  // dv = P^T dout, dk = dS^T q
        add_ref(b, 1, 0, 0, Tq, D, Tk, 1);  // dq = dS k
    }
    ref_alloc(b);
}

static void bench_free(Bench *b) {
    Tensor *all[] = {&b->in, &b->w, &b->b, &b->out, &b->din, &b->dw, &b->db, &b->dout,
                     &b->q, &b->k, &b->v, &b->lse, &b->dq, &b->dk, &b->dv};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]->data);
    free(b->ra), free(b->rb), free(b->rc);
}

static void bench_run(Bench *b, int pass) {
    const BenchCase *c = b->c;
    if (c->kind == BENCH_CONV) {
        int pad = (int)c->a[5] / 2;
        if (pass == 0) conv2d_forward(&b->out, &b->in, &b->w, &b->b, 1, pad);
        else conv2d_backward(&b->din, &b->dw, &b->db, &b->dout, &b->in, &b->w, 1, pad);
    } else if (c->kind == BENCH_LINEAR) {
        if (pass == 0) linear_forward(&b->out, &b->in, &b->w, &b->b);
        else linear_backward(&b->din, &b->dw, &b->db, &b->dout, &b->in, &b->w);
    } else {
        int heads = (int)c->a[1];
        if (pass == 0) attention_forward(&b->out, &b->lse, &b->q, &b->k, &b->v, heads, 0);
        else attention_backward(&b->dq, &b->dk, &b->dv, &b->dout, &b->out, &b->lse, &b->q, &b->k, &b->v, heads, 0);
    }
}

// The reference GEMMs of one pass, on packed operands.
static void ref_run(Bench *b, int pass) {
    for (int i = 0; i < b->n_ref[pass]; i++) {
        const Gemm *g = &b->ref[pass][i];
        for (int r = 0; r < g->count; r++)
            cblas_sgemm(CblasRowMajor, g->ta ? CblasTrans : CblasNoTrans, g->tb ? CblasTrans : CblasNoTrans, g->M,
                        g->N, g->K, 1.0f, b->ra, g->ta ? g->M : g->K, b->rb, g->tb ? g->K : g->N, 0.0f, b->rc, g->N);
    }
}

static double ref_flops(const Gemm *g, int n) {
    double f = 0.0;
    for (int i = 0; i < n; i++) f += 2.0 * g[i].M * g[i].N * g[i].K * g[i].count;
    return f;
}

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

// Seconds per call of fn: one warm-up call (workspace growth, first touch, thread start-up), then the median of
// 5 samples (3 when a call takes over 0.3 s), each timing enough back-to-back calls to last about 10 ms.
static double time_per_call(void (*fn)(Bench *, int), Bench *b, int pass) {
    double t0 = dt_now();
    fn(b, pass);
    double warm = dt_now() - t0, t[5];
    int reps = warm > 0.3 ? 3 : 5, inner = warm < 0.01 ? (int)(0.01 / (warm + 1e-6)) + 1 : 1;
    for (int i = 0; i < reps; i++) {
        t0 = dt_now();
        for (int j = 0; j < inner; j++) fn(b, pass);
        t[i] = (dt_now() - t0) / inner;
    }
    qsort(t, (size_t)reps, sizeof t[0], cmp_double);
    return t[reps / 2];
}

static void shape_str(const BenchCase *c, char *s, size_t n) {
    const int64_t *a = c->a;
    if (c->kind == BENCH_CONV)
        snprintf(s, n, "[%lld,%lld,%lld,%lld]->%lld", (long long)a[0], (long long)a[1], (long long)a[2],
                 (long long)a[3], (long long)a[4]);
    else if (c->kind == BENCH_LINEAR)
        snprintf(s, n, "[%lld,%lld]->%lld", (long long)a[0], (long long)a[1], (long long)a[2]);
    else
        snprintf(s, n, "B%lld H%lld Tq%lld Tk%lld D%lld", (long long)a[0], (long long)a[1], (long long)a[2],
                 (long long)a[3], (long long)a[4]);
}

// "2x(320,1024,2880) + (2880,1024,320)": the reference GEMMs as (M,N,K), with their repeat counts.
static void ref_str(const Gemm *g, int n, char *s, size_t size) {
    size_t len = 0;
    s[0] = 0;
    for (int i = 0; i < n && len < size; i++) {
        char cnt[16] = "";
        if (g[i].count > 1) snprintf(cnt, sizeof cnt, "%dx", g[i].count);
        len += (size_t)snprintf(s + len, size - len, "%s%s(%d,%d,%d)", i ? " + " : "", cnt, g[i].M, g[i].N, g[i].K);
    }
}

int cmd_bench_cuda(int argc, char **argv);

int cmd_bench(int argc, char **argv) {
    USER_CHECK(argc >= 2, "drtune bench: name the benchmark: drtune bench ops | memory | overlap | cuda");
    if (!strcmp(argv[1], "cuda")) return cmd_bench_cuda(argc - 1, argv + 1);
    USER_CHECK(!strcmp(argv[1], "ops"), "drtune bench: unknown benchmark '%s' (known: ops, memory, overlap, cuda)",
               argv[1]);
    USER_CHECK(argc == 2, "drtune bench ops: unexpected argument '%s' (it takes none)", argv[2]);
    printf("drtune bench ops: %d OpenMP threads, OpenBLAS %s (%d threads)\n", omp_get_max_threads(),
           openblas_get_config(), openblas_get_num_threads());
    Bench peak; // the machine's GEMM speed at a large square shape, as a yardstick for the per-shape rates
    memset(&peak, 0, sizeof peak);
    add_ref(&peak, 0, 0, 0, 1024, 1024, 1024, 1);
    ref_alloc(&peak);
    double t_peak = time_per_call(ref_run, &peak, 0);
    printf("sgemm (1024,1024,1024): %.1f GFLOP/s\n", ref_flops(peak.ref[0], 1) / t_peak * 1e-9);
    bench_free(&peak);
    printf("time per call: one warm-up, then the median of 3-5 samples of back-to-back calls; GFLOP/s counts\n"
           "2MNK per product (see cmd_bench.c); sgemm: the same products as plain OpenBLAS GEMMs on all threads\n"
           "(per image for conv2d, per head for attention)\n\n");
    printf("%-16s %-26s %-4s %9s %9s %13s %8s  %s\n", "op", "shape", "pass", "ms", "GFLOP/s", "sgemm GFLOP/s",
           "op/sgemm", "sgemm products (M,N,K)");
    double t_start = dt_now();
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        Bench b;
        bench_setup(&b, &CASES[i]);
        char shape[64], refs[128];
        shape_str(&CASES[i], shape, sizeof shape);
        bench_run(&b, 0); // the backward reads the forward's outputs (attention: out and lse)
        for (int p = 0; p < 2; p++) {
            double t_op = time_per_call(bench_run, &b, p), t_ref = time_per_call(ref_run, &b, p);
            double op_rate = b.flops[p] / t_op * 1e-9, ref_rate = ref_flops(b.ref[p], b.n_ref[p]) / t_ref * 1e-9;
            ref_str(b.ref[p], b.n_ref[p], refs, sizeof refs);
            printf("%-16s %-26s %-4s %9.2f %9.1f %13.1f %8.2f  %s\n", p ? "" : CASES[i].name, p ? "" : shape,
                   p ? "bwd" : "fwd", t_op * 1e3, op_rate, ref_rate, op_rate / ref_rate, refs);
            fflush(stdout);
        }
        bench_free(&b);
    }
    printf("\ntotal %.1f s\n", dt_now() - t_start);
    return 0;
}
