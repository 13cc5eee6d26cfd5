//! What the kernel's events become: the trace record and its schema
//! (`record`), attribution and the TIME_WAIT life cycle (`tracker`), the
//! user's filter (`filter`), and local ports per destination against each
//! namespace's range (`ephemeral`), why a port's connections are split
//! unevenly between its listeners (`balance`), and a socket of the kernel's
//! tables to seed a view with (`seed`). Plain data and pure functions: no
//! I/O.

pub mod balance;
pub mod ephemeral;
pub mod filter;
pub mod record;
pub mod seed;
pub mod tracker;
