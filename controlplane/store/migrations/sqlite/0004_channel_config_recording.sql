-- The SQLite twin of ../postgres/0004_channel_config_recording.sql.

ALTER TABLE channel_configs ADD COLUMN recording BOOLEAN NOT NULL DEFAULT FALSE;
