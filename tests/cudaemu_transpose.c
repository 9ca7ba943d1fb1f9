// cudaemu_transpose.c: the token transpose of the transformer blocks (NCHW <-> [B, H*W, C]) on the GPU against the
// CPU: odd channel counts and token counts that are not multiples of the 32 x 32 tile, f32 and bf16 (a transpose
// only moves values, so both must be exact), forward and backward, and the back transpose with a residual added.
#include "../src/models/blocks.h"
#include "cudaemu_util.h"

static void check(int64_t B, int64_t C, int64_t H, int64_t W, DType dt) {
    int64_t si[4] = {B, C, H, W}, st[3] = {B, H * W, C};
    Tensor x = cu_alloc(DEVICE_CPU, DTYPE_F32, 4, si), y = cu_alloc(DEVICE_CPU, DTYPE_F32, 3, st);
    Tensor back = cu_alloc(DEVICE_CPU, DTYPE_F32, 4, si);
    cu_fill(&x, (uint64_t)(B * 1000 + C), 1.0f, dt == DTYPE_BF16);
    nchw_to_tokens_forward(&y, &x);
    nchw_to_tokens_backward(&back, &y);
    Tensor gx = cu_upload(&x, dt), gy = cu_alloc(DEVICE_CUDA, dt, 3, st), gb = cu_alloc(DEVICE_CUDA, dt, 4, si);
    nchw_to_tokens_forward(&gy, &gx);
    nchw_to_tokens_backward(&gb, &gy);
    char what[96];
    snprintf(what, sizeof what, "nchw->tokens [%lld,%lld,%lld,%lld] %s", (long long)B, (long long)C, (long long)H,
             (long long)W, dtype_name(dt));
    cu_compare(what, &gy, &y, 0.0);
    snprintf(what, sizeof what, "tokens->nchw [%lld,%lld,%lld,%lld] %s", (long long)B, (long long)C, (long long)H,
             (long long)W, dtype_name(dt));
    cu_compare(what, &gb, &back, 0.0);
    // with a residual added by the transpose: the transposed values are exact, so the sum is the CPU's add's, bit
    // for bit (one rounding to the storage dtype on both sides)
    Tensor r = cu_alloc(DEVICE_CPU, DTYPE_F32, 4, si), yr = cu_alloc(DEVICE_CPU, DTYPE_F32, 4, si);
    cu_fill(&r, (uint64_t)(B * 1000 + C + 1), 1.0f, dt == DTYPE_BF16);
    tokens_to_nchw_forward_residual(&yr, &y, &r);
    if (dt == DTYPE_BF16) cu_round_bf16(yr.data, tensor_numel(&yr)); // the GPU stores the sum in bf16
    Tensor gr = cu_upload(&r, dt), gyr = cu_alloc(DEVICE_CUDA, dt, 4, si);
    tokens_to_nchw_forward_residual(&gyr, &gy, &gr);
    snprintf(what, sizeof what, "tokens->nchw + residual [%lld,%lld,%lld,%lld] %s", (long long)B, (long long)C,
             (long long)H, (long long)W, dtype_name(dt));
    cu_compare(what, &gyr, &yr, 0.0);
    cu_free(&x), cu_free(&y), cu_free(&back), cu_free(&gx), cu_free(&gy), cu_free(&gb);
    cu_free(&r), cu_free(&yr), cu_free(&gr), cu_free(&gyr);
}

int main(void) {
    cu_require_gpu();
    check(1, 32, 8, 4, DTYPE_F32);
    check(2, 5, 7, 9, DTYPE_F32);
    check(2, 77, 5, 13, DTYPE_F32);
    check(3, 40, 11, 3, DTYPE_BF16);
    check(1, 1, 1, 33, DTYPE_BF16);
    return tu_report();
}
