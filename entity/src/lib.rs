//! Sea-orm entities: plain data, one file per table. Behaviour lives in the
//! server crate (`src/platform`, `src/modules`), never here.

pub mod api_token;
pub mod api_usage;
pub mod audit_log;
pub mod cors_origin;
pub mod customer;
pub mod event;
pub mod feature_toggle;
pub mod idempotency_key;
pub mod job;
pub mod journal_entry;
pub mod license;
pub mod order;
pub mod order_import;
pub mod order_import_chunk;
pub mod order_line;
pub mod order_payment;
pub mod order_refund;
pub mod order_transition;
pub mod product;
pub mod purchase_order;
pub mod purchase_order_line;
pub mod reservation;
pub mod stock_level;
pub mod stock_movement;
pub mod tenant;
pub mod user;
pub mod user_role;
pub mod vendor;
pub mod warehouse;
pub mod webhook_attempt;
pub mod webhook_delivery;
pub mod webhook_endpoint;
