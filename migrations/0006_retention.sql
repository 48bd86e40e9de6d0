-- Retention: the retention task deletes audit records oldest first, in batches
-- (`... WHERE id IN (SELECT id FROM audit_log WHERE decided_at < $1 ORDER BY decided_at LIMIT n)`).
-- The audit log's indexes all start with the channel, so without this one every batch would
-- scan the whole table. (Actions and feedback have time indexes already; nukes and the rule
-- history are small.) Portable SQL, as 0001.
CREATE INDEX audit_log_time ON audit_log (decided_at, id);
