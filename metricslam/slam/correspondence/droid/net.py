"""DROID-SLAM's network, laid out so that droid.pth loads with strict=True (spec/droid_net_state_dict.tsv).

- ``fnet`` (instance norm, 128 ch) and ``cnet`` (no norm, 256 ch) encode RGB frames at 1/8 resolution;
  cnet's first half (tanh) initialises the GRU hidden state of every edge leaving the frame, the second half
  (relu) is the constant context input.
- ``update`` is the recurrent update operator applied to a batch of edges i -> j: it encodes the correlation
  features and the motion [coords1 - coords0, target - coords1], steps a ConvGRU with a global-context term and
  predicts, per edge, a flow revision ``delta`` and confidences ``weight`` (both (E, h, w, 2), x then y) and, per
  source frame (edges sharing ii are averaged), a BA damping ``eta`` and a convex-upsampling mask.

The caller owns the hidden state: it keeps one (128, h, w) tensor per edge and feeds it back on the next step.
Upstream's gradient-clipping layers are the identity in the forward pass and are left out (inference only).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from metricslam.geometry.projective import pixel_grid
from metricslam.slam.correspondence.droid.corr import corr_channels
from metricslam.slam.correspondence.droid.upsample import FACTOR, MASK_CHANNELS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HIDDEN = 128
CONTEXT = 128
MOTION_CLAMP = 64.0


def _norm(kind: str, channels: int) -> nn.Module:
    # Neither choice has parameters, so the state dict is the same for both encoders.
    return nn.InstanceNorm2d(channels) if kind == "instance" else nn.Identity()


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with a (strided 1x1) shortcut."""

    def __init__(self, cin: int, cout: int, norm: str, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.norm1 = _norm(norm, cout)
        self.norm2 = _norm(norm, cout)
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride), _norm(norm, cout)) if stride != 1 else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(shortcut + y)


class Encoder(nn.Module):
    """7x7 stride-2 stem and three stages of residual blocks (32, 64, 128 ch): 1/8 resolution, ``out`` channels."""

    def __init__(self, out: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 7, stride=2, padding=3)
        self.norm1 = _norm(norm, 32)
        self.layer1 = nn.Sequential(ResidualBlock(32, 32, norm, 1), ResidualBlock(32, 32, norm, 1))
        self.layer2 = nn.Sequential(ResidualBlock(32, 64, norm, 2), ResidualBlock(64, 64, norm, 1))
        self.layer3 = nn.Sequential(ResidualBlock(64, 128, norm, 2), ResidualBlock(128, 128, norm, 1))
        self.conv2 = nn.Conv2d(128, out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm1(self.conv1(x)))
        return self.conv2(self.layer3(self.layer2(self.layer1(x))))


class ConvGRU(nn.Module):
    """Convolutional GRU whose gates also see a gated global average of the hidden state."""

    def __init__(self, hidden: int, inputs: int):
        super().__init__()
        self.convz = nn.Conv2d(hidden + inputs, hidden, 3, padding=1)
        self.convr = nn.Conv2d(hidden + inputs, hidden, 3, padding=1)
        self.convq = nn.Conv2d(hidden + inputs, hidden, 3, padding=1)
        self.w = nn.Conv2d(hidden, hidden, 1)
        self.convz_glo = nn.Conv2d(hidden, hidden, 1)
        self.convr_glo = nn.Conv2d(hidden, hidden, 1)
        self.convq_glo = nn.Conv2d(hidden, hidden, 1)

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        glo = (torch.sigmoid(self.w(h)) * h).mean(dim=(2, 3), keepdim=True)
        hx = torch.cat([h, x], dim=1)
        z = torch.sigmoid(self.convz(hx) + self.convz_glo(glo))
        r = torch.sigmoid(self.convr(hx) + self.convr_glo(glo))
        q = torch.tanh(self.convq(torch.cat([r * h, x], dim=1)) + self.convq_glo(glo))
        return (1 - z) * h + z * q


def scatter_mean(x: torch.Tensor, group: torch.Tensor, groups: int) -> torch.Tensor:
    """Mean of the rows of ``x`` (E, ...) per group id in ``group`` (E,) with ids 0..groups-1 -> (groups, ...)."""
    sums = torch.zeros((groups, *x.shape[1:]), dtype=x.dtype, device=x.device).index_add_(0, group, x)
    counts = torch.bincount(group, minlength=groups).to(x.dtype)
    return sums / counts.view(-1, *([1] * (x.dim() - 1)))


