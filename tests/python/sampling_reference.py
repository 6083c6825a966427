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
import torchsde


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


DISC = Discrete()


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

# The scheduler nodes beyond BasicScheduler (ComfyUI's formulas; k-diffusion's where PyPI's
# has them). Each returns float32 values like ComfyUI's SIGMAS.

def laplace(n, sigma_min, sigma_max, mu=0.0, beta=0.5):
    x = torch.linspace(0, 1, n)
    lmb = mu - beta * torch.sign(0.5 - x) * torch.log(1 - 2 * torch.abs(0.5 - x) + 1e-5)
    return torch.clamp(torch.exp(lmb), min=sigma_min, max=sigma_max)


def loglinear_interp(t_steps, num_steps):
    xs = numpy.linspace(0, 1, len(t_steps))
    ys = numpy.log(t_steps[::-1])
    return numpy.exp(numpy.interp(numpy.linspace(0, 1, num_steps), xs, ys))[::-1].copy()


AYS = {"SD1": [14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520, 1.8841921177, 1.3943805092, 0.9642583904,
               0.6523686016, 0.3977456272, 0.1515232662, 0.0291671582],
       "SVD": [700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002]}
OPTIMAL = {"Wan": [1.0, 0.997, 0.995, 0.993, 0.991, 0.989, 0.987, 0.985, 0.98, 0.975, 0.973, 0.968, 0.96, 0.946, 0.927,
                   0.902, 0.864, 0.776, 0.539, 0.208, 0.001]}


def noise_levels(levels, steps, denoise):
    """Align Your Steps' and OptimalSteps' schedule from published levels."""
    total = steps
    if denoise < 1.0:
        if denoise <= 0.0:
            return torch.FloatTensor([])
        total = round(steps * denoise)
    sigmas = levels[:]
    if steps + 1 != len(sigmas):
        sigmas = loglinear_interp(sigmas, steps + 1)
    sigmas = sigmas[-(total + 1):]
    sigmas[-1] = 0
    return torch.FloatTensor(sigmas)


def extend_intermediate(sigmas, steps, start_at_sigma, end_at_sigma, spacing):
    if start_at_sigma < 0:
        start_at_sigma = float("inf")
    interpolator = {"linear": lambda x: x, "cosine": lambda x: torch.sin(x * math.pi / 2),
                    "sine": lambda x: 1 - torch.cos(x * math.pi / 2)}[spacing]
    spacing_ = interpolator(torch.linspace(0, 1, steps + 1)[1:-1])
    out = []
    for i in range(len(sigmas) - 1):
        cur, nxt = sigmas[i], sigmas[i + 1]
        out.append(cur)
        if end_at_sigma <= cur <= start_at_sigma:
            out.extend((spacing_ * (nxt - cur) + cur).tolist())
    if len(sigmas) > 0:
        out.append(sigmas[-1])
    return torch.FloatTensor(out)


def node_sigmas(spec):
    """The SIGMAS a scheduler node gives, from its class and inputs (tests/sampling_nodes.rs)."""
    c, a = spec["class"], spec["inputs"]
    if c == "PolyexponentialScheduler":
        return K.get_sigmas_polyexponential(a["steps"], a["sigma_min"], a["sigma_max"], a["rho"])
    if c == "VPScheduler":
        # ComfyUI's get_sigmas_vp takes expm1 where PyPI's k-diffusion takes exp − 1.
        t = torch.linspace(1, a["eps_s"], a["steps"])
        return K.append_zero(torch.sqrt(torch.special.expm1(a["beta_d"] * t ** 2 / 2 + a["beta_min"] * t)))
    if c == "LaplaceScheduler":
        return laplace(a["steps"], a["sigma_min"], a["sigma_max"], a["mu"], a["beta"])
    if c == "AlignYourStepsScheduler":
        return noise_levels(AYS[a["model_type"]], a["steps"], a["denoise"])
    if c == "OptimalStepsScheduler":
        return noise_levels(OPTIMAL[a["model_type"]], a["steps"], a["denoise"])
    if c == "ExtendIntermediateSigmas":
        return extend_intermediate(node_sigmas(a["sigmas"]), a["steps"], a["start_at_sigma"], a["end_at_sigma"], a["spacing"])
    if c == "SetFirstSigma":
        out = node_sigmas(a["sigmas"]).clone()
        out[0] = a["sigma"]
        return out
    if c == "BetaSamplingScheduler":
        return torch.FloatTensor(beta(DISC, a["steps"], a["alpha"], a["beta"]))
    raise ValueError(c)


SCHEDULE_NODE_CASES = [
    {"class": "PolyexponentialScheduler", "inputs": {"steps": 9, "sigma_max": 14.614642, "sigma_min": 0.0291675, "rho": 1.7}},
    {"class": "PolyexponentialScheduler", "inputs": {"steps": 1, "sigma_max": 80.0, "sigma_min": 0.002, "rho": 0.5}},
    {"class": "VPScheduler", "inputs": {"steps": 12, "beta_d": 19.9, "beta_min": 0.1, "eps_s": 0.001}},
    {"class": "LaplaceScheduler", "inputs": {"steps": 10, "sigma_max": 14.614642, "sigma_min": 0.0291675, "mu": 0.3, "beta": 0.7}},
    {"class": "AlignYourStepsScheduler", "inputs": {"model_type": "SD1", "steps": 10, "denoise": 1.0}},
    {"class": "AlignYourStepsScheduler", "inputs": {"model_type": "SVD", "steps": 17, "denoise": 0.65}},
    {"class": "OptimalStepsScheduler", "inputs": {"model_type": "Wan", "steps": 12, "denoise": 1.0}},
    {"class": "OptimalStepsScheduler", "inputs": {"model_type": "Wan", "steps": 20, "denoise": 0.5}},
    {"class": "ExtendIntermediateSigmas", "inputs": {"sigmas": {"class": "AlignYourStepsScheduler", "inputs": {"model_type": "SD1", "steps": 6, "denoise": 1.0}},
                                                     "steps": 3, "start_at_sigma": -1.0, "end_at_sigma": 1.0, "spacing": "cosine"}},
    {"class": "ExtendIntermediateSigmas", "inputs": {"sigmas": {"class": "VPScheduler", "inputs": {"steps": 5, "beta_d": 19.9, "beta_min": 0.1, "eps_s": 0.001}},
                                                     "steps": 4, "start_at_sigma": 20.0, "end_at_sigma": 0.5, "spacing": "sine"}},
    {"class": "SetFirstSigma", "inputs": {"sigmas": {"class": "OptimalStepsScheduler", "inputs": {"model_type": "Wan", "steps": 8, "denoise": 1.0}},
                                          "sigma": 0.987654321}},
    {"class": "BetaSamplingScheduler", "inputs": {"steps": 12, "alpha": 0.4, "beta": 1.7}},
    {"class": "BetaSamplingScheduler", "inputs": {"steps": 7, "alpha": 2.5, "beta": 0.3}},
]


MU, STD = 0.3, 0.8


def toy_denoiser(x, sigma):
    s = sigma.view(-1, *([1] * (x.ndim - 1)))
    return (STD ** 2 * x + s ** 2 * MU) / (STD ** 2 + s ** 2)


# ComfyUI's samplers that PyPI k-diffusion lacks, restated from their formulas.

