#!/usr/bin/env python
"""Render the DeepLog HDFS sessions as synthetic raw HDFS log lines, for the raw-log round trip.

    PYTHONPATH=. python benchmarks/render_hdfs_logs.py --data-dir ../shared/data --output-dir /tmp/hdfs-raw

Each session (one line of event numbers in hdfs_deeplog/{hdfs_train, derived_normal_sample_7000,
hdfs_test_abnormal}) becomes one HDFS block: a random block id, and one log line per event in HDFS_v1's layout
(`081109 203615 148 INFO dfs.DataNode$PacketResponder: <content>`) with the real template's text
(loghub_2k/HDFS_templates_full.csv) and random but realistic parameters (datanode IPs and ports, sizes, paths,
responder numbers). The blocks of one file are interleaved in time as on a cluster: each starts at a random
second, its events follow with short gaps (deletions minutes later). Writes `<name>.log` per input file and
`anomaly_label.csv` (BlockId,Label with Normal/Anomaly, HDFS's layout) for all blocks.

Event numbers -> templates: the data README documents that DeepLog's numbers are Loghub's HDFS template numbers
(E1..E29) "for the frequent events" (5, 22, 11, 9, 26, 23, 21). For the others the same N -> EN is assumed, and
the event counts over the three files agree with it: 18 (Starting thread to transfer) and 25 (ask to replicate)
occur exactly as often (4,513 each), as one replication request and its transfer should; 16 (Transmitted block,
4,449) and 6 (Received block ... of size, 4,537) follow them; 3 and 4 (Served block / Got exception while serving)
are read-side events. No other source of the mapping was available here.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import random
import re
import sys

SPLITS = {"hdfs_train": "Normal", "derived_normal_sample_7000": "Normal", "hdfs_test_abnormal": "Anomaly"}

# Event number -> (component, level, content with {placeholders}); the contents follow HDFS_v1's lines.
LINES = {
    1: ("dfs.FSDataset", "WARN", "Adding an already existing block {blk}"),
    2: ("dfs.DataBlockScanner", "INFO", "Verification succeeded for {blk}"),
    3: ("dfs.DataNode", "INFO", "{ip}:50010 Served block {blk} to /{ip2}"),
    4: ("dfs.DataNode", "WARN", "{ip}:50010:Got exception while serving {blk} to /{ip2}:"),
    5: ("dfs.DataNode$DataXceiver", "INFO", "Receiving block {blk} src: /{ip}:{port} dest: /{ip2}:50010"),
    6: ("dfs.DataNode$DataXceiver", "INFO", "Received block {blk} src: /{ip}:{port} dest: /{ip2}:50010 of size {size}"),
    7: ("dfs.DataNode$DataXceiver", "INFO", "writeBlock {blk} received exception java.io.IOException: {error}"),
    8: ("dfs.DataNode$PacketResponder", "INFO", "PacketResponder {n} for block {blk} Interrupted."),
    9: ("dfs.DataNode$PacketResponder", "INFO", "Received block {blk} of size {size} from /{ip}"),
    10: ("dfs.DataNode$PacketResponder", "INFO", "PacketResponder {blk} {n} Exception java.io.IOException: {error}"),
    11: ("dfs.DataNode$PacketResponder", "INFO", "PacketResponder {n} for block {blk} terminating"),
    12: ("dfs.DataNode$DataXceiver", "INFO", "{ip}:50010:Exception writing block {blk} to mirror {ip2}:50010"),
    13: ("dfs.DataNode$BlockReceiver", "INFO", "Receiving empty packet for block {blk}"),
    14: ("dfs.DataNode$BlockReceiver", "INFO",
         "Exception in receiveBlock for block {blk} java.io.IOException: {error}"),
    15: ("dfs.DataNode$BlockReceiver", "INFO",
         "Changing block file offset of block {blk} from {offset} to {offset2} meta file offset to {meta}"),
    16: ("dfs.DataNode$DataTransfer", "INFO", "{ip}:50010:Transmitted block {blk} to /{ip2}:50010"),
    17: ("dfs.DataNode", "WARN", "{ip}:50010:Failed to transfer {blk} to {ip2}:50010 got java.io.IOException: {error}"),
    18: ("dfs.DataNode", "INFO", "{ip}:50010 Starting thread to transfer block {blk} to {ip2}:50010"),
    19: ("dfs.FSDataset", "INFO", "Reopen Block {blk}"),
    20: ("dfs.FSDataset", "WARN", "Unexpected error trying to delete block {blk}. BlockInfo not found in volumeMap."),
    21: ("dfs.FSDataset", "INFO", "Deleting block {blk} file /mnt/hadoop/dfs/data/current/subdir{n2}/{blk}"),
    22: ("dfs.FSNamesystem", "INFO", "BLOCK* NameSystem.allocateBlock: {path}. {blk}"),
    23: ("dfs.FSNamesystem", "INFO", "BLOCK* NameSystem.delete: {blk} is added to invalidSet of {ip}:50010"),
    24: ("dfs.FSNamesystem", "INFO",
         "BLOCK* Removing block {blk} from neededReplications as it does not belong to any file."),
    25: ("dfs.FSNamesystem", "INFO", "BLOCK* ask {ip}:50010 to replicate {blk} to datanode(s) {ip2}:50010"),
    26: ("dfs.FSNamesystem", "INFO",
         "BLOCK* NameSystem.addStoredBlock: blockMap updated: {ip}:50010 is added to {blk} size {size}"),
    27: ("dfs.FSNamesystem", "INFO",
         "BLOCK* NameSystem.addStoredBlock: Redundant addStoredBlock request received for {blk} "
         "on {ip}:50010 size {size}"),
    28: ("dfs.FSNamesystem", "INFO", ("BLOCK* NameSystem.addStoredBlock: addStoredBlock request received for {blk} "
                                      "on {ip}:50010 size {size} But it does not belong to any file.")),
    29: ("dfs.PendingReplicationMonitor", "WARN", "PendingReplicationMonitor timed out block {blk}"),
}
# One exception text per event: a varying text would split an event into several templates (by token count),
# and the round trip needs one template per DeepLog event to compare with the event-number model.
ERROR = "Connection reset by peer"
LATE_EVENTS = {21, 23, 20}  # deletions come minutes after the writes


def template_regexes(path: str) -> dict[int, re.Pattern]:
    """HDFS_templates_full.csv's templates as regexes (`<*>` = anything), keyed by their number."""
    with open(path, newline="", encoding="utf-8") as handle:
        return {int(row["EventId"][1:]): re.compile(".*".join(map(re.escape, row["EventTemplate"].split("<*>"))) + "$")
                for row in csv.DictReader(handle)}


