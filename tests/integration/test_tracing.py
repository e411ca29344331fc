"""Tracing: every call continues the caller's W3C trace, its log lines carry the ids, and
spans reach an OTLP endpoint when one is configured, with no secret in any attribute."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from singura_vault.composition import Components
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb
from singura_vault.proto.singura.vault.v1 import organizations_pb2_grpc
from tests.support.auth import bearer
from tests.support.canaries import canary
from tests.support.credentials import reveal, store
from tests.support.tenants import tenant
from tests.support.vault import Vault, start_vault, stop_vault
from tests.support.vault_process import serve_process

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN}-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.clear()


async def test_calls_continue_the_callers_trace_and_record_no_secret(
    components: Components,
    spans: InMemorySpanExporter,
    run_log: Path,
) -> None:
    """Server spans continue the caller's W3C trace, and no span or log records a stored secret."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    running = await start_vault(components, tracer=provider.get_tracer("test"))
    try:
        org, conn = await tenant(running)
        secret = canary("traced")
        await store(running, org, conn, secret)
        assert await reveal(running, org, conn) == secret
        traced = grpc.aio.insecure_channel(running.address, interceptors=bearer(running.admin_key))
        try:
            stub = organizations_pb2_grpc.OrganizationServiceStub(traced)
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.GetOrganization(
                    opb.GetOrganizationRequest(organization_id="not-a-uuid"),
                    metadata=(("traceparent", TRACEPARENT),),
                )
        finally:
            await traced.close()
    finally:
        await stop_vault(running)
        provider.shutdown()
    finished = spans.get_finished_spans()
    by_name = {span.name: span for span in finished}
    failed = by_name["singura.vault.v1.OrganizationService/GetOrganization"]
    assert format(failed.context.trace_id, "032x") == TRACE_ID
    assert failed.parent is not None
    assert format(failed.parent.span_id, "016x") == PARENT_SPAN
    assert failed.kind is SpanKind.SERVER
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes is not None
    assert failed.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert failed.attributes["rpc.method"] == "GetOrganization"
    revealed = by_name["singura.vault.v1.CredentialService/RevealCredential"]
    assert revealed.status.status_code is not StatusCode.ERROR
    everything = json.dumps([dict(span.attributes or {}) for span in finished])
    assert secret not in everything
    assert running.admin_key not in everything
    # The failed call's log line carries the caller's trace id.
    log_text = await asyncio.to_thread(run_log.read_text, encoding="utf-8")
    failures = [
        json.loads(line)
        for line in log_text.splitlines()
        if '"rpc_failed"' in line and TRACE_ID in line
    ]
    assert failures
    assert failures[-1]["span_id"] == format(failed.context.span_id, "016x")


class _Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP traces endpoint: keeps what it is sent."""

    received: list[bytes]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        type(self).received.append(body)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()
        self.wfile.write(trace_service_pb2.ExportTraceServiceResponse().SerializeToString())

    def log_message(self, format: str, *args: object) -> None:
        return


async def test_a_serve_process_exports_spans_over_otlp(
    vault: Vault, service_dsn: str, auth_secret: bytes, root_key: str
) -> None:
    """With OTEL_EXPORTER_OTLP_ENDPOINT set, `serve` sends its spans there; SIGTERM
    flushes them, so what the collector holds afterwards is complete."""
    handler = type("Collector", (_Collector,), {"received": []})
    collector = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=collector.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}"
    try:
        async with serve_process(
            vault,
            service_dsn,
            auth_secret,
            root_key,
            OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
            OTEL_SERVICE_NAME="vault-under-test",
        ) as address:
            channel = grpc.aio.insecure_channel(address, interceptors=bearer(vault.admin_key))
            try:
                stub = organizations_pb2_grpc.OrganizationServiceStub(channel)
                await stub.ListOrganizations(
                    opb.ListOrganizationsRequest(), metadata=(("traceparent", TRACEPARENT),)
                )
            finally:
                await channel.close()
    finally:
        collector.shutdown()
    names, services, trace_ids = set(), set(), set()
    for body in handler.received:
        request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            for attribute in resource_spans.resource.attributes:
                if attribute.key == "service.name":
                    services.add(attribute.value.string_value)
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    names.add(span.name)
                    trace_ids.add(span.trace_id.hex())
    assert "singura.vault.v1.OrganizationService/ListOrganizations" in names
    assert services == {"vault-under-test"}
    assert TRACE_ID in trace_ids
