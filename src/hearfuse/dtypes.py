"""The precisions hearfuse runs its models in, by name: the one table the library, the command line
and the benchmarks share, what ``auto`` picks, and the one-line warning when a CPU emulates the
precision asked for. Importing it does not import torch (``hearfuse --help`` stays instant).

Why the warning: on a CPU without native bfloat16 (no AVX512-BF16 or AMX), oneDNN emulates it, and a
bfloat16 matrix product takes tens of times as long as in float32 (84x for 512x512 on an AVX2-only
EPYC), so ``--dtype bfloat16``, the right choice on a GPU, silently makes a CPU run far slower.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from pathlib import Path

#: Autocast precisions of the models; embeddings are returned as float32 whatever the choice.
DTYPE_NAMES = ("float32", "bfloat16", "float16")

#: What ``--dtype`` takes: a precision, or ``auto`` (:func:`auto_dtype`).
DTYPE_CHOICES = ("auto", *DTYPE_NAMES)


def torch_dtype(name: str):
    """``"bfloat16"`` -> ``torch.bfloat16``; unknown names are refused with the known ones."""
    if name not in DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_NAMES)}, got {name!r}")
    import torch

    return getattr(torch, name)


def dtype_name(dtype) -> str:
    """``torch.bfloat16`` (or ``"bfloat16"``, or None for the default float32) -> ``"bfloat16"``."""
    return "float32" if dtype is None else str(dtype).removeprefix("torch.")


#: Precisions ``hearfuse embed`` stores embeddings in (``--store-dtype``); timestamps stay float32
#: (milliseconds of an hour-long file exceed float16's range).
STORE_DTYPES = ("float32", "float16")

#: The CPU flags (as /proc/cpuinfo spells them) that give a reduced precision native matrix products.
NATIVE_CPU_FLAGS = {"bfloat16": ("avx512_bf16", "amx_bf16"), "float16": ("avx512_fp16", "amx_fp16")}

#: A reduced precision counts as native on a CPU when its matrix product takes at most this multiple of
#: float32's time. Native bfloat16 measures 0.5x-1x of float32 at the probe's size, emulated 40x-80x.
NATIVE_SLOWDOWN_LIMIT = 3.0

#: Replaces the probe's measurement, e.g. ``bfloat16=1,float16=60`` (the slowdowns to assume): for tests,
#: and for a machine whose timings are too noisy to trust. Names it leaves out are measured.
SLOWDOWN_ENV = "HEARFUSE_CPU_SLOWDOWN"

_PROBE_SIZE = 256  # a matrix product that takes ~0.4 ms in float32 and ~20 ms emulated on one core
_PROBE_WARMUPS, _PROBE_REPEATS = 3, 5

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class CpuPrecision:
    """How a reduced precision runs on this CPU, as torch runs it here (oneDNN's ISA limit included)."""

    dtype: str
    slowdown: float  # time of a 256x256 matrix product in ``dtype`` / in float32 (best of 5)
    flags: tuple[str, ...]  # the CPU flags that would make it native, those this CPU reports
    measured: bool = True  # False: the slowdown came from HEARFUSE_CPU_SLOWDOWN

    @property
    def native(self) -> bool:
        return self.slowdown <= NATIVE_SLOWDOWN_LIMIT

    def warning(self) -> str:
        """The one line a user asking for this precision on this CPU reads."""
        wanted = " or ".join(flag.upper() for flag in NATIVE_CPU_FLAGS[self.dtype])
        if not self.flags:
            lacks = f"this CPU has no {wanted}"
        else:
            limit = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
            because = f"ONEDNN_MAX_CPU_ISA={limit}" if limit else "the installed torch does not use it"
            lacks = f"this CPU reports {', '.join(flag.upper() for flag in self.flags)} but {because}"
        how = "measured" if self.measured else f"assumed from {SLOWDOWN_ENV}"
        return (
            f"{self.dtype} is emulated on this CPU ({lacks}): a matrix product takes {self.slowdown:.0f}x as long "
            f"as in float32 ({how}: {_PROBE_SIZE}x{_PROBE_SIZE}), so float32 is faster here "
            f"(--dtype float32 or auto); going on in {self.dtype} as asked"
        )


def cpu_flags() -> set[str]:
    """The flags /proc/cpuinfo lists for this CPU (empty where there is no such file)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _assumed_slowdowns() -> dict[str, float]:
    setting = os.environ.get(SLOWDOWN_ENV, "").strip()
    if not setting:
        return {}
    try:
        pairs = [item.split("=", 1) for item in setting.split(",") if item.strip()]
        assumed = {name.strip(): float(value) for name, value in pairs}
    except ValueError:
        assumed = None
    if assumed is None or not set(assumed) <= set(NATIVE_CPU_FLAGS):
        raise ValueError(f"{SLOWDOWN_ENV}={setting!r}: expected NAME=SLOWDOWN pairs such as bfloat16=1,float16=60")
    return assumed


def _measure_slowdown(name: str) -> float:
    """Best-of time ratio of a reduced-precision and a float32 matrix product, float32 first: right after an
    emulated product, float32 ones run up to 100x slower for a few calls (the threads of the emulating
    kernels still hold the cores), which would hide the emulation."""
    import torch

    generator = torch.Generator().manual_seed(0)
    left, right = (torch.randn(_PROBE_SIZE, _PROBE_SIZE, generator=generator) for _ in range(2))
    reduced = torch_dtype(name)

    def best_seconds(a, b, repeats: int) -> float:
        times = []
        for _ in range(_PROBE_WARMUPS + repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            times.append(time.perf_counter() - start)
        return min(times[_PROBE_WARMUPS:])

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on busy cores a multi-threaded call waits for its slowest thread's time slice
    try:
        with torch.inference_mode():
            float32 = best_seconds(left, right, 4 * _PROBE_REPEATS)  # short calls: more draws at the same cost
            return best_seconds(left.to(reduced), right.to(reduced), _PROBE_REPEATS) / float32
    finally:
        torch.set_num_threads(threads)


@functools.cache
def cpu_precision(name: str) -> CpuPrecision:
    """How ``name`` (bfloat16 or float16) runs on this CPU: a short probe (about 0.1 s where emulated, once
    per process), or the slowdown :data:`SLOWDOWN_ENV` assumes."""
    if name not in NATIVE_CPU_FLAGS:
        raise ValueError(f"cpu_precision: expected one of {', '.join(NATIVE_CPU_FLAGS)}, got {name!r}")
    flags = tuple(flag for flag in NATIVE_CPU_FLAGS[name] if flag in cpu_flags())
    assumed = _assumed_slowdowns()
    if name in assumed:
        return CpuPrecision(name, assumed[name], flags, measured=False)
    return CpuPrecision(name, _measure_slowdown(name), flags)


def auto_dtype(device) -> str:
    """What ``--dtype auto`` picks on ``device``: bfloat16 on a CUDA device that supports it and on a CPU
    that runs it natively, float32 everywhere else (an older GPU, MPS, an emulating CPU)."""
    import torch

    kind = _device_type(device)
    if kind == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported(including_emulation=False) else "float32"
    if kind == "cpu":
        return "bfloat16" if cpu_precision("bfloat16").native else "float32"
    return "float32"


def _device_type(device) -> str:
    """``"cuda"`` for ``cuda:1``; a model without a device is on the CPU."""
    import torch

    return torch.device(device if device is not None else "cpu").type


def resolve_dtype(requested, device):
    """A model precision as the library takes it (None or a torch dtype), from a name, ``"auto"``, a
    torch dtype or None (float32), for a model on ``device``."""
    if requested is None or not isinstance(requested, str):
        return requested
    return torch_dtype(auto_dtype(device) if requested == "auto" else requested)


_warned: set[str] = set()


def warn_if_emulated(dtype, device) -> None:
    """Log :meth:`CpuPrecision.warning` once per process and precision when a model is to run in a reduced
    precision on a CPU that emulates it. The run goes on as asked."""
    name = dtype_name(dtype)
    if name not in NATIVE_CPU_FLAGS or _device_type(device) != "cpu":
        return
    if name in _warned:
        return
    precision = cpu_precision(name)
    if not precision.native:
        _warned.add(name)
        log.warning(precision.warning())
