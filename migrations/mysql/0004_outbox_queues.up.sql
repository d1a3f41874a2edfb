-- Ordered delivery (PROTOCOL.md §4): each notification names its queue, the changes of one
-- user's profile ("user:<phone>") or of one group ("group:<gid>"), and a worker sends a
-- queue's rows one after another in id order, only the first row of a queue being
-- claimable. Rows queued before this migration, or by an instance not yet upgraded, have
-- the queue '' and are delivered in their own order too. `replaceable` marks a
-- notification that only carries a state (a silent profile update): a newer replaceable
-- row of the same queue to the same recipients makes it pointless, and it is dropped
-- unsent. The original backend ignores the table; the columns have defaults, so an
-- instance of the previous version keeps inserting while the fleet is upgraded.
ALTER TABLE `messenger_outbox`
  ADD COLUMN `queue` varchar(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT '' AFTER `id`,
  ADD COLUMN `replaceable` tinyint(1) NOT NULL DEFAULT '0' AFTER `queue`,
  ADD INDEX `queue` (`queue`, `id`);
