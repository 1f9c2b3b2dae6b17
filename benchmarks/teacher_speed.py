"""Teacher speed on the CPU, side by side in one run: inference images/s of the fine-tuned teacher in
float32 NCHW, float32 channels_last, bfloat16 autocast + channels_last, and ONNX Runtime (float32), each with
its argmax agreement with float32 NCHW and its accuracy on the same validation images; and a training step
(float32 NCHW, channels_last, bf16 + channels_last). Repeats are interleaved (A B C D A B C D ...) so that
a machine whose speed drifts affects every row alike.

    python benchmarks/teacher_speed.py --config configs/food10-mini.yaml [--images 128] [--repeats 3]

Needs the config's teacher (make teacher CONFIG=...). On a CPU without native bf16 (no AVX512-BF16/AMX) the
bf16 rows are emulated and slow: that is what ``amp: auto`` avoids there. Writes
benchmarks/results/teacher_speed.{json,md}.
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import save, table

from pipeline.config import load_config
from pipeline.data import open_data, pixels
from pipeline.data.datasets import Normalize, PlainImages
from pipeline.export import export_onnx, ort_session
from pipeline.models import load_teacher
from pipeline.precision import cpu_has_native_bf16


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/food10-mini.yaml")
    ap.add_argument("--images", type=int, default=128, help="validation images per inference row")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bf16", action="store_true", help="also time bf16 on a CPU without native bf16 (emulated: slow)")
    args = ap.parse_args()
    with_bf16 = cpu_has_native_bf16() or args.bf16
    cfg = load_config(args.config)
    model, meta = load_teacher(cfg.teacher_dir, f"make teacher CONFIG={args.config}")
    layout = open_data(cfg)
    val = pixels(cfg, layout, "val")
    n = min(args.images, len(val.pixels))
    size = int(meta["img_size"])
    ds = PlainImages(val.pixels, val.split.labels, size)
    x_all = Normalize(meta["mean"], meta["std"])(torch.stack([ds[i]["image"] for i in range(n)])).contiguous()
    labels = np.asarray(val.split.labels[:n])
    batches = list(torch.split(x_all, args.batch))
    cl = [b.contiguous(memory_format=torch.channels_last) for b in batches]
    model.eval()
    model_cl = load_teacher(cfg.teacher_dir)[0].eval().to(memory_format=torch.channels_last)

    def run(m, xs, bf16=False):
        out = []
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            for b in xs:
                out.append(m(b).float())
        return torch.cat(out).numpy()

    rows_fn = {"fp32 NCHW": lambda: run(model, batches), "fp32 channels_last": lambda: run(model_cl, cl)}
    if with_bf16:
        rows_fn["bf16 + channels_last"] = lambda: run(model_cl, cl, bf16=True)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = export_onnx(load_teacher(cfg.teacher_dir)[0].eval(), size, Path(tmp) / "teacher.onnx")
            sess = ort_session(path, threads=torch.get_num_threads())
            name = sess.get_inputs()[0].name
            rows_fn["ONNX Runtime fp32"] = lambda: np.concatenate([sess.run(None, {name: b.numpy()})[0] for b in batches])
            ort_error = None
        except Exception as exc:  # noqa: BLE001 - the row says why
            ort_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
        times: dict[str, list[float]] = {k: [] for k in rows_fn}
        outs: dict[str, np.ndarray] = {}
        for k, fn in rows_fn.items():  # warm-up (and the outputs)
            outs[k] = fn()
        for _ in range(args.repeats):
            for k, fn in rows_fn.items():
                t = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t)
    ref = outs["fp32 NCHW"].argmax(1)
    base = n / float(np.median(times["fp32 NCHW"]))
    rows = []
    for k in rows_fn:
        ips = n / float(np.median(times[k]))
        rows.append({"measure": f"teacher inference ({meta['arch']} @ {size}px, batch {args.batch})", "mode": k,
                     "images_per_s": round(ips, 1), "vs_fp32_nchw": round(ips / base, 2),
                     "argmax_agreement": round(float((outs[k].argmax(1) == ref).mean()), 4),
                     "val_acc": round(float((outs[k].argmax(1) == labels).mean()), 4)})
    if ort_error:
        rows.append({"measure": "teacher inference", "mode": "ONNX Runtime fp32", "images_per_s": f"failed: {ort_error}"})
    if not with_bf16:
        rows.append({"measure": "teacher inference and train step", "mode": "bf16 + channels_last",
                     "images_per_s": "not run: no native bf16 on this CPU (emulated; --bf16 forces it)"})

    # a training step, batch 32 at the teacher's size
    xb = batches[0]
    yb = torch.as_tensor(labels[: len(xb)])
    step_rows = {}
    modes = [("fp32 NCHW", torch.contiguous_format, False), ("fp32 channels_last", torch.channels_last, False)]
    for mode, fmt, bf16 in modes + ([("bf16 + channels_last", torch.channels_last, True)] if with_bf16 else []):
        m = load_teacher(cfg.teacher_dir)[0].train().requires_grad_(True).to(memory_format=fmt)
        opt = torch.optim.AdamW(m.parameters(), 1e-4)
        xin = xb.contiguous(memory_format=fmt)

        def step():
            with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                loss = torch.nn.functional.cross_entropy(m(xin).float(), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()

        step()
        ts = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            step()
            ts.append(time.perf_counter() - t)
        step_rows[mode] = float(np.median(ts))
    for mode, s in step_rows.items():
        rows.append({"measure": f"teacher train step, batch {len(xb)}", "mode": mode, "images_per_s": round(len(xb) / s, 1),
                     "vs_fp32_nchw": round(step_rows["fp32 NCHW"] / s, 2)})
    head = (f"Teacher speed on {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
            f"{torch.__version__}, native bf16: {cpu_has_native_bf16()}, {n} validation images of {args.config}")
    md = head + "\n\n" + table(rows, ["measure", "mode", "images_per_s", "vs_fp32_nchw", "argmax_agreement", "val_acc"])
    save("teacher_speed", {"config": args.config, "native_bf16": cpu_has_native_bf16(), "images": n, "rows": rows}, md)


if __name__ == "__main__":
    main()
