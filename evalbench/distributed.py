"""Several processes under ``torchrun``: shard extraction across ranks, rank 0 does the rest.

``torchrun --nproc-per-node N -m evalbench run ...`` starts N processes with RANK, WORLD_SIZE and
a rendezvous in the environment. Every rank walks the same (model, task) list; rank 0 makes each
decision (what is cached, what is pending) and broadcasts it, every rank encodes its share of the
feature shards, and rank 0 gathers them, computes the metrics and writes records and cache. The
same holds across machines (``--nnodes``, ``--rdzv-endpoint``) as long as every node can read
the data. Without torchrun, every helper here is a no-op for a single process.
"""

from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def launched() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: torch.device) -> None:
    """Join the process group torchrun described: gloo on CPU, nccl on CUDA."""
    if not launched() or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    log.info("rank %d of %d (%s)", rank(), world_size(), backend)


def local_device(device: torch.device) -> torch.device:
    """Each rank's own GPU under torchrun; the device unchanged otherwise."""
    if launched() and device.type == "cuda" and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def broadcast(obj):
    """Rank 0's ``obj`` on every rank."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj) -> list | None:
    """Every rank's ``obj``, as a list on rank 0 (None elsewhere)."""
    if world_size() == 1:
        return [obj]
    out = [None] * world_size() if is_main() else None
    dist.gather_object(obj, out, dst=0)
    return out


def shard(n: int) -> tuple[int, int, int]:
    """``(start, stop, slots)``: this rank's contiguous share ``range(start, stop)`` of ``n`` items,
    and the number of slots every rank fills (``ceil(n / world_size)``). A rank whose share is
    short (or empty) pads up to ``slots``, so every rank runs the same number of batches."""
    slots = -(-n // world_size())
    start = min(n, rank() * slots)
    return start, min(n, start + slots), slots


def gather_rows(local: torch.Tensor, n: int) -> torch.Tensor | None:
    """Every rank's ``local`` (``slots`` rows from :func:`shard`, padding included), concatenated
    in rank order and cut to ``n`` rows, on rank 0 (on the CPU); None on other ranks. A collective:
    every rank must call it, with tensors of the same shape."""
    if world_size() == 1:
        return local[:n].cpu()
    # nccl moves CUDA tensors only, gloo CPU ones.
    device = local.device if dist.get_backend() == "nccl" else torch.device("cpu")
    local = local.to(device).contiguous()
    parts = [torch.empty_like(local) for _ in range(world_size())]
    dist.all_gather(parts, local)
    return torch.cat(parts)[:n].cpu() if is_main() else None


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
