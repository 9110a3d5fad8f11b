"""difflab's DiT against diffusers' DiTTransformer2DModel (a test-only reference): the same random weights mapped
across give the same output, and the one convention where diffusers' port departs from DiT (the timestep
frequencies) is a config switch."""

import dataclasses

import pytest
import torch

from difflab.nets import DiT, DiTConfig

pytestmark = pytest.mark.usefixtures("one_thread")
diffusers = pytest.importorskip("diffusers")


def to_diffusers(state: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """DiT's (and difflab's) names -> diffusers' DiTTransformer2DModel names. diffusers gives every block its own copy
    of the timestep and label embedders (AdaLayerNormZero.emb); the final layer reads block 0's."""
    out = {"pos_embed.proj.weight": state["x_embedder.proj.weight"], "pos_embed.proj.bias": state["x_embedder.proj.bias"],
           "proj_out_1.weight": state["final_layer.adaLN_modulation.1.weight"], "proj_out_1.bias": state["final_layer.adaLN_modulation.1.bias"],
           "proj_out_2.weight": state["final_layer.linear.weight"], "proj_out_2.bias": state["final_layer.linear.bias"]}
    for i in range(depth):
        src, dst = f"blocks.{i}.", f"transformer_blocks.{i}."
        emb = dst + "norm1.emb."
        for n in ("weight", "bias"):
            out[emb + f"timestep_embedder.linear_1.{n}"] = state[f"t_embedder.mlp.0.{n}"]
            out[emb + f"timestep_embedder.linear_2.{n}"] = state[f"t_embedder.mlp.2.{n}"]
            out[dst + f"norm1.linear.{n}"] = state[src + f"adaLN_modulation.1.{n}"]
            for part, q in zip(("to_q", "to_k", "to_v"), state[src + f"attn.qkv.{n}"].chunk(3)):  # qkv rows are [q; k; v]
                out[dst + f"attn1.{part}.{n}"] = q
            out[dst + f"attn1.to_out.0.{n}"] = state[src + f"attn.proj.{n}"]
            out[dst + f"ff.net.0.proj.{n}"] = state[src + f"mlp.fc1.{n}"]
            out[dst + f"ff.net.2.{n}"] = state[src + f"mlp.fc2.{n}"]
        out[emb + "class_embedder.embedding_table.weight"] = state["y_embedder.embedding_table.weight"]
    return out


CFG = DiTConfig(image_size=8, in_channels=4, out_channels=4, patch_size=2, hidden_size=64, depth=2, num_heads=4, num_classes=10,
                frequency_embedding_size=256)


def _pair(cfg: DiTConfig):
    torch.manual_seed(0)
    ours = DiT(cfg).eval()
    with torch.no_grad():  # random everywhere: DiT's own init zeroes the adaLN and output layers, which would hide them
        for name, p in ours.named_parameters():
            if name != "pos_embed":
                p.normal_(0, 0.2)
    ref = diffusers.DiTTransformer2DModel(
        num_attention_heads=cfg.num_heads, attention_head_dim=cfg.hidden_size // cfg.num_heads, in_channels=cfg.in_channels,
        out_channels=cfg.output_channels, num_layers=cfg.depth, sample_size=cfg.image_size, patch_size=cfg.patch_size,
        num_embeds_ada_norm=cfg.num_classes, norm_eps=cfg.norm_eps,  # DiT's LayerNorms all have eps 1e-6 (diffusers' default 1e-5)
    ).eval()
    # diffusers' LabelEmbedding allocates the null row only with dropout_prob > 0, as DiT does: the table must match ours.
    missing, unexpected = ref.load_state_dict(to_diffusers(ours.state_dict(), cfg.depth), strict=False)
    assert not unexpected and not missing, (missing, unexpected)
    return ours, ref


def _batch(cfg):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, cfg.in_channels, cfg.image_size, cfg.image_size, generator=g)
    t = torch.tensor([0, 1, 17, 250, 999, 500])
    y = torch.tensor([0, 3, 9, 10, 5, 10])  # 10 = the null label of classifier-free guidance
    return x, t, y


def test_dit_matches_diffusers_dit_transformer_on_a_labelled_batch():
    cfg = dataclasses.replace(CFG, time_embed_freq_shift=1)  # diffusers' CombinedTimestepLabelEmbeddings: shift 1
    ours, ref = _pair(cfg)
    x, t, y = _batch(cfg)
    with torch.no_grad():
        a, b = ours(x, t, y), ref(x, timestep=t, class_labels=y).sample
    assert a.shape == b.shape == (6, 8, 8, 8)
    assert b.abs().mean() > 0.1  # a real signal, not two zero outputs
    assert (a - b).abs().max() < 1e-4


def test_dit_timestep_frequencies_are_not_diffusers_by_default():
    """DiT divides by half = 128 (models.py TimestepEmbedder); diffusers' port by half - 1: the same weights then differ."""
    ours, ref = _pair(CFG)
    assert CFG.time_embed_freq_shift == 0
    x, t, y = _batch(CFG)
    with torch.no_grad():
        diff = (ours(x, t, y) - ref(x, timestep=t, class_labels=y).sample).abs().max()
    assert diff > 1e-3
