"""Importing the `module:function` of a factory source, with errors that name what to fix.

Modules are found as Python finds them, among installed packages and in the folders on
PYTHONPATH (sys.path). modelconv adds no folder to sys.path, not even the spec file's.
"""

from __future__ import annotations

import importlib
import traceback
from typing import Callable

from ..errors import InvalidSpec


def import_factory(entrypoint: str, field: str) -> Callable:
    """Import `module:function` and return the function.

    Raises `InvalidSpec` at `field` when the module is not found, when importing it raises
    (a SyntaxError, or any exception from its top-level code), or when it has no such
    function.
    """
    module_name, _, function_name = entrypoint.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise InvalidSpec(field, _not_found_message(module_name, error)) from None
    except SyntaxError as error:
        location = f"{error.filename}, line {error.lineno}"
        raise InvalidSpec(
            field,
            f"cannot import {module_name!r}: SyntaxError in {location}: {error.msg};"
            " fix the module's code",
        ) from None
    except Exception as error:  # any error from the module's top-level code
        raise InvalidSpec(
            field,
            f"cannot import {module_name!r}: {type(error).__name__}: {_first_line(error)}"
            f" (raised at {_raising_line(error)}); fix the module's code or install what it"
            " imports",
        ) from None
    try:
        return getattr(module, function_name)
    except AttributeError:
        raise InvalidSpec(field, f"module {module_name!r} has no {function_name!r}") from None


def _not_found_message(module_name: str, error: ModuleNotFoundError) -> str:
    missing = error.name or ""
    package = module_name.split(".")[0]
    if missing == package:
        # The entrypoint's own module, or the package around it, is not on the import path.
        contents = f"{package}.py" if package == module_name else f"the package {package}"
        return (
            f"cannot import {module_name!r}: {error}. Python imports factory modules from"
            " installed packages and from the folders on PYTHONPATH, not from the spec file's"
            " folder. Install the module, or run with PYTHONPATH set to the folder that"
            f" contains {contents}, e.g. `PYTHONPATH=. modelconv run FILE.yaml`"
        )
    if module_name == missing or module_name.startswith(f"{missing}."):
        return f"cannot import {module_name!r}: {error}; check the module path in the entrypoint"
    # The module was found, but an import inside it failed.
    remedy = f"install {missing.split('.')[0]!r} or fix the import" if missing else "fix the import"
    return (
        f"cannot import {module_name!r}: ModuleNotFoundError: {error} (raised at"
        f" {_raising_line(error)}); {remedy}"
    )


def _raising_line(error: BaseException) -> str:
    """Return "FILE, line N" of the innermost frame outside the import machinery."""
    frames = [
        frame for frame in traceback.extract_tb(error.__traceback__)
        if not frame.filename.startswith("<frozen ")
    ]
    if not frames:
        return "an unknown line"
    return f"{frames[-1].filename}, line {frames[-1].lineno}"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__
