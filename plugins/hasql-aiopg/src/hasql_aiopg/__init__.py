"""hasql-core driver plugin for aiopg: not implemented yet (see README.md)."""
