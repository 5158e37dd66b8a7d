"""A Kaggle notebook (`.ipynb`) as a method file: the code its function needs, and nothing else.

A competition notebook holds more than its `unlearning`: cells that install packages, read the challenge's data
from /kaggle/input, build the network and run the harness's 512 calls. `--method notebook.ipynb[:function]`
runs only what the function needs, so the notebook runs as it was downloaded:

    1. the code cells, in order; shell and magic lines (`!pip ...`, `%matplotlib inline`) become `pass`, and a
       cell that opens with a cell magic other than %%time, %%timeit or %%capture (`%%bash`, ...) is not Python
       and is left out whole;
    2. the top-level statements that bind or change a name the function reads, then those that bind or change
       a name a kept statement reads, until nothing is added: imports, functions, classes, assignments
       (`DEVICE = ...`, `CFG["lr"] = ...`), a method called on such a name (`CFG.update(...)`), and blocks that
       bind one (`if torch.cuda.is_available(): ...`). What a function reads is its free names (`symtable`),
       so a local `net` does not pull in the harness's global `net`;
    3. those statements, executed in notebook order as one module.

Unused imports (`import torchvision`, `import wandb`) and the harness cells are not run. A traceback names the
notebook and the code cell (numbered from 1, code cells only) with the line in that cell. The cache key covers
the kept code (`__obliviate_code__`, read by codehash): editing an output, a markdown cell or a cell the
function does not need recomputes nothing. `import_script` applies the rule to a method's `.py` that fails to
import whole (a notebook exported as a script; obliviate/usercode.py decides when).
"""
from __future__ import annotations

import ast
import json
import linecache
import re
import symtable
import types
from pathlib import Path

from .errors import UserError

KEEP_CELL_MAGICS = ("%%time", "%%timeit", "%%capture")   # IPython runs the cell's Python under these
STAR = "*"


def code_cells(path: Path) -> list[str]:
    """The notebook's code cells as Python source, magics replaced (step 1); one sentence if it is no notebook."""
    try:
        nb = json.loads(Path(path).read_text(encoding="utf-8"))
        cells = [c for c in nb["cells"] if c.get("cell_type") == "code"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
        raise UserError(f"method file {str(path)!r} is not a Jupyter notebook (JSON with a list of cells): "
                        f"download it from Kaggle as .ipynb, or pass a Python file.") from None
    out = []
    for c in cells:
        src = c.get("source", "")
        src = "".join(src) if isinstance(src, list) else str(src)
        first = src.lstrip().split("\n", 1)[0]
        if first.startswith("%%") and not first.split()[0] in KEEP_CELL_MAGICS:
            src = ""
        lines = [re.sub(r"^(\s*)[!%].*$", r"\1pass", line) for line in src.split("\n")]
        out.append("\n".join(lines))
    return out


def _table(stmt: ast.stmt) -> symtable.SymbolTable:
    return symtable.symtable(ast.unparse(stmt), "<stmt>", "exec")


def _names_read(table: symtable.SymbolTable) -> set[str]:
    """Module-level names a statement (its symbol table) reads when it runs or when what it defines is called."""
    names = {s.get_name() for s in table.get_symbols() if s.is_referenced()}
    todo = list(table.get_children())
    while todo:
        t = todo.pop()
        names |= {s.get_name() for s in t.get_symbols() if s.is_global()}
        todo += t.get_children()
    return names


def _root(node) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _this_scope(stmt: ast.stmt):
    """The statement's nodes outside the bodies of the functions, classes and lambdas it defines (what runs when
    the statement runs, at module level)."""
    todo = [stmt]
    while todo:
        node = todo.pop()
        yield node
        scoped = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))
        todo += [] if scoped and node is not stmt else list(ast.iter_child_nodes(node))
        if scoped and node is stmt:
            todo = [c for c in todo if c not in node.body]


