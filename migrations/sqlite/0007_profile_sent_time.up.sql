-- When the last profile update of a user went out, as mysql/0007.
ALTER TABLE `messenger_profile_sent` ADD COLUMN `sent_ms` INTEGER NOT NULL DEFAULT 0;
