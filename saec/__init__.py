"""saec: similarity-aware embedding compression and serving."""

__version__ = "0.1.0"
