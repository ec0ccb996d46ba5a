"""``minidl.onnx.export``: a model as an ONNX file that ONNX Runtime runs, with the meaning of
``torch.onnx.export`` (its TorchScript-based exporter's arguments).

The model runs once on ``args`` in eval mode (``training``: or in training mode, or each
module in its own) with a ``Tracer`` recording every op (see
``_trace``); each recorded Function then becomes ONNX nodes (see ``_ops``): parameters and
buffers become initializers, the args the graph's inputs. It runs a second time on the inputs
shuffled and grown along the ``dynamic_axes``: the dims that change are the dynamic ones (a
reshape that names them is written with 0 (copy), -1 (infer) or a dim read from an input, so
that the graph runs at any size), and an array an op took from outside the recorded ops that
changes depends on the input, which a graph cannot follow: it is refused, not made a constant.
An op with no translation raises ``UnsupportedOperatorError`` naming it and its module.
Needs the ``onnx`` package: ``pip install 'minidl[onnx]'``.
"""
from __future__ import annotations

import inspect
import os
import tempfile

import numpy as np

from .. import autograd
from ..backend import get_array_module, to_numpy
from ..backend.dtypes import is_differentiable
from ..tensor import Tensor
from ._ops import TRANSLATIONS, Unsupported
from ._trace import Tracer

__all__ = ["export", "OnnxExporterError", "UnsupportedOperatorError", "TrainingMode"]

_MIN_OPSET = 17  # LayerNormalization


class OnnxExporterError(RuntimeError):
    """The model could not be exported (as torch.onnx.errors.OnnxExporterError)."""


class UnsupportedOperatorError(OnnxExporterError):
    """An op of the model has no ONNX translation (as torch.onnx.errors'); the message names
    the op and the module it was called in."""


def _require_onnx():
    try:
        import onnx
    except ImportError as exc:
        raise ImportError("minidl.onnx.export needs the onnx package: "
                          "pip install 'minidl[onnx]' (or pip install onnx)") from exc
    return onnx


# ---- arguments --------------------------------------------------------------------------------
def _split_args(args):
    """(positional Tensors, keyword Tensors) as torch.onnx.export reads ``args``: a Tensor, or a
    tuple whose last element may be a dict of keyword arguments."""
    if isinstance(args, Tensor):
        return [args], {}
    if not isinstance(args, (tuple, list)):
        raise TypeError(f"onnx.export: args must be a Tensor or a tuple of Tensors, got "
                        f"{type(args).__name__}")
    args, kwargs = list(args), {}
    if args and isinstance(args[-1], dict):
        kwargs = dict(args.pop())
    for i, a in enumerate(args):
        if not isinstance(a, Tensor):
            raise TypeError(f"onnx.export: args[{i}] is a {type(a).__name__}; only Tensors "
                            "are exported as graph inputs")
    for k, a in kwargs.items():
        if not isinstance(a, Tensor):
            raise TypeError(f"onnx.export: keyword argument {k!r} is a {type(a).__name__}; "
                            "only Tensors are exported as graph inputs")
    return args, kwargs


def _flat_outputs(out, top=True):
    """The output Tensors in order: tuples, lists and dicts (their values, in order) flattened,
    None left out, as torch's exporter does."""
    if isinstance(out, Tensor):
        flat = [out]
    elif out is None and not top:
        flat = []
    elif isinstance(out, (tuple, list, dict)):
        flat = []
        for o in (out.values() if isinstance(out, dict) else out):
            flat.extend(_flat_outputs(o, top=False))
    else:
        raise OnnxExporterError(f"onnx.export: the model returned a {type(out).__name__}; only "
                                "Tensors and (nested) tuples, lists or dicts of them are "
                                "exported")
    if top and not flat:
        raise OnnxExporterError(f"onnx.export: the model returned no Tensor ({out!r}); there "
                                "would be nothing to export")
    return flat


