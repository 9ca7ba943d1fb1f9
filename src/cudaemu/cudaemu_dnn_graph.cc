// cudaemu_dnn_graph.cc: CPU stand-ins for the cuDNN backend (graph) API subset of cudaemu_dnn_graph.h: descriptors
// as attribute tables, checked when finalized, and the fused attention operations executed in fp32 with OpenBLAS.
// The checks are the documented requirements the wrapper relies on; the workspace sizes are this file's own.
#include "cudaemu_dnn.h"

#include "cudaemu.h"

#include <math.h>
#include <string.h>

#include <algorithm>
#include <map>
#include <memory>
#include <vector>

#include <cblas.h>

static int g_support_fwd = 1, g_support_bwd = 1;
static long long g_exec_fwd, g_exec_bwd;

void cudaemu_dnn_sdpa_support(int fwd, int bwd) {
    g_support_fwd = fwd != 0;
    g_support_bwd = bwd != 0;
}
void cudaemu_dnn_sdpa_counts(long long *fwd, long long *bwd) {
    if (fwd) *fwd = g_exec_fwd;
    if (bwd) *bwd = g_exec_bwd;
}

namespace {

struct Attr {
    cudnnBackendAttributeType_t type;
    int64_t count;
    std::vector<unsigned char> bytes;
};

size_t elem_size(cudnnBackendAttributeType_t t) {
    switch (t) {
    case CUDNN_TYPE_HANDLE: return sizeof(cudnnHandle_t);
    case CUDNN_TYPE_DATA_TYPE: return sizeof(cudnnDataType_t);
    case CUDNN_TYPE_BOOLEAN: return sizeof(bool);
    case CUDNN_TYPE_INT64: return sizeof(int64_t);
    case CUDNN_TYPE_FLOAT: return sizeof(float);
    case CUDNN_TYPE_VOID_PTR: return sizeof(void *);
    case CUDNN_TYPE_HEUR_MODE: return sizeof(cudnnBackendHeurMode_t);
    case CUDNN_TYPE_BACKEND_DESCRIPTOR: return sizeof(cudnnBackendDescriptor_t);
    }
    return 0;
}

struct Desc;
// A tensor of 4 dims [B, H, T, D] (the only rank the attention operations take), strides in elements.
struct Tensor4 {
    cudnnDataType_t dt;
    int64_t dim[4], stride[4], uid;
    bool by_value;
    size_t extent_bytes() const { // bytes from the first element to the end of the last
        int64_t last = 0;
        for (int i = 0; i < 4; i++) last += (dim[i] - 1) * stride[i];
        return (size_t)(last + 1) * (dt == CUDNN_DATA_FLOAT ? 4 : 2);
    }
};
enum Role { Q, K, V, O, STATS, SCALE, DO, DQ, DK, DV, NROLES };

struct Desc {
    cudnnBackendDescriptorType_t type;
    bool finalized = false;
    std::map<int, Attr> attrs;
    // finalized contents
    Tensor4 tensor{};
    const Desc *role[NROLES] = {}; // operations: the tensor of each role (NULL: absent)
    const Desc *op = nullptr;      // graph, heuristics, configuration, plan: the operation
    int64_t n_results = 0;         // heuristics
    bool filled = false;           // configuration: filled in by the heuristics
    int64_t workspace = 0;         // plan
    std::vector<int64_t> uids;     // variant pack
    std::vector<void *> ptrs;
    void *ws = nullptr;
    bool is_bwd() const { return type == CUDNN_BACKEND_OPERATION_SDPA_BWD_DESCRIPTOR; }
};

const Attr *attr_of(const Desc *d, int name, cudnnBackendAttributeType_t type) {
    auto it = d->attrs.find(name);
    if (it == d->attrs.end() || it->second.type != type) return nullptr;
    return &it->second;
}
template <class T> bool get1(const Desc *d, int name, cudnnBackendAttributeType_t type, T *out) {
    const Attr *a = attr_of(d, name, type);
    if (!a || a->count != 1) return false;
    memcpy(out, a->bytes.data(), sizeof(T));
    return true;
}
// A finalized descriptor of the given type held by attribute `name`, or NULL.
const Desc *desc_attr(const Desc *d, int name, cudnnBackendDescriptorType_t type) {
    Desc *x = nullptr;
    if (!get1(d, name, CUDNN_TYPE_BACKEND_DESCRIPTOR, &x) || !x || x->type != type || !x->finalized) return nullptr;
    return x;
}

cudnnStatus_t finalize_tensor(Desc *d) {
    Tensor4 &t = d->tensor;
    const Attr *dims = attr_of(d, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64);
    const Attr *strides = attr_of(d, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64);
    if (!get1(d, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, &t.dt) || !dims || !strides ||
        !get1(d, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, &t.uid))
        return CUDNN_STATUS_BAD_PARAM;
    if (dims->count != 4 || strides->count != 4) return CUDNN_STATUS_NOT_SUPPORTED; // the emulation's subset
    memcpy(t.dim, dims->bytes.data(), sizeof t.dim);
    memcpy(t.stride, strides->bytes.data(), sizeof t.stride);
    for (int i = 0; i < 4; i++)
        if (t.dim[i] <= 0 || t.stride[i] <= 0) return CUDNN_STATUS_BAD_PARAM;
    if (t.dt != CUDNN_DATA_FLOAT && t.dt != CUDNN_DATA_BFLOAT16 && t.dt != CUDNN_DATA_HALF)
        return CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE;
    bool v = false;
    t.by_value = get1(d, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, &v) && v;
    return CUDNN_STATUS_SUCCESS;
}

bool same_dims(const Tensor4 &a, const int64_t *want) {
    for (int i = 0; i < 4; i++)
        if (a.dim[i] != want[i]) return false;
    return true;
}

cudnnStatus_t finalize_sdpa(Desc *d) {
    static const int fwd_attr[NROLES] = {CUDNN_ATTR_OPERATION_SDPA_FWD_QDESC,
                                         CUDNN_ATTR_OPERATION_SDPA_FWD_KDESC,
                                         CUDNN_ATTR_OPERATION_SDPA_FWD_VDESC,
                                         CUDNN_ATTR_OPERATION_SDPA_FWD_ODESC,
                                         CUDNN_ATTR_OPERATION_SDPA_FWD_STATSDESC,
                                         CUDNN_ATTR_OPERATION_SDPA_FWD_SCALEDESC,
                                         0,
                                         0,
                                         0,
                                         0};
    static const int bwd_attr[NROLES] = {
        CUDNN_ATTR_OPERATION_SDPA_BWD_QDESC,     CUDNN_ATTR_OPERATION_SDPA_BWD_KDESC,
        CUDNN_ATTR_OPERATION_SDPA_BWD_VDESC,     CUDNN_ATTR_OPERATION_SDPA_BWD_ODESC,
        CUDNN_ATTR_OPERATION_SDPA_BWD_STATSDESC, CUDNN_ATTR_OPERATION_SDPA_BWD_SCALEDESC,
        CUDNN_ATTR_OPERATION_SDPA_BWD_DODDESC,   CUDNN_ATTR_OPERATION_SDPA_BWD_DQDESC,
        CUDNN_ATTR_OPERATION_SDPA_BWD_DKDESC,    CUDNN_ATTR_OPERATION_SDPA_BWD_DVDESC};
    const int *names = d->is_bwd() ? bwd_attr : fwd_attr;
    for (int r = 0; r < NROLES; r++) {
        if (!names[r]) continue;
        d->role[r] = desc_attr(d, names[r], CUDNN_BACKEND_TENSOR_DESCRIPTOR);
        bool optional = r == STATS && !d->is_bwd();
        if (!d->role[r] && !optional) return CUDNN_STATUS_BAD_PARAM;
    }
    const Tensor4 &q = d->role[Q]->tensor, &k = d->role[K]->tensor;
    int64_t B = q.dim[0], H = q.dim[1], Tq = q.dim[2], D = q.dim[3], Tk = k.dim[2];
    const int64_t qs[4] = {B, H, Tq, D}, ks[4] = {B, H, Tk, D}, ss[4] = {B, H, Tq, 1}, one[4] = {1, 1, 1, 1};
    const int64_t *want[NROLES] = {qs, ks, ks, qs, ss, one, qs, qs, ks, ks};
    for (int r = 0; r < NROLES; r++) {
        const Desc *t = d->role[r];
        if (!t) continue;
        if (!same_dims(t->tensor, want[r])) return CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH;
        bool fp32 = r == STATS || r == SCALE;
        if (fp32 ? t->tensor.dt != CUDNN_DATA_FLOAT : t->tensor.dt != q.dt) return CUDNN_STATUS_BAD_PARAM;
        if ((r == SCALE) != t->tensor.by_value) return CUDNN_STATUS_BAD_PARAM;
        for (int u = 0; u < r; u++)
            if (d->role[u] && d->role[u]->tensor.uid == t->tensor.uid) return CUDNN_STATUS_BAD_PARAM;
    }
    return CUDNN_STATUS_SUCCESS;
}

// The documented support of the fused engines (see the header), and the test hook's narrowing.
bool sdpa_supported(const Desc *op) {
    const Tensor4 &q = op->role[Q]->tensor;
    if (!(op->is_bwd() ? g_support_bwd : g_support_fwd)) return false;
    if (q.dt != CUDNN_DATA_BFLOAT16 || q.dim[3] % 8 != 0 || q.dim[3] > 256) return false;
    for (int r = 0; r < NROLES; r++) // the head dim innermost, as the engines need
        if (op->role[r] && r != STATS && r != SCALE && op->role[r]->tensor.stride[3] != 1) return false;
    return true;
}

int64_t sdpa_workspace(const Desc *op) { // the emulation's own need: fp32 row sums, and an fp32 dq for the backward
    const Tensor4 &q = op->role[Q]->tensor;
    int64_t rows = q.dim[0] * q.dim[1] * q.dim[2];
    return 4 * rows + (op->is_bwd() ? 4 * rows * q.dim[3] : 0);
}

// ---- arithmetic

float ld(const void *p, cudnnDataType_t dt, int64_t i) {
    return dt == CUDNN_DATA_FLOAT ? ((const float *)p)[i] : __bfloat162float(((const __nv_bfloat16 *)p)[i]);
}
void st(void *p, cudnnDataType_t dt, int64_t i, float v) {
    if (dt == CUDNN_DATA_FLOAT)
        ((float *)p)[i] = v;
    else
        ((__nv_bfloat16 *)p)[i] = __float2bfloat16(v);
}
// x [T, D] fp32 = the (b, h) slice of tensor t at p
std::vector<float> gather(const Tensor4 &t, const void *p, int64_t b, int64_t h) {
    std::vector<float> x((size_t)(t.dim[2] * t.dim[3]));
    for (int64_t i = 0; i < t.dim[2]; i++)
        for (int64_t c = 0; c < t.dim[3]; c++)
            x[(size_t)(i * t.dim[3] + c)] =
                ld(p, t.dt, b * t.stride[0] + h * t.stride[1] + i * t.stride[2] + c * t.stride[3]);
    return x;
}
void scatter(const Tensor4 &t, void *p, int64_t b, int64_t h, const std::vector<float> &x) {
    for (int64_t i = 0; i < t.dim[2]; i++)
        for (int64_t c = 0; c < t.dim[3]; c++)
            st(p, t.dt, b * t.stride[0] + h * t.stride[1] + i * t.stride[2] + c * t.stride[3],
               x[(size_t)(i * t.dim[3] + c)]);
}

const int64_t ROWS = 512; // query rows per score block

// o = softmax(scale q k^T) v; stats = max + log(sum exp(. - max)) (natural log)
void run_fwd(const Desc *op, void *const *ptr, float scale) {
    const Tensor4 &tq = op->role[Q]->tensor, &tk = op->role[K]->tensor;
    int64_t B = tq.dim[0], H = tq.dim[1], Tq = tq.dim[2], D = tq.dim[3], Tk = tk.dim[2];
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++) {
            std::vector<float> q = gather(tq, ptr[Q], b, h), k = gather(tk, ptr[K], b, h),
                               v = gather(op->role[V]->tensor, ptr[V], b, h), o((size_t)(Tq * D));
            std::vector<float> s((size_t)(std::min(ROWS, Tq) * Tk));
            for (int64_t i0 = 0; i0 < Tq; i0 += ROWS) {
                int64_t n = std::min(ROWS, Tq - i0);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)Tk, (int)D, scale,
                            &q[(size_t)(i0 * D)], (int)D, k.data(), (int)D, 0.0f, s.data(), (int)Tk);
                for (int64_t i = 0; i < n; i++) {
                    float *row = &s[(size_t)(i * Tk)], m = -INFINITY, l = 0.0f;
                    for (int64_t j = 0; j < Tk; j++) m = std::max(m, row[j]);
                    float ref = m == -INFINITY ? 0.0f : m;
                    for (int64_t j = 0; j < Tk; j++) l += row[j] = expf(row[j] - ref);
                    for (int64_t j = 0; j < Tk; j++) row[j] /= l;
                    if (op->role[STATS])
                        ((float *)
                             ptr[STATS])[b * op->role[STATS]->tensor.stride[0] + h * op->role[STATS]->tensor.stride[1] +
                                         (i0 + i) * op->role[STATS]->tensor.stride[2]] = ref + logf(l);
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)D, (int)Tk, 1.0f, s.data(), (int)Tk,
                            v.data(), (int)D, 0.0f, &o[(size_t)(i0 * D)], (int)D);
            }
            scatter(op->role[O]->tensor, ptr[O], b, h, o);
        }
}

