"""`DiTConfig`: the typed, frozen description of a diffusion transformer (Peebles & Xie 2023), and its released sizes.

Field names follow facebookresearch/DiT's `DiT(...)` arguments where difflab has no name of its own (`image_size`
is its `input_size`, as in every difflab network; `class_dropout_null` is its `class_dropout_prob > 0`).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping, Optional

from difflab.configs import field
from difflab.errors import UserError


@dataclass(frozen=True)
class DiTConfig:
    """A DiT: patchify, N adaLN-Zero transformer blocks conditioned on t (+ label), a final adaLN layer, unpatchify."""

    image_size: int = field(32, help="height = width of the input in pixels (latent pixels for a latent DiT: 32 for 256x256 images)")
    in_channels: int = field(4, help="channels of the input x (4 for Stable Diffusion VAE latents)")
    out_channels: int = field(4, help="channels of the prediction before learn_sigma doubles them (= in_channels, less an image condition's)")
    patch_size: int = field(2, help="p: the input is cut into (image_size / p)^2 tokens of p x p pixels (DiT-XL/2: p = 2)")
    hidden_size: int = field(1152, help="d: width of every token (XL 1152, L 1024, B 768, S 384)")
    depth: int = field(28, help="N: number of DiT blocks (XL 28, L 24, B 12, S 12)")
    num_heads: int = field(16, help="attention heads per block; must divide hidden_size")
    mlp_ratio: float = field(4.0, help="width of each block's MLP, as a multiple of hidden_size")
    num_classes: Optional[int] = field(1000, help="number of class labels for a class-conditional model; null = unconditional")
    class_dropout_null: bool = field(True, help="allocate one extra 'null' label embedding (index num_classes) for classifier-free guidance")
    learn_sigma: bool = field(True, help="also output the reverse-variance interpolation v (improved DDPM; DiT: true): doubles the output channels")
    frequency_embedding_size: int = field(256, help="sinusoidal timestep features fed to the timestep MLP (DiT: 256, whatever hidden_size)")
    time_embed_freq_shift: int = field(0, help="timestep frequencies exp(-ln(10000) k / (half - shift)): 0 for DiT, 1 for diffusers' DiTTransformer2DModel port")
    norm_eps: float = field(1e-6, help="LayerNorm epsilon of every block and of the final layer (DiT: 1e-6)")

    def __post_init__(self) -> None:
        for name in ("image_size", "in_channels", "out_channels", "patch_size", "hidden_size", "depth", "num_heads", "frequency_embedding_size"):
            if getattr(self, name) < 1:
                raise UserError(f"model.{name} must be >= 1; got {getattr(self, name)}")
        if self.image_size % self.patch_size:
            raise UserError(f"model.image_size {self.image_size} is not divisible by model.patch_size {self.patch_size}; "
                            f"choose a patch_size that divides it (e.g. {max(d for d in (1, 2, 4, 8) if self.image_size % d == 0)})")
        if self.hidden_size % self.num_heads:
            raise UserError(f"model.hidden_size {self.hidden_size} is not divisible by model.num_heads {self.num_heads}; change one of them")
        if self.hidden_size % 4:
            raise UserError(f"model.hidden_size {self.hidden_size} must be divisible by 4 (the 2-D sin-cos position embedding); change it")
        if not self.mlp_ratio > 0:
            raise UserError(f"model.mlp_ratio must be > 0; got {self.mlp_ratio}")
        if not self.norm_eps > 0:
            raise UserError(f"model.norm_eps must be > 0; got {self.norm_eps}")
        if self.num_classes is not None and self.num_classes < 1:
            raise UserError(f"model.num_classes must be >= 1 or null for an unconditional model; got {self.num_classes}")
        if self.class_dropout_null and self.num_classes is None:
            raise UserError("model.class_dropout_null needs a class-conditional model; set model.num_classes (or class_dropout_null=false)")
        if not 0 <= self.time_embed_freq_shift < self.frequency_embedding_size // 2:
            raise UserError(f"model.time_embed_freq_shift must be in 0..{self.frequency_embedding_size // 2 - 1}: 0 for DiT, 1 for diffusers' port; "
                            f"got {self.time_embed_freq_shift}")

    @property
    def grid(self) -> int:
        """Tokens per side: image_size / p."""
        return self.image_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        """T = (image_size / p)^2, the sequence length."""
        return self.grid**2

    @property
    def output_channels(self) -> int:
        """Channels the network returns: out_channels, doubled when learn_sigma."""
        return self.out_channels * (2 if self.learn_sigma else 1)

    @property
    def mlp_hidden(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)

    @property
    def num_label_embeddings(self) -> int:
        """Rows of the label table: num_classes, plus one null label for classifier-free guidance."""
        if self.num_classes is None:
            return 0
        return self.num_classes + (1 if self.class_dropout_null else 0)


def _released(depth: int, hidden_size: int, patch_size: int, num_heads: int, image_size: int = 32) -> DiTConfig:
    """A facebookresearch/DiT release: 4-channel VAE latents, 1,000 ImageNet classes + the null label, learned sigma."""
    return DiTConfig(image_size=image_size, depth=depth, hidden_size=hidden_size, patch_size=patch_size, num_heads=num_heads)


# Table 1 of Peebles & Xie 2023 (models.py's DiT_XL_2 ... DiT_S_2); the parameter counts in the comments are those of
# the released code, checked on the meta device by tests/test_dit.py.
DIT_PRESETS: Mapping[str, DiTConfig] = MappingProxyType({
    "dit-xl-2": _released(28, 1152, 2, 16),  # 675,129,632 (DiT-XL-2-256x256.pt)
    "dit-xl-2-512": _released(28, 1152, 2, 16, image_size=64),  # 676,014,368 (DiT-XL-2-512x512.pt: 64x64 latents)
    "dit-l-2": _released(24, 1024, 2, 16),  # 458,102,816
    "dit-b-2": _released(12, 768, 2, 12),  # 130,512,416
    "dit-b-4": _released(12, 768, 4, 12),  # 130,475,648
    "dit-s-2": _released(12, 384, 2, 6),  # 32,963,360
})


def dit_preset(name: str) -> DiTConfig:
    """The DiTConfig of a named preset; an unknown name lists the valid ones."""
    try:
        return DIT_PRESETS[name]
    except KeyError:
        raise UserError(f"unknown DiT preset '{name}'; valid: {', '.join(DIT_PRESETS)}") from None
