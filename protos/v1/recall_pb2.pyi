from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HistoryEvent(_message.Message):
    __slots__ = ("item_id", "timestamp", "feedback")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    timestamp: int
    feedback: float
    def __init__(self, item_id: _Optional[str] = ..., timestamp: _Optional[int] = ..., feedback: _Optional[float] = ...) -> None: ...

class MergeOverrides(_message.Message):
    __slots__ = ("policy", "weights")
    class WeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    POLICY_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    policy: str
    weights: _containers.ScalarMap[str, float]
    def __init__(self, policy: _Optional[str] = ..., weights: _Optional[_Mapping[str, float]] = ...) -> None: ...

class RetrieveRequest(_message.Message):
    __slots__ = ("user_id", "history", "k", "sources", "merge", "exclude_item_ids", "request_id", "layout")
    class Layout(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        LAYOUT_ROWS: _ClassVar[RetrieveRequest.Layout]
        LAYOUT_COLUMNS: _ClassVar[RetrieveRequest.Layout]
    LAYOUT_ROWS: RetrieveRequest.Layout
    LAYOUT_COLUMNS: RetrieveRequest.Layout
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    MERGE_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    history: _containers.RepeatedCompositeFieldContainer[HistoryEvent]
    k: int
    sources: _containers.RepeatedScalarFieldContainer[str]
    merge: MergeOverrides
    exclude_item_ids: _containers.RepeatedScalarFieldContainer[str]
    request_id: str
    layout: RetrieveRequest.Layout
    def __init__(self, user_id: _Optional[str] = ..., history: _Optional[_Iterable[_Union[HistoryEvent, _Mapping]]] = ..., k: _Optional[int] = ..., sources: _Optional[_Iterable[str]] = ..., merge: _Optional[_Union[MergeOverrides, _Mapping]] = ..., exclude_item_ids: _Optional[_Iterable[str]] = ..., request_id: _Optional[str] = ..., layout: _Optional[_Union[RetrieveRequest.Layout, str]] = ...) -> None: ...

class SourceHit(_message.Message):
    __slots__ = ("source", "rank", "score", "group")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    source: str
    rank: int
    score: float
    group: int
    def __init__(self, source: _Optional[str] = ..., rank: _Optional[int] = ..., score: _Optional[float] = ..., group: _Optional[int] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("item_id", "score", "provenance")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    score: float
    provenance: _containers.RepeatedCompositeFieldContainer[SourceHit]
    def __init__(self, item_id: _Optional[str] = ..., score: _Optional[float] = ..., provenance: _Optional[_Iterable[_Union[SourceHit, _Mapping]]] = ...) -> None: ...

class SourceReport(_message.Message):
    __slots__ = ("source", "status", "latency_ms", "artifact_version", "detail")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATUS_UNSPECIFIED: _ClassVar[SourceReport.Status]
        OK: _ClassVar[SourceReport.Status]
        TIMED_OUT: _ClassVar[SourceReport.Status]
        FAILED: _ClassVar[SourceReport.Status]
        NOT_READY: _ClassVar[SourceReport.Status]
    STATUS_UNSPECIFIED: SourceReport.Status
    OK: SourceReport.Status
    TIMED_OUT: SourceReport.Status
    FAILED: SourceReport.Status
    NOT_READY: SourceReport.Status
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_VERSION_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    source: str
    status: SourceReport.Status
    latency_ms: float
    artifact_version: str
    detail: str
    def __init__(self, source: _Optional[str] = ..., status: _Optional[_Union[SourceReport.Status, str]] = ..., latency_ms: _Optional[float] = ..., artifact_version: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class CandidateColumns(_message.Message):
    __slots__ = ("item_ids", "scores", "sources")
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    scores: _containers.RepeatedScalarFieldContainer[float]
    sources: _containers.RepeatedCompositeFieldContainer[SourceColumn]
    def __init__(self, item_ids: _Optional[_Iterable[str]] = ..., scores: _Optional[_Iterable[float]] = ..., sources: _Optional[_Iterable[_Union[SourceColumn, _Mapping]]] = ...) -> None: ...

class SourceColumn(_message.Message):
    __slots__ = ("source", "positions", "ranks", "scores", "groups")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    RANKS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    source: str
    positions: _containers.RepeatedScalarFieldContainer[int]
    ranks: _containers.RepeatedScalarFieldContainer[int]
    scores: _containers.RepeatedScalarFieldContainer[float]
    groups: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, source: _Optional[str] = ..., positions: _Optional[_Iterable[int]] = ..., ranks: _Optional[_Iterable[int]] = ..., scores: _Optional[_Iterable[float]] = ..., groups: _Optional[_Iterable[int]] = ...) -> None: ...

class RetrieveResponse(_message.Message):
    __slots__ = ("candidates", "columns", "sources", "fallback_filled", "unknown_history_items", "known_user", "request_id")
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FILLED_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_HISTORY_ITEMS_FIELD_NUMBER: _ClassVar[int]
    KNOWN_USER_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    columns: CandidateColumns
    sources: _containers.RepeatedCompositeFieldContainer[SourceReport]
    fallback_filled: int
    unknown_history_items: int
    known_user: bool
    request_id: str
    def __init__(self, candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., columns: _Optional[_Union[CandidateColumns, _Mapping]] = ..., sources: _Optional[_Iterable[_Union[SourceReport, _Mapping]]] = ..., fallback_filled: _Optional[int] = ..., unknown_history_items: _Optional[int] = ..., known_user: _Optional[bool] = ..., request_id: _Optional[str] = ...) -> None: ...

class BatchRetrieveRequest(_message.Message):
    __slots__ = ("requests", "request_id")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[RetrieveRequest]
    request_id: str
    def __init__(self, requests: _Optional[_Iterable[_Union[RetrieveRequest, _Mapping]]] = ..., request_id: _Optional[str] = ...) -> None: ...

class BatchRetrieveResponse(_message.Message):
    __slots__ = ("responses", "request_id")
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[RetrieveResponse]
    request_id: str
    def __init__(self, responses: _Optional[_Iterable[_Union[RetrieveResponse, _Mapping]]] = ..., request_id: _Optional[str] = ...) -> None: ...

class ListSourcesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SourceInfo(_message.Message):
    __slots__ = ("name", "kind", "plugin_package", "plugin_version", "artifact_version", "num_items", "status", "detail")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PLUGIN_PACKAGE_FIELD_NUMBER: _ClassVar[int]
    PLUGIN_VERSION_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_VERSION_FIELD_NUMBER: _ClassVar[int]
    NUM_ITEMS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    plugin_package: str
    plugin_version: str
    artifact_version: str
    num_items: int
    status: str
    detail: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., plugin_package: _Optional[str] = ..., plugin_version: _Optional[str] = ..., artifact_version: _Optional[str] = ..., num_items: _Optional[int] = ..., status: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class ListSourcesResponse(_message.Message):
    __slots__ = ("sources",)
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    sources: _containers.RepeatedCompositeFieldContainer[SourceInfo]
    def __init__(self, sources: _Optional[_Iterable[_Union[SourceInfo, _Mapping]]] = ...) -> None: ...

class ReloadRequest(_message.Message):
    __slots__ = ("sources",)
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    sources: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, sources: _Optional[_Iterable[str]] = ...) -> None: ...

class ReloadResponse(_message.Message):
    __slots__ = ("sources", "reloaded")
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    RELOADED_FIELD_NUMBER: _ClassVar[int]
    sources: _containers.RepeatedCompositeFieldContainer[SourceInfo]
    reloaded: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, sources: _Optional[_Iterable[_Union[SourceInfo, _Mapping]]] = ..., reloaded: _Optional[_Iterable[str]] = ...) -> None: ...
