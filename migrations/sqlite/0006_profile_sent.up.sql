-- The last profile update sent of each user, as mysql/0006.
CREATE TABLE IF NOT EXISTS `messenger_profile_sent` (
  `phone` INTEGER NOT NULL PRIMARY KEY,
  `fingerprint` INTEGER NOT NULL
);
