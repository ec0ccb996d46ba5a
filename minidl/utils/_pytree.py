"""``torch.utils._pytree``: nested containers (tuples, lists, dicts, named tuples, OrderedDict,
defaultdict, deque, and classes registered with ``register_pytree_node``) taken apart into their
leaves and a ``TreeSpec`` of their shape, and put back together.

    leaves, spec = tree_flatten({"w": [w1, w2], "b": b})    # [w1, w2, b]
    tree_unflatten([2 * x for x in leaves], spec)            # {"w": [...], "b": ...}
    tree_map(lambda t: t.detach(), state)

Everything that is not a registered container is a leaf (None included, as torch 2.13's).
Flattening follows each container's own order (a dict's insertion order), as torch's does.
"""
from __future__ import annotations

import collections
import dataclasses
import json

__all__ = ["TreeSpec", "LeafSpec", "register_pytree_node", "tree_is_leaf", "tree_flatten",
           "tree_flatten_with_path", "tree_unflatten", "tree_iter", "tree_leaves",
           "tree_leaves_with_path", "tree_structure", "tree_map", "tree_map_with_path",
           "tree_map_", "tree_map_only", "tree_map_only_", "tree_all", "tree_any",
           "tree_all_only", "tree_any_only", "keystr", "key_get", "is_namedtuple",
           "is_namedtuple_class", "is_namedtuple_instance", "SequenceKey", "MappingKey",
           "GetAttrKey", "treespec_dumps", "treespec_loads"]


# ---- key paths ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SequenceKey:
    idx: int

    def __str__(self):
        return f"[{self.idx!r}]"

    def get(self, sequence):
        return sequence[self.idx]


@dataclasses.dataclass(frozen=True)
class MappingKey:
    key: object

    def __str__(self):
        return f"[{self.key!r}]"

    def get(self, mapping):
        return mapping[self.key]


@dataclasses.dataclass(frozen=True)
class GetAttrKey:
    name: str

    def __str__(self):
        return f".{self.name}"

    def get(self, obj):
        return getattr(obj, self.name)


def keystr(kp):
    """A key path as text: ``[0]['w'].x``."""
    return "".join(str(k) for k in kp)


def key_get(obj, kp):
    """The value at key path ``kp`` in ``obj``."""
    for k in kp:
        obj = k.get(obj)
    return obj


# ---- the registry --------------------------------------------------------------------------------
class namedtuple:  # noqa: N801  (torch's TreeSpec names this node type "namedtuple")
    """The node type of every named tuple; the spec's context is the named tuple's class."""


@dataclasses.dataclass
class _Node:
    flatten: object      # value -> (children, context)
    unflatten: object    # (children, context) -> value
    keys: object         # (value, context) -> [key entries]
    serialized_name: object = None    # treespec_dumps' name of the type
    to_dumpable: object = None        # context -> JSON-able (None: the context itself)
    from_dumpable: object = None


_REGISTRY = {}


def register_pytree_node(cls, flatten_fn, unflatten_fn, *, serialized_type_name=None,
                         to_dumpable_context=None, from_dumpable_context=None,
                         flatten_with_keys_fn=None):
    """Make ``cls`` a container: ``flatten_fn(x) -> (children, context)`` and
    ``unflatten_fn(children, context) -> x``; ``flatten_with_keys_fn(x) -> ([(key, child),
    ...], context)`` gives the key paths (else ``SequenceKey``s)."""
    if cls in _REGISTRY:
        raise ValueError(f"{cls} is already registered as pytree node.")
    if flatten_with_keys_fn is None:
        keys = None
    else:
        def keys(value, context):
            return [k for k, _ in flatten_with_keys_fn(value)[0]]
    if (to_dumpable_context is None) != (from_dumpable_context is None):
        raise ValueError("to_dumpable_context and from_dumpable_context must both be None or "
                         "both be given")
    _REGISTRY[cls] = _Node(flatten_fn, unflatten_fn, keys, serialized_type_name,
                           to_dumpable_context, from_dumpable_context)


