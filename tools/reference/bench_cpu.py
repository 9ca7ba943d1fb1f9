#!/usr/bin/env python3
"""The PyTorch side of `drtune bench cpu`: the same work as each of its rows, written the way a PyTorch + diffusers
user would write it, timed on the CPU.

drtune starts this script with `--torch PYTHON` and talks to it over stdin/stdout, one line each way, so the two
implementations are timed alternately in one run on the same machine:

    info                      -> "ok torch X diffusers Y transformers Z threads-default N"
    time ROW THREADS          -> "ok SECONDS"   (one call of ROW with torch.set_num_threads(THREADS))
    drop ROW                  -> "ok"           (frees the row's models)
    quit

Rows (the models are built when a row is first timed; timing excludes that):
    iter          one DRTune iteration of the default job (configs/default.ini): data/models/tiny, batch 4, 20 DDIM
                  steps, guidance 4, LoRA rank 8 / alpha 8 on every attention projection, K = 3 trained steps (phase
                  1), early stop at t_min = 3, reward 4 symmetry + 1 adherence, backward, gradient clip 1, AdamW step
    sample        StableDiffusionPipeline on data/models/tiny: 4 prompts, 20 DDIM steps, guidance 4, decoded images
    MODEL-fwd     UNet2DConditionModel from configs/models/MODEL/unet/config.json (random init), latent 32x32,
    MODEL-fwdbwd  batch 1, context 77: one forward (no_grad), or forward + backward of every parameter and the
                  latents (built and called by tools/gpu/torch_unet.py, the GPU check's PyTorch side)

Standalone use (no drtune): `python bench_cpu.py --row sd15-small-fwd --threads 1 --reps 3` prints the times.
"""
import argparse
import math
import os
import re
import statistics
import sys
import time
import types
import warnings

# the reply channel is stdout; keep the libraries' progress bars and notices off stderr too
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
warnings.filterwarnings("ignore")

import torch
import torch.nn.functional as F

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TINY = os.path.join(ROOT, "data", "models", "tiny")

# The default job (configs/default.ini) with the random draws fixed, as `drtune bench cpu` fixes them.
STEPS, GUIDANCE, BATCH, K, PHASE, T_MIN = 20, 4.0, 4, 3, 1, 3
LORA_RANK, LORA_ALPHA, LR, CLIP = 8, 8.0, 1e-3, 1.0
REWARD_WEIGHTS = (4.0, 1.0)  # symmetry, adherence
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
# docs/DATA.md: the palette in u = x / 2 + 1/2 units, in SceneColour order, and the adherence constants
PALETTE = {"red": (0.85, 0.05, 0.10), "green": (0.05, 0.80, 0.10), "blue": (0.10, 0.20, 0.95),
           "yellow": (0.95, 0.95, 0.15), "purple": (0.60, 0.00, 0.95), "orange": (1.00, 0.50, 0.00),
           "cyan": (0.00, 0.85, 0.90), "white": (0.95, 0.95, 0.95)}
ADH_S, ADH_TAU = 0.25, 0.02


def default_prompts(n):
    with open(os.path.join(ROOT, "data", "prompts", "default.txt")) as f:
        lines = [l.strip() for l in f if l.strip() and not l.startswith("#")]
    return lines[:n]


# ---------------------------------------------------------------------------------------------------------------
# Rewards (docs/REWARDS.md, docs/DATA.md)
# ---------------------------------------------------------------------------------------------------------------


def symmetry(u):
    d = u - u.flip(-1)
    return -(d * d).mean((1, 2, 3))


def adherence(u, targets):
    pal = torch.tensor(list(PALETTE.values()), dtype=u.dtype)               # [8, 3]
    d2 = ((u[:, None] - pal[None, :, :, None, None]) ** 2).sum(2)           # [B, 8, H, W]
    Fk = torch.exp(-d2 / (2 * ADH_S * ADH_S)).mean((2, 3))                  # [B, 8]
    mask = F.one_hot(targets, len(PALETTE)).bool()
    w = torch.softmax((Fk / ADH_TAU).masked_fill(mask, -math.inf), dim=1)
    M = (w * Fk).sum(1)
    return Fk.gather(1, targets[:, None])[:, 0] - M


