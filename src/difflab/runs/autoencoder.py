"""The autoencoder run kind ("autoencoder"): the KL-regularised autoencoder of latent diffusion (Rombach et al. 2022,
Sec. 3.1 and App. G), whose latents a latent diffusion run (runs/latent.py) is trained on.

Loss per image: rec + beta KL + [step >= disc_start] disc_weight L_adv, where rec is the mean L1 or L2 error per pixel,
KL(q(z|x) || N(0, I)) is summed over the latent's elements and divided by the image's pixels (so beta is LDM's
kl_weight: 1e-6 for its KL-f8), and L_adv = -mean D(x_hat) is the generator's hinge term against a patch discriminator
trained with the hinge loss from the same step on (LDM's LPIPSWithDiscriminator without LPIPS and without its adaptive
weight: a fixed disc_weight keeps the recipe simple). Reports: reconstruction.json (PSNR on the held-out split).
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

from difflab.configs import field
from difflab.data import DataConfig, ImageData, load_dataset
from difflab.data.atomic import atomic_write_text
from difflab.errors import UserError
from difflab.nets.autoencoder_kl import AutoencoderKL, AutoencoderKLConfig, autoencoder_preset, psnr
from difflab.nets.patch_discriminator import PatchDiscriminator
from difflab.runs.kind import RunKind
from difflab.training.config import TrainConfig
from difflab.training.trainer import Phase

KIND_NAME = "autoencoder"


@dataclass(frozen=True)
class AutoencoderLossConfig:
    reconstruction: Literal["l1", "l2"] = field("l1", help="per-pixel reconstruction error: 'l1' (LDM's) or 'l2' (sd-vae-ft-mse's fine-tuning)")
    beta: float = field(1e-6, help="weight of KL(q(z|x) || N(0, I)), summed over latent elements and divided by the image's pixels "
                                   "(LDM's kl_weight; small: the KL only keeps the latent scale in check)")
    disc_weight: float = field(0.0, help="weight of the patch discriminator's hinge term in the autoencoder's loss; 0: no discriminator is built")
    disc_start: int = field(0, help="first step with the adversarial terms (both networks); before it the autoencoder trains on rec + KL alone")
    disc_channels: int = field(64, help="width of the discriminator's first layer")
    disc_layers: int = field(3, help="stride-2 layers of the patch discriminator (pix2pix: 3); fewer for small images")

    def __post_init__(self):
        if self.reconstruction not in ("l1", "l2"):
            raise UserError(f"loss.reconstruction must be one of 'l1', 'l2'; got {self.reconstruction!r}")
        for key in ("beta", "disc_weight"):
            if not 0 <= getattr(self, key) < float("inf"):
                raise UserError(f"loss.{key} must be a finite number >= 0; got {getattr(self, key)}")
        if self.disc_start < 0 or self.disc_channels < 1 or self.disc_layers < 1:
            raise UserError("loss.disc_start must be >= 0, loss.disc_channels and loss.disc_layers at least 1")


@dataclass(frozen=True)
class AutoencoderSampleConfig:
    grid_size: int = field(64, help="images in each training grid: pairs [x, reconstruction] of the first grid_size / 2 training images")

    def __post_init__(self):
        if self.grid_size < 2:
            raise UserError(f"sample.grid_size must be at least 2 (one pair); got {self.grid_size}")


@dataclass(frozen=True)
class AutoencoderEvalConfig:
    split: Literal["train", "test", "all"] = field("test", help="data split whose reconstruction PSNR is written to reconstruction.json after training")
    batch_size: int = field(64, help="images per encoder/decoder batch of that report")

    def __post_init__(self):
        if self.split not in ("train", "test", "all"):
            raise UserError(f"eval.split must be one of 'train', 'test', 'all'; got {self.split!r}")
        if self.batch_size < 1:
            raise UserError(f"eval.batch_size must be at least 1; got {self.batch_size}")


@dataclass(frozen=True)
class AutoencoderRunConfig:
    kind: Literal["autoencoder"] = field("autoencoder", help="run kind: 'autoencoder' (the KL autoencoder of latent diffusion)")
    data: DataConfig = field(default_factory=lambda: DataConfig(labels="ignore"), help="training data (labels are not used)")
    model: AutoencoderKLConfig = field(default_factory=AutoencoderKLConfig, help="the autoencoder (diffusers' AutoencoderKL layout)")
    loss: AutoencoderLossConfig = field(default_factory=AutoencoderLossConfig, help="reconstruction, KL and adversarial terms")
    train: TrainConfig = field(default_factory=TrainConfig, help="optimisation (with a discriminator: one AdamW per network, same settings)")
    sample: AutoencoderSampleConfig = field(default_factory=AutoencoderSampleConfig, help="reconstruction grids during training")
    eval: AutoencoderEvalConfig = field(default_factory=AutoencoderEvalConfig, help="the reconstruction report written after training")

    def __post_init__(self):
        if self.train.label_dropout:
            raise UserError("train.label_dropout is for class-conditional diffusion models; the autoencoder is unconditional")


class AutoencoderModel(nn.Module):
    """The trained networks: `autoencoder` (an AutoencoderKL) and, with loss.disc_weight > 0, its `discriminator`."""

    def __init__(self, cfg: AutoencoderRunConfig):
        super().__init__()
        self.autoencoder = AutoencoderKL(cfg.model)
        l = cfg.loss
        self.discriminator = PatchDiscriminator(cfg.model.in_channels, l.disc_channels, l.disc_layers) if l.disc_weight > 0 else None

    def forward(self, x: Tensor, eps: Tensor, phase: str = "ae", adversarial: bool = False) -> tuple[Tensor, ...]:
        """Phase "ae": (x_hat, KL per example, D(x_hat) or None); "d": (D(x), D(x_hat)) with x_hat not differentiated.
        One forward for both phases, so DistributedDataParallel sees every call."""
        if phase == "d":
            with torch.no_grad():
                x_hat, _ = self.autoencoder(x, eps)
            return self.discriminator(x), self.discriminator(x_hat)
        x_hat, q = self.autoencoder(x, eps)
        return x_hat, q.kl(), self.discriminator(x_hat) if adversarial else None


class AutoencoderTask:
    """TrainTask of the autoencoder: draws eps for z = mean + sigma eps; phases 'ae' then 'd' when there is a discriminator.

    The task counts its steps itself (one `draw` per step; the count is in its state dict, so resume keeps it), which
    tells the loss whether the adversarial terms are on (loss.disc_start).
    """

    def __init__(self, cfg: AutoencoderRunConfig, device: torch.device):
        self.cfg, self.device = cfg, device
        self.phases = (Phase("ae", "autoencoder"), Phase("d", "discriminator")) if cfg.loss.disc_weight > 0 else ()
        self.step = 0  # the step being trained (= the Trainer's)
        self._next = 0
        self._logs: dict[str, float] = {}
        self._grid: Tensor | None = None

    def draw(self, generator: torch.Generator, n: int, x_shape: tuple[int, ...]) -> dict[str, Tensor]:
        self.step, self._next = self._next, self._next + 1
        return {"eps": torch.randn((n, *self.cfg.model.latent_shape), generator=generator)}

    def loss(self, model: nn.Module, x: Tensor, y: Tensor | None, draws: dict[str, Tensor], phase: str = "ae") -> tuple[Tensor, dict[str, Tensor]]:
        l = self.cfg.loss
        adversarial = l.disc_weight > 0 and self.step >= l.disc_start
        eps = draws["eps"].to(device=x.device, dtype=x.dtype)
        if phase == "d":
            logits_real, logits_fake = model(x, eps, phase="d")
            hinge = 0.5 * (F.relu(1 - logits_real.float()).flatten(1).mean(1) + F.relu(1 + logits_fake.float()).flatten(1).mean(1))
            # Before disc_start the discriminator's loss counts zero (LDM's disc_factor), but it still runs so every step
            # has the same phases and optimiser states.
            return hinge * float(adversarial), {"d_real": logits_real.detach().flatten(1).mean(1).double(),
                                                "d_fake": logits_fake.detach().flatten(1).mean(1).double()}
        x_hat, kl, logits_fake = model(x, eps, phase="ae", adversarial=adversarial)
        err = (x_hat.float() - x.float()).flatten(1)
        rec = err.abs().mean(1) if l.reconstruction == "l1" else err.pow(2).mean(1)
        kl = kl.float() / err.shape[1]  # per pixel: beta means what LDM's kl_weight means
        loss = rec + l.beta * kl
        extra = {"rec": rec.detach().double(), "kl": kl.detach().double()}
        if logits_fake is not None:
            g_adv = -logits_fake.float().flatten(1).mean(1)
            loss = loss + l.disc_weight * g_adv
            extra["g_adv"] = g_adv.detach().double()
        return loss, extra

    def observe(self, gathered: dict[str, Tensor]) -> None:
        self._logs = {k: float(v.mean()) for k, v in gathered.items()}

    def step_logs(self) -> dict[str, float]:
        return dict(self._logs)

    @torch.no_grad()
    def sample_grid(self, model: nn.Module, generator: torch.Generator) -> Tensor:
        """Pairs [x, x_hat] (decoded from the posterior mean) of the first grid_size / 2 training images."""
        if self._grid is None:
            self._grid = load_dataset(self.cfg.data).x[: self.cfg.sample.grid_size // 2]
        model.eval()
        x = self._grid.to(self.device)
        x_hat, _ = model.autoencoder(x)
        return torch.stack([x, x_hat.clamp(-1, 1)], 1).flatten(0, 1).cpu()

    def state_dict(self) -> dict[str, Tensor]:
        return {"steps_drawn": torch.tensor(self._next, dtype=torch.int64)}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self._next = int(state["steps_drawn"]) if "steps_drawn" in state else 0


@torch.no_grad()
def reconstruct(ae: AutoencoderKL, x: Tensor, batch_size: int = 64) -> Tensor:
    """x_hat = D(mean of q(z|x)) for images x (N, C, H, W), batch by batch on the autoencoder's device; CPU out."""
    dev = next(ae.parameters()).device
    return torch.cat([ae(x[i:i + batch_size].to(dev))[0].float().cpu() for i in range(0, len(x), batch_size)])


