"""Test helpers for hasql-core: a real local PostgreSQL HA cluster, fault proxy, pytest fixtures."""
