"""Reference data for the DDIM scheduler: diffusers' DDIMScheduler on CPU in float32.

Writes tests/fixtures/ddim_ref.safetensors with
  alphas_cumprod.<name>            [1000]    for the SD config ("sd") and a linear-beta config ("lin")
  timesteps.<spacing>.<n>          [n] int32 for spacing in leading/trailing/linspace, n in 50, 7, 1000//3
  x, m, z                          [1,4,8,8] sample, model output, variance noise
  step.<pred>.<eta>.<i>.prev / .x0 DDIMScheduler.step at step index i (50 steps, leading, SD config)
  add_noise.<t>                    add_noise(x, z, t)
"""
import sys
import numpy as np
import torch
from diffusers import DDIMScheduler
from safetensors.torch import save_file

torch.manual_seed(0)
out = {}
def sched(**kw):
    cfg = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
               clip_sample=False, set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading",
               prediction_type="epsilon")
    cfg.update(kw)
    return DDIMScheduler(**cfg)

out["alphas_cumprod.sd"] = sched().alphas_cumprod.clone()
out["alphas_cumprod.lin"] = sched(beta_schedule="linear", beta_start=0.0001, beta_end=0.02).alphas_cumprod.clone()
for spacing in ["leading", "trailing", "linspace"]:
    for n in [50, 7, 333]:
        s = sched(timestep_spacing=spacing, steps_offset=1 if spacing == "leading" else 0)
        s.set_timesteps(n)
        out[f"timesteps.{spacing}.{n}"] = s.timesteps.to(torch.int32).clone()

x = torch.randn(1, 4, 8, 8)
m = torch.randn(1, 4, 8, 8)
z = torch.randn(1, 4, 8, 8)
out["x"], out["m"], out["z"] = x, m, z
for pred in ["epsilon", "v_prediction", "sample"]:
    for eta in [0.0, 0.7]:
        for clip in [False, True]:
            if clip and (pred != "epsilon" or eta != 0.0):
                continue
            s = sched(prediction_type=pred, clip_sample=clip)
            s.set_timesteps(50)
            for i in [0, 10, 49]:
                t = int(s.timesteps[i])
                r = s.step(m, t, x, eta=eta, variance_noise=z if eta > 0 else None)
                tag = f"step.{pred}.{eta}{'.clip' if clip else ''}.{i}"
                out[tag + ".prev"] = r.prev_sample.clone()
                out[tag + ".x0"] = r.pred_original_sample.clone()
s = sched()
for t in [1, 500, 999]:
    out[f"add_noise.{t}"] = s.add_noise(x, z, torch.tensor([t])).clone()

meta = {"torch": torch.__version__, "diffusers": sys.modules["diffusers"].__version__}
save_file({k: v.contiguous() for k, v in out.items()}, "tests/fixtures/ddim_ref.safetensors", metadata=meta)
print(len(out), "tensors written")
