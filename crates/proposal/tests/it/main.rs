//! Integration tests of `cairn-proposal`, driving the gate through the in-memory seams
//! under paused tokio time.

mod support;
mod t10_order_and_limits;
mod t20_timeouts;
mod t30_cancel_and_stop;
mod t40_concurrency;
mod t50_metrics;
