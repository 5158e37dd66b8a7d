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


# --- one-way data flow: what each part may import ------------------------------------------------------------
def _imports_of(prefixes: tuple, graph=None) -> dict:
    g = graph or import_graph()
    return {m: deps for m, deps in g.items() if m.startswith(prefixes)}


def bad_edges(graph: dict) -> list[str]:
    """The rules the package keeps, as violations found in `graph` ({module: imported modules}):
    the library never imports its command-line front end; write and the report only read a board (nothing
    from obliviate.metrics or obliviate.analysis, nor the stages before them); score builds no model and asks
    no method registry (the plan carries each method's facts); the runner composes the stages and computes
    nothing itself (no metrics, training or models)."""
    out = []
    for m, deps in graph.items():
        if m != "obliviate.cli" and "obliviate.cli" in deps:
            out.append(f"{m} imports the CLI")
        if m == "obliviate.write" or m.startswith("obliviate.report"):
            for d in deps:
                if d.startswith(("obliviate.metrics", "obliviate.analysis", "obliviate.score", "obliviate.execute",
                                 "obliviate.plan", "obliviate.training")):
                    out.append(f"{m} imports {d}: the report and write only read a board")
        if m == "obliviate.score":
            for d in deps:
                if d.startswith(("obliviate.models", "obliviate.methods", "obliviate.execute")):
                    out.append(f"score imports {d}: scoring builds no model and asks no registry")
        if m == "obliviate.runner":
            for d in deps:
                if d.startswith(("obliviate.metrics", "obliviate.training", "obliviate.models")):
                    out.append(f"runner imports {d}: it only composes plan, execute, score and write")
    return out


def test_the_data_flow_rules_hold():
    assert bad_edges(import_graph()) == []


def test_each_data_flow_rule_catches_its_break():
    """Break each rule once on the real graph: the check must name it."""
    g = import_graph()
    for module, dep, words in [("obliviate.api", "obliviate.cli", "imports the CLI"),
                               ("obliviate.write", "obliviate.metrics.challenge", "only read a board"),
                               ("obliviate.report.render", "obliviate.metrics.extra", "only read a board"),
                               ("obliviate.report.render", "obliviate.analysis.significance", "only read a board"),
                               ("obliviate.score", "obliviate.models.registry", "builds no model"),
                               ("obliviate.score", "obliviate.methods.registry", "builds no model"),
                               ("obliviate.runner", "obliviate.training", "only composes")]:
        broken = {k: set(v) for k, v in g.items()}
        broken[module].add(dep)
        assert any(words in e for e in bad_edges(broken)), (module, dep)


def test_the_plan_never_opens_a_store_of_its_own():
    """plan_run is given the run's store; method_populations reads tuned values only from the store it is passed."""
    tree = ast.parse((PKG / "plan.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "Store"]
    # prepare() opens the run's cache for --hp-preset when called alone (obliviate data, tune), and only then
    assert len(calls) == 1
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "prepare")
    assert calls[0] in list(ast.walk(fn))


def test_importing_the_package_loads_no_torch():
    # `obliviate --help`, `obliviate kit list` and a report start in well under a second because torch (~2 s to
    # import) loads only where a model runs
    import subprocess
    import sys
    code = "import sys, obliviate, obliviate.cli, obliviate.board; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
