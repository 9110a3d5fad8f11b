"""`UNetConfig`: the typed, frozen description of an ADM-style U-Net (Dhariwal & Nichol 2021, App. A).

Field names follow openai/guided-diffusion's `UNetModel` arguments; the extra fields express the
DDPM layout of Ho et al. 2020 as shipped by diffusers' `UNet2DModel` (norm eps, timestep-embedding
frequencies, asymmetric downsampling padding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from difflab.configs import field
from difflab.errors import UserError


@dataclass(frozen=True)
class UNetConfig:
    """An ADM U-Net: levels of ResBlocks (+ attention) going down, a middle block, mirrored levels going up."""

    image_size: int = field(64, help="height = width of the input images in pixels")
    in_channels: int = field(3, help="channels of the input x (3 for RGB)")
    out_channels: int = field(3, help="channels of the prediction before learn_sigma doubles them")
    model_channels: int = field(128, help="base width; level k has model_channels * channel_mult[k] channels")
    channel_mult: tuple[int, ...] = field((1, 2, 3, 4), help="width multiplier per level; one level per resolution, halving each time")
    num_res_blocks: int = field(2, help="ResBlocks per level on the way down (the way up has one more per level)")
    attention_resolutions: tuple[int, ...] = field((32, 16, 8), help="pixel resolutions (e.g. 32,16,8) whose levels get self-attention after each ResBlock")
    mid_attention: bool = field(True, help="self-attention between the two middle ResBlocks (ADM and DDPM: true)")
    num_heads: int = field(1, help="attention heads, used when num_head_channels is -1")
    num_head_channels: int = field(-1, help="channels per attention head (ADM: 64); -1 = use num_heads")
    num_heads_upsample: int = field(-1, help="heads in the up path when num_head_channels is -1; -1 = num_heads")
    use_new_attention_order: bool = field(False, help="split q,k,v before heads (ADM 64x64 model; diffusers' to_q/to_k/to_v layout); false = legacy heads-first split")
    dropout: float = field(0.0, help="dropout probability inside every ResBlock, before its second conv")
    resblock_updown: bool = field(False, help="down/upsample with residual blocks (BigGAN style) instead of plain conv/resample layers")
    conv_resample: bool = field(True, help="learned 3x3 convs in the plain down/upsample layers (false = avg-pool / nearest only)")
    downsample_padding: Literal[0, 1] = field(1, help="plain downsampling conv padding: 1 (ADM) or 0 = pad right/bottom by 1 first (DDPM / diffusers)")
    use_scale_shift_norm: bool = field(False, help="AdaGN: the embedding scales and shifts the second GroupNorm (ADM) instead of being added")
    num_classes: Optional[int] = field(None, help="number of class labels for a class-conditional model; null = unconditional")
    class_dropout_null: bool = field(False, help="allocate one extra 'null' label embedding (index num_classes) for classifier-free guidance")
    learn_sigma: bool = field(False, help="also output the reverse-variance interpolation v (Nichol & Dhariwal 2021): doubles the output channels")
    norm_groups: int = field(32, help="GroupNorm groups in every normalisation layer")
    norm_eps: float = field(1e-5, help="GroupNorm epsilon (ADM 1e-5, DDPM / diffusers 1e-6)")
    time_embed_dim: Optional[int] = field(None, help="width of the timestep (+ label) embedding; null = 4 * model_channels")
    time_embed_flip_sin_to_cos: bool = field(True, help="sinusoidal timestep features as [cos, sin] (ADM) instead of [sin, cos] (DDPM)")
    time_embed_freq_shift: int = field(0, help="frequencies exp(-ln(10000) k / (half - shift)): 0 for ADM, 1 for DDPM / diffusers")
    timestep_scale: float = field(1.0, help="the time input is t * timestep_scale before the sinusoidal features: 1000 / process.T reproduces improved-diffusion's --rescale_timesteps True (Nichol & Dhariwal 2021; 0.25 at T = 4000); 1 = the step index")
    use_checkpoint: bool = field(False, help="gradient checkpointing per block: less activation memory, about 30% more compute")

    def __post_init__(self) -> None:
        for name in ("image_size", "in_channels", "out_channels", "model_channels", "num_res_blocks", "norm_groups"):
            if getattr(self, name) < 1:
                raise UserError(f"model.{name} must be >= 1; got {getattr(self, name)}")
        if not self.channel_mult or min(self.channel_mult) < 1:
            raise UserError(f"model.channel_mult must be a non-empty list of positive integers; got {list(self.channel_mult)}")
        factor = 2 ** (len(self.channel_mult) - 1)
        if self.image_size % factor:
            raise UserError(
                f"model.image_size {self.image_size} must be divisible by 2^(levels-1) = {factor} for channel_mult {list(self.channel_mult)}; "
                "change image_size or use fewer levels"
            )
        for ch in sorted(set(self.level_channels)):
            if ch % self.norm_groups:
                raise UserError(
                    f"model channels {ch} (model_channels * channel_mult) are not divisible by norm_groups {self.norm_groups}; "
                    "change model_channels, channel_mult or norm_groups"
                )
        valid = self.resolutions
        for res in self.attention_resolutions:
            if res not in valid:
                raise UserError(
                    f"model.attention_resolutions has {res}, which is not a level resolution; valid: {', '.join(map(str, valid))}"
                )
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"model.dropout must be in [0, 1); got {self.dropout}")
        if self.norm_eps <= 0:
            raise UserError(f"model.norm_eps must be > 0; got {self.norm_eps}")
        if self.num_classes is not None and self.num_classes < 1:
            raise UserError(f"model.num_classes must be >= 1 or null for an unconditional model; got {self.num_classes}")
        if self.class_dropout_null and self.num_classes is None:
            raise UserError("model.class_dropout_null needs a class-conditional model; set model.num_classes")
        if self.time_embed_dim is not None and self.time_embed_dim < 1:
            raise UserError(f"model.time_embed_dim must be >= 1 or null (= 4 * model_channels); got {self.time_embed_dim}")
        if not self.timestep_scale > 0:
            raise UserError(f"model.timestep_scale must be > 0 (1000 / process.T for improved-diffusion's rescaled timesteps, else 1); got {self.timestep_scale}")
        if self.time_embed_freq_shift >= self.model_channels // 2:
            raise UserError(f"model.time_embed_freq_shift {self.time_embed_freq_shift} must be < model_channels / 2; use 0 or 1")
        self._check_heads()

    def _check_heads(self) -> None:
        """Every attention layer must split its channels evenly into heads."""
        if self.num_head_channels == -1:
            for name in ("num_heads", "num_heads_upsample"):
                value = getattr(self, name)
                if value < 1 and not (name == "num_heads_upsample" and value == -1):
                    raise UserError(f"model.{name} must be >= 1{' or -1 (= num_heads)' if name == 'num_heads_upsample' else ''}; got {value}")
        elif self.num_head_channels < 1:
            raise UserError(f"model.num_head_channels must be >= 1 or -1 (= use num_heads); got {self.num_head_channels}")
        for ch, upsample in self.attention_channels():
            heads = self.heads_for(ch, upsample)
            divisor = self.num_head_channels if self.num_head_channels != -1 else heads
            if heads < 1 or ch % divisor:
                what = f"num_head_channels {self.num_head_channels}" if self.num_head_channels != -1 else f"{heads} heads"
                raise UserError(
                    f"model attention at {ch} channels cannot be split into {what}; "
                    "choose num_head_channels / num_heads that divide every attended width"
                )

    # Derived quantities (pure functions of the fields).

    @property
    def level_channels(self) -> tuple[int, ...]:
        """Channels of each level, top (full resolution) to bottom."""
        return tuple(self.model_channels * m for m in self.channel_mult)

    @property
    def resolutions(self) -> tuple[int, ...]:
        """Pixel resolution of each level, top to bottom."""
        return tuple(self.image_size // 2**k for k in range(len(self.channel_mult)))

    @property
    def emb_dim(self) -> int:
        """Width of the timestep/label embedding (ADM: 4 * model_channels)."""
        return self.time_embed_dim if self.time_embed_dim is not None else 4 * self.model_channels

    @property
    def output_channels(self) -> int:
        """Channels the network returns: out_channels, doubled when learn_sigma."""
        return self.out_channels * (2 if self.learn_sigma else 1)

    @property
    def num_label_embeddings(self) -> int:
        """Rows of the label table: num_classes, plus one null label for classifier-free guidance."""
        if self.num_classes is None:
            return 0
        return self.num_classes + (1 if self.class_dropout_null else 0)

    def heads_for(self, channels: int, upsample: bool = False) -> int:
        """Number of heads of an attention layer over `channels` (down path / middle, or up path)."""
        if self.num_head_channels != -1:
            return channels // self.num_head_channels
        if upsample and self.num_heads_upsample != -1:
            return self.num_heads_upsample
        return self.num_heads

    def attention_channels(self) -> list[tuple[int, bool]]:
        """(channels, is_up_path) of every distinct attention layer width."""
        out = set()
        for res, ch in zip(self.resolutions, self.level_channels):
            if res in self.attention_resolutions:
                out.add((ch, False))
                out.add((ch, True))
        if self.mid_attention:
            out.add((self.level_channels[-1], False))
        return sorted(out)
