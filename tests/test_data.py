"""Tests of difflab.data: digits, image folders, .npz files, grids, and one test per bad-input case."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from difflab.configs import from_dict
from difflab.data import (
    DIGITS_NUM_TEST,
    DIGITS_NUM_TRAIN,
    DataConfig,
    digits_split_indices,
    load_dataset,
    load_digits_split,
    parse_data_spec,
    save_image_grid,
    to_uint8_nhwc,
    write_npz_samples,
)
from difflab.errors import UserError

# sha256 of the int64 test indices: the digits split must never change.
DIGITS_TEST_SHA256 = "6fcdec8fae694e78d760555763d22267f250b3b05d61c405e8338f089c302f53"


def _save(path: Path, arr: np.ndarray, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt)
    return path


def _rgb(seed: int, size: tuple[int, int] = (8, 8)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(*size, 3), dtype=np.uint8)


def _gray(seed: int, size: tuple[int, int] = (8, 8)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=size, dtype=np.uint8)


@pytest.fixture
def class_folder(tmp_path: Path) -> Path:
    root = tmp_path / "pets"
    for i in range(3):
        _save(root / "dog" / f"d{i}.png", _rgb(i))
    for i in range(2):
        _save(root / "cat" / f"c{i}.png", _rgb(10 + i))
    (root / "README.txt").write_text("not an image")
    (root / "cat" / "notes.csv").write_text("a,b")
    _save(root / ".hidden" / "x.png", _rgb(99))
    return root


# ---- digits -------------------------------------------------------------------------------------


def test_digits_shapes_range_labels():
    data = load_dataset(DataConfig())
    assert data.x.shape == (DIGITS_NUM_TRAIN, 1, 8, 8) and data.x.dtype == torch.float32
    assert data.x.min() == -1.0 and data.x.max() == 1.0
    assert data.y.dtype == torch.int64 and set(data.y.tolist()) == set(range(10))
    assert data.num_classes == 10 and data.class_names == tuple("0123456789")
    assert data.channels == 1 and data.image_size == 8 and len(data) == 1500
    # 0..16 maps linearly to [-1, 1]: x * 8 + 8 is an integer 0..16.
    v = data.x * 8 + 8
    assert torch.equal(v, v.round())


def test_digits_split_fixed_disjoint_deterministic():
    tr, te, al = (digits_split_indices(s) for s in ("train", "test", "all"))
    assert len(tr) == DIGITS_NUM_TRAIN == 1500 and len(te) == DIGITS_NUM_TEST == 297 and len(al) == 1797
    assert not set(tr) & set(te) and sorted(set(tr) | set(te)) == list(al)
    assert hashlib.sha256(te.astype(np.int64).tobytes()).hexdigest() == DIGITS_TEST_SHA256
    x1, y1 = load_digits_split("test")
    x2, y2 = load_digits_split("test")
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and x1.shape == (297, 1, 8, 8)
    d = load_dataset(DataConfig(split="test"))
    assert torch.equal(d.x, x1) and torch.equal(d.y, y1)


def test_digits_resize_and_rgb():
    d = load_dataset(DataConfig(split="test", image_size=16, channels="RGB", resize_filter="nearest"))
    assert d.x.shape == (297, 3, 16, 16)
    assert torch.equal(d.x[:, 0], d.x[:, 2])
    x, _ = load_digits_split("test")
    assert torch.allclose(d.x[:, :1, ::2, ::2], x)


# ---- image folders ------------------------------------------------------------------------------


def test_folder_class_subfolders_give_labels(class_folder: Path):
    d = load_dataset(DataConfig(name=str(class_folder), split="all"))
    assert d.class_names == ("cat", "dog") and d.num_classes == 2
    assert d.y.tolist() == [0, 0, 1, 1, 1]  # sorted class names; hidden folder and non-images ignored
    assert d.x.shape == (5, 3, 8, 8) and d.x.min() >= -1 and d.x.max() <= 1
    expected = torch.from_numpy(_rgb(10)).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.allclose(d.x[0], expected, atol=1e-6)


def test_folder_flat_is_unlabelled(tmp_path: Path):
    for i in range(4):
        _save(tmp_path / "flat" / f"{i}.png", _gray(i))
    d = load_dataset(DataConfig(name=str(tmp_path / "flat"), split="all"))
    assert d.y is None and d.num_classes is None and d.class_names is None
    assert d.x.shape == (4, 1, 8, 8)
    with pytest.raises(UserError, match="no labels"):
        load_dataset(DataConfig(name=str(tmp_path / "flat"), labels="require"))


def test_folder_split_fixed_and_disjoint(tmp_path: Path):
    for i in range(20):
        _save(tmp_path / "f" / f"{i:02d}.png", np.full((4, 4), i * 10, dtype=np.uint8))
    cfg = DataConfig(name=str(tmp_path / "f"), test_fraction=0.25, split_seed=3)
    tr, te = load_dataset(cfg), load_dataset(parse_data_spec(f"{tmp_path / 'f'}:test", base=cfg))
    assert len(tr) == 15 and len(te) == 5
    vals = lambda d: set(d.x[:, 0, 0, 0].tolist())  # noqa: E731
    assert not vals(tr) & vals(te)
    assert torch.equal(load_dataset(cfg).x, tr.x)


def test_folder_channel_conversion(tmp_path: Path):
    _save(tmp_path / "c" / "a.png", _rgb(0))
    _save(tmp_path / "c" / "b.png", _gray(1))
    gray = load_dataset(DataConfig(name=str(tmp_path / "c"), split="all", channels="L"))
    assert gray.x.shape == (2, 1, 8, 8)
    luma = np.asarray(Image.fromarray(_rgb(0)).convert("L"), dtype=np.float32) / 127.5 - 1
    assert np.allclose(gray.x[0, 0].numpy(), luma, atol=1e-6)
    rgb = load_dataset(DataConfig(name=str(tmp_path / "c"), split="all", channels="RGB"))
    assert rgb.x.shape == (2, 3, 8, 8) and torch.equal(rgb.x[1, 0], rgb.x[1, 2])


def test_folder_resize_and_crop(tmp_path: Path):
    _save(tmp_path / "r" / "a.png", _rgb(0, (8, 8)))
    _save(tmp_path / "r" / "b.png", _rgb(1, (16, 12)))  # 12 wide, 16 high
    d = load_dataset(DataConfig(name=str(tmp_path / "r"), split="all", image_size=4, resize_filter="box"))
    assert d.x.shape == (2, 3, 4, 4) and d.x.abs().max() <= 1
    c = load_dataset(DataConfig(name=str(tmp_path / "r"), split="all", image_size=12, crop="center", resize_filter="nearest"))
    expected = torch.from_numpy(_rgb(1, (16, 12))[2:14]).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.allclose(c.x[1], expected, atol=1e-6)


def test_folder_16bit_grayscale_is_scaled(tmp_path: Path):
    arr = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    _save(tmp_path / "h" / "a.png", arr)
    d = load_dataset(DataConfig(name=str(tmp_path / "h"), split="all"))
    assert torch.allclose(d.x[0, 0], torch.from_numpy(arr / 65535.0 * 2 - 1).float(), atol=1e-6)


# ---- .npz files ---------------------------------------------------------------------------------


def test_npz_round_trip(tmp_path: Path):
    x = torch.rand(6, 3, 5, 5) * 2 - 1
    u = to_uint8_nhwc(x)
    assert u.dtype == np.uint8 and u.shape == (6, 5, 5, 3)
    path = write_npz_samples(tmp_path / "s.npz", u, labels=np.array([0, 2, 1, 0, 2, 2]))
    assert [p.name for p in tmp_path.iterdir()] == ["s.npz"]  # no temp file left behind
    with np.load(path) as f:
        assert f["arr_0"].dtype == np.uint8 and f["arr_1"].tolist() == [0, 2, 1, 0, 2, 2]
    d = load_dataset(DataConfig(name=str(path), split="all"))
    assert d.x.shape == (6, 3, 5, 5) and d.num_classes == 3 and d.y.tolist() == [0, 2, 1, 0, 2, 2]
    assert (d.x - x).abs().max() <= 1 / 127.5 + 1e-6
    assert np.array_equal(to_uint8_nhwc(d.x), u)  # exact round trip from uint8


def test_npz_grayscale_and_float_ranges(tmp_path: Path):
    np.savez(tmp_path / "g.npz", np.zeros((3, 4, 4), dtype=np.uint8))
    assert load_dataset(DataConfig(name=str(tmp_path / "g.npz"), split="all")).x.shape == (3, 1, 4, 4)
    np.savez(tmp_path / "f.npz", np.linspace(-1, 1, 48, dtype=np.float32).reshape(3, 4, 4))
    assert load_dataset(DataConfig(name=str(tmp_path / "f.npz"), split="all")).x.min() == -1
    np.savez(tmp_path / "u.npz", np.linspace(0, 1, 48, dtype=np.float32).reshape(3, 4, 4))
    with pytest.raises(UserError, match="float_range"):
        load_dataset(DataConfig(name=str(tmp_path / "u.npz"), split="all"))
    d = load_dataset(DataConfig(name=str(tmp_path / "u.npz"), split="all", float_range="0..1"))
    assert d.x.min() == -1 and d.x.max() == 1


def test_save_image_grid(tmp_path: Path):
    x, _ = load_digits_split("test")
    path = save_image_grid(x[:10], tmp_path / "grid.png")
    with Image.open(path) as im:
        assert im.mode == "L" and im.size == (4 * 34 + 2, 3 * 34 + 2)  # 8 px upscaled x4, 2 px padding
    rgb = save_image_grid(torch.zeros(3, 3, 8, 8), tmp_path / "rgb.png", nrow=3, upscale=1, padding=0)
    with Image.open(rgb) as im:
        assert im.mode == "RGB" and im.size == (24, 8)


def test_parse_data_spec():
    assert parse_data_spec("digits:test") == DataConfig(split="test")
    # One meaning everywhere: a bare name is all of its images, whatever split the base config had.
    assert parse_data_spec("digits") == DataConfig(split="all")
    assert parse_data_spec("digits", DataConfig(split="train", image_size=8)) == DataConfig(split="all", image_size=8)
    assert parse_data_spec("digits:train", DataConfig(split="test")).split == "train"
    assert parse_data_spec("runs/a/samples.npz:all").name == "runs/a/samples.npz"
    with pytest.raises(UserError, match="unknown split 'val'"):
        parse_data_spec("digits:val")


# ---- bad inputs: one test per case --------------------------------------------------------------


def test_bad_corrupt_image(tmp_path: Path):
    _save(tmp_path / "c" / "good.png", _rgb(0))
    (tmp_path / "c" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    with pytest.raises(UserError, match=r"cannot read image .*bad\.png.*corrupt or truncated"):
        load_dataset(DataConfig(name=str(tmp_path / "c")))


def test_bad_truncated_png(tmp_path: Path):
    path = _save(tmp_path / "t" / "cut.png", _rgb(0, (32, 32)))
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(UserError, match=r"cut\.png.*truncated"):
        load_dataset(DataConfig(name=str(tmp_path / "t")))
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_bad_truncated_jpeg(tmp_path: Path):
    path = _save(tmp_path / "t" / "cut.jpg", _rgb(0, (32, 32)), fmt="JPEG")
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(UserError, match=r"cut\.jpg.*truncated"):
        load_dataset(DataConfig(name=str(tmp_path / "t")))
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_bad_empty_folder(tmp_path: Path):
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "notes.txt").write_text("no images here")
    with pytest.raises(UserError, match=r"image folder .*e is empty.*put images in it"):
        load_dataset(DataConfig(name=str(tmp_path / "e")))


def test_bad_missing_path(tmp_path: Path):
    with pytest.raises(UserError, match=r"data path .*nope does not exist.*'digits'"):
        load_dataset(DataConfig(name=str(tmp_path / "nope")))


def test_bad_mixed_sizes_without_image_size(tmp_path: Path):
    _save(tmp_path / "m" / "a.png", _rgb(0, (8, 8)))
    _save(tmp_path / "m" / "b.png", _rgb(1, (16, 16)))
    with pytest.raises(UserError, match=r"a\.png is 8x8, b\.png is 16x16\).*data\.image_size"):
        load_dataset(DataConfig(name=str(tmp_path / "m"), split="all"))


def test_bad_mixed_modes_with_channels_auto(tmp_path: Path):
    _save(tmp_path / "m" / "a.png", _gray(0))
    _save(tmp_path / "m" / "b.png", _rgb(1))
    with pytest.raises(UserError, match=r"mixes grayscale and colour.*a\.png is L, b\.png is RGB.*data\.channels"):
        load_dataset(DataConfig(name=str(tmp_path / "m"), split="all"))


def test_bad_images_and_class_folders_mixed(tmp_path: Path):
    _save(tmp_path / "x" / "loose.png", _rgb(0))
    _save(tmp_path / "x" / "cls" / "a.png", _rgb(1))
    with pytest.raises(UserError, match=r"both images \(loose\.png\) and class sub-folders \(cls/\)"):
        load_dataset(DataConfig(name=str(tmp_path / "x")))


def test_bad_non_square_without_image_size(tmp_path: Path):
    _save(tmp_path / "n" / "a.png", _rgb(0, (8, 12)))
    with pytest.raises(UserError, match=r"12x8 .*not square.*data\.image_size"):
        load_dataset(DataConfig(name=str(tmp_path / "n"), split="all"))


def test_bad_nan_in_npz(tmp_path: Path):
    arr = np.zeros((2, 4, 4, 3), dtype=np.float32)
    arr[1, 2, 2, 0] = np.nan
    np.savez(tmp_path / "nan.npz", arr)
    with pytest.raises(UserError, match=r"arr_0 in .*nan\.npz has 1 NaN or Inf"):
        load_dataset(DataConfig(name=str(tmp_path / "nan.npz"), split="all"))


def test_bad_npz_without_arr_0(tmp_path: Path):
    np.savez(tmp_path / "k.npz", images=np.zeros((2, 4, 4), np.uint8), labels=np.zeros(2, np.int64))
    with pytest.raises(UserError, match=r"has no 'arr_0' \(it holds 'images', 'labels'\)"):
        load_dataset(DataConfig(name=str(tmp_path / "k.npz")))


def test_bad_npz_labels_length_mismatch(tmp_path: Path):
    np.savez(tmp_path / "l.npz", np.zeros((4, 4, 4), np.uint8), np.zeros(3, np.int64))
    with pytest.raises(UserError, match=r"arr_1 .* has 3 labels for 4 images"):
        load_dataset(DataConfig(name=str(tmp_path / "l.npz")))


def test_bad_npz_negative_labels(tmp_path: Path):
    np.savez(tmp_path / "l.npz", np.zeros((2, 4, 4), np.uint8), np.array([0, -1]))
    with pytest.raises(UserError, match="negative labels"):
        load_dataset(DataConfig(name=str(tmp_path / "l.npz"), split="all"))


def test_bad_npz_wrong_ndim(tmp_path: Path):
    np.savez(tmp_path / "w.npz", np.zeros((2, 3, 4, 4), np.uint8))
    with pytest.raises(UserError, match=r"shape \(2, 3, 4, 4\) \(it looks like NCHW"):
        load_dataset(DataConfig(name=str(tmp_path / "w.npz")))


def test_bad_npz_not_a_zip(tmp_path: Path):
    (tmp_path / "junk.npz").write_bytes(b"this is not a zip archive at all")
    with pytest.raises(UserError, match=r"junk\.npz is not a valid \.npz file"):
        load_dataset(DataConfig(name=str(tmp_path / "junk.npz")))


def test_bad_file_that_is_not_npz(tmp_path: Path):
    (tmp_path / "data.csv").write_text("1,2,3")
    with pytest.raises(UserError, match=r"is a file but not an \.npz file"):
        load_dataset(DataConfig(name=str(tmp_path / "data.csv")))


def test_bad_empty_test_split(tmp_path: Path):
    np.savez(tmp_path / "s.npz", np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(UserError, match=r"the 'test' split is empty.*data\.test_fraction"):
        load_dataset(DataConfig(name=str(tmp_path / "s.npz"), split="test", test_fraction=0.1))


def test_bad_unknown_config_key():
    with pytest.raises(UserError, match=r"unknown config key 'imagesize'; valid keys: .*image_size.*split"):
        from_dict(DataConfig, {"imagesize": 32})


def test_bad_config_value_type():
    with pytest.raises(UserError, match=r"'image_size' must be .*got 'big'"):
        from_dict(DataConfig, {"image_size": "big"})
    with pytest.raises(UserError, match=r"data\.image_size must be an integer"):
        DataConfig(image_size="big")  # type: ignore[arg-type]


def test_bad_config_choice_lists_valid_values():
    with pytest.raises(UserError, match=r"'channels' must be one of 'auto', 'L', 'RGB'; got 'rgb'"):
        from_dict(DataConfig, {"channels": "rgb"})
    with pytest.raises(UserError, match=r"data\.split must be one of 'train', 'test', 'all'"):
        DataConfig(split="val")  # type: ignore[arg-type]


def test_bad_config_test_fraction():
    with pytest.raises(UserError, match=r"data\.test_fraction must be a number in \[0, 1\)"):
        from_dict(DataConfig, {"test_fraction": 1.5})
