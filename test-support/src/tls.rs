//! Test TLS material: a throwaway CA and a server certificate for 127.0.0.1, made with openssl.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::require_executables;

const OPENSSL: &str = "/usr/bin/openssl";

/// A test CA (`ca.pem`, `ca.key`, by [`make_ca`]) and a certificate for 127.0.0.1 and localhost
/// it issued (`cert.pem`, `key.pem`) in `dir`.
/// The server certificate is not a CA itself: rustls refuses a CA certificate as a server's.
pub fn make_certificates(dir: &Path) {
    require_executables(&[OPENSSL]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n\
         extendedKeyUsage=serverAuth\n",
    )
    .unwrap_or_else(|e| panic!("cannot write {}/server.ext: {e}", dir.display()));
    make_ca(dir, "ca");
    let steps: [&[&str]; 2] = [
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    ];
    for args in steps {
        openssl(dir, args);
    }
}

/// A self-signed test CA in `dir`: `<name>.pem` with its key `<name>.key`. Returns the
/// certificate's path.
pub fn make_ca(dir: &Path, name: &str) -> PathBuf {
    require_executables(&[OPENSSL]);
    let (key, cert) = (format!("{name}.key"), format!("{name}.pem"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &cert,
            "-days",
            "2",
            "-subj",
            &format!("/CN=hecate test {name}"),
        ],
    );
    dir.join(cert)
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new(OPENSSL)
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {OPENSSL}: {e}"));
    assert!(out.status.success(), "openssl {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}
