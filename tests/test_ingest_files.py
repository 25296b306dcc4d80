"""logbert.ingest.files: files, globs and directories -> the training and validation files, or a clear error."""

from __future__ import annotations

import pytest

from logbert.data import DataError, load_corpus


def load(args):
    return load_corpus(args, 10000, seed=0)


def test_data_dir_finds_files_recursively(tmp_path, token_session, write_json, write_jsonl, data_args):
    write_json("day1.json", [token_session([5], "a")])
    write_jsonl("nested/day2.jsonl", [token_session([6], "b")])
    (tmp_path / "data" / "notes.md").write_text("not a session file")

    corpus = load(data_args(data_dir=str(tmp_path / "data")))

    assert sorted(corpus.train["session_id"]) == ["a", "b"]
    assert len(corpus.train_files) == 2


def test_data_dir_without_matching_files_is_a_clear_error(tmp_path, data_args):
    empty = tmp_path / "logs"
    empty.mkdir()
    (empty / "readme.md").write_text("nothing here")
    with pytest.raises(DataError, match="no file matches") as error:
        load(data_args(data_dir=str(empty)))
    assert str(empty) in str(error.value) and "*.json" in str(error.value)

    with pytest.raises(DataError, match="no such directory"):
        load(data_args(data_dir=str(tmp_path / "missing")))


def test_train_file_glob_matching_nothing_is_an_error(tmp_path, data_args):
    with pytest.raises(DataError, match="no such file"):
        load(data_args(tmp_path / "nothing-*.json"))


def test_a_file_both_train_and_validation_is_an_error(token_session, write_json, data_args):
    path = write_json("a.json", [token_session([5])])
    with pytest.raises(DataError, match="both training and validation"):
        load(data_args(path, validation_file=[str(path)]))
