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
    """Validation accuracy and training loss per epoch for each stage's metrics.csv."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for name, df in metrics.items():
        axes[0].plot(df["epoch"], df["val_acc"], marker=".", label=name)
        axes[1].plot(df["epoch"], df["train_loss"], marker=".", label=name)
    axes[0].set(title="validation accuracy", xlabel="epoch")
    axes[1].set(title="training loss", xlabel="epoch")
    for a in axes:
        a.grid(alpha=0.3)
        a.legend()
    return _fig_png(fig)


def terms_png(df: pd.DataFrame) -> Optional[bytes]:
    """Each distillation term of the student (train_<term> columns) over epochs."""
    cols = [c for c in df.columns if c.startswith("train_") and c != "train_loss"]
    if not cols:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for c in cols:
        ax.plot(df["epoch"], df[c], marker=".", label=c[len("train_"):])
    ax.set(title="student loss terms", xlabel="epoch", yscale="log")
    ax.grid(alpha=0.3)
    ax.legend()
    return _fig_png(fig)


def confusion_png(cm: np.ndarray, names: list[str], title: str) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4.4))
    ax.imshow(cm, cmap="Blues")
    ax.set(title=title, xlabel="predicted", ylabel="true", xticks=range(len(names)), yticks=range(len(names)))
    ax.set_xticklabels(names, rotation=90, fontsize=7)
    ax.set_yticklabels(names, fontsize=7)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            if cm[i, j]:
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if cm[i, j] > cm.max() / 2 else "black")
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


def _img(png: bytes, alt: str, cls: str) -> str:
    return f'<img class="{cls}" alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


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
    if "student" in metrics and (t := terms_png(metrics["student"])) is not None:
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
    for name, png in pngs.items():
        write_bytes(out / f"{name}.png", png)

    t, s = summary.get("teacher", {}), summary.get("student", {})
    per_class = pd.DataFrame(rows).to_html(index=False, classes="per-class", border=0)
    pct = 100 * params / budget
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>distil report: {html.escape(run_dir.name)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}} table{{border-collapse:collapse}}
td,th{{padding:2px 10px;border-bottom:1px solid #ddd;text-align:left}} .bar{{background:#eee;width:400px;height:14px}}
.bar div{{background:{'#2a7' if params <= budget else '#c33'};height:14px}} pre{{background:#f6f6f6;padding:1em;overflow:auto;max-height:400px}}
img{{max-width:100%}}</style></head><body>
<h1>Run <code>{html.escape(run_dir.name)}</code></h1>
<table id="summary"><tr><th></th><th>model</th><th>params</th><th>val acc</th><th>train s</th></tr>
<tr><td>teacher</td><td>{html.escape(str(t.get('name', '-')))}</td><td>{t.get('params', '-'):,}</td><td>{t.get('val_acc', float('nan')):.4f}</td><td>{t.get('train_s', '-')}</td></tr>
<tr><td>student</td><td>{html.escape(arch)}</td><td>{params:,}</td><td>{s.get('val_acc', float('nan')):.4f}</td><td>{s.get('train_s', '-')}</td></tr></table>
<h2>Parameter budget</h2><p id="budget">{params:,} / {budget:,} parameters ({pct:.1f}%)</p><div class="bar"><div style="width:{min(100, pct):.1f}%"></div></div>
<h2>Training curves</h2>{_img(pngs['curves'], 'training curves', 'curves') if 'curves' in pngs else '<p>no metrics.csv</p>'}
<h2>Distillation terms</h2>{_img(pngs['terms'], 'distillation terms', 'terms') if 'terms' in pngs else '<p>CE only</p>'}
<h2>Confusion matrices</h2>{_img(pngs['confusion_teacher'], 'teacher confusion matrix', 'confusion') if 'confusion_teacher' in pngs else ''}
{_img(pngs['confusion_student'], 'student confusion matrix', 'confusion')}
<h2>Per-class accuracy</h2>{per_class}
<h2>Validation images the student gets wrong</h2>{_img(pngs['mistakes'], 'mistakes', 'mistakes') if 'mistakes' in pngs else '<p>none</p>'}
<h2>Student architecture</h2><pre id="architecture">{html.escape(summary.get('_arch_text', ''))}</pre>
<h2>Summary JSON</h2><pre>{html.escape(json.dumps({k: v for k, v in summary.items() if not k.startswith('_')}, indent=1, default=str))}</pre>
</body></html>"""
    path = run_dir / "report.html"
    write_text(path, body)
    return path
