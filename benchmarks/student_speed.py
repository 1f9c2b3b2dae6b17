"""Student designs side by side on this machine: the training step (forward, cross-entropy, backward, AdamW)
of every budget student (the registry's non-tutorial designs), each at the largest width under the budget,
in float32 NCHW and channels_last, with its parameters and MACs. Rounds are interleaved (A B C ... A B C ...)
so a machine whose speed drifts affects every row alike; the ratio column is each row against dwsep NCHW.
Synthetic inputs: no data or run needed.

    python benchmarks/student_speed.py [--img-size 128] [--batch 64] [--budget 60000] [--rounds 5]

Writes benchmarks/results/student_speed.{json,md}.
"""
from __future__ import annotations

import argparse
import platform
import statistics

import torch
from common import interleaved, save, table
from torch.utils.flop_counter import FlopCounterMode

from pipeline.models import STUDENTS, create_student
from pipeline.models.budget import largest_width, param_count

def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else the architecture."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


LAYOUTS = {"NCHW": torch.contiguous_format, "channels_last": torch.channels_last}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--img-size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--budget", type=int, default=60_000)
    ap.add_argument("--classes", type=int, default=11)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds; each times --steps steps per row")
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    s, b = args.img_size, args.batch
    names = [n for n in STUDENTS.names() if not STUDENTS.meta(n).get("tutorial")]

    rows, steps = [], {}
    for name in names:
        fill = largest_width(lambda w, n=name: create_student(n, args.classes, s, width=w), args.budget, s)
        if fill is None:
            continue
        width, _ = fill
        m = create_student(name, args.classes, s, width=width).eval()
        with FlopCounterMode(display=False) as fc, torch.inference_mode():
            m(torch.zeros(1, 3, s, s))
        for layout, fmt in LAYOUTS.items():
            model = create_student(name, args.classes, s, width=width).train().to(memory_format=fmt)
            opt = torch.optim.AdamW(model.parameters(), 1e-3)
            x = torch.randn(b, 3, s, s).to(memory_format=fmt)
            y = torch.randint(0, args.classes, (b,))

            def step(model=model, opt=opt, x=x, y=y) -> None:
                loss = torch.nn.functional.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            steps[f"{name} {layout}"] = step
            rows.append({"student": name, "width": width, "params": param_count(m, s).gated,
                         "MMACs": fc.get_total_flops() / 2 / 1e6, "layout": layout})
    # warm-up (allocations, oneDNN primitive caches), then interleaved rounds: every row sees the same drift
    times = interleaved(steps, args.rounds, repeat=args.steps)
    base = statistics.median(times["dwsep NCHW"])
    for r in rows:
        r["step_ms"] = 1000 * statistics.median(times[f"{r['student']} {r['layout']}"])
        r["vs_dwsep_nchw"] = r["step_ms"] / (1000 * base)

    threads, cpu = torch.get_num_threads(), cpu_name()
    head = (f"Student training step (batch {b}, {s} px, {args.classes} classes, forward + CE + backward + AdamW, "
            f"median of {args.rounds} interleaved rounds of {args.steps} steps) on {cpu}, {threads} threads, "
            f"torch {torch.__version__}; each design at its largest width under {args.budget:,} parameters")
    payload = {"machine": cpu, "threads": threads, "classes": args.classes, "torch": torch.__version__, "img_size": s,
               "batch": b, "budget": args.budget, "rounds": args.rounds, "steps": args.steps, "rows": rows}
    save("student_speed", payload,
         head + "\n\n" + table(rows, ["student", "width", "params", "MMACs", "layout", "step_ms", "vs_dwsep_nchw"]))


if __name__ == "__main__":
    main()
