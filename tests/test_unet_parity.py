"""Parity of difflab's UNet with diffusers' UNet2DModel (DDPM CIFAR-10 layout) after weight conversion.

diffusers is a test-only dependency; the reference is built from its config (nothing is downloaded)
and every parameter, the zero-initialised ones included, is overwritten with seeded noise.
"""

from __future__ import annotations

import copy
import dataclasses
import logging

import pytest
import torch

from difflab.nets import UNet, count_parameters, unet_preset
from difflab.interop.diffusers import DDPM_CIFAR10_DIFFUSERS, unet_state_dict_from_diffusers

TOL64 = dict(rtol=1e-9, atol=1e-9)


def _diffusers_unet(**overrides):
    """A diffusers UNet2DModel of the DDPM CIFAR-10 layout, allocated but not initialised (meta, then empty)."""
    diffusers = pytest.importorskip("diffusers")
    logging.getLogger("diffusers").setLevel(logging.ERROR)  # attention_head_dim=None logs a warning
    with torch.device("meta"):
        model = diffusers.UNet2DModel(**{**DDPM_CIFAR10_DIFFUSERS, **overrides})
    return model.to_empty(device="cpu")


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Overwrite every parameter (zero-inited output convs included) with seeded noise of a sensible scale."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float64)
            if p.ndim > 1:
                p.copy_(noise / p[0].numel() ** 0.5)  # ~ unit-variance activations
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * noise)
            else:
                p.copy_(0.2 * noise)


def _reference(seed: int = 0, **overrides):
    reference = _diffusers_unet(**overrides).double().eval()
    _randomize(reference, seed)
    return reference


def _converted(reference, **cfg_overrides) -> UNet:
    cfg = dataclasses.replace(unet_preset("ddpm-cifar10"), **cfg_overrides)
    with torch.device("meta"):
        ours = UNet(cfg)
    ours = ours.to_empty(device="cpu").double().eval()
    ours.load_state_dict(unet_state_dict_from_diffusers(reference.state_dict(), cfg), strict=True)
    return ours


# Batch 2 at 32x32; integer timesteps at both ends of the chain and continuous ones.
X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
TIMESTEPS = [torch.tensor([0, 999]), torch.tensor([17, 503]), torch.tensor([250.5, 731.25])]


@pytest.fixture(scope="module")
def single_head():
    """The DDPM model (one attention head; google/ddpm-cifar10-32 has attention_head_dim null) and its outputs."""
    reference = _reference(attention_head_dim=None)
    with torch.no_grad():
        expected = [reference(X, t).sample for t in TIMESTEPS]
    return reference, _converted(reference), expected


def test_parameter_count_matches_diffusers():
    assert count_parameters(_diffusers_unet(attention_head_dim=None)) == count_parameters("ddpm-cifar10") == 35_746_307


def test_single_head_outputs_match(single_head):
    _, ours, expected = single_head
    with torch.no_grad():
        for t, want in zip(TIMESTEPS, expected):
            assert want.abs().mean() > 0.1  # not a comparison between zeros
            torch.testing.assert_close(ours(X, t), want, **TOL64)


def test_multi_head_outputs_match_in_both_attention_orders():
    """diffusers splits q, k, v then heads (ADM's new order); the legacy order needs q,k,v interleaved per head."""
    reference = _reference(seed=1, attention_head_dim=64)
    new_order = _converted(reference, num_head_channels=64, use_new_attention_order=True)
    legacy = _converted(reference, num_head_channels=64, use_new_attention_order=False)
    assert new_order.input_blocks[4][1].num_heads == 4
    t = TIMESTEPS[1]
    with torch.no_grad():
        want = reference(X, t).sample
        torch.testing.assert_close(new_order(X, t), want, **TOL64)
        torch.testing.assert_close(legacy(X, t), want, **TOL64)
        # Loading the new-order weights into a legacy-order model is wrong and must show.
        legacy.load_state_dict(new_order.state_dict())
        assert (legacy(X, t) - want).abs().max() > 1e-3


def test_a_wrong_mapping_is_detected(single_head):
    """The comparison is sensitive: swapping q and k in one attention layer breaks it."""
    _, ours, expected = single_head
    ours = copy.deepcopy(ours)
    with torch.no_grad():
        qkv = ours.input_blocks[4][1].qkv.weight  # level 1 (16x16), first attention
        c = qkv.shape[0] // 3
        qkv.copy_(torch.cat([qkv[c : 2 * c], qkv[:c], qkv[2 * c :]]))
        assert (ours(X, TIMESTEPS[0]) - expected[0]).abs().max() > 1e-3


def test_float32_tolerance(single_head):
    """In float32 the two implementations agree to ~1e-5."""
    reference, ours, _ = single_head
    reference, ours = copy.deepcopy(reference).float(), copy.deepcopy(ours).float()
    t = TIMESTEPS[2]
    with torch.no_grad():
        torch.testing.assert_close(ours(X.float(), t), reference(X.float(), t).sample, rtol=1e-4, atol=1e-5)


def test_converter_rejects_a_mismatched_layout(single_head):
    from difflab.errors import UserError

    reference, _, _ = single_head
    cfg = dataclasses.replace(unet_preset("ddpm-cifar10"), attention_resolutions=(8,))
    with pytest.raises(UserError):
        unet_state_dict_from_diffusers(reference.state_dict(), cfg)
