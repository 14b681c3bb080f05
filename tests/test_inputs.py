"""INPUT expansion: files, directories, globs, @list files, and one-line errors for missing paths."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import assert_one_line_error

from sbt_batch.common.errors import InputFileError, UserError
from sbt_batch.common.inputs import expand_inputs


@pytest.fixture
def tree_of_files(tmp_path: Path) -> Path:
    for name in ("b.root", "a.root", "notes.txt"):
        (tmp_path / "d" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "d" / name).write_bytes(b"x")
    (tmp_path / "c.root").write_bytes(b"x")
    return tmp_path


def test_files_dirs_globs_keep_the_given_order(tree_of_files: Path):
    t = tree_of_files
    got = expand_inputs([t / "c.root", t / "d", str(t / "d" / "*.txt")])
    assert got == [t / "c.root", t / "d" / "a.root", t / "d" / "b.root", t / "d" / "notes.txt"]


def test_list_file_relative_to_itself_with_comments(tree_of_files: Path):
    t = tree_of_files
    (t / "d" / "list.txt").write_text("# my inputs\nb.root\n\n../c.root  # comment\n")
    (t / "outer.txt").write_text(f"@{t / 'd' / 'list.txt'}\nd/a.root\n")
    assert expand_inputs([f"@{t / 'outer.txt'}"]) == [t / "d" / "b.root", t / "d" / ".." / "c.root", t / "d" / "a.root"]


@pytest.mark.parametrize(
    "item, problem",
    [
        ("missing.root", "no such file or directory"),
        ("nothing-*.root", "no files match"),
        ("@missing-list.txt", "list file not found"),
        ("empty", "directory has no *.root files"),
    ],
)
def test_bad_inputs_raise_one_line_errors(tmp_path: Path, item: str, problem: str):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFileError) as err:
        expand_inputs([str(tmp_path / item) if not item.startswith("@") else "@" + str(tmp_path / item[1:])])
    assert problem in str(err.value) and str(tmp_path) in str(err.value)


def test_empty_list_file_and_no_inputs(tmp_path: Path):
    (tmp_path / "l.txt").write_text("# nothing\n")
    with pytest.raises(InputFileError, match="names no inputs"):
        expand_inputs([f"@{tmp_path / 'l.txt'}"])
    with pytest.raises(UserError, match="no input files"):
        expand_inputs([])


def test_cli_missing_input_is_one_line_error(sbt, tmp_path: Path):
    result = sbt("convert", tmp_path / "nope.root", "--output", tmp_path / "out.h5")
    assert_one_line_error(result, "nope.root", "no such file")
    assert not list(tmp_path.iterdir())
