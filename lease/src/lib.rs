//! trexlock-lease: filled in by a later milestone.
#![deny(missing_docs)]
