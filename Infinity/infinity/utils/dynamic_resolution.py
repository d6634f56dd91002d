"""Scale schedules of Infinity for every aspect ratio upstream supports.

Each template (a ratio h/w) has a 13-step list of (h, w) token grids at VAE stride 16; the
reciprocal ratio uses the transposed list. A resolution key `pn` takes the first 7 / 10 /
12 / 13 grids ('0.06M' / '0.25M' / '0.60M' / '1M', i.e. 256 / 512 / 768 / 1024 px for 1:1).

    dynamic_resolution_h_w[h_div_w_template][pn] = {'pixel': (H, W), 'scales': [(t, h, w), ...]}

`t` is upstream's video-frame entry; every image caller replaces it with 1 (see
`get_scale_schedule`). Schedules must hold Python ints: the RoPE table is keyed by
`str(tuple(scale_schedule))`.
"""
from __future__ import annotations

import numpy as np

vae_stride = 16

# h/w -> 13 token grids (h, w); the last grid of each list is the 1M (about 1024x1024 px) one.
ratio2hws = {
    1.000: [(1, 1), (2, 2), (4, 4), (6, 6), (8, 8), (12, 12), (16, 16), (20, 20), (24, 24), (32, 32), (40, 40), (48, 48), (64, 64)],
    1.250: [(1, 1), (2, 2), (3, 3), (5, 4), (10, 8), (15, 12), (20, 16), (25, 20), (30, 24), (35, 28), (45, 36), (55, 44), (70, 56)],
    1.333: [(1, 1), (2, 2), (4, 3), (8, 6), (12, 9), (16, 12), (20, 15), (24, 18), (28, 21), (36, 27), (48, 36), (60, 45), (72, 54)],
    1.500: [(1, 1), (2, 2), (3, 2), (6, 4), (9, 6), (15, 10), (21, 14), (27, 18), (33, 22), (39, 26), (48, 32), (63, 42), (78, 52)],
    1.750: [(1, 1), (2, 2), (3, 3), (7, 4), (11, 6), (14, 8), (21, 12), (28, 16), (35, 20), (42, 24), (56, 32), (70, 40), (84, 48)],
    2.000: [(1, 1), (2, 2), (4, 2), (6, 3), (10, 5), (16, 8), (22, 11), (30, 15), (38, 19), (46, 23), (60, 30), (74, 37), (90, 45)],
    2.500: [(1, 1), (2, 2), (5, 2), (10, 4), (15, 6), (20, 8), (25, 10), (30, 12), (40, 16), (50, 20), (65, 26), (80, 32), (100, 40)],
    3.000: [(1, 1), (2, 2), (6, 2), (9, 3), (15, 5), (21, 7), (27, 9), (36, 12), (45, 15), (54, 18), (72, 24), (90, 30), (111, 37)],
}
predefined_t = [1, 2, 3, 4, 5, 6, 7, 9, 11, 13, 15, 17, 21]
PN_LENGTHS = {'0.06M': 7, '0.25M': 10, '0.60M': 12, '1M': 13}

# template key order as upstream: 1.0, 1.25, 0.8, 1.333, 0.75, ... (ratio, then its reciprocal)
full_ratio2hws: dict[float, list[tuple[int, int]]] = {}
for _ratio, _hws in ratio2hws.items():
    full_ratio2hws[_ratio] = _hws
    if _ratio != 1.000:
        full_ratio2hws[int(1 / _ratio * 1000) / 1000] = [(w, h) for h, w in _hws]

dynamic_resolution_h_w: dict[float, dict[str, dict]] = {}
for _ratio, _hws in full_ratio2hws.items():
    dynamic_resolution_h_w[_ratio] = {}
    for _pn, _n in PN_LENGTHS.items():
        _h, _w = _hws[_n - 1]
        dynamic_resolution_h_w[_ratio][_pn] = {
            'pixel': (_h * vae_stride, _w * vae_stride),
            'scales': [(t, h, w) for t, (h, w) in zip(predefined_t[:_n], _hws[:_n])],
        }

h_div_w_templates = np.array(list(dynamic_resolution_h_w.keys()))


def nearest_h_div_w_template(h_div_w: float) -> float:
    """The template key nearest to `h_div_w` by absolute difference (upstream's rule)."""
    return float(h_div_w_templates[np.argmin(np.abs(h_div_w_templates - h_div_w))])


def get_scale_schedule(h_div_w_template: float, pn: str) -> list[tuple[int, int, int]]:
    """Image scale schedule [(1, h_k, w_k), ...] of a template key and resolution key, Python ints.

    Raises KeyError for a key that is not a template or not a resolution key; the CLI turns
    that into a one-line error (see `tools/run_infinity.py`).
    """
    scales = dynamic_resolution_h_w[h_div_w_template][pn]['scales']
    return [(1, int(h), int(w)) for _, h, w in scales]


def template_last_grid(scale_schedule) -> tuple[int, int]:
    """(UH, UW): the last grid of the 1M list of the template a schedule belongs to.

    2-D RoPE (`rope2d_normalized_by_hw=2`) places every scale's tokens on this grid whatever
    `pn` is used. Looked up the way upstream's RoPE dict is built: every template and every
    resolution key in order, a later match overwriting an earlier one.
    """
    key = tuple((1, int(h), int(w)) for _, h, w in scale_schedule)
    found = None
    for ratio, per_pn in dynamic_resolution_h_w.items():
        for pn in PN_LENGTHS:
            if tuple((1, h, w) for _, h, w in per_pn[pn]['scales']) == key:
                found = full_ratio2hws[ratio][-1]
    if found is None:
        raise KeyError(f"scale schedule {list(key)} is not one of upstream's templates")
    return found
