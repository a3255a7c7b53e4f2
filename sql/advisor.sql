-- Supabase's advisor (splinter) checks, written anew from what each of its lints checks.
-- Used by pgchat/risks.py (`advisor_findings`); each block is one lint:
--   -- lint: <splinter's lint name> <level>
-- followed by one query returning (schema, name, kind, detail): the object (a table, view or
-- extension name, or a function as name(argument types)), its kind, and what is wrong.
-- Parameters: %(system)s, schemas never reported (Supabase's and extensions'); %(exposed)s,
-- the schemas the API exposes. `%%` is a literal percent sign (psycopg's escaping).
-- Objects that belong to an extension are left out, as splinter does.

-- lint: unindexed_foreign_keys INFO
-- A foreign key whose columns do not lead (in order) some valid index.
SELECT n.nspname, c.relname, 'table',
       format('foreign key %%s has no index leading with its columns', k.conname)
FROM pg_catalog.pg_constraint k
JOIN pg_catalog.pg_class c ON c.oid = k.conrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE k.contype = 'f' AND n.nspname <> ALL (%(system)s)
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
  AND NOT EXISTS (
      SELECT 1 FROM pg_catalog.pg_index i
      WHERE i.indrelid = k.conrelid AND i.indisvalid
        AND (string_to_array(i.indkey::text, ' ')::smallint[])[1:cardinality(k.conkey)] = k.conkey);

-- lint: auth_users_exposed ERROR
-- A view the API roles may read that shows auth.users: a materialized view, a view running with
-- its owner's rights, or a security-invoker view while auth.users has no row level security.
SELECT DISTINCT n.nspname, c.relname, 'view', 'exposes auth.users to anon or authenticated'
FROM pg_catalog.pg_depend d
JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid
JOIN pg_catalog.pg_class c ON c.oid = r.ev_class
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_class u ON u.oid = d.refobjid
WHERE d.refobjid = pg_catalog.to_regclass('auth.users') AND d.deptype = 'n'
  AND n.nspname = ANY (%(exposed)s)
  AND (pg_catalog.has_table_privilege('anon', c.oid, 'SELECT')
       OR pg_catalog.has_table_privilege('authenticated', c.oid, 'SELECT'))
  AND (c.relkind = 'm'
       OR (c.relkind = 'v'
           AND (NOT (lower(coalesce(c.reloptions::text, '{}'))::text[]
                     && ARRAY['security_invoker=1', 'security_invoker=true',
                              'security_invoker=yes', 'security_invoker=on'])
                OR NOT u.relrowsecurity)));

-- lint: auth_rls_initplan WARN
-- A policy that calls auth.<fn>() or current_setting() directly: evaluated once per row, where
-- (select auth.<fn>()) is evaluated once per statement. Counted per occurrence.
SELECT p.schemaname, p.tablename, 'table',
       format('policy %%s calls %%s per row; write (select %%s)', p.policyname, f.call, f.call)
FROM pg_catalog.pg_policies p
JOIN pg_catalog.pg_namespace n ON n.nspname = p.schemaname
JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename
CROSS JOIN LATERAL (SELECT coalesce(p.qual, '') || ' ' || coalesce(p.with_check, '')) e(expr)
CROSS JOIN (VALUES ('auth.uid()', 'auth\.uid\(\)'), ('auth.jwt()', 'auth\.jwt\(\)'),
                   ('auth.role()', 'auth\.role\(\)'), ('auth.email()', 'auth\.email\(\)'),
                   ('current_setting()', 'current_setting\(')) f(call, pattern)
WHERE c.relrowsecurity AND p.schemaname <> ALL (%(system)s)
  AND regexp_count(e.expr, f.pattern) > regexp_count(lower(e.expr), 'select ' || f.pattern);

-- lint: no_primary_key INFO
SELECT n.nspname, c.relname, 'table', 'has no primary key'
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname <> ALL (%(system)s)
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary);

-- lint: multiple_permissive_policies WARN
-- More than one permissive policy for the same role and command: each is evaluated for every row.
-- A policy for PUBLIC applies to every role; roles that bypass row level security do not count.
SELECT n.nspname, c.relname, 'table',
       format('role %%s has %%s permissive %%s policies: %%s', r.rolname, count(*), a.cmd,
              string_agg(p.polname, ', ' ORDER BY p.polname))
