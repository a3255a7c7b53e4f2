-- Validate the constraints 0005 added NOT VALID, in a transaction of its own: each
-- VALIDATE CONSTRAINT scans its table under SHARE UPDATE EXCLUSIVE, which lets the app read
-- and write meanwhile (0005's ACCESS EXCLUSIVE was held only for the catalog change).
-- On an adopted database whose old rows violate a constraint, that constraint stays NOT
-- VALID (it still checks every new write) and a WARNING names it, the number of rows, the
-- first ids and the remedy; the migration succeeds. Why, see pgchat.validate_integrity (0005).
-- Left NOT VALID later on: SELECT * FROM pgchat.unvalidated_constraints.
-- depends: 0005_integrity

DO $validate$
BEGIN
    PERFORM * FROM pgchat.validate_integrity();
END
$validate$;
