"""Memory checked before it is asked for: what a device has, what the library's largest allocations
take, and `require`, which raises `InsufficientMemory` (a MemoryError saying how much is needed,
how much there is, and what to change) instead of letting an allocation fail half-way or the OS
kill the process.

The sizes are the library's own shapes: a network pass holds the data and a chunk of the n x m
activations (at least two neurons, `chunks.default_chunk`); a dense kernel is a (k n) x (k n)
float64 matrix, held a few times over while its spectrum or a distance is taken.
"""

from __future__ import annotations

import os

import torch

#: float64 copies of a dense kernel held at once: the kernel, a second one (H* or a difference)
#: and eigvalsh's work array and output.
DENSE_KERNEL_COPIES = 4
#: Activation columns (neurons) a network pass holds at least: `chunks.default_chunk` never goes below 2,
#: times (k + 2) values per point each.
MINIMUM_CHUNK = 2


class InsufficientMemory(MemoryError):
    """An allocation that cannot fit, found before it was attempted; the message is one line."""

    def __init__(self, what: str, needed: int, available: int, device: str, advice: str) -> None:
        digits = next(d for d in range(3, 20) if size_text(needed, d) != size_text(available, d))  # never "3 GiB, 3 GiB"
        super().__init__(f"not enough memory for {what}: {size_text(needed, digits)} needed, "
                         f"{size_text(available, digits)} available on the {device}; {advice}")
        self.needed, self.available = needed, available


def size_text(size: float, digits: int = 3) -> str:
    """Bytes as '1.5 TiB' (binary units, as numpy's own allocation errors print them), to `digits`
    significant digits."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(size) < 1024 or unit == "PiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.{digits}g} {unit}"
        size /= 1024
    raise AssertionError  # pragma: no cover


def available(device: torch.device | str = "cpu") -> int:
    """Bytes free on `device`. GPU: cudaMemGetInfo's free memory plus what torch's caching allocator
    holds unused (reserved by an earlier step: not free to the driver, but free to torch). CPU:
    the kernel's MemAvailable (free pages plus reclaimable caches), else the free physical pages."""
    device = torch.device(device)
    if device.type == "cuda":
        unused = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return torch.cuda.mem_get_info(device)[0] + unused
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 1 << 30


def device_name(device: torch.device | str) -> str:
    """'CPU', or the GPU's name as torch reports it."""
    device = torch.device(device)
    return "CPU" if device.type == "cpu" else f"GPU {torch.cuda.get_device_name(device)}"


def require(needed: int, device: torch.device | str, what: str, advice: str) -> None:
    """Raise `InsufficientMemory` when `needed` bytes exceed what `device` has available."""
    free = available(device)
    if needed > free:
        raise InsufficientMemory(what, needed, free, device_name(device), advice)


def network_bytes(n: int, d: int, k: int, width: int, itemsize: int, seeds: int = 1) -> int:
    """The least a full-batch pass over n points of a width-m network holds: inputs and targets,
    outputs and residuals (n (d + 3k)), one chunk of activations (n x 2 x (k + 2)), and W, a, the
    gradient and W(0) (4 m (d + k)), per seed."""
    per_seed = n * (d + 3 * k + MINIMUM_CHUNK * (k + 2)) + 4 * width * (d + k)
    return itemsize * seeds * per_seed


def dense_kernel_bytes(side: int, copies: int = DENSE_KERNEL_COPIES) -> int:
    """A side x side float64 kernel held `copies` times (see DENSE_KERNEL_COPIES)."""
    return 8 * copies * side * side
