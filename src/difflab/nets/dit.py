"""The diffusion transformer, DiT (Peebles & Xie 2023, Sec. 3 and Fig. 3), with adaLN-Zero blocks.

Module names are those of facebookresearch/DiT's `DiT` (x_embedder.proj, t_embedder.mlp, y_embedder.embedding_table,
pos_embed, blocks.N.{attn.qkv, attn.proj, mlp.fc1, mlp.fc2, adaLN_modulation}, final_layer), so a released state dict
loads as it is (difflab.interop.dit). Like every difflab network it knows nothing about diffusion: it maps (x, t, y)
to a tensor with `cfg.output_channels` channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difflab.nets.dit_config import DiTConfig, dit_preset
from difflab.nets.embeddings import labels_or_null, sincos_2d_position_embedding, timestep_embedding


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN: x (B, T, d) * (1 + scale) + shift, with scale and shift (B, d) regressed from the conditioning c."""
    return x * (1 + scale[:, None]) + shift[:, None]


class PatchEmbed(nn.Module):
    """Patchify (Sec. 3.1): a p x p conv with stride p maps (B, C, I, I) to (B, T, d), T = (I / p)^2, in raster order."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.proj = nn.Conv2d(cfg.in_channels, cfg.hidden_size, cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class TimestepEmbedder(nn.Module):
    """t -> MLP(sinusoid(t)) (B, d): 256 features [cos, sin] whatever d (DiT's TimestepEmbedder, from GLIDE)."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden_size
        self.mlp = nn.Sequential(nn.Linear(cfg.frequency_embedding_size, d), nn.SiLU(), nn.Linear(d, d))

    def forward(self, t: Tensor) -> Tensor:
        features = timestep_embedding(t, self.cfg.frequency_embedding_size, flip_sin_to_cos=True, freq_shift=self.cfg.time_embed_freq_shift)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """y -> a learned (B, d) vector; row num_classes is the null label of classifier-free guidance when allocated.

    The label dropout itself is drawn by the training task (DiffusionTask, from the step's generator), not here,
    so that resumed and multi-process runs see the flips one process would."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.embedding_table = nn.Embedding(cfg.num_label_embeddings, cfg.hidden_size)

    def forward(self, y: Tensor) -> Tensor:
        return self.embedding_table(y)


class Attention(nn.Module):
    """Multi-head self-attention over the tokens: one qkv projection (q, k, v each head-major), then proj."""

    def __init__(self, d: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)  # 3 x (B, heads, T, d/heads)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """fc1 -> GELU (tanh approximation, as DiT) -> fc2."""

    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(d, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, d)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DiTBlock(nn.Module):
    """adaLN-Zero block (Sec. 3.2): c regresses shift, scale and a gate alpha for attention and for the MLP.

    The regression is zero-initialised, so every gate alpha starts at 0 and each block starts as the identity."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        d = cfg.hidden_size
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=cfg.norm_eps)
        self.attn = Attention(d, cfg.num_heads)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=cfg.norm_eps)
        self.mlp = Mlp(d, cfg.mlp_hidden)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)  # 6 x (B, d)
        x = x + gate_msa[:, None] * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        return x + gate_mlp[:, None] * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class FinalLayer(nn.Module):
    """adaLN (shift, scale from c) then a linear map of each token to its p x p x output_channels values."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        d = cfg.hidden_size
        self.norm_final = nn.LayerNorm(d, elementwise_affine=False, eps=cfg.norm_eps)
        self.linear = nn.Linear(d, cfg.patch_size**2 * cfg.output_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DiT(nn.Module):
    """Diffusion transformer (Peebles & Xie 2023): forward(x (B,C,I,I), t (B,), y (B,) or None) -> (B, output_channels, I, I).

    With learn_sigma the channels are [eps, v] (v: improved DDPM's variance interpolation), as in ADM.
    """

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        self.x_embedder = PatchEmbed(cfg)
        self.t_embedder = TimestepEmbedder(cfg)
        if cfg.num_classes is not None:
            self.y_embedder = LabelEmbedder(cfg)
        # A fixed table, yet a Parameter (never trained) as in the reference: released state dicts hold it and the
        # released parameter counts include it.
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_tokens, cfg.hidden_size), requires_grad=False)
        self.blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.depth))
        self.final_layer = FinalLayer(cfg)
        self.initialize_weights()

    @torch.no_grad()
    def initialize_weights(self) -> None:
        """DiT's initialisation: Xavier-uniform linears (patchify too), N(0, 0.02) embeddings, adaLN-Zero and final layer zero."""
        if self.pos_embed.is_meta:  # shapes only (parameter counts): nothing to fill
            return
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        self.pos_embed.copy_(sincos_2d_position_embedding(self.cfg.hidden_size, self.cfg.grid)[None])
        w = self.x_embedder.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))  # like a Linear over the flattened patch
        nn.init.zeros_(self.x_embedder.proj.bias)
        if self.cfg.num_classes is not None:
            nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for m in (*(b.adaLN_modulation[-1] for b in self.blocks), self.final_layer.adaLN_modulation[-1], self.final_layer.linear):
            nn.init.zeros_(m.weight)  # adaLN-Zero: each block starts as the identity, the output as 0
            nn.init.zeros_(m.bias)

    def condition(self, t: Tensor, y: Tensor | None, batch: int) -> Tensor:
        """c = t-embedding + label embedding (B, d); y = None (or num_classes) is the null label when there is one."""
        cfg = self.cfg
        t = torch.as_tensor(t, device=self.pos_embed.device)
        if t.ndim == 0:
            t = t.expand(batch)
        c = self.t_embedder(t)
        y = labels_or_null(y, cfg.num_classes, cfg.class_dropout_null, batch, c.device, "DiT")
        return c if y is None else c + self.y_embedder(y)

    def unpatchify(self, x: Tensor) -> Tensor:
        """(B, T, p*p*C) -> (B, C, I, I): token (row, col) fills pixels [row p, (row+1) p) x [col p, (col+1) p)."""
        b, g, p, c = x.shape[0], self.cfg.grid, self.cfg.patch_size, self.cfg.output_channels
        x = x.reshape(b, g, g, p, p, c)  # (B, row, col, i, j, C)
        return x.permute(0, 5, 1, 3, 2, 4).reshape(b, c, g * p, g * p)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        c = self.condition(t, y, x.shape[0])  # (B, d)
        h = self.x_embedder(x) + self.pos_embed  # (B, T, d)
        for block in self.blocks:
            h = block(h, c)
        return self.unpatchify(self.final_layer(h, c))  # (B, output_channels, I, I)


