-- Nothing to undo: a validated constraint is what 0005 added; 0005's rollback drops it.
SELECT 1;
