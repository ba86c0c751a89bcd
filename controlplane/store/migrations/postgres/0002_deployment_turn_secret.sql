-- A deployment's TURN REST secret and the previous one still accepted during a rotation, for
-- gateways and media servers without TURN:SECRET. The SQLite twin is
-- ../sqlite/0002_deployment_turn_secret.sql.

ALTER TABLE deployments ADD COLUMN turn_secret TEXT;
ALTER TABLE deployments ADD COLUMN turn_previous_secret TEXT;