def comfy_lms(model, x, sigmas, ns, order=4):
    """ComfyUI's LMS returns the denoised estimate on the final step to sigma 0; PyPI's
    k-diffusion takes one more multistep there. Otherwise the two are the same."""
    if sigmas[-1] != 0:
        return K.sample_lms(model, x, sigmas, disable=True, order=order)
    x = K.sample_lms(model, x, sigmas[:-1], disable=True, order=order)
    return model(x, sigmas[-2].view(1))


def comfy_heunpp2(model, x, sigmas, ns):
    s_end = sigmas[-1]
    for i in range(len(sigmas) - 1):
        d = K.to_d(x, sigmas[i], model(x, sigmas[i].view(1)))
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == s_end:
            x = x + d * dt
            continue
        x_2 = x + d * dt
        d_2 = K.to_d(x_2, sigmas[i + 1], model(x_2, sigmas[i + 1].view(1)))
        if sigmas[i + 2] == s_end:
            w2 = sigmas[i + 1] / (2 * sigmas[0])
            x = x + (d * (1 - w2) + d_2 * w2) * dt
        else:
            x_3 = x_2 + d_2 * (sigmas[i + 2] - sigmas[i + 1])
            d_3 = K.to_d(x_3, sigmas[i + 2], model(x_3, sigmas[i + 2].view(1)))
            w2, w3 = sigmas[i + 1] / (3 * sigmas[0]), sigmas[i + 2] / (3 * sigmas[0])
            x = x + ((1 - w2 - w3) * d + w2 * d_2 + w3 * d_3) * dt
    return x


def deis_coefficients(t_steps, max_order, n=10000):
    """ComfyUI's deis.py "tab" coefficients: its constants come from float32 tensors."""
    eps = 1e-3
    beta_d = 2 * (torch.log(torch.tensor(0.002) ** 2 + 1) / eps - torch.log(torch.tensor(80.) ** 2 + 1)) / (eps - 1)
    beta_0 = torch.log(torch.tensor(80.) ** 2 + 1) - 0.5 * beta_d
    beta_1 = beta_d + beta_0
    t_steps = ((beta_0 ** 2 + 2 * beta_d * (t_steps ** 2 + 1).log()).sqrt() - beta_0) / beta_d
    out = []
    for i in range(len(t_steps) - 1):
        order = min(i + 1, max_order)
        if order == 1:
            out.append([])
            continue
        t_cur, t_next = t_steps[i], t_steps[i + 1]
        taus = torch.linspace(t_cur, t_next, n, dtype=torch.float64).requires_grad_(True)
        with torch.enable_grad():
            log_alpha = (-0.5 * taus ** 2 * (beta_1 - beta_0) - taus * beta_0).exp().log()
            log_alpha.sum().backward()
        alpha = log_alpha.detach().exp()
        integrand = -0.5 * taus.grad / torch.sqrt(alpha * (1 - alpha))
        taus = taus.detach()
        prev_t = t_steps[[i - k for k in range(order)]]
        coeffs = []
        for j in range(order):
            poly = 1
            for k in range(order):
                if k != j:
                    poly = poly * (taus - prev_t[k]) / (prev_t[j] - prev_t[k])
            coeffs.append(torch.sum(integrand * poly) * (t_next - t_cur) / n)
        out.append(coeffs)
    return out


def comfy_deis(model, x, sigmas, ns, max_order=3):
    coeffs = deis_coefficients(sigmas, max_order)
    history = []
    for i in range(len(sigmas) - 1):
        t_cur, t_next = sigmas[i], sigmas[i + 1]
        d = (x - model(x, t_cur.view(1))) / t_cur
        order = 1 if t_next <= 0 else min(max_order, i + 1)
        if order == 1:
            x = x + (t_next - t_cur) * d
        else:
            x = x + coeffs[i][0] * d + sum(c * history[-k] for k, c in enumerate(coeffs[i][1:], 1))
        history = (history + [d])[-(max_order - 1):]
    return x


def comfy_ddpm(model, x, sigmas, ns):
    for i in range(len(sigmas) - 1):
        sigma, prev = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma.view(1))
        eps = (x - denoised) / sigma
        xs = x / torch.sqrt(1.0 + sigma ** 2)
        ac, ac_prev = 1 / (sigma ** 2 + 1), 1 / (prev ** 2 + 1)
        alpha = ac / ac_prev
        mu = torch.sqrt(1.0 / alpha) * (xs - (1 - alpha) * eps / torch.sqrt(1 - ac))
        if prev > 0:
            mu = mu + torch.sqrt((1 - alpha) * (1 - ac_prev) / (1 - ac)) * ns(sigma, prev)
            mu = mu * torch.sqrt(1.0 + prev ** 2)
        x = mu
    return x


def comfy_lcm(model, x, sigmas, ns, flow=False, s_noise=1.0, s_noise_end=None, noise_clip_std=0.0):
    steps = max(1, len(sigmas) - 1)
    s_end = s_noise if s_noise_end is None else s_noise_end
    for i in range(len(sigmas) - 1):
        x = model(x, sigmas[i].view(1))
        if sigmas[i + 1] > 0:
            n, s = ns(sigmas[i], sigmas[i + 1]), sigmas[i + 1]
            if noise_clip_std > 0:
                clip = noise_clip_std * n.std()
                n = n.clamp(min=-clip, max=clip)
            t = i / (steps - 1) if steps > 1 else 0.0
            scale = s_noise + (s_end - s_noise) * t
            if scale != 1.0:
                n = n * scale
            x = s * n + (1 - s) * x if flow else s * n + x
    return x


def comfy_ipndm(model, x, sigmas, ns, max_order=4):
    hist = []
    for i in range(len(sigmas) - 1):
        t, nxt = sigmas[i], sigmas[i + 1]
        denoised = model(x, t.view(1))
        d = (x - denoised) / t
        order = min(max_order, i + 1)
        if nxt == 0:
            x = denoised
        elif order == 1:
            x = x + (nxt - t) * d
        elif order == 2:
            x = x + (nxt - t) * (3 * d - hist[-1]) / 2
        elif order == 3:
            x = x + (nxt - t) * (23 * d - 16 * hist[-1] + 5 * hist[-2]) / 12
        else:
            x = x + (nxt - t) * (55 * d - 59 * hist[-1] + 37 * hist[-2] - 9 * hist[-3]) / 24
        hist = (hist + [d])[-(max_order - 1):]
    return x


def comfy_gradient_estimation(model, x, sigmas, ns, gamma=2.0):
    old = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i].view(1))
        d = (x - denoised) / sigmas[i]
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            x = x + d * dt
            if old is not None:
                x = x + (gamma - 1) * (d - old) * dt
        old = d
    return x


def comfy_res_multistep(model, x, sigmas, ns, eta=0.0):
    phi1 = lambda t: torch.expm1(t) / t
    phi2 = lambda t: (phi1(t) - 1.0) / t
    tf = lambda s: s.log().neg()
    old, old_down = None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i].view(1))
        down, up = K.get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        if down == 0 or old is None:
            x = x + (x - denoised) / sigmas[i] * (down - sigmas[i])
        else:
            t, t_old, t_next, t_prev = tf(sigmas[i]), tf(old_down), tf(down), tf(sigmas[i - 1])
            h = t_next - t
            c2 = (t_prev - t_old) / h
            b1 = torch.nan_to_num(phi1(-h) - phi2(-h) / c2, nan=0.0)
            b2 = torch.nan_to_num(phi2(-h) / c2, nan=0.0)
            x = torch.exp(-h) * x + h * (b1 * denoised + b2 * old)
        if sigmas[i + 1] > 0:
            x = x + ns(sigmas[i], sigmas[i + 1]) * up
        old, old_down = denoised, down
    return x


