"""logbert.ingest.cache: the per-file Arrow shard cache notices every change, moves, cleans up, fails in one line."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import time
from collections import Counter

import pytest
from datasets.arrow_writer import ArrowWriter

from logbert.data import DataError, load_corpus, tokenize_events
from logbert.ingest import cache
from logbert.tokenizer import build_event_tokenizer

CLS, SEP = 101, 102


def load(args):
    return load_corpus(args, 10000, seed=0)


def ids_of(dataset) -> list[list[int]]:
    return [list(ids) for ids in dataset["input_ids"]]


def restore_mtime(path, stat_before) -> None:
    os.utime(path, ns=(stat_before.st_atime_ns, stat_before.st_mtime_ns))  # what `touch -r` does


def test_same_size_rewrite_with_the_mtime_restored_is_parsed_again(token_session, write_json, data_args):
    path = write_json("a.json", [token_session([5], "a")])
    assert ids_of(load(data_args(path)).train) == [[CLS, 5, SEP]]
    before = os.stat(path)

    write_json("a.json", [token_session([6], "a")])  # same size, other content
    restore_mtime(path, before)
    assert os.stat(path).st_size == before.st_size

    corpus = load(data_args(path))
    assert corpus.parsed_files == 1 and ids_of(corpus.train) == [[CLS, 6, SEP]]


def test_a_file_swapped_for_another_with_the_mtime_restored_is_parsed_again(token_session, write_json, data_args):
    path = write_json("a.json", [token_session([5], "a")])
    other = write_json("other.json", [token_session([7], "a")])
    assert ids_of(load(data_args(path)).train) == [[CLS, 5, SEP]]
    before = os.stat(path)

    os.replace(other, path)
    restore_mtime(path, before)

    corpus = load(data_args(path))
    assert corpus.parsed_files == 1 and ids_of(corpus.train) == [[CLS, 7, SEP]]


def test_orphan_temporary_files_of_a_killed_build_are_removed(token_session, write_json, data_args, tmp_path):
    first = write_json("a.json", [token_session([5], "a")])
    load(data_args(first))
    shards = tmp_path / "cache" / "shards"
    orphan, live = shards / "0123.arrow.deadbeef.tmp", shards / "4567.arrow.cafef00d.tmp"
    orphan.write_bytes(b"half a shard")
    live.write_bytes(b"another run is writing this one now")
    old = time.time() - 2 * cache.STALE_TEMPORARY_SECONDS
    os.utime(orphan, (old, old))

    second = write_json("b.json", [token_session([6], "b")])
    assert load(data_args(first, second)).parsed_files == 1

    assert not orphan.exists()
    assert live.exists()  # not stale: a concurrent run's file is left alone


def test_a_moved_cache_reads_its_own_files(token_session, write_json, write_jsonl, data_args, tmp_path):
    path = write_jsonl("a.jsonl", [token_session([5], "a"), {"token_ids": "bad"}])
    cold = load(data_args(path, skip_bad_records=True))

    moved = tmp_path / "elsewhere" / "cache"
    shutil.move(str(tmp_path / "cache"), str(moved))
    for meta in moved.rglob("*.json"):
        assert str(tmp_path) not in meta.read_text()  # no absolute path is stored

    warm = load(data_args(path, skip_bad_records=True, data_cache_dir=str(moved)))
    assert warm.parsed_files == 0
    assert ids_of(warm.train) == ids_of(cold.train) == [[CLS, 5, SEP]]
    assert [r.message() for r in warm.rejected] == [r.message() for r in cold.rejected] != []


def test_shard_files_honour_the_umask(token_session, write_json, data_args, tmp_path):
    path = write_json("a.json", [token_session([5], "a")])
    previous = os.umask(0o022)
    try:
        load(data_args(path))
    finally:
        os.umask(previous)
    files = [f for f in (tmp_path / "cache" / "shards").iterdir()]
    assert files and {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o644}


def _fail_under(folder, real, error_number):
    def fake(path, *args, **kwargs):
        if str(path).startswith(str(folder)):
            raise OSError(error_number, os.strerror(error_number), str(path))
        return real(path, *args, **kwargs)
    return fake


def test_a_full_disk_while_writing_a_shard_is_one_line_and_leaves_no_temporary_file(token_session, write_json,
                                                                                  data_args, tmp_path, monkeypatch):
    path = write_json("a.json", [token_session([5], "a")])
    monkeypatch.setattr(cache.pa, "OSFile", _fail_under(tmp_path / "cache", cache.pa.OSFile, errno.ENOSPC))

    with pytest.raises(DataError) as error:
        load(data_args(path))
    message = str(error.value)
    assert "\n" not in message and "No space left on device" in message and str(tmp_path / "cache") in message
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_a_read_only_cache_folder_is_one_line(token_session, write_json, data_args, tmp_path, monkeypatch):
    path = write_json("a.json", [token_session([5], "a")])
    (tmp_path / "cache").mkdir()
    monkeypatch.setattr(os, "mkdir", _fail_under(tmp_path / "cache", os.mkdir, errno.EROFS))

    with pytest.raises(DataError, match="Read-only file system") as error:
        load(data_args(path))
    assert "\n" not in str(error.value) and str(tmp_path / "cache") in str(error.value)


def test_a_full_disk_while_writing_the_encoded_ids_is_one_line_and_leaves_nothing(write_json, data_args, tmp_path,
                                                                                monkeypatch):
    path = write_json("events.json", [{"event_sequence": ["a", "b"]}, {"event_sequence": ["b"]}])
    corpus = load(data_args(path))
    tokenizer = build_event_tokenizer(Counter({"a": 1, "b": 2}))
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def no_space(*args, **kwargs):
        raise full

    monkeypatch.setattr(ArrowWriter, "write_batch", no_space)
    monkeypatch.setattr(ArrowWriter, "finalize", no_space)  # closing fails too on a full disk
    encoded = tmp_path / "encoded" / "train.arrow"

    with pytest.raises(DataError) as error:
        tokenize_events(corpus.train, tokenizer, 8, encoded)
    assert "\n" not in str(error.value) and str(encoded) in str(error.value)
    assert "No space left on device" in str(error.value)
    assert list(encoded.parent.iterdir()) == []


# Moved from test_data.py with the cache itself



def test_second_run_parses_nothing_and_changes_reparse_only_what_changed(token_session, write_json, write_jsonl,
                                                                        data_args):
    first = write_json("a.json", [token_session([5], "a")])
    second = write_jsonl("b.jsonl", [token_session([6], "b"), {"token_ids": "bad"}])
    args = data_args(first, second, skip_bad_records=True)

    cold = load(args)
    warm = load(args)
    assert (cold.parsed_files, warm.parsed_files) == (2, 0)
    assert ids_of(warm.train) == ids_of(cold.train)
    assert [r.message() for r in warm.rejected] == [r.message() for r in cold.rejected] != []
    assert warm.cache_key == cold.cache_key

    write_json("a.json", [token_session([5, 5], "a")])  # changed content
    changed = load(args)
    assert changed.parsed_files == 1
    assert ids_of(changed.train)[0] == [CLS, 5, 5, SEP]

    stat = os.stat(first)  # same bytes, newer mtime
    os.utime(first, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert load(args).parsed_files == 1

    added = write_json("c.json", [token_session([7], "c")])
    assert load(data_args(first, second, added, skip_bad_records=True)).parsed_files == 1


@pytest.mark.parametrize("setting", [{"max_seq_length": 32}, {"skip_bad_records": True},
                                     {"truncate_long_sessions": False}, "vocab_size"])
def test_changed_settings_reparse(setting, token_session, write_json, data_args):
    path = write_json("a.json", [token_session([5], "a")])
    assert load(data_args(path)).parsed_files == 1
    if setting == "vocab_size":
        corpus = load_corpus(data_args(path), 10000 + 1, seed=0)
    else:
        corpus = load(data_args(path, **setting))
    assert corpus.parsed_files == 1
    assert load(data_args(path)).parsed_files == 0  # the first settings' shard is still there


def test_a_file_that_failed_is_parsed_again(token_session, write_json, data_args):
    path = write_json("a.json", [token_session([5]), {"token_ids": "bad"}])
    with pytest.raises(DataError):
        load(data_args(path))
    write_json("a.json", [token_session([5])])
    assert load(data_args(path)).parsed_files == 1


@pytest.mark.slow  # spawns worker processes that import the package: about 10 s
def test_parallel_parsing_gives_the_same_corpus(token_session, write_json, data_args):
    files = [write_json(f"{i}.json", [token_session([5 + i], f"s{i}")]) for i in range(3)]
    serial = load(data_args(*files))
    parallel = load(data_args(*files, preprocessing_num_workers=2, overwrite_cache=True))
    assert parallel.parsed_files == 3
    assert ids_of(parallel.train) == ids_of(serial.train)


@pytest.mark.slow  # spawns a worker process
def test_parallel_parsing_reports_the_first_bad_file_in_file_order(token_session, write_json, data_args):
    files = [write_json(f"{i}.json", [token_session([5 + i], f"s{i}")] + ([{"token_ids": "bad"}] if i % 2 else []))
             for i in range(6)]
    with pytest.raises(DataError, match="record 2") as error:
        load(data_args(*files, preprocessing_num_workers=2))
    assert str(files[1]) in str(error.value)
