"""ADM's noise-aware classifier: the U-Net's down path + middle block + an attention-pooling head.

Dhariwal & Nichol 2021, Sec. 4.1 and App. A: "the downsampling trunk of the UNet model with an attention pool
at the 8x8 layer to produce the final output". Layout and names follow openai/guided-diffusion's
`EncoderUNetModel` (time_embed, input_blocks, middle_block, out; `AttentionPool2d` with positional_embedding,
qkv_proj, c_proj) with pool="attention". Like every net here it knows nothing about diffusion: it maps
(x_t, t) to class logits; training it on noisy x_t is the task's business (train/classifier.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, Mapping

import torch
from torch import Tensor, nn

from difflab.configs import field
from difflab.errors import UserError
from difflab.nets.attention import AttentionBlock, QKVAttention
from difflab.nets.blocks import Downsample, GroupNorm32, ResBlock, TimestepEmbedSequential
from difflab.nets.config import UNetConfig
from difflab.nets.embeddings import timestep_embedding

Pool = Literal["attention", "adaptive"]


@dataclass(frozen=True)
class ClassifierConfig:
    """The encoder half of an ADM U-Net and its pooling head; field names as `UNetConfig` / guided-diffusion."""

    image_size: int = field(64, help="height = width of the input images in pixels")
    in_channels: int = field(3, help="channels of the input x_t")
    num_classes: int = field(1000, help="number of classes: the width of the logits")
    model_channels: int = field(128, help="base width (guided-diffusion's classifier_width); level k has model_channels * channel_mult[k]")
    channel_mult: tuple[int, ...] = field((1, 2, 3, 4), help="width multiplier per level; one level per resolution, halving each time")
    num_res_blocks: int = field(2, help="ResBlocks per level (guided-diffusion's classifier_depth)")
    attention_resolutions: tuple[int, ...] = field((32, 16, 8), help="pixel resolutions whose levels get self-attention after each ResBlock")
    num_heads: int = field(1, help="attention heads, used when num_head_channels is -1")
    num_head_channels: int = field(64, help="channels per attention head, also of the pooling head (ADM: 64); -1 = use num_heads")
    use_new_attention_order: bool = field(False, help="split q,k,v before heads in the self-attention blocks (the pool always does)")
    dropout: float = field(0.0, help="dropout probability inside every ResBlock")
    resblock_updown: bool = field(True, help="downsample with residual blocks (BigGAN style; ADM's classifiers: true)")
    conv_resample: bool = field(True, help="learned 3x3 stride-2 convs in plain downsampling layers (false = average pooling)")
    use_scale_shift_norm: bool = field(True, help="AdaGN: the timestep embedding scales and shifts the second GroupNorm (ADM)")
    pool: Pool = field("attention", help="'attention': ADM's attention pooling over the last feature map (mean token + positions); 'adaptive': global average pooling + 1x1 conv")
    norm_groups: int = field(32, help="GroupNorm groups in every normalisation layer")
    norm_eps: float = field(1e-5, help="GroupNorm epsilon")
    use_checkpoint: bool = field(False, help="gradient checkpointing per block")

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise UserError(f"model.num_classes of a classifier must be >= 2; got {self.num_classes}")
        if self.pool not in ("attention", "adaptive"):
            raise UserError(f"model.pool must be 'attention' or 'adaptive'; got {self.pool!r}")
        self.trunk()  # the U-Net's checks of widths, groups, resolutions and heads
        ch = self.level_channels[-1]
        if self.pool == "attention" and ch % self.pool_head_channels:
            raise UserError(f"the attention pool over {ch} channels cannot use {self.pool_head_channels}-channel heads; change num_head_channels / num_heads")

    def trunk(self) -> UNetConfig:
        """The U-Net whose down path + middle block this classifier shares (validates the shared fields)."""
        return UNetConfig(
            image_size=self.image_size, in_channels=self.in_channels, out_channels=self.in_channels,
            model_channels=self.model_channels, channel_mult=self.channel_mult, num_res_blocks=self.num_res_blocks,
            attention_resolutions=self.attention_resolutions, num_heads=self.num_heads, num_head_channels=self.num_head_channels,
            use_new_attention_order=self.use_new_attention_order, dropout=self.dropout, resblock_updown=self.resblock_updown,
            conv_resample=self.conv_resample, use_scale_shift_norm=self.use_scale_shift_norm, norm_groups=self.norm_groups,
            norm_eps=self.norm_eps, use_checkpoint=self.use_checkpoint,
        )

    @property
    def level_channels(self) -> tuple[int, ...]:
        return tuple(self.model_channels * m for m in self.channel_mult)

    @property
    def resolutions(self) -> tuple[int, ...]:
        return tuple(self.image_size // 2**k for k in range(len(self.channel_mult)))

    @property
    def emb_dim(self) -> int:
        return 4 * self.model_channels

    @property
    def pool_head_channels(self) -> int:
        """Channels per head of the attention pool: num_head_channels, or the width split into num_heads."""
        return self.num_head_channels if self.num_head_channels != -1 else self.level_channels[-1] // self.num_heads


class AttentionPool2d(nn.Module):
    """CLIP / ADM attention pooling: the mean token attends over [mean, positions] of the last feature map.

    x (B, C, H, W) -> tokens (B, C, 1 + HW) + learned positional embedding -> multi-head attention -> c_proj ->
    the output at the mean token, (B, output_dim). Names as guided-diffusion's `AttentionPool2d`.
    """

    def __init__(self, spatial_dim: int, embed_dim: int, num_head_channels: int, output_dim: int):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(embed_dim, spatial_dim**2 + 1) / embed_dim**0.5)
        self.qkv_proj = nn.Conv1d(embed_dim, 3 * embed_dim, 1)
        self.c_proj = nn.Conv1d(embed_dim, output_dim, 1)
        self.num_heads = embed_dim // num_head_channels
        self.attention = QKVAttention(self.num_heads)

    def forward(self, x: Tensor) -> Tensor:
        b, c = x.shape[:2]
        x = x.reshape(b, c, -1)  # (B, C, HW)
        x = torch.cat([x.mean(dim=-1, keepdim=True), x], dim=-1)  # (B, C, 1 + HW)
        x = x + self.positional_embedding[None].to(x.dtype)
        x = self.c_proj(self.attention(self.qkv_proj(x)))  # (B, output_dim, 1 + HW)
        return x[:, :, 0]


class NoisyClassifierNet(nn.Module):
    """ADM's EncoderUNetModel: forward(x (B,C,H,W), t (B,) timesteps, y=None) -> logits (B, num_classes)."""

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.cfg = cfg
        emb_dim = cfg.emb_dim
        self.time_embed = nn.Sequential(nn.Linear(cfg.model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        ch = cfg.level_channels[0]
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(cfg.in_channels, ch, 3, padding=1))])
        last = len(cfg.channel_mult) - 1
        for level, (res, level_ch) in enumerate(zip(cfg.resolutions, cfg.level_channels)):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [self._resblock(ch, level_ch)]
                ch = level_ch
                if res in cfg.attention_resolutions:
                    layers.append(self._attention(ch))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
            if level != last:
                down = self._resblock(ch, ch, down=True) if cfg.resblock_updown else Downsample(ch, cfg.conv_resample)
                self.input_blocks.append(TimestepEmbedSequential(down))
        # guided-diffusion's encoder always has attention between the two middle ResBlocks.
        self.middle_block = TimestepEmbedSequential(self._resblock(ch, ch), self._attention(ch), self._resblock(ch, ch))
        head: nn.Module
        if cfg.pool == "attention":
            head = AttentionPool2d(cfg.resolutions[-1], ch, cfg.pool_head_channels, cfg.num_classes)
            self.out = nn.Sequential(GroupNorm32(cfg.norm_groups, ch, eps=cfg.norm_eps), nn.SiLU(), head)
        else:
            self.out = nn.Sequential(
                GroupNorm32(cfg.norm_groups, ch, eps=cfg.norm_eps), nn.SiLU(), nn.AdaptiveAvgPool2d((1, 1)),
                nn.Conv2d(ch, cfg.num_classes, 1), nn.Flatten(),
            )

    def _resblock(self, ch: int, out_ch: int, *, down: bool = False) -> ResBlock:
        c = self.cfg
        return ResBlock(ch, c.emb_dim, c.dropout, out_ch, use_scale_shift_norm=c.use_scale_shift_norm, norm_groups=c.norm_groups,
                        norm_eps=c.norm_eps, down=down, use_checkpoint=c.use_checkpoint)

    def _attention(self, ch: int) -> AttentionBlock:
        c = self.cfg
        heads = ch // c.num_head_channels if c.num_head_channels != -1 else c.num_heads
        return AttentionBlock(ch, heads, norm_groups=c.norm_groups, norm_eps=c.norm_eps,
                              use_new_attention_order=c.use_new_attention_order, use_checkpoint=c.use_checkpoint)

    def features(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(spatially averaged normalised features of the last level (B, C), logits (B, num_classes)): for FID-style metrics."""
        emb = self.time_embed(timestep_embedding(t, self.cfg.model_channels).to(self.time_embed[0].weight.dtype))
        h = x
        for block in self.input_blocks:
            h = block(h, emb)
        h = self.middle_block(h, emb)
        feats = self.out[1](self.out[0](h)).mean(dim=(2, 3))  # after GroupNorm + SiLU, before the head
        return feats, self.out(h)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """Logits of p_phi(y | x_t): x (B, C, H, W), t (B,) timesteps as the network sees them -> (B, num_classes)."""
        if y is not None:
            raise ValueError("the noise-aware classifier predicts y; it takes no labels")
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        emb = self.time_embed(timestep_embedding(t, self.cfg.model_channels).to(self.time_embed[0].weight.dtype))
        h = x
        for block in self.input_blocks:
            h = block(h, emb)
        h = self.middle_block(h, emb)
        return self.out(h)


def _adm_classifier(image_size: int, channel_mult: tuple[int, ...], depth: int) -> ClassifierConfig:
    """guided-diffusion's released ImageNet classifiers (README CLASSIFIER_FLAGS, script_util.create_classifier)."""
    return ClassifierConfig(image_size=image_size, in_channels=3, num_classes=1000, model_channels=128, channel_mult=channel_mult,
                            num_res_blocks=depth, attention_resolutions=(32, 16, 8), num_head_channels=64,
                            resblock_updown=True, use_scale_shift_norm=True, pool="attention")


CLASSIFIER_PRESETS: Mapping[str, ClassifierConfig] = MappingProxyType(
    {
        # 8x8 digits: levels 8, 4, 2 px; attention at 4 px and in the middle; the pool attends over the 2x2 map.
        "digits-clf": ClassifierConfig(
            image_size=8, in_channels=1, num_classes=10, model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
            attention_resolutions=(4,), num_head_channels=32, use_new_attention_order=True, resblock_updown=False,
            use_scale_shift_norm=True, norm_groups=8,
        ),
        "adm-imagenet64-clf": _adm_classifier(64, (1, 2, 3, 4), 4),
        "adm-imagenet128-clf": _adm_classifier(128, (1, 1, 2, 3, 4), 2),
        "adm-imagenet256-clf": _adm_classifier(256, (1, 1, 2, 2, 4, 4), 2),
    }
)


def classifier_preset(name: str) -> ClassifierConfig:
    """The ClassifierConfig of a named preset; an unknown name lists the valid ones."""
    try:
        return CLASSIFIER_PRESETS[name]
    except KeyError:
        raise UserError(f"unknown classifier preset '{name}'; valid: {', '.join(CLASSIFIER_PRESETS)}") from None


def build_classifier(cfg: ClassifierConfig | str) -> NoisyClassifierNet:
    """A freshly initialised noise-aware classifier from a config or a preset name."""
    return NoisyClassifierNet(classifier_preset(cfg) if isinstance(cfg, str) else cfg)