FROM pg_catalog.pg_policy p
JOIN pg_catalog.pg_class c ON c.oid = p.polrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_roles r ON p.polroles @> ARRAY[r.oid] OR p.polroles = ARRAY[0::oid]
CROSS JOIN LATERAL unnest(CASE p.polcmd WHEN 'r' THEN ARRAY['SELECT'] WHEN 'a' THEN ARRAY['INSERT']
                                        WHEN 'w' THEN ARRAY['UPDATE'] WHEN 'd' THEN ARRAY['DELETE']
                                        ELSE ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE'] END) a(cmd)
WHERE p.polpermissive AND n.nspname <> ALL (%(system)s)
  AND r.rolname NOT LIKE 'pg\_%%' AND r.rolname NOT LIKE 'supabase%%admin' AND NOT r.rolbypassrls
GROUP BY n.nspname, c.relname, r.rolname, a.cmd
HAVING count(*) > 1;

-- lint: policy_exists_rls_disabled ERROR
-- Policies on a table whose row level security is off: they protect nothing.
SELECT n.nspname, c.relname, 'table',
       format('has policies (%%s) but row level security is off',
              string_agg(p.polname, ', ' ORDER BY p.polname))
FROM pg_catalog.pg_policy p
JOIN pg_catalog.pg_class c ON c.oid = p.polrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE NOT c.relrowsecurity AND n.nspname <> ALL (%(system)s)
GROUP BY n.nspname, c.relname;

-- lint: rls_enabled_no_policy INFO
-- Row level security on and no policy: nobody but the owner (and BYPASSRLS roles) sees a row.
SELECT n.nspname, c.relname, 'table', 'row level security is on but there is no policy'
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND c.relrowsecurity AND n.nspname <> ALL (%(system)s)
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_policy p WHERE p.polrelid = c.oid);

-- lint: duplicate_index WARN
-- Two indexes that are the same index (same method, columns, operator classes, collations,
-- options, expressions, predicate and uniqueness).
SELECT n.nspname, c.relname, 'table',
       format('identical indexes: %%s', string_agg(ic.relname, ', ' ORDER BY ic.relname))
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname <> ALL (%(system)s)
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
GROUP BY n.nspname, c.relname, i.indrelid, ic.relam, i.indisunique, i.indkey::text,
         i.indclass::text, i.indcollation::text, i.indoption::text,
         pg_catalog.pg_get_expr(i.indexprs, i.indrelid), pg_catalog.pg_get_expr(i.indpred, i.indrelid)
HAVING count(*) > 1;

-- lint: security_definer_view ERROR
-- A view in an exposed schema, readable by the API roles, that runs with its owner's rights.
SELECT n.nspname, c.relname, 'view', 'runs with its owner''s rights (not security_invoker)'
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'v' AND n.nspname = ANY (%(exposed)s) AND n.nspname <> ALL (%(system)s)
  AND (pg_catalog.has_table_privilege('anon', c.oid, 'SELECT')
       OR pg_catalog.has_table_privilege('authenticated', c.oid, 'SELECT'))
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
  AND NOT (lower(coalesce(c.reloptions::text, '{}'))::text[]
           && ARRAY['security_invoker=1', 'security_invoker=true',
                    'security_invoker=yes', 'security_invoker=on']);

-- lint: function_search_path_mutable WARN
SELECT n.nspname, format('%%s(%%s)', p.proname, pg_catalog.oidvectortypes(p.proargtypes)),
       'function', 'search_path is not pinned'
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname <> ALL (%(system)s)
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
  AND NOT EXISTS (SELECT 1 FROM unnest(coalesce(p.proconfig, '{}')) s WHERE s LIKE 'search\_path=%%');

-- lint: rls_disabled_in_public ERROR
-- A table in an exposed schema that the API roles may read, without row level security.
SELECT n.nspname, c.relname, 'table', 'exposed through the API without row level security'
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relrowsecurity
  AND n.nspname = ANY (%(exposed)s) AND n.nspname <> ALL (%(system)s)
  AND (pg_catalog.has_table_privilege('anon', c.oid, 'SELECT')
       OR pg_catalog.has_table_privilege('authenticated', c.oid, 'SELECT'));

-- lint: extension_in_public WARN
SELECT 'public', e.extname, 'extension', 'extension installed in public'
FROM pg_catalog.pg_extension e
WHERE e.extnamespace = 'public'::regnamespace AND e.extname <> 'plpgsql';

-- lint: rls_references_user_metadata ERROR
-- A policy that trusts user_metadata from the JWT: users can edit their own metadata.
SELECT p.schemaname, p.tablename, 'table',
       format('policy %%s reads user_metadata, which users can edit', p.policyname)
FROM pg_catalog.pg_policies p
WHERE p.schemaname <> ALL (%(system)s)
  AND (coalesce(p.qual, '') || ' ' || coalesce(p.with_check, ''))
      ~ '(auth\.jwt\(\)|request\.jwt\.claims).*user_metadata';

