//! TLS fixtures: certificates made with rcgen (a CA, server and client
//! certificates, expired ones), mosquitto with a TLS listener beside a
//! plain one for the platform, and a relay that records what crosses it.
#![allow(dead_code, unused_imports)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A test CA that issues certificates as PEM files in its directory.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
    /// The CA certificate (PEM), for `ca_file`.
    pub cert: PathBuf,
}

/// A certificate and its key (mode 0600).
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What a certificate is for, and whether it is already expired.
#[derive(Clone, Copy, PartialEq)]
pub enum Use {
    Server,
    Client,
    ExpiredServer,
    ExpiredClient,
    /// A client certificate that expires in ten days.
    ClientExpiringSoon,
}

pub fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

impl Ca {
    pub fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let cert = dir.join(format!("{name}.pem"));
        std::fs::write(&cert, issuer.pem()).unwrap();
        Ca {
            issuer,
            dir: dir.to_path_buf(),
            cert,
        }
    }

    /// Issues `name` for the host names `sans` (`localhost`, an address).
    pub fn issue(&self, name: &str, sans: &[&str], usage: Use) -> Issued {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![match usage {
            Use::Server | Use::ExpiredServer => ExtendedKeyUsagePurpose::ServerAuth,
            _ => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        match usage {
            Use::ExpiredServer | Use::ExpiredClient => {
                params.not_before = rcgen::date_time_ymd(2020, 1, 1);
                params.not_after = rcgen::date_time_ymd(2021, 1, 1);
            }
            Use::ClientExpiringSoon => {
                use chrono::Datelike;
                let soon = chrono::Utc::now() + chrono::Duration::days(10);
                params.not_after =
                    rcgen::date_time_ymd(soon.year(), soon.month() as u8, soon.day() as u8);
            }
            Use::Server | Use::Client => {}
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let issued = Issued {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
        };
        std::fs::write(&issued.cert, cert.pem()).unwrap();
        write_private(&issued.key, &key.serialize_pem());
        issued
    }
}

/// Whether mosquitto is here (or the test is skipped, visibly).
pub fn have_mosquitto() -> bool {
    if Path::new("/usr/sbin/mosquitto").exists() {
        return true;
    }
    assert!(
        std::env::var_os("FITEDGE_REQUIRE_MOSQUITTO").is_none(),
        "mosquitto is required here but not installed (apt-get install mosquitto)"
    );
    eprintln!(
        "SKIPPED: mosquitto is not installed (apt-get install mosquitto); .ci/run installs it"
    );
    false
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How mosquitto's TLS listener is set up.
pub struct TlsListener<'a> {
    pub ca: &'a Ca,
    pub server: &'a Issued,
    /// Clients must present a certificate signed by `ca`.
    pub require_certificate: bool,
    /// An account the TLS listener requires (none: anonymous).
    pub account: Option<(&'a str, &'a str)>,
}

/// mosquitto with a TLS listener and a plain, anonymous one for the
/// platform's subscriber; killed when dropped.
pub struct MosquittoTls {
    child: Child,
    pub plain: u16,
    pub tls: u16,
    pub log: PathBuf,
}

impl MosquittoTls {
    pub fn start(dir: &Path, listener: TlsListener) -> MosquittoTls {
        let (plain, tls) = (free_port(), free_port());
        let log = dir.join("mosquitto.log");
        let mut conf = format!(
            "per_listener_settings true\nuser root\npersistence false\nlog_dest file {}\nlog_type all\n\
             listener {plain} 127.0.0.1\nallow_anonymous true\n\
             listener {tls} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\ntls_version tlsv1.2\nrequire_certificate {}\n",
            log.display(),
            listener.ca.cert.display(),
            listener.server.cert.display(),
            listener.server.key.display(),
            listener.require_certificate,
        );
        match listener.account {
            Some((user, password)) => {
                let file = dir.join("mosquitto.passwd");
                let status = Command::new("mosquitto_passwd")
                    .args(["-c", "-b"])
                    .arg(&file)
                    .args([user, password])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .expect("mosquitto_passwd runs");
                assert!(status.success());
                conf.push_str(&format!(
                    "allow_anonymous false\npassword_file {}\n",
                    file.display()
                ));
            }
            None => conf.push_str("allow_anonymous true\n"),
        }
        let path = dir.join("mosquitto-tls.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new("/usr/sbin/mosquitto")
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let up = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            TcpStream::connect(("127.0.0.1", plain)).is_ok()
                && TcpStream::connect(("127.0.0.1", tls)).is_ok()
        });
        assert!(
            up,
            "mosquitto listens: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        MosquittoTls {
            child,
            plain,
            tls,
            log,
        }
    }
}

impl Drop for MosquittoTls {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP relay on 127.0.0.1 to `target` that keeps every byte the client
/// sent: what a capture of the gateway's uplink would show.
pub struct Capture {
    pub port: u16,
    pub sent: Arc<Mutex<Vec<u8>>>,
}

impl Capture {
    pub fn start(target: u16) -> Capture {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let sent: Arc<Mutex<Vec<u8>>> = Arc::default();
        let sink = sent.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().take(64) {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let (mut c_read, mut s_write) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let sink = sink.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = c_read.read(&mut buf) {
                        if n == 0 || s_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        sink.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                    let _ = s_write.shutdown(std::net::Shutdown::Both);
                });
                let (mut s_read, mut c_write) = (server, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s_read, &mut c_write);
                    let _ = c_write.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Capture { port, sent }
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.sent.lock().unwrap().clone()
    }
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
