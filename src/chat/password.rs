//! Password hashing with argon2id (PHC strings). Slow on purpose: workers only.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand_core::OsRng;

/// Hashes `password` with a fresh random salt.
pub fn hash(password: &str) -> Option<String> {
    let salt = SaltString::generate(&mut OsRng);
    match Argon2::default().hash_password(password.as_bytes(), &salt) {
        Ok(h) => Some(h.to_string()),
        Err(e) => {
            log::error!("argon2: {e}");
            None
        }
    }
}

/// A hash of nobody's password, made once (at first use) like every real one: a LOGIN
/// for an unknown id is verified against it, so it takes as long as a wrong password.
pub fn dummy_hash() -> Option<&'static str> {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    DUMMY.get_or_init(|| hash("the password of no account")).as_deref()
}

/// Whether `password` matches the PHC string `stored`.
pub fn verify(password: &str, stored: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(e) => {
            log::error!("a stored password hash is unreadable: {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hash_verifies_and_never_holds_the_password() {
        let h = super::hash("s3cret ' \" 😀").unwrap_or_default();
        assert!(h.starts_with("$argon2id$"));
        assert!(!h.contains("s3cret"));
        assert!(super::verify("s3cret ' \" 😀", &h));
        assert!(!super::verify("s3cret", &h));
        assert!(!super::verify("x", "not a hash"));
    }

    #[test]
    fn the_dummy_hash_is_made_once_with_the_parameters_of_real_ones() {
        let dummy = super::dummy_hash().unwrap_or_default();
        assert!(std::ptr::eq(dummy, super::dummy_hash().unwrap_or_default()));
        let real = super::hash("x").unwrap_or_default();
        let params = |h: &str| h.split('$').take(4).collect::<Vec<_>>().join("$");
        assert_eq!(params(dummy), params(&real));
        assert!(params(&real).starts_with("$argon2id$v=19$m="), "{real}");
        assert!(!super::verify("x", dummy));
    }
}
