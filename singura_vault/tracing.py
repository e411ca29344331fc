"""Distributed tracing: W3C trace context on every call, OpenTelemetry spans when asked.

Every RPC continues the caller's trace (the ``traceparent`` metadata, W3C Trace
Context) and its log lines carry ``trace_id`` and ``span_id``. Spans are exported
over OTLP/HTTP only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set; otherwise the tracer is OpenTelemetry's
no-op one and costs next to nothing. The exporter reads the standard ``OTEL_*``
variables (headers, timeout, service name).

A span carries the RPC's service, method, status code and request id, never a
request field: no secret, token or key can reach a span attribute.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from singura_vault.logs import get_logger

log = get_logger(__name__)

TRACER_NAME = "singura_vault"
_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
PROPAGATOR = TraceContextTextMapPropagator()


def exporting(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return any(env.get(name, "").strip() for name in _ENDPOINT_VARIABLES)


def tracer_provider(exporter: SpanExporter | None = None) -> TracerProvider | None:
    """A provider that exports to exporter, or over OTLP/HTTP when the environment
    names an endpoint; None when neither (no spans are recorded then)."""
    if exporter is None:
        if not exporting():
            return None
        # Imported only when used: the exporter pulls in its HTTP stack.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    service = os.environ.get("OTEL_SERVICE_NAME", "").strip() or "singura-vault"
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    log.info("tracing_enabled", service=service)
    return provider


def tracer_from(provider: TracerProvider | None) -> Tracer:
    """The vault's tracer: the provider's, or the no-op one (trace context still flows)."""
    if provider is None:
        return trace.NoOpTracer()
    return provider.get_tracer(TRACER_NAME)
