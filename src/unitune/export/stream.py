"""A .safetensors file written one tensor at a time, so a whole model never exists twice in memory.

safetensors' own ``save_file`` turns every tensor into bytes before it writes (a second copy of
the model: an fp32 SDXL UNet is 10 GB, twice). The format is simple enough to stream: 8 bytes of
little-endian header length N, N bytes of JSON ({name: {dtype, shape, data_offsets}, plus
``__metadata__``}, padded with spaces to a multiple of 8), then the tensors' bytes back to back
in the header's order. The header needs only names, dtypes and shapes, known before any data.
The file is written beside its target and renamed (fileio.atomic_write), then read back by
safetensors itself (every name, dtype and shape) before the rename.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import Tensor

from ..fileio import atomic_write

_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def stream_safetensors(
    path: str | os.PathLike,
    names: Iterable[str],
    shape_dtype: Callable[[str], tuple[tuple[int, ...], torch.dtype]],
    tensor: Callable[[str], Tensor],
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write ``names`` in order: ``shape_dtype(name)`` says what each will be (the header is
    written first), ``tensor(name)`` makes it when its turn comes (it is freed after)."""
    plan = [(n, *shape_dtype(n)) for n in names]  # (name, shape, dtype), in file order
    header: dict[str, object] = {}
    offset = 0
    for n, shape, dtype in plan:
        size = math.prod(shape) * dtype.itemsize
        header[n] = {
            "dtype": _DTYPES[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(len(raw).to_bytes(8, "little"))
            f.write(raw)
            for n, shape, dtype in plan:
                t = tensor(n).detach().to("cpu", dtype).contiguous()
                if tuple(t.shape) != tuple(shape):
                    raise ValueError(f"{n}: shape {tuple(t.shape)}, announced {tuple(shape)}")
                f.write(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
                del t
        _verify(tmp, header)

    return atomic_write(path, write)


def _verify(path: str, header: dict[str, object]) -> None:
    """safetensors' own reader agrees with what was announced (names, dtypes, shapes)."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        keys = set(f.keys())
        want = {k for k in header if k != "__metadata__"}
        if keys != want:
            raise ValueError(f"written file holds {len(keys)} tensors, expected {len(want)}")
        for k in want:
            s = f.get_slice(k)
            spec = header[k]
            assert isinstance(spec, dict)
            if s.get_dtype() != spec["dtype"] or list(s.get_shape()) != spec["shape"]:
                raise ValueError(f"{k}: written {s.get_dtype()} {s.get_shape()}, expected {spec}")


def save_streaming(
    tensors: dict[str, Tensor],
    path: str | os.PathLike,
    metadata: dict[str, str] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """``tensors`` (views into a model are fine: nothing is copied until its turn) written as one
    file, floating tensors cast to ``dtype`` (None: as they are)."""

    def out_dtype(t: Tensor) -> torch.dtype:
        return dtype if dtype is not None and t.is_floating_point() else t.dtype

    return stream_safetensors(
        path,
        tensors,
        lambda n: (tuple(tensors[n].shape), out_dtype(tensors[n])),
        lambda n: tensors[n],
        metadata,
    )
