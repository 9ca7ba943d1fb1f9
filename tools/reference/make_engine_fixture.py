#!/usr/bin/env python3
"""Reference losses and gradients of one training iteration of every gradient method (docs/METHOD.md).

Writes tests/fixtures/engine_ref.safetensors. Each method is implemented here by its definition, with PyTorch
autograd, on the small fixture models (tests/fixtures/models/unet_sd15 and vae), float32, CPU, deterministic:

  drtune     UNet input detached at every step; untrained steps run without gradient; x_{t-1} keeps the graph
             through the linear a_t x_t path; read-out = x0_hat at t_min (early stop) or the final x_0
  refl       one step with gradient at t_min, read-out x0_hat there
  draft      full graph (UNet input not detached) through the last K steps, earlier steps without gradient
  draft-lv   no-grad rollout to x_0, n re-noised copies x_1^j = add_noise(sg(x_0), z^j, tau_{N-1}), one DDIM step
             with gradient each, rewards averaged over copies and batch
  alignprop  as draft with K = k

Setup: B = 2, N = 6 DDIM steps (DDIMScheduler from configs/models/sd15/scheduler: scaled_linear 0.00085..0.012,
leading, steps_offset 1, set_alpha_to_one false), classifier-free guidance w = 3 during training (UNet batch
[uncond; cond]), reward = 1.0 * symmetry + 0.5 * colour(0.9, 0.1, 0.1) exactly as src/rewards/lowlevel.c,
loss = -mean over the batch (and over the copies for draft-lv) of the weighted reward sum.

Two trainable sets per case: every UNet parameter of the plain UNet ("full"), and LoRA (rank 2, alpha 2, on every
attention projection to_q / to_k / to_v / to_out.0, A and B both random) on top of the frozen UNet ("lora").

The script also checks, and prints:
  * DRTune / ReFL: the closed form of docs/METHOD.md (sum over trained steps of weight_t * vjp(eps_t, g), the CFG
    split (1 - w) G / w G applied to the raw UNet output) against autograd, for both trainable sets;
  * the two equivalent forms of the weights (A/B/cx/cm products and sigma differences, eta = 0);
  * DRaFT-K / AlignProp / DRaFT-LV: the step-by-step walk back G_t = A_t G_{t-1} + B_t (d eps_t/d x_t)^T G_{t-1};
  * that DRTune's gradient differs from DRaFT's (also with the same trained steps).

    tools/reference/.venv/bin/python tools/reference/make_engine_fixture.py

See tools/reference/README.md ("make_engine_fixture.py") for every stored tensor.
"""

import json
import math
import os
import sys

import numpy as np
import safetensors.torch
import torch
import torch.nn.functional as F

import diffusers
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_model_fixtures import VERSIONS, setup_determinism, stats, write_safetensors  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIX = os.path.join(ROOT, "tests", "fixtures")
MODELS = os.path.join(FIX, "models")
OUT = os.path.join(FIX, "engine_ref.safetensors")

SEEDS = {"x_T": 3101, "lora_init": 3102, "ddim_noise": 3103, "draftlv_noise": 3104}

B = 2                      # batch
N = 6                      # DDIM steps
GUIDANCE = 3.0             # CFG scale during training
REWARDS = (("symmetry", 1.0, ()), ("colour", 0.5, (0.9, 0.1, 0.1)))
LORA_RANK = 2
LORA_ALPHA = 2.0
LORA_SCALE = LORA_ALPHA / LORA_RANK
LORA_INIT_STD = 0.1
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")

