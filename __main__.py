"""llmemory's database, one stack per environment: `pulumi up -s dev|staging|prod`."""
import pulumi
import pulumi_postgresql as postgresql

from components import MigratedSchema, MigratedSchemaArgs

config = pulumi.Config()
runtime_roles = config.get_object("runtimeRoles") or []
roles = []
if config.get_bool("createRuntimeRoles"):
    password = config.get_secret("runtimePassword")  # optional: LOGIN without a password otherwise
    for role in runtime_roles:
        roles.append(postgresql.Role(f"role-{role}", name=role, login=True, password=password))

db = MigratedSchema(
    "llmemory",
    MigratedSchemaArgs(
        schema=config.get("schema") or None,
        module_name=config.get("moduleName") or "aword_memory",
        history_table=config.get("historyTable") or "public.schema_migrations",
        migrations_dir=config.get("migrationsDir") or "migrations",
        runtime_roles=runtime_roles,
        drop_on_destroy=config.get_bool("dropOnDestroy") or False,
        strict=config.get_bool("strict") or False,
        pool_mode=config.get("poolMode") or "auto",
        accept_schema_drift=config.get_bool("acceptSchemaDrift") or False,
    ),
    opts=pulumi.ResourceOptions(depends_on=roles),
)

pulumi.export("schema_name", db.schema_name)
pulumi.export("module_name", db.module_name)
pulumi.export("history_table", db.history_table)
pulumi.export("applied", db.applied)
pulumi.export("checksums", db.checksums)
pulumi.export("pending", db.pending)
pulumi.export("fingerprint", db.fingerprint)
