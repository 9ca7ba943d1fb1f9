#!/usr/bin/env python3
"""Generate small random-weight reference models and reference data for the drtune C tests.

Outputs (all paths relative to the repository root):

  tests/fixtures/models/<name>/          small models in diffusers / transformers save_pretrained layout
  tests/fixtures/<name>_ref.safetensors  reference inputs, outputs and gradients (float32 / int32)
  tests/fixtures/encode_sd15_ref.safetensors, encode_sdxl_ref.safetensors
                                         pipeline-style prompt encoding + one CFG/DDIM step on the small models
  configs/models/sd15/, configs/models/sdxl/
                                         the real SD 1.5 / SDXL base configs (no weights), verified by
                                         instantiating them on the meta device and counting parameters

Everything runs on the CPU in float32 and is deterministic (fixed seeds, deterministic algorithms, one thread).
Run with the reference virtualenv:

    tools/reference/.venv/bin/python tools/reference/make_model_fixtures.py

Gradient convention used in every *_ref file: for an output `out` and a stored upstream tensor `dout`
(same shape, standard normal), every `grad*` tensor is d(sum(out * dout)) / d(x).
See tools/reference/README.md for the full description of every file.
"""

import json
import os
import shutil
import sys

import numpy as np
import safetensors
import safetensors.torch
import torch
from torch import nn

import accelerate
import diffusers
import transformers
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIX = os.path.join(ROOT, "tests", "fixtures")
MODELS = os.path.join(FIX, "models")
CONFIGS = os.path.join(ROOT, "configs", "models")

VERSIONS = {
    "torch": torch.__version__,
    "diffusers": diffusers.__version__,
    "transformers": transformers.__version__,
    "safetensors": safetensors.__version__,
    "numpy": np.__version__,
    "accelerate": accelerate.__version__,
    "python": sys.version.split()[0],
}

GRAD_CONVENTION = "grad* = d(sum(out * dout))/dx, dout stored alongside; all float32, CPU"

# ----------------------------------------------------------------------------------------------------------------
# Small model configurations
# ----------------------------------------------------------------------------------------------------------------

# Text encoders. Token ids: vocab 1000, BOS = 998, EOS = 999 (the two largest ids, like 49406 / 49407 in the real
# vocabulary), so the legacy pooling rule of configs with eos_token_id == 2 ("first argmax of the ids") finds the
# EOS token exactly as it does with the real tokenizer.
VOCAB = 1000
BOS = 998
EOS = 999
SEQ = 77

CLIP_L = dict(
    vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
    max_position_embeddings=SEQ, hidden_act="quick_gelu", layer_norm_eps=1e-5, attention_dropout=0.0,
    dropout=0.0, initializer_factor=1.0, initializer_range=0.02, projection_dim=32,
    bos_token_id=0, eos_token_id=2, pad_token_id=1,
)
CLIP_G = dict(
    vocab_size=VOCAB, hidden_size=40, intermediate_size=80, num_hidden_layers=4, num_attention_heads=4,
    max_position_embeddings=SEQ, hidden_act="gelu", layer_norm_eps=1e-5, attention_dropout=0.0,
    dropout=0.0, initializer_factor=1.0, initializer_range=0.02, projection_dim=32,
    bos_token_id=0, eos_token_id=2, pad_token_id=1,
)

# SD 1.5-like UNet: context width = CLIP_L hidden size so that encode_sd15 chains into it.
UNET_SD15 = dict(
    sample_size=8, in_channels=4, out_channels=4, center_input_sample=False, flip_sin_to_cos=True, freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(8, 12, 12), layers_per_block=2, downsample_padding=1, mid_block_scale_factor=1,
    act_fn="silu", norm_num_groups=4, norm_eps=1e-5, cross_attention_dim=CLIP_L["hidden_size"],
    attention_head_dim=2, use_linear_projection=False,
)

# SDXL-like UNet: context width = CLIP_L hidden + CLIP_G hidden, pooled width = CLIP_G projection_dim.
ADD_TIME_DIM = 8
UNET_SDXL = dict(
    sample_size=8, in_channels=4, out_channels=4, center_input_sample=False, flip_sin_to_cos=True, freq_shift=0,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(4, 8, 12), layers_per_block=2, transformer_layers_per_block=(1, 1, 2),
    downsample_padding=1, mid_block_scale_factor=1, act_fn="silu", norm_num_groups=2, norm_eps=1e-5,
    cross_attention_dim=CLIP_L["hidden_size"] + CLIP_G["hidden_size"], attention_head_dim=(1, 2, 4),
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=ADD_TIME_DIM,
    projection_class_embeddings_input_dim=6 * ADD_TIME_DIM + CLIP_G["projection_dim"],
)

VAE = dict(
    in_channels=3, out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(8, 16, 16), layers_per_block=2, act_fn="silu", latent_channels=4, norm_num_groups=4,
    sample_size=32, scaling_factor=0.18215,
)

SMALL_MODELS = ("unet_sd15", "unet_sdxl", "vae", "vae_legacy", "clip_l", "clip_l_bf16", "clip_g")

SEEDS = {
    "unet_sd15": 1501, "unet_sdxl": 1502, "vae": 1503, "clip_l": 1504, "clip_g": 1505,
    "unet_sd15_ref": 2501, "unet_sdxl_ref": 2502, "vae_ref": 2503, "clip_ref": 2504,
    "encode_sd15_ref": 2505, "encode_sdxl_ref": 2506,
}

# ----------------------------------------------------------------------------------------------------------------
# Real configurations (SD 1.5 and SDXL base), as published in the diffusers folders (see README for sources)
# ----------------------------------------------------------------------------------------------------------------

