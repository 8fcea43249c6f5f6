"""Correlation features of the DROID update operator: two implementations behind one interface.

For an edge i -> j and every grid pixel p of frame i, the features are the correlations <f_i(p), f_j(q)> / 16,
interpolated bilinearly at the 7x7 positions q = coords(p) / 2^l + (dx, dy), dx, dy in -3..3, on each of 4 levels
l of frame j's pyramid (2x2 average pooling), zero outside the image. Channel ``l * 49 + (dx + 3) * 7 + (dy + 3)``:
x-offset major, the order baked into droid.pth. Coordinates are grid pixels, pixel k centred at k, (x, y) order.

- ``VolumeCorr`` keeps, per edge, the all-pairs volume of every level (about 50 MB per edge at a 48x64 grid) and
  only gathers at lookup: cheapest repeated lookups, memory quadratic in the grid size.
- ``LocalCorr`` keeps each frame's feature pyramid only (about 2 MB per frame at 48x64) and computes the needed dot
  products at every lookup, in chunks that bound the temporaries.

Both use that average pooling and bilinear interpolation are linear: the volume of a pooled level equals the dot
products with the pooled features of frame j, and interpolating correlations equals correlating with interpolated
features. Both take the correlations at the (2r+2)^2 integer neighbours of the window and blend them with the one
fractional offset all 49 positions share, as the upstream CUDA kernels do.
"""
from __future__ import annotations

from dataclasses import dataclass
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


