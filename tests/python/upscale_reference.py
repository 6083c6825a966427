"""The upscale models' reference: PyPI spandrel 0.4.2, which ComfyUI's UpscaleModelLoader loads
files with, and ImageUpscaleWithModel's tiling (ComfyUI's `tiled_scale` with 512-pixel tiles,
32 pixels of overlap and linear feathering) written out over the spandrel descriptor's call.

Tiny random networks, saved with each file layout's key names:
  esrgan_x4        ESRGAN's `model.N` layout, ×4
  realesrgan_x4    Real-ESRGAN's `conv_first`/`body` layout, ×4 (RealESRGAN_x4plus's)
  realesrgan_x2    the same layout with a pixel-unshuffled input, ×2
  bsrgan_x2        BSRGAN's `RRDB_trunk` layout, ×2
  esrgan_plus_x1   ESRGAN+ (1×1 convolutions in the dense blocks), ×1
  compact_x4       Real-ESRGAN Compact (SRVGGNetCompact), ×4

Usage: DIR -> DIR/<name>.safetensors for each, and DIR/io.safetensors with the inputs
`wide` [1, 20, 600, 3] (two tiles), `small` [2, 9, 13, 3] and `thin` [1, 1, 5, 3] and the
outputs `<name>_<input>`. Prints each model's scale as JSON."""
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from spandrel import ImageModelDescriptor, ModelLoader
from spandrel.architectures.Compact import Compact
from spandrel.architectures.ESRGAN import ESRGAN

TILE, OVERLAP = 512, 32


def sequential_to_basicsr(sd, blocks, ups):
    """spandrel's ESRGAN keys (`model.N`) renamed to Real-ESRGAN's."""
    names = {"model.0": "conv_first", f"model.1.sub.{blocks}": "conv_body"}
    for k in range(1, ups + 1):
        names[f"model.{3 * k}"] = f"conv_up{k}"
    names[f"model.{3 * ups + 2}"] = "conv_hr"
    names[f"model.{3 * ups + 4}"] = "conv_last"
    out = {}
    for key, value in sd.items():
        stem, param = key.rsplit(".", 1)
        if ".RDB" in stem:
            block, rdb, conv = stem.split(".")[3], stem.split(".")[4][3:], stem.split(".")[5][4:]
            out[f"body.{block}.rdb{rdb}.conv{conv}.{param}"] = value
        else:
            out[f"{names[stem]}.{param}"] = value
    return out


def sequential_to_bsrgan(sd, blocks, ups):
    out = {}
    for key, value in sequential_to_basicsr(sd, blocks, ups).items():
        key = key.replace("conv_body", "trunk_conv").replace("conv_up", "upconv").replace("conv_hr", "HRconv")
        if key.startswith("body."):
            _, block, rdb, rest = key.split(".", 3)
            key = f"RRDB_trunk.{block}.RDB{rdb[3:]}.{rest}"
        out[key] = value
    return out


def centred(module, last_bias):
    """Random weights small enough that most outputs land inside 0…1, so clamping hides little."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * (0.5 / max(p[0].numel(), 1) ** 0.5))
        last_bias.fill_(0.5)
    return module


def tiled_scale(image, run, scale):
    """ComfyUI's `tiled_scale_multidim` for two dimensions, as ImageUpscaleWithModel calls it."""
    out_all = []
    for b in range(image.shape[0]):
        s = image[b:b + 1]
        h, w = s.shape[2], s.shape[3]
        if h <= TILE and w <= TILE:
            out_all.append(run(s))
            continue
        out = torch.zeros(1, 3, h * scale, w * scale)
        div = torch.zeros_like(out)
        ys = range(0, h - OVERLAP, TILE - OVERLAP) if h > TILE else [0]
        xs = range(0, w - OVERLAP, TILE - OVERLAP) if w > TILE else [0]
        for y in ys:
            for x in xs:
                y0, x0 = max(0, min(h - OVERLAP, y)), max(0, min(w - OVERLAP, x))
                tile = s[:, :, y0:y0 + min(TILE, h - y0), x0:x0 + min(TILE, w - x0)]
                ps = run(tile)
                mask = torch.ones_like(ps)
                feather = OVERLAP * scale
                for d in (2, 3):
                    if feather >= mask.shape[d]:
                        continue
                    for t in range(feather):
                        a = (t + 1) / feather
                        mask.narrow(d, t, 1).mul_(a)
                        mask.narrow(d, mask.shape[d] - 1 - t, 1).mul_(a)
                o = out[:, :, y0 * scale:y0 * scale + ps.shape[2], x0 * scale:x0 * scale + ps.shape[3]]
                o_d = div[:, :, y0 * scale:y0 * scale + ps.shape[2], x0 * scale:x0 * scale + ps.shape[3]]
                o += ps * mask
                o_d += mask
        out_all.append(out / div)
    return torch.cat(out_all)


def main():
    out_dir = Path(sys.argv[1])
    plain = ESRGAN(num_filters=8, num_blocks=2, scale=4)
    plain = centred(plain, plain.model[10].bias)
    basicsr = ESRGAN(num_filters=8, num_blocks=1, scale=4)
    basicsr = centred(basicsr, basicsr.model[10].bias)
    shuffled = ESRGAN(in_nc=12, out_nc=3, num_filters=8, num_blocks=2, scale=4, shuffle_factor=2)
    shuffled = centred(shuffled, shuffled.model[10].bias)
    bsrgan = ESRGAN(num_filters=8, num_blocks=1, scale=2)
    bsrgan = centred(bsrgan, bsrgan.model[7].bias)
    plus = ESRGAN(num_filters=8, num_blocks=1, scale=1, plus=True)
    plus = centred(plus, plus.model[4].bias)
    compact = Compact(num_feat=8, num_conv=3, upscale=4)
    compact = centred(compact, compact.body[-1].bias)
    files = {
        "esrgan_x4": plain.state_dict(),
        "realesrgan_x4": sequential_to_basicsr(basicsr.state_dict(), 1, 2),
        "realesrgan_x2": sequential_to_basicsr(shuffled.state_dict(), 2, 2),
        "bsrgan_x2": sequential_to_bsrgan(bsrgan.state_dict(), 1, 1),
        "esrgan_plus_x1": plus.state_dict(),
        "compact_x4": compact.state_dict(),
    }
    gen = torch.Generator().manual_seed(1)
    inputs = {
        "wide": torch.rand(1, 20, 600, 3, generator=gen),
        "small": torch.rand(2, 9, 13, 3, generator=gen),
        "thin": torch.rand(1, 1, 5, 3, generator=gen),
    }
    io = dict(inputs)
    scales = {}
    for name, sd in files.items():
        sd = {k: v.contiguous() for k, v in sd.items()}
        save_file(sd, str(out_dir / f"{name}.safetensors"))
        # ComfyUI's loader: spandrel detects the architecture from the keys alone.
        model = ModelLoader().load_from_state_dict(dict(sd)).eval()
        assert isinstance(model, ImageModelDescriptor)
        scales[name] = model.scale
        with torch.no_grad():
            for input_name, image in inputs.items():
                upscaled = tiled_scale(image.movedim(-1, -3), lambda a: model(a.float()), model.scale)
                result = torch.clamp(upscaled.movedim(-3, -1), 0, 1)
                inside = ((result > 0) & (result < 1)).float().mean().item()
                assert inside > 0.5, f"{name} {input_name}: only {inside:.2f} of the outputs are unclamped"
                io[f"{name}_{input_name}"] = result.contiguous()
    save_file(io, str(out_dir / "io.safetensors"))
    print(json.dumps(scales))


if __name__ == "__main__":
    main()
