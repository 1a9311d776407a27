//! Herald's end-to-end suite: one test binary, one module per area.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod blast_radius;
mod conversations;
mod dashboard;
mod dead_letters;
mod delivery;
mod guarantees;
mod hardening;
mod heraldctl;
mod ops;
mod processes;
mod queue;
mod reach;
mod reconcile;
mod status_callbacks;
mod tenancy;
mod time;
mod validation;
