"""What one lookup request may hold, checked before any work is spent on it.

A request's cost must stay a small multiple of its size, and large bodies must not
stall the other requests of the worker. So, in this order:

1. the body's size (``SAEC_MAX_BODY_BYTES``, 413), checked while it is read;
2. for JSON (and the binary protocol's JSON header), a GIL-free count of its object keys and array values
   (``server._jsonscan``): more keys than the snapshot has fields (422) or more values
   than ``SAEC_MAX_IDS`` (413) are refused before a single object is built;
3. after parsing, field names against the snapshot (404), id counts against
   ``SAEC_MAX_IDS`` (413), and string ids against :data:`MAX_ID_CHARS` (422);
4. only then are ids hashed, strings in one pass over their bytes
   (``store.hashing``), never as fixed-width arrays.

Bodies of :data:`THREAD_BODY_BYTES` or more are parsed in a worker thread, so the
event loop keeps answering other requests meanwhile.

Updates (``POST /admin/updates``) get the same checks, in the same order, with their own
shape: :func:`check_update_json_shape` and :func:`check_updates_header` before parsing,
then field names, row counts (``SAEC_MAX_IDS`` rows per batch) and string ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from saec.server.errors import MalformedRequestError
from saec.store.engine import LookupEngine
from saec.store.errors import BatchTooLargeError, InvalidIdsError, UnknownFieldError

# Longest string id, in characters (the OpenAPI schema's maxLength). Real ids are
# tokens, URLs or composite keys well under this; anything longer is not an id.
MAX_ID_CHARS = 1024
# Bodies from this size on are parsed off the event loop: below it, handing work to a
# thread costs more than it saves. A JSON lookup of 4096 hashed ids is 83 KB and takes
# ~0.7 ms of CPU inline; sent to a thread, the hand-off and the GIL passing back and forth
# cost 0.3-0.4 ms more (server CPU under wrk -c4, 1 worker: 1.45 against 1.22 ms a
# request at 64 KiB and 512 KiB). 512 KiB is ~25,000 hashed ids, a few ms on the loop.
THREAD_BODY_BYTES = 512 * 1024
# Top-level keys a lookup body may have besides its field names ("fields", "hashed", "encoding").
_TOP_LEVEL_KEYS = 3


def check_json_shape(body: bytes, engine: LookupEngine) -> None:
    """Refuse a JSON body that holds more keys or values than any valid lookup could.

    Raises:
        UnknownFieldError: more object keys than ``fields``, ``hashed`` and the
            snapshot's field names (404).
        MalformedRequestError: containers nested in id lists (422).
        BatchTooLargeError: more array values than ``max_ids`` allows (413).
    """
    from saec.server._jsonscan import count_structure

    keys, commas, arrays, objects = count_structure(np.frombuffer(body, dtype=np.uint8))
    allowed_keys = len(engine.snapshot.fields) + _TOP_LEVEL_KEYS
    if keys > allowed_keys:
        # More names than the snapshot has fields: some are not its fields (404), or the
        # body is not a lookup at all; either way nothing more is parsed.
        known = ", ".join(sorted(engine.snapshot.fields)) or "none"
        raise UnknownFieldError(
            f"expected field names among the snapshot's {allowed_keys - _TOP_LEVEL_KEYS} fields ({known}), "
            f"got a body with {keys} object keys"
        )
    # A lookup is one object holding one object of flat lists, one list a field name
    # (every key but "fields" and "hashed"): containers nested in id lists would cost
    # 50-70 bytes of Python objects for every 3 bytes of body.
    if objects > 2 or arrays > max(keys - 1, 0):
        raise MalformedRequestError(
            'expected {"fields": {"<field>": [ids...]}} with flat lists of ids, '
            f"got a body with {objects} objects and {arrays} lists"
        )
    # Every id but the last of each list is followed by a comma; the other commas
    # separate the (few) object members already counted above.
    values = commas + arrays
    if engine.max_ids and values > engine.max_ids + keys + 1:
        raise BatchTooLargeError(f"expected at most {engine.max_ids} ids in one lookup, got a body of about {values}")


def check_ids_header(header: bytes, engine: LookupEngine) -> None:
    """Refuse a binary request's JSON header that names more fields than the snapshot has.

    A valid header is ``{"fields": [["name", count], ...]}``: one object key and
    three array values a field.

    Raises:
        MalformedRequestError (422).
    """
    _check_fields_header(header, engine, per_field=3, what="binary header")


def check_update_json_shape(body: bytes, engine: LookupEngine) -> None:
    """Refuse a JSON update body that holds more keys, objects or rows than any valid
    update could: ``{"fields": {"<field>": {"ids": [...], "vectors": [[...], ...]}}, "hashed": b}``.

    Raises:
        UnknownFieldError: more object keys than "fields", "hashed" and, per field of the
            snapshot, its name, "ids" and "vectors" (404).
        MalformedRequestError: more objects than one per field and two (422).
        BatchTooLargeError: more vectors than ``max_ids`` allows (413).
    """
    from saec.server._jsonscan import count_structure

    keys, _, arrays, objects = count_structure(np.frombuffer(body, dtype=np.uint8))
    fields = len(engine.snapshot.fields)
    if keys > 3 * fields + 2:
        known = ", ".join(sorted(engine.snapshot.fields)) or "none"
        raise UnknownFieldError(
            f"expected an update of at most the snapshot's {fields} fields ({known}), "
            f"got a body with {keys} object keys"
        )
    if objects > fields + 2:
        raise MalformedRequestError(
            'expected {"fields": {"<field>": {"ids": [...], "vectors": [[...], ...]}}} with one object a field, '
            f"got a body with {objects} objects"
        )
    # One list a vector, plus the ids and vectors lists of each field and "fields".
    if engine.max_ids and arrays > engine.max_ids + 2 * fields + 1:
        raise BatchTooLargeError(f"expected at most {engine.max_ids} rows in one update, got a body of about {arrays}")


def check_updates_header(header: bytes, engine: LookupEngine) -> None:
    """Refuse a binary update's JSON header that names more fields than the snapshot has.

    A valid header is ``{"fields": [["name", n, dim], ...]}``: one object key and four
    array values (three items and their list) a field.

    Raises:
        MalformedRequestError (422).
    """
    _check_fields_header(header, engine, per_field=4, what="binary update header")


def _check_fields_header(header: bytes, engine: LookupEngine, *, per_field: int, what: str) -> None:
    """One object key, and at most ``per_field`` array values (commas and openings) a field
    of the snapshot, counted before the header is parsed."""
    from saec.server._jsonscan import count_structure

    keys, commas, arrays, _ = count_structure(np.frombuffer(header, dtype=np.uint8))
    fields = len(engine.snapshot.fields)
    if keys > 1 or commas + arrays > per_field * fields + 2:
        raise MalformedRequestError(
            f"expected a {what} naming at most the snapshot's {fields} fields, "
            f"got one of {len(header)} bytes with {keys} keys and about {(commas + arrays) // per_field} entries"
        )


def check_fields(names: Iterable[str], engine: LookupEngine) -> None:
    """Raise UnknownFieldError (404) for the first name the snapshot does not hold."""
    unknown = set(names) - engine.snapshot.fields.keys()
    if unknown:
        engine.field(min(unknown))  # raises, naming the field and the snapshot's fields


def check_counts(counts: Mapping[str, int], engine: LookupEngine, what: str = "lookup") -> None:
    """Raise BatchTooLargeError (413) when the ids of all fields exceed ``max_ids``."""
    total = sum(counts.values())
    if engine.max_ids and total > engine.max_ids:
        raise BatchTooLargeError(f"expected at most {engine.max_ids} ids in one {what}, got {total}")


def check_string_ids(name: str, ids: list[Any]) -> None:
    """Raise InvalidIdsError (422) for a string id over :data:`MAX_ID_CHARS` characters."""
    longest = _longest(ids)
    if longest > MAX_ID_CHARS:
        raise InvalidIdsError(
            f"field {name!r}: expected string ids of at most {MAX_ID_CHARS} characters, got one of {longest}"
        )


def _longest(ids: list[Any]) -> int:
    """The longest id's length if all are strings, else 0 (hashing refuses other kinds)."""
    if not ids or type(ids[0]) is not str:
        return 0
    try:
        return max(map(len, ids))  # runs in C
    except TypeError:
        return 0  # a mix of kinds, refused by hashing before any string work
