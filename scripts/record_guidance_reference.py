"""Records upstream ComfyUI's guidance patches and step caches on fixed inputs, as the fixture
tests/guidance_patches.rs compares against.

Usage (not in CI; needs an upstream checkout and its Python dependencies):
    python scripts/record_guidance_reference.py UPSTREAM_DIR OUT.json

Each patch node's own `execute` runs on a stand-in MODEL that keeps ComfyUI's
`ModelPatcher` methods for setting the functions; the captured functions then run as
`comfy.samplers.sampling_function` runs them after `calc_cond_batch` (the pre-CFG functions,
then `cfg_function`). The step caches' wrappers (EasyCache's diffusion-model and
calc_cond_batch wrappers, LazyCache's predict-noise wrapper) drive a small analytic network
through an Euler loop in float64. Everything is float64 so that the comparison is exact up to
the order of operations.
"""
import json
import os
import sys
import uuid

upstream, out_path = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
sys.argv = ["main.py", "--cpu"]
sys.path.insert(0, upstream)
os.chdir(upstream)

import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import torch  # noqa: E402

import comfy.model_patcher  # noqa: E402
import comfy.model_sampling  # noqa: E402
import comfy.samplers  # noqa: E402
from comfy_extras import (  # noqa: E402
    nodes_apg,
    nodes_easycache,
    nodes_eps,
    nodes_fresca,
    nodes_mahiro,
    nodes_model_advanced,
    nodes_tcfg,
)

torch.manual_seed(0)
DT = torch.float64


class FlowSampling(comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.CONST):
    pass


class EpsSampling(comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.EPS):
    pass


def flow_sampling(shift):
    ms = FlowSampling()
    ms.set_parameters(shift=shift, multiplier=1000)
    return ms


class Patcher:
    """What the patch nodes and their functions read of a ModelPatcher."""

    set_model_sampler_cfg_function = comfy.model_patcher.ModelPatcher.set_model_sampler_cfg_function
    set_model_sampler_post_cfg_function = comfy.model_patcher.ModelPatcher.set_model_sampler_post_cfg_function
    set_model_sampler_pre_cfg_function = comfy.model_patcher.ModelPatcher.set_model_sampler_pre_cfg_function

    def __init__(self, sampling):
        self.model_options = {"transformer_options": {}}
        self.sampling = sampling
        self.current_patcher = self

    def clone(self):
        c = Patcher(self.sampling)
        c.model_options = comfy.model_patcher.create_model_options_clone(self.model_options)
        return c

    def get_model_object(self, name):
        assert name == "model_sampling"
        return self.sampling


def run_node(node, model, **kw):
    if hasattr(node, "execute"):
        return node.execute(model, **kw)[0]
    return getattr(node(), node.FUNCTION)(model, **kw)[0]


def flat(t):
    return t.flatten().tolist()


def guided(model, x, sigma, cond_pred, uncond_pred, cond_scale):
    """sampling_function after calc_cond_batch; `uncond_pred` None is the cfg 1 path."""
    conds = [["cond"], None if uncond_pred is None else ["uncond"]]
    out = [cond_pred, torch.zeros_like(x) if uncond_pred is None else uncond_pred]
    timestep = torch.full((x.shape[0],), sigma, dtype=DT)
    opts = model.model_options
    for fn in opts.get("sampler_pre_cfg_function", []):
        out = fn({"conds": conds, "conds_out": out, "cond_scale": cond_scale, "timestep": timestep,
                  "input": x, "sigma": timestep, "model": model, "model_options": opts})
    return comfy.samplers.cfg_function(model, out[0], out[1], cond_scale, x, timestep, model_options=opts,
                                       cond=conds[0], uncond=conds[1])


NODES = {
    "RescaleCFG": nodes_model_advanced.RescaleCFG,
    "APG": nodes_apg.APG,
    "TCFG": nodes_tcfg.TCFG,
    "FreSca": nodes_fresca.FreSca,
    "Mahiro": nodes_mahiro.Mahiro,
    "Epsilon Scaling": nodes_eps.EpsilonScaling,
    "TemporalScoreRescaling": nodes_eps.TemporalScoreRescaling,
}

