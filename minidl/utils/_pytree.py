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

__all__ = ["TreeSpec", "LeafSpec", "register_pytree_node", "tree_is_leaf", "tree_flatten",
           "tree_flatten_with_path", "tree_unflatten", "tree_iter", "tree_leaves",
           "tree_leaves_with_path", "tree_structure", "tree_map", "tree_map_with_path",
           "tree_map_", "tree_map_only", "tree_map_only_", "tree_all", "tree_any",
           "tree_all_only", "tree_any_only", "keystr", "key_get", "is_namedtuple",
           "is_namedtuple_class", "is_namedtuple_instance", "SequenceKey", "MappingKey",
           "GetAttrKey"]


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
    _REGISTRY[cls] = _Node(flatten_fn, unflatten_fn, keys)


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


def _flatten_up_to(spec, tree, is_leaf):
    if spec.is_leaf():
        return [tree]
    kind = _node_type(tree) if not (is_leaf is not None and is_leaf(tree)) else None
    if kind is not spec.type:
        raise ValueError(f"Node type mismatch; expected {spec.type}, but got {type(tree)}.")
    children, context = _REGISTRY[kind].flatten(tree)
    if len(children) != spec.num_children:
        raise ValueError(f"Node arity mismatch; expected {spec.num_children}, but got "
                         f"{len(children)}.")
    if kind in (dict, collections.OrderedDict) and set(context) != set(spec._context):
        raise ValueError(f"Node context mismatch for custom node type {kind}.")
    if kind in (dict, collections.OrderedDict):  # matched by key, in spec's order
        children = [tree[k] for k in spec._context]
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
