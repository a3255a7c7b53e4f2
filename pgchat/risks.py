"""What Supabase's advisor would say, and which app functions put chat data at risk.

Two reports, both read-only unless asked:

- `advisor_findings`: the checks of Supabase's advisor (splinter's lints, written anew from what
  each one checks) run on the catalog. pgchat's own tables and functions must give none.
- `risk_findings`: the app's functions that pgchat does not own but that touch chat, usage or
  profile data and are exposed (SECURITY DEFINER and executable by anon / authenticated /
  PUBLIC in a schema the API exposes, or a mutable search_path), each with the concrete risk,
  derived from what its body writes and reads and whether it checks the caller, and the fix.
  `fix_risks` applies the part of the fix that cannot change what the app's signed-in users may
  do: it revokes EXECUTE from anon and PUBLIC and pins the search_path.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import sql

from pgchat.paths import sql_dir

# Schemas that belong to Supabase or to extensions: never reported (splinter skips them too).
SYSTEM_SCHEMAS = (
    "pg_catalog", "information_schema", "pg_toast", "auth", "storage", "realtime", "extensions",
    "graphql", "graphql_public", "vault", "pgsodium", "pgsodium_masks", "net", "cron", "pgbouncer",
    "pgmq", "pgroonga", "pgtle", "repack", "supabase_functions", "supabase_migrations", "tiger",
    "topology", "_timescaledb_cache", "_timescaledb_catalog", "_timescaledb_config",
    "_timescaledb_internal",
)
# What PostgREST exposes when `pgrst.db_schemas` is not set (Supabase's default).
DEFAULT_EXPOSED_SCHEMAS = ("public", "graphql_public")

# What pgchat owns: its schemas, the tables whose rules it defines, the functions it writes.
OWNED_SCHEMAS = ("pgchat", "pgchat_private", "pgchat_migrations")
OWNED_TABLES = ("public.chat_sessions", "public.chat_messages", "public.user_usage_daily")
OWNED_VIEWS = ("public.api_user_summary",)  # pgchat makes it security_invoker
OWNED_FUNCTIONS = (
    "public.sync_user_conversations(uuid, jsonb)",
    "public.write_chat_exchange(uuid, text, jsonb, jsonb, text)",
    "public.update_session_title(uuid, text, text)",
    "public.track_user_usage(uuid, text, date, integer, integer, integer, integer, text, boolean, "
    "integer)",
    "public.update_session_stats()",
    "public.update_session_timestamp()",
)

# A function whose body names one of these touches chat, usage or profile data.
WATCHED_NAMES = (
    "chat_sessions", "chat_messages", "user_usage_daily", "profiles", "usage_stats",
    "api_user_summary", "auth.users", "track_user_usage",
)


# --- the advisor -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AdvisorFinding:
    """One advisor finding: splinter's lint name and level, the object, what is wrong."""

    lint: str
    level: str
    schema: str
    name: str  # a table or view name, or a function as name(argument types)
    kind: str  # table, view, function, extension
    detail: str


def _load_checks() -> dict[str, tuple[str, str]]:
    """sql/advisor.sql: blocks headed `-- lint: <name> <level>`, each one query."""
    checks: dict[str, tuple[str, str]] = {}
    text = (sql_dir() / "advisor.sql").read_text()
    for block in re.split(r"^-- lint: ", text, flags=re.M)[1:]:
        header, _, body = block.partition("\n")
        lint, level = header.split()
        query = "\n".join(line for line in body.splitlines() if not line.startswith("--"))
        checks[lint] = (level, query.strip().removesuffix(";"))
    return checks


# lint name -> (level, query returning schema, name, kind, detail); see sql/advisor.sql.
ADVISOR_CHECKS: dict[str, tuple[str, str]] = _load_checks()


def exposed_schemas(conn: psycopg.Connection) -> list[str]:
    """The schemas the API exposes: `pgrst.db_schemas` if set, else Supabase's default."""
    row = conn.execute("SELECT current_setting('pgrst.db_schemas', true)").fetchone()
    configured = [s.strip() for s in (row[0] if row and row[0] else "").split(",") if s.strip()]
    return configured or list(DEFAULT_EXPOSED_SCHEMAS)


