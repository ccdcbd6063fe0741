"""Every bad input gets an error naming the file and the column (or config key), and leaves no half-written cache.

The bad files themselves are in the corpus, tests/corpus/data (tests/test_corpus_data.py); here: bad config values
and crashes that need monkeypatching."""

import pytest

from conftest import pipeline_mapping
from mtrank.data.config import PipelineConfig
from mtrank.data.errors import DataValidationError
from mtrank.data.pipeline import process


def _run(tmp_path, path, **overrides):
    return process(PipelineConfig.from_mapping(pipeline_mapping(path, **overrides)), tmp_path / "proc")


def _assert_clean_cache(tmp_path):
    proc = tmp_path / "proc"
    leftovers = list(proc.iterdir()) if proc.exists() else []
    assert leftovers == [], f"half-written cache entries left behind: {leftovers}"


def test_missing_path(tmp_path):
    with pytest.raises(DataValidationError, match=r"data\.pipeline\.inputs: path .*nowhere\.parquet does not exist"):
        _run(tmp_path, tmp_path / "nowhere.parquet")


@pytest.mark.parametrize(
    "overrides, pattern",
    [
        (
            {"tasks": ["save", "purchase"]},
            r"task\(s\) \['purchase'\] have no label column in data\.pipeline\.columns\.labels",
        ),
        ({"downsample": {"beta": 0.0}}, r"data\.pipeline\.downsample\.beta = 0\.0: expected a keep rate in \(0, 1\]"),
        (
            {"split": {"by": "week"}},
            r"data\.pipeline\.split\.by = 'week': expected one of \['time', 'request', 'random'\]",
        ),
        ({"encoding": {"nan_policy": "drop"}}, r"data\.pipeline\.encoding\.nan_policy = 'drop'"),
        ({"shuffle": True}, r"unknown config key\(s\) data\.pipeline\.shuffle"),
        (
            {"duplicates": {"policy": "dedupe"}},
            r"data\.pipeline\.duplicates\.policy = 'dedupe': expected one of \['keep', 'drop', 'error'\]",
        ),
        (
            {"duplicates": "drop"},
            r"config key data\.pipeline\.duplicates must be a mapping with keys policy \(keep\|drop\|error\)",
        ),
        (
            {"duplicates": {"key": []}},
            r"data\.pipeline\.duplicates\.key = \[\]: expected distinct column names, or null",
        ),
        ({"duplicates": {"keys": ["request_id"]}}, r"unknown config key\(s\) data\.pipeline\.duplicates\.keys"),
        (
            {"encoding": {"max_oov_fraction": 1.5}},
            r"data\.pipeline\.encoding\.max_oov_fraction = 1\.5: expected a fraction in \[0, 1\], or null for no limit",
        ),
    ],
)
def test_bad_data_config_names_the_key(tmp_path, log_file, overrides, pattern):
    with pytest.raises(DataValidationError, match=pattern):
        _run(tmp_path, log_file, **overrides)


def test_label_column_cannot_be_a_feature(tmp_path, log_file):
    m = pipeline_mapping(log_file)
    m["columns"]["numeric"] = ["price", "click"]
    with pytest.raises(DataValidationError, match=r"\['click'\] are label or excluded"):
        PipelineConfig.from_mapping(m)


def test_crash_mid_build_leaves_no_half_written_cache(tmp_path, log_file, monkeypatch):
    import mtrank.data.pipeline as pipeline

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(pipeline, "_write_json", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        _run(tmp_path, log_file)
    _assert_clean_cache(tmp_path)


def test_duplicate_key_column_missing_from_a_file(tmp_path, log_file):
    with pytest.raises(
        DataValidationError,
        match=r"log\.parquet is missing column\(s\) 'impression_id' \(data\.pipeline\.duplicates\.key\)",
    ):
        _run(tmp_path, log_file, duplicates={"policy": "error", "key": ["request_id", "impression_id"]})
    _assert_clean_cache(tmp_path)


@pytest.mark.parametrize("target", ["sink_by_split", "shuffle_into"])
def test_crash_while_streaming_leaves_no_intermediate_files(tmp_path, log_file, monkeypatch, target):
    """The intermediate files of the streamed build live in the temporary folder and go with it."""
    import mtrank.data.pipeline as pipeline

    real = getattr(pipeline, target)

    def half_then_boom(*a, **k):
        real(*a, **k)
        raise RuntimeError("killed")

    monkeypatch.setattr(pipeline, target, half_then_boom)
    with pytest.raises(RuntimeError, match="killed"):
        _run(tmp_path, log_file)
    _assert_clean_cache(tmp_path)
