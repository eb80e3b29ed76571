//! Maglev (being written).
