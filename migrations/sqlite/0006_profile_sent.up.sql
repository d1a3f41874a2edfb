-- The last profile state sent of each user, as mysql/0006.
CREATE TABLE IF NOT EXISTS `messenger_profile_sent` (
  `phone` INTEGER NOT NULL PRIMARY KEY,
  `ts` INTEGER NOT NULL
);