def random_ip(rng: random.Random) -> str:
    return f"10.25{rng.randint(0, 1)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def render_content(event: int, block: str, rng: random.Random) -> str:
    size = 67108864 if rng.random() < 0.8 else rng.randint(1, 67108863)
    task = rng.randint(0, 9999)
    offset = rng.randint(0, 67108864)
    return LINES[event][2].format(
        blk=block, ip=random_ip(rng), ip2=random_ip(rng), port=rng.randint(30000, 65000), size=size,
        n=rng.randint(0, 2), n2=rng.randint(0, 63), error=ERROR, offset=offset,
        offset2=offset + rng.randint(1, 65536), meta=rng.randint(0, 524288),
        path=f"/user/root/rand/_temporary/_task_200811{rng.randint(1, 30):02d}{rng.randint(0, 2359):04d}_0001_m_"
             f"{task:06d}_0/part-{task:05d}")


def read_sessions(path: str, limit: int | None) -> list[list[int]]:
    sessions = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                sessions.append([int(token) for token in line.split()])
                if limit is not None and len(sessions) == limit:
                    break
    return sessions


def render_split(sessions: list[list[int]], start: float, rng: random.Random, used: set) -> tuple[list, list]:
    """(sorted (time, order, line) rows, block ids) for one file's sessions, interleaved in time."""
    rows, blocks = [], []
    span = max(60.0, 2.0 * len(sessions))  # about one new block every 2 seconds
    for session in sessions:
        block = f"blk_{rng.randint(-2**63, 2**63 - 1)}"
        while block in used:
            block = f"blk_{rng.randint(-2**63, 2**63 - 1)}"
        used.add(block)
        blocks.append(block)
        time = start + rng.uniform(0, span)
        pid = rng.randint(13, 35000)
        for event in session:
            time += rng.uniform(120, 600) if event in LATE_EVENTS else rng.expovariate(1.0)
            component, level, _ = LINES[event]
            rows.append((int(time), len(rows), pid, level, component, render_content(event, block, rng)))
    rows.sort()
    return rows, blocks


def format_line(seconds: int, pid: int, level: str, component: str, content: str) -> str:
    import datetime as dt

    stamp = dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc)
    return f"{stamp:%y%m%d} {stamp:%H%M%S} {pid} {level} {component}: {content}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--data-dir", default="../shared/data", help="Holds hdfs_deeplog/ and loghub_2k/.")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--max-sessions", type=int, help="Render only the first N sessions of each file.")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--gzip", action="store_true", help="Write <name>.log.gz.")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    templates = template_regexes(os.path.join(args.data_dir, "loghub_2k", "HDFS_templates_full.csv"))
    os.makedirs(args.output_dir, exist_ok=True)
    used: set[str] = set()
    labels, counts = [], {}
    start = 1226233800.0  # 2008-11-09 12:30 UTC, HDFS_v1's first day
    for name, label in SPLITS.items():
        sessions = read_sessions(os.path.join(args.data_dir, "hdfs_deeplog", name), args.max_sessions)
        rows, blocks = render_split(sessions, start, rng, used)
        path = os.path.join(args.output_dir, name + (".log.gz" if args.gzip else ".log"))
        with (gzip.open(path, "wt", encoding="utf-8") if args.gzip else open(path, "w", encoding="utf-8")) as out:
            for seconds, _, pid, level, component, content in rows:
                out.write(format_line(seconds, pid, level, component, content) + "\n")
        # Self-check: every rendered content fits its own Loghub template.
        for event in {e for s in sessions for e in s}:
            content = render_content(event, "blk_1", rng)
            if not templates[event].match(content):
                raise SystemExit(f"event {event}: {content!r} does not fit its template")
        labels += [(block, label) for block in blocks]
        counts[name] = {"sessions": len(sessions), "lines": len(rows), "file": path}
        start = rows[-1][0] + 86400.0 if rows else start  # the next file starts a day later
    with open(os.path.join(args.output_dir, "anomaly_label.csv"), "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["BlockId", "Label"])
        writer.writerows(labels)
    print(json.dumps(counts, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
