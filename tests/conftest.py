import os

import pytest
import torch

# Two workers share 2 cores under `make test`; more intra-op threads per worker only thrash.
torch.set_num_threads(max(1, min(torch.get_num_threads(), 2 if os.environ.get("PYTEST_XDIST_WORKER") is None else 1)))


def tiny_overrides(steps: int = 4) -> list[str]:
    """--set items for a run that trains in about a second on the CPU."""
    return [
        f"train.steps={steps}", "train.batch_size=16", "train.log_every=1", "train.checkpoint_every=2",
        "train.sample_every=0", "train.keep_last=0", "train.ema_rate=0.9",
        "model.model_channels=16", "model.channel_mult=[1,2]", "model.num_res_blocks=1",
        "model.attention_resolutions=[4]", "model.num_heads=2", "model.norm_groups=8",
        "process.T=50", "sample.steps=5", "sample.grid_size=4",
    ]


@pytest.fixture(scope="module")
def one_thread():
    """Small tensors: one intra-op thread is fastest, and does not stall when other jobs share the cores.
    Use it in a module with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class StatelessTask:
    """The TrainTask members a toy task does not need: no random draws, no observation, no grid, no state.
    Subclasses define `loss(model, x, y, draws)`."""

    def draw(self, generator, n, x_shape):
        return {}

    def observe(self, gathered):
        pass

    def sample_grid(self, model, generator):
        return None

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


@pytest.fixture
def tiny():
    return tiny_overrides


def sets(items) -> list[str]:
    """['a=1', 'b=2'] -> ['--set', 'a=1', '--set', 'b=2']."""
    return [a for s in items for a in ("--set", s)]


def cli(args, capsys):
    """Run `difflab ARGS` in-process: (exit code, stdout, stderr)."""
    from difflab.cli.main import main

    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def one_line_error(code, err) -> str:
    """Assert a user error: exit status 2 and exactly one line 'error: ...' on stderr; return that line."""
    assert code == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]
