//! The front ends: each wires a record source to what it shows or keeps,
//! and consumes the layers below without adding domain logic of its own.

pub mod balance;
pub mod dashboard;
pub mod record;
pub mod serve;
pub mod trace;
