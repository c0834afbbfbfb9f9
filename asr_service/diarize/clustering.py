"""Windows over speech regions, and agglomerative clustering of their embeddings."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from asr_service.diarize.spec import DiarizeSpec

FRAME_MS = 20  # the frames the encoder reads (encoder.STRIDE x 10 ms)
WINDOW_MS = 1600
HOP_MS = 1600
"""Windows do not overlap: measured on the 15 benchmark conversations (FunASR), a 0.8 s hop gave
the same DER (6.39%) and speaker counts (15/15) at twice the encoder's cost."""
MIN_LAST_COVERAGE = 0.75
"""A region's last window is kept only when speech fills this share of it (or it is the only
one), as resemblyzer does with its partial utterances."""
UNIT_WINDOWS = 8
"""Windows averaged into one clustering unit: a region of speech (a VAD segment), cut in
pieces of at most this many windows. One window's embedding is noisy (1.6 s); a turn's mean
is not (measured on the espeak conversations: same speaker <= 0.23 apart, others >= 0.18 by
window means per region, against 0.28 / 0.12 window by window)."""
THRESHOLD = 0.17
"""Cosine distance (average linkage) above which two groups of units are other speakers.
Tuned on the benchmark's 15 espeak-ng conversations, on the regions each engine gives: 0.16,
0.17 and 0.18 counted all 15 right with both engines (0.20 missed 4 on the reference turns);
real voices may want another value."""
MAX_UNITS = 2000
"""Beyond this many units the clustering fits an even sample of them (its distance matrix is
O(n^2)) and gives every unit its nearest centroid: memory stays bounded on a 4 h file."""


@dataclass(frozen=True)
class Window:
    """A window's place: its region's index, and its first frame within the region."""

    region: int
    frame: int

    @property
    def centre_offset_ms(self) -> int:
        """Its centre, in ms from the start of its region."""
        return self.frame * FRAME_MS + WINDOW_MS // 2


def window_starts(n_frames: int) -> list[int]:
    """First frames of the windows over a region of n_frames (at least one window)."""
    size, hop = WINDOW_MS // FRAME_MS, HOP_MS // FRAME_MS
    starts = list(range(0, max(1, n_frames - size + hop), hop))
    if len(starts) > 1 and (n_frames - starts[-1]) / size < MIN_LAST_COVERAGE:
        starts.pop()
    return starts


def cluster_windows(windows: list[Window], embeddings: np.ndarray, spec: DiarizeSpec,
                    threshold: float = THRESHOLD) -> np.ndarray:
    """A speaker index per window: its unit's (UNIT_WINDOWS of its region), numbered in order
    of first appearance."""
    unit_of, units = units_of(windows, embeddings)
    return first_appearance(cluster(units, spec, threshold)[unit_of]) if len(units) else \
        np.zeros(0, dtype=int)


def units_of(windows: list[Window], embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each window's unit index, and the units' L2-normed mean embeddings."""
    unit_of = np.zeros(len(windows), dtype=int)
    sums: list[np.ndarray] = []
    region, count = -1, 0
    for k, window in enumerate(windows):
        if window.region != region or count == UNIT_WINDOWS:
            sums.append(np.zeros(embeddings.shape[1], dtype=np.float64))
            region, count = window.region, 0
        sums[-1] += embeddings[k]
        unit_of[k] = len(sums) - 1
        count += 1
    if not sums:
        return unit_of, np.zeros((0, embeddings.shape[1] if embeddings.ndim == 2 else 256))
    units = np.stack(sums)
    return unit_of, units / np.linalg.norm(units, axis=1, keepdims=True).clip(1e-12)


def cluster(embeddings: np.ndarray, spec: DiarizeSpec,
            threshold: float = THRESHOLD) -> np.ndarray:
    """A speaker index per embedding, numbered in order of first appearance."""
    n = len(embeddings)
    if n == 0:
        return np.zeros(0, dtype=int)
    if n == 1:
        return np.zeros(1, dtype=int)
    fitted = embeddings
    if n > MAX_UNITS:
        fitted = embeddings[np.linspace(0, n - 1, MAX_UNITS).round().astype(int)]
    labels = _agglomerate(fitted, None, threshold)
    wanted = spec.clamp(int(labels.max()) + 1, len(fitted))
    if wanted != labels.max() + 1:
        labels = _agglomerate(fitted, wanted, threshold)
    if n > MAX_UNITS:
        labels = nearest_centroid(embeddings, fitted, labels)
    return first_appearance(labels)


def _agglomerate(x: np.ndarray, n_clusters: int | None, threshold: float) -> np.ndarray:
    from sklearn.cluster import AgglomerativeClustering

    if n_clusters == 1:
        return np.zeros(len(x), dtype=int)
    model = AgglomerativeClustering(
        n_clusters=n_clusters, metric="cosine", linkage="average",
        distance_threshold=None if n_clusters else threshold)
    return model.fit_predict(x)


def nearest_centroid(x: np.ndarray, fitted: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each row of x labelled with the cluster whose mean direction is closest (cosine)."""
    centroids = np.stack([fitted[labels == k].mean(axis=0) for k in range(labels.max() + 1)])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True).clip(1e-12)
    return np.argmax(x @ centroids.T, axis=1)


def first_appearance(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 0, 1, ... in the order they first occur."""
    order: dict[int, int] = {}
    for label in labels.tolist():
        order.setdefault(label, len(order))
    return np.array([order[label] for label in labels.tolist()], dtype=int)
