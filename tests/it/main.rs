//! Herald's end-to-end suite: one test binary, one module per area.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod delivery;
mod processes;
mod queue;
mod tenancy;
mod validation;
