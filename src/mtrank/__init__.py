"""mtrank: multi-task ranking for recommender systems (PyTorch Lightning + Hydra)."""

__version__ = "0.1.0"
