//! The TIME_WAIT lifecycle on the timewait functions themselves (fentry
//! mode): `__inet_twsk_schedule` arms the timer on entry (and re-arms it
//! when the FIN_WAIT2 substate moves to TIME_WAIT), `tw_timer_handler` is
//! the expiry. The events are those of the timer tracepoints, so the
//! tracker reads both modes alike.
//!
//! An early end (reuse by connect(), an RST, namespace teardown) goes
//! through `inet_twsk_deschedule_put`, but its callers in the same file
//! (`inet_twsk_purge` on namespace teardown) get it inlined on some builds
//! (Debian 6.1), where fentry never sees those calls. That detach is taken
//! from the `timer_cancel` tracepoint instead, in both modes.

use aya_ebpf::{
    macros::{fentry, fexit},
    programs::{FEntryContext, FExitContext},
};
use inspector_common::kind;

use crate::{
    counters::count,
    emit::{emits, quiet_success},
    maps::off,
    state::report_tw,
    tw_count::count_tw,
    tw_entry,
};

#[fexit(function = "__inet_twsk_schedule")]
pub fn fexit_inet_twsk_schedule(ctx: FExitContext) -> i32 {
    let tw: u64 = ctx.arg(0);
    if !emits(kind::TW_ARM) {
        let rearm: u8 = ctx.arg(2);
        count_tw(tw, kind::TW_ARM, Some(rearm != 0));
        return 0;
    }
    let reported = if quiet_success() {
        let rearm: u8 = ctx.arg(2);
        tw_entry::step(tw, kind::TW_ARM, Some(rearm != 0))
    } else {
        report_tw(tw, kind::TW_ARM)
    };
    if let Err(e) = reported {
        count(e.slot);
    }
    0
}

#[fentry(function = "tw_timer_handler")]
pub fn fentry_tw_timer_handler(ctx: FEntryContext) -> i32 {
    let timer: u64 = ctx.arg(0);
    let tw = timer - u64::from(off!(tw_timer));
    if !emits(kind::TW_EXPIRE) {
        count_tw(tw, kind::TW_EXPIRE, None);
        return 0;
    }
    let reported = if quiet_success() {
        tw_entry::step(tw, kind::TW_EXPIRE, None)
    } else {
        report_tw(tw, kind::TW_EXPIRE)
    };
    if let Err(e) = reported {
        count(e.slot);
    }
    0
}
