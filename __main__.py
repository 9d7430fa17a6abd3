"""llmemory's database, one stack per environment: `pulumi up -s dev|staging|prod`.

Every `llmemory-db:*` key of Pulumi.yaml is read by the engine's one settings object (Settings.from_config);
the roles are this program's own business.
"""
import pulumi
import pulumi_postgresql as postgresql

from llmemory_db import MigratedSchema, MigratedSchemaArgs
from llmemory_db.migrate import MigrationError, Settings

config = pulumi.Config()
try:  # remedies name this program's own stack config keys (llmemory-db:acceptSchemaDrift, ...)
    settings = Settings.from_config(config.get, spelling="config")
except MigrationError as exc:
    raise pulumi.RunError(exc.render("config")) from None
runtime_roles = config.get_object("runtimeRoles") or []
roles = []
if config.get_bool("createRuntimeRoles"):
    password = config.get_secret("runtimePassword")  # optional: LOGIN without a password otherwise
    for role in runtime_roles:
        roles.append(postgresql.Role(f"role-{role}", name=role, login=True, password=password))

db = MigratedSchema(
    "llmemory",
    MigratedSchemaArgs.from_settings(settings, runtime_roles=runtime_roles, adopt=config.get_bool("adopt") or False),
    opts=pulumi.ResourceOptions(depends_on=roles),
)

pulumi.export("schema_name", db.schema_name)
pulumi.export("module_name", db.module_name)
pulumi.export("history_table", db.history_table)
pulumi.export("applied", db.applied)
pulumi.export("checksums", db.checksums)
pulumi.export("pending", db.pending)
pulumi.export("fingerprint", db.fingerprint)
pulumi.export("package_version", db.package_version)
