"""A run's report: the lesson's plots as PNGs and one report.html that opens in any browser.

`write_report` saves every plot of an `Interpretation` into the run folder, copies the run's
LR-finder plot beside them, and writes `report.html` (metrics, the competition's metric among them,
per-class table, confusion matrix, fit history, the resolved training config) and `metrics.json`. The HTML needs no network: styles
are inline and plots are referenced by relative path (or embedded with `embed=True`, for a single
file to send around). Every file is written to a temporary name in the same folder and renamed, so
an interrupted run never leaves a half-written file.

Example:

```python
interp = learn.interpret()
write_report(interp, "runs/2024-01-01", lr_finder_png="runs/2024-01-01/lr_find.png", config=asdict(cfg))
write_report(interp, "runs/2024-01-01", history=learn.history, metric="roc_auc")  # the competition's figure too
```
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import html
import io
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from kit.analysis.interpretation import Interpretation
from kit.checks import check_choice, check_int
from kit.io import atomic_write, atomic_write_json
from kit.metrics import METRICS, score

__all__ = ["write_report", "REPORT_NAME"]

REPORT_NAME = "report.html"
# 100 dpi keeps a 4-image row at ~1200 px: sharp on screen, small on disk.
DPI = 100
# Beyond this many classes, per-class "most correct/incorrect" plots are drawn only for the classes
# with the lowest recall: a 120-breed data set would otherwise produce 240 figures nobody reads.
MAX_CLASS_PLOTS = 10

# Marks images that failed to load and any script error on the page, so a headless browser's
# --dump-dom (or a person) can tell a broken report from a good one.
_STATUS_SCRIPT = """
(function () {
  var status = document.getElementById("kit-status");
  window.addEventListener("load", function () {
    var imgs = document.images, broken = [];
    for (var i = 0; i < imgs.length; i++) {
      if (!imgs[i].complete || imgs[i].naturalWidth === 0) {
        imgs[i].classList.add("broken");
        broken.push(imgs[i].getAttribute("alt"));
      }
    }
    status.setAttribute("data-images", String(imgs.length));
    status.setAttribute("data-broken", String(broken.length));
    status.setAttribute("data-js-errors", String(window.__kitErrors.length));
    var ok = broken.length === 0 && window.__kitErrors.length === 0;
    status.setAttribute("data-status", ok ? "ok" : "broken");
    if (!ok) {
      status.textContent = "Problems: " + broken.length + " image(s) failed to load (" + broken.join(", ") +
        "); script errors: " + window.__kitErrors.join("; ");
    }
  });
})();
"""

_ERROR_HOOK = """
window.__kitErrors = [];
window.addEventListener("error", function (e) {
  if (e.target && e.target.tagName === "IMG") { return; }
  window.__kitErrors.push(String(e.message));
}, true);
"""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1300px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.7em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f0f0f0; }
.figs { display: flex; flex-wrap: wrap; gap: 0 2em; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-weight: 600; margin-bottom: 0.3em; }
img.broken { outline: 3px solid #c00; min-width: 200px; min-height: 50px; }
#kit-status[data-status="broken"] { color: #c00; font-weight: 600; }
code, pre { font-size: 0.9em; }
.note { color: #666; }
"""


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = DPI) -> None:
    """Writes `fig` as a PNG atomically (rendered in memory, then `kit.io.atomic_write`)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    atomic_write(path, buf.getvalue())


def _slug(name: str) -> str:
    """A class name as a safe file-name part ("golden retriever/2" -> "golden_retriever_2")."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")[:40] or "class"


def _fmt(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return "nan" if math.isnan(v) else f"{float(v):.6g}"
    if isinstance(v, (str, Path)):
        return str(v)
    return json.dumps(v, default=str)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _history_rows(
    history: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]],
) -> tuple[list[str], list[list[Any]]]:
    if isinstance(history, Mapping):
        # Keras' History.history: {"loss": [...], "val_loss": [...]} -> one row per epoch.
        n = max((len(v) for v in history.values()), default=0)
        history = [{k: v[i] for k, v in history.items() if i < len(v)} for i in range(n)]
    cols: list[str] = []
    for i, row in enumerate(history):
        if not isinstance(row, Mapping):
            raise TypeError(f"history must be a list of dicts (one per epoch). Received row {i}: {row!r}")
        cols += [k for k in row if k not in cols]
    return cols, [[row.get(k, "") for k in cols] for row in history]


