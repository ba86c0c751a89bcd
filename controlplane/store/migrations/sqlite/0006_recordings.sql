-- The recording database, which the recording monitor keeps: every recorded file (one track
-- of one connection) and every session (a channel's recordings muxed into one file). Keys are
-- paths under the recordings directory, which are also the objects' keys in storage. Times
-- are Unix milliseconds.

CREATE TABLE recordings (
    file TEXT PRIMARY KEY,
    application_id TEXT NOT NULL,
    channel_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    connection_id TEXT NOT NULL,
    connection_type TEXT NOT NULL,
    -- recording, finished
    state TEXT NOT NULL,
    start_at BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    session_id TEXT,
    updated_at BIGINT NOT NULL
);

CREATE INDEX recordings_by_channel ON recordings (channel_id, start_at);

CREATE TABLE recording_sessions (
    id TEXT PRIMARY KEY,
    channel_id TEXT NOT NULL,
    start_at BIGINT NOT NULL,
    end_at BIGINT NOT NULL,
    -- JSON array of client ids
    participants TEXT NOT NULL,
    -- pending, queued, muxed, failed, stored
    state TEXT NOT NULL,
    -- the muxed file: its object URL once stored, else its path
    muxed TEXT,
    error TEXT,
    updated_at BIGINT NOT NULL
);

CREATE INDEX recording_sessions_by_channel ON recording_sessions (channel_id, start_at);
