"""Constrained Bayesian optimisation with Ax (Eq. 5), shared by ``src/tune_utility.py`` and the Hydra sweeper.

* :mod:`~mtrank.tuning.space` — search spaces; an exact sum constraint (S1) through a derived parameter;
* :mod:`~mtrank.tuning.outcomes` — outcome constraints (S3–S5) relative to a baseline arm, and their arithmetic;
* :mod:`~mtrank.tuning.problem` — the utility-weight problem read from ``conf/utility/*.yaml``;
* :mod:`~mtrank.tuning.ax_loop` — :class:`AxLoop`: the Ax ``Client``, its baseline arm, ask/tell, JSON resume;
* :mod:`~mtrank.tuning.report` — trial table, per-trial plot, atomic writes;
* :mod:`~mtrank.tuning.utility_task` — the ``tune_utility`` job;
* :mod:`~mtrank.tuning.synthetic` — predictions in the ``mtrank.scoring.score`` contract from the simulator.

Importing this package does not import Ax (about 6 s); the modules that need it import it when used.
"""