TOKENIZER_CONFIG_L = {
    "add_prefix_space": False,
    "added_tokens_decoder": {
        "49406": {"content": "<|startoftext|>", "lstrip": False, "normalized": True, "rstrip": False,
                  "single_word": False, "special": False},
        "49407": {"content": "<|endoftext|>", "lstrip": False, "normalized": False, "rstrip": False,
                  "single_word": False, "special": False},
    },
    "additional_special_tokens": [],
    "bos_token": "<|startoftext|>",
    "clean_up_tokenization_spaces": True,
    "do_lower_case": True,
    "eos_token": "<|endoftext|>",
    "errors": "replace",
    "model_max_length": 77,
    "pad_token": "<|endoftext|>",
    "tokenizer_class": "CLIPTokenizer",
    "unk_token": "<|endoftext|>",
}
SPECIAL_TOKENS_L = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                    "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
# The second (OpenCLIP bigG) tokenizer differs only in its pad token "!" (id 0)
TOKENIZER_CONFIG_G = {
    **TOKENIZER_CONFIG_L,
    "added_tokens_decoder": {
        "0": {"content": "!", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
              "special": True},
        **TOKENIZER_CONFIG_L["added_tokens_decoder"],
    },
    "pad_token": "!",
}
SPECIAL_TOKENS_G = {**SPECIAL_TOKENS_L, "pad_token": "!"}

CLIP_L_REAL = {
    "architectures": ["CLIPTextModel"], "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0,
    "eos_token_id": 2, "hidden_act": "quick_gelu", "hidden_size": 768, "initializer_factor": 1.0,
    "initializer_range": 0.02, "intermediate_size": 3072, "layer_norm_eps": 1e-05, "max_position_embeddings": 77,
    "model_type": "clip_text_model", "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 1,
    "projection_dim": 768, "torch_dtype": "float32", "transformers_version": "4.37.2", "vocab_size": 49408,
}

REAL_SD15 = {
    "model_index.json": {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.18.0.dev0",
        "feature_extractor": ["transformers", "CLIPFeatureExtractor"], "requires_safety_checker": True,
        "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
        "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    },
    "unet/config.json": {
        "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.17.0.dev0", "act_fn": "silu",
        "addition_embed_type": None, "addition_embed_type_num_heads": 64, "attention_head_dim": 8,
        "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": False, "class_embed_type": None,
        "class_embeddings_concat": False, "conv_in_kernel": 3, "conv_out_kernel": 3, "cross_attention_dim": 768,
        "cross_attention_norm": None,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "downsample_padding": 1, "dual_cross_attention": False, "encoder_hid_dim": None, "flip_sin_to_cos": True,
        "freq_shift": 0, "in_channels": 4, "layers_per_block": 2, "mid_block_only_cross_attention": None,
        "mid_block_scale_factor": 1, "mid_block_type": "UNetMidBlock2DCrossAttn", "norm_eps": 1e-05,
        "norm_num_groups": 32, "num_class_embeds": None, "only_cross_attention": False, "out_channels": 4,
        "projection_class_embeddings_input_dim": None, "resnet_out_scale_factor": 1.0,
        "resnet_skip_time_act": False, "resnet_time_scale_shift": "default", "sample_size": 64,
        "time_cond_proj_dim": None, "time_embedding_act_fn": None, "time_embedding_dim": None,
        "time_embedding_type": "positional", "timestep_post_act": None,
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "upcast_attention": None, "use_linear_projection": False,
    },
    "vae/config.json": {
        "_class_name": "AutoencoderKL", "_diffusers_version": "0.6.0", "act_fn": "silu",
        "block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4,
        "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3,
        "sample_size": 512, "scaling_factor": 0.18215, "up_block_types": ["UpDecoderBlock2D"] * 4,
    },
    "text_encoder/config.json": CLIP_L_REAL,
    "scheduler/scheduler_config.json": {
        "_class_name": "PNDMScheduler", "_diffusers_version": "0.17.0.dev0", "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False, "clip_sample_range": 1.0,
        "dynamic_thresholding_ratio": 0.995, "num_train_timesteps": 1000, "prediction_type": "epsilon",
        "sample_max_value": 1.0, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
        "thresholding": False, "trained_betas": None,
    },
    "tokenizer/tokenizer_config.json": TOKENIZER_CONFIG_L,
    "tokenizer/special_tokens_map.json": SPECIAL_TOKENS_L,
}

REAL_SDXL = {
    "model_index.json": {
        "_class_name": "StableDiffusionXLPipeline", "_diffusers_version": "0.22.0.dev0",
        "force_zeros_for_empty_prompt": True, "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
    },
    "unet/config.json": {
        "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.22.0.dev0", "act_fn": "silu",
        "addition_embed_type": "text_time", "addition_embed_type_num_heads": 64, "addition_time_embed_dim": 256,
        "attention_head_dim": [5, 10, 20], "attention_type": "default", "block_out_channels": [320, 640, 1280],
        "center_input_sample": False, "class_embed_type": None, "class_embeddings_concat": False,
        "conv_in_kernel": 3, "conv_out_kernel": 3, "cross_attention_dim": 2048, "cross_attention_norm": None,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "downsample_padding": 1, "dropout": 0.0, "dual_cross_attention": False, "encoder_hid_dim": None,
        "encoder_hid_dim_type": None, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4,
        "layers_per_block": 2, "mid_block_only_cross_attention": None, "mid_block_scale_factor": 1,
        "mid_block_type": "UNetMidBlock2DCrossAttn", "norm_eps": 1e-05, "norm_num_groups": 32,
        "num_attention_heads": None, "num_class_embeds": None, "only_cross_attention": False, "out_channels": 4,
        "projection_class_embeddings_input_dim": 2816, "resnet_out_scale_factor": 1.0,
        "resnet_skip_time_act": False, "resnet_time_scale_shift": "default", "sample_size": 128,
        "time_cond_proj_dim": None, "time_embedding_act_fn": None, "time_embedding_dim": None,
        "time_embedding_type": "positional", "timestep_post_act": None, "transformer_layers_per_block": [1, 2, 10],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], "upcast_attention": None,
        "use_linear_projection": True,
    },
    "vae/config.json": {
        "_class_name": "AutoencoderKL", "_diffusers_version": "0.22.0.dev0", "act_fn": "silu",
        "block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4,
        "force_upcast": True, "in_channels": 3, "latent_channels": 4, "layers_per_block": 2,
        "norm_num_groups": 32, "out_channels": 3, "sample_size": 1024, "scaling_factor": 0.13025,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
    },
    "text_encoder/config.json": dict(CLIP_L_REAL, torch_dtype="float16", transformers_version="4.34.0"),
    "text_encoder_2/config.json": {
        "architectures": ["CLIPTextModelWithProjection"], "attention_dropout": 0.0, "bos_token_id": 0,
        "dropout": 0.0, "eos_token_id": 2, "hidden_act": "gelu", "hidden_size": 1280, "initializer_factor": 1.0,
        "initializer_range": 0.02, "intermediate_size": 5120, "layer_norm_eps": 1e-05,
        "max_position_embeddings": 77, "model_type": "clip_text_model", "num_attention_heads": 20,
        "num_hidden_layers": 32, "pad_token_id": 1, "projection_dim": 1280, "torch_dtype": "float16",
        "transformers_version": "4.34.0", "vocab_size": 49408,
    },
    "scheduler/scheduler_config.json": {
        "_class_name": "EulerDiscreteScheduler", "_diffusers_version": "0.22.0.dev0", "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
        "interpolation_type": "linear", "num_train_timesteps": 1000, "prediction_type": "epsilon",
        "sample_max_value": 1.0, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
        "timestep_spacing": "leading", "trained_betas": None, "use_karras_sigmas": False,
    },
    "tokenizer/tokenizer_config.json": TOKENIZER_CONFIG_L,
    "tokenizer/special_tokens_map.json": SPECIAL_TOKENS_L,
    "tokenizer_2/tokenizer_config.json": TOKENIZER_CONFIG_G,
    "tokenizer_2/special_tokens_map.json": SPECIAL_TOKENS_G,
}

