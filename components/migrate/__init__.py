"""``python -m components.migrate`` and ``components.migrate`` still work: the engine is ``llmemory_db.migrate``."""
from llmemory_db.migrate import *  # noqa: F401,F403
