"""Checks that a LoRA file exported by `drtune train` loads in diffusers and means what drtune means by it.

Usage: check_lora_export.py PIPELINE_DIR RUN_DIR
Loads PIPELINE_DIR with diffusers, applies RUN_DIR/export/pytorch_lora_weights.safetensors with load_lora_weights,
and compares the UNet's output on random inputs with the merged UNet drtune exported (RUN_DIR/export/unet) and with
the base UNet: the LoRA-loaded output must match the merged one to fp32 rounding and differ from the base.
"""
import sys

import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel

pipe_dir, run_dir = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
pipe = StableDiffusionPipeline.from_pretrained(pipe_dir, safety_checker=None, torch_dtype=torch.float32)
unet = pipe.unet
cfg = unet.config
x = torch.randn(2, cfg.in_channels, cfg.sample_size, cfg.sample_size)
t = torch.tensor([981, 21])
ctx = torch.randn(2, 77, cfg.cross_attention_dim)
with torch.no_grad():
    base = unet(x, t, ctx).sample
    pipe.load_lora_weights(f"{run_dir}/export/pytorch_lora_weights.safetensors")
    lora = pipe.unet(x, t, ctx).sample
    merged_unet = UNet2DConditionModel.from_pretrained(f"{run_dir}/export/unet")
    merged = merged_unet(x, t, ctx).sample
scale = merged.abs().max().item()
d_merge = (lora - merged).abs().max().item() / scale
d_base = (lora - base).abs().max().item() / scale
print(f"LoRA-loaded vs drtune's merged UNet: max rel diff {d_merge:.2e}")
print(f"LoRA-loaded vs base UNet:            max rel diff {d_base:.2e}")
ok = d_merge < 1e-5 and d_base > 100 * d_merge
print("ok" if ok else "FAIL")
sys.exit(0 if ok else 1)