def prompt_colour(p):
    for word in p.lower().split():
        if word in PALETTE:
            return list(PALETTE).index(word)
    raise ValueError(f"no colour in {p!r}")


# ---------------------------------------------------------------------------------------------------------------
# LoRA on the attention projections (PEFT's layout: y = W x + b + (alpha / r) B (A x), B = 0 at the start)
# ---------------------------------------------------------------------------------------------------------------


class LoRA:
    def __init__(self, unet):
        self.params = []
        for name, mod in unet.named_modules():
            parts = name.split(".")
            if ("attn1" in parts or "attn2" in parts) and any(name.endswith("." + t) for t in LORA_TARGETS):
                A = torch.nn.Parameter(torch.empty(LORA_RANK, mod.in_features))
                torch.nn.init.kaiming_uniform_(A, a=math.sqrt(5))
                B = torch.nn.Parameter(torch.zeros(mod.out_features, LORA_RANK))
                self.params += [A, B]
                mod.register_forward_hook(self.hook(A, B))

    @staticmethod
    def hook(A, B):
        scale = LORA_ALPHA / LORA_RANK
        return lambda mod, inputs, out: out + scale * F.linear(F.linear(inputs[0], A), B)


# ---------------------------------------------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------------------------------------------


class TinyPipe:
    """data/models/tiny as a diffusers pipeline, plus the pieces of a DRTune iteration."""

    def __init__(self, train):
        from diffusers import DDIMScheduler, StableDiffusionPipeline
        from diffusers.utils import logging as dlogging
        dlogging.disable_progress_bar()
        pipe = StableDiffusionPipeline.from_pretrained(TINY, safety_checker=None, requires_safety_checker=False,
                                                       dtype=torch.float32)
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe
        self.prompts = default_prompts(BATCH)
        self.size = pipe.unet.config.sample_size * pipe.vae_scale_factor
        if train:
            for m in (pipe.unet, pipe.vae, pipe.text_encoder):
                m.requires_grad_(False)
            self.lora = LoRA(pipe.unet)
            self.opt = torch.optim.AdamW(self.lora.params, lr=LR)
            self.targets = torch.tensor([prompt_colour(p) for p in self.prompts])
            s = STEPS // K
            self.trained = {PHASE + i * s for i in range(K)}

    def sample(self):
        with torch.no_grad():
            self.pipe(self.prompts, num_inference_steps=STEPS, guidance_scale=GUIDANCE, height=self.size,
                      width=self.size, output_type="pt")

    def encode(self, texts):
        tok = self.pipe.tokenizer(texts, padding="max_length", max_length=self.pipe.tokenizer.model_max_length,
                                  truncation=True, return_tensors="pt")
        return self.pipe.text_encoder(tok.input_ids)[0]

    def iteration(self):
        p, unet, sched = self.pipe, self.pipe.unet, self.pipe.scheduler
        with torch.no_grad():
            ctx = torch.cat([self.encode([""] * BATCH), self.encode(self.prompts)])  # [uncond; cond]
        sched.set_timesteps(STEPS)
        h = self.size // p.vae_scale_factor
        x = torch.randn(BATCH, unet.config.in_channels, h, h)
        for t in range(STEPS, T_MIN - 1, -1):  # step t: x_t -> x_{t-1} at timestep tau_{N-t}
            tau = sched.timesteps[STEPS - t]
            inp = torch.cat([x.detach()] * 2)  # DRTune: the UNet input is detached
            with torch.set_grad_enabled(t in self.trained):
                eu, ec = unet(inp, tau, encoder_hidden_states=ctx).sample.chunk(2)
            eps = eu + GUIDANCE * (ec - eu)
            out = sched.step(eps, tau, x, eta=0.0)
            x = out.pred_original_sample if t == T_MIN else out.prev_sample
        image = p.vae.decode(x / p.vae.config.scaling_factor).sample
        u = image * 0.5 + 0.5
        r = REWARD_WEIGHTS[0] * symmetry(u) + REWARD_WEIGHTS[1] * adherence(u, self.targets)
        loss = -r.mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.lora.params, CLIP)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


