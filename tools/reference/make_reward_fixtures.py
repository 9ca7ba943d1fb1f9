#!/usr/bin/env python3
"""Reference data for the CLIP-based rewards (src/rewards/clip_reward.c) and their preprocessing ops (src/ops/resize.c).

Writes, all float32 CPU computations, byte-reproducible:

tests/fixtures/resize_ref.safetensors
    For kernel in {bilinear, bicubic} x antialias in {0, 1} x direction in {down, up}, prefix "<kernel>_aa<a>_<dir>.":
    in [1, 1, H, W], out = F.interpolate(in, size, mode, align_corners=False, antialias), dout (N(0,1)) and
    grad = d(sum(out * dout))/d in. Down: 24x20 -> 7x9 (and 40x36 -> 5x11: many antialias taps); up: 6x5 -> 15x11.

tests/fixtures/models/reward_<name>/ small random-weight CLIP models with the real architectures' options:
    oc_gelu     open_clip CLIP (HPS v2 / ViT-H-14 options: exact GELU, class token, ln_pre, token-0 pool, ln_post,
                proj), image 35, patch 7 (odd 5x5 grid); open_clip_config.json + open_clip_model.safetensors
    hf_quick    transformers CLIPModel, quick_gelu (OpenAI ViT-L/14: aesthetic, clipscore), image 35, patch 5 (7x7)
    hf_gelu     transformers CLIPModel, gelu (PickScore / laion CLIP-H), image 36, patch 12 (3x3)
    aesthetic   the LAION aesthetic MLP layout (layers.{0,2,4,6,7}, no activation) on hf_quick's projection
Weights are rounded to float16 and stored as F16 (the computation is float32 on the rounded values), to keep the
files small.

tests/fixtures/reward_<reward>_ref.safetensors, reward in {hps, pickscore, clipscore, aesthetic}:
    ids [2, T] I32 (tokens, BOS 998 / EOS 999 / pad 0; pooled at the first argmax), text_features [2, E] (projected,
    not normalised), then for image in {sq (1x3x64x64), ns (1x3x24x40)}: <image>.pixel_values (the model input after
    the reward's preprocessing), <image>.image_features [1, E] (projected, not normalised), <image>.score [1] (scored
    against prompt 0) and <image>.grad [1, 3, H, W] = d score / d image. The images are not stored: both sides make
    them with image_values() below (exact in float32).

Preprocessing (docs/REWARDS.md): x01 = clamp(x / 2 + 1/2, 0, 1), then
    hps:                     longest side to S (round), bicubic antialias, zero pad to S x S (left = pad // 2)
    pickscore, clipscore:    shortest side to S (floor of the long side), bicubic antialias, centre crop (floor)
    aesthetic:               the same with torchvision's CenterCrop offsets (round half to even)
then (x01 - mean) / std with the OpenAI mean/std. Scores: hps cos, pickscore exp(logit_scale) cos, clipscore
100 cos, aesthetic MLP(f / |f|).

    tools/reference/.venv/bin/python tools/reference/make_reward_fixtures.py
"""

import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

import open_clip
import transformers
from transformers import CLIPConfig, CLIPModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_model_fixtures import VERSIONS, setup_determinism, write_safetensors  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIX = os.path.join(ROOT, "tests", "fixtures")
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
META = {f"version.{k}": v for k, v in VERSIONS.items()}
META["version.open_clip"] = open_clip.__version__
META["generator"] = "tools/reference/make_reward_fixtures.py"
GRAD = "grad = d(sum(out * dout))/d input (resize); d score / d image (rewards); float32, CPU"


def rel(p):
    return os.path.relpath(p, ROOT)


def save(path, tensors, description):
    meta = dict(META, description=description, gradient_convention=GRAD)
    write_safetensors(path, {k: v.detach().contiguous() for k, v in tensors.items()}, meta)
    print(f"  wrote {rel(path)} ({os.path.getsize(path)} bytes, {len(tensors)} tensors)")


