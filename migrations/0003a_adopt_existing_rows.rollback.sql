-- Undo 0003a: nothing to undo on purpose. It only recomputed session statistics (what the
-- triggers keep from then on) and forgot ledger rows of users that no longer exist; applying
-- it again recomputes the same values.
SELECT 1;