def _seq_keys(value, context):
    return [SequenceKey(i) for i in range(len(value))]


def _map_keys(value, context):
    return [MappingKey(k) for k in context]


register_pytree_node(tuple, lambda t: (list(t), None), lambda c, _: tuple(c))
_REGISTRY[tuple].keys = _seq_keys
register_pytree_node(list, lambda x: (list(x), None), lambda c, _: list(c))
_REGISTRY[list].keys = _seq_keys
register_pytree_node(dict, lambda d: (list(d.values()), list(d)),
                     lambda c, keys: dict(zip(keys, c)))
_REGISTRY[dict].keys = _map_keys
register_pytree_node(collections.OrderedDict, lambda d: (list(d.values()), list(d)),
                     lambda c, keys: collections.OrderedDict(zip(keys, c)))
_REGISTRY[collections.OrderedDict].keys = _map_keys
register_pytree_node(collections.defaultdict,
                     lambda d: (list(d.values()), [d.default_factory, list(d)]),
                     lambda c, ctx: collections.defaultdict(ctx[0], zip(ctx[1], c)))
_REGISTRY[collections.defaultdict].keys = lambda value, ctx: _map_keys(value, ctx[1])
register_pytree_node(collections.deque, lambda d: (list(d), d.maxlen),
                     lambda c, maxlen: collections.deque(c, maxlen=maxlen))
_REGISTRY[collections.deque].keys = _seq_keys
register_pytree_node(namedtuple, lambda t: (list(t), type(t)), lambda c, cls: cls(*c))
_REGISTRY[namedtuple].keys = lambda value, cls: [GetAttrKey(f) for f in cls._fields]
for _cls, _name in ((tuple, "builtins.tuple"), (list, "builtins.list"), (dict, "builtins.dict"),
                    (collections.OrderedDict, "collections.OrderedDict"),
                    (collections.defaultdict, "collections.defaultdict"),
                    (collections.deque, "collections.deque")):
    _REGISTRY[_cls].serialized_name = _name


def _factory_to_json(context):
    factory, keys = context
    return {"default_factory_module": factory.__module__,
            "default_factory_name": factory.__qualname__, "dict_context": keys}


def _factory_from_json(data):
    import importlib
    factory = getattr(importlib.import_module(data["default_factory_module"]),
                      data["default_factory_name"])
    return [factory, data["dict_context"]]


_REGISTRY[collections.defaultdict].to_dumpable = _factory_to_json
_REGISTRY[collections.defaultdict].from_dumpable = _factory_from_json


def is_namedtuple_class(cls):
    return isinstance(cls, type) and issubclass(cls, tuple) and isinstance(
        getattr(cls, "_fields", None), tuple)


def is_namedtuple_instance(obj):
    return is_namedtuple_class(type(obj))


def is_namedtuple(obj):
    """Whether ``obj`` is a named tuple or a named-tuple class."""
    return is_namedtuple_class(obj if isinstance(obj, type) else type(obj))


def _node_type(tree):
    cls = type(tree)
    if cls in _REGISTRY:
        return cls
    if is_namedtuple_class(cls):
        return namedtuple
    return None


def tree_is_leaf(tree, is_leaf=None):
    """Whether ``tree`` is a leaf: not a registered container (or ``is_leaf`` says so)."""
    if is_leaf is not None and is_leaf(tree):
        return True
    return _node_type(tree) is None


