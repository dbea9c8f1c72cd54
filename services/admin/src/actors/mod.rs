//! Actors of admin, one a file.

pub mod bus;