def _split(coords: torch.Tensor, radius: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer start (x, y) of the (2r+2)^2 lookup window at each of ``coords`` (..., 2) on an h x w level, and
    the fractional offset (..., 2) that all its taps share."""
    # Far outside (or NaN) coordinates move to where the whole window is still outside: same zeros, no overflow.
    lo = -(radius + 2.0)
    coords = torch.nan_to_num(coords, nan=lo)
    x = coords[..., 0].clamp(lo, w + radius + 1.0)
    y = coords[..., 1].clamp(lo, h + radius + 1.0)
    x0, y0 = torch.floor(x), torch.floor(y)
    start = torch.stack([x0, y0], dim=-1).long() - radius
    return start, torch.stack([x - x0, y - y0], dim=-1)


def _inside(start: torch.Tensor, size: int, h: int, w: int) -> torch.Tensor:
    """Which pixels of the size x size squares at ``start`` (M, 2) (x, y) lie in the h x w image: (M, size^2), y-major."""
    steps = torch.arange(size, device=start.device)
    xs = start[:, 0:1] + steps
    ys = start[:, 1:2] + steps
    return (((ys >= 0) & (ys < h))[:, :, None] & ((xs >= 0) & (xs < w))[:, None, :]).flatten(1)


def _rect(start: torch.Tensor, size: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices into h*w (clamped, y-major) of the size x size squares at ``start`` (M, 2) (x, y) -> (M, size^2),
    and which of them lie inside the image."""
    steps = torch.arange(size, device=start.device)
    xs = (start[:, 0:1] + steps).clamp(0, w - 1)
    ys = (start[:, 1:2] + steps).clamp(0, h - 1)
    return (ys[:, :, None] * w + xs[:, None, :]).flatten(1), _inside(start, size, h, w)


def _sample(volume: torch.Tensor, start: torch.Tensor, frac: torch.Tensor, radius: int, h: int, w: int) -> torch.Tensor:
    """Lookup features (Q, (2r+1)^2) from correlation rows ``volume`` (Q, h*w), one row per query."""
    k = 2 * radius + 2
    index, valid = _rect(start, k, h, w)
    corners = torch.gather(volume, 1, index).masked_fill_(~valid, 0.0)
    return _blend(corners.view(-1, k, k), frac)


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


def _checked_edges(fmaps: torch.Tensor, ii: torch.Tensor, jj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Edge frame indices ii, jj as long tensors on the features' device, checked against ``fmaps`` (N, ...)."""
    ii, jj = _edge_index(ii, fmaps.device), _edge_index(jj, fmaps.device)
    if ii.shape != jj.shape or ii.dim() != 1:
        raise ValueError(f"ii and jj must be 1-D and equally long, got {tuple(ii.shape)} and {tuple(jj.shape)}")
    n = fmaps.shape[0]
    if len(ii) and (min(ii.min(), jj.min()) < 0 or max(ii.max(), jj.max()) >= n):
        raise ValueError(f"edge frame indices must lie in [0, {n}) (one feature map per frame)")
    return ii, jj


def _check_coords(coords: torch.Tensor, edges: int, grid_hw: tuple[int, int]) -> None:
    if coords.shape != (edges, *grid_hw, 2):
        raise ValueError(f"coords must have shape {(edges, *grid_hw, 2)}, got {tuple(coords.shape)}")


@dataclass(eq=False)
class VolumeCorr:
    """Stored all-pairs correlation pyramid per edge: ``volumes[l]`` is (E, h*w, h_l*w_l), already scaled."""

    volumes: list[torch.Tensor]
    grid_hw: tuple[int, int]
    level_hw: list[tuple[int, int]]
    radius: int = RADIUS

    @classmethod
    def build(cls, fmaps: torch.Tensor, ii: torch.Tensor, jj: torch.Tensor, levels: int = LEVELS,
              radius: int = RADIUS) -> VolumeCorr:
        """Volumes for edges ii[e] -> jj[e] from per-frame features ``fmaps`` (N, C, h, w)."""
        ii, jj = _checked_edges(fmaps, ii, jj)
        pyramid = feature_pyramid(fmaps, levels)
        f1 = fmaps[ii].flatten(2).transpose(1, 2) * SCALE  # (E, h*w, C)
        # Pooling the volume over the second image equals the volume with the pooled second feature map.
        volumes = [torch.bmm(f1, level[jj].flatten(2)) for level in pyramid]
        return cls(volumes, (fmaps.shape[-2], fmaps.shape[-1]), [(p.shape[-2], p.shape[-1]) for p in pyramid], radius)

    @property
    def num_edges(self) -> int:
        return self.volumes[0].shape[0]

    def __call__(self, coords: torch.Tensor) -> torch.Tensor:
        e, (h, w) = self.num_edges, self.grid_hw
        _check_coords(coords, e, self.grid_hw)
        queries = coords.reshape(-1, 2)
        features = []
        for level, (volume, (hl, wl)) in enumerate(zip(self.volumes, self.level_hw)):
            start, frac = _split(queries / 2**level, self.radius, hl, wl)
            features.append(_sample(volume.reshape(-1, hl * wl), start, frac, self.radius, hl, wl))
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


@dataclass(eq=False)
class LocalCorr:
    """On-the-fly local correlation: per-frame feature pyramids plus edge indices, no stored volumes.

    Every lookup computes its correlations afresh, in chunks bounded by ``chunk_elements`` floats (default 64 MB):
    - levels no larger than one patch: the level's whole volume for a few edges at a time, one matrix product
      each, then the volume lookup.
    - larger levels, in tiles of ``tile`` x ``tile`` grid pixels of one edge: when the tile's windows fit in one
      ``patch`` x ``patch`` square (smooth motion, the usual case), one small matrix product of the tile's
      features with the square's; otherwise the 64 neighbour feature vectors of every query are gathered.
    """

    pyramid: list[torch.Tensor]
    ii: torch.Tensor
    jj: torch.Tensor
    radius: int = RADIUS
    chunk_elements: int = 1 << 24
    tile: int = 8
    patch: int = 20

    def __post_init__(self) -> None:
        if self.patch < 2 * self.radius + 1 + self.tile:
            raise ValueError(f"patch {self.patch} cannot hold the windows of a {self.tile}x{self.tile} tile at "
                             f"radius {self.radius}")

    @classmethod
    def build(cls, fmaps: torch.Tensor, ii: torch.Tensor, jj: torch.Tensor, levels: int = LEVELS,
              radius: int = RADIUS, **options: int) -> LocalCorr:
        """Lookup for edges ii[e] -> jj[e] over per-frame features ``fmaps`` (N, C, h, w); ``options`` go to
        the constructor (chunk_elements, tile, patch)."""
        ii, jj = _checked_edges(fmaps, ii, jj)
        # Channels-last rows so that gathers read contiguous feature vectors.
        pyramid = [p.permute(0, 2, 3, 1).contiguous() for p in feature_pyramid(fmaps, levels)]
        return cls(pyramid, ii, jj, radius, **options)

    @property
    def num_edges(self) -> int:
        return self.ii.shape[0]

    def _with_edges(self, pyramid: list[torch.Tensor], ii: torch.Tensor, jj: torch.Tensor) -> LocalCorr:
        return LocalCorr(pyramid, ii, jj, self.radius, self.chunk_elements, self.tile, self.patch)

    def _tiles(self, x: torch.Tensor) -> torch.Tensor:
        """(E, h, w, D) -> (E * tiles, tile^2, D), edge-major; the grid is padded by replication to whole tiles."""
        e, h, w, d = x.shape
        t = self.tile
        x = F.pad(x.permute(0, 3, 1, 2), (0, -w % t, 0, -h % t), mode="replicate").permute(0, 2, 3, 1)
        th, tw = x.shape[1] // t, x.shape[2] // t
        return x.reshape(e, th, t, tw, t, d).permute(0, 1, 3, 2, 4, 5).reshape(e * th * tw, t * t, d)

    def _untile(self, x: torch.Tensor, e: int, h: int, w: int) -> torch.Tensor:
        t = self.tile
        th, tw = -(-h // t), -(-w // t)
        x = x.view(e, th, tw, t, t, -1).permute(0, 1, 3, 2, 4, 5).reshape(e, th * t, tw * t, -1)
        return x[:, :h, :w]

    def __call__(self, coords: torch.Tensor) -> torch.Tensor:
        _, h, w, _ = self.pyramid[0].shape
        e = self.num_edges
        _check_coords(coords, e, (h, w))
        if e == 0:
            return coords.new_zeros(0, corr_channels(len(self.pyramid), self.radius), h, w)
        f1 = self._tiles(self.pyramid[0][self.ii] * SCALE)
        queries = self._tiles(coords)
        features = []
        for level, table in enumerate(self.pyramid):
            _, hl, wl, _ = table.shape
            start, frac = _split(queries / 2**level, self.radius, hl, wl)
            lookup = self._dense if hl * wl <= self.patch**2 else self._tiled
            features.append(lookup(table, f1, start, frac))
        return self._untile(torch.cat(features, dim=2), e, h, w).permute(0, 3, 1, 2).contiguous()

    def _dense(self, table: torch.Tensor, f1: torch.Tensor, start: torch.Tensor, frac: torch.Tensor) -> torch.Tensor:
        """Features (T, tile^2, 49) of a small level (N, hl, wl, C) through its whole volume, a few edges at a time."""
        _, hl, wl, c = table.shape
        tiles, tt, _ = f1.shape
        e = self.num_edges
        per_edge = tiles * tt // e  # tiles are edge-major
        f1, start, frac = f1.reshape(e, per_edge, c), start.reshape(e, per_edge, 2), frac.reshape(e, per_edge, 2)
        out = []
        chunk = max(1, self.chunk_elements // (per_edge * hl * wl))
        for s in range(0, e, chunk):
            part = slice(s, s + chunk)
            volume = torch.bmm(f1[part], table[self.jj[part]].view(-1, hl * wl, c).transpose(1, 2))
            out.append(_sample(volume.view(-1, hl * wl), start[part].reshape(-1, 2), frac[part].reshape(-1, 2),
                               self.radius, hl, wl))
        return torch.cat(out).view(tiles, tt, -1)

    def _tiled(self, table: torch.Tensor, f1: torch.Tensor, start: torch.Tensor, frac: torch.Tensor) -> torch.Tensor:
        """Features (T, tile^2, 49) of a level (N, hl, wl, C) by patches where the tile's windows fit, else gathers."""
        tiles, tt, c = f1.shape
        _, hl, wl, _ = table.shape
        k, p = 2 * self.radius + 2, self.patch
        rows_of = table.view(-1, c)
        frame = self.jj.repeat_interleave(tiles // self.num_edges)  # target frame of every tile
        corner = start.amin(dim=1)
        fits = ((start.amax(dim=1) - corner + k) <= p).all(dim=1)
        out = torch.empty(tiles, tt, (k - 1) ** 2, dtype=f1.dtype, device=f1.device)
        steps = torch.arange(k, device=f1.device)

        chunk = max(1, self.chunk_elements // (p * p * (c + tt)))
        fit = fits.nonzero().squeeze(1)
        for s in range(0, len(fit), chunk):
            sel = fit[s:s + chunk]
            index, _ = _rect(corner[sel], p, hl, wl)  # out-of-image patch pixels: masked at the taps below
            local = torch.bmm(f1[sel], rows_of[frame[sel, None] * (hl * wl) + index].transpose(1, 2))  # (m, tt, p*p)
            rel = start[sel] - corner[sel, None]  # window starts inside the patch
            ys = rel[..., 1, None] + steps
            xs = rel[..., 0, None] + steps
            taps = (ys[..., :, None] * p + xs[..., None, :]).flatten(2)
            valid = _inside(start[sel].view(-1, 2), k, hl, wl).view(len(sel), tt, -1)
            corners = torch.gather(local, 2, taps).masked_fill_(~valid, 0.0)
            out[sel] = _blend(corners.view(-1, k, k), frac[sel].view(-1, 2)).view(len(sel), tt, -1)

        chunk = max(1, self.chunk_elements // (tt * k * k * c))
        rest = (~fits).nonzero().squeeze(1)
        for s in range(0, len(rest), chunk):
            sel = rest[s:s + chunk]
            index, valid = _rect(start[sel].view(-1, 2), k, hl, wl)
            rows = rows_of[frame[sel].repeat_interleave(tt)[:, None] * (hl * wl) + index]  # (m*tt, k*k, C)
            corners = torch.bmm(rows, f1[sel].view(-1, c, 1)).squeeze(-1).masked_fill_(~valid, 0.0)
            out[sel] = _blend(corners.view(-1, k, k), frac[sel].view(-1, 2)).view(len(sel), tt, -1)
        return out

    def select(self, index: torch.Tensor) -> LocalCorr:
        return self._with_edges(self.pyramid, self.ii[index], self.jj[index])

    def cat(self, other: CorrBlock) -> LocalCorr:
        if not isinstance(other, LocalCorr) or other.radius != self.radius or len(other.pyramid) != len(self.pyramid):
            raise ValueError("can only concatenate LocalCorr blocks of the same levels and radius")
        if other.pyramid[0] is self.pyramid[0]:
            return self._with_edges(self.pyramid, torch.cat([self.ii, other.ii]), torch.cat([self.jj, other.jj]))
        offset = self.pyramid[0].shape[0]
        pyramid = [torch.cat([a, b], dim=0) for a, b in zip(self.pyramid, other.pyramid)]
        return self._with_edges(pyramid, torch.cat([self.ii, other.ii + offset]), torch.cat([self.jj, other.jj + offset]))

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
