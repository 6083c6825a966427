"""A tiny SDXL-shaped UNet from PyPI diffusers (UNet2DConditionModel with SDXL's options: linear
transformer projections, 64-channel heads, text_time ADM embedding), every parameter
randomized, saved under the LDM key names ComfyUI reads (`model.diffusion_model.*` without the
prefix), plus inputs and diffusers' noise prediction. The ADM inputs are the pooled text
embedding and the six size values (height, width, crop_h, crop_w, target_height, target_width).

Usage: DIR -> writes DIR/sdxl_unet.safetensors and DIR/sdxl_unet_io.safetensors."""
import sys
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file

POOLED, CONTEXT = 64, 96
CONFIG = dict(sample_size=16, in_channels=4, out_channels=4, layers_per_block=2,
              block_out_channels=(64, 128), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
              up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), transformer_layers_per_block=(1, 2),
              attention_head_dim=(1, 2), cross_attention_dim=CONTEXT, use_linear_projection=True,
              addition_embed_type="text_time", addition_time_embed_dim=256,
              projection_class_embeddings_input_dim=POOLED + 6 * 256, norm_num_groups=32)


def to_ldm(sd, levels, per_level=2):
    """diffusers' names → LDM's (what ComfyUI's unet_to_diffusers maps the other way)."""
    out = {}
    res = [("in_layers.0", "norm1"), ("in_layers.2", "conv1"), ("emb_layers.1", "time_emb_proj"),
           ("out_layers.0", "norm2"), ("out_layers.3", "conv2"), ("skip_connection", "conv_shortcut")]

    def move(ours, theirs):
        for k in list(sd):
            if k == theirs or k.startswith(theirs + "."):
                out[ours + k[len(theirs):]] = sd[k]

    def resnet(ours, theirs):
        for a, b in res:
            move(f"{ours}.{a}", f"{theirs}.{b}")

    move("time_embed.0", "time_embedding.linear_1")
    move("time_embed.2", "time_embedding.linear_2")
    move("label_emb.0.0", "add_embedding.linear_1")
    move("label_emb.0.2", "add_embedding.linear_2")
    move("input_blocks.0.0", "conv_in")
    for i in range(levels):
        for j in range(per_level):
            n = 1 + i * (per_level + 1) + j
            resnet(f"input_blocks.{n}.0", f"down_blocks.{i}.resnets.{j}")
            move(f"input_blocks.{n}.1", f"down_blocks.{i}.attentions.{j}")
        move(f"input_blocks.{1 + i * (per_level + 1) + per_level}.0.op", f"down_blocks.{i}.downsamplers.0.conv")
    resnet("middle_block.0", "mid_block.resnets.0")
    move("middle_block.1", "mid_block.attentions.0")
    resnet("middle_block.2", "mid_block.resnets.1")
    for i in range(levels):
        has_attn = any(k.startswith(f"up_blocks.{i}.attentions.") for k in sd)
        for j in range(per_level + 1):
            n = i * (per_level + 1) + j
            resnet(f"output_blocks.{n}.0", f"up_blocks.{i}.resnets.{j}")
            move(f"output_blocks.{n}.1", f"up_blocks.{i}.attentions.{j}")
        n = i * (per_level + 1) + per_level
        move(f"output_blocks.{n}.{2 if has_attn else 1}.conv", f"up_blocks.{i}.upsamplers.0.conv")
    move("out.0", "conv_norm_out")
    move("out.2", "conv_out")
    return {k: v.contiguous() for k, v in out.items()}


def main(out_dir):
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**CONFIG).eval()
    with torch.no_grad():
        for name, p in unet.named_parameters():
            p.copy_(torch.randn_like(p) * 0.05 + (1.0 if "norm" in name and name.endswith("weight") else 0.0))
    sd = unet.state_dict()
    ldm = to_ldm(sd, 2)
    assert len(ldm) == len(sd), f"{len(sd) - len(ldm)} diffusers keys not mapped"
    x = torch.randn(2, 4, 16, 24)
    t = torch.tensor([999.0, 250.0])
    context = torch.randn(2, 7, CONTEXT)
    pooled = torch.randn(2, POOLED)
    sizes = torch.tensor([[1024.0, 768.0, 0.0, 16.0, 1024.0, 768.0]] * 2)
    with torch.no_grad():
        eps = unet(x, t, encoder_hidden_states=context,
                   added_cond_kwargs={"text_embeds": pooled, "time_ids": sizes}).sample
    save_file(ldm, str(Path(out_dir) / "sdxl_unet.safetensors"))
    save_file({"x": x, "t": t, "context": context, "pooled": pooled, "sizes": sizes,
               "eps": eps.contiguous()}, str(Path(out_dir) / "sdxl_unet_io.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1])
