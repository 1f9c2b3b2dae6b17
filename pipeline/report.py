"""A self-contained HTML report of a run: curves, confusion matrices, per-class accuracy, budget,
architecture, distillation terms over time and validation images the student gets wrong.

Plots are matplotlib PNGs written beside the report and embedded in it (base64), so the page
works when copied anywhere.
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from .atomic import write_bytes, write_text


def _fig_png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curves_png(metrics: dict[str, pd.DataFrame]) -> bytes:
    """Validation accuracy and each model's training cross-entropy per epoch (like with like: the student's
    distillation terms are plotted on their own, by ``terms_png``)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for name, df in metrics.items():
        axes[0].plot(df["epoch"], df["val_acc"], marker=".", label=name)
        if "train_ce" in df:
            axes[1].plot(df["epoch"], df["train_ce"], marker=".", label=f"{name} CE")
    axes[0].set(title="validation accuracy", xlabel="epoch", ylabel="top-1 accuracy")
    axes[1].set(title="training cross-entropy with the labels", xlabel="epoch", ylabel="CE (nats)")
    for a in axes:
        a.grid(alpha=0.3)
        a.legend()
    return _fig_png(fig)


def terms_png(df: pd.DataFrame, weights: dict[str, float]) -> Optional[bytes]:
    """Each loss term of the student (``train_<term>`` columns, unweighted as the loss functions return
    them) over epochs, on a log axis with plain tick labels; the legend gives each term's weight."""
    cols = [c for c in df.columns if c.startswith("train_") and c != "train_loss"]
    if not cols:
        return None
    plt = _plt()
    from matplotlib.ticker import LogFormatter

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for c in cols:
        name = c[len("train_"):]
        w = weights.get(name)
        ax.plot(df["epoch"], df[c], marker=".", label=f"{name} (weight {w:g})" if w is not None else name)
    ax.set(title="student loss terms, unweighted (total = sum of weight x term)", xlabel="epoch",
           ylabel="term value (log scale)", yscale="log")
    ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _fig_png(fig)


def confusion_png(cm: np.ndarray, names: list[str], title: str) -> bytes:
    """Two panels: counts, and rows normalised to recall; each with a colour bar and every cell labelled."""
    plt = _plt()
    k = len(names)
    norm = cm / np.maximum(1, cm.sum(1, keepdims=True))
    side = max(4.0, 0.45 * k + 2)
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 1.5, side))
    for ax, data, sub, fmt in ((axes[0], cm, "counts", "{:d}"), (axes[1], norm, "share of each true class", "{:.2f}")):
        im = ax.imshow(data, cmap="Blues", vmin=0, vmax=data.max() if data.max() > 0 else 1)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        ax.set(title=f"{title}: {sub}", xlabel="predicted", ylabel="true", xticks=range(k), yticks=range(k))
        ax.set_xticklabels(names, rotation=90, fontsize=8)
        ax.set_yticklabels(names, fontsize=8)
        size = 9 if k <= 12 else 6
        for i in range(k):
            for j in range(k):
                v = data[i, j]
                ax.text(j, i, fmt.format(int(v) if fmt == "{:d}" else v), ha="center", va="center", fontsize=size,
                        color="white" if v > data.max() / 2 else "black")
    fig.tight_layout()
    return _fig_png(fig)


