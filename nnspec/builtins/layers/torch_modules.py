"""Small nn.Modules for built-in layers torch has no single module for.

Every forward takes tensors with a leading batch dim and returns one tensor; dims given to the
constructors are already torch dims (batch included), the factories in layers.py convert.
"""
from __future__ import annotations

import torch
from torch import nn


def causal_mask(size: int, device) -> torch.Tensor:
    """Boolean [size, size] mask, True where attention is forbidden (a later position)."""
    return torch.ones(size, size, dtype=torch.bool, device=device).triu(1)


class Reshape(nn.Module):
    """View each sample in `shape` (batch kept); one size may be -1."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self) -> str:
        return f"shape={list(self.shape)}"


class Permute(nn.Module):
    """Reorder dims: `dims` is the full torch order and keeps the batch first (0, ...)."""

    def __init__(self, dims: tuple[int, ...]):
        super().__init__()
        if not dims or dims[0] != 0:
            raise ValueError(f"the batch dim must stay first, got dims {list(dims)}")
        self.dims = tuple(dims)

    def forward(self, x):
        return x.permute(*self.dims)

    def extra_repr(self) -> str:
        return f"dims={list(self.dims)}"


class Mean(nn.Module):
    """Average over one torch dim (e.g. 1 pools a batch-first sequence)."""

    def __init__(self, dim: int, keepdim: bool = False):
        super().__init__()
        self.dim, self.keepdim = dim, keepdim

    def forward(self, x):
        return x.mean(dim=self.dim, keepdim=self.keepdim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, keepdim={self.keepdim}"


class GlobalAvgPool(nn.Module):
    """Average every spatial dim of a channel-first batch: [N, C, *spatial] → [N, C]."""

    def forward(self, x):
        return x.mean(dim=tuple(range(2, x.dim())))


class PositionalEmbedding(nn.Module):
    """Adds a learned vector per position to [N, seq, features]; seq ≤ max_len."""

    def __init__(self, max_len: int, features: int):
        super().__init__()
        self.max_len, self.features = max_len, features
        self.weight = nn.Parameter(torch.empty(max_len, features))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x):
        if x.shape[1] > self.max_len:
            raise ValueError(f"sequence of length {x.shape[1]} is longer than max_len {self.max_len}")
        return x + self.weight[: x.shape[1]]

    def extra_repr(self) -> str:
        return f"max_len={self.max_len}, features={self.features}"


class Recurrent(nn.Module):
    """Runs a batch-first LSTM/GRU/RNN and returns one tensor: every step's output ("all"), or
    the last layer's final hidden state with both directions concatenated ("last")."""

    def __init__(self, rnn: nn.RNNBase, output: str):
        super().__init__()
        self.rnn, self.output = rnn, output

    def forward(self, x):
        out, state = self.rnn(x)
        if self.output == "all":
            return out
        h = state[0] if isinstance(state, tuple) else state       # LSTM: (h, c)
        dirs = 2 if self.rnn.bidirectional else 1
        return torch.cat(list(h[-dirs:]), dim=-1)                  # forward final, backward final

    def extra_repr(self) -> str:
        return f"output={self.output}"


class SelfAttention(nn.MultiheadAttention):
    """Batch-first multi-head self-attention (query = key = value) returning only the output."""

    def __init__(self, embed_dim: int, heads: int, dropout: float = 0.0, bias: bool = True,
                 causal: bool = False):
        super().__init__(embed_dim, heads, dropout=dropout, bias=bias, batch_first=True)
        self.causal = causal

    def forward(self, x):  # type: ignore[override]
        mask = causal_mask(x.shape[1], x.device) if self.causal else None
        return super().forward(x, x, x, need_weights=False, attn_mask=mask, is_causal=self.causal)[0]

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, heads={self.num_heads}, dropout={self.dropout}, causal={self.causal}"


class EncoderLayer(nn.TransformerEncoderLayer):
    """nn.TransformerEncoderLayer (batch first) that can apply a causal mask by itself."""

    def __init__(self, d_model: int, heads: int, causal: bool = False, **kwargs):
        super().__init__(d_model, heads, batch_first=True, **kwargs)
        self.causal = causal

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):  # type: ignore[override]
        if self.causal and src_mask is None:
            src_mask, is_causal = causal_mask(src.shape[1], src.device), True
        return super().forward(src, src_mask, src_key_padding_mask, is_causal=is_causal)

    def extra_repr(self) -> str:
        return (f"d_model={self.self_attn.embed_dim}, heads={self.self_attn.num_heads}, "
                f"ff={self.linear1.out_features}, norm_first={self.norm_first}, causal={self.causal}")


class Add(nn.Module):
    """Elementwise sum of all inputs (same shapes)."""

    def forward(self, first, *rest):
        for x in rest:
            first = first + x
        return first


class Multiply(nn.Module):
    """Elementwise product of all inputs (same shapes)."""

    def forward(self, first, *rest):
        for x in rest:
            first = first * x
        return first


class Concat(nn.Module):
    """Concatenate all inputs along a torch dim (batch included, so channels of NCHW is 1)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, *xs):
        return torch.cat(xs, dim=self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
