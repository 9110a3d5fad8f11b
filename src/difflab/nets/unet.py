"""The ADM U-Net (Dhariwal & Nichol 2021, Sec. 3 / App. A), which also expresses DDPM's (Ho et al. 2020, App. B).

Layout and names follow openai/guided-diffusion's `UNetModel`: time_embed, label_emb,
input_blocks, middle_block, output_blocks, out. The network knows nothing about diffusion: it maps
(x, t, y) to a tensor with `cfg.output_channels` channels.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from difflab.nets.attention import AttentionBlock
from difflab.nets.blocks import Downsample, GroupNorm32, ResBlock, TimestepEmbedSequential, Upsample, zero_module
from difflab.nets.config import UNetConfig
from difflab.nets.embeddings import labels_or_null, timestep_embedding


class UNet(nn.Module):
    """eps/x0/v-prediction U-Net: forward(x (B,C,H,W), t (B,), y (B,) or None) -> (B, output_channels, H, W)."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        emb_dim = cfg.emb_dim
        self.time_embed = nn.Sequential(
            nn.Linear(cfg.model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        if cfg.num_classes is not None:
            self.label_emb = nn.Embedding(cfg.num_label_embeddings, emb_dim)

        ch = input_ch = cfg.level_channels[0]
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(cfg.in_channels, ch, 3, padding=1))])
        skip_chans = [ch]  # channels of every skip tensor saved on the way down
        last = len(cfg.channel_mult) - 1
        for level, (res, level_ch) in enumerate(zip(cfg.resolutions, cfg.level_channels)):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [self._resblock(ch, level_ch)]
                ch = level_ch
                if res in cfg.attention_resolutions:
                    layers.append(self._attention(ch, upsample=False))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_chans.append(ch)
            if level != last:
                down = (
                    self._resblock(ch, ch, down=True)
                    if cfg.resblock_updown
                    else Downsample(ch, cfg.conv_resample, padding=cfg.downsample_padding)
                )
                self.input_blocks.append(TimestepEmbedSequential(down))
                skip_chans.append(ch)

        middle: list[nn.Module] = [self._resblock(ch, ch)]
        if cfg.mid_attention:
            middle.append(self._attention(ch, upsample=False))
        middle.append(self._resblock(ch, ch))
        self.middle_block = TimestepEmbedSequential(*middle)

        self.output_blocks = nn.ModuleList()
        for level in reversed(range(len(cfg.channel_mult))):
            res, level_ch = cfg.resolutions[level], cfg.level_channels[level]
            for i in range(cfg.num_res_blocks + 1):
                layers = [self._resblock(ch + skip_chans.pop(), level_ch)]
                ch = level_ch
                if res in cfg.attention_resolutions:
                    layers.append(self._attention(ch, upsample=True))
                if level and i == cfg.num_res_blocks:
                    layers.append(
                        self._resblock(ch, ch, up=True) if cfg.resblock_updown else Upsample(ch, cfg.conv_resample)
                    )
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(
            GroupNorm32(cfg.norm_groups, ch, eps=cfg.norm_eps),
            nn.SiLU(),
            zero_module(nn.Conv2d(input_ch, cfg.output_channels, 3, padding=1)),
        )

    def _resblock(self, ch: int, out_ch: int, *, up: bool = False, down: bool = False) -> ResBlock:
        cfg = self.cfg
        return ResBlock(
            ch,
            cfg.emb_dim,
            cfg.dropout,
            out_ch,
            use_scale_shift_norm=cfg.use_scale_shift_norm,
            norm_groups=cfg.norm_groups,
            norm_eps=cfg.norm_eps,
            up=up,
            down=down,
            use_checkpoint=cfg.use_checkpoint,
        )

    def _attention(self, ch: int, *, upsample: bool) -> AttentionBlock:
        cfg = self.cfg
        return AttentionBlock(
            ch,
            cfg.heads_for(ch, upsample),
            norm_groups=cfg.norm_groups,
            norm_eps=cfg.norm_eps,
            use_new_attention_order=cfg.use_new_attention_order,
            use_checkpoint=cfg.use_checkpoint,
        )

    def embed(self, t: Tensor, y: Tensor | None, batch: int) -> Tensor:
        """The (B, emb_dim) conditioning vector: MLP(sinusoid(t)) + label embedding (ADM: added, then AdaGN everywhere)."""
        cfg = self.cfg
        t = torch.as_tensor(t, device=self.time_embed[0].weight.device)
        if t.ndim == 0:
            t = t.expand(batch)
        if cfg.timestep_scale != 1.0:
            # improved-diffusion's rescale_timesteps: the network saw float32 t * 1000 / T for the original step t, also
            # after respacing (its _WrappedModel maps to the original step first); callers here always pass original steps.
            t = t.float() * cfg.timestep_scale
        features = timestep_embedding(
            t, cfg.model_channels, flip_sin_to_cos=cfg.time_embed_flip_sin_to_cos, freq_shift=cfg.time_embed_freq_shift
        )
        emb = self.time_embed(features.to(self.time_embed[0].weight.dtype))
        y = labels_or_null(y, cfg.num_classes, cfg.class_dropout_null, batch, emb.device, "UNet")
        return emb if y is None else emb + self.label_emb(y)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """x (B, in_channels, H, W), t (B,) int or float timesteps, y (B,) long labels -> (B, output_channels, H, W).

        With class_dropout_null, y = num_classes (or y=None) selects the null label for classifier-free guidance.
        """
        emb = self.embed(t, y, x.shape[0])
        hs = []
        h = x
        for block in self.input_blocks:
            h = block(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)
