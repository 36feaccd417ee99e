"""The kill switch is written only by the operator role, and every halt and resume is logged
with the operator who did it.

Revision ID: 0013_operator_kill_switch
Revises: 0012_client_rate_limits

- The app role keeps SELECT on `trading_halts` (the order path reads it) and loses INSERT,
  UPDATE, DELETE and TRUNCATE: a compromised app cannot lift or set a halt. The operator
  role (`defaults.ROLE_OPERATOR`, NOLOGIN, made by sparkops.dbroles with the other
  privileges) gets them.
- `trading_halt_log`: a trigger on `trading_halts` appends one row per halt, change and
  resume, with the operator's name (`spark.operator`, set for the transaction by
  `sparkops app halt|resume --operator`; the login role when unset, e.g. a DBA in psql), the
  database role that did it, the reason and the time. Append-only for the operator role;
  the app role cannot read it.
- `trading_halts.halted_by`: the operator who set the halt in force.

Backward compatible: the previous release's app only reads `trading_halts`; the new column
is nullable.
"""

from alembic import op

from sparkops import defaults

revision = "0013_operator_kill_switch"
down_revision = "0012_client_rate_limits"
branch_labels = None
depends_on = None
backward_compatible = True

APP = defaults.ROLE_APP
OPERATOR = defaults.ROLE_OPERATOR


def upgrade() -> None:
    op.execute(f"""
ALTER TABLE trading_halts ADD COLUMN halted_by text;

CREATE TABLE trading_halt_log (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    scope     text NOT NULL,
    action    text NOT NULL CHECK (action IN ('halt', 'change', 'resume')),
    reason    text NOT NULL,
    operator  text NOT NULL CHECK (operator <> ''),
    db_role   text NOT NULL DEFAULT session_user,
    at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX trading_halt_log_scope ON trading_halt_log (scope, at);

CREATE FUNCTION trading_halt_logged() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    who text := coalesce(nullif(current_setting('spark.operator', true), ''), session_user);
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO trading_halt_log (scope, action, reason, operator)
        VALUES (OLD.scope, 'resume', OLD.reason, who);
        RETURN OLD;
    END IF;
    INSERT INTO trading_halt_log (scope, action, reason, operator)
    VALUES (NEW.scope, CASE TG_OP WHEN 'INSERT' THEN 'halt' ELSE 'change' END, NEW.reason, who);
    RETURN NEW;
END$$;
CREATE TRIGGER trading_halts_logged AFTER INSERT OR UPDATE OR DELETE ON trading_halts
    FOR EACH ROW EXECUTE FUNCTION trading_halt_logged();

REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON trading_halts FROM {APP};
REVOKE ALL ON trading_halt_log FROM {APP};
GRANT SELECT, INSERT, UPDATE, DELETE ON trading_halts TO {OPERATOR};
GRANT SELECT, INSERT ON trading_halt_log TO {OPERATOR};
""")


def downgrade() -> None:
    op.execute(f"""
REVOKE ALL ON trading_halts FROM {OPERATOR};
GRANT INSERT, UPDATE, DELETE ON trading_halts TO {APP};
DROP TRIGGER IF EXISTS trading_halts_logged ON trading_halts;
DROP FUNCTION IF EXISTS trading_halt_logged();
DROP TABLE IF EXISTS trading_halt_log;
ALTER TABLE trading_halts DROP COLUMN IF EXISTS halted_by;
""")
