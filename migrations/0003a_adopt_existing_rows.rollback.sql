-- Undo 0003a: nothing to undo on purpose. The adopted ledger rows are the record of what the
-- legacy code counted; dropping them would count those messages again when they are written
-- again. Applying 0003a again books nothing twice (ON CONFLICT DO NOTHING).
SELECT 1;
