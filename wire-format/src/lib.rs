//! presenced wire format v1 (placeholder until the codec lands).
