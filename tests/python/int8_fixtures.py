"""INT8 linear layers as ComfyUI stores and runs them (comfy-kitchen's TensorWiseINT8Layout), for
tests/int8_linear.rs.

Quantizes weights with comfy-kitchen's eager backend (row-wise, ConvRot-rotated row-wise with
the options at the top level and under "params", and one per-tensor scale), writes them with
their `comfy_quant` tensors to DIR/int8.safetensors beside the inputs, and prints, as JSON, what
comfy-kitchen's eager `int8_linear` gives (float32 and bfloat16 activations) and its
dequantized weights. Usage: DIR -> JSON.
"""
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from comfy_kitchen.backends.eager import quantization as ck


def quant(conf):
    return torch.tensor(list(json.dumps(conf).encode()), dtype=torch.uint8)


def main(out):
    g = torch.Generator().manual_seed(5)
    w = torch.randn(40, 64, generator=g) * 0.2
    # A few outlier input channels, the case ConvRot is for.
    w[:, 3] *= 30
    b = torch.randn(40, generator=g)
    x = torch.randn(3, 7, 64, generator=g) * 2

    rows_q, rows_s = ck.quantize_int8_rowwise(w)
    rot_q, rot_s = ck.quantize_int8_convrot_weight(w, 16)
    tw_q, tw_s = ck.quantize_int8_tensorwise(w)
    tensors = {
        "rows.weight": rows_q, "rows.weight_scale": rows_s, "rows.bias": b,
        "rows.comfy_quant": quant({"format": "int8_tensorwise"}),
        "convrot.weight": rot_q, "convrot.weight_scale": rot_s, "convrot.bias": b.clone(),
        "convrot.comfy_quant": quant({"format": "int8_tensorwise", "convrot": True, "convrot_groupsize": 16}),
        "convrot_params.weight": rot_q.clone(), "convrot_params.weight_scale": rot_s.clone(),
        "convrot_params.comfy_quant": quant({"format": "int8_tensorwise", "params": {"convrot": True, "convrot_groupsize": 16}}),
        "tensorwise.weight": tw_q, "tensorwise.weight_scale": tw_s, "tensorwise.bias": b.clone(),
        "tensorwise.comfy_quant": quant({"format": "int8_tensorwise"}),
        "reference.weight": w, "input.x": x,
    }
    save_file(tensors, out / "int8.safetensors")

    ref = {}
    for dtype_name, dtype in (("f32", torch.float32), ("bf16", torch.bfloat16)):
        xd = x.to(dtype)
        ref[f"rows/{dtype_name}"] = ck.int8_linear(xd, rows_q, rows_s, b, dtype)
        ref[f"convrot/{dtype_name}"] = ck.int8_linear(xd, rot_q, rot_s, b, dtype, convrot=True, convrot_groupsize=16)
        ref[f"convrot_params/{dtype_name}"] = ck.int8_linear(xd, rot_q, rot_s, None, dtype, convrot=True, convrot_groupsize=16)
        ref[f"tensorwise/{dtype_name}"] = ck.int8_linear(xd, tw_q, tw_s, b, dtype)
    ref["convrot/dequantized"] = ck.dequantize_int8_convrot_weight(rot_q, rot_s, 16)
    ref["rows/dequantized"] = ck.dequantize_int8_simple(rows_q, rows_s)
    # The pose cache's storage: block inputs quantized as ConvRot weights and restored.
    act = torch.randn(6, 64, generator=g) * 3
    aq, as_ = ck.quantize_int8_convrot_weight(act, 16)
    tensors_act = {"input.act": act}
    save_file(tensors_act, out / "int8_act.safetensors")
    ref["act/roundtrip"] = ck.dequantize_int8_convrot_weight(aq, as_, 16)
    print(json.dumps({k: v.float().flatten().tolist() for k, v in ref.items()}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