def _default_input_names(model, n_pos, kw_names):
    try:
        params = [p for p in inspect.signature(model.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    names = [params[i].name if i < len(params) else f"input_{i}" for i in range(n_pos)]
    return names + list(kw_names)


def _dynamic_dims(dynamic_axes, names):
    """{value name: {dim: symbol}} from torch's dynamic_axes (dicts, or lists of dims that get
    generated names), checked against the graph's input and output names."""
    if dynamic_axes is None:
        return {}
    if not isinstance(dynamic_axes, dict):
        raise TypeError("onnx.export: dynamic_axes must be a dict of {name: {dim: symbol}} or "
                        f"{{name: [dims]}}, got {type(dynamic_axes).__name__}")
    out = {}
    for name, dims in dynamic_axes.items():
        if name not in names:
            raise ValueError(f"onnx.export: dynamic_axes names {name!r}, which is neither an "
                             f"input nor an output name (those are {sorted(names)})")
        if isinstance(dims, dict):
            out[name] = {int(d): str(s) for d, s in dims.items()}
        elif isinstance(dims, (list, tuple)):
            out[name] = {int(d): f"{name}_dynamic_axes_{k + 1}" for k, d in enumerate(dims)}
        else:
            raise TypeError(f"onnx.export: dynamic_axes[{name!r}] must be a dict or a list, got "
                            f"{type(dims).__name__}")
    return out


# ---- running the model ------------------------------------------------------------------------
def _trace(model, pos, kw):
    """The model's ops on ``pos``/``kw`` (copies: the caller's inputs are left as they were),
    in-place ops recorded as their out-of-place forms (``tensor._traced_in_place``, asked for
    by the tracer's ``traces_untracked_ops``); an in-place change that could not be recorded
    (on a view, ``copy_``, a buffer updated in forward) is refused, as the ONNX graph would
    silently leave it out. The parameters and buffers keep their
    arrays."""
    pos = [Tensor(get_array_module(t.data).array(t.data, copy=True)) for t in pos]
    kw = {k: Tensor(get_array_module(t.data).array(t.data, copy=True)) for k, t in kw.items()}
    inputs = [Tensor(t.data) for t in pos + list(kw.values())]  # before any rebinding
    # the parameters' and buffers' arrays, and a copy of their values for an in-place write
    # the exporter refuses (x[0] = 5 on a buffer), so that the model is left as it was
    state = [(t, t.data, t._version, get_array_module(t.data).array(t.data, copy=True))
             for t in [*model.parameters(), *model.buffers()]]
    changes = autograd.changes
    try:
        with autograd.no_grad(), Tracer(model) as tracer:
            out = model(*pos, **kw)
    finally:
        for t, data, version, values in state:
            t.data = data
            # (batch norm in training mode writes its running statistics without a version)
            if t._version != version or not _same_array(data, values):
                get_array_module(data).copyto(data, values)
    if autograd.changes != changes:
        raise OnnxExporterError(
            "onnx.export: the model changed a tensor in place where the exporter cannot "
            "record it (an in-place op on a view, copy_, an indexed assignment or a buffer "
            "updated in forward), which the ONNX graph would silently leave out; use the "
            "out-of-place op (y = y + 1, torch.where, y.clone())")
    return tracer.records, _flat_outputs(out), inputs


def _second_input(t, dims, extra, rng):
    """The input of the second run: ``t`` with each dim of ``dims`` ({dim: symbol}) grown by
    ``extra[symbol]`` (its entries repeated), then its entries shuffled. The dims that change
    are the dynamic ones (each symbol grows by another amount, so that two dynamic dims of one
    size in the first run differ in the second), and an array the model made from the input
    outside the recorded ops (a comparison mask, an argmax) changes with the shuffle, so it is
    told from a true constant."""
    a = t.data
    for d, sym in sorted(dims.items()):
        if not -a.ndim <= d < a.ndim:
            raise ValueError(f"onnx.export: dynamic axis {d} is out of range for an input of "
                             f"shape {tuple(a.shape)}")
        n = a.shape[d]
        if n == 0:
            raise ValueError(f"onnx.export: dynamic axis {d} has size 0 in the example input")
        xp = get_array_module(a)
        a = xp.take(a, xp.arange(n + extra[sym]) % n, axis=d)
    xp = get_array_module(a)
    flat = a.reshape(-1)
    return Tensor(flat[xp.asarray(rng.permutation(flat.size))].reshape(a.shape))


def _host(array):
    """A C-contiguous NumPy copy of ``array`` (a CUDA one brought to the host), 0-d kept 0-d
    (np.ascontiguousarray would make it 1-d)."""
    return np.array(to_numpy(array), order="C", copy=True)


def _op_name(cls):
    return f"{cls.__module__}.{cls.__name__}"


def _where(rec):
    mod = type(rec.module).__name__
    return f"in module '{rec.path}' ({mod})" if rec.path else f"in the top module ({mod})"


# ---- the graph --------------------------------------------------------------------------------
class _Value:
    __slots__ = ("name", "array", "dyn", "const", "param")

    def __init__(self, name, array, dyn=frozenset(), const=False, param=False):
        self.name, self.array, self.dyn, self.const, self.param = name, array, dyn, const, param


class _Builder:
    def __init__(self, onnx, opset):
        self.onnx, self.opset = onnx, opset
        self.nodes, self.inits = [], {}  # initializers: name -> array
        self.fold = True  # do_constant_folding
        self._used_names = set()
        self._count = 0

    def fresh(self, hint):
        self._count += 1
        name = f"{hint}_{self._count}"
        while name in self._used_names:
            self._count += 1
            name = f"{hint}_{self._count}"
        self._used_names.add(name)
        return name

    def reserve(self, name):
        self._used_names.add(name)
        return name

    def const(self, array, hint):
        name = self.fresh(hint)
        self.inits[name] = _host(array)
        return name

    def node(self, op, inputs, prefix, n_out=1, **attrs):
        outs = [self.fresh(f"{prefix}{op}_output") for _ in range(n_out)]
        self.nodes.append(self.onnx.helper.make_node(
            op, list(inputs), outs, name=self.fresh(f"{prefix}{op}"), **attrs))
        return outs[0] if n_out == 1 else outs


class OpContext:
    """What a translation in ``_ops`` sees of one recorded op."""

    def __init__(self, builder, rec, values, out_dyn, kw_values):
        self.b, self.rec, self.values = builder, rec, values
        self.kw = rec.kwargs
        self.arrays = rec.inputs
        self.n_inputs = len(rec.inputs)
        self.opset = builder.opset
        self.out_dtype = rec.out.dtype
        self.ndim_out = rec.out.ndim
        self.out_dyn = out_dyn
        self._kw_values = kw_values
        self._prefix = f"/{rec.path.replace('.', '/')}/" if rec.path else "/"

    def x(self, i):
        return self.values[i].name

    def shape(self, i):
        return tuple(self.arrays[i].shape)

    def ndim(self, i):
        return self.arrays[i].ndim

    def dynamic(self, i):
        return set(self.values[i].dyn)

    def array_kw(self, key):
        return self.kw[key]

    def kw_value(self, key):
        v = self._kw_values.get(key)
        if v is None:
            return self.const(self.kw[key], key)
        return v.name

    def onnx_dtype(self, dtype):
        return self.b.onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))

    def const(self, array, hint):
        return self.b.const(to_numpy(np.asarray(array) if np.isscalar(array) or isinstance(
            array, (list, tuple)) else array), self._prefix.strip("/").replace("/", ".")
                            + ("." if self._prefix != "/" else "") + hint)

    def node(self, op, inputs, n_out=1, **attrs):
        return self.b.node(op, inputs, self._prefix, n_out, **attrs)

    def inputs_cast_to_output(self):
        """The input names, each of another dtype than the output cast to it (a Python scalar
        beside a float32 tensor, an int tensor added to a float one)."""
        names = []
        for v, a in zip(self.values, self.arrays):
            if a.dtype == self.out_dtype or a.dtype.kind == "b" and self.out_dtype.kind == "b":
                names.append(v.name)
            elif v.const and not v.param:
                names.append(self.const(a.astype(self.out_dtype), "scalar"))
            else:
                names.append(self.node("Cast", [v.name], to=self.onnx_dtype(self.out_dtype)))
        return names

    def transposed(self, i):
        v = self.values[i]
        if v.const and v.name in self.b.inits and self.b.fold:  # a weight: stored
            # transposed once (do_constant_folding; else a Transpose node, as torch writes)
            return self.b.const(self.arrays[i].T, v.name + "_transposed")
        return self.node("Transpose", [v.name], perm=[1, 0])

    def reshape_target(self):
        """The Reshape target: fixed dims as they are; a dynamic dim that is the input's dim at
        the same place as 0 (copy), and one other dynamic dim as -1."""
        shape = [int(s) for s in self.rec.out.shape]
        in_shape, in_dyn = self.shape(0), self.dynamic(0)
        in2, out2 = self.shapes2[0], self.out_shape2
        free = []
        for d in sorted(self.out_dyn):
            if d < len(in_shape) and d in in_dyn and in_shape[d] == shape[d] and \
                    in2[d] == out2[d]:
                shape[d] = 0
            else:
                free.append(d)
        if 0 in [int(s) for s in self.rec.out.shape]:
            raise Unsupported("a reshape to a shape with a zero-size dim")
        if len(free) <= 1:
            for d in free:
                shape[d] = -1
            return self.const(np.asarray(shape, np.int64), "shape")
        # several: all but the last read from the graph's inputs, the last inferred
        for d in free[:-1]:
            shape[d] = self._read_dim(d)
        shape[free[-1]] = -1
        return self._shape_tensor(shape)

    def _read_dim(self, d):
        """The output's dim ``d`` (a dynamic one) as a 1-element int64 tensor read from the
        graph input dim of the same size in both runs (Shape, then Gather)."""
        src = self.sources.get((int(self.rec.out.shape[d]), int(self.out_shape2[d])))
        if src is None:
            raise Unsupported(f"an output of shape {tuple(self.rec.out.shape)} whose dim {d} "
                              "depends on the dynamic axes in a way the graph cannot express")
        name, k = src
        return self.node("Gather", [self.node("Shape", [name]),
                                    self.const(np.asarray([k], np.int64), "dim")], axis=0)

    def _shape_tensor(self, parts):
        """A 1-D int64 shape from ints and 1-element tensors (names)."""
        pieces, run = [], []
        for p in parts:
            if isinstance(p, str):
                if run:
                    pieces.append(self.const(np.asarray(run, np.int64), "dims"))
                    run = []
                pieces.append(p)
            else:
                run.append(int(p))
        if run:
            pieces.append(self.const(np.asarray(run, np.int64), "dims"))
        return pieces[0] if len(pieces) == 1 else self.node("Concat", pieces, axis=0)

    def expand_target(self):
        shape = [int(s) for s in self.rec.out.shape]
        in_shape, in_dyn = self.shape(0), self.dynamic(0)
        in2, out2 = self.shapes2[0], self.out_shape2
        lead = len(shape) - len(in_shape)
        for d in self.out_dyn:
            k = d - lead
            if k >= 0 and k in in_dyn and in_shape[k] == shape[d] and in2[k] == out2[d]:
                shape[d] = 1  # Expand broadcasts both ways: 1 keeps the input's dim
            else:  # a dim that grows from another value's: read from the graph's inputs
                shape[d] = self._read_dim(d)
        return self._shape_tensor(shape)


