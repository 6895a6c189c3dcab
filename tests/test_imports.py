"""The package's modules import each other without cycles (module- and function-level imports alike)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def import_graph() -> dict[str, set[str]]:
    """module -> the mtmarl modules it imports anywhere in its body (``from pkg import module`` counts)."""
    mods = {}
    for path in (ROOT / "mtmarl").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mtmarl"):
                graph[name] |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in mods}
                graph[name] |= {node.module} & set(mods)
            elif isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name in mods}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (ignoring the top-level package, which only re-exports), or None."""
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph[node] - {"mtmarl"}):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt, path + [nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert "mtmarl.training.loop" in graph and "mtmarl.evaluation.rollout" in graph["mtmarl.training.loop"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_engine_sees_algorithms_only_through_the_protocol_and_registry():
    """Training, evaluation and the entry points import no algorithm module (nor the Sable helpers):
    an algorithm is reached by name through mtmarl.algos.registry, and used through protocol.Algorithm."""
    graph = import_graph()
    allowed = {"mtmarl.algos", "mtmarl.algos.protocol", "mtmarl.algos.registry"}
    engine = [m for m in graph if m.startswith(("mtmarl.training", "mtmarl.evaluation"))
              or m in ("mtmarl.train", "mtmarl.evaluate")]
    assert "mtmarl.training.engine" in engine and "mtmarl.training.loop" in engine
    assert "mtmarl.algos.registry" in graph["mtmarl.training.loop"]
    for module in engine:
        algos = {m for m in graph[module] if m.startswith("mtmarl.algos")}
        assert algos <= allowed, f"{module} imports {sorted(algos - allowed)}"
