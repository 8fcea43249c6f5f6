"""The Metric3D forward pass on OpenVINO's CPU runtime (optional: ``pip install openvino``, the [fast] extra).

Why OpenVINO: on a 2-core AMD EPYC (AVX-512, VNNI, BF16) the converted vit_small at 616x1064 took 0.29x (backends
taking turns in one process) to 0.3-0.5x (one per process) of the plain torch float32 forward of the same weights,
with the same float32 outputs (max relative depth difference 5.7e-4; evaluation/bench_depth.py --backends).
torch's own options gave less: channels-last nothing, bfloat16 autocast 0.4x in one measurement and slower in
another, with large depth differences on random weights; the attention already runs fused
(F.scaled_dot_product_attention). In bf16 OpenVINO took 0.19x. The network is
converted once per (variant, weights, input size) from the torch module by tracing and saved as OpenVINO IR under
the weights cache (``<cache>/openvino``), so later runs load it in seconds; random weights have no stable identity
and are converted in memory every time. Inputs have a fixed shape (batch 1, the network input size).
"""
from __future__ import annotations

import hashlib
import importlib.util
import threading
from pathlib import Path

import numpy as np
import torch
from torch import nn

OUTPUTS = ("prediction", "confidence", "prediction_normal")
PRECISIONS = {"fp32": "f32", "bf16": "bf16"}  # PriorConfig.precision -> OpenVINO's inference precision hint


def available() -> bool:
    """Whether the openvino package can be imported."""
    return importlib.util.find_spec("openvino") is not None


class _TupleOutputs(nn.Module):
    """The network with its dict output as a tuple in OUTPUTS order (what the converter traces)."""

    def __init__(self, model: nn.Module, names: tuple[str, ...]):
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(x)
        return tuple(out[name] for name in self.names)


class OpenVinoNetwork:
    """``net(x)`` on a normalised (1, 3, H, W) float tensor -> the torch model's output dict (prediction,
    confidence and, for ViT models, prediction_normal) as CPU float32 tensors.

    ``ir_file``: where the converted network is (or will be) saved; None converts in memory only.
    """

    def __init__(self, model: nn.Module, input_size: tuple[int, int], precision: str = "fp32",
                 ir_file: str | Path | None = None, threads: int | None = None):
        import openvino as ov

        example = torch.zeros(1, 3, *input_size)
        with torch.inference_mode():
            names = tuple(k for k in OUTPUTS if k in model(example))
        self.names = names
        core = ov.Core()
        ir = Path(ir_file) if ir_file is not None else None
        if ir is not None and ir.is_file() and ir.with_suffix(".bin").is_file():
            network = core.read_model(str(ir))
        else:
            with torch.no_grad():
                network = ov.convert_model(_TupleOutputs(model, names).eval(), example_input=example)
            if ir is not None:
                ir.parent.mkdir(parents=True, exist_ok=True)
                tmp = ir.with_name(ir.stem + ".partial.xml")
                ov.save_model(network, str(tmp), compress_to_fp16=False)  # fp16 weights would change the outputs
                tmp.with_suffix(".bin").replace(ir.with_suffix(".bin"))
                tmp.replace(ir)
        config: dict[str, str | int] = {"INFERENCE_PRECISION_HINT": PRECISIONS[precision], "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.compiled = core.compile_model(network, "CPU", config)
        self._request = self.compiled.create_infer_request()
        self._lock = threading.Lock()  # one infer request, shared by the tracker and the prior worker

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        outs = []
        with self._lock:
            for b in range(x.shape[0]):
                result = self._request.infer({0: x[b : b + 1].detach().cpu().numpy()})
                outs.append([np.array(result[self.compiled.output(i)]) for i in range(len(self.names))])
        return {name: torch.from_numpy(np.concatenate([o[i] for o in outs])) for i, name in enumerate(self.names)}


def ir_path(cache: Path, variant: str, weights_id: str, input_size: tuple[int, int]) -> Path:
    """The IR file of a (variant, weights, input size) under ``cache``; the OpenVINO version is part of the key
    so that an upgrade converts again."""
    import openvino as ov

    key = repr((variant, weights_id, tuple(input_size), ov.__version__))
    return cache / f"{variant}-{input_size[0]}x{input_size[1]}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.xml"
