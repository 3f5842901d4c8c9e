"""What :func:`layernorm.patch` did: the modules it replaced, by class, and those it left, with why.

:class:`PatchReport` is an ``int``, the number of modules replaced, which is
what ``patch`` returned before it had a report: ``patch(model) == 7``,
``int(report)`` and arithmetic keep working. ``str(report)`` is a summary
for people; ``report.replaced`` and ``report.left`` are for code.
"""

from __future__ import annotations

from collections import Counter
from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple

__all__ = ["PatchReport", "LeftModule", "PatchWarning"]

_NAMES_SHOWN = 3  # per group of left modules in the summary


class PatchWarning(UserWarning):
    """A norm-like module that :func:`layernorm.patch` left as it was; the message says why.

    Silence them with ``warnings.filterwarnings("ignore", category=layernorm.PatchWarning)``;
    the report keeps the same list."""


class LeftModule(NamedTuple):
    """A norm-like module left as it was."""

    name: str  #: its name in the model (``model.get_submodule(name)``); ``""`` for the model itself
    class_name: str
    reason: str


class PatchReport(int):
    """What :func:`layernorm.patch` did; an ``int``, the number of modules replaced.

    Attributes:
        replaced: how many modules of each class were replaced, by class name
            (the original class, e.g. ``{"LlamaRMSNorm": 5}``).
        left: the norm-like modules left as they were, as :class:`LeftModule`
            ``(name, class_name, reason)``.
    """

    replaced: Dict[str, int]
    left: Tuple[LeftModule, ...]

    def __new__(cls, replaced: Optional[Dict[str, int]] = None, left: Iterable[LeftModule] = ()):
        replaced = dict(replaced or {})
        report = super().__new__(cls, sum(replaced.values()))
        report.replaced = replaced
        report.left = tuple(LeftModule(*item) for item in left)
        return report

    def __getnewargs__(self):
        return (self.replaced, self.left)

    def __repr__(self) -> str:
        return f"PatchReport(replaced={self.replaced!r}, left={list(self.left)!r})"

    def __str__(self) -> str:
        counts = ", ".join(f"{name}: {count}" for name, count in self.replaced.items())
        lines = [f"replaced {int(self)} module{'s' * (int(self) != 1)}" + (f" ({counts})" if counts else "")]
        if not self.left:
            lines[0] += "; left no norm-like module"
            return lines[0]
        lines[0] += f"; left {len(self.left)} norm-like module{'s' * (len(self.left) != 1)}:"
        groups: Dict[Tuple[str, str], List[str]] = {}
        for item in self.left:
            groups.setdefault((item.class_name, item.reason), []).append(item.name or "(the model itself)")
        for (class_name, reason), names in groups.items():
            shown = ", ".join(names[:_NAMES_SHOWN])
            more = f" and {len(names) - _NAMES_SHOWN} more" if len(names) > _NAMES_SHOWN else ""
            lines.append(f"  {class_name} x{len(names)}: {reason}")
            lines.append(f"    {shown}{more}")
        return "\n".join(lines)


def class_names(classes: Iterable[type]) -> Dict[type, str]:
    """Short class names, or module-qualified ones where two classes share a short name."""
    classes = list(dict.fromkeys(classes))
    clashes = Counter(c.__name__ for c in classes)
    return {c: c.__name__ if clashes[c.__name__] == 1 else f"{c.__module__}.{c.__qualname__}" for c in classes}
