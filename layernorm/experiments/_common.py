"""What every experiment shares: seeding, atomic files, plots, progress, data.

Kept small on purpose: each experiment file reads top to bottom on its own and
takes only plumbing from here.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import random
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
import torch

from ..cli.files import write_atomic


# ---- reproducibility -------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Same command and seed -> same numbers on a CPU.

    Python, NumPy and torch are seeded; torch is asked for deterministic
    algorithms (warn only: a few CUDA ops have no deterministic version).
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def resolve_device(device: Optional[str]) -> str:
    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA GPU is available")
    return device


# ---- run sizes --------------------------------------------------------------

# smoke: seconds, for tests (no evidence); quick: about a minute, small enough
# for `layernorm tour` yet large enough that a true claim shows; default: the
# documented runs of docs/experiments.md.
SIZES = ("smoke", "quick", "default")
SIZE_NOTES = {
    "smoke": "smoke size: too small to be evidence",
    "quick": "quick size",
    "default": "",
}


def verdict_note(size: str, seeds: Sequence[int]) -> str:
    """What the verdict line ends with: its size unless default, and how many
    seeds stand behind each figure (one seed has no spread to judge by)."""
    if len(seeds) == 1:
        counted = f"one seed ({seeds[0]}): no spread"
    else:
        counted = f"{len(seeds)} seeds ({seeds[0]}-{seeds[-1]}): mean [min, max]"
    return " (" + ", ".join(part for part in (SIZE_NOTES[size], counted) if part) + ")"


def resolve_size(size: str) -> str:
    """``size`` itself, once checked to be one of :data:`SIZES`."""
    if size not in SIZES:
        raise ValueError(f"unknown experiment size {size!r}; choose one of {', '.join(SIZES)}")
    return size


def machine() -> str:
    """One line naming where the numbers came from."""
    return (f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), Python {platform.python_version()}")


# ---- seeds, spread and the verdict rule ----------------------------------------


def seed_list(first: int, count: int) -> List[int]:
    """``count`` consecutive seeds from ``first``: --seed 5 --seeds 3 runs 5, 6 and 7."""
    if count < 1:
        raise ValueError(f"--seeds {count}: at least one seed is needed")
    return list(range(first, first + count))


def run_seeds(seed: int, count: Optional[int], cfg: Dict[str, object]) -> List[int]:
    """The seeds a run trains: ``count`` of them from ``seed``, or the size's own count."""
    return seed_list(seed, int(count if count is not None else cfg["seeds"]))


class Spread:
    """One measure over the seeds: its mean, its range (min to max) and every value.

    NaN marks a seed that could not train or diverged; it makes the mean, min
    and max NaN too, so that a broken seed is never averaged away.
    """

    def __init__(self, values: Iterable[float]):
        self.values = [float(v) for v in values]
        if not self.values:
            raise ValueError("a spread needs at least one value")

    @property
    def broken(self) -> bool:
        return any(not math.isfinite(v) for v in self.values)

    @property
    def mean(self) -> float:
        return math.nan if self.broken else sum(self.values) / len(self.values)

    @property
    def min(self) -> float:
        return math.nan if self.broken else min(self.values)

    @property
    def max(self) -> float:
        return math.nan if self.broken else max(self.values)

    def text(self, fmt: str = ".3f", scale: float = 1.0, unit: str = "") -> str:
        """"2.360" for one seed, "2.360 [2.341, 2.377]" (mean [min, max]) for several."""
        if len(self.values) == 1 or self.broken:
            shown = ", ".join(f"{scale * v:{fmt}}" for v in self.values)
            return shown + unit if len(self.values) == 1 else f"[{shown}]{unit}"
        return f"{scale * self.mean:{fmt}}{unit} [{scale * self.min:{fmt}}, {scale * self.max:{fmt}}]"

    def as_dict(self) -> Dict[str, object]:
        return {"mean": self.mean, "min": self.min, "max": self.max, "per_seed": list(self.values)}


def separated(better: Sequence[float], worse: Sequence[float], margin: float = 0.0,
              higher_is_better: bool = True) -> bool:
    """The verdict rule: the claimed-better arm's *worst* seed beats the other
    arm's *best* seed by more than ``margin`` (their ranges do not overlap).

    How often chance alone passes it, with three seeds an arm: if the two
    arms were independent draws from one distribution, 1 in 20 (one of the
    C(6, 3) = 20 ways to split six values). The arms of these experiments
    share each seed's data order, so the honest bound is the paired one:
    swapping the two arms' labels within each seed gives 2**3 = 8 orderings,
    of which at most one passes - at most 1 in 8. A NaN (could not train,
    diverged) counts as the worst result.
    """
    sign = 1.0 if higher_is_better else -1.0
    score = lambda v: sign * v if math.isfinite(v) else -math.inf  # noqa: E731 - higher is better
    return min(score(v) for v in better) > max(score(v) for v in worse) + margin


