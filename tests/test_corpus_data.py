"""The corpus of bad data inputs (tests/corpus/data/cases.yaml): every case produces its error message, naming the
file, the column or the config key and what was expected, and leaves no half-written cache behind."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import pipeline_mapping

from mtrank.data.config import PipelineConfig
from mtrank.data.errors import DataValidationError
from mtrank.data.pipeline import process

CORPUS = Path(__file__).resolve().parent / "corpus" / "data"
CASES = yaml.safe_load((CORPUS / "cases.yaml").read_text())
MAX_BYTES = 20_000


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


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_bad_input_produces_its_error(tmp_path, case):
    proc = tmp_path / "proc"
    with pytest.raises(DataValidationError, match=case["error"]):
        process(PipelineConfig.from_mapping(_mapping(case)), proc)
    leftovers = list(proc.iterdir()) if proc.exists() else []
    assert leftovers == [], f"half-written cache entries left behind: {leftovers}"


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
