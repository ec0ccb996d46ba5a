"""``replace_pattern``: find every match of a pattern function's graph in a GraphModule and put
the replacement function's graph in its place (torch.fx.subgraph_rewriter's meaning)."""
from typing import NamedTuple

from ..nn.module import Module
from ._symbolic_trace import symbolic_trace
from .graph_module import GraphModule
from .node import Node, map_arg

__all__ = ["Match", "replace_pattern"]


class Match(NamedTuple):
    anchor: Node  # the node the pattern's output matched
    nodes_map: dict  # pattern node -> matched node


def _trace(p):
    return p if isinstance(p, GraphModule) else symbolic_trace(p)


class _Matcher:
    def __init__(self, pattern_graph):
        self.pattern = pattern_graph
        self.placeholders = [n for n in pattern_graph.nodes if n.op == "placeholder"]
        out = [n for n in pattern_graph.nodes if n.op == "output"][0]
        returned = out.args[0]
        self.returned = list(returned) if isinstance(returned, (tuple, list)) else [returned]

    def match_from(self, anchor):
        """nodes_map when the pattern's (single) returned node matches at ``anchor``, else None."""
        nodes_map = {}
        if len(self.returned) != 1 or not self._match(self.returned[0], anchor, nodes_map):
            return None
        inner = [p for p in nodes_map if p.op != "placeholder"]
        matched = {nodes_map[p] for p in inner}
        for p in inner:  # no matched node but the anchor may be used outside the match
            g = nodes_map[p]
            if g is not anchor and any(u not in matched for u in g.users):
                return None
        return nodes_map

    def _match(self, p, g, nodes_map):
        if p in nodes_map:
            return nodes_map[p] is g
        if p.op == "placeholder":
            nodes_map[p] = g
            return True
        if not isinstance(g, Node) or p.op != g.op or p.target != g.target:
            return False
        if p.op == "get_attr":
            nodes_map[p] = g
            return True
        if len(p.args) != len(g.args) or set(p.kwargs) != set(g.kwargs):
            return False
        nodes_map[p] = g
        pairs = list(zip(p.args, g.args)) + [(p.kwargs[k], g.kwargs[k]) for k in p.kwargs]
        for pa, ga in pairs:
            if not self._match_arg(pa, ga, nodes_map):
                del nodes_map[p]
                return False
        return True

    def _match_arg(self, pa, ga, nodes_map):
        if isinstance(pa, Node):
            if pa.op == "placeholder":
                if pa in nodes_map:
                    return nodes_map[pa] is ga or nodes_map[pa] == ga
                nodes_map[pa] = ga
                return True
            return isinstance(ga, Node) and self._match(pa, ga, nodes_map)
        if isinstance(pa, (tuple, list)):
            return isinstance(ga, (tuple, list)) and len(pa) == len(ga) and \
                all(self._match_arg(a, b, nodes_map) for a, b in zip(pa, ga))
        return type(pa) is type(ga) and pa == ga


def replace_pattern(gm, pattern, replacement):
    """Replaces each non-overlapping match of ``pattern`` (a function or GraphModule) in ``gm``
    by ``replacement``'s graph, then recompiles ``gm``; returns the ``Match``es."""
    if not isinstance(gm, GraphModule):
        raise TypeError(f"replace_pattern takes a GraphModule, got {type(gm).__name__}")
    pattern_gm, replacement_gm = _trace(pattern), _trace(replacement)
    matcher = _Matcher(pattern_gm.graph)
    rep_placeholders = [n for n in replacement_gm.graph.nodes if n.op == "placeholder"]
    if len(rep_placeholders) != len(matcher.placeholders):
        raise ValueError(f"replace_pattern: the pattern takes {len(matcher.placeholders)} inputs but the "
                         f"replacement takes {len(rep_placeholders)}")
    graph = gm.graph
    matches, used = [], set()
    for node in reversed(graph.nodes):
        if node.op in ("placeholder", "output") or node in used:
            continue
        nodes_map = matcher.match_from(node)
        if nodes_map is None:
            continue
        inner = {nodes_map[p] for p in nodes_map if p.op != "placeholder"}
        if inner & used:
            continue
        used |= inner
        matches.append(Match(node, nodes_map))
    matches.reverse()  # in graph order, as torch names the new nodes
    for match in matches:
        # the replacement's get_attr targets: copy what it holds into gm
        for n in replacement_gm.graph.nodes:
            if n.op in ("get_attr", "call_module") and not _has_path(gm, n.target):
                _set_path(gm, n.target, _get_path(replacement_gm, n.target))
        val_map = {rp: match.nodes_map[pp] for rp, pp in zip(rep_placeholders, matcher.placeholders)}
        users = sorted(match.anchor.users, key=graph._nodes.index)
        with graph.inserting_before(users[0] if users else match.anchor):
            for n in replacement_gm.graph.nodes:
                if n.op == "placeholder":
                    continue
                if n.op == "output":
                    result = map_arg(n.args[0], lambda m: val_map[m])
                    break
                val_map[n] = graph.node_copy(n, lambda m: val_map[m])
        if isinstance(result, (tuple, list)):
            result = result[0] if len(result) == 1 else result
        match.anchor.replace_all_uses_with(result)
        for g in sorted((match.nodes_map[p] for p in match.nodes_map if p.op != "placeholder"),
                        key=lambda x: -graph._nodes.index(x)):
            if not g.users:
                graph.erase_node(g)
    gm.recompile()
    return matches


def _has_path(m, target):
    try:
        _get_path(m, target)
        return True
    except AttributeError:
        return False


def _get_path(m, target):
    for atom in target.split("."):
        m = getattr(m, atom)
    return m


def _set_path(m, target, value):
    *prefix, last = target.split(".")
    for atom in prefix:
        if not hasattr(m, atom):
            setattr(m, atom, Module())
        m = getattr(m, atom)
    setattr(m, last, value)
