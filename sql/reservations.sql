-- Reservations: holds taken before slow work (minutes of generation) that runs outside any
-- transaction, settled with the actual use once it is done (src/holds.rs). An active hold counts
-- against what is left in every check, use and reserve until it is settled, released, or its
-- expires_at passes; the reads compare with the clock, so a hold stops counting at that
-- instant without any job. The counter of the period a hold was granted in keeps what the holds
-- of state 'held' claim (user_usage.held), so that a use, which waits at that counter's row
-- lock, sees every hold granted before it; a hold found expired is marked 'expired' by the next
-- use that needs its units, under that lock. For every counter, held equals the sum of its
-- holds of state 'held' (quota.verify_holds()).
-- Reservations live in schema quota also when an application's tables are attached, like the
-- grants; the attached user_usage needs the column held (attach_problems() needed_for
-- 'reservations').

ALTER TABLE quota.user_usage
    ADD COLUMN held bigint NOT NULL DEFAULT 0 CHECK (held >= 0);

CREATE TABLE quota.reservations (
    id bigint GENERATED ALWAYS AS IDENTITY,
    user_id bigint NOT NULL,
    feature_code text NOT NULL REFERENCES quota.features (code) ON UPDATE CASCADE,
    -- The period (its counter) the hold was granted in; a settled hold counts there.
    period_start timestamptz NOT NULL,
    period_end timestamptz NOT NULL,
    amount bigint NOT NULL CHECK (amount > 0),
    expires_at timestamptz NOT NULL,
    -- held: counts while expires_at > now(); settled, released: ended by the call; expired:
    -- found past expires_at while still held.
    state text NOT NULL DEFAULT 'held'
        CHECK (state IN ('held', 'settled', 'released', 'expired')),
    -- The actual use settle() recorded, and its usage record (none for 0).
    settled_amount bigint CHECK (settled_amount >= 0),
    record_id bigint,
    idempotency_key quota.idempotency_key,
    -- The login role of the session that reserved.
    actor text NOT NULL DEFAULT session_user,
    created_at timestamptz NOT NULL DEFAULT now(),
    ended_at timestamptz,
    PRIMARY KEY (user_id, id),
    CHECK (expires_at > created_at),
    CHECK ((state = 'held') = (ended_at IS NULL)),
    CHECK ((state = 'settled') = (settled_amount IS NOT NULL))
);
-- The holds a counter's uses reclaim and its reads add up.
CREATE INDEX reservations_held_idx ON quota.reservations (user_id, feature_code, period_start)
    WHERE state = 'held';
-- settle(reservation_id) and release(reservation_id) find a hold by its id alone.
CREATE INDEX reservations_id_idx ON quota.reservations (id);
CREATE UNIQUE INDEX reservations_idempotency_key_idx
    ON quota.reservations (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

SELECT pg_catalog.pg_extension_config_dump('quota.reservations', '');
SELECT pg_catalog.pg_extension_config_dump('quota.reservations_id_seq', '');

-- The holds' ledger: for every counter, held equals the sum of the amounts of its holds of state
-- 'held'. Returns the counters that disagree: none, always. It reads the tables the functions
-- use: the extension's own user_usage, or the one quota.attach() bound.
CREATE FUNCTION quota.verify_holds(for_user bigint DEFAULT NULL)
RETURNS TABLE (user_id bigint, feature_code text, period_start timestamptz, held bigint,
               ledger bigint)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tables name := coalesce((SELECT st.attached_schema FROM quota.settings st), 'quota');
    -- An attached application's period_start without time zone holds its local time.
    local_zone text := (SELECT st.attached_time_zone FROM quota.settings st
                         WHERE (SELECT a.atttypid FROM pg_attribute a
                                 WHERE a.attrelid = to_regclass(format('%I.user_usage', tables))
                                   AND a.attname = 'period_start' AND NOT a.attisdropped)
                               = 'timestamp'::regtype);
BEGIN
    IF NOT EXISTS (SELECT FROM pg_attribute a
                    WHERE a.attrelid = to_regclass(format('%I.user_usage', tables))
                      AND a.attname = 'held' AND NOT a.attisdropped) THEN
        -- Without the column no hold is granted.
        RETURN QUERY SELECT r.user_id, r.feature_code, r.period_start, 0::bigint, r.amount
                       FROM quota.reservations r
                      WHERE r.state = 'held' AND (for_user IS NULL OR r.user_id = for_user);
        RETURN;
    END IF;
    RETURN QUERY EXECUTE format($q$
        SELECT coalesce(u.user_id, r.user_id)::bigint, coalesce(u.feature_code, r.feature_code)::text,
               coalesce(u.period_start, r.period_start)::timestamptz,
               coalesce(u.held, 0)::bigint, coalesce(r.total, 0)::bigint
          FROM (SELECT x.user_id, x.feature_code, %2$s AS period_start, x.held
                  FROM %1$I.user_usage x
                 WHERE x.held <> 0 AND ($1 IS NULL OR x.user_id = $1)) u
          FULL JOIN (SELECT x.user_id, x.feature_code, x.period_start, sum(x.amount) AS total
                       FROM quota.reservations x
                      WHERE x.state = 'held' AND ($1 IS NULL OR x.user_id = $1)
                      GROUP BY 1, 2, 3) r
            ON u.user_id = r.user_id AND u.feature_code = r.feature_code
           AND u.period_start = r.period_start
         WHERE coalesce(u.held, 0) IS DISTINCT FROM coalesce(r.total, 0)
         ORDER BY 1, 2, 3$q$, tables,
        CASE WHEN local_zone IS NULL THEN 'x.period_start::timestamptz'
             ELSE format('x.period_start AT TIME ZONE %L', local_zone) END)
    USING for_user;
END
$$;