def report_reconstruction(cfg: AutoencoderRunConfig, ae: AutoencoderKL, out: Path, step: int) -> dict:
    """PSNR (dB) and MSE of the (EMA) autoencoder's reconstructions of cfg.eval.split, written to out/reconstruction.json."""
    held = load_dataset(dataclasses.replace(cfg.data, split=cfg.eval.split, labels="ignore"))
    ae = ae.eval()
    x_hat = reconstruct(ae, held.x, cfg.eval.batch_size)
    res = {"split": cfg.eval.split, "step": step, "n_images": len(held), "psnr_db": psnr(held.x, x_hat),
           "mse": float(((held.x.double() - x_hat.double().clamp(-1, 1)) ** 2).mean()),
           "latent_shape": list(cfg.model.latent_shape)}
    atomic_write_text(out / "reconstruction.json", json.dumps(res, indent=2) + "\n")
    return res


def load_autoencoder_run(folder: Path, device: str | torch.device = "cpu") -> tuple[AutoencoderKL, AutoencoderRunConfig]:
    """The newest checkpoint's AutoencoderKL (EMA weights, eval mode, on `device`) of an autoencoder run, and its config.

    (load_run does this for every kind; latent runs call this one, which needs nothing above the autoencoder kind.)"""
    from difflab.configs import from_dict
    from difflab.runs.folder import find_checkpoint
    from difflab.training.checkpoint import load_checkpoint, unflatten

    _, ckpt = find_checkpoint(Path(folder))
    tensors, meta = load_checkpoint(ckpt)
    cfg = from_dict(AutoencoderRunConfig, {**meta["config"], "kind": KIND_NAME})
    model = AutoencoderModel(cfg)
    model.load_state_dict(unflatten("ema", tensors))
    return model.autoencoder.to(device).eval(), cfg


