"""Publishing a model folder to the Hugging Face hub, with errors a user can act on.

With `--push_to_hub` a training run uploads once, at the end: the exported folder (model, tokenizer, calibrated
threshold, pipeline code, model card) through `push_model_folder`. The Trainer's own pushes are turned off
(`hub_strategy="end"`, and the script never calls `trainer.save_model()`/`push_to_hub()`): at every save it would
upload OUTPUT_DIR with the checkpoint's weights and config but no threshold, and `Trainer.push_to_hub()` would
replace our model card with its draft. The Trainer still creates the repository at start, so a missing token or
network fails before training, not after it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

# Only the exported model travels: checkpoints and run logs stay local.
PUSH_IGNORE = ["checkpoint-*", "checkpoint-*/**", "runs/**", "best_model/**", "*.tmp", "*.tmp/**", "*.old/**",
               "rejected_records.jsonl", "training_args.bin"]
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "pipeline.py", "scoring.py", "README.md")


class HubError(RuntimeError):
    """The hub could not be reached or refused the upload; the message says what to do."""


def keep_trainer_from_pushing(training_args) -> None:
    """Turn the Trainer's hub pushes off (see the module docstring); the run pushes its exported folder once."""
    from transformers.trainer_utils import HubStrategy

    if training_args.push_to_hub and training_args.hub_strategy != HubStrategy.END:
        if training_args.hub_strategy != HubStrategy.EVERY_SAVE:  # not the default: the user asked for it
            logger.warning("--hub_strategy %s is ignored: the exported model folder is pushed once, at the end.",
                           training_args.hub_strategy.value)
        training_args.hub_strategy = HubStrategy.END


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
