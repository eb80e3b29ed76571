//! API
