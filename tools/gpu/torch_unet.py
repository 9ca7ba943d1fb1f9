#!/usr/bin/env python3
"""torch_unet.py: the PyTorch + diffusers reference timing of the UNet that `drtune bench gpu` times, on the same card
in the same GPU check (tools/gpu/check.sh): UNet2DConditionModel built from a model folder's unet/config.json with
random weights (nothing else is read), scaled dot-product attention (F.scaled_dot_product_attention), one forward
(autograd on: it keeps what a backward needs, as drtune's forward keeps its activations) and one forward + backward
(every parameter gradient and the latents' gradient, as drtune's), batch B, context 77, SDXL's added conditions
(text_embeds, time_ids) when the config has them. Prints the median milliseconds after warm-up calls (CUDA
synchronised around each timed call), the peak memory (torch.cuda.max_memory_allocated on the GPU) and one `result`
line in the same key=value form as drtune's. --count-flops prints the FLOPs of one forward and of one forward +
backward as torch.utils.flop_counter counts them (matrix products, convolutions, attention), the check of drtune's
own count.

Precision: `--dtype bf16` keeps the weights and gradients in bf16 (the pure-bf16 setting); with --autocast the
weights and gradients stay fp32 and the compute runs in bf16 under torch.autocast (drtune's train.precision = bf16
setting: fp32 weights and gradients, a bf16 compute copy). --channels-last puts the weights and the latents in
PyTorch's channels_last memory format (cuDNN's NHWC convolutions; drtune's train.channels_last); the result line
says layout=channels_last.
"""
import argparse
import contextlib
import json
import os
import statistics
import sys
import time

import torch


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model folder holding unet/config.json")
    p.add_argument("--latent", type=int, default=None, help="latent size N (default: the config's sample_size)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--autocast", action="store_true", help="fp32 weights and gradients, bf16 compute (autocast)")
    p.add_argument("--channels-last", action="store_true", help="weights and latents in torch.channels_last")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--reps", type=int, default=5, help="timed calls (median)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--count-flops", action="store_true", help="also count FLOPs with torch.utils.flop_counter")
    a = p.parse_args()
    if a.autocast and a.dtype != "bf16":
        p.error("--autocast computes in bf16: use it with --dtype bf16")
    if a.reps < 1 or a.warmup < 0 or a.batch < 1:
        p.error("--reps and --batch must be positive, --warmup not negative")
    return a


def build(a):
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor2_0
    from diffusers.utils import logging

    logging.set_verbosity_error()  # the notice about casting with .to(): the cast is the point here

    with open(os.path.join(a.model, "unet", "config.json")) as f:
        cfg = json.load(f)
    torch.manual_seed(0)
    wdtype = torch.float32 if (a.dtype == "fp32" or a.autocast) else torch.bfloat16
    with torch.device(a.device):
        unet = UNet2DConditionModel.from_config(cfg)
    unet = unet.to(dtype=wdtype)
    if a.channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    unet.set_attn_processor(AttnProcessor2_0())  # F.scaled_dot_product_attention
    unet.train()
    N = a.latent or cfg["sample_size"]
    B, dev = a.batch, a.device
    idt = wdtype
    g = torch.Generator(device="cpu").manual_seed(1)

    def randn(*shape):
        return torch.randn(*shape, generator=g).to(device=dev, dtype=idt)

    sample = randn(B, cfg["in_channels"], N, N)
    if a.channels_last:
        sample = sample.to(memory_format=torch.channels_last)
    inputs = dict(
        sample=sample.requires_grad_(True),  # drtune computes the latents' gradient too
        timestep=torch.full((B,), 500.0, device=dev),
        encoder_hidden_states=randn(B, 77, cfg["cross_attention_dim"]),
    )
    if cfg.get("addition_embed_type") == "text_time":
        text_dim = cfg["projection_class_embeddings_input_dim"] - 6 * cfg["addition_time_embed_dim"]
        inputs["added_cond_kwargs"] = dict(text_embeds=randn(B, text_dim),
                                           time_ids=torch.full((B, 6), 64.0, device=dev, dtype=idt))
    dout = randn(B, cfg["out_channels"], N, N)
    return unet, cfg, N, inputs, dout


def make_call(unet, inputs, dout, backward, a):
    """One forward, or forward + backward. The forward runs with autograd on, keeping what a backward needs, as
    drtune's forward keeps its activations (an inference forward under torch.no_grad would do less)."""
    amp = contextlib.nullcontext
    if a.autocast:
        amp = lambda: torch.autocast(device_type=a.device, dtype=torch.bfloat16)  # noqa: E731

    def call():
        unet.zero_grad(set_to_none=True)  # PyTorch's default: the backward writes the gradients afresh
        inputs["sample"].grad = None
        with amp():
            out = unet(**inputs).sample
        if backward:
            out.backward(dout.to(out.dtype))
    return call


def sync(dev):
    if dev == "cuda":
        torch.cuda.synchronize()


def median_ms(call, a):
    for _ in range(a.warmup):
        call()
    sync(a.device)
    t = []
    for _ in range(a.reps):
        t0 = time.perf_counter()
        call()
        sync(a.device)
        t.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(t)


def count_flops(call):
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as fc:
        call()
    return fc.get_total_flops()


def main():
    a = parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        print("torch_unet.py: no CUDA device", file=sys.stderr)
        return 2
    unet, cfg, N, inputs, dout = build(a)
    nparams = sum(p.numel() for p in unet.parameters())
    name = os.path.basename(os.path.normpath(a.model))
    prec = ("bf16 autocast (fp32 weights)" if a.autocast else a.dtype) + (", channels last" if a.channels_last else "")
    dev_name = torch.cuda.get_device_name() if a.device == "cuda" else "CPU"
    print(f"torch_unet.py: torch {torch.__version__}, diffusers {__import__('diffusers').__version__}, {dev_name}")
    print(f"model {a.model}: latent {N}x{N}, batch {a.batch}, context 77, {nparams} parameters, {prec}, SDPA")
    res = {}
    for backward in (0, 1):
        call = make_call(unet, inputs, dout, backward, a)
        if a.device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        ms = median_ms(call, a)
        peak = torch.cuda.max_memory_allocated() / 2**20 if a.device == "cuda" else float("nan")
        key = "fwdbwd" if backward else "fwd"
        res[key + "_ms"], res[key + "_peak_mib"] = ms, peak
        print(f"{'forward + backward' if backward else 'forward':20s} {ms:10.2f} ms   peak {peak:.1f} MiB")
        if a.count_flops:
            res[key + "_flops"] = count_flops(call)
            print(f"flops {'forward+backward' if backward else 'forward'} (torch.utils.flop_counter): "
                  f"{res[key + '_flops']}")
    fields = " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items())
    print(f"result model={name} latent={N} batch={a.batch} dtype={'bf16-autocast' if a.autocast else a.dtype} "
          f"device={a.device} layout={'channels_last' if a.channels_last else 'nchw'} {fields}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
