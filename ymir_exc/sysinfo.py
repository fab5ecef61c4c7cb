"""Host facts an executor asks for (GPU memory). torch is imported only inside the call."""

from __future__ import annotations


def get_gpu_memory(device: str | int = "cuda:0") -> tuple[float, float]:
    """Total and free memory of a CUDA device, in GiB (2**30 bytes), as upstream reports them.

    Args:
        device: a torch device, e.g. ``"cuda:0"`` or ``0``.

    Returns:
        ``(total_gib, free_gib)``.

    Raises:
        ImportError: torch is not installed.
        RuntimeError: no CUDA device (torch's error).
    """
    import torch  # only here: importing ymir_exc.sysinfo stays light

    free, total = torch.cuda.mem_get_info(device)
    return total / 2**30, free / 2**30
