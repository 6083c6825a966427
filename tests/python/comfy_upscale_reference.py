"""comfy.utils.common_upscale restated over torch for the reference scripts: the frames of a
5-D latent folded into the batch, an optional centre crop to the target's aspect, then
F.interpolate."""
import torch.nn.functional as F


def common_upscale(samples, width, height, method, crop):
    orig = tuple(samples.shape)
    if len(orig) > 4:
        samples = samples.reshape(orig[0], orig[1], -1, orig[-2], orig[-1]).movedim(2, 1)
        samples = samples.reshape(-1, orig[1], orig[-2], orig[-1])
    if crop == "center":
        ow, oh = samples.shape[-1], samples.shape[-2]
        oa, na = ow / oh, width / height
        x = y = 0
        if oa > na:
            x = round((ow - ow * (na / oa)) / 2)
        elif oa < na:
            y = round((oh - oh * (oa / na)) / 2)
        samples = samples.narrow(-2, y, oh - y * 2).narrow(-1, x, ow - x * 2)
    out = F.interpolate(samples, size=(height, width), mode=method)
    if len(orig) == 4:
        return out
    out = out.reshape((orig[0], -1, orig[1]) + (height, width))
    return out.movedim(2, 1).reshape(orig[:-2] + (height, width))
