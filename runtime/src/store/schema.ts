// The SQLite schema, as an ordered list of migrations. user_version records how many have run;
// each migration runs in its own transaction, so a crash mid-upgrade leaves the previous version.
// Append new migrations; never edit one that has shipped.

import type { DatabaseSync } from 'node:sqlite';

export const MIGRATIONS: readonly string[] = [
  // 1: initial schema
  `
  CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
  );
  CREATE TABLE tenants (
    name          TEXT PRIMARY KEY,
    listener_port INTEGER NOT NULL UNIQUE,
    quota         TEXT NOT NULL,              -- JSON Quota (always complete)
    generation    INTEGER NOT NULL,           -- from meta.generation_seq: monotonic even across re-creation
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
  );
  CREATE TABLE tokens (
    hash       TEXT PRIMARY KEY,              -- sha256 hex of the token; the token itself is never stored
    tenant     TEXT REFERENCES tenants(name) ON DELETE CASCADE,  -- NULL = admin
    created_at TEXT NOT NULL
  );
  CREATE INDEX tokens_tenant ON tokens(tenant);
  CREATE TABLE services (
    tenant     TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    vip        TEXT,
    body       TEXT NOT NULL,                 -- JSON Service
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant, name)
  );
  CREATE UNIQUE INDEX services_vip ON services(tenant, vip) WHERE vip IS NOT NULL;
  CREATE TABLE routes (
    tenant     TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    body       TEXT NOT NULL,                 -- JSON Route
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant, name)
  );
  CREATE TABLE blobs (
    digest TEXT PRIMARY KEY,                  -- "sha256:<hex>" of code
    code   TEXT NOT NULL
  );
  CREATE TABLE plugins (
    tenant     TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant, name)
  );
  CREATE TABLE plugin_versions (
    tenant     TEXT NOT NULL,
    plugin     TEXT NOT NULL,
    version    INTEGER NOT NULL CHECK (version >= 1),
    digest     TEXT NOT NULL REFERENCES blobs(digest),
    size       INTEGER NOT NULL,
    language   TEXT NOT NULL CHECK (language IN ('typescript', 'javascript', 'bundle')),
    source     TEXT,                          -- NULL when the source is the code (bundles)
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant, plugin, version),
    FOREIGN KEY (tenant, plugin) REFERENCES plugins(tenant, name) ON DELETE CASCADE
  );
  CREATE INDEX plugin_versions_digest ON plugin_versions(digest);
  CREATE TRIGGER plugin_versions_immutable BEFORE UPDATE ON plugin_versions
  BEGIN SELECT RAISE(ABORT, 'plugin versions are immutable'); END;
  CREATE TABLE activations (
    tenant         TEXT NOT NULL,
    plugin         TEXT NOT NULL,
    version        INTEGER NOT NULL,
    canary_version INTEGER,
    canary_percent INTEGER CHECK (canary_percent BETWEEN 0 AND 100),
    PRIMARY KEY (tenant, plugin),
    FOREIGN KEY (tenant, plugin) REFERENCES plugins(tenant, name) ON DELETE CASCADE,
    FOREIGN KEY (tenant, plugin, version) REFERENCES plugin_versions(tenant, plugin, version),
    FOREIGN KEY (tenant, plugin, canary_version) REFERENCES plugin_versions(tenant, plugin, version)
  );
  CREATE TABLE chain (
    tenant  TEXT PRIMARY KEY REFERENCES tenants(name) ON DELETE CASCADE,
    entries TEXT NOT NULL                     -- JSON ChainEntry[]
  );
  CREATE TABLE secrets (
    tenant     TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    value      TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant, name)
  );
  CREATE TABLE workloads (
    tenant        TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    cgroup_path   TEXT NOT NULL UNIQUE,       -- one cgroup is redirected to one tenant
    proxy_address TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    PRIMARY KEY (tenant, name)
  );
  `,
  // 2: v1 additions — tenant data-plane settings, self-service rate limits, what plugin versions
  // declare (hooks, body limits, config schema); defaults filled into stored services and routes.
  `
  ALTER TABLE tenants ADD COLUMN settings TEXT NOT NULL
    DEFAULT '{"pathNormalization":"base","accessLog":{"enabled":false,"sample":1}}';
  CREATE TABLE ratelimits (
    tenant     TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    body       TEXT NOT NULL,                 -- JSON RateLimit
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant, name)
  );
  ALTER TABLE plugin_versions ADD COLUMN meta TEXT;   -- JSON PluginVersionDeclarations; NULL before v2
  UPDATE services SET body = json_set(body, '$.protocol', 'http1') WHERE json_extract(body, '$.protocol') IS NULL;
  UPDATE routes SET body = json_set(body, '$.upgrades', json('["websocket"]')) WHERE json_extract(body, '$.upgrades') IS NULL;
  UPDATE services SET body = json_set(body, '$.hashOn', 'sourceIp') WHERE json_extract(body, '$.lb') = 'ring_hash' AND json_extract(body, '$.hashOn') IS NULL;
  `,
];

/** Applies pending migrations; throws if the file is newer than this binary. */
export function migrate(db: DatabaseSync): void {
  const row = db.prepare('PRAGMA user_version').get() as { user_version: number };
  const current = row.user_version;
  if (current > MIGRATIONS.length) {
    throw new Error(`state schema version ${current} is newer than this isomesh (${MIGRATIONS.length})`);
  }
  for (let v = current; v < MIGRATIONS.length; v++) {
    db.exec('BEGIN IMMEDIATE');
    try {
      db.exec(MIGRATIONS[v]!);
      db.exec(`PRAGMA user_version = ${v + 1}`);
      db.exec('COMMIT');
    } catch (err) {
      db.exec('ROLLBACK');
      throw err;
    }
  }
}
