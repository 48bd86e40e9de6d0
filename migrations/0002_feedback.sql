-- Feedback: labelled examples from human moderators, for `modbot train --with-feedback`.
-- A human moderator's action seen in chat makes a positive example of the message it was about;
-- an appeal that a moderator overturns makes a negative one. Portable SQL, as 0001.
CREATE TABLE feedback (
    id          TEXT PRIMARY KEY,          -- UUID v7: time-ordered
    created_at  BIGINT NOT NULL,           -- Unix ms
    channel     TEXT NOT NULL,
    user_id     TEXT NOT NULL,             -- who wrote the message
    message_id  TEXT NOT NULL,
    text        TEXT NOT NULL,             -- the normalised text, as the model sees it
    label       TEXT NOT NULL,             -- the head/label it teaches, e.g. toxicity/insult
    positive    BIGINT NOT NULL,           -- 1: the label applies; 0: it does not
    source      TEXT NOT NULL,             -- moderator_action | appeal_overturned
    actor       TEXT NOT NULL,             -- the moderator
    action      TEXT NOT NULL,             -- what the moderator did (timeout, ban, overturn, ...)
    -- One judgement of a kind per message and label: a mute followed by a ban is one example.
    UNIQUE (channel, message_id, label, source)
);

CREATE INDEX feedback_time ON feedback (created_at);
