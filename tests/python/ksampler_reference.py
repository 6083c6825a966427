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


def gradient_mask():
    """The mask tests/sampling_nodes.rs loads: red = (x + 3y) % 200 + 30 inside a box, else 0."""
    y, x = torch.meshgrid(torch.arange(128), torch.arange(128), indexing="ij")
    red = torch.where((x >= 32) & (x < 96) & (y >= 40) & (y < 104), (x + 3 * y) % 200 + 30, 0)
    return (red.to(torch.uint8).float() / 255.0).unsqueeze(0)


def add_area_dims(area, n):
    while len(area) // 2 < n:
        area = [2147483648] + area[:len(area) // 2] + [0] + area[len(area) // 2:]
    return area


def resolve(entries, dims):
    """ComfyUI's resolve_areas_and_cond_masks_multidim, restated."""
    out = []
    for e in entries:
        e = dict(e)
        if e.get("percentage"):
            a = e.pop("percentage")
            e["area"] = [max(1, round(a[d] * dims[d])) for d in range(2)] + [round(a[d + 2] * dims[d]) for d in range(2)]
        if e.get("mask"):
            m = gradient_mask()
            m = torch.nn.functional.interpolate(m.unsqueeze(1), size=dims, mode="bilinear").squeeze(1)
            if e.get("bounds"):
                b = m.abs().max(dim=0).values
                ys, xs = torch.where(b != 0)
                e["area"] = [max(8, int(ys.max() - ys.min() + 1)), max(8, int(xs.max() - xs.min() + 1)), int(ys.min()), int(xs.min())]
            e["mask"] = m
        out.append(e)
    return out


def area_inside(a, cmp):
    n = len(a) // 2
    return all(a[n + i] >= cmp[n + i] for i in range(n)) and all(a[i] + a[n + i] <= cmp[i] + cmp[n + i] for i in range(n))


def pair_areas(lists):
    """ComfyUI's create_cond_with_same_area_if_none across the guider's conditionings."""
    for k in range(len(lists)):
        for c in list(lists[k]):
            if not c.get("area"):
                continue
            for kk in range(len(lists)):
                if kk == k:
                    continue
                smallest = None
                for x in lists[kk]:
                    if x.get("area"):
                        if area_inside(c["area"], x["area"]):
                            if smallest is None or not smallest.get("area") or math.prod(smallest["area"][:2]) > math.prod(x["area"][:2]):
                                smallest = x
                    elif smallest is None:
                        smallest = x
                if smallest is None or smallest.get("area") == c["area"]:
                    continue
                lists[kk].append({**c, "value": smallest["value"]})


def area_and_mult(e, x):
    input_x, area = x, None
    if e.get("area"):
        area = list(e["area"])
        for i in range(2):
            area[i] = min(x.shape[i + 2] - area[2 + i], area[i])
            input_x = input_x.narrow(i + 2, area[2 + i], area[i])
    if e.get("mask") is not None:
        m = e["mask"][:input_x.shape[0]]
        if area is not None:
            for i in range(2):
                m = m.narrow(i + 1, area[2 + i], area[i])
        m = (m * e.get("mask_strength", 1.0)).unsqueeze(1).repeat(input_x.shape[0] // m.shape[0], input_x.shape[1], 1, 1).double()
    else:
        m = torch.ones_like(input_x)
    mult = m * e.get("strength", 1.0)
    if e.get("mask") is None and area is not None:
        for i in range(2):
            rr = min(8, mult.shape[2 + i] // 4)
            if area[2 + i] != 0:
                for t in range(rr):
                    mult.narrow(i + 2, t, 1).mul_((1.0 / rr) * (t + 1))
            if area[i] + area[2 + i] < x.shape[i + 2]:
                for t in range(rr):
                    mult.narrow(i + 2, area[i] - 1 - t, 1).mul_((1.0 / rr) * (t + 1))
    return input_x, mult, area


def run(case):
    pred = case["prediction"]
    ms = ref.Flow(case["shift"]) if pred == "flow" else ref.Discrete()
    shape = case["shape"]
    # ComfyUI's float32 noise and schedule; the rest in float64, the exact value our float32
    # pipeline must come close to (ComfyUI's own float32 scalar rounding is not the target).
    latent = torch.zeros(shape, dtype=torch.float64)
    noise = torch.randn(shape, generator=torch.manual_seed(case["seed"])).double()
    if "sigmas_node" in case:
        sigmas = ref.node_sigmas(case["sigmas_node"]).double()
    else:
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

    def regions(key):
        return case.get(key + "_regions") or [{"value": case[key]}]

    lists = [resolve(regions("positive"), shape[2:]), resolve(regions("negative"), shape[2:])]
    pair_areas(lists)

    def calc(entries, x, sigma):
        """ComfyUI's calc_cond_batch for one conditioning."""
        out, counts = torch.zeros_like(x), torch.ones_like(x) * 1e-37
        for e in entries:
            input_x, mult, area = area_and_mult(e, x)
            o, c = out, counts
            if area is not None:
                for i in range(2):
                    o, c = o.narrow(i + 2, area[2 + i], area[i]), c.narrow(i + 2, area[2 + i], area[i])
            o += apply(input_x, sigma, e["value"]) * mult
            c += mult
        return out / counts

    def model(x, sigma, **kwargs):
        cond = calc(lists[0], x, sigma)
        if math.isclose(case["cfg"], 1.0):
            return cond
        uncond = calc(lists[1], x, sigma)
        return uncond + (cond - uncond) * case["cfg"]

    g = torch.Generator().manual_seed(case["seed"])
    ns = lambda s, sn: torch.randn(x.size(), dtype=torch.float32, generator=g).double()
    if "tuned" in case:
        # A Sampler* node's options: the reference sampler run with them.
        sampler = ref.TUNED[case["tuned"]][4]
    else:
        table = ref.FLOW_SAMPLERS if pred == "flow" and case["sampler"] in ref.FLOW_SAMPLERS else ref.SAMPLERS
        sampler = table[case["sampler"]]
    samples = sampler(model, x, sigmas, ns)
    if pred == "flow":
        samples = samples / (1.0 - sigmas[-1])
    return samples.flatten().tolist()


if __name__ == "__main__":
    cases = json.load(sys.stdin)
    json.dump([run(c) for c in cases], sys.stdout)
