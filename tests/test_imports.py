"""The package's modules import each other without cycles and only downwards in ARCHITECTURE.md's layer table
(module- and function-level imports alike)."""

import ast
import re
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


def architecture_layers() -> list[tuple[str, list[str]]]:
    """ARCHITECTURE.md's layer table, lowest first: (layer, the module prefixes of its ``modules`` column)."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    table = text[text.index("## Layers"):].split("\n## ", 1)[0]
    layers = []
    for row in table.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) < 3 or cells[0] in ("layer", "---"):
            continue
        paths = re.findall(r"`(mtmarl/[^`]*)`", cells[1])
        layers.append((cells[0], [p.removesuffix(".py").rstrip("/").replace("/", ".") for p in paths]))
    return layers


def layer_of(module: str, layers) -> int | None:
    """The index of the layer whose longest prefix names ``module`` (None: no layer does)."""
    best = None
    for i, (_, prefixes) in enumerate(layers):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > best[1]):
                best = (i, len(p))
    return None if best is None else best[0]


def upward_imports(graph: dict[str, set[str]], layers) -> list[str]:
    """Every import of a module of a higher layer, as ``importer (layer) -> imported (layer)``."""
    out = []
    for module in sorted(graph):
        mine = layer_of(module, layers)
        for dep in sorted(graph[module]):
            theirs = layer_of(dep, layers)
            if mine is not None and theirs is not None and theirs > mine:
                out.append(f"{module} ({layers[mine][0]}) -> {dep} ({layers[theirs][0]})")
    return out


def test_layer_check_reads_the_table_and_finds_an_upward_import():
    layers = architecture_layers()
    names = [name for name, _ in layers]
    assert names.index("algorithms") < names.index("engine") < names.index("entry points")
    assert layer_of("mtmarl.tasks", layers) == names.index("envs")
    assert layer_of("mtmarl.training.loop", layers) == names.index("engine")
    graph = {"mtmarl.algos.x": {"mtmarl.training.y", "mtmarl.envs.z"}, "mtmarl.training.y": {"mtmarl.algos.x"}}
    assert upward_imports(graph, layers) == ["mtmarl.algos.x (algorithms) -> mtmarl.training.y (engine)"]


def test_every_module_has_a_layer_and_imports_no_higher_one():
    layers = architecture_layers()
    graph = import_graph()
    unplaced = sorted(m for m in graph if m != "mtmarl" and layer_of(m, layers) is None)
    assert not unplaced, f"modules in no layer of ARCHITECTURE.md's table: {unplaced}"
    bad = upward_imports({m: deps - {"mtmarl"} for m, deps in graph.items() if m != "mtmarl"}, layers)
    assert not bad, "imports of a higher layer:\n" + "\n".join(bad)
