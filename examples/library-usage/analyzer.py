"""A library's own component that uses llmemory: the spec's 'Pattern 2: library usage'."""
from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi

import llmemory_db
from llmemory_db import MigratedSchema, MigratedSchemaArgs, Migrations, MigrationsArgs


@dataclass
class DocumentAnalyzerArgs:
    schema: str = "analyzer"
    runtime_roles: Sequence[str] = ()


class DocumentAnalyzer(pulumi.ComponentResource):
    """llmemory's tables (module aword_memory) plus the analyzer's own (module document_analyzer), one schema."""

    def __init__(self, name: str, args: DocumentAnalyzerArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("analyzer:index:DocumentAnalyzer", name, None, opts)
        self.memory = MigratedSchema(f"{name}-memory", MigratedSchemaArgs(
            schema=args.schema, migrations_dir=llmemory_db.LLMEMORY_MIGRATIONS, runtime_roles=args.runtime_roles),
            opts=pulumi.ResourceOptions(parent=self))
        # the analyzer's own migrations, after llmemory's (they reference its documents table)
        own = Migrations(f"{name}-own", MigrationsArgs(migrations_dir="migrations", schema=args.schema,
                                                       module_name="document_analyzer"),
                         opts=pulumi.ResourceOptions(parent=self, depends_on=[self.memory]))
        self.applied = pulumi.Output.all(self.memory.applied, own.applied).apply(lambda a: a[0] + a[1])
        self.register_outputs({"applied": self.applied})