# (tensors, parameters) expected for the real models
EXPECTED_COUNTS = {
    "sd15/unet": (686, 859_520_964),
    "sd15/vae": (248, 83_653_863),
    "sd15/text_encoder": (196, 123_060_480),
    "sdxl/unet": (1680, 2_567_463_684),
    "sdxl/vae": (248, 83_653_863),
    "sdxl/text_encoder": (196, 123_060_480),
    "sdxl/text_encoder_2": (517, 694_659_840),
}

# ----------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------


def setup_determinism():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)


def rel(path):
    return os.path.relpath(path, ROOT)


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def randn(gen, *shape):
    return torch.randn(*shape, generator=gen, dtype=torch.float32)


@torch.no_grad()
def reinit(model, seed, emb_std=0.5, bias_std=0.1, norm_std=0.1):
    """Re-initialise every parameter with non-trivial values.

    Linear / Conv weights ~ N(0, 1/fan_in) (keeps activations O(1)), their biases ~ N(0, bias_std^2),
    GroupNorm / LayerNorm weights ~ 1 + N(0, norm_std^2), biases ~ N(0, norm_std^2), embeddings ~ N(0, emb_std^2).
    Fails if any parameter is not covered, so nothing keeps diffusers' zero initialisation.
    """
    gen = torch.Generator().manual_seed(seed)
    done = set()
    for _, mod in model.named_modules():
        if isinstance(mod, (nn.Linear, nn.Conv2d)):
            fan_in = mod.weight[0].numel()
            mod.weight.copy_(randn(gen, *mod.weight.shape) / fan_in ** 0.5)
            done.add(id(mod.weight))
            if mod.bias is not None:
                mod.bias.copy_(bias_std * randn(gen, *mod.bias.shape))
                done.add(id(mod.bias))
        elif isinstance(mod, (nn.GroupNorm, nn.LayerNorm)):
            mod.weight.copy_(1.0 + norm_std * randn(gen, *mod.weight.shape))
            mod.bias.copy_(norm_std * randn(gen, *mod.bias.shape))
            done.update((id(mod.weight), id(mod.bias)))
        elif isinstance(mod, nn.Embedding):
            mod.weight.copy_(emb_std * randn(gen, *mod.weight.shape))
            done.add(id(mod.weight))
    missing = [n for n, p in model.named_parameters() if id(p) not in done]
    if missing:
        raise RuntimeError(f"parameters not re-initialised: {missing}")


