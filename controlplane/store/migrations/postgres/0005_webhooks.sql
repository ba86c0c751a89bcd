-- An application's webhooks: the URLs its events are posted to, each named within the
-- application (a PUT with the same name replaces it). `events` is a JSON array of event types;
-- empty: all of them. They go with their application.

CREATE TABLE webhooks (
    application_id TEXT NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    PRIMARY KEY (application_id, name)
);