// P = exp(scale q k^T - stats); dv = P^T do; dS = P (do v^T - rowsum(do o)); dq = scale dS k; dk = scale dS^T q
void run_bwd(const Desc *op, void *const *ptr, float scale) {
    const Tensor4 &tq = op->role[Q]->tensor, &tk = op->role[K]->tensor, &ts = op->role[STATS]->tensor;
    int64_t B = tq.dim[0], H = tq.dim[1], Tq = tq.dim[2], D = tq.dim[3], Tk = tk.dim[2];
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++) {
            std::vector<float> q = gather(tq, ptr[Q], b, h), k = gather(tk, ptr[K], b, h),
                               v = gather(op->role[V]->tensor, ptr[V], b, h),
                               o = gather(op->role[O]->tensor, ptr[O], b, h),
                               dout = gather(op->role[DO]->tensor, ptr[DO], b, h);
            std::vector<float> dq((size_t)(Tq * D)), dk((size_t)(Tk * D), 0.0f), dv((size_t)(Tk * D), 0.0f);
            std::vector<float> p((size_t)(std::min(ROWS, Tq) * Tk)), dp(p.size());
            for (int64_t i0 = 0; i0 < Tq; i0 += ROWS) {
                int64_t n = std::min(ROWS, Tq - i0);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)Tk, (int)D, scale,
                            &q[(size_t)(i0 * D)], (int)D, k.data(), (int)D, 0.0f, p.data(), (int)Tk);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)Tk, (int)D, 1.0f,
                            &dout[(size_t)(i0 * D)], (int)D, v.data(), (int)D, 0.0f, dp.data(), (int)Tk);
                for (int64_t i = 0; i < n; i++) {
                    float lse =
                        ((const float *)ptr[STATS])[b * ts.stride[0] + h * ts.stride[1] + (i0 + i) * ts.stride[2]];
                    float delta = 0.0f;
                    for (int64_t c = 0; c < D; c++)
                        delta += dout[(size_t)((i0 + i) * D + c)] * o[(size_t)((i0 + i) * D + c)];
                    float *pr = &p[(size_t)(i * Tk)], *dr = &dp[(size_t)(i * Tk)];
                    for (int64_t j = 0; j < Tk; j++) {
                        pr[j] = expf(pr[j] - lse);
                        dr[j] = pr[j] * (dr[j] - delta);
                    }
                }
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)Tk, (int)D, (int)n, 1.0f, p.data(), (int)Tk,
                            &dout[(size_t)(i0 * D)], (int)D, 1.0f, dv.data(), (int)D);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)D, (int)Tk, scale, dp.data(),
                            (int)Tk, k.data(), (int)D, 0.0f, &dq[(size_t)(i0 * D)], (int)D);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)Tk, (int)D, (int)n, scale, dp.data(), (int)Tk,
                            &q[(size_t)(i0 * D)], (int)D, 1.0f, dk.data(), (int)D);
            }
            scatter(op->role[DQ]->tensor, ptr[DQ], b, h, dq);
            scatter(op->role[DK]->tensor, ptr[DK], b, h, dk);
            scatter(op->role[DV]->tensor, ptr[DV], b, h, dv);
        }
}

} // namespace

