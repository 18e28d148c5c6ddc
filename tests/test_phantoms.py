"""PhantomNF's drawing: every lesion a separate, countable spot; the lesion score tells a sharp image from a blur."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from mednf.sources.phantom_lesions import score_lesions
from mednf.sources.phantoms import LESION_GAP, draw_phantoms, make_phantoms


@pytest.fixture(scope="module")
def drawn():
    return draw_phantoms(300, 64, seed=2)


def test_the_label_is_the_number_of_separate_bright_spots(drawn):
    images, labels, lesions = drawn
    for image, label, spots in zip(images[:, 0], labels, lesions):
        assert spots.shape == (label, 3)
        components, count = ndimage.label(np.isclose(image, 0.95))  # lesions are drawn at exactly 0.95
        assert count == label
        for cy, cx, r in spots:  # each drawn lesion is one of those components, at its centre
            assert components[round(cy), round(cx)] > 0
    gap_px = LESION_GAP * 63 / 2
    for spots in lesions:
        for a in range(len(spots)):
            for b in range(a + 1, len(spots)):
                edge = np.hypot(*(spots[a, :2] - spots[b, :2])) - spots[a, 2] - spots[b, 2]
                assert edge >= gap_px - 1e-9


def test_make_phantoms_is_draw_phantoms_without_the_lesions(drawn):
    images, labels = make_phantoms(300, 64, seed=2)
    np.testing.assert_array_equal(images, drawn[0])
    np.testing.assert_array_equal(labels, drawn[1])


def test_the_lesion_score_separates_sharp_blurred_and_mean_images(drawn):
    images, _, lesions = drawn
    truth = images[:, 0].astype(np.float64)
    sharp = score_lesions(truth, truth, lesions).as_dict()
    assert sharp["distinct"] == sharp["seen"] == sharp["placed"] == sharp["separated_pairs"] == 1.0
    assert sharp["lesions"] == sum(len(s) for s in lesions) and sharp["images_all_distinct"] == 1.0
    blurred = np.stack([ndimage.gaussian_filter(x, 2.5) for x in truth])  # lesions smeared into the background
    assert score_lesions(blurred, truth, lesions).as_dict()["distinct"] < 0.05
    mean = np.broadcast_to(truth.mean(axis=0), truth.shape)
    assert score_lesions(mean, truth, lesions).as_dict()["seen"] == 0.0
    shifted = np.roll(truth, 6, axis=2)  # every spot 6 px off its place
    assert score_lesions(shifted, truth, lesions).as_dict()["placed"] < 0.05