def mistakes_png(images: np.ndarray, true: list[str], pred: list[str]) -> bytes:
    plt = _plt()
    n = len(images)
    fig, axes = plt.subplots(1, max(1, n), figsize=(1.9 * max(1, n), 2.3))
    axes = np.atleast_1d(axes)
    for a, img, t, p in zip(axes, images, true, pred):
        a.imshow(img)
        a.set_title(f"true {t}\npred {p}", fontsize=7)
        a.axis("off")
    return _fig_png(fig)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points (cost, accuracy) that no other point beats on both (lower cost, higher accuracy)."""
    front = []
    for i, (c, a) in enumerate(points):
        if not any((c2 <= c and a2 >= a) and (c2 < c or a2 > a) for j, (c2, a2) in enumerate(points) if j != i):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def sweep_sections(run_dir: Path) -> tuple[str, dict[str, bytes]]:
    """HTML and PNGs for every sweep of the run (``runs/<name>/sweeps/<study>/journal.log``): the trial table,
    validation accuracy against MACs with the Pareto front, and Optuna's parameter importances."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    parts, pngs = [], {}
    for journal in sorted((run_dir / "sweeps").glob("*/journal.log")):
        storage = JournalStorage(JournalFileBackend(str(journal)))
        for name in optuna.get_all_study_names(storage):
            study = optuna.load_study(study_name=name, storage=storage)
            trials = study.get_trials(deepcopy=False)
            rows = [{"trial": t.number, "state": t.state.name.lower(),
                     "val_acc": round(t.user_attrs["val_acc"], 4) if t.user_attrs.get("val_acc") is not None else None,
                     "params": t.user_attrs.get("params"),
                     "MMACs": round(t.user_attrs["macs"] / 1e6, 2) if t.user_attrs.get("macs") else None,
                     **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in t.params.items()},
                     "note": (t.user_attrs.get("pruned_reason") or t.user_attrs.get("failed_reason") or "")[:160]}
                    for t in trials]
            rows.sort(key=lambda r: -(r["val_acc"] or -1))
            done = [t for t in trials if t.state == TrialState.COMPLETE and t.user_attrs.get("macs")]
            img = ""
            if done:
                plt = _plt()
                pts = [(t.user_attrs["macs"] / 1e6, t.user_attrs["val_acc"]) for t in done]
                front = pareto_front(pts)
                fig, ax = plt.subplots(figsize=(6, 3.8))
                ax.scatter([p[0] for p in pts], [p[1] for p in pts], label="trials")
                ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "r.-", label="Pareto front")
                for t, (c, a) in zip(done, pts):
                    ax.annotate(str(t.number), (c, a), fontsize=7, xytext=(3, 3), textcoords="offset points")
                ax.set(title=f"sweep {name}: accuracy vs cost", xlabel="MMACs per image", ylabel="validation accuracy")
                ax.grid(alpha=0.3)
                ax.legend()
                key = f"sweep_{name}"
                pngs[key] = _fig_png(fig)
                img = _img(pngs[key], f"sweep {name}", "sweep")
            importance = ""
            if len(study.directions) == 1 and len(done) >= 3:
                try:
                    imp = optuna.importance.get_param_importances(study)
                    importance = "<p>Parameter importance (Optuna, fANOVA): " + ", ".join(
                        f"{html.escape(k)} {v:.2f}" for k, v in imp.items()) + "</p>"
                except (RuntimeError, ValueError) as exc:
                    importance = f"<p>Parameter importance: not available ({html.escape(str(exc))})</p>"
            df = pd.DataFrame(rows)
            df.columns = [c.replace(".", ".\u200b") for c in df.columns]  # long key headers may wrap at their dots
            table = df.to_html(index=False, classes="sweep", border=0, na_rep="")
            parts.append(f"<h3>Study <code>{html.escape(name)}</code> ({len(trials)} trials)</h3>{img}{importance}{table}")
    return ("<h2>Sweeps</h2>" + "".join(parts)) if parts else "", pngs


def _relative_paths(text: str) -> str:
    """Machine paths inside the working directory shown relative to it (``runs/x/...`` rather than
    ``/home/.../runs/x``)."""
    return text.replace(str(Path.cwd().resolve()) + "/", "")


def _img(png: bytes, alt: str, cls: str) -> str:
    return f'<img class="{cls}" alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _interval(section: Any) -> str:
    """A stage's 95% validation-accuracy interval as ``[low, high] (n images)``, ``-`` when not recorded."""
    from .confidence import interval_of

    ci = interval_of(section)
    if ci is None:
        return "-"
    n = section.get("val_images")
    return f"[{ci[0]:.4f}, {ci[1]:.4f}]" + (f" ({n} images)" if n else "")


