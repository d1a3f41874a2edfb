-- The waiting profile updates of mysql/0005: at most one per user.
ALTER TABLE `messenger_outbox` ADD COLUMN `waiting` INTEGER NULL DEFAULT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS `messenger_outbox_waiting` ON `messenger_outbox` (`waiting`);
