-- Channels whose configuration says `recording` are recorded from their first publication on,
-- without an admin call.

ALTER TABLE channel_configs ADD COLUMN recording BOOLEAN NOT NULL DEFAULT FALSE;