def write_safetensors(path, tensors, metadata):
    """Byte-reproducible safetensors writer (sorted names, sorted metadata, header padded to 8 bytes).

    safetensors.torch.save_file serialises the metadata map in hash order, which makes otherwise identical files
    differ from run to run; this writer produces the same bytes for the same content.
    """
    dtypes = {torch.float32: "F32", torch.int32: "I32"}
    header = {"__metadata__": dict(sorted(metadata.items()))}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name]
        data = t.numpy().astype(t.numpy().dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": dtypes[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * (-len(hjson) % 8)
    with open(path, "wb") as f:
        f.write(len(hjson).to_bytes(8, "little"))
        f.write(hjson)
        for b in blobs:
            f.write(b)


def save_ref(path, tensors, description, extra=None):
    out = {}
    for k, v in tensors.items():
        v = v.detach().contiguous()
        if v.dtype not in (torch.float32, torch.int32):
            raise TypeError(f"{k}: unexpected dtype {v.dtype}")
        out[k] = v
    meta = {"generator": "tools/reference/make_model_fixtures.py", "description": description,
            "gradient_convention": GRAD_CONVENTION}
    meta.update({f"version.{k}": v for k, v in VERSIONS.items()})
    if extra:
        meta.update(extra)
    write_safetensors(path, out, meta)
    check = safetensors.torch.load_file(path)
    assert check.keys() == out.keys() and all(torch.equal(check[k], out[k]) for k in out)
    print(f"  wrote {rel(path)} ({os.path.getsize(path)} bytes, {len(out)} tensors)")


def stats(name, t):
    t = t.detach().float()
    if not torch.isfinite(t).all():
        raise RuntimeError(f"{name}: non-finite values")
    std = t.std().item() if t.numel() > 1 else 0.0
    return f"{name:34s} shape={list(t.shape)} mean={t.mean().item():+.4f} std={std:.4f} " \
           f"absmax={t.abs().max().item():.4f}"


def report_grads(label, names, grads):
    """Print a summary of the parameter gradients; list exact zeros and near-zeros."""
    norms = {n: g.abs().max().item() for n, g in zip(names, grads)}
    zero = [n for n, v in norms.items() if v == 0.0]
    med = float(np.median(list(norms.values())))
    tiny = sorted((v, n) for n, v in norms.items() if 0.0 < v < 1e-5 * med)
    print(f"  {label}: {len(names)} parameter grads, median max|g| = {med:.3e}, "
          f"min max|g| = {min(norms.values()):.3e}")
    for n in zero:
        print(f"    EXACTLY ZERO grad: {n}")
    for v, n in tiny:
        print(f"    near-zero grad (max|g| = {v:.3e}): {n}")
    return zero, [n for _, n in tiny]


# ----------------------------------------------------------------------------------------------------------------
# Token ids
# ----------------------------------------------------------------------------------------------------------------


def make_ids(gen, n_content, pad_id):
    content = torch.randint(1, BOS, (n_content,), generator=gen)
    ids = torch.full((SEQ,), pad_id, dtype=torch.int64)
    ids[0] = BOS
    ids[1:1 + n_content] = content
    ids[1 + n_content] = EOS
    return ids


# ----------------------------------------------------------------------------------------------------------------
# Model creation
# ----------------------------------------------------------------------------------------------------------------


def create_models():
    print("== creating small models")
    for name in SMALL_MODELS:  # only the folders written here; other fixtures under models/ are left alone
        d = os.path.join(MODELS, name)
        if os.path.isdir(d):
            shutil.rmtree(d)
    os.makedirs(MODELS, exist_ok=True)

    for name, cfg in (("unet_sd15", UNET_SD15), ("unet_sdxl", UNET_SDXL)):
        torch.manual_seed(SEEDS[name])
        m = UNet2DConditionModel(**cfg)
        reinit(m, SEEDS[name])
        m.save_pretrained(os.path.join(MODELS, name), safe_serialization=True)

    torch.manual_seed(SEEDS["vae"])
    vae = AutoencoderKL(**VAE)
    reinit(vae, SEEDS["vae"])
    vae.save_pretrained(os.path.join(MODELS, "vae"), safe_serialization=True)
    write_legacy_vae(os.path.join(MODELS, "vae"), os.path.join(MODELS, "vae_legacy"))

    torch.manual_seed(SEEDS["clip_l"])
    clip_l = CLIPTextModel(CLIPTextConfig(**CLIP_L))
    reinit(clip_l, SEEDS["clip_l"])
    clip_l.save_pretrained(os.path.join(MODELS, "clip_l"), safe_serialization=True)
    clip_l.to(torch.bfloat16).save_pretrained(os.path.join(MODELS, "clip_l_bf16"), safe_serialization=True)

    torch.manual_seed(SEEDS["clip_g"])
    clip_g = CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_G))
    reinit(clip_g, SEEDS["clip_g"])
    clip_g.save_pretrained(os.path.join(MODELS, "clip_g"), safe_serialization=True)

    for name in SMALL_MODELS:
        d = os.path.join(MODELS, name)
        for f in sorted(os.listdir(d)):
            print(f"  {rel(os.path.join(d, f))}: {os.path.getsize(os.path.join(d, f))} bytes")


LEGACY_RENAME = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


def write_legacy_vae(src, dst):
    """Copy of the VAE whose mid-block attentions use the legacy query/key/value/proj_attn tensor names."""
    os.makedirs(dst, exist_ok=True)
    shutil.copy(os.path.join(src, "config.json"), os.path.join(dst, "config.json"))
    sd = safetensors.torch.load_file(os.path.join(src, "diffusion_pytorch_model.safetensors"))
    out = {}
    renamed = 0
    for k, v in sd.items():
        nk = k
        if ".mid_block.attentions." in k:
            for new, old in LEGACY_RENAME.items():
                marker = f".{new}."
                if marker in k:
                    nk = k.replace(marker, f".{old}.")
                    renamed += 1
        out[nk] = v
    assert renamed == 16, renamed  # encoder + decoder, 4 linears x (weight, bias)
    safetensors.torch.save_file(out, os.path.join(dst, "diffusion_pytorch_model.safetensors"),
                                metadata={"format": "pt"})


