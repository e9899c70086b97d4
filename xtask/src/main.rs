//! Repository chores (in progress).
fn main() {}
