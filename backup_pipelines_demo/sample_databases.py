"""Five sample databases with realistic tables, foreign keys and a few MB of data each.

`scale` multiplies the row counts (1 gives a few MB per database; tests use less).
"""

from __future__ import annotations

import os

import psycopg
from psycopg import sql

SAMPLE_DATABASES = ("agentic", "approvals", "langfuse", "temporal", "saas_console")
BACKUP_ROLE = "backup"
RESTORE_TEST_ROLE = "restore_tester"

_SCHEMAS: dict[str, str] = {
    "agentic": """
CREATE TABLE agents (id bigserial PRIMARY KEY, name text NOT NULL UNIQUE,
  model text NOT NULL, config jsonb NOT NULL DEFAULT '{{}}', created_at timestamptz NOT NULL);
CREATE TABLE conversations (id bigserial PRIMARY KEY, agent_id bigint NOT NULL REFERENCES agents,
  title text, started_at timestamptz NOT NULL);
CREATE TABLE messages (id bigserial PRIMARY KEY,
  conversation_id bigint NOT NULL REFERENCES conversations ON DELETE CASCADE,
  role text NOT NULL CHECK (role IN ('user', 'assistant', 'tool')), content text NOT NULL,
  tokens int NOT NULL CHECK (tokens >= 0), created_at timestamptz NOT NULL);
INSERT INTO agents (name, model, config, created_at)
  SELECT 'agent-' || g, (ARRAY['small', 'medium', 'large'])[1 + g % 3],
         jsonb_build_object('temperature', (g % 10) / 10.0, 'tools', jsonb_build_array('search', 'sql')),
         now() - g * interval '1 day'
  FROM generate_series(1, {n100}) g;
INSERT INTO conversations (agent_id, title, started_at)
  SELECT 1 + g % {n100}, 'Conversation about ' || md5(g::text), now() - g * interval '1 minute'
  FROM generate_series(1, {n2000}) g;
INSERT INTO messages (conversation_id, role, content, tokens, created_at)
  SELECT 1 + g % {n2000}, (ARRAY['user', 'assistant', 'tool'])[1 + g % 3],
         repeat(md5(g::text) || ' ', 1 + g % 8), g % 900, now() - g * interval '1 second'
  FROM generate_series(1, {n20000}) g;
CREATE MATERIALIZED VIEW agent_usage AS
  SELECT c.agent_id, count(*) AS messages, sum(m.tokens) AS tokens
  FROM messages m JOIN conversations c ON c.id = m.conversation_id GROUP BY c.agent_id;
""",
    "approvals": """
CREATE TABLE users (id serial PRIMARY KEY, email text NOT NULL UNIQUE, name text NOT NULL);
CREATE TABLE requests (id bigserial PRIMARY KEY, requester_id int NOT NULL REFERENCES users,
  amount numeric(12, 2) NOT NULL CHECK (amount > 0), reason text NOT NULL,
  status text NOT NULL DEFAULT 'pending', created_at timestamptz NOT NULL);
CREATE TABLE decisions (id bigserial PRIMARY KEY, request_id bigint NOT NULL REFERENCES requests,
  approver_id int NOT NULL REFERENCES users, approved boolean NOT NULL, note text,
  decided_at timestamptz NOT NULL);
INSERT INTO users (email, name) SELECT 'user' || g || '@example.com', 'User ' || g
  FROM generate_series(1, {n500}) g;
INSERT INTO requests (requester_id, amount, reason, status, created_at)
  SELECT 1 + g % {n500}, (g % 5000) + 0.99, 'Purchase of ' || md5(g::text) || ' for team ' || g % 40,
         (ARRAY['pending', 'approved', 'rejected'])[1 + g % 3], now() - g * interval '5 minutes'
  FROM generate_series(1, {n20000}) g;
INSERT INTO decisions (request_id, approver_id, approved, note, decided_at)
  SELECT g, 1 + (g * 7) % {n500}, g % 4 <> 0, 'Reviewed: ' || md5((g * 3)::text), now()
  FROM generate_series(1, {n15000}) g;
""",
    "langfuse": """
CREATE TABLE projects (id serial PRIMARY KEY, name text NOT NULL UNIQUE);
CREATE TABLE traces (id bigserial PRIMARY KEY, project_id int NOT NULL REFERENCES projects,
  name text NOT NULL, metadata jsonb, ts timestamptz NOT NULL);
CREATE TABLE observations (id bigserial, trace_id bigint NOT NULL REFERENCES traces,
  kind text NOT NULL, input jsonb, output jsonb, latency_ms int, ts timestamptz NOT NULL,
  PRIMARY KEY (id, ts)) PARTITION BY RANGE (ts);
CREATE TABLE observations_old PARTITION OF observations
  FOR VALUES FROM ('2000-01-01') TO ('2026-01-01');
CREATE TABLE observations_recent PARTITION OF observations
  FOR VALUES FROM ('2026-01-01') TO ('2100-01-01');
INSERT INTO projects (name) SELECT 'project-' || g FROM generate_series(1, 20) g;
INSERT INTO traces (project_id, name, metadata, ts)
  SELECT 1 + g % 20, 'trace-' || g, jsonb_build_object('user', 'u' || g % 300, 'tags',
         jsonb_build_array('prod', 'v' || g % 5)), now() - g * interval '1 minute'
  FROM generate_series(1, {n5000}) g;
INSERT INTO observations (trace_id, kind, input, output, latency_ms, ts)
  SELECT 1 + g % {n5000}, (ARRAY['span', 'generation', 'event'])[1 + g % 3],
         jsonb_build_object('prompt', md5(g::text)), jsonb_build_object('text', repeat(md5(g::text), 3)),
         g % 2000, timestamptz '2026-01-01' + (g - {n15000}) * interval '13 minutes'
  FROM generate_series(1, {n30000}) g;
""",
    "temporal": """
CREATE TABLE namespaces (id serial PRIMARY KEY, name text NOT NULL UNIQUE);
CREATE TABLE workflows (id bigserial PRIMARY KEY, namespace_id int NOT NULL REFERENCES namespaces,
  workflow_id text NOT NULL, run_id uuid NOT NULL, state smallint NOT NULL, UNIQUE (workflow_id, run_id));
CREATE TABLE history_events (workflow_pk bigint NOT NULL REFERENCES workflows,
  event_id int NOT NULL, event_type text NOT NULL, data bytea NOT NULL,
  PRIMARY KEY (workflow_pk, event_id));
INSERT INTO namespaces (name) SELECT 'ns-' || g FROM generate_series(1, 8) g;
INSERT INTO workflows (namespace_id, workflow_id, run_id, state)
  SELECT 1 + g % 8, 'wf-' || g, md5(g::text)::uuid, g % 4 FROM generate_series(1, {n4000}) g;
INSERT INTO history_events (workflow_pk, event_id, event_type, data)
  SELECT 1 + g % {n4000}, g, (ARRAY['Started', 'Scheduled', 'Completed'])[1 + g % 3],
         decode(repeat(md5(g::text), 4), 'hex')
  FROM generate_series(1, {n40000}) g;
""",
    "saas_console": """
CREATE TABLE accounts (id serial PRIMARY KEY, name text NOT NULL, plan text NOT NULL,
  created_at timestamptz NOT NULL);
CREATE TABLE members (id serial PRIMARY KEY, account_id int NOT NULL REFERENCES accounts,
  email text NOT NULL, role text NOT NULL, UNIQUE (account_id, email));
CREATE TABLE invoices (id bigserial PRIMARY KEY, account_id int NOT NULL REFERENCES accounts,
  total_cents bigint NOT NULL CHECK (total_cents >= 0), issued_on date NOT NULL,
  lines jsonb NOT NULL);
CREATE TABLE audit_log (id bigserial PRIMARY KEY, account_id int REFERENCES accounts,
  actor text NOT NULL, action text NOT NULL, at timestamptz NOT NULL);
CREATE TABLE feature_flags (name text PRIMARY KEY, enabled boolean NOT NULL);
INSERT INTO accounts (name, plan, created_at)
  SELECT 'Account ' || g, (ARRAY['free', 'team', 'enterprise'])[1 + g % 3], now() - g * interval '1 hour'
  FROM generate_series(1, {n1000}) g;
INSERT INTO members (account_id, email, role)
  SELECT 1 + g % {n1000}, 'member' || g || '@example.org', (ARRAY['owner', 'admin', 'viewer'])[1 + g % 3]
  FROM generate_series(1, {n5000}) g;
INSERT INTO invoices (account_id, total_cents, issued_on, lines)
  SELECT 1 + g % {n1000}, g * 113 % 100000, date '2026-01-01' + g % 300,
         jsonb_build_array(jsonb_build_object('sku', 'seat', 'qty', 1 + g % 20),
                           jsonb_build_object('sku', 'storage', 'gb', g % 500))
  FROM generate_series(1, {n10000}) g;
INSERT INTO audit_log (account_id, actor, action, at)
  SELECT 1 + g % {n1000}, 'member' || g % 5000, 'changed ' || md5(g::text), now() - g * interval '1 second'
  FROM generate_series(1, {n20000}) g;
INSERT INTO feature_flags VALUES ('new_billing', true), ('dark_mode', false), ('sso', true);
""",
}

