//! Panic isolation: one unit of work (a request on a worker, a connection's callback on
//! a loop) runs under [`catch`], so a bug in it fails that unit only, and the thread
//! goes on with the next.
//!
//! The catcher logs the panic once, with what it was doing (which connection, which
//! request). [`install_hook`] makes that the only report: while a thread is inside
//! `catch`, the panic hook hands the panic's message and place to the catcher instead
//! of printing them; any other panic goes to the previous hook as before.
//!
//! Any thread. Costs a thread-local counter and an unwinding landing pad, nothing more,
//! when nothing panics.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// How many `catch` calls this thread is inside.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// The hook's description of the panic being caught.
    static CAUGHT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs, once per process, the hook that leaves panics inside [`catch`] to their
/// catcher.
pub fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if DEPTH.with(Cell::get) == 0 {
                return previous(info);
            }
            let place = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
            let text = format!("{}{place}", message(info.payload()));
            CAUGHT.with_borrow_mut(|c| *c = Some(text));
        }));
    });
}

/// Runs `f`. A panic in it comes back as `Err` with its message (and its place in the
/// source when the hook is installed), for the caller to log.
///
/// `f` is treated as unwind safe: after a panic, the caller must drop or reset whatever
/// `f` was changing (close the connection, answer the request as failed).
pub fn catch<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    DEPTH.with(|d| d.set(d.get() + 1));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    DEPTH.with(|d| d.set(d.get() - 1));
    result.map_err(|payload| CAUGHT.with_borrow_mut(Option::take).unwrap_or_else(|| message(&*payload)))
}

fn message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_comes_back_as_its_message_and_the_thread_goes_on() {
        install_hook();
        let r: Result<(), String> = catch(|| panic!("boom {}", 7));
        let why = r.unwrap_err();
        assert!(why.starts_with("boom 7 at "), "{why}");
        assert!(why.contains("panic_guard.rs"), "{why}");
        assert_eq!(catch(|| 5), Ok(5));
        // Nested: the inner catcher gets the inner panic; the outer one goes on.
        let outer = catch(|| catch(|| panic!("inner")).unwrap_err());
        assert!(outer.unwrap().starts_with("inner"));
    }
}
