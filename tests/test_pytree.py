"""``minidl.utils._pytree`` (torch.utils._pytree): leaves, specs (their repr too), key paths,
maps and registered containers, compared with torch's on the same trees."""
import collections
import dataclasses

import numpy as np
import pytest

import minidl
from minidl.utils import _pytree as pt

NT = collections.namedtuple("NT", "x y")


def _trees():
    dd = collections.defaultdict(list)
    dd["k"] = 3
    return [None, 1, [1, (2, None), {"b": 3, "a": 4}], NT(1, [2, {"z": 5}]),
            collections.OrderedDict(b=1, a=2), collections.deque([1, 2], maxlen=5), dd,
            {"w": [1.0, 2.0], "b": (3.0,)}, [], {}, ((),), "text"]


@pytest.mark.parametrize("index", range(12))
def test_flatten_unflatten_and_paths_equal_torchs(index):
    tree = _trees()[index]
    leaves, spec = pt.tree_flatten(tree)
    assert pt.tree_unflatten(leaves, spec) == tree and type(pt.tree_unflatten(leaves, spec)) \
        is type(tree)
    assert spec.num_leaves == len(leaves)
    pytest.importorskip("torch")
    from torch.utils import _pytree as tpt

    their_leaves, their_spec = tpt.tree_flatten(tree)
    assert leaves == their_leaves and repr(spec) == repr(their_spec)
    assert (spec.num_nodes, spec.num_leaves) == (their_spec.num_nodes, their_spec.num_leaves)
    ours = [pt.keystr(p) for p, _ in pt.tree_flatten_with_path(tree)[0]]
    theirs = [tpt.keystr(p) for p, _ in tpt.tree_flatten_with_path(tree)[0]]
    assert ours == theirs


def test_maps_and_predicates():
    tree = {"a": [1, 2], "b": (3, "s")}
    assert pt.tree_map(lambda x: x * 2, tree) == {"a": [2, 4], "b": (6, "ss")}
    assert pt.tree_map(lambda x, y: x + y, [1, 2], [10, 20]) == [11, 22]
    assert pt.tree_map(lambda x, y: (x, y), {"b": 1, "a": 2}, {"a": 3, "b": 4}) == \
        {"b": (1, 4), "a": (2, 3)}  # dicts matched by key
    assert pt.tree_map_only(int, lambda x: x + 1, [1, "a", 2.0]) == [2, "a", 2.0]
    assert pt.tree_map_only((int, float), lambda x: -x, [1, "a", 2.0]) == [-1, "a", -2.0]
    seen = []
    assert pt.tree_map_(seen.append, tree) is tree and seen == [1, 2, 3, "s"]
    assert pt.tree_all(lambda x: x > 0, [1, 2]) and not pt.tree_any(lambda x: x > 5, [1, 2])
    assert pt.tree_all_only(int, lambda x: x > 0, [1, "a"])
    assert pt.tree_any_only(str, lambda x: x == "a", [1, "a"])
    paths = pt.tree_map_with_path(lambda p, x: pt.keystr(p), NT(1, [2]))
    assert paths == NT(".x", [".y[0]"])
    assert pt.key_get({"a": [5, 6]}, [pt.MappingKey("a"), pt.SequenceKey(1)]) == 6
    assert pt.tree_leaves([1, [2]], is_leaf=lambda x: isinstance(x, list) and len(x) == 1) == \
        [1, [2]]


def test_mismatches_are_refused_as_torch():
    with pytest.raises(ValueError, match="Node arity mismatch; expected 2, but got 1"):
        pt.tree_map(lambda a, b: a + b, [1, 2], [10])
    with pytest.raises(ValueError, match="Node type mismatch"):
        pt.tree_map(lambda a, b: a + b, [1, 2], (1, 2))
    leaves, spec = pt.tree_flatten([1, 2])
    with pytest.raises(ValueError, match="`leaves` has length 3 but the spec refers to a "
                                         "pytree that holds 2 items"):
        pt.tree_unflatten([1, 2, 3], spec)
    with pytest.raises(TypeError, match="Expected `treespec` to be instance of TreeSpec"):
        pt.tree_unflatten([1], [1])
    with pytest.raises(ValueError, match="already registered"):
        pt.register_pytree_node(list, lambda x: (x, None), lambda c, _: c)