class GraphAggregation(nn.Module):
    """Per-source-frame damping and upsampling mask from the hidden states of the edges leaving each frame."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(HIDDEN, 128, 3, padding=1)
        self.conv2 = nn.Conv2d(128, 128, 3, padding=1)
        self.eta = nn.Sequential(nn.Conv2d(128, 1, 3, padding=1), nn.Softplus())
        self.upmask = nn.Sequential(nn.Conv2d(128, MASK_CHANNELS, 1))

    def forward(self, h: torch.Tensor, ii: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        frames, group = torch.unique(ii, return_inverse=True)
        x = scatter_mean(F.relu(self.conv1(h)), group, len(frames))
        x = F.relu(self.conv2(x))
        return 0.01 * self.eta(x).squeeze(1), self.upmask(x), frames


class UpdateResult(NamedTuple):
    """Output of one update step for E edges whose source frames are U = len(frames) distinct ids."""

    net: torch.Tensor  # (E, 128, h, w) new hidden state per edge
    delta: torch.Tensor  # (E, h, w, 2) revision of the target coordinates (grid pixels, x then y)
    weight: torch.Tensor  # (E, h, w, 2) confidence in (0, 1) per target coordinate
    eta: torch.Tensor  # (U, h, w) BA damping of the source frames' inverse depths
    upmask: torch.Tensor  # (U, 576, h, w) convex-upsampling mask of the source frames
    frames: torch.Tensor  # (U,) the source frame ids, sorted: row u of eta / upmask belongs to frames[u]


class UpdateOperator(nn.Module):
    """One recurrent step on a batch of edges (see the module docstring)."""

    def __init__(self):
        super().__init__()
        self.corr_encoder = nn.Sequential(
            nn.Conv2d(corr_channels(), 128, 1), nn.ReLU(inplace=True),
            nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(inplace=True))
        self.flow_encoder = nn.Sequential(
            nn.Conv2d(4, 128, 7, padding=3), nn.ReLU(inplace=True),
            nn.Conv2d(128, 64, 3, padding=1), nn.ReLU(inplace=True))
        self.weight = nn.Sequential(
            nn.Conv2d(HIDDEN, 128, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(128, 2, 3, padding=1), nn.Sigmoid())
        self.delta = nn.Sequential(
            nn.Conv2d(HIDDEN, 128, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(128, 2, 3, padding=1))
        self.gru = ConvGRU(HIDDEN, CONTEXT + 128 + 64)
        self.agg = GraphAggregation()

    def forward(self, net: torch.Tensor, inp: torch.Tensor, corr: torch.Tensor, motion: torch.Tensor,
                ii: torch.Tensor) -> UpdateResult:
        """Step edges i -> j.

        net (E, 128, h, w) hidden states, inp (E, 128, h, w) context of each edge's source frame,
        corr (E, 196, h, w) correlation features at the current coordinates, motion (E, 4, h, w) from
        ``motion_features``, ii (E,) source frame ids (any integer ids: edges with equal ids are aggregated).
        """
        x = torch.cat([inp, self.corr_encoder(corr), self.flow_encoder(motion)], dim=1)
        net = self.gru(net, x)
        delta = self.delta(net).permute(0, 2, 3, 1).contiguous()
        weight = self.weight(net).permute(0, 2, 3, 1).contiguous()
        eta, upmask, frames = self.agg(net, torch.as_tensor(ii, device=net.device))
        return UpdateResult(net, delta, weight, eta, upmask, frames)


class DroidNet(nn.Module):
    """Feature encoder, context encoder and update operator of DROID-SLAM."""

    def __init__(self):
        super().__init__()
        self.fnet = Encoder(128, "instance")
        self.cnet = Encoder(HIDDEN + CONTEXT, "none")
        self.update = UpdateOperator()

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """RGB (N, 3, H, W) in 0..255 (uint8 or float) -> ImageNet-normalised float32 on the model's device."""
        device = self.fnet.conv1.weight.device
        x = images.to(device=device, dtype=torch.float32) / 255.0
        mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
        return (x - mean) / std

    def extract(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode RGB frames (N, 3, H, W), H and W multiples of 8, 0..255.

        Returns fmap (N, 128, H/8, W/8) correlation features, net (N, 128, H/8, W/8) initial hidden state
        (tanh) and inp (N, 128, H/8, W/8) context (relu). Frames are RGB already: upstream's BGR flip is not needed.
        """
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] % FACTOR or images.shape[3] % FACTOR:
            raise ValueError(f"images must be (N, 3, H, W) RGB with H, W multiples of {FACTOR}, "
                             f"got {tuple(images.shape)}")
        x = self.normalise(images)
        fmap = self.fnet(x)
        net, inp = self.cnet(x).split([HIDDEN, CONTEXT], dim=1)
        return fmap, torch.tanh(net), torch.relu(inp)


def motion_features(coords1: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Motion input (E, 4, h, w) = [coords1 - coords0, target - coords1] clamped to +-64 grid pixels.

    coords1 (E, h, w, 2): where the current poses and depths reproject each grid pixel; target (E, h, w, 2):
    the coordinates the previous update asked for (coords1 itself for a new edge).
    """
    coords0 = pixel_grid(coords1.shape[1], coords1.shape[2], coords1.device)
    motion = torch.cat([coords1 - coords0, target - coords1], dim=-1)
    return motion.permute(0, 3, 1, 2).clamp(-MOTION_CLAMP, MOTION_CLAMP)
