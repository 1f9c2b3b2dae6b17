from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_config, parse_overrides


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_minimal_config_gets_defaults_and_name(tmp_path):
    cfg = load_config(write(tmp_path, "data: {root: somewhere}\n"))
    assert cfg.name == "c"
    assert cfg.student.budget == 60_000
    assert [t.name for t in cfg.student.losses] == ["ce", "kd"]


def test_unknown_key_is_named_with_suggestion(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "data: {root: x}\nstudent: {epoch: 3}\n"))
    msg = str(e.value)
    assert "student.epoch" in msg and "did you mean 'student.epochs'" in msg and "c.yaml" in msg


def test_wrong_type_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"teacher\.epochs: .*integer.*'three'"):
        load_config(write(tmp_path, "data: {root: x}\nteacher: {epochs: three}\n"))


@pytest.mark.parametrize("text,key", [
    ("student: {budget: 0}", "student.budget"),
    ("cache: {views: 0}", "cache.views"),
    ("teacher: {lr: -1.0}", "teacher.lr"),
    ("student: {teacher_mode: sometimes}", "student.teacher_mode"),
    ("teacher: {pretrained: file}", "teacher"),
])
def test_impossible_values_fail_at_load(tmp_path, text, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(write(tmp_path, "data: {root: x}\n" + text + "\n"))


def test_missing_data_section(tmp_path):
    with pytest.raises(ConfigError, match="data: required key is missing"):
        load_config(write(tmp_path, "seed: 1\n"))


def test_unknown_loss_and_hparam_fail_at_load(tmp_path):
    with pytest.raises(ConfigError, match="unknown loss 'kdd'.*Did you mean 'kd'"):
        load_config(write(tmp_path, "data: {root: x}\nstudent: {losses: [{name: kdd}]}\n"))
    with pytest.raises(ConfigError, match="temp: unknown hyper-parameter.*temperature"):
        load_config(write(tmp_path, "data: {root: x}\nstudent: {losses: [{name: kd, kwargs: {temp: 2}}]}\n"))


def test_overrides_and_scientific_floats(tmp_path):
    cfg = load_config(write(tmp_path, "data: {root: x}\nteacher: {lr: 1e-4}\n"),
                      ["student.epochs=3", "student.lr=2e-3", "student.kd=off", "data.root=/tmp/y"])
    assert cfg.teacher.lr == pytest.approx(1e-4)
    assert cfg.student.lr == pytest.approx(2e-3)
    assert cfg.student.epochs == 3 and cfg.student.kd is False and cfg.data.root == "/tmp/y"
    assert [t.name for t in cfg.student.effective_losses()] == ["ce"]


def test_bad_override_syntax(tmp_path):
    with pytest.raises(ConfigError, match="not key=value"):
        parse_overrides(["student.epochs"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "data: [unclosed\n"))


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(write(tmp_path, "data: {root: x}\n"), ["student.epochs=7"])
    cfg.save(tmp_path / "out" / "config.yaml")
    again = load_config(tmp_path / "out" / "config.yaml")
    assert again.student.epochs == 7 and again.digest("student") == cfg.digest("student")


SECTIONS = ("data", "teacher", "cache", "student", "seed")


def test_changes_since_names_what_a_stage_would_compute_differently(tmp_path):
    """A checkpoint's config against today's: real changes are named (list items too); run options and keys the
    schema gained since (absent from the old record, held at their defaults) are not changes."""
    cfg = load_config(write(tmp_path, "data: {root: x}\n"))
    old = cfg.to_dict()
    assert cfg.changes_since(old, *SECTIONS) == []
    changed = load_config(write(tmp_path, "data: {root: x}\n"), ["teacher.lr=0.002", "student.losses.1.kwargs.temperature=2.0"])
    assert changed.changes_since(old, *SECTIONS) == ["student.losses.1.kwargs.temperature: 4.0 -> 2.0",
                                                     "teacher.lr: 0.001 -> 0.002"]
    assert changed.changes_since(old, "data", "teacher", "seed") == ["teacher.lr: 0.001 -> 0.002"]  # a teacher's own
    # written before the schema had cache.mix and teacher.ema: they take their defaults, so nothing changed
    upgraded = {**old, "cache": {k: v for k, v in old["cache"].items() if k != "mix"},
                "teacher": {k: v for k, v in old["teacher"].items() if k != "ema"}}
    assert cfg.changes_since(upgraded, *SECTIONS) == []
    # ... unless today's config sets them to something else
    mixed = load_config(write(tmp_path, "data: {root: x}\n"), ["cache.mix=cutmix"])
    assert mixed.changes_since(upgraded, *SECTIONS) == ["cache.mix: 'none' -> 'cutmix'"]
    # layout, kernels, paths and worker counts are not what a stage computes: same identity, same digest
    run_opts = load_config(write(tmp_path, "data: {root: elsewhere}\n"), ["teacher.channels_last=false", "student.compile=true",
                                                                        "data.workers=2"])
    assert run_opts.changes_since(old, *SECTIONS) == [] and run_opts.digest(*SECTIONS) == cfg.digest(*SECTIONS)
    # a record from another schema (a key since removed) is compared as it is, and the unknown key is named
    odd = {**old, "student": {**old["student"], "retired_key": 1}}
    assert cfg.changes_since(odd, *SECTIONS) == ["student.retired_key: 1 -> (not set)"]


def test_each_student_folder_submits_to_its_own_file(tmp_path):
    """A sweep's best trial or a recipe row is another student of the same run: its CSV must not overwrite the
    run's own submission."""
    cfg = load_config(write(tmp_path, "data: {root: x}\n"))
    trial = load_config(write(tmp_path, "data: {root: x}\n"), ["student.dir=sweeps/c/trial-0003"])
    assert cfg.submission_path.name == "c.csv"
    assert trial.submission_path.name == "c-sweeps-c-trial-0003.csv"
    assert trial.submission_path.parent == cfg.submission_path.parent


def test_shipped_configs_are_valid():
    root = Path(__file__).resolve().parent.parent / "configs"
    names = sorted(p.name for p in root.glob("*.yaml"))
    assert "demo.yaml" in names
    for p in root.glob("*.yaml"):
        load_config(p)


def test_base_config_is_deep_merged(tmp_path):
    (tmp_path / "base.yaml").write_text("data: {root: x, image_size: 64}\nstudent: {epochs: 5, lr: 1.0e-3}\n")
    p = write(tmp_path, "base: base.yaml\nstudent: {epochs: 9}\n")
    cfg = load_config(p)
    assert (cfg.name, cfg.data.image_size, cfg.student.epochs, cfg.student.lr) == ("c", 64, 9, 1e-3)
    loop = tmp_path / "loop.yaml"
    loop.write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(loop)


def test_hw13_recipes_inherit_the_task():
    root = Path(__file__).resolve().parent.parent / "configs"
    simple, boss = load_config(root / "hw13-simple.yaml"), load_config(root / "hw13-boss.yaml")
    assert simple.data.root == boss.data.root == "data/food11"
    assert simple.student.effective_losses()[0].name == "ce" and len(simple.student.effective_losses()) == 1
    assert {t.name for t in boss.student.losses} == {"ce", "dkd", "rkd", "fitnet"} and boss.submit.competition == "ml2023spring-hw13"


def test_a_layer_on_a_term_that_reads_no_map_is_refused_and_a_map_term_needs_one():
    with pytest.raises(ConfigError, match=r"student.losses.1: loss 'kd' reads no feature map: remove its layer"):
        load_config("configs/demo.yaml", ["student.losses=[{name: ce}, {name: kd, layer: 3}]"])
    with pytest.raises(ConfigError, match=r"cache.feature_layer is not set, but fitnet \(student.losses.1\)"):
        load_config("configs/demo.yaml", ["student.losses=[{name: ce}, {name: fitnet}]"])
    with pytest.raises(ConfigError, match="student.losses.1.layer 99 is not a feature index"):
        load_config("configs/demo.yaml", ["student.losses=[{name: ce}, {name: fitnet, layer: 99}]"])
    cfg = load_config("configs/demo.yaml", ["student.losses=[{name: ce}, {name: fitnet, layer: 3}]"])
    assert cfg.student.losses[1].layer == 3 and cfg.cache.feature_layer is None
