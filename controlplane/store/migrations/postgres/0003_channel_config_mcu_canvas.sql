-- A channel configuration's own MCU canvas: its layout (grid or speaker), size and frame rate.
-- NULL keeps the deployment's MCU:LAYOUT, MCU:CANVASWIDTH, MCU:CANVASHEIGHT, MCU:FRAMERATE,
-- so rows written before this migration mix as they did. The SQLite twin is
-- ../sqlite/0003_channel_config_mcu_canvas.sql.

ALTER TABLE channel_configs ADD COLUMN mcu_layout TEXT;
ALTER TABLE channel_configs ADD COLUMN mcu_canvas_width BIGINT CHECK (mcu_canvas_width > 0);
ALTER TABLE channel_configs ADD COLUMN mcu_canvas_height BIGINT CHECK (mcu_canvas_height > 0);
ALTER TABLE channel_configs ADD COLUMN mcu_frame_rate BIGINT CHECK (mcu_frame_rate > 0);