CASES = [
    dict(name="drtune_k2", method="drtune", K=2, phase=1, t_min=2, eta=0.0),
    dict(name="drtune_k3_noes", method="drtune", K=3, phase=1, t_min=0, eta=0.0),
    dict(name="drtune_eta", method="drtune", K=2, phase=1, t_min=2, eta=0.5),
    dict(name="refl", method="refl", t_min=2, eta=0.0),
    dict(name="draft_k2", method="draft", K=2, eta=0.0),
    dict(name="draftlv", method="draft-lv", n=2, eta=0.0),
    dict(name="alignprop_k3", method="alignprop", k=3, eta=0.0),
]
FULL_GRAD_CASES = ("drtune_k2", "draft_k2")   # full-model gradients stored only for these (file size)
WEIGHT_CASES = ("drtune_k2", "drtune_k3_noes", "drtune_eta", "refl")


# ----------------------------------------------------------------------------------------------------------------
# Models, scheduler, conditioning
# ----------------------------------------------------------------------------------------------------------------


def load_scheduler():
    with open(os.path.join(ROOT, "configs", "models", "sd15", "scheduler", "scheduler_config.json")) as f:
        sched = DDIMScheduler.from_config(json.load(f))
    c = sched.config
    assert (c.beta_schedule, c.beta_start, c.beta_end, c.num_train_timesteps) == ("scaled_linear", 0.00085, 0.012, 1000)
    assert (c.timestep_spacing, c.steps_offset, c.set_alpha_to_one, c.prediction_type, c.clip_sample) == \
        ("leading", 1, False, "epsilon", False)
    sched.set_timesteps(N)
    return sched


def tau_of(sched, t):
    """Timestep of step t (t = N .. 1): tau_{N-t} in diffusers order."""
    return int(sched.timesteps[N - t])


def guided_eps(unet, x, tau, cond, uncond):
    """CFG noise prediction: the UNet on [uncond; cond], eps_u + w (eps_c - eps_u)."""
    out = unet(torch.cat([x, x]), torch.full((2 * x.shape[0],), float(tau)),
               encoder_hidden_states=torch.cat([uncond, cond])).sample
    eps_u, eps_c = out.chunk(2)
    return eps_u + GUIDANCE * (eps_c - eps_u)


def decode(vae, latents):
    return vae.decode(latents / vae.config.scaling_factor).sample


def rewards(image):
    """Per-image weighted reward sum [B] (float64), as src/rewards/lowlevel.c: u = x/2 + 1/2 in float32, sums in
    double; symmetry = -mean_{c,y,x} (u - mirror_x(u))^2; colour = -mean_{c,y,x} (u_c - target_c)^2 with the
    target stored as float32."""
    u = (0.5 * image + 0.5).double()
    _, _, H, W = image.shape
    total = torch.zeros(image.shape[0], dtype=torch.float64)
    for name, weight, params in REWARDS:
        if name == "symmetry":
            d = u - u.flip(-1)
            s = -(d * d).sum((1, 2, 3)) / (3 * H * W)
        elif name == "colour":
            tgt = torch.tensor(params, dtype=torch.float32).double().view(1, 3, 1, 1)
            s = -((u - tgt) ** 2).sum((1, 2, 3)) / (3 * H * W)
        else:
            raise ValueError(name)
        total = total + float(np.float32(weight)) * s
    return total


# ----------------------------------------------------------------------------------------------------------------
# LoRA (PEFT conventions): y = W x + b + (alpha / r) * B (A x), lora_A.weight [r, in], lora_B.weight [out, r]
# ----------------------------------------------------------------------------------------------------------------


def lora_module_paths(unet):
    paths = []
    for name, mod in unet.named_modules():
        parts = name.split(".")
        if "attn1" not in parts and "attn2" not in parts:
            continue
        if any(name.endswith("." + t) for t in LORA_TARGETS):
            assert isinstance(mod, torch.nn.Linear), name
            paths.append(name)
    return paths


def lora_init(unet):
    gen = torch.Generator().manual_seed(SEEDS["lora_init"])
    init = {}
    for p in lora_module_paths(unet):
        lin = unet.get_submodule(p)
        init[p + ".lora_A.weight"] = LORA_INIT_STD * torch.randn(LORA_RANK, lin.in_features, generator=gen)
        init[p + ".lora_B.weight"] = LORA_INIT_STD * torch.randn(lin.out_features, LORA_RANK, generator=gen)
    return init


