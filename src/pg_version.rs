//! Every difference between the PostgreSQL majors pg_entitlements supports (the features
//! `pg15` to `pg18`, one per build), so that the rest of the extension reads the same on all
//! of them. A difference found later belongs here too.

use pgrx::pg_sys;

/// `ACL_SELECT` as the `AclMode` that `pg_class_aclcheck` takes: `AclMode` became 64 bits wide
/// in 16.
pub const ACL_SELECT: pg_sys::AclMode = pg_sys::ACL_SELECT as pg_sys::AclMode;

/// `index_beginscan` of the executor's index scans: 18 added an `IndexScanInstrumentation`
/// argument (null: nothing to count), before the keys.
///
/// # Safety
/// As `pg_sys::index_beginscan`: open relations, a registered or active snapshot.
pub unsafe fn index_beginscan(
    heap: pg_sys::Relation,
    index: pg_sys::Relation,
    snapshot: pg_sys::Snapshot,
    nkeys: i32,
    norderbys: i32,
) -> pg_sys::IndexScanDesc {
    #[cfg(any(feature = "pg15", feature = "pg16", feature = "pg17"))]
    {
        pg_sys::index_beginscan(heap, index, snapshot, nkeys, norderbys)
    }
    #[cfg(feature = "pg18")]
    {
        pg_sys::index_beginscan(heap, index, snapshot, std::ptr::null_mut(), nkeys, norderbys)
    }
}
