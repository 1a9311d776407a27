//! Herald's end-to-end suite: one test binary, one module per area.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod conversations;
mod dead_letters;
mod delivery;
mod guarantees;
mod processes;
mod queue;
mod status_callbacks;
mod tenancy;
mod validation;
