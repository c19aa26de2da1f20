//! `DROP EXTENSION pg_entitlements` drops the extension's tables with it: every subscription,
//! counter and ledger row, in one command that asks nothing. The event trigger
//! `pg_entitlements_guard_drop` (sql/drop_guard.sql) refuses such a drop while those tables
//! hold rows, unless `pg_entitlements.allow_drop_with_data` is on. It reads the command's parse
//! tree, which only a C event trigger function can, to act only on a drop of this extension
//! (or of its schema), not on every DROP EXTENSION of the database. On a Citus coordinator a
//! drop that goes ahead first drops the shards of the extension's tables on every node
//! ([`crate::placement::drop_shards`]).

use crate::error::{guard, OrRaise};
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::{GucSetting, PgLogLevel, PgSqlErrorCode};
use std::ffi::CStr;

/// `pg_entitlements.allow_drop_with_data`: on lets a drop of the extension go ahead although
/// its tables hold rows.
pub static ALLOW_DROP_WITH_DATA: GucSetting<bool> = GucSetting::<bool>::new(false);

const EXTENSION: &str = "pg_entitlements";
const SCHEMA: &str = "quota";

/// Whether the current role may drop the extension: its owner, or a superuser. Any other
/// role's DROP is refused by PostgreSQL itself, with its own message, and may not be able to
/// read the tables.
const MAY_DROP: &str = "
SELECT pg_catalog.pg_has_role(e.extowner, 'USAGE')
  FROM pg_catalog.pg_extension e WHERE e.extname = 'pg_entitlements'";

/// Whether the extension's tables that hold users' data have a row. The subqueries select a
/// column: Citus plans a subquery of a distributed table that selects none into a function
/// call it cannot type ("a column definition list is required").
const HOLDS_DATA: &str = "
SELECT EXISTS (SELECT 1 FROM quota.user_subscriptions) OR EXISTS (SELECT 1 FROM quota.user_usage)
    OR EXISTS (SELECT 1 FROM quota.usage_records) OR EXISTS (SELECT 1 FROM quota.quota_adjustments)";

/// The names a DROP statement names, when it drops objects of `kind`.
///
/// # Safety
/// `node` is a parse tree node.
unsafe fn dropped_names(node: *mut pg_sys::Node, kind: pg_sys::ObjectType::Type) -> Vec<String> {
    // SAFETY: a DropStmt of extensions or schemas lists its objects as String nodes (one per
    // name), as the grammar builds them.
    unsafe {
        if node.is_null() || (*node).type_ != pg_sys::NodeTag::T_DropStmt {
            return Vec::new();
        }
        let drop = node.cast::<pg_sys::DropStmt>();
        let list = (*drop).objects;
        if (*drop).removeType != kind || list.is_null() {
            return Vec::new();
        }
        let cells = std::slice::from_raw_parts((*list).elements, (*list).length as usize);
        cells
            .iter()
            .filter_map(|cell| {
                let name = cell.ptr_value.cast::<pg_sys::String>();
                if name.is_null() || (*name).type_ != pg_sys::NodeTag::T_String {
                    return None;
                }
                Some(CStr::from_ptr((*name).sval).to_string_lossy().into_owned())
            })
            .collect()
    }
}

fn refuse(command: &str) -> ! {
    ErrorReport::new(
        PgSqlErrorCode::ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST,
        format!(
            "{command} would drop every subscription, counter and usage record of pg_entitlements"
        ),
        "pg_entitlements",
    )
    .set_detail("The tables of schema quota hold rows; dropping the extension drops them with it.")
    .set_hint(
        "Keep the data first: pg_dump --schema=quota (or pg_dump of the whole database). To \
         drop it deliberately: SET pg_entitlements.allow_drop_with_data = on; then drop again.",
    )
    .report(PgLogLevel::ERROR);
    std::process::abort()
}

#[no_mangle]
#[doc(hidden)]
pub extern "C" fn pg_finfo_guard_drop() -> &'static pg_sys::Pg_finfo_record {
    const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1
}

/// The event trigger function (`ddl_command_start`, tags DROP EXTENSION and DROP SCHEMA).
///
/// # Safety
/// Called by PostgreSQL's function manager with a valid `fcinfo`.
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn guard_drop(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    guard(|| {
        // SAFETY: fcinfo is valid; an event trigger's context is its EventTriggerData (checked
        // by its node tag: called any other way, the function does nothing).
        let (command, parse_tree) = unsafe {
            let context = (*fcinfo).context;
            if context.is_null() || (*context).type_ != pg_sys::NodeTag::T_EventTriggerData {
                return pg_sys::Datum::from(0);
            }
            let data = context.cast::<pg_sys::EventTriggerData>();
            let tag = pg_sys::GetCommandTagName((*data).tag);
            (CStr::from_ptr(tag).to_string_lossy().into_owned(), (*data).parsetree)
        };
        // SAFETY: the parse tree of the command that fired the trigger.
        let ours = unsafe {
            dropped_names(parse_tree, pg_sys::ObjectType::OBJECT_EXTENSION)
                .iter()
                .any(|n| n == EXTENSION)
                || dropped_names(parse_tree, pg_sys::ObjectType::OBJECT_SCHEMA)
                    .iter()
                    .any(|n| n == SCHEMA)
        };
        if !ours {
            return pg_sys::Datum::from(0);
        }
        let may_drop = Spi::connect(|client| {
            client.select(MAY_DROP, Some(1), &[]).and_then(|t| t.first().get_one::<bool>())
        });
        if may_drop != Ok(Some(true)) {
            return pg_sys::Datum::from(0);
        }
        if !ALLOW_DROP_WITH_DATA.get() {
            let holds_data = Spi::connect(|client| {
                client.select(HOLDS_DATA, Some(1), &[]).and_then(|t| t.first().get_one::<bool>())
            });
            // A table already gone, or unreadable, leaves nothing to protect here.
            if let Ok(Some(true)) = holds_data {
                refuse(&command);
            }
        }
        // The drop goes ahead: on a Citus coordinator the shards go first, in its transaction.
        Spi::connect_mut(crate::placement::drop_shards).or_raise();
        pg_sys::Datum::from(0)
    })
}
