-- The SQLite twin of ../postgres/0005_webhooks.sql.

CREATE TABLE webhooks (
    application_id TEXT NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    PRIMARY KEY (application_id, name)
);