def _config_dict(config: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    if isinstance(config, Mapping):
        return dict(config)
    raise TypeError(f"config must be a dict or a dataclass instance. Received {type(config).__name__}")


def _classes_to_plot(interp: Interpretation, max_class_plots: int) -> list[int]:
    if interp.n_classes <= max_class_plots:
        return list(range(interp.n_classes))
    recall = np.array([row["recall"] for row in interp.per_class()])
    return sorted(np.argsort(recall, kind="stable")[:max_class_plots].tolist())


def write_report(
    interp: Interpretation,
    run_dir: str | Path,
    lr_finder_png: str | Path | None = None,
    config: Mapping[str, Any] | Any | None = None,
    history: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]] | None = None,
    title: str = "kit run report",
    n: int = 4,
    seed: int | None = 0,
    embed: bool = False,
    max_class_plots: int = MAX_CLASS_PLOTS,
    metric: str | None = None,
) -> Path:
    """Writes the plots, `metrics.json` and `report.html` of a run into `run_dir`.

    The PNGs: random correct and incorrect images, most correct and most incorrect per class, the
    most uncertain, both confusion matrices and the top losses, plus `lr_finder.png` when given.

    Example:

    ```python
    path = write_report(learn.interpret(), "runs/latest", config={"arch": "resnet50", "lr": 0.01})
    ```

    Args:
        interp: Interpretation. The validation predictions to report on.
        run_dir: str or Path. The run's folder; created if missing.
        lr_finder_png: str, Path or None. The run's LR-finder plot, copied in as `lr_finder.png`.
        config: dict, dataclass or None. The resolved training config, shown as a table.
        history: list of dicts (one per epoch) or a Keras `History.history` dict, or None.
        title: str. The report's heading.
        n: int. Images per selection plot (the lesson uses 4).
        seed: int or None. Seed of the random correct/incorrect picks, for a reproducible report.
        embed: bool. Embed the plots in the HTML as base64 so it is a single portable file.
        max_class_plots: int. Per-class plots for at most this many classes (lowest recall first).
        metric: str or None. The competition's metric (a key of `kit.metrics.METRICS`): its validation
            figure, from the Interpretation's probabilities, is shown beside accuracy and log loss and
            written to `metrics.json` under its name (with `"metric": name`). A history's rows show
            their `<metric>` column as they show every key.

    Returns:
        Path of `report.html`.
    """
    if not isinstance(interp, Interpretation):
        raise TypeError(f"interp must be an Interpretation. Received {type(interp).__name__}")
    n = check_int("n", n, min=1)
    max_class_plots = check_int("max_class_plots", max_class_plots, min=0)
    config_items = _config_dict(config) if config is not None else None
    history_table = _history_rows(history) if history is not None else None
    extra: tuple[str, float] | None = None  # (name, figure) of a metric the table does not show already
    if metric is not None:
        check_choice("metric", metric, METRICS, prefix="write_report's ")
        if metric not in ("accuracy", "log_loss"):
            extra = (metric, score(metric, interp.y, interp.probs))  # before writing: roc_auc of 3 classes raises
    lr_src = None
    if lr_finder_png is not None:
        lr_src = Path(lr_finder_png)
        if not lr_src.is_file():
            raise FileNotFoundError(
                f"lr_finder_png must be an existing image file. Received lr_finder_png={str(lr_src)!r}"
            )
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    # (file name, caption) of each figure, in the order the report shows them.
    sections: dict[str, list[tuple[str, str]]] = {"Confusion matrix": [], "Learning rate finder": [], "Predictions": []}

    def save(fig: Figure, name: str, caption: str, section: str = "Predictions") -> None:
        save_figure(fig, run_dir / name)
        sections[section].append((name, caption))

    save(interp.plot_confusion_matrix(False), "confusion_matrix.png", "Confusion matrix (counts)", "Confusion matrix")
    save(
        interp.plot_confusion_matrix(True),
        "confusion_matrix_normalized.png",
        "Confusion matrix (normalised by true class)",
        "Confusion matrix",
    )
    if lr_src is not None:
        dest = run_dir / f"lr_finder{lr_src.suffix.lower() or '.png'}"
        if not (dest.exists() and dest.samefile(lr_src)):
            atomic_write(dest, lr_src.read_bytes())
        sections["Learning rate finder"].append((dest.name, "Loss against learning rate (LR range test)"))

    for is_correct, word in ((True, "Correctly"), (False, "Incorrectly")):
        t = f"{word} classified (random)"
        save(
            interp.plot_val_with_title(interp.rand_by_correct(is_correct, n=n, seed=seed), t),
            f"{word.lower()}_random.png",
            t,
        )
    class_idxs = _classes_to_plot(interp, max_class_plots)
    for c in class_idxs:
        name = interp.classes[c]
        for is_correct, word in ((True, "correct"), (False, "incorrect")):
            t = f"Most {word} {name}"
            save(
                interp.plot_val_with_title(interp.most_by_correct(c, is_correct, n=n), t),
                f"most_{word}_{c}_{_slug(name)}.png",
                t,
            )
    save(
        interp.plot_val_with_title(interp.most_uncertain(n=n), "Most uncertain predictions"),
        "most_uncertain.png",
        "Most uncertain predictions",
    )
    save(interp.plot_top_losses(max(n, 9)), "top_losses.png", "Top losses")

    metrics = interp.metrics()
    # Strict JSON like every file of a run: a metric that is NaN (a class with no image) is null.
    atomic_write_json(
        run_dir / "metrics.json",
        {
            **metrics,
            **({"metric": metric} if metric is not None else {}),
            **(dict([extra]) if extra is not None else {}),
            "classes": interp.classes,
            "per_class": interp.per_class(),
            "confusion_matrix": interp.confusion_matrix().astype(int).tolist(),
        },
    )

    def img_src(name: str) -> str:
        if not embed:
            return html.escape(name, quote=True)
        mime = "image/png" if name.endswith(".png") else "image/" + name.rsplit(".", 1)[-1].replace("jpg", "jpeg")
        return f"data:{mime};base64," + base64.b64encode((run_dir / name).read_bytes()).decode("ascii")

    def figures(section: str) -> str:
        return (
            '<div class="figs">'
            + "".join(
                f"<figure><figcaption>{html.escape(cap)}</figcaption>"
                f'<img src="{img_src(name)}" alt="{html.escape(name, quote=True)}"></figure>'
                for name, cap in sections[section]
            )
            + "</div>"
        )

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style><script>{_ERROR_HOOK}</script></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="note">Written {_dt.datetime.now().isoformat(timespec="seconds")} by kit.</p>',
        '<p id="kit-status" data-status="loading"></p>',
        "<h2>Metrics</h2>",
        _table(
            ["metric", "value"],
            [
                ["validation images", metrics["n_images"]],
                ["classes", metrics["n_classes"]],
                ["correct", metrics["n_correct"]],
                ["accuracy", metrics["accuracy"]],
                ["log loss", metrics["log_loss"]],
                *([list(extra)] if extra is not None else []),
            ],
        ),
        *([f'<p class="note">Competition metric: {html.escape(metric)}.</p>'] if metric is not None else []),
        "<h2>Per class</h2>",
        _table(
            ["class", "precision", "recall", "F1", "support"],
            [[r["class"], r["precision"], r["recall"], r["f1"], r["support"]] for r in interp.per_class()],
        ),
        "<h2>Confusion matrix</h2>",
        '<p class="note">Rows: actual class; columns: predicted class.</p>',
        _table(
            ["actual \\ predicted", *interp.classes],
            [[name, *row] for name, row in zip(interp.classes, interp.confusion_matrix().astype(int).tolist())],
        ),
        figures("Confusion matrix"),
    ]
    if sections["Learning rate finder"]:
        parts += ["<h2>Learning rate finder</h2>", figures("Learning rate finder")]
    if history_table is not None:
        cols, rows = history_table
        parts += [
            "<h2>Training history</h2>",
            _table(cols, rows) if rows else '<p class="note">No epochs recorded.</p>',
        ]
    parts += ["<h2>Predictions</h2>"]
    if len(class_idxs) < interp.n_classes:
        parts.append(
            f'<p class="note">Per-class plots show the {len(class_idxs)} classes with the lowest recall '
            f"(of {interp.n_classes}).</p>"
        )
    parts.append(figures("Predictions"))
    if config_items is not None:
        parts += ["<h2>Training configuration</h2>", _table(["setting", "value"], list(config_items.items()))]
    parts += [f"<script>{_STATUS_SCRIPT}</script>", "</body></html>"]

    report = run_dir / REPORT_NAME
    atomic_write(report, "\n".join(parts).encode("utf-8"))
    return report
