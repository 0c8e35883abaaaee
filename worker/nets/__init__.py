"""The architecture registry and what every family's nets share (checkpoint loading, the
frozen TensorFlow graph reader). The nets themselves live in their family's folder and
register on the registry's first lookup (worker/families.py)."""
