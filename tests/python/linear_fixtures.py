"""FP8 and NVFP4 linear layers as ComfyUI stores and runs them, for tests/linear.rs.

Writes DIR/linear.safetensors (the quantized layers, the full-precision weights they came from,
and the inputs) and prints, as JSON, the outputs ComfyUI's two paths give in bfloat16 (CPU):
  * "emulated": the weight dequantized (comfy-kitchen's eager dequantize) and F.linear;
  * "scaled_mm": the activation quantized like comfy-kitchen's eager quantize_per_tensor_fp8
    (x * (1/scale) clamped to ±448, cast) and torch._scaled_mm tensor-wise with the bias fused.
Usage: DIR -> JSON.
"""
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from weight_fixtures import to_blocked

E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])


def quantize_fp8(x, scale):
    """comfy-kitchen's eager quantize_per_tensor_fp8."""
    return torch.clamp(x * (1.0 / scale).to(x.dtype), -448, 448).to(torch.float8_e4m3fn)


def e2m1_codes(v):
    """Round-to-nearest-even onto the E2M1 grid; ties go to the even code."""
    mag = v.abs().clamp(max=6.0)
    dist = (mag.unsqueeze(-1) - E2M1).abs()
    best = dist.min(dim=-1, keepdim=True).values
    ties = dist == best
    even_ties = ties & (torch.arange(8) % 2 == 0)
    code = torch.where(even_ties.any(-1), even_ties.float().argmax(-1), ties.float().argmax(-1))
    return code + 8 * (v < 0).long() * (code > 0).long()


def quantize_nvfp4(w):
    """What produced an NVFP4 file: global = amax/(448·6), block scales amax_b/6/global in e4m3,
    elements RNE to E2M1, padded to multiples of 16, packed high nibble first."""
    rows, cols = w.shape
    r_pad, c_pad = -(-rows // 16) * 16, -(-cols // 16) * 16
    padded = torch.zeros(r_pad, c_pad)
    padded[:rows, :cols] = w
    global_scale = w.abs().max() / (448 * 6)
    blocks = padded.view(r_pad, c_pad // 16, 16)
    block_scale = (blocks.abs().amax(-1) / 6 / global_scale).clamp(max=448).to(torch.float8_e4m3fn)
    total = (block_scale.float() * global_scale).unsqueeze(-1)
    codes = e2m1_codes(torch.where(total > 0, blocks / total, torch.zeros_like(blocks))).view(r_pad, c_pad)
    packed = (codes[:, 0::2] * 16 + codes[:, 1::2]).to(torch.uint8)
    return packed, to_blocked(block_scale).view(-1, 8), global_scale


def dequant_nvfp4(packed, blocked_scales, global_scale, shape, block_cols):
    rows = packed.shape[0]
    codes = torch.stack([packed >> 4, packed & 15], dim=-1).reshape(rows, -1).long()
    signed = torch.cat([E2M1, -E2M1])
    values = signed[codes].view(rows, -1, 16)
    # Undo the swizzle by indexing, as the Rust side does.
    r = torch.arange(rows).unsqueeze(1)
    k = torch.arange(values.shape[1]).unsqueeze(0)
    index = ((r // 128) * (block_cols // 4) + k // 4) * 512 + (r % 32) * 16 + ((r % 128) // 32) * 4 + k % 4
    scales = blocked_scales.flatten().float()[index]
    w = (values * (scales * global_scale).unsqueeze(-1)).reshape(rows, -1)
    return w[: shape[0], : shape[1]]


def main(out):
    g = torch.Generator().manual_seed(3)
    # Inputs exactly representable in bf16, so the only rounding is the format's.
    bf16_exact = lambda *s, scale=1.0: (torch.randn(*s, generator=g) * scale).bfloat16().float()
    x96, x90 = bf16_exact(2, 19, 96, scale=3.0), bf16_exact(2, 19, 90, scale=3.0)
    w_fp8, b_fp8 = bf16_exact(48, 96, scale=0.2), bf16_exact(48)
    w_nv, b_nv = bf16_exact(50, 90, scale=0.2), bf16_exact(50)

    weight_scale = w_fp8.abs().max() / 448
    w8 = quantize_fp8(w_fp8, weight_scale)
    in_scale = x96.abs().max() / 448
    packed, blocked, global_scale = quantize_nvfp4(w_nv)
    quant = lambda fmt: torch.tensor(list(json.dumps({"format": fmt}).encode()), dtype=torch.uint8)
    tensors = {
        "fp8.weight": w8, "fp8.weight_scale": weight_scale, "fp8.bias": b_fp8.bfloat16(),
        "fp8.comfy_quant": quant("float8_e4m3fn"),
        "fp8_in.weight": w8.clone(), "fp8_in.weight_scale": weight_scale.clone(), "fp8_in.bias": b_fp8.bfloat16(),
        "fp8_in.input_scale": in_scale, "fp8_in.comfy_quant": quant("float8_e4m3fn"),
        "nvfp4.weight": packed, "nvfp4.weight_scale": blocked, "nvfp4.weight_scale_2": global_scale,
        "nvfp4.bias": b_nv.bfloat16(), "nvfp4.comfy_quant": quant("nvfp4"),
        "reference.fp8.weight": w_fp8, "reference.fp8.bias": b_fp8,
        "reference.nvfp4.weight": w_nv, "reference.nvfp4.bias": b_nv,
        "input.x96": x96, "input.x90": x90,
    }
    save_file(tensors, out / "linear.safetensors")

    bf = torch.bfloat16
    w8_deq = w8.to(bf) * weight_scale.to(bf)
    nv_deq = dequant_nvfp4(packed, blocked, global_scale, (50, 90), blocked.shape[-1]).to(bf)

    def scaled_mm(x, scale):
        xq = quantize_fp8(x.to(bf).reshape(-1, 96), scale)
        y = torch._scaled_mm(xq, w8.t(), scale_a=scale, scale_b=weight_scale, bias=b_fp8.to(bf), out_dtype=bf)
        return y.reshape(2, 19, 48)

    ref = {
        "fp8/emulated": F.linear(x96.to(bf), w8_deq, b_fp8.to(bf)),
        "fp8/scaled_mm": scaled_mm(x96, torch.tensor(1.0)),
        "fp8_in/scaled_mm": scaled_mm(x96, in_scale),
        "nvfp4/emulated": F.linear(x90.to(bf), nv_deq, b_nv.to(bf)),
    }
    print(json.dumps({k: v.float().flatten().tolist() for k, v in ref.items()}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
