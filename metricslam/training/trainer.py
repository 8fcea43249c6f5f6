"""The depth-network trainer: one process, or many under torchrun (DDP; gloo on CPU, NCCL on CUDA).

Per step: a global batch of ``batch_size`` samples (split evenly across processes, see data.BalancedSampler),
forward under bf16/fp16 autocast on CUDA (full precision on CPU), the weighted losses, backward, gradient
clipping, AdamW (encoder and decoder learning rates apart) and a polynomial learning-rate decay.

Outputs in ``out_dir``: config.yaml, log.jsonl (one line per step: losses averaged over processes, learning
rates, gradient norm, throughput), checkpoints/step_NNNNNNN.pth (official Metric3D layout plus the optimiser,
scheduler, sampler and RNG state: resuming from one reproduces the following steps exactly), val.json when
held-out data sets are configured, and TensorBoard event files in tb/.
"""
from __future__ import annotations

import contextlib
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from metricslam.config import ConfigError, save_config, to_dict
from metricslam.depth.models.convnext_hourglass import SIZE_MULTIPLE as CONVNEXT_SIZE_MULTIPLE
from metricslam.depth.models.metric3d import VARIANTS
from metricslam.depth.models.vit_raft_dpt import SIZE_MULTIPLE as VIT_SIZE_MULTIPLE
from metricslam.errors import MetricSlamError
from metricslam.io.atomic import write_text_atomic
from metricslam.io.run_dir import OutputLayout, RunDir
from metricslam.training.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from metricslam.training.config import DatasetConfig, TrainConfig
from metricslam.training.data import AnnotationDataset, BalancedSampler, MixedDataset
from metricslam.training.distributed import (
    DistInfo,
    barrier,
    init_distributed,
    mean_over_processes,
    shutdown_distributed,
    use_global_batchnorm,
)
from metricslam.training.evaluate import evaluate_datasets
from metricslam.training.losses import DepthLoss
from metricslam.training.small_model import SMALL_VARIANT, build_model, family_variant, model_description
from metricslam.training.synthetic_set import write_synthetic_set
from metricslam.training.transforms import ToItem, build_pipeline
from metricslam.weights import load_strict, read_checkpoint, resolve_weights

CHECKPOINT_GLOB = "step_*.pth"
# What a training run writes into out_dir (see the module docstring); the data sets it renders live elsewhere.
TRAIN_OUTPUTS = OutputLayout("train", files=("config.yaml", "log.jsonl", "val.json"), folders=("checkpoints", "tb"))


def size_multiple(variant: str) -> int:
    return VIT_SIZE_MULTIPLE if VARIANTS[family_variant(variant)].family == "vit" else CONVNEXT_SIZE_MULTIPLE


def prepare_datasets(entries: list[DatasetConfig], info: DistInfo, what: str) -> list[AnnotationDataset]:
    """Load the configured annotation files, rendering synthetic ones first where asked (main process only)."""
    for k, e in enumerate(entries):
        if not e.annotation:
            raise ConfigError(f"data.{what}[{k}]: no annotation file; set 'annotation: PATH/annotation.json'")
        path = Path(e.annotation)
        if e.synthetic is not None and not path.is_file() and info.is_main:
            print(f"rendering the synthetic {what} set '{e.name or path.parent.name}' into {path.parent.parent} "
                  "(once: later runs reuse it)", file=sys.stderr, flush=True)
            written = write_synthetic_set(path.parent.parent, e.synthetic)
            if path not in written:
                raise ConfigError(f"data.{what}[{k}]: rendering the synthetic set wrote {', '.join(map(str, written))}"
                                  f", not {path}; point 'annotation' at one of those")
    barrier(info)
    return [AnnotationDataset(e.annotation, e.name) for e in entries]


def latest_checkpoint(out_dir: Path) -> Path | None:
    found = sorted((out_dir / "checkpoints").glob(CHECKPOINT_GLOB))
    return found[-1] if found else None


