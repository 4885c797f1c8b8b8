"""The precisions hearfuse runs its models in, by name: the one table the library, the command line
and the benchmarks share. Importing it does not import torch (``hearfuse --help`` stays instant)."""

from __future__ import annotations

#: Autocast precisions of the models; embeddings are returned as float32 whatever the choice.
DTYPE_NAMES = ("float32", "bfloat16", "float16")


def torch_dtype(name: str):
    """``"bfloat16"`` -> ``torch.bfloat16``; unknown names are refused with the known ones."""
    if name not in DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_NAMES)}, got {name!r}")
    import torch

    return getattr(torch, name)


#: Precisions ``hearfuse embed`` stores embeddings in (``--store-dtype``); timestamps stay float32
#: (milliseconds of an hour-long file exceed float16's range).
STORE_DTYPES = ("float32", "float16")
