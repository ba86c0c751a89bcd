-- The SQLite twin of ../postgres/0003_channel_config_mcu_canvas.sql: a channel configuration's
-- own MCU canvas (layout, size, frame rate); NULL keeps the deployment's MCU:* settings.

ALTER TABLE channel_configs ADD COLUMN mcu_layout TEXT;
ALTER TABLE channel_configs ADD COLUMN mcu_canvas_width BIGINT CHECK (mcu_canvas_width > 0);
ALTER TABLE channel_configs ADD COLUMN mcu_canvas_height BIGINT CHECK (mcu_canvas_height > 0);
ALTER TABLE channel_configs ADD COLUMN mcu_frame_rate BIGINT CHECK (mcu_frame_rate > 0);
