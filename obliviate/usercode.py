"""A user's own code: their Python files imported as modules, and their exceptions shown as their own frames.

Methods (`--method FILE.py[:FUNCTION]`, or a notebook FILE.ipynb[:FUNCTION]) and model factories (`obliviate unlearn --model FILE.py:FACTORY`, in the
driver and in every worker) import a user's file through `import_user_file`. No package imports but errors: a
leaf the registries may use.
"""
from __future__ import annotations

import importlib.util
import os
import sysconfig
import traceback
from pathlib import Path

from .errors import UserError


class UserCodeError(UserError):
    """An exception (or sys.exit) inside a user's method, as one readable block (a UserError: it travels back
    from workers and Ray as its message, and the CLI prints it and exits 2)."""


# frames from these folders are not "the user's own": obliviate, and installed packages and the standard
# library (torch, numpy, ...): a user's traceback shows only the lines they wrote
_LIBS = [sysconfig.get_paths().get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")]
_NOT_USER = tuple({str(Path(d).resolve()) + os.sep for d in [Path(__file__).parent, *filter(None, _LIBS)]})


def _is_user_frame(filename: str) -> bool:
    if filename.startswith("<frozen "):
        return False
    try:
        f = str(Path(filename).resolve())
    except (OSError, ValueError):
        return True
    return not f.startswith(_NOT_USER)


# what torch says when code asks for a GPU the process has none of, or mixes devices
_NO_GPU = ("not compiled with CUDA", "No CUDA GPUs are available", "Found no NVIDIA driver")
_MIXED = "Expected all tensors to be on the same device"


def _device_hint(msg: str) -> str:
    """Kaggle ran every submission on a GPU, so a notebook may name "cuda" outright: say how to run it here."""
    if any(s in msg for s in _NO_GPU):
        return (" (your code asks for a CUDA GPU and this process has none: Kaggle ran on one; write "
                "DEVICE = \"cuda\" if torch.cuda.is_available() else \"cpu\", or run on a GPU with --device cuda)")
    if _MIXED in msg:
        return (" (your code moves tensors to a device the model is not on: move them to "
                "next(net.parameters()).device, or run with --device set to the device your code names)")
    return ""


def user_code_error(what: str, exc: BaseException) -> UserCodeError:
    """`what` (e.g. "method 'sub:unlearning' failed"), the exception's type and message, and the user's own
    frames (file:line, function, the source line); OBLIVIATE_DEBUG=1 appends the full traceback."""
    if isinstance(exc, SystemExit):
        head = (f"{what}: it called sys.exit({exc.code!r}); a method returns (or raises an exception), it does "
                f"not exit the process.")
    else:
        msg = str(exc)
        head = f"{what}: {type(exc).__name__}{': ' + msg if msg else ''}{_device_hint(msg)}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if _is_user_frame(f.filename)]
    if isinstance(exc, SyntaxError) and exc.filename:   # the offending line is not a frame of a syntax error
        frames.append(traceback.FrameSummary(exc.filename, exc.lineno or 0, "<module>", line=exc.text or ""))
    debug = bool(os.environ.get("OBLIVIATE_DEBUG"))
    lines = [head + ("" if debug or not frames else
                     f" (your code's frame{'s' if len(frames) > 1 else ''} below; OBLIVIATE_DEBUG=1 for the full "
                     f"traceback)")]
    for f in frames:
        lines.append(f'  File "{f.filename}", line {f.lineno}, in {f.name}')
        if f.line:
            lines.append(f"    {f.line.strip()}")
    if debug:
        lines.append("full traceback (OBLIVIATE_DEBUG):")
        lines.append("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip())
    return UserCodeError("\n".join(lines))


def import_user_file(path, what: str, module_name: str, function: str | None = None):
    """Execute the user's file `path` as module `module_name` (a notebook, `.ipynb`: only the code `function`
    needs, obliviate/notebook.py; a method's `.py` that fails to import whole: the same, `_needed_code_only`); a
    failure while importing it (any exception, or sys.exit) becomes one UserCodeError naming `what` ("method",
    "model") and the user's own frames."""
    try:
        if Path(path).suffix == ".ipynb":
            from .notebook import import_notebook
            return import_notebook(path, function or "unlearning", module_name)
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except UserError:
        raise
    except (Exception, SystemExit) as e:
        if function is None:
            raise user_code_error(f"{what} file {str(path)!r} failed to import", e) from None
        return _needed_code_only(path, what, function, module_name, e)
    return module


def _needed_code_only(path, what: str, function: str, module_name: str, error: BaseException):
    """A method file that fails to import whole (a Kaggle notebook exported as .py: its magics, data and harness code
    at top level) runs by the notebook's rule: only the top-level code `function` needs (obliviate/notebook.py); the
    module's `__obliviate_note__` says so in one line. Where the file has no such function, the whole file's error
    is shown; where the code the function needs fails, that error is (the one to fix)."""
    from .notebook import import_script
    failed = f"{what} file {str(path)!r} failed to import"
    try:
        module = import_script(path, function, module_name)
    except (UserError, OSError, UnicodeDecodeError):
        raise user_code_error(failed, error) from None
    except (Exception, SystemExit) as e:
        raise user_code_error(failed, e) from None
    if not callable(getattr(module, function, None)):
        raise user_code_error(failed, error) from None
    lines = [f.lineno for f in traceback.extract_tb(error.__traceback__) if Path(f.filename) == Path(path)]
    at = f" at line {lines[-1]}" if lines else ""
    module.__obliviate_note__ = (f"{path} failed to import whole ({type(error).__name__}{at}: {error}); ran only "
                                 f"the top-level code {function} needs, as for a notebook")
    return module