@dataclass
class TrainResult:
    out_dir: Path
    checkpoint: Path | None
    history: list[dict] = field(default_factory=list)
    val: dict | None = None


class Trainer:
    """Builds everything from a TrainConfig; ``run()`` trains to ``cfg.steps`` and returns a TrainResult.

    ``resume``: a checkpoint path, 'auto' (the newest checkpoint in out_dir, if any) or None. Without it, an
    out_dir that holds an earlier training run is refused unless ``overwrite`` (which removes that run's files);
    the folder is created only after the data, model and checkpoint have been checked.
    """

    def __init__(self, cfg: TrainConfig, resume: str | None = None, overwrite: bool = False):
        self.cfg = cfg
        self.info = init_distributed(None if cfg.device == "auto" else cfg.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.out_dir = Path(cfg.out_dir)
        run_dir = RunDir(self.out_dir, TRAIN_OUTPUTS, overwrite)
        if self.info.is_main and resume is None:
            run_dir.check()
        self._check_config()
        self.per_rank_batch = cfg.batch_size // self.info.world_size
        self._seed_everything(cfg.seed)
        self.datasets = prepare_datasets(cfg.data.datasets, self.info, "datasets")
        self.val_datasets = prepare_datasets(cfg.data.val, self.info, "val")
        self._build_data()
        self._build_model()
        self._build_optimisation()
        self.step = 0
        self.resumed_from = self._resume(resume)
        if self.info.is_main:
            if resume is None:
                run_dir.prepare()
            else:
                self.out_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out_dir / "config.yaml")
        barrier(self.info)

    # ----------------------------------------------------------------------------------------------- set-up
    def _check_config(self) -> None:
        cfg = self.cfg
        if not cfg.data.datasets:
            raise ConfigError("data.datasets is empty; list at least one annotation file to train on")
        if cfg.batch_size < 1 or cfg.batch_size % self.info.world_size:
            raise ConfigError(f"batch_size {cfg.batch_size} must be a positive multiple of the {self.info.world_size} "
                              "processes; change batch_size or --nproc_per_node")
        if cfg.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {cfg.steps}")
        if cfg.model.variant != SMALL_VARIANT and cfg.model.variant not in VARIANTS:
            raise ConfigError(f"model.variant '{cfg.model.variant}' is unknown; use '{SMALL_VARIANT}' or one of "
                              f"{', '.join(VARIANTS)}")
        m = size_multiple(cfg.model.variant)
        if any(s % m or s <= 0 for s in cfg.data.crop_size):
            raise ConfigError(f"data.crop_size {list(cfg.data.crop_size)} must be positive multiples of {m} for "
                              f"model {cfg.model.variant}")

    @staticmethod
    def _seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def _build_data(self) -> None:
        cfg, lc = self.cfg, self.cfg.loss
        to_item = ToItem(lc.rpnl_crops, lc.rpnl_side, lc.vnl_triplets)
        pipeline = build_pipeline(cfg.data.cstm, cfg.data.crop_size, cfg.data.augment, to_item, cfg.data.focal_mode)
        self.train_set = MixedDataset(self.datasets, pipeline)
        self.sampler = BalancedSampler(
            self.train_set.sizes, [d.weight for d in cfg.data.datasets], seed=cfg.seed,
            num_replicas=self.info.world_size, rank=self.info.rank, samples_per_epoch=cfg.data.samples_per_epoch,
        )
        self.steps_per_epoch = self.sampler.per_replica // self.per_rank_batch
        if self.steps_per_epoch < 1:
            raise ConfigError(f"an epoch of {self.sampler.total} samples is smaller than one global batch of "
                              f"{cfg.batch_size}; raise data.samples_per_epoch or lower batch_size")
        self.loader = DataLoader(self.train_set, batch_size=self.per_rank_batch, sampler=self.sampler,
                                 num_workers=cfg.data.num_workers, drop_last=True,
                                 pin_memory=self.info.device.type == "cuda")

    def _build_model(self) -> None:
        mc = self.cfg.model
        self.model = build_model(mc.variant, mc.small)
        if mc.init_weights:
            file = resolve_weights(mc.init_weights)
            load_strict(self.model, read_checkpoint(file), str(file), f"Metric3D {mc.variant}")
        self.model.to(self.info.device).train()
        if VARIANTS[family_variant(mc.variant)].family == "convnext":
            # Its forward runs channels_last; parameters in the same layout get gradients of the same strides,
            # which DDP's gradient buckets require.
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # missing from torch's stub
        if self.info.distributed:
            use_global_batchnorm(self.model)
            self.network: nn.Module = DistributedDataParallel(
                self.model, device_ids=[self.info.device] if self.info.device.type == "cuda" else None,
                find_unused_parameters=self.cfg.find_unused_parameters,
            )
        else:
            self.network = self.model
        self.loss_fn = DepthLoss(self.cfg.loss)

    def _build_optimisation(self) -> None:
        oc = self.cfg.optim
        encoder = [p for n, p in self.model.named_parameters() if n.startswith("depth_model.encoder.")]
        decoder = [p for n, p in self.model.named_parameters() if not n.startswith("depth_model.encoder.")]
        self.optimizer = torch.optim.AdamW(
            [{"params": encoder, "lr": oc.encoder_lr, "name": "encoder"},
             {"params": decoder, "lr": oc.decoder_lr, "name": "decoder"}],
            weight_decay=oc.weight_decay,
        )
        steps, warmup, power = self.cfg.steps, oc.warmup_steps, oc.poly_power

        def factor(step: int) -> float:
            ramp = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
            return ramp * max(0.0, 1.0 - step / steps) ** power

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    def _amp_dtype(self) -> torch.dtype | None:
        amp = self.cfg.amp
        if self.info.device.type != "cuda" or amp == "off":
            return None
        if amp == "auto":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if amp == "bf16" else torch.float16

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    # ------------------------------------------------------------------------------------------ checkpoints
    def _resume(self, resume: str | None) -> Path | None:
        if resume is None:
            return None
        path = latest_checkpoint(self.out_dir) if resume == "auto" else Path(resume)
        if path is None:
            return None
        state = load_checkpoint(path)
        recorded = state.get("model", {})
        if recorded.get("variant") != self.cfg.model.variant:
            raise MetricSlamError(f"{path}: checkpoint of model '{recorded.get('variant')}' but the config trains "
                                  f"'{self.cfg.model.variant}'; resume with the config it was trained with")
        load_strict(self.model, state["model_state_dict"], str(path), f"the configured {self.cfg.model.variant} model")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        if int(state["sampler"]["seed"]) != self.cfg.seed:
            raise MetricSlamError(f"{path}: checkpoint was trained with seed {state['sampler']['seed']}, the config "
                                  f"has {self.cfg.seed}; resume with the same seed")
        set_rng_state(state["rng"])
        return path

    def _sampler_position(self, step: int) -> tuple[int, int]:
        epoch, within = divmod(step, self.steps_per_epoch)
        return epoch, within * self.per_rank_batch

    def save(self) -> Path:
        epoch, start = self._sampler_position(self.step)
        state = {
            "model_state_dict": self.model.state_dict(),
            "model": model_description(self.cfg.model.variant, self.cfg.model.small),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "sampler": {"epoch": epoch, "start": start, "seed": self.cfg.seed},
            "rng": rng_state(),
            "config": to_dict(self.cfg),
        }
        path = save_checkpoint(self.out_dir / "checkpoints" / f"step_{self.step:07d}.pth", state)
        old = sorted((self.out_dir / "checkpoints").glob(CHECKPOINT_GLOB))[: -max(1, self.cfg.keep_checkpoints)]
        for p in old:
            p.unlink()
        return path

    # ------------------------------------------------------------------------------------------------- loop
    def _batches(self):
        epoch, start = self._sampler_position(self.step)
        while True:
            self.sampler.set_epoch(epoch, start)
            yield from self.loader
            epoch, start = epoch + 1, 0

    def _train_step(self, batch: dict) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        with self._autocast():
            outputs = self.network(batch["image"])
        losses = self.loss_fn(outputs, batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses["total"]).backward()
        self.scaler.unscale_(self.optimizer)
        clip = self.cfg.optim.grad_clip
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip > 0 else math.inf)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return losses, grad_norm

    def run(self) -> TrainResult:
        cfg, info = self.cfg, self.info
        writer = self._tensorboard() if info.is_main and cfg.tensorboard else None
        log_path = self.out_dir / "log.jsonl"
        history: list[dict] = []
        checkpoint = self.resumed_from
        bar = tqdm(total=cfg.steps, initial=self.step, desc="train", disable=not (info.is_main and cfg.progress),
                   dynamic_ncols=True)
        batches = self._batches()
        tick = time.perf_counter()
        val = None
        while self.step < cfg.steps:
            batch = {k: v.to(info.device, non_blocking=True) for k, v in next(batches).items()}
            losses, grad_norm = self._train_step(batch)
            self.step += 1
            names = list(losses)
            values = mean_over_processes(torch.stack([losses[n].detach().float() for n in names]), info).tolist()
            now = time.perf_counter()
            record = {"step": self.step, **dict(zip(names, values)), "grad_norm": float(grad_norm),
                      "lr_encoder": self.optimizer.param_groups[0]["lr"],
                      "lr_decoder": self.optimizer.param_groups[1]["lr"],
                      "images_per_s": cfg.batch_size / max(now - tick, 1e-9)}
            tick = now
            if not all(math.isfinite(v) for v in values):
                raise MetricSlamError(f"step {self.step}: the loss is not finite ({record}); lower the learning "
                                      f"rates in {self.out_dir / 'config.yaml'} or check the training data")
            if info.is_main:
                history.append(record)
                with log_path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
                bar.update(1)
                bar.set_postfix(loss=f"{record['total']:.4f}", img_s=f"{record['images_per_s']:.1f}")
                if writer is not None and (self.step % cfg.log_every == 0 or self.step == cfg.steps):
                    for key, value in record.items():
                        if key != "step":
                            writer.add_scalar(f"train/{key}", value, self.step)
            if self.step % cfg.save_every == 0 or self.step == cfg.steps:
                if info.is_main:
                    checkpoint = self.save()
                barrier(info)
            if self.val_datasets and ((cfg.val_every and self.step % cfg.val_every == 0) or self.step == cfg.steps):
                val = self._validate(writer)
        bar.close()
        if writer is not None:
            writer.close()
        if checkpoint is None and info.is_main:
            checkpoint = latest_checkpoint(self.out_dir)
        return TrainResult(self.out_dir, checkpoint, history, val)

    def _validate(self, writer) -> dict | None:
        result = None
        if self.info.is_main:
            result = evaluate_datasets(self.model, self.val_datasets, self.cfg.data.cstm, self.info.device,
                                       size_multiple(self.cfg.model.variant), self.cfg.data.focal_mode)
            write_text_atomic(self.out_dir / "val.json", json.dumps({"step": self.step, **result}, indent=2))
            if writer is not None:
                for name, metrics in result.items():
                    for key in ("abs_rel", "d1"):
                        writer.add_scalar(f"val/{name}/{key}", metrics[key], self.step)
        barrier(self.info)
        return result

    def _tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise MetricSlamError("TensorBoard logging needs the tensorboard package: pip install "
                                  "'metricslam[train]', or set 'tensorboard: false' in the training config") from None
        return SummaryWriter(log_dir=str(self.out_dir / "tb"))


def train(cfg: TrainConfig, resume: str | None = None, overwrite: bool = False) -> TrainResult:
    """Train with ``cfg`` (joining the torchrun process group if launched by torchrun), then leave the group."""
    try:
        return Trainer(cfg, resume, overwrite).run()
    finally:
        shutdown_distributed()
