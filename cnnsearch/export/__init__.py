"""Export a study's best architecture as a trained model that runs without cnnsearch: the most
accurate trial, the most accurate one whose costs meet conditions, or every point of the
study's Pareto front.

An export folder holds ``arch.yaml`` (rebuilds with cnnsearch), ``weights.pt`` (a
state_dict: ``torch.load(..., weights_only=True)``), ``model.pt2`` (torch.export: loads
with torch alone), ``model.onnx`` (one file, dynamic batch) and ``meta.json``. The
exported graphs take float images in [0, 1], NCHW, and return logits: normalization is
inside them. Loading here never unpickles code.

The test split is read once, after the model is final: neither the search, nor the
re-evaluation of the top trials, nor the retraining sees it. Every accuracy recorded
says which images it comes from, whether the model trained on them, and the precision it
was measured in: the one the model trained in where this CPU computes it natively, and for
the test split also fp32, the exported graphs' own, where that is another.

Export and :func:`evaluate` say each phase as they go, and show a bar of images and their
rate while a model runs.

Modules: :mod:`.select` (the study's setup, its candidates, re-evaluating the top ones),
:mod:`.retrain` (retraining the winner, or its checkpoint), :mod:`.formats` (the files of an
export, and loading one back), :mod:`.evaluation` (accuracies, :func:`evaluate`,
:func:`predict`) and :mod:`.study` (:func:`export_study`, :func:`export_front`). None imports
MLflow: they read studies and register models through :mod:`cnnsearch.tracking`.
"""

from .evaluation import PRECISIONS, SPLITS, evaluate, predict
from .formats import FORMATS, Normalized, load_exported
from .study import export_front, export_study

__all__ = ["FORMATS", "PRECISIONS", "SPLITS", "Normalized", "evaluate", "export_front", "export_study", "load_exported", "predict"]
