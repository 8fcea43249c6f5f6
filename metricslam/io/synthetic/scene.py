"""A synthetic world: triangles in an Open3D RaycastingScene plus one material per object.

World frame: z up, metres. Objects are boxes (optionally rotated about z) and extruded ribbons; every triangle
knows its object, every object its material and its local frame (origin, yaw) for surface coordinates.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import open3d as o3d

from metricslam.io.synthetic.texture import PATTERNS, NoiseTile

# The 12 triangles of a unit box [0,1]^3 (corner k has coordinates given by the bits of k: x=1, y=2, z=4).
_BOX_TRIANGLES = np.array(
    [[0, 2, 1], [1, 2, 3], [4, 5, 6], [5, 7, 6],  # z = 0, z = 1
     [0, 1, 4], [1, 5, 4], [2, 6, 3], [3, 6, 7],  # y = 0, y = 1
     [0, 4, 2], [2, 4, 6], [1, 3, 5], [3, 7, 5]],  # x = 0, x = 1
    dtype=np.int64,
)
_BOX_CORNERS = np.array([[(k >> 0) & 1, (k >> 1) & 1, (k >> 2) & 1] for k in range(8)], dtype=np.float64)


@dataclass(frozen=True)
class Material:
    """Surface appearance: a pattern mixing two colours, modulated by multi-scale noise.

    period: pattern period along the surface's first axis (m); aspect: period ratio second/first axis;
    texel: size of a noise texel (m) -- the finest noise detail; noise: brightness modulation amplitude.
    """

    pattern: str
    colour_a: tuple[float, float, float]
    colour_b: tuple[float, float, float]
    period: float = 0.5
    aspect: float = 1.0
    texel: float = 0.01
    noise: float = 0.25


@dataclass
class Lighting:
    """Directional lights (world directions towards the light) with weights, an ambient term and a sky."""

    directions: np.ndarray
    weights: np.ndarray
    ambient: float
    sky_horizon: tuple[float, float, float] = (0.86, 0.9, 0.95)
    sky_zenith: tuple[float, float, float] = (0.38, 0.56, 0.86)


# Rows of Scene.surface, one column per triangle: everything shading needs. Stored attribute-major so that
# gathering the hit triangles yields one contiguous array per attribute.
# u, v (metres) are affine in the hit point: u = dot(U_AXIS, p) + U0, in the plane of the face, oriented by the
# object's own frame (boxes are axis-aligned there) and shifted by a random per-object offset.
NORMAL, U_AXIS, U0, V_AXIS, V0 = slice(0, 3), slice(3, 6), 6, slice(7, 10), 10
LIT_FRONT, LIT_BACK = 11, 12  # ambient + Lambert, for the side the normal points to and the other side
INV_TEXEL, NOISE_AMP, PERIOD, ASPECT, PATTERN = 13, 14, 15, 16, 17
COLOUR_A, COLOUR_B = slice(18, 21), slice(21, 24)
SURFACE_COLUMNS = 24


@dataclass
class Scene:
    """Everything the renderer needs, plus what a sequence built on it needs (fps, depth PNG scale, path)."""

    name: str
    raycaster: o3d.t.geometry.RaycastingScene
    surface: np.ndarray  # (SURFACE_COLUMNS, T) float32, see the row constants above
    noise: NoiseTile
    lighting: Lighting
    fps: float
    depth_scale: float  # units per metre when depth is written as uint16 PNG
    max_depth: float = np.inf  # hits beyond keep their colour but get depth 0
    extras: dict = field(default_factory=dict)

    @property
    def num_triangles(self) -> int:
        return self.surface.shape[1]


class SceneBuilder:
    """Collects boxes and ribbons with their materials, then builds a Scene."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self._vertices: list[np.ndarray] = []
        self._triangles: list[np.ndarray] = []
        self._tri_object: list[np.ndarray] = []
        self._materials: list[Material] = []
        self._frames: list[tuple[np.ndarray, float]] = []
        self._num_vertices = 0

    def _add(self, vertices: np.ndarray, triangles: np.ndarray, material: Material, origin: np.ndarray,
             yaw: float) -> int:
        if material.pattern not in PATTERNS:
            raise ValueError(f"unknown pattern '{material.pattern}'; use one of {', '.join(PATTERNS)}")
        obj = len(self._materials)
        self._vertices.append(vertices)
        self._triangles.append(triangles + self._num_vertices)
        self._tri_object.append(np.full(len(triangles), obj, np.int64))
        self._num_vertices += len(vertices)
        self._materials.append(material)
        self._frames.append((np.asarray(origin, np.float64), float(yaw)))
        return obj

    def box(self, centre: tuple[float, float, float] | np.ndarray, size: tuple[float, float, float] | np.ndarray,
            material: Material, yaw: float = 0.0) -> int:
        """Add a box of ``size`` (x, y, z extents in its own frame) centred at ``centre``, rotated by ``yaw``."""
        size = np.asarray(size, np.float64)
        centre = np.asarray(centre, np.float64)
        c, s = np.cos(yaw), np.sin(yaw)
        rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        local = (_BOX_CORNERS - 0.5) * size
        corner0 = centre - rot @ (0.5 * size)
        return self._add(local @ rot.T + centre, _BOX_TRIANGLES, material, corner0, yaw)

    def ribbon(self, xy: np.ndarray, heading: np.ndarray, offsets: tuple[float, float], height: float,
               material: Material) -> int:
        """A raised strip following a curve: lateral offsets (left positive) from polyline ``xy`` (N, 2) with
        tangent angles ``heading``; top face at ``height`` plus both side walls (e.g. a kerbed sidewalk)."""
        left = np.stack([-np.sin(heading), np.cos(heading)], axis=1)
        n = len(xy)
        rails = []
        for off in offsets:
            p = xy + off * left
            rails.append(np.column_stack([p, np.zeros(n)]))
            rails.append(np.column_stack([p, np.full(n, height)]))
        vertices = np.concatenate(rails)  # rails: inner-bottom, inner-top, outer-bottom, outer-top
        i = np.arange(n - 1)
        quads = []
        for a, b in ((1, 3), (0, 1), (2, 3)):  # top, inner wall, outer wall
            ra, rb = a * n + i, b * n + i
            quads.append(np.stack([ra, rb, ra + 1], 1))
            quads.append(np.stack([ra + 1, rb, rb + 1], 1))
        return self._add(vertices, np.concatenate(quads), material, np.zeros(3), 0.0)

    def _surface_table(self, vertices: np.ndarray, triangles: np.ndarray, lighting: Lighting) -> np.ndarray:
        obj = np.concatenate(self._tri_object)
        tri = vertices[triangles]
        normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)

        yaw = np.array([f[1] for f in self._frames])[obj]
        origin = np.array([f[0] for f in self._frames])[obj]
        c, s = np.cos(yaw), np.sin(yaw)
        zero, one = np.zeros_like(c), np.ones_like(c)
        local_x = np.stack([c, s, zero], 1)
        local_y = np.stack([-s, c, zero], 1)
        local_z = np.stack([zero, zero, one], 1)
        nx, ny, nz = (np.abs(np.einsum("ij,ij->i", normal, ax)) for ax in (local_x, local_y, local_z))
        along_x = ((nx >= ny) & (nx >= nz))[:, None]
        along_z = (~along_x[:, 0] & (nz >= ny))[:, None]
        u_axis = np.where(along_x, local_y, local_x)
        v_axis = np.where(along_z, local_y, local_z)
        shift = self.rng.uniform(0, 50, (len(self._materials), 2))[obj]

        front = np.maximum(normal @ lighting.directions.T, 0) @ lighting.weights
        back = np.maximum(-normal @ lighting.directions.T, 0) @ lighting.weights
        mats = self._materials

        def per_object(attr: str) -> np.ndarray:
            return np.array([getattr(m, attr) for m in mats], np.float64)[obj]

        table = np.zeros((len(triangles), SURFACE_COLUMNS), np.float64)
        table[:, NORMAL] = normal
        table[:, U_AXIS] = u_axis
        table[:, U0] = shift[:, 0] - np.einsum("ij,ij->i", u_axis, origin)
        table[:, V_AXIS] = v_axis
        table[:, V0] = shift[:, 1] - np.einsum("ij,ij->i", v_axis, origin)
        table[:, LIT_FRONT] = lighting.ambient + front
        table[:, LIT_BACK] = lighting.ambient + back
        table[:, INV_TEXEL] = 1.0 / per_object("texel")
        table[:, NOISE_AMP] = per_object("noise")
        table[:, PERIOD] = per_object("period")
        table[:, ASPECT] = per_object("aspect")
        table[:, PATTERN] = np.array([PATTERNS.index(m.pattern) for m in mats])[obj]
        table[:, COLOUR_A] = np.array([m.colour_a for m in mats])[obj]
        table[:, COLOUR_B] = np.array([m.colour_b for m in mats])[obj]
        return np.ascontiguousarray(table.T, dtype=np.float32)

    def build(self, name: str, lighting: Lighting, fps: float, depth_scale: float,
              max_depth: float = np.inf, **extras: object) -> Scene:
        vertices = np.concatenate(self._vertices)
        triangles = np.concatenate(self._triangles)
        raycaster = o3d.t.geometry.RaycastingScene()
        raycaster.add_triangles(o3d.core.Tensor(vertices.astype(np.float32)),
                                o3d.core.Tensor(triangles.astype(np.uint32)))
        return Scene(
            name=name,
            raycaster=raycaster,
            surface=self._surface_table(vertices, triangles, lighting),
            noise=NoiseTile(self.rng),
            lighting=lighting,
            fps=fps,
            depth_scale=depth_scale,
            max_depth=max_depth,
            extras=dict(extras),
        )


def random_colour(rng: np.random.Generator, base: tuple[float, float, float], spread: float = 0.08) -> tuple[float, float, float]:
    """``base`` RGB jittered per channel, clipped to [0.03, 1]."""
    c = np.clip(np.asarray(base) + rng.uniform(-spread, spread, 3), 0.03, 1.0)
    return (float(c[0]), float(c[1]), float(c[2]))
