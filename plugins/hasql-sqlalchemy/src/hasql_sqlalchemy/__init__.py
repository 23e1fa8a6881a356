"""hasql-core driver plugin for sqlalchemy: not implemented yet (see README.md)."""