def is_owned(schema: str, name: str, kind: str) -> bool:
    """Whether pgchat owns this object (its schemas, OWNED_TABLES / _VIEWS / _FUNCTIONS)."""
    qualified = f"{schema}.{name}"
    return (schema in OWNED_SCHEMAS
            or (kind == "table" and qualified in OWNED_TABLES)
            or (kind == "view" and qualified in OWNED_VIEWS)
            or (kind == "function" and qualified in OWNED_FUNCTIONS))


def advisor_findings(conn: psycopg.Connection, owned_only: bool = True,
                     exposed: Sequence[str] | None = None,
                     checks: Iterable[str] | None = None) -> list[AdvisorFinding]:
    """Run the advisor's checks (ADVISOR_CHECKS; all, or those named in `checks`) on `conn`'s
    database. `owned_only`: only findings on what pgchat owns. Reads the catalog only."""
    params = {"system": list(SYSTEM_SCHEMAS),
              "exposed": list(exposed) if exposed is not None else exposed_schemas(conn)}
    findings = []
    for lint in checks if checks is not None else ADVISOR_CHECKS:
        level, query = ADVISOR_CHECKS[lint]
        for schema, name, kind, detail in conn.execute(query, params).fetchall():
            if not owned_only or is_owned(schema, name, kind):
                findings.append(AdvisorFinding(lint, level, schema, name, kind, detail))
    return sorted(findings, key=lambda f: (f.schema, f.name, f.lint, f.detail))


# --- the risk report on the app's functions --------------------------------------------------


@dataclass(frozen=True)
class Write:
    """A write a function body makes: the statement, the table, and for an UPDATE its columns."""

    op: str  # INSERT, UPDATE, DELETE, TRUNCATE
    table: str
    columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class Risk:
    """An app function that touches chat, usage or profile data and is exposed."""

    function: str  # schema.name(argument types)
    owner: str
    security_definer: bool
    executable_by: tuple[str, ...]  # of PUBLIC, anon, authenticated
    search_path: str | None  # the pinned value, or None when mutable
    touches: tuple[str, ...]  # the WATCHED_NAMES its body mentions
    writes: tuple[Write, ...]
    reads: tuple[str, ...]
    user_parameters: tuple[str, ...]  # its uuid arguments
    checks_caller: bool  # its body refers to auth.uid() / auth.jwt() / the JWT claims
    trigger_on: tuple[str, ...]  # tables whose triggers run it
    is_trigger: bool
    callable_through_api: bool  # in an exposed schema, not a trigger, someone may execute it
    needed_schemas: tuple[str, ...]  # where its unqualified names are found (mutable only)
    risks: tuple[str, ...]
    fixes: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_CANDIDATES = """
SELECT n.nspname, p.proname, pg_catalog.oidvectortypes(p.proargtypes),
       pg_catalog.pg_get_function_identity_arguments(p.oid), pg_catalog.pg_get_userbyid(p.proowner),
       p.prosecdef, p.prorettype = 'trigger'::regtype,
       CASE WHEN p.prosrc ~ '\\S' THEN p.prosrc ELSE pg_catalog.pg_get_functiondef(p.oid) END,
       (SELECT substr(s, 13) FROM unnest(p.proconfig) s WHERE s LIKE 'search\\_path=%%'),
       n.nspname = ANY (%(exposed)s),
       EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
               WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'),
       CASE WHEN pg_catalog.to_regrole('anon') IS NULL THEN false  -- CASE: evaluated in order
            ELSE pg_catalog.has_function_privilege('anon', p.oid, 'EXECUTE') END,
       CASE WHEN pg_catalog.to_regrole('authenticated') IS NULL THEN false
            ELSE pg_catalog.has_function_privilege('authenticated', p.oid, 'EXECUTE') END,
       ARRAY(SELECT DISTINCT t.tgrelid::regclass::text FROM pg_catalog.pg_trigger t
             WHERE t.tgfoid = p.oid AND NOT t.tgisinternal ORDER BY 1),
       ARRAY(SELECT DISTINCT r.rolname
             FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
             JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
             WHERE a.privilege_type = 'EXECUTE' ORDER BY 1)
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
JOIN pg_catalog.pg_language l ON l.oid = p.prolang
WHERE n.nspname <> ALL (%(skip)s) AND l.lanname IN ('sql', 'plpgsql') AND p.prokind IN ('f', 'p')
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
ORDER BY 1, 2, 3
"""

