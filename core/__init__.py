"""The shared core every process imports: settings, logging, domain errors, plugins.

Nothing here imports ``service``, ``worker``, ``jobs`` or ``model_store``; they all import
it. Torch-free.
"""
