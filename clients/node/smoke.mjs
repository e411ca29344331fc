// Node.js smoke client: proof that the vault's .proto contract works from another
// language, with nothing generated ahead of time.
//
//   VAULT_ADDRESS=127.0.0.1:50051 VAULT_API_KEY=svk_... node smoke.mjs
//
// Loads protos/singura/vault/v1/*.proto at run time with @grpc/proto-loader (the
// google.protobuf well-known types come bundled with protobufjs), then, as an admin
// key: creates an organization and a connection, stores a credential, reveals it and
// compares the value, and reads one page of the organization's audit trail, which
// must hold the credential.revealed event. Prints a one-line JSON summary on stdout
// (never the secret value). Any failure exits non-zero with a message on stderr.
//
// Optional: VAULT_SECRET_VALUE (the value to store; random by default),
// VAULT_TIMEOUT_MS (deadline of each call, default 10000).

import { randomBytes, randomUUID } from "node:crypto";
import { readdirSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const EXIT_FAILED = 1;
const EXIT_USAGE = 2;

const here = path.dirname(fileURLToPath(import.meta.url));
const protoRoot = path.resolve(here, "..", "..", "protos");
const protoDir = path.join(protoRoot, "singura", "vault", "v1");

class SmokeFailure extends Error {}

function fail(message) {
  throw new SmokeFailure(message);
}

function requireEnv(name) {
  const value = process.env[name];
  if (!value) {
    process.stderr.write(`smoke: ${name} is not set (see the top of smoke.mjs)\n`);
    process.exit(EXIT_USAGE);
  }
  return value;
}

function loadServices() {
  const files = readdirSync(protoDir)
    .filter((name) => name.endsWith(".proto"))
    .sort()
    .map((name) => path.join("singura", "vault", "v1", name));
  if (files.length === 0) fail(`no .proto files in ${protoDir}`);
  const definition = protoLoader.loadSync(files, {
    // The repository's protos; google/protobuf/*.proto resolve to protobufjs's
    // bundled copies of the well-known types, so no includeDirs entry is needed.
    includeDirs: [protoRoot],
    keepCase: true, // field names exactly as in the .proto and README (organization_id)
    enums: String,
    longs: String,
    defaults: true,
    oneofs: true,
  });
  const v1 = grpc.loadPackageDefinition(definition).singura.vault.v1;
  return { v1, files };
}

function unary(client, method, request, metadata, timeoutMs) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + timeoutMs);
    client[method](request, metadata, { deadline }, (error, response) => {
      if (error) {
        const code = grpc.status[error.code] ?? String(error.code);
        reject(new SmokeFailure(`${method} failed: ${code}: ${error.details || error.message}`));
      } else {
        resolve(response);
      }
    });
  });
}

async function main() {
  const address = requireEnv("VAULT_ADDRESS");
  const apiKey = requireEnv("VAULT_API_KEY");
  const timeoutMs = Number(process.env.VAULT_TIMEOUT_MS || "10000");
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
    process.stderr.write("smoke: VAULT_TIMEOUT_MS must be a positive number\n");
    process.exit(EXIT_USAGE);
  }
  const secret = process.env.VAULT_SECRET_VALUE || `node-smoke-${randomBytes(16).toString("hex")}`;

  const { v1, files } = loadServices();
  const credentials = grpc.credentials.createInsecure();
  const organizations = new v1.OrganizationService(address, credentials);
  const connections = new v1.ConnectionService(address, credentials);
  const vaultCredentials = new v1.CredentialService(address, credentials);
  const audit = new v1.AuditService(address, credentials);
  const clients = [organizations, connections, vaultCredentials, audit];
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${apiKey}`);

  try {
    const suffix = randomUUID().slice(0, 8);
    const { organization } = await unary(
      organizations,
      "CreateOrganization",
      {
        organization: {
          name: `Node Smoke ${suffix}`,
          slug: `node-smoke-${suffix}`,
          domain: `node-smoke-${suffix}.example`,
          plan: "PLAN_FREE",
        },
      },
      metadata,
      timeoutMs,
    );
    if (!organization?.id) fail("CreateOrganization returned no organization id");

    const { connection } = await unary(
      connections,
      "CreateConnection",
      {
        connection: {
          organization_id: organization.id,
          platform: "PLATFORM_SLACK",
          platform_user_id: `U${suffix}`,
          platform_workspace_id: "T123",
          display_name: "Node Smoke Slack",
        },
      },
      metadata,
      timeoutMs,
    );
    if (!connection?.id) fail("CreateConnection returned no connection id");

    const stored = await unary(
      vaultCredentials,
      "StoreCredential",
      {
        organization_id: organization.id,
        connection_id: connection.id,
        type: "CREDENTIAL_TYPE_ACCESS_TOKEN",
        value: secret,
      },
      metadata,
      timeoutMs,
    );
    const credential = stored.credential;
    if (!credential?.id) fail("StoreCredential returned no credential id");

    const revealed = await unary(
      vaultCredentials,
      "RevealCredential",
      {
        organization_id: organization.id,
        connection_id: connection.id,
        type: "CREDENTIAL_TYPE_ACCESS_TOKEN",
      },
      metadata,
      timeoutMs,
    );
    // Never print either value: only whether they match.
    if (revealed.value !== secret) fail("RevealCredential returned a different value than stored");
    if (revealed.credential?.id !== credential.id) {
      fail(`RevealCredential revealed credential ${revealed.credential?.id}, not ${credential.id}`);
    }

    const page = await unary(
      audit,
      "ListAuditEvents",
      { organization_id: organization.id, page_size: 50 },
      metadata,
      timeoutMs,
    );
    const actions = (page.events ?? []).map((event) => event.action);
    const reveal = (page.events ?? []).find(
      (event) => event.action === "credential.revealed" && event.resource_id === credential.id,
    );
    if (!reveal) {
      fail(
        `ListAuditEvents: no credential.revealed event for ${credential.id} ` +
          `in the first page (actions: ${actions.join(", ") || "none"})`,
      );
    }
    if (reveal.outcome !== "AUDIT_OUTCOME_SUCCESS") {
      fail(`ListAuditEvents: the reveal was audited with outcome ${reveal.outcome}`);
    }

    const require = createRequire(import.meta.url);
    const summary = {
      ok: true,
      node: process.version,
      grpc_js: require("@grpc/grpc-js/package.json").version,
      proto_loader: require("@grpc/proto-loader/package.json").version,
      proto_files: files.length,
      organization_id: organization.id,
      connection_id: connection.id,
      credential_id: credential.id,
      credential_version: credential.version,
      value_matches: true,
      audit_events: actions.length,
      audit_actions: [...new Set(actions)].sort(),
    };
    process.stdout.write(`${JSON.stringify(summary)}\n`);
  } finally {
    for (const client of clients) client.close();
  }
}

try {
  await main();
} catch (error) {
  const message = error instanceof SmokeFailure ? error.message : (error?.stack ?? String(error));
  process.stderr.write(`smoke: FAILED: ${message}\n`);
  process.exitCode = EXIT_FAILED;
}