class LoRA:
    """Attaches LoRA adapters to the UNet with forward hooks (the base Linear modules are unchanged)."""

    def __init__(self, unet, init):
        self.params = {k: torch.nn.Parameter(v.clone()) for k, v in init.items()}
        self.handles = []
        self.calls = 0
        for p in lora_module_paths(unet):
            A, Bm = self.params[p + ".lora_A.weight"], self.params[p + ".lora_B.weight"]
            self.handles.append(unet.get_submodule(p).register_forward_hook(self._hook(A, Bm)))

    def _hook(self, A, Bm):
        def hook(mod, inputs, out):
            self.calls += 1
            return out + LORA_SCALE * F.linear(F.linear(inputs[0], A), Bm)
        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


# ----------------------------------------------------------------------------------------------------------------
# The methods, by definition
# ----------------------------------------------------------------------------------------------------------------


def drtune_trained_steps(K, phase):
    s = N // K
    assert 1 <= phase <= s + N % K
    return sorted(phase + i * s for i in range(K))


def trained_steps(case):
    m = case["method"]
    if m == "drtune":
        return drtune_trained_steps(case["K"], case["phase"])
    if m == "refl":
        return [case["t_min"]]
    if m == "draft":
        return list(range(1, case["K"] + 1))
    if m == "alignprop":
        return list(range(1, case["k"] + 1))
    if m == "draft-lv":
        return [1]
    raise ValueError(m)


def rollout(ctx, trained, t_min, detach_input, eta, zs):
    """Sampling from x_T, steps t = N .. 1 (step t: x_t -> x_{t-1} at tau_{N-t}).

    Steps in `trained` call the UNet with gradient, the others under no_grad. With detach_input the UNet sees
    x_t.detach() (DRTune); otherwise x_t itself. The DDIM update always uses x_t with its graph. With t_min > 0
    the chain stops at step t_min and returns x0_hat there; otherwise it returns the final x_0.
    Returns (read-out latent, {t: x_t detached}).
    """
    sched = ctx["sched"]
    x = ctx["x_T"]
    traj = {}
    for t in range(N, 0, -1):
        tau = tau_of(sched, t)
        traj[t] = x.detach().clone()
        inp = x.detach() if detach_input else x
        if t in trained:
            eps = guided_eps(ctx["unet"], inp, tau, ctx["cond"], ctx["uncond"])
        else:
            with torch.no_grad():
                eps = guided_eps(ctx["unet"], inp, tau, ctx["cond"], ctx["uncond"])
        if t == t_min:
            return sched.step(eps, tau, x, eta=0.0).pred_original_sample, traj
        z = zs[N - t] if eta > 0 else None
        x = sched.step(eps, tau, x, eta=eta, variance_noise=z).prev_sample
    return x, traj


def forward_case(ctx, case):
    """Read-out latent(s) with the method's graph, the per-image rewards [B] (float64, averaged over copies for
    draft-lv), the loss, and the trajectory (latents at every step, detached)."""
    m = case["method"]
    trained = trained_steps(case)
    if m == "draft-lv":
        sched = ctx["sched"]
        with torch.no_grad():
            x0_roll, traj = rollout(ctx, [], 0, False, 0.0, None)
        tau = tau_of(sched, 1)
        x0s, x1s = [], []
        for z in ctx["lv_noise"]:
            x1 = sched.add_noise(x0_roll.detach(), z, torch.tensor([tau]))
            eps = guided_eps(ctx["unet"], x1, tau, ctx["cond"], ctx["uncond"])
            x0s.append(sched.step(eps, tau, x1, eta=0.0).prev_sample)
            x1s.append(x1.detach())
        x0 = torch.stack(x0s)                                          # [n, B, 4, 8, 8]
        r_copies = torch.stack([rewards(decode(ctx["vae"], x0[j])) for j in range(x0.shape[0])])  # [n, B]
        r = r_copies.mean(0)
        loss = -r_copies.mean()
        return x0, r, loss, dict(traj=traj, x0_rollout=x0_roll.detach(), x1=x1s, reward_copies=r_copies)
    t_min = case.get("t_min", 0)
    detach = m in ("drtune", "refl")
    x0, traj = rollout(ctx, trained, t_min, detach, case["eta"], ctx["ddim_noise"])
    r = rewards(decode(ctx["vae"], x0))
    loss = -r.mean()
    return x0, r, loss, dict(traj=traj)


