//! Integration tests of `cairn-wait` through its public interface.

mod t10_wait;
mod t20_index_wait;
mod t30_concurrency;