extern "C" {

cudnnStatus_t cudnnBackendCreateDescriptor(cudnnBackendDescriptorType_t type, cudnnBackendDescriptor_t *d) {
    if (!d) return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
    switch (type) {
    case CUDNN_BACKEND_ENGINECFG_DESCRIPTOR:
    case CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR:
    case CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR:
    case CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR:
    case CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR:
    case CUDNN_BACKEND_TENSOR_DESCRIPTOR:
    case CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR:
    case CUDNN_BACKEND_OPERATION_SDPA_BWD_DESCRIPTOR: break;
    default: return CUDNN_STATUS_NOT_SUPPORTED;
    }
    Desc *x = new Desc;
    x->type = type;
    *d = x;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBackendDestroyDescriptor(cudnnBackendDescriptor_t d) {
    delete (Desc *)d;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBackendSetAttribute(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name,
                                       cudnnBackendAttributeType_t type, int64_t count, const void *elements) {
    Desc *x = (Desc *)d;
    if (!x || (count > 0 && !elements)) return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
    if (x->finalized) return CUDNN_STATUS_BAD_PARAM; // a finalized descriptor is immutable
    size_t es = elem_size(type);
    if (!es || count < 0) return CUDNN_STATUS_BAD_PARAM;
    Attr a{type, count, std::vector<unsigned char>((size_t)count * es)};
    if (count) memcpy(a.bytes.data(), elements, a.bytes.size());
    x->attrs[name] = a;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBackendFinalize(cudnnBackendDescriptor_t d) {
    Desc *x = (Desc *)d;
    if (!x) return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
    if (x->finalized) return CUDNN_STATUS_BAD_PARAM;
    cudnnStatus_t s = CUDNN_STATUS_SUCCESS;
    switch (x->type) {
    case CUDNN_BACKEND_TENSOR_DESCRIPTOR: s = finalize_tensor(x); break;
    case CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR:
    case CUDNN_BACKEND_OPERATION_SDPA_BWD_DESCRIPTOR: s = finalize_sdpa(x); break;
    case CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR: {
        cudnnHandle_t h = nullptr;
        const Attr *ops = attr_of(x, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR);
        if (!get1(x, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, &h) || !h || !ops || ops->count < 1)
            return CUDNN_STATUS_BAD_PARAM;
        if (ops->count != 1) return CUDNN_STATUS_NOT_SUPPORTED; // the emulation's subset: one fused operation
        const Desc *op = *(Desc *const *)ops->bytes.data();
        if (!op || !op->finalized) return CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED;
        x->op = op;
        break;
    }
    case CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR: {
        cudnnBackendHeurMode_t mode;
        const Desc *g = desc_attr(x, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
        if (!g || !get1(x, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, &mode)) return CUDNN_STATUS_BAD_PARAM;
        x->op = g->op;
        x->n_results = sdpa_supported(g->op) ? 1 : 0;
        break;
    }
    case CUDNN_BACKEND_ENGINECFG_DESCRIPTOR: // filled in (and finalized) by the heuristics only
        return CUDNN_STATUS_BAD_PARAM;
    case CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR: {
        cudnnHandle_t h = nullptr;
        Desc *cfg = nullptr;
        if (!get1(x, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, &h) || !h ||
            !get1(x, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, &cfg) || !cfg)
            return CUDNN_STATUS_BAD_PARAM;
        if (!cfg->filled) return CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED;
        x->op = cfg->op;
        x->workspace = sdpa_workspace(cfg->op);
        break;
    }
    case CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR: {
        const Attr *u = attr_of(x, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64);
        const Attr *p = attr_of(x, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR);
        if (!u || !p || u->count != p->count) return CUDNN_STATUS_BAD_PARAM;
        x->uids.resize((size_t)u->count);
        x->ptrs.resize((size_t)p->count);
        if (u->count) {
            memcpy(x->uids.data(), u->bytes.data(), u->bytes.size());
            memcpy(x->ptrs.data(), p->bytes.data(), p->bytes.size());
        }
        void *ws = nullptr;
        if (attr_of(x, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR))
            get1(x, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, &ws);
        x->ws = ws;
        break;
    }
    default: return CUDNN_STATUS_NOT_SUPPORTED;
    }
    if (s == CUDNN_STATUS_SUCCESS) x->finalized = true;
    return s;
}

cudnnStatus_t cudnnBackendGetAttribute(cudnnBackendDescriptor_t const d, cudnnBackendAttributeName_t name,
                                       cudnnBackendAttributeType_t type, int64_t requested, int64_t *count,
                                       void *elements) {
    const Desc *x = (const Desc *)d;
    if (!x) return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
    if (!x->finalized) return CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED;
    if (x->type == CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR && name == CUDNN_ATTR_ENGINEHEUR_RESULTS &&
        type == CUDNN_TYPE_BACKEND_DESCRIPTOR) {
        if (count) *count = x->n_results;
        for (int64_t i = 0; i < std::min(requested, x->n_results); i++) {
            Desc *cfg = ((Desc **)elements)[i];
            if (!cfg || cfg->type != CUDNN_BACKEND_ENGINECFG_DESCRIPTOR) return CUDNN_STATUS_BAD_PARAM;
            cfg->op = x->op;
            cfg->filled = cfg->finalized = true;
        }
        return CUDNN_STATUS_SUCCESS;
    }
    if (x->type == CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR && name == CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE &&
        type == CUDNN_TYPE_INT64) {
        if (count) *count = 1;
        if (requested >= 1) *(int64_t *)elements = x->workspace;
        return CUDNN_STATUS_SUCCESS;
    }
    return CUDNN_STATUS_NOT_SUPPORTED; // not read by the wrapper
}

cudnnStatus_t cudnnBackendExecute(cudnnHandle_t h, cudnnBackendDescriptor_t plan, cudnnBackendDescriptor_t pack) {
    const Desc *pl = (const Desc *)plan, *vp = (const Desc *)pack;
    if (!h || !pl || !vp) return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
    if (!pl->finalized || !vp->finalized) return CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED;
    if (pl->type != CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR || vp->type != CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR)
        return CUDNN_STATUS_BAD_PARAM;
    const Desc *op = pl->op;
    // bind every tensor of the operation to its pointer by unique id
    std::vector<void *> ptr(NROLES, nullptr);
    float scale = 0.0f;
    for (int r = 0; r < NROLES; r++) {
        if (!op->role[r]) continue;
        const Tensor4 &t = op->role[r]->tensor;
        size_t i = 0;
        while (i < vp->uids.size() && vp->uids[i] != t.uid) i++;
        if (i == vp->uids.size() || !vp->ptrs[i]) return CUDNN_STATUS_BAD_PARAM;
        if (t.by_value)
            memcpy(&scale, vp->ptrs[i], sizeof scale); // a host value, read when the call is made
        else if (!cudaemu_is_device(vp->ptrs[i], t.extent_bytes()))
            cudaemu_fail("cudnnBackendExecute", "an SDPA operand is not device memory of its described extent");
        ptr[r] = vp->ptrs[i];
    }
    if (pl->workspace > 0 && (!vp->ws || !cudaemu_is_device(vp->ws, (size_t)pl->workspace)))
        cudaemu_fail("cudnnBackendExecute", "the workspace is missing or smaller than the plan's workspace size");
    int outs[3] = {O, -1, -1};
    if (op->is_bwd()) outs[0] = DQ, outs[1] = DK, outs[2] = DV;
    for (int a : outs)
        for (int r = 0; a >= 0 && r < NROLES; r++)
            if (r != a && ptr[r] && ptr[r] == ptr[a])
                cudaemu_fail("cudnnBackendExecute", "an SDPA output aliases another operand");
    void *ws = vp->ws;
    int64_t ws_bytes = pl->workspace;
    auto run = [op, ptr, scale, ws, ws_bytes] {
        if (ws_bytes > 0) memset(ws, 0xA5, (size_t)ws_bytes);
        if (op->is_bwd()) {
            run_bwd(op, ptr.data(), scale);
            g_exec_bwd++;
        } else {
            run_fwd(op, ptr.data(), scale);
            g_exec_fwd++;
        }
    };
    cudaStreamCaptureStatus cap = cudaemu_capture_status(cudaemu_dnn_stream(h));
    if (cap == cudaStreamCaptureStatusInvalidated) return CUDNN_STATUS_EXECUTION_FAILED;
    if (cap == cudaStreamCaptureStatusActive) {
        cudaemu_capture_add(cudaemu_dnn_stream(h), run);
        return CUDNN_STATUS_SUCCESS;
    }
    run();
    return CUDNN_STATUS_SUCCESS;
}

} // extern "C"
