-- Which groups a phone is a member of, asked by every sync (see the MySQL migration).
CREATE INDEX IF NOT EXISTS `members_phone` ON `members` (`phone`);