# ---- export -----------------------------------------------------------------------------------
class TrainingMode:
    """``torch.onnx.TrainingMode``: which mode the model is exported in (``export``'s
    ``training``): EVAL (the default), TRAINING (Dropout and BatchNorm in training mode, as
    ONNX's Dropout with training_mode and BatchNormalization with training_mode=1), PRESERVE
    (each module in the mode it is in)."""
    EVAL, PRESERVE, TRAINING = "EVAL", "PRESERVE", "TRAINING"


def _check_training(training, model):
    name = getattr(training, "name", training)  # torch's own enum is taken too
    if name not in ("EVAL", "PRESERVE", "TRAINING"):
        raise ValueError(f"onnx.export: training must be a TrainingMode (EVAL, PRESERVE or "
                         f"TRAINING), got {training!r}")
    return name


def _check_torch_defaults(**given):
    """torch.onnx.export's keywords that minidl takes at their defaults only (what it does):
    another value is refused by name, as it would change what is written."""
    op_type = given.pop("operator_export_type")
    name = getattr(op_type, "name", op_type)  # torch's own enum is taken too
    if name not in (None, "ONNX"):
        raise NotImplementedError(f"onnx.export: operator_export_type={op_type!r} is not "
                                  "supported; minidl writes standard ONNX operators only "
                                  "(OperatorExportTypes.ONNX)")
    if given.pop("custom_opsets"):
        raise NotImplementedError("onnx.export: custom_opsets is not supported; minidl writes "
                                  "the default ONNX domain only")
    if given.pop("custom_translation_table"):
        raise NotImplementedError("onnx.export: custom_translation_table is not supported "
                                  "(it belongs to torch's dynamo exporter)")
    if given.pop("dynamic_shapes") is not None:
        raise NotImplementedError("onnx.export: dynamic_shapes is not supported (it belongs "
                                  "to torch's dynamo exporter); name the dynamic dims with "
                                  "dynamic_axes")
    if given.pop("autograd_inlining") is not True:
        raise NotImplementedError("onnx.export: autograd_inlining=False is not supported; "
                                  "custom Functions are exported through their ops")
    for key, value in given.items():  # flags whose default is False
        if value:
            raise NotImplementedError(f"onnx.export: {key}={value!r} is not supported by "
                                      "minidl's exporter (it takes torch's default, False)")


