"""The architectures. Importing this package registers the built-in families (timm-style:
the registry itself imports none of them); plugin families register from their own modules
(core/plugins.py, ``settings.worker_plugins``)."""

# isort: skip_file
from worker.nets import registry  # noqa: F401
from worker.nets import autoencoder, dcgan, dctnet, googlenet, u2net  # noqa: F401
import families.cartoonize.compound_net  # noqa: F401
