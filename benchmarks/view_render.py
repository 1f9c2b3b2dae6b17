"""Rendering a batch of recorded views: the library's loop (``views.render_batch``: one OpenCV resize per view,
written into the batch array) against resampling the whole batch in torch with OpenCV's own weights (each view's
crop + resize + flip as one (out, S) matrix per axis, applied as banded batched matmuls: only the window of
source rows each block of 16 output rows reads). Both from uint8 (B, S, S, 3) photos to (B, out, out, 3); the
table gives the time per batch (median of interleaved rounds) and how far the torch pixels are from OpenCV's.
This is why the student's batches are rendered by the OpenCV loop (docs/speed.md).

    nice -n 10 python benchmarks/view_render.py [--batch 64] [--size 144] [--out 128] [--rounds 7]

Writes benchmarks/results/view_render.{json,md}.
"""
from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch
from common import interleaved, save, table

from pipeline.data.views import render_batch, sample_views

BLOCK = 16  # output rows per banded matmul block


def axis_weights(start: np.ndarray, length: np.ndarray, out: int, size: int, area: np.ndarray,
                 flip: np.ndarray | None = None) -> np.ndarray:
    """(B, out, size) float32 resampling weights along one axis: the crop ``[start, start + length)`` of a
    ``size``-long source resized to ``out`` as ``cv2.resize`` does (``area``: ``INTER_AREA``'s area table, else
    ``INTER_LINEAR``'s half-pixel-centred taps), reversed where ``flip``. ``start``, ``length``, ``area``,
    ``flip``: (B,)."""
    start, length = np.asarray(start, np.int64), np.asarray(length, np.int64)
    b = len(start)
    w = np.zeros((b, out, size), np.float64)
    rows = np.broadcast_to(np.arange(b)[:, None], (b, out))
    cols = np.broadcast_to(np.arange(out)[None, :], (b, out))
    scale = (length / out)[:, None]  # cv2: 1 / (out / length), in double
    d = np.arange(out, dtype=np.float64)[None, :]
    lin = ~np.asarray(area, bool)
    if lin.any():  # INTER_LINEAR: fx = (d + 0.5) * scale - 0.5 in float32, clamped to the crop's edges
        fx = ((d + 0.5) * scale - 0.5).astype(np.float32).astype(np.float64)
        sx = np.floor(fx)
        f = fx - sx
        f = np.where(sx < 0, 0.0, f)
        sx = np.where(sx < 0, 0, sx)
        last = (length - 1)[:, None]
        f = np.where(sx >= last, 0.0, f)
        sx = np.minimum(sx, last).astype(np.int64)
        sx1 = np.minimum(sx + 1, last)
        m = np.broadcast_to(lin[:, None], (b, out))
        w[rows[m], cols[m], (start[:, None] + sx)[m]] = (1.0 - f)[m]
        w[rows[m], cols[m], (start[:, None] + sx1)[m]] += f[m]
    if (~lin).any():  # INTER_AREA (computeResizeAreaTab): each output averages the source cells it covers
        fs1 = d * scale
        fs2 = fs1 + scale
        cell = np.minimum(scale, length[:, None] - fs1)
        s2 = np.minimum(np.floor(fs2), (length - 1)[:, None]).astype(np.int64)
        s1 = np.minimum(np.ceil(fs1).astype(np.int64), s2)
        m = np.broadcast_to(~lin[:, None], (b, out))
        head = m & (s1 - fs1 > 1e-3)
        w[rows[head], cols[head], (start[:, None] + s1 - 1)[head]] = ((s1 - fs1) / cell)[head]
        for t in range(int(np.ceil(scale.max())) + 1):  # the whole cells: a handful of taps
            full = m & (s1 + t < s2)
            w[rows[full], cols[full], (start[:, None] + s1 + t)[full]] = np.broadcast_to(1.0 / cell, (b, out))[full]
        tail = m & (fs2 - s2 > 1e-3)
        w[rows[tail], cols[tail], (start[:, None] + s2)[tail]] = (np.minimum(np.minimum(fs2 - s2, 1.0), cell) / cell)[tail]
    if flip is not None:
        f = np.asarray(flip, bool)
        w[f] = w[f, ::-1]
    return w.astype(np.float32)