# ----------------------------------------------------------------------------------------------------------------
# Reference data
# ----------------------------------------------------------------------------------------------------------------


def load_unet(name):
    return UNet2DConditionModel.from_pretrained(os.path.join(MODELS, name)).eval()


def load_clip(name, cls):
    return cls.from_pretrained(os.path.join(MODELS, name), attn_implementation="eager").eval().float()


def unet_reference(name, sdxl):
    print(f"== {name} reference")
    unet = load_unet(name)
    gen = torch.Generator().manual_seed(SEEDS[name + "_ref"])
    B = 2
    cfg = unet.config
    sample = randn(gen, B, cfg.in_channels, cfg.sample_size, cfg.sample_size)
    timestep = torch.tensor([981.0, 21.0])
    ehs = randn(gen, B, SEQ, cfg.cross_attention_dim)
    inputs = {"sample": sample, "timestep": timestep, "encoder_hidden_states": ehs}
    leaves = [sample.requires_grad_(True), ehs.requires_grad_(True)]
    kwargs = {}
    if sdxl:
        text_embeds = randn(gen, B, CLIP_G["projection_dim"])
        time_ids = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0],
                                 [96.0, 128.0, 16.0, 8.0, 64.0, 64.0]])
        inputs.update(text_embeds=text_embeds, time_ids=time_ids)
        leaves.append(text_embeds.requires_grad_(True))
        kwargs["added_cond_kwargs"] = {"text_embeds": text_embeds, "time_ids": time_ids}
    out = unet(sample, timestep, encoder_hidden_states=ehs, **kwargs).sample
    dout = randn(gen, *out.shape)
    names, params = zip(*unet.named_parameters())
    grads = torch.autograd.grad((out * dout).sum(), leaves + list(params))
    t = dict(inputs)
    t["out"] = out
    t["dout"] = dout
    t["grad_sample"] = grads[0]
    t["grad_encoder_hidden_states"] = grads[1]
    if sdxl:
        t["grad_text_embeds"] = grads[2]
    pg = grads[len(leaves):]
    for n, g in zip(names, pg):
        t["grad." + n] = g
    for k in t:
        if not k.startswith("grad."):
            print("  " + stats(k, t[k]))
    zero, tiny = report_grads(name, names, pg)
    desc = (f"{name}: out = UNet2DConditionModel(sample, timestep, encoder_hidden_states"
            + (", added_cond_kwargs={text_embeds, time_ids}" if sdxl else "") + ").sample; per-sample timesteps; "
            "grad.<param> for every parameter of models/" + name)
    save_ref(os.path.join(FIX, f"{name}_ref.safetensors"), t, desc, {"model": f"tests/fixtures/models/{name}"})
    return zero, tiny


def vae_reference():
    print("== vae reference")
    vae = AutoencoderKL.from_pretrained(os.path.join(MODELS, "vae")).eval()
    legacy = AutoencoderKL.from_pretrained(os.path.join(MODELS, "vae_legacy")).eval()
    sd_a, sd_b = vae.state_dict(), legacy.state_dict()
    assert sd_a.keys() == sd_b.keys()
    for k in sd_a:
        assert torch.equal(sd_a[k], sd_b[k]), k
    gen = torch.Generator().manual_seed(SEEDS["vae_ref"])
    sf = vae.config.scaling_factor
    latents = randn(gen, 1, vae.config.latent_channels, 8, 8).requires_grad_(True)
    z = latents / sf  # exactly what the pipelines do before vae.decode
    image = vae.decode(z).sample
    dout = randn(gen, *image.shape)
    dec = [(n, p) for n, p in vae.named_parameters() if n.startswith(("decoder.", "post_quant_conv."))]
    names, params = zip(*dec)
    grads = torch.autograd.grad((image * dout).sum(), [latents] + list(params))
    with torch.no_grad():
        image_legacy = legacy.decode(z).sample
    assert torch.equal(image_legacy, image), "legacy-named VAE decodes differently"

    image_in = torch.rand(1, 3, 32, 32, generator=gen) * 2.0 - 1.0
    with torch.no_grad():
        h = vae.encoder(image_in)
        moments = vae.quant_conv(h)
        dist = vae.encode(image_in).latent_dist
        assert torch.equal(torch.cat([dist.mean, dist.logvar], 1), torch.cat(
            [moments[:, :4], moments[:, 4:].clamp(-30.0, 20.0)], 1))
    t = {"latents": latents, "z": z, "image": image, "dout": dout, "grad_latents": grads[0],
         "image_in": image_in, "enc_moments": moments, "enc_mean": dist.mean, "enc_logvar": dist.logvar}
    pg = grads[1:]
    for k in list(t):
        print("  " + stats(k, t[k]))
    for n, g in zip(names, pg):
        t["grad." + n] = g
    zero, tiny = report_grads("vae decoder", names, pg)
    desc = ("vae: z = latents / scaling_factor; image = AutoencoderKL.decode(z).sample; grad_latents w.r.t. the "
            "pre-division latents; grad.<param> for decoder.* and post_quant_conv.*; encoder: image_in -> "
            "enc_moments = quant_conv(encoder(image_in)), enc_mean / enc_logvar = latent_dist.mean / .logvar "
            "(logvar clamped to [-30, 20]). Also valid for models/vae_legacy (same values, legacy attention names).")
    save_ref(os.path.join(FIX, "vae_ref.safetensors"), t, desc,
             {"model": "tests/fixtures/models/vae", "scaling_factor": repr(sf)})
    return zero, tiny


