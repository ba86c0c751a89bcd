-- The cluster's configuration: deployments, applications with their secrets, channel
-- configurations, and the audit log of administrative changes. The SQLite twin in
-- ../sqlite/0001_configuration.sql must keep the same tables, columns and meaning.
-- Lists are JSON arrays in TEXT, and times Unix milliseconds, so that one set of queries
-- serves both databases.

CREATE TABLE deployments (
    id TEXT PRIMARY KEY,
    name TEXT,
    stun_servers TEXT NOT NULL,
    sfu_connections_per_cpu_safe BIGINT NOT NULL CHECK (sfu_connections_per_cpu_safe >= 0),
    sfu_connections_per_cpu_unsafe BIGINT NOT NULL CHECK (sfu_connections_per_cpu_unsafe >= 0),
    mcu_connections_per_cpu_safe BIGINT NOT NULL CHECK (mcu_connections_per_cpu_safe >= 0),
    mcu_connections_per_cpu_unsafe BIGINT NOT NULL CHECK (mcu_connections_per_cpu_unsafe >= 0),
    clustering_strategy TEXT NOT NULL
);

CREATE TABLE applications (
    id TEXT PRIMARY KEY,
    -- Oldest first, one or two.
    secrets TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE channel_configs (
    application_id TEXT NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    pattern TEXT NOT NULL,
    position BIGINT NOT NULL,
    allowed_codecs TEXT NOT NULL,
    max_bitrate_kbps BIGINT CHECK (max_bitrate_kbps > 0),
    sfu_allowed BOOLEAN NOT NULL,
    mcu_allowed BOOLEAN NOT NULL,
    PRIMARY KEY (application_id, pattern),
    UNIQUE (application_id, position)
);

CREATE TABLE audit_log (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