# The schemas holding functions, relations or types of the given names (outside the catalog).
_SCHEMAS_OF_NAMES = """
SELECT DISTINCT s FROM (
    SELECT p.pronamespace::regnamespace::text FROM pg_catalog.pg_proc p
    WHERE p.proname = ANY (%(w)s)
    UNION ALL
    SELECT c.relnamespace::regnamespace::text FROM pg_catalog.pg_class c
    WHERE c.relname = ANY (%(w)s) AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
    UNION ALL
    SELECT t.typnamespace::regnamespace::text FROM pg_catalog.pg_type t
    WHERE t.typname = ANY (%(w)s) AND t.typtype IN ('d', 'e')
) x(s)
WHERE s NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND s NOT LIKE 'pg\\_temp%%'
ORDER BY 1
"""

_IDENT = r'(?:"[^"]+"|[A-Za-z_][A-Za-z0-9_$]*)'
_TABLE = rf"({_IDENT}(?:\s*\.\s*{_IDENT})?)"
_WRITES = (
    ("INSERT", re.compile(rf"\bINSERT\s+INTO\s+{_TABLE}", re.I)),
    ("DELETE", re.compile(rf"\bDELETE\s+FROM\s+(?:ONLY\s+)?{_TABLE}", re.I)),
    ("TRUNCATE", re.compile(rf"\bTRUNCATE\s+(?:TABLE\s+)?(?:ONLY\s+)?{_TABLE}", re.I)),
)
_UPDATE = re.compile(
    rf"\bUPDATE\s+(?:ONLY\s+)?(?!SET\b){_TABLE}(?:\s+(?:AS\s+)?(?!SET\b){_IDENT})?"
    r"\s+SET\b(.*?)(?=\bWHERE\b|\bFROM\b|\bRETURNING\b|;|$)", re.I | re.S)
_SET_COLUMN = re.compile(rf"(?:^|,)\s*({_IDENT})\s*=(?!=)", re.S)
_READ = re.compile(rf"(?<!DELETE\s)\b(?:FROM|JOIN)\s+(?:ONLY\s+)?{_TABLE}", re.I)
_CALLER_CHECK = re.compile(r"auth\s*\.\s*(?:uid|jwt)\s*\(|request\.jwt\.claim", re.I)
_UNQUALIFIED = re.compile(rf"(?<![.\w\"$])({_IDENT})(?!\s*\.)", re.S)
_WRITE_ORDER = {"UPDATE": 0, "INSERT": 1, "DELETE": 2, "TRUNCATE": 3}


def _strip_comments(body: str) -> str:
    return re.sub(r"/\*.*?\*/", " ", re.sub(r"--[^\n]*", " ", body), flags=re.S)


def _table_name(raw: str) -> str:
    return re.sub(r"\s+", "", raw).replace('"', "").lower().removeprefix("public.")


def body_writes(body: str) -> list[Write]:
    """The tables a function body writes (UPDATE with its SET columns, INSERT, DELETE,
    TRUNCATE). Read from the text: statements built in dynamic SQL count if they are literal."""
    text = _strip_comments(body)
    found: dict[tuple[str, str], set[str]] = {}
    for op, pattern in _WRITES:
        for m in pattern.finditer(text):
            found.setdefault((op, _table_name(m.group(1))), set())
    for m in _UPDATE.finditer(text):
        columns = {c.replace('"', "").lower() for c in _SET_COLUMN.findall(m.group(2))}
        found.setdefault(("UPDATE", _table_name(m.group(1))), set()).update(columns)
    keys = sorted(found, key=lambda k: (_WRITE_ORDER[k[0]], k[1]))
    return [Write(op, table, tuple(sorted(found[(op, table)]))) for op, table in keys]


