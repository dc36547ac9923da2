# -*- coding: utf-8 -*-
# Copyright: (c) 2026, dine360.saas engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tenant lifecycle: validation, desired-versus-actual planning and execution.

Used by the ``dine360.saas.tenants`` module and (for passwords and pools) by the
``dine360.saas.tenants`` filters. The flow is: validate the whole list (nothing is
touched when one entry is bad), read the cluster's state with a handful of catalog
queries on one connection, compute every statement, then run them. Per-database
objects (the password lookup function, reporting grants) need a connection to that
database; they are only touched for databases whose setup marker is missing or stale,
so an idempotent run of hundreds of tenants stays on one connection.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import base64
import hashlib
import hmac
import os
import re

try:
    from psycopg2 import sql
except ImportError:  # reported by the module through ensure_required_libs
    sql = None

# A tenant's name is its subdomain and its database name: a DNS label (RFC 1123) that starts with
# a letter, 2 to 41 characters, no hyphen at either end (name_problem adds the IDNA rule).
NAME_RE = re.compile(r'^[a-z][a-z0-9-]{0,39}[a-z0-9]$')
ROLE_RE = re.compile(r'^[a-z_][a-z0-9_]{0,62}$')
GUC_RE = re.compile(r'^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$')
DURATION_RE = re.compile(r'^[0-9]+ ?(us|ms|s|min|h|d)?$')
# Names a component of the tier gives a meaning to: never a tenant, whatever the inventory says.
COMPONENT_NAMES = {
    'postgres': "PostgreSQL's maintenance database",
    'template0': "PostgreSQL's pristine template database",
    'template1': "PostgreSQL's default template database",
    'pgbouncer': "PgBouncer's admin console database",
    'admin': "the platform's administration name",
    'dine360': "the platform's own catalog name",
}
RESERVED_NAMES = frozenset(COMPONENT_NAMES)
# Host names under the wildcard domain that an operator keeps for the platform itself (web, API,
# mail, status, monitoring): the default of tenants_reserved_names, which an operator may change.
DEFAULT_RESERVED_HOST_NAMES = (
    'www', 'web', 'api', 'app', 'apps', 'auth', 'login', 'sso', 'account', 'accounts',
    'mail', 'email', 'smtp', 'imap', 'pop', 'pop3', 'webmail', 'mx', 'autoconfig', 'autodiscover',
    'ns', 'ns1', 'ns2', 'dns', 'status', 'static', 'assets', 'cdn', 'media', 'docs', 'help',
    'support', 'blog', 'billing', 'portal', 'dashboard', 'monitoring', 'metrics', 'grafana',
    'prometheus', 'alertmanager', 'haproxy', 'stats', 'vpn', 'ftp', 'localhost',
)
TEMPLATE_SUFFIX = '-template'
STATES = ('present', 'suspended', 'absent')
ACTIONS = ('create', 'update', 'suspend', 'resume', 'drop')
MAINTENANCE_DATABASES = ('postgres', 'template1')
REPORT_SUFFIX = '_report'
# Bump when the per-database setup changes: every tenant database is set up again once.
SETUP_VERSION = '1'
MARKER_PREFIX = 'dine360 tenant '
# The comment of a tenant database found holding data but no Odoo: every later run, whatever
# its scope, keeps the tenant off the routes until its database is repaired or restored.
BROKEN_MARKER = MARKER_PREFIX + 'name=%s broken: holds data but no Odoo'

# Where offboarding looks for a recorded final backup (written by the backup modules).
BACKUP_CATALOG_DDL = (
    "CREATE SCHEMA IF NOT EXISTS dine360; "
    "CREATE TABLE IF NOT EXISTS dine360.tenant_backups ("
    " datname name NOT NULL, datoid oid NOT NULL, kind text NOT NULL,"
    " location text NOT NULL, checksum text, taken_at timestamptz NOT NULL DEFAULT now())"
)

PLAN_INT_KEYS = {
    'connection_limit': 1,
    'pool_size': 1,
    'storage_quota_mb': 1,
    'backup_retention_days': 1,
    'reporting_connection_limit': 0,
}
PLAN_DEFAULTS = {
    'reporting_connection_limit': 2,
    'settings': {},
    'odoo_modules': [],
}

AUTH_FUNCTION_BODY = (
    "SELECT s.usename, s.passwd FROM pg_catalog.pg_shadow s "
    "WHERE s.usename = p_usename AND NOT s.usesuper AND NOT s.userepl"
)


class TenantError(Exception):
    """Bad input or a state the reconciler refuses to change; ``errors`` lists each cause."""

    def __init__(self, errors):
        self.errors = list(errors)
        super(TenantError, self).__init__('; '.join(self.errors))


