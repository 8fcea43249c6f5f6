"""Dense BA: convergence to ground truth, metric scale from priors, gauge, Schur vs dense solve, modes, robustness."""
import math
from dataclasses import replace

import pytest
import torch

from metricslam.config import ConfigError, load_config
from metricslam.errors import MetricSlamError
from metricslam.geometry import se3
from metricslam.geometry.projective import reproject
from metricslam.slam import ba, pose_system
from metricslam.slam.ba import dense_ba, gauss_newton_step, refine_pose
from metricslam.slam.config import BAOptions
from metricslam.testing.ba_problems import BAProblem, synthetic_problem, window_edges
from metricslam.testing.ba_reference import dense_reference_step

F64 = torch.float64
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


pytestmark = pytest.mark.usefixtures("one_thread")


def perturb(problem: BAProblem, t: float = 0.05, r_deg: float = 3.0, dz: float = 0.2, seed: int = 1,
            keep: tuple[int, ...] = (0,)) -> BAProblem:
    """Poses moved by t metres and r_deg degrees (random directions), inverse depths by up to +-dz."""
    g = torch.Generator().manual_seed(seed)
    K = problem.poses_cw.shape[0]

    def directions(n):
        v = torch.randn(n, 3, generator=g, dtype=F64)
        return v / v.norm(dim=-1, keepdim=True)

    T_wc = se3.inverse(problem.poses_cw.cpu())
    T_wc[:, :3, 3] += t * directions(K)
    T_wc[:, :3, :3] = se3.so3_exp(math.radians(r_deg) * directions(K)) @ T_wc[:, :3, :3]
    poses = se3.inverse(T_wc).to(problem.poses_cw.device)
    poses[list(keep)] = problem.poses_cw[list(keep)]
    noise = 1 + dz * (2 * torch.rand(problem.invdepths.shape, generator=g) - 1)
    return replace(problem, poses_cw=poses, invdepths=problem.invdepths * noise.to(problem.invdepths))


def centre_error(poses_cw: torch.Tensor, truth_cw: torch.Tensor) -> float:
    """Largest camera-centre distance in metres."""
    return float((se3.inverse(poses_cw)[:, :3, 3] - se3.inverse(truth_cw)[:, :3, 3]).norm(dim=-1).max())


def rotation_error(poses_cw: torch.Tensor, truth_cw: torch.Tensor) -> float:
    return float(se3.so3_log(poses_cw[:, :3, :3] @ truth_cw[:, :3, :3].transpose(1, 2)).norm(dim=-1).max())


def depth_error(invdepths: torch.Tensor, truth: torch.Tensor) -> float:
    """Largest relative depth error."""
    return float((truth.double() / invdepths.double() - 1).abs().max())


def solve(problem: BAProblem, **kwargs):
    return dense_ba(**vars(problem), **kwargs)


@pytest.mark.parametrize("K, dtype, with_prior", [(5, F64, False), (12, F64, True), (8, torch.float32, True)])
def test_noise_free_problem_converges_to_truth(K, dtype, with_prior):
    truth = synthetic_problem(K, 24, 32, seed=K, dtype=dtype)
    if not with_prior:
        # Without priors the scale is a gauge freedom: fix two poses instead of one.
        truth = replace(truth, prior_invdepth=None, prior_conf=None)
    fixed = (0,) if with_prior else (0, 1)
    start = perturb(truth, keep=fixed)
    assert centre_error(start.poses_cw, truth.poses_cw) > 0.03 and depth_error(start.invdepths, truth.invdepths) > 0.15
    poses, invd = solve(start, fixed=fixed, iters=12)
    assert centre_error(poses, truth.poses_cw) < 1e-4
    assert rotation_error(poses, truth.poses_cw) < 1e-4
    assert depth_error(invd, truth.invdepths) < 1e-4
    assert poses.dtype == F64 and invd.dtype == dtype


def test_metric_priors_restore_scale_from_wrong_initialisation():
    # 1 % white noise on the prior: with alpha = 0.05 the priors dominate the depths, and noisier priors bias the
    # scale (errors in variables: about -4 % at 5 % noise); see BAOptions.alpha.
    truth = synthetic_problem(8, 24, 32, seed=3, prior_noise=0.01, dtype=F64)
    start = perturb(truth, t=0.01, r_deg=0.5, dz=0.05)
    T_wc = se3.inverse(start.poses_cw)
    T_wc[:, :3, 3] *= 1.5  # camera 0 is the world origin, so scaling the world keeps it fixed
    start = replace(start, poses_cw=se3.inverse(T_wc), invdepths=start.invdepths / 1.5)
    poses, invd = solve(start, iters=10)
    true_c = se3.inverse(truth.poses_cw)[1:, :3, 3]
    est_c = se3.inverse(poses)[1:, :3, 3]
    trajectory_scale = float((est_c * true_c).sum() / (true_c * true_c).sum())
    depth_scale = float((truth.invdepths / invd).median())
    assert abs(trajectory_scale - 1) < 0.005, trajectory_scale
    assert abs(depth_scale - 1) < 0.005, depth_scale
    assert centre_error(poses, truth.poses_cw) < 0.01


