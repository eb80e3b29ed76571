//! Endpoint selection (being written).