# (name, sampling, latent shape, patch chain [(node, inputs)], steps [(sigma, cfg, uncond?)])
FLOW5 = ("flow", 5.0)
EPS = ("eps", None)
CASES = [
    ("rescale_flow", FLOW5, [1, 4, 2, 4, 4], [("RescaleCFG", {"multiplier": 0.7})], [(0.8, 5.0, True)]),
    ("rescale_eps", EPS, [2, 4, 4, 4], [("RescaleCFG", {"multiplier": 0.6})], [(3.5, 7.0, True)]),
    ("apg_momentum", FLOW5, [1, 4, 2, 4, 4],
     [("APG", {"eta": 0.8, "norm_threshold": 2.0, "momentum": -0.5})],
     [(0.9, 4.0, True), (0.7, 4.0, True), (0.5, 4.0, True), (0.95, 4.0, True), (0.6, 1.0, False)]),
    ("apg_plain", EPS, [2, 4, 4, 4], [("APG", {"eta": 1.0, "norm_threshold": 0.0, "momentum": 0.0})],
     [(2.0, 6.0, True)]),
    ("tcfg", FLOW5, [2, 4, 2, 4, 4], [("TCFG", {})], [(0.7, 5.0, True), (0.7, 1.0, False)]),
    ("fresca", FLOW5, [1, 2, 2, 6, 8],
     [("FreSca", {"scale_low": 0.9, "scale_high": 1.3, "freq_cutoff": 2})],
     [(0.7, 5.0, True), (0.7, 1.0, False)]),
    ("fresca_wide_cutoff", EPS, [1, 4, 5, 7],
     [("FreSca", {"scale_low": 1.1, "scale_high": 1.25, "freq_cutoff": 20})], [(1.5, 5.0, True)]),
    ("mahiro", FLOW5, [2, 4, 2, 4, 4], [("Mahiro", {})], [(0.6, 5.0, True), (0.6, 1.0, False)]),
    ("epsilon_scaling", EPS, [1, 4, 4, 4], [("Epsilon Scaling", {"scaling_factor": 1.005})], [(4.0, 7.0, True)]),
    ("tsr_flow", FLOW5, [1, 4, 2, 4, 4], [("TemporalScoreRescaling", {"tsr_k": 0.9, "tsr_sigma": 1.5})],
     [(0.8, 5.0, True), (0.2, 5.0, True)]),
    ("tsr_eps", EPS, [1, 4, 4, 4], [("TemporalScoreRescaling", {"tsr_k": 1.2, "tsr_sigma": 0.7})],
     [(2.5, 6.0, True)]),
    ("chain", FLOW5, [1, 4, 2, 4, 4],
     [("APG", {"eta": 0.5, "norm_threshold": 3.0, "momentum": 0.3}), ("TCFG", {}),
      ("RescaleCFG", {"multiplier": 0.5}), ("Mahiro", {}),
      ("TemporalScoreRescaling", {"tsr_k": 0.95, "tsr_sigma": 1.0}), ("Epsilon Scaling", {"scaling_factor": 1.01})],
     [(0.9, 6.0, True), (0.6, 6.0, True)]),
]


def sampling_of(spec):
    kind, shift = spec
    return flow_sampling(shift) if kind == "flow" else EpsSampling()


def patch_cases():
    cases = []
    for name, spec, shape, chain, steps in CASES:
        model = Patcher(sampling_of(spec))
        for node, inputs in chain:
            model = run_node(NODES[node], model, **inputs)
        out_steps = []
        for sigma, cfg, has_uncond in steps:
            x = torch.randn(shape, dtype=DT)
            cond = torch.randn(shape, dtype=DT) * 0.8
            uncond = torch.randn(shape, dtype=DT) * 0.8 if has_uncond else None
            result = guided(model, x, sigma, cond, uncond, cfg)
            out_steps.append({"sigma": sigma, "cfg": cfg, "x": flat(x), "cond": flat(cond),
                              "uncond": None if uncond is None else flat(uncond), "out": flat(result)})
        cases.append({"name": name, "sampling": spec[0], "shift": spec[1], "shape": shape,
                      "chain": [[n, i] for n, i in chain], "steps": out_steps})
    return cases


def flow_sigmas(shift, steps):
    ms = flow_sampling(shift)
    return [float(ms.sigma(torch.tensor((1 - i / steps) * 1000.0))) if i < steps else 0.0 for i in range(steps + 1)]


def network(x, sigma):
    """The analytic network: per batch item a different drift, so cond and uncond differ."""
    items = torch.arange(x.shape[0], dtype=DT).view(-1, *([1] * (x.ndim - 1)))
    x = x[:, :4]
    return 0.9 * x + 0.3 * torch.sin(7.0 * sigma) + 0.1 * (items + 1) * torch.cos(x) + 0.5 * items * torch.sin(11.0 * sigma)


