"""towerssl: two-tower retrieval whose item tower also learns by self-supervision."""

__version__ = "0.1.0"
