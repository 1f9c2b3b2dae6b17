"""Property-based tests: the config loader and the label parser never crash with anything but a clear error."""
import string

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.config import ConfigError, load_config
from pipeline.data import LayoutError, discover

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=8))
keys = st.sampled_from(["data", "teacher", "student", "cache", "submit", "seed", "name", "root", "epochs", "lr",
                        "budget", "views", "losses", "kd", "model", "img_size", "bogus", "Epochs"])
values = st.recursive(scalars, lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(keys, c, max_size=4)), max_leaves=12)


@pytest.mark.slow
@given(st.dictionaries(keys, values, max_size=6))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_config_loader_only_raises_config_error(tmp_path, doc):
    p = tmp_path / "fuzz.yaml"
    p.write_text(yaml.safe_dump(doc))
    try:
        cfg = load_config(p)
    except ConfigError as exc:
        assert "fuzz.yaml" in str(exc)
    else:
        assert cfg.student.budget >= 1 and cfg.data.root is not None


@given(st.lists(st.text(alphabet=string.ascii_letters + string.digits + "_-.", min_size=1, max_size=12),
                min_size=1, max_size=8, unique=True))
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_label_parser_accepts_only_label_underscore_n(tmp_path_factory, names):
    root = tmp_path_factory.mktemp("d")
    (root / "training").mkdir()
    for n in names:
        if n.startswith("."):
            continue
        (root / "training" / f"{n}.jpg").write_bytes(b"")
    try:
        lay = discover(root)
    except LayoutError as exc:
        assert str(root) in str(exc)
        return
    for f, label in zip(lay.train.files, lay.train.labels):
        head, _, tail = f.stem.partition("_")
        assert int(head) == label and tail.isdigit()
    assert lay.num_classes == int(lay.train.labels.max()) + 1