def run_case(ctx, case, params):
    """Loss, rewards, read-out latent, d loss / d read-out, and the gradients wrt `params` (list)."""
    x0, r, loss, extra = forward_case(ctx, case)
    grads = torch.autograd.grad(loss, [x0] + params, allow_unused=True)
    dx0 = grads[0]
    pg = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads[1:])]
    unused = [i for i, g in enumerate(grads[1:]) if g is None]
    return dict(x0=x0.detach(), reward=r.detach(), loss=loss.detach(), dx0=dx0, grads=pg, unused=unused, **extra)


# ----------------------------------------------------------------------------------------------------------------
# Closed forms (docs/METHOD.md), for the checks
# ----------------------------------------------------------------------------------------------------------------


def step_coef(sched, t, eta):
    """A_t, B_t, cx_t, cm_t of step t as ddim_step_coef computes them (double from the float32 alphas)."""
    tau = tau_of(sched, t)
    prev = tau - sched.config.num_train_timesteps // N
    ac = sched.alphas_cumprod
    a_t = np.float32(ac[tau].item())
    a_p = np.float32(ac[prev].item()) if prev >= 0 else np.float32(sched.final_alpha_cumprod.item())
    beta_t, beta_p = np.float32(1) - a_t, np.float32(1) - a_p
    variance = (beta_p / beta_t) * (np.float32(1) - a_t / a_p)
    std = np.float32(eta) * np.sqrt(variance, dtype=np.float32)
    sa, sb = math.sqrt(float(a_t)), math.sqrt(float(beta_t))
    cx, cm = 1.0 / sa, -sb / sa
    sp = math.sqrt(float(a_p))
    dirc = math.sqrt(float(np.float32(1) - a_p - std * std))
    return dict(A=sp * cx, B=sp * cm + dirc, cx=cx, cm=cm, a_t=float(a_t), a_p=float(a_p))


def drtune_weights(sched, trained, t_min, eta):
    """weight_t for t = 1..N (index t-1): weight_{t_min} = cm_{t_min}, weight_t = B_t prod_{t_min<u<t} A_u cx_{t_min}
    for t > t_min; without early stop weight_t = B_t prod_{u<t} A_u. Zero for steps not trained or not run."""
    w = [0.0] * N
    if t_min > 0:
        c = step_coef(sched, t_min, eta)
        if t_min in trained:
            w[t_min - 1] = c["cm"]
        prod = c["cx"]
        first = t_min + 1
    else:
        prod = 1.0
        first = 1
    for t in range(first, N + 1):
        c = step_coef(sched, t, eta)
        if t in trained:
            w[t - 1] = c["B"] * prod
        prod *= c["A"]
    return w


