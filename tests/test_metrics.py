"""Metric core: closed forms, parity with torchmetrics / prdc, blockwise == unblocked, stats files, bad input."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import scipy.linalg
import scipy.spatial.distance
import scipy.special
import scipy.stats
import torch

from difflab.errors import UserError
from difflab.eval.metrics import frechet
from difflab.eval.metrics import (
    METRIC_NAMES,
    FeatureStats,
    MetricsConfig,
    StatsAccumulator,
    check_image_sets,
    compute_metrics,
    fid,
    frechet_distance,
    inception_score,
    inception_score_from_probs,
    kid,
    knn_radii,
    load_stats,
    mmd2_unbiased,
    prdc,
    save_stats,
)


def gaussian_features(n, d, seed, shift=0.0, scale=1.0):
    """Correlated Gaussian features (n, d) in float64."""
    rng = np.random.default_rng(seed)
    mix = np.eye(d) + 0.3 * rng.standard_normal((d, d)) / np.sqrt(d)
    return (rng.standard_normal((n, d)) @ mix) * scale + shift


class Identity(torch.nn.Module):
    """Feeds feature arrays straight into torchmetrics' FID/KID classes."""

    def __init__(self, num_features):
        super().__init__()
        self.num_features = num_features

    def forward(self, x):
        return x


# ---------------------------------------------------------------------------------------------- FID


def test_fid_of_a_set_with_itself_is_zero():
    x = gaussian_features(400, 16, 0)
    assert abs(fid(x, x)) < 1e-8


def test_frechet_distance_commuting_covariances_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, -1.0, 2.5])
    a, b = np.array([1.0, 2.0, 0.5]), np.array([4.0, 0.5, 0.5])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(a + b - 2 * np.sqrt(a * b))
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_general_covariances_symmetric_route():
    """Tr (s1 s2)^1/2 = Tr (s1^1/2 s2 s1^1/2)^1/2: an independent route through eigh."""
    rng = np.random.default_rng(1)
    d = 12
    a, b = rng.standard_normal((d, 2 * d)), rng.standard_normal((d, 2 * d))
    s1, s2 = a @ a.T / d, b @ b.T / d
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    w, v = np.linalg.eigh(s1)
    s1_half = (v * np.sqrt(w)) @ v.T
    tr_covmean = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(s1_half @ s2 @ s1_half), 0, None)))
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_covmean
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)


def test_fid_of_many_samples_approaches_the_gaussians_distance():
    rng = np.random.default_rng(2)
    d, n = 4, 200_000
    mu1, mu2 = np.zeros(d), np.array([0.5, 0.0, -0.3, 0.2])
    l1, l2 = np.tril(rng.standard_normal((d, d))) + 2 * np.eye(d), np.tril(rng.standard_normal((d, d))) + 2 * np.eye(d)
    x = mu1 + rng.standard_normal((n, d)) @ l1.T
    y = mu2 + rng.standard_normal((n, d)) @ l2.T
    exact = frechet_distance(mu1, l1 @ l1.T, mu2, l2 @ l2.T)
    assert fid(x, y) == pytest.approx(exact, rel=0.03)


def test_fid_matches_torchmetrics_class_and_helper():
    from torchmetrics.image.fid import FrechetInceptionDistance, _compute_fid

    d = 24
    x, y = gaussian_features(300, d, 3), gaussian_features(260, d, 4, shift=0.2, scale=1.3)
    metric = FrechetInceptionDistance(feature=Identity(d))
    metric.update(torch.from_numpy(x), real=True)
    metric.update(torch.from_numpy(y), real=False)
    ours = fid(x, y)
    assert ours == pytest.approx(float(metric.compute()), rel=1e-8)
    sx, sy = FeatureStats.from_features(x), FeatureStats.from_features(y)
    helper = _compute_fid(*(torch.from_numpy(a) for a in (sx.mu, sx.sigma, sy.mu, sy.sigma)))
    assert frechet_distance(sx.mu, sx.sigma, sy.mu, sy.sigma) == pytest.approx(float(helper), rel=1e-8)


