-- Notifications to other users (PROTOCOL.md §4) are written here in the same transaction
-- as the change that causes them, and delivered to mesibo by a background worker, so a
-- mesibo outage delays them but never loses them. The original backend ignores the table.
CREATE TABLE IF NOT EXISTS `messenger_outbox` (
  `id` bigint(20) unsigned NOT NULL AUTO_INCREMENT,
  `from_addr` varchar(32) NOT NULL DEFAULT '',
  `to_addrs` mediumtext NOT NULL,
  `body` mediumblob NOT NULL,
  `created` bigint(20) NOT NULL DEFAULT '0',
  `attempts` int(10) unsigned NOT NULL DEFAULT '0',
  `next_attempt` bigint(20) NOT NULL DEFAULT '0',
  `last_error` varchar(255) NOT NULL DEFAULT '',
  PRIMARY KEY (`id`),
  KEY `due` (`next_attempt`, `id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- "Who has this phone among their contacts" is asked on every profile change and new
-- login; without this index it scans the whole contacts table.
ALTER TABLE `contacts` ADD INDEX `contacts_phone` (`phone`);