# ---- specs ---------------------------------------------------------------------------------------
class TreeSpec:
    """A container's type, its context (a dict's keys, a named tuple's class) and its
    children's specs; ``num_leaves``, ``num_nodes``, ``num_children`` as torch's."""

    def __init__(self, type, context, children_specs):  # noqa: A002  (torch's name)
        self.type, self._context, self._children = type, context, list(children_specs)
        self.num_leaves = sum(c.num_leaves for c in self._children)
        self.num_nodes = 1 + sum(c.num_nodes for c in self._children)

    @property
    def context(self):
        return self._context

    @property
    def children_specs(self):
        return list(self._children)

    @property
    def num_children(self):
        return len(self._children)

    def is_leaf(self):
        return False

    def child(self, index):
        return self._children[index]

    def __eq__(self, other):
        if not isinstance(other, TreeSpec):
            return NotImplemented
        if self.is_leaf() or other.is_leaf():
            return self.is_leaf() and other.is_leaf()
        return (self.type is other.type and self._context == other._context
                and self._children == other._children)

    def __hash__(self):
        return hash((self.type, repr(self._context), tuple(self._children)))

    def __repr__(self, indent=0):
        name = getattr(self.type, "__name__", str(self.type))
        text = f"TreeSpec({name}, {self._context}, ["
        if self._children:
            indent += 2
            parts = [self._children[0].__repr__(indent)]
            parts += ["\n" + " " * indent + c.__repr__(indent) for c in self._children[1:]]
            text += ",".join(parts)
        return text + "])"

    def unflatten(self, leaves):
        return tree_unflatten(leaves, self)


class LeafSpec(TreeSpec):
    """The spec of one leaf (``*`` in a TreeSpec's repr)."""

    def __init__(self):
        self.type, self._context, self._children = None, None, []
        self.num_leaves, self.num_nodes = 1, 1

    def is_leaf(self):
        return True

    def __repr__(self, indent=0):
        return "*"

    def __hash__(self):
        return hash("minidl.utils._pytree.LeafSpec")


_LEAF = LeafSpec()


# ---- flatten, unflatten, map -------------------------------------------------------------------
def _flatten(tree, is_leaf, leaves, path=None, paths=None):
    kind = None if (is_leaf is not None and is_leaf(tree)) else _node_type(tree)
    if kind is None:
        leaves.append(tree)
        if paths is not None:
            paths.append(tuple(path))
        return _LEAF
    node = _REGISTRY[kind]
    children, context = node.flatten(tree)
    keys = node.keys(tree, context) if paths is not None and node.keys else \
        [SequenceKey(i) for i in range(len(children))]
    specs = []
    for i, child in enumerate(children):
        if paths is not None:
            path.append(keys[i])
        specs.append(_flatten(child, is_leaf, leaves, path, paths))
        if paths is not None:
            path.pop()
    return TreeSpec(kind, context, specs)


def tree_flatten(tree, is_leaf=None):
    """``(leaves, spec)``: the leaves of ``tree`` in order and its shape."""
    leaves = []
    spec = _flatten(tree, is_leaf, leaves)
    return leaves, spec


def tree_flatten_with_path(tree, is_leaf=None):
    """``([(key_path, leaf), ...], spec)``; ``keystr(key_path)`` reads ``[0]['w'].x``."""
    leaves, paths = [], []
    spec = _flatten(tree, is_leaf, leaves, [], paths)
    return list(zip(paths, leaves)), spec


def tree_unflatten(leaves, treespec):
    """The tree of shape ``treespec`` holding ``leaves`` (exactly ``treespec.num_leaves``)."""
    if not isinstance(treespec, TreeSpec):
        raise TypeError(f"tree_unflatten(leaves, treespec): Expected `treespec` to be instance "
                        f"of TreeSpec but got item of type {type(treespec)}.")
    leaves = list(leaves)
    if len(leaves) != treespec.num_leaves:
        raise ValueError(f"treespec.unflatten(leaves): `leaves` has length {len(leaves)} but "
                         f"the spec refers to a pytree that holds {treespec.num_leaves} items "
                         f"({treespec}).")
    it = iter(leaves)

    def build(spec):
        if spec.is_leaf():
            return next(it)
        children = [build(c) for c in spec._children]
        return _REGISTRY[spec.type].unflatten(children, spec._context)
    return build(treespec)


