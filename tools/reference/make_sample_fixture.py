#!/usr/bin/env python3
"""Reference images of diffusers' StableDiffusionPipeline on a drtune init-weights folder, for tests/parity_sample.c.

The pipeline folder is what `drtune init-weights --model configs/models/tiny-random --out DIR --seed 7` writes
(the C test rebuilds it the same way). diffusers loads it with safety_checker=None and the scheduler replaced by
DDIMScheduler.from_config(pipe.scheduler.config); two prompts are sampled from fixed latents (passed as latents=),
8 steps, guidance 3.0, eta 0, once without and once with a negative prompt, output_type="np" (float images in
[0, 1], NHWC) and the uint8 pixels diffusers' numpy_to_pil gives (what a saved PNG holds).

init-weights writes the tokenizer vocabulary (vocab.json, merges.txt) into the folder; the script still checks the
tokenizer's ids before sampling, since transformers silently builds a two-token vocabulary for a tokenizer folder
without them and would encode every prompt as [0, 2, 2, ...].

Writes tests/fixtures/sample_ref.safetensors:
  latents          [2, 4, 16, 16] F32   torch.randn with torch.Generator().manual_seed(LATENT_SEED)
  images           [2, 64, 64, 3] F32   pipe(prompts, latents=...).images, output_type="np", in [0, 1]
  images_negative  [2, 64, 64, 3] F32   the same with negative_prompt=NEGATIVE
  pixels           [2, 64, 64, 3] I32   np.array(pipe.numpy_to_pil(images)[i]), values 0..255
  pixels_negative  [2, 64, 64, 3] I32
and in the metadata the prompts (JSON list), the negative prompt, steps, guidance, eta, both seeds and versions.

    tools/reference/.venv/bin/python tools/reference/make_sample_fixture.py [path/to/drtune]
"""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

import diffusers
from diffusers import DDIMScheduler, StableDiffusionPipeline

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_model_fixtures import VERSIONS, setup_determinism, stats, write_safetensors  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "sample_ref.safetensors")

INIT_SEED = 7              # drtune init-weights --seed
LATENT_SEED = 4242
PROMPTS = ["a red circle", "a small green triangle on the left"]
NEGATIVE = "blurry, dark"
STEPS = 8
GUIDANCE = 3.0
ETA = 0.0


def make_pipeline_folder(drtune, out):
    subprocess.run([drtune, "init-weights", "--model", os.path.join(ROOT, "configs/models/tiny-random"), "--out", out,
                    "--seed", str(INIT_SEED)], check=True, stdout=subprocess.DEVNULL)
    for f in ["vocab.json", "merges.txt"]:
        if not os.path.exists(os.path.join(out, "tokenizer", f)):
            raise RuntimeError(f"init-weights wrote no tokenizer/{f}")


def sample(pipe, latents, negative):
    out = pipe(prompt=PROMPTS, negative_prompt=[negative] * len(PROMPTS) if negative else None,
               latents=latents.clone(), num_inference_steps=STEPS, guidance_scale=GUIDANCE, eta=ETA,
               output_type="np")
    images = out.images.astype(np.float32)                    # [B, H, W, 3] in [0, 1]
    pixels = np.stack([np.array(im) for im in pipe.numpy_to_pil(images)])
    assert pixels.dtype == np.uint8 and pixels.shape == images.shape
    return torch.from_numpy(images.copy()), torch.from_numpy(pixels.astype(np.int32))


def main():
    drtune = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "drtune")
    setup_determinism()
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "pipe")
        make_pipeline_folder(drtune, folder)
        pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        ids = pipe.tokenizer("a red circle").input_ids
        if ids != [49406, 320, 736, 7117, 49407]:
            raise RuntimeError(f"the tokenizer does not have the CLIP vocabulary: 'a red circle' -> {ids}")
        h = pipe.unet.config.sample_size
        latents = torch.randn((len(PROMPTS), 4, h, h), generator=torch.Generator().manual_seed(LATENT_SEED),
                              dtype=torch.float32)
        images, pixels = sample(pipe, latents, None)
        images_neg, pixels_neg = sample(pipe, latents, NEGATIVE)
    tensors = {"latents": latents, "images": images, "pixels": pixels, "images_negative": images_neg,
               "pixels_negative": pixels_neg}
    for k, v in tensors.items():
        print(" ", stats(k, v))
    print(f"  negative prompt changes the images by max {float((images - images_neg).abs().max()):.4f}")
    meta = {"generator": "tools/reference/make_sample_fixture.py",
            "description": "StableDiffusionPipeline + DDIMScheduler on drtune init-weights "
                           "configs/models/tiny-random --seed 7 (vocabulary from data/tokenizer/clip)",
            "prompts": json.dumps(PROMPTS), "negative_prompt": NEGATIVE, "steps": str(STEPS),
            "guidance": str(GUIDANCE), "eta": str(ETA), "init_seed": str(INIT_SEED),
            "latent_seed": str(LATENT_SEED), "layout": "images and pixels NHWC as diffusers returns them"}
    meta.update({f"version.{k}": v for k, v in VERSIONS.items()})
    write_safetensors(OUT, tensors, meta)
    print(f"wrote {os.path.relpath(OUT, ROOT)} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