def test_fid_of_rank_deficient_covariances():
    """A constant feature makes both covariances singular; the distance still equals that of the other features."""
    x, y = gaussian_features(500, 6, 5), gaussian_features(500, 6, 6, shift=0.5)
    x[:, 0], y[:, 0] = 1.0, 1.0
    sx, sy = FeatureStats.from_features(x), FeatureStats.from_features(y)
    exact = frechet_distance(sx.mu[1:], sx.sigma[1:, 1:], sy.mu[1:], sy.sigma[1:, 1:])
    assert frechet_distance(sx.mu, sx.sigma, sy.mu, sy.sigma) == pytest.approx(exact, abs=1e-8)


def test_fid_adds_eps_when_the_square_root_fails(monkeypatch):
    """A non-finite square root is retried on sigma + eps I; a large imaginary part is an error."""
    calls = []
    true_sqrtm = scipy.linalg.sqrtm

    def failing_once(a):
        calls.append(a.copy())
        return np.full_like(a, np.nan) if len(calls) == 1 else true_sqrtm(a)

    s1, s2 = np.diag([1.0, 2.0]), np.diag([3.0, 0.5])
    monkeypatch.setattr(frechet.scipy.linalg, "sqrtm", failing_once)
    with pytest.warns(UserWarning, match="near-singular; adding 0.01"):
        value = frechet_distance(np.zeros(2), s1, np.zeros(2), s2, eps=0.01)
    assert np.allclose(calls[1], (s1 + 0.01 * np.eye(2)) @ (s2 + 0.01 * np.eye(2)))
    assert value == pytest.approx(np.sum(np.diag(s1) + np.diag(s2) - 2 * np.sqrt(np.diag(calls[1]))))
    monkeypatch.setattr(frechet.scipy.linalg, "sqrtm", lambda a: true_sqrtm(a) + 0.5j * np.eye(len(a)))
    with pytest.raises(UserError, match="imaginary part of 0.5 .* use more samples"), pytest.warns(UserWarning):
        frechet_distance(np.zeros(2), s1, np.zeros(2), s2)


# ---------------------------------------------------------------------------------------------- KID


def test_mmd2_matches_torchmetrics_poly_mmd():
    from torchmetrics.image.kid import poly_mmd

    x, y = gaussian_features(120, 20, 7), gaussian_features(120, 20, 8, shift=0.3)
    ref = poly_mmd(torch.from_numpy(x), torch.from_numpy(y), degree=3, gamma=None, coef=1.0)
    assert mmd2_unbiased(x, y) == pytest.approx(float(ref), rel=1e-10)


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save")
def test_kid_matches_torchmetrics_class_with_full_subsets():
    """With subset_size = N every subset is the whole set (MMD is permutation invariant), so no RNG is shared."""
    from torchmetrics.image.kid import KernelInceptionDistance

    n, d = 150, 16
    x, y = gaussian_features(n, d, 9), gaussian_features(n, d, 10, shift=0.25)
    metric = KernelInceptionDistance(feature=Identity(d), subsets=3, subset_size=n)
    metric.update(torch.from_numpy(x), real=True)
    metric.update(torch.from_numpy(y), real=False)
    ref_mean, ref_std = metric.compute()
    mean, std = kid(x, y, subsets=3, subset_size=n)
    assert mean == pytest.approx(float(ref_mean), rel=1e-10)
    assert std == pytest.approx(float(ref_std), abs=1e-12)


def test_kid_subsets_are_seeded_and_sensible():
    x, y = gaussian_features(300, 8, 11), gaussian_features(300, 8, 12)
    far = gaussian_features(300, 8, 13, shift=1.0)
    assert kid(x, y, subsets=20, subset_size=100, seed=1) == kid(x, y, subsets=20, subset_size=100, seed=1)
    same_mean, same_std = kid(x, y, subsets=20, subset_size=100)
    far_mean, _ = kid(x, far, subsets=20, subset_size=100)
    assert same_std > 0 and abs(same_mean) < 3 * same_std + 0.05 and far_mean > 10 * abs(same_mean)


# ---------------------------------------------------------------------------------------------- IS


def reference_inception_score(logits, splits):
    """improved-gan's IS written from scratch: softmax, KL(p(y|x) || p(y)) per split, exp of the mean."""
    p = scipy.special.softmax(logits, axis=1)
    scores = []
    for part in np.array_split(p, splits):
        p_y = part.mean(axis=0)
        scores.append(np.exp(np.mean([scipy.stats.entropy(row, p_y) for row in part])))
    return np.mean(scores), np.std(scores)