def _names_written(stmt: ast.stmt, table: symtable.SymbolTable, modules: set[str]) -> set[str]:
    """Module-level names the statement binds, or changes through an attribute, an item or a method call (a call
    on an imported name, `torch.save(...)`, `os.makedirs(...)`, changes no value the function reads)."""
    if isinstance(stmt, ast.ImportFrom) and any(a.name == "*" for a in stmt.names):
        return {STAR}
    names = {s.get_name() for s in table.get_symbols() if s.is_assigned() or s.is_imported()}
    for node in _this_scope(stmt):
        targets = (node.targets if isinstance(node, ast.Assign) else
                   [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else [])
        names |= {_root(t) for t in targets if isinstance(t, (ast.Attribute, ast.Subscript))}
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and isinstance(node.value.func,
                                                                                        ast.Attribute):
            root = _root(node.value.func.value)
            names |= set() if root in modules else {root}
    return names - {None}


def needed_statements(cells: list[str], function: str, label: str) -> list[tuple[int, list[ast.stmt]]]:
    """(code cell index, the statements kept from it) in notebook order (step 2). A cell that does not parse is
    one sentence naming it; a function the notebook does not define is one sentence listing those it does."""
    stmts = []
    for i, src in enumerate(cells):
        try:
            tree = ast.parse(src)
        except SyntaxError as e:
            raise UserError(f"{label}, code cell {i + 1}, line {e.lineno}: {e.msg} — a notebook's cells must be "
                            f"Python (shell lines start with !, magics with %).") from None
        stmts += [(i, s) for s in tree.body]
    modules = {(a.asname or a.name).split(".")[0] for _, s in stmts if isinstance(s, (ast.Import, ast.ImportFrom))
               for a in s.names}
    tables = [_table(s) for _, s in stmts]      # one symbol table a statement: what it writes, and reads if kept
    stmts = [(i, s, _names_written(s, t, modules)) for (i, s), t in zip(stmts, tables)]
    if not any(function in w for _, _, w in stmts):
        from .suggest import nearest
        defined = [s.name for _, s, _ in stmts if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))]
        hint = nearest(function, defined)
        raise UserError(f"notebook {label!r} defines no function {function!r}" +
                        (f" (did you mean {hint!r}?)" if hint else "") +
                        (f": it defines {', '.join(defined)}; pass --method {label}:NAME with one of them"
                         if defined else ": define unlearning(net, retain_loader, forget_loader, val_loader) in it")
                        + ".")
    needed, kept = {function}, set()
    while True:
        new = [k for k, (_, s, w) in enumerate(stmts) if k not in kept and (w & needed or STAR in w)]
        if not new:
            break
        for k in new:
            kept.add(k)
            needed |= _names_read(tables[k])
    out: dict[int, list] = {}
    for k in sorted(kept):
        out.setdefault(stmts[k][0], []).append(stmts[k][1])
    return sorted(out.items())


def script_cells(source: str) -> list[tuple[str, str | None]]:
    """A script as (source, where) parts in file order. nbconvert writes a cell under %%time, %%timeit or %%capture
    as `get_ipython().run_cell_magic('time', '', '<the cell>')`: that cell's code is a part of its own (`where`
    names the call's line); the file's other statements are parts with `where` None, padded with blank lines so
    that they keep their line numbers."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return [(source, None)]                 # needed_statements says where it does not parse
    lines, parts, start = source.split("\n"), [], 1
    for stmt in tree.body:
        call = stmt.value if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call) else None
        magic = (call is not None and isinstance(call.func, ast.Attribute) and call.func.attr == "run_cell_magic"
                 and len(call.args) == 3 and all(isinstance(a, ast.Constant) for a in call.args)
                 and f"%%{call.args[0].value}" in KEEP_CELL_MAGICS and isinstance(call.args[2].value, str))
        if magic:
            parts.append(("\n" * (start - 1) + "\n".join(lines[start - 1:stmt.lineno - 1]), None))
            parts.append((call.args[2].value, f"the %%{call.args[0].value} cell at line {stmt.lineno}"))
            start = stmt.end_lineno + 1
    parts.append(("\n" * (start - 1) + "\n".join(lines[start - 1:]), None))
    return parts


def import_script(path, function: str, module_name: str):
    """A `.py` file by the same rule (the caller uses it when the file fails to import whole: a notebook exported as
    a script, its harness at top level). Frames name the file's own lines, or the cell a cell magic ran."""
    path = Path(path)
    parts = script_cells(path.read_text(encoding="utf-8"))
    return _run_needed(path, [(src, str(path) if where is None else f"{path}, {where}") for src, where in parts],
                       function, module_name)


def import_notebook(path, function: str, module_name: str):
    """Step 3: a module holding what `function` needs from the notebook at `path` (its frames name the cell).
    Errors while it runs propagate as they are (the caller shows them as the user's frames)."""
    path = Path(path)
    return _run_needed(path, [(cell, f"{path}, code cell {i + 1}") for i, cell in enumerate(code_cells(path))],
                       function, module_name)


def _run_needed(path: Path, parts: list[tuple[str, str]], function: str, module_name: str):
    """A module holding what `function` needs from `parts` ((source, the filename its frames show), in order): the
    kept statements of each part, compiled under its filename (a name that is not the file's own gets the part's
    lines in linecache, for tracebacks) and executed in order; `__obliviate_code__` is the kept code, for the key."""
    module = types.ModuleType(module_name)
    module.__file__ = str(path)
    code = []
    for i, stmts in needed_statements([src for src, _ in parts], function, str(path)):
        src, filename = parts[i]
        if filename != str(path):
            linecache.cache[filename] = (len(src), None, [line + "\n" for line in src.split("\n")], filename)
        tree = ast.Module(body=stmts, type_ignores=[])
        code.append(ast.dump(tree, include_attributes=False))
        exec(compile(tree, filename, "exec"), module.__dict__)
    module.__obliviate_code__ = "\n".join(code).encode()
    return module
