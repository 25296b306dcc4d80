"""The evaluation report's plots."""

import numpy as np
import pytest
from matplotlib.figure import Figure

from logbert.evaluation import write_plots


@pytest.fixture
def drawn(monkeypatch):
    """What each saved figure shows: its legend texts and the points of its lines, by file name."""
    figures = {}
    save = Figure.savefig

    def recording_save(figure, path, **kwargs):
        axis = figure.axes[0]
        figures[path.name] = {"legend": [text.get_text() for text in axis.get_legend().get_texts()],
                              "lines": {line.get_label(): line.get_xydata() for line in axis.get_lines()}}
        save(figure, path, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording_save)
    return figures


def test_roc_draws_the_gated_and_the_model_alone_curves_with_auroc_and_the_operating_point(tmp_path, drawn):
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    gated = np.array([0.0, 0.0, 0.0, 2.0, 0.0, 3.0, 4.0, 5.0])  # the gate zeroes known multisets
    model = np.array([0.5, 1.0, 1.5, 2.0, 1.2, 3.0, 4.0, 5.0])
    baseline = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    written = write_plots(tmp_path, gated, labels, 2.5, baseline, model, 1.1)
    assert sorted(path.rsplit("/", 1)[1] for path in written) == ["precision_recall.png", "roc.png",
                                                                   "score_histogram.png"]
    assert all((tmp_path / name).stat().st_size > 0 for name in drawn)
    roc = drawn["roc.png"]
    # by hand, of 16 (anomaly, normal) pairs: gated, the anomaly at 0 ties three normals (1.5) and is below one
    assert "LogBERT + known-normal gate (AUROC 0.8438)" in roc["legend"]  # 13.5 / 16
    assert "LogBERT model alone (AUROC 0.8750)" in roc["legend"]  # 1.2 is below 1.5 and 2.0: 14 / 16
    # the operating points: > 2.5 flags no normal (drawn at the axis' edge) and 3 of 4 anomalies;
    # the model alone at > 1.1 flags 2 of 4 normals and all anomalies
    assert roc["lines"]["threshold 2.5: FPR 0.00%, TPR 75.00%"].tolist() == [[1e-4, 0.75]]
    assert roc["lines"]["threshold 1.1: FPR 50.00%, TPR 100.00%"].tolist() == [[0.5, 1.0]]
    assert roc["lines"]["count-vector baseline"].tolist() == [[0.25, 0.75]]
    assert any(text.startswith("LogBERT model alone (AUPRC") for text in drawn["precision_recall.png"]["legend"])


def test_without_the_gate_there_is_one_curve_and_non_finite_scores_do_not_break_the_plots(tmp_path, drawn):
    labels = np.array([0, 0, 1, 1])
    write_plots(tmp_path, np.array([0.1, np.nan, 0.8, np.inf]), labels, 0.5)
    assert [text for text in drawn["roc.png"]["legend"] if text.startswith("LogBERT")] == ["LogBERT (AUROC 0.7500)"]
