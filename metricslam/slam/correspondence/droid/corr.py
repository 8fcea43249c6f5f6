"""Correlation features of the DROID update operator: two implementations behind one interface.

For an edge i -> j and every grid pixel p of frame i, the features are the correlations <f_i(p), f_j(q)> / 16,
interpolated bilinearly at the 7x7 positions q = coords(p) / 2^l + (dx, dy), dx, dy in -3..3, on each of 4 levels
l of frame j's pyramid (2x2 average pooling), zero outside the image. Channel ``l * 49 + (dx + 3) * 7 + (dy + 3)``:
x-offset major, the order baked into droid.pth. Coordinates are grid pixels, pixel k centred at k, (x, y) order.

- ``VolumeCorr`` keeps, per edge, the all-pairs volume of every level (about 50 MB per edge at a 48x64 grid) and
  only gathers at lookup: cheapest repeated lookups, memory quadratic in the grid size.
- ``LocalCorr`` keeps each frame's feature pyramid only (about 2 MB per frame at 48x64) and computes the needed dot
  products at lookup, in chunks of queries to bound the temporaries.

Both use that average pooling and bilinear interpolation are linear: the volume of a pooled level equals the dot
products with the pooled features of frame j, and interpolating correlations equals correlating with interpolated
features. Both gather the (2r+2)^2 integer neighbours of the window and blend them with the one fractional offset
all 49 positions share, as the upstream CUDA kernels do.
"""
from __future__ import annotations

from typing import Literal, Protocol

import torch
import torch.nn.functional as F

LEVELS = 4
RADIUS = 3
SCALE = 1.0 / 16.0  # upstream divides both feature maps by 4 before the dot product


def corr_channels(levels: int = LEVELS, radius: int = RADIUS) -> int:
    """Number of correlation channels (196 for droid.pth)."""
    return levels * (2 * radius + 1) ** 2


class CorrBlock(Protocol):
    """Correlation lookup for a fixed list of edges."""

    @property
    def num_edges(self) -> int: ...

    def __call__(self, coords: torch.Tensor) -> torch.Tensor:
        """Features (E, corr_channels, h, w) at target coordinates ``coords`` (E, h, w, 2) in grid pixels of j."""
        ...

    def select(self, index: torch.Tensor) -> CorrBlock:
        """The block restricted to the edges picked by ``index`` (bool mask or integer indices)."""
        ...

    def cat(self, other: CorrBlock) -> CorrBlock:
        """The block for this block's edges followed by ``other``'s."""
        ...

    def nbytes(self) -> int:
        """Bytes of the tensors this block keeps alive."""
        ...


def feature_pyramid(fmaps: torch.Tensor, levels: int = LEVELS) -> list[torch.Tensor]:
    """``levels`` feature maps (N, C, h / 2^l, w / 2^l) by repeated 2x2 average pooling (odd sizes floor)."""
    if min(fmaps.shape[-2:]) >> (levels - 1) == 0:
        raise ValueError(f"a {tuple(fmaps.shape[-2:])} grid is too small for {levels} correlation levels")
    pyramid = [fmaps]
    for _ in range(levels - 1):
        pyramid.append(F.avg_pool2d(pyramid[-1], 2, stride=2))
    return pyramid


