"""Postgres sync: logical replication in, shapes out."""