def tree_leaves(tree, is_leaf=None):
    return tree_flatten(tree, is_leaf)[0]


def tree_iter(tree, is_leaf=None):
    yield from tree_leaves(tree, is_leaf)


def tree_leaves_with_path(tree, is_leaf=None):
    return tree_flatten_with_path(tree, is_leaf)[0]


def tree_structure(tree, is_leaf=None):
    return tree_flatten(tree, is_leaf)[1]


def _same_shape(spec, rests, is_leaf):
    """The leaves of each further tree, checked to have ``spec``'s shape (or to hold it: a leaf
    of spec may be a subtree there, as torch's flatten_up_to)."""
    out = []
    for r in rests:
        leaves = _flatten_up_to(spec, r, is_leaf)
        out.append(leaves)
    return out


_DICTS = (dict, collections.OrderedDict, collections.defaultdict)


def _dict_keys(kind, context):
    return context[1] if kind is collections.defaultdict else context


def _flatten_up_to(spec, tree, is_leaf):
    """The subtrees of ``tree`` at ``spec``'s leaves, ``tree`` checked to have spec's shape: the
    same container types (the dict kinds interchangeable, matched by key), lengths and
    contexts (a named tuple's class, a custom node's context), as torch's flatten_up_to."""
    if spec.is_leaf():
        return [tree]
    kind = _node_type(tree) if not (is_leaf is not None and is_leaf(tree)) else None
    both_dicts = kind in _DICTS and spec.type in _DICTS
    if kind is not spec.type and not both_dicts:
        raise ValueError(f"Node type mismatch; expected {spec.type!r}, but got "
                         f"{type(tree)!r}.")
    children, context = _REGISTRY[kind].flatten(tree)
    if len(children) != spec.num_children:
        raise ValueError(f"Node arity mismatch; expected {spec.num_children}, but got "
                         f"{len(children)}.")
    if both_dicts:  # matched by key, in spec's order
        want = _dict_keys(spec.type, spec._context)
        if set(tree) != set(want):
            missing, extra = set(want) - set(tree), set(tree) - set(want)
            raise ValueError("Node keys mismatch" + (f"; missing key(s): {missing}" if missing
                             else "") + (f"; extra key(s): {extra}" if extra else "") + ".")
        children = [tree[k] for k in want]
    elif kind is not collections.deque and context != spec._context:  # deque: maxlen ignored
        raise ValueError(f"Node context mismatch for node type {spec.type!r}; expected "
                         f"{spec._context!r}, but got {context!r}.")
    out = []
    for child_spec, child in zip(spec._children, children):
        out += _flatten_up_to(child_spec, child, is_leaf)
    return out


def tree_map(func, tree, *rests, is_leaf=None):
    """``tree`` with each leaf replaced by ``func(leaf, *the leaves at its place in rests)``."""
    leaves, spec = tree_flatten(tree, is_leaf)
    others = _same_shape(spec, rests, is_leaf)
    return tree_unflatten([func(*xs) for xs in zip(leaves, *others)], spec)


def tree_map_(func, tree, *rests, is_leaf=None):
    """Call ``func`` on each leaf (for its effect); returns ``tree``."""
    leaves, spec = tree_flatten(tree, is_leaf)
    for xs in zip(leaves, *_same_shape(spec, rests, is_leaf)):
        func(*xs)
    return tree


def tree_map_with_path(func, tree, *rests, is_leaf=None):
    """``tree_map`` whose ``func`` also takes each leaf's key path first."""
    pairs, spec = tree_flatten_with_path(tree, is_leaf)
    others = _same_shape(spec, rests, is_leaf)
    return tree_unflatten([func(p, x, *xs) for (p, x), *xs in zip(pairs, *others)], spec)


def _types(type_or_types):
    return tuple(type_or_types) if isinstance(type_or_types, (tuple, list)) else (type_or_types,)


