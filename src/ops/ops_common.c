// ops_common.c: the shared scratch workspace, thread control and device checks used by every op.
#include <omp.h>
#include <string.h>

#include "../core/device.h"
#include "ops_internal.h"

// [device][kind]: kind 0 is the ops' scratch, kind 1 the GEMM library's (ops_gemm_workspace)
static void *g_ws[2][2];
static size_t g_ws_size[2][2];

static void *workspace(int kind, Device d, size_t bytes) {
    int i = d == DEVICE_CUDA;
    if (bytes > g_ws_size[i][kind]) {
        device_free(d, g_ws[i][kind]);
        size_t grow = bytes + bytes / 4;
        g_ws[i][kind] = device_alloc(d, grow);
        g_ws_size[i][kind] = grow;
    }
    return g_ws[i][kind];
}

void *ops_workspace(Device d, size_t bytes) { return workspace(0, d, bytes); }
void ops_workspace_reserve(Device d, size_t bytes) { (void)workspace(0, d, bytes); }
void *ops_gemm_workspace(Device d, size_t bytes) { return workspace(1, d, bytes); }
void ops_gemm_workspace_reserve(Device d, size_t bytes) { (void)workspace(1, d, bytes); }

size_t ops_workspace_size(Device d, int gemm) { return g_ws_size[d == DEVICE_CUDA][gemm != 0]; }

void ops_workspace_free(void) {
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 2; k++) {
            device_free(i ? DEVICE_CUDA : DEVICE_CPU, g_ws[i][k]);
            g_ws[i][k] = NULL;
            g_ws_size[i][k] = 0;
        }
}

void ops_expect_same_numel(const Tensor *a, const Tensor *b, const char *op) {
    char x[96], y[96];
    CHECK(tensor_numel(a) == tensor_numel(b), "", "%s: shapes %s and %s differ", op, tensor_shape_str(a, x, sizeof x),
          tensor_shape_str(b, y, sizeof y));
}

void ops_bias_grad_add(float *d, const float *g, int64_t B, int64_t OC, int64_t S) {
    if (S == 1) { // linear layers: g [B, OC] row by row, each column's sum in double in row order, 256 columns a task
        int64_t blocks = (OC + 255) / 256;
#pragma omp parallel for if (B * OC > 65536)
        for (int64_t k = 0; k < blocks; k++) {
            int64_t o0 = k * 256, n_o = OC - o0 < 256 ? OC - o0 : 256;
            double acc[256] = {0};
            for (int64_t n = 0; n < B; n++) {
                const float *r = g + n * OC + o0;
                for (int64_t o = 0; o < n_o; o++) acc[o] += r[o];
            }
            for (int64_t o = 0; o < n_o; o++) d[o0 + o] += (float)acc[o];
        }
        return;
    }
#pragma omp parallel for if (B * OC * S > 65536)
    for (int64_t o = 0; o < OC; o++) {
        // eight partial sums in double (independent, so they vectorise), combined in a fixed order: the result does
        // not depend on the thread count
        double acc[8] = {0};
        for (int64_t n = 0; n < B; n++) {
            const float *r = g + (n * OC + o) * S;
            int64_t s = 0;
            for (; s + 8 <= S; s += 8)
                for (int l = 0; l < 8; l++) acc[l] += r[s + l];
            for (int l = 0; s < S; s++, l++) acc[l] += r[s];
        }
        d[o] += (float)(((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])));
    }
}

void ops_set_threads(int n) {
    if (n > 0) omp_set_num_threads(n);
}

int ops_get_threads(void) { return omp_get_max_threads(); }

void ops_expect_cpu_(const Tensor *t, const char *op, const char *file, int line) {
    if (t->device != DEVICE_CPU)
        dt_fatal(file, line, "this op has no kernel for that device yet", "%s: got a %s tensor on the CPU path", op,
                 device_name(t->device));
    if (t->dtype != DTYPE_F32)
        dt_fatal(file, line, "convert to f32 before calling a CPU op", "%s: CPU ops take f32 tensors, got %s", op,
                 dtype_name(t->dtype));
    if (tensor_channels_last(t))
        dt_fatal(file, line, "channels-last tensors are GPU only", "%s: a channels-last tensor on the CPU path", op);
}

void conv_geom_finish(ConvGeom *g, const Tensor *in, const Tensor *w, const char *op) {
    char a[96], b[96];
    CHECK(g->stride >= 1 && g->pad >= 0, "", "%s: stride %lld and pad %lld (want stride >= 1, pad >= 0)", op,
          (long long)g->stride, (long long)g->pad);
    CHECK(g->H + 2 * g->pad >= g->KH && g->W + 2 * g->pad >= g->KW, "",
          "%s: kernel %s is larger than the padded input %s (pad %lld)", op, tensor_shape_str(w, b, sizeof b),
          tensor_shape_str(in, a, sizeof a), (long long)g->pad);
    g->OH = (g->H + 2 * g->pad - g->KH) / g->stride + 1;
    g->OW = (g->W + 2 * g->pad - g->KW) / g->stride + 1;
}

void ops_expect_cuda_(const Tensor *t, const char *op, int f32_only, const char *file, int line) {
    if (t->device != DEVICE_CUDA)
        dt_fatal(file, line, "every operand of a CUDA op lives on the GPU", "%s: got a %s tensor on the CUDA path", op,
                 device_name(t->device));
    if (t->dtype != DTYPE_F32 && (f32_only || t->dtype != DTYPE_BF16))
        dt_fatal(file, line, "", "%s: the CUDA path takes %s here, got %s", op, f32_only ? "f32" : "f32 or bf16",
                 dtype_name(t->dtype));
}

int ops_on_cuda_(const Tensor *t, const char *op) {
    (void)op;
    return t->device == DEVICE_CUDA;
}
