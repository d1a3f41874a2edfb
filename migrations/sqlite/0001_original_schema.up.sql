-- The tables of the original PHP backend (mysql/0001) in SQLite's types, for the
-- embedded single-instance store. Column names, defaults and unique keys are the same,
-- so every statement of the store and the copy command work on both.

CREATE TABLE IF NOT EXISTS `users` (
  `uid` INTEGER NOT NULL DEFAULT 0 PRIMARY KEY,
  `name` BLOB,
  `phone` INTEGER NOT NULL DEFAULT 0 UNIQUE,
  `cc` INTEGER DEFAULT 0,
  `status` BLOB,
  `photo` TEXT DEFAULT '',
  `credits` REAL NOT NULL DEFAULT 0,
  `flag` INTEGER DEFAULT 0,
  `ts` INTEGER DEFAULT 0,
  `n` BLOB
);
CREATE INDEX IF NOT EXISTS `users_ts` ON `users` (`ts`);

-- Times are TEXT in UTC as 'YYYY-MM-DD HH:MM:SS', which sorts as it compares. Tokens
-- compare without case, as in MySQL's ascii_general_ci.
CREATE TABLE IF NOT EXISTS `tokens` (
  `uid` INTEGER DEFAULT NULL UNIQUE,
  `token` TEXT NOT NULL DEFAULT '0' COLLATE NOCASE PRIMARY KEY,
  `updatetime` TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
  `expirytime` TEXT NOT NULL DEFAULT '1970-01-01 00:00:01',
  `ipaddr` INTEGER NOT NULL DEFAULT 0,
  `device` INTEGER DEFAULT 0,
  `createdby` INTEGER DEFAULT 0
);
CREATE INDEX IF NOT EXISTS `tokens_ip_index` ON `tokens` (`ipaddr`);

CREATE TABLE IF NOT EXISTS `contacts` (
  `uid` INTEGER NOT NULL DEFAULT 0,
  `phone` INTEGER NOT NULL DEFAULT 0,
  `subscribed` INTEGER DEFAULT 0,
  UNIQUE (`uid`, `phone`)
);

CREATE TABLE IF NOT EXISTS `groups` (
  `gid` INTEGER NOT NULL DEFAULT 0 PRIMARY KEY,
  `name` BLOB,
  `status` TEXT DEFAULT '',
  `photo` TEXT DEFAULT '',
  `flag` INTEGER DEFAULT 0,
  `type` INTEGER NOT NULL DEFAULT 0,
  `ts` INTEGER DEFAULT 0
);
CREATE INDEX IF NOT EXISTS `groups_ts` ON `groups` (`ts`);

CREATE TABLE IF NOT EXISTS `members` (
  `gid` INTEGER NOT NULL DEFAULT 0,
  `phone` INTEGER NOT NULL DEFAULT 0,
  `role` INTEGER DEFAULT 0,
  UNIQUE (`gid`, `phone`)
);

CREATE TABLE IF NOT EXISTS `notifytokens` (
  `uid` INTEGER NOT NULL DEFAULT 0 PRIMARY KEY,
  `device` INTEGER DEFAULT 0,
  `token` TEXT DEFAULT '',
  `production` INTEGER DEFAULT 0
);

CREATE TABLE IF NOT EXISTS `names` (
  `name` TEXT DEFAULT '',
  `status` TEXT DEFAULT ''
);
