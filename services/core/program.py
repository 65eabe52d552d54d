"""Model programs of SDK runs: ``torch.export`` graphs of standard ATen operators, weights excluded.

An SDK run's model is the user's own Python code, which the analyzer must never import or run. At
``run.watch(model, ..., example_input=batch)`` the SDK exports the model (in eval mode: dropout off, batchnorm
on its running statistics) with :func:`export_program`: ``torch.export`` traces it, the graph is decomposed to
the Core ATen operator set, and the graph alone is written as JSON — operator names, constant arguments and
references between nodes. Parameters and persistent buffers are *not* in it: the analyzer takes them from the
run's tape at the requested step. Small tensor constants the graph needs (lifted constants, non-persistent
buffers) travel inline as raw little-endian bytes in base64. Nothing is pickled.

:func:`load_program` parses that JSON back without unpickling and without executing any user code: every node
must name an allow-listed operator (functional Core ATen operators plus a few named extras such as shape
queries and the activations kept whole), and arguments may only be numbers, strings, lists, references to
earlier nodes and a closed set of dtypes / devices / layouts / memory formats. :class:`Program` then runs the
graph with a ``{state_dict name: tensor}`` mapping, and :class:`ProgramModule` wraps it as an ``nn.Module``
whose conv layers (named by module path) can be observed like a spec model's: see docs/sdk.md.
"""

from __future__ import annotations

import base64
import json
import math
import operator
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

__all__ = [
    "FORMAT",
    "VERSION",
    "ConvLayer",
    "Program",
    "ProgramError",
    "ProgramModule",
    "eval_inputs_key",
    "eval_labels_key",
    "export_program",
    "load_program",
    "program_key",
]

FORMAT = "netlapse-program"
VERSION = 1
MAX_PROGRAM_BYTES = 64 * 1024 * 1024
MAX_CONSTANT_BYTES = 16 * 1024 * 1024  # inline tensors (lifted constants, non-persistent buffers), in all
MAX_NODES = 200_000

FeaturePoint = Literal["post", "pre"]


def program_key(run_id: str) -> str:
    """Store key of an SDK run's program (what :func:`export_program` returns)."""
    return f"runs/{run_id}/sdk/program.bin"


def eval_inputs_key(run_id: str) -> str:
    """Store key of an SDK run's evaluation inputs: ``.npy`` [N, ...] written without pickle."""
    return f"runs/{run_id}/sdk/eval_inputs.npy"


def eval_labels_key(run_id: str) -> str:
    """Store key of an SDK run's evaluation labels: ``.npy`` [N] integers written without pickle."""
    return f"runs/{run_id}/sdk/eval_labels.npy"


class ProgramError(ValueError):
    """A program that cannot be exported, parsed or run; the message says what is wrong."""


# --- the closed vocabulary of a program ------------------------------------------------------------------

_DTYPES: dict[str, torch.dtype] = {
    str(d).removeprefix("torch."): d
    for d in (
        torch.float64,
        torch.float32,
        torch.float16,
        torch.bfloat16,
        torch.int64,
        torch.int32,
        torch.int16,
        torch.int8,
        torch.uint8,
        torch.bool,
        torch.complex64,
        torch.complex128,
    )
}
_LAYOUTS: dict[str, torch.layout] = {"strided": torch.strided}
_MEMORY_FORMATS: dict[str, torch.memory_format] = {
    "contiguous_format": torch.contiguous_format,
    "channels_last": torch.channels_last,
    "channels_last_3d": torch.channels_last_3d,
    "preserve_format": torch.preserve_format,
}

