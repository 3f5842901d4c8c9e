"""Sphinx directive ``package-api``: an autodoc section for every module of a
package, found when the docs are built, so a module added later is documented
without anyone editing the docs::

    .. package-api:: layernorm
       :first: layernorm.functional layernorm.modules
       :exclude: layernorm.__main__

``:first:`` lists the modules to put at the top, in that order; the others
follow in alphabetical order. ``:exclude:`` lists modules to leave out;
private modules (``_name``) and ``__main__`` (it would run when imported) are
always left out.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import List

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.ext.autodoc.mock import mock
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

__all__ = ["PackageAPI", "find_modules", "setup"]


def find_modules(package: str, exclude=()) -> List[str]:
    """The package and all its submodules, by name, without importing them."""
    root = importlib.import_module(package)
    names = [package]
    if hasattr(root, "__path__"):
        # walk_packages imports subpackages to look inside them; the modules
        # themselves are imported later by autodoc, which reports any failure.
        for info in pkgutil.walk_packages(root.__path__, package + ".", onerror=lambda name: None):
            names.append(info.name)
    excluded = set(exclude)
    # Leave out __main__ (importing it runs the program) and private modules.
    return [n for n in names if n not in excluded and not n.rsplit(".", 1)[-1].startswith("_")]


def _documented_elsewhere(name: str, modules: List[str], root: str) -> List[str]:
    """Public names of a package to leave out of its own section.

    - A name that is also one of its submodules (``pkg.f`` both a re-exported
      function and the module ``pkg/f.py``) would be documented twice under one
      name: the function is documented in its module (``pkg.f.f``).
    - A subpackage's re-exports of its submodules' names: each is documented in
      the module that defines it and, if public, at the top of the package;
      a third description of the same object is a duplicate.
    """
    if not any(m.startswith(name + ".") for m in modules):
        return []  # not a package: nothing to clash with
    try:
        module = importlib.import_module(name)
    except Exception:
        return []  # autodoc will report why it cannot be imported
    if not hasattr(module, "__path__"):
        return []
    names = getattr(module, "__all__", [])
    clashes = [n for n in names if f"{name}.{n}" in modules]
    if name != root:
        clashes += [n for n in names if n not in clashes
                    and getattr(getattr(module, n, None), "__module__", name).startswith(name + ".")]
    return clashes


class PackageAPI(SphinxDirective):
    required_arguments = 1
    option_spec = {
        "first": lambda arg: (arg or "").split(),
        "exclude": lambda arg: (arg or "").split(),
        "underline": lambda arg: (arg or "-").strip()[:1],
    }

    def run(self) -> List[nodes.Node]:
        package = self.arguments[0]
        # Import as autodoc will: with the modules of autodoc_mock_imports mocked.
        with mock(self.config.autodoc_mock_imports):
            modules = find_modules(package, self.options.get("exclude", ()))
            clashes = {name: _documented_elsewhere(name, modules, package) for name in modules}
        first = [m for m in self.options.get("first", []) if m in modules]
        ordered = first + sorted(m for m in modules if m not in first)
        underline = self.options.get("underline", "-")

        lines = []
        for name in ordered:
            title = f"``{name}``"
            lines += [title, underline * len(title), "",
                      f".. automodule:: {name}",
                      "   :members:",
                      "   :show-inheritance:"]
            if clashes[name]:
                lines.append("   :exclude-members: " + ", ".join(clashes[name]))
            lines.append("")
        content = StringList()
        source, line = self.get_source_info()
        for offset, text in enumerate(lines):
            content.append(text, f"{source}:package-api", offset)
        holder = nodes.section()
        holder.document = self.state.document
        nested_parse_with_titles(self.state, content, holder)
        return holder.children


def setup(app):
    app.setup_extension("sphinx.ext.autodoc")
    app.add_directive("package-api", PackageAPI)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