def body_reads(body: str) -> list[str]:
    """The relations a function body reads (after FROM or JOIN)."""
    names = {_table_name(m.group(1)) for m in _READ.finditer(_strip_comments(body))}
    return sorted(names - {"select", "lateral", "unnest", "only"})


def touched_names(body: str) -> list[str]:
    """The WATCHED_NAMES a function body mentions (a table of another schema does not count)."""
    text = _strip_comments(body).lower()
    patterns = {
        "auth.users": r"\bauth\s*\.\s*users\b",
        "usage_stats": r"\busage_stats\b",  # a column, often qualified by a row variable
    }
    return [name for name in WATCHED_NAMES
            if re.search(patterns.get(name, rf"(?<![\w.])(?:public\s*\.\s*)?{name}\b"), text)]


def _uuid_parameters(identity_arguments: str) -> list[str]:
    names = []
    items = [a.strip() for a in identity_arguments.split(",") if a.strip()]
    for position, item in enumerate(items, 1):
        words = item.split()
        if words[0].upper() in ("IN", "INOUT", "VARIADIC"):
            words = words[1:]
        if words and words[-1] == "uuid":
            names.append(words[0] if len(words) > 1 else f"${position}")
    return names


def _needed_schemas(conn: psycopg.Connection, body: str, own_schema: str) -> list[str]:
    """Schemas where the body's unqualified names are found (outside pg_catalog): what a
    pinned search_path must keep. Names built in dynamic SQL strings are not seen."""
    text = re.sub(r"'(?:[^']|'')*'", "''", _strip_comments(body))
    text = re.sub(r"\$\w*\$", " ", text)
    words = sorted({m.group(1).replace('"', "").lower() for m in _UNQUALIFIED.finditer(text)})
    found = [r[0] for r in conn.execute(_SCHEMAS_OF_NAMES, {"w": words}).fetchall()]
    # The function's own schema first: an unqualified name was found there before.
    return sorted(found, key=lambda s: (s != own_schema, s != "public", s))


def pinned_search_path(schemas: Sequence[str]) -> str:
    """The search_path `--fix` sets: '' when the body needs nothing outside pg_catalog, else
    those schemas and then pg_temp (so that no temporary table can shadow one of theirs)."""
    if not schemas:
        return "''"
    names = [s if re.fullmatch(r"[a-z_][a-z0-9_]*", s) else sql.Identifier(s).as_string(None)
             for s in schemas]
    return ", ".join([*names, "pg_temp"])


def _actions(writes: Sequence[Write], reads: Sequence[str], touches: Sequence[str]) -> str:
    verbs = {"INSERT": "insert rows into {}", "DELETE": "delete rows of {}", "TRUNCATE": "empty {}"}
    actions = []
    for w in writes:
        if w.op == "UPDATE":
            columns = f" ({', '.join(w.columns)})" if w.columns else ""
            actions.append(f"change {w.table}{columns}")
        else:
            actions.append(verbs[w.op].format(w.table))
    if "track_user_usage" in touches:
        actions.append("add to usage counters (it calls track_user_usage)")
    written = {w.table for w in writes}
    if [t for t in reads if t not in written]:
        actions.append("read " + ", ".join(t for t in reads if t not in written))
    return "; ".join(actions) or "run it with its owner's rights"