def drtune_weights_sigma(sched, trained, t_min):
    """The same weights (eta = 0) from sig_t = sqrt((1 - abar_t) / abar_t): w_t = sig_{t-1} - sig_t (t > t_min),
    w_{t_min} = -sig_{t_min}; without early stop the last step goes to final_alpha_cumprod and every weight gains
    sqrt(abar_final)."""
    def sig(a):
        return math.sqrt((1.0 - a) / a)
    w = [0.0] * N
    for t in range(max(t_min, 1), N + 1):
        if t not in trained:
            continue
        c = step_coef(sched, t, 0.0)
        if t == t_min:
            w[t - 1] = -sig(c["a_t"])
        else:
            w[t - 1] = sig(c["a_p"]) - sig(c["a_t"])
    if t_min == 0:
        a_final = step_coef(sched, 1, 0.0)["a_p"]
        w = [v * math.sqrt(a_final) for v in w]
    return w


def raw_unet_vjp(ctx, x, tau, G, params):
    """(d eps / d theta)^T G with the CFG split: (1 - w) G on the uncond half of the raw UNet output, w G on the
    cond half."""
    out = ctx["unet"](torch.cat([x, x]), torch.full((2 * x.shape[0],), float(tau)),
                      encoder_hidden_states=torch.cat([ctx["uncond"], ctx["cond"]])).sample
    up = torch.cat([(1.0 - GUIDANCE) * G, GUIDANCE * G])
    gs = torch.autograd.grad(out, params, grad_outputs=up, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, gs)]


def closed_form_grads(ctx, case, res, params):
    weights = drtune_weights(ctx["sched"], trained_steps(case), case["t_min"], case["eta"])
    acc = [torch.zeros_like(p) for p in params]
    for t in range(1, N + 1):
        if weights[t - 1] == 0.0:
            continue
        G = (torch.tensor(weights[t - 1], dtype=torch.float64) * res["dx0"].double()).float()
        for a, g in zip(acc, raw_unet_vjp(ctx, res["traj"][t], tau_of(ctx["sched"], t), G, params)):
            a += g
    return acc


def walkback_grads(ctx, case, res, params):
    """G_0 = g; for t = 1..K: params += (d eps_t/d theta)^T B_t G_{t-1}; G_t = A_t G_{t-1} + (d eps_t/d x_t)^T B_t G_{t-1}.
    For draft-lv, one step per copy from its re-noised x_1^j."""
    sched = ctx["sched"]
    acc = [torch.zeros_like(p) for p in params]
    if case["method"] == "draft-lv":
        starts = [(res["dx0"][j], {1: res["x1"][j]}) for j in range(res["dx0"].shape[0])]
    else:
        starts = [(res["dx0"], res["traj"])]
    for G, traj in starts:
        for t in sorted(trained_steps(case)):
            c = step_coef(sched, t, 0.0)
            x_in = traj[t].clone().requires_grad_(True)
            eps = guided_eps(ctx["unet"], x_in, tau_of(sched, t), ctx["cond"], ctx["uncond"])
            up = (torch.tensor(c["B"], dtype=torch.float64) * G.double()).float()
            gs = torch.autograd.grad(eps, params + [x_in], grad_outputs=up, allow_unused=True)
            for a, g in zip(acc, gs[:-1]):
                if g is not None:
                    a += g
            G = (c["A"] * G.double()).float() + gs[-1]
    return acc


