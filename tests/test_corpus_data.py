"""The corpus of bad data inputs (tests/corpus/data/cases.yaml): every case produces its error message, naming the
file, the column or the config key and what was expected, and leaves no half-written cache behind."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import yaml

from conftest import pipeline_mapping
from mtrank.data.config import PipelineConfig
from mtrank.data.errors import DataValidationError
from mtrank.data.pipeline import process

CORPUS = Path(__file__).resolve().parent / "corpus" / "data"
CASES = yaml.safe_load((CORPUS / "cases.yaml").read_text())
MAX_BYTES = 30_000


def _resolve(value):
    """``"@name"`` -> the path of corpus file ``name``, inside lists and mappings."""
    if isinstance(value, str) and value.startswith("@"):
        return str(CORPUS / value[1:])
    if isinstance(value, list):
        return [_resolve(v) for v in value]
    if isinstance(value, dict):
        return {k: _resolve(v) for k, v in value.items()}
    return value


def _mapping(case: dict) -> dict:
    inputs = case.get("inputs", [])
    inputs = [inputs] if isinstance(inputs, str) else inputs
    return pipeline_mapping([CORPUS / f for f in inputs], **_resolve(case.get("overrides") or {}))


ERRORS = [c for c in CASES if "error" in c]
WARNINGS = [c for c in CASES if "warning" in c]


@pytest.mark.parametrize("case", ERRORS, ids=[c["id"] for c in ERRORS])
def test_bad_input_produces_its_error(tmp_path, case):
    proc = tmp_path / "proc"
    with pytest.raises(DataValidationError, match=case["error"]):
        process(PipelineConfig.from_mapping(_mapping(case)), proc)
    leftovers = list(proc.iterdir()) if proc.exists() else []
    assert leftovers == [], f"half-written cache entries left behind: {leftovers}"


@pytest.mark.parametrize("case", WARNINGS, ids=[c["id"] for c in WARNINGS])
def test_doubtful_input_is_processed_with_its_warning(tmp_path, caplog, case):
    """Inputs that process but would silently mislead: a WARNING that names the column or key."""
    with caplog.at_level(logging.INFO, logger="mtrank.data"):
        processed = process(PipelineConfig.from_mapping(_mapping(case)), tmp_path / "proc")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(re.search(case["warning"], w) for w in warnings), warnings
    for key in case.get("metadata_ignored_keys", []):
        assert key in processed.metadata["ignored_split_keys"]


def test_split_sizes_are_logged_for_every_run(tmp_path, caplog):
    """Rows, requests and positives per task of every split, at INFO, and in metadata.json."""
    with caplog.at_level(logging.INFO, logger="mtrank.data"):
        processed = process(PipelineConfig.from_mapping(pipeline_mapping(CORPUS / "good.csv")), tmp_path / "proc")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Split ")]
    assert lines == [
        "Split train: 6 rows, 6 requests, positives per task {'save': 2, 'click': 3, 'long_click': 2, 'closeup': 2}",
        "Split val: 2 rows, 2 requests, positives per task {'save': 1, 'click': 1, 'long_click': 0, 'closeup': 1}",
        "Split test: 2 rows, 2 requests, positives per task {'save': 0, 'click': 1, 'long_click': 1, 'closeup': 0}",
    ]
    assert processed.metadata["split_sizes"]["train"] == {
        "rows": 6,
        "requests": 6,
        "positives": {"save": 2, "click": 3, "long_click": 2, "closeup": 2},
    }
    assert processed.metadata["ignored_split_keys"] == []
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mtrank.data"):  # a cached data set says the same
        process(PipelineConfig.from_mapping(pipeline_mapping(CORPUS / "good.csv")), tmp_path / "proc")
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("Split ")] == lines


def test_good_file_processes(tmp_path):
    """Every bad file is good.csv with one defect: good.csv itself must pass, so each case fails for its defect."""
    processed = process(PipelineConfig.from_mapping(pipeline_mapping(CORPUS / "good.csv")), tmp_path / "proc")
    assert [processed.rows(s) for s in ("train", "val", "test")] == [6, 2, 2]
    assert processed.metadata["duplicate_rows"]["total"] == 0


def test_corpus_is_small_and_every_file_is_used():
    files = {p.name for p in CORPUS.iterdir() if p.is_file()}
    used = {"cases.yaml", "good.csv"}
    for case in CASES:
        inputs = case.get("inputs", [])
        used.update([inputs] if isinstance(inputs, str) else inputs)
        used.update(v[1:] for v in _strings(case.get("overrides")) if v.startswith("@"))
    assert files == used, f"unused: {sorted(files - used)}; missing: {sorted(used - files)}"
    assert sum((CORPUS / f).stat().st_size for f in files) < MAX_BYTES
    ids = [c["id"] for c in CASES]
    assert len(ids) == len(set(ids))


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
