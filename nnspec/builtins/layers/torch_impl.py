"""Torch implementations of the built-in layers: `factory(args, inputs) -> nn.Module`.

`inputs` are the checked `TensorType`s the layer receives (shapes without the batch), so
sizes such as in_features never have to be written in a spec. Dims in args index the
non-batch dims; `_torch_dim` turns them into torch dims (batch at 0).
"""
from __future__ import annotations

from torch import nn

from nnspec.builtins.layers import torch_modules as m


def _torch_dim(dim: int, x) -> int:
    return dim % len(x.shape) + 1


def _tup(value, n: int) -> tuple:
    return tuple(value) if isinstance(value, tuple) else (value,) * n


# --- dense, embeddings, normalization, dropout ----------------------------------------------

def linear(args, inputs):
    return nn.Linear(inputs[0].shape[-1], args.out_features, bias=args.bias)


def embedding(args, inputs):
    return nn.Embedding(args.num_embeddings, args.embedding_dim, padding_idx=args.padding_idx)


def positional_embedding(args, inputs):
    return m.PositionalEmbedding(args.max_len, inputs[0].shape[1])


def _batchnorm(cls, args, inputs):
    return cls(inputs[0].shape[0], eps=args.eps, momentum=args.momentum, affine=args.affine,
               track_running_stats=args.track_running_stats)


def batchnorm1d(args, inputs):
    return _batchnorm(nn.BatchNorm1d, args, inputs)


def batchnorm2d(args, inputs):
    return _batchnorm(nn.BatchNorm2d, args, inputs)


def layernorm(args, inputs):
    shape = inputs[0].shape
    return nn.LayerNorm(shape[len(shape) - args.dims:], eps=args.eps, elementwise_affine=args.affine,
                        bias=args.bias)


def groupnorm(args, inputs):
    return nn.GroupNorm(args.groups, inputs[0].shape[0], eps=args.eps, affine=args.affine)


def dropout(args, inputs):
    return nn.Dropout(args.p)


def dropout2d(args, inputs):
    return nn.Dropout2d(args.p)


# --- convolution, pooling, upsampling -------------------------------------------------------

def _conv(cls, n: int, args, inputs):
    channels = inputs[0].shape[0]
    padding = args.padding if isinstance(args.padding, str) else _tup(args.padding, n)
    groups = channels if args.groups == "depthwise" else args.groups
    return cls(channels, args.out_channels, args.kernel_size, stride=_tup(args.stride, n), padding=padding,
               dilation=_tup(args.dilation, n), groups=groups, bias=args.bias, padding_mode=args.padding_mode)


def conv1d(args, inputs):
    return _conv(nn.Conv1d, 1, args, inputs)


def conv2d(args, inputs):
    return _conv(nn.Conv2d, 2, args, inputs)


def conv_transpose2d(args, inputs):
    return nn.ConvTranspose2d(inputs[0].shape[0], args.out_channels, args.kernel_size,
                              stride=_tup(args.stride, 2), padding=_tup(args.padding, 2),
                              output_padding=_tup(args.output_padding, 2), groups=args.groups,
                              bias=args.bias, dilation=_tup(args.dilation, 2))


def _maxpool(cls, n, args):
    return cls(args.kernel_size, stride=args.stride, padding=_tup(args.padding, n),
               dilation=_tup(args.dilation, n), ceil_mode=args.ceil_mode)


def _avgpool(cls, n, args):
    return cls(args.kernel_size, stride=args.stride, padding=_tup(args.padding, n), ceil_mode=args.ceil_mode,
               count_include_pad=args.count_include_pad)


def maxpool1d(args, inputs):
    return _maxpool(nn.MaxPool1d, 1, args)


def maxpool2d(args, inputs):
    return _maxpool(nn.MaxPool2d, 2, args)


def avgpool1d(args, inputs):
    return _avgpool(nn.AvgPool1d, 1, args)


def avgpool2d(args, inputs):
    return _avgpool(nn.AvgPool2d, 2, args)


def adaptive_avgpool1d(args, inputs):
    return nn.AdaptiveAvgPool1d(args.output_size)


def adaptive_avgpool2d(args, inputs):
    return nn.AdaptiveAvgPool2d(args.output_size)


def adaptive_maxpool2d(args, inputs):
    return nn.AdaptiveMaxPool2d(args.output_size)


def global_avgpool(args, inputs):
    return m.GlobalAvgPool()


def upsample(args, inputs):
    return nn.Upsample(scale_factor=args.scale_factor, mode=args.mode)


# --- sequences ------------------------------------------------------------------------------

def _recurrent(cls, args, inputs, **extra):
    dropout = args.dropout if args.layers > 1 else 0.0     # torch ignores it (and warns) with one layer
    rnn = cls(inputs[0].shape[1], args.hidden_size, num_layers=args.layers, bias=args.bias, batch_first=True,
              dropout=dropout, bidirectional=args.bidirectional, **extra)
    return m.Recurrent(rnn, args.output)


def lstm(args, inputs):
    return _recurrent(nn.LSTM, args, inputs)


def gru(args, inputs):
    return _recurrent(nn.GRU, args, inputs)


def rnn(args, inputs):
    return _recurrent(nn.RNN, args, inputs, nonlinearity=args.nonlinearity)


def self_attention(args, inputs):
    return m.SelfAttention(inputs[0].shape[1], args.heads, dropout=args.dropout, bias=args.bias,
                           causal=args.causal)


def transformer_encoder(args, inputs):
    return m.EncoderLayer(inputs[0].shape[1], args.heads, causal=args.causal, dim_feedforward=args.ff,
                          dropout=args.dropout, activation=args.activation, layer_norm_eps=args.eps,
                          norm_first=args.norm_first)


# --- shape ----------------------------------------------------------------------------------

def flatten(args, inputs):
    x = inputs[0]
    return nn.Flatten(_torch_dim(args.start, x), _torch_dim(args.end, x))


def reshape(args, inputs):
    return m.Reshape(args.shape)


def permute(args, inputs):
    return m.Permute((0, *(_torch_dim(d, inputs[0]) for d in args.dims)))


def mean(args, inputs):
    return m.Mean(_torch_dim(args.dim, inputs[0]), args.keepdim)


def identity(args, inputs):
    return nn.Identity()


# --- activations ----------------------------------------------------------------------------

def relu(args, inputs):
    return nn.ReLU()


def relu6(args, inputs):
    return nn.ReLU6()


def leaky_relu(args, inputs):
    return nn.LeakyReLU(args.negative_slope)


def elu(args, inputs):
    return nn.ELU(args.alpha)


def gelu(args, inputs):
    return nn.GELU(approximate=args.approximate)


def silu(args, inputs):
    return nn.SiLU()


def mish(args, inputs):
    return nn.Mish()


def hardswish(args, inputs):
    return nn.Hardswish()


def tanh(args, inputs):
    return nn.Tanh()


def sigmoid(args, inputs):
    return nn.Sigmoid()


def softmax(args, inputs):
    return nn.Softmax(dim=_torch_dim(args.dim, inputs[0]))


def log_softmax(args, inputs):
    return nn.LogSoftmax(dim=_torch_dim(args.dim, inputs[0]))


# --- merges ---------------------------------------------------------------------------------

def add(args, inputs):
    return m.Add()


def multiply(args, inputs):
    return m.Multiply()


def concat(args, inputs):
    return m.Concat(_torch_dim(args.dim, inputs[0]))