ER_SDE_SCALERS = {
    "ER-SDE": lambda eta: lambda v: v * ((v ** 0.3).exp() + 10.0) ** eta,
    "Reverse-time SDE": lambda eta: lambda v: v ** (eta + 1),
    "ODE": lambda eta: lambda v: v,
}


def comfy_er_sde(model, x, sigmas, ns, flow=False, max_stage=3, scaler=ER_SDE_SCALERS["ER-SDE"](1.0), s_noise=1.0):
    points = torch.arange(0, 200.0, dtype=torch.float64)
    sigmas = sigmas.clone()
    if flow and sigmas[0] >= 1:
        sigmas[0] = 1.0 - 1e-4  # the toy flow model's percent_to_sigma(1e-4)
    half = sigmas.logit().neg() if flow else sigmas.log().neg()
    er = half.neg().exp()
    old, old_d = None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i].view(1))
        stage = min(max_stage, i + 1)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            ls, lt = er[i], er[i + 1]
            a_s, a_t = sigmas[i] / ls, sigmas[i + 1] / lt
            r = scaler(lt) / scaler(ls)
            x = a_t / a_s * r * x + a_t * (1 - r) * denoised
            if stage >= 2:
                dt = lt - ls
                step = -dt / 200.0
                pos = lt + points * step
                sp = scaler(pos)
                s_int = torch.sum(1 / sp) * step
                dd = (denoised - old) / (ls - er[i - 1])
                x = x + a_t * (dt + s_int * scaler(lt)) * dd
                if stage >= 3:
                    s_u = torch.sum((pos - ls) / sp) * step
                    du = (dd - old_d) / ((ls - er[i - 2]) / 2)
                    x = x + a_t * ((dt ** 2) / 2 + s_u * scaler(lt)) * du
                old_d = dd
            if s_noise > 0:
                x = x + a_t * ns(sigmas[i], sigmas[i + 1]) * s_noise * (lt ** 2 - ls ** 2 * r ** 2).sqrt().nan_to_num(nan=0.0)
        old = denoised
    return x


def rf_step(sigma, nxt, eta=1.0):
    down = nxt * (1 + (nxt / sigma - 1) * eta)
    a_next, a_down = 1 - nxt, 1 - down
    return down, a_next / a_down, (nxt ** 2 - down ** 2 * a_next ** 2 / a_down ** 2) ** 0.5


def comfy_euler_ancestral_rf(model, x, sigmas, ns, eta=1.0, s_noise=1.0):
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i].view(1))
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        down, ratio, renoise = rf_step(sigmas[i], sigmas[i + 1], eta)
        r = down / sigmas[i]
        x = r * x + (1 - r) * denoised
        if eta > 0:
            x = ratio * x + ns(sigmas[i], sigmas[i + 1]) * s_noise * renoise
    return x


def comfy_dpm_2_ancestral_rf(model, x, sigmas, ns):
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i].view(1))
        down, ratio, renoise = rf_step(sigmas[i], sigmas[i + 1])
        d = (x - denoised) / sigmas[i]
        if down == 0:
            x = x + d * (down - sigmas[i])
        else:
            mid = sigmas[i].log().lerp(down.log(), 0.5).exp()
            x2 = x + d * (mid - sigmas[i])
            d2 = (x2 - model(x2, mid.view(1))) / mid
            x = x + d2 * (down - sigmas[i])
            x = ratio * x + ns(sigmas[i], sigmas[i + 1]) * renoise
    return x


def comfy_dpmpp_2s_ancestral_rf(model, x, sigmas, ns, eta=1.0, s_noise=1.0):
    lam = lambda s: ((1 - s) / s).log()
    sig = lambda l: 1 / (l.exp() + 1)
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i].view(1))
        down, ratio, renoise = rf_step(sigmas[i], sigmas[i + 1], eta)
        if sigmas[i + 1] == 0:
            x = x + (x - denoised) / sigmas[i] * (down - sigmas[i])
        else:
            if sigmas[i] == 1.0:
                s = torch.tensor(0.9999, dtype=sigmas.dtype)
            else:
                li, ld = lam(sigmas[i]), lam(down)
                s = sig(li + 0.5 * (ld - li))
            u = (s / sigmas[i]) * x + (1 - s / sigmas[i]) * denoised
            di = model(u, s.view(1))
            x = (down / sigmas[i]) * x + (1 - down / sigmas[i]) * di
        if sigmas[i + 1] > 0 and eta > 0:
            x = ratio * x + ns(sigmas[i], sigmas[i + 1]) * s_noise * renoise
    return x


def comfy_uni_pc(model, x, sigmas, ns, bh2=False):
    """ComfyUI's UniPC: B(h) multistep predictor-corrector, data prediction, VP view of sigmas."""
    ts = sigmas.clone()
    if ts[-1] == 0:
        ts[-1] = 0.001
    log_alpha = lambda s: 0.5 * torch.log(1 / (s * s + 1))
    alpha = lambda s: torch.exp(log_alpha(s))
    std = lambda s: torch.sqrt(1.0 - torch.exp(2.0 * log_alpha(s)))
    lam = lambda s: log_alpha(s) - 0.5 * torch.log(1.0 - torch.exp(2.0 * log_alpha(s)))

    def x0(xv, s):
        inp = xv * (s ** 2 + 1.0) ** 0.5
        eps = (inp - model(inp, s.view(1))) / s
        return (xv - std(s) * eps) / alpha(s)

    def update(xv, models, sig, s, order, corrector):
        s0, m0 = sig[-1], models[-1]
        h = lam(s) - lam(s0)
        rks, d1s = [], []
        for i in range(1, order):
            rk = (lam(sig[-(i + 1)]) - lam(s0)) / h
            rks.append(float(rk))
            d1s.append((models[-(i + 1)] - m0) / rk)
        rks.append(1.0)
        rks = torch.tensor(rks, dtype=torch.float64)
        hh = -h
        bh = torch.expm1(hh) if bh2 else hh
        phi = torch.expm1(hh) / hh - 1
        fact, R, b = 1, [], []
        for i in range(1, order + 1):
            R.append(rks ** (i - 1))
            b.append(float(phi * fact / bh))
            fact *= i + 1
            phi = phi / hh - 1 / fact
        R, b = torch.stack(R), torch.tensor(b, dtype=torch.float64)
        base = std(s) / std(s0) * xv - alpha(s) * torch.expm1(hh) * m0
        xt = base
        if d1s:
            rp = torch.tensor([0.5], dtype=torch.float64) if order == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1])
            xt = base - alpha(s) * bh * sum(r * d for r, d in zip(rp, d1s))
        if not corrector:
            return xt, None
        rc = torch.tensor([0.5], dtype=torch.float64) if order == 1 else torch.linalg.solve(R, b)
        mt = x0(xt, s)
        corr = sum(r * d for r, d in zip(rc[:-1], d1s)) if d1s else 0
        return base - alpha(s) * bh * (corr + rc[-1] * (mt - m0)), mt

    steps = len(ts) - 1
    order = min(3, len(ts) - 2)
    xv = x / torch.sqrt(1.0 + ts[0] ** 2)
    models, sig = [], []
    for k in range(steps):
        if k == 0:
            models, sig = [x0(xv, ts[0])], [ts[0]]
        elif k < order:
            xv, m = update(xv, models, sig, ts[k], k, True)
            models.append(m if m is not None else x0(xv, ts[k]))
            sig.append(ts[k])
        else:
            for step in range(k, k + 1 + (1 if k == steps - 1 else 0)):
                xv, m = update(xv, models, sig, ts[step], min(order, steps + 1 - step), step != steps)
                models, sig = models[1:] + [models[-1]], sig[1:] + [ts[step]]
                if step < steps:
                    models[-1] = m if m is not None else x0(xv, ts[step])
    return xv / alpha(ts[-1])


