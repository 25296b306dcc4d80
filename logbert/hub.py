"""Publishing a model folder to the Hugging Face hub, with errors a user can act on."""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

# Only the exported model travels: checkpoints and run logs stay local.
PUSH_IGNORE = ["checkpoint-*", "checkpoint-*/**", "runs/**", "best_model/**", "*.tmp", "rejected_records.jsonl"]
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "pipeline.py", "scoring.py", "README.md")


class HubError(RuntimeError):
    """The hub could not be reached or refused the upload; the message says what to do."""


def push_model_folder(folder: str | os.PathLike, repo_id: str, token: str | None = None, private: bool = False,
                      commit_message: str = "Upload LogBERT model") -> str:
    """Upload an exported model folder (model, tokenizer, scoring settings, pipeline code, model card) as is.

    Returns the repository URL. Raises HubError with a clear message when there is no token, no network, or
    the hub refuses.
    """
    from huggingface_hub import HfApi
    from huggingface_hub import errors as hub_errors

    folder = Path(folder)
    missing = [name for name in REQUIRED_FILES if not (folder / name).exists()]
    if missing:
        raise HubError(f"{folder} is not an exported LogBERT model folder: missing {', '.join(missing)}")
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise HubError("HF_HUB_OFFLINE is set: nothing can be pushed. Unset it on a machine with network access.")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message,
                                   ignore_patterns=PUSH_IGNORE)
    except hub_errors.LocalTokenNotFoundError:
        raise HubError("no Hugging Face token: run `hf auth login` or set HF_TOKEN, or pass --token") from None
    except hub_errors.OfflineModeIsEnabled:
        raise HubError("the hub is in offline mode (HF_HUB_OFFLINE): nothing can be pushed") from None
    except hub_errors.HfHubHTTPError as error:
        raise HubError(f"the hub refused the upload to {repo_id}: {error}") from None
    except OSError as error:  # DNS failure, refused connection, timeout
        raise HubError(f"cannot reach the Hugging Face hub to push {repo_id}: {error}") from None
    logger.info("Pushed %s to %s", folder, repo_id)
    return str(getattr(commit, "repo_url", repo_id))
