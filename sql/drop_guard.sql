-- DROP EXTENSION pg_entitlements (and DROP SCHEMA quota CASCADE) drop the extension's tables
-- with every subscription, counter and usage record in them. This event trigger refuses such a
-- drop while they hold rows, unless pg_entitlements.allow_drop_with_data is on (src/drop_guard.rs).
-- Its function reads the command's parse tree, which only a C function can.
CREATE FUNCTION quota.guard_drop() RETURNS event_trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'guard_drop';

CREATE EVENT TRIGGER pg_entitlements_guard_drop ON ddl_command_start
    WHEN TAG IN ('DROP EXTENSION', 'DROP SCHEMA')
    EXECUTE FUNCTION quota.guard_drop();
