from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FieldIds(_message.Message):
    __slots__ = ("field", "ids", "keys", "hashed_ids")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    HASHED_IDS_FIELD_NUMBER: _ClassVar[int]
    field: str
    ids: _containers.RepeatedScalarFieldContainer[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    hashed_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, field: _Optional[str] = ..., ids: _Optional[_Iterable[int]] = ..., keys: _Optional[_Iterable[str]] = ..., hashed_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class LookupRequest(_message.Message):
    __slots__ = ("fields",)
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    fields: _containers.RepeatedCompositeFieldContainer[FieldIds]
    def __init__(self, fields: _Optional[_Iterable[_Union[FieldIds, _Mapping]]] = ...) -> None: ...

class FieldVectors(_message.Message):
    __slots__ = ("field", "count", "dim", "vectors", "found")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    field: str
    count: int
    dim: int
    vectors: bytes
    found: bytes
    def __init__(self, field: _Optional[str] = ..., count: _Optional[int] = ..., dim: _Optional[int] = ..., vectors: _Optional[bytes] = ..., found: _Optional[bytes] = ...) -> None: ...

class LookupResponse(_message.Message):
    __slots__ = ("version", "fields")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    version: str
    fields: _containers.RepeatedCompositeFieldContainer[FieldVectors]
    def __init__(self, version: _Optional[str] = ..., fields: _Optional[_Iterable[_Union[FieldVectors, _Mapping]]] = ...) -> None: ...

class FieldUpdate(_message.Message):
    __slots__ = ("field", "ids", "keys", "hashed_ids", "dim", "vectors")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    HASHED_IDS_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    field: str
    ids: _containers.RepeatedScalarFieldContainer[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    hashed_ids: _containers.RepeatedScalarFieldContainer[int]
    dim: int
    vectors: bytes
    def __init__(self, field: _Optional[str] = ..., ids: _Optional[_Iterable[int]] = ..., keys: _Optional[_Iterable[str]] = ..., hashed_ids: _Optional[_Iterable[int]] = ..., dim: _Optional[int] = ..., vectors: _Optional[bytes] = ...) -> None: ...

class UpdateRequest(_message.Message):
    __slots__ = ("fields",)
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    fields: _containers.RepeatedCompositeFieldContainer[FieldUpdate]
    def __init__(self, fields: _Optional[_Iterable[_Union[FieldUpdate, _Mapping]]] = ...) -> None: ...

class UpdateDistance(_message.Message):
    __slots__ = ("mean", "p99")
    MEAN_FIELD_NUMBER: _ClassVar[int]
    P99_FIELD_NUMBER: _ClassVar[int]
    mean: float
    p99: float
    def __init__(self, mean: _Optional[float] = ..., p99: _Optional[float] = ...) -> None: ...

class FieldUpdateReport(_message.Message):
    __slots__ = ("field", "accepted", "added", "reassigned", "distance", "search")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    ADDED_FIELD_NUMBER: _ClassVar[int]
    REASSIGNED_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    field: str
    accepted: int
    added: int
    reassigned: int
    distance: UpdateDistance
    search: str
    def __init__(self, field: _Optional[str] = ..., accepted: _Optional[int] = ..., added: _Optional[int] = ..., reassigned: _Optional[int] = ..., distance: _Optional[_Union[UpdateDistance, _Mapping]] = ..., search: _Optional[str] = ...) -> None: ...

class UpdateResponse(_message.Message):
    __slots__ = ("base", "sequence", "fields")
    BASE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    base: str
    sequence: int
    fields: _containers.RepeatedCompositeFieldContainer[FieldUpdateReport]
    def __init__(self, base: _Optional[str] = ..., sequence: _Optional[int] = ..., fields: _Optional[_Iterable[_Union[FieldUpdateReport, _Mapping]]] = ...) -> None: ...

class GetSnapshotRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FieldInfo(_message.Message):
    __slots__ = ("name", "kind", "dim", "k", "features", "rows")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    dim: int
    k: int
    features: int
    rows: int
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., dim: _Optional[int] = ..., k: _Optional[int] = ..., features: _Optional[int] = ..., rows: _Optional[int] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_ids", "max_body_bytes")
    MAX_IDS_FIELD_NUMBER: _ClassVar[int]
    MAX_BODY_BYTES_FIELD_NUMBER: _ClassVar[int]
    max_ids: int
    max_body_bytes: int
    def __init__(self, max_ids: _Optional[int] = ..., max_body_bytes: _Optional[int] = ...) -> None: ...

class SnapshotStatus(_message.Message):
    __slots__ = ("version", "created", "source", "format_version", "hash", "fields", "limits", "document")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    FORMAT_VERSION_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    version: str
    created: str
    source: str
    format_version: int
    hash: str
    fields: _containers.RepeatedCompositeFieldContainer[FieldInfo]
    limits: Limits
    document: _struct_pb2.Struct
    def __init__(self, version: _Optional[str] = ..., created: _Optional[str] = ..., source: _Optional[str] = ..., format_version: _Optional[int] = ..., hash: _Optional[str] = ..., fields: _Optional[_Iterable[_Union[FieldInfo, _Mapping]]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., document: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class GetMemoryRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MemoryStatus(_message.Message):
    __slots__ = ("version", "document")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    version: str
    document: _struct_pb2.Struct
    def __init__(self, version: _Optional[str] = ..., document: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...
