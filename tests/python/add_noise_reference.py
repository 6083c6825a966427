"""ComfyUI's ImageAddNoise on a 6x4 mid-grey image (seed 42, strength 0.1), then SaveImage's
8-bit conversion: prints the red channel's bytes, row by row, as JSON."""
import json

import torch

image = torch.full((1, 4, 6, 3), 0x80 / 255.0)
noise = torch.randn(image.size(), generator=torch.manual_seed(42), device="cpu").to(image)
noisy = torch.clip(image + 0.1 * noise, min=0.0, max=1.0)
print(json.dumps((255.0 * noisy[0, :, :, 0]).clip(0, 255).to(torch.uint8).tolist()))