def tree_map_only(type_or_types_or_pred, func, tree, is_leaf=None):
    """``tree_map`` on the leaves of those types (or for which the predicate holds); the other
    leaves stay as they are."""
    if callable(type_or_types_or_pred) and not isinstance(type_or_types_or_pred, type):
        pred = type_or_types_or_pred
    else:
        types = _types(type_or_types_or_pred)

        def pred(x):
            return isinstance(x, types)
    return tree_map(lambda x: func(x) if pred(x) else x, tree, is_leaf=is_leaf)


def tree_map_only_(type_or_types_or_pred, func, tree, is_leaf=None):
    tree_map_only(type_or_types_or_pred, func, tree, is_leaf)
    return tree


def tree_all(pred, tree, is_leaf=None):
    return all(pred(x) for x in tree_leaves(tree, is_leaf))


def tree_any(pred, tree, is_leaf=None):
    return any(pred(x) for x in tree_leaves(tree, is_leaf))


def tree_all_only(type_or_types, pred, tree, is_leaf=None):
    types = _types(type_or_types)
    return all(pred(x) for x in tree_leaves(tree, is_leaf) if isinstance(x, types))


def tree_any_only(type_or_types, pred, tree, is_leaf=None):
    types = _types(type_or_types)
    return any(pred(x) for x in tree_leaves(tree, is_leaf) if isinstance(x, types))


# ---- serialising specs ----------------------------------------------------------------------
_PROTOCOL = 1


def _spec_to_json(spec):
    if spec.is_leaf():
        return {"type": None, "context": None, "children_spec": []}
    node = _REGISTRY[spec.type]
    if node.serialized_name is None:
        what = (f"namedtuple class {spec._context}" if spec.type is namedtuple
                else f"type {spec.type}")
        raise NotImplementedError(f"Can't serialize TreeSpec of {what}: it was registered "
                                  f"without a serialized_type_name")
    if node.to_dumpable is not None:
        context = node.to_dumpable(spec._context)
    else:
        try:
            context = json.dumps(spec._context)
        except TypeError as e:
            raise TypeError(f"Unable to serialize the context of {spec.type} "
                            f"({spec._context!r}); register the type with "
                            f"to_dumpable_context/from_dumpable_context") from e
    return {"type": node.serialized_name, "context": context,
            "children_spec": [_spec_to_json(c) for c in spec._children]}


def _spec_from_json(data):
    if data["type"] is None:
        return _LEAF
    by_name = {n.serialized_name: cls for cls, n in _REGISTRY.items()
               if n.serialized_name is not None}
    if data["type"] not in by_name:
        raise NotImplementedError(f"No pytree node type is registered under the serialized "
                                  f"name {data['type']!r}")
    cls = by_name[data["type"]]
    node = _REGISTRY[cls]
    context = (node.from_dumpable(data["context"]) if node.from_dumpable is not None
               else json.loads(data["context"]))
    return TreeSpec(cls, context, [_spec_from_json(c) for c in data["children_spec"]])


def treespec_dumps(treespec, protocol=None):
    """``treespec`` as JSON text, in torch's format (so either library reads the other's)."""
    if not isinstance(treespec, TreeSpec):
        raise TypeError(f"treespec_dumps: expected a TreeSpec, got {type(treespec).__name__}")
    protocol = _PROTOCOL if protocol is None else protocol
    if protocol != _PROTOCOL:
        raise ValueError(f"Unknown protocol {protocol}. Available protocols: [{_PROTOCOL}]")
    return json.dumps([protocol, _spec_to_json(treespec)])


def treespec_loads(serialized):
    """The TreeSpec ``treespec_dumps`` wrote."""
    protocol, data = json.loads(serialized)
    if protocol != _PROTOCOL:
        raise ValueError(f"Unknown protocol {protocol}. Available protocols: [{_PROTOCOL}]")
    return _spec_from_json(data)
