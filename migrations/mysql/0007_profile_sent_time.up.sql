-- When the last profile update of a user went out (Unix milliseconds): a change made soon
-- after it queues the next update due a set interval later (the outbox's profile_interval),
-- so a user's changes made within it reach the watchers together, in one message with the
-- last state. 0 for rows written before this column, which never hold an update back.
ALTER TABLE `messenger_profile_sent`
  ADD COLUMN `sent_ms` bigint(20) NOT NULL DEFAULT 0;