def test_without_priors_the_gauge_stays_fixed_and_the_problem_is_solvable():
    truth = synthetic_problem(6, 24, 32, seed=5, dtype=F64)
    # Move the world origin away from camera 0 (targets only depend on relative poses).
    world = se3.se3_exp(torch.tensor([0.4, -0.2, 1.0, 0.1, 0.2, -0.3], dtype=F64))
    truth = replace(truth, poses_cw=truth.poses_cw @ world, prior_invdepth=None, prior_conf=None)
    start = perturb(truth, t=0.02, r_deg=1.0, dz=0.1)
    poses, invd = solve(start, fixed=(0,), iters=15)
    assert torch.equal(poses[0], start.poses_cw[0])
    assert torch.isfinite(poses).all() and torch.isfinite(invd).all()
    # Exact up to the one unobservable global scale s about camera 0.
    true_c = (truth.poses_cw[:1] @ se3.inverse(truth.poses_cw))[:, :3, 3]
    est_c = (poses[:1] @ se3.inverse(poses))[:, :3, 3]
    s = float((est_c * true_c).sum() / (true_c * true_c).sum())
    assert 0.5 < s < 2.0
    assert float((est_c - s * true_c).norm(dim=-1).max()) < 1e-4 * s
    assert rotation_error(poses, truth.poses_cw) < 1e-4
    assert float((truth.invdepths / (s * invd) - 1).abs().max()) < 1e-4
    coords, _ = reproject(poses, invd, truth.intrinsics, truth.ii, truth.jj)
    assert float((coords - truth.targets).abs().max()) < 1e-3

    # No fixed pose at all, and no damping: the system is singular; the step must stay finite and still fit.
    opts = BAOptions(lm=0.0, ep=0.0)
    poses, invd = solve(start, fixed=(), iters=8, options=opts)
    assert torch.isfinite(poses).all() and torch.isfinite(invd).all()
    coords, _ = reproject(poses, invd, truth.intrinsics, truth.ii, truth.jj)
    assert float((coords - truth.targets).abs().max()) < 1e-3


def test_pose_without_edges_is_left_alone_when_the_system_is_singular():
    truth = synthetic_problem(5, 12, 16, seed=2, dtype=F64)
    start = perturb(truth)
    keep = (start.ii != 4) & (start.jj != 4)  # frame 4 loses every edge: its block of H is exactly zero
    start = replace(start, ii=start.ii[keep], jj=start.jj[keep], targets=start.targets[keep],
                    weights=start.weights[keep])
    poses, invd = solve(start, iters=10, options=BAOptions(lm=0.0, ep=0.0))
    assert torch.isfinite(poses).all() and torch.isfinite(invd).all()
    assert torch.allclose(poses[4], start.poses_cw[4])
    assert centre_error(poses[:4], truth.poses_cw[:4]) < 1e-4


