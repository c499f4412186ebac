"""What a ranking service imports to look up embeddings from saec."""

from saec.clients.client import AsyncSaecClient, FieldVectors, Lookup, Retry, SaecClient
from saec.clients.errors import (
    ConnectError,
    InvalidRequestError,
    InvalidResponseError,
    RequestTooLargeError,
    SaecClientError,
    ServerError,
    ServerUnavailableError,
    UnknownFieldError,
)
from saec.clients.sharded import AsyncShardedSaecClient, ShardedSaecClient

__all__ = [
    "AsyncSaecClient",
    "AsyncShardedSaecClient",
    "ConnectError",
    "FieldVectors",
    "InvalidRequestError",
    "InvalidResponseError",
    "Lookup",
    "RequestTooLargeError",
    "Retry",
    "SaecClient",
    "SaecClientError",
    "ServerError",
    "ServerUnavailableError",
    "ShardedSaecClient",
    "UnknownFieldError",
]


def __getattr__(name: str) -> object:
    # The gRPC client loads grpc only when asked for (clients.grpc_client).
    if name == "SaecGrpcClient":
        from saec.clients.grpc_client import SaecGrpcClient

        return SaecGrpcClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
