use cairn_auth::{DEFAULT_BCRYPT_COST, Error, MAX_BCRYPT_COST, MIN_BCRYPT_COST, hash_password};

#[test]
fn bcrypt_costs_from_4_to_31_are_accepted_and_others_refused() {
    assert_eq!((MIN_BCRYPT_COST, DEFAULT_BCRYPT_COST, MAX_BCRYPT_COST), (4, 10, 31));
    let hash = hash_password("pw", MIN_BCRYPT_COST).unwrap();
    assert!(hash.starts_with("$2b$04$"), "{hash}");
    assert_eq!(hash_password("pw", 3), Err(Error::InvalidBcryptCost(3)));
    assert_eq!(hash_password("pw", 32), Err(Error::InvalidBcryptCost(32)));
    assert_eq!(Error::InvalidBcryptCost(3).to_string(), "invalid bcrypt cost 3: must be between 4 and 31");
}

#[test]
fn the_hash_is_never_the_password_and_salts_differ() {
    let first = hash_password("secret", 4).unwrap();
    let second = hash_password("secret", 4).unwrap();
    assert!(!first.contains("secret"));
    assert_ne!(first, second);
}
