"""Numeric precision of training and inference: bf16 autocast + channels_last where the hardware has it.

One switch for the trainer, the bundle's evaluator and inference config, ``fracseg infer``/``evaluate``
and the benchmarks. ``"auto"`` picks bf16 on a CPU that computes it natively (AVX512-BF16 or AMX, e.g.
AMD Zen 4 and Intel Sapphire Rapids; measured 1.5x to 2.5x faster per training step) and on a CUDA
device that supports it, fp32 elsewhere (an emulated bf16 is slower than fp32). ``"bf16"`` and
``"fp32"`` force the choice; the ``FRACSEG_PRECISION`` environment variable overrides ``"auto"`` for a
whole process.

Weights stay fp32 (autocast casts per operation), so a checkpoint is the same whichever
precision produced or reads it. At inference (:meth:`Precision.forward`) the generator's full-resolution
input block stays in fp32: it is where the faint grey-level differences of a radiograph enter the
network, and bf16's 8-bit mantissa there moves masks and can flip decisions; the layers below keep most
of the speed-up (measured by ``scripts/precision_agreement.py``; figures in
``bundle/docs/studies/``).
"""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from monai.networks.nets import UNet

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "bf16", "fp32")
#: Environment variable that replaces ``"auto"`` (``bf16`` or ``fp32``).
PRECISION_ENV = "FRACSEG_PRECISION"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 instructions that oneDNN uses (AVX512-BF16 or AMX tiles)."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    try:
        return any(bool(getattr(cpu, name)()) for name in checks if hasattr(cpu, name))
    except RuntimeError:  # pragma: no cover - very old builds
        return False


def cpu_description() -> str:
    """The CPU's model name (``lscpu``'s "Model name", from ``/proc/cpuinfo``) and its bf16 flags, for
    recording the hardware beside every measured figure: bf16 speed differs between CPUs that both have
    it (AMX against AVX512-BF16 alone)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine() or "unknown CPU"
    name = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "")
    flags = next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), [])
    bf16 = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    return f"{name or platform.processor() or 'unknown CPU'} ({', '.join(bf16) or 'no bf16 flags'})"


def device_has_native_bf16(device: str | torch.device) -> bool:
    """Whether ``device`` computes bf16 natively (the CPU's instruction set, or the CUDA device)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return False


@dataclass(frozen=True)
class Precision:
    """A resolved precision: what autocast and memory format to use on one device.

    Attributes:
        name: ``"bf16"`` or ``"fp32"``.
        device_type: ``"cpu"`` or ``"cuda"`` (the autocast device type).
        requested: what was asked for (``"auto"``, ``"bf16"`` or ``"fp32"``).
    """

    name: str
    device_type: str
    requested: str = "auto"

    @property
    def amp(self) -> bool:
        """Whether autocast is on."""
        return self.name == "bf16"

    @property
    def dtype(self) -> torch.dtype:
        """The autocast dtype."""
        return torch.bfloat16 if self.amp else torch.float32

    @property
    def channels_last(self) -> bool:
        """channels_last memory format goes with bf16: oneDNN's bf16 convolutions want NHWC (measured:
        no gain in fp32 on CPU, so fp32 keeps the default layout)."""
        return self.amp

    def autocast(self) -> torch.autocast:
        """The autocast context for this precision (disabled for fp32)."""
        return torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.amp)

    def prepare_module(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` in the memory format this precision wants (in place, returned for chaining)."""
        if self.channels_last:
            module.to(memory_format=torch.channels_last)
        return module

    def forward(self, network: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
        """Inference forward pass in this precision, float32 logits out.

        For bf16 and a MONAI ``UNet`` (``network.model`` = input block, skip connection, output block), the
        full-resolution input block runs in fp32 and the rest under autocast; any other network runs wholly
        under autocast.
        """
        if not self.amp:
            return network(batch)
        model = getattr(network, "model", None)
        if isinstance(network, UNet) and isinstance(model, torch.nn.Sequential) and len(model) > 1:
            head = model[0](batch)
            with self.autocast():
                return model[1:](head).float()
        with self.autocast():
            return network(batch).float()

    def answer(
        self, network: Any, args: tuple = (), kwargs: dict[str, Any] | None = None
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """``network``'s answer to a batch in this precision, as a callable: :meth:`forward` for a module
        called with the batch alone; otherwise the whole call (with ``args``/``kwargs`` after the batch)
        under autocast, float32 out with bf16."""
        if not args and not kwargs and isinstance(network, torch.nn.Module):
            return lambda batch: self.forward(network, batch)

        def call(batch: torch.Tensor) -> torch.Tensor:
            with self.autocast():
                out = network(batch, *args, **(kwargs or {}))
            return out.float() if self.amp else out

        return call

    def prepare_input(self, tensor: torch.Tensor) -> torch.Tensor:
        """A 4-D input in the memory format this precision wants."""
        if self.channels_last and tensor.dim() == 4:
            return tensor.contiguous(memory_format=torch.channels_last)
        return tensor


def resolve_precision(requested: str = "auto", device: str | torch.device = "cpu") -> Precision:
    """Turn ``"auto"``, ``"bf16"`` or ``"fp32"`` into a :class:`Precision` for ``device``.

    ``"auto"`` (or the ``FRACSEG_PRECISION`` environment variable, when set) gives bf16 where the device
    computes it natively. Forcing ``"bf16"`` on hardware without native support is allowed (it is
    correct, only slow) and logged.

    Raises:
        ValueError: an unknown precision name.
    """
    requested = str(requested).lower()
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {requested!r}")
    device = torch.device(device)
    chosen = requested
    if requested == "auto":
        env = os.environ.get(PRECISION_ENV, "").strip().lower()
        if env and env != "auto":
            if env not in PRECISIONS:
                raise ValueError(f"{PRECISION_ENV} must be one of {PRECISIONS}, got {env!r}")
            chosen = env
        else:
            chosen = "bf16" if device_has_native_bf16(device) else "fp32"
    elif requested == "bf16" and not device_has_native_bf16(device):
        logger.warning("bf16 forced on %s without native bf16 support: correct but slower than fp32", device)
    return Precision(name=chosen, device_type=device.type, requested=requested)


@contextmanager
def maybe_autocast(precision: Precision | None) -> Iterator[None]:
    """``precision.autocast()``, or nothing when ``precision`` is None."""
    if precision is None or not precision.amp:
        yield
        return
    with precision.autocast():
        yield
