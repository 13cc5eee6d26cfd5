//! `serve --web-config FILE`: TLS and basic authentication for the metrics
//! endpoint, configured as Prometheus exporters are (the exporter-toolkit
//! web configuration file), so a fleet's existing files and scrape configs
//! carry over:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: /etc/inspector/tls.crt
//!   key_file: /etc/inspector/tls.key
//!   # optional: RequireAndVerifyClientCert or VerifyClientCertIfGiven
//!   client_auth_type: RequireAndVerifyClientCert
//!   client_ca_file: /etc/inspector/ca.crt
//!   min_version: TLS12
//! basic_auth_users:
//!   prometheus: $2y$10$...   # bcrypt hash (htpasswd -nBC 10 "" | tr -d ':\n')
//! ```
//!
//! Keys this build does not implement are refused by name rather than
//! ignored: a setting that silently did nothing would be worse.

use std::{
    collections::BTreeMap,
    fs,
    io::{self, BufReader},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use base64::Engine as _;
use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    server::WebPkiClientVerifier,
};
use serde::Deserialize;

use crate::util::fasthash::KeyedState;

#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("cannot read the web config {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the web config {} is not valid: {why}", path.display())]
    Invalid { path: PathBuf, why: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    tls_server_config: Option<TlsFile>,
    http_server_config: Option<HttpFile>,
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: PathBuf,
    key_file: PathBuf,
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    min_version: Option<String>,
    max_version: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    /// HTTP/2 is not served; `false` is accepted, `true` refused.
    http2: Option<bool>,
    /// Response headers added to every answer.
    headers: Option<BTreeMap<String, String>>,
}

/// The endpoint's security, loaded and checked.
pub struct WebConfig {
    pub tls: Option<Arc<ServerConfig>>,
    pub auth: Option<BasicAuth>,
    pub headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
}

impl WebConfig {
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        let invalid = |why: String| WebConfigError::Invalid {
            path: path.to_owned(),
            why,
        };
        let text = fs::read_to_string(path).map_err(|source| WebConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let file: File = serde_norway::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let tls = file
            .tls_server_config
            .map(|t| tls_config(&t).map(Arc::new))
            .transpose()
            .map_err(invalid)?;
        let auth = match file.basic_auth_users {
            Some(users) if !users.is_empty() => {
                for (user, hash) in &users {
                    if user.contains(':') {
                        return Err(invalid(format!(
                            "basic_auth_users: a user name may not contain ':' ({user:?})"
                        )));
                    }
                    if !hash.starts_with("$2") {
                        return Err(invalid(format!(
                            "basic_auth_users: {user}'s password must be a bcrypt hash ($2y$...), not plain text"
                        )));
                    }
                }
                Some(BasicAuth::new(users))
            }
            _ => None,
        };
        let mut headers = Vec::new();
        if let Some(http) = file.http_server_config {
            if http.http2 == Some(true) {
                return Err(invalid(
                    "http_server_config.http2: this server speaks HTTP/1.1 only; remove the key or set it to false".into(),
                ));
            }
            for (k, v) in http.headers.unwrap_or_default() {
                let name = hyper::header::HeaderName::try_from(k.as_str())
                    .map_err(|e| invalid(format!("http_server_config.headers: {k:?}: {e}")))?;
                let value = hyper::header::HeaderValue::try_from(v.as_str())
                    .map_err(|e| invalid(format!("http_server_config.headers: {k}: {e}")))?;
                headers.push((name, value));
            }
        }
        Ok(Self { tls, auth, headers })
    }
}

