"""Entry points run by spark-submit and schedulers; each is a thin wrapper over a towerssl command."""
