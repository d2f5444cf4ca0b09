//! ferry-import
