"""Process-group set-up for torchrun (single node or many) and batch statistics shared across processes.

A plain ``metricslam train`` is one process. Under ``torchrun`` (which sets RANK, WORLD_SIZE, LOCAL_RANK and the
rendezvous variables) every process joins the group: NCCL when it drives a CUDA device, gloo on CPU.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from metricslam.device import resolve_device


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the torchrun process group when launched by torchrun; pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world,
                                device_id=dev if dev.type == "cuda" else None)
    return DistInfo(rank, world, local_rank, dev)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def mean_over_processes(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The mean of ``values`` over all processes (a copy; no gradient)."""
    out = values.detach().clone()
    if info.distributed:
        dist.all_reduce(out)
        out /= info.world_size
    return out


class _SumOverProcesses(torch.autograd.Function):
    """all_reduce(SUM) with its gradient: every process's input feeds every process's output."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        out = grad.clone()
        dist.all_reduce(out)
        return out


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics span the whole distributed batch (every process's shard).

    torch's SyncBatchNorm refuses CPU tensors; this one works with any backend, and its statistics reach the
    gradient through a differentiable all-reduce. Single process or eval mode: plain BatchNorm2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        channels = x.shape[1]
        xf = x.float()
        local = torch.cat((xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3)),
                           xf.new_tensor([x.numel() // channels], dtype=torch.float32)))
        total = _SumOverProcesses.apply(local)
        count = total[-1]
        mean = total[:channels] / count
        var = (total[channels:2 * channels] / count - mean * mean).clamp_min(0)
        if self.track_running_stats:
            # track_running_stats registers the three buffers.
            assert self.num_batches_tracked is not None and self.running_mean is not None and self.running_var is not None
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                unbiased = var.detach() * count / (count - 1).clamp_min(1)
                self.running_var.mul_(1 - m).add_(unbiased, alpha=m)
        scale = torch.rsqrt(var + self.eps)
        if self.affine:
            scale = scale * self.weight
        shift = -mean * scale + (self.bias if self.affine else 0)
        return (xf * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)).to(x.dtype)


def use_global_batchnorm(model: nn.Module) -> nn.Module:
    """Swap every BatchNorm2d of ``model`` for a GlobalBatchNorm2d holding the same parameters and buffers."""
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            swapped = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                        child.track_running_stats, device=child.weight.device if child.affine else None)
            swapped.load_state_dict(child.state_dict())
            setattr(model, name, swapped)
        else:
            use_global_batchnorm(child)
    return model
