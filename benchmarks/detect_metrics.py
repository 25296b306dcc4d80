"""Detection metrics of `logbert detect` output: the raw-log round trip's figures, comparable with logbert evaluate's.

    python benchmarks/detect_metrics.py --model OUT --normal normal.alerts.jsonl --abnormal abnormal.alerts.jsonl \
        --projected_normal_count 553366

Prints one JSON object: the gated detector (anomaly_score at the model's anomaly_threshold) and the model alone
(model_score at its model_only_threshold), with the same metric module as `logbert evaluate`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from logbert.evaluation import detection_metrics


def read_scores(paths: list[str]) -> tuple[list[float], list[float]]:
    gated, alone = [], []
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                record = json.loads(line)
                gated.append(record["anomaly_score"])
                alone.append(record["model_score"])
    return gated, alone


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="The model folder detect used (for its thresholds).")
    parser.add_argument("--normal", nargs="+", required=True, help="detect output of normal logs")
    parser.add_argument("--abnormal", nargs="+", required=True, help="detect output of anomalous logs")
    parser.add_argument("--projected_normal_count", type=int, default=None)
    args = parser.parse_args(argv)
    config = json.loads((Path(args.model) / "config.json").read_text())
    normal, abnormal = read_scores(args.normal), read_scores(args.abnormal)
    labels = [0] * len(normal[0]) + [1] * len(abnormal[0])
    report = {
        "sessions": {"normal": len(normal[0]), "anomalous": len(abnormal[0])},
        "gated": detection_metrics(normal[0] + abnormal[0], labels, config["anomaly_threshold"],
                                   args.projected_normal_count),
        "model_alone": detection_metrics(normal[1] + abnormal[1], labels, config["model_only_threshold"],
                                         args.projected_normal_count),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
