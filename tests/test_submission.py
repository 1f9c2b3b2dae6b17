import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.submission import SubmissionError, check_file, format_id, upload, validate, write_submission

SAMPLE = pd.DataFrame({"Id": [f"{i:04d}" for i in range(5)], "Category": ["0"] * 5})


def good():
    return pd.DataFrame({"Id": [f"{i:04d}" for i in range(5)], "Category": ["1", "0", "2", "2", "1"]})


def test_writer_output_is_valid_and_ordered_like_the_sample(tmp_path):
    sample = tmp_path / "sample.csv"
    SAMPLE.to_csv(sample, index=False)
    out = tmp_path / "sub.csv"
    write_submission(out, ["4", "0003", "0002", "0001", "0000"], np.array([1, 2, 3, 4, 5]), num_classes=6, sample_path=sample)
    assert out.read_text().splitlines() == ["Id,Category", "0000,5", "0001,4", "0002,3", "0003,2", "0004,1"]
    check_file(out, num_classes=6, sample_path=sample)


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d.rename(columns={"Category": "Label"}), "header"),
    (lambda d: d.iloc[:4], "1 id.s. missing"),
    (lambda d: pd.concat([d, pd.DataFrame({"Id": ["0009"], "Category": ["1"]})]), "not in the sample"),
    (lambda d: d.assign(Category=["1", "x", "2", "2", "1"]), "'x'.*not a plain non-negative integer"),
    (lambda d: d.assign(Category=["1", "\u0661", "2", "2", "1"]), "not a plain non-negative integer"),  # Arabic-Indic 1
    (lambda d: d.assign(Category=["1", "\uff11", "2", "2", "1"]), "not a plain non-negative integer"),  # full-width 1
    (lambda d: d.assign(Category=["1", "01", "2", "2", "1"]), "'01'.*no leading zero"),
    (lambda d: d.assign(Category=["1", "9" * 40, "2", "2", "1"]), "outside 0..10"),  # no OverflowError
    (lambda d: d.assign(Category=["1", "+1", "2", "2", "1"]), "no sign"),
    (lambda d: d.assign(Category=["1", "1.0", "2", "2", "1"]), "'1.0'"),
    (lambda d: d.assign(Category=["1", "", "2", "2", "1"]), "not a plain non-negative integer"),
    (lambda d: d.assign(Category=["1", "11", "2", "2", "1"]), "outside 0..10"),
    (lambda d: d.assign(Id=["0", "1", "2", "3", "4"]), "lost its zero padding"),
    (lambda d: d.assign(Id=["0000", "0000", "0002", "0003", "0004"]), "duplicate Id '0000'"),
])
def test_bad_submissions_are_refused(mutate, match):
    with pytest.raises(SubmissionError, match=match):
        validate(mutate(good()).reset_index(drop=True), num_classes=11, sample=SAMPLE, src="x.csv")


def test_malformed_csv_file_names_the_file(tmp_path):
    p = tmp_path / "broken.csv"
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(SubmissionError, match="broken.csv"):
        check_file(p, num_classes=11)
    with pytest.raises(SubmissionError, match="no such submission"):
        check_file(tmp_path / "none.csv", num_classes=11)


def test_ids_are_read_as_strings(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("Id,Category\n0000,1\n0001,2\n0002,0\n0003,0\n0004,0\n")
    check_file(p, num_classes=3, sample_path=None)
    assert check_file(p, num_classes=3)["Id"].tolist()[0] == "0000"


def test_upload_without_credentials_is_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path))
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    monkeypatch.delenv("KAGGLE_API_TOKEN", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    import sys

    monkeypatch.setitem(sys.modules, "kaggle", None)  # importing it would be an error: never reached
    p = tmp_path / "s.csv"
    p.write_text("Id,Category\n0000,1\n")
    with pytest.raises(SubmissionError, match="kaggle.json|KAGGLE_USERNAME"):
        upload(p, "ml2023spring-hw13", "test")


def test_upload_calls_the_api_lazily(tmp_path, monkeypatch):
    """With credentials, the (fake) kaggle client is imported only at upload, authenticated then, and gets file,
    message, slug (tests/test_kaggle_upload.py runs the real one against the Kaggle twin)."""
    import sys
    import types

    calls = []

    class FakeApi:
        def authenticate(self):
            calls.append("auth")

        def competition_submit(self, f, m, c, quiet):
            calls.append((f, m, c))
            return types.SimpleNamespace(message="Successfully submitted", ref=7)

    for name in ("kaggle", "kaggle.api"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "kaggle.api.kaggle_api_extended", types.SimpleNamespace(KaggleApi=FakeApi))
    monkeypatch.setenv("KAGGLE_API_TOKEN", "dummy")
    p = tmp_path / "s.csv"
    assert upload(p, "ml2023spring-hw13", "msg") == {"competition": "ml2023spring-hw13", "ref": 7,
                                                     "message": "Successfully submitted", "description": "msg"}
    assert calls == ["auth", (str(p), "msg", "ml2023spring-hw13")]


def test_bad_competition_slug(tmp_path):
    with pytest.raises(SubmissionError, match="slug"):
        upload(tmp_path / "s.csv", "Bad Slug!", "m")


@given(st.lists(st.integers(0, 9999), min_size=1, max_size=30, unique=True), st.data())
@settings(max_examples=60, deadline=None)
def test_fuzz_written_csvs_always_validate(ids, data):
    labels = data.draw(st.lists(st.integers(0, 10), min_size=len(ids), max_size=len(ids)))
    df = pd.DataFrame({"Id": [format_id(str(i)) for i in ids], "Category": [str(v) for v in labels]})
    sample = pd.DataFrame({"Id": df["Id"].sample(frac=1, random_state=0).tolist()})
    validate(df, num_classes=11, sample=sample)


@given(st.text(max_size=200))
@settings(max_examples=100, deadline=None)
def test_fuzz_validator_never_crashes(text):
    import io

    try:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except Exception:  # noqa: BLE001 - pandas refusing the text is fine
        return
    try:
        validate(df, num_classes=11, sample=SAMPLE)
    except SubmissionError:
        pass


def test_a_sample_submission_with_another_header_is_refused(tmp_path):
    sample = tmp_path / "sample_submission.csv"
    sample.write_text("Id,Label\n0000,0\n")
    with pytest.raises(SubmissionError, match="sample submission header is 'Id,Label', expected 'Id,Category'"):
        write_submission(tmp_path / "out.csv", ["0000"], np.array([1]), num_classes=3, sample_path=sample)
    assert not (tmp_path / "out.csv").exists()
