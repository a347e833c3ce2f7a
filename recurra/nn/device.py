"""Device choice, seeding and deterministic CPU flags for every Recurra model.

>>> choose_device("cpu")
device(type='cpu')
"""

from __future__ import annotations

import random

import numpy as np
import torch

from recurra.data.schema import RecurraError

DEVICES = ("auto", "cpu", "cuda")


def choose_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device for ``device``: ``"auto"`` picks CUDA when available, else CPU.

    Raises
    ------
    RecurraError : for an unknown name, or ``"cuda"`` on a machine without CUDA.
    """
    if isinstance(device, torch.device):
        return device
    name = str(device).lower()
    base = name.split(":")[0]
    if base not in DEVICES:
        raise RecurraError(f"device ({device!r}) must be one of {list(DEVICES)} "
                           "(optionally 'cuda:N')")
    if base == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise RecurraError(f"device ({device!r}) asks for CUDA but torch.cuda.is_available() is "
                           "False: use device='auto' or 'cpu'")
    return torch.device(name)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, numpy and torch (CPU and CUDA); returns a seeded CPU ``torch.Generator``."""
    if not isinstance(seed, int) or seed < 0:
        raise RecurraError(f"seed ({seed!r}) must be a non-negative integer")
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def set_deterministic(device: torch.device, *, benchmark: bool = True) -> None:
    """Reproducible CPU kernels; on CUDA let cuDNN pick the fastest kernels (benchmark).

    On CPU the ops the models use (matmuls, RNN kernels, reductions) are deterministic for a
    fixed thread count once seeded, and oneDNN's non-deterministic paths are avoided by
    switching ``torch.backends.mkldnn`` determinism on. ``torch.use_deterministic_algorithms``
    is not called: it imports the compiler stack (seconds) and is process-global.
    """
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = benchmark
    elif hasattr(torch.backends.mkldnn, "deterministic"):
        torch.backends.mkldnn.deterministic = True


def limit_threads(n_threads: int | None) -> None:
    """Cap torch's intra-op CPU threads (the shared machines have few cores)."""
    if n_threads is not None and n_threads > 0:
        torch.set_num_threads(n_threads)
