"""Links the docs make without a network at build time.

* **PyTorch's documentation.** A cross-reference to a PyTorch name that no page
  of these docs defines -- ``:class:`torch.nn.LayerNorm``` in a docstring, the
  "Bases: torch.nn.LayerNorm" line autodoc writes, a ``Tensor`` type hint --
  becomes a link to that name's page in PyTorch's documentation, instead of
  plain text. (Intersphinx would download PyTorch's inventory on every build;
  the names used here are few and their pages follow one pattern.) A name
  this module does not know stays unresolved, as before, never a broken link.

* **The experiments' sections.** ``experiments.md`` gives each experiment a
  heading that starts with its name (``### small-batch: ...``). Each such
  section gets the label ``experiment-<name>`` (``experiment-small-batch``), so
  any page links to it with ``:ref:`experiment-small-batch``` whatever the
  rest of its heading says; a heading renamed away from its experiment's name
  makes those links fail the build (``-W``) rather than silently point
  nowhere.
"""

from __future__ import annotations

import re
from typing import Optional

from docutils import nodes
from sphinx.transforms import SphinxTransform

__all__ = ["pytorch_url", "setup"]

PYTORCH_DOCS = "https://docs.pytorch.org/docs/stable/"

# Names whose page is not generated/<name>.html.
_PYTORCH_PAGES = {
    "torch.Tensor": "tensors.html#torch.Tensor",
    "torch.Size": "size.html#torch.Size",
    "torch.dtype": "tensor_attributes.html#torch.dtype",
    "torch.device": "tensor_attributes.html#torch.device",
    "torch.autograd.Function": "autograd.html#torch.autograd.Function",
    "torch.autograd.function.Function": "autograd.html#torch.autograd.Function",
}
# torch.nn.LayerNorm, torch.nn.modules.normalization.LayerNorm (where autodoc finds the class),
# torch.nn.functional.layer_norm, torch.func.vmap, torch.compile: one generated page each.
_NN_CLASS = re.compile(r"^torch\.nn\.(?:modules\.\w+\.)?([A-Z]\w*)$")
_GENERATED = re.compile(r"^torch\.(?:nn\.functional\.\w+|func\.\w+|compile)$")

EXPERIMENT_DOC = "experiments"
# "small-batch: LayerNorm trains at batch sizes where BatchNorm cannot" -> small-batch
_EXPERIMENT_HEADING = re.compile(r"^([a-z][a-z0-9]*(?:-[a-z0-9]+)*): ")


def pytorch_url(target: str) -> Optional[str]:
    """The address of ``target`` in PyTorch's documentation, or None."""
    target = target.lstrip("~.")
    if target in ("Tensor",):
        target = "torch.Tensor"
    if target in _PYTORCH_PAGES:
        return PYTORCH_DOCS + _PYTORCH_PAGES[target]
    match = _NN_CLASS.match(target)
    if match:
        return f"{PYTORCH_DOCS}generated/torch.nn.{match.group(1)}.html"
    if _GENERATED.match(target):
        return f"{PYTORCH_DOCS}generated/{target}.html"
    return None


def _link_to_pytorch(app, env, node, contnode):
    """``missing-reference``: a Python name of PyTorch's, linked to its documentation."""
    if node.get("refdomain") != "py":
        return None
    url = pytorch_url(node.get("reftarget", ""))
    if url is None:
        return None
    link = nodes.reference("", "", internal=False, refuri=url, classes=["pytorch-docs"])
    link += contnode
    return link


class ExperimentLabels(SphinxTransform):
    """``experiment-<name>`` on each experiment's section of experiments.md."""

    default_priority = 840  # before SphinxDomains (850) collects the labels

    def apply(self, **kwargs) -> None:
        if self.env.docname != EXPERIMENT_DOC:
            return
        document = self.document
        for section in document.findall(nodes.section):
            if not section.children or not isinstance(section[0], nodes.title):
                continue
            match = _EXPERIMENT_HEADING.match(section[0].astext())
            if not match:
                continue
            label = f"experiment-{match.group(1)}"
            anchor = nodes.make_id(label)
            if label in document.nameids or anchor in document.ids:
                continue
            # What ``(experiment-small-batch)=`` above the heading would have done.
            section["ids"].append(anchor)
            section["names"].append(label)
            document.ids[anchor] = section
            document.nameids[label] = anchor
            document.nametypes[label] = True


def setup(app):
    app.connect("missing-reference", _link_to_pytorch)
    app.add_transform(ExperimentLabels)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
