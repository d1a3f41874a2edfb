-- What the last profile update of a user carried to the watchers: a fingerprint of the
-- message (the first 8 bytes of its SHA-256). A profile update is queued after its change
-- is written, so a worker may send the change with an earlier update before the one
-- queued for it is there; that one then composes the same message, finds it here and is
-- not sent again. The original backend ignores the table.
CREATE TABLE IF NOT EXISTS `messenger_profile_sent` (
  `phone` bigint(20) unsigned NOT NULL,
  `fingerprint` bigint(20) NOT NULL,
  PRIMARY KEY (`phone`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
