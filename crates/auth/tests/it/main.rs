//! Integration tests of `cairn-auth` through its public interface.

mod support;
mod t10_permissions;
mod t20_admin_rules;
mod t30_simple_tokens;
mod t40_jwt;
mod t50_snapshot;
mod t60_passwords;
