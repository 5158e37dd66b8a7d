"""Cache keys over the code that runs: `code_fingerprint(method)` hashes every source file that can change an
unlearning run's result, so an edited method, helper or protocol is never served a stale cached result.

* a user's file method (`--method path/to/file.py:fn`): the file's code; a notebook (`.ipynb`): the code of
  the statements it runs (obliviate/notebook.py), not its outputs or the cells the function does not need;
* a Python function (a notebook's `unlearning` passed to `obliviate.run`): its source (inspect.getsource;
  its bytecode where no source exists), its default arguments and closed-over values, and its module's file
  when it has one (a notebook cell's globals are not covered: a value read from another cell is not part of
  the key);
* a registered method: its module plus every obliviate module it imports, transitively (read statically:
  the `import`/`from ... import` statements of each file, parsed with `ast`, followed only into obliviate.*);
* every kind, in addition: the modules every run executes (RUN_MODULES: the protocol, the loaders and
  batches, the model layers, the training helpers) and what they import. Modules outside that closure (the
  report, the CLI, the runner stages) do not enter the key: editing them recomputes nothing.

Each file is hashed with its path relative to the package, so moving code between modules changes the key.
What is hashed is the code, not its text: the parsed syntax tree without comments, docstrings or line numbers
(`code_text`), so editing a comment or a docstring recomputes nothing and any change to a statement does; a file
that does not parse is hashed as its bytes. The files are read on every call; only their parsed imports and
code text are memoised (one parse per file serves both), keyed by the bytes' hash (measured: ~160 ms for the first
method in a process, mostly ast.parse and ast.dump; ~4 ms memoised), so no memo can go stale.
"""
from __future__ import annotations

import ast
import hashlib
import inspect
import marshal
import textwrap
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent          # obliviate/
RUN_MODULES = ("obliviate.protocol", "obliviate.data.base", "obliviate.models.layers", "obliviate.training")


def module_file(name: str) -> Path | None:
    """obliviate.x.y -> obliviate/x/y.py or obliviate/x/y/__init__.py (None outside the package / absent)."""
    parts = name.split(".")
    if parts[0] != "obliviate":
        return None
    base = PACKAGE.joinpath(*parts[1:])
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.is_file():
            return f
    return None


def _module_name(path: Path) -> str:
    rel = path.resolve().relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


_PARSED: dict = {}   # (path, sha256 of its bytes) -> imports: keyed by content, so it cannot go stale
_CODE: dict = {}     # sha256 of source bytes -> code_text: keyed by content, so it cannot go stale


def code_text(data: bytes) -> bytes:
    """What of a source file can change a result: its syntax tree (ast.dump, no line numbers) with every
    docstring removed; comments never reach the tree. Source that does not parse: its bytes."""
    memo = hashlib.sha256(data).digest()
    if memo not in _CODE:
        try:
            _CODE[memo] = _tree_code(ast.parse(data))
        except (SyntaxError, ValueError):
            _CODE[memo] = b"bytes\0" + data
    return _CODE[memo]


def _tree_code(tree: ast.AST) -> bytes:
    """code_text of a parsed file (the tree loses its docstrings)."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return b"ast\0" + ast.dump(tree, include_attributes=False).encode()


def _imports(path: Path) -> set[str]:
    """The obliviate modules `path` imports anywhere in its body (top level or inside functions). The one parse
    also fills code_text's memo for the file, which the key hashes next."""
    data = path.read_bytes()
    digest = hashlib.sha256(data).digest()
    memo = (str(path), digest)
    if memo not in _PARSED:
        tree = ast.parse(data, str(path))
        _PARSED[memo] = _parse_imports(path, tree)
        _CODE.setdefault(digest, _tree_code(tree))        # after the import walk: this strips the docstrings
    return _PARSED[memo]


def _parse_imports(path: Path, tree: ast.AST) -> set[str]:
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found |= {f"{mod}.{a.name}" for a in node.names}   # `from . import x`: x may be a module
    return {m for m in found if module_file(m) is not None}


def _parents(name: str) -> set[str]:
    """The packages above a module: their __init__ runs on import, so its file enters the key, but what it
    imports is not followed (obliviate/__init__.py exposes obliviate.run, which reaches the whole runner)."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def module_closure(names) -> list[Path]:
    """Files of `names` and of every obliviate module they import, transitively (sorted)."""
    todo, seen = [n for n in names if module_file(n)], set()
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        todo += [m for m in _imports(module_file(n)) if m not in seen]
    return sorted({module_file(m) for n in seen for m in {n} | _parents(n) if module_file(m)})


def _hash_files(h, files) -> None:
    for f in files:
        f = Path(f)
        try:
            label = str(f.resolve().relative_to(PACKAGE.parent))
        except ValueError:
            label = f.name
        h.update(label.encode() + b"\0" + code_text(f.read_bytes()) + b"\0")


def _filled(cell) -> bool:
    try:
        cell.cell_contents
        return True
    except ValueError:
        return False


def code_fingerprint(method) -> str:
    """12 hex digits over the code that decides `method`'s result (see the module docstring)."""
    h = hashlib.sha256()
    user = getattr(method, "user", None)
    if user is not None:
        src = inspect.getsourcefile(user) if not inspect.isbuiltin(user) else None
        mod_file = Path(src) if src and Path(src).is_file() else None
        try:
            h.update(b"source\0" + code_text(textwrap.dedent(inspect.getsource(user)).encode()))
        except (OSError, TypeError):          # no source to read (exec'd text, a bare REPL): its bytecode
            code = getattr(user, "__code__", None)
            h.update(marshal.dumps(code) if code is not None else repr(user).encode())
        if mod_file is not None:
            h.update(b"file\0" + code_text(mod_file.read_bytes()))
        kept = getattr(user, "__globals__", {}).get("__obliviate_code__")   # a notebook: the code it runs
        if kept is not None:
            h.update(b"notebook\0" + kept)
        # values the source names but does not spell: default arguments and closed-over variables (numbers,
        # strings, tuples...: whatever has a stable repr; an object's repr with an address is left out)
        cells = [c.cell_contents for c in (getattr(user, "__closure__", None) or ()) if _filled(c)]
        for v in (getattr(user, "__defaults__", None), getattr(user, "__kwdefaults__", None), *cells):
            r = repr(v)
            if " at 0x" not in r:
                h.update(b"value\0" + r.encode())
        # the protocol a user method runs under (harness, loaders) also decides its result
        _hash_files(h, module_closure(RUN_MODULES))
        return h.hexdigest()[:12]
    fn = getattr(method, "fn", method)
    module = inspect.getmodule(fn)
    name = module.__name__ if module else ""
    files = module_closure([name, *RUN_MODULES])
    if module_file(name) is None and module is not None and getattr(module, "__file__", None):
        files.append(Path(module.__file__))   # a method registered from outside the package
    _hash_files(h, files)
    return h.hexdigest()[:12]


def modules_fingerprint(names) -> str:
    """12 hex digits over `names` and every obliviate module they import: the key of trained populations and the
    original (training recipe code, the model's module, the evaluation), so an edited trainer is never served
    from the cache."""
    h = hashlib.sha256()
    _hash_files(h, module_closure(names))
    return h.hexdigest()[:12]
