-- The SQLite twin of ../postgres/0007_sip.sql.

CREATE TABLE sip_trunks (
    name TEXT PRIMARY KEY NOT NULL,
    domain TEXT NOT NULL,
    transport TEXT NOT NULL,
    register BOOLEAN NOT NULL,
    username TEXT,
    password TEXT,
    authorization_id TEXT,
    outbound_proxy TEXT,
    caller_id TEXT,
    can_terminate BOOLEAN NOT NULL,
    enabled BOOLEAN NOT NULL
);

CREATE TABLE sip_mappings (
    application_id TEXT NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    position INTEGER NOT NULL,
    kind TEXT NOT NULL,
    header TEXT,
    pattern TEXT NOT NULL,
    channel_id TEXT NOT NULL,
    PRIMARY KEY (application_id, name)
);