def build_dit(cfg: DiTConfig | str) -> DiT:
    """A freshly initialised DiT from a config or a preset name (use `with torch.device(...)` to place it)."""
    return DiT(dit_preset(cfg) if isinstance(cfg, str) else cfg)


def summarize_dit(cfg: DiTConfig | str) -> str:
    """A readable architecture summary (`difflab model dit-xl-2`): tokens, width, blocks, heads; then the parameter count."""
    name = cfg if isinstance(cfg, str) else None
    cfg = dit_preset(cfg) if isinstance(cfg, str) else cfg
    cond = f"{cfg.num_classes} classes" + (" + null label" if cfg.class_dropout_null else "") if cfg.num_classes else "unconditional"
    with torch.device("meta"):  # shapes only: nothing is allocated, even for DiT-XL/2
        n = sum(p.numel() for p in DiT(cfg).parameters())
    s = cfg.image_size
    return "\n".join([
        f"DiT{' ' + repr(name) if name else ''}: {cfg.in_channels}x{s}x{s} -> {cfg.output_channels}x{s}x{s}"
        f"{' (learn_sigma: eps and v)' if cfg.learn_sigma else ''}, {cond}",
        f"  patch {cfg.patch_size}x{cfg.patch_size}: {cfg.grid}x{cfg.grid} = {cfg.num_tokens} tokens of width {cfg.hidden_size}, "
        f"fixed 2-D sin-cos positions",
        f"  {cfg.depth} adaLN-Zero blocks: attention {cfg.num_heads}x{cfg.hidden_size // cfg.num_heads}, MLP {cfg.mlp_hidden} (GELU tanh)",
        f"  timestep features {cfg.frequency_embedding_size} (frequency shift {cfg.time_embed_freq_shift}), LayerNorm eps {cfg.norm_eps:g}",
        f"  parameters: {n:,} ({n / 1e6:.1f} M)",
    ])
