"""Validation accuracy with its 95% interval: the Wilson formula, its coverage, and which runs tie with the best."""
import json

import numpy as np
import pytest
from scipy import stats

from pipeline.cli import main
from pipeline.confidence import accuracy_interval, difference, indistinguishable, interval_of, wilson


@pytest.mark.parametrize("k,n", [(0, 10), (10, 10), (81, 100), (3, 7), (500, 1000), (1, 1)])
def test_wilson_matches_scipy(k, n):
    ref = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson(k, n) == pytest.approx((ref.low, ref.high), abs=1e-9)


def test_wilson_covers_the_true_accuracy_95_percent_of_the_time():
    """Exact coverage (summed over the binomial distribution) for 60 validation images stays near 95% across
    accuracies, including near 0 and 1 where p +- 1.96 se falls to ~0.6."""
    n = 60
    ks = np.arange(n + 1)
    bounds = np.array([wilson(k, n) for k in ks])
    for p in np.linspace(0.05, 0.95, 19):
        covered = (bounds[:, 0] <= p) & (p <= bounds[:, 1])
        assert stats.binom.pmf(ks, n, p)[covered].sum() > 0.92, p


def test_interval_narrows_with_more_images_and_holds_the_accuracy():
    small, big = accuracy_interval(0.8, 50), accuracy_interval(0.8, 5000)
    assert small[0] < big[0] <= 0.8 <= big[1] < small[1]
    assert wilson(0, 0) != wilson(0, 0)  # nan: no images, no interval


def test_interval_of_reads_or_derives_the_summary_interval():
    assert interval_of({"val_acc": 0.5, "val_acc_ci95": [0.4, 0.6]}) == (0.4, 0.6)
    assert interval_of({"val_acc": 0.8, "val_images": 100}) == tuple(accuracy_interval(0.8, 100))
    assert interval_of({"val_acc": 0.8}) is None and interval_of("x") is None


def test_difference_interval_is_newcombes_published_example():
    """Newcombe (1998), Statistics in Medicine 17:873, the example 56/70 - 48/80: method 10 gives 0.0524 to 0.3339."""
    lo, hi = difference(56 / 70, wilson(56, 70), 48 / 80, wilson(48, 80))
    assert (round(lo, 4), round(hi, 4)) == (0.0524, 0.3339)


def test_runs_the_validation_set_cannot_tell_from_the_best_are_marked():
    accs = [0.80, 0.78, 0.70, float("nan"), 0.79]
    cis = [tuple(accuracy_interval(a, 300)) for a in accs[:3]] + [None, None]
    assert indistinguishable(cis, accs) == ["best", "~best", "", "", ""]
    # the same two accuracies on 30 images: no longer told apart
    assert indistinguishable([tuple(accuracy_interval(a, 30)) for a in (0.8, 0.7)], [0.8, 0.7]) == ["best", "~best"]
    # 50/60 against 38/60: the intervals overlap, yet the difference's interval excludes 0 (overlap is too cautious)
    cis = [tuple(accuracy_interval(a, 60)) for a in (50 / 60, 38 / 60)]
    assert cis[1][1] > cis[0][0] and indistinguishable(cis, [50 / 60, 38 / 60]) == ["best", ""]


def _summary(root, name, acc, n):
    d = root / name
    d.mkdir()
    (d / "summary.json").write_text(json.dumps({
        "name": name, "teacher": {"name": "t", "val_acc": 0.9},
        "student": {"name": "dwsep", "params": 10, "val_acc": acc, "val_images": n,
                    "val_acc_ci95": accuracy_interval(acc, n)}}))
    return str(d)


def test_compare_shows_intervals_and_marks_the_runs_tied_with_the_best(tmp_path, capsys):
    runs = [_summary(tmp_path, "a", 0.80, 300), _summary(tmp_path, "b", 0.78, 300), _summary(tmp_path, "c", 0.60, 300)]
    assert main(["compare", *runs]) == 0
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[1:-1]]
            for line in capsys.readouterr().out.splitlines()[2:]}
    head = ["run", "teacher", "teacher acc", "student", "params", "student acc", "95% interval", "vs best"]
    assert [rows["a"][i] for i in (5, 6, 7)] == ["0.8000", "[%.4f, %.4f]" % tuple(accuracy_interval(0.8, 300)), "best"]
    assert rows["b"][7] == "~best" and rows["c"][7] == ""
    assert len(head) <= len(rows["a"])
