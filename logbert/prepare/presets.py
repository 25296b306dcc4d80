"""Log formats, masking, Drain settings, timestamps and session rules for common systems (`--preset NAME`)."""

from __future__ import annotations

from copy import deepcopy

# Formats, masking regexes, depth and similarity thresholds are those of the Loghub/logparser Drain benchmark
# (logpai/logparser, Drain/benchmark.py; Zhu et al., ICSE-SEIP'19), so that grouping accuracy is comparable with
# the published figures. Literal text in a format is a regular expression, as in logparser (hence `\[`).
# Masks replace a match by `<*>`, which Drain3 treats as a parameter, exactly as logparser's preprocessing does.
# `time` says which header fields hold the timestamp and how strptime reads them (joined by one space); a format
# without a year orders sessions but cannot name daily files. Session rules follow the usual practice per system:
# HDFS by block id (Xu et al., SOSP'09), OpenStack by VM instance, Hadoop by job, BGL and the others by time windows
# (LogBERT and loglizer group BGL into windows; 5 minutes is LogBERT's choice).
PRESETS: dict[str, dict] = {
    "hdfs": {
        "log_format": "<Date> <Time> <Pid> <Level> <Component>: <Content>",
        "masking": [r"blk_-?\d+", r"(\d+\.){3}\d+(:\d+)?"],
        "depth": 4, "sim_th": 0.5,
        "time": {"fields": ["Date", "Time"], "format": "%y%m%d %H%M%S"},
        "session": {"session_regex": r"blk_-?\d+"},
    },
    "bgl": {
        "log_format": "<Label> <Timestamp> <Date> <Node> <Time> <NodeRepeat> <Type> <Component> <Level> <Content>",
        "masking": [r"core\.\d+"],
        "depth": 4, "sim_th": 0.5,
        "time": {"fields": ["Time"], "format": "%Y-%m-%d-%H.%M.%S.%f"},
        "session": {"time_window": 300.0},
        "label_field": "Label",
    },
    "openstack": {
        "log_format": r"<Logrecord> <Date> <Time> <Pid> <Level> <Component> \[<ADDR>\] <Content>",
        "masking": [r"((\d+\.){3}\d+,?)+", r"/.+?\s", r"\d+"],
        "depth": 5, "sim_th": 0.5,
        "time": {"fields": ["Date", "Time"], "format": "%Y-%m-%d %H:%M:%S.%f"},
        "session": {"session_regex": r"instance: ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"},
    },
    "hadoop": {
        "log_format": r"<Date> <Time> <Level> \[<Process>\] <Component>: <Content>",
        "masking": [r"(\d+\.){3}\d+"],
        "depth": 4, "sim_th": 0.5,
        "time": {"fields": ["Date", "Time"], "format": "%Y-%m-%d %H:%M:%S,%f"},
        # job_, application_, attempt_ and container_ ids of one job share its "<cluster timestamp>_<number>".
        "session": {"session_regex": r"(?:job|application|appattempt|attempt|container)_(\d+_\d+)"},
    },
    "spark": {
        "log_format": "<Date> <Time> <Level> <Component>: <Content>",
        "masking": [r"(\d+\.){3}\d+", r"\b[KGTM]?B\b", r"([\w-]+\.){2,}[\w-]+"],
        "depth": 4, "sim_th": 0.5,
        "time": {"fields": ["Date", "Time"], "format": "%y/%m/%d %H:%M:%S"},
        "session": {"time_window": 300.0},
    },
    "zookeeper": {
        "log_format": r"<Date> <Time> - <Level>  \[<Node>:<Component>@<Id>\] - <Content>",
        "masking": [r"(/|)(\d+\.){3}\d+(:\d+)?"],
        "depth": 4, "sim_th": 0.5,
        "time": {"fields": ["Date", "Time"], "format": "%Y-%m-%d %H:%M:%S,%f"},
        "session": {"time_window": 300.0},
    },
    "linux": {
        "log_format": r"<Month> <Date> <Time> <Level> <Component>(\[<PID>\])?: <Content>",
        "masking": [r"(\d+\.){3}\d+", r"\d{2}:\d{2}:\d{2}"],
        "depth": 6, "sim_th": 0.39,
        "time": {"fields": ["Month", "Date", "Time"], "format": "%b %d %H:%M:%S"},
        "session": {"time_window": 300.0},
    },
}

# Drain3's own example masks (drain3.ini), by name, for logs without a preset: `--mask id ip hex num`.
NAMED_MASKS: dict[str, tuple[str, str]] = {
    "id": ((r"((?<=[^A-Za-z0-9])|^)([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
            r"|[A-Za-z]+_-?\d+(_\d+)*)((?=[^A-Za-z0-9])|$)"), "ID"),
    "ip": (r"((?<=[^A-Za-z0-9])|^)(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})(:\d+)?((?=[^A-Za-z0-9])|$)", "IP"),
    "hex": (r"((?<=[^A-Za-z0-9])|^)(0x[a-f0-9A-F]+)((?=[^A-Za-z0-9])|$)", "HEX"),
    "num": (r"((?<=[^A-Za-z0-9])|^)([\-\+]?\d+)((?=[^A-Za-z0-9])|$)", "NUM"),
}
DEFAULT_MASKS = ["id", "ip", "hex", "num"]
DEFAULT_LOG_FORMAT = "<Content>"
DEFAULT_DEPTH, DEFAULT_SIM_TH = 4, 0.4  # Drain3's defaults


def get_preset(name: str) -> dict:
    """A copy of preset `name` (case-insensitive). Raises ValueError naming the known presets."""
    key = name.lower()
    if key not in PRESETS:
        raise ValueError(f"--preset {name}: unknown preset; choose one of {', '.join(sorted(PRESETS))}")
    return deepcopy(PRESETS[key])
