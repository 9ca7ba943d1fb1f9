// cudaemu_nccl_buckets.c: the GPU path of the overlapped gradient reduction (src/train/grad_sync.h: NCCL on the
// communication stream) against the MPI path that the CPU trains with, on 2 ranks. Each rank runs a real UNet backward
// on the GPU (the SD 1.5-like fixture, its own upstream gradient) with the GPU GradSync attached, in both modes
// (all-reduce, as for LoRA, and reduce-scatter into this rank's shard, as for full fine-tuning) and with small buckets
// and with one reduction after the backward. The gradient each reduction started from is captured as it is announced
// final (before the bucket's collective can change it in place), then fed to the CPU GradSync, which reduces it with
// MPI in the same part announcements. Required: the same reductions in the same order ([lo, hi) by start), started
// during the backward for most of the gradient with small buckets, and the same sums bit for bit. With 2 ranks every
// element's sum is one fp32 addition a + b, which is commutative, so any correct reduction gives the same bits; the
// sums are also checked against a blocking MPI all-reduce of the captured gradient, so a piece both paths skipped
// would show. Skipped (77) without NCCL (emulated over MPI in CI) or a GPU; reruns itself under mpirun -np 2.
#include <sys/wait.h>
#include <unistd.h>

#include "../src/dist/dist.h"
#include "../src/train/grad_sync.h"
#include "cudaemu_unet.h"

#define FIXTURE "tests/fixtures/models/unet_sd15"

typedef struct {
    GradSync *sync;
    float *local;   // host [end]: the gradient as each reduction found it
    int next, order_ok;
} Watch;

// Part p is final: [ready_lo[p], sent) is final and not yet handed to a reduction; capture it, then let the GPU
// GradSync start what it starts.
static void watch_ready(void *ctx, int part) {
    Watch *w = ctx;
    w->order_ok &= part == w->next;
    w->next = part + 1;
    GradSync *s = w->sync;
    int64_t lo = s->ready_lo[part];
    if (lo < s->sent)
        device_copy(w->local + lo, DEVICE_CPU, s->g + lo, DEVICE_CUDA, sizeof(float) * (size_t)(s->sent - lo));
    grad_sync_ready(s, part);
}

static void plan_grads(Arena *a, UNet *g, const UNetConfig *cfg, Device d, int64_t padded) {
    arena_init(a, "grads", d);
    unet_plan_params(a, g, cfg);
    int64_t planned = (int64_t)(a->size / sizeof(float));
    if (padded > planned) arena_add(a, NULL, "shard-padding", DTYPE_F32, 1, (int64_t[]){padded - planned});
    arena_alloc(a);
}