def rel_err(a_list, b_list):
    """(max |a - b| / max |b| over all tensors together, worst per-tensor max |a - b| / max |b|)."""
    num = max((a - b).abs().max().item() for a, b in zip(a_list, b_list))
    den = max(b.abs().max().item() for b in b_list)
    worst = max(((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item() for a, b in zip(a_list, b_list))
    return num / den, worst


def gnorm(gs):
    return math.sqrt(sum(float(g.double().pow(2).sum()) for g in gs))


# ----------------------------------------------------------------------------------------------------------------


def main():
    setup_determinism()
    diffusers.utils.logging.disable_progress_bar()
    print("versions: " + ", ".join(f"{k} {v}" for k, v in VERSIONS.items()))

    unet = UNet2DConditionModel.from_pretrained(os.path.join(MODELS, "unet_sd15")).eval()
    vae = AutoencoderKL.from_pretrained(os.path.join(MODELS, "vae")).eval()
    vae.requires_grad_(False)
    sched = load_scheduler()
    enc = safetensors.torch.load_file(os.path.join(FIX, "encode_sd15_ref.safetensors"))
    pe, npe = enc["prompt_embeds"], enc["negative_prompt_embeds"]
    # one prompt is available: the batch uses it twice (row b of cond / uncond conditions sample b)
    cond = pe[torch.arange(B) % pe.shape[0]].contiguous()
    uncond = npe[torch.arange(B) % npe.shape[0]].contiguous()
    x_T = torch.randn(B, 4, 8, 8, generator=torch.Generator().manual_seed(SEEDS["x_T"]))
    ddim_noise = torch.randn(N, B, 4, 8, 8, generator=torch.Generator().manual_seed(SEEDS["ddim_noise"]))
    lv_case = next(c for c in CASES if c["method"] == "draft-lv")
    lv_noise = torch.randn(lv_case["n"], B, 4, 8, 8, generator=torch.Generator().manual_seed(SEEDS["draftlv_noise"]))
    ctx = dict(unet=unet, vae=vae, sched=sched, cond=cond, uncond=uncond, x_T=x_T, ddim_noise=ddim_noise,
               lv_noise=lv_noise)
    timesteps = [int(v) for v in sched.timesteps]
    print(f"timesteps (diffusers order) {timesteps}; step t uses tau_(N-t); final_alpha_cumprod "
          f"{sched.final_alpha_cumprod.item():.7f}")

    full_names, full_params = zip(*unet.named_parameters())
    full_names, full_params = list(full_names), list(full_params)
    init = lora_init(unet)
    lora_names = sorted(init)
    print(f"UNet: {len(full_names)} parameter tensors, {sum(p.numel() for p in full_params):,} values; LoRA: "
          f"{len(lora_names) // 2} modules, {len(lora_names)} tensors, {sum(v.numel() for v in init.values()):,} values")

    out = {"x_T": x_T, "cond": cond, "uncond": uncond, "timesteps": torch.tensor(timesteps, dtype=torch.int32),
           "guidance_scale": torch.tensor([GUIDANCE]), "lora_rank": torch.tensor([LORA_RANK], dtype=torch.int32),
           "lora_alpha": torch.tensor([LORA_ALPHA])}
    for k in lora_names:
        out["lora_init." + k] = init[k]

    results = {}
    for case in CASES:
        name = case["name"]
        trained = trained_steps(case)
        # (a) full fine-tuning: the plain UNet, gradient wrt every parameter
        unet.requires_grad_(True)
        full = run_case(ctx, case, full_params)
        # (b) LoRA on the frozen UNet, gradient wrt every lora_A / lora_B
        unet.requires_grad_(False)
        lora = LoRA(unet, init)
        lres = run_case(ctx, case, [lora.params[k] for k in lora_names])
        calls = lora.calls
        lora.remove()
        assert calls > 0 and calls % len(lora_module_paths(unet)) == 0
        results[name] = (full, lres)

        out[f"{name}.trained"] = torch.tensor(trained, dtype=torch.int32)
        out[f"{name}.eta"] = torch.tensor([case["eta"]], dtype=torch.float32)
        for key in ("K", "phase", "t_min", "n", "k"):
            if key in case:
                out[f"{name}.{key}"] = torch.tensor([case[key]], dtype=torch.int32)
        for prefix, res in (("", full), ("lora_", lres)):
            out[f"{name}.{prefix}loss"] = res["loss"].float().reshape(1)
            out[f"{name}.{prefix}reward"] = res["reward"].float()
            out[f"{name}.{prefix}x0"] = res["x0"]
            out[f"{name}.{prefix}dx0"] = res["dx0"]
        if case["method"] == "draft-lv":
            out[f"{name}.z"] = lv_noise
            out[f"{name}.x0_rollout"] = full["x0_rollout"]
            out[f"{name}.lora_x0_rollout"] = lres["x0_rollout"]
            out[f"{name}.reward_copies"] = full["reward_copies"].float()
            out[f"{name}.lora_reward_copies"] = lres["reward_copies"].float()
        if case["eta"] > 0:
            out[f"{name}.z"] = ddim_noise
        if name in WEIGHT_CASES:
            out[f"{name}.weights"] = torch.tensor(drtune_weights(sched, trained, case["t_min"], case["eta"]),
                                                  dtype=torch.float32)
        for k, g in zip(lora_names, lres["grads"]):
            out[f"{name}.lora_grad.{k}"] = g
        if name in FULL_GRAD_CASES:
            for k, g in zip(full_names, full["grads"]):
                out[f"{name}.grad.{k}"] = g

    # ------------------------------------------------------------------------------------------------------------
    print("== cases (full = plain UNet, every parameter; lora = UNet + LoRA, lora_A/lora_B only)")
    for case in CASES:
        name = case["name"]
        full, lres = results[name]
        zf = sum(1 for g in full["grads"] if float(g.abs().max()) == 0.0)
        zl = sum(1 for g in lres["grads"] if float(g.abs().max()) == 0.0)
        print(f"  {name:15s} trained {trained_steps(case)} t_min {case.get('t_min', '-')} eta {case['eta']}")
        print(f"    full: loss {full['loss'].item():+.6f} reward {[round(v, 6) for v in full['reward'].tolist()]} "
              f"|grad| {gnorm(full['grads']):.6e} ({zf} zero tensors"
              f"{', stored' if name in FULL_GRAD_CASES else ', not stored'}) |dx0| {gnorm([full['dx0']]):.4e}")
        print(f"    lora: loss {lres['loss'].item():+.6f} reward {[round(v, 6) for v in lres['reward'].tolist()]} "
              f"|lora_grad| {gnorm(lres['grads']):.6e} ({zl} zero tensors) |dx0| {gnorm([lres['dx0']]):.4e}")
        if name in FULL_GRAD_CASES and zf:
            raise SystemExit(f"{name}: exactly-zero full gradients")
        if zl:
            raise SystemExit(f"{name}: exactly-zero LoRA gradients")

    print("== closed form of docs/METHOD.md vs autograd (max|cf - ag| / max|ag|: all tensors together, worst tensor)")
    ok = True
    for case in CASES:
        name = case["name"]
        full, lres = results[name]
        if name in WEIGHT_CASES:
            w = drtune_weights(sched, trained_steps(case), case["t_min"], case["eta"])
            print(f"  {name}: weights t=1..{N} = [{', '.join(f'{v:+.6f}' for v in w)}]")
            if case["eta"] == 0.0:
                ws = drtune_weights_sigma(sched, trained_steps(case), case["t_min"])
                d = max(abs(a - b) for a, b in zip(w, ws))
                # the two forms differ only by the float32 rounding of 1 - abar_t (ddim_step_coef's beta_t)
                print(f"    sigma form (eta 0): max |diff| {d:.2e}")
                ok &= d < 1e-7
            kind, fn = "closed form", closed_form_grads
        else:
            kind, fn = "walk back", walkback_grads
        unet.requires_grad_(True)
        cf = fn(ctx, case, full, full_params)
        unet.requires_grad_(False)
        lora = LoRA(unet, init)
        lp = [lora.params[k] for k in lora_names]
        cl = fn(ctx, case, lres, lp)
        lora.remove()
        ef, wf = rel_err(cf, full["grads"])
        el, wl = rel_err(cl, lres["grads"])
        good = ef < 1e-5 and el < 1e-5
        ok &= good
        print(f"  {name:15s} {kind:11s} full {ef:.2e} (worst tensor {wf:.2e})  lora {el:.2e} "
              f"(worst tensor {wl:.2e})  {'OK' if good else 'MISMATCH'}")
    unet.requires_grad_(True)

    print("== DRTune vs DRaFT (different methods: relative difference |a - b| / |b| of the full gradients)")
    g_dr, g_df = results["drtune_k2"][0]["grads"], results["draft_k2"][0]["grads"]
    diff = gnorm([a - b for a, b in zip(g_dr, g_df)]) / gnorm(g_df)
    print(f"  drtune_k2 vs draft_k2: {diff:.4e}")
    ok &= diff > 0.1
    # DRTune with DRaFT-2's trained steps {1, 2} and no early stop: differs only by the detached UNet input
    x0, traj = rollout(ctx, [1, 2], 0, True, 0.0, None)
    loss = -rewards(decode(vae, x0)).mean()
    g_same = torch.autograd.grad(loss, full_params, allow_unused=True)
    g_same = [torch.zeros_like(p) if g is None else g for p, g in zip(full_params, g_same)]
    assert torch.equal(x0.detach(), results["draft_k2"][0]["x0"]) and loss.item() == results["draft_k2"][0]["loss"].item()
    diff2 = gnorm([a - b for a, b in zip(g_same, g_df)]) / gnorm(g_df)
    print(f"  DRTune on steps {{1, 2}} without early stop vs draft_k2 (same forward, loss {loss.item():+.6f}): {diff2:.4e}")
    ok &= diff2 > 1e-5   # rounding-level differences are ~1e-6

    x0s = {n: results[n][0]["x0"] for n in ("drtune_k3_noes", "draft_k2", "alignprop_k3")}
    x0s["draftlv rollout"] = results["draftlv"][0]["x0_rollout"]
    same_x0 = all(torch.equal(v, x0s["draft_k2"]) for v in x0s.values())
    print(f"  final x_0 identical across {', '.join(x0s)}: {same_x0}")
    ok &= same_x0
    if not ok:
        raise SystemExit("a check failed")

    # ------------------------------------------------------------------------------------------------------------
    print("== stored tensors")
    for k in sorted(out):
        if ".grad." not in k and ".lora_grad." not in k and not k.startswith("lora_init."):
            v = out[k]
            print("  " + (stats(k, v) if v.dtype == torch.float32 else f"{k:34s} {v.tolist()}"))
    desc = ("One training iteration of drtune / refl / draft / draft-lv / alignprop (docs/METHOD.md) on unet_sd15 + "
            f"vae, by autograd: B={B}, N={N} DDIM steps (configs/models/sd15/scheduler, leading), CFG w={GUIDANCE} "
            "([uncond; cond]), reward 1.0*symmetry + 0.5*colour(0.9,0.1,0.1), loss = -mean reward. <case>.* = plain "
            "UNet (grad.<param>: every UNet parameter), <case>.lora_* = UNet + LoRA (rank 2, alpha 2, to_q/to_k/"
            "to_v/to_out.0 of attn1/attn2, y = Wx + b + (alpha/r) B(Ax)) initialised with lora_init.*. Steps t = N..1 "
            "use timesteps[N-t]; <case>.weights[t-1] = DRTune closed-form weight of step t.")
    meta = {"generator": "tools/reference/make_engine_fixture.py", "description": desc,
            "gradient_convention": "grad = d loss / d x, loss = -mean over batch (and copies) of the weighted reward "
                                   "sum; all float32, CPU"}
    meta.update({f"version.{k}": v for k, v in VERSIONS.items()})
    out = {k: v.detach().contiguous() for k, v in out.items()}
    write_safetensors(OUT, out, meta)
    check = safetensors.torch.load_file(OUT)
    assert check.keys() == out.keys() and all(torch.equal(check[k], out[k]) for k in out)
    print(f"  wrote {os.path.relpath(OUT, ROOT)} ({os.path.getsize(OUT)} bytes, {len(out)} tensors)")


if __name__ == "__main__":
    main()
