"""``metricslam train``: train a Metric3D depth network (one process, or many under torchrun)."""
from __future__ import annotations

import argparse

from metricslam.config import load_config


def run(args: argparse.Namespace) -> int:
    from metricslam.training.config import TrainConfig
    from metricslam.training.trainer import train

    overrides = list(args.overrides)
    if args.out:
        overrides.append(f"out_dir={args.out}")
    cfg = load_config(TrainConfig, args.config, overrides)
    result = train(cfg, resume=args.resume, overwrite=args.overwrite)
    if result.history:
        last = result.history[-1]
        print(f"trained to step {last['step']}: loss {last['total']:.4f}; checkpoint {result.checkpoint}")
    if result.val:
        for name, m in result.val.items():
            print(f"  held-out {name}: AbsRel {m['abs_rel']:.4f}  d1 {m['d1']:.4f}  ({m['num_images']} images)")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train a Metric3D depth network (canonical camera space, mixed data sets, DDP)",
        description="Train a Metric3D depth network from a config (configs/train/*.yaml). For several processes "
                    "or machines, launch through torchrun: `torchrun --nproc_per_node N -m metricslam.cli train "
                    "--config FILE` (gloo on CPU, NCCL on CUDA); batch_size is the global batch.",
    )
    p.add_argument("--config", required=True, metavar="YAML", help="training config (see configs/train/)")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (overrides out_dir)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier training run in the output folder (its config, log, checkpoints)")
    p.add_argument("--resume", default=None, metavar="CKPT",
                   help="continue from a checkpoint written by this command, or 'auto' for the newest in the "
                        "output folder; the following steps are reproduced exactly")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. steps=200 optim.decoder_lr=5e-4 data.cstm=image")
    p.set_defaults(func=run)
