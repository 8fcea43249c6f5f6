"""DINOv2 vision transformer with register tokens, as used by the Metric3D v2 ViT models.

Parameter names follow the released Metric3D checkpoints ('blocks.0.<i>' = one block chunk). The
training-only mask token is not created: the released checkpoints do not contain it.
"""
from __future__ import annotations

import math
from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

FfnKind = Literal["mlp", "swiglu"]


class PatchEmbed(nn.Module):
    """(B,3,H,W) image -> (B, H/p * W/p, D) tokens, row-major over the patch grid."""

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwiGLUFFN(nn.Module):
    """SwiGLU feed-forward; DINOv2 shrinks the hidden width to 2/3, rounded up to a multiple of 8."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(gate) * value)


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_value: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block with layer scale on both residual branches."""

    def __init__(self, dim: int, num_heads: int, ffn: FfnKind, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        ffn_cls = SwiGLUFFN if ffn == "swiglu" else Mlp
        self.mlp = ffn_cls(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoVisionTransformer(nn.Module):
    """DINOv2-reg backbone. ``forward`` returns the final layer-normed tokens
    ``(B, 1 + R + h*w, D)`` (class token, R registers, patch tokens) and the patch grid ``(h, w)``."""

    def __init__(
        self,
        embed_dim: int,
        depth: int,
        num_heads: int,
        ffn: FfnKind = "mlp",
        num_register_tokens: int = 4,
        patch_size: int = 14,
        pretrain_size: int = 518,
    ):
        super().__init__()
        self.patch_size = patch_size
        self.num_register_tokens = num_register_tokens
        self.pretrain_grid = pretrain_size // patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.pretrain_grid**2 + 1, embed_dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        blocks = [Block(embed_dim, num_heads, ffn) for _ in range(depth)]
        self.blocks = nn.ModuleList([nn.ModuleList(blocks)])  # one chunk: keys 'blocks.0.<i>'
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        nn.init.normal_(self.register_tokens, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def interpolate_pos_embed(self, grid_h: int, grid_w: int, dtype: torch.dtype) -> torch.Tensor:
        """Positional embedding (1, 1 + grid_h*grid_w, D) for a patch grid, resampled bicubically from
        the pre-training grid with DINOv2's +0.1 scale offset (kept: the weights were trained with it)."""
        n = self.pretrain_grid
        if (grid_h, grid_w) == (n, n):
            return self.pos_embed.to(dtype)
        pos = self.pos_embed.float()
        patch_pos = pos[:, 1:].reshape(1, n, n, -1).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(
            patch_pos,
            scale_factor=((grid_h + 0.1) / n, (grid_w + 0.1) / n),
            mode="bicubic",
            align_corners=False,
        )
        patch_pos = patch_pos.flatten(2).transpose(1, 2)
        return torch.cat((pos[:, :1], patch_pos), dim=1).to(dtype)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        b, _, h, w = x.shape
        p = self.patch_size
        h_up, w_up = math.ceil(h / p) * p, math.ceil(w / p) * p
        if (h_up, w_up) != (h, w):  # upstream stretches (not pads) the input to whole patches
            x = F.interpolate(x, (h_up, w_up), mode="bilinear", align_corners=False)
        grid = (h_up // p, w_up // p)
        tokens = self.patch_embed(x)
        tokens = torch.cat((self.cls_token.expand(b, -1, -1), tokens), dim=1)
        tokens = tokens + self.interpolate_pos_embed(*grid, tokens.dtype)
        tokens = torch.cat((tokens[:, :1], self.register_tokens.expand(b, -1, -1), tokens[:, 1:]), dim=1)
        for blk in cast(nn.ModuleList, self.blocks[0]):
            tokens = blk(tokens)
        return self.norm(tokens), grid
