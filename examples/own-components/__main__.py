import pulumi

import components  # this project's own package, not llmemory-db's
from components import AppDatabase

db = AppDatabase("notes", schema=pulumi.Config().get("schema") or "notes")
pulumi.export("applied", db.applied)
pulumi.export("components_package", components.__file__)