-- lint: materialized_view_in_api WARN
-- Materialized views have no row level security.
SELECT n.nspname, c.relname, 'view', 'materialized view readable through the API'
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'm' AND n.nspname = ANY (%(exposed)s) AND n.nspname <> ALL (%(system)s)
  AND (pg_catalog.has_table_privilege('anon', c.oid, 'SELECT')
       OR pg_catalog.has_table_privilege('authenticated', c.oid, 'SELECT'))
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e');

-- lint: foreign_table_in_api WARN
-- Foreign tables have no row level security.
SELECT n.nspname, c.relname, 'table', 'foreign table readable through the API'
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'f' AND n.nspname = ANY (%(exposed)s) AND n.nspname <> ALL (%(system)s)
  AND (pg_catalog.has_table_privilege('anon', c.oid, 'SELECT')
       OR pg_catalog.has_table_privilege('authenticated', c.oid, 'SELECT'))
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e');

-- lint: unsupported_reg_types WARN
-- Columns of reg* types that pg_upgrade cannot carry over.
SELECT n.nspname, c.relname, 'table', format('column %%s has type %%s', a.attname, t.typname)
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
WHERE t.typnamespace = 'pg_catalog'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
  AND c.relkind IN ('r', 'p', 'm') AND n.nspname <> ALL (%(system)s)
  AND t.typname IN ('regcollation', 'regconfig', 'regdictionary', 'regnamespace', 'regoper',
                    'regoperator', 'regproc', 'regprocedure');

-- lint: fkey_to_auth_unique ERROR
-- A foreign key to an auth table through a unique key that is not its primary key (Supabase
-- may drop such keys).
SELECT n.nspname, c.relname, 'table',
       format('foreign key %%s references a unique key of %%s', k.conname, k.confrelid::regclass)
FROM pg_catalog.pg_constraint k
JOIN pg_catalog.pg_class c ON c.oid = k.conrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_class r ON r.oid = k.confrelid
JOIN pg_catalog.pg_index i ON i.indexrelid = k.conindid
WHERE k.contype = 'f' AND r.relnamespace = pg_catalog.to_regnamespace('auth')
  AND i.indisunique AND NOT i.indisprimary;

-- lint: rls_policy_always_true WARN
-- A permissive write policy for anon, authenticated or PUBLIC that lets every row through
-- (USING true for UPDATE/DELETE/ALL, WITH CHECK true, or an INSERT policy without a check).
-- SELECT policies with USING (true) are left out: public reading is often meant.
SELECT p.schemaname, p.tablename, 'table',
       format('policy %%s lets every row through for %%s', p.policyname, p.cmd)
FROM pg_catalog.pg_policies p
JOIN pg_catalog.pg_namespace n ON n.nspname = p.schemaname
JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename
WHERE c.relrowsecurity AND p.permissive = 'PERMISSIVE' AND p.cmd <> 'SELECT'
  AND p.schemaname <> ALL (%(system)s)
  AND p.roles && ARRAY['public', 'anon', 'authenticated']::name[]
  AND ((p.cmd IN ('UPDATE', 'DELETE', 'ALL')
        AND regexp_replace(lower(coalesce(p.qual, '')), '\s', '', 'g')
            IN ('true', '(true)', '1=1', '(1=1)', ''))
       OR regexp_replace(lower(coalesce(p.with_check, '-')), '\s', '', 'g')
            IN ('true', '(true)', '1=1', '(1=1)')
       OR (p.cmd = 'INSERT' AND p.with_check IS NULL));

-- lint: anon_security_definer_function_executable WARN
-- A SECURITY DEFINER function anon can call through /rest/v1/rpc: it runs as its owner,
-- bypassing row level security, for anyone holding the public anon key.
SELECT n.nspname, format('%%s(%%s)', p.proname, pg_catalog.oidvectortypes(p.proargtypes)),
       'function', 'SECURITY DEFINER and executable by anon'
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE p.prosecdef AND n.nspname = ANY (%(exposed)s) AND n.nspname <> ALL (%(system)s)
  AND pg_catalog.has_function_privilege('anon', p.oid, 'EXECUTE');

-- lint: authenticated_security_definer_function_executable WARN
-- The same for any signed-in user (with open sign-up: anyone with an email address).
SELECT n.nspname, format('%%s(%%s)', p.proname, pg_catalog.oidvectortypes(p.proargtypes)),
       'function', 'SECURITY DEFINER and executable by authenticated'
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE p.prosecdef AND n.nspname = ANY (%(exposed)s) AND n.nspname <> ALL (%(system)s)
  AND pg_catalog.has_function_privilege('authenticated', p.oid, 'EXECUTE');
