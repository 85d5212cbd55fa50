//! Integration tests that run the real `cairn` binary on loopback.

mod t10_binary;
