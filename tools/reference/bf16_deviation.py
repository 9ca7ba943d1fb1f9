"""How far bf16 training arithmetic moves the UNet fixtures' outputs and gradients from fp32, in PyTorch + diffusers.

Informational only (nothing is written): it gives the scale of a correct bf16 implementation's deviation, against
which drtune's train.precision = bf16 is checked (tests/cudaemu_unet.c). For unet_sd15 and unet_sdxl, with the
inputs and upstream gradient of tests/fixtures/<name>_ref.safetensors, it prints the relative L2 distance
||x_bf16 - x_fp32|| / ||x_fp32|| of the output, the input gradients and all parameter gradients together, for
  autocast: torch.autocast(bfloat16) over fp32 weights (PyTorch's mixed precision: bf16 GEMMs and convolutions,
            fp32 norms and softmax, fp32 parameter gradients), and
  pure:     the model and inputs cast to bfloat16 (diffusers' usual bf16 pipelines), gradients cast back to fp32.
Run: tools/reference/.venv/bin/python tools/reference/bf16_deviation.py
"""
import os

import safetensors.torch
import torch
from diffusers import UNet2DConditionModel

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
FIX = os.path.join(ROOT, "tests", "fixtures")


def rel_l2(a, b):
    a, b = a.double().flatten(), b.double().flatten()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def run(name, mode):
    ref = safetensors.torch.load_file(os.path.join(FIX, f"{name}_ref.safetensors"))
    unet = UNet2DConditionModel.from_pretrained(os.path.join(FIX, "models", name)).eval()
    dt = torch.bfloat16 if mode == "pure" else torch.float32
    unet = unet.to(dt)
    sample = ref["sample"].to(dt).requires_grad_(True)
    ehs = ref["encoder_hidden_states"].to(dt).requires_grad_(True)
    kwargs = {}
    if "text_embeds" in ref:
        kwargs["added_cond_kwargs"] = {"text_embeds": ref["text_embeds"].to(dt), "time_ids": ref["time_ids"].to(dt)}
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "autocast"):
        out = unet(sample, ref["timestep"], encoder_hidden_states=ehs, **kwargs).sample
    names, params = zip(*unet.named_parameters())
    grads = torch.autograd.grad((out.float() * ref["dout"]).sum(), [sample, ehs] + list(params))
    flat = torch.cat([g.float().flatten() for g in grads[2:]])
    flat_ref = torch.cat([ref["grad." + n].flatten() for n in names])
    return (rel_l2(out.float(), ref["out"]), rel_l2(grads[0].float(), ref["grad_sample"]),
            rel_l2(grads[1].float(), ref["grad_encoder_hidden_states"]), rel_l2(flat, flat_ref))


def main():
    torch.manual_seed(0)
    print("relative L2 vs the fp32 reference: out, d sample, d context, parameter gradients")
    for name in ("unet_sd15", "unet_sdxl"):
        for mode in ("autocast", "pure"):
            r = run(name, mode)
            print(f"  {name:10s} {mode:9s} out {r[0]:.3e}  d sample {r[1]:.3e}  d context {r[2]:.3e}  "
                  f"params {r[3]:.3e}")


if __name__ == "__main__":
    main()
