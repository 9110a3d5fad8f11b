"""The noise-aware classifier of classifier guidance: its run config, its TrainTask, its report, its RunKind.

ADM trains p_phi(y | x_t) on x_t = q_sample(x_0, t, eps) with t uniform over the diffusion model's steps and the
same process (Dhariwal & Nichol 2021, Sec. 4.1; guided-diffusion's classifier_train.py with --noised), with
cross-entropy. The same Trainer as for diffusion runs does the optimisation, checkpoints, EMA and DDP; the run
folder adds accuracy_vs_t.json and plots/accuracy_vs_t.png: accuracy on held-out data as a function of t.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difflab.data.atomic import atomic_savefig, atomic_write_text
from difflab.configs import field
from difflab.data import DataConfig, ImageData, load_dataset
from difflab.errors import UserError
from difflab.guidance import NetClassifier
from difflab.nets.classifier import ClassifierConfig, NoisyClassifierNet, classifier_preset
from difflab.process import NoiseProcess, ProcessConfig, build_process
from difflab.runs.kind import RunKind
from difflab.training.config import TrainConfig


@dataclass(frozen=True)
class ClassifierEvalConfig:
    split: str = field("test", help="data split for the accuracy-vs-t report written after training ('test' = held out)")
    timesteps: int = field(20, help="number of timesteps, evenly spaced over 0..T-1, at which accuracy is measured")
    repeats: int = field(4, help="noise draws per image and timestep")
    seed: int = field(0, help="seed of the noise of the report")

    def __post_init__(self):
        if self.split not in ("train", "test", "all"):
            raise UserError(f"eval.split must be one of 'train', 'test', 'all'; got {self.split!r}")
        if self.timesteps < 1 or self.repeats < 1:
            raise UserError(f"eval.timesteps and eval.repeats must be at least 1; got {self.timesteps}, {self.repeats}")


@dataclass(frozen=True)
class ClassifierRunConfig:
    kind: Literal["classifier"] = field("classifier", help="run kind: 'classifier' (a noise-aware classifier for classifier guidance)")
    data: DataConfig = field(default_factory=lambda: DataConfig(labels="require"), help="labelled training data")
    model: ClassifierConfig = field(default_factory=lambda: classifier_preset("digits-clf"), help="the classifier network")
    process: ProcessConfig = field(default_factory=ProcessConfig, help="the forward process: must be the diffusion model's")
    train: TrainConfig = field(default_factory=TrainConfig, help="optimisation (train.label_dropout does not apply)")
    eval: ClassifierEvalConfig = field(default_factory=ClassifierEvalConfig, help="the accuracy-vs-t report")

    def __post_init__(self):
        if self.train.label_dropout:
            raise UserError("train.label_dropout is for diffusion models; a classifier is trained on every label")


def _digits_clf() -> ClassifierRunConfig:
    """A classifier for the `digits` / `digits-cond` diffusion runs: same process (VP, linear, T=1000)."""
    return ClassifierRunConfig(
        data=DataConfig(name="digits", split="train", labels="require"),
        model=classifier_preset("digits-clf"),
        process=ProcessConfig(kind="vp", schedule="linear", T=1000),
        train=TrainConfig(steps=2000, batch_size=128, lr=1e-3, warmup_steps=100, lr_schedule="cosine", weight_decay=0.05,
                          ema_rate=0.99, grad_clip=1.0, log_every=50, checkpoint_every=500, sample_every=0),
    )


CLASSIFIER_RUN_PRESETS = {"digits-clf": _digits_clf}


class ClassifierTask:
    """TrainTask: cross-entropy of the classifier on x_t at t ~ U{0..T-1}; (t, eps) drawn per global batch."""

    def __init__(self, process: NoiseProcess):
        self.process = process

    def draw(self, generator: torch.Generator, n: int, x_shape: tuple[int, ...]) -> dict[str, Tensor]:
        t = torch.randint(0, self.process.T, (n,), generator=generator)
        eps = torch.randn((n, *x_shape), generator=generator, dtype=torch.float32)
        return {"t": t, "eps": eps}

    def loss(self, model: nn.Module, x: Tensor, y: Tensor | None, draws: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        if y is None:
            raise UserError("a classifier needs labelled data")
        t = draws["t"].long().cpu()
        x_t = self.process.q_sample(x, t, draws["eps"].to(device=x.device, dtype=x.dtype))
        logits = model(x_t, self.process.model_time(t).to(x.device))
        return F.cross_entropy(logits.float(), y, reduction="none"), {}

    def observe(self, gathered: dict[str, Tensor]) -> None:
        pass

    def sample_grid(self, model: nn.Module, generator: torch.Generator) -> Tensor | None:
        return None

    def state_dict(self) -> dict[str, Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        pass


@torch.no_grad()
def accuracy_vs_t(classifier: NetClassifier, x: Tensor, y: Tensor, ts: list[int], *, repeats: int = 1,
                  generator: torch.Generator | None = None, batch_size: int = 512) -> list[dict]:
    """Per timestep t: accuracy and mean NLL of argmax p_phi(. | x_t) on x_t ~ q(x_t | x_0), `repeats` draws per image."""
    p = classifier.process
    rows = []
    for t in ts:
        correct, nll, count = 0, 0.0, 0
        for _ in range(repeats):
            eps = torch.randn(x.shape, generator=generator, dtype=x.dtype)
            for lo in range(0, len(x), batch_size):
                xb, yb, eb = x[lo:lo + batch_size], y[lo:lo + batch_size], eps[lo:lo + batch_size]
                tt = torch.full((len(xb),), int(t))
                logits = classifier(p.q_sample(xb, tt, eb), tt).float()
                correct += int((logits.argmax(1) == yb).sum())
                nll += float(F.cross_entropy(logits, yb, reduction="sum"))
                count += len(xb)
        rows.append({"t": int(t), "accuracy": correct / count, "nll": nll / count})
    return rows


def evaluation_timesteps(T: int, n: int) -> list[int]:
    """n distinct timesteps evenly spaced over 0..T-1, increasing."""
    return sorted(set(int(round(v)) for v in torch.linspace(0, T - 1, min(n, T)).tolist()))


def write_accuracy_report(out: Path, rows: list[dict], meta: dict) -> Path:
    """accuracy_vs_t.json and plots/accuracy_vs_t.png in the run folder."""
    report = {**meta, "rows": rows, "mean_accuracy": sum(r["accuracy"] for r in rows) / len(rows)}
    path = out / "accuracy_vs_t.json"
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.2))
    ax = fig.subplots()
    ax.plot([r["t"] for r in rows], [r["accuracy"] for r in rows], marker="o", ms=3, label=f"{meta['split']} accuracy")
    ax.axhline(meta["chance"], color="gray", ls="--", lw=1, label="chance")
    ax.set_xlabel("timestep t (noise grows with t)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title("noise-aware classifier: accuracy vs t")
    fig.tight_layout()
    (out / "plots").mkdir(parents=True, exist_ok=True)
    atomic_savefig(fig, out / "plots" / "accuracy_vs_t.png", dpi=100)
    return path


def report_accuracy(cfg: ClassifierRunConfig, classifier: NetClassifier, out: Path, step: int) -> dict:
    """Accuracy vs t of the (EMA) classifier, on the CPU, on cfg.eval.split; written to the run folder and returned."""
    held = load_dataset(dataclasses.replace(cfg.data, split=cfg.eval.split, labels="require"))
    x, y = held.x, held.y
    ts = evaluation_timesteps(classifier.process.T, cfg.eval.timesteps)
    rows = accuracy_vs_t(classifier, x, y, ts, repeats=cfg.eval.repeats, generator=torch.Generator().manual_seed(cfg.eval.seed))
    meta = {"split": cfg.eval.split, "held_out": cfg.eval.split != cfg.data.split and "all" not in (cfg.eval.split, cfg.data.split),
            "n_images": len(x), "repeats": cfg.eval.repeats, "step": step, "chance": 1.0 / cfg.model.num_classes}
    write_accuracy_report(out, rows, meta)
    return {**meta, "rows": rows}


def _check_data(cfg: ClassifierRunConfig, data: ImageData) -> None:
    m, x = cfg.model, data.x
    if x.shape[1] != m.in_channels or x.shape[-1] != m.image_size:
        raise UserError(f"data are {x.shape[1]}x{x.shape[-2]}x{x.shape[-1]} but the classifier expects "
                        f"{m.in_channels}x{m.image_size}x{m.image_size}: set model.in_channels / model.image_size")
    if data.num_classes is not None and data.num_classes > m.num_classes:
        raise UserError(f"the data have {data.num_classes} classes but model.num_classes is {m.num_classes}: set model.num_classes={data.num_classes}")


def _net_classifier(cfg: ClassifierRunConfig, net: nn.Module) -> NetClassifier:
    return NetClassifier(net, build_process(cfg.process), cfg.model.num_classes)


def _after_training(cfg: ClassifierRunConfig, trainer, out: Path) -> None:
    report_accuracy(cfg, _net_classifier(cfg, trainer.ema.shadow.to("cpu").eval()), out, trainer.step)


KIND = RunKind(
    name="classifier",
    summary="a noise-aware classifier p_phi(y | x_t) for classifier guidance",
    config_class=ClassifierRunConfig,
    presets=CLASSIFIER_RUN_PRESETS,
    build_model=lambda cfg: NoisyClassifierNet(cfg.model),
    build_task=lambda cfg, model, device: ClassifierTask(build_process(cfg.process)),
    data_config=lambda cfg: dataclasses.replace(cfg.data, labels="require"),
    check_data=_check_data,
    uses_labels=lambda cfg: True,
    frozen=("kind", "data", "model", "process"),
    changeable="train.* and eval.*",
    train_hint="difflab classifier train",
    image_shape=lambda cfg: (cfg.model.in_channels, cfg.model.image_size, cfg.model.image_size),
    after_training=_after_training,
    classifier=_net_classifier,
)