def _check_data(cfg: AutoencoderRunConfig, data: ImageData) -> None:
    m, x = cfg.model, data.x
    if x.shape[1] != m.in_channels or x.shape[-1] != m.image_size or x.shape[-2] != m.image_size:
        raise UserError(f"data are {x.shape[1]}x{x.shape[-2]}x{x.shape[-1]} but the autoencoder expects "
                        f"{m.in_channels}x{m.image_size}x{m.image_size}: set model.in_channels / model.image_size, or data.image_size / data.channels")


def _digits32_ae() -> AutoencoderRunConfig:
    """f = 4 on the digits upscaled to 32x32 (bicubic): 8x8x4 latents, L1 + 1e-6 KL, a small patch discriminator from step 1000."""
    return AutoencoderRunConfig(
        data=DataConfig(name="digits", split="train", image_size=32, labels="ignore"),
        model=autoencoder_preset("digits32"),
        loss=AutoencoderLossConfig(reconstruction="l1", beta=1e-6, disc_weight=0.1, disc_start=1000, disc_channels=16, disc_layers=2),
        train=TrainConfig(steps=1500, batch_size=64, lr=1e-3, warmup_steps=50, lr_schedule="cosine", ema_rate=0.995,
                          grad_clip=1.0, log_every=50, checkpoint_every=500, sample_every=500),
    )


