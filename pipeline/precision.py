"""Mixed precision, one policy for CPU and GPU.

``amp: auto`` is float16 autocast + ``GradScaler`` on CUDA, bfloat16 autocast on CPUs with native
bf16 (AVX512-BF16 or AMX), and float32 elsewhere; ``bf16``/``fp16`` force a type, ``off`` is float32.

``DISTIL_CPU_BF16=1`` makes ``auto`` resolve as it would on a CPU with native bf16 (emulated here: slow, but
the same numbers), ``DISTIL_CPU_BF16=0`` as on one without; CI uses it to test both kinds of CPU on one.
"""
from __future__ import annotations

import logging
import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Optional

import torch

CPU_BF16_ENV = "DISTIL_CPU_BF16"
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); ``DISTIL_CPU_BF16`` (1/0) overrides."""
    forced = os.environ.get(CPU_BF16_ENV, "").strip().lower()
    if forced in ("1", "true", "yes", "on"):
        return True
    if forced in ("0", "false", "no", "off"):
        return False
    caps = getattr(torch.cpu, "get_capabilities", lambda: {})()
    if caps:
        return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


@dataclass(frozen=True)
class Precision:
    """Where and in which type to autocast; ``scaled`` when float16 gradients need a ``GradScaler``."""

    device_type: str
    dtype: Optional[torch.dtype]

    @property
    def scaled(self) -> bool:
        return self.dtype == torch.float16 and self.device_type == "cuda"

    @property
    def name(self) -> str:
        return {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}[self.dtype]

    def autocast(self) -> AbstractContextManager:
        return torch.autocast(self.device_type, dtype=self.dtype) if self.dtype is not None else nullcontext()


def resolve(amp: str, device: torch.device) -> Precision:
    """The precision ``amp`` (auto, bf16, fp16, off) means on ``device``."""
    if amp == "auto":
        if device.type == "cuda":
            dtype: Optional[torch.dtype] = torch.float16
        else:
            dtype = torch.bfloat16 if cpu_has_native_bf16() else None
    else:
        dtype = DTYPES[amp]
    if device.type == "cpu" and dtype == torch.float16:
        logging.getLogger(__name__).warning("amp: fp16 needs CUDA; using bf16 autocast on this CPU")
        dtype = torch.bfloat16  # CPU autocast has no float16 GradScaler path: bf16 needs none
    return Precision(device.type, dtype)
