//! `presenced-tools`: the operator and capacity tools of presenced. The binaries live in
//! `src/bin/`; the load generator's logic lives in [`loadgen`] so that it can be split into
//! small modules and tested.

#![warn(missing_docs)]

pub mod loadgen;
