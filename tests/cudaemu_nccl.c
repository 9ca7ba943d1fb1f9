// cudaemu_nccl.c: the NCCL device collectives of src/dist/dist.h on GPU buffers: all-reduce (blocking, and started
// while a kernel is queued on the compute stream, then waited for), reduce-scatter into the padded shard layout and
// all-gather back; the started forms the overlapped training uses (a range of the padded layout reduced onto its
// shards' owners, the all-gather in place on an unpadded buffer). Sums are exact (integer-valued floats), so the check is equality with size x the input. On the
// emulated GPU (label cudaemu) it starts itself under mpirun with 2 ranks (NCCL over MPI); as cuda_nccl on a real
// GPU it runs on one rank, or under mpirun with one GPU per rank. Skipped (exit 77) without NCCL or a GPU.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../src/core/common.h"
#include "../src/core/device.h"
#include "../src/dist/dist.h"
#include "../src/ops/cuda/cuda_api.h"
#include "cudaemu_util.h"

static int checks, failures;

static void expect(int ok, const char *what) {
    checks++;
    failures += !ok;
    printf("%s[rank %d] %s\n", ok ? "ok   " : "FAIL ", dist_rank(), what);
}

// Copies n floats of a device buffer to the host and compares them with want[i] = scale * (i % 1000).
static int equals(const float *dev, int64_t n, int64_t first, float scale) {
    float *h = xmalloc(sizeof(float) * (size_t)n);
    device_copy(h, DEVICE_CPU, dev, DEVICE_CUDA, sizeof(float) * (size_t)n);
    int ok = 1;
    for (int64_t i = 0; i < n; i++) ok &= h[i] == scale * (float)((first + i) % 1000);
    free(h);
    return ok;
}

static void run(void) {
    const int R = dist_size();
    const int64_t n = 4 * 1000 * 1000 + 17;
    DistShard s;
    dist_shard_init(&s, n, R, dist_rank());
    float *host = xcalloc((size_t)s.padded, sizeof(float));
    for (int64_t i = 0; i < n; i++) host[i] = (float)(i % 1000);
    float *dev = device_alloc(DEVICE_CUDA, sizeof(float) * (size_t)s.padded);
    float *busy = device_alloc(DEVICE_CUDA, sizeof(float) * (size_t)n);

    device_copy(dev, DEVICE_CUDA, host, DEVICE_CPU, sizeof(float) * (size_t)n);
    dist_device_allreduce_sum_f32(dev, n);
    expect(equals(dev, n, 0, (float)R), "all-reduce of 4M floats");

    device_copy(dev, DEVICE_CUDA, host, DEVICE_CPU, sizeof(float) * (size_t)n);
    DistRequest req;
    dist_device_allreduce_start(dev, n, &req); // queued behind the copy; runs beside the kernel below
    fill_cuda(busy, 1.0f, n, DTYPE_F32);
    dist_device_wait(&req, 1);
    expect(equals(dev, n, 0, (float)R), "all-reduce started, overlapped with a kernel, waited for");

    device_copy(dev, DEVICE_CUDA, host, DEVICE_CPU, sizeof(float) * (size_t)s.padded);
    float *mine = dist_device_reduce_scatter_sum_f32(dev, &s);
    expect(mine == dev + (int64_t)dist_rank() * s.shard &&
               equals(mine, dist_shard_count(&s), dist_shard_lo(&s), (float)R),
           "reduce-scatter: this rank's shard of the sum in place");
    device_zero(DEVICE_CUDA, dev, sizeof(float) * (size_t)s.padded);
    device_copy(dev + dist_shard_lo(&s), DEVICE_CUDA, host + dist_shard_lo(&s), DEVICE_CPU,
                sizeof(float) * (size_t)dist_shard_count(&s));
    dist_device_allgather_f32(dev, &s);
    expect(equals(dev, n, 0, 1.0f), "all-gather of the shards");

    // started forms: the reduction of [lo, hi) crossing the shard boundary, each rank's part summed at its place
    // (the rest of the range is not read afterwards); the all-gather in place on a buffer of exactly n floats
    // (no padding: the last rank's shard is short), overlapped with a kernel
    int64_t lo = s.shard - 1000, hi = s.shard + 777, mlo = lo > dist_shard_lo(&s) ? lo : dist_shard_lo(&s);
    int64_t mhi = hi < dist_shard_lo(&s) + dist_shard_count(&s) ? hi : dist_shard_lo(&s) + dist_shard_count(&s);
    device_copy(dev, DEVICE_CUDA, host, DEVICE_CPU, sizeof(float) * (size_t)s.padded);
    dist_device_reduce_scatter_start(dev, lo, hi, &s, &req);
    fill_cuda(busy, 1.0f, n, DTYPE_F32);
    dist_device_wait(&req, 1);
    dist_device_release(&req);
    expect(mhi > mlo && equals(dev + mlo, mhi - mlo, mlo, (float)R) && equals(dev, lo, 0, 1.0f),
           "reduce-scatter of a range across the shard boundary: this rank's part summed, nothing else touched");
    float *exact = device_alloc(DEVICE_CUDA, sizeof(float) * (size_t)(n + 64));
    device_copy(exact + n, DEVICE_CUDA, host, DEVICE_CPU, sizeof(float) * 64); // a guard past the end
    device_copy(exact + dist_shard_lo(&s), DEVICE_CUDA, host + dist_shard_lo(&s), DEVICE_CPU,
                sizeof(float) * (size_t)dist_shard_count(&s));
    dist_device_allgather_start(exact, &s, &req);
    fill_cuda(busy, 2.0f, n, DTYPE_F32);
    dist_device_wait(&req, 0);
    expect(equals(exact, n, 0, 1.0f) && equals(exact + n, 64, 0, 1.0f) && dist_device_seconds(&req) >= 0,
           "all-gather started on n floats without padding, overlapped with a kernel: every shard, nothing past n");
    dist_device_release(&req);
    device_free(DEVICE_CUDA, exact);
    device_free(DEVICE_CUDA, dev);
    device_free(DEVICE_CUDA, busy);
    free(host);
}

int main(int argc, char **argv) {
    int rc = cu_rerun_under_mpirun("");
    if (rc >= 0) return rc;
    dist_init(&argc, &argv);
    if (!dist_device_ready()) {
        printf("skipped: no GPU visible\n");
        dist_finalize();
        return 77;
    }
    run();
    printf("%d of %d checks passed\n", checks - failures, checks);
    int bad = dist_allreduce_max_int(failures);
    dist_finalize();
    return bad ? 1 : 0;
}
