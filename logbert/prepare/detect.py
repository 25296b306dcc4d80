"""Detection on raw logs: lines -> saved templates -> sessions as in training -> scores, one JSON line each."""

from __future__ import annotations

import heapq
import json
import os
import sys
from collections import defaultdict
from typing import IO

from .reading import CONTENT_FIELD, PrepareError, ReadStats, TimestampParser, build_format_regex, iter_parsed_lines
from .sessions import Session, SessionRule, Sessionizer
from .templates import PARSER_STATE_FILE, UNMATCHED_EVENT, load_parser

SCORE_BATCH = 256  # sessions closed together (end of input) are scored in batches of this many


class Report:
    """What --report lists: the most anomalous sessions and the templates that surprised the model most."""

    def __init__(self, top: int):
        self.top = top
        self.sessions: list[tuple[float, int, dict]] = []  # a min-heap of the `top` highest scores
        self.templates: dict[str, list] = defaultdict(lambda: [0, 0, 0.0])  # event -> [count, misses, sum prob]
        self.count = self.flagged = 0

    def add(self, record: dict) -> None:
        self.count += 1
        self.flagged += bool(record["is_anomaly"])
        worst = min(record["events"], key=lambda e: e["probability"])
        entry = (record["anomaly_score"], self.count, {"session_id": record["session_id"],
                                                       "start_time": record["start_time"], "worst": worst})
        if len(self.sessions) < self.top:
            heapq.heappush(self.sessions, entry)
        else:
            heapq.heappushpop(self.sessions, entry)
        for event in record["events"]:
            stats = self.templates[event["template"] or event["line"]]
            stats[0] += 1
            stats[1] += event["is_miss"]
            stats[2] += event["probability"]

    def write(self, path: str, lines: ReadStats, unmatched: int) -> None:
        out = [(f"logbert detect: {lines.lines} lines ({lines.unparsed} did not fit the log format, {unmatched} "
                f"matched no template), {self.count} sessions, {self.flagged} flagged as anomalous."), "",
               f"Top {min(self.top, self.count)} sessions by anomaly score:"]
        for score, _, info in sorted(self.sessions, reverse=True):
            worst = info["worst"]
            out.append(f"  {score:.4f}  {info['session_id']}  (from {info['start_time']}); least expected: "
                       f"{worst['event']} p={worst['probability']:.4f} {worst['line'][:160]}")
        out += ["", "Most surprising templates (share of occurrences the model missed):"]
        ranked = sorted(self.templates.items(), key=lambda item: (-item[1][1] / item[1][0], -item[1][0]))
        for template, (count, misses, probability) in ranked[: self.top]:
            out.append(f"  missed {misses}/{count}  mean p={probability / count:.4f}  {template[:160]}")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write("\n".join(out) + "\n")


def session_records(detector, sessions: list[Session], templates: dict[str, str],
                    threshold: float | None) -> list[dict]:
    """Score closed sessions; each event of a result carries its template, raw line and surprise."""
    results = detector.score([[event[0] for event in s.events] for s in sessions], threshold=threshold,
                             return_events=True)
    records = []
    for session, result in zip(sessions, results):
        events = []
        for (event_id, line_number, line, unmatched), scored in zip(session.events, result["events"]):
            events.append({"event": event_id, "template": None if unmatched else templates[event_id],
                           "line_number": line_number, "line": line, "unmatched": unmatched,
                           "probability": scored["probability"], "rank": scored["rank"],
                           "is_miss": scored["is_miss"]})
        records.append({"session_id": session.session_id, **session.summary_times(),
                        "anomaly_score": result["anomaly_score"], "is_anomaly": result["is_anomaly"],
                        "threshold": result["threshold"], "model_score": result.get("model_score"),
                        "known_count_vector": result.get("known_count_vector"), "num_events": len(events),
                        "num_unmatched": sum(e["unmatched"] for e in events), "events": events})
    return records


def detect_logs(args) -> dict:
    """Run `logbert detect` with parsed arguments (see cli.build_detect_parser). Returns counts for the log."""
    if not os.path.isdir(args.model):
        raise PrepareError(f"--model {args.model}: no such folder")
    if not os.path.isfile(os.path.join(args.model, PARSER_STATE_FILE)):
        raise PrepareError(f"--model {args.model} has no {PARSER_STATE_FILE}: it was not trained on data from "
                           "`logbert prepare`; score its event-id sessions with `logbert score`")
    matcher = load_parser(args.model)
    state = matcher.state
    regex, _ = build_format_regex(state["log_format"])
    time = state.get("time") or {}
    timestamp_of = TimestampParser(time["fields"], time["format"]) if time.get("format") else None
    rule = SessionRule(**{**state["session"],
                          **({"inactivity_timeout": args.inactivity_timeout} if args.inactivity_timeout else {}),
                          **({"max_events": args.max_events} if args.max_events else {})})
    sessionizer = Sessionizer(rule)

    from ..cli import load_detector
    detector = load_detector(args.model, args.device)
    stats, report = ReadStats(), Report(args.top)
    unmatched = 0
    out: IO[str] = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")

    def write(closed: list[Session]) -> None:
        for start in range(0, len(closed), SCORE_BATCH):
            for record in session_records(detector, closed[start:start + SCORE_BATCH], matcher.templates,
                                          args.threshold):
                out.write(json.dumps(record) + "\n")
                report.add(record)
            out.flush()  # a closed session is reported at once, also when reading a live stream

    try:
        for line, header in iter_parsed_lines(args.input, regex, stats):
            event_id = matcher.match(header[CONTENT_FIELD])
            unmatched += event_id is None
            event = (event_id or UNMATCHED_EVENT, stats.lines, line, event_id is None)
            write(sessionizer.add(line, header, timestamp_of(header) if timestamp_of else None, event))
        write(sessionizer.close_all())
    finally:
        if out is not sys.stdout:
            out.close()
    if args.report:
        report.write(args.report, stats, unmatched)
    return {"lines": stats.lines, "sessions": report.count, "flagged": report.flagged, "unmatched": unmatched,
            "unparsed": stats.unparsed}
