"""difflab.nets.norm.BatchNorm2d: nn.BatchNorm2d in one process; over 2 gloo ranks, nn.BatchNorm2d on the whole batch."""

import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from difflab.nets.norm import BatchNorm2d

C = 3


def _batch(n: int, seed: int = 0) -> torch.Tensor:
    # A channel mean well away from 0 (as after a conv without bias) checks the variance is not E[x^2] - E[x]^2 noise.
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, C, 5, 4, generator=g) * torch.tensor([1.0, 0.3, 2.0]).view(1, C, 1, 1) + torch.tensor([0.5, -3.0, 0.0]).view(1, C, 1, 1)


def _weights(n: int) -> torch.Tensor:
    """Fixed per-element weights: the loss sum(w * y^2 + y) reaches every term of batch norm's backward."""
    return torch.linspace(-1.0, 1.0, n * C * 20).view(n, C, 5, 4)


def _pair(momentum=0.1, affine=True, track=True) -> tuple[nn.BatchNorm2d, BatchNorm2d]:
    ref, ours = nn.BatchNorm2d(C, momentum=momentum, affine=affine, track_running_stats=track), BatchNorm2d(C, momentum=momentum, affine=affine, track_running_stats=track)
    if affine:
        with torch.no_grad():
            ref.weight.copy_(torch.tensor([1.2, 0.7, -0.4]))
            ref.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    ours.load_state_dict(ref.state_dict())
    return ref, ours


# ----- one process: exactly nn.BatchNorm2d ------------------------------------------------------------------

@pytest.mark.parametrize("momentum,affine,track", [(0.1, True, True), (None, True, True), (0.3, False, True), (0.1, True, False)])
def test_single_process_is_nn_batchnorm(momentum, affine, track):
    ref, ours = _pair(momentum, affine, track)
    assert list(ours.state_dict()) == list(ref.state_dict())
    for step in range(3):
        outs = []
        for m in (ref, ours):
            m.train()
            x = _batch(6, seed=step).requires_grad_(True)
            y = m(x)
            (_weights(6) * y * y + y).sum().backward()
            outs.append((y.detach(), x.grad))
        assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    for (k, a), b in zip(ref.state_dict().items(), ours.state_dict().values()):
        assert torch.equal(a, b), k
    for a, b in zip(ref.parameters(), ours.parameters()):
        assert torch.equal(a.grad, b.grad)
    ref.eval(), ours.eval()
    assert torch.equal(ref(_batch(4, seed=9)), ours(_batch(4, seed=9)))


def test_state_dict_loads_both_ways():
    ref, ours = _pair()
    ref(_batch(4))
    ours.load_state_dict(ref.state_dict())  # a checkpoint from nn.BatchNorm2d loads
    back = nn.BatchNorm2d(C)
    back.load_state_dict(ours.state_dict())  # and ours loads into nn.BatchNorm2d
    assert isinstance(ours, nn.BatchNorm2d)  # dcgan_init and isinstance checks keep working
    for a, b in zip(ref.state_dict().values(), back.state_dict().values()):
        assert torch.equal(a, b)


# ----- two gloo ranks: nn.BatchNorm2d on the concatenated batch ----------------------------------------------

SHARES = (3, 5)  # unequal on purpose: the global count, not world_size x local count, must weight the statistics
STEPS = 2


def _worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        res = {}
        lo, hi = sum(SHARES[:rank]), sum(SHARES[:rank + 1])
        # (a) the layer alone, unequal shares, both momentum rules; loss = this rank's part of the global sum.
        for momentum in (0.1, None):
            _, bn = _pair(momentum)
            for step in range(STEPS):
                x = _batch(sum(SHARES), seed=step)[lo:hi].requires_grad_(True)
                y = bn(x)
                (_weights(sum(SHARES))[lo:hi] * y * y + y).sum().backward()
                res[f"bn{momentum}.y{step}"], res[f"bn{momentum}.dx{step}"] = y.detach(), x.grad
            res[f"bn{momentum}.state"] = {k: v.clone() for k, v in bn.state_dict().items()}
            res[f"bn{momentum}.grads"] = [p.grad.clone() for p in bn.parameters()]
            bn.eval()  # eval: running statistics, no collective (rank 1 alone would hang otherwise)
            if rank == 1:
                res[f"bn{momentum}.eval"] = bn(_batch(4, seed=9))
        # (b) conv -> BN -> LeakyReLU -> conv under DDP, equal shares, loss = mean over the rank's share (as the Trainer).
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(C, 4, 3, padding=1, bias=False), BatchNorm2d(4), nn.LeakyReLU(0.2), nn.Conv2d(4, 1, 3))
        ddp = DistributedDataParallel(net)
        x = _batch(8, seed=5)[rank * 4:(rank + 1) * 4]
        ddp(x).square().mean().backward()
        res["ddp.grads"] = [p.grad.clone() for p in net.parameters()]
        res["ddp.state"] = {k: v.clone() for k, v in net.state_dict().items()}
        torch.save(res, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("syncbn")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


@pytest.mark.parametrize("momentum", [0.1, None])
def test_two_ranks_equal_one_batch(two_ranks, momentum):
    """Outputs and input gradients concatenate to the full batch's; parameter gradients sum to its; buffers agree."""
    ref, _ = _pair(momentum)
    n = sum(SHARES)
    for step in range(STEPS):
        x = _batch(n, seed=step).requires_grad_(True)
        y = ref(x)
        (_weights(n) * y * y + y).sum().backward()
        got_y = torch.cat([r[f"bn{momentum}.y{step}"] for r in two_ranks])
        got_dx = torch.cat([r[f"bn{momentum}.dx{step}"] for r in two_ranks])
        torch.testing.assert_close(got_y, y.detach(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got_dx, x.grad, atol=1e-4, rtol=1e-5)
    for p, g0, g1 in zip(ref.parameters(), two_ranks[0][f"bn{momentum}.grads"], two_ranks[1][f"bn{momentum}.grads"]):
        torch.testing.assert_close(g0 + g1, p.grad, atol=1e-4, rtol=1e-5)
    for k, v in ref.state_dict().items():
        for r in two_ranks:
            torch.testing.assert_close(r[f"bn{momentum}.state"][k], v, atol=1e-6, rtol=1e-5)
    ref.eval()
    torch.testing.assert_close(two_ranks[1][f"bn{momentum}.eval"], ref(_batch(4, seed=9)), atol=1e-5, rtol=1e-5)


def test_two_ranks_under_ddp_equal_one_process(two_ranks):
    """DDP's averaged gradients and the running statistics are those of one process on the 8 examples."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(C, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.LeakyReLU(0.2), nn.Conv2d(4, 1, 3))
    net(_batch(8, seed=5)).square().mean().backward()
    for r in two_ranks:
        for p, g in zip(net.parameters(), r["ddp.grads"]):
            torch.testing.assert_close(g, p.grad, atol=1e-5, rtol=1e-4)
        for k, v in net.state_dict().items():
            torch.testing.assert_close(r["ddp.state"][k], v, atol=1e-6, rtol=1e-5)