def _banded(x: torch.Tensor, w: np.ndarray) -> torch.Tensor:
    """``y[b] = w[b] @ x[b]`` for x (B, S, R), w (B, O, S) with few nonzeros per row -> (B, O, R): each block of
    ``BLOCK`` output rows is a matmul with the window of source rows its weights reach."""
    b, o, s = w.shape
    nb = -(-o // BLOCK)
    w = np.concatenate([w, np.zeros((b, nb * BLOCK - o, s), w.dtype)], 1) if nb * BLOCK != o else w
    nz = w != 0
    first = np.where(nz.any(2), nz.argmax(2), s)
    last = np.where(nz.any(2), s - 1 - nz[..., ::-1].argmax(2), -1)
    lo = first.reshape(b, nb, BLOCK).min(2)
    width = int((last.reshape(b, nb, BLOCK).max(2) - lo).max()) + 1
    lo = np.clip(lo, 0, s - width)
    take = lo[:, :, None] + np.arange(width)  # (B, nb, width) source rows of each block
    wb = np.take_along_axis(w.reshape(b, nb, BLOCK, s), np.broadcast_to(take[:, :, None, :], (b, nb, BLOCK, width)), 3)
    flat = torch.from_numpy((take + (np.arange(b) * s)[:, None, None]).reshape(-1))
    xs = x.reshape(b * s, -1).index_select(0, flat).view(b * nb, width, -1)
    y = torch.bmm(torch.from_numpy(np.ascontiguousarray(wb)).view(b * nb, BLOCK, width), xs.float())
    return y.view(b, nb * BLOCK, -1)[:, :o]


def resample(images: torch.Tensor, wy: np.ndarray, wx: np.ndarray) -> torch.Tensor:
    """uint8 (B, S, S, C) -> uint8 (B, O, O, C): ``round(wy[b] @ image[b] @ wx[b].T)`` per channel, rounded half to
    even and clipped; ``wy``, ``wx`` (B, O, S) from ``axis_weights``."""
    b, s, _, c = images.shape
    o = wy.shape[1]
    rows = _banded(images.reshape(b, s, s * c), wy).view(b, o, s, c)  # (B, O_y, S_x, C)
    cols = _banded(rows.transpose(1, 2).reshape(b, s, o * c), wx).view(b, o, o, c)  # (B, O_x, O_y, C)
    return cols.transpose(1, 2).round_().clamp_(0, 255).to(torch.uint8).contiguous()


def render_views(images: torch.Tensor, views: np.ndarray, out: int) -> torch.Tensor:
    """``views.render_view`` for a batch: uint8 (B, S, S, 3) and (B, 5) views ``(x0, y0, w, h, flip)`` -> uint8
    (B, out, out, 3)."""
    views = np.asarray(views, np.int64)
    s = images.shape[1]
    x0, y0, w, h, flip = views.T
    area = np.minimum(w, h) > out  # render_view: INTER_AREA when both sides shrink, else INTER_LINEAR
    return resample(images, axis_weights(y0, h, out, s, area), axis_weights(x0, w, out, s, area, flip != 0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=144, help="stored photo side (data.image_size)")
    ap.add_argument("--out", type=int, default=128, help="the student's img_size")
    ap.add_argument("--scale-min", type=float, default=0.35)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    b, s, o = args.batch, args.size, args.out
    pixels = rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8)
    views = sample_views(b, 8, s, args.scale_min, rng)
    index, view = np.arange(b), rng.integers(0, 8, b)
    boxes = views[index, view]
    batch = torch.from_numpy(pixels)
    ref = render_batch(pixels, views, index, view, o)
    got = render_views(batch, boxes, o).numpy()
    diff = np.abs(ref.astype(np.int16) - got.astype(np.int16))
    times = interleaved({"opencv": lambda: render_batch(pixels, views, index, view, o),
                         "torch": lambda: render_views(batch, boxes, o)}, args.rounds)
    area = float((np.minimum(boxes[:, 2], boxes[:, 3]) > o).mean())
    rows = [{"renderer": "OpenCV per view into the batch (views.render_batch)", "ms": 1000 * statistics.median(times["opencv"]),
             "max diff": 0, "pixels differing": 0.0},
            {"renderer": "torch: banded batched matmuls, OpenCV's weights", "ms": 1000 * statistics.median(times["torch"]),
             "max diff": int(diff.max()), "pixels differing": float((diff > 0).mean())}]
    md = (f"# Rendering a batch of recorded views\n\n{b} views (scale_min {args.scale_min}; {area:.0%} shrink both sides: "
          f"INTER_AREA) of {s} px photos at {o} px, median of {args.rounds} interleaved rounds, "
          f"{torch.get_num_threads()} torch threads, 2 shared cores under nice; diff in grey levels against OpenCV.\n\n"
          + table(rows, ["renderer", "ms", "max diff", "pixels differing"])
          + f"\n\nCommand: `nice -n 10 python benchmarks/view_render.py --batch {b} --size {s} --out {o} --rounds {args.rounds}`")
    save("view_render", {"args": vars(args), "threads": torch.get_num_threads(), "rounds_s": times, "rows": rows}, md)


if __name__ == "__main__":
    main()
