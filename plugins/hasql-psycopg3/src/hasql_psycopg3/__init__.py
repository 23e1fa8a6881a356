"""hasql-core driver plugin for psycopg3."""