def _check_file(f):
    """A writable binary file object (a text one would fail only after the export's work)."""
    import io

    mode = getattr(f, "mode", "b")
    if isinstance(f, io.TextIOBase) or (isinstance(mode, str) and "b" not in mode):
        raise TypeError(f"onnx.export: f is a text-mode file ({getattr(f, 'name', f)!r}); "
                        f"open it in binary mode ('wb') or pass its path")
    if getattr(f, "closed", False):
        raise ValueError("onnx.export: f is a closed file")
    writable = getattr(f, "writable", None)
    if callable(writable) and not writable():
        raise ValueError(f"onnx.export: f ({getattr(f, 'name', f)!r}) is not open for writing")


def export(model, args=(), f=None, *, kwargs=None, input_names=None, output_names=None,
           dynamic_axes=None, opset_version=17, do_constant_folding=True, export_params=True,
           verbose=False, training=TrainingMode.EVAL, keep_initializers_as_inputs=False,
           dynamo=True, external_data=True, optimize=True, operator_export_type=None,
           custom_opsets=None, export_modules_as_functions=False, autograd_inlining=True,
           report=False, verify=False, profile=False, dump_exported_program=False,
           artifacts_dir=".", dynamic_shapes=None, custom_translation_table=None,
           **unsupported):
    """Write ``model`` run on ``args`` as an ONNX model to ``f`` (a path, or a binary file
    object), as torch.onnx.export: ``input_names``/``output_names`` name the graph's inputs
    and outputs in order, ``dynamic_axes`` ({name: {dim: symbol}} or {name: [dims]}) makes
    those dims symbolic, ``export_params=False`` makes the parameters graph inputs instead of
    initializers, ``do_constant_folding`` computes what depends only on constants at export
    time, ``keep_initializers_as_inputs=True`` lists the initializers among the graph's
    inputs too (so that a runtime may override them). torch's other keywords are taken at
    their defaults (which is what minidl does) and refused by name otherwise. The model is
    traced in eval mode (``training=TrainingMode.TRAINING``: in training mode, batch norm
    with batch statistics and dropout as ONNX's Dropout; ``PRESERVE``: each module in its
    own mode) and left as it was (modes, parameters, running statistics, no grads)."""
    onnx = _require_onnx()
    from ..nn import Module

    if not isinstance(model, Module):
        raise TypeError(f"onnx.export: model must be a minidl.nn.Module, got "
                        f"{type(model).__name__}")
    if unsupported:  # torch's options that change what is written, which minidl does not have
        raise TypeError(f"onnx.export: unsupported argument(s) {sorted(unsupported)}")
    _check_torch_defaults(operator_export_type=operator_export_type,
                          custom_opsets=custom_opsets,
                          export_modules_as_functions=export_modules_as_functions,
                          autograd_inlining=autograd_inlining, report=report, verify=verify,
                          profile=profile, dump_exported_program=dump_exported_program,
                          dynamic_shapes=dynamic_shapes,
                          custom_translation_table=custom_translation_table)
    mode = _check_training(training, model)
    if f is None:
        raise TypeError("onnx.export: f (a path or a binary file object) is required: minidl "
                        "does not return an ONNXProgram")
    if kwargs is not None:
        if not isinstance(kwargs, dict):
            raise TypeError(f"onnx.export: kwargs must be a dict, got {type(kwargs).__name__}")
        args = (*((args,) if isinstance(args, Tensor) else tuple(args)), dict(kwargs))
    max_opset = onnx.defs.onnx_opset_version()
    if not isinstance(opset_version, int) or not _MIN_OPSET <= opset_version <= max_opset:
        raise ValueError(f"onnx.export: opset_version must be an int from {_MIN_OPSET} to "
                         f"{max_opset} (the onnx package's newest), got {opset_version!r}")
    path = None
    if isinstance(f, (str, os.PathLike)):
        path = os.fspath(f)
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"onnx.export: the folder of {path!r} does not exist")
        if os.path.isdir(path):
            raise IsADirectoryError(f"onnx.export: {path!r} is a folder; name the file to "
                                    f"write")
    elif not hasattr(f, "write"):
        raise TypeError(f"onnx.export: f must be a path or a binary file object, got "
                        f"{type(f).__name__}")
    else:
        _check_file(f)
    pos, kw = _split_args(args)
    n_in = len(pos) + len(kw)
    in_names = _default_input_names(model, len(pos), kw)
    if input_names is not None:
        input_names = list(input_names)
        if len(input_names) > n_in:
            raise ValueError(f"onnx.export: {len(input_names)} input_names for {n_in} inputs")
        in_names[:len(input_names)] = input_names

    modes = [(m, m.training) for m in model.modules()]
    try:
        if mode == "TRAINING":  # as torch: Dropout and BatchNorm in training mode
            model.train()
        elif mode == "EVAL":
            model.eval()
        records, outs, traced_inputs = _trace(model, pos, kw)
        if output_names is not None:
            output_names = list(output_names)
            if len(output_names) > len(outs):
                raise ValueError(f"onnx.export: {len(output_names)} output_names for "
                                 f"{len(outs)} outputs")
        out_names = [f"output_{i}" if len(outs) > 1 else "output" for i in range(len(outs))]
        if output_names:
            out_names[:len(output_names)] = output_names
        if len(set(in_names + out_names)) != len(in_names) + len(out_names):
            raise ValueError(f"onnx.export: input and output names must be distinct, got "
                             f"{in_names} and {out_names}")
        dyn_names = _dynamic_dims(dynamic_axes, set(in_names) | set(out_names))
        symbols = sorted({s for n in in_names for s in dyn_names.get(n, {}).values()})
        extra = {s: k + 1 for k, s in enumerate(symbols)}
        rng = np.random.default_rng(0)  # its own: the model's random state is left alone
        pos2 = [_second_input(t, dyn_names.get(n, {}), extra, rng)
                for t, n in zip(pos, in_names)]
        kw2 = {k: _second_input(t, dyn_names.get(n, {}), extra, rng)
               for (k, t), n in zip(kw.items(), in_names[len(pos):])}
        second = _trace(model, pos2, kw2)
        proto = _build(onnx, model, traced_inputs, in_names, records, outs,
                       out_names, dyn_names, second, opset_version, do_constant_folding,
                       export_params, bool(keep_initializers_as_inputs))
    finally:
        for m, mode in modes:
            m.training = mode
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    if verbose:
        printer = getattr(onnx, "printer", None)  # onnx >= 1.15; printable_graph before it
        print(printer.to_text(proto.graph) if printer is not None
              else onnx.helper.printable_graph(proto.graph))
    if path is None:
        f.write(data)
        return None
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return None


