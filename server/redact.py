"""Public answers name no absolute filesystem paths; the logs keep them.

Paths inside the store are shown relative to it (``snapshots/<version>/user/...``),
the store itself as ``<store>``, and any other absolute path by its last component
(a compressed table's source file: ``user_emb.npz``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

# An absolute POSIX path at the start or after a delimiter, up to the next delimiter.
# "https://host/x" does not match: its "//" follows a ':' with no name in between.
_ABSOLUTE = re.compile(r"(?:(?<=^)|(?<=[\s'\"(\[=:,]))/(?:[^\s'\"/,)\]]+/)*([^\s'\"/,)\]]+)/?")


class Redactor:
    """Rewrites texts meant for clients.

    Args:
        roots: folders whose contents are named relative to them (the store); each
            is taken as given and resolved, since messages may use either form.
    """

    def __init__(self, roots: Iterable[str | os.PathLike[str]] = ()) -> None:
        forms: set[str] = set()
        for root in roots:
            for form in (os.path.abspath(root), os.path.realpath(root)):
                forms.add(form.rstrip("/"))
        # Longest first, so that a root inside another is replaced as a whole.
        self._roots = sorted((f for f in forms if f), key=len, reverse=True)

    def __call__(self, text: str | None) -> str | None:
        if not text:
            return text
        for root in self._roots:
            text = text.replace(root + "/", "").replace(root, "<store>")
        return _ABSOLUTE.sub(lambda m: m.group(1), text)
