"""The training config (configs/train/*.yaml are these dataclasses written out)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from metricslam.depth.cstm import FocalMode
from metricslam.training.losses import LossConfig
from metricslam.training.small_model import SmallModelConfig
from metricslam.training.synthetic_set import SyntheticSetConfig
from metricslam.training.transforms import AugmentConfig, CstmMode


@dataclass
class ModelConfig:
    variant: str = "small"  # 'small' or a released variant (convnext_tiny, vit_small, ...)
    small: SmallModelConfig = field(default_factory=SmallModelConfig)
    init_weights: str | None = None  # official checkpoint (path or registry name) to fine-tune from


@dataclass
class DatasetConfig:
    annotation: str = ""  # Metric3D-style json; a relative path is relative to the working folder
    weight: float = 1.0  # sampling weight; equal weights balance data sets whatever their sizes
    name: str | None = None
    synthetic: SyntheticSetConfig | None = None  # when set and the annotation is missing, render it first


@dataclass
class DataConfig:
    datasets: list[DatasetConfig] = field(default_factory=list)
    val: list[DatasetConfig] = field(default_factory=list)  # evaluated (metric AbsRel, d1) every val_every steps
    cstm: CstmMode = "label"
    focal_mode: FocalMode = "fx"
    crop_size: tuple[int, int] = (96, 128)  # (H, W); multiples of 32 (ConvNeXt) or 28 (ViT)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    samples_per_epoch: int | None = None  # None: the summed size of the data sets
    num_workers: int = 0


@dataclass
class OptimConfig:
    encoder_lr: float = 1e-4
    decoder_lr: float = 1e-3
    weight_decay: float = 0.01
    poly_power: float = 0.9
    warmup_steps: int = 0
    grad_clip: float = 2.5  # max gradient norm; 0 disables clipping


@dataclass
class TrainConfig:
    out_dir: str = "outputs/train"
    steps: int = 1000
    batch_size: int = 8  # global: split evenly across torchrun processes
    seed: int = 0
    device: str = "auto"
    threads: int | None = None  # torch CPU threads per process (None: torch's default)
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"  # CUDA only: auto = bf16 where supported, else fp16
    log_every: int = 10
    save_every: int = 500
    keep_checkpoints: int = 2
    val_every: int = 0  # 0: only at the end (when data.val is given)
    tensorboard: bool = True
    progress: bool = True
    find_unused_parameters: bool = False  # set for models with heads the enabled losses do not reach
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