# the pools whose return_indices=True indices come from outside the recorded ops
_INDEX_POOLS = ("minidl.nn._functional.pooling.MaxPoolWindows",
                "minidl.nn._functional.pooling.AdaptiveMaxPool2d")


def _keys(records, inputs, params, outs):
    """Each array's role as a key that is the same in two runs of the model: ("in", i),
    ("param", name), ("op", j) for op j's output, ("const", j, k) for an array op j got from
    outside the graph. Returns (per-record input keys, per-record keyword keys, output keys,
    {key: array})."""
    for rec in records:  # pooling indices are made outside the ops: name the pool first
        if _op_name(rec.cls) in _INDEX_POOLS and isinstance(rec.kwargs.get("keep"), list):
            raise UnsupportedOperatorError(
                f"Exporting the operator '{rec.cls.__name__}' ({_op_name(rec.cls)}) to ONNX is "
                f"not supported for return_indices=True: it was called {_where(rec)}")
    known, arrays = {}, {}
    for i, t in enumerate(inputs):
        known[id(t.data)] = ("in", i)
        arrays[("in", i)] = t.data
    for name, a in params:
        known.setdefault(id(a), ("param", name))
        arrays.setdefault(("param", name), a)
    in_keys, kw_keys = [], []
    variables = [t.data for t in inputs]  # what the graph computes: an unknown view of one
    # of them was made outside minidl's ops, and a constant in its place would be wrong

    def outside(a, rec):
        if isinstance(a, np.ndarray) and a.size > 1 and any(
                isinstance(v, np.ndarray) and np.may_share_memory(a, v) for v in variables):
            raise OnnxExporterError(
                f"onnx.export: {rec.cls.__name__} {_where(rec)} takes an array that views the "
                "model's input or an op's output but was made outside minidl's ops (through "
                ".data or numpy); the exported graph cannot follow it")

    for j, rec in enumerate(records):
        ks = []
        for k, a in enumerate(rec.inputs):
            key = known.get(id(a))
            if key is None:
                outside(a, rec)
                key = ("const", j, k)
                arrays[key] = a
            ks.append(key)
        in_keys.append(ks)
        kk = {}
        for name, a in rec.kwargs.items():
            key = known.get(id(a)) if isinstance(a, np.ndarray) else None
            if key is not None:
                kk[name] = key
            elif hasattr(a, "shape") and hasattr(a, "dtype") and not np.isscalar(a) and \
                    name not in _DERIVED_KWARGS.get(_op_name(rec.cls), ()):
                outside(a, rec)
                arrays[("kwconst", j, name)] = a
        kw_keys.append(kk)
        known[id(rec.out)] = ("op", j)
        arrays[("op", j)] = rec.out
        variables.append(rec.out)
    out_keys = []
    for i, t in enumerate(outs):
        key = known.get(id(t.data))
        if key is None:
            raise OnnxExporterError(f"onnx.export: output {i} of the model was not made by a "
                                    "recorded op (it was computed outside minidl's ops)")
        out_keys.append(key)
    return in_keys, kw_keys, out_keys, arrays


