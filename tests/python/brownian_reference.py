"""torchsde's BrownianTree on a given device, as ComfyUI's `_gpu` SDE samplers grow it
(BatchedBrownianTree with cpu=False). Usage: DEVICE -> JSON of increments (float32)."""
import json
import sys

import torch
import torchsde


def main(device):
    t0, t1, seed = 0.0291675, 14.614642, 987654321
    tree = torchsde.BrownianTree(t0, torch.zeros(2, 3, 40, dtype=torch.float32, device=device), t1, entropy=seed)
    queries = [(14.614642, 9.7), (0.5, 2.25), (0.0291675, 14.614642), (3.3333, 3.33335), (1e-3, 0.2)]
    w = [tree(min(a, b), max(a, b)).flatten().tolist() for a, b in queries]
    json.dump({"t0": t0, "t1": t1, "seed": seed, "queries": queries, "w": w}, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
