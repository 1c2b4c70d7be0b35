"""MIL kernels op by op against coremltools' own numpy ``value_inference`` (random shapes, broadcasting, attributes).

Each case builds the op twice with the coremltools builder: once on constants (coremltools computes the
value with its numpy definition) and once on a program input, which the interpreter runs. Both go
through coremltools' type inference, so the interpreter's result must also have the declared shape.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ct = pytest.importorskip("coremltools")
from coremltools.converters.mil import Builder as mb  # noqa: E402
from coremltools.converters.mil.mil import types  # noqa: E402

from hybridexport.export.mil import NotInterpreted  # noqa: E402
from hybridexport.export.mil.interpreter import Interpreter  # noqa: E402

IOS15, IOS16, IOS17, IOS18 = ct.target.iOS15, ct.target.iOS16, ct.target.iOS17, ct.target.iOS18
FEW = settings(max_examples=8, deadline=None, derandomize=True)


def _spec(a: np.ndarray) -> Any:
    dtype = {np.dtype(np.int32): types.int32, np.dtype(np.bool_): types.bool}.get(a.dtype, types.fp32)
    return mb.TensorSpec(shape=a.shape, dtype=dtype)


def value_inference(op: str, opset: Any = IOS15, **inputs: Any) -> list[np.ndarray]:
    """The outputs coremltools' numpy definition gives for ``op`` on constant ``inputs``."""
    box: dict[str, Any] = {}

    @mb.program(input_specs=[mb.TensorSpec(shape=(1,))], opset_version=opset)
    def prog(dummy):
        out = getattr(mb, op)(**inputs)
        outs = out if isinstance(out, (list, tuple)) else [out]
        box["val"] = [np.asarray(o.val) for o in outs]
        return dummy

    assert all(v is not None for v in box["val"]), f"coremltools has no value for {op}"
    return box["val"]


def interpret(op: str, runtime: dict[str, np.ndarray], opset: Any = IOS15, wide: bool = False,
              **consts: Any) -> list[np.ndarray]:
    """The interpreter's outputs for ``op`` with ``runtime`` inputs fed at run time."""
    names = list(runtime)
    if len(names) == 1:
        @mb.program(input_specs=[_spec(runtime[names[0]])], opset_version=opset)
        def prog(a):
            return getattr(mb, op)(**{names[0]: a}, **consts)
    else:
        @mb.program(input_specs=[_spec(runtime[n]) for n in names], opset_version=opset)
        def prog(a, b):
            return getattr(mb, op)(**{names[0]: a, names[1]: b}, **consts)
    interp = Interpreter(prog, wide=wide)
    res = interp.run([runtime[n] for n in names])
    return [res.outputs[n] for n in interp.output_names]


def check(op: str, runtime: dict[str, np.ndarray], opset: Any = IOS15, rtol: float = 2e-5, atol: float = 2e-6,
          **consts: Any) -> None:
    want = value_inference(op, opset, **runtime, **consts)
    got = interpret(op, runtime, opset, **consts)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape, f"{op}: shape {g.shape} != {w.shape}"
        if w.dtype == np.bool_ or np.issubdtype(w.dtype, np.integer):
            np.testing.assert_array_equal(g.astype(w.dtype), w, err_msg=op)
        else:
            np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), rtol=rtol, atol=atol, err_msg=op)


shapes = st.lists(st.integers(1, 5), min_size=1, max_size=4)
seeds = st.integers(0, 2**31 - 1)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


