import pytest

from mtrank.utils.io import building_dir


def test_a_folder_built_beside_its_place_replaces_it_only_when_complete(tmp_path):
    final = tmp_path / "cache" / "run-abc"
    with building_dir(final) as tmp:
        assert tmp.parent == final.parent and tmp.name.startswith(".run-abc.tmp-") and not final.exists()
        (tmp / "done.json").write_text("1")
    assert (final / "done.json").read_text() == "1"
    assert [p.name for p in final.parent.iterdir()] == ["run-abc"]  # no temporary folder left

    with pytest.raises(RuntimeError, match="training failed"), building_dir(final) as tmp:
        (tmp / "half.json").write_text("?")
        raise RuntimeError("training failed")
    assert sorted(p.name for p in final.iterdir()) == ["done.json"]  # the complete folder is left as it was
    assert [p.name for p in final.parent.iterdir()] == ["run-abc"]

    with building_dir(final) as tmp:  # a complete rebuild replaces the old folder whole
        (tmp / "new.json").write_text("2")
    assert sorted(p.name for p in final.iterdir()) == ["new.json"]