@pytest.mark.parametrize("robust", ["none", "huber"])
@pytest.mark.parametrize("large", [False, True], ids=["one chunk, dense solve", "chunked, sparse solve"])
def test_schur_step_equals_dense_normal_equation_solve(robust, large, monkeypatch):
    if large:  # the paths a global BA over many keyframes takes, forced on a small problem
        monkeypatch.setattr(ba, "CHUNK_EDGE_PIXELS", 2 * 6 * 8)
        monkeypatch.setattr(pose_system, "SPARSE_MIN_POSES", 1)
        monkeypatch.setattr(pose_system, "MAX_PENDING_BLOCKS", 8)
    g = torch.Generator().manual_seed(0)
    p = perturb(synthetic_problem(6, 6, 8, seed=7, dtype=F64, target_noise=0.5, prior_noise=0.05), t=0.03)
    K = 6
    p.prior_conf[1] = 0  # frame 1 has no prior: eta damps it instead
    p.prior_conf[2, :3] = 0.3
    # An irregular graph: frame 3 has a single outgoing edge, frame 4 a duplicate one, frame 5 is only a target.
    ii, jj = torch.tensor([0, 0, 1, 1, 2, 2, 2, 3, 4, 4, 4, 4]), torch.tensor([1, 2, 0, 3, 0, 3, 4, 4, 2, 3, 3, 5])
    p.ii, p.jj = ii, jj
    p.targets = reproject(p.poses_cw, p.invdepths, p.intrinsics, ii, jj)[0]
    p.targets += torch.randn(p.targets.shape, generator=g, dtype=F64)
    p.weights = torch.rand(len(ii), 6, 8, 2, generator=g, dtype=F64)
    fixed = torch.tensor([True, False, False, True, False, False])
    eta = 0.01 * torch.rand(K, 6, 8, generator=g, dtype=F64)
    opts = BAOptions(lm=0.0, ep=0.0, robust=robust, robust_px=1.0)
    args = (p.poses_cw, p.invdepths, p.intrinsics, ii, jj, p.targets, p.weights, p.prior_invdepth, p.prior_conf,
            fixed, eta, opts)
    dx, dz = gauss_newton_step(*args)
    dx_ref, dz_ref = dense_reference_step(*args)
    assert float(dx_ref.norm()) > 1e-3 and float(dz_ref.norm()) > 1e-3
    assert float((dx - dx_ref).norm() / dx_ref.norm()) < 1e-8
    assert float((dz - dz_ref).norm() / dz_ref.norm()) < 1e-8
    assert torch.equal(dx[fixed], torch.zeros(2, 6, dtype=F64))
    # The float32 hot path (float64 reduced system) stays close to the float64 reference.
    args32 = [a.float() if torch.is_tensor(a) and a.is_floating_point() and a is not p.poses_cw else a for a in args]
    dx32, dz32 = gauss_newton_step(*args32)
    assert dz32.dtype == torch.float32
    assert float((dx32 - dx_ref).norm() / dx_ref.norm()) < 1e-4
    assert float((dz32.double() - dz_ref).norm() / dz_ref.norm()) < 1e-4


def test_motion_only_moves_only_free_poses():
    truth = synthetic_problem(6, 24, 32, seed=11, dtype=F64)
    start = perturb(truth, dz=0.0, keep=(0, 2))
    opts = BAOptions(motion_only=True)
    poses, invd = solve(start, fixed=(0, 2), iters=10, options=opts)
    assert torch.equal(invd, start.invdepths)
    assert torch.equal(poses[[0, 2]], start.poses_cw[[0, 2]])
    assert centre_error(poses, truth.poses_cw) < 1e-4 and rotation_error(poses, truth.poses_cw) < 1e-4


def test_depth_only_moves_only_depths():
    truth = synthetic_problem(6, 24, 32, seed=12, dtype=F64)
    truth = replace(truth, prior_invdepth=None, prior_conf=None)
    start = replace(truth, invdepths=perturb(truth).invdepths)
    poses, invd = solve(start, iters=10, options=BAOptions(depth_only=True))
    assert torch.equal(poses, start.poses_cw)
    assert depth_error(start.invdepths, truth.invdepths) > 0.15
    assert depth_error(invd, truth.invdepths) < 1e-4


def test_options_are_validated():
    with pytest.raises(MetricSlamError, match="motion_only and depth_only"):
        BAOptions(motion_only=True, depth_only=True)
    with pytest.raises(MetricSlamError, match="robust"):
        BAOptions(robust="tukey")


def test_options_load_from_yaml(tmp_path):
    path = tmp_path / "ba.yaml"
    path.write_text("alpha: 0.1\nrobust: cauchy\nrobust_px: 3\n")
    opts = load_config(BAOptions, path)
    assert opts.alpha == 0.1 and opts.robust == "cauchy" and opts.robust_px == 3.0
    path.write_text("robust: tukey\n")
    with pytest.raises(ConfigError):
        load_config(BAOptions, path)


def _corrupted(seed: int = 21) -> tuple[BAProblem, BAProblem]:
    """20 % of the targets moved 30 px in random directions; priors with 1 % noise; a perturbed start."""
    truth = synthetic_problem(8, 24, 32, seed=seed, prior_noise=0.01, dtype=F64)
    g = torch.Generator().manual_seed(seed)
    bad = torch.rand(truth.targets.shape[:3], generator=g) < 0.2
    angle = 2 * math.pi * torch.rand(truth.targets.shape[:3], generator=g, dtype=F64)
    offset = 30.0 * torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1)
    start = perturb(truth, t=0.03, r_deg=1.5, dz=0.1)
    start.targets = truth.targets + offset * bad[..., None]
    return truth, start


def test_cauchy_kernel_rejects_corrupted_targets():
    truth, start = _corrupted()
    poses, invd = solve(start, iters=12, options=BAOptions(robust="cauchy", robust_px=2.0))
    assert centre_error(poses, truth.poses_cw) < 0.01
    assert rotation_error(poses, truth.poses_cw) < math.radians(0.2)
    assert float((truth.invdepths / invd - 1).abs().median()) < 0.01


