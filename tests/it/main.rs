#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic

//! One integration-test binary: each test starts the real app on a random
//! port with its own database (a SQLite file, or a PostgreSQL schema when
//! NEXUS_TEST_DATABASE_URL is set) and talks to it over HTTP; `cli` runs the
//! `nexus` binary itself.

mod audit;
mod auth;
mod channels;
mod cli;
mod cors;
mod errors;
mod events;
mod fake_stripe;
mod governance;
mod graphql;
mod health;
mod helpers;
mod idempotency;
mod inventory;
mod jobs;
mod modules;
mod notifications;
mod openapi;
mod orders;
mod outage;
mod paging;
mod procurement;
mod rbac;
mod receiver;
mod tenancy;
mod webhooks;
