-- The SQLite twin of ../postgres/0002_deployment_turn_secret.sql: a deployment's TURN REST
-- secret and the previous one still accepted during a rotation.

ALTER TABLE deployments ADD COLUMN turn_secret TEXT;
ALTER TABLE deployments ADD COLUMN turn_previous_secret TEXT;
