"""hasql-core driver plugin for asyncpg."""
