"""Surface normals from a depth map: unproject, take central differences, cross them."""
from __future__ import annotations

import torch
import torch.nn.functional as F

# Neighbours whose depths differ by more than this fraction straddle an occlusion edge: no normal there.
EDGE_JUMP = 0.05


def unproject_depth(depth: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """(B,1,H,W) z-depth and (B,4) [fx, fy, cx, cy] -> (B,3,H,W) camera-frame points."""
    b, _, h, w = depth.shape
    v, u = torch.meshgrid(torch.arange(h, device=depth.device, dtype=depth.dtype),
                          torch.arange(w, device=depth.device, dtype=depth.dtype), indexing="ij")
    fx, fy, cx, cy = (intrinsics[:, k].to(depth.dtype).view(b, 1, 1) for k in range(4))
    z = depth[:, 0]
    return torch.stack(((u - cx) / fx * z, (v - cy) / fy * z, z), dim=1)


def depth_to_normals(depth: torch.Tensor, intrinsics: torch.Tensor,
                     valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit normals (B,3,H,W) facing the camera and where they are defined (B,1,H,W) bool.

    A normal needs its four neighbours valid and no depth jump above EDGE_JUMP between them; the image border
    has none. Any uniform scale of the depth gives the same normals.
    """
    valid = depth > 0 if valid is None else valid & (depth > 0)
    p = unproject_depth(depth, intrinsics)
    dx = p[:, :, 1:-1, 2:] - p[:, :, 1:-1, :-2]
    dy = p[:, :, 2:, 1:-1] - p[:, :, :-2, 1:-1]
    n = torch.cross(dx, dy, dim=1)
    centre = p[:, :, 1:-1, 1:-1]
    # Face the camera: the normal points against the viewing ray.
    n = torch.where((n * centre).sum(1, keepdim=True) > 0, -n, n)
    n = F.normalize(n, dim=1, eps=1e-12)
    z = depth[:, :, 1:-1, 1:-1].clamp_min(1e-12)
    near = [depth[:, :, 1:-1, 2:], depth[:, :, 1:-1, :-2], depth[:, :, 2:, 1:-1], depth[:, :, :-2, 1:-1]]
    ok = valid[:, :, 1:-1, 1:-1]
    for d in near:
        ok = ok & (d > 0) & ((d - z).abs() < EDGE_JUMP * z)
    ok = ok & (n.abs().sum(1, keepdim=True) > 0)
    return F.pad(n, (1, 1, 1, 1)), F.pad(ok, (1, 1, 1, 1))
