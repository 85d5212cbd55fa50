//! Integration tests of `cairn-api`: the generated types against the wire contract.

mod t10_roundtrip;
mod t20_field_numbers;
