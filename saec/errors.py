"""The root of every error saec raises on purpose.

Each package has its own ``errors.py`` whose classes derive from :class:`SaecError`
and from the builtin they resemble, so callers may catch either. The server maps
these classes to HTTP statuses in one place (``server/problems.py``).
"""

from __future__ import annotations


class SaecError(Exception):
    """Base of all saec errors. Messages say what was expected and what was found."""
