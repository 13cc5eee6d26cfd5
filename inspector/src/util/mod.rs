//! Small tools with no domain: keyed hashing (`fasthash`), bounded dense
//! tables (`dense`), and escaping foreign strings for a terminal or a log
//! (`escape`).

pub mod dense;
pub mod errors;
pub mod escape;
pub mod fasthash;
pub mod stats;
