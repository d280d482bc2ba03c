"""Spark statistics: item popularity and the mutual information between item feature fields."""