fn tls_config(t: &TlsFile) -> Result<ServerConfig, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&t.cert_file)
        .and_then(|it| it.collect())
        .map_err(|e| format!("cert_file {}: {e}", t.cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "cert_file {}: no certificate in it",
            t.cert_file.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&t.key_file)
        .map_err(|e| format!("key_file {}: {e}", t.key_file.display()))?;
    let version = |v: &str| match v {
        "TLS12" => Ok(&rustls::version::TLS12),
        "TLS13" => Ok(&rustls::version::TLS13),
        other => Err(format!(
            "TLS version {other:?}: TLS12 or TLS13 (older versions are not offered)"
        )),
    };
    let min = t.min_version.as_deref().map(version).transpose()?;
    let max = t.max_version.as_deref().map(version).transpose()?;
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        [&rustls::version::TLS12, &rustls::version::TLS13]
            .into_iter()
            .filter(|v| {
                let rank = |x: &rustls::SupportedProtocolVersion| {
                    u8::from(x.version == rustls::ProtocolVersion::TLSv1_3)
                };
                min.is_none_or(|m| rank(v) >= rank(m)) && max.is_none_or(|m| rank(v) <= rank(m))
            })
            .collect();
    if versions.is_empty() {
        return Err("min_version is above max_version".into());
    }
    #[expect(
        deprecated,
        reason = "ring has no post-quantum key exchange; it builds with the C compiler alone (aws-lc-rs needs cmake), and a metrics endpoint's TLS 1.2/1.3 with classical key exchange is what Prometheus speaks"
    )]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| e.to_string())?;
    let auth = t.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let builder = match auth {
        "NoClientCert" => builder.with_no_client_auth(),
        "RequireAndVerifyClientCert" | "VerifyClientCertIfGiven" => {
            let ca = t
                .client_ca_file
                .as_ref()
                .ok_or_else(|| format!("client_auth_type {auth} needs client_ca_file"))?;
            let mut roots = RootCertStore::empty();
            let pem =
                fs::File::open(ca).map_err(|e| format!("client_ca_file {}: {e}", ca.display()))?;
            for c in CertificateDer::pem_reader_iter(BufReader::new(pem)) {
                let c = c.map_err(|e| format!("client_ca_file {}: {e}", ca.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("client_ca_file {}: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if auth == "VerifyClientCertIfGiven" {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| e.to_string())?)
        }
        other => {
            return Err(format!(
                "client_auth_type {other:?}: NoClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert (a certificate that is not verified is not accepted)"
            ));
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("cert_file/key_file: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Users and their bcrypt hashes. Checking a hash is slow by design (tens
/// of milliseconds): a password that passed is remembered (its keyed hash,
/// never the password), so a scraper pays it once, and checks run one at a
/// time off the async threads, so a flood of wrong passwords costs one core
/// at most.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    /// A hash of the users' cost, checked for an unknown user so that a
    /// wrong name takes as long as a wrong password.
    dummy: String,
    passed: Mutex<Vec<u64>>,
    hasher: KeyedState,
    one_at_a_time: tokio::sync::Semaphore,
}

/// Passed credentials remembered at most.
const PASSED_MAX: usize = 64;

impl BasicAuth {
    fn new(users: BTreeMap<String, String>) -> Self {
        // "$2y$10$...": the cost is the number between the second and
        // third '$'.
        let cost = users
            .values()
            .next()
            .and_then(|h| h.split('$').nth(2))
            .and_then(|c| c.parse().ok())
            .unwrap_or(bcrypt::DEFAULT_COST);
        let dummy = bcrypt::hash("inspector", cost).unwrap_or_default();
        Self {
            users,
            dummy,
            passed: Mutex::new(Vec::new()),
            hasher: KeyedState::default(),
            one_at_a_time: tokio::sync::Semaphore::new(1),
        }
    }

    fn key(&self, user: &str, password: &str) -> u64 {
        use std::hash::{BuildHasher as _, Hash as _, Hasher as _};
        let mut h = self.hasher.build_hasher();
        user.hash(&mut h);
        password.hash(&mut h);
        h.finish()
    }

    /// Whether the `Authorization` header's value names a user and the
    /// password of the hash configured for it.
    pub async fn check(&self, header: Option<&[u8]>) -> bool {
        let Some((user, password)) = header.and_then(parse_basic) else {
            return false;
        };
        let key = self.key(&user, &password);
        if self.passed.lock().is_ok_and(|p| p.contains(&key)) {
            return true;
        }
        let hash = self
            .users
            .get(&user)
            .cloned()
            .unwrap_or_else(|| self.dummy.clone());
        let known = self.users.contains_key(&user);
        let Ok(_permit) = self.one_at_a_time.acquire().await else {
            return false;
        };
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .is_ok_and(|r| r.unwrap_or(false))
            && known;
        if ok && let Ok(mut p) = self.passed.lock() {
            if p.len() >= PASSED_MAX {
                p.remove(0);
            }
            p.push(key);
        }
        ok
    }
}

/// `Basic base64(user:password)` into its two parts.
fn parse_basic(value: &[u8]) -> Option<(String, String)> {
    let value = std::str::from_utf8(value).ok()?;
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("inspector-web-{name}-{}", std::process::id()));
        fs::write(&p, text).expect("write");
        p
    }

    #[test]
    fn unknown_keys_and_plain_passwords_are_refused_by_name() {
        let p = write(
            "unknown",
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [x]\n",
        );
        let e = WebConfig::load(&p).err().expect("refused").to_string();
        assert!(e.contains("cipher_suites"), "{e}");
        let p = write("plain", "basic_auth_users:\n  prom: hunter2\n");
        let e = WebConfig::load(&p).err().expect("refused").to_string();
        assert!(e.contains("bcrypt"), "{e}");
        let p = write(
            "nocert",
            "tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: /nonexistent.key\n",
        );
        let e = WebConfig::load(&p).err().expect("refused").to_string();
        assert!(e.contains("/nonexistent.crt"), "{e}");
    }

    #[tokio::test]
    async fn basic_auth_checks_the_bcrypt_hash() {
        let hash = bcrypt::hash("s3cret", 4).expect("hash");
        let p = write("auth", &format!("basic_auth_users:\n  prom: '{hash}'\n"));
        let w = WebConfig::load(&p).expect("load");
        let auth = w.auth.expect("auth");
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let ok = format!("Basic {}", b64("prom:s3cret"));
        assert!(auth.check(Some(ok.as_bytes())).await);
        assert!(auth.check(Some(ok.as_bytes())).await, "remembered");
        for bad in [
            format!("Basic {}", b64("prom:wrong")),
            format!("Basic {}", b64("other:s3cret")),
            "Bearer x".to_owned(),
            "Basic !!!".to_owned(),
        ] {
            assert!(!auth.check(Some(bad.as_bytes())).await, "{bad}");
        }
        assert!(!auth.check(None).await);
    }
}