_SIZES = (100, 500, 1000, 2000, 4000, 5000, 10000, 15000, 20000, 30000, 40000)


def _script(database: str, scale: float) -> str:
    counts = {f"n{size}": max(1, int(size * scale)) for size in _SIZES}
    return _SCHEMAS[database].format(**counts)


def create_sample_database(admin_url: str, database: str, scale: float = 1.0) -> None:
    """(Re)create one sample database from scratch."""
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    target = psycopg.conninfo.make_conninfo(admin_url, dbname=database)
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute(_script(database, scale))
        conn.execute("ANALYZE")


def _login_role(admin: psycopg.Connection, role: str, password: str, attributes: str) -> None:
    exists = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone()
    verb = "ALTER" if exists else "CREATE"
    admin.execute(
        sql.SQL(verb + " ROLE {} LOGIN " + attributes + " PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(password)
        )
    )


def create_backup_role(admin_url: str, password: str, role: str = BACKUP_ROLE) -> None:
    """The least-privilege role backups run as: it may read every table, nothing more."""
    with psycopg.connect(admin_url, autocommit=True) as admin:
        _login_role(admin, role, password, "")
        admin.execute(sql.SQL("GRANT pg_read_all_data TO {}").format(sql.Identifier(role)))


def create_restore_test_role(admin_url: str, password: str, role: str = RESTORE_TEST_ROLE) -> None:
    """The role restore tests run as: it may create (and so drop) its own databases only."""
    with psycopg.connect(admin_url, autocommit=True) as admin:
        _login_role(admin, role, password, "CREATEDB")


def seed(admin_url: str, backup_password: str, restore_test_password: str) -> None:
    """Sample databases that do not exist yet, and the two roles (docker compose's seed step)."""
    with psycopg.connect(admin_url, autocommit=True) as admin:
        existing = {name for (name,) in admin.execute("SELECT datname FROM pg_database")}
    for database in SAMPLE_DATABASES:
        if database not in existing:
            create_sample_database(admin_url, database)
    create_backup_role(admin_url, backup_password)
    create_restore_test_role(admin_url, restore_test_password)


if __name__ == "__main__":
    # Everything from the environment, so no password is on the command line.
    seed(
        os.environ["SAMPLE_ADMIN_URL"],
        os.environ["BACKUP_PASSWORD"],
        os.environ["RESTORE_TEST_PASSWORD"],
    )
    print(f"sample databases ready: {', '.join(SAMPLE_DATABASES)}")
