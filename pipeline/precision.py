"""Mixed precision, one policy for CPU and GPU.

``amp: auto`` is float16 autocast + ``GradScaler`` on CUDA. On a CPU it depends on the stage's role
(``AUTO_NATIVE_BF16``, measured: docs/precision.md): with native bf16 (AVX512-BF16 or AMX) the teacher trains and
infers (the cache) in bfloat16, where it is 2-4x faster at the same argmax, while the 60k student stays float32
(bf16 was slower for it and cost it accuracy); without native bf16 every role is float32. ``bf16``/``fp16``
force a type, ``off`` is float32.

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


# what ``amp: auto`` is on a CPU with native bf16, by role: ``teacher`` (the teacher stage's training and
# validation), ``cache`` (teacher inference for the cache), ``student`` (the student's training,
# validation and its submission). Measured on an avx512_bf16 EPYC (issue 22, docs/precision.md): teacher
# inference 3.9x and a teacher train step 2.27x float32, argmax agreement 1.0; the 60k student's epoch 6.2 s
# bf16 vs 5.0 s float32, and 0.818 vs 0.838 on the demo.
AUTO_NATIVE_BF16: dict[str, Optional[torch.dtype]] = {"teacher": torch.bfloat16, "cache": torch.bfloat16,
                                                      "student": None}


def resolve(amp: str, device: torch.device, role: str) -> Precision:
    """The precision ``amp`` (auto, bf16, fp16, off) means on ``device`` for a stage's ``role`` (a key of
    ``AUTO_NATIVE_BF16``: teacher, cache, student)."""
    if role not in AUTO_NATIVE_BF16:
        raise ValueError(f"precision role {role!r} is not one of {', '.join(AUTO_NATIVE_BF16)}")
    if amp == "auto":
        if device.type == "cuda":
            dtype: Optional[torch.dtype] = torch.float16
        else:
            dtype = AUTO_NATIVE_BF16[role] if cpu_has_native_bf16() else None
    else:
        dtype = DTYPES[amp]
    if device.type == "cpu" and dtype == torch.float16:
        logging.getLogger(__name__).warning("amp: fp16 needs CUDA; using bf16 autocast on this CPU")
        dtype = torch.bfloat16  # CPU autocast has no float16 GradScaler path: bf16 needs none
    return Precision(device.type, dtype)