def _window(coords: torch.Tensor, radius: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Integer neighbours of the lookup windows at ``coords`` (Q, 2) on an h x w level.

    Returns flat indices (Q, K*K) into h*w (clamped, y-major), their in-image mask (Q, K*K) and the fractional
    offset (Q, 2), with K = 2 * radius + 2.
    """
    # Far outside (or NaN) coordinates are moved to where the whole window is still outside: same zeros, no overflow.
    coords = torch.nan_to_num(coords, nan=-(radius + 2.0))
    lo = -(radius + 2.0)
    x = coords[:, 0].clamp(lo, w + radius + 1.0)
    y = coords[:, 1].clamp(lo, h + radius + 1.0)
    x0, y0 = torch.floor(x), torch.floor(y)
    frac = torch.stack([x - x0, y - y0], dim=1)
    steps = torch.arange(2 * radius + 2, device=coords.device)
    xs = x0.long()[:, None] - radius + steps
    ys = y0.long()[:, None] - radius + steps
    valid = ((ys >= 0) & (ys < h))[:, :, None] & ((xs >= 0) & (xs < w))[:, None, :]
    index = ys.clamp(0, h - 1)[:, :, None] * w + xs.clamp(0, w - 1)[:, None, :]
    return index.flatten(1), valid.flatten(1), frac


def _blend(corners: torch.Tensor, frac: torch.Tensor) -> torch.Tensor:
    """Bilinear blend of integer-neighbour correlations (Q, K, K) [y, x] -> (Q, (K-1)^2), x-offset major."""
    fx = frac[:, 0, None, None]
    fy = frac[:, 1, None, None]
    top = corners[:, :-1, :-1] + fx * (corners[:, :-1, 1:] - corners[:, :-1, :-1])
    bottom = corners[:, 1:, :-1] + fx * (corners[:, 1:, 1:] - corners[:, 1:, :-1])
    out = top + fy * (bottom - top)  # (Q, dy, dx)
    return out.transpose(1, 2).reshape(out.shape[0], -1)


def _edge_index(index: torch.Tensor, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(index, device=device).reshape(-1).long()


def _check_edges(fmaps: torch.Tensor, ii: torch.Tensor, jj: torch.Tensor) -> None:
    if ii.shape != jj.shape or ii.dim() != 1:
        raise ValueError(f"ii and jj must be 1-D and equally long, got {tuple(ii.shape)} and {tuple(jj.shape)}")
    n = fmaps.shape[0]
    if len(ii) and (min(ii.min(), jj.min()) < 0 or max(ii.max(), jj.max()) >= n):
        raise ValueError(f"edge frame indices must lie in [0, {n}) (one feature map per frame)")


def _check_coords(coords: torch.Tensor, edges: int, grid_hw: tuple[int, int]) -> None:
    if coords.shape != (edges, *grid_hw, 2):
        raise ValueError(f"coords must have shape {(edges, *grid_hw, 2)}, got {tuple(coords.shape)}")


class VolumeCorr:
    """Stored all-pairs correlation pyramid per edge: ``volumes[l]`` is (E, h*w, h_l*w_l), already scaled."""

    def __init__(self, volumes: list[torch.Tensor], grid_hw: tuple[int, int], level_hw: list[tuple[int, int]],
                 radius: int = RADIUS):
        self.volumes = volumes
        self.grid_hw = grid_hw
        self.level_hw = level_hw
        self.radius = radius

    @classmethod
    def build(cls, fmaps: torch.Tensor, ii: torch.Tensor, jj: torch.Tensor, levels: int = LEVELS,
              radius: int = RADIUS) -> VolumeCorr:
        """Volumes for edges ii[e] -> jj[e] from per-frame features ``fmaps`` (N, C, h, w)."""
        ii, jj = _edge_index(ii, fmaps.device), _edge_index(jj, fmaps.device)
        _check_edges(fmaps, ii, jj)
        pyramid = feature_pyramid(fmaps, levels)
        f1 = fmaps[ii].flatten(2).transpose(1, 2) * SCALE  # (E, h*w, C)
        # Pooling the volume over the second image equals the volume with the pooled second feature map.
        volumes = [torch.bmm(f1, level[jj].flatten(2)) for level in pyramid]
        return cls(volumes, tuple(fmaps.shape[-2:]), [tuple(p.shape[-2:]) for p in pyramid], radius)

    @property
    def num_edges(self) -> int:
        return self.volumes[0].shape[0]

    def __call__(self, coords: torch.Tensor) -> torch.Tensor:
        e, (h, w) = self.num_edges, self.grid_hw
        _check_coords(coords, e, self.grid_hw)
        k = 2 * self.radius + 2
        queries = coords.reshape(-1, 2)
        features = []
        for level, (volume, (hl, wl)) in enumerate(zip(self.volumes, self.level_hw)):
            index, valid, frac = _window(queries / 2**level, self.radius, hl, wl)
            corners = torch.gather(volume.reshape(-1, hl * wl), 1, index).masked_fill_(~valid, 0.0)
            features.append(_blend(corners.view(-1, k, k), frac))
        return torch.cat(features, dim=1).view(e, h, w, -1).permute(0, 3, 1, 2).contiguous()

    def select(self, index: torch.Tensor) -> VolumeCorr:
        return VolumeCorr([v[index] for v in self.volumes], self.grid_hw, self.level_hw, self.radius)

    def cat(self, other: CorrBlock) -> VolumeCorr:
        if not isinstance(other, VolumeCorr) or (other.level_hw, other.radius) != (self.level_hw, self.radius):
            raise ValueError("can only concatenate VolumeCorr blocks of the same grid, levels and radius")
        volumes = [torch.cat([a, b], dim=0) for a, b in zip(self.volumes, other.volumes)]
        return VolumeCorr(volumes, self.grid_hw, self.level_hw, self.radius)

    def nbytes(self) -> int:
        return sum(v.numel() * v.element_size() for v in self.volumes)


class LocalCorr:
    """On-the-fly local correlation: per-frame feature pyramids plus edge indices, no volumes.

    ``chunk_elements`` bounds the gathered neighbour features per step (floats; default 16M = 64 MB in float32).
    """

    def __init__(self, pyramid: list[torch.Tensor], ii: torch.Tensor, jj: torch.Tensor, radius: int = RADIUS,
                 chunk_elements: int = 1 << 24):
        self.pyramid = pyramid
        self.ii = ii
        self.jj = jj
        self.radius = radius
        self.chunk_elements = chunk_elements

    @classmethod
    def build(cls, fmaps: torch.Tensor, ii: torch.Tensor, jj: torch.Tensor, levels: int = LEVELS,
              radius: int = RADIUS, chunk_elements: int = 1 << 24) -> LocalCorr:
        """Lookup for edges ii[e] -> jj[e] over per-frame features ``fmaps`` (N, C, h, w)."""
        ii, jj = _edge_index(ii, fmaps.device), _edge_index(jj, fmaps.device)
        _check_edges(fmaps, ii, jj)
        # Channels-last rows so that a window gather reads contiguous feature vectors.
        pyramid = [p.permute(0, 2, 3, 1).contiguous() for p in feature_pyramid(fmaps, levels)]
        return cls(pyramid, ii, jj, radius, chunk_elements)

    @property
    def num_edges(self) -> int:
        return self.ii.shape[0]

    def __call__(self, coords: torch.Tensor) -> torch.Tensor:
        n, h, w, c = self.pyramid[0].shape
        e = self.num_edges
        _check_coords(coords, e, (h, w))
        k = 2 * self.radius + 2
        taps = (2 * self.radius + 1) ** 2
        queries = coords.reshape(-1, 2)
        f1 = self.pyramid[0].view(n, h * w, c)[self.ii].view(-1, c, 1) * SCALE  # (Q, C, 1)
        frame = self.jj.repeat_interleave(h * w)  # target frame of every query
        out = torch.empty(queries.shape[0], len(self.pyramid) * taps, dtype=f1.dtype, device=f1.device)
        chunk = max(1, self.chunk_elements // (k * k * c))
        for start in range(0, queries.shape[0], chunk):
            part = slice(start, start + chunk)
            for level, table in enumerate(self.pyramid):
                _, hl, wl, _ = table.shape
                index, valid, frac = _window(queries[part] / 2**level, self.radius, hl, wl)
                rows = table.view(-1, c)[frame[part, None] * (hl * wl) + index]  # (q, K*K, C)
                corners = torch.bmm(rows, f1[part]).squeeze(-1).masked_fill_(~valid, 0.0)
                out[part, level * taps:(level + 1) * taps] = _blend(corners.view(-1, k, k), frac)
        return out.view(e, h, w, -1).permute(0, 3, 1, 2).contiguous()

    def select(self, index: torch.Tensor) -> LocalCorr:
        return LocalCorr(self.pyramid, self.ii[index], self.jj[index], self.radius, self.chunk_elements)

    def cat(self, other: CorrBlock) -> LocalCorr:
        if not isinstance(other, LocalCorr) or other.radius != self.radius or len(other.pyramid) != len(self.pyramid):
            raise ValueError("can only concatenate LocalCorr blocks of the same levels and radius")
        if other.pyramid[0] is self.pyramid[0]:
            return LocalCorr(self.pyramid, torch.cat([self.ii, other.ii]), torch.cat([self.jj, other.jj]),
                             self.radius, self.chunk_elements)
        offset = self.pyramid[0].shape[0]
        pyramid = [torch.cat([a, b], dim=0) for a, b in zip(self.pyramid, other.pyramid)]
        return LocalCorr(pyramid, torch.cat([self.ii, other.ii + offset]), torch.cat([self.jj, other.jj + offset]),
                         self.radius, self.chunk_elements)

    def nbytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.pyramid) + 2 * self.ii.numel() * self.ii.element_size()


def build_corr(kind: Literal["volume", "local"], fmaps: torch.Tensor, ii: torch.Tensor, jj: torch.Tensor,
               levels: int = LEVELS, radius: int = RADIUS) -> CorrBlock:
    """The correlation block of ``kind`` for edges ii -> jj over per-frame features ``fmaps`` (N, C, h, w)."""
    if kind == "volume":
        return VolumeCorr.build(fmaps, ii, jj, levels, radius)
    if kind == "local":
        return LocalCorr.build(fmaps, ii, jj, levels, radius)
    raise ValueError(f"unknown correlation implementation '{kind}'; use 'volume' or 'local'")
