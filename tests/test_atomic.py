"""Atomic writes: a reader finds the previous complete version or the new one, never a half-written one."""

from __future__ import annotations

import pytest

from davi.io.atomic import recover_folder, replace_folder, temp_folder_for, write_file, write_text


def _folder(path, text):
    path.mkdir(parents=True)
    (path / "f.txt").write_text(text)
    return path


def test_replace_folder_swaps_in_the_new_version_and_leaves_nothing_behind(tmp_path):
    final = _folder(tmp_path / "export", "old")
    tmp = temp_folder_for(final)  # a fresh path beside final (an old one is cleared); the writer creates it
    _folder(tmp, "new")
    replace_folder(tmp, final)
    assert (final / "f.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_kill_between_the_two_renames_recovers_the_old_version(tmp_path):
    # replace_folder renamed export -> export.old, then died before moving export.tmp into place
    _folder(tmp_path / "export.old", "old")
    _folder(tmp_path / "export.tmp", "half")
    recover_folder(tmp_path / "export")
    assert (tmp_path / "export" / "f.txt").read_text() == "old" and not (tmp_path / "export.old").exists()
    # the next replace_folder finishes the job from there
    tmp = temp_folder_for(tmp_path / "export")  # clears the half-written export.tmp
    assert not tmp.exists()
    _folder(tmp, "new")
    replace_folder(tmp, tmp_path / "export")
    assert (tmp_path / "export" / "f.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_kill_after_the_second_rename_keeps_the_new_version(tmp_path):
    # both renames done, died before deleting export.old: the new version wins, the old one goes
    _folder(tmp_path / "export", "new")
    _folder(tmp_path / "export.old", "old")
    recover_folder(tmp_path / "export")
    assert (tmp_path / "export" / "f.txt").read_text() == "new" and not (tmp_path / "export.old").exists()
    recover_folder(tmp_path / "nothing")  # nothing to recover: no-op
    assert not (tmp_path / "nothing").exists()


def test_a_failed_file_write_keeps_the_previous_file_and_no_temp(tmp_path):
    path = tmp_path / "results.json"
    write_text(path, "previous")

    def broken(tmp):
        tmp.write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_file(path, broken)
    assert path.read_text() == "previous" and sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
