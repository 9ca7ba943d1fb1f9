// parity_clip.c: the CLIP text encoders and the pipelines' prompt encoding against transformers / diffusers
// (fixtures from tools/reference/make_model_fixtures.py): every hidden state, last_hidden_state, pooled and
// projected outputs of clip_l (fp32 and bf16 weights) and clip_g, and encode_prompt of SD 1.5 and SDXL.
#include <stdio.h>
#include <string.h>

#include "../src/core/common.h"
#include "../src/models/clip_text.h"
#include "../src/models/pipeline.h"
#include "fixture.h"

#define TOL 1e-4 // max|diff| <= TOL * max|ref| per tensor

static int compare(const SafeTensors *ref, const char *ref_name, const char *label, const Tensor *got) {
    char what[160];
    snprintf(what, sizeof what, "%s %s", label, ref_name);
    Tensor want = fixture_get(ref, ref_name);
    int ok = fixture_compare(what, got, &want, TOL);
    free(want.data);
    return !ok;
}

// Every output of one encoder on the fixture's two rows (a short prompt padded, a full 77-token one).
static int check_encoder(const char *name) {
    char dir[256], ref_path[256], key[64];
    snprintf(dir, sizeof dir, "tests/fixtures/models/%s", name);
    snprintf(ref_path, sizeof ref_path, "tests/fixtures/%s_ref.safetensors", name);
    ClipText m;
    clip_text_load(&m, dir);
    SafeTensors ref;
    safetensors_open(&ref, ref_path);
    Tensor ids = fixture_get(&ref, "input_ids"); // [B, T]
    int B = (int)ids.shape[0], T = (int)ids.shape[1], N = m.cfg.layers, fails = 0;
    int *keep = xmalloc(sizeof(int) * (size_t)(N + 1));
    for (int i = 0; i <= N; i++) keep[i] = i;
    ClipTextRun r;
    clip_text_run_init(&r, &m, B, T, keep, N + 1, 1);
    clip_text_forward(&m, &r, ids.data);
    for (int i = 0; i <= N; i++) {
        snprintf(key, sizeof key, "hidden_states.%d", i);
        fails += compare(&ref, key, name, clip_text_hidden(&r, i));
    }
    fails += compare(&ref, "last_hidden_state", name, &r.last);
    fails += compare(&ref, "pooled", name, m.cfg.with_projection ? &r.projected : &r.pooled);
    if (m.cfg.with_projection) fails += compare(&ref, "pooled_unprojected", name, &r.pooled);
    clip_text_run_free(&r);
    free(ids.data);
    free(keep);
    safetensors_close(&ref);
    clip_text_free(&m);
    return fails;
}

// A pipeline holding only the fixture text encoders (the tokenizers are not needed below the ids).
static void pipeline_from_fixtures(Pipeline *p, PipelineKind kind) {
    memset(p, 0, sizeof *p);
    p->index.kind = kind;
    p->index.force_zeros_for_empty_prompt = kind == PIPELINE_SDXL;
    clip_text_load(&p->te, "tests/fixtures/models/clip_l");
    if (kind == PIPELINE_SDXL) clip_text_load(&p->te2, "tests/fixtures/models/clip_g");
}

static void pipeline_fixture_free(Pipeline *p) {
    clip_text_free(&p->te);
    if (p->index.kind == PIPELINE_SDXL) clip_text_free(&p->te2);
}

// SD 1.5: cat([encoding of the empty prompt, encoding of the prompt]) of last_hidden_state.
static int check_encode_sd15(void) {
    Pipeline p;
    pipeline_from_fixtures(&p, PIPELINE_SD);
    SafeTensors ref;
    safetensors_open(&ref, "tests/fixtures/encode_sd15_ref.safetensors");
    Tensor ids = fixture_get(&ref, "input_ids"), uncond = fixture_get(&ref, "uncond_input_ids");
    PromptTokens tok = {.B = (int)ids.shape[0], .T = (int)ids.shape[1], .ids = ids.data, .neg_ids = uncond.data};
    PromptEmbeds e;
    pipeline_encode_tokens(&p, &tok, 1, NULL, &e);
    int fails = compare(&ref, "encoder_hidden_states", "encode_sd15", &e.hidden);
    Tensor half = e.hidden; // the conditional rows alone, without guidance
    half.shape[0] = tok.B;
    half.data = tensor_f32(&e.hidden) + tensor_numel(&half);
    fails += compare(&ref, "prompt_embeds", "encode_sd15", &half);
    prompt_embeds_free(&e);
    pipeline_encode_tokens(&p, &tok, 0, NULL, &e);
    fails += compare(&ref, "prompt_embeds", "encode_sd15 (no cfg)", &e.hidden);
    prompt_embeds_free(&e);
    free(ids.data);
    free(uncond.data);
    safetensors_close(&ref);
    pipeline_fixture_free(&p);
    return fails;
}

