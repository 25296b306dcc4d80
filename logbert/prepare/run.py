"""The prepare stage: raw log lines -> Drain3 templates -> sessions of event ids, written for training."""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from .mining import MINING_BATCH_LINES, start_miner
from .output import (SessionSpool, StructuredSpool, length_summary, make_work_dir, read_label_file,
                     write_summary, write_templates_csv)
from .reading import CONTENT_FIELD, PrepareError, ReadStats, TimestampParser, build_format_regex, iter_parsed_lines
from .sessions import SessionRule, Sessionizer
from .templates import PARSER_STATE_FILE, DrainSettings, event_id_of, write_parser_state

logger = logging.getLogger(__name__)
NORMAL_LINE_LABELS = ("-",)  # BGL's alert tag: '-' is a normal line, anything else an alert


@dataclass
class PrepareSettings:
    """Everything `logbert prepare` needs, resolved from the preset and the flags (flags win)."""

    inputs: list[str]
    output_dir: str
    log_format: str
    drain: DrainSettings
    session: SessionRule
    preset: str | None = None
    time_fields: list[str] = field(default_factory=list)
    time_format: str | None = None
    label_file: str | None = None
    label_field: str | None = None
    structured_csv: str | None = None
    progress: bool = True
    background_mining: bool | None = None  # Drain3 in a second process; None: when it pays (see mining.py)

    def parser_state(self) -> dict:
        """What detection must reproduce, as plain JSON (the templates are added when mining ends)."""
        return {"preset": self.preset, "log_format": self.log_format,
                "time": {"fields": self.time_fields, "format": self.time_format} if self.time_format else None,
                "drain": self.drain.to_json(), "session": self.session.to_json(), "label_field": self.label_field}


def prepare_logs(settings: PrepareSettings) -> dict:
    """Run the prepare stage and write DIR/{session files, templates.csv, parser_state.json, prepare_summary.json}.

    One pass: each line is mined by Drain3 and its *cluster id* recorded in its sessions. Drain3 never merges or
    renumbers clusters (a later line only generalises a cluster's template), so the cluster a line joined is the
    one whose final template it has; the event ids and template texts are looked up once mining has ended, when
    the spooled sessions are written out. This gives every line its final template (what Loghub's ground truth
    is compared against) at the cost of one Drain3 pass, where mine-then-match would cost two. On two cores and a
    large enough input, Drain3 runs in a second process beside the rest (see mining.py).

    Returns:
        The summary (also written to prepare_summary.json).
    Raises:
        PrepareError: bad arguments, a session rule that matches no line, label ids that match no session.
    """
    regex, headers = build_format_regex(settings.log_format)
    for name, what in ((settings.session.session_field, "--session_field"), (settings.label_field, "--label_field"),
                       *((f, "--time_fields") for f in settings.time_fields)):
        if name is not None and name not in headers:
            raise PrepareError(f"{what} {name}: not a field of --log_format {settings.log_format!r}")
    if settings.label_file and settings.label_field:
        raise PrepareError("give --label_file or --label_field, not both")
    labels = read_label_file(settings.label_file) if settings.label_file else None
    timestamp_of = TimestampParser(settings.time_fields, settings.time_format) if settings.time_format else None
    sessionizer = Sessionizer(settings.session)
    stats = ReadStats()
    os.makedirs(settings.output_dir, exist_ok=True)
    label_field = settings.label_field
    labelled_sessions = 0

    with make_work_dir(settings.output_dir) as work_dir, \
            contextlib.closing(start_miner(settings.drain, settings.inputs, settings.background_mining)) as miner:
        spool = SessionSpool(work_dir, dated=timestamp_of is not None and timestamp_of.has_date, event_id=event_id_of)
        structured = StructuredSpool(work_dir, headers) if settings.structured_csv else None

        def emit(closed):
            nonlocal labelled_sessions
            for session in closed:
                if labels is not None:
                    label = labels.get(session.session_id)
                    labelled_sessions += label is not None
                elif label_field is not None:
                    label = int(any(flag for _, flag in session.events))
                else:
                    label = None
                session.events = [cluster for cluster, _ in session.events] if label_field else session.events
                spool.add(session, label)

        def group(batch: list[tuple[int, str, dict]], cluster_ids: list[int]) -> None:
            """Timestamps, structured rows and sessions of one mined batch of (line number, line, header)."""
            add_to_sessions, timestamp = sessionizer.add, None
            for (line_id, line, header), cluster_id in zip(batch, cluster_ids):
                if timestamp_of is not None:
                    timestamp = timestamp_of(header)
                    if timestamp is None:
                        stats.no_timestamp += 1
                if structured is not None:
                    structured.add(line_id, header, cluster_id)
                event = (cluster_id, header[label_field].strip() not in NORMAL_LINE_LABELS) if label_field \
                    else cluster_id
                closed = add_to_sessions(line, header, timestamp, event)
                if closed:
                    emit(closed)

        # Batch k+1 is read and handed to the miner before batch k is grouped: with a background miner the two
        # halves of the work overlap.
        lines = iter_parsed_lines(settings.inputs, regex, stats)
        batch, mined = [], None
        for line, header in tqdm(lines, desc="prepare", unit=" lines", disable=not settings.progress,
                                 mininterval=1.0):
            batch.append((stats.lines, line, header))
            if len(batch) == MINING_BATCH_LINES:
                miner.submit([header[CONTENT_FIELD] for _, _, header in batch])
                if mined is not None:
                    group(mined, miner.receive())
                mined, batch = batch, []
        if batch:
            miner.submit([header[CONTENT_FIELD] for _, _, header in batch])
        for pending in (mined, batch):
            if pending:
                group(pending, miner.receive())
        emit(sessionizer.close_all())
        templates = miner.finish()

        if stats.parsed and not sessionizer.matched_any_line:
            raise PrepareError(f"{settings.session.describe()} matched none of the {stats.parsed} parsed lines")
        if labels is not None and spool.count and not labelled_sessions:
            raise PrepareError(f"--label_file {settings.label_file}: none of its {len(labels)} ids names one of "
                               f"the {spool.count} sessions (e.g. {next(iter(labels), '')!r} vs "
                               f"{spool.first_session_id!r})")
        files = spool.finish(settings.output_dir)
        if structured is not None:
            text_of = {cluster_id: template for cluster_id, template, _ in templates}
            structured.finish(settings.structured_csv, event_id_of, text_of.__getitem__)

    write_templates_csv(os.path.join(settings.output_dir, "templates.csv"),
                        [(event_id_of(cluster_id), template, count) for cluster_id, template, count in templates])
    write_parser_state(os.path.join(settings.output_dir, PARSER_STATE_FILE), settings.parser_state(), templates)
    summary = {
        **stats.as_dict(),
        "templates": len(templates),
        "sessions": spool.count,
        "session_rule": settings.session.describe(),
        "lines_without_session": sessionizer.lines_without_session,
        "session_length": length_summary(spool.lengths),
        **({"labelled_sessions": labelled_sessions} if labels is not None else {}),
        "session_files": [os.path.basename(path) for path in files],
    }
    write_summary(os.path.join(settings.output_dir, "prepare_summary.json"), summary)
    return summary

