"""Decodes media files as upstream ComfyUI's VideoFromFile.get_components does, with PyAV:
JPEG-range YUV and 8-bit RGB(A)/palette frames convert to 8-bit RGB(A) and are divided by 255,
every other format converts to float planar RGB(A); alpha, where the format has it, is kept
apart. Widths that are not a multiple of 32 on the float path are padded and smeared first, as
upstream does to make that conversion deterministic.

Usage: decode_reference.py OUT.safetensors FILE...  (tensors `images.<i>` [N, H, W, 3] and
`alpha.<i>` [N, H, W, 1] for file i)
"""
import sys

import av
import numpy as np
import torch
from safetensors.torch import save_file

EIGHT_BIT = {"yuvj420p", "yuvj422p", "yuvj444p", "rgb24", "rgba", "pal8"}


def padded(frame, stream):
    """The frame padded to whole 32-pixel blocks, the border repeated, as upstream pads it."""
    width, height = -(-frame.width // 32) * 32, -(-frame.height // 32) * 32
    graph = av.filter.Graph()
    source = graph.add_buffer(width=frame.width, height=frame.height, format=frame.format.name,
                              time_base=stream.time_base)
    pad = graph.add("pad", f"{width}:{height}:0:0")
    fill = graph.add("fillborders", f"left=0:right={width - frame.width}:top=0:"
                     f"bottom={height - frame.height}:mode=smear")
    sink = graph.add("buffersink")
    source.link_to(pad)
    pad.link_to(fill)
    fill.link_to(sink)
    graph.configure()
    source.push(frame)
    return sink.pull()


def decode(path):
    with av.open(path) as container:
        stream = container.streams.video[0]
        frames, alphas, target = [], [], None
        for frame in container.decode(stream):
            if target is None:
                has_alpha = frame.format.name == "pal8" or any(c.is_alpha for c in frame.format.components)
                if frame.format.name in EIGHT_BIT:
                    target = "rgba" if has_alpha else "rgb24"
                else:
                    target = "gbrapf32le" if has_alpha else "gbrpf32le"
            if target.startswith("gbr") and frame.width % 32 != 0:
                pixels = padded(frame, stream).to_ndarray(format=target)[:frame.height, :frame.width]
            else:
                pixels = frame.to_ndarray(format=target)
            pixels = torch.from_numpy(np.ascontiguousarray(pixels))
            if not target.startswith("gbr"):
                pixels = pixels.float() / 255.0
            if target in ("rgba", "gbrapf32le"):
                frames.append(pixels[..., :3])
                alphas.append(pixels[..., 3:])
            else:
                frames.append(pixels)
        images = torch.stack(frames).float().contiguous()
        alpha = torch.stack(alphas).float().contiguous() if alphas else None
        return images, alpha


tensors = {}
for i, path in enumerate(sys.argv[2:]):
    images, alpha = decode(path)
    tensors[f"images.{i}"] = images
    if alpha is not None:
        tensors[f"alpha.{i}"] = alpha
save_file(tensors, sys.argv[1])
