"""The built-in model families: one folder each, and this list, the only place naming them.

A family's folder holds everything it is: ``spec`` (its torch-free task spec, imported by
every process), ``processing`` (numpy/Pillow pre- and post-processing, shared by the API and
INT8 calibration), ``api`` (request parameters, pipelines and named routes; the API process
only), and its worker side (nets with official-checkpoint loaders, trainer, official
weights), imported by the worker only. Importing this package registers the specs, in the
order the API, the docs and the web page list the tasks; the spec names its API and worker
modules, which the processes import (core/plugins.py), as they do for a plugin family.
"""

# isort: skip_file
import families.cartoonize.spec  # noqa: F401
import families.matte.spec  # noqa: F401
import families.classify.spec  # noqa: F401
import families.generate.spec  # noqa: F401
import families.autoencode.spec  # noqa: F401
import families.portrait.spec  # noqa: F401
