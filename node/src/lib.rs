//! The sans-IO node and hub of presenced (in progress).
