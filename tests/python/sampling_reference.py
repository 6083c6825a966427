"""Reference values for the sampling parity tests (tests/sampling_parity.rs), printed as JSON.

Noise comes from torch itself, samplers and the Karras/exponential schedules from PyPI
k-diffusion; model sampling and the other schedules follow the formulas of ComfyUI's
comfy/model_sampling.py and comfy/samplers.py (written here from those formulas).
"""
import importlib.util
import json
import math
import sys
import types
from pathlib import Path

import numpy
import scipy.stats
import torch


def load_k_diffusion_sampling():
    """Imports k_diffusion.sampling without the package's heavy __init__ (training extras)."""
    spec = importlib.util.find_spec("k_diffusion")
    root = Path(spec.submodule_search_locations[0])
    package = types.ModuleType("k_diffusion")
    package.__path__ = [str(root)]
    utils = types.ModuleType("k_diffusion.utils")
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
    sys.modules["k_diffusion"] = package
    sys.modules["k_diffusion.utils"] = utils
    package.utils = utils
    module_spec = importlib.util.spec_from_file_location("k_diffusion.sampling", root / "sampling.py")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


K = load_k_diffusion_sampling()


class Discrete:
    def __init__(self, linear_start=0.00085, linear_end=0.012):
        betas = torch.linspace(linear_start ** 0.5, linear_end ** 0.5, 1000, dtype=torch.float64) ** 2
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        self.sigmas = sigmas.float()
        self.log_sigmas = sigmas.log().float()
        self.sigma_min, self.sigma_max = self.sigmas[0], self.sigmas[-1]

    def timestep(self, sigma):
        dists = sigma.log() - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape)

    def sigma(self, timestep):
        t = torch.clamp(timestep.float(), min=0, max=len(self.sigmas) - 1)
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()


class Flow:
    def __init__(self, shift=3.0, multiplier=1000.0):
        self.shift, self.multiplier = shift, multiplier
        self.sigmas = self.sigma((torch.arange(1, 1001, 1, dtype=torch.float64) / 1000) * multiplier).float()
        self.sigma_min, self.sigma_max = self.sigmas[0], self.sigmas[-1]

    def timestep(self, sigma):
        return sigma * self.multiplier

    def sigma(self, timestep):
        t = timestep / self.multiplier
        return t if self.shift == 1.0 else self.shift * t / (1 + (self.shift - 1) * t)


def simple(ms, steps):
    ss = len(ms.sigmas) / steps
    return [float(ms.sigmas[-(1 + int(x * ss))]) for x in range(steps)] + [0.0]