# --------------------------------------------------------------------------- passwords

def derive_password(seed, purpose, name):
    """A stable password for (purpose, name) derived from the environment's secret seed.

    HMAC-SHA256 keyed with the vault's seed: nothing per tenant has to be stored, the
    Odoo role and operators compute the same value, and rotating the seed rotates all.
    """
    if not seed:
        raise ValueError('the password seed is empty')
    mac = hmac.new(seed.encode('utf-8'), ('dine360:%s:%s' % (purpose, name)).encode('utf-8'),
                   hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode('ascii').rstrip('=')[:32]


def scram_verifier(password, salt=None, iterations=4096):
    """A PostgreSQL SCRAM-SHA-256 verifier, so the plain password never reaches the server."""
    salt = salt or os.urandom(16)
    salted = hashlib.pbkdf2_hmac('sha256', password.encode('utf-8'), salt, iterations)
    client_key = hmac.new(salted, b'Client Key', hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b'Server Key', hashlib.sha256).digest()
    b64 = base64.b64encode
    return 'SCRAM-SHA-256$%d:%s$%s:%s' % (iterations, b64(salt).decode(), b64(stored_key).decode(),
                                          b64(server_key).decode())


_SCRAM_RE = re.compile(r'^SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)$')


def scram_matches(verifier, password):
    """Whether a stored verifier belongs to ``password`` (False for md5 or no password)."""
    m = _SCRAM_RE.match(verifier or '')
    if not m:
        return False
    iterations, salt, stored = int(m.group(1)), base64.b64decode(m.group(2)), base64.b64decode(m.group(3))
    salted = hashlib.pbkdf2_hmac('sha256', password.encode('utf-8'), salt, iterations)
    client_key = hmac.new(salted, b'Client Key', hashlib.sha256).digest()
    return hmac.compare_digest(hashlib.sha256(client_key).digest(), stored)


# --------------------------------------------------------------------------- validation

def report_role(tenant):
    return tenant + REPORT_SUFFIX


def name_problem(name, reserved=(), templates=()):
    """The rule ``name`` breaks as a tenant name, or None when it can be one."""
    if not isinstance(name, str) or not name:
        return 'a name is required (a DNS label: lower-case letters, digits and hyphens)'
    if not re.match(r'^[a-z0-9-]*$', name):
        return ('a name holds only lower-case letters, digits and hyphens (a DNS label, RFC 1123; '
                'no capitals, underscores, quotes, spaces or semicolons)')
    if len(name) < 2 or len(name) > 41:
        return 'a name has 2 to 41 characters (this one has %d)' % len(name)
    if not name[0].isalpha():
        return 'a name starts with a letter (it is also a database name)'
    if name.endswith('-'):
        return 'a DNS label does not end with a hyphen (RFC 1123)'
    if name[2:4] == '--':
        return ("hyphens in the third and fourth places are kept for encoded labels (IDNA's xn--): "
                "DNS providers and certificate authorities refuse such a name")
    if name in COMPONENT_NAMES:
        return 'a reserved name: %s' % COMPONENT_NAMES[name]
    if name in templates or name.endswith(TEMPLATE_SUFFIX):
        return "a reserved name: names ending in %r are the groups' template databases" % TEMPLATE_SUFFIX
    if name in reserved:
        return ("a reserved name: one of the platform's own host names under the domain "
                "(tenants_reserved_names)")
    return None


def _label(index, entry):
    name = entry.get('name') if isinstance(entry, dict) else None
    return 'saas_tenants[%d] %r' % (index, name) if name is not None else 'saas_tenants[%d]' % index


def normalize_plans(plans):
    """Validate ``saas_plans``; returns (plans with defaults, errors)."""
    errors, out = [], {}
    if not isinstance(plans, dict) or not plans:
        return {}, ['saas_plans must be a non-empty mapping of plan name to limits']
    for pname, plan in sorted(plans.items()):
        where = 'saas_plans[%r]' % pname
        if not isinstance(plan, dict):
            errors.append('%s must be a mapping' % where)
            continue
        p = dict(PLAN_DEFAULTS)
        p.update(plan)
        for key, minimum in sorted(PLAN_INT_KEYS.items()):
            value = p.get(key)
            try:
                ok = value is not None and not isinstance(value, bool) and int(value) >= minimum
            except (TypeError, ValueError):
                ok = False
            if not ok:
                errors.append('%s.%s must be an integer >= %d (got %r)' % (where, key, minimum, value))
            else:
                p[key] = int(value)
        if not DURATION_RE.match(str(p.get('statement_timeout', ''))):
            errors.append("%s.statement_timeout must be a duration such as '60s' or '5min' (got %r)"
                          % (where, p.get('statement_timeout')))
        if isinstance(p.get('pool_size'), int) and isinstance(p.get('connection_limit'), int) \
                and p['pool_size'] > p['connection_limit']:
            errors.append('%s.pool_size %d exceeds its connection_limit %d: PgBouncer would open '
                          'connections PostgreSQL refuses' % (where, p['pool_size'], p['connection_limit']))
        settings = p.get('settings') or {}
        if not isinstance(settings, dict):
            errors.append('%s.settings must be a mapping of PostgreSQL parameter to value' % where)
            settings = {}
        for key in settings:
            if not GUC_RE.match(str(key)):
                errors.append('%s.settings has an invalid parameter name %r' % (where, key))
        p['settings'] = dict((str(k), str(v)) for k, v in settings.items())
        if not isinstance(p.get('odoo_modules'), list):
            errors.append('%s.odoo_modules must be a list' % where)
        out[pname] = p
    return out, errors


def normalize_groups(groups):
    """Validate ``saas_groups``; returns (groups with defaults, errors)."""
    errors, out = [], {}
    if not isinstance(groups, dict) or not groups:
        return {}, ['saas_groups must be a non-empty mapping of group name to settings']
    roles = {}
    for gname, group in sorted(groups.items()):
        where = 'saas_groups[%r]' % gname
        if not isinstance(group, dict):
            errors.append('%s must be a mapping' % where)
            continue
        if not NAME_RE.match(str(gname)):
            errors.append('%s: a group name must match %s' % (where, NAME_RE.pattern))
        g = dict(group)
        g.setdefault('template_db', '%s-template' % gname)
        role = g.get('app_role')
        if not isinstance(role, str) or not ROLE_RE.match(role):
            errors.append('%s.app_role must be a PostgreSQL role name matching %s (got %r)'
                          % (where, ROLE_RE.pattern, role))
        elif role in roles:
            errors.append('%s.app_role %r is also the role of group %r: each group needs its own '
                          'role, or one group could reach the other\'s databases' % (where, role, roles[role]))
        else:
            roles[role] = gname
        if not isinstance(g['template_db'], str) or not g['template_db']:
            errors.append('%s.template_db must be a database name' % where)
        out[gname] = g
    return out, errors


def validate(tenants, plans, groups, reserved=()):
    """Validate the whole tenant list. Raises TenantError naming every bad entry."""
    plans, errors = normalize_plans(plans)
    groups, gerrors = normalize_groups(groups)
    errors.extend(gerrors)
    reserved = set(reserved or ())
    templates = set(g['template_db'] for g in groups.values())
    if not isinstance(tenants, list):
        raise TenantError(errors + ['saas_tenants must be a list of {name, plan, group, state}'])
    seen, out = {}, []
    for i, entry in enumerate(tenants):
        label = _label(i, entry)
        if not isinstance(entry, dict):
            errors.append('%s must be a mapping with name, plan, group and state' % label)
            continue
        unknown = sorted(set(entry) - set(['name', 'plan', 'group', 'state', 'company', 'force', 'admin_password']))
        if unknown:
            errors.append('%s: unknown keys %s' % (label, ', '.join(unknown)))
        name = entry.get('name')
        problem = name_problem(name, reserved, templates)
        if problem:
            errors.append('%s: %s' % (label, problem))
        elif name in seen:
            errors.append('%s: duplicate of saas_tenants[%d]' % (label, seen[name]))
        else:
            seen[name] = i
        state = entry.get('state', 'present')
        if state not in STATES:
            errors.append('%s: state must be one of %s (got %r)' % (label, ', '.join(STATES), state))
        plan = entry.get('plan')
        if plan not in plans:
            errors.append('%s: unknown plan %r (known: %s)' % (label, plan, ', '.join(sorted(plans)) or 'none'))
        group = entry.get('group')
        if group not in groups:
            errors.append('%s: unknown group %r (known: %s)' % (label, group, ', '.join(sorted(groups)) or 'none'))
        out.append(dict(name=name, plan=plan, group=group, state=state, force=bool(entry.get('force', False))))
    if errors:
        raise TenantError(errors)
    return out, plans, groups


# --------------------------------------------------------------------------- state

class Step(object):
    """One statement: on the main connection (db=None) or inside a tenant database."""

    def __init__(self, query, params=None, db=None, display=None):
        self.query, self.params, self.db, self.display = query, params, db, display

    def text(self, cursor):
        if self.display:
            return self.display
        raw = cursor.mogrify(self.query, self.params)
        return raw.decode('utf-8') if isinstance(raw, bytes) else raw


def read_state(cursor, role_names):
    """Everything the plan needs, in five catalog queries on one connection."""
    cursor.execute("SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user")
    row = cursor.fetchone()
    if not row or not row[0]:
        raise TenantError(['the login role must be a superuser (it reads pg_authid and creates databases); '
                           'connect as postgres over the Unix socket'])
    dbs = {}
    cursor.execute(
        "SELECT d.datname, d.oid, pg_catalog.pg_get_userbyid(d.datdba), d.datconnlimit, d.datallowconn,"
        " d.datistemplate, pg_catalog.shobj_description(d.oid, 'pg_database'),"
        " pg_catalog.pg_encoding_to_char(d.encoding) FROM pg_catalog.pg_database d")
    for name, oid, owner, connlimit, allowconn, istemplate, comment, encoding in cursor.fetchall():
        dbs[name] = dict(oid=oid, owner=owner, connection_limit=connlimit, allow_connections=allowconn,
                         is_template=istemplate, comment=comment or '', encoding=encoding,
                         settings={}, connect=set())
    cursor.execute(
        "SELECT d.datname, s.setconfig FROM pg_catalog.pg_db_role_setting s"
        " JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase WHERE s.setrole = 0")
    for name, config in cursor.fetchall():
        dbs[name]['settings'] = dict(c.split('=', 1) for c in (config or []))
    cursor.execute(
        "SELECT d.datname, CASE WHEN a.grantee = 0 THEN 'PUBLIC'"
        " ELSE pg_catalog.pg_get_userbyid(a.grantee) END"
        " FROM pg_catalog.pg_database d"
        " CROSS JOIN LATERAL pg_catalog.aclexplode(coalesce(d.datacl, pg_catalog.acldefault('d', d.datdba))) a"
        " WHERE a.privilege_type = 'CONNECT'")
    for name, grantee in cursor.fetchall():
        dbs[name]['connect'].add(grantee)
    roles = {}
    cursor.execute(
        "SELECT a.rolname, a.rolcanlogin, a.rolsuper, a.rolcreatedb, a.rolcreaterole, a.rolinherit,"
        " a.rolconnlimit, a.rolpassword, coalesce(r.rolconfig, '{}') FROM pg_catalog.pg_authid a"
        " JOIN pg_catalog.pg_roles r ON r.oid = a.oid WHERE a.rolname = ANY(%s)",
        (sorted(role_names),))
    for name, login, superuser, createdb, createrole, inherit, connlimit, password, config in cursor.fetchall():
        roles[name] = dict(login=login, superuser=superuser, createdb=createdb, createrole=createrole,
                           inherit=inherit, connection_limit=connlimit, password=password,
                           config=dict(c.split('=', 1) for c in config))
    backups = set()
    cursor.execute("SELECT pg_catalog.to_regclass('dine360.tenant_backups') IS NOT NULL")
    if cursor.fetchone()[0]:
        cursor.execute("SELECT DISTINCT datoid FROM dine360.tenant_backups WHERE kind = 'final'")
        backups = set(r[0] for r in cursor.fetchall())
    return dict(dbs=dbs, roles=roles, final_backups=backups)


# Whether a tenant database holds Odoo (its module table) and how many relations it has
# outside the system schemas and the pgbouncer schema the tenant setup adds.
ODOO_PROBE = (
    "SELECT pg_catalog.to_regclass('public.ir_module_module') IS NOT NULL,"
    " (SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
    "  WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')"
    "  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgbouncer') AND n.nspname NOT LIKE 'pg_toast%%')")


def probe_odoo(connect_db, names):
    """{name: (has_odoo, relations)} for each database in ``names`` (one short connection each)."""
    found = {}
    for name in names:
        conn = connect_db(name)
        try:
            cur = conn.cursor()
            cur.execute(ODOO_PROBE)
            found[name] = tuple(cur.fetchone())
        finally:
            conn.close()
    return found


def setup_marker(tenant, group, auth_user):
    key = '|'.join([SETUP_VERSION, tenant['name'], group['app_role'], report_role(tenant['name']), auth_user or ''])
    digest = hashlib.sha256(key.encode('utf-8')).hexdigest()[:16]
    return '%sname=%s group=%s setup=%s' % (MARKER_PREFIX, tenant['name'], tenant['group'], digest)


# --------------------------------------------------------------------------- planning

_FLAGS = dict(LOGIN='login', SUPERUSER='superuser', CREATEDB='createdb', CREATEROLE='createrole',
              INHERIT='inherit')


def _parse_flags(flags):
    """'LOGIN NOSUPERUSER NOINHERIT' -> {'login': True, 'superuser': False, 'inherit': False}."""
    want = {}
    for flag in flags.split():
        negated = flag.startswith('NO') and flag[2:] in _FLAGS
        want[_FLAGS[flag[2:] if negated else flag]] = not negated
    return want


class Planner(object):
    """Computes the statements that take the cluster from its state to the list's."""

    def __init__(self, tenants, plans, groups, state, password_seed, actions=ACTIONS, only=None,
                 cluster=None, auth_user=None, maintenance_roles=(), restrict_maintenance=True,
                 force=False, require_templates=False):
        self.tenants, self.plans, self.groups, self.state = tenants, plans, groups, state
        self.seed, self.actions, self.only = password_seed, set(actions), only
        self.cluster, self.auth_user, self.force = cluster, auth_user, force
        self.maintenance_roles, self.restrict_maintenance = list(maintenance_roles), restrict_maintenance
        self.require_templates = require_templates
        self.steps, self.errors, self.warnings, self.broken = [], [], [], []
        self.results, self.before, self.after = {}, {}, {}

    # -- helpers
    def _ident(self, *names):
        return [sql.Identifier(n) for n in names]

    def _add(self, query, params=None, db=None, display=None):
        self.steps.append(Step(query, params, db, display))

    def local_groups(self):
        """Groups managed on this cluster: all when no cluster is named, else those whose
        db_cluster is this one or unset."""
        return dict((n, g) for n, g in self.groups.items()
                    if self.cluster is None or g.get('db_cluster') in (None, self.cluster))

    def role_names(self):
        names = set(g['app_role'] for g in self.local_groups().values())
        names.update(report_role(t['name']) for t in self.tenants)
        names.update(self.maintenance_roles)
        if self.auth_user:
            names.add(self.auth_user)
        return names

    def _role(self, name, password, login_flags, connection_limit=-1, config=None):
        """CREATE or ALTER a login role to match; the password goes as a SCRAM verifier."""
        have = self.state['roles'].get(name)
        ident = sql.Identifier(name)
        if have is None:
            self._add(sql.SQL('CREATE ROLE {} ' + login_flags + ' CONNECTION LIMIT {} PASSWORD {}').format(
                ident, sql.Literal(connection_limit), sql.Literal(scram_verifier(password))),
                display='CREATE ROLE "%s" %s CONNECTION LIMIT %d PASSWORD \'********\''
                        % (name, login_flags, connection_limit))
            have = dict(config={})
        else:
            want = _parse_flags(login_flags)
            if any(have[k] != v for k, v in want.items()) or have['connection_limit'] != connection_limit:
                self._add(sql.SQL('ALTER ROLE {} ' + login_flags + ' CONNECTION LIMIT {}').format(
                    ident, sql.Literal(connection_limit)))
            if not scram_matches(have['password'], password):
                self._add(sql.SQL('ALTER ROLE {} PASSWORD {}').format(
                    ident, sql.Literal(scram_verifier(password))),
                    display='ALTER ROLE "%s" PASSWORD \'********\'' % name)
        for key, value in sorted((config or {}).items()):
            if have['config'].get(key) != value:
                self._add(sql.SQL('ALTER ROLE {} SET {} = {}').format(
                    ident, sql.Identifier(key), sql.Literal(value)))

    # -- the plan
    def plan(self):
        local = self.local_groups()
        for gname, group in sorted(local.items()):
            self._role(group['app_role'], derive_password(self.seed, 'app', gname),
                       'LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE INHERIT')
        if self.restrict_maintenance:
            allowed = set(g['app_role'] for g in local.values()) | set(self.maintenance_roles)
            if self.auth_user:
                allowed.add(self.auth_user)
            for dbname in MAINTENANCE_DATABASES:
                self._connect_acl(dbname, allowed, pending_roles=allowed)
        for tenant in self.in_scope():
            self._tenant(tenant, self.groups[tenant['group']])
        # Found broken by an earlier run (of any scope) and not repaired since.
        for tenant in self.tenants:
            db = self.state['dbs'].get(tenant['name'])
            if tenant['state'] != 'absent' and db is not None and db['comment'] == BROKEN_MARKER % tenant['name'] \
                    and tenant['name'] not in self.broken and tenant['name'] not in self.state.get('odoo', {}):
                self.broken.append(tenant['name'])
        if self.errors:
            raise TenantError(self.errors)
        return self.steps

    def _connect_acl(self, dbname, allowed, pending_roles=(), have=None):
        if have is None:
            have = self.state['dbs'].get(dbname, {}).get('connect', set())
        if 'PUBLIC' in have:
            self._add(sql.SQL('REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC').format(sql.Identifier(dbname)))
        for role in sorted(allowed - have):
            if role in self.state['roles'] or role in pending_roles:
                self._add(sql.SQL('GRANT CONNECT ON DATABASE {} TO {}').format(*self._ident(dbname, role)))
            else:
                self.warnings.append('role %r does not exist; it was not granted CONNECT on %s' % (role, dbname))

    def in_scope(self):
        """The tenants this run manages: of a local group, in ``only`` when it is given."""
        local = self.local_groups().values()
        return [t for t in self.tenants if self.groups[t['group']] in local
                and (self.only is None or t['name'] in self.only)]

    def odoo_candidates(self):
        """Existing, connectable tenant databases whose Odoo initialisation must be checked."""
        if not self.require_templates:
            return []
        names = []
        for t in self.in_scope():
            db = self.state['dbs'].get(t['name'])
            if not self.groups[t['group']].get('release'):
                continue  # a group without a release runs no Odoo
            if t['state'] != 'absent' and db is not None and db['allow_connections'] and not db['is_template']:
                names.append(t['name'])
        return names

    def _view(self, db):
        if db is None:
            return dict(exists=False)
        return dict(exists=True, owner=db['owner'], connection_limit=db['connection_limit'],
                    allow_connections=db['allow_connections'], settings=db['settings'])

    def _tenant(self, tenant, group):
        name, state = tenant['name'], tenant['state']
        plan = self.plans[tenant['plan']]
        db = self.state['dbs'].get(name)
        ident = sql.Identifier(name)
        start = len(self.steps)
        action = 'unchanged'
        self.before[name] = self._view(db)
        if db is not None and db['owner'] != group['app_role'] and state != 'absent':
            self.errors.append(
                'tenant %r: its database is owned by %r, not by group %r\'s role %r. Moving a tenant between '
                'groups is not done by reconcile: dump and restore it into the new group (docs/tenants.md)'
                % (name, db['owner'], tenant['group'], group['app_role']))
            return
        if db is not None and db['is_template']:
            self.errors.append('tenant %r: the database %r is a template; refusing to manage it' % (name, name))
            return
        if state == 'absent':
            if db is not None and 'drop' not in self.actions:
                self.warnings.append(
                    'tenant %r is absent in the list but its database is kept: offboarding runs only when asked '
                    'for by name (playbooks/tenants.yml --tags offboard -e tenant=%s)' % (name, name))
            if db is not None and 'drop' in self.actions:
                if not (self.force or tenant['force'] or db['oid'] in self.state['final_backups']):
                    self.errors.append(
                        'tenant %r: refusing to drop its database: no final backup is recorded for it '
                        '(dine360.tenant_backups). Take the final dump first, or set force: true on the '
                        'entry (or -e tenants_force_offboard=true) to drop it without one' % name)
                    return
                self._add(sql.SQL('DROP DATABASE {} WITH (FORCE)').format(ident))
                action = 'dropped'
            if (db is None or action == 'dropped') and report_role(name) in self.state['roles'] \
                    and 'drop' in self.actions:
                self._add(sql.SQL('DROP ROLE {}').format(sql.Identifier(report_role(name))))
                action = 'dropped'
            self.after[name] = dict(exists=False) if action == 'dropped' else self.before[name]
        elif db is None:
            if state == 'suspended' or 'create' not in self.actions:
                if state == 'suspended':
                    self.warnings.append('tenant %r is suspended but has no database: nothing to suspend' % name)
                self.after[name] = self.before[name]
                self.results[name] = 'absent'
                return
            if not self._create(tenant, group, plan):
                return
            action = 'created'
        elif name in self.state.get('odoo', {}) and not self.state['odoo'][name][0]:
            # The database exists but holds no Odoo: created before its group's template existed.
            relations = self.state['odoo'][name][1]
            if relations == 0 and 'create' in self.actions:
                self._add(sql.SQL('DROP DATABASE {} WITH (FORCE)').format(ident))
                if not self._create(tenant, group, plan):
                    return
                action = 'recloned'
                self.warnings.append('tenant %r: its database was empty (no Odoo): cloned again from %r'
                                     % (name, group['template_db']))
            else:
                self.broken.append(name)
                if db['comment'] != BROKEN_MARKER % name:
                    self._add(sql.SQL('COMMENT ON DATABASE {} IS {}').format(ident, sql.Literal(BROKEN_MARKER % name)))
                self.warnings.append(
                    'tenant %r: its database has no Odoo but holds %d relation(s), so it was left alone and is not '
                    'routed: restore the restaurant from its dump (playbooks/tenants.yml --tags restore -e tenant=%s), '
                    'or offboard it (state: absent, force: true) and onboard it again' % (name, relations, name))
                self.after[name] = self.before[name]
                action = 'broken'
        else:
            resuming = state == 'present' and not db['allow_connections'] and 'resume' in self.actions
            if resuming:
                self._add(sql.SQL('ALTER DATABASE {} ALLOW_CONNECTIONS true').format(ident))
            if 'update' in self.actions:
                self._report_role(tenant, plan)
                if db['connection_limit'] != plan['connection_limit']:
                    self._add(sql.SQL('ALTER DATABASE {} CONNECTION LIMIT {}').format(
                        ident, sql.Literal(plan['connection_limit'])))
                self._database_settings(tenant, plan, db)
                # A suspended database refuses every connection: its inside is set up on resume.
                if db['allow_connections'] or resuming:
                    self._database_setup(tenant, group, db)
                if len(self.steps) > start + (1 if resuming else 0):
                    action = 'updated'
            if resuming:
                action = 'resumed'
            elif state == 'suspended' and db['allow_connections'] and 'suspend' in self.actions:
                self._add(sql.SQL('ALTER DATABASE {} ALLOW_CONNECTIONS false').format(ident))
                self._add(sql.SQL('SELECT count(pg_catalog.pg_terminate_backend(pid)) FROM pg_catalog.pg_stat_activity'
                                  ' WHERE datname = {} AND pid <> pg_catalog.pg_backend_pid()').format(
                    sql.Literal(name)))
                action = 'suspended'
            after = self._view(db)
            if 'update' in self.actions:
                after.update(connection_limit=plan['connection_limit'], settings=self._want_settings(plan))
            if action in ('suspended', 'resumed'):
                after['allow_connections'] = action == 'resumed'
            self.after[name] = after
        self.results[name] = action

    def _create(self, tenant, group, plan):
        """CREATE the tenant's database from its group's template; False (an error noted) when the
        template is required and missing."""
        name = tenant['name']
        if group['template_db'] in self.state['dbs']:
            template = group['template_db']
        elif self.require_templates and group.get('release'):
            self.errors.append(
                'tenant %r: group %r has no template database %r yet, and a database without it would be an '
                'empty one Odoo cannot serve: build the templates first (playbooks/app_tier.yml), then onboard again'
                % (name, tenant['group'], group['template_db']))
            return False
        else:
            template = 'template0'
        self._report_role(tenant, plan)
        self._add(sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE {} ENCODING 'UTF8' CONNECTION LIMIT {}").format(
            sql.Identifier(name), sql.Identifier(group['app_role']), sql.Identifier(template),
            sql.Literal(plan['connection_limit'])))
        self._database_settings(tenant, plan, dict(settings={}, connect=set(['PUBLIC'])))
        self._database_setup(tenant, group, None)
        self.after[name] = dict(exists=True, owner=group['app_role'], connection_limit=plan['connection_limit'],
                                allow_connections=True, settings=self._want_settings(plan))
        return True

    def _want_settings(self, plan):
        want = dict(plan['settings'])
        want['statement_timeout'] = str(plan['statement_timeout'])
        return want

    def _database_settings(self, tenant, plan, db):
        ident = sql.Identifier(tenant['name'])
        want = self._want_settings(plan)
        for key, value in sorted(want.items()):
            if db['settings'].get(key) != value:
                self._add(sql.SQL('ALTER DATABASE {} SET {} = {}').format(ident, sql.Identifier(key), sql.Literal(value)))
        for key in sorted(set(db['settings']) - set(want)):
            self._add(sql.SQL('ALTER DATABASE {} RESET {}').format(ident, sql.Identifier(key)))
        allowed = set([report_role(tenant['name'])])
        if self.auth_user:
            allowed.add(self.auth_user)
        self._connect_acl(tenant['name'], allowed, pending_roles=allowed, have=db['connect'])

    def _report_role(self, tenant, plan):
        self._role(report_role(tenant['name']), derive_password(self.seed, 'report', tenant['name']),
                   'LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT', plan['reporting_connection_limit'],
                   config={'default_transaction_read_only': 'on'})

    def _database_setup(self, tenant, group, db):
        """Objects inside the tenant database; skipped while its marker is current."""
        marker = setup_marker(tenant, group, self.auth_user)
        if db is not None and db['comment'] == marker:
            return
        name, app, ro = tenant['name'], group['app_role'], report_role(tenant['name'])
        if self.auth_user:
            auth = sql.Identifier(self.auth_user)
            self._add(sql.SQL('CREATE SCHEMA IF NOT EXISTS pgbouncer'), db=name)
            self._add(sql.SQL('REVOKE ALL ON SCHEMA pgbouncer FROM PUBLIC'), db=name)
            self._add(sql.SQL('GRANT USAGE ON SCHEMA pgbouncer TO {}').format(auth), db=name)
            self._add(sql.SQL(
                'CREATE OR REPLACE FUNCTION pgbouncer.get_auth(p_usename text)'
                ' RETURNS TABLE(usename name, passwd text) LANGUAGE sql STABLE SECURITY DEFINER'
                ' SET search_path = pg_catalog AS $fn$' + AUTH_FUNCTION_BODY + '$fn$'), db=name)
            self._add(sql.SQL('REVOKE ALL ON FUNCTION pgbouncer.get_auth(text) FROM PUBLIC'), db=name)
            self._add(sql.SQL('GRANT EXECUTE ON FUNCTION pgbouncer.get_auth(text) TO {}').format(auth), db=name)
        ro_ident, app_ident = sql.Identifier(ro), sql.Identifier(app)
        self._add(sql.SQL('GRANT USAGE ON SCHEMA public TO {}').format(ro_ident), db=name)
        self._add(sql.SQL('GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}').format(ro_ident), db=name)
        self._add(sql.SQL('GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO {}').format(ro_ident), db=name)
        self._add(sql.SQL('ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA public GRANT SELECT ON TABLES TO {}').format(
            app_ident, ro_ident), db=name)
        self._add(sql.SQL('ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA public GRANT SELECT ON SEQUENCES TO {}').format(
            app_ident, ro_ident), db=name)
        self._add(sql.SQL('COMMENT ON DATABASE {} IS {}').format(sql.Identifier(name), sql.Literal(marker)))


