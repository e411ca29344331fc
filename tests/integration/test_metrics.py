"""Prometheus metrics: RPC counts and latency by method and code, pool gauges."""

from __future__ import annotations

import asyncio
import re
import urllib.request

import grpc

from singura_vault import metrics
from singura_vault.db.pool import Database
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb
from tests.support.status import expect_status
from tests.support.vault import Vault


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body: bytes = response.read()
    return body.decode()


async def test_metrics_count_rpcs_by_method_and_code(vault: Vault) -> None:
    """A served /metrics counts OK and failed RPCs per method, with pool gauges, and no ids."""
    port = metrics.serve_metrics("127.0.0.1:0")
    before = await asyncio.to_thread(scrape, port)
    created = await vault.organizations.CreateOrganization(
        opb.CreateOrganizationRequest(
            organization=opb.Organization(
                name="Metrics", slug="metrics-org", domain="metrics.example", plan=opb.PLAN_FREE
            )
        )
    )
    await vault.organizations.GetOrganization(
        opb.GetOrganizationRequest(organization_id=created.organization.id)
    )
    await expect_status(
        vault.organizations.GetOrganization(opb.GetOrganizationRequest(organization_id="x")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    after = await asyncio.to_thread(scrape, port)
    labels = 'grpc_method="GetOrganization",grpc_service="singura.vault.v1.OrganizationService"'
    assert f'grpc_server_started_total{{{labels},grpc_type="unary"}}' in after
    ok_line = f'grpc_server_handled_total{{grpc_code="OK",{labels},grpc_type="unary"}}'
    bad = f'grpc_server_handled_total{{grpc_code="INVALID_ARGUMENT",{labels},grpc_type="unary"}}'
    assert ok_line in after
    assert bad in after
    assert f'grpc_server_handling_seconds_bucket{{{labels},grpc_type="unary",le="0.005"}}' in after
    # The standard process and Python collectors, and no *_created series.
    assert "process_resident_memory_bytes" in after
    assert "python_gc_objects_collected_total" in after
    assert "python_info" in after
    # (A metric name, not a label value such as type="audit.checkpoint_created".)
    assert not re.search(r"^[a-z_]+_created[{ ]", after, flags=re.MULTILINE)
    assert "singura_db_pool_size" in after
    assert created.organization.id not in after  # no unbounded ids in labels
    assert after != before


async def test_audit_append_total_counts_every_chain(vault: Vault, db: Database) -> None:
    """The audit-append figure behind the metric grows with each recorded change."""
    from singura_vault.repositories.audit import AuditRepository

    repository = AuditRepository(db)
    before = await repository.appended_total()
    await vault.organizations.CreateOrganization(
        opb.CreateOrganizationRequest(
            organization=opb.Organization(
                name="Audit", slug="audit-metric", domain="audit-metric.example", plan=opb.PLAN_FREE
            )
        )
    )
    assert await repository.appended_total() == before + 1
