//! Herald's end-to-end suite: one test binary, one module per area.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod blast_radius;
mod carrier_codes;
mod consent;
mod conversations;
mod dashboard;
mod dead_letters;
mod delivery;
mod exactly_once;
mod hardening;
mod heraldctl;
mod lanes;
mod limits;
mod ops;
mod outages;
mod pacing;
mod processes;
mod queue;
mod reach;
mod reconcile;
mod retries;
mod status_callbacks;
mod tenancy;
mod time;
mod validation;
mod webhooks;
