"""convert_files: files -> store, appending, failures, fsspec URLs."""

from __future__ import annotations

import pytest

from neurofm.errors import FormatError
from neurofm.store import is_store, open_store
from neurofm.store.convert import convert_files


def test_convert_files_appends_and_reports(tmp_path, edf_path):
    bad = tmp_path / "cut.edf"
    bad.write_bytes(edf_path.read_bytes()[:3000])
    out = tmp_path / "store"
    store = convert_files([edf_path, bad], out, verbose=False)
    assert store.ids == ["test_generator"]
    assert [f["path"] for f in store.failures] == [str(bad)]
    assert "truncated" in store.failures[0]["error"]
    again = convert_files([edf_path], out, verbose=False)  # appends to the existing store
    assert again.ids == ["test_generator", "test_generator-2"] and again.failures == []
    fresh = convert_files([edf_path], out, overwrite=True, verbose=False)
    assert fresh.ids == ["test_generator"]
    with pytest.raises(FormatError, match="truncated"):
        convert_files([bad], tmp_path / "strict", strict=True, verbose=False)


def test_convert_files_to_url(edf_path):
    url = "memory://neurofm-convert/store"
    assert not is_store(url)
    convert_files([edf_path], url, montage=None, verbose=False)
    assert is_store(url)
    convert_files([edf_path], url, verbose=False)
    assert len(open_store(url)) == 2
    import fsspec

    fsspec.filesystem("memory").rm("/neurofm-convert", recursive=True)
