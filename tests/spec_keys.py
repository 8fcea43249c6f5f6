"""The upstream state-dict key lists in ../shared/spec (one `name<TAB>shape<TAB>dtype` line a tensor) and the
comparison of a model's state dict with them. Tests that need a list skip when ../shared is absent."""
import math

import pytest
import torch

from shared_paths import SPEC

METRIC3D_SPEC_FILES = {
    "convnext_tiny": "metric3d_convtiny_state_dict.tsv",
    "convnext_large": "metric3d_convlarge_state_dict.tsv",
    "vit_small": "metric3d_vits_state_dict.tsv",
    "vit_large": "metric3d_vitl_state_dict.tsv",
    "vit_giant2": "metric3d_vitg_state_dict.tsv",
}
# In the upstream ViT definition but not in the released checkpoints (only used when training with masks).
VIT_TRAINING_ONLY_KEY = "depth_model.encoder.mask_token"


def read_spec(file_name: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """name -> (shape, dtype name as torch prints it), in the file's order; skips the test without the file."""
    path = SPEC / file_name
    if not path.is_file():
        pytest.skip(f"{path} not present")
    spec = {}
    for line in path.read_text().splitlines():
        name, shape, dtype = line.split("\t")
        spec[name] = (tuple(int(s) for s in shape.strip("()").split(",") if s.strip()), dtype)
    return spec


def assert_matches_spec(state_dict: dict[str, torch.Tensor], spec: dict[str, tuple[tuple[int, ...], str]],
                        ordered: bool = False) -> None:
    """Same names, shapes and dtypes (and, when ``ordered``, the same order) as the spec."""
    ours = {name: (tuple(t.shape), str(t.dtype)) for name, t in state_dict.items()}
    assert ours == spec
    if ordered:
        assert list(ours) == list(spec)


def spec_bytes(spec: dict[str, tuple[tuple[int, ...], str]]) -> int:
    """Bytes of tensor data the spec describes."""
    return sum(math.prod(shape) * getattr(torch, dtype.removeprefix("torch.")).itemsize
               for shape, dtype in spec.values())
