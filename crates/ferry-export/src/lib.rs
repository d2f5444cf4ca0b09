//! ferry-export
