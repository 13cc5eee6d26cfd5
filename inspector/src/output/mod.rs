//! Records as text: aligned lines for a person (`text`) and NDJSON for a
//! program (`ndjson`, the trace schema).

pub mod ndjson;
pub mod text;
