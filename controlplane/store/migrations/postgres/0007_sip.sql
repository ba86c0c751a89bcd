-- The SIP connector's configuration. `sip_trunks` are the SIP providers' accounts, shared by
-- the deployment: where calls come from and go out (the first enabled trunk by name that
-- `can_terminate` carries calls out). `password` is the digest secret, never shown. Transports
-- are `udp`, `tcp` or `tls`.
--
-- `sip_mappings` say which channel of an application an incoming call joins: the first by
-- `position` (then application, then name) whose `pattern` matches the call's `kind` of value
-- (`number`: the Request-URI's user, `extension`: the To URI's user, `header`: the value of
-- `header`). `channel_id` may hold `{match}`, the matched value. They go with their
-- application.

CREATE TABLE sip_trunks (
    name TEXT PRIMARY KEY,
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