def easycache_case(threshold, start, end, batched):
    """Wan-like flow sampling with cond and uncond either batched in one call or called apart."""
    x = torch.randn([1, 4, 2, 9, 10], dtype=DT)
    concat = torch.randn([1, 2, 2, 9, 10], dtype=DT)
    x0 = flat(x)
    ms = flow_sampling(5.0)
    holder = nodes_easycache.EasyCacheHolder(threshold, start, end, subsample_factor=8,
                                             offload_cache_diff=False, output_channels=4)
    holder = holder.clone().prepare_timesteps(ms)
    cond_uuid, uncond_uuid = uuid.uuid4(), uuid.uuid4()
    sigmas = flow_sigmas(5.0, 14)
    calls = []
    for s, sn in zip(sigmas[:-1], sigmas[1:]):
        holder.skip_current_step = False  # easycache_calc_cond_batch_wrapper
        timestep = torch.full((1,), s, dtype=DT)
        # calc_cond_batch batches in reverse: [uncond, cond]; apart, cond runs first.
        groups = [[uncond_uuid, cond_uuid]] if batched else [[cond_uuid], [uncond_uuid]]
        outs = {}
        for uuids in groups:
            xin = torch.cat([torch.cat([x, concat], 1)] * len(uuids))
            ran = []

            def executor(xi, t, context, transformer_options):
                ran.append(True)
                return network(xi, t[0])

            opts = {"easycache": holder, "sigmas": timestep, "uuids": uuids}
            out = nodes_easycache.easycache_forward_wrapper(executor, xin, timestep, None, opts)
            for u, o in zip(uuids, out.chunk(len(uuids))):
                outs[u] = o.clone()
            calls.append({"sigma": s, "keys": ["cond" if u == cond_uuid else "uncond" for u in uuids],
                          "ran": bool(ran), "out_sum": out.sum().item(), "out_abs": out.abs().sum().item()})
        v = outs[uncond_uuid] + 5.0 * (outs[cond_uuid] - outs[uncond_uuid])
        x = x + (sn - s) * v
    return {"threshold": threshold, "start_percent": start, "end_percent": end, "batched": batched,
            "sigmas": sigmas, "x0": x0, "x": flat(x), "calls": calls,
            "skipped": holder.total_steps_skipped}


def lazycache_case(threshold, start, end):
    ms = flow_sampling(3.0)
    holder = nodes_easycache.LazyCacheHolder(threshold, start, end, subsample_factor=8,
                                             offload_cache_diff=False, output_channels=4)
    holder = holder.clone().prepare_timesteps(ms)
    sigmas = flow_sigmas(3.0, 12)
    x = torch.randn([2, 4, 2, 9, 17], dtype=DT)
    x0 = flat(x)
    calls = []
    for s, sn in zip(sigmas[:-1], sigmas[1:]):
        timestep = torch.full((2,), s, dtype=DT)
        ran = []

        def executor(xi, t, model_options):
            ran.append(True)
            return xi - t[0] * network(xi, t[0])

        opts = {"transformer_options": {"easycache": holder}}
        denoised = nodes_easycache.lazycache_predict_noise_wrapper(executor, x, timestep, opts)
        calls.append({"sigma": s, "ran": bool(ran), "out_sum": denoised.sum().item(),
                      "out_abs": denoised.abs().sum().item()})
        x = x + (sn - s) * (x - denoised) / s
    return {"threshold": threshold, "start_percent": start, "end_percent": end, "sigmas": sigmas,
            "x0": x0, "x": flat(x), "calls": calls, "skipped": holder.total_steps_skipped}


reference = {"patches": patch_cases()}
reference["easycache"] = [easycache_case(*args) for args in [
    (0.2, 0.15, 0.95, True), (0.2, 0.15, 0.95, False), (0.05, 0.0, 1.0, True), (0.6, 0.3, 0.8, True)]]
reference["lazycache"] = [lazycache_case(*args) for args in [(0.2, 0.15, 0.95), (0.3, 0.0, 1.0), (0.5, 0.3, 0.9)]]
with open(out_path, "w") as f:
    json.dump(reference, f)
print({c["name"]: len(c["steps"]) for c in reference["patches"]},
      [(c["skipped"], len(c["calls"])) for c in reference["easycache"]],
      [(c["skipped"], len(c["calls"])) for c in reference["lazycache"]])
