"""Spark ETL: raw logs to validated, encoded Delta tables."""
