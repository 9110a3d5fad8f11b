"""The patch discriminator latent diffusion's autoencoders are trained against (Rombach et al. 2022, App. G; the
pix2pix PatchGAN of Isola et al. 2017 as in taming-transformers' NLayerDiscriminator): one logit per image patch.

    conv4x4 s2 (C -> d), LeakyReLU 0.2; (layers - 1) x [conv4x4 s2, BatchNorm, LeakyReLU] doubling the width (at most 8 d);
    conv4x4 s1, BatchNorm, LeakyReLU; conv4x4 s1 (-> 1)
"""

from __future__ import annotations

from torch import Tensor, nn

from difflab.nets.norm import BatchNorm2d


class PatchDiscriminator(nn.Module):
    """x (B, C, H, W) -> patch logits (B, 1, h, w): real (> 0) or reconstructed (< 0), per receptive field."""

    def __init__(self, in_channels: int, channels: int = 64, layers: int = 3):
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        width = channels
        for i in range(1, layers + 1):
            nxt = channels * min(2**i, 8)
            stride = 2 if i < layers else 1  # the last hidden layer keeps the resolution (pix2pix)
            mods += [nn.Conv2d(width, nxt, 4, stride=stride, padding=1, bias=False), BatchNorm2d(nxt), nn.LeakyReLU(0.2)]
            width = nxt
        mods.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
        self.main = nn.Sequential(*mods)

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x)