def _data_sized_dims(rec):
    """The output dims of ``rec`` whose size is read from its input's values (nonzero's
    count, the longest of pad_packed_sequence's lengths)."""
    name = _op_name(rec.cls)
    if name == "minidl.ops.NonZero":
        return (0,)
    if name == "minidl.nn._rnn_utils.PadPacked" and rec.kwargs.get("total_length") is None:
        return (0,)
    return ()


def _mark_data_sized(records, in_keys, dyn):
    """Dims whose size depends on the input's values are dynamic even where the second run
    (the inputs shuffled, which keeps counts and maxima) left them as they were: such an
    op's dim, and after it each dim of that size in the outputs of the ops that take one of
    those values (a transpose moves it; a dim of the same size by chance is made dynamic
    too, which is only more general)."""
    sizes, tainted = set(), set()
    for j, rec in enumerate(records):
        key = ("op", j)
        own = _data_sized_dims(rec)
        if own:
            sizes.update(int(rec.out.shape[d]) for d in own)
        elif not any(k in tainted for k in in_keys[j]):
            continue
        dims = {d for d in range(rec.out.ndim) if int(rec.out.shape[d]) in sizes} | set(own)
        if dims:
            dyn[key] = frozenset(dyn.get(key, frozenset()) | dims)
            tainted.add(key)


