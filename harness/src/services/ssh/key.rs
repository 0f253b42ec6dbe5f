//! The lab's ed25519 key pairs, made in-process: what `ssh-keygen -q -N '' -t
//! ed25519 -C COMMENT -f PATH` writes, without spawning it (four spawns a
//! `verify` run saved). The key material is ring's ([`Ed25519KeyPair`], seeded
//! from the system's secure random source); the files are the OpenSSH formats:
//!
//! - `PATH`: the unencrypted `openssh-key-v1` private key (PROTOCOL.key in
//!   OpenSSH's source): cipher `none`, kdf `none`, one key, then the private
//!   section (two equal random check integers, the key type, the public key, the
//!   64-byte seed-and-public-key, the comment, padded with 1, 2, 3, ... to a
//!   multiple of 8), base64 in 70-column lines between the PEM-style markers;
//! - `PATH.pub`: `ssh-ed25519 BASE64(public blob) COMMENT`.
//!
//! Both are created new (never replacing anything, so never through a symlink)
//! with mode 0600.

use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair};

use super::super::ServiceError;

const KEY_TYPE: &str = "ssh-ed25519";
const MAGIC: &[u8] = b"openssh-key-v1\0";
const BEGIN: &str = "-----BEGIN OPENSSH PRIVATE KEY-----";
const END: &str = "-----END OPENSSH PRIVATE KEY-----";

/// A fresh ed25519 key pair with no passphrase at `path` and `path.pub`, both
/// 0600 and created new. Returns the `.pub` line (with its newline).
pub(super) fn generate(path: &Path, comment: &str) -> Result<String, ServiceError> {
    let rng = SystemRandom::new();
    let failed = |what: &str| ServiceError::Command {
        command: "ed25519 key generation".into(),
        detail: format!("{what} (the system's random source failed)"),
    };
    let mut seed = [0u8; 32];
    rng.fill(&mut seed).map_err(|_| failed("no seed"))?;
    let mut check = [0u8; 4];
    rng.fill(&mut check)
        .map_err(|_| failed("no check integer"))?;
    let pair = Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|_| failed("bad seed"))?;
    let public: [u8; 32] = pair
        .public_key()
        .as_ref()
        .try_into()
        .map_err(|_| failed("public key not 32 bytes"))?;
    let private = private_key_file(&seed, &public, u32::from_ne_bytes(check), comment);
    seed.fill(0);
    let public = public_line(&public, comment);
    super::write_new(path, private.as_bytes())?;
    let mut pub_path = path.as_os_str().to_owned();
    pub_path.push(".pub");
    super::write_new(&PathBuf::from(pub_path), public.as_bytes())?;
    Ok(public)
}

/// `ssh-ed25519 BASE64 COMMENT\n`.
fn public_line(public: &[u8; 32], comment: &str) -> String {
    format!("{KEY_TYPE} {} {comment}\n", base64(&public_blob(public)))
}

/// The public key as the wire format has it: string type, string key.
fn public_blob(public: &[u8; 32]) -> Vec<u8> {
    let mut blob = Vec::with_capacity(51);
    put_string(&mut blob, KEY_TYPE.as_bytes());
    put_string(&mut blob, public);
    blob
}

/// The whole `openssh-key-v1` file, unencrypted.
fn private_key_file(seed: &[u8; 32], public: &[u8; 32], check: u32, comment: &str) -> String {
    let mut section = Vec::with_capacity(160);
    section.extend_from_slice(&check.to_be_bytes());
    section.extend_from_slice(&check.to_be_bytes());
    put_string(&mut section, KEY_TYPE.as_bytes());
    put_string(&mut section, public);
    let mut secret = [0u8; 64];
    secret[..32].copy_from_slice(seed);
    secret[32..].copy_from_slice(public);
    put_string(&mut section, &secret);
    secret.fill(0);
    put_string(&mut section, comment.as_bytes());
    // Padding to the cipher's block size (8 for `none`): 1, 2, 3, ...
    let mut pad = 1u8;
    while section.len() % 8 != 0 {
        section.push(pad);
        pad += 1;
    }
    let mut raw = Vec::with_capacity(MAGIC.len() + 64 + section.len());
    raw.extend_from_slice(MAGIC);
    put_string(&mut raw, b"none"); // cipher
    put_string(&mut raw, b"none"); // kdf
    put_string(&mut raw, b""); // kdf options
    raw.extend_from_slice(&1u32.to_be_bytes()); // number of keys
    put_string(&mut raw, &public_blob(public));
    put_string(&mut raw, &section);
    section.fill(0);
    let text = base64(&raw);
    raw.fill(0);
    let mut file = String::with_capacity(text.len() + text.len() / 70 + 80);
    file.push_str(BEGIN);
    file.push('\n');
    for line in text.as_bytes().chunks(70) {
        // base64 is ASCII: every chunk is valid UTF-8.
        file.push_str(std::str::from_utf8(line).unwrap_or_default());
        file.push('\n');
    }
    file.push_str(END);
    file.push('\n');
    file
}