def clip_ids(gen_seed):
    gen = torch.Generator().manual_seed(gen_seed)
    short = make_ids(gen, 6, EOS)
    long = make_ids(gen, SEQ - 2, EOS)
    return short, long


def clip_forward(model, ids):
    out = model(input_ids=ids, output_hidden_states=True)
    hs = out.hidden_states
    n = model.config.num_hidden_layers
    assert len(hs) == n + 1
    tm = getattr(model, "text_model", model)  # transformers 5 flattens CLIPTextModel
    with torch.no_grad():
        emb = tm.embeddings(input_ids=ids)
        assert torch.equal(emb, hs[0]), "hidden_states[0] is not the embedding output"
        assert torch.allclose(tm.final_layer_norm(hs[-1]), out.last_hidden_state, atol=0, rtol=0)
    return out


def clip_reference(name, cls, pad_id):
    print(f"== {name} reference")
    model = load_clip(name, cls)
    short, long = clip_ids(SEEDS["clip_ref"])
    if pad_id != EOS:
        short = torch.where(torch.arange(SEQ) > int((short == EOS).nonzero()[0]), torch.tensor(pad_id), short)
    ids = torch.stack([short, long])
    with torch.no_grad():
        out = clip_forward(model, ids)
    t = {"input_ids": ids.to(torch.int32), "last_hidden_state": out.last_hidden_state}
    for i, h in enumerate(out.hidden_states):
        t[f"hidden_states.{i}"] = h
    eos_pos = ids.argmax(-1)
    pooled_unproj = out.last_hidden_state[torch.arange(2), eos_pos]
    if cls is CLIPTextModelWithProjection:
        t["pooled"] = out.text_embeds
        t["pooled_unprojected"] = pooled_unproj
        desc_p = "pooled = text_embeds = text_projection(last_hidden_state[b, first argmax(input_ids[b])])"
    else:
        assert torch.equal(out.pooler_output, pooled_unproj)
        t["pooled"] = out.pooler_output
        desc_p = "pooled = pooler_output = last_hidden_state[b, first argmax(input_ids[b])]"
    for k in t:
        if k != "input_ids":
            print("  " + stats(k, t[k]))
    print(f"  eos positions {eos_pos.tolist()}")
    dtype_note = ""
    if name.endswith("_bf16"):
        dtype_note = " Weights are stored as BF16 on disk; outputs computed with those weights upcast to float32."
    desc = (f"{name}: {cls.__name__}(input_ids, output_hidden_states=True); hidden_states.0 = embeddings, "
            f"hidden_states.i = output of layer i (before final_layer_norm), last_hidden_state = "
            f"final_layer_norm(hidden_states.{model.config.num_hidden_layers}); {desc_p}. Row 0: short prompt "
            f"padded with {pad_id}; row 1: 77 tokens. BOS={BOS}, EOS={EOS}.{dtype_note}")
    save_ref(os.path.join(FIX, f"{name}_ref.safetensors"), t, desc, {"model": f"tests/fixtures/models/{name}"})


def ddim_scheduler(kind):
    with open(os.path.join(CONFIGS, kind, "scheduler", "scheduler_config.json")) as f:
        cfg = json.load(f)
    s = DDIMScheduler.from_config(cfg)
    s.set_timesteps(50)
    return s


