-- The outbox queues of mysql/0004: ordered delivery per queue, and replaceable rows.
ALTER TABLE `messenger_outbox` ADD COLUMN `queue` TEXT NOT NULL DEFAULT '';
ALTER TABLE `messenger_outbox` ADD COLUMN `replaceable` INTEGER NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS `messenger_outbox_queue` ON `messenger_outbox` (`queue`, `id`);
