//! WireGuard keys: 32 bytes, written as 44 characters of standard base64 (what `wg genkey`
//! and `wg pubkey` print). Key generation and the public key come from `x25519-dalek`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use std::fmt;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// A private or public WireGuard key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(pub [u8; 32]);

/// A key that cannot be read, parsed or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0:?} is not a WireGuard key (44 characters of base64 ending in `=`, as `wg genkey` and `wg pubkey` print)")]
    Format(String),
    #[error("cannot read the private key file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the private key file {} is not a WireGuard key (one line of 44 characters of base64, as `wg genkey` prints)", path.display())]
    FileFormat { path: PathBuf },
    #[error("the private key file {} has mode {mode:04o}: other users can read it; run `chmod 600 {}`", path.display(), path.display())]
    Readable { path: PathBuf, mode: u32 },
    #[error("cannot write the private key file {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Key {
    /// A fresh private key from the operating system's random source, clamped as `wg genkey`
    /// writes it.
    pub fn generate() -> Key {
        let secret = x25519_dalek::StaticSecret::random_from_rng(rand_core::OsRng);
        let mut b = secret.to_bytes();
        b[0] &= 248;
        b[31] = (b[31] & 127) | 64;
        Key(b)
    }

    /// The public key of this private key.
    pub fn public(&self) -> Key {
        let secret = x25519_dalek::StaticSecret::from(self.0);
        Key(x25519_dalek::PublicKey::from(&secret).to_bytes())
    }

    /// Parses WireGuard's base64 form.
    pub fn parse(s: &str) -> Result<Key, KeyError> {
        let bad = || KeyError::Format(s.to_string());
        if s.len() != 44 {
            return Err(bad());
        }
        let bytes = STANDARD.decode(s).map_err(|_| bad())?;
        let b: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
        Ok(Key(b))
    }

    /// The base64 form.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// The lower-case hex form of the configuration protocol.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses the hex form of the configuration protocol.
    pub fn from_hex(s: &str) -> Option<Key> {
        if s.len() != 64 || !s.is_ascii() {
            return None;
        }
        let mut b = [0u8; 32];
        for (i, out) in b.iter_mut().enumerate() {
            *out = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Key(b))
    }

    /// Reads a private key file, refusing one that users other than its owner can read.
    pub fn read_private(path: &Path) -> Result<Key, KeyError> {
        let meta = fs::metadata(path).map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Readable {
                path: path.to_path_buf(),
                mode,
            });
        }
        let text = fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Key::parse(text.trim()).map_err(|_| KeyError::FileFormat {
            path: path.to_path_buf(),
        })
    }

    /// Writes this key as a private key file: created with mode 0600, never over an
    /// existing file.
    pub fn write_private(&self, path: &Path) -> Result<(), KeyError> {
        let err = |source| KeyError::Write {
            path: path.to_path_buf(),
            source,
        };
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(err)?;
        writeln!(f, "{}", self.to_base64()).map_err(err)?;
        f.sync_all().map_err(err)
    }
}

impl fmt::Debug for Key {
    /// Never prints the bytes: a private key must not reach a log through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_hex_round_trip() {
        let k = Key::generate();
        assert_eq!(Key::parse(&k.to_base64()).unwrap(), k);
        assert_eq!(Key::from_hex(&k.to_hex()).unwrap(), k);
        assert_eq!(k.0[0] & 7, 0);
        assert_eq!(k.0[31] & 0xc0, 0x40);
        assert!(Key::parse("short").is_err());
        assert!(Key::parse(&"A".repeat(44)).is_err());
    }

    #[test]
    fn public_key_of_rfc7748_vector() {
        // RFC 7748 section 6.1: Alice's private and public key.
        let private =
            Key::from_hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
                .unwrap();
        assert_eq!(
            private.public().to_hex(),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
    }
}
