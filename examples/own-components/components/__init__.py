"""This project's own components (Pulumi's docs suggest a components/ package for component code)."""
import pulumi


class AppDatabase(pulumi.ComponentResource):
    """The application's database schema: llmemory-db's MigratedSchema as a child, plus the app's own naming."""

    def __init__(self, name: str, schema: str, opts: pulumi.ResourceOptions = None) -> None:
        super().__init__("example:index:AppDatabase", name, None, opts)
        from llmemory_db import MigratedSchema, MigratedSchemaArgs  # the installed package: its own import name

        self.db = MigratedSchema(f"{name}-schema", MigratedSchemaArgs(
            schema=schema, module_name="notes", history_table=f"{schema}.schema_migrations"),
            opts=pulumi.ResourceOptions(parent=self))
        self.applied = self.db.applied
        self.register_outputs({"applied": self.applied})
