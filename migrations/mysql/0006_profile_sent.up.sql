-- The profile state (the user's ts) that the last profile update of a user carried to the
-- watchers. A profile update is queued after its change is written, so a worker may send
-- the change with an earlier update before the one queued for it is there; that one then
-- finds its user's ts here and is not sent again. The original backend ignores the table.
CREATE TABLE IF NOT EXISTS `messenger_profile_sent` (
  `phone` bigint(20) unsigned NOT NULL,
  `ts` int(10) unsigned NOT NULL,
  PRIMARY KEY (`phone`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