# Operators outside the Core ATen set that exported graphs contain: shape checks inserted by torch.export, and
# activations kept whole (not decomposed) so a conv layer's post-activation output is one node.
_EXTRA_ATEN = frozenset(
    {
        "aten._assert_scalar.default",
        "aten._assert_tensor_metadata.default",
        "aten.sym_constrain_range.default",
        "aten.sym_constrain_range_for_size.default",
        "aten.silu.default",
        "aten.hardswish.default",
        "aten.hardsigmoid.default",
        "aten.mish.default",
        "aten.softplus.default",
        "aten.relu6.default",
    }
)
_KEEP_WHOLE = ("silu", "hardswish", "hardsigmoid", "mish", "softplus", "relu6")
# Pure functions of Python scalars (symbolic sizes) and tuple indexing: the only non-ATen targets allowed.
_PY_FUNCTIONS: dict[str, Callable[..., Any]] = {
    f"operator.{name}": getattr(operator, name)
    for name in (
        "getitem",
        "add",
        "sub",
        "mul",
        "floordiv",
        "truediv",
        "mod",
        "neg",
        "eq",
        "ne",
        "lt",
        "le",
        "gt",
        "ge",
        "and_",
        "or_",
        "not_",
    )
}
_BATCHNORM_OPS = frozenset(
    {
        "aten._native_batch_norm_legit_no_training.default",
        "aten._native_batch_norm_legit.default",
        "aten.native_batch_norm.default",
        "aten._native_batch_norm_legit_functional.default",
    }
)
# Elementwise activations that, directly after a conv layer (and its batchnorm), give its "post" output.
_ACTIVATION_OPS = frozenset(
    {
        "aten.relu.default",
        "aten.gelu.default",
        "aten.sigmoid.default",
        "aten.tanh.default",
        "aten.leaky_relu.default",
        "aten.hardtanh.default",
        "aten.elu.default",
        "aten.silu.default",
        "aten.hardswish.default",
        "aten.hardsigmoid.default",
        "aten.mish.default",
        "aten.softplus.default",
        "aten.relu6.default",
    }
)
_CONV_OP = "aten.convolution.default"
_ATEN_NAME = re.compile(r"^aten\.([a-z_][a-z0-9_]*)\.([a-zA-Z_][a-zA-Z0-9_]*)$")


def _resolve_aten(qualname: str) -> Any:
    """The OpOverload for an allow-listed ``aten.<op>.<overload>`` name, or ProgramError."""
    m = _ATEN_NAME.match(qualname)
    if m is None:
        raise ProgramError(f"operator {qualname!r} is not an ATen operator name; only ATen operators may run")
    name, overload = m.groups()
    packet = getattr(torch.ops.aten, name, None) if not name.startswith("__") else None
    if not isinstance(packet, torch._ops.OpOverloadPacket) or overload not in packet.overloads():
        raise ProgramError(f"operator {qualname!r} does not exist in this torch ({torch.__version__})")
    op = getattr(packet, overload)
    if qualname not in _EXTRA_ATEN and torch.Tag.core not in op.tags:
        raise ProgramError(
            f"operator {qualname!r} is not allowed: programs may use the functional Core ATen operators "
            "(and a few named extras) only"
        )
    if op._schema.is_mutable:
        raise ProgramError(f"operator {qualname!r} is not allowed: it mutates its inputs")
    return op


def _target_name(target: Any) -> str:
    if isinstance(target, torch._ops.OpOverload):
        ns, _, op = target._schema.name.partition("::")
        return f"{ns}.{op}.{target._overloadname}"
    mod, name = getattr(target, "__module__", None), getattr(target, "__name__", None)
    if mod in ("_operator", "operator") and name:
        return f"operator.{name}"
    return f"{mod}.{name}" if mod and name else repr(target)


# --- export ----------------------------------------------------------------------------------------------

_WARNED = False


