"""Tests of the local PostgreSQL cluster, its fault proxy and its pytest plugin."""
