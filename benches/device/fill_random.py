"""Writes a checkpoint whose large tensors were left out of the carried copy (the device call
carries at most 64 MiB): IN.safetensors holds the kept tensors and, under the metadata key
`random`, the names, dtypes and shapes of the left-out ones, which OUT gets as unit normal
values (the GPU-against-CPU checks compare two runs on the same file, so any values do). Needs
only torch, which the lent GPU's image has.

Usage: python3 fill_random.py IN.safetensors OUT.safetensors
Here, `python3 fill_random.py --strip FULL PREFIX... > IN` makes IN from a full checkpoint,
leaving out the tensors whose names start with a PREFIX."""
import json
import struct
import sys

import torch

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def read(path):
    data = open(path, "rb").read()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + size])
    metadata = header.pop("__metadata__", {})
    body = data[8 + size:]
    tensors = {}
    for name, entry in header.items():
        start, end = entry["data_offsets"]
        raw = bytearray(body[start:end])
        tensors[name] = torch.frombuffer(raw, dtype=DTYPES[entry["dtype"]]).reshape(entry["shape"]) \
            if raw else torch.empty(entry["shape"], dtype=DTYPES[entry["dtype"]])
    return tensors, metadata


def write(path, tensors, metadata):
    names = {v: k for k, v in DTYPES.items()}
    header, offset, blobs = {}, 0, []
    for name, t in tensors.items():
        blob = t.contiguous().view(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    if metadata:
        header["__metadata__"] = metadata
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)) + encoded)
        for blob in blobs:
            f.write(blob)


def main():
    if sys.argv[1] == "--strip":
        tensors, metadata = read(sys.argv[2])
        prefixes = tuple(sys.argv[3:])
        left_out = {k: [str(t.dtype).removeprefix("torch."), list(t.shape)]
                    for k, t in tensors.items() if k.startswith(prefixes)}
        kept = {k: t for k, t in tensors.items() if k not in left_out}
        write(sys.stdout.buffer.fileno(), kept, {**metadata, "random": json.dumps(left_out)})
        return
    tensors, metadata = read(sys.argv[1])
    g = torch.Generator().manual_seed(0)
    for name, (dtype, shape) in json.loads(metadata.pop("random")).items():
        tensors[name] = torch.randn(shape, generator=g).to(getattr(torch, dtype))
    write(sys.argv[2], tensors, metadata)


if __name__ == "__main__":
    main()
