"""logbert.ingest.records: what is a session file and what is not (CSV sessions read, raw logs refused)."""

from __future__ import annotations

from pathlib import Path

import pytest

from logbert.data import DataError, load_corpus
from logbert.ingest.records import iter_file_records

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_a_sequence_label_csv_is_read_with_its_labels(write_bytes, data_args):
    path = write_bytes("robust.csv", b"Sequence,label\n5 5 22 11,0\n5 22 23,1\n")
    records = [record for _, record in iter_file_records(str(path), skip_bad_records=False)]
    assert records == [{"event_sequence": ["5", "5", "22", "11"], "label": 0},
                       {"event_sequence": ["5", "22", "23"], "label": 1}]
    corpus = load_corpus(data_args(path), vocab_size=10000, seed=0)
    assert len(corpus.train) == 2 and sorted(corpus.train["label"]) == [0, 1]


def test_a_csv_without_a_session_column_or_a_headerless_csv_is_refused(write_bytes):
    with pytest.raises(DataError, match="without a session column"):
        list(iter_file_records(str(write_bytes("x.csv", b"a,b\n1,2\n")), skip_bad_records=False))
    with pytest.raises(DataError, match="looks like a CSV"):
        list(iter_file_records(str(write_bytes("x.txt", b"5 5 22,0\n5 22,1\n")), skip_bad_records=False))


def test_raw_log_lines_are_refused_with_a_pointer_to_logbert_prepare(write_bytes):
    raw = (b"081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_3886 terminating\n"
           b"081109 203807 222 INFO dfs.DataNode$PacketResponder: PacketResponder 0 for block blk_-69 terminating\n")
    with pytest.raises(DataError, match="looks like raw log lines.*logbert prepare") as raised:
        list(iter_file_records(str(write_bytes("HDFS_2k.log", raw)), skip_bad_records=False))
    assert "HDFS_2k.log" in str(raised.value)


def test_event_id_text_still_reads(write_bytes):
    path = write_bytes("sessions.txt", b"5 5 22 11 9\nE1 E2 E3\n")
    assert [record for _, record in iter_file_records(str(path), False)] == [("5", "5", "22", "11", "9"),
                                                                              ("E1", "E2", "E3")]


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not here")
def test_the_real_files_that_used_to_train_silently(tmp_path):
    csv_records = list(iter_file_records(str(SHARED / "hdfs_deeplog" / "robust_log_train.csv"), False))
    assert csv_records[0][1]["event_sequence"][:3] == ["5", "5", "5"] and csv_records[0][1]["label"] in (0, 1)
    with pytest.raises(DataError, match="raw log lines"):
        list(iter_file_records(str(SHARED / "loghub_2k" / "HDFS_2k.log"), False))