# --------------------------------------------------------------------------- execution

def execute(steps, cursor, connect_db):
    """Run the steps in order; a tenant database's steps share one connection, closed as
    soon as the run moves on (so a run creating hundreds of tenants holds at most two).

    Returns the executed statements' text (passwords masked). On failure the exception
    carries ``executed`` so the caller can report exactly what had been done.
    """
    executed, db_name, db_conn = [], None, None
    try:
        for step in steps:
            if step.db != db_name and db_conn is not None:
                db_conn.close()
                db_name, db_conn = None, None
            text = None
            try:
                if step.db is None:
                    cur = cursor
                else:
                    if db_conn is None:
                        text = 'connecting to database %s' % step.db
                        db_name, db_conn = step.db, connect_db(step.db)
                    cur = db_conn.cursor()
                text = step.text(cur)
                cur.execute(step.query, step.params)
            except Exception as e:
                e.executed = executed
                e.failed = text
                raise
            executed.append(text if step.db is None else '[%s] %s' % (step.db, text))
    finally:
        if db_conn is not None:
            db_conn.close()
    return executed


def reconcile(cursor, connect_db, tenants, plans, groups, password_seed, check_mode=False, **kwargs):
    """Validate, plan and (unless check_mode) apply. Returns a result dict for the module."""
    reserved = kwargs.pop('reserved_names', ())
    tenants, plans, groups = validate(tenants, plans, groups, reserved)
    only = kwargs.get('only')
    if only is not None:
        known = set(t['name'] for t in tenants)
        missing = sorted(set(only) - known)
        if missing:
            raise TenantError(['tenant %r is not in saas_tenants: add it to the list first' % n for n in missing])
    planner = Planner(tenants, plans, groups, None, password_seed, **kwargs)
    planner.state = read_state(cursor, planner.role_names())
    planner.state['odoo'] = probe_odoo(connect_db, planner.odoo_candidates())
    steps = planner.plan()
    if check_mode:
        statements = [s.text(cursor) if s.db is None else '[%s] %s' % (s.db, s.text(cursor)) for s in steps]
    else:
        statements = execute(steps, cursor, connect_db)
    changed_tenants = dict((n, a) for n, a in planner.results.items() if a not in ('unchanged', 'absent', 'broken'))
    return dict(
        changed=bool(steps),
        statements=statements,
        tenants=planner.results,
        created=sorted(n for n, a in changed_tenants.items() if a == 'created'),
        updated=sorted(n for n, a in changed_tenants.items() if a == 'updated'),
        suspended=sorted(n for n, a in changed_tenants.items() if a == 'suspended'),
        resumed=sorted(n for n, a in changed_tenants.items() if a == 'resumed'),
        dropped=sorted(n for n, a in changed_tenants.items() if a == 'dropped'),
        recloned=sorted(n for n, a in changed_tenants.items() if a == 'recloned'),
        broken=sorted(planner.broken),
        warnings=planner.warnings,
        diff=dict(before=dict((k, v) for k, v in planner.before.items() if k in changed_tenants),
                  after=dict((k, v) for k, v in planner.after.items() if k in changed_tenants)),
    )