/// An SSH wire `string`: a big-endian u32 length, then the bytes.
fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    let len = u32::try_from(s.len()).expect("an ssh key field is far below 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s);
}

/// Standard base64 with padding (RFC 4648 section 4).
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
    }

    /// Decode what [`base64`] wrote (test only: the lab never reads keys back).
    fn unbase64(text: &str) -> Vec<u8> {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut bits = 0u32;
        let mut n = 0;
        let mut out = Vec::new();
        for c in text.bytes().filter(|&c| c != b'=' && c != b'\n') {
            let v = ALPHABET.iter().position(|&a| a == c).expect("base64") as u32;
            bits = (bits << 6) | v;
            n += 6;
            if n >= 8 {
                n -= 8;
                out.push((bits >> n) as u8);
            }
        }
        out
    }

    fn take_string<'a>(raw: &mut &'a [u8]) -> &'a [u8] {
        let len = u32::from_be_bytes(raw[..4].try_into().unwrap()) as usize;
        let s = &raw[4..4 + len];
        *raw = &raw[4 + len..];
        s
    }

    #[test]
    fn the_private_key_file_has_the_openssh_key_v1_layout() {
        let seed = [7u8; 32];
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
        let public: [u8; 32] = pair.public_key().as_ref().try_into().unwrap();
        let file = private_key_file(&seed, &public, 0xdead_beef, "lab-comment");
        let lines: Vec<&str> = file.lines().collect();
        assert_eq!(lines.first(), Some(&BEGIN));
        assert_eq!(lines.last(), Some(&END));
        assert!(lines[1..lines.len() - 1].iter().all(|l| l.len() <= 70));
        let raw = unbase64(&lines[1..lines.len() - 1].concat());
        let mut r = &raw[..];
        assert_eq!(&r[..MAGIC.len()], MAGIC);
        r = &r[MAGIC.len()..];
        assert_eq!(take_string(&mut r), b"none");
        assert_eq!(take_string(&mut r), b"none");
        assert_eq!(take_string(&mut r), b"");
        assert_eq!(&r[..4], &1u32.to_be_bytes());
        r = &r[4..];
        assert_eq!(take_string(&mut r), public_blob(&public));
        let section = take_string(&mut r);
        assert!(r.is_empty(), "nothing after the private section");
        assert_eq!(section.len() % 8, 0);
        let mut s = section;
        assert_eq!(&s[..8], &[0xde, 0xad, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef]);
        s = &s[8..];
        assert_eq!(take_string(&mut s), KEY_TYPE.as_bytes());
        assert_eq!(take_string(&mut s), public);
        let secret = take_string(&mut s);
        assert_eq!(&secret[..32], &seed);
        assert_eq!(&secret[32..], &public);
        assert_eq!(take_string(&mut s), b"lab-comment");
        let padding: Vec<u8> = (1..=s.len() as u8).collect();
        assert_eq!(s, &padding[..]);
        assert!(s.len() < 8);
    }

    /// The round trip: OpenSSH itself reads the written private key and derives
    /// the same public key as the `.pub` line (`ssh-keygen -y`, spawned here).
    #[test]
    fn ssh_keygen_reads_the_generated_key_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id_ed25519");
        let line = generate(&path, "portcullis-test").unwrap();
        for p in [path.clone(), dir.path().join("id_ed25519.pub")] {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", p.display());
        }
        assert_eq!(
            std::fs::read_to_string(dir.path().join("id_ed25519.pub")).unwrap(),
            line
        );
        let keygen = crate::backend::find_in_path("ssh-keygen")
            .expect("ssh-keygen on PATH (the lab needs openssh-client)");
        let out = std::process::Command::new(keygen)
            .arg("-y")
            .arg("-f")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ssh-keygen -y refused the key: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // -y prints the public key with the private key's comment.
        assert_eq!(String::from_utf8_lossy(&out.stdout), line);
        // Never replaces a file.
        assert!(generate(&path, "again").is_err());
    }
}
