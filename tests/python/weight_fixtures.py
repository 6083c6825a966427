"""Tiny weight files in the formats ComfyUI reads, written with PyPI torch + safetensors, and the
reference values (float32 bit patterns) tests/weights.rs must reproduce. Usage: DIR -> JSON."""
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

P = "model.diffusion_model."


def bits(t):
    return t.float().contiguous().view(torch.int32).flatten().tolist()


def dequant_fp8(w, scale, dtype=torch.bfloat16):
    """comfy-kitchen's eager dequantize_per_tensor_fp8."""
    return w.to(dtype=dtype) * scale.to(dtype=dtype)


E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])


def to_blocked(scales):
    """cuBLAS's 128x4-tiled block-scale layout (torchao's to_blocked), padded."""
    rows, cols = scales.shape
    rb, cb = -(-rows // 128), -(-cols // 4)
    padded = torch.zeros(rb * 128, cb * 4, dtype=scales.dtype)
    padded[:rows, :cols] = scales
    blocks = padded.view(torch.uint8).view(rb, 128, cb, 4).permute(0, 2, 1, 3)
    return blocks.reshape(-1, 4, 32, 4).transpose(1, 2).reshape(-1).view(scales.dtype)


def dequant_nvfp4(packed, block, global_scale):
    """High nibble first; value * (global * block scale) in float32."""
    codes = torch.stack([packed >> 4, packed & 15], dim=-1).reshape(packed.shape[0], -1).long()
    values = E2M1[codes].view(packed.shape[0], -1, 16)
    total = global_scale * block.float()
    return (values * total.unsqueeze(-1)).reshape(packed.shape[0], -1)


def main(out):
    g = torch.Generator().manual_seed(0)
    rand = lambda *shape: torch.randn(*shape, generator=g)
    ref = {}

    plain = {
        P + "blocks.0.attn.q.weight": rand(8, 6).to(torch.bfloat16),
        P + "blocks.0.attn.q.bias": rand(8).to(torch.float16),
        P + "head.weight": rand(4, 8),
        "first_stage_model.decoder.conv.weight": rand(3, 4, 3, 3).to(torch.float16),
        "step_count": torch.tensor([7, 8], dtype=torch.int64),
    }
    save_file(plain, out / "plain.safetensors", metadata={"modelspec.title": "tiny", "format": "pt"})
    ref["plain"] = {k: bits(v) for k, v in plain.items() if v.is_floating_point()}

    # Legacy scaled fp8 (ComfyUI's fp8_scaled files): marker, scale_weight, scale_input.
    w1, w2 = (rand(8, 6) * 3).to(torch.float8_e4m3fn), (rand(4, 8) * 200).to(torch.float8_e4m3fn)
    s1, s2 = torch.tensor(0.0173), torch.tensor(1.25)
    scaled = {
        P + "scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn),
        P + "blocks.0.ffn.0.weight": w1, P + "blocks.0.ffn.0.scale_weight": s1,
        P + "blocks.0.ffn.0.scale_input": torch.tensor(1.0),
        P + "blocks.0.ffn.2.weight": w2, P + "blocks.0.ffn.2.scale_weight": s2,
        P + "blocks.0.ffn.2.scale_input": torch.tensor(0.5),
        P + "blocks.0.proj.weight": rand(6, 6).to(torch.bfloat16),
    }
    save_file(scaled, out / "scaled_fp8.safetensors")
    ref["scaled_fp8"] = {
        "blocks.0.ffn.0": bits(dequant_fp8(w1, s1)),
        "blocks.0.ffn.2": bits(dequant_fp8(w2, s2)),
        "blocks.0.ffn.2/fp16": bits(dequant_fp8(w2, s2, torch.float16)),
        "blocks.0.proj": bits(scaled[P + "blocks.0.proj.weight"]),
    }
    scaled[P + "scaled_fp8"] = torch.zeros(2, dtype=torch.float8_e4m3fn)
    save_file(scaled, out / "scaled_fp8_full_precision.safetensors")

    # The per-layer scheme: a header table, or comfy_quant tensors.
    w3 = (rand(6, 4) * 40).to(torch.float8_e5m2)
    s3 = torch.tensor(0.031)
    table = {"format_version": "1.0", "layers": {P + "proj": {"format": "float8_e5m2"}}}
    mixed = {P + "proj.weight": w3, P + "proj.weight_scale": s3, P + "out.weight": rand(2, 6).to(torch.bfloat16)}
    save_file(mixed, out / "mixed_header.safetensors", metadata={"_quantization_metadata": json.dumps(table)})
    quant = json.dumps({"format": "float8_e5m2"}).encode()
    mixed[P + "proj.comfy_quant"] = torch.tensor(list(quant), dtype=torch.uint8)
    save_file(mixed, out / "mixed_tensor.safetensors")
    ref["mixed"] = {"proj": bits(dequant_fp8(w3, s3))}
    # NVFP4 (comfy-kitchen layout) for a 150x90 module: padded to 160x96, scales swizzled.
    rows, cols, r_pad, c_pad = 150, 90, 160, 96
    packed = torch.randint(0, 256, (r_pad, c_pad // 2), generator=g, dtype=torch.uint8)
    block = (torch.rand(r_pad, c_pad // 16, generator=g) * 8 + 0.01).to(torch.float8_e4m3fn)
    global_scale = torch.tensor(0.0123)
    nvfp4 = {
        P + "ffn.weight": packed,
        P + "ffn.weight_scale": to_blocked(block).view(-1, 8),
        P + "ffn.weight_scale_2": global_scale,
        P + "ffn.comfy_quant": torch.tensor(list(json.dumps({"format": "nvfp4"}).encode()), dtype=torch.uint8),
    }
    save_file(nvfp4, out / "nvfp4.safetensors")
    w = dequant_nvfp4(packed, block, global_scale)[:rows, :cols]
    ref["nvfp4"] = {"f32": bits(w), "bf16": bits(w.to(torch.bfloat16))}
    # LoRA: kohya (lora_up/lora_down/alpha) and PEFT (lora_A/lora_B) forms on a tiny model.
    base = {
        "diffusion_model.blocks.0.attn.q.weight": rand(8, 6).to(torch.bfloat16),
        "diffusion_model.blocks.0.attn.k.weight": rand(8, 6).to(torch.float16),
        "diffusion_model.blocks.0.attn.v.weight": rand(8, 6),
    }
    save_file(base, out / "lora_base.safetensors")
    lora = {
        "lora_unet_blocks_0_attn_q.lora_up.weight": rand(8, 2).to(torch.float16),
        "lora_unet_blocks_0_attn_q.lora_down.weight": rand(2, 6).to(torch.float16),
        "lora_unet_blocks_0_attn_q.alpha": torch.tensor(3.0),
        "diffusion_model.blocks.0.attn.k.lora_B.weight": rand(8, 4).to(torch.bfloat16),
        "diffusion_model.blocks.0.attn.k.lora_A.weight": rand(4, 6).to(torch.bfloat16),
        "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": rand(4, 2),
    }
    save_file(lora, out / "lora.safetensors")
    strength = 0.8

    def merged(key, up, down, alpha):
        """ComfyUI's LoRAAdapter.calculate_weight on a float32 copy, cast back."""
        weight = base[key].to(torch.float32)
        down32 = lora[down].to(torch.float32)
        scale = lora[alpha].item() / down32.shape[0] if alpha else 1.0
        diff = torch.mm(lora[up].to(torch.float32).flatten(1), down32.flatten(1)).reshape(weight.shape)
        weight += (strength * scale) * diff
        return weight.to(base[key].dtype)

    ref["lora"] = {
        "strength": strength,
        "diffusion_model.blocks.0.attn.q.weight": bits(merged(
            "diffusion_model.blocks.0.attn.q.weight", "lora_unet_blocks_0_attn_q.lora_up.weight",
            "lora_unet_blocks_0_attn_q.lora_down.weight", "lora_unet_blocks_0_attn_q.alpha")),
        "diffusion_model.blocks.0.attn.k.weight": bits(merged(
            "diffusion_model.blocks.0.attn.k.weight", "diffusion_model.blocks.0.attn.k.lora_B.weight",
            "diffusion_model.blocks.0.attn.k.lora_A.weight", None)),
    }
    # GGUF with every block format the reader decodes; gguf-py's dequantize is the reference.
    import gguf
    import numpy as np
    writer = gguf.GGUFWriter(str(out / "tiny.gguf"), "wan")
    writer.add_string("general.name", "tiny")
    writer.add_uint32("wan.block_count", 1)
    ref["gguf"] = {}
    for name, kind in [("F32", "F32"), ("F16", "F16"), ("BF16", "BF16"), ("Q8_0", "Q8_0"),
                       ("Q4_0", "Q4_0"), ("Q4_1", "Q4_1"), ("Q5_0", "Q5_0"), ("Q5_1", "Q5_1")]:
        qtype = getattr(gguf.GGMLQuantizationType, kind)
        x = rand(6, 64).numpy() * 2
        q = gguf.quants.quantize(x, qtype)
        key = f"blocks.0.{name.lower()}.weight"
        writer.add_tensor(key, q, raw_dtype=qtype)
        ref["gguf"][key] = np.asarray(gguf.quants.dequantize(q, qtype), dtype=np.float32).view(np.int32).flatten().tolist()
    # K-quants: gguf-py cannot quantize them, so random super-blocks with sane f16 scales.
    rng = np.random.default_rng(1)
    for name, size, scale_offsets in [("Q4_K", 144, (0, 2)), ("Q5_K", 176, (0, 2)), ("Q6_K", 210, (208,))]:
        qtype = getattr(gguf.GGMLQuantizationType, name)
        raw = rng.integers(0, 256, size=(6, 2 * size), dtype=np.uint8)
        for row in raw:
            for block in range(2):
                for off in scale_offsets:
                    scale = np.array([rng.uniform(0.001, 0.05)], dtype=np.float16).view(np.uint8)
                    row[block * size + off: block * size + off + 2] = scale
        key = f"blocks.0.{name.lower()}.weight"
        writer.add_tensor(key, raw, raw_dtype=qtype)
        ref["gguf"][key] = np.asarray(gguf.quants.dequantize(raw, qtype), dtype=np.float32).view(np.int32).flatten().tolist()
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    json.dump(ref, sys.stdout)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
