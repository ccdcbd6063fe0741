"""Serving a trained run: an exported artifact (:mod:`mtrank.serving.export`, ``python src/export.py``), its loader
(:mod:`mtrank.serving.artifact`: raw candidate rows -> calibrated per-type probabilities, utility and order) and the
HTTP service (:mod:`mtrank.serving.app`, ``python src/serve.py``).

Importing this package loads the loader only: no training code, Hydra or Lightning.
"""

from mtrank.serving.artifact import RankingArtifact, load_artifact
from mtrank.serving.files import ARTIFACT_FORMAT, ArtifactError
from mtrank.serving.results import Ranking, RequestError

__all__ = ["ARTIFACT_FORMAT", "ArtifactError", "Ranking", "RankingArtifact", "RequestError", "load_artifact"]