@st.composite
def broadcast_pair(draw: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Two shapes that broadcast: some axes of one set to 1, leading axes possibly dropped."""
    a = draw(shapes)
    b = [1 if draw(st.booleans()) else d for d in a]
    b = b[draw(st.integers(0, len(b) - 1)):]
    return (tuple(a), tuple(b)) if draw(st.booleans()) else (tuple(b), tuple(a))


@FEW
@given(pair=broadcast_pair(), seed=seeds, op=st.sampled_from(
    ["add", "sub", "mul", "real_div", "maximum", "minimum", "pow", "floor_div", "mod"]))
def test_binary_float(pair, seed, op):
    r = _rng(seed)
    x = r.normal(size=pair[0]).astype(np.float32)
    y = r.normal(size=pair[1]).astype(np.float32)
    if op in ("real_div", "floor_div", "mod"):
        y = np.where(np.abs(y) < 0.1, 0.5, y).astype(np.float32)
    if op == "pow":
        x = np.abs(x) + 0.1
    check(op, {"x": x}, y=y)
    check(op, {"x": x, "y": y})


@FEW
@given(pair=broadcast_pair(), seed=seeds, op=st.sampled_from(
    ["equal", "not_equal", "greater", "greater_equal", "less", "less_equal"]))
def test_comparisons(pair, seed, op):
    r = _rng(seed)
    x = r.integers(-2, 3, size=pair[0]).astype(np.float32)  # ties included
    y = r.integers(-2, 3, size=pair[1]).astype(np.float32)
    check(op, {"x": x, "y": y})


@FEW
@given(pair=broadcast_pair(), seed=seeds)
def test_int_and_logical(pair, seed):
    r = _rng(seed)
    x = r.integers(-9, 9, size=pair[0]).astype(np.int32)
    y = r.integers(1, 5, size=pair[1]).astype(np.int32)
    for op in ("add", "sub", "mul", "floor_div", "mod", "maximum"):
        check(op, {"x": x}, y=y)
    a, b = x > 0, y > 2
    for op in ("logical_and", "logical_or", "logical_xor"):
        check(op, {"x": a, "y": b})
    check("logical_not", {"x": a})


_UNARY_DOMAIN = {
    "abs": (-3, 3), "acos": (-0.99, 0.99), "asin": (-0.99, 0.99), "atan": (-3, 3), "atanh": (-0.99, 0.99),
    "ceil": (-3, 3), "cos": (-3, 3), "cosh": (-3, 3), "erf": (-3, 3), "exp": (-3, 3), "exp2": (-3, 3),
    "floor": (-3, 3), "round": (-3, 3), "sign": (-3, 3), "sin": (-3, 3), "sinh": (-3, 3), "sqrt": (0.01, 4),
    "square": (-3, 3), "tan": (-1.2, 1.2), "tanh": (-3, 3), "inverse": (0.1, 3), "log": (0.01, 4),
    "rsqrt": (0.01, 4), "relu": (-3, 3), "relu6": (-8, 8), "sigmoid": (-6, 6), "softplus": (-6, 6),
    "softsign": (-6, 6),
}


@FEW
@given(shape=shapes, seed=seeds, op=st.sampled_from(sorted(_UNARY_DOMAIN)))
def test_unary(shape, seed, op):
    lo, hi = _UNARY_DOMAIN[op]
    x = _rng(seed).uniform(lo, hi, size=shape).astype(np.float32)
    if op == "round":
        x[..., 0] = 2.5  # ties go to even
    check(op, {"x": x}, rtol=1e-5, atol=1e-6)


@FEW
@given(shape=shapes, seed=seeds, alpha=st.floats(-1.5, 1.5), beta=st.floats(0.1, 2.0))
def test_parametric_activations(shape, seed, alpha, beta):
    x = _rng(seed).normal(scale=2, size=shape).astype(np.float32)
    a, b = np.float32(alpha), np.float32(beta)
    check("leaky_relu", {"x": x}, alpha=a)
    check("elu", {"x": x}, alpha=a)
    check("thresholded_relu", {"x": x}, alpha=a)
    check("clamped_relu", {"x": x}, alpha=a, beta=b)
    check("linear_activation", {"x": x}, alpha=a, beta=b)
    check("scaled_tanh", {"x": x}, alpha=a, beta=b)
    check("sigmoid_hard", {"x": x}, alpha=a, beta=b)
    check("threshold", {"x": x}, alpha=a)
    check("clip", {"x": x}, alpha=np.float32(-abs(alpha)), beta=b)
    for mode in ("EXACT", "TANH_APPROXIMATION", "SIGMOID_APPROXIMATION"):
        check("gelu", {"x": x}, mode=mode)


@FEW
@given(channels=st.integers(1, 4), spatial=st.lists(st.integers(1, 4), min_size=1, max_size=3), seed=seeds)
def test_per_channel_activations(channels, spatial, seed):
    r = _rng(seed)
    x = r.normal(size=(2, channels, *spatial)).astype(np.float32)
    x4 = r.normal(size=(2, channels, 3, 2)).astype(np.float32)  # per-channel prelu is rank 4 only
    check("prelu", {"x": x4}, alpha=r.uniform(0, 1, channels).astype(np.float32))
    check("softplus_parametric", {"x": x}, alpha=r.uniform(0.5, 2, channels).astype(np.float32),
          beta=r.uniform(0.5, 2, channels).astype(np.float32))


@FEW
@given(shape=shapes, seed=seeds, data=st.data())
def test_softmax_and_layer_norm(shape, seed, data):
    r = _rng(seed)
    x = r.normal(scale=3, size=shape).astype(np.float32)
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    check("softmax", {"x": x}, axis=axis)
    axes = sorted(data.draw(st.sets(st.integers(0, len(shape) - 1), min_size=1)))
    norm_shape = [shape[i] for i in axes]
    check("layer_norm", {"x": x}, axes=axes, epsilon=np.float32(1e-5))
    check("layer_norm", {"x": x}, axes=[a - len(shape) for a in axes], gamma=r.normal(size=norm_shape).astype(np.float32),
          beta=r.normal(size=norm_shape).astype(np.float32), epsilon=np.float32(1e-3))


@FEW
@given(lead=st.lists(st.integers(1, 3), min_size=0, max_size=2), seed=seeds)
def test_l2_norm(lead, seed):
    x = _rng(seed).normal(size=(*lead, 2, 3, 4)).astype(np.float32)
    check("l2_norm", {"x": x}, epsilon=np.float32(1e-6))


@FEW
@given(shape=shapes, seed=seeds, data=st.data(), op=st.sampled_from(
    ["reduce_sum", "reduce_mean", "reduce_max", "reduce_min", "reduce_prod", "reduce_l1_norm", "reduce_l2_norm",
     "reduce_sum_square", "reduce_log_sum", "reduce_log_sum_exp"]))
def test_reductions(shape, seed, data, op):
    x = _rng(seed).uniform(0.5, 2.0, size=shape).astype(np.float32)
    keep = data.draw(st.booleans())
    axes = sorted(data.draw(st.sets(st.integers(-len(shape), len(shape) - 1), min_size=1)),
                  key=lambda a: a % len(shape))
    if len({a % len(shape) for a in axes}) != len(axes):
        axes = sorted({a % len(shape) for a in axes})
    check(op, {"x": x}, axes=axes, keep_dims=keep, rtol=1e-5)
    check(op, {"x": x}, keep_dims=keep, rtol=1e-5)  # all axes


@FEW
@given(shape=shapes, seed=seeds, data=st.data())
def test_arg_reductions(shape, seed, data):
    x = _rng(seed).integers(0, 3, size=shape).astype(np.float32)  # ties: the first index wins
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    keep = data.draw(st.booleans())
    check("reduce_argmax", {"x": x}, axis=axis, keep_dims=keep)
    check("reduce_argmin", {"x": x}, axis=axis, keep_dims=keep)


@FEW
@given(batch=st.lists(st.integers(1, 3), min_size=0, max_size=2), m=st.integers(1, 5), k=st.integers(1, 5),
       n=st.integers(1, 5), tx=st.booleans(), ty=st.booleans(), seed=seeds)
def test_matmul_and_linear(batch, m, k, n, tx, ty, seed):
    r = _rng(seed)
    x = r.normal(size=(*batch, *((k, m) if tx else (m, k)))).astype(np.float32)
    y = r.normal(size=(*batch[1:], *((n, k) if ty else (k, n)))).astype(np.float32)  # y broadcasts on batch
    check("matmul", {"x": x, "y": y}, transpose_x=tx, transpose_y=ty, rtol=1e-5, atol=1e-5)
    check("matmul", {"x": r.normal(size=(k,)).astype(np.float32), "y": r.normal(size=(k, n)).astype(np.float32)},
          rtol=1e-5, atol=1e-5)
    w, b = r.normal(size=(n, k)).astype(np.float32), r.normal(size=(n,)).astype(np.float32)
    check("linear", {"x": r.normal(size=(*batch, m, k)).astype(np.float32)}, weight=w, bias=b, rtol=1e-5, atol=1e-5)
    check("linear", {"x": r.normal(size=(k,)).astype(np.float32)}, weight=w, rtol=1e-5, atol=1e-5)


@FEW
@given(b=st.integers(1, 2), c=st.integers(1, 3), h=st.integers(1, 3), w1=st.integers(1, 3), w2=st.integers(1, 3),
       seed=seeds)
def test_einsum(b, c, h, w1, w2, seed):
    r = _rng(seed)
    x, y = r.normal(size=(b, c, h, w1)).astype(np.float32), r.normal(size=(b, w1, 1, w2)).astype(np.float32)
    want = np.einsum("nchw,nwhu->nchu", x, np.broadcast_to(y, (b, w1, h, w2)))

    @mb.program(input_specs=[_spec(x), _spec(y)], opset_version=IOS15)
    def prog(p, q):
        return mb.einsum(values=(p, q), equation="nchw,nwhu->nchu")

    got = Interpreter(prog).run([x, y]).outputs
    np.testing.assert_allclose(next(iter(got.values())), want, rtol=1e-5, atol=1e-5)


@FEW
@given(shape=shapes, seed=seeds, data=st.data())
def test_shape_ops(shape, seed, data):
    r = _rng(seed)
    x = r.normal(size=shape).astype(np.float32)
    rank = len(shape)
    perm = data.draw(st.permutations(list(range(rank))))
    perm = [p - rank if data.draw(st.booleans()) else p for p in perm]  # negative axes too
    check("transpose", {"x": x}, perm=perm)
    flat = int(np.prod(shape))
    check("reshape", {"x": x}, shape=[-1])
    check("reshape", {"x": x}, shape=[0] * (rank - 1) + [-1] if rank > 1 else [flat])
    n_new = data.draw(st.integers(1, 2))
    axes = data.draw(st.lists(st.integers(-(rank + n_new), rank + n_new - 1), min_size=n_new, max_size=n_new,
                              unique_by=lambda a: a % (rank + n_new)))
    check("expand_dims", {"x": x}, axes=axes)
    ones = np.ones((*shape, 1, 1), dtype=np.float32)
    check("squeeze", {"x": ones}, axes=[-1, rank])
    if any(s == 1 for s in shape) and any(s > 1 for s in shape):
        check("squeeze", {"x": x})
    if rank > 1:
        check("flatten2d", {"x": x}, axis=data.draw(st.integers(1, rank - 1)))
    reps = data.draw(st.lists(st.integers(1, 3), min_size=rank, max_size=rank))
    check("tile", {"x": x}, reps=reps)
    check("reverse", {"x": x}, axes=sorted(data.draw(st.sets(st.integers(0, rank - 1), min_size=1))))


def test_concat_interleave_as_documented():
    """coremltools' value inference ignores ``interleave``; its docstring's example is the definition."""
    in1 = np.array([[1, 2], [3, 4], [5, 6]], np.float32)
    in2 = np.array([[7, 8], [9, 10], [11, 12]], np.float32)

    @mb.program(input_specs=[_spec(in1), _spec(in2)], opset_version=IOS15)
    def prog(a, b):
        return mb.concat(values=(a, b), axis=0, interleave=True)

    got = next(iter(Interpreter(prog).run([in1, in2]).outputs.values()))
    np.testing.assert_array_equal(got, [[1, 2], [7, 8], [3, 4], [9, 10], [5, 6], [11, 12]])


def _concat_program(x: np.ndarray, y: np.ndarray, axis: int, interleave: bool) -> Any:
    @mb.program(input_specs=[_spec(x), _spec(y)], opset_version=IOS15)
    def prog(a, b):
        return mb.concat(values=(a, b, a), axis=axis, interleave=interleave)

    return prog


@FEW
@given(shape=shapes, seed=seeds, data=st.data())
def test_concat_stack_split(shape, seed, data):
    r = _rng(seed)
    rank = len(shape)
    axis = data.draw(st.integers(-rank, rank - 1))
    x, y = r.normal(size=shape).astype(np.float32), r.normal(size=shape).astype(np.float32)
    want = value_inference("concat", values=(x, y, x), axis=axis)[0]
    got = next(iter(Interpreter(_concat_program(x, y, axis, False)).run([x, y]).outputs.values()))
    np.testing.assert_array_equal(got, want)
    want = np.stack([x, y], axis=axis)

    @mb.program(input_specs=[_spec(x), _spec(y)], opset_version=IOS15)
    def st_prog(a, b):
        return mb.stack(values=(a, b), axis=axis)

    np.testing.assert_array_equal(next(iter(Interpreter(st_prog).run([x, y]).outputs.values())), want)
    n = x.shape[axis]
    divisors = [d for d in range(1, n + 1) if n % d == 0]
    check("split", {"x": x}, axis=axis, num_splits=data.draw(st.sampled_from(divisors)))
    cut = data.draw(st.integers(0, n))
    sizes = [s for s in (cut, n - cut) if s > 0]
    check("split", {"x": x}, axis=axis, split_sizes=np.array(sizes, dtype=np.int32))


@FEW
@given(shape=shapes, seed=seeds, data=st.data())
def test_slicing(shape, seed, data):
    x = _rng(seed).normal(size=shape).astype(np.float32)
    rank = len(shape)
    begin, end, stride, bm, em, sm = [], [], [], [], [], []
    for n in shape:
        s = data.draw(st.sampled_from([1, 1, 2, -1]))
        b = data.draw(st.integers(-n, n - 1))
        e = data.draw(st.integers(-n, n))
        squeeze = data.draw(st.booleans()) and rank > 1 and len([v for v in sm if v]) < rank - 1
        if squeeze:
            s = 1
        begin.append(b)
        end.append(e)
        stride.append(s)
        bm.append(data.draw(st.booleans()))
        em.append(data.draw(st.booleans()))
        sm.append(squeeze)
    sizes = [len(range(*slice(None if bm[i] else begin[i], None if em[i] else end[i], stride[i]).indices(n)))
             for i, n in enumerate(shape)]
    if any(z == 0 for i, z in enumerate(sizes) if not sm[i]):
        return  # an empty slice: coremltools refuses it, nothing to compare
    # fresh arrays per build: coremltools' value inference overwrites ``stride`` of squeezed axes in place
    for _ in range(1):
        want = value_inference("slice_by_index", x=x, begin=np.array(begin, np.int32), end=np.array(end, np.int32),
                               stride=np.array(stride, np.int32), begin_mask=bm, end_mask=em, squeeze_mask=sm)[0]
        got = interpret("slice_by_index", {"x": x}, begin=np.array(begin, np.int32), end=np.array(end, np.int32),
                        stride=np.array(stride, np.int32), begin_mask=bm, end_mask=em, squeeze_mask=sm)[0]
        np.testing.assert_array_equal(got, want.reshape(got.shape) if want.size == got.size else want)
    b2 = [data.draw(st.integers(0, n - 1)) for n in shape]
    size = [data.draw(st.sampled_from([-1, n - b])) if n - b > 0 else -1 for n, b in zip(shape, b2, strict=True)]
    check("slice_by_size", {"x": x}, begin=np.array(b2, np.int32), size=np.array(size, np.int32))


@FEW
@given(shape=shapes, seed=seeds, data=st.data(), mode=st.sampled_from(["constant", "reflect", "replicate"]))
def test_pad(shape, seed, data, mode):
    x = _rng(seed).normal(size=shape).astype(np.float32)
    n = data.draw(st.integers(1, len(shape)))
    pads = []
    for d in shape[len(shape) - n:]:
        limit = {"reflect": d - 1, "replicate": d, "constant": 3}[mode]
        pads += [data.draw(st.integers(0, max(0, min(limit, 3)))), data.draw(st.integers(0, max(0, min(limit, 3))))]
    extra = {"constant_val": np.float32(0.5)} if mode == "constant" else {}
    check("pad", {"x": x}, pad=np.array(pads, np.int32), mode=mode, **extra)


@FEW
@given(shape=shapes, seed=seeds, data=st.data())
def test_gathers(shape, seed, data):
    r = _rng(seed)
    x = r.normal(size=shape).astype(np.float32)
    rank = len(shape)
    axis = data.draw(st.integers(-rank, rank - 1))
    n = shape[axis]
    idx_shape = data.draw(st.lists(st.integers(1, 3), min_size=0, max_size=2))
    idx = r.integers(-n, n, size=idx_shape).astype(np.int32)
    check("gather", {"x": x}, indices=idx, axis=axis)
    along = r.integers(-n, n, size=[s if i != axis % rank else data.draw(st.integers(1, 3))
                                    for i, s in enumerate(shape)]).astype(np.int32)
    check("gather_along_axis", {"x": x}, indices=along, axis=axis)
    if rank >= 2:  # iOS16 batch_dims
        check("gather", {"x": x}, opset=IOS16, indices=r.integers(0, shape[1], size=(shape[0], 2)).astype(np.int32),
              axis=1, batch_dims=1)


@FEW
@given(m=st.integers(1, 5), n=st.integers(1, 5), lower=st.integers(-1, 3), upper=st.integers(-1, 3), seed=seeds,
       data=st.data())
def test_band_cumsum_topk_argsort(m, n, lower, upper, seed, data):
    r = _rng(seed)
    x = r.normal(size=(2, m, n)).astype(np.float32)
    check("band_part", {"x": x}, lower=lower, upper=upper)
    axis = data.draw(st.integers(-1, 2))  # coremltools' cumsum takes -1..rank-1
    rev = data.draw(st.booleans())
    check("cumsum", {"x": x}, axis=axis, reverse=rev, rtol=1e-5)
    k = data.draw(st.integers(1, n))
    asc = data.draw(st.booleans())
    check("topk", {"x": x}, k=k, axis=-1, ascending=asc)
    check("argsort", {"x": x}, axis=axis, ascending=asc)


def test_cumsum_exclusive_and_generators():
    x = np.arange(1, 7, dtype=np.float32).reshape(2, 3)
    got = interpret("cumsum", {"x": x}, axis=1, exclusive=True)[0]
    np.testing.assert_array_equal(got, [[0, 1, 3], [0, 4, 9]])
    got = interpret("cumsum", {"x": x}, axis=1, exclusive=True, reverse=True)[0]
    np.testing.assert_array_equal(got, [[5, 3, 0], [11, 6, 0]])
    check("fill", {"shape": np.array([2, 3], np.int32)}, value=np.float32(1.5))
    r = interpret("shape", {"x": x})[0]
    np.testing.assert_array_equal(r, [2, 3])


def test_select_and_cast():
    r = np.random.default_rng(0)
    c = r.random((3, 4)) > 0.5
    a, b = r.normal(size=(3, 4)).astype(np.float32), r.normal(size=(1, 4)).astype(np.float32)
    check("select", {"cond": c}, a=a, b=b)
    x = np.array([-2.7, -0.5, 0.0, 0.5, 2.7, 7.9], np.float32)
    check("cast", {"x": x}, dtype="int32")
    check("cast", {"x": x}, dtype="bool")
    check("cast", {"x": x}, dtype="fp16", rtol=0, atol=0)


def test_scatter_along_axis():
    r = np.random.default_rng(1)
    data = r.normal(size=(4, 3)).astype(np.float32)
    idx = np.array([[0, 1, 2], [3, 0, 1]], np.int32)  # distinct targets per column
    upd = r.normal(size=(2, 3)).astype(np.float32)
    check("scatter_along_axis", {"data": data}, indices=idx, updates=upd, axis=0, mode="update")
    # coremltools' value inference ignores ``mode``; the definition combines the current value and the update
    for mode, fn in (("add", np.add), ("mul", np.multiply), ("max", np.maximum), ("sub", np.subtract)):
        want = data.copy()
        for i in range(idx.shape[0]):
            for j in range(idx.shape[1]):
                want[idx[i, j], j] = fn(want[idx[i, j], j], upd[i, j])
        got = interpret("scatter_along_axis", {"data": data}, indices=idx, updates=upd, axis=0, mode=mode)[0]
        np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=mode)


# ------------------------------------------------------------------ fp16 semantics
def _fp16_program(op: str, shape: tuple[int, ...], **consts: Any) -> Any:
    @mb.program(input_specs=[mb.TensorSpec(shape=shape, dtype=types.fp16), mb.TensorSpec(shape=shape, dtype=types.fp16)],
                opset_version=IOS16)
    def prog(a, b):
        return getattr(mb, op)(x=a, y=b, **consts)

    return prog


@pytest.mark.parametrize("op,np_op", [("add", np.add), ("sub", np.subtract), ("mul", np.multiply),
                                      ("real_div", np.divide)])
def test_fp16_results_are_ieee_fp16(op, np_op):
    """An fp16 op returns exactly IEEE fp16 arithmetic (one rounding of the exact result), overflow included."""
    r = np.random.default_rng(3)
    a = (r.normal(size=(64,)) * 300).astype(np.float16)
    b = (r.normal(size=(64,)) * 300).astype(np.float16)
    a[:2], b[:2] = np.float16(60000), np.float16(-60000) if op != "add" else np.float16(30000)
    got = next(iter(Interpreter(_fp16_program(op, (64,))).run([a, b]).outputs.values()))
    assert got.dtype == np.float16
    with np.errstate(over="ignore"):
        want = np_op(a, b)  # numpy computes fp16 ops in fp32 and rounds once
    np.testing.assert_array_equal(got, want)
    if op in ("add", "mul", "sub"):
        assert np.isinf(got[0]), "60000 + 30000 (or 60000·-60000) must overflow to inf in fp16"


def test_fp16_inputs_and_intermediates_are_rounded_fp32_are_not():
    x = np.array([1.0 + 2.0**-12, 3.0], np.float32)  # not representable in fp16: rounds to 1.0

    def prog_for(dtype):
        @mb.program(input_specs=[mb.TensorSpec(shape=(2,), dtype=dtype)], opset_version=IOS16)
        def prog(a):
            return mb.mul(x=mb.add(x=a, y=np.array(2.0**-12, dtype=np.float16 if dtype == types.fp16 else np.float32)),
                          y=np.array(1.0, dtype=np.float16 if dtype == types.fp16 else np.float32))

        return prog

    got16 = next(iter(Interpreter(prog_for(types.fp16)).run([x]).outputs.values()))
    assert got16[0] == np.float16(1.0) + np.float16(2.0**-12)  # input rounded to 1.0, then 1 + 2^-12 rounds to 1
    got32 = next(iter(Interpreter(prog_for(types.fp32)).run([x]).outputs.values()))
    assert got32.dtype == np.float32 and got32[0] == np.float32(1.0 + 2.0**-11)


def test_wide_mode_keeps_fp32_values_in_float64():
    x = np.array([1.0, 3.0], np.float32)

    @mb.program(input_specs=[mb.TensorSpec(shape=(2,))], opset_version=IOS15)
    def prog(a):
        return mb.real_div(x=a, y=np.float32(3.0))

    narrow = next(iter(Interpreter(prog).run([x]).outputs.values()))
    wide = next(iter(Interpreter(prog, wide=True).run([x]).outputs.values()))
    assert narrow.dtype == np.float32 and wide.dtype == np.float64
    assert wide[0] == 1.0 / 3.0 and narrow[0] == np.float32(1.0) / np.float32(3.0)


# ------------------------------------------------------------------ compressed weights
def _weights_program(opset: Any, make: Any) -> Any:
    @mb.program(input_specs=[mb.TensorSpec(shape=(4, 6), dtype=types.fp16)], opset_version=opset)
    def prog(a):
        return mb.add(x=a, y=make())

    return prog


def test_constexpr_ops_match_coremltools_decompress():
    from coremltools.converters.mil.mil.ops.defs.iOS16.constexpr_ops import (
        constexpr_affine_dequantize,
        constexpr_lut_to_dense,
        constexpr_sparse_to_dense,
    )
    from coremltools.converters.mil.mil.ops.defs.iOS18.compression import constexpr_blockwise_shift_scale

    r = np.random.default_rng(5)
    q = r.integers(-128, 128, size=(4, 6)).astype(np.int8)
    zp = r.integers(-3, 3, size=(4,)).astype(np.int8)
    scale = r.uniform(0.01, 0.1, size=(4,)).astype(np.float16)
    lut = r.normal(size=(16,)).astype(np.float16)
    idx = r.integers(0, 16, size=24)
    packed = np.packbits(((idx[:, None] >> np.arange(4)) & 1).astype(np.uint8).reshape(-1), bitorder="little")
    mask_bits = r.random(24) > 0.5
    nonzero = r.normal(size=(int(mask_bits.sum()),)).astype(np.float16)
    data = r.integers(-8, 8, size=(4, 6)).astype(np.int8)
    bscale = r.uniform(0.01, 0.1, size=(2, 3)).astype(np.float16)
    offset = r.integers(-2, 2, size=(2, 3)).astype(np.int8)
    cases = {
        "affine": (IOS16, lambda: mb.constexpr_affine_dequantize(quantized_data=q, zero_point=zp, scale=scale, axis=0),
                   constexpr_affine_dequantize.decompress(q, zp, scale, 0)),
        "lut": (IOS16, lambda: mb.constexpr_lut_to_dense(indices=packed, lut=lut, shape=np.array([4, 6], np.uint32)),
                constexpr_lut_to_dense.decompress(lut, packed, np.array([4, 6]))),
        "sparse": (IOS16, lambda: mb.constexpr_sparse_to_dense(
            nonzero_data=nonzero, mask=np.packbits(mask_bits.astype(np.uint8), bitorder="little"),
            shape=np.array([4, 6], np.uint32)),
            constexpr_sparse_to_dense.decompress(nonzero, np.packbits(mask_bits.astype(np.uint8), bitorder="little"),
                                                 np.array([4, 6]))),
        "blockwise": (IOS18, lambda: mb.constexpr_blockwise_shift_scale(data=data, scale=bscale, offset=offset),
                      constexpr_blockwise_shift_scale.decompress(data, bscale, offset)),
    }
    for name, (opset, make, want) in cases.items():
        got = next(iter(Interpreter(_weights_program(opset, make)).run([np.zeros((4, 6), np.float16)]).outputs.values()))
        np.testing.assert_array_equal(got, want.astype(np.float16), err_msg=name)


# ------------------------------------------------------------------ ops without a kernel
def test_unknown_op_is_refused_before_running():
    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4, 4)), mb.TensorSpec(shape=(1, 4, 3))], opset_version=IOS15)
    def prog(boxes, scores):
        return mb.non_maximum_suppression(boxes=mb.relu(x=boxes), scores=scores, iou_threshold=0.5,
                                          score_threshold=0.1, max_boxes=2)[0]

    with pytest.raises(NotInterpreted) as err:
        Interpreter(prog)
    assert err.value.op_types == ["non_maximum_suppression"]
    assert "`non_maximum_suppression` is not interpreted" in str(err.value)
    assert err.value.parity_reason == "not verified: MIL op `non_maximum_suppression` is not interpreted"


def test_every_op_type_in_the_coreml_feature_cache_has_a_kernel():
    """The committed cache lists the MIL op types of 54 converted zoo/timm models (column ``op_type``)."""
    import gzip
    import json
    from pathlib import Path

    import hybridexport.calibrate as calibrate
    from hybridexport.export.mil import supported_ops

    data = json.loads(gzip.decompress((Path(calibrate.__file__).parent / "data" / "features_coreml.json.gz").read_bytes()))
    col = data["columns"].index("op_type")
    seen = {row[col] for table in data["tables"].values() for row in table["rows"]}
    assert len(seen) > 30
    assert seen - set(supported_ops()) == set()


def test_rounding_never_touches_a_value_another_op_reads():
    """``cast`` to fp16 returns its input tensor; rounding it must not change the fp32 value read later."""
    x = np.array([1.0 + 2.0**-12, 3.1, -7.3, 1e-7], np.float32)  # none of them is an fp16 value

    @mb.program(input_specs=[mb.TensorSpec(shape=(4,))], opset_version=IOS16)
    def prog(a):
        half = mb.cast(x=a, dtype="fp16")
        later = mb.add(x=a, y=np.float32(0.0))
        return later, mb.transpose(x=half, perm=[0])

    interp = Interpreter(prog)
    res = interp.run([x]).outputs
    later, half = (res[n] for n in interp.output_names)
    np.testing.assert_array_equal(later, x)
    np.testing.assert_array_equal(half, x.astype(np.float16))


def _const_program(op: str, opset: Any, **inputs: Any) -> tuple[Any, list[np.ndarray]]:
    """A program computing ``op`` on constants only (left as an op, not folded) and coremltools' values for it."""
    box: dict[str, Any] = {}

    @mb.program(input_specs=[mb.TensorSpec(shape=(1,))], opset_version=opset)
    def prog(dummy):
        out = getattr(mb, op)(**inputs)
        outs = list(out) if isinstance(out, (list, tuple)) else [out]
        box["val"] = [None if o.val is None else np.asarray(o.val) for o in outs]
        return (*outs, dummy)

    return prog, box["val"]


def test_ops_on_constants_left_in_the_program():
    for op, opset, inputs in [
        ("range_1d", IOS15, {"start": np.int32(1), "end": np.int32(9), "step": np.int32(3)}),
        ("range_1d", IOS15, {"start": np.float32(0.5), "end": np.float32(2.0), "step": np.float32(0.25)}),
        ("fill", IOS15, {"shape": np.array([2, 3], np.int32), "value": np.float32(-2.5)}),
        ("topk", IOS16, {"x": np.array([[3.0, 1.0, 2.0, 5.0]], np.float32), "k": 2, "return_indices": False}),
    ]:
        prog, want = _const_program(op, opset, **inputs)
        interp = Interpreter(prog)
        got = interp.run([np.zeros(1, np.float32)]).outputs
        for name, w in zip(interp.output_names, want, strict=False):
            if w is not None:
                np.testing.assert_allclose(got[name].astype(np.float64), w.astype(np.float64), err_msg=op)


def test_scatter_sdpa_and_quantization():
    r = np.random.default_rng(7)
    data = r.normal(size=(5, 3)).astype(np.float32)
    idx = np.array([4, 0], np.int32)
    upd = r.normal(size=(2, 3)).astype(np.float32)
    for mode, fn in (("update", lambda c, u: u), ("add", np.add)):
        want = data.copy()
        want[idx] = fn(want[idx], upd)
        got = interpret("scatter", {"data": data}, indices=idx, updates=upd, axis=0, mode=mode)[0]
        np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=mode)
    import torch

    q, k, v = (r.normal(size=(1, 2, 5, 4)).astype(np.float32) for _ in range(3))
    mask = r.random((5, 5)) > 0.3
    np.fill_diagonal(mask, True)

    @mb.program(input_specs=[_spec(q), _spec(k)], opset_version=IOS18)
    def prog(a, b):
        return mb.scaled_dot_product_attention(query=a, key=b, value=v, attn_mask=mask)

    got = next(iter(Interpreter(prog).run([q, k]).outputs.values()))
    want = torch.nn.functional.scaled_dot_product_attention(*(torch.from_numpy(t) for t in (q, k, v)),
                                                            attn_mask=torch.from_numpy(mask))
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-6)
    x = r.normal(size=(3, 4)).astype(np.float32)
    scale, zp = np.float32(0.02), np.int8(3)
    got = interpret("quantize", {"input": x}, IOS17, scale=scale, zero_point=zp, output_dtype="int8")[0]
    np.testing.assert_array_equal(got, np.clip(np.rint(x / scale) + 3, -128, 127).astype(np.int8))
    qd = r.integers(-128, 128, size=(3, 4)).astype(np.int8)
    prog, _ = _const_program("dequantize", IOS17, input=qd, scale=np.array([0.1, 0.2, 0.3], np.float32),
                             zero_point=np.array([1, -2, 0], np.int8), axis=0)
    interp = Interpreter(prog)
    got = interp.run([np.zeros(1, np.float32)]).outputs[interp.output_names[0]]
    want = (qd.astype(np.float32) - np.array([1, -2, 0])[:, None]) * np.array([0.1, 0.2, 0.3], np.float32)[:, None]
    np.testing.assert_allclose(got, want, rtol=1e-6)