# ---- files, written whole or not at all (write_atomic) -----------------------


def write_csv(path: Path, rows: Sequence[Dict[str, object]]) -> None:
    """Rows of dicts -> CSV; the columns are the union of the keys, in order of first appearance."""
    fields: List[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(v) for k, v in row.items()})
    write_atomic(path, buf.getvalue().encode())


def _fmt(v: object) -> object:
    return f"{v:.6g}" if isinstance(v, float) else v


def _json_safe(obj: object) -> object:
    """NaN and inf are not JSON: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def write_json(path: Path, obj: object) -> None:
    write_atomic(path, (json.dumps(_json_safe(obj), indent=2) + "\n").encode())


def save_figure(fig, path: Path) -> None:
    """Save a matplotlib figure as a small PNG, atomically, and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    write_atomic(path, buf.getvalue())


def pyplot():
    """matplotlib's pyplot on the Agg backend (no screen needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_spread(ax, xs: Sequence[float], spreads: Sequence["Spread"], label: str, scale: float = 1.0,
                **style) -> None:
    """The mean over seeds as a line, the min-max range as a band around it.

    Points where a seed broke (NaN) are left out of the line and the band.
    With one seed there is no band, only the line."""
    kept = [(x, s) for x, s in zip(xs, spreads) if not s.broken]
    if not kept:
        return
    x = [x for x, _ in kept]
    (line,) = ax.plot(x, [scale * s.mean for _, s in kept], label=label, **style)
    if any(len(s.values) > 1 for _, s in kept):
        ax.fill_between(x, [scale * s.min for _, s in kept], [scale * s.max for _, s in kept],
                        color=line.get_color(), alpha=0.2, lw=0)


def seeds_caption(seeds: Sequence[int]) -> str:
    """What a plot's band means, for its title."""
    if len(seeds) == 1:
        return f"one seed ({seeds[0]})"
    return f"mean of {len(seeds)} seeds, band: min to max"


# ---- progress and the end of a run ------------------------------------------


def progress(iterable: Iterable = None, total: Optional[int] = None, desc: str = ""):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True, mininterval=0.5)


class Timer:
    def __init__(self):
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start