def test_inception_score_matches_direct_formula():
    rng = np.random.default_rng(14)
    logits = 3 * rng.standard_normal((500, 10))
    mean, std = inception_score(logits, splits=5)
    ref_mean, ref_std = reference_inception_score(logits, 5)
    assert mean == pytest.approx(ref_mean, rel=1e-10) and std == pytest.approx(ref_std, rel=1e-8)
    probs = scipy.special.softmax(logits, axis=1)
    assert inception_score_from_probs(probs, splits=5) == pytest.approx((mean, std), rel=1e-9)


def test_inception_score_of_confident_balanced_predictions_is_the_class_count():
    probs = np.tile(np.eye(7), (20, 1))  # one-hot, every class equally often
    assert inception_score_from_probs(probs, splits=1)[0] == pytest.approx(7.0, rel=1e-12)


# ---------------------------------------------------------------------------------------------- PRDC


@pytest.mark.parametrize("k", [3, 5])
def test_prdc_matches_prdc_package(k, capsys):
    from prdc import compute_prdc

    x, y = gaussian_features(220, 16, 15), gaussian_features(180, 16, 16, shift=0.3, scale=1.2)
    ref = compute_prdc(real_features=x, fake_features=y, nearest_k=k)
    ours = prdc(x, y, k=k, block_rows=7)
    for name in ("precision", "recall", "density", "coverage"):
        assert getattr(ours, name) == pytest.approx(float(ref[name]), abs=1e-12), name


def test_knn_radii_blockwise_equal_unblocked():
    x = gaussian_features(150, 10, 17)
    full = np.sort(scipy.spatial.distance.cdist(x, x), axis=1)[:, 3]  # column 0 is the point itself
    for rows in (1, 7, 1000, None):
        assert np.allclose(knn_radii(x, 3, block_rows=rows), full, rtol=1e-10, atol=1e-12)


def test_prdc_blockwise_equal_unblocked():
    x, y = gaussian_features(130, 8, 18), gaussian_features(170, 8, 19, shift=0.2)
    results = {rows: prdc(x, y, block_rows=rows) for rows in (1, 13, 10_000)}
    assert results[1] == results[13] == results[10_000]


def test_prdc_float32_memory_stays_blockwise():
    """N = 3000: a full N x N float32 matrix is 36 MB; blocks of 50 rows must keep the peak far below it."""
    n = 3000
    x = gaussian_features(n, 16, 20).astype(np.float32)
    y = gaussian_features(n, 16, 21, shift=0.1).astype(np.float32)
    tracemalloc.start()
    try:
        res = prdc(x, y, block_rows=50)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < n * n * 4 / 6, peak
    assert 0.0 < res.precision <= 1.0 and 0.0 < res.recall <= 1.0


# ---------------------------------------------------------------------------------------------- stats and files


def test_stats_accumulated_in_blocks_equal_numpy():
    x = gaussian_features(301, 9, 22, shift=50.0)  # a large mean tests the shifted accumulation
    for rows in (1, 7, 4096):
        st = FeatureStats.from_features(x, block_rows=rows)
        assert st.n == 301
        assert np.allclose(st.mu, x.mean(axis=0), rtol=1e-12)
        assert np.allclose(st.sigma, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-12)
    acc = StatsAccumulator(9)
    for part in np.array_split(x, 5):
        acc.update(part)
    assert np.allclose(acc.finalize().sigma, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-12)


def test_stats_save_load_roundtrip(tmp_path):
    x, s = gaussian_features(50, 5, 23), gaussian_features(40, 3, 24)
    stats = {"pool": FeatureStats.from_features(x, keep_features=True), "spatial": FeatureStats.from_features(s)}
    path = save_stats(tmp_path / "ref.npz", stats)
    loaded = load_stats(path)
    assert sorted(loaded) == ["pool", "spatial"]
    assert np.array_equal(loaded["pool"].sigma, stats["pool"].sigma) and loaded["pool"].n == 50
    assert np.array_equal(loaded["pool"].features, x) and loaded["spatial"].features is None
    assert fid(loaded["pool"], x[::-1].copy()) == pytest.approx(0.0, abs=1e-8)


