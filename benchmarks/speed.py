"""Speed benchmark: data loading (JPEG vs pixel cache), a student epoch (online teacher + JPEG vs
cached teacher + cached pixels), student latency (PyTorch eager vs ONNX Runtime, batch 1 and 64)
and the MACs of every registered student. Every ratio is measured in this one run.

    python benchmarks/speed.py --config configs/food10-mini.yaml

Needs the config's teacher and cache stages to have run (make cache CONFIG=...).
Writes benchmarks/results/speed.json and speed.md.
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch
from common import median_time, save, table
from torch.utils.data import Dataset

from pipeline.config import load_config
from pipeline.data import open_data, pixels
from pipeline.data.datasets import Normalize, ViewImages, loader
from pipeline.data.images import load_square
from pipeline.data.views import render_view
from pipeline.engine import adamw
from pipeline.export import export_onnx, ort_session, quantize_int8
from pipeline.fields import LOGITS, forward_specs
from pipeline.losses.criterion import Criterion
from pipeline.losses.terms import bind_terms
from pipeline.models import STUDENTS, create_student, load_teacher
from pipeline.stages.student import STUDENT_NORM
from pipeline.teacher_cache import expected_key, load_cache
from pipeline.teachers import CachedTeacher


class JpegViews(Dataset):
    """The no-cache baseline: decode the JPEG every time, then render the view for student and teacher."""

    def __init__(self, files, labels, views, size, s_size, t_size):
        self.files, self.labels, self.views, self.size, self.s, self.t = files, labels, views, size, s_size, t_size

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        img = load_square(self.files[i], self.size)
        v = self.views[i, 0]
        return {"image": torch.from_numpy(render_view(img, v, self.s)), "target": int(self.labels[i]), "index": i,
                "view": 0, "teacher_image": torch.from_numpy(render_view(img, v, self.t))}


def images_per_s(ds: Dataset, n: int) -> float:
    t = time.perf_counter()
    for i in range(n):
        ds[i]
    return n / (time.perf_counter() - t)


def student_epoch(dl, student, criterion, opt, norm, teacher_fn) -> float:
    t = time.perf_counter()
    student.train()
    for batch in dl:
        x, y = norm(batch["image"]), batch["target"]
        f = student.forward_features(x)
        terms = criterion({"logits": student.forward_head(f)}, teacher_fn(batch),
                          {"target": y, "target_mix": torch.full_like(y, -1), "lam": torch.ones(len(y)),
                           "epoch": torch.zeros(())})
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/food10-mini.yaml")
    ap.add_argument("--decode-images", type=int, default=600, help="images timed for the data-loading rows")
    args = ap.parse_args()
    cfg = load_config(args.config)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    layout = open_data(cfg)
    train = pixels(cfg, layout, "train")
    key = expected_key(cfg, train.key)
    cache = CachedTeacher(load_cache(cfg.run_dir / "cache", key, [LOGITS], f"make cache CONFIG={args.config}"),
                          [LOGITS], key["teacher_sha256"])
    teacher, meta = load_teacher(cfg.teacher_dir)
    S, s_size, t_size = cfg.data.image_size, cfg.student.img_size, meta["img_size"]
    labels, views = train.split.labels, cache.views
    rows, results = [], {"config": args.config, "threads": threads, "machine": platform.processor() or platform.machine(),
                         "torch": torch.__version__}

    # 1. data loading
    n = min(args.decode_images, len(labels))
    jpeg = images_per_s(JpegViews(train.split.files, labels, views, S, s_size, t_size), n)
    cached = images_per_s(ViewImages(train.pixels, labels, views, s_size, fixed_view=0), n)
    results["data"] = {"jpeg_img_s": jpeg, "cache_img_s": cached, "ratio": cached / jpeg, "images": n}
    rows.append({"measure": f"data loading, images/s ({n} images, 1 process)", "baseline": f"JPEG decode: {jpeg:.0f}",
                 "cached": f"pixel cache: {cached:.0f}", "ratio": cached / jpeg})

    # 2. one student epoch, the full training set
    norm_s, norm_t = Normalize(*STUDENT_NORM), Normalize(meta["mean"], meta["std"])
    terms = bind_terms(cfg)  # the benchmark's config: logit terms only (ce, kd)

    def fresh():
        torch.manual_seed(0)
        st = create_student(cfg.student.model, layout.num_classes, cfg.student.img_size, **cfg.student.kwargs)
        cr = Criterion(terms, {"logits": layout.num_classes}, {"logits": layout.num_classes})
        return st, cr, adamw(list(st.parameters()) + list(cr.parameters()), cfg.student.lr, 0.05)

    def online(batch):
        with torch.inference_mode():
            lo = forward_specs(teacher, norm_t(batch["teacher_image"]), [LOGITS])["logits"]
        return {"logits": lo.clone()}

    from_cache = cache.outputs

    bs = cfg.student.batch_size
    st, cr, opt = fresh()
    t_online = student_epoch(loader(JpegViews(train.split.files, labels, views, S, s_size, t_size), bs, shuffle=True),
                             st, cr, opt, norm_s, online)
    st, cr, opt = fresh()
    t_cached = student_epoch(loader(ViewImages(train.pixels, labels, views, s_size, teacher=cache), bs, shuffle=True),
                             st, cr, opt, norm_s, from_cache)
    results["epoch"] = {"online_jpeg_s": t_online, "cached_s": t_cached, "ratio": t_online / t_cached, "images": len(labels)}
    rows.append({"measure": f"student epoch, s ({len(labels)} images, teacher {meta['arch']} @ {t_size}px)",
                 "baseline": f"online teacher + JPEG: {t_online:.1f}", "cached": f"cached teacher + pixels: {t_cached:.1f}",
                 "ratio": t_online / t_cached})

    # 3. latency of the deployed student
    st, _, _ = fresh()
    st.eval()
    with tempfile.TemporaryDirectory() as d:
        onnx_p = export_onnx(st, s_size, Path(d) / "s.onnx")
        int8_p = quantize_int8(onnx_p, Path(d) / "s8.onnx")
        sess, sess8 = ort_session(onnx_p), ort_session(int8_p)
        lat = {}
        for b in (1, 64):
            x = torch.randn(b, 3, s_size, s_size)
            xn = x.numpy()
            reps = 50 if b == 1 else 10
            with torch.inference_mode():
                lat[f"torch_b{b}_ms"] = 1000 * median_time(lambda: st(x), reps)
            lat[f"ort_b{b}_ms"] = 1000 * median_time(lambda: sess.run(["logits"], {"image": xn}), reps)
            lat[f"ort_int8_b{b}_ms"] = 1000 * median_time(lambda: sess8.run(["logits"], {"image": xn}), reps)
            rows.append({"measure": f"student latency, batch {b}, ms (median of {reps})",
                         "baseline": f"PyTorch eager: {lat[f'torch_b{b}_ms']:.2f}",
                         "cached": f"ONNX Runtime: {lat[f'ort_b{b}_ms']:.2f} (int8: {lat[f'ort_int8_b{b}_ms']:.2f})",
                         "ratio": lat[f"torch_b{b}_ms"] / lat[f"ort_b{b}_ms"]})
    results["latency"] = lat

    # 4. torch.compile and channels_last for the student's training step (kept only where they pay)
    def step_time(model, fmt) -> float:
        opt_ = torch.optim.AdamW(model.parameters(), 1e-3)
        x = torch.randn(bs, 3, s_size, s_size).to(memory_format=fmt)
        y = torch.randint(0, layout.num_classes, (bs,))

        def one():
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt_.zero_grad()
            loss.backward()
            opt_.step()
        return median_time(one, 10, warmup=3)

    variants = {}
    st, _, _ = fresh()
    variants["eager"] = step_time(st, torch.contiguous_format)
    st, _, _ = fresh()
    variants["eager channels_last"] = step_time(st.to(memory_format=torch.channels_last), torch.channels_last)
    try:
        st, _, _ = fresh()
        t = time.perf_counter()
        compiled = torch.compile(st)
        variants["torch.compile"] = step_time(compiled, torch.contiguous_format)
        results["compile_warmup_s"] = time.perf_counter() - t
    except Exception as exc:  # noqa: BLE001 - no compiler toolchain, unsupported op, ...
        results["compile_error"] = f"{type(exc).__name__}: {exc}"[:300]
    results["train_step_ms"] = {k: 1000 * v for k, v in variants.items()}
    for k, v in variants.items():
        rows.append({"measure": f"student train step, batch {bs}, ms (median of 10)", "baseline": f"eager: {1000 * variants['eager']:.1f}",
                     "cached": f"{k}: {1000 * v:.1f}", "ratio": variants["eager"] / v})

    # 5. MACs of every registered student
    from torch.utils.flop_counter import FlopCounterMode

    macs = []
    for name in STUDENTS:
        m = create_student(name, layout.num_classes).eval()
        with FlopCounterMode(display=False) as fc, torch.inference_mode():
            m(torch.zeros(1, 3, s_size, s_size))
        macs.append({"student": name, "params": sum(p.numel() for p in m.parameters()),
                     "MMACs": fc.get_total_flops() / 2 / 1e6, "img_size": s_size})
    results["macs"] = macs

    md = (f"Speed on {results['machine']}, {threads} threads, torch {torch.__version__}, config `{args.config}`\n\n"
          + table(rows, ["measure", "baseline", "cached", "ratio"]) + "\n\n"
          + table(macs, ["student", "params", "MMACs", "img_size"]))
    save("speed", results, md)


if __name__ == "__main__":
    main()
