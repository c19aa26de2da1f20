//! The notifications of a call on a Citus shard, held until the transaction commits.
//!
//! PostgreSQL refuses to PREPARE a transaction that has sent a NOTIFY, and Citus commits a
//! transaction that wrote on several workers in two phases: a NOTIFY on one of them (a
//! threshold, a storage quota, a subscription's limits) would make the whole transaction fail.
//! So on a Citus cluster ([`crate::placement`]) a notification is held by the backend instead:
//!
//! * when the transaction commits in one phase, the held notifications are sent just before
//!   its commit (`XACT_EVENT_PRE_COMMIT`), and go out with it;
//! * when it is prepared (`XACT_EVENT_PRE_PREPARE`), they wait under its transaction id, and
//!   go out with the next transaction of this backend to commit once that id has committed:
//!   Citus sends `COMMIT PREPARED` on the same connection right after, so they go out with it;
//!   an id that was rolled back takes its notifications with it;
//! * a subtransaction that rolls back takes the notifications it held with it, as it would
//!   take its NOTIFYs; a transaction that rolls back, all of them.
//!
//! [`announce`] is how the extension sends every announcement of a user's change, from Rust
//! and (`quota.announce`) from its SQL functions; on one server nothing is held.

use entitlements_core::Error;
use pgrx::pg_sys;
use pgrx::spi::SpiClient;
use std::cell::{Cell, RefCell};

/// A notification's channel and payload.
type Notice = (String, String);

/// A notification held: the subtransaction that made it, its channel and its payload.
struct Held {
    subtransaction: pg_sys::SubTransactionId,
    channel: String,
    payload: String,
}

thread_local! {
    static HELD: RefCell<Vec<Held>> = const { RefCell::new(Vec::new()) };
    /// The notifications of prepared transactions, by transaction id.
    static PREPARED: RefCell<Vec<(pg_sys::TransactionId, Vec<Notice>)>> =
        const { RefCell::new(Vec::new()) };
    static REGISTERED: Cell<bool> = const { Cell::new(false) };
}

/// `pg_notify(channel, payload)`: at once on one server; on a Citus cluster held until the
/// transaction commits.
pub fn announce(client: &SpiClient<'_>, channel: &str, payload: &str) -> Result<(), Error> {
    if crate::placement::distributed(client)? {
        hold(channel, payload);
    } else {
        send(channel, payload);
    }
    Ok(())
}

/// Holds `pg_notify(channel, payload)` until the transaction commits.
fn hold(channel: &str, payload: &str) {
    register();
    // SAFETY: reads the current subtransaction's id.
    let subtransaction = unsafe { pg_sys::GetCurrentSubTransactionId() };
    HELD.with_borrow_mut(|h| {
        h.push(Held { subtransaction, channel: channel.to_owned(), payload: payload.to_owned() })
    });
}

fn register() {
    if REGISTERED.replace(true) {
        return;
    }
    // SAFETY: registered once per backend, for its lifetime.
    unsafe {
        pg_sys::RegisterXactCallback(Some(transaction_event), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(subtransaction_event), std::ptr::null_mut());
    }
}

/// `pg_notify(channel, payload)` in the current transaction.
fn send(channel: &str, payload: &str) {
    use pgrx::IntoDatum;
    // SAFETY: pg_notify reads two text arguments and queues the notification in the current
    // transaction (still in progress at XACT_EVENT_PRE_COMMIT).
    unsafe {
        pgrx::direct_function_call::<()>(
            pg_sys::pg_notify,
            &[channel.into_datum(), payload.into_datum()],
        );
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn transaction_event(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    match event {
        pg_sys::XactEvent::XACT_EVENT_PRE_COMMIT => {
            let committed = PREPARED.with_borrow_mut(|prepared| {
                let mut ready = Vec::new();
                prepared.retain_mut(|(xid, notices)| {
                    // SAFETY: clog lookups of transaction ids this backend prepared.
                    let (committed, aborted) = unsafe {
                        (pg_sys::TransactionIdDidCommit(*xid), pg_sys::TransactionIdDidAbort(*xid))
                    };
                    if committed {
                        ready.append(notices);
                    }
                    !(committed || aborted)
                });
                ready
            });
            for (channel, payload) in committed {
                send(&channel, &payload);
            }
            for held in HELD.take() {
                send(&held.channel, &held.payload);
            }
        }
        pg_sys::XactEvent::XACT_EVENT_PRE_PREPARE => {
            let held: Vec<Notice> =
                HELD.take().into_iter().map(|h| (h.channel, h.payload)).collect();
            // SAFETY: reads the top transaction's id, assigned when it wrote.
            let xid = unsafe { pg_sys::GetTopTransactionIdIfAny() };
            if !held.is_empty() && xid != pg_sys::InvalidTransactionId {
                PREPARED.with_borrow_mut(|p| p.push((xid, held)));
            }
        }
        pg_sys::XactEvent::XACT_EVENT_ABORT | pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT => {
            HELD.with_borrow_mut(Vec::clear);
        }
        _ => {}
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn subtransaction_event(
    event: pg_sys::SubXactEvent::Type,
    subtransaction: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        // Subtransaction ids grow within a transaction: what this one and the ones it started
        // held goes with it; what its committed siblings held stays.
        HELD.with_borrow_mut(|h| h.retain(|held| held.subtransaction < subtransaction));
    }
}