def test_load_stats_rejects_bad_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_stats(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="cannot read"):
        load_stats(tmp_path / "junk.npz")
    np.savez(tmp_path / "foreign.npz", mu=np.zeros(3), sigma=np.eye(3))
    with pytest.raises(UserError, match="not a difflab feature-stats file"):
        load_stats(tmp_path / "foreign.npz")
    np.savez(tmp_path / "pickled.npz", format=np.array([{"a": 1}], dtype=object))
    with pytest.raises(UserError, match="cannot read"):
        load_stats(tmp_path / "pickled.npz")


# ---------------------------------------------------------------------------------------------- bad input


def test_feature_sets_of_different_dimensions():
    x, y = gaussian_features(60, 8, 25), gaussian_features(60, 6, 26)
    for fn in (fid, kid, prdc):
        with pytest.raises(UserError, match="real features have 8 dims but fake features have 6"):
            fn(x, y)


def test_fid_needs_more_samples_than_dimensions():
    x, y = gaussian_features(40, 40, 27), gaussian_features(100, 40, 28)
    with pytest.raises(UserError, match="FID on 40-d features needs at least 41 real samples .* got 40"):
        fid(x, y)
    with pytest.raises(UserError, match="at least 2 feature vectors"):
        fid(x[:1], y)


def test_nan_features_are_rejected():
    x, y = gaussian_features(60, 4, 29), gaussian_features(60, 4, 30)
    y[3, 1] = np.nan
    for fn in (fid, kid, prdc):
        with pytest.raises(UserError, match="fake features contain NaN or inf in 1 of 60 rows"):
            fn(x, y)
    with pytest.raises(UserError, match="logits contain NaN"):
        inception_score(np.array([[0.0, np.nan], [1.0, 2.0]]), splits=1)


def test_image_sets_of_different_size_or_channels():
    check_image_sets((10, 3, 32, 32), (7, 3, 32, 32))
    with pytest.raises(UserError, match="real images are 3x32x32 .* fake images are 3x28x28"):
        check_image_sets((10, 3, 32, 32), (10, 3, 28, 28))
    with pytest.raises(UserError, match="real images are 1x28x28 .* fake images are 3x28x28"):
        check_image_sets((10, 1, 28, 28), (10, 3, 28, 28))


def test_unknown_metric_lists_the_valid_names():
    x = {"pool": gaussian_features(30, 4, 31)}
    with pytest.raises(UserError, match="unknown metric 'fdi'; valid metrics: " + ", ".join(METRIC_NAMES)):
        compute_metrics(x, x, metrics=("fid", "fdi"))


# ---------------------------------------------------------------------------------------------- dispatcher


def test_compute_metrics_dispatches_to_each_metric():
    rng = np.random.default_rng(32)
    real = {"pool": gaussian_features(200, 8, 33), "spatial": gaussian_features(200, 5, 34)}
    fake = {"pool": gaussian_features(150, 8, 35, shift=0.2), "spatial": gaussian_features(150, 5, 36),
            "logits": rng.standard_normal((150, 10))}
    cfg = MetricsConfig(kid_subsets=5, kid_subset_size=50, is_splits=3, block_rows=17)
    out = compute_metrics(real, fake, METRIC_NAMES, config=cfg)
    assert list(out) == ["fid", "sfid", "is", "is_std", "precision", "recall", "density", "coverage", "kid", "kid_std"]
    assert out["fid"] == pytest.approx(fid(real["pool"], fake["pool"]))
    assert out["sfid"] == pytest.approx(fid(real["spatial"], fake["spatial"]))
    assert (out["is"], out["is_std"]) == inception_score(fake["logits"], splits=3)
    assert (out["kid"], out["kid_std"]) == kid(real["pool"], fake["pool"], subsets=5, subset_size=50)
    assert out["coverage"] == prdc(real["pool"], fake["pool"]).coverage
    # Reference statistics work for FID; sample metrics need the kept features.
    ref = {"pool": FeatureStats.from_features(real["pool"])}
    assert compute_metrics(ref, fake, ("fid",))["fid"] == pytest.approx(out["fid"])
    with pytest.raises(UserError, match="KID needs the real feature sample"):
        compute_metrics(ref, fake, ("kid",))
    with pytest.raises(UserError, match="is needs fake 'logits' features"):
        compute_metrics(real, {"pool": fake["pool"]}, ("is",))
