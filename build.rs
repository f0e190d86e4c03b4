//! Chooses the release root this installer trusts, once, when it is built.
//!
//! - `STACKWRIGHT_VENDOR_ROOT=PATH` names the vendor's `root.json` (version 1 of its TUF root,
//!   or any later version it has published). It is embedded as is.
//! - Without it, a build with the `dev-root` feature embeds the development root in
//!   `manifests/dev-keys/` (whose private keys are public), for tests, the demo and the local
//!   environment.
//! - Without either, nothing is embedded and every release verification says how to build an
//!   installer that trusts a root.
//!
//! A build without `dev-root` refuses a vendor root that names a development key: such an
//! installer would trust releases anyone can sign.

use std::path::{Path, PathBuf};

const VENDOR_ROOT: &str = "STACKWRIGHT_VENDOR_ROOT";
const DEV_ROOT: &str = "manifests/dev-keys/root.json";

fn main() {
    println!("cargo:rerun-if-env-changed={VENDOR_ROOT}");
    println!("cargo:rerun-if-changed={DEV_ROOT}");
    let dev_root_feature = std::env::var_os("CARGO_FEATURE_DEV_ROOT").is_some();
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let embedded = out.join("trusted_root.json");

    let root = match std::env::var_os(VENDOR_ROOT).filter(|value| !value.is_empty()) {
        Some(path) => {
            let path = PathBuf::from(path);
            println!("cargo:rerun-if-changed={}", path.display());
            let text = read(&path);
            let keys = key_ids(&path, &text);
            if !dev_root_feature {
                let development = key_ids(Path::new(DEV_ROOT), &read(Path::new(DEV_ROOT)));
                if let Some(key) = keys.iter().find(|key| development.contains(key)) {
                    fail(&format!(
                        "{VENDOR_ROOT} ({}) names the development key {key}, whose private key is committed in manifests/dev-keys/: an installer built so would trust releases anyone can sign. Generate the vendor's own keys (stackwright-release keygen) and point {VENDOR_ROOT} at their root.json",
                        path.display()
                    ));
                }
            }
            text
        }
        None if dev_root_feature => read(Path::new(DEV_ROOT)),
        None => {
            println!(
                "cargo:warning=no release root is embedded: set {VENDOR_ROOT} to the vendor's root.json (or build with --features dev-root for development); this installer will refuse every release"
            );
            Vec::new()
        }
    };
    std::fs::write(&embedded, root).expect("OUT_DIR is writable");
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|error| {
        fail(&format!(
            "{VENDOR_ROOT}: cannot read {}: {error}",
            path.display()
        ))
    })
}

/// The key IDs a root metadata file names, after checking that it is one.
fn key_ids(path: &Path, text: &[u8]) -> Vec<String> {
    let value: serde_json::Value = serde_json::from_slice(text).unwrap_or_else(|error| {
        fail(&format!(
            "{} is not JSON ({error}): {VENDOR_ROOT} must name a TUF root.json",
            path.display()
        ))
    });
    let signed = &value["signed"];
    if signed["_type"] != "root" || !value["signatures"].is_array() {
        fail(&format!(
            "{} is not TUF root metadata (no signed._type \"root\" and signatures): {VENDOR_ROOT} must name the vendor's root.json",
            path.display()
        ));
    }
    signed["keys"]
        .as_object()
        .map(|keys| keys.keys().cloned().collect())
        .unwrap_or_default()
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1)
}