// SDXL: hidden_states[-2] of both encoders concatenated, pooled projection of encoder 2, zero negatives,
// add_time_ids (64, 64, 0, 0, 64, 64).
static int check_encode_sdxl(void) {
    Pipeline p;
    pipeline_from_fixtures(&p, PIPELINE_SDXL);
    SafeTensors ref;
    safetensors_open(&ref, "tests/fixtures/encode_sdxl_ref.safetensors");
    Tensor ids = fixture_get(&ref, "input_ids"), ids2 = fixture_get(&ref, "input_ids_2");
    PromptTokens tok = {.B = (int)ids.shape[0], .T = (int)ids.shape[1], .ids = ids.data, .ids2 = ids2.data};
    SdxlSize size = {64, 64, 0, 0, 64, 64};
    PromptEmbeds e;
    pipeline_encode_tokens(&p, &tok, 1, &size, &e);
    int fails = compare(&ref, "encoder_hidden_states", "encode_sdxl", &e.hidden);
    fails += compare(&ref, "text_embeds", "encode_sdxl", &e.text_embeds);
    fails += compare(&ref, "time_ids", "encode_sdxl", &e.time_ids);
    prompt_embeds_free(&e);
    pipeline_encode_tokens(&p, &tok, 0, &size, &e);
    fails += compare(&ref, "prompt_embeds", "encode_sdxl (no cfg)", &e.hidden);
    fails += compare(&ref, "pooled_prompt_embeds", "encode_sdxl (no cfg)", &e.text_embeds);
    prompt_embeds_free(&e);
    free(ids.data);
    free(ids2.data);
    safetensors_close(&ref);
    pipeline_fixture_free(&p);
    return fails;
}

// The tokenisation half on the real SDXL configs: "" becomes [bos, eos, pad...] with pad eos for tokenizer and
// "!" (0) for tokenizer_2; negatives are encoded only without force_zeros_for_empty_prompt.
static int check_tokenize_sdxl(void) {
    Pipeline p;
    memset(&p, 0, sizeof p);
    model_index_load(&p.index, "configs/models/sdxl");
    pipeline_tokenizer_load(&p.tok, "configs/models/sdxl/tokenizer");
    pipeline_tokenizer_load(&p.tok2, "configs/models/sdxl/tokenizer_2");
    const char *prompt[1] = {"a photo of a cat"};
    PromptTokens t;
    pipeline_tokenize(&p, &t, prompt, NULL, 1, 1);
    static const int32_t cat[7] = {49406, 320, 1125, 539, 320, 2368, 49407};
    int ok = p.index.kind == PIPELINE_SDXL && p.index.force_zeros_for_empty_prompt && t.T == 77 && !t.neg_ids &&
             !t.neg_ids2 && !memcmp(t.ids, cat, sizeof cat) && !memcmp(t.ids2, cat, sizeof cat) &&
             t.ids[7] == 49407 && t.ids2[7] == 0;
    prompt_tokens_free(&t);
    p.index.force_zeros_for_empty_prompt = 0;
    pipeline_tokenize(&p, &t, prompt, NULL, 1, 1);
    ok = ok && t.neg_ids && t.neg_ids2 && t.neg_ids[0] == 49406 && t.neg_ids[1] == 49407 && t.neg_ids[2] == 49407 &&
         t.neg_ids2[1] == 49407 && t.neg_ids2[2] == 0;
    prompt_tokens_free(&t);
    printf("%s sdxl tokenisation (prompt, empty negative, pad ids 49407 / 0)\n", ok ? "ok  " : "FAIL");
    tokenizer_free(&p.tok);
    tokenizer_free(&p.tok2);
    return !ok;
}

int main(void) {
    int fails = check_encoder("clip_l") + check_encoder("clip_l_bf16") + check_encoder("clip_g");
    fails += check_encode_sd15() + check_encode_sdxl() + check_tokenize_sdxl();
    printf("%s: %d failure%s\n", fails ? "FAILED" : "passed", fails, fails == 1 ? "" : "s");
    return fails != 0;
}
