"""A tiny UMT5 encoder from PyPI transformers (UMT5EncoderModel) with every parameter randomized,
saved under ComfyUI's key names (the file layout of umt5_xxl_fp16.safetensors), plus token ids,
an attention mask with padding, and transformers' last hidden states in float32; and a tiny
T5 v1.1 encoder (T5EncoderModel: gated GELU, one shared position bias; the layout of
t5xxl_fp16.safetensors) with its states for the same ids unmasked, as FLUX runs T5.
Usage: DIR -> DIR/{umt5,t5}.safetensors, DIR/umt5_io.safetensors."""
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel


def main(out):
    g = torch.Generator().manual_seed(7)
    config = UMT5Config(vocab_size=96, d_model=32, d_kv=8, d_ff=48, num_layers=3, num_heads=4,
                        relative_attention_num_buckets=32, relative_attention_max_distance=128,
                        feed_forward_proj="gated-gelu", dropout_rate=0.0)
    model = UMT5EncoderModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.3
            p.copy_(1.0 + noise if "layer_norm" in name else noise)
    sd = {k: v.contiguous() for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}
    save_file(sd, out / "umt5.safetensors")
    # 150 tokens, so relative distances reach the logarithmic buckets; the second prompt is padded.
    ids = torch.randint(0, 96, (2, 150), generator=g)
    mask = torch.ones(2, 150, dtype=torch.int64)
    mask[1, 40:] = 0
    ids[1, 40:] = 0
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    t5 = T5EncoderModel(T5Config(vocab_size=96, d_model=32, d_kv=8, d_ff=48, num_layers=3,
                                 num_heads=4, feed_forward_proj="gated-gelu",
                                 dropout_rate=0.0)).eval()
    with torch.no_grad():
        for name, p in t5.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.3
            p.copy_(1.0 + noise if "layer_norm" in name else noise)
        t5_hidden = t5(input_ids=ids).last_hidden_state
    save_file({k: v.contiguous() for k, v in t5.state_dict().items()
               if k != "encoder.embed_tokens.weight"}, out / "t5.safetensors")
    save_file({"ids": ids, "mask": mask, "hidden": hidden.contiguous(),
               "t5_hidden": t5_hidden.contiguous()}, out / "umt5_io.safetensors")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