def comfy_ipndm_v(model, x, sigmas, ns, max_order=4):
    hist = []
    t = sigmas
    for i in range(len(sigmas) - 1):
        cur, nxt = sigmas[i], sigmas[i + 1]
        denoised = model(x, cur.view(1))
        d = (x - denoised) / cur
        order = min(max_order, i + 1)
        if nxt == 0:
            x = denoised
        elif order == 1:
            x = x + (nxt - cur) * d
        else:
            hn, hn1 = nxt - cur, cur - t[i - 1]
            if order == 2:
                c = [(2 + hn / hn1) / 2, -(hn / hn1) / 2]
            elif order == 3:
                hn2 = t[i - 1] - t[i - 2]
                tmp = (1 - hn / (3 * (hn + hn1)) * (hn * (hn + hn1)) / (hn1 * (hn1 + hn2))) / 2
                c = [(2 + hn / hn1) / 2 + tmp, -(hn / hn1) / 2 - (1 + hn1 / hn2) * tmp, tmp * hn1 / hn2]
            else:
                hn2, hn3 = t[i - 1] - t[i - 2], t[i - 2] - t[i - 3]
                t1 = (1 - hn / (3 * (hn + hn1)) * (hn * (hn + hn1)) / (hn1 * (hn1 + hn2))) / 2
                t2 = ((1 - hn / (3 * (hn + hn1))) / 2 + (1 - hn / (2 * (hn + hn1))) * hn / (6 * (hn + hn1 + hn2))) \
                    * (hn * (hn + hn1) * (hn + hn1 + hn2)) / (hn1 * (hn1 + hn2) * (hn1 + hn2 + hn3))
                q = hn1 * (hn1 + hn2) / (hn2 * (hn2 + hn3))
                c = [(2 + hn / hn1) / 2 + t1 + t2,
                     -(hn / hn1) / 2 - (1 + hn1 / hn2) * t1 - (1 + hn1 / hn2 + q) * t2,
                     t1 * hn1 / hn2 + (hn1 / hn2 + q * (1 + hn2 / hn3)) * t2,
                     -t2 * q * hn1 / hn2]
            x = x + (nxt - cur) * (c[0] * d + sum(ck * hist[-(k + 1)] for k, ck in enumerate(c[1:])))
        hist = (hist + [d])[-(max_order - 1):]
    return x


# CFG++: a guided toy whose unconditional estimate the samplers also read.
MU_UNCOND, CFG = -0.2, 2.5
LAST_UNCOND = {}


def toy_guided(x, sigma):
    s = sigma.view(-1, *([1] * (x.ndim - 1)))
    cond = (STD ** 2 * x + s ** 2 * MU) / (STD ** 2 + s ** 2)
    uncond = (STD ** 2 * x + s ** 2 * MU_UNCOND) / (STD ** 2 + s ** 2)
    LAST_UNCOND["u"] = uncond
    return uncond + (cond - uncond) * CFG


def half_alpha(s, flow):
    return 1 - s if flow else torch.ones_like(s)


def comfy_euler_ancestral_cfg_pp(model, x, sigmas, ns, eta=1.0, flow=False, s_noise=1.0):
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i].view(1))
        uncond = LAST_UNCOND["u"]
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        a_s, a_t = half_alpha(sigmas[i], flow), half_alpha(sigmas[i + 1], flow)
        d = (x - a_s * uncond) / sigmas[i]
        down, up = K.get_ancestral_step(sigmas[i] / a_s, sigmas[i + 1] / a_t, eta=eta)
        x = a_t * denoised + a_t * down * d
        if eta > 0 and s_noise > 0:
            x = x + a_t * ns(sigmas[i], sigmas[i + 1]) * s_noise * up
    return x


def comfy_dpmpp_2s_ancestral_cfg_pp(model, x, sigmas, ns):
    sf = lambda t: t.neg().exp()
    tf = lambda s: s.log().neg()
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i].view(1))
        uncond = LAST_UNCOND["u"]
        gv = denoised - uncond
        down, up = K.get_ancestral_step(sigmas[i], sigmas[i + 1])
        if down == 0:
            x = x + (x - uncond) / sigmas[i] * (down - sigmas[i])
        else:
            t, tn = tf(sigmas[i]), tf(down)
            h = tn - t
            s = t + h / 2
            x2 = (sf(s) / sf(t)) * x - (-h / 2).expm1() * uncond
            model(x2, sf(s).view(1))
            x = (sf(tn) / sf(t)) * x - (-h).expm1() * LAST_UNCOND["u"]
        if sigmas[i + 1] > 0:
            x = x + ns(sigmas[i], sigmas[i + 1]) * up
        x = x + gv
    return x


def comfy_dpmpp_2m_cfg_pp(model, x, sigmas, ns):
    tf = lambda s: s.log().neg()
    old = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i].view(1))
        uncond = LAST_UNCOND["u"]
        t, tn = tf(sigmas[i]), tf(sigmas[i + 1])
        h = tn - t
        if old is None or sigmas[i + 1] == 0:
            mix = -torch.exp(-h) * uncond
        else:
            r = (t - tf(sigmas[i - 1])) / h
            mix = -torch.exp(-h) * uncond - torch.expm1(-h) * (1 / (2 * r)) * (denoised - old)
        x = denoised + mix + torch.exp(-h) * x
        old = uncond
    return x


def comfy_res_multistep_cfg_pp(model, x, sigmas, ns, eta=0.0):
    phi1 = lambda t: torch.expm1(t) / t
    phi2 = lambda t: (phi1(t) - 1.0) / t
    tf = lambda s: s.log().neg()
    old, old_down = None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i].view(1))
        uncond = LAST_UNCOND["u"]
        down, up = K.get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        if down == 0 or old is None:
            x = denoised + (x - uncond) / sigmas[i] * down
        else:
            t, t_old, tn, tp = tf(sigmas[i]), tf(old_down), tf(down), tf(sigmas[i - 1])
            h = tn - t
            c2 = (tp - t_old) / h
            b1 = torch.nan_to_num(phi1(-h) - phi2(-h) / c2, nan=0.0)
            b2 = torch.nan_to_num(phi2(-h) / c2, nan=0.0)
            x = x + (denoised - uncond)
            x = torch.exp(-h) * x + h * (b1 * uncond + b2 * old)
        if sigmas[i + 1] > 0:
            x = x + ns(sigmas[i], sigmas[i + 1]) * up
        old, old_down = uncond, down
    return x


def comfy_gradient_estimation_cfg_pp(model, x, sigmas, ns, gamma=2.0):
    old = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i].view(1))
        d = (x - LAST_UNCOND["u"]) / sigmas[i]
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            x = denoised + d * sigmas[i + 1]
            if old is not None:
                x = x + (gamma - 1) * (d - old) * dt
        old = d
    return x