def write_f16(path, sd):
    """Weights file of F16 tensors (safetensors layout, sorted names)."""
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(sd):
        data = sd[name].detach().to(torch.float16).contiguous().numpy().tobytes()
        header[name] = {"dtype": "F16", "shape": list(sd[name].shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    hjson = json.dumps(header, separators=(",", ":")).encode()
    hjson += b" " * (-len(hjson) % 8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(len(hjson).to_bytes(8, "little"))
        f.write(hjson)
        for b in blobs:
            f.write(b)
    print(f"  wrote {rel(path)} ({os.path.getsize(path)} bytes, {len(sd)} tensors)")


@torch.no_grad()
def reinit_f16(model, seed):
    """Every parameter ~ a non-trivial random value, rounded to float16: matrices N(0, 1/fan_in), vectors
    (biases, LN, class embedding) 0.1 N(0,1) (+1 for LN weights), positional/token embeddings 0.5 N(0,1)."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if p.ndim >= 2 and "embedding" not in name:
            fan_in = p[0].numel()
            if name in ("visual.proj", "text_projection"):
                fan_in = p.shape[0]  # open_clip applies these as x @ proj
            v = torch.randn(p.shape, generator=gen) / fan_in ** 0.5
        elif p.ndim >= 2 or "embedding" in name and "class" not in name:
            v = 0.5 * torch.randn(p.shape, generator=gen)
        elif "logit_scale" in name:
            v = torch.tensor(2.0).reshape(p.shape)
        else:
            v = 0.1 * torch.randn(p.shape, generator=gen)
            if ("ln" in name or "norm" in name or "layrnorm" in name) and name.endswith("weight"):
                v = v + 1.0
        p.copy_(v.to(torch.float16).to(torch.float32))


def image_values(shape, salt):
    """Deterministic test image in [-1.25, 1.25) (values outside [-1, 1] exercise the clamp), exact in float32."""
    n = int(np.prod(shape))
    i = np.arange(n, dtype=np.uint64)
    h = ((i + np.uint64(salt)) * np.uint64(2654435761)) % np.uint64(1 << 32)
    v = (h >> np.uint64(8)).astype(np.float64) / float(1 << 24) * 2.5 - 1.25
    return torch.from_numpy(v.astype(np.float32).reshape(shape))


# ----------------------------------------------------------------------------------------------------------------
def make_resize():
    out = {}
    gen = torch.Generator().manual_seed(501)
    cases = {"down": ((24, 20), (7, 9)), "down2": ((40, 36), (5, 11)), "up": ((6, 5), (15, 11))}
    for mode in ["bilinear", "bicubic"]:
        for aa in [0, 1]:
            for d, (src, dst) in cases.items():
                p = f"{mode}_aa{aa}_{d}."
                x = torch.randn(1, 1, *src, generator=gen).requires_grad_(True)
                y = F.interpolate(x, size=dst, mode=mode, align_corners=False, antialias=bool(aa))
                dy = torch.randn(y.shape, generator=gen)
                (g,) = torch.autograd.grad((y * dy).sum(), x)
                out.update({p + "in": x, p + "out": y, p + "dout": dy, p + "grad": g})
    save(os.path.join(FIX, "resize_ref.safetensors"), out,
         "F.interpolate(align_corners=False) forward and adjoint, bilinear/bicubic x antialias, down and up")


# ----------------------------------------------------------------------------------------------------------------
def preprocess(x, size, mode, crop_round=False):
    """[-1,1] image -> normalised model input, differentiably (the C reward's preprocessing)."""
    x01 = torch.clamp(x / 2 + 0.5, 0, 1)
    H, W = x.shape[-2:]
    if mode == "pad":
        scale = size / max(H, W)
        nh, nw = round(H * scale), round(W * scale)
        r = F.interpolate(x01, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
        ph, pw = size - nh, size - nw
        r = F.pad(r, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
    else:
        short, long = min(H, W), max(H, W)
        ns, nl = size, int(size * long / short)
        nh, nw = (ns, nl) if H <= W else (nl, ns)
        r = F.interpolate(x01, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
        if crop_round:
            top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
        else:
            top, left = (nh - size) // 2, (nw - size) // 2
        r = r[:, :, top:top + size, left:left + size]
    m = torch.tensor(MEAN).view(1, 3, 1, 1)
    s = torch.tensor(STD).view(1, 3, 1, 1)
    return (r - m) / s


IDS = torch.zeros(2, 12, dtype=torch.int32)
IDS[0, :7] = torch.tensor([998, 17, 402, 9, 731, 55, 999])
IDS[1, :] = torch.tensor([998, 3, 901, 44, 12, 613, 87, 250, 5, 777, 31, 999])


def make_oc():
    cfg = {"embed_dim": 24, "quick_gelu": False,
           "vision_cfg": {"image_size": 35, "layers": 2, "width": 16, "head_width": 8, "patch_size": 7},
           "text_cfg": {"context_length": 12, "vocab_size": 1000, "width": 16, "heads": 2, "layers": 2}}
    model = open_clip.model.CLIP(cfg["embed_dim"], open_clip.model.CLIPVisionCfg(**cfg["vision_cfg"]),
                                 open_clip.model.CLIPTextCfg(**cfg["text_cfg"]), quick_gelu=False)
    reinit_f16(model, 1101)
    model.eval()
    d = os.path.join(FIX, "models", "reward_oc_gelu")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "open_clip_config.json"), "w") as f:
        json.dump({"model_cfg": cfg}, f, indent=2)
        f.write("\n")
    write_f16(os.path.join(d, "open_clip_model.safetensors"), model.state_dict())
    enc_img = lambda px: model.encode_image(px)  # noqa: E731
    enc_txt = lambda ids: model.encode_text(ids.long())  # noqa: E731
    return model, enc_img, enc_txt


def make_hf(name, act, image, patch, seed):
    tc = dict(hidden_size=16, intermediate_size=64, num_attention_heads=2, num_hidden_layers=2,
              max_position_embeddings=12, vocab_size=1000, hidden_act=act, eos_token_id=2, bos_token_id=0,
              pad_token_id=1)
    vc = dict(hidden_size=16, intermediate_size=64, num_attention_heads=2, num_hidden_layers=2, image_size=image,
              patch_size=patch, hidden_act=act)
    config = CLIPConfig(text_config=tc, vision_config=vc, projection_dim=24)
    model = CLIPModel(config)
    reinit_f16(model, seed)
    model.eval()
    d = os.path.join(FIX, "models", f"reward_{name}")
    os.makedirs(d, exist_ok=True)
    config.to_json_file(os.path.join(d, "config.json"))
    sd = {k: v for k, v in model.state_dict().items() if "position_ids" not in k}
    write_f16(os.path.join(d, "model.safetensors"), sd)
    enc_img = lambda px: model.get_image_features(pixel_values=px).pooler_output  # noqa: E731
    enc_txt = lambda ids: model.get_text_features(input_ids=ids.long()).pooler_output  # noqa: E731
    return model, enc_img, enc_txt


def make_aesthetic(in_dim):
    gen = torch.Generator().manual_seed(1401)
    dims = [in_dim, 32, 16, 8, 4, 1]
    sd, layers = {}, [0, 2, 4, 6, 7]
    for i, k in enumerate(layers):
        w = torch.randn(dims[i + 1], dims[i], generator=gen) / dims[i] ** 0.5
        b = 0.1 * torch.randn(dims[i + 1], generator=gen)
        sd[f"layers.{k}.weight"] = w.to(torch.float16).float()
        sd[f"layers.{k}.bias"] = b.to(torch.float16).float()
    write_f16(os.path.join(FIX, "models", "reward_aesthetic", "model.safetensors"), sd)

    def mlp(e):
        for k in layers:
            e = e @ sd[f"layers.{k}.weight"].T + sd[f"layers.{k}.bias"]
        return e
    return mlp


def reward_ref(name, enc_img, enc_txt, size, mode, head, crop_round=False):
    with torch.no_grad():
        t = enc_txt(IDS)
    out = {"ids": IDS, "text_features": t}
    tn = t / t.norm(dim=-1, keepdim=True)
    for tag, shape, salt in [("sq", (1, 3, 64, 64), 11), ("ns", (1, 3, 24, 40), 23)]:
        x = image_values(shape, salt).requires_grad_(True)
        px = preprocess(x, size, mode, crop_round)
        f = enc_img(px)
        s = head(f, tn[0:1])
        (g,) = torch.autograd.grad(s.sum(), x)
        out.update({f"{tag}.pixel_values": px, f"{tag}.image_features": f, f"{tag}.score": s.reshape(1),
                    f"{tag}.grad": g})
        print(f"  {name} {tag}: score {s.item():.6f}, |grad| max {g.abs().max().item():.3e}")
    save(os.path.join(FIX, f"reward_{name}_ref.safetensors"), out, f"reward '{name}' on a small random CLIP")


def cos(f, tn):
    return (F.normalize(f, dim=-1) * tn).sum(-1)


def main():
    setup_determinism()
    make_resize()
    oc, oc_img, oc_txt = make_oc()
    reward_ref("hps", oc_img, oc_txt, 35, "pad", cos)
    pk, pk_img, pk_txt = make_hf("hf_gelu", "gelu", 36, 12, 1201)
    ls = pk.logit_scale.exp().item()
    reward_ref("pickscore", pk_img, pk_txt, 36, "crop", lambda f, tn: ls * cos(f, tn))
    q, q_img, q_txt = make_hf("hf_quick", "quick_gelu", 35, 5, 1301)
    reward_ref("clipscore", q_img, q_txt, 35, "crop", lambda f, tn: 100.0 * cos(f, tn))
    mlp = make_aesthetic(24)
    reward_ref("aesthetic", q_img, q_txt, 35, "crop", lambda f, tn: mlp(F.normalize(f, dim=-1)).reshape(-1),
               crop_round=True)


if __name__ == "__main__":
    main()
