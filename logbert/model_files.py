"""The files a model folder carries beside its weights: the known-normal fingerprints and the log templates.

Shipped next to saved models with pipeline.py (remote code), so it imports only numpy and the standard library;
numpy only where it is used, so that `logbert prepare` can take the file names from here without loading it.
"""

from __future__ import annotations

import json
import os

# Fingerprints (scoring.count_vector_key) of the event multisets of the training sessions, saved with the model.
KNOWN_COUNT_VECTORS_FILE = "known_count_vectors.npy"
# The log parser of `logbert prepare` (plain JSON), copied into models trained on its output.
PARSER_STATE_FILE = "parser_state.json"


def model_file(model_path: str | None, name: str) -> str | None:
    """The path of an optional file of a model folder or hub repository, or None when it has none."""
    if not model_path:
        return None
    if not os.path.isdir(model_path):  # a hub repository: the file is optional
        try:
            from huggingface_hub import hf_hub_download

            return hf_hub_download(model_path, name)
        except Exception:  # noqa: BLE001 - no such file, offline, or no such repo
            return None
    path = os.path.join(model_path, name)
    return path if os.path.exists(path) else None


def load_known_count_vectors(model_path: str | None) -> frozenset | None:
    """The training sessions' event-multiset fingerprints saved with the model, or None when there are none."""
    import numpy as np

    path = model_file(model_path, KNOWN_COUNT_VECTORS_FILE)
    return None if path is None else frozenset(np.load(path, allow_pickle=False).tolist())


def load_templates(model_path: str | None) -> dict[str, str] | None:
    """Event id -> template text from the parser state `logbert prepare` wrote (plain JSON), or None."""
    path = model_file(model_path, PARSER_STATE_FILE)
    if path is None:
        return None
    with open(path, encoding="utf-8") as handle:
        state = json.load(handle)
    return {entry["event_id"]: entry["template"] for entry in state.get("templates", [])}


def write_known_count_vectors(directory, keys) -> str:
    """Save fingerprints (scoring.count_vector_key) as a sorted int64 array; what the pipeline loads."""
    import numpy as np

    path = os.path.join(str(directory), KNOWN_COUNT_VECTORS_FILE)
    np.save(path, np.array(sorted(keys), dtype=np.int64))
    return path