CFG_PP_SAMPLERS = {
    "euler_cfg_pp": lambda m, x, s, ns: comfy_euler_ancestral_cfg_pp(m, x, s, ns, eta=0.0),
    "euler_ancestral_cfg_pp": comfy_euler_ancestral_cfg_pp,
    "dpmpp_2s_ancestral_cfg_pp": comfy_dpmpp_2s_ancestral_cfg_pp,
    "dpmpp_2m_cfg_pp": comfy_dpmpp_2m_cfg_pp,
    "res_multistep_cfg_pp": comfy_res_multistep_cfg_pp,
    "res_multistep_ancestral_cfg_pp": lambda m, x, s, ns: comfy_res_multistep_cfg_pp(m, x, s, ns, eta=1.0),
    "gradient_estimation_cfg_pp": comfy_gradient_estimation_cfg_pp,
}


class ComfyBrownian:
    """ComfyUI's BrownianTreeNoiseSampler(cpu=True) over PyPI torchsde's BrownianTree."""

    def __init__(self, x, sigmas, seed):
        smin, smax = sigmas[sigmas > 0].min(), sigmas.max()
        self.tree = torchsde.BrownianTree(smin, torch.zeros_like(x), smax, entropy=seed)

    def __call__(self, sigma, sigma_next):
        lo, hi, sign = (sigma, sigma_next, 1) if sigma < sigma_next else (sigma_next, sigma, -1)
        return self.tree(lo.float(), hi.float()) * sign / (sigma_next - sigma).abs().sqrt()


def lam_fns(flow):
    if flow:
        return (lambda s: ((1 - s) / s).log()), (lambda l: 1 / (1 + l.exp()))
    return (lambda s: -s.log()), (lambda l: (-l).exp())


def offset_first(sigmas, flow):
    if flow and sigmas[0] >= 1:
        sigmas = sigmas.clone()
        sigmas[0] = 1.0 - 1e-4  # the toy flow model's percent_to_sigma(1e-4)
    return sigmas


def comfy_seeds(model, x, sigmas, ns, flow=False, eta=1.0, rs=(0.5,), phi_2=False, s_noise=1.0):
    """ComfyUI's sample_seeds_2 (rs=(r,)) and sample_seeds_3 (rs=(1/3, 2/3)), restated."""
    lam, sig = lam_fns(flow)
    sigmas = offset_first(sigmas, flow)
    e1 = lambda h: torch.expm1(h)
    e2 = lambda h: (torch.expm1(h) - h) / h
    for i in range(len(sigmas) - 1):
        s, t = sigmas[i], sigmas[i + 1]
        denoised = model(x, s.view(1))
        if t == 0:
            x = denoised
            continue
        ls, lt = lam(s), lam(t)
        h = lt - ls
        he = h * (eta + 1)
        stages = [(0.0, s, ls, denoised)]
        noise = None
        for r in rs:
            l_r = torch.lerp(ls, lt, r)
            s_r = sig(l_r)
            if r == rs[0]:
                x_r = s_r / s * (-r * h * eta).exp() * x - s_r * l_r.exp() * e1(-r * he) * denoised
            else:
                a2 = r / rs[0] * e2(-r * he)
                x_r = s_r / s * (-r * h * eta).exp() * x - s_r * l_r.exp() * ((e1(-r * he) - a2) * denoised + a2 * stages[-1][3])
            if eta > 0 and s_noise > 0:
                f = (stages[-1][0] - r) * h * eta
                fresh = f.mul(2).expm1().neg().sqrt() * ns(stages[-1][1], s_r)
                noise = fresh if noise is None else noise * f.exp() + fresh
                x_r = x_r + noise * s_r * s_noise
            stages.append((r, s_r, l_r, model(x_r, s_r.view(1))))
        alpha_t = t * lt.exp()
        r_last, d_last = stages[-1][0], stages[-1][3]
        if len(rs) == 1 and not phi_2:
            x = t / s * (-h * eta).exp() * x - alpha_t * e1(-he) * torch.lerp(denoised, d_last, 1 / (2 * r_last))
        else:
            b = e2(-he) / r_last
            x = t / s * (-h * eta).exp() * x - alpha_t * ((e1(-he) - b) * denoised + b * d_last)
        if eta > 0 and s_noise > 0:
            f = (r_last - 1) * h * eta
            noise = noise * f.exp() + f.mul(2).expm1().neg().sqrt() * ns(stages[-1][1], t)
            x = x + noise * t * s_noise
    return x


def sa_exponential(s, t, order, tau):
    tau_mul = 1 + tau ** 2
    prod = [t ** p - s ** p * math.exp(-tau_mul * (t - s)) for p in range(order)]
    return [sum((-1) ** (p - q) * math.factorial(p) / math.factorial(q) / tau_mul ** (p - q) * prod[q]
                for q in range(p + 1)) for p in range(order)]


def sa_weights(sigma_next, lams, lam_s, lam_t, tau, simple=None):
    n = len(lams)
    if simple is not None and n == 2:
        # The paper's simple order-2 weights (Appendix D), oldest estimate first.
        tau_mul, h = 1 + tau ** 2, lam_t - lam_s
        a_t = sigma_next * math.exp(lam_t)
        whole = a_t * -math.expm1(-h * tau_mul)
        if simple == "corrector":
            newest = a_t * 0.5 * tau_mul * h
            return torch.tensor([whole - newest, newest], dtype=torch.float64)
        oldest = a_t * 0.5 * tau_mul * h ** 2 / (lams[0] - lam_s)
        return torch.tensor([oldest, whole - oldest], dtype=torch.float64)
    a = torch.tensor([[l ** j for l in lams] for j in range(n)], dtype=torch.float64)
    b = torch.tensor(sa_exponential(lam_s, lam_t, n, tau), dtype=torch.float64)
    return torch.linalg.solve(a, b) * (sigma_next * math.exp(lam_t))


