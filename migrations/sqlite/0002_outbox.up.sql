-- The notification outbox and the contacts-by-phone index of mysql/0002.
CREATE TABLE IF NOT EXISTS `messenger_outbox` (
  `id` INTEGER PRIMARY KEY AUTOINCREMENT,
  `from_addr` TEXT NOT NULL DEFAULT '',
  `to_addrs` TEXT NOT NULL,
  `body` BLOB NOT NULL,
  `created` INTEGER NOT NULL DEFAULT 0,
  `attempts` INTEGER NOT NULL DEFAULT 0,
  `next_attempt` INTEGER NOT NULL DEFAULT 0,
  `last_error` TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS `messenger_outbox_due` ON `messenger_outbox` (`next_attempt`, `id`);

CREATE INDEX IF NOT EXISTS `contacts_phone` ON `contacts` (`phone`);
