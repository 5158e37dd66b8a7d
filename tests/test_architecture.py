"""The package's imports run one way (obliviate/runner.py: plan -> execute -> score -> write, no import circles).
Read from the source with `ast`, lazy imports inside functions included: a circle hidden in a function body is
still a circle a reader has to untangle."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "obliviate"


def _module(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """{module: the package's modules it imports}, relative and absolute imports alike."""
    paths = {_module(p): p for p in PKG.rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = ".".join(here.split(".")[: len(here.split(".")) - (node.level - 1)])
                    target = f"{base}.{node.module}" if node.module else base
                else:
                    target = node.module or ""
                subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in paths]
                # `from . import plots` imports the submodule; the package around it is already importing
                candidates = subs if subs else [target]
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                continue
            deps |= {c for c in candidates if c in paths and c != name}
        graph[name] = deps
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_detector_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles_in_the_package():
    assert circles(import_graph()) == []


def test_the_run_flows_one_way():
    g = import_graph()
    stages = ["obliviate.plan", "obliviate.execute", "obliviate.score", "obliviate.write"]
    for i, stage in enumerate(stages):        # no stage imports a later one
        assert not g[stage] & set(stages[i + 1:]), (stage, g[stage] & set(stages[i + 1:]))
    assert {"obliviate.plan", "obliviate.execute", "obliviate.score", "obliviate.write"} <= g["obliviate.runner"]
