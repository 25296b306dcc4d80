"""LogBERT: train BERT masked-language models on log sessions and score sessions for anomalies."""

from .pipeline import LogAnomalyPipeline

__all__ = ["LogAnomalyPipeline"]
