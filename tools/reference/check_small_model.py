"""Samples the small model (data/models/tiny) with diffusers' StableDiffusionPipeline and with `drtune sample` from
the same initial latents and compares the images.

    tools/reference/.venv/bin/python tools/reference/check_small_model.py [--model data/models/tiny]

diffusers loads the folder as any SD 1.x pipeline (safety_checker=None, DDIMScheduler from its config, fp32);
drtune reads the latents from a safetensors file (--latents) and writes its images (--save). Reported: the largest
absolute difference of the images in [0, 1] and the fraction of identical 8-bit channel values. Exit status 0 when
the largest difference is below --tol.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline
from safetensors.numpy import load_file
from safetensors.torch import save_file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="data/models/tiny")
    ap.add_argument("--n", type=int, default=8, help="held-out captions sampled")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tol", type=float, default=1e-3)
    args = ap.parse_args()
    exe = os.environ.get("DRTUNE_BIN", "build/drtune")
    lines = subprocess.run([exe, "pretrain", "--captions", str(args.n)], check=True, capture_output=True,
                           text=True).stdout.splitlines()
    prompts = lines[args.n:]  # the held-out split
    torch.manual_seed(args.seed)
    latents = torch.randn(len(prompts), 4, 8, 8, dtype=torch.float32)
    pipe = StableDiffusionPipeline.from_pretrained(args.model, safety_checker=None, requires_safety_checker=False,
                                                   torch_dtype=torch.float32)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    height = pipe.unet.config.sample_size * pipe.vae_scale_factor
    with torch.no_grad():
        ref = pipe(prompts, latents=latents.clone(), num_inference_steps=args.steps, guidance_scale=args.guidance,
                   height=height, width=height, output_type="np").images  # [B, H, W, 3] in [0, 1]
    with tempfile.TemporaryDirectory() as tmp:
        lat, out = os.path.join(tmp, "latents.safetensors"), os.path.join(tmp, "out.safetensors")
        save_file({"latents": latents}, lat)
        cmd = [exe, "sample", "--model", args.model, "--steps", str(args.steps), "--guidance", str(args.guidance),
               "--latents", lat, "--save", out, "--out", os.path.join(tmp, "grid.png")]
        for p in prompts:
            cmd += ["--prompt", p]
        subprocess.run(cmd, check=True, capture_output=True)
        img = load_file(out)["image"]  # [B, 3, H, W] decoder output in [-1, 1]
    ours = np.clip(img / 2 + 0.5, 0, 1).transpose(0, 2, 3, 1)
    diff = np.abs(ours - ref).max()
    u8_ours, u8_ref = np.round(ours * 255).astype(np.uint8), np.round(ref * 255).astype(np.uint8)
    agree = (u8_ours == u8_ref).mean()
    max_u8 = np.abs(u8_ours.astype(int) - u8_ref.astype(int)).max()
    print(f"{len(prompts)} held-out captions, {args.steps} DDIM steps, guidance {args.guidance}, {height}x{height}")
    print(f"max |drtune - diffusers| in [0, 1] image space: {diff:.3e}")
    print(f"identical 8-bit channel values: {100 * agree:.3f}% (largest 8-bit difference {max_u8})")
    print(f"torch {torch.__version__}, diffusers {__import__('diffusers').__version__}, "
          f"transformers {__import__('transformers').__version__}")
    return 0 if diff < args.tol else 1


if __name__ == "__main__":
    sys.exit(main())