def comfy_sa_solver(model, x, sigmas, ns, flow=False, pece=False, tau_interval=None, s_noise=1.0,
                    predictor_order=3, corrector_order=4, simple_order_2=False):
    """ComfyUI's sample_sa_solver (by default predictor 3, corrector 4, tau 1 between the
    sigmas at 20 % and 80 %), restated."""
    sigmas = offset_first(sigmas, flow).tolist()
    lam = lam_fns(flow)[0]
    lams = [lam(torch.tensor(s, dtype=torch.float64)).item() if s > 0 else math.inf for s in sigmas]
    p2s = (lambda p: 1 - p) if flow else (lambda p: DISC.sigma(torch.tensor((1 - p) * 999.0)).item())
    start, end, tau_eta = tau_interval or (p2s(0.2), p2s(0.8), 1.0)
    simple = (lambda step: step) if simple_order_2 else (lambda step: None)
    n = len(sigmas)
    x_pred, h, tau, noise, preds = x, 0.0, 0.0, None, []
    for i in range(n - 1):
        denoised = model(x_pred, torch.tensor([sigmas[i]], dtype=torch.float64))
        preds = (preds + [denoised])[-max(predictor_order, corrector_order):]
        po = min(predictor_order, len(preds))
        co = 0 if i == 0 or (sigmas[i + 1] == 0 and not pece) else min(corrector_order, len(preds))
        if sigmas[-1] == 0:
            po, co = min(po, n - 2 - i), min(co, n - 1 - i)
        if co == 0:
            x = x_pred
        else:
            w = sa_weights(sigmas[i], lams[i - co + 1:i + 1], lams[i - 1], lams[i], tau, simple("corrector"))
            x = sigmas[i] / sigmas[i - 1] * math.exp(-tau ** 2 * h) * x + sum(p * c for p, c in zip(preds[-co:], w))
            if tau > 0 and s_noise > 0:
                x = x + noise
            if pece:
                denoised = model(x, torch.tensor([sigmas[i]], dtype=torch.float64))
                preds[-1] = denoised
        if sigmas[i + 1] == 0:
            x_pred = denoised
            continue
        tau = tau_eta if tau_eta > 0 and start >= sigmas[i + 1] >= end else 0.0
        w = sa_weights(sigmas[i + 1], lams[i - po + 1:i + 1], lams[i], lams[i + 1], tau, simple("predictor"))
        h = lams[i + 1] - lams[i]
        x_pred = sigmas[i + 1] / sigmas[i] * math.exp(-tau ** 2 * h) * x + sum(p * c for p, c in zip(preds[-po:], w))
        if tau > 0 and s_noise > 0:
            noise = ns(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * math.sqrt(-math.expm1(-2 * tau ** 2 * h)) * s_noise
            x_pred = x_pred + noise
    return x_pred


def comfy_dpmpp_sde(model, x, sigmas, ns, flow=False, r=0.5, eta=1.0, s_noise=1.0):
    bn = ComfyBrownian(x, sigmas, NOISE_SEED)
    sigmas = offset_first(sigmas, flow)
    lam, sig = lam_fns(flow)
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i].view(1))
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        ls, lt = lam(sigmas[i]), lam(sigmas[i + 1])
        h = lt - ls
        ls1 = ls + r * h
        fac = 1 / (2 * r)
        s1 = sig(ls1)
        a_s, a_s1, a_t = sigmas[i] * ls.exp(), s1 * ls1.exp(), sigmas[i + 1] * lt.exp()
        sd, su = K.get_ancestral_step((-ls).exp(), (-ls1).exp(), eta)
        h_ = sd.log().neg() - ls
        x2 = (a_s1 / a_s) * (-h_).exp() * x - a_s1 * (-h_).expm1() * denoised
        x2 = x2 + a_s1 * bn(sigmas[i], s1) * s_noise * su
        d2 = model(x2, s1.view(1))
        sd, su = K.get_ancestral_step((-ls).exp(), (-lt).exp(), eta)
        h_ = sd.log().neg() - ls
        dd = (1 - fac) * denoised + fac * d2
        x = (a_t / a_s) * (-h_).exp() * x - a_t * (-h_).expm1() * dd
        x = x + a_t * bn(sigmas[i], sigmas[i + 1]) * s_noise * su
    return x


def comfy_dpmpp_2m_sde(model, x, sigmas, ns, flow=False, heun=False, eta=1.0, s_noise=1.0):
    bn = ComfyBrownian(x, sigmas, NOISE_SEED)
    sigmas = offset_first(sigmas, flow)
    lam, _ = lam_fns(flow)
    old, h_last, h = None, None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i].view(1))
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            ls, lt = lam(sigmas[i]), lam(sigmas[i + 1])
            h = lt - ls
            h_eta = h * (eta + 1)
            a_t = sigmas[i + 1] * lt.exp()
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x + a_t * (-h_eta).expm1().neg() * denoised
            if old is not None:
                r = h_last / h
                if heun:
                    x = x + a_t * ((-h_eta).expm1().neg() / (-h_eta) + 1) * (1 / r) * (denoised - old)
                else:
                    x = x + 0.5 * a_t * (-h_eta).expm1().neg() * (1 / r) * (denoised - old)
            x = x + bn(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
        old, h_last = denoised, h
    return x


def comfy_dpmpp_3m_sde(model, x, sigmas, ns, flow=False, eta=1.0, s_noise=1.0):
    bn = ComfyBrownian(x, sigmas, NOISE_SEED)
    sigmas = offset_first(sigmas, flow)
    lam, _ = lam_fns(flow)
    d1, d2, h, h1, h2 = None, None, None, None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i].view(1))
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            ls, lt = lam(sigmas[i]), lam(sigmas[i + 1])
            h = lt - ls
            h_eta = h * (eta + 1)
            a_t = sigmas[i + 1] * lt.exp()
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x + a_t * (-h_eta).expm1().neg() * denoised
            if h2 is not None:
                r0, r1 = h1 / h, h2 / h
                d1_0, d1_1 = (denoised - d1) / r0, (d1 - d2) / r1
                dd1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                dd2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + (a_t * phi_2) * dd1 - (a_t * phi_3) * dd2
            elif h1 is not None:
                d = (denoised - d1) / (h1 / h)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                x = x + (a_t * phi_2) * d
            x = x + bn(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
        d1, d2 = denoised, d1
        h1, h2 = h, h1
    return x


SEEDS = {
    "exp_heun_2_x0": lambda flow: lambda m, x, s, ns: comfy_seeds(m, x, s, ns, flow, eta=0.0, rs=(1.0,), phi_2=True),
    "exp_heun_2_x0_sde": lambda flow: lambda m, x, s, ns: comfy_seeds(m, x, s, ns, flow, rs=(1.0,), phi_2=True),
    "seeds_2": lambda flow: lambda m, x, s, ns: comfy_seeds(m, x, s, ns, flow),
    "seeds_3": lambda flow: lambda m, x, s, ns: comfy_seeds(m, x, s, ns, flow, rs=(1 / 3, 2 / 3)),
    "sa_solver": lambda flow: lambda m, x, s, ns: comfy_sa_solver(m, x, s, ns, flow),
    "sa_solver_pece": lambda flow: lambda m, x, s, ns: comfy_sa_solver(m, x, s, ns, flow, pece=True),
}

FLOW_SAMPLERS = {
    **{name: make(True) for name, make in SEEDS.items()},
    "euler_ancestral": comfy_euler_ancestral_rf,
    "dpm_2_ancestral": comfy_dpm_2_ancestral_rf,
    "dpmpp_2s_ancestral": comfy_dpmpp_2s_ancestral_rf,
    "lcm": lambda m, x, s, ns: comfy_lcm(m, x, s, ns, flow=True),
    "er_sde": lambda m, x, s, ns: comfy_er_sde(m, x, s, ns, flow=True),
    "dpmpp_sde": lambda m, x, s, ns: comfy_dpmpp_sde(m, x, s, ns, flow=True),
    "dpmpp_2m_sde": lambda m, x, s, ns: comfy_dpmpp_2m_sde(m, x, s, ns, flow=True),
    "dpmpp_3m_sde": lambda m, x, s, ns: comfy_dpmpp_3m_sde(m, x, s, ns, flow=True),
}


SAMPLERS = {
    "euler": lambda m, x, s, ns: K.sample_euler(m, x, s, disable=True),
    "euler_ancestral": lambda m, x, s, ns: K.sample_euler_ancestral(m, x, s, noise_sampler=ns, disable=True),
    "heun": lambda m, x, s, ns: K.sample_heun(m, x, s, disable=True),
    "heunpp2": comfy_heunpp2,
    "dpm_2": lambda m, x, s, ns: K.sample_dpm_2(m, x, s, disable=True),
    "dpm_2_ancestral": lambda m, x, s, ns: K.sample_dpm_2_ancestral(m, x, s, noise_sampler=ns, disable=True),
    "lms": comfy_lms,
    "dpmpp_2s_ancestral": lambda m, x, s, ns: K.sample_dpmpp_2s_ancestral(m, x, s, noise_sampler=ns, disable=True),
    "dpmpp_2m": lambda m, x, s, ns: K.sample_dpmpp_2m(m, x, s, disable=True),
    "dpm_fast": lambda m, x, s, ns: K.sample_dpm_fast(m, x, s[-2] if s[-1] == 0 else s[-1], s[0], len(s) - 1, disable=True, noise_sampler=ns),
    "dpm_adaptive": lambda m, x, s, ns: K.sample_dpm_adaptive(m, x, s[-2] if s[-1] == 0 else s[-1], s[0], disable=True, noise_sampler=ns),
    "dpmpp_sde": comfy_dpmpp_sde,
    "dpmpp_sde_gpu": comfy_dpmpp_sde,
    "dpmpp_2m_sde": comfy_dpmpp_2m_sde,
    "dpmpp_2m_sde_gpu": comfy_dpmpp_2m_sde,
    "dpmpp_2m_sde_heun": lambda m, x, s, ns: comfy_dpmpp_2m_sde(m, x, s, ns, heun=True),
    "dpmpp_2m_sde_heun_gpu": lambda m, x, s, ns: comfy_dpmpp_2m_sde(m, x, s, ns, heun=True),
    "dpmpp_3m_sde": comfy_dpmpp_3m_sde,
    "dpmpp_3m_sde_gpu": comfy_dpmpp_3m_sde,
    "ddpm": comfy_ddpm,
    "lcm": comfy_lcm,
    "ipndm": comfy_ipndm,
    "ipndm_v": comfy_ipndm_v,
    "deis": comfy_deis,
    "res_multistep": comfy_res_multistep,
    "res_multistep_ancestral": lambda m, x, s, ns: comfy_res_multistep(m, x, s, ns, eta=1.0),
    "gradient_estimation": comfy_gradient_estimation,
    "er_sde": comfy_er_sde,
    **{name: make(False) for name, make in SEEDS.items()},
    "ddim": lambda m, x, s, ns: K.sample_euler(m, x, s, disable=True),
    "uni_pc": comfy_uni_pc,
    "uni_pc_bh2": lambda m, x, s, ns: comfy_uni_pc(m, x, s, ns, bh2=True),
}

def comfy_euler_cfg_pp_alternative(model, x, sigmas, ns):
    """SamplerEulerCFGpp's "alternative" version (`sample_euler_pp`)."""
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i].view(1))
        d = (x - denoised + LAST_UNCOND["u"] - denoised) / sigmas[i]
        x = x + d * (sigmas[i + 1] - sigmas[i])
    return x


