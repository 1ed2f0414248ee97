//! What a site makes to secure the web port, made the way a site makes it:
//! certificates with `openssl`, bcrypt hashes with `htpasswd`, and `curl`
//! as the client.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::launcher::TempDir;

/// A CA, a server certificate for 127.0.0.1 and localhost signed by it,
/// client certificates signed by it (SAN `DNS:prometheus.example` and
/// `DNS:intruder.example`), and a self-signed client certificate no CA
/// vouches for.
pub struct Pki {
    pub dir: TempDir,
}

impl Pki {
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let dir = TempDir::new(name)?;
        let pki = Self { dir };
        pki.self_signed("ca", "/CN=test CA")?;
        pki.signed(
            "server",
            "/CN=localhost",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        )?;
        pki.signed(
            "client",
            "/CN=prometheus",
            "subjectAltName=DNS:prometheus.example",
        )?;
        pki.signed(
            "intruder",
            "/CN=intruder",
            "subjectAltName=DNS:intruder.example",
        )?;
        pki.self_signed("rogue", "/CN=rogue")?;
        Ok(pki)
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.0.join(file)
    }

    /// `NAME.key` and a self-signed `NAME.pem`.
    fn self_signed(&self, name: &str, subject: &str) -> anyhow::Result<()> {
        let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            subject,
            "-keyout",
            &key,
            "-out",
            &pem,
        ])
    }

    /// `NAME.key` and `NAME.pem`, signed by the CA.
    fn signed(&self, name: &str, subject: &str, extension: &str) -> anyhow::Result<()> {
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        self.openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            subject,
            "-keyout",
            &key,
            "-out",
            &csr,
        ])?;
        let extensions = format!("{name}.ext");
        std::fs::write(self.path(&extensions), format!("{extension}\n"))
            .context("writing the extensions file")?;
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &extensions,
            "-out",
            &pem,
        ])
    }

    fn openssl(&self, args: &[&str]) -> anyhow::Result<()> {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir.0)
            .output()
            .context("running openssl (apt-get install openssl)")?;
        if !output.status.success() {
            bail!(
                "openssl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }
}

/// The bcrypt hash `htpasswd -nbBC 10` makes for `password`.
pub fn bcrypt_hash(user: &str, password: &str) -> anyhow::Result<String> {
    let output = Command::new("htpasswd")
        .args(["-nbBC", "10", user, password])
        .output()
        .context("running htpasswd (apt-get install apache2-utils)")?;
    if !output.status.success() {
        bail!("htpasswd: {}", String::from_utf8_lossy(&output.stderr));
    }
    let line = String::from_utf8(output.stdout).context("htpasswd wrote no UTF-8")?;
    let (_, hash) = line
        .trim()
        .split_once(':')
        .context("htpasswd wrote no USER:HASH")?;
    Ok(hash.to_string())
}

/// How `curl` talks to the daemon: scheme, CA, credentials, client cert.
#[derive(Debug, Clone, Default)]
pub struct Curl {
    pub ca: Option<PathBuf>,
    pub user: Option<(String, String)>,
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// What curl got: its exit code (0, or why the transfer failed: 35 and 56
/// are TLS failures), the HTTP status (0 when none) and headers and body.
#[derive(Debug)]
pub struct Answer {
    pub exit: i32,
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Curl {
    pub fn tls(ca: &Path) -> Self {
        Self {
            ca: Some(ca.to_owned()),
            ..Self::default()
        }
    }

    pub fn user(mut self, user: &str, password: &str) -> Self {
        self.user = Some((user.into(), password.into()));
        self
    }

    pub fn client_cert(mut self, cert: &Path, key: &Path) -> Self {
        self.client_cert = Some((cert.to_owned(), key.to_owned()));
        self
    }

    pub fn url(&self, address: std::net::SocketAddr, path: &str) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://{address}{path}")
    }

    pub fn get(&self, address: std::net::SocketAddr, path: &str) -> anyhow::Result<Answer> {
        let mut command = Command::new("curl");
        command.args(["-sS", "--max-time", "20", "-D", "/dev/stderr"]);
        if let Some(ca) = &self.ca {
            command.arg("--cacert").arg(ca);
        }
        if let Some((user, password)) = &self.user {
            command.arg("-u").arg(format!("{user}:{password}"));
        }
        if let Some((cert, key)) = &self.client_cert {
            command.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        command
            .arg("-w")
            .arg("\n%{http_code}")
            .arg(self.url(address, path));
        let output = command.output().context("running curl")?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let (body, status) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
        Ok(Answer {
            exit: output.status.code().unwrap_or(-1),
            status: status.trim().parse().unwrap_or(0),
            head: String::from_utf8_lossy(&output.stderr).into_owned(),
            body: body.to_string(),
        })
    }

    /// The body of a 200 answer, or an error with what curl got.
    pub fn get_ok(&self, address: std::net::SocketAddr, path: &str) -> anyhow::Result<String> {
        let answer = self.get(address, path)?;
        if answer.exit != 0 || answer.status != 200 {
            bail!(
                "curl {}: exit {}, HTTP {}\n{}{}",
                self.url(address, path),
                answer.exit,
                answer.status,
                answer.head,
                answer.body
            );
        }
        Ok(answer.body)
    }
}