class UNetRow:
    """The UNet rows: tools/gpu/torch_unet.py's random-weight UNet and calls (the GPU check's), on the CPU in fp32."""

    def __init__(self, model, latent=32, batch=1):
        sys.path.insert(0, os.path.join(ROOT, "tools", "gpu"))
        import torch_unet
        a = types.SimpleNamespace(model=os.path.join(ROOT, "configs", "models", model), latent=latent, batch=batch,
                                  dtype="fp32", autocast=False, channels_last=False, device="cpu")
        unet, _, _, inputs, dout = torch_unet.build(a)
        self._forward = torch_unet.make_call(unet, inputs, dout, False, a)
        self.forward_backward = torch_unet.make_call(unet, inputs, dout, True, a)


    def forward(self):
        with torch.no_grad():  # the inference forward, PyTorch's fastest (torch_unet.py keeps autograd on)
            self._forward()


class Rows:
    def __init__(self):
        self.objs = {}

    def obj(self, row):
        key = "iter" if row == "iter" else "sample" if row == "sample" else re.sub(r"-fwd(bwd)?$", "", row)
        if key not in self.objs:
            self.objs[key] = TinyPipe(train=True) if key in ("iter", "sample") else UNetRow(key)
        return self.objs[key]

    def call(self, row):
        o = self.obj(row)
        if row == "iter":
            return o.iteration
        if row == "sample":
            return o.sample
        if row.endswith("-fwdbwd"):
            return o.forward_backward
        if row.endswith("-fwd"):
            return o.forward
        raise ValueError(f"unknown row {row!r}")

    def drop(self, row):
        key = "iter" if row == "iter" else "sample" if row == "sample" else re.sub(r"-fwd(bwd)?$", "", row)
        self.objs.pop(key, None)

    def time(self, row, threads):
        torch.set_num_threads(threads)
        f = self.call(row)
        t0 = time.perf_counter()
        f()
        return time.perf_counter() - t0


def versions():
    import diffusers
    import transformers
    return (f"torch {torch.__version__} diffusers {diffusers.__version__} transformers {transformers.__version__} "
            f"threads-default {torch.get_num_threads()}")


def serve():
    rows = Rows()
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        try:
            if words[0] == "quit":
                break
            if words[0] == "info":
                reply = versions()
            elif words[0] == "time" and len(words) == 3:
                reply = f"{rows.time(words[1], int(words[2])):.6f}"
            elif words[0] == "drop" and len(words) == 2:
                rows.drop(words[1])
                reply = ""
            else:
                raise ValueError(f"bad command {line.strip()!r}")
            print(("ok " + reply).strip(), flush=True)
        except Exception as exc:  # reported to drtune, which stops with the message
            print(f"err {type(exc).__name__}: {exc}".replace("\n", " "), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--serve", action="store_true", help="answer drtune's commands on stdin (drtune bench cpu)")
    ap.add_argument("--row", help="time one row standalone")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_interop_threads(1)
    torch.set_grad_enabled(True)
    if args.serve:
        serve()
        return 0
    if not args.row:
        ap.error("give --serve or --row")
    rows = Rows()
    rows.time(args.row, args.threads)  # warm-up (and model construction)
    ts = [rows.time(args.row, args.threads) for _ in range(args.reps)]
    print(f"{args.row} threads {args.threads}: median {statistics.median(ts):.4f} s of {len(ts)} "
          f"({', '.join(f'{t:.4f}' for t in ts)}); {versions()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
