"""``python -m toonforge_client.cli``: the ``toonforge`` command."""

import sys

from toonforge_client.cli import main

sys.exit(main())