def build_report(run_dir: Path, *, class_names: list[str], val_labels: np.ndarray, teacher_logits: Optional[np.ndarray],
                 student_logits: np.ndarray, val_images: np.ndarray, params: int, budget: int, arch: str,
                 summary: dict[str, Any]) -> Path:
    """Write ``run_dir/report.html`` and its PNGs; returns the HTML path."""
    from sklearn.metrics import confusion_matrix

    out = run_dir / "report"
    metrics = {s: pd.read_csv(run_dir / s / "metrics.csv") for s in ("teacher", "student")
               if (run_dir / s / "metrics.csv").is_file()}
    pngs: dict[str, bytes] = {}
    if metrics:
        pngs["curves"] = curves_png(metrics)
    weights = {}
    for i, t in enumerate(summary.get("student", {}).get("losses", [])):
        weights[t["name"] if t["name"] not in weights else f"{t['name']}_{i}"] = float(t.get("weight", 1.0))
    if "student" in metrics and (t := terms_png(metrics["student"], weights)) is not None:
        pngs["terms"] = t
    k = len(class_names)
    s_pred = student_logits.argmax(1)
    cm_s = confusion_matrix(val_labels, s_pred, labels=range(k))
    pngs["confusion_student"] = confusion_png(cm_s, class_names, "student (validation)")
    rows = []
    cm_t = None
    if teacher_logits is not None:
        cm_t = confusion_matrix(val_labels, teacher_logits.argmax(1), labels=range(k))
        pngs["confusion_teacher"] = confusion_png(cm_t, class_names, "teacher (validation)")
    for c in range(k):
        n = max(1, cm_s[c].sum())
        rows.append({"class": class_names[c], "images": int(cm_s[c].sum()),
                     "teacher_acc": f"{cm_t[c, c] / max(1, cm_t[c].sum()):.3f}" if cm_t is not None else "-",
                     "student_acc": f"{cm_s[c, c] / n:.3f}"})
    wrong_all = np.flatnonzero(s_pred != val_labels)
    # one mistake per true class first, so the strip is not all from class 0
    firsts = [int(wrong_all[val_labels[wrong_all] == c][0]) for c in range(k) if (val_labels[wrong_all] == c).any()]
    wrong = np.array((firsts + [int(i) for i in wrong_all if i not in firsts])[:8], dtype=int)
    if len(wrong):
        pngs["mistakes"] = mistakes_png(val_images[wrong], [class_names[val_labels[i]] for i in wrong],
                                        [class_names[s_pred[i]] for i in wrong])
    sweeps_html, sweep_pngs = sweep_sections(run_dir)
    pngs.update(sweep_pngs)
    for name, png in pngs.items():
        write_bytes(out / f"{name}.png", png)

    t, s = summary.get("teacher", {}), summary.get("student", {})
    per_class = pd.DataFrame(rows).to_html(index=False, classes="per-class", border=0)
    pct = 100 * params / budget
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>distil report: {html.escape(run_dir.name)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}} table{{border-collapse:collapse}}
td,th{{padding:2px 10px;border-bottom:1px solid #ddd;text-align:left}} .bar{{background:#eee;width:400px;height:14px}}
.bar div{{background:{'#2a7' if params <= budget else '#c33'};height:14px}} pre{{background:#f6f6f6;padding:1em;overflow:auto;max-height:400px}}
img{{max-width:100%}} table.sweep th{{max-width:9em}} table.sweep td,table.sweep th{{padding:2px 6px}} table.sweep td:last-child{{min-width:16.5em}}</style></head><body>
<h1>Run <code>{html.escape(run_dir.name)}</code></h1>
<table id="summary"><tr><th></th><th>model</th><th>params</th><th>val acc</th><th>95% interval (Wilson)</th><th>train s</th></tr>
<tr><td>teacher</td><td>{html.escape(str(t.get('name', '-')))}</td><td>{t.get('params', '-'):,}</td><td>{t.get('val_acc', float('nan')):.4f}</td><td>{_interval(t)}</td><td>{t.get('train_s', '-')}</td></tr>
<tr><td>student</td><td>{html.escape(arch)}</td><td>{params:,}</td><td>{s.get('val_acc', float('nan')):.4f}</td><td>{_interval(s)}</td><td>{s.get('train_s', '-')}</td></tr></table>
<h2>Parameter budget</h2><p id="budget">{params:,} / {budget:,} parameters ({pct:.1f}%)</p><div class="bar"><div style="width:{min(100, pct):.1f}%"></div></div>
<h2>Training curves</h2>{_img(pngs['curves'], 'training curves', 'curves') if 'curves' in pngs else '<p>no metrics.csv</p>'}
<h2>Distillation terms</h2>{_img(pngs['terms'], 'distillation terms', 'terms') if 'terms' in pngs else '<p>CE only</p>'}
<h2>Confusion matrices</h2>{_img(pngs['confusion_teacher'], 'teacher confusion matrix', 'confusion') if 'confusion_teacher' in pngs else ''}
{_img(pngs['confusion_student'], 'student confusion matrix', 'confusion')}
<h2>Per-class accuracy</h2>{per_class}
<h2>Validation images the student gets wrong</h2>{_img(pngs['mistakes'], 'mistakes', 'mistakes') if 'mistakes' in pngs else '<p>none</p>'}
{sweeps_html}
<h2>Student architecture</h2>
<p>Per layer, from torchinfo at the student's input size:
output shape, parameters and multiply-adds (MACs).</p>
<pre id="layers">{html.escape(summary.get('_layers_text', ''))}</pre>
<details><summary>PyTorch printout</summary><pre id="architecture">{html.escape(summary.get('_arch_text', ''))}</pre></details>
<h2>Summary JSON</h2><pre id="summary-json">{html.escape(_relative_paths(json.dumps({k: v for k, v in summary.items() if not k.startswith('_')}, indent=1, default=str)))}</pre>
</body></html>"""
    path = run_dir / "report.html"
    write_text(path, body)
    return path
