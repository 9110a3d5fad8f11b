"""Batch norm (Ioffe & Szegedy 2015) whose training statistics span all ranks of a torch.distributed process group.

Under DistributedDataParallel each rank sees its share of the global batch. `nn.BatchNorm2d` would normalise each
share with its own mean and variance, so N ranks would not train what one process trains on the same global batch;
`nn.SyncBatchNorm` fixes that on GPUs only. `BatchNorm2d` here works with any backend (gloo on CPU, NCCL on GPU):

- training mode with an initialised process group of world size > 1: every rank all-reduces, per channel,
  [sum x, sum x^2] and the element count once per call, normalises with the global mean and biased variance, and
  updates running_mean / running_var (unbiased variance) with the global statistics exactly as `nn.BatchNorm2d` does
  on the concatenated batch. The reduction (`_AllReduceSum`; torch.distributed.nn.functional.all_reduce does the
  same but is deprecated) all-reduces the gradients too in backward, so each rank's input gradient includes how the
  other ranks' losses depend on the shared statistics: summed over ranks (DDP's average times the world size), the
  parameter gradients are those of one process on the whole batch.
- otherwise (eval mode, a single process, or `sync = False`): `nn.BatchNorm2d.forward`, unchanged.

Every rank must call a synchronised layer the same number of times in the same order (they do when they run the
same code on equal shares). With gradient accumulation each micro-batch is normalised by itself (over the ranks'
k-th micro-batches), as one process normalises each of its micro-batches by itself. It subclasses `nn.BatchNorm2d`,
so parameters, buffers and state-dict keys are the same (checkpoints load either way).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn


def _world_size() -> int:
    """World size of the default process group, 1 without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


class _AllReduceSum(torch.autograd.Function):
    """y = sum over ranks of x; dL/dx = sum over ranks of dL/dy (each rank's loss depends on every rank's x through y)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        y = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(y, op=dist.ReduceOp.SUM)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


class BatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d whose training statistics are global over the process group (Ioffe & Szegedy 2015, Alg. 1)."""

    def __init__(self, *args, sync: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.sync = sync  # False: always behave as nn.BatchNorm2d (e.g. for ranks that run different batches)

    def forward(self, x: Tensor) -> Tensor:
        # Same rule as nn.BatchNorm2d for when batch statistics are used (train mode, or no running statistics).
        batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        if not (self.sync and batch_stats and _world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        return self._synced_forward(x)

    def _momentum(self) -> float:
        """The running-average factor of this call, as nn.BatchNorm2d computes it (momentum None: cumulative average)."""
        if not (self.training and self.track_running_stats):
            return 0.0
        self.num_batches_tracked.add_(1)
        if self.momentum is None:
            return 1.0 / float(self.num_batches_tracked)
        return self.momentum

    def _synced_forward(self, x: Tensor) -> Tensor:
        factor = self._momentum()
        # fp16/bf16 inputs are promoted: the statistics need fp32 at least (batch-norm kernels accumulate in fp32).
        # The local sums go to float64 before the reduction, so that var = E[x^2] - E[x]^2 does not lose the digits
        # a one-process two-pass variance keeps.
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        c = xf.shape[1]
        local = torch.cat([xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3))]).double()
        count = torch.full((1,), float(x.numel() // c), dtype=torch.float64, device=x.device)
        total = _AllReduceSum.apply(torch.cat([local, count]))  # one collective per call
        n = total[-1]
        m = float(n.item())
        if m <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {list(x.shape)} on {_world_size()} ranks")
        mean = total[:c] / n
        var = (total[c:2 * c] / n - mean * mean).clamp_min(0.0)  # biased: the normaliser of Ioffe & Szegedy's Alg. 1
        if self.track_running_stats and self.training:
            with torch.no_grad():
                # nn.BatchNorm2d's update: unbiased variance (n / (n - 1)), momentum-weighted average.
                self.running_mean.mul_(1 - factor).add_(mean.detach().to(self.running_mean.dtype), alpha=factor)
                unbiased = var.detach() * (m / (m - 1))
                self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)
        invstd = torch.rsqrt(var + self.eps).to(xf.dtype)
        shape = (1, c, 1, 1)
        y = (xf - mean.to(xf.dtype).view(shape)) * invstd.view(shape)
        if self.weight is not None:
            y = y * self.weight.to(xf.dtype).view(shape) + self.bias.to(xf.dtype).view(shape)
        return y.to(x.dtype)