def tau_interval(flow, start_percent, end_percent, eta):
    """SamplerSASolver's interval: the model's sigmas at the two percentages."""
    p2s = (lambda p: 1 - p) if flow else (lambda p: DISC.sigma(torch.tensor((1 - p) * 999.0)).item())
    return p2s(start_percent), p2s(end_percent), eta


# The Sampler* nodes' extra options: (sampler, options as the Rust test reads them, flow,
# guided, the reference run). Discrete cases run on karras, flow cases on simple.
TUNED = {
    "euler_ancestral": ("euler_ancestral", {"eta": 0.5, "s_noise": 0.8}, False, False,
                        lambda m, x, s, ns: K.sample_euler_ancestral(m, x, s, noise_sampler=ns, disable=True, eta=0.5, s_noise=0.8)),
    "euler_ancestral/flow": ("euler_ancestral", {"eta": 0.5, "s_noise": 0.8}, True, False,
                             lambda m, x, s, ns: comfy_euler_ancestral_rf(m, x, s, ns, eta=0.5, s_noise=0.8)),
    "euler_ancestral/eta0/flow": ("euler_ancestral", {"eta": 0.0, "s_noise": 1.0}, True, False,
                                  lambda m, x, s, ns: comfy_euler_ancestral_rf(m, x, s, ns, eta=0.0)),
    "euler_ancestral_cfg_pp": ("euler_ancestral_cfg_pp", {"eta": 0.4, "s_noise": 0.7}, False, True,
                               lambda m, x, s, ns: comfy_euler_ancestral_cfg_pp(m, x, s, ns, eta=0.4, s_noise=0.7)),
    "euler_cfg_pp_alternative": ("euler_cfg_pp_alternative", {}, False, True, comfy_euler_cfg_pp_alternative),
    "dpmpp_2s_ancestral": ("dpmpp_2s_ancestral", {"eta": 0.6, "s_noise": 1.2}, False, False,
                           lambda m, x, s, ns: K.sample_dpmpp_2s_ancestral(m, x, s, noise_sampler=ns, disable=True, eta=0.6, s_noise=1.2)),
    "dpmpp_2s_ancestral/flow": ("dpmpp_2s_ancestral", {"eta": 0.6, "s_noise": 1.2}, True, False,
                                lambda m, x, s, ns: comfy_dpmpp_2s_ancestral_rf(m, x, s, ns, eta=0.6, s_noise=1.2)),
    "lms/order2": ("lms", {"order": 2}, False, False, lambda m, x, s, ns: comfy_lms(m, x, s, ns, order=2)),
    "lms/order9": ("lms", {"order": 9}, False, False, lambda m, x, s, ns: comfy_lms(m, x, s, ns, order=9)),
    "dpmpp_sde": ("dpmpp_sde", {"eta": 0.5, "s_noise": 0.8, "r": 0.3}, False, False,
                  lambda m, x, s, ns: comfy_dpmpp_sde(m, x, s, ns, r=0.3, eta=0.5, s_noise=0.8)),
    "dpmpp_sde_gpu/flow": ("dpmpp_sde_gpu", {"eta": 0.5, "s_noise": 0.8, "r": 0.3}, True, False,
                           lambda m, x, s, ns: comfy_dpmpp_sde(m, x, s, ns, flow=True, r=0.3, eta=0.5, s_noise=0.8)),
    "dpmpp_2m_sde/heun": ("dpmpp_2m_sde", {"heun": True, "eta": 0.7, "s_noise": 0.9}, False, False,
                          lambda m, x, s, ns: comfy_dpmpp_2m_sde(m, x, s, ns, heun=True, eta=0.7, s_noise=0.9)),
    "dpmpp_2m_sde_gpu/midpoint": ("dpmpp_2m_sde_gpu", {"heun": False, "eta": 0.7, "s_noise": 0.9}, False, False,
                                  lambda m, x, s, ns: comfy_dpmpp_2m_sde(m, x, s, ns, eta=0.7, s_noise=0.9)),
    "dpmpp_3m_sde": ("dpmpp_3m_sde", {"eta": 0.6, "s_noise": 1.1}, False, False,
                     lambda m, x, s, ns: comfy_dpmpp_3m_sde(m, x, s, ns, eta=0.6, s_noise=1.1)),
    "er_sde/er": ("er_sde", {"er_sde": {"scaler": "ER-SDE", "eta": 0.5, "max_stage": 2}, "s_noise": 0.9}, False, False,
                  lambda m, x, s, ns: comfy_er_sde(m, x, s, ns, max_stage=2, scaler=ER_SDE_SCALERS["ER-SDE"](0.5), s_noise=0.9)),
    "er_sde/reverse/flow": ("er_sde", {"er_sde": {"scaler": "Reverse-time SDE", "eta": 1.5, "max_stage": 3}}, True, False,
                            lambda m, x, s, ns: comfy_er_sde(m, x, s, ns, flow=True, scaler=ER_SDE_SCALERS["Reverse-time SDE"](1.5))),
    "er_sde/ode": ("er_sde", {"er_sde": {"scaler": "ODE", "eta": 0.0, "max_stage": 1}, "s_noise": 0.0}, False, False,
                   lambda m, x, s, ns: comfy_er_sde(m, x, s, ns, max_stage=1, scaler=ER_SDE_SCALERS["ODE"](0.0), s_noise=0.0)),
    "seeds_2/phi_2": ("seeds_2", {"phi": "phi_2", "eta": 0.5, "s_noise": 0.8, "r": 0.4}, False, False,
                      lambda m, x, s, ns: comfy_seeds(m, x, s, ns, eta=0.5, rs=(0.4,), phi_2=True, s_noise=0.8)),
    "seeds_2/phi_1/flow": ("seeds_2", {"phi": "phi_1", "eta": 1.0, "s_noise": 0.6, "r": 0.7}, True, False,
                           lambda m, x, s, ns: comfy_seeds(m, x, s, ns, flow=True, rs=(0.7,), s_noise=0.6)),
    "sa_solver/simple": ("sa_solver", {"sa_solver": {"tau": tau_interval(False, 0.1, 0.7, 0.7), "predictor_order": 2,
                                                     "corrector_order": 2, "pece": False, "simple_order_2": True},
                                       "s_noise": 0.9}, False, False,
                         lambda m, x, s, ns: comfy_sa_solver(m, x, s, ns, tau_interval=tau_interval(False, 0.1, 0.7, 0.7),
                                                             s_noise=0.9, predictor_order=2, corrector_order=2, simple_order_2=True)),
    "sa_solver/pece/flow": ("sa_solver", {"sa_solver": {"tau": tau_interval(True, 0.0, 0.5, 1.3), "predictor_order": 4,
                                                        "corrector_order": 1, "pece": True, "simple_order_2": False}}, True, False,
                            lambda m, x, s, ns: comfy_sa_solver(m, x, s, ns, flow=True, pece=True, tau_interval=tau_interval(True, 0.0, 0.5, 1.3),
                                                                predictor_order=4, corrector_order=1)),
    "dpm_adaptive/order2": ("dpm_adaptive", {"dpm_adaptive": {"order": 2, "rtol": 0.1, "atol": 0.01, "h_init": 0.1, "pcoeff": 0.2,
                                                              "icoeff": 0.8, "dcoeff": 0.1, "accept_safety": 0.7},
                                             "eta": 0.5, "s_noise": 0.9}, False, False,
                            lambda m, x, s, ns: K.sample_dpm_adaptive(m, x, s[-2] if s[-1] == 0 else s[-1], s[0], disable=True, noise_sampler=ns,
                                                                      order=2, rtol=0.1, atol=0.01, h_init=0.1, pcoeff=0.2, icoeff=0.8,
                                                                      dcoeff=0.1, accept_safety=0.7, eta=0.5, s_noise=0.9)),
    "lcm": ("lcm", {"s_noise": 0.5, "lcm": {"s_noise_end": 1.5, "noise_clip_std": 1.0}}, False, False,
            lambda m, x, s, ns: comfy_lcm(m, x, s, ns, s_noise=0.5, s_noise_end=1.5, noise_clip_std=1.0)),
}


