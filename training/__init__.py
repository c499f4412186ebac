"""Retraining of compressed embeddings and the paper's evaluation (optional extra).

Modules that need PyTorch import it at their top: this package is only imported when the
``training`` extra is installed. Nothing outside ``training/`` imports it.
"""
