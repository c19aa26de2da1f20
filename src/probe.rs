//! Reading a per-user table through one of its btree indexes, without a statement, as
//! PostgreSQL's own foreign-key checks do. A statement pays executor start-up and shut-down on
//! every call (52% of a check's instructions in BENCHMARKS.md); a probe opens the table and the
//! index, descends the btree and reads the few columns it needs.
//!
//! What a probe may use is decided once per backend by [`crate::cache`], which also decides
//! when a probe may run at all: only where read-only SPI would have used the caller's
//! snapshot (see `cache::direct`).

use pgrx::datum::TimestampWithTimeZone;
use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::{FromDatum, IntoDatum};

/// The column types a probe reads or compares. An attached application's tables may use
/// integer and varchar where the extension's use bigint and text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Int8,
    Int4,
    Text,
    Timestamptz,
    Jsonb,
}

impl Kind {
    pub fn of(type_oid: Oid) -> Option<Kind> {
        match type_oid {
            pg_sys::INT8OID => Some(Kind::Int8),
            pg_sys::INT4OID => Some(Kind::Int4),
            pg_sys::TEXTOID | pg_sys::VARCHAROID => Some(Kind::Text),
            pg_sys::TIMESTAMPTZOID => Some(Kind::Timestamptz),
            pg_sys::JSONBOID => Some(Kind::Jsonb),
            _ => None,
        }
    }
}

/// A column of the table: its number and type.
#[derive(Clone, Copy, Debug)]
pub struct Column {
    pub attnum: i16,
    pub kind: Kind,
}

/// One equality condition on an index column: `index column = value`, compared with the
/// equality function of the column's operator family and under the column's collation (a text
/// index sorted under another collation than the one given would be descended wrongly).
#[derive(Clone, Copy, Debug)]
pub struct KeyColumn {
    pub index_attno: i16,
    pub procedure: Oid,
    pub collation: Oid,
    pub kind: Kind,
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

/// A row of the table, as long as the scan stands on it.
pub struct Row {
    slot: *mut pg_sys::TupleTableSlot,
}

impl Row {
    fn datum(&self, c: Column) -> Option<Datum> {
        let mut isnull = false;
        // SAFETY: the slot holds a heap tuple of the table (index_getnext_slot returned true)
        // and attnum is one of its columns (cache checked it against pg_attribute).
        let d = unsafe { pg_sys::slot_getattr(self.slot, c.attnum.into(), &mut isnull) };
        (!isnull).then_some(d)
    }

    /// Where the row version stands in its table (`ctid`), so that a writer can lock exactly
    /// the version it read.
    pub fn tid(&self) -> pg_sys::ItemPointerData {
        // SAFETY: the slot holds the heap tuple index_getnext_slot fetched, tts_tid included.
        unsafe { (*self.slot).tts_tid }
    }

    pub fn int(&self, c: Column) -> Option<i64> {
        self.datum(c).map(|d| match c.kind {
            Kind::Int8 => d.value() as i64,
            Kind::Int4 => i64::from(d.value() as i32),
            other => panic!("column {} is {other:?}, not an integer", c.attnum),
        })
    }

    pub fn timestamptz(&self, c: Column) -> Option<TimestampWithTimeZone> {
        assert_eq!(c.kind, Kind::Timestamptz, "column {} is not a timestamptz", c.attnum);
        // SAFETY: a non-null timestamptz datum (by value).
        self.datum(c).and_then(|d| unsafe { TimestampWithTimeZone::from_datum(d, false) })
    }

    /// Whether a text column holds exactly `value` (bytewise, as `=` under a deterministic
    /// collation).
    pub fn text_is(&self, c: Column, value: &str) -> bool {
        assert_eq!(c.kind, Kind::Text, "column {} is not text", c.attnum);
        // SAFETY: a non-null text or varchar datum; the &str borrows the detoasted value,
        // which lives in the call's memory context.
        self.datum(c).and_then(|d| unsafe { <&str>::from_datum(d, false) }) == Some(value)
    }

