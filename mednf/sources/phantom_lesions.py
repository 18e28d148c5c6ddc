"""Whether each PhantomNF lesion is a distinct, correctly placed spot in a reconstruction.

The phantoms' lesions are known exactly (:func:`mednf.sources.phantoms.draw_phantoms`: centre and radius in
pixels), so a reconstruction can be scored lesion by lesion instead of by eye. For a lesion of radius r:

- **seen**: the mean of the reconstruction over the lesion disc stands above the median of a ring around it
  (r + 1.5 … r + 3.5 px) by at least half of the true contrast (the same quantities in the input);
- **placed**: the brightest reconstructed pixel within r + 3 px of the centre lies within r px of it;
- **separated** (from each other lesion): along the segment between the two centres, the reconstruction
  dips at least halfway back from the dimmer lesion's disc mean to the two rings' mean.

A lesion is **distinct** when it is seen, placed and separated from every other lesion of its image.
Ground truth scores 1.0 on all four by construction of the generator (tested at 64², the size PhantomNF is built at).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RING = (1.5, 3.5)  # inner and outer distance (px) of the background ring beyond the lesion's radius
SEARCH = 3.0  # px beyond the radius searched for the brightest pixel


@dataclass(frozen=True)
class LesionScore:
    """Counts over a set of reconstructions: lesions seen, placed and distinct, lesion pairs separated, images
    whose every lesion is distinct (see the module docstring)."""

    lesions: int
    seen: int
    placed: int
    pairs: int
    separated: int
    distinct: int
    images_all_distinct: int  # images whose every lesion is distinct (lesion-free images count as such)
    images: int

    def as_dict(self) -> dict[str, float | int]:
        """The counts as fractions of their totals (lesions, pairs, images), with the numbers of lesions and pairs."""
        share = max(1, self.lesions)
        return {"lesions": self.lesions, "seen": self.seen / share, "placed": self.placed / share,
                "separated_pairs": self.separated / max(1, self.pairs), "pairs": self.pairs,
                "distinct": self.distinct / share,
                "images_all_distinct": self.images_all_distinct / max(1, self.images)}


def _disc_and_ring(shape: tuple[int, int], cy: float, cx: float, r: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    yy, xx = np.indices(shape)
    dist = np.hypot(yy - cy, xx - cx)
    return dist, dist <= r, (dist >= r + RING[0]) & (dist <= r + RING[1])


def score_lesions(recon: np.ndarray, truth: np.ndarray, lesions: list[np.ndarray]) -> LesionScore:
    """Score reconstructions ``recon [n, H, W]`` against the inputs ``truth [n, H, W]`` (both in [0, 1]) with
    the drawn ``lesions[i] [k, 3]`` = (row, column, radius) in pixels."""
    if not len(recon) == len(truth) == len(lesions):
        raise ValueError(f"{len(recon)} reconstructions, {len(truth)} inputs and {len(lesions)} lesion lists: expected "
                         "one of each per image")
    counts = dict.fromkeys(("lesions", "seen", "placed", "pairs", "separated", "distinct", "all"), 0)
    for image, target, spots in zip(recon, truth, lesions):
        ok = []
        peaks, rings = [], []
        for cy, cx, r in spots:
            dist, disc, ring = _disc_and_ring(image.shape, cy, cx, r)
            peak, background = float(image[disc].mean()), float(np.median(image[ring]))
            contrast = float(target[disc].mean()) - float(np.median(target[ring]))
            seen = bool(peak - background >= 0.5 * contrast)
            window = np.where(dist <= r + SEARCH, image, -np.inf)
            by, bx = np.unravel_index(int(np.argmax(window)), image.shape)
            placed = bool(np.hypot(by - cy, bx - cx) <= r)
            counts["seen"] += seen
            counts["placed"] += placed
            ok.append(seen and placed)
            peaks.append(peak)
            rings.append(background)
        for a in range(len(spots)):
            for b in range(a + 1, len(spots)):
                counts["pairs"] += 1
                (ya, xa, _), (yb, xb, _) = spots[a], spots[b]
                t = np.linspace(0.0, 1.0, 64)
                ys, xs = ya + t * (yb - ya), xa + t * (xb - xa)
                valley = float(_bilinear(image, ys, xs).min())
                level = 0.5 * (min(peaks[a], peaks[b]) + 0.5 * (rings[a] + rings[b]))
                if valley <= level:
                    counts["separated"] += 1
                else:
                    ok[a] = ok[b] = False
        counts["lesions"] += len(spots)
        counts["distinct"] += sum(ok)
        counts["all"] += all(ok)
    return LesionScore(counts["lesions"], counts["seen"], counts["placed"], counts["pairs"], counts["separated"],
                       counts["distinct"], counts["all"], len(recon))


def _bilinear(image: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """``image [H, W]`` sampled at fractional pixel positions ``(ys, xs) [m]``."""
    y0 = np.clip(np.floor(ys).astype(int), 0, image.shape[0] - 2)
    x0 = np.clip(np.floor(xs).astype(int), 0, image.shape[1] - 2)
    fy, fx = ys - y0, xs - x0
    top = image[y0, x0] * (1 - fx) + image[y0, x0 + 1] * fx
    bottom = image[y0 + 1, x0] * (1 - fx) + image[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy
