"""A compiled pass over a JSON body that counts its structure before it is parsed.

orjson builds a dict of a million distinct keys at about 1 us a key while holding the
GIL (a 15 MB body of unknown field names: about 1 s in which no other request is
answered), so the service first counts what the body holds (object keys and
array values, outside strings) in one GIL-free pass of about 1 ns a byte, and refuses
what no valid lookup could hold before building any object.
"""

from __future__ import annotations

import numba
import numpy as np
import numpy.typing as npt


@numba.njit(cache=True, nogil=True, boundscheck=False)
def count_structure(buf: npt.NDArray[np.uint8]) -> tuple[int, int, int, int]:
    """Separators, arrays and objects of a JSON text, counted outside strings.

    ``keys`` counts ``:`` (one per object member), ``commas`` counts ``,``,
    ``arrays`` counts ``[`` and ``objects`` counts ``{``; the values inside all arrays
    are at most ``commas + arrays``. Invalid JSON is counted as well as it goes;
    orjson rejects it afterwards.

    Args:
        buf: uint8 (n,), the body.
    Returns:
        (keys, commas, arrays, objects).
    """
    keys = 0
    commas = 0
    arrays = 0
    objects = 0
    in_string = False
    escaped = False
    for i in range(buf.shape[0]):
        c = buf[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == 92:  # backslash
                escaped = True
            elif c == 34:  # closing quote
                in_string = False
        elif c == 34:
            in_string = True
        elif c == 58:  # ':'
            keys += 1
        elif c == 44:  # ','
            commas += 1
        elif c == 91:  # '['
            arrays += 1
        elif c == 123:  # '{'
            objects += 1
    return keys, commas, arrays, objects
