//! Password hashing with argon2id (PHC strings). Slow on purpose: workers only.

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
}
