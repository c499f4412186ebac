"""saec: similarity-aware embedding compression and serving.

The one import name of the project. Its subpackages live in the repository's top-level
folders (``store/``, ``server/``, ``clients/``, ``loaders/``, ``compress/``, ``training/``)
and install as ``saec.store``, ``saec.server``, ...; see ``[tool.setuptools.package-dir]``
in pyproject.toml.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["SaecClient", "AsyncSaecClient", "__version__"]

_SUBPACKAGES = ("store", "server", "clients", "loaders", "compress", "training")


def _extend_path_from_checkout() -> None:
    """From a source checkout the subpackages sit beside this folder, not inside it.

    Appending the repository root to ``__path__`` lets ``import saec.store`` find
    ``<root>/store`` when saec runs from the checkout (``python -m saec.cli``, the tests,
    the benchmarks) exactly as it finds ``site-packages/saec/store`` once installed. It
    applies only where every subpackage folder is there, so an installed wheel is untouched.
    """
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    if os.path.isfile(os.path.join(root, "pyproject.toml")) and all(
        os.path.isfile(os.path.join(root, name, "__init__.py")) for name in _SUBPACKAGES
    ):
        if root not in __path__:
            __path__.append(root)


_extend_path_from_checkout()

if TYPE_CHECKING:
    from saec.clients import AsyncSaecClient, SaecClient


def __getattr__(name: str) -> Any:
    # Lazy, so that `import saec` (and `saec --help`) does not pull numpy, httpx or numba.
    if name in ("SaecClient", "AsyncSaecClient"):
        from saec import clients

        return getattr(clients, name)
    raise AttributeError(f"module 'saec' has no attribute {name!r}")
