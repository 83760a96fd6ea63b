"""Fails, listing them, for public functions and classes whose docstring does not name every parameter.

griffe (mkdocstrings) warns about an ``Args:`` entry that names no parameter (``warn_unknown_params`` in
mkdocs.yml) but has no option to warn about a parameter the docstring leaves out; this script does. For every
public function (and class with its own ``__init__``) of the public API it checks that the docstring has an
``Args:`` section with one entry per signature parameter and none naming something else (``*args``/``**kwargs``
may be written with or without their stars; grouped entries such as ``b1, b2: ...`` count as missing), and
that a ``NamedTuple`` or dataclass has an ``Attributes:`` entry per field.

    python docs/check_docstrings.py        # exit status 1 and one line per problem when something is missing
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODULES = (
    "normopt",
    "normopt.layouts",
    "normopt.norms",
    "normopt.polar",
    "normopt.init",
    "normopt.sharding",
    "normopt.dims",
    "normopt.partition",
    "normopt.transforms",
)
ENTRY = re.compile(r"^(\*{0,2}\w+)\s*(\([^)]*\))?\s*:")


def public_objects() -> Iterator[tuple[str, object]]:
    """``(qualified name, object)`` of every public function and class of :data:`MODULES`, each once."""
    seen: set[int] = set()
    for name in MODULES:
        module = importlib.import_module(name)
        names = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
        for attr in names:
            obj = getattr(module, attr)
            if not (inspect.isfunction(obj) or inspect.isclass(obj)) or id(obj) in seen:
                continue
            if not getattr(obj, "__module__", "").startswith("normopt"):
                continue  # re-exported from jax/optax/typing
            if not hasattr(module, "__all__") and obj.__module__ != name:
                continue  # a helper the module imports, not its own API
            seen.add(id(obj))
            yield f"{obj.__module__}.{obj.__qualname__}", obj


def section(doc: str, title: str) -> list[str] | None:
    """The entry names of the Google-style section ``title`` of ``doc`` (None without one)."""
    lines = inspect.cleandoc(doc).splitlines()
    for i, line in enumerate(lines):
        if line.strip() == f"{title}:":
            indent = len(line) - len(line.lstrip())
            body = []
            for item in lines[i + 1 :]:
                if item.strip() and len(item) - len(item.lstrip()) <= indent:
                    break
                body.append(item)
            inner = min((len(b) - len(b.lstrip()) for b in body if b.strip()), default=0)
            return [
                m.group(1).lstrip("*")
                for b in body
                if b[:inner].isspace() or not inner
                if len(b) - len(b.lstrip()) == inner and (m := ENTRY.match(b.strip()))
            ]
    return None


def problems() -> list[str]:
    """One line per public object whose docstring misses a parameter (or has no docstring)."""
    out = []
    for name, obj in public_objects():
        doc = inspect.getdoc(obj) if inspect.isfunction(obj) else obj.__doc__
        if not doc:
            out.append(f"{name}: no docstring")
            continue
        if inspect.isclass(obj) and "_fields" in vars(obj):  # NamedTuple: its fields are its parameters
            wanted, title = list(obj._fields), "Attributes"
        elif inspect.isclass(obj):
            if "__init__" not in vars(obj):
                continue
            wanted = list(inspect.signature(obj.__init__).parameters)[1:]
            title = "Attributes" if "__dataclass_fields__" in vars(obj) else "Args"
        else:
            wanted, title = list(inspect.signature(obj).parameters), "Args"
        if not wanted:
            continue
        named = section(doc, title)
        if named is None:
            out.append(f"{name}: no {title}: section (parameters {', '.join(wanted)})")
            continue
        missing = [p for p in wanted if p not in named]
        unknown = [p for p in named if p not in wanted]
        if missing:
            out.append(f"{name}: {title}: misses {', '.join(missing)}")
        if unknown:
            out.append(f"{name}: {title}: names no parameter {', '.join(unknown)}")
    return out


def main() -> int:
    found = problems()
    for line in found:
        print(line)
    print(f"{len(found)} public objects with undocumented parameters" if found else "every parameter is documented")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
