// lora.c: attaching, saving, loading and merging the LoRA adapters of lora.h. The adapters' arithmetic lives in
// the UNet's single attention-projection helper (models/blocks.c); this file only wires tensors to it.
#include "lora.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../core/common.h"
#include "../core/rng.h"
#include "../io/safetensors.h"

// Every attention projection of the UNet, in a fixed order (down levels, mid, up levels).
static int collect(UNet *net, AttnProj **out, int max) {
    int n = 0;
    TransformerParams *tp[2 * UNET_MAX_LEVELS * UNET_MAX_LAYERS + 1];
    int nt = 0;
    for (int i = 0; i < net->cfg.levels; i++)
        if (net->down[i].has_attn)
            for (int j = 0; j < net->down[i].n_layers; j++) tp[nt++] = &net->down[i].attn[j];
    tp[nt++] = &net->mid_attn;
    for (int i = 0; i < net->cfg.levels; i++)
        if (net->up[i].has_attn)
            for (int j = 0; j < net->up[i].n_layers; j++) tp[nt++] = &net->up[i].attn[j];
    for (int k = 0; k < nt; k++)
        for (int d = 0; d < tp[k]->depth; d++) {
            BasicBlockParams *b = &tp[k]->blocks[d];
            AttnParams *a[2] = {&b->attn1, &b->attn2};
            for (int q = 0; q < 2; q++) {
                AttnProj *p[4] = {&a[q]->to_q, &a[q]->to_k, &a[q]->to_v, &a[q]->to_out};
                for (int r = 0; r < 4; r++) {
                    CHECK(n < max, "", "too many attention projections");
                    out[n++] = p[r];
                }
            }
        }
    return n;
}

static int ends_with_target(const char *module, const char *target) {
    size_t m = strlen(module), t = strlen(target);
    return m > t && module[m - t - 1] == '.' && !strcmp(module + m - t, target);
}

void lora_attach(Lora *l, UNet *net, const Arena *net_params, UNet *grads, int rank, float alpha,
                 const char *const *targets, int n_targets, uint64_t seed, const char *source) {
    memset(l, 0, sizeof *l);
    USER_CHECK(rank >= 1, "train.lora_rank must be at least 1");
    l->rank = rank, l->alpha = alpha, l->scale = alpha / (float)rank;
    int max = 8192;
    AttnProj **all = xmalloc(sizeof(AttnProj *) * (size_t)max), **gall = xmalloc(sizeof(AttnProj *) * (size_t)max);
    int n_all = collect(net, all, max);
    CHECK(collect(grads, gall, max) == n_all, "", "gradient struct differs from the model");
    l->proj = xmalloc(sizeof(AttnProj *) * (size_t)n_all);
    l->grad_proj = xmalloc(sizeof(AttnProj *) * (size_t)n_all);
    l->modules = xmalloc(sizeof(char *) * (size_t)n_all);
    int *hits = xcalloc((size_t)n_targets, sizeof(int));
    for (int i = 0; i < n_all; i++) {
        const char *wname = NULL; // the module is the weight's name without ".weight"
        for (int e = 0; e < net_params->n && !wname; e++)
            if (net_params->entries[e].desc.data == all[i]->weight.data) wname = net_params->entries[e].name;
        CHECK(wname != NULL, "", "attention projection not found in the parameter arena");
        char module[512];
        snprintf(module, sizeof module, "%.*s", (int)(strlen(wname) - strlen(".weight")), wname);
        int take = 0;
        for (int k = 0; k < n_targets; k++)
            if (ends_with_target(module, targets[k])) take = 1, hits[k]++;
        if (!take) continue;
        l->proj[l->n] = all[i];
        l->grad_proj[l->n] = gall[i];
        l->modules[l->n] = xstrdup(module);
        l->n++;
    }
    for (int k = 0; k < n_targets; k++)
        USER_CHECK(hits[k] > 0, "%s: '%s' matches no attention projection of the UNet", source, targets[k]);
    free(hits);
    free(all);
    free(gall);
    arena_init(&l->params, "lora", DEVICE_CPU);
    arena_init(&l->grads, "lora-grads", DEVICE_CPU);
    for (int i = 0; i < l->n; i++) {
        int64_t out = l->proj[i]->weight.shape[0], in = l->proj[i]->weight.shape[1];
        char name[600];
        snprintf(name, sizeof name, "%s.lora_A.weight", l->modules[i]);
        arena_add(&l->params, &l->proj[i]->lora_a, name, DTYPE_F32, 2, (int64_t[]){rank, in});
        arena_add(&l->grads, &l->grad_proj[i]->lora_a, name, DTYPE_F32, 2, (int64_t[]){rank, in});
        snprintf(name, sizeof name, "%s.lora_B.weight", l->modules[i]);
        arena_add(&l->params, &l->proj[i]->lora_b, name, DTYPE_F32, 2, (int64_t[]){out, rank});
        arena_add(&l->grads, &l->grad_proj[i]->lora_b, name, DTYPE_F32, 2, (int64_t[]){out, rank});
        l->proj[i]->lora_scale = l->scale;
    }
    arena_alloc(&l->params);
    arena_alloc(&l->grads);
    // PEFT init: A ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform with a = sqrt 5), B = 0
    for (int i = 0; i < l->n; i++) {
        Tensor *a = &l->proj[i]->lora_a;
        int64_t na = tensor_numel(a), in = a->shape[1];
        float *pa = a->data, bound = 1.0f / sqrtf((float)in);
        rng_uniform_fill(pa, na, seed, RNG_STREAM(RNG_PURPOSE_INIT, i, 1), 0);
        for (int64_t k = 0; k < na; k++) pa[k] = bound * (2.0f * pa[k] - 1.0f);
    }
}

