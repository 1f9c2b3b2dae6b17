import json

import pytest

from pipeline.atomic import atomic_path, write_json, write_with


def test_crash_mid_write_keeps_the_previous_file(tmp_path):
    p = tmp_path / "summary.json"
    write_json(p, {"v": 1})

    def half(tmp):
        tmp.write_text('{"v": 2, "trunc')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_with(p, half)
    assert json.loads(p.read_text()) == {"v": 1}
    assert [f.name for f in tmp_path.iterdir()] == ["summary.json"]  # no temp file left behind


def test_success_replaces(tmp_path):
    p = tmp_path / "a" / "b.txt"
    with atomic_path(p) as tmp:
        tmp.write_text("new")
        assert not p.exists()
    assert p.read_text() == "new"


def test_interrupted_checkpoint_save_keeps_old(tmp_path, monkeypatch):
    import torch

    from pipeline.atomic import save_torch

    p = tmp_path / "last.pt"
    save_torch(p, {"epoch": 1})

    def boom(obj, f, *a, **k):
        open(f, "wb").write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        save_torch(p, {"epoch": 2})
    monkeypatch.undo()
    assert torch.load(p)["epoch"] == 1


def test_stale_temps_of_a_killed_writer_are_removed(tmp_path):
    from pipeline.atomic import remove_stale_temps

    (tmp_path / ".logits.npy.abc123.tmp").write_bytes(b"partial")
    (tmp_path / "logits.npy").write_bytes(b"keep")
    assert remove_stale_temps(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["logits.npy"]
