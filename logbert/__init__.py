"""LogBERT: train BERT masked-language models on log sessions and score sessions for anomalies."""

__all__ = ["LogAnomalyPipeline"]


def __getattr__(name: str):
    # Lazy: `import logbert.data` (and every spawned parsing worker) must not pay for importing the pipeline.
    if name == "LogAnomalyPipeline":
        from .pipeline import LogAnomalyPipeline

        return LogAnomalyPipeline
    raise AttributeError(f"module 'logbert' has no attribute {name!r}")
