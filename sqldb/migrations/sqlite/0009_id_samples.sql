-- Readings of herd's own id columns, kept a month, so the estimate of
-- days left survives restarts: growth comes from the oldest reading of the
-- last week and the newest.
CREATE TABLE id_samples (
    tbl  TEXT NOT NULL,
    col  TEXT NOT NULL,
    at   BIGINT NOT NULL,
    used BIGINT NOT NULL,
    PRIMARY KEY (tbl, col, at)
);