def _exposure(f: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Risk and fixes of a SECURITY DEFINER function the API roles can call."""
    signature, via = f["function"], ", ".join(f["executable_by"])
    anyone = bool({"PUBLIC", "anon"} & set(f["executable_by"]))
    who = "anyone, signed in or not," if anyone else "any signed-in user"
    if f["checks_caller"]:
        scope = ("(it refers to auth.uid() or the JWT; row level security does not apply "
                 "inside it, so that check is all that protects other users' rows)")
    elif f["user_parameters"]:
        scope = (f"of any user: it acts for the user named by {' / '.join(f['user_parameters'])}"
                 " and never compares it with auth.uid()")
    else:
        scope = "of every user: nothing in it limits it to the caller"
    risk = (f"SECURITY DEFINER (runs as {f['owner']}, row level security bypassed), executable "
            f"by {via} through /rest/v1/rpc/{f['name']}: {who} can "
            f"{_actions(f['writes'], f['reads'], f['touches'])} {scope}")
    fixes = []
    if anyone:
        keeps = "authenticated" in f["explicit_grantees"]
        fixes.append(f"REVOKE EXECUTE ON FUNCTION {signature} FROM PUBLIC, anon;"
                     + (" (authenticated keeps EXECUTE)" if keeps else
                        " (authenticated has no grant of its own: it loses EXECUTE too)"))
    if not f["checks_caller"]:
        first = f["user_parameters"][0] if f["user_parameters"] else None
        check = (f"refuse unless {first} = (select auth.uid())" if first
                 else "limit it to the caller's own rows")
        fixes.append(f"in its body, {check}; or call it from the backend only (REVOKE EXECUTE ON "
                     f"FUNCTION {signature} FROM authenticated; pgchat does not: it would change "
                     "what the app can do)")
    return [risk], fixes


def _mutable_search_path(f: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Risk and fix of a function whose search_path is not pinned."""
    if f["security_definer"]:
        when = ("on every write to " + ", ".join(f["trigger_on"]) if f["trigger_on"]
                else "for whoever calls it")
        risk = (f"mutable search_path: it runs as {f['owner']} {when}, and its unqualified names "
                "(functions, operators, tables) are looked up in the caller's search_path: a "
                "caller who can create objects in a schema they put first, or a temporary table, "
                f"makes it run their code with {f['owner']}'s rights")
    else:
        risk = ("mutable search_path: its unqualified names follow the caller's search_path, so "
                "a privileged caller (the backend, a trigger, a SECURITY DEFINER function) whose "
                "search_path someone else controls can be made to run their objects")
    needs = ", ".join(f["needed_schemas"])
    fix = (f"ALTER FUNCTION {f['function']} SET search_path = "
           f"{pinned_search_path(f['needed_schemas'])}; "
           + (f"(its unqualified names are found in {needs}; " if needs else
              "(it qualifies every name outside pg_catalog; ")
           + "a name built in dynamic SQL, or found elsewhere through the caller's path, "
           "then fails with 'does not exist')")
    return [risk], [fix]


def risk_findings(conn: psycopg.Connection, exposed: Sequence[str] | None = None) -> list[Risk]:
    """The app's functions (not pgchat's) that touch chat, usage or profile data and are exposed:
    SECURITY DEFINER and callable by anon / authenticated / PUBLIC through the API, or with a
    mutable search_path. Reads the catalog only."""
    params = {"exposed": list(exposed) if exposed is not None else exposed_schemas(conn),
              "skip": list(SYSTEM_SCHEMAS + OWNED_SCHEMAS)}
    found = []
    for (schema, name, args, identity, owner, definer, is_trigger, body, search_path,
         in_exposed, public_execute, anon, authenticated, trigger_on,
         grantees) in conn.execute(_CANDIDATES, params).fetchall():
        signature = f"{schema}.{name}({args})"
        touches = touched_names(body)
        if signature in OWNED_FUNCTIONS or not touches:
            continue
        executable_by = tuple(role for role, ok in (("PUBLIC", public_execute), ("anon", anon),
                                                    ("authenticated", authenticated)) if ok)
        callable_by_api = in_exposed and not is_trigger and bool(executable_by)
        if not ((definer and callable_by_api) or search_path is None):
            continue
        f: dict[str, Any] = {
            "function": signature, "name": name, "owner": owner, "security_definer": definer,
            "executable_by": executable_by, "search_path": search_path,
            "touches": tuple(touches), "writes": tuple(body_writes(body)),
            "reads": tuple(body_reads(body)), "user_parameters": tuple(_uuid_parameters(identity)),
            "checks_caller": bool(_CALLER_CHECK.search(_strip_comments(body))),
            "trigger_on": tuple(trigger_on), "is_trigger": is_trigger,
            "explicit_grantees": tuple(grantees),
            "needed_schemas": (tuple(_needed_schemas(conn, body, schema))
                               if search_path is None else ()),
        }
        risks: list[str] = []
        fixes: list[str] = []
        for part in ((_exposure,) if definer and callable_by_api else ()) + \
                ((_mutable_search_path,) if search_path is None else ()):
            more_risks, more_fixes = part(f)
            risks += more_risks
            fixes += more_fixes
        found.append(Risk(
            function=signature, owner=owner, security_definer=definer,
            executable_by=executable_by, search_path=search_path, touches=f["touches"],
            writes=f["writes"], reads=f["reads"], user_parameters=f["user_parameters"],
            checks_caller=f["checks_caller"], trigger_on=f["trigger_on"], is_trigger=is_trigger,
            callable_through_api=callable_by_api,
            needed_schemas=f["needed_schemas"], risks=tuple(risks), fixes=tuple(fixes)))
    return found


@dataclass(frozen=True)
class Fixed:
    """What `fix_risks` did to one function, or why it could not."""

    function: str
    statements: tuple[str, ...]
    error: str | None = None


def fix_statements(conn: psycopg.Connection, risk: Risk) -> list[str]:
    """The statements `fix_risks` runs for `risk`: revoke EXECUTE from anon and PUBLIC (when
    they hold it), pin the search_path (when it is mutable). Nothing for authenticated."""
    schema, rest = risk.function.split(".", 1)
    name, args = rest.split("(", 1)
    target = sql.SQL("{}.{}({}").format(sql.Identifier(schema), sql.Identifier(name),
                                        sql.SQL(args)).as_string(conn)
    statements = []
    if risk.security_definer and risk.callable_through_api \
            and {"PUBLIC", "anon"} & set(risk.executable_by):
        statements.append(f"REVOKE EXECUTE ON FUNCTION {target} FROM PUBLIC, anon")
    if risk.search_path is None:
        statements.append(f"ALTER FUNCTION {target} "
                          f"SET search_path = {pinned_search_path(risk.needed_schemas)}")
    return statements


def fix_risks(conn: psycopg.Connection, risks: Iterable[Risk]) -> list[Fixed]:
    """Apply `fix_statements` to each function, each in its own savepoint, and commit. A function
    the connected role may not alter (not its owner) is reported, not fatal."""
    done = []
    for risk in risks:
        statements = fix_statements(conn, risk)
        if not statements:  # exposed to authenticated only: not pgchat's to change
            continue
        try:
            with conn.transaction():
                for statement in statements:
                    conn.execute(statement.encode())
            done.append(Fixed(risk.function, tuple(statements)))
        except psycopg.errors.InsufficientPrivilege as exc:
            message = (exc.diag.message_primary or str(exc)).strip()
            done.append(Fixed(risk.function, tuple(statements), message))
    conn.commit()
    return done


def summary(risks: Sequence[Risk]) -> list[str]:
    """Short lines for `migrate` / `status`: one per function at risk, or one saying none is."""
    if not risks:
        return ["no app function exposes chat, usage or profile data"]
    lines = [f"{len(risks)} app function(s) expose chat, usage or profile data "
             "(pgchat changed none of them; see `pgchat risks`):"]
    for r in risks:
        how = []
        if r.security_definer and r.callable_through_api:
            how.append("SECURITY DEFINER, executable by " + ", ".join(r.executable_by))
        if r.search_path is None:
            how.append("mutable search_path")
        lines.append(f"  {r.function}: {'; '.join(how)}")
    return lines
