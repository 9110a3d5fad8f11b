"""Image-conditional diffusion models: the degradations that make the condition y from a clean image x, and the
network wrapper that feeds y to the model as extra input channels (SR3 / Palette: eps_theta([x_t, y], t)).

The `condition` section of a run config picks one:

| kind     | y from x (B, C, H, W)                                                         | channels of y |
|----------|-------------------------------------------------------------------------------|---------------|
| sr       | average-pool by `factor`, then up-sample back to H x W (`upsample`: nearest or bilinear) | C |
| colorize | ITU-R 601-2 luma 0.299 R + 0.587 G + 0.114 B (needs C = 3), 1 channel or repeated to 3 (`gray_channels`) | 1 or 3 |
| inpaint  | [x * m, m]: the image with the hole zeroed (mid-gray) and the keep-mask m (1 = known)     | C + 1 |

The network's input is [x_t, y], so model.in_channels = C + channels(y) and model.out_channels = C. A random mask
(`mask: random`) is drawn in `Degradation.draw` from the training step's generator, like the timesteps and the noise,
so DDP ranks, gradient accumulation and a resumed run see exactly the masks one uninterrupted process would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difflab.configs import field
from difflab.errors import UserError
from difflab.restoration.masks import make_masks, random_box_masks

ConditionKind = Literal["none", "sr", "colorize", "inpaint"]
CONDITION_KINDS: tuple[str, ...] = ("none", "sr", "colorize", "inpaint")
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, PIL's convert("L")


@dataclass(frozen=True)
class ConditionConfig:
    kind: ConditionKind = field("none", help="image conditioning of the model (docs/restoration.md): 'none' (an ordinary model), 'sr' "
                                             "(super-resolution from an average-pooled copy), 'colorize' (from the grayscale of a colour "
                                             "image), 'inpaint' (from the masked image plus the mask); y is concatenated to x_t, so "
                                             "model.in_channels = data channels + condition channels")
    factor: int = field(2, help="sr: down-sampling factor (the low-resolution image is image_size / factor pixels wide)")
    upsample: Literal["nearest", "bilinear"] = field("nearest", help="sr: how the low-resolution image is brought back to "
                                                                     "image_size to be concatenated: 'nearest' or 'bilinear'")
    gray_channels: int = field(1, help="colorize: channels of the gray condition, 1 or 3 (the luma repeated)")
    mask: Literal["center", "left", "random"] = field("random", help="inpaint: training masks, 'center' (middle square of "
                                                                     "half the side), 'left' (left half), or 'random' (a "
                                                                     "random rectangle per example, sides S/4..S)")

    def __post_init__(self):
        if self.kind not in CONDITION_KINDS:
            raise UserError(f"condition.kind must be one of {', '.join(map(repr, CONDITION_KINDS))}; got {self.kind!r}")
        if self.factor < 2:
            raise UserError(f"condition.factor must be at least 2; got {self.factor}")
        if self.gray_channels not in (1, 3):
            raise UserError(f"condition.gray_channels must be 1 or 3; got {self.gray_channels}")

    def channels(self, data_channels: int) -> int:
        """Channels of y for data with `data_channels` channels (0 for kind 'none')."""
        return {"none": 0, "sr": data_channels, "colorize": self.gray_channels, "inpaint": data_channels + 1}[self.kind]


# ----- the degradations (pure functions of x, and of the mask for inpainting) ---------------------------------------
def downsample(x: Tensor, factor: int) -> Tensor:
    """(B, C, H, W) -> (B, C, H/f, W/f) by averaging f x f blocks (the area filter; SR3's low-resolution input)."""
    if x.shape[-1] % factor or x.shape[-2] % factor:
        raise UserError(f"images of {x.shape[-2]}x{x.shape[-1]} cannot be down-sampled by {factor}: the factor must divide the size")
    return F.avg_pool2d(x, factor)


def upsample(x: Tensor, size: int, mode: str) -> Tensor:
    """(B, C, h, w) -> (B, C, size, size) with 'nearest', 'bilinear' or 'bicubic' (half-pixel centres), clamped to [-1, 1]."""
    if mode == "nearest":
        return F.interpolate(x, size=(size, size), mode="nearest")
    if mode not in ("bilinear", "bicubic"):
        raise ValueError(f"unknown up-sampling mode {mode!r}; valid: nearest, bilinear, bicubic")
    return F.interpolate(x, size=(size, size), mode=mode, align_corners=False).clamp(-1, 1)


def grayscale(x: Tensor) -> Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma; linear with weights summing to 1, so [-1, 1] maps to [-1, 1]."""
    if x.shape[1] != 3:
        raise UserError(f"colorization needs colour images (3 channels); these have {x.shape[1]}: use colour data, e.g. data.name=digits-color")
    w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).reshape(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def inpaint_condition(x: Tensor, mask: Tensor) -> Tensor:
    """y = [x * m, m], (B, C + 1, H, W); m (B or 1, 1, H, W) with 1 = known."""
    m = mask.to(device=x.device, dtype=x.dtype).expand(x.shape[0], 1, *x.shape[-2:])
    return torch.cat([x * m, m], 1)


class Degradation:
    """The degradation of one ConditionConfig, split in two so that restoration can start from an observation alone:

    observe(x0) -> o   what is seen: the low-resolution image (B, C, H/f, W/f) for sr, the gray image (B, 1, H, W) for
                       colorize, [x0 * m, m] (B, C + 1, H, W) for inpaint;
    condition(o) -> y  what the network gets (B, channels, H, W); y = degrade(x0) = condition(observe(x0)).
    baseline(o)        the trivial restoration from o alone, shaped like x0: bicubic up-sampling (sr), the gray image
                       repeated to 3 channels (colorize), the masked image with the hole mid-gray (inpaint);
    show(o)            o as a full-size image with the data's channels, for grids (sr: nearest up-sampling).
    """

    def __init__(self, cfg: ConditionConfig, data_channels: int):
        if cfg.kind == "none":
            raise ValueError("no degradation for condition.kind 'none'")
        if cfg.kind == "colorize" and data_channels != 3:
            raise UserError(f"condition.kind 'colorize' needs colour data (3 channels); the model's data have {data_channels}: "
                            "use data.name=digits-color and model.out_channels=3")
        self.cfg, self.data_channels = cfg, data_channels
        self.channels = cfg.channels(data_channels)

    @property
    def random_masks(self) -> bool:
        return self.cfg.kind == "inpaint" and self.cfg.mask == "random"

    def draw(self, generator: torch.Generator, n: int, x_shape: tuple[int, ...]) -> dict[str, Tensor]:
        """Randomness of the degradation for n examples (leading dim n): {"cond_mask": (n, 1, H, W)} for random masks."""
        if self.random_masks:
            return {"cond_mask": random_box_masks(n, x_shape[-1], generator)}
        return {}

    def masks(self, x0: Tensor, cond_mask: Tensor | None = None) -> Tensor:
        """The keep-masks (B, 1, H, W) of an inpainting batch: the drawn ones, else the config's fixed mask."""
        if cond_mask is not None:
            return cond_mask.to(device=x0.device, dtype=x0.dtype)
        if self.cfg.mask == "random":
            raise ValueError("random inpainting masks must be drawn (Degradation.draw) and passed as cond_mask")
        return make_masks(self.cfg.mask, x0.shape[0], x0.shape[-1]).to(device=x0.device, dtype=x0.dtype)

    def observe(self, x0: Tensor, cond_mask: Tensor | None = None) -> Tensor:
        """The observation o of the clean batch x0 (B, C, H, W); see the class doc."""
        c = self.cfg
        if c.kind == "sr":
            return downsample(x0, c.factor)
        if c.kind == "colorize":
            return grayscale(x0)
        return inpaint_condition(x0, self.masks(x0, cond_mask))

    def size_of(self, o: Tensor) -> int:
        """Side of the full-size image behind observation o."""
        return o.shape[-1] * self.cfg.factor if self.cfg.kind == "sr" else o.shape[-1]

    def condition(self, o: Tensor) -> Tensor:
        """The network's condition y (B, channels, H, W) from the observation o."""
        c = self.cfg
        if c.kind == "sr":
            return upsample(o, self.size_of(o), c.upsample)
        if c.kind == "colorize":
            return o.expand(-1, c.gray_channels, -1, -1).contiguous() if c.gray_channels > 1 else o
        return o

    def __call__(self, x0: Tensor, cond_mask: Tensor | None = None) -> Tensor:
        """y = condition(observe(x0)), the condition of the clean batch x0."""
        return self.condition(self.observe(x0, cond_mask))

    def baseline(self, o: Tensor) -> Tensor:
        """The trivial restoration from the observation alone (see the class doc)."""
        if self.cfg.kind == "sr":
            return upsample(o, self.size_of(o), "bicubic")
        return self.show(o)

    def show(self, o: Tensor) -> Tensor:
        """The observation as a full-size image with the data's channels."""
        if self.cfg.kind == "sr":
            return upsample(o, self.size_of(o), "nearest")
        if self.cfg.kind == "colorize":
            return o[:, :1].expand(-1, self.data_channels, -1, -1)
        return o[:, : self.data_channels]

    def known(self, o: Tensor) -> Tensor | None:
        """Inpainting: the keep-mask (B, 1, H, W) inside the observation, to paste the known pixels into the output; else None."""
        return o[:, self.data_channels:] if self.cfg.kind == "inpaint" else None


def build_degradation(cfg: ConditionConfig, data_channels: int) -> Degradation | None:
    """The Degradation of a run (None for an unconditional model)."""
    return None if cfg.kind == "none" else Degradation(cfg, data_channels)


class ImageConditioned(nn.Module):
    """The network of an image-conditional model: forward(x_t, t, y) = net([x_t, cond], t, y), channels concatenated.

    `cond` (B, C_y, H, W) is bound per batch (the degradation of the batch being trained or restored); class labels y
    pass through to the wrapped network. Wrap a trained network in it and give it to ModelDenoiser: every sampler then
    draws from p(x | cond) unchanged, since a Denoiser is all they see.
    """

    def __init__(self, net: nn.Module, cond: Tensor):
        super().__init__()
        self.net = net
        self.cond = cond

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        if x.shape[0] != self.cond.shape[0] or x.shape[-2:] != self.cond.shape[-2:]:
            raise ValueError(f"condition of shape {tuple(self.cond.shape)} does not match the batch {tuple(x.shape)}")
        return self.net(torch.cat([x, self.cond.to(device=x.device, dtype=x.dtype)], 1), t, y)
