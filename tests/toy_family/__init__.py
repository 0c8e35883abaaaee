"""A sixth model family defined entirely inside tests/: the proof that a family is one task
spec, one net module and one trainer, with no edit anywhere else in the tree.

``spec`` (torch-free) is imported by every process through ``TOONFORGE_TASK_PLUGINS``;
``worker`` (net + trainer) by the worker through ``TOONFORGE_WORKER_PLUGINS``.
"""
