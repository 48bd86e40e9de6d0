-- An audit record found by its message: what was decided about a message a rule is backtested
-- on (`Admin.BacktestRule`), and the record behind an action or an appeal. Without this index
-- such a lookup scans the channel's whole audit log. Portable SQL, as 0001.
CREATE INDEX audit_log_message ON audit_log (channel, message_id);