    pub fn text(&self, c: Column) -> Option<String> {
        assert_eq!(c.kind, Kind::Text, "column {} is not text", c.attnum);
        // SAFETY: as in text_is; the String is a copy.
        self.datum(c).and_then(|d| unsafe { String::from_datum(d, false) })
    }

    /// `(column -> key)::text` of a jsonb column: the value under `key` as jsonb prints it, or
    /// `None` when the column is NULL, not an object or lacks the key.
    pub fn jsonb_field_text(&self, c: Column, key: &str) -> Option<String> {
        assert_eq!(c.kind, Kind::Jsonb, "column {} is not jsonb", c.attnum);
        let d = self.datum(c)?;
        let len = i32::try_from(key.len()).expect("feature codes are at most 63 bytes");
        // SAFETY: what jsonb_object_field and jsonb_out do, in that order: detoast the
        // document, look the key up in its top-level container (NULL when it is not an object
        // or lacks the key), rebuild the value as a jsonb of its own and print it. Everything
        // is palloc'd in the call's memory context.
        unsafe {
            let doc = pg_sys::pg_detoast_datum(d.cast_mut_ptr()).cast::<pg_sys::Jsonb>();
            let value = pg_sys::getKeyJsonValueFromContainer(
                &mut (*doc).root,
                key.as_ptr().cast(),
                len,
                std::ptr::null_mut(),
            );
            if value.is_null() {
                return None;
            }
            let single = pg_sys::JsonbValueToJsonb(value);
            let size = pgrx::varsize(single.cast());
            let text =
                pg_sys::JsonbToCString(std::ptr::null_mut(), &mut (*single).root, size as i32);
            Some(std::ffi::CStr::from_ptr(text).to_string_lossy().into_owned())
        }
    }
}

impl Probe {
    /// Calls `visit` on every row of the table whose index columns equal `keys`, visible to the
    /// active snapshot, until `visit` returns false. No row when a key cannot equal any value of
    /// its column (a user id beyond the range of an integer column).
    pub fn scan(&self, keys: &[Key<'_>], mut visit: impl FnMut(&Row) -> bool) {
        assert_eq!(keys.len(), self.keys.len(), "a probe of {} takes its keys", self.index_name);
        let mut scan_keys: Vec<pg_sys::ScanKeyData> = Vec::with_capacity(keys.len());
        for (key, column) in keys.iter().zip(&self.keys) {
            let Some(argument) = key_datum(*key, column.kind) else {
                return;
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
        // read-only SPI would use. On an ERROR in between, the transaction's resource owner
        // releases the scan, the slot's buffer pin and the relation references.
        unsafe {
            let heap = pg_sys::table_open(self.relid, pg_sys::AccessShareLock as i32);
            let index = pg_sys::index_open(self.index, pg_sys::AccessShareLock as i32);
            let scan = pg_sys::index_beginscan(heap, index, pg_sys::GetActiveSnapshot(), nkeys, 0);
            pg_sys::index_rescan(scan, scan_keys.as_mut_ptr(), nkeys, std::ptr::null_mut(), 0);
            let slot = pg_sys::table_slot_create(heap, std::ptr::null_mut());
            let row = Row { slot };
            while pg_sys::index_getnext_slot(
                scan,
                pg_sys::ScanDirection::ForwardScanDirection,
                slot,
            ) {
                if !visit(&row) {
                    break;
                }
            }
            pg_sys::ExecDropSingleTupleTableSlot(slot);
            pg_sys::index_endscan(scan);
            pg_sys::index_close(index, pg_sys::NoLock as i32);
            pg_sys::table_close(heap, pg_sys::NoLock as i32);
        }
    }
}

/// The datum of `key` as the index column's type, `None` when no value of the column can
/// equal it.
fn key_datum(key: Key<'_>, kind: Kind) -> Option<Datum> {
    match (key, kind) {
        (Key::Int(v), Kind::Int8) => v.into_datum(),
        (Key::Int(v), Kind::Int4) => i32::try_from(v).ok().and_then(IntoDatum::into_datum),
        (Key::Text(v), Kind::Text) => v.into_datum(),
        (Key::Timestamptz(v), Kind::Timestamptz) => v.into_datum(),
        (_, kind) => panic!("a probe key does not match its index column ({kind:?})"),
    }
}
