-- A profile update that is queued and not yet claimed by a worker carries its user's phone in
-- `waiting`; the unique key lets a user have at most one such row, so a change made while
-- one waits queues nothing (that row sends the profile as it is when it goes). A claim
-- clears it, so the next change queues a row behind the one being sent. Other rows, and
-- rows of an instance not yet upgraded, leave it NULL, which the key does not count.
ALTER TABLE `messenger_outbox`
  ADD COLUMN `waiting` bigint(20) unsigned NULL DEFAULT NULL AFTER `replaceable`,
  ADD UNIQUE KEY `waiting` (`waiting`);
