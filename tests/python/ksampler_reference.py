"""ComfyUI's KSampler pipeline on a toy network, for tests/sampling_nodes.rs (JSON on stdout).

prepare_noise (torch.manual_seed), KSampler.set_steps (denoise, discarded penultimate sigma),
max_denoise noise scaling, CFG, the PyPI k-diffusion sampler with ComfyUI's seeded
default_noise_sampler, inverse noise scaling. The network: out = 0.5·xc + mean(ctx)·cos(t/1000).
"""
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import sampling_reference as ref  # noqa: E402

DISCARD = {"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"}


def schedule(ms, scheduler, sampler, steps, denoise):
    def calc(n):
        discard = sampler in DISCARD
        s = torch.FloatTensor(ref.SCHEDULERS[scheduler](ms, n + 1 if discard else n))
        return torch.cat([s[:-2], s[-1:]]) if discard else s
    if denoise > 0.9999:
        return calc(steps)
    return calc(int(steps / denoise))[-(steps + 1):]


def run(case):
    pred = case["prediction"]
    ms = ref.Flow(case["shift"]) if pred == "flow" else ref.Discrete()
    shape = case["shape"]
    # ComfyUI's float32 noise and schedule; the rest in float64, the exact value our float32
    # pipeline must come close to (ComfyUI's own float32 scalar rounding is not the target).
    latent = torch.zeros(shape, dtype=torch.float64)
    noise = torch.randn(shape, generator=torch.manual_seed(case["seed"])).double()
    sigmas = schedule(ms, case["scheduler"], case["sampler"], case["steps"], case["denoise"]).double()
    sigma_max = float(ms.sigma_max)
    max_denoise = math.isclose(sigma_max, float(sigmas[0]), rel_tol=1e-05) or float(sigmas[0]) > sigma_max
    s0 = sigmas[0]
    if pred == "flow":
        x = s0 * noise + (1.0 - s0) * latent
    else:
        x = (noise * torch.sqrt(1.0 + s0 ** 2.0) if max_denoise else noise * s0) + latent

    def apply(x, sigma, value):
        s = sigma.view(-1, 1, 1, 1)
        xc = x if pred == "flow" else x / (s ** 2 + 1.0) ** 0.5
        t = ms.timestep(sigma.float()).double()
        out = 0.5 * xc + torch.cos(t / 1000.0).view(-1, 1, 1, 1) * value
        if pred == "v":
            return x * 1.0 / (s ** 2 + 1.0) - out * s / (s ** 2 + 1.0) ** 0.5
        return x - out * s

    def model(x, sigma, **kwargs):
        cond = apply(x, sigma, case["positive"])
        if math.isclose(case["cfg"], 1.0):
            return cond
        uncond = apply(x, sigma, case["negative"])
        return uncond + (cond - uncond) * case["cfg"]

    g = torch.Generator().manual_seed(case["seed"])
    ns = lambda s, sn: torch.randn(x.size(), dtype=torch.float32, generator=g).double()
    table = ref.FLOW_SAMPLERS if pred == "flow" and case["sampler"] in ref.FLOW_SAMPLERS else ref.SAMPLERS
    samples = table[case["sampler"]](model, x, sigmas, ns)
    if pred == "flow":
        samples = samples / (1.0 - sigmas[-1])
    return samples.flatten().tolist()


if __name__ == "__main__":
    cases = json.load(sys.stdin)
    json.dump([run(c) for c in cases], sys.stdout)
