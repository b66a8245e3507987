//! `bkp key generate`: a new key file, never a replaced one.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::{assert_exit, run_bkp};

#[test]
fn generate_writes_a_private_key_once_and_prints_its_id() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("master.key");
    let p = path.to_str().unwrap();
    // No config is needed (none exists at the default path in the test).
    let out = run_bkp(&["key", "generate", p], &[]);
    assert_exit(&out, 0);
    let key: [u8; 32] = fs::read(&path).unwrap().try_into().unwrap();
    let id = String::from_utf8(out.stdout).unwrap();
    assert_eq!(id.trim(), bkp::crypto::key_id_of(&key));
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o400
    );

    // A second key is another key.
    let other = d.path().join("other.key");
    assert_exit(
        &run_bkp(&["key", "generate", other.to_str().unwrap()], &[]),
        0,
    );
    assert_ne!(fs::read(&other).unwrap(), key);

    // An existing file is never replaced.
    let out = run_bkp(&["key", "generate", p], &[]);
    assert_exit(&out, 8);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("never replaces a key file"), "{stderr}");
    assert_eq!(fs::read(&path).unwrap(), key);
}
