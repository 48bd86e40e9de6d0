-- Which head set decides, and which is on trial: every change as one row, the latest in force;
-- and what the other side of a trial decided about each recorded message.
-- Portable SQL, as 0001. A writer inserts the revision after the one it read: the primary key
-- refuses one of two concurrent changes, so neither can silently undo the other.
CREATE TABLE model_rollouts (
    revision    BIGINT PRIMARY KEY,
    active      TEXT NOT NULL,              -- heads version deciding; '' = the shipped heads
    previous    TEXT NOT NULL,              -- what a rollback restores ('' = the shipped heads)
    candidate   TEXT NOT NULL,              -- heads version on trial; '' = none
    mode        TEXT NOT NULL,              -- none|shadow|split
    share       DOUBLE PRECISION NOT NULL,  -- a split's share, in [0, 1]
    unit        TEXT NOT NULL,              -- a split's unit: channel|user
    change      TEXT NOT NULL,              -- try|end|promote|rollback
    reason      TEXT NOT NULL,
    changed_at  BIGINT NOT NULL,            -- Unix ms
    changed_by  TEXT NOT NULL
);

-- While a candidate is on trial, what the set that did not decide decided about a recorded
-- message: its version and decision ('' when no trial ran). Joined with the review queue's
-- rulings, it says how often each version agreed with the moderators.
ALTER TABLE audit_log ADD COLUMN trial_version TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_log ADD COLUMN trial_decision TEXT NOT NULL DEFAULT '';