def test_registered_container_and_tensors(monkeypatch):
    @dataclasses.dataclass
    class Pair:
        a: object
        b: object

    # the registry as it was comes back after the test: no class of this test stays registered
    # in the process (a pytest-xdist worker runs other files after this one)
    monkeypatch.setattr(pt, "_REGISTRY", dict(pt._REGISTRY))
    pt.register_pytree_node(Pair, lambda p: ([p.a, p.b], None), lambda c, _: Pair(*c),
                            flatten_with_keys_fn=lambda p: ([(pt.GetAttrKey("a"), p.a),
                                                             (pt.GetAttrKey("b"), p.b)], None))
    x = minidl.tensor(np.ones(3, np.float32), requires_grad=True)
    tree = {"p": Pair(x, [x * 2])}
    leaves, spec = pt.tree_flatten(tree)
    assert len(leaves) == 2 and leaves[0] is x
    detached = pt.tree_map_only(minidl.Tensor, lambda t: t.detach(), tree)
    assert not detached["p"].a.requires_grad and isinstance(detached["p"], Pair)
    assert [pt.keystr(p) for p, _ in pt.tree_flatten_with_path(tree)[0]] == \
        ["['p'].a", "['p'].b[0]"]
    assert spec == pt.tree_structure({"p": Pair(1, [2])})
    assert spec != pt.tree_structure({"p": Pair(1, [2, 3])})


def test_reachable_as_an_attribute_after_import_minidl_alone():
    """As torch.utils._pytree after `import torch` (code calls it without importing it)."""
    import subprocess
    import sys

    code = "import minidl; print(minidl.utils._pytree.tree_leaves({'a': [1, (2, 3)]}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[1, 2, 3]"


# ---- tree_map matches dict kinds by key and checks contexts; treespec_dumps/loads --------------------
_NT = collections.namedtuple("_NT", "a b")


def test_pytree_map_matches_dict_kinds_by_key_and_checks_contexts():
    from minidl.utils import _pytree as pt
    dd = collections.defaultdict
    a, b = dd(list, {"x": 1, "y": 2}), dd(list, {"y": 20, "x": 10})
    assert dict(pt.tree_map(lambda p, q: p + q, a, b)) == {"x": 11, "y": 22}   # was 21, 12
    assert pt.tree_map(lambda p, q: p + q, collections.OrderedDict(x=1), {"x": 2}) == {"x": 3}
    assert pt.tree_map(lambda p, q: p + q, {"x": 1}, dd(int, x=2)) == {"x": 3}
    with pytest.raises(ValueError, match=r"missing key\(s\): \{'y'\}; extra key\(s\): \{'z'\}"):
        pt.tree_map(lambda p, q: p, {"x": 1, "y": 2}, {"x": 1, "z": 2})
    Other = collections.namedtuple("Other", "a b")
    with pytest.raises(ValueError, match="context mismatch"):           # torch refuses too
        pt.tree_map(lambda p, q: p, _NT(1, 2), Other(1, 2))


def test_treespec_dumps_loads_round_trip_and_read_torchs():
    from minidl.utils import _pytree as pt
    tree = {"a": [1, (2,)], "b": None, "c": collections.OrderedDict(x=1),
            "d": collections.defaultdict(list, {"q": 1}), "e": collections.deque([1], maxlen=3),
            5: 1}
    spec = pt.tree_structure(tree)
    assert pt.treespec_loads(pt.treespec_dumps(spec)) == spec
    with pytest.raises(NotImplementedError, match="namedtuple"):
        pt.treespec_dumps(pt.tree_structure(_NT(1, 2)))
    with pytest.raises(ValueError, match="protocol"):
        pt.treespec_dumps(spec, protocol=7)
    torch = pytest.importorskip("torch")
    tspec = torch.utils._pytree.tree_structure(tree)
    assert pt.treespec_dumps(spec) == torch.utils._pytree.treespec_dumps(tspec)
    assert pt.treespec_loads(torch.utils._pytree.treespec_dumps(tspec)) == spec
