//! Reading a per-user table through one of its btree indexes, without a statement, as
//! PostgreSQL's own foreign-key checks do. A statement pays executor start-up and shut-down on
//! every call; a probe opens the table and the index, descends the btree and reads the few
//! columns it needs.
//!
//! What a probe may use is decided once per backend by [`super::copy`], which also decides
//! when a probe may run at all: only where read-only SPI would have used the caller's
//! snapshot (see `copy::direct`). A probe trusts nothing about the rows themselves: every
//! column may be NULL and a jsonb may be any JSON value; the caller decides what each means,
//! the way the statements do.

use entitlements_core::Error;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::{FromDatum, IntoDatum};

/// An integer column: the extension's tables use bigint, an attached application's may use
/// integer.
#[derive(Clone, Copy, Debug)]
pub struct IntColumn {
    pub attnum: i16,
    pub wide: bool,
}

/// A timestamptz column.
#[derive(Clone, Copy, Debug)]
pub struct TimeColumn(pub i16);

/// A text or varchar column.
#[derive(Clone, Copy, Debug)]
pub struct TextColumn(pub i16);

/// A jsonb column.
#[derive(Clone, Copy, Debug)]
pub struct JsonbColumn(pub i16);

/// The types an index key may have, as its operator class compares them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    Int8,
    Int4,
    Text,
    Timestamptz,
}

impl KeyKind {
    pub fn of(type_oid: Oid) -> Option<KeyKind> {
        match type_oid {
            pg_sys::INT8OID => Some(KeyKind::Int8),
            pg_sys::INT4OID => Some(KeyKind::Int4),
            pg_sys::TEXTOID | pg_sys::VARCHAROID => Some(KeyKind::Text),
            pg_sys::TIMESTAMPTZOID => Some(KeyKind::Timestamptz),
            _ => None,
        }
    }
}

/// One equality condition on an index column: `index column = value`, compared with the
/// equality function of the column's operator family and under the column's collation (a text
/// index sorted under another collation than the one given would be descended wrongly).
#[derive(Clone, Copy, Debug)]
pub struct KeyColumn {
    pub index_attno: i16,
    pub procedure: Oid,
    pub collation: Oid,
    pub kind: KeyKind,
}

/// A value to look up.
#[derive(Clone, Copy)]
pub enum Key<'a> {
    Int(i64),
    Text(&'a str),
    Timestamptz(TimestampWithTimeZone),
}

/// An index of a table, and the conditions a lookup puts on its leading columns.
#[derive(Debug)]
pub struct Probe {
    pub relid: Oid,
    pub index: Oid,
    pub index_name: String,
    /// In the order [`Probe::scan`] receives its keys.
    pub keys: Vec<KeyColumn>,
}

/// What a jsonb column holds under one key.
#[derive(Debug, PartialEq, Eq)]
pub enum JsonbField {
    /// The column is NULL, or the object lacks the key.
    Absent,
    /// The value under the key, as jsonb prints it.
    Value(String),
    /// The document is not an object (an array or a scalar), printed whole.
    NotObject(String),
}

/// A row of the table, as long as the scan stands on it.
pub struct Row {
    slot: *mut pg_sys::TupleTableSlot,
}

impl Row {
    fn datum(&self, attnum: i16) -> Option<Datum> {
        let mut isnull = false;
        // SAFETY: the slot holds a heap tuple of the table (index_getnext_slot returned true)
        // and attnum is one of its columns (cache checked it against pg_attribute).
        let d = unsafe { pg_sys::slot_getattr(self.slot, attnum.into(), &mut isnull) };
        (!isnull).then_some(d)
    }

    /// Where the row version stands in its table (`ctid`), so that a writer can lock exactly
    /// the version it read.
    pub fn tid(&self) -> pg_sys::ItemPointerData {
        // SAFETY: the slot holds the heap tuple index_getnext_slot fetched, tts_tid included.
        unsafe { (*self.slot).tts_tid }
    }

    pub fn int(&self, c: IntColumn) -> Option<i64> {
        // An int4 datum holds the value in its low 32 bits.
        self.datum(c.attnum).map(|d| {
            if c.wide {
                d.value() as i64
            } else {
                i64::from(d.value() as i32)
            }
        })
    }

    pub fn timestamptz(&self, c: TimeColumn) -> Option<TimestampWithTimeZone> {
        // SAFETY: a non-null timestamptz datum (by value).
        self.datum(c.0).and_then(|d| unsafe { TimestampWithTimeZone::from_datum(d, false) })
    }

    /// Whether a text column holds exactly `value` (bytewise, as `=` under a deterministic
    /// collation).
    pub fn text_is(&self, c: TextColumn, value: &str) -> bool {
        // SAFETY: a non-null text or varchar datum; the &str borrows the detoasted value,
        // which lives in the call's memory context.
        self.datum(c.0).and_then(|d| unsafe { <&str>::from_datum(d, false) }) == Some(value)
    }

