"""The real pgdbm 0.5, as an application runs it: a manager, then apply_pending_migrations."""
from pgdbm import AsyncDatabaseManager, AsyncMigrationManager, DatabaseConfig


async def pgdbm_apply(connection_string, path, schema=None, module="aword_memory"):
    db = AsyncDatabaseManager(DatabaseConfig(connection_string=connection_string, schema=schema,
                                             min_connections=1, max_connections=2))
    await db.connect()
    try:
        return await AsyncMigrationManager(db, migrations_path=str(path), module_name=module) \
            .apply_pending_migrations()
    finally:
        await db.disconnect()
