"""mtrank's Hydra sweeper on the Ax ``Client`` API: ``hydra/sweeper=ax`` (see ``ax_sweeper.py``).

Hydra finds it by scanning the ``hydra_plugins`` namespace package; importing it is cheap (Ax is imported
only when a sweep starts).
"""
