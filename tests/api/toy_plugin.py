"""A task plugin module (TOONFORGE_TASK_PLUGINS=tests.api.toy_plugin): importing it
registers the toy sketch family, as a family living outside this repository would."""

from tasks import register_task
from tests.api.toy_task import SPEC

register_task(SPEC)
