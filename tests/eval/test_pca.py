"""The set and attentive baselines' reduced input: PCA of the train split's valid clips."""

from __future__ import annotations

import numpy as np
import pytest

from scalevid.eval.clip_sets import SetData
from scalevid.eval.pca import fit_pca, project


def _sets(rng: np.random.Generator, *, n: int = 40, k: int = 6, d: int = 12) -> SetData:
    feats = rng.normal(size=(n, k, d)).astype(np.float32)
    boxes = np.tile(np.linspace(0, 1, 7, dtype=np.float32), (n, k, 1))
    num_valid = rng.integers(2, k + 1, size=n)
    return SetData(features=feats, boxes=boxes, num_valid=num_valid, labels=np.arange(n) % 3)


def test_components_match_the_svd_of_the_valid_clips():
    """Mean, components and variances against numpy's SVD of the centred valid clips, read over
    several chunks; padded clips (set to huge values) are not read."""
    rng = np.random.default_rng(0)
    data = _sets(rng)
    # a planted direction with a large variance, so the first component is well defined
    direction = rng.normal(size=12)
    data.features += (5.0 * rng.normal(size=(40, 6, 1)) * direction).astype(np.float32)
    for i, v in enumerate(data.num_valid):
        data.features[i, v:] = 1e6
    fit = fit_pca(data, 3, chunk=7)
    clips = np.concatenate([data.features[i, :v] for i, v in enumerate(data.num_valid)])
    clips = clips.astype(np.float64)
    mean = clips.mean(axis=0)
    _, singular, vt = np.linalg.svd(clips - mean, full_matrices=False)
    np.testing.assert_allclose(fit.mean, mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fit.variance, singular[:3] ** 2 / len(clips), rtol=1e-6)
    # the same subspace, component by component (up to sign)
    np.testing.assert_allclose(np.abs(fit.components.T @ vt[:3].T), np.eye(3), atol=1e-4)
    assert abs(fit.components[:, 0] @ direction) / np.linalg.norm(direction) > 0.99
    # each component's largest coordinate is positive: a refit gives the same signs
    top = np.abs(fit.components).argmax(axis=0)
    assert (fit.components[top, np.arange(3)] > 0).all()


def test_a_selection_fits_only_its_own_videos():
    rng = np.random.default_rng(1)
    data = _sets(rng)
    part = data.subset(np.arange(10))
    changed = _sets(rng)
    changed.features[: len(part)] = data.features[: len(part)]
    changed.num_valid[: len(part)] = data.num_valid[: len(part)]
    a = fit_pca(part, 4)
    b = fit_pca(changed.subset(np.arange(10)), 4)
    np.testing.assert_array_equal(a.components, b.components)


def test_projection_keeps_the_videos_rows_and_labels():
    rng = np.random.default_rng(2)
    data = _sets(rng).subset(np.arange(5, 25))
    fit = fit_pca(data, 4)
    out = project(data, fit, chunk=9)
    assert out.features.shape == (40, 6, 4) and out.dim == 4  # every video of the source
    np.testing.assert_array_equal(out.rows, data.rows)
    np.testing.assert_array_equal(out.labels, data.labels)
    feats, boxes, num_valid = out.read(np.array([0, 3]))
    raw, raw_boxes, raw_valid = data.read(np.array([0, 3]))
    expected = (raw.astype(np.float64) - fit.mean) @ fit.components
    np.testing.assert_allclose(feats, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(boxes, raw_boxes)
    np.testing.assert_array_equal(num_valid, raw_valid)


def test_bad_dimensions_are_named():
    data = _sets(np.random.default_rng(3), n=2, k=2, d=12)
    with pytest.raises(ValueError, match="input_pca 13 must be in"):
        fit_pca(data, 13)
    with pytest.raises(ValueError, match="cannot fit 8 principal components"):
        fit_pca(data.subset(np.arange(1)), 8)


def test_a_large_selection_is_fitted_on_a_seeded_subset_of_its_videos():
    data = _sets(np.random.default_rng(4), n=40)
    fit = fit_pca(data, 3, max_videos=10, seed=7)
    pick = np.sort(np.random.default_rng(7).choice(40, size=10, replace=False))
    same = fit_pca(data.subset(pick), 3, max_videos=None)
    np.testing.assert_array_equal(fit.components, same.components)
    np.testing.assert_array_equal(fit.mean, same.mean)
    other = fit_pca(data, 3, max_videos=10, seed=8)
    assert not np.array_equal(fit.mean, other.mean)
    # at or under the cap every video is read
    np.testing.assert_array_equal(
        fit_pca(data, 3, max_videos=40).components, fit_pca(data, 3, max_videos=None).components
    )