static void check_mode(CuUNetRun *r, const UNetConfig *cfg, int sharded, double bucket_mb) {
    const int rank = dist_rank();
    Arena gpu, cpu;
    UNet gg, cg;
    DistShard shard;
    plan_grads(&gpu, &gg, cfg, DEVICE_CUDA, 0);
    int64_t n = (int64_t)(gpu.size / sizeof(float));
    arena_free(&gpu), unet_free(&gg);
    dist_shard_init(&shard, n, dist_size(), rank);
    int64_t end = sharded ? shard.padded : n;
    plan_grads(&gpu, &gg, cfg, DEVICE_CUDA, end);
    plan_grads(&cpu, &cg, cfg, DEVICE_CPU, end);
    const char *what = sharded ? "reduce-scatter" : "all-reduce";
    printf("-- %s, %s\n", what, bucket_mb > 0 ? "buckets of 0.01 MiB" : "one reduction after the backward");

    // the GPU: backward with the NCCL reductions started in buckets
    GradSync gs, cs;
    grad_sync_init(&gs, &gpu, cfg, n, end, sharded ? &shard : NULL, NULL, bucket_mb);
    Watch w = {&gs, xcalloc((size_t)end, sizeof(float)), 0, 1};
    device_zero(DEVICE_CUDA, gpu.base, sizeof(float) * (size_t)end);
    grad_sync_begin(&gs);
    r->acts->ready = watch_ready, r->acts->ready_ctx = &w;
    unet_backward(cu_unet_net(r), &gg, r->acts, &r->dout, NULL, NULL);
    r->acts->ready = NULL;
    tu_check(w.order_ok && w.next == gs.n_parts, "%s: the backward's %d parts announced once each, in order", what,
             gs.n_parts);
    if (gs.sent > 0) device_copy(w.local, DEVICE_CPU, gs.g, DEVICE_CUDA, sizeof(float) * (size_t)gs.sent);
    float *dsum = grad_sync_finish(&gs);
    int64_t count = sharded ? shard.shard : end; // what this rank's sum holds
    float *gsum = xmalloc(sizeof(float) * (size_t)count);
    device_copy(gsum, DEVICE_CPU, dsum, DEVICE_CUDA, sizeof(float) * (size_t)count);
    double early = grad_sync_overlap(&gs);

    // the CPU: the same gradient, the same announcements, reduced with MPI
    memcpy(cpu.base, w.local, sizeof(float) * (size_t)end);
    float *out = sharded ? xaligned_alloc(sizeof(float) * (size_t)shard.shard) : NULL;
    grad_sync_init(&cs, &cpu, cfg, n, end, sharded ? &shard : NULL, out, bucket_mb);
    grad_sync_begin(&cs);
    for (int p = 0; p < cs.n_parts; p++) grad_sync_ready(&cs, p);
    float *csum = grad_sync_finish(&cs);

    int same = gs.n_started == cs.n_started;
    for (int i = 0; same && i < gs.n_started; i++) same &= gs.started[i] == cs.started[i];
    tu_check(same && gs.n_started >= 1, "%s: the same %d reductions in the same order on the GPU (NCCL) and the CPU "
             "(MPI)", what, gs.n_started);
    tu_check(!memcmp(gsum, csum, sizeof(float) * (size_t)count), "%s: the GPU's sums equal the MPI path's bit for bit "
             "(%lld floats)", what, (long long)count);
    // reference: one blocking MPI all-reduce of the captured gradient (this rank's shard of it when sharded)
    dist_allreduce_sum_f32(w.local, end);
    const float *ref = w.local + (sharded ? (int64_t)rank * shard.shard : 0);
    int64_t valid = sharded ? dist_shard_count(&shard) : n; // the padding past n is never summed into weights
    tu_check(!memcmp(gsum, ref, sizeof(float) * (size_t)valid), "%s: the sums equal a blocking all-reduce of the "
             "same gradient bit for bit", what);
    if (bucket_mb > 0)
        tu_check(early > 0.5 && gs.n_started > 2, "%s: %.0f%% of the gradient started during the backward, in %d "
                 "reductions", what, 100 * early, gs.n_started);
    else
        tu_check(early == 0 && gs.n_started == 1, "%s: bucket 0: one reduction, after the backward", what);

    grad_sync_free(&gs), grad_sync_free(&cs);
    free(w.local), free(gsum), free(out);
    arena_free(&gpu), arena_free(&cpu), unet_free(&gg), unet_free(&cg);
}

int main(int argc, char **argv) {
    int rc = cu_rerun_under_mpirun("OMP_NUM_THREADS=1");
    if (rc >= 0) return rc;
    dist_init(&argc, &argv);
    if (dist_size() != 2 || !dist_device_ready()) {
        printf("skipped: needs 2 ranks with a GPU each and NCCL (%d rank%s)\n", dist_size(), dist_size() > 1 ? "s" : "");
        dist_finalize();
        return 77;
    }
    UNetConfig cfg;
    unet_load_config(&cfg, FIXTURE);
    const int64_t B = 2, H = 8, W = 8, T = 5;
    Tensor in[6] = {0};
    int64_t xs[4] = {B, cfg.in_channels, H, W}, cs[3] = {B, T, cfg.cross_dim};
    in[0] = cu_alloc(DEVICE_CPU, DTYPE_F32, 4, xs);
    in[1] = cu_alloc(DEVICE_CPU, DTYPE_F32, 1, (int64_t[]){B});
    in[2] = cu_alloc(DEVICE_CPU, DTYPE_F32, 3, cs);
    in[5] = cu_alloc(DEVICE_CPU, DTYPE_F32, 4, xs);
    cu_fill(&in[0], 1, 1.0f, 0), cu_fill(&in[2], 2, 1.0f, 0);
    cu_fill(&in[5], 10 + (uint64_t)dist_rank(), 1.0f, 0); // each rank's own upstream gradient
    ((float *)in[1].data)[0] = 901, ((float *)in[1].data)[1] = 41;
    CHECK(!cfg.text_time, "", "the fixture is SD 1.5-like");
    CuUNetRun r;
    cu_unet_setup(&r, DEVICE_CUDA, DTYPE_F32, FIXTURE, &cfg, in);
    cu_unet_forward(&r, 0);
    for (int sharded = 0; sharded < 2; sharded++) {
        check_mode(&r, &cfg, sharded, 0.01);
        check_mode(&r, &cfg, sharded, 0.0);
    }
    cu_unet_free(&r);
    for (int i = 0; i < 6; i++)
        if (in[i].data) cu_free(&in[i]);
    rc = tu_report();
    int bad = dist_allreduce_max_int(rc != 0);
    dist_finalize();
    return bad ? 1 : 0;
}
