"""Server reflection that shows the contract's documentation.

The generated _pb2 modules carry no source info, and grpcio-reflection serializes
descriptors from a pool, which drops it too; `grpcurl describe` then shows no
comments. scripts/generate_protos.py also writes the whole contract as a
FileDescriptorSet with source info (singura_vault/proto/descriptors.binpb). This
servicer answers file requests with those protos, comments included, and falls back
to the pool for the standard services served beside them (health, reflection).

Field json_names are cleared in what it serves, so that grpcurl keeps printing the
proto field names (``organization_id``), as it did before and as the README shows.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import resources
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.rpc import error_details_pb2  # type: ignore[import-untyped]  # no stubs
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

DESCRIPTOR_SET = "descriptors.binpb"


def _without_json_names(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
    for message in messages:
        for field in message.field:
            field.ClearField("json_name")
        _without_json_names(message.nested_type)


def _load() -> tuple[descriptor_pool.DescriptorPool, dict[str, bytes]]:
    raw = resources.files("singura_vault.proto").joinpath(DESCRIPTOR_SET).read_bytes()
    files = descriptor_pb2.FileDescriptorSet.FromString(raw)
    pool = descriptor_pool.DescriptorPool()
    documented: dict[str, bytes] = {}
    for file in files.file:
        pool.Add(file)
        _without_json_names(file.message_type)
        documented[file.name] = file.SerializeToString()
    # Health and reflection are served beside the vault; the google.rpc error details
    # travel in every error's trailer, and clients (grpcurl) decode them through here.
    for module in (health_pb2, reflection_pb2, error_details_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        pool.Add(proto)
    pool.Add(_v1_file())
    return pool, documented


def _v1_file() -> descriptor_pb2.FileDescriptorProto:
    """grpc/reflection/v1/reflection.proto: v1 is v1alpha under a new package name, field
    for field (the messages are the same on the wire), so it is derived rather than
    generated."""
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name = "grpc/reflection/v1/reflection.proto"
    proto.package = "grpc.reflection.v1"
    old, new = ".grpc.reflection.v1alpha.", ".grpc.reflection.v1."
    for message in proto.message_type:
        for field in message.field:
            if field.HasField("type_name"):  # scalars have none, and must not get one
                field.type_name = field.type_name.replace(old, new)
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new)
            method.output_type = method.output_type.replace(old, new)
    return proto


V1_SERVICE = "grpc.reflection.v1.ServerReflection"


def add_reflection(server: grpc.aio.Server, service_names: Iterable[str]) -> None:
    """Serve reflection v1alpha and v1 (newer clients ask for v1 first), both answering
    with the documented descriptors."""
    servicer = DocumentedReflection((*service_names, V1_SERVICE))
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(V1_SERVICE, {"ServerReflectionInfo": v1}),)
    )


# grpcio-reflection's asyncio servicer (reflection.aio, which its stubs do not declare).
_AsyncReflectionServicer: Any = reflection.aio.ReflectionServicer  # type: ignore[attr-defined]


class DocumentedReflection(_AsyncReflectionServicer):  # type: ignore[misc]  # an untyped base
    """grpcio-reflection's servicer, answering file requests with documented protos."""

    def __init__(self, service_names: Iterable[str]) -> None:
        pool, self._documented = _load()
        super().__init__(tuple(service_names), pool=pool)

    def _file_by_filename(self, request: Any, filename: str) -> Any:
        try:
            descriptor = self._pool.FindFileByName(filename)
        except KeyError:
            return super()._file_by_filename(request, filename)
        return self._response(descriptor, request)

    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        try:
            descriptor = self._pool.FindFileContainingSymbol(fully_qualified_name)
        except KeyError:
            return super()._file_containing_symbol(request, fully_qualified_name)
        return self._response(descriptor, request)

    def _response(self, descriptor: Any, request: Any) -> Any:
        """The file and every file it depends on, documented where we have it."""
        seen: dict[str, Any] = {}
        pending = [descriptor]
        while pending:
            file = pending.pop()
            if file.name in seen:
                continue
            seen[file.name] = file
            pending.extend(file.dependencies)
        serialized = []
        for name, file in seen.items():
            if name in self._documented:
                serialized.append(self._documented[name])
            else:
                proto = descriptor_pb2.FileDescriptorProto()
                file.CopyToProto(proto)
                serialized.append(proto.SerializeToString())
        return reflection_pb2.ServerReflectionResponse(
            file_descriptor_response=reflection_pb2.FileDescriptorResponse(
                file_descriptor_proto=serialized
            ),
            original_request=request,
        )