def test_huber_bounds_but_does_not_remove_the_damage_of_gross_outliers():
    """Plain least squares on the same data ends metres away (so the test above can fail). Huber's influence
    does not vanish for 30 px outliers: it cuts the error by more than 10x but, unlike Cauchy, not below 1 cm."""
    truth, start = _corrupted()
    plain = centre_error(solve(start, iters=12)[0], truth.poses_cw)
    huber = centre_error(solve(start, iters=12, options=BAOptions(robust="huber", robust_px=2.0))[0], truth.poses_cw)
    assert plain > 0.5
    assert huber < plain / 10


def test_prior_kernel_rejects_wrong_prior_pixels():
    truth = synthetic_problem(6, 24, 32, seed=8, dtype=F64)
    bad = torch.rand(truth.invdepths.shape, generator=torch.Generator().manual_seed(0)) < 0.1
    start = perturb(truth, t=0.01, r_deg=0.5, dz=0.05)
    start.prior_invdepth = torch.where(bad, 1.5 * truth.invdepths, truth.invdepths)
    errors = {}
    for kind in ("none", "cauchy"):
        poses, invd = solve(start, iters=10, options=BAOptions(prior_robust=kind))
        errors[kind] = float((truth.invdepths / invd - 1).abs()[bad].median()), centre_error(poses, truth.poses_cw)
    assert errors["none"][0] > 0.2 and errors["none"][1] > 0.1
    assert errors["cauchy"][0] < 0.1 and errors["cauchy"][1] < 0.02


def test_without_edges_only_the_prior_acts():
    p = synthetic_problem(3, 6, 8, dtype=F64)
    none = torch.zeros(0, dtype=torch.long)
    empty = torch.zeros(0, 6, 8, 2, dtype=F64)
    poses, invd = dense_ba(p.poses_cw, 1.1 * p.invdepths, p.intrinsics, none, none, empty, empty, p.prior_invdepth,
                           p.prior_conf, iters=1)
    assert torch.allclose(poses, p.poses_cw, rtol=0, atol=1e-12)  # only re-projected onto SE(3)
    assert torch.allclose(invd, p.prior_invdepth)


def test_refine_pose_of_a_non_keyframe():
    scene = synthetic_problem(5, 24, 32, seed=4, dtype=F64)
    kf = [0, 1, 3, 4]
    frame = 2
    kf_index = torch.tensor([0, 1, 2, 3])
    targets, _ = reproject(scene.poses_cw, scene.invdepths, scene.intrinsics, torch.tensor(kf), torch.full((4,), frame))
    start = perturb(scene, keep=()).poses_cw[frame]
    pose = refine_pose(start, scene.poses_cw[kf], scene.invdepths[kf], scene.intrinsics, kf_index, targets,
                       torch.ones_like(targets), iters=8)
    assert centre_error(start[None], scene.poses_cw[frame][None]) > 0.03
    assert centre_error(pose[None], scene.poses_cw[frame][None]) < 1e-4


def test_normalisation_is_only_a_change_of_units():
    """The same scene at ten times the size gives the same solution at ten times the size."""
    p = perturb(synthetic_problem(5, 12, 16, seed=9, dtype=F64, target_noise=0.3, prior_noise=0.05))
    poses, invd = solve(p, iters=3)
    big = replace(p, poses_cw=p.poses_cw.clone(), invdepths=p.invdepths / 10, prior_invdepth=p.prior_invdepth / 10)
    big.poses_cw[:, :3, 3] *= 10
    poses_big, invd_big = solve(big, iters=3)
    assert torch.allclose(poses_big[:, :3, 3], 10 * poses[:, :3, 3], atol=1e-9)
    assert torch.allclose(poses_big[:, :3, :3], poses[:, :3, :3], atol=1e-10)
    assert torch.allclose(invd_big, invd / 10, rtol=1e-8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    p = perturb(synthetic_problem(6, 24, 32, seed=13, prior_noise=0.05))
    poses, invd = solve(p, iters=3)
    poses_gpu, invd_gpu = solve(p.to("cuda"), iters=3)
    assert torch.allclose(poses_gpu.cpu(), poses, atol=1e-4)
    assert torch.allclose(invd_gpu.cpu(), invd, rtol=1e-3)


def test_window_edges_pattern():
    ii, jj = window_edges(10, radius=3)
    assert len(ii) == 2 * (9 + 8 + 7)
    assert bool(((ii - jj).abs() <= 3).all()) and bool((ii != jj).all())
