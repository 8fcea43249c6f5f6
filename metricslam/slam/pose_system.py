"""The reduced (Schur complement) pose system of dense BA, kept as 6x6 blocks and solved dense or sparse.

A keyframe's pose couples only with the poses it shares edges or source depths with, so the reduced system
H dx = v of a global BA over K keyframes is block-sparse: it is kept as 6x6 blocks summed per (row, col), so
its memory grows with the number of coupled pairs, not with K^2. The solve applies DROID's damping
H + lm diag(H) + ep I. Small systems, and every system off the CPU, are solved by a dense Cholesky in torch;
larger CPU systems by a sparse LU (SciPy's SuperLU with a fill-reducing ordering), whose cost stays near linear
in K where the dense factorisation grows as K^3 (time) and K^2 (memory).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch

# Free poses from which a CPU system is solved sparse. Below it the dense Cholesky is as fast (one step at a 6x8
# grid, 1 thread: 32 poses 18 / 18 ms dense / sparse, 96: 45 / 47 ms, 256: 203 / 91 ms).
SPARSE_MIN_POSES = 96
# Extra diagonal damping, relative to the mean |diagonal|, tried in turn when the factorisation fails.
EXTRA_DAMPING = (0.0, 1e-6, 1e-4, 1e-2)
# Blocks collected before they are summed per (row, col): about 75 MB of float64 6x6 blocks.
MAX_PENDING_BLOCKS = 1 << 18


class PoseSystem:
    """Accumulates H (as 6x6 blocks) and v (K, 6) in float64 over the free poses of a K-keyframe problem.

    Blocks are collected as they come and summed per (row, col) once MAX_PENDING_BLOCKS wait, and before a
    sparse solve; a dense solve adds them straight into the matrix."""

    def __init__(self, fixed: torch.Tensor):
        self.fixed = fixed
        self.K = fixed.shape[0]
        device = fixed.device
        free = ~fixed
        self.n = int(free.sum())
        # Position of every pose among the free ones (-1 when fixed).
        self.pos = torch.where(free, torch.cumsum(free.long(), 0) - 1, torch.full_like(free, -1, dtype=torch.long))
        self.keys = torch.zeros(0, dtype=torch.long, device=device)
        self.blocks = torch.zeros(0, 6, 6, dtype=torch.float64, device=device)
        self.v = torch.zeros(self.K, 6, dtype=torch.float64, device=device)
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # (keys, blocks) not summed yet
        self._pending_count = 0

    def add_blocks(self, rows: torch.Tensor, cols: torch.Tensor, blocks: torch.Tensor) -> None:
        """H[rows[k], cols[k]] += blocks[k] (pose indices; blocks touching a fixed pose are dropped)."""
        r, c = self.pos[rows], self.pos[cols]
        keep = (r >= 0) & (c >= 0)
        self._pending.append((r[keep] * self.n + c[keep], blocks[keep].to(torch.float64)))
        self._pending_count += int(keep.sum())
        if self._pending_count > MAX_PENDING_BLOCKS:
            self._coalesce()

    def _coalesce(self) -> None:
        """Sum the pending blocks into the unique (row, col) ones."""
        keys = torch.cat([self.keys] + [k for k, _ in self._pending])
        unique, inverse = torch.unique(keys, return_inverse=True)
        summed = self.blocks.new_zeros(unique.shape[0], 6, 6)
        summed.index_add_(0, inverse, torch.cat([self.blocks] + [b for _, b in self._pending]))
        self.keys, self.blocks = unique, summed
        self._pending, self._pending_count = [], 0

    def add_edge_pairs(self, X: torch.Tensor, e: torch.Tensor, f: torch.Tensor, A: torch.Tensor, ii: torch.Tensor,
                       jj: torch.Tensor) -> None:
        """H += B_e^T X B_f for edge pairs (e, f), where B_e maps the pose increments of edge e to the increment
        of its relative pose seen by the target: dx_j - Adj(T_ij) dx_i (so J_i = -J_j Adj)."""
        At = A[e].transpose(1, 2)
        XA = X @ A[f]
        self.add_blocks(torch.cat([jj[e], jj[e], ii[e], ii[e]]), torch.cat([jj[f], ii[f], jj[f], ii[f]]),
                        torch.cat([X, -XA, -At @ X, At @ XA]))

    def add_edge_vectors(self, x: torch.Tensor, A: torch.Tensor, ii: torch.Tensor, jj: torch.Tensor) -> None:
        """v += B_e^T x_e for every edge e."""
        self.v.index_add_(0, torch.cat([jj, ii]), torch.cat([x, -(A.transpose(1, 2) @ x[..., None])[..., 0]]))

    def solve(self, lm: float, ep: float) -> torch.Tensor:
        """Damped solve; (K, 6) float64 pose increments, zero for the fixed poses."""
        dx = torch.zeros(self.K, 6, dtype=torch.float64, device=self.v.device)
        if self.n == 0:
            return dx
        v = self.v[~self.fixed].reshape(-1)
        sparse = self.n >= SPARSE_MIN_POSES and self.v.device.type == "cpu"
        dx[~self.fixed] = (self._solve_sparse(v, lm, ep) if sparse else self._solve_dense(v, lm, ep)).reshape(-1, 6)
        return dx

    def _solve_dense(self, v: torch.Tensor, lm: float, ep: float) -> torch.Tensor:
        n = self.n
        H = self.blocks.new_zeros(n * n, 6, 6)
        for keys, blocks in [(self.keys, self.blocks)] + self._pending:
            H.index_add_(0, keys, blocks)
        H = H.view(n, n, 6, 6).transpose(1, 2).reshape(6 * n, 6 * n)
        diag = H.diagonal()
        scale = float(diag.abs().mean().clamp_min(1e-12))
        for extra in EXTRA_DAMPING:
            L, info = torch.linalg.cholesky_ex(H + torch.diag(lm * diag + ep + extra * scale))
            if int(info) == 0:
                return torch.cholesky_solve(v[:, None], L)[:, 0]
        Hd = H + torch.diag(lm * diag + ep)
        if not bool(torch.isfinite(Hd).all() and torch.isfinite(v).all()):
            return torch.zeros_like(v)
        return torch.linalg.pinv(Hd, hermitian=True) @ v

    def _solve_sparse(self, v: torch.Tensor, lm: float, ep: float) -> torch.Tensor:
        self._coalesce()
        n = self.n
        keys = self.keys.numpy()  # sorted by torch.unique: row-major block order, as BSR wants
        rows, cols = keys // n, keys % n
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))])
        H = scipy.sparse.bsr_matrix((self.blocks.numpy(), cols, indptr), shape=(6 * n, 6 * n)).tocsc()
        diag = H.diagonal()
        scale = max(float(np.abs(diag).mean()), 1e-12)
        rhs = v.numpy()
        if np.isfinite(H.data).all() and np.isfinite(rhs).all():
            for extra in EXTRA_DAMPING:
                damped = (H + scipy.sparse.diags(lm * diag + ep + extra * scale)).tocsc()
                try:
                    x = scipy.sparse.linalg.splu(damped, permc_spec="MMD_AT_PLUS_A").solve(rhs)
                except RuntimeError:  # exactly singular
                    continue
                if np.isfinite(x).all():
                    return torch.from_numpy(x)
        return torch.zeros_like(v)