def tuned_trajectories():
    out = {}
    for key, (name, options, flow, guided, run) in TUNED.items():
        ms = Flow(3.0) if flow else DISC
        sched = "simple" if flow else "karras"
        sigmas = torch.tensor(SCHEDULERS[sched](ms, STEPS), dtype=torch.float64)
        x = torch.linspace(-1, 1, 36, dtype=torch.float64).view(1, 4, 3, 3) * sigmas[0]
        g = torch.Generator().manual_seed(NOISE_SEED)
        ns = lambda s, sn: torch.randn(x.shape, generator=g, dtype=torch.float64)
        model = toy_guided if guided else toy_denoiser
        out[key] = {"sampler": name, "options": options, "flow": flow, "guided": guided,
                    "sigmas": sigmas.tolist(), "x": run(model, x, sigmas, ns).flatten().tolist()}
    return out


NOISE_SEED, STEPS = 7, 10


def trajectories(ms, samplers, model=None):
    model = model or toy_denoiser
    out = {}
    for sched, fn in SCHEDULERS.items():
        sigmas = torch.tensor(fn(ms, STEPS), dtype=torch.float64)
        for name, run in samplers.items():
            x = torch.linspace(-1, 1, 36, dtype=torch.float64).view(1, 4, 3, 3) * sigmas[0]
            g = torch.Generator().manual_seed(NOISE_SEED)
            ns = lambda s, sn: torch.randn(x.shape, generator=g, dtype=torch.float64)
            out[f"{name}/{sched}"] = {"sigmas": sigmas.tolist(), "x": run(model, x, sigmas, ns).flatten().tolist()}
    return out


def freenoise(noise, dim, length, overlap, seed):
    """ComfyUI's FreeNoise (`apply_freenoise`): each stretch of `length - overlap` frames past
    the first window takes the frames one window earlier, shuffled by a seeded CPU generator."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    frames, delta = noise.shape[dim], length - overlap
    for start in range(0, frames - length, delta):
        place = start + length
        count = min(delta, frames - place)
        if count <= 0:
            break
        order = torch.randperm(count, generator=generator) + start
        noise.narrow(dim, place, count).copy_(noise.index_select(dim, order))
    return noise


def freenoise_cases():
    cases = []
    for seed, shape, length, overlap in [(7, [1, 2, 22, 2, 2], 5, 2), (123456789, [1, 1, 11, 1, 1], 4, 1),
                                         (0, [1, 3, 9, 2, 2], 3, 0)]:
        noise = torch.randn(shape, generator=torch.manual_seed(seed + 1))
        cases.append({"seed": seed, "shape": shape, "length": length, "overlap": overlap,
                      "noise": noise.flatten().tolist(),
                      "shuffled": freenoise(noise.clone(), 2, length, overlap, seed).flatten().tolist()})
    return cases


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
    tree = torchsde.BrownianTree(0.0291675, torch.zeros(2, 3, dtype=torch.float64), 14.614642, entropy=987654321)
    queries = [(14.614642, 9.7), (0.5, 2.25), (0.0291675, 14.614642), (3.3333, 3.33335), (1e-3, 0.2)]
    brownian = {"t0": 0.0291675, "t1": 14.614642, "seed": 987654321, "queries": queries,
                "w": [tree(min(a, b), max(a, b)).flatten().tolist() for a, b in queries]}
    json.dump({"noise": noise, "freenoise": freenoise_cases(), "brownian": brownian, "schedules": schedules, "conversions": conversions,
               "trajectories": trajectories(disc, SAMPLERS),
               "flow_trajectories": trajectories(flow, FLOW_SAMPLERS),
               "cfg_pp_trajectories": trajectories(disc, CFG_PP_SAMPLERS, toy_guided),
               "tuned_trajectories": tuned_trajectories(),
               "schedule_nodes": [{"spec": c, "sigmas": node_sigmas(c).tolist()} for c in SCHEDULE_NODE_CASES]}, sys.stdout)


if __name__ == "__main__":
    main()