def finish(name: str, out: Path, rows: Sequence[Dict[str, object]], summary: Dict[str, object],
           verdict: str, args: Dict[str, object], timer: Timer) -> Dict[str, object]:
    """Write metrics.csv and summary.json, print the verdict line, return the summary.

    The verdict line ends by naming its size unless it is the default (a
    smoke or quick verdict must not be read as the documented run's) and its
    seeds (a one-seed verdict has no spread behind it).
    """
    size = args.get("size") or ("smoke" if args.get("smoke") else "default")
    verdict += verdict_note(size, args.get("seeds") or [args.get("seed", 0)])
    summary = {
        "experiment": name,
        "verdict": verdict,
        **summary,
        "args": args,
        "seconds": round(timer.seconds, 1),
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    write_csv(out / "metrics.csv", rows)
    write_json(out / "summary.json", summary)
    print(f"wrote {out / 'metrics.csv'}, {out / 'summary.json'} and the plots ({timer.seconds:.0f} s)")
    print(f"VERDICT {name}: {verdict}", flush=True)
    return summary


# ---- data ------------------------------------------------------------------


def mnist1d(num_samples: int = 5000) -> Dict[str, torch.Tensor]:
    """MNIST-1D (Greydanus, 2020), generated locally by the ``mnist1d`` package
    (its fixed seed 42), as float32/int64 tensors; 80% train, 20% test.

    The generator uses NumPy's global random state; it is saved and restored
    so the experiment's own seeding is untouched.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    state = np.random.get_state()
    data_args = get_dataset_args()
    data_args.num_samples = num_samples
    data = make_dataset(data_args)
    np.random.set_state(state)
    return {
        "x": torch.tensor(data["x"], dtype=torch.float32),
        "y": torch.tensor(data["y"], dtype=torch.int64),
        "x_test": torch.tensor(data["x_test"], dtype=torch.float32),
        "y_test": torch.tensor(data["y_test"], dtype=torch.int64),
    }


# Standard-library modules whose docstrings make the default text corpus: English
# prose about programming, present wherever Python (and so this package) runs.
STDLIB_MODULES = (
    "abc", "argparse", "ast", "asyncio", "base64", "bisect", "calendar", "cmd", "codecs",
    "collections", "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime",
    "decimal", "difflib", "doctest", "email", "enum", "fileinput", "fnmatch", "fractions",
    "ftplib", "functools", "getopt", "gettext", "glob", "gzip", "hashlib", "heapq", "hmac",
    "html", "http.client", "http.server", "imaplib", "inspect", "io", "ipaddress", "itertools",
    "json", "logging", "mailbox", "math", "mimetypes", "multiprocessing", "numbers",
    "operator", "optparse", "os", "pathlib", "pickle", "pkgutil", "platform", "poplib",
    "pprint", "pydoc", "queue", "random", "re", "sched", "secrets", "selectors", "shelve",
    "shlex", "shutil", "smtplib", "socket", "socketserver", "sqlite3", "ssl", "statistics",
    "string", "struct", "subprocess", "tarfile", "tempfile", "textwrap", "threading",
    "timeit", "tokenize", "trace", "traceback", "turtle", "typing", "unittest", "urllib.parse",
    "urllib.request", "uuid", "warnings", "wave", "weakref", "xml.dom.minidom", "zipfile",
)


def stdlib_docstrings() -> str:
    """The docstrings of the standard-library modules above, their classes,
    functions and methods, in a fixed order; ASCII only."""
    import importlib
    import inspect
    import warnings

    seen, parts = set(), []

    def add(obj) -> None:
        doc = inspect.getdoc(obj)
        if doc and id(doc) not in seen and len(doc) > 40:
            seen.add(id(doc))
            parts.append(doc)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # importing old modules may warn about deprecations
        for name in STDLIB_MODULES:
            try:
                module = importlib.import_module(name)
            except Exception:  # a module missing from a trimmed Python: skip it
                continue
            add(module)
            for attr, obj in sorted(vars(module).items()):
                if attr.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                    continue
                add(obj)
                if inspect.isclass(obj):
                    for _, member in sorted(vars(obj).items()):
                        if inspect.isfunction(member):
                            add(member)
    text = "\n\n".join(parts)
    return text.encode("ascii", "ignore").decode()


def load_text(path: Optional[Path]) -> tuple:
    """The corpus as one string, and where it came from."""
    if path is not None:
        return Path(path).read_text(encoding="utf-8", errors="replace"), str(path)
    return stdlib_docstrings(), f"docstrings of {len(STDLIB_MODULES)} Python {platform.python_version()} standard-library modules"


class CharData:
    """Characters -> ids; the first 90% for training, the last 10% held out."""

    def __init__(self, text: str):
        self.chars = sorted(set(text))
        self.vocab_size = len(self.chars)
        index = {c: i for i, c in enumerate(self.chars)}
        ids = torch.tensor([index[c] for c in text], dtype=torch.int64)
        n = int(0.9 * len(ids))
        self.train, self.val = ids[:n], ids[n:]

    def batch(self, split: str, batch_size: int, seq_len: int, generator: torch.Generator):
        """Random windows: inputs and the next character of each position."""
        data = self.train if split == "train" else self.val
        starts = torch.randint(len(data) - seq_len - 1, (batch_size,), generator=generator)
        x = torch.stack([data[s:s + seq_len] for s in starts.tolist()])
        y = torch.stack([data[s + 1:s + seq_len + 1] for s in starts.tolist()])
        return x, y

    def val_batches(self, n: int, batch_size: int, seq_len: int, seed: int = 1234):
        """A fixed held-out set: the same windows every evaluation."""
        g = torch.Generator().manual_seed(seed)
        return [self.batch("val", batch_size, seq_len, g) for _ in range(n)]


# ---- the MLP of the MNIST-1D experiments -----------------------------------

NORMS = ("batchnorm", "layernorm", "none")
LABELS = {"batchnorm": "BatchNorm", "layernorm": "LayerNorm", "none": "no normalization",
          "syncbatchnorm": "synced BatchNorm"}


def make_norm(kind: str, width: int) -> torch.nn.Module:
    from layernorm import LayerNorm

    if kind == "layernorm":
        return LayerNorm(width)
    if kind == "batchnorm":
        return torch.nn.BatchNorm1d(width)
    if kind == "none":
        return torch.nn.Identity()
    raise ValueError(f"unknown normalization {kind!r}")


def mlp(norm: str, d_in: int = 40, width: int = 128, depth: int = 2, classes: int = 10,
        make=make_norm) -> torch.nn.Sequential:
    """(Linear -> norm -> ReLU) x depth -> Linear. The linear layers before a
    normalization have no bias: the norm's own bias takes its place."""
    layers, d = [], d_in
    for _ in range(depth):
        layers += [torch.nn.Linear(d, width, bias=norm == "none"), make(norm, width), torch.nn.ReLU()]
        d = width
    layers.append(torch.nn.Linear(d, classes))
    return torch.nn.Sequential(*layers)


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    """Accuracy in eval mode, in fixed batches."""
    model.eval()
    correct = sum((model(x[i:i + batch_size]).argmax(-1) == y[i:i + batch_size]).sum().item()
                  for i in range(0, len(x), batch_size))
    return correct / len(x)
