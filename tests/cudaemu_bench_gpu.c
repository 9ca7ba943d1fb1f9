// cudaemu_bench_gpu.c: `drtune bench gpu` on the GPU (emulated here, real as cuda_bench_gpu) at tiny-random's small
// shapes, in bf16 and fp32: the same FLOP count as on the CPU (bench_gpu_check.h) and sane times and rates; then
// the DRTune iteration part at the smallest shapes (an emulated iteration is slow) in bf16 with LoRA: positive
// times and peaks, and the K = N peak of device memory within 2% of the K = 1 peak.
#include "bench_gpu_check.h"
#include "cudaemu_util.h"

int main(void) {
    cu_require_gpu();
    bg_check("GPU bf16", "--device cuda --precision bf16 --no-iteration");
    bg_check("GPU fp32", "--device cuda --precision fp32 --no-iteration");
    bg_iteration_check("GPU bf16 iteration", "--device cuda --precision bf16");
    return tu_report();
}