def ddim_uniform(ms, steps):
    x, sigs = 1, [0.0]
    if math.isclose(float(ms.sigmas[x]), 0, abs_tol=0.00001):
        steps, sigs = steps + 1, []
    ss = max(len(ms.sigmas) // steps, 1)
    while x < len(ms.sigmas):
        sigs.append(float(ms.sigmas[x]))
        x += ss
    return sigs[::-1]


def normal(ms, steps, sgm=False):
    start, end = ms.timestep(ms.sigma_max), ms.timestep(ms.sigma_min)
    append_zero = True
    if sgm:
        timesteps = torch.linspace(float(start), float(end), steps + 1)[:-1]
    else:
        if math.isclose(float(ms.sigma(torch.tensor(float(end)))), 0, abs_tol=0.00001):
            steps, append_zero = steps + 1, False
        timesteps = torch.linspace(float(start), float(end), steps)
    sigs = [float(ms.sigma(ts)) for ts in timesteps]
    return sigs + [0.0] if append_zero else sigs


def beta(ms, steps, alpha=0.6, b=0.6):
    total = len(ms.sigmas) - 1
    ts = numpy.rint(scipy.stats.beta.ppf(1 - numpy.linspace(0, 1, steps, endpoint=False), alpha, b) * total)
    sigs, last = [], -1
    for t in ts:
        if t != last:
            sigs.append(float(ms.sigmas[int(t)]))
        last = t
    return sigs + [0.0]


def linear_quadratic(ms, steps, threshold_noise=0.025):
    if steps == 1:
        schedule = [1.0, 0.0]
    else:
        linear_steps = steps // 2
        schedule = [i * threshold_noise / linear_steps for i in range(linear_steps)]
        diff = linear_steps - threshold_noise * steps
        quadratic_steps = steps - linear_steps
        qc = diff / (linear_steps * quadratic_steps ** 2)
        lc = threshold_noise / linear_steps - 2 * diff / (quadratic_steps ** 2)
        const = qc * (linear_steps ** 2)
        schedule += [qc * (i ** 2) + lc * i + const for i in range(linear_steps, steps)]
        schedule = [1.0 - x for x in schedule + [1.0]]
    return (torch.FloatTensor(schedule) * ms.sigma_max).tolist()


def kl_optimal(ms, n):
    idx = torch.arange(n, dtype=torch.float).div_(n - 1)
    s = idx.new_zeros(n + 1)
    s[:-1] = (idx * math.atan(float(ms.sigma_min)) + (1 - idx) * math.atan(float(ms.sigma_max))).tan_()
    return s.tolist()


SCHEDULERS = {
    "simple": simple,
    "sgm_uniform": lambda ms, n: normal(ms, n, sgm=True),
    "karras": lambda ms, n: K.get_sigmas_karras(n, float(ms.sigma_min), float(ms.sigma_max)).tolist(),
    "exponential": lambda ms, n: K.get_sigmas_exponential(n, float(ms.sigma_min), float(ms.sigma_max)).tolist(),
    "ddim_uniform": ddim_uniform,
    "beta": beta,
    "normal": normal,
    "linear_quadratic": linear_quadratic,
    "kl_optimal": kl_optimal,
}

MU, STD = 0.3, 0.8


def toy_denoiser(x, sigma):
    s = sigma.view(-1, *([1] * (x.ndim - 1)))
    return (STD ** 2 * x + s ** 2 * MU) / (STD ** 2 + s ** 2)


SAMPLERS = {
    "euler": lambda m, x, s, ns: K.sample_euler(m, x, s, disable=True),
    "euler_ancestral": lambda m, x, s, ns: K.sample_euler_ancestral(m, x, s, noise_sampler=ns, disable=True),
    "heun": lambda m, x, s, ns: K.sample_heun(m, x, s, disable=True),
    "dpm_2": lambda m, x, s, ns: K.sample_dpm_2(m, x, s, disable=True),
    "dpm_2_ancestral": lambda m, x, s, ns: K.sample_dpm_2_ancestral(m, x, s, noise_sampler=ns, disable=True),
    "lms": lambda m, x, s, ns: K.sample_lms(m, x, s, disable=True),
    "dpmpp_2s_ancestral": lambda m, x, s, ns: K.sample_dpmpp_2s_ancestral(m, x, s, noise_sampler=ns, disable=True),
    "dpmpp_2m": lambda m, x, s, ns: K.sample_dpmpp_2m(m, x, s, disable=True),
}

NOISE_SEED, STEPS = 7, 10


def trajectories(ms):
    out = {}
    for sched, fn in SCHEDULERS.items():
        sigmas = torch.tensor(fn(ms, STEPS), dtype=torch.float64)
        for name, run in SAMPLERS.items():
            x = torch.linspace(-1, 1, 36, dtype=torch.float64).view(1, 4, 3, 3) * sigmas[0]
            g = torch.Generator().manual_seed(NOISE_SEED)
            ns = lambda s, sn: torch.randn(x.shape, generator=g, dtype=torch.float64)
            out[f"{name}/{sched}"] = {"sigmas": sigmas.tolist(), "x": run(toy_denoiser, x, sigmas, ns).flatten().tolist()}
    return out


def main():
    noise = []
    for seed, shape, inds in [(0, [1, 4, 8, 8], None), (42, [2, 16, 3, 5, 7], None),
                              (18446744073709551615, [1, 4, 4, 4], None), (123, [3, 4, 2, 2], [2, 0, 2])]:
        generator = torch.manual_seed(seed)
        if inds is None:
            n = torch.randn(shape, generator=generator)
        else:
            unique, inverse = numpy.unique(numpy.array(inds), return_inverse=True)
            drawn = []
            for i in range(unique[-1] + 1):
                t = torch.randn([1] + shape[1:], generator=generator)
                if i in unique:
                    drawn.append(t)
            n = torch.cat([drawn[i] for i in inverse], dim=0)
        noise.append({"seed": str(seed), "shape": shape, "batch_index": inds, "values": n.flatten().tolist()})

    disc, flow = Discrete(), Flow(3.0)
    schedules = {}
    for label, ms in [("discrete", disc), ("flow3", flow)]:
        for name, fn in SCHEDULERS.items():
            for steps in (1, 4, 20):
                if name == "kl_optimal" and steps == 1:
                    continue  # 0/0 in ComfyUI too: the schedule is NaN
                schedules[f"{label}/{name}/{steps}"] = fn(ms, steps)
    conversions = {
        "discrete_sigmas": disc.sigmas.tolist(),
        "flow_sigmas": flow.sigmas.tolist(),
        "discrete_timestep": [int(disc.timestep(torch.tensor(s))) for s in (0.05, 1.0, 7.5, 14.6)],
        "discrete_sigma": [float(disc.sigma(torch.tensor(t))) for t in (0.0, 10.5, 500.25, 999.0)],
    }
    json.dump({"noise": noise, "schedules": schedules, "conversions": conversions,
               "trajectories": trajectories(disc)}, sys.stdout)


if __name__ == "__main__":
    main()