def _same_kwargs(a, b):
    if set(a) != set(b):
        return False
    for k in a:
        if k in _IGNORED_KWARGS:
            continue
        x, y = a[k], b[k]
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            continue  # arrays are values (compared by shape through their keys) or constants
        try:
            if x != y:
                return False
        except Exception:  # noqa: BLE001 - objects that do not compare are not told apart
            continue
    return True


def _same_array(a, b):
    a, b = to_numpy(a), to_numpy(b)
    return a.shape == b.shape and np.array_equal(a, b, equal_nan=is_differentiable(a.dtype))


def _build(onnx, model, inputs, in_names, records, outs, out_names, dyn_names, second,
           opset, fold, export_params, initializers_as_inputs=False):
    helper = onnx.helper
    params = [(n, p.data) for n, p in model.named_parameters()] + \
        [(n, b.data) for n, b in model.named_buffers() if b is not None]
    in_keys, kw_keys, out_keys, arrays = _keys(records, inputs, params, outs)
    dyn = {}  # key -> the dims that change with the dynamic axes
    records2, outs2, inputs2 = second
    if len(records2) != len(records) or any(
            r.cls is not r2.cls for r, r2 in zip(records, records2)):
        raise OnnxExporterError(
            "onnx.export: the model runs other ops on an input of other values or (dynamic "
            "axes) another size: its forward branches on them, which a graph cannot")
    arrays2 = _keys(records2, inputs2, params, outs2)[3]
    for key, a in arrays.items():
        b = arrays2.get(key)
        if b is None or a.ndim != b.ndim:
            raise OnnxExporterError("onnx.export: the model's graph changes with the values or "
                                    "sizes of its input")
        changed = frozenset(d for d in range(a.ndim) if a.shape[d] != b.shape[d])
        if changed:
            dyn[key] = changed
    _mark_data_sized(records, in_keys, dyn)
    for r, r2 in zip(records, records2):
        if not _same_kwargs(r.kwargs, r2.kwargs) and _op_name(r.cls) not in _SHAPED:
            raise OnnxExporterError(
                f"onnx.export: {r.cls.__name__} {_where(r)} has arguments that change with the "
                "values of the input or the size of a dynamic axis, which a graph cannot follow")
    for key in arrays:
        if key[0] in ("const", "kwconst") and (key in dyn or not _same_array(arrays[key],
                                                                              arrays2[key])):
            r = records[key[1]]
            raise OnnxExporterError(
                f"onnx.export: {r.cls.__name__} {_where(r)} takes an array computed from "
                "the model's input outside minidl's recorded ops (a comparison such as "
                "x > 0, an argmax, .data or NumPy): the exported graph could not follow it")

    b = _Builder(onnx, opset)
    b.fold = bool(fold)
    for n in in_names + out_names:
        b.reserve(n)
    values = {}
    graph_inputs = []

    def value_info(name, a, key, names_for):
        dims = []
        for d, s in enumerate(a.shape):
            if d in names_for:
                dims.append(names_for[d])
            elif d in dyn.get(key, ()):
                dims.append(f"{name}_dim_{d}")
            else:
                dims.append(int(s))
        return helper.make_tensor_value_info(
            name, helper.np_dtype_to_tensor_dtype(a.dtype), dims)

    sources = {}  # (size in run 1, size in run 2) -> (graph input, dim): where a dim is read
    for i, (t, name) in enumerate(zip(inputs, in_names)):
        key = ("in", i)
        wanted = dyn_names.get(name, {})
        for d in wanted:
            sources.setdefault((t.data.shape[d], arrays2[key].shape[d]), (name, d))
        values[key] = _Value(name, t.data, frozenset(wanted))
        graph_inputs.append(value_info(name, t.data, key, wanted))
    for name, a in params:
        key = ("param", name)
        if key in values:
            continue
        values[key] = _Value(b.reserve(name), a, const=export_params, param=True)
    used_params = []

    def value(key, rec):
        v = values.get(key)
        if v is None:
            if key[0] == "const":  # an array made outside the graph (a Python scalar, ...)
                a = arrays[key]
                prefix = rec.path + "." if rec.path else ""
                v = values[key] = _Value(b.const(a, f"{prefix}{rec.cls.__name__}.constant"),
                                         a, const=True)
            else:
                raise OnnxExporterError(f"onnx.export: internal error, value {key} unknown")
        if v.param and v.name not in b.inits and v.name not in used_params:
            used_params.append(v.name)
            if export_params:
                b.inits[v.name] = _host(v.array)
        return v

    for j, rec in enumerate(records):
        ins = [value(k, rec) for k in in_keys[j]]
        kw_vals = {name: value(k, rec) for name, k in kw_keys[j].items()}
        out_key = ("op", j)
        if fold and all(v.const for v in ins) and all(v.const for v in kw_vals.values()) \
                and out_key not in dyn:
            prefix = rec.path + "." if rec.path else ""
            values[out_key] = _Value(b.const(rec.out, f"{prefix}{rec.cls.__name__}.folded"),
                                     rec.out, const=True)
            continue
        translate = TRANSLATIONS.get(_op_name(rec.cls))
        if translate is None:
            raise UnsupportedOperatorError(
                f"Exporting the operator '{rec.cls.__name__}' ({_op_name(rec.cls)}) to ONNX "
                f"opset version {opset} is not supported: it was called {_where(rec)}")
        ctx = OpContext(b, rec, ins, dyn.get(out_key, frozenset()), kw_vals)
        ctx.shapes2 = [tuple(arrays2[k].shape) for k in in_keys[j]]
        ctx.sources = sources
        ctx.out_shape2 = tuple(arrays2[out_key].shape)
        try:
            name = translate(ctx)
        except Unsupported as exc:
            raise UnsupportedOperatorError(
                f"Exporting the operator '{rec.cls.__name__}' ({_op_name(rec.cls)}) to ONNX "
                f"opset version {opset} is not supported for {exc}: it was called "
                f"{_where(rec)}") from None
        values[out_key] = _Value(name, rec.out, dyn.get(out_key, frozenset()))

    graph_outputs, renames = [], {}
    producers = {o: n for n in b.nodes for o in n.output}
    claimed = set()
    for key, name in zip(out_keys, out_names):
        v = values[key]
        names_for = dyn_names.get(name, {})
        if v.name in producers and v.name not in claimed and v.name not in renames:
            renames[v.name] = name
            claimed.add(v.name)
        else:
            b.nodes.append(helper.make_node("Identity", [v.name], [name],
                                            name=b.fresh("/Identity")))
        graph_outputs.append(value_info(name, v.array, key, names_for))
    for n in b.nodes:
        for i, x in enumerate(n.input):
            if x in renames:
                n.input[i] = renames[x]
        for i, x in enumerate(n.output):
            if x in renames:
                n.output[i] = renames[x]
    if not export_params:
        for name in used_params:
            a = values[("param", name)].array
            graph_inputs.append(helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape)))
    used = {x for n in b.nodes for x in n.input}
    inits = [onnx.numpy_helper.from_array(a, name) for name, a in b.inits.items()
             if name in used]
    if initializers_as_inputs:  # every initializer listed as an input too, as torch's
        # keep_initializers_as_inputs: a runtime may feed another value in its place
        listed = {i.name for i in graph_inputs}
        graph_inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                         for t in inits if t.name not in listed]
    graph = helper.make_graph(b.nodes, type(model).__name__, graph_inputs, graph_outputs,
                              initializer=inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="minidl")
    proto.ir_version = min(proto.ir_version, _ir_version(onnx, opset))
    return proto


# ops whose keywords may change with a dynamic axis: their translations write the shape
# relative to the input's (see OpContext.reshape_target / expand_target)
_SHAPED = {"minidl.ops.Reshape", "minidl.ops.Expand", "minidl.ops.Repeat"}
# keywords that hold per-call objects, not the op's arguments
_IGNORED_KWARGS = {"keep"}
# arrays an op is given that its caller computed from its input (outside the graph) and
# that its translation computes again: {op: keywords}
_DERIVED_KWARGS = {"minidl.ops.MaxDim": {"arg"}}


def _ir_version(onnx, opset):
    """The IR version that goes with ``opset`` (onnx's table), so that an older ONNX Runtime
    reads the file too."""
    for entry in getattr(onnx.helper, "VERSION_TABLE", ()):
        if entry[2] == opset:
            return entry[1]
    return onnx.IR_VERSION