    pub fn text(&self, c: TextColumn) -> Option<String> {
        // SAFETY: as in text_is; the String is a copy.
        self.datum(c.0).and_then(|d| unsafe { String::from_datum(d, false) })
    }

    /// `column -> key` of a jsonb column, as the statements read it: the value, its absence,
    /// or a document that is not an object at all.
    pub fn jsonb_field(&self, c: JsonbColumn, key: &str) -> JsonbField {
        let Some(d) = self.datum(c.0) else {
            return JsonbField::Absent;
        };
        // SAFETY: what jsonb_object_field and jsonb_out do. The document is detoasted; its
        // root header says whether it is an object (getKeyJsonValueFromContainer may only be
        // given an object: PostgreSQL merely Asserts that, and an array read as an object
        // reads beyond its end). The value found is rebuilt as a jsonb of its own and
        // printed. Everything is palloc'd in the call's memory context.
        unsafe {
            let doc = pg_sys::pg_detoast_datum(d.cast_mut_ptr()).cast::<pg_sys::Jsonb>();
            let root = &raw mut (*doc).root;
            if (*root).header & pg_sys::JB_FOBJECT == 0 {
                return JsonbField::NotObject(print(root, pgrx::varsize(doc.cast())));
            }
            let Ok(len) = i32::try_from(key.len()) else {
                return JsonbField::Absent;
            };
            let value = pg_sys::getKeyJsonValueFromContainer(
                root,
                key.as_ptr().cast(),
                len,
                std::ptr::null_mut(),
            );
            if value.is_null() {
                return JsonbField::Absent;
            }
            let single = pg_sys::JsonbValueToJsonb(value);
            JsonbField::Value(print(&raw mut (*single).root, pgrx::varsize(single.cast())))
        }
    }
}

/// jsonb_out of a container.
///
/// # Safety
/// `root` is the root container of a detoasted jsonb of `size` bytes.
unsafe fn print(root: *mut pg_sys::JsonbContainer, size: usize) -> String {
    let size = i32::try_from(size).unwrap_or(i32::MAX);
    // SAFETY: as the caller promises; JsonbToCString returns a palloc'd C string.
    unsafe {
        let text = pg_sys::JsonbToCString(std::ptr::null_mut(), root, size);
        std::ffi::CStr::from_ptr(text).to_string_lossy().into_owned()
    }
}

/// An open index scan, its slot and relations; closed when dropped.
struct Scan {
    heap: pg_sys::Relation,
    index: pg_sys::Relation,
    scan: pg_sys::IndexScanDesc,
    slot: *mut pg_sys::TupleTableSlot,
}

impl Drop for Scan {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Unwinding from an ERROR: the transaction's (or subtransaction's) abort releases
            // the scan, the slot's buffer pin and the relation references through its
            // resource owner; calling into PostgreSQL in the middle of that is not safe.
            return;
        }
        // SAFETY: each was opened by Probe::scan and is released once, in reverse order. The
        // locks stay until the end of the transaction, as a statement's would.
        unsafe {
            pg_sys::ExecDropSingleTupleTableSlot(self.slot);
            pg_sys::index_endscan(self.scan);
            pg_sys::index_close(self.index, pg_sys::NoLock as i32);
            pg_sys::table_close(self.heap, pg_sys::NoLock as i32);
        }
    }
}

