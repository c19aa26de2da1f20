//! jsonb passed through untouched.
//!
//! pgrx's `JsonB` turns a value into serde_json and back. That costs a text round trip on every
//! call and fails (an internal error, XX000) on a document nested deeper than serde_json's
//! recursion limit of 128, which PostgreSQL itself accepts. `metadata` is stored as it came and
//! `custom_quotas` is read as text, so neither conversion happens.

use pgrx::pg_sys;
use pgrx::{direct_function_call, FromDatum, IntoDatum};

/// A jsonb datum of the current call, handed on to SPI as it is.
#[derive(Clone)]
pub struct RawJsonb(pg_sys::Datum);

impl FromDatum for RawJsonb {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _: pg_sys::Oid,
    ) -> Option<Self> {
        // The datum lives in the memory of the call (the argument, or the trigger's tuple),
        // which outlasts every use of it here.
        (!is_null).then_some(RawJsonb(datum))
    }
}

impl IntoDatum for RawJsonb {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        Some(self.0)
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::JSONBOID
    }
}

pgrx::impl_sql_translatable!(RawJsonb, "jsonb");

impl RawJsonb {
    /// The document as text (`jsonb_out`), for a parser with its own error handling.
    pub fn to_text(&self) -> String {
        // SAFETY: the datum is a valid jsonb (FromDatum is only reached for jsonb values);
        // jsonb_out detoasts it itself and returns a palloc'd C string, freed with the call's
        // memory context.
        let text =
            unsafe { direct_function_call::<&core::ffi::CStr>(pg_sys::jsonb_out, &[Some(self.0)]) };
        // jsonb_out never returns NULL; an empty text would fail to parse as a document.
        text.map(|t| t.to_string_lossy().into_owned()).unwrap_or_default()
    }
}

// SAFETY (both impls): a RawJsonb only wraps the datum; it is read through FromDatum, which
// handles NULL, exactly as pgrx does for its own JsonB.
unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for RawJsonb {
    unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
        // Every function takes its jsonb as Option<RawJsonb>; one that took it bare would be
        // STRICT and never see a NULL. Should one ever, it gets an error, not a crash.
        unsafe { arg.unbox_arg_using_from_datum() }.unwrap_or_else(|| {
            crate::error::raise(entitlements_core::Error::NullArgument {
                function: "pg_entitlements",
                argument: "a jsonb argument",
            })
        })
    }

    unsafe fn unbox_nullable_arg(
        arg: pgrx::callconv::Arg<'_, 'fcx>,
    ) -> pgrx::nullable::Nullable<Self> {
        unsafe { arg.unbox_arg_using_from_datum() }.into()
    }
}

unsafe impl pgrx::datum::UnboxDatum for RawJsonb {
    type As<'src> = RawJsonb;

    unsafe fn unbox<'src>(d: pgrx::datum::Datum<'src>) -> Self::As<'src>
    where
        Self: 'src,
    {
        RawJsonb(d.sans_lifetime())
    }
}