void lora_bind_compute(Lora *l, UNet *net, UNet *cnet, DType dt, Device d) {
    int max = 8192;
    AttnProj **all = xmalloc(sizeof(AttnProj *) * (size_t)max), **call = xmalloc(sizeof(AttnProj *) * (size_t)max);
    int n_all = collect(net, all, max);
    CHECK(collect(cnet, call, max) == n_all, "", "compute UNet differs from the model");
    l->compute_proj = xmalloc(sizeof(AttnProj *) * (size_t)(l->n > 0 ? l->n : 1));
    arena_init(&l->compute, "lora-compute", d);
    for (int i = 0; i < l->n; i++) {
        int k = 0;
        while (k < n_all && all[k] != l->proj[i]) k++;
        CHECK(k < n_all, "", "adapter %s is not in the model", l->modules[i]);
        AttnProj *cp = l->compute_proj[i] = call[k];
        char name[600];
        snprintf(name, sizeof name, "%s.lora_A.weight", l->modules[i]);
        arena_add(&l->compute, &cp->lora_a, name, dt, 2, l->proj[i]->lora_a.shape);
        snprintf(name, sizeof name, "%s.lora_B.weight", l->modules[i]);
        arena_add(&l->compute, &cp->lora_b, name, dt, 2, l->proj[i]->lora_b.shape);
        cp->lora_scale = l->proj[i]->lora_scale;
    }
    arena_alloc(&l->compute);
    free(all);
    free(call);
}

void lora_save(const Lora *l, const char *path) {
    int n = l->params.n;
    const char **names = xmalloc(sizeof(char *) * (size_t)n);
    Tensor *ts = xmalloc(sizeof(Tensor) * (size_t)n);
    float **folded = xcalloc((size_t)n, sizeof(float *));
    for (int i = 0; i < n; i++) {
        const ArenaEntry *e = &l->params.entries[i];
        char *name = xmalloc(strlen(e->name) + 8);
        sprintf(name, "unet.%s", e->name);
        names[i] = name;
        ts[i] = e->desc;
        if (strstr(e->name, ".lora_B.")) { // fold the scale so the file works with alpha = rank
            int64_t m = tensor_numel(&e->desc);
            folded[i] = xmalloc(sizeof(float) * (size_t)m);
            for (int64_t k = 0; k < m; k++) folded[i][k] = ((float *)e->desc.data)[k] * l->scale;
            ts[i].data = folded[i];
        }
    }
    char meta[128];
    snprintf(meta, sizeof meta, "{\"format\": \"pt\", \"lora_rank\": \"%d\", \"lora_alpha\": \"%d\"}", l->rank, l->rank);
    safetensors_write(path, n, names, ts, meta);
    for (int i = 0; i < n; i++) {
        free((char *)names[i]);
        free(folded[i]);
    }
    free(names);
    free(ts);
    free(folded);
}

void lora_load(Lora *l, const char *path) {
    SafeTensors st;
    safetensors_open(&st, path);
    for (int i = 0; i < l->params.n; i++) {
        ArenaEntry *e = &l->params.entries[i];
        char name[700];
        snprintf(name, sizeof name, "unet.%s", e->name);
        USER_CHECK(safetensors_find(&st, name) != NULL, "'%s': no tensor '%s' (trained with other targets or rank?)",
                   path, name);
        safetensors_read_into(&st, name, &e->desc);
    }
    for (int i = 0; i < st.n; i++) { // nothing in the file may go unused
        const char *name = st.tensors[i].name;
        if (!strstr(name, ".lora_A.") && !strstr(name, ".lora_B.")) continue;
        USER_CHECK(!strncmp(name, "unet.", 5) && arena_find(&l->params, name + 5),
                   "'%s': tensor '%s' is an adapter of no attention projection of this UNet", path, name);
    }
    safetensors_close(&st);
    l->scale = 1.0f;
    for (int i = 0; i < l->n; i++) {
        l->proj[i]->lora_scale = 1.0f;
        if (l->compute_proj) l->compute_proj[i]->lora_scale = 1.0f;
    }
}

void lora_merge(Lora *l) {
    for (int i = 0; i < l->n; i++) {
        AttnProj *p = l->proj[i];
        int64_t out = p->weight.shape[0], in = p->weight.shape[1], r = l->rank;
        float *w = p->weight.data;
        const float *a = p->lora_a.data, *b = p->lora_b.data;
#pragma omp parallel for
        for (int64_t o = 0; o < out; o++)
            for (int64_t k = 0; k < in; k++) {
                double s = 0;
                for (int64_t j = 0; j < r; j++) s += (double)b[o * r + j] * a[j * in + k];
                w[o * in + k] += (float)(p->lora_scale * s);
            }
        memset(&p->lora_a, 0, sizeof p->lora_a);
        memset(&p->lora_b, 0, sizeof p->lora_b);
    }
}

void lora_free(Lora *l) {
    for (int i = 0; i < l->n; i++) {
        memset(&l->proj[i]->lora_a, 0, sizeof(Tensor));
        memset(&l->proj[i]->lora_b, 0, sizeof(Tensor));
        if (l->compute_proj) {
            memset(&l->compute_proj[i]->lora_a, 0, sizeof(Tensor));
            memset(&l->compute_proj[i]->lora_b, 0, sizeof(Tensor));
        }
        free(l->modules[i]);
    }
    arena_free(&l->compute);
    free(l->compute_proj);
    arena_free(&l->params);
    arena_free(&l->grads);
    free(l->proj);
    free(l->grad_proj);
    free(l->modules);
    memset(l, 0, sizeof *l);
}