impl Probe {
    /// Calls `visit` on every row of the table whose index columns equal `keys`, visible to the
    /// active snapshot, until `visit` returns false. No row when a key cannot equal any value of
    /// its column (a user id beyond the range of an integer column).
    pub fn scan(
        &self,
        keys: &[Key<'_>],
        mut visit: impl FnMut(&Row) -> Result<bool, Error>,
    ) -> Result<(), Error> {
        if keys.len() != self.keys.len() {
            return Err(Error::Statement {
                what: "an index read",
                detail: format!(
                    "{} takes {} keys, not {}",
                    self.index_name,
                    self.keys.len(),
                    keys.len()
                ),
            });
        }
        let mut scan_keys: Vec<pg_sys::ScanKeyData> = Vec::with_capacity(keys.len());
        for (key, column) in keys.iter().zip(&self.keys) {
            let Some(argument) = key_datum(*key, column.kind)? else {
                return Ok(());
            };
            // SAFETY: ScanKeyEntryInitialize fills every field of the zeroed entry.
            let mut entry: pg_sys::ScanKeyData = unsafe { std::mem::zeroed() };
            unsafe {
                pg_sys::ScanKeyEntryInitialize(
                    &mut entry,
                    0,
                    column.index_attno,
                    pg_sys::BTEqualStrategyNumber as u16,
                    pg_sys::InvalidOid,
                    column.collation,
                    column.procedure,
                    argument,
                );
            }
            scan_keys.push(entry);
        }
        let nkeys = scan_keys.len() as i32;
        // SAFETY: the table and index exist (a drop or any DDL of either invalidates the cache
        // before the next call reaches here); AccessShareLock is what a SELECT takes, held to
        // the end of the transaction like the executor's. The snapshot is the active one, as
        // read-only SPI would use. `Scan` closes everything again, on every way out.
        let scan = unsafe {
            let heap = pg_sys::table_open(self.relid, pg_sys::AccessShareLock as i32);
            let index = pg_sys::index_open(self.index, pg_sys::AccessShareLock as i32);
            let scan = crate::pg_version::index_beginscan(
                heap,
                index,
                pg_sys::GetActiveSnapshot(),
                nkeys,
                0,
            );
            let slot = pg_sys::table_slot_create(heap, std::ptr::null_mut());
            Scan { heap, index, scan, slot }
        };
        // SAFETY: the scan keys outlive the scan's use of them (rescan copies them).
        unsafe {
            pg_sys::index_rescan(scan.scan, scan_keys.as_mut_ptr(), nkeys, std::ptr::null_mut(), 0)
        };
        let row = Row { slot: scan.slot };
        // SAFETY: the scan and slot are open for the life of `scan`.
        while unsafe {
            pg_sys::index_getnext_slot(
                scan.scan,
                pg_sys::ScanDirection::ForwardScanDirection,
                scan.slot,
            )
        } {
            if !visit(&row)? {
                break;
            }
        }
        Ok(())
    }
}

/// The datum of `key` as the index column's type, `Ok(None)` when no value of the column can
/// equal it.
fn key_datum(key: Key<'_>, kind: KeyKind) -> Result<Option<Datum>, Error> {
    Ok(match (key, kind) {
        (Key::Int(v), KeyKind::Int8) => v.into_datum(),
        (Key::Int(v), KeyKind::Int4) => i32::try_from(v).ok().and_then(IntoDatum::into_datum),
        (Key::Text(v), KeyKind::Text) => v.into_datum(),
        (Key::Timestamptz(v), KeyKind::Timestamptz) => v.into_datum(),
        (_, kind) => {
            return Err(Error::Statement {
                what: "an index read",
                detail: format!("a key does not match its index column ({kind:?})"),
            })
        }
    })
}

/// Whether row version `tid` of table `relation` is the one committed now: false once a
/// transaction that committed since the caller's snapshot was taken replaced or deleted it. A
/// writer that waited for a lock asks this of the row it read before waiting, to know whether
/// what it read still stands (src/store.rs, use_sql). Judged as SnapshotSelf judges a row (by
/// the commit log, the way an UPDATE finds the newest version): no snapshot is taken, and a row
/// that nothing changed is answered from its hint bits alone. The caller needs SELECT on the
/// table, as to read the row itself.
pub fn is_current(relation: Oid, tid: pg_sys::ItemPointerData) -> bool {
    let mut tid = tid;
    // SAFETY: a privilege check, then the table access method's fetch of one row version by
    // its tid, with a slot made for it; the slot and the relation are released before
    // returning. Only a relation with rows in storage is asked (a view or a partitioned table,
    // which a caller may name by hand, has no table access method to ask), and only for a tid
    // within it (a row version the caller read cannot lie beyond; a tid given by hand can). An
    // ERROR inside unwinds, and the resource owner releases what was held.
    unsafe {
        let acl =
            pg_sys::pg_class_aclcheck(relation, pg_sys::GetUserId(), crate::pg_version::ACL_SELECT);
        if acl != pg_sys::AclResult::ACLCHECK_OK {
            pg_sys::aclcheck_error(
                acl,
                pg_sys::ObjectType::OBJECT_TABLE,
                pg_sys::get_rel_name(relation),
            );
        }
        let heap = pg_sys::table_open(relation, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        let kind = (*(*heap).rd_rel).relkind as u8;
        let stored = !(*heap).rd_tableam.is_null()
            && [pg_sys::RELKIND_RELATION, pg_sys::RELKIND_MATVIEW, pg_sys::RELKIND_TOASTVALUE]
                .contains(&kind);
        let (block, _) = pgrx::itemptr::item_pointer_get_both(tid);
        let found = stored
            && block
                < pg_sys::RelationGetNumberOfBlocksInFork(heap, pg_sys::ForkNumber::MAIN_FORKNUM)
            && {
                let slot = pg_sys::table_slot_create(heap, std::ptr::null_mut());
                let snapshot = std::ptr::addr_of_mut!(pg_sys::SnapshotSelfData);
                let found = pg_sys::table_tuple_fetch_row_version(heap, &mut tid, snapshot, slot);
                pg_sys::ExecDropSingleTupleTableSlot(slot);
                found
            };
        pg_sys::table_close(heap, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        found
    }
}