def _digits_ae() -> AutoencoderRunConfig:
    """f = 2 on the native 8x8 digits: 4x4x2 latents, L1 + 1e-6 KL, no discriminator."""
    return AutoencoderRunConfig(
        data=DataConfig(name="digits", split="train", labels="ignore"),
        model=autoencoder_preset("digits8"),
        train=TrainConfig(steps=2000, batch_size=128, lr=1e-3, warmup_steps=50, lr_schedule="cosine", ema_rate=0.995,
                          grad_clip=1.0, log_every=50, checkpoint_every=500, sample_every=500),
    )


def _sd_vae() -> AutoencoderRunConfig:
    """Stable Diffusion's KL-f8 autoencoder (256x256 RGB -> 32x32x4, 83,653,863 parameters); import its weights with
    `difflab import diffusers-vae`, or train it on an image folder (--data DIR); LDM's discriminator: --set loss.disc_weight=0.5
    (it starts at loss.disc_start = 50001, as in LDM's kl-f8 config)."""
    return AutoencoderRunConfig(
        data=DataConfig(name="images", split="train", image_size=256, channels="RGB", crop="center", labels="ignore"),
        model=autoencoder_preset("sd-vae"),
        loss=AutoencoderLossConfig(reconstruction="l1", beta=1e-6, disc_weight=0.0, disc_start=50001),
        train=TrainConfig(lr=4.5e-6, batch_size=12, ema_rate=0.0),
    )


PRESETS = {"digits32-ae": _digits32_ae, "digits-ae": _digits_ae, "sd-vae": _sd_vae}


def _after_training(cfg: AutoencoderRunConfig, trainer, out: Path) -> None:
    report_reconstruction(cfg, trainer.ema.shadow.autoencoder, out, trainer.step)


KIND = RunKind(
    name=KIND_NAME,
    summary="a KL-regularised autoencoder (latent diffusion's first stage, Rombach et al. 2022); latent runs diffuse its latents",
    config_class=AutoencoderRunConfig,
    presets=PRESETS,
    build_model=AutoencoderModel,
    build_task=lambda cfg, model, device: AutoencoderTask(cfg, device),
    data_config=lambda cfg: dataclasses.replace(cfg.data, labels="ignore"),
    check_data=_check_data,
    uses_labels=lambda cfg: False,
    frozen=("kind", "data", "model", "loss"),
    changeable="train.*, sample.* and eval.*",
    train_hint="difflab train --config digits32-ae",
    image_shape=lambda cfg: (cfg.model.in_channels, cfg.model.image_size, cfg.model.image_size),
    plot_keys=("loss", "rec", "kl", "g_adv", "d_real", "d_fake"),
    after_training=_after_training,
)