def encode_sd15_reference():
    print("== encode_sd15 reference")
    clip = load_clip("clip_l", CLIPTextModel)
    unet = load_unet("unet_sd15")
    gen = torch.Generator().manual_seed(SEEDS["encode_sd15_ref"])
    ids = make_ids(gen, 5, EOS)[None]
    uncond_ids = make_ids(gen, 0, EOS)[None]  # tokenizer("") -> [BOS, EOS, EOS, ...]
    sched = ddim_scheduler("sd15")
    t_step = sched.timesteps[0]
    guidance = 7.5
    with torch.no_grad():
        prompt_embeds = clip(ids)[0]
        negative_prompt_embeds = clip(uncond_ids)[0]
        latents = randn(gen, 1, 4, 8, 8)
        ehs = torch.cat([negative_prompt_embeds, prompt_embeds])
        lmi = torch.cat([latents] * 2)
        unet_out = unet(lmi, t_step, encoder_hidden_states=ehs).sample
        uncond, text = unet_out.chunk(2)
        noise_pred = uncond + guidance * (text - uncond)
        prev = sched.step(noise_pred, t_step, latents, eta=0.0).prev_sample
    t = {"input_ids": ids.to(torch.int32), "uncond_input_ids": uncond_ids.to(torch.int32),
         "prompt_embeds": prompt_embeds, "negative_prompt_embeds": negative_prompt_embeds,
         "encoder_hidden_states": ehs, "latents": latents, "timestep": t_step.to(torch.float32).reshape(1),
         "unet_out": unet_out, "guidance_scale": torch.tensor([guidance]), "noise_pred": noise_pred,
         "prev_sample": prev,
         "alpha_prod_t": sched.alphas_cumprod[int(t_step)].reshape(1),
         "alpha_prod_t_prev": sched.alphas_cumprod[int(t_step) - 1000 // 50].reshape(1)}
    for k in t:
        if "ids" not in k:
            print("  " + stats(k, t[k]))
    desc = ("encode_sd15: prompt_embeds = clip_l(input_ids).last_hidden_state (after final LN); "
            "negative_prompt_embeds from the empty prompt [BOS, EOS, EOS...]; encoder_hidden_states = "
            "cat([negative, positive]); one CFG step on unet_sd15 with latent_model_input = cat([latents]*2), "
            "noise_pred = uncond + guidance_scale*(text - uncond); prev_sample = DDIMScheduler (50 steps, config "
            "configs/models/sd15/scheduler, eta 0).step(noise_pred, timestep, latents)")
    save_ref(os.path.join(FIX, "encode_sd15_ref.safetensors"), t, desc,
             {"models": "tests/fixtures/models/clip_l, tests/fixtures/models/unet_sd15"})


def encode_sdxl_reference():
    print("== encode_sdxl reference")
    clip_l = load_clip("clip_l", CLIPTextModel)
    clip_g = load_clip("clip_g", CLIPTextModelWithProjection)
    unet = load_unet("unet_sdxl")
    gen = torch.Generator().manual_seed(SEEDS["encode_sdxl_ref"])
    ids = make_ids(gen, 5, EOS)[None]              # tokenizer: pads with EOS
    ids_2 = ids.clone()                            # tokenizer_2: same tokens, pads with 0 ("!")
    ids_2[0, 1 + 5 + 1:] = 0
    sched = ddim_scheduler("sdxl")
    t_step = sched.timesteps[0]
    guidance = 5.0
    with torch.no_grad():
        o1 = clip_l(ids, output_hidden_states=True)
        o2 = clip_g(ids_2, output_hidden_states=True)
        prompt_embeds = torch.cat([o1.hidden_states[-2], o2.hidden_states[-2]], dim=-1)
        pooled = o2.text_embeds
        negative_prompt_embeds = torch.zeros_like(prompt_embeds)     # force_zeros_for_empty_prompt
        negative_pooled = torch.zeros_like(pooled)
        add_time_ids = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]] * 2)
        latents = randn(gen, 1, 4, 8, 8)
        ehs = torch.cat([negative_prompt_embeds, prompt_embeds])
        text_embeds = torch.cat([negative_pooled, pooled])
        lmi = torch.cat([latents] * 2)
        unet_out = unet(lmi, t_step, encoder_hidden_states=ehs,
                        added_cond_kwargs={"text_embeds": text_embeds, "time_ids": add_time_ids}).sample
        uncond, text = unet_out.chunk(2)
        noise_pred = uncond + guidance * (text - uncond)
        prev = sched.step(noise_pred, t_step, latents, eta=0.0).prev_sample
    t = {"input_ids": ids.to(torch.int32), "input_ids_2": ids_2.to(torch.int32),
         "prompt_embeds": prompt_embeds, "pooled_prompt_embeds": pooled,
         "negative_prompt_embeds": negative_prompt_embeds, "negative_pooled_prompt_embeds": negative_pooled,
         "encoder_hidden_states": ehs, "text_embeds": text_embeds, "time_ids": add_time_ids,
         "latents": latents, "timestep": t_step.to(torch.float32).reshape(1), "unet_out": unet_out,
         "guidance_scale": torch.tensor([guidance]), "noise_pred": noise_pred, "prev_sample": prev,
         "alpha_prod_t": sched.alphas_cumprod[int(t_step)].reshape(1),
         "alpha_prod_t_prev": sched.alphas_cumprod[int(t_step) - 1000 // 50].reshape(1)}
    for k in t:
        if "ids" not in k:
            print("  " + stats(k, t[k]))
    desc = ("encode_sdxl: prompt_embeds = cat(clip_l(input_ids).hidden_states[-2], "
            "clip_g(input_ids_2).hidden_states[-2], dim=-1) (no final LN); pooled_prompt_embeds = "
            "clip_g(input_ids_2).text_embeds; negatives are zeros (force_zeros_for_empty_prompt); "
            "encoder_hidden_states / text_embeds / time_ids = cat([negative, positive]); one CFG step on unet_sdxl "
            "with latent_model_input = cat([latents]*2); prev_sample = DDIMScheduler (50 steps, config "
            "configs/models/sdxl/scheduler, eta 0).step(noise_pred, timestep, latents)")
    save_ref(os.path.join(FIX, "encode_sdxl_ref.safetensors"), t, desc,
             {"models": "tests/fixtures/models/clip_l, tests/fixtures/models/clip_g, "
                        "tests/fixtures/models/unet_sdxl"})


# ----------------------------------------------------------------------------------------------------------------
# Real configs
# ----------------------------------------------------------------------------------------------------------------


def write_real_configs():
    print("== writing real configs")
    for kind, files in (("sd15", REAL_SD15), ("sdxl", REAL_SDXL)):
        d = os.path.join(CONFIGS, kind)
        for rp, obj in files.items():
            write_json(os.path.join(d, rp), obj)
            print(f"  {rel(os.path.join(d, rp))}")


def verify_real_configs():
    print("== verifying real configs (meta device parameter counts)")
    ok = True
    for key, (n_tensors, n_params) in EXPECTED_COUNTS.items():
        kind, comp = key.split("/")
        d = os.path.join(CONFIGS, kind, comp)
        with open(os.path.join(d, "config.json")) as f:
            cfg = json.load(f)
        with accelerate.init_empty_weights():
            if comp == "unet":
                m = UNet2DConditionModel.from_config(cfg)
            elif comp == "vae":
                m = AutoencoderKL.from_config(cfg)
            else:
                tcfg = CLIPTextConfig.from_pretrained(d)
                cls = CLIPTextModelWithProjection if comp == "text_encoder_2" else CLIPTextModel
                m = cls(tcfg)
        params = list(m.named_parameters())
        got_p = sum(p.numel() for _, p in params)
        assert all(p.device.type == "meta" for _, p in params)
        good = got_p == n_params and len(params) == n_tensors
        ok &= good
        print(f"  {key:22s} {m.__class__.__name__:28s} tensors={len(params):5d} params={got_p:,} "
              f"(expected {n_tensors} / {n_params:,}) {'OK' if good else 'MISMATCH'}")
    if not ok:
        raise SystemExit("real config parameter counts do not match")


# ----------------------------------------------------------------------------------------------------------------


def fp64_agreement():
    """Recompute the UNet / VAE / CLIP references in float64 and print how far the stored float32 values are.

    Informational only (nothing is written): it tells what tolerance a float32 reimplementation can expect.
    """
    print("== float32 reference vs float64 recomputation (max|ref32 - x64| / max|x64|)")

    def rerr(a, b):
        a, b = a.double(), b.double()
        return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()

    for name, sdxl in (("unet_sd15", False), ("unet_sdxl", True)):
        ref = safetensors.torch.load_file(os.path.join(FIX, f"{name}_ref.safetensors"))
        unet = load_unet(name).double()
        sample = ref["sample"].double().requires_grad_(True)
        ehs = ref["encoder_hidden_states"].double().requires_grad_(True)
        kwargs = {}
        if sdxl:
            kwargs["added_cond_kwargs"] = {"text_embeds": ref["text_embeds"].double(),
                                           "time_ids": ref["time_ids"].double()}
        out = unet(sample, ref["timestep"].double(), encoder_hidden_states=ehs, **kwargs).sample
        names, params = zip(*unet.named_parameters())
        grads = torch.autograd.grad((out * ref["dout"].double()).sum(), [sample, ehs] + list(params))
        pg = max(rerr(ref["grad." + n], g) for n, g in zip(names, grads[2:]))
        print(f"  {name}: out {rerr(ref['out'], out):.2e}  grad_sample {rerr(ref['grad_sample'], grads[0]):.2e}  "
              f"grad_encoder_hidden_states {rerr(ref['grad_encoder_hidden_states'], grads[1]):.2e}  "
              f"worst grad.<param> {pg:.2e}")

    ref = safetensors.torch.load_file(os.path.join(FIX, "vae_ref.safetensors"))
    vae = AutoencoderKL.from_pretrained(os.path.join(MODELS, "vae")).eval().double()
    latents = ref["latents"].double().requires_grad_(True)
    image = vae.decode(latents / vae.config.scaling_factor).sample
    dec = [(n, p) for n, p in vae.named_parameters() if n.startswith(("decoder.", "post_quant_conv."))]
    names, params = zip(*dec)
    grads = torch.autograd.grad((image * ref["dout"].double()).sum(), [latents] + list(params))
    pg = max(rerr(ref["grad." + n], g) for n, g in zip(names, grads[1:]) if not n.endswith("to_k.bias"))
    with torch.no_grad():
        dist = vae.encode(ref["image_in"].double()).latent_dist
    print(f"  vae: image {rerr(ref['image'], image):.2e}  grad_latents {rerr(ref['grad_latents'], grads[0]):.2e}  "
          f"worst grad.<param> (excluding to_k.bias) {pg:.2e}  enc_mean {rerr(ref['enc_mean'], dist.mean):.2e}  "
          f"enc_logvar {rerr(ref['enc_logvar'], dist.logvar):.2e}")

    for name, cls in (("clip_l", CLIPTextModel), ("clip_l_bf16", CLIPTextModel), ("clip_g", CLIPTextModelWithProjection)):
        ref = safetensors.torch.load_file(os.path.join(FIX, f"{name}_ref.safetensors"))
        model = load_clip(name, cls).double()
        with torch.no_grad():
            out = model(input_ids=ref["input_ids"].long(), output_hidden_states=True)
        pooled = out.text_embeds if cls is CLIPTextModelWithProjection else out.pooler_output
        hs = max(rerr(ref[f"hidden_states.{i}"], h) for i, h in enumerate(out.hidden_states))
        print(f"  {name}: last_hidden_state {rerr(ref['last_hidden_state'], out.last_hidden_state):.2e}  "
              f"worst hidden_states.i {hs:.2e}  pooled {rerr(ref['pooled'], pooled):.2e}")


def main():
    setup_determinism()
    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.disable_progress_bar()
    print("versions: " + ", ".join(f"{k} {v}" for k, v in VERSIONS.items()))
    write_real_configs()
    verify_real_configs()
    os.makedirs(FIX, exist_ok=True)
    create_models()
    findings = {}
    findings["unet_sd15"] = unet_reference("unet_sd15", sdxl=False)
    findings["unet_sdxl"] = unet_reference("unet_sdxl", sdxl=True)
    findings["vae"] = vae_reference()
    clip_reference("clip_l", CLIPTextModel, EOS)
    clip_reference("clip_l_bf16", CLIPTextModel, EOS)
    clip_reference("clip_g", CLIPTextModelWithProjection, 0)
    encode_sd15_reference()
    encode_sdxl_reference()
    print("== gradient findings (exactly zero / near zero)")
    for k, (zero, tiny) in findings.items():
        print(f"  {k}: exactly zero: {zero or 'none'}; near zero: {tiny or 'none'}")
    total = 0
    for dp, _, fs in os.walk(FIX):
        total += sum(os.path.getsize(os.path.join(dp, f)) for f in fs)
    print(f"== tests/fixtures total {total} bytes")
    fp64_agreement()


if __name__ == "__main__":
    main()