def _warn_once(message: str) -> None:
    global _WARNED
    if not _WARNED:
        _WARNED = True
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _example_args(example_input: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if isinstance(example_input, Mapping):
        return (), dict(example_input)
    if isinstance(example_input, list | tuple):
        return tuple(example_input), {}
    return (example_input,), {}


def _batch_dynamic_shapes(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """dim 0 of every tensor input is one shared symbolic batch size."""
    batch = torch.export.Dim("batch")

    def spec(v: Any) -> Any:
        return {0: batch} if isinstance(v, torch.Tensor) and v.dim() >= 1 else None

    if kwargs:
        return {k: spec(v) for k, v in kwargs.items()}
    return tuple(spec(a) for a in args)


def _at_least_two(v: Any) -> Any:
    # A batch of 1 would be specialised to 1 by torch.export; two copies keep the batch size symbolic.
    if isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] < 2:
        return torch.cat([v, v], dim=0)
    return v


def export_program(model: nn.Module, example_input: Any) -> bytes | None:
    """The model's forward as a pickle-free program (JSON bytes), or None (with one warning) if it cannot be.

    ``example_input`` is one batch as the model takes it: a tensor, a tuple of positional tensors, or a dict
    of keyword tensors. The model is exported in eval mode (its training flags are restored afterwards), with
    the batch dimension symbolic where torch.export can keep it so, and decomposed to Core ATen operators.
    Parameters and persistent buffers are left out: they are named by their ``state_dict`` names.
    """
    try:
        return _export(model, example_input)
    except Exception as exc:  # any failure of torch.export must not stop the user's training
        _warn_once(
            f"netlapse: could not export the model with torch.export ({type(exc).__name__}: {exc}); "
            "recording goes on, but activations and feature maps will not be available for this run"
        )
        return None


def _export(model: nn.Module, example_input: Any) -> bytes:
    args, kwargs = _example_args(example_input)
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            try:
                ep = torch.export.export(
                    model,
                    tuple(_at_least_two(a) for a in args),
                    {k: _at_least_two(v) for k, v in kwargs.items()} or None,
                    dynamic_shapes=_batch_dynamic_shapes(args, kwargs),
                )
                dynamic = True
            except Exception:  # e.g. the model depends on the batch size: a fixed-batch program instead
                ep = torch.export.export(model, args, kwargs or None)
                dynamic = False
            make_table = getattr(torch.export, "default_decompositions", None)
            if make_table is None:  # torch before 2.6: the default table, activations decomposed too
                ep = ep.run_decompositions()
            else:
                table = make_table()
                for name in _KEEP_WHOLE:
                    op = getattr(torch.ops.aten, name, None)
                    if op is not None and op.default in table:
                        del table[op.default]
                ep = ep.run_decompositions(table)
    finally:
        for m, training in modes.items():
            m.training = training
    doc = _serialize(ep, model, dynamic, args, kwargs)
    data = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode("ascii")
    if len(data) > MAX_PROGRAM_BYTES:
        raise ProgramError(f"the program is {len(data)} bytes; at most {MAX_PROGRAM_BYTES} are stored")
    load_program(data)  # never store a program the analyzer would refuse
    return data


def _shape(v: Any) -> list[int | None] | None:
    shape = getattr(v, "shape", None)
    if shape is None:
        return None
    return [int(s) if isinstance(s, int) else None for s in shape]


def _dtype_name(dtype: torch.dtype) -> str:
    name = str(dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise ProgramError(f"dtype {dtype} is not supported in programs")
    return name


def _tensor_value(t: torch.Tensor) -> dict[str, Any]:
    t = t.detach().to("cpu").contiguous()
    name = _dtype_name(t.dtype)
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16: its bits as little-endian int16
        raw = t.view(torch.int16).numpy().astype("<i2").tobytes()
    else:
        a = t.numpy()
        raw = a.astype(a.dtype.newbyteorder("<")).tobytes()
    return {"dtype": name, "shape": list(t.shape), "data": base64.b64encode(raw).decode("ascii")}


def _encode_arg(a: Any) -> Any:
    if isinstance(a, torch.fx.Node):
        return {"node": a.name}
    if a is None or isinstance(a, bool | int | str):
        return a
    if isinstance(a, float):
        return a if math.isfinite(a) else {"float": repr(a)}
    if isinstance(a, list | tuple):
        return [_encode_arg(x) for x in a]
    if isinstance(a, torch.dtype):
        return {"dtype": _dtype_name(a)}
    if isinstance(a, torch.device):
        return {"device": a.type}
    if isinstance(a, torch.layout):
        name = str(a).removeprefix("torch.")
        if name not in _LAYOUTS:
            raise ProgramError(f"layout {a} is not supported in programs")
        return {"layout": name}
    if isinstance(a, torch.memory_format):
        name = str(a).removeprefix("torch.")
        if name not in _MEMORY_FORMATS:
            raise ProgramError(f"memory format {a} is not supported in programs")
        return {"memory_format": name}
    raise ProgramError(f"an argument of type {type(a).__name__} cannot be stored in a program")


def _serialize(
    ep: Any, model: nn.Module, dynamic: bool, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    sig = ep.graph_signature
    persistent = {name for name, _ in model.named_buffers()} - {
        f"{prefix}.{n}" if prefix else n
        for prefix, m in model.named_modules()
        for n in getattr(m, "_non_persistent_buffers_set", ())
    }
    inputs: list[dict[str, Any]] = []
    spent = 0
    by_placeholder = {spec.arg.name: spec for spec in sig.input_specs}
    for node in ep.graph.nodes:
        if node.op != "placeholder":
            continue
        spec = by_placeholder[node.name]
        kind = spec.kind.name
        val = node.meta.get("val")
        entry: dict[str, Any] = {"name": node.name, "shape": _shape(val)}
        if isinstance(val, torch.Tensor):
            entry["dtype"] = _dtype_name(val.dtype)
        if kind == "USER_INPUT":
            entry["kind"] = "input"
        elif kind == "PARAMETER" or (
            kind == "BUFFER"
            and spec.target in persistent
            # the tape holds floating-point tensors only: an integer buffer the graph reads travels inline
            and (model.get_buffer(spec.target).is_floating_point() or not node.users)
        ):
            entry["kind"] = "state"
            entry["target"] = spec.target
            entry["role"] = "parameter" if kind == "PARAMETER" else "buffer"
        elif kind in ("BUFFER", "CONSTANT_TENSOR"):
            value = ep.constants.get(spec.target)
            if value is None and kind == "BUFFER":
                value = model.get_buffer(spec.target)
            if not isinstance(value, torch.Tensor):
                raise ProgramError(f"the graph's constant {spec.target!r} is not a tensor")
            spent += value.numel() * value.element_size()
            if spent > MAX_CONSTANT_BYTES:
                raise ProgramError(
                    f"the model's constant tensors exceed {MAX_CONSTANT_BYTES} bytes; they are stored inline"
                )
            entry["kind"] = "constant"
            entry["target"] = spec.target
            entry["value"] = _tensor_value(value)
        else:
            raise ProgramError(f"graph inputs of kind {kind} (e.g. custom objects) are not supported")
        inputs.append(entry)
    nodes: list[dict[str, Any]] = []
    outputs: list[Any] = []
    for node in ep.graph.nodes:
        if node.op == "call_function":
            stack = node.meta.get("nn_module_stack") or {}
            module, module_type = list(stack.values())[-1] if stack else ("", "")
            val = node.meta.get("val")
            nodes.append(
                {
                    "name": node.name,
                    "op": _target_name(node.target),
                    "args": _encode_arg(list(node.args)),
                    "kwargs": {k: _encode_arg(v) for k, v in node.kwargs.items()},
                    "module": str(module),
                    "module_type": str(module_type),
                    "shape": _shape(val),
                    **({"dtype": _dtype_name(val.dtype)} if isinstance(val, torch.Tensor) else {}),
                }
            )
        elif node.op == "output":
            outputs = _encode_arg(list(node.args[0]))
        elif node.op != "placeholder":
            raise ProgramError(f"graph node {node.name!r} of kind {node.op!r} is not supported")
    user_outputs = [
        i for i, spec in enumerate(sig.output_specs) if spec.kind.name in ("USER_OUTPUT", "LOSS_OUTPUT")
    ]
    example = args[0] if args else next(iter(kwargs.values()), None)
    return {
        "format": FORMAT,
        "version": VERSION,
        "torch_version": str(torch.__version__),
        "dynamic_batch": dynamic,
        "batch_size": int(example.shape[0]) if isinstance(example, torch.Tensor) and example.dim() else None,
        "inputs": inputs,
        "nodes": nodes,
        "outputs": [outputs[i] for i in user_outputs],
    }


# --- load --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvLayer:
    """A 2-D conv layer of a program: its module path, channel count and the nodes of its two points.

    ``pre`` is the conv's output, or its batchnorm's when a batchnorm takes it directly; ``post`` is the
    elementwise activation applied directly to ``pre`` (``pre`` again when none is: e.g. a conv whose output
    first joins a residual sum)."""

    name: str
    channels: int
    pre: str
    post: str
    activation: str | None


@dataclass
class _Node:
    name: str
    fn: Callable[..., Any]
    args: Any
    kwargs: dict[str, Any]
    op: str
    module: str
    shape: list[int | None] | None
    refs: list[str] = field(default_factory=list)


def _check_str(v: Any, what: str) -> str:
    if not isinstance(v, str) or not v or len(v) > 1000:
        raise ProgramError(f"{what} must be a non-empty string")
    return v


class _Decoder:
    """Turns JSON arguments into Python values, checking every reference and constant against the vocabulary."""

    def __init__(self, known: set[str]) -> None:
        self.known = known
        self.refs: list[str] = []

    def __call__(self, a: Any) -> Any:
        if a is None or isinstance(a, bool | int | float | str):
            return a
        if isinstance(a, list):
            return [self(x) for x in a]
        if isinstance(a, dict) and len(a) == 1:
            ((k, v),) = a.items()
            if k == "node":
                if v not in self.known:
                    raise ProgramError(f"a node refers to {v!r}, which is not defined before it")
                self.refs.append(v)
                return _Ref(v)
            tables: dict[str, Mapping[str, Any]] = {
                "dtype": _DTYPES,
                "layout": _LAYOUTS,
                "memory_format": _MEMORY_FORMATS,
            }
            table = tables.get(k)
            if table is not None:
                if v not in table:
                    raise ProgramError(f"{k} {v!r} is not allowed in programs")
                return table[v]
            if k == "device":
                if v not in ("cpu", "cuda", "mps", "xpu", "meta"):
                    raise ProgramError(f"device {v!r} is not allowed in programs")
                return _DEVICE
            if k == "float":
                if v not in ("inf", "-inf", "nan"):
                    raise ProgramError(f"float {v!r} is not allowed in programs")
                return float(v)
        raise ProgramError(f"argument {str(a)[:80]!r} is not a value a program may hold")


@dataclass(frozen=True)
class _Ref:
    name: str


_DEVICE = object()  # every device of the exporting machine becomes the device the program runs on


def _decode_tensor(v: Any) -> torch.Tensor:
    if not isinstance(v, dict) or set(v) != {"dtype", "shape", "data"}:
        raise ProgramError("a constant must be {dtype, shape, data}")
    dtype = _DTYPES.get(v["dtype"])
    if dtype is None:
        raise ProgramError(f"constant dtype {v['dtype']!r} is not allowed")
    shape = v["shape"]
    if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise ProgramError("a constant's shape must be a list of sizes")
    if not isinstance(v["data"], str):
        raise ProgramError("a constant's data must be base64 text")
    try:
        raw = base64.b64decode(v["data"], validate=True)
    except ValueError:
        raise ProgramError("a constant's data is not valid base64") from None
    n = math.prod(shape)
    size = torch.empty((), dtype=dtype).element_size()
    if len(raw) != n * size:
        raise ProgramError(f"constant of shape {shape} and dtype {v['dtype']} needs {n * size} bytes")
    if dtype == torch.bfloat16:
        return (
            torch.from_numpy(np.frombuffer(raw, dtype="<i2").astype(np.int16))
            .view(torch.bfloat16)
            .reshape(shape)
        )
    native = torch.empty((), dtype=dtype).numpy().dtype
    return torch.from_numpy(np.frombuffer(raw, dtype=native.newbyteorder("<")).astype(native)).reshape(shape)


def load_program(data: bytes) -> Program:
    """Parse and check a program (JSON); ProgramError says what is not allowed. Nothing is executed here."""
    if len(data) > MAX_PROGRAM_BYTES:
        raise ProgramError(f"the program is {len(data)} bytes; at most {MAX_PROGRAM_BYTES} are accepted")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProgramError(f"the program is not JSON: {exc}") from None
    except RecursionError:
        raise ProgramError("the program nests too deeply") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ProgramError(f"not a netlapse program (format must be {FORMAT!r})")
    if doc.get("version") != VERSION:
        raise ProgramError(
            f"program version {doc.get('version')!r} is not supported (this netlapse reads {VERSION})"
        )
    try:
        return Program(doc)
    except RecursionError:
        raise ProgramError("the program's arguments nest too deeply") from None


class Program:
    """A checked program: inputs, allow-listed nodes and outputs, ready to run with a given state."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.dynamic_batch = bool(doc.get("dynamic_batch"))
        bs = doc.get("batch_size")
        self.batch_size: int | None = bs if isinstance(bs, int) and bs > 0 else None
        self.torch_version = str(doc.get("torch_version", ""))
        self.inputs: list[str] = []  # user inputs, in call order
        self.input_shapes: list[list[int | None] | None] = []
        self.input_dtypes: list[torch.dtype | None] = []
        self.state: dict[str, str] = {}  # placeholder → state_dict name
        self.state_dtypes: dict[str, torch.dtype] = {}
        self.buffers: set[str] = set()  # state_dict names of the buffers among the state
        self.constants: dict[str, torch.Tensor] = {}
        known: set[str] = set()
        raw_inputs = doc.get("inputs")
        raw_nodes = doc.get("nodes")
        if not isinstance(raw_inputs, list) or not isinstance(raw_nodes, list):
            raise ProgramError("a program needs lists 'inputs' and 'nodes'")
        if len(raw_nodes) > MAX_NODES:
            raise ProgramError(f"the program has {len(raw_nodes)} nodes; at most {MAX_NODES} are accepted")
        for e in raw_inputs:
            if not isinstance(e, dict):
                raise ProgramError("every input must be an object")
            name = _check_str(e.get("name"), "an input's name")
            if name in known:
                raise ProgramError(f"input {name!r} is defined twice")
            kind = e.get("kind")
            if kind == "input":
                self.inputs.append(name)
                shape = e.get("shape")
                self.input_shapes.append(shape if isinstance(shape, list) else None)
                self.input_dtypes.append(_DTYPES.get(e.get("dtype", "")))
            elif kind == "state":
                self.state[name] = _check_str(e.get("target"), f"input {name!r}'s target")
                dtype = _DTYPES.get(e.get("dtype", "float32"))
                if dtype is None:
                    raise ProgramError(f"input {name!r}: dtype {e.get('dtype')!r} is not allowed")
                self.state_dtypes[name] = dtype
                if e.get("role") == "buffer":
                    self.buffers.add(self.state[name])
            elif kind == "constant":
                self.constants[name] = _decode_tensor(e.get("value"))
            else:
                raise ProgramError(f"input {name!r} has unknown kind {kind!r}")
            known.add(name)
        self.nodes: list[_Node] = []
        by_name: dict[str, _Node] = {}
        for e in raw_nodes:
            if not isinstance(e, dict):
                raise ProgramError("every node must be an object")
            name = _check_str(e.get("name"), "a node's name")
            if name in known:
                raise ProgramError(f"node {name!r} is defined twice")
            op = _check_str(e.get("op"), f"node {name!r}'s operator")
            fn = _PY_FUNCTIONS.get(op) or _resolve_aten(op)
            dec = _Decoder(known)
            args = dec(e.get("args", []))
            kwargs_raw = e.get("kwargs", {})
            if not isinstance(args, list) or not isinstance(kwargs_raw, dict):
                raise ProgramError(f"node {name!r}: args must be a list and kwargs an object")
            kwargs = {_check_str(k, "a keyword"): dec(v) for k, v in kwargs_raw.items()}
            shape = e.get("shape")
            node = _Node(
                name=name,
                fn=fn,
                args=args,
                kwargs=kwargs,
                op=op,
                module=str(e.get("module", "")),
                shape=shape if isinstance(shape, list) else None,
                refs=dec.refs,
            )
            self.nodes.append(node)
            by_name[name] = node
            known.add(name)
        dec = _Decoder(known)
        self.outputs = dec(doc.get("outputs", []))
        if not isinstance(self.outputs, list):
            raise ProgramError("'outputs' must be a list")
        self._output_refs = dec.refs
        self._by_name = by_name
        self._users: dict[str, list[_Node]] = {}
        for n in self.nodes:
            for r in n.refs:
                self._users.setdefault(r, []).append(n)
        # After which node each value is needed for the last time, so a run frees intermediates early.
        last: dict[str, int] = {}
        for i, n in enumerate(self.nodes):
            for r in n.refs:
                last[r] = i
        self._free_after: list[list[str]] = [[] for _ in self.nodes]
        keep = set(self._output_refs)
        for r, i in last.items():
            if r not in keep:
                self._free_after[i].append(r)
        used = set(last) | keep
        self.required_state = {p: t for p, t in self.state.items() if p in used}
        self.conv_layers = self._find_conv_layers()

    # -- structure

    @property
    def logits_width(self) -> int | None:
        """The last dimension of the first output (a classifier's number of classes), when it is static."""
        for r in self._output_refs:
            node = self._by_name.get(r)
            if node is not None and node.shape and isinstance(node.shape[-1], int):
                return node.shape[-1]
            return None
        return None

    def _only_user(self, name: str) -> _Node | None:
        users = self._users.get(name, [])
        return users[0] if len(users) == 1 and name not in self._output_refs else None

    def _find_conv_layers(self) -> list[ConvLayer]:
        layers: list[ConvLayer] = []
        seen: dict[str, int] = {}
        for n in self.nodes:
            if n.op != _CONV_OP or n.shape is None or len(n.shape) != 4 or not isinstance(n.shape[1], int):
                continue
            base = n.module or n.name
            seen[base] = seen.get(base, 0) + 1
            name = base if seen[base] == 1 else f"{base}#{seen[base]}"
            pre = n.name
            bn = self._only_user(pre)
            if bn is not None and bn.op in _BATCHNORM_OPS and bn.args and bn.args[0] == _Ref(pre):
                first = [
                    u
                    for u in self._users.get(bn.name, [])
                    if u.op == "operator.getitem" and u.args[1:] == [0]
                ]
                if len(first) == 1:
                    pre = first[0].name
            post, activation = pre, None
            act = self._only_user(pre)
            if (
                act is not None
                and act.op in _ACTIVATION_OPS
                and act.args
                and act.args[0] == _Ref(pre)
                and act.refs == [pre]
            ):
                post, activation = act.name, act.op.split(".")[1]
            layers.append(
                ConvLayer(name=name, channels=int(n.shape[1]), pre=pre, post=post, activation=activation)
            )
        return layers

    def conv_layer(self, name: str) -> ConvLayer:
        """The conv layer named by module path; ProgramError listing them when there is none of that name."""
        for layer in self.conv_layers:
            if layer.name == name:
                return layer
        names = ", ".join(c.name for c in self.conv_layers) or "none"
        raise ProgramError(f"layer {name!r} is not a conv layer of this model; conv layers: {names}")

    def activation_fn(self, layer: ConvLayer) -> Callable[[torch.Tensor], torch.Tensor]:
        """The function that takes ``layer``'s pre output to its post output (identity without an activation)."""
        if layer.post == layer.pre:
            return lambda t: t
        node = self._by_name[layer.post]
        rest_args, kwargs = node.args[1:], node.kwargs
        return lambda t: node.fn(t, *rest_args, **kwargs)

    def missing_state(self, names: Iterable[str]) -> list[str]:
        """The ``state_dict`` names the program needs that are not in ``names``."""
        have = set(names)
        return [t for t in self.required_state.values() if t not in have]

    # -- running

    def run(
        self,
        state: Mapping[str, torch.Tensor],
        *inputs: torch.Tensor,
        device: torch.device | str = "cpu",
        observe: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
        stop_at: str | None = None,
    ) -> Any:
        """Run the graph; returns the user outputs (a list), or the value of node ``stop_at`` once computed.

        ``state`` maps ``state_dict`` names to tensors (the tape's at some step); ``observe`` maps node names to
        functions whose result replaces the node's value (identity probes for forward hooks)."""
        device = torch.device(device)
        if len(inputs) != len(self.inputs):
            raise ProgramError(f"the program takes {len(self.inputs)} input(s), got {len(inputs)}")
        missing = self.missing_state(state)
        if missing:
            raise ProgramError(f"the state lacks tensors the program needs: {', '.join(missing)}")
        env: dict[str, Any] = {}
        for p, target in self.required_state.items():
            env[p] = state[target].to(device=device, dtype=self.state_dtypes[p])
        for p, t in self.constants.items():
            env[p] = t.to(device)
        for p, x in zip(self.inputs, inputs, strict=True):
            env[p] = x.to(device)

        def value(a: Any) -> Any:
            if isinstance(a, _Ref):
                return env[a.name]
            if isinstance(a, list):
                return [value(x) for x in a]
            if a is _DEVICE:
                return device
            return a

        for i, n in enumerate(self.nodes):
            try:
                out = n.fn(*value(n.args), **{k: value(v) for k, v in n.kwargs.items()})
            except (RuntimeError, TypeError, ValueError, IndexError) as exc:
                where = f" (in {n.module})" if n.module else ""
                raise ProgramError(
                    f"the model program failed at node {n.name}, {n.op}{where}: {exc}"
                ) from None
            if observe is not None and n.name in observe:
                out = observe[n.name](out)
            env[n.name] = out
            if n.name == stop_at:
                return out
            for r in self._free_after[i]:
                env.pop(r, None)
        return value(self.outputs)

    def module(self, state: Mapping[str, torch.Tensor], device: torch.device | str = "cpu") -> ProgramModule:
        """An ``nn.Module`` running this program with ``state`` (see :class:`ProgramModule`)."""
        return ProgramModule(self, state, device)


def _probe_key(i: int) -> str:
    return f"c{i}"


class ProgramModule(nn.Module):
    """A program bound to one state: ``forward(x)`` gives the first output (the logits).

    Each conv layer's pre output passes through an ``nn.Identity`` submodule ``probes.c<i>`` (i = its index
    in :attr:`Program.conv_layers`), so forward hooks observe it as they would observe a spec model's layer.
    """

    def __init__(
        self, program: Program, state: Mapping[str, torch.Tensor], device: torch.device | str
    ) -> None:
        super().__init__()
        if len(program.inputs) != 1:
            raise ProgramError(
                f"the model takes {len(program.inputs)} inputs; per-input analyses need a model of one input"
            )
        self.program = program
        self.device = torch.device(device)
        self.state = {t: state[t].to(self.device) for t in program.required_state.values() if t in state}
        missing = program.missing_state(self.state)
        if missing:
            raise ProgramError(f"the state lacks tensors the program needs: {', '.join(missing)}")
        self.probes = nn.ModuleDict({_probe_key(i): nn.Identity() for i in range(len(program.conv_layers))})
        self._observe = {layer.pre: self.probes[_probe_key(i)] for i, layer in enumerate(program.conv_layers)}

    def probe_path(self, layer: str) -> str:
        """The submodule whose output is ``layer``'s pre output (for forward hooks)."""
        for i, c in enumerate(self.program.conv_layers):
            if c.name == layer:
                return f"probes.{_probe_key(i)}"
        self.program.conv_layer(layer)  # raises with the list of layers
        raise AssertionError

    def _chunks(self, x: torch.Tensor) -> Sequence[tuple[torch.Tensor, int]]:
        """Batches the program accepts: any size when the batch is symbolic, else exactly its export size."""
        bs = self.program.batch_size
        if self.program.dynamic_batch or bs is None or x.shape[0] == bs:
            return [(x, x.shape[0])]
        out = []
        for lo in range(0, x.shape[0], bs):
            part = x[lo : lo + bs]
            n = part.shape[0]
            if n < bs:  # pad with copies of the last row; eval-mode rows do not affect each other
                part = torch.cat([part, part[-1:].expand(bs - n, *part.shape[1:])])
            out.append((part, n))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The program's first output for a batch (its logits)."""
        outs = []
        for part, n in self._chunks(x):
            res = self.program.run(self.state, part, device=self.device, observe=self._observe)
            first = next((o for o in res if isinstance(o, torch.Tensor)), None)
            if first is None:
                raise ProgramError("the model returns no tensor")
            outs.append(first[:n])
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def feature_maps(self, x: torch.Tensor, layer: str, point: FeaturePoint = "post") -> torch.Tensor:
        """Output ``[N, C, H, W]`` of the named conv layer at ``point``, running the graph only up to it."""
        conv = self.program.conv_layer(layer)
        if point not in ("post", "pre"):
            raise ValueError(f"point must be 'post' or 'pre', got {point!r}")
        target = conv.post if point == "post" else conv.pre
        outs = []
        for part, n in self._chunks(x):
            out = self.program.run(self.state, part, device=self.device, stop_at=target)
            outs.append(out[:n])
        return outs[0] if len(outs) == 1 else torch.cat(outs)
