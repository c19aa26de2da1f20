//! A one-row `RETURNS TABLE` result handed to the executor in materialize mode.
//!
//! pgrx's `TableIterator` returns value-per-call: on every call of the SQL function it creates
//! a multi-call memory context (`init_MultiFuncCall`), builds the result descriptor again from
//! `pg_proc` (`get_call_result_type`) and blesses it, and the executor calls the function a
//! second time to learn that the set has ended. Materialize mode took `check_user_quota` from
//! 57,773 to 51,359 instructions per call (callgrind, bench/optimisations.md). It takes the
//! descriptor the executor already built for the call site (`MAT_SRF_USE_EXPECTED_DESC`), puts
//! the one row into a tuplestore and returns once.
//!
//! The type is named `TableIterator` because `#[pg_extern]` recognises a `RETURNS TABLE`
//! function, and reads its column names from `name!`, by that last path segment; the SQL it
//! generates is the same as for pgrx's own type.

use pgrx::callconv::RetAbi;
use pgrx::pg_sys;
use pgrx::IntoHeapTuple;

pub struct TableIterator<Row>(Row);

impl<Row> TableIterator<Row> {
    pub fn once(row: Row) -> Self {
        Self(row)
    }
}

// SAFETY: box_ret_in_fcinfo is only called by pgrx's wrapper with the fcinfo of a call of a
// set-returning function; it returns the (Datum) 0 that materialize mode asks for.
unsafe impl<Row: IntoHeapTuple> RetAbi for TableIterator<Row> {
    type Item = Row;
    type Ret = Self;

    fn to_ret(self) -> Self::Ret {
        self
    }

    unsafe fn box_ret_in_fcinfo(fcinfo: pg_sys::FunctionCallInfo, ret: Self::Ret) -> pg_sys::Datum {
        // SAFETY: InitMaterializedSRF checks that the caller allows materialize mode (both
        // of the executor's callers of set-returning functions, in FROM and in a select list,
        // do) and raises an ERROR otherwise; it leaves a tuplestore and its descriptor in
        // resultinfo.
        unsafe {
            let rsinfo = (*fcinfo).resultinfo.cast::<pg_sys::ReturnSetInfo>();
            // A caller that passes no expected row type gets it from pg_proc instead.
            let flags = if !rsinfo.is_null() && !(*rsinfo).expectedDesc.is_null() {
                pg_sys::MAT_SRF_USE_EXPECTED_DESC
            } else {
                0
            };
            pg_sys::InitMaterializedSRF(fcinfo, flags);
            let tuple = ret.0.into_heap_tuple((*rsinfo).setDesc);
            pg_sys::tuplestore_puttuple((*rsinfo).setResult, tuple);
            pg_sys::Datum::from(0)
        }
    }

    unsafe fn move_into_fcinfo_fcx(self, _fcinfo: pg_sys::FunctionCallInfo) {}

    unsafe fn fill_fcinfo_fcx(&self, _fcinfo: pg_sys::FunctionCallInfo) {}
}
