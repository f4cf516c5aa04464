//! One KMIP server over mutual TLS (rustls): its TLS settings, a small pool
//! of open connections, and one request/response exchange with timeouts on
//! connect, read and write, so that no call can hang.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::KmipServer;
use super::ttlv::{self, Item};

/// Idle connections kept per server.
const POOL: usize = 4;

/// Why an exchange with a server failed. All of these are "the server is
/// not answering properly": the caller fails over.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("TLS settings: {0}")]
    Config(String),
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("TLS handshake or I/O: {0}")]
    Io(std::io::Error),
    #[error("answer is not valid KMIP: {0}")]
    Decode(#[from] ttlv::TtlvError),
}

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A configured server and its idle connections.
pub struct Conn {
    pub server: KmipServer,
    tls: Result<Arc<ClientConfig>, String>,
    name: Result<ServerName<'static>, String>,
    idle: Mutex<Vec<Tls>>,
    connect_timeout: Duration,
    io_timeout: Duration,
}

impl Conn {
    pub fn new(server: KmipServer, connect_timeout: Duration, io_timeout: Duration) -> Self {
        let tls = tls_config(&server).map(Arc::new);
        let host = server
            .server_name
            .clone()
            .unwrap_or_else(|| host_of(&server.address));
        let name = ServerName::try_from(host.clone())
            .map_err(|_| format!("'{host}' is not a valid server name"));
        Self {
            server,
            tls,
            name,
            idle: Mutex::new(Vec::new()),
            connect_timeout,
            io_timeout,
        }
    }

    /// Sends one request and reads its answer. A pooled connection that
    /// turns out dead (the server restarted) is replaced once.
    pub fn exchange(&self, request: &[u8]) -> Result<Item, ConnError> {
        let pooled = self.idle.lock().pop();
        if let Some(mut s) = pooled
            && let Ok(item) = round_trip(&mut s, request)
        {
            self.put_back(s);
            return Ok(item);
        }
        let mut s = self.connect()?;
        let item = round_trip(&mut s, request)?;
        self.put_back(s);
        Ok(item)
    }

    /// Drops every idle connection (after a failure).
    pub fn reset(&self) {
        self.idle.lock().clear();
    }

    fn put_back(&self, s: Tls) {
        let mut idle = self.idle.lock();
        if idle.len() < POOL {
            idle.push(s);
        }
    }

    fn connect(&self) -> Result<Tls, ConnError> {
        let tls = self.tls.clone().map_err(ConnError::Config)?;
        let name = self.name.clone().map_err(ConnError::Config)?;
        let addrs = self
            .server
            .address
            .to_socket_addrs()
            .map_err(ConnError::Connect)?;
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, self.connect_timeout) {
                Ok(tcp) => {
                    tcp.set_read_timeout(Some(self.io_timeout))
                        .map_err(ConnError::Connect)?;
                    tcp.set_write_timeout(Some(self.io_timeout))
                        .map_err(ConnError::Connect)?;
                    tcp.set_nodelay(true).map_err(ConnError::Connect)?;
                    let conn = ClientConnection::new(tls, name)
                        .map_err(|e| ConnError::Config(e.to_string()))?;
                    return Ok(StreamOwned::new(conn, tcp));
                }
                Err(e) => last = Some(e),
            }
        }
        Err(ConnError::Connect(last.unwrap_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "address resolves to nothing")
        })))
    }
}

fn round_trip(s: &mut Tls, request: &[u8]) -> Result<Item, ConnError> {
    s.write_all(request).map_err(ConnError::Io)?;
    s.flush().map_err(ConnError::Io)?;
    let mut head = [0u8; 8];
    s.read_exact(&mut head).map_err(ConnError::Io)?;
    let len = ttlv::message_len(&head);
    if len > ttlv::MAX_MESSAGE {
        return Err(ttlv::TtlvError::TooLarge(len).into());
    }
    let mut msg = zeroize::Zeroizing::new(vec![0u8; len]);
    msg[..8].copy_from_slice(&head);
    s.read_exact(&mut msg[8..]).map_err(ConnError::Io)?;
    Ok(Item::decode(&msg)?)
}

/// `host` of `host:port` (an IPv6 address may be in brackets).
fn host_of(address: &str) -> String {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

fn tls_config(s: &KmipServer) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    for cert in certs(&s.ca)? {
        roots
            .add(cert)
            .map_err(|e| format!("CA {}: {e}", s.ca.display()))?;
    }
    let chain = certs(&s.cert)?;
    let key = PrivateKeyDer::from_pem_file(&s.key)
        .map_err(|e| format!("client key {}: {e}", s.key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| format!("client certificate {}: {e}", s.cert.display()))
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let list: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("certificate file {}: {e}", path.display()))?;
    if list.is_empty() {
        return Err(format!("no certificate in {}", path.display()));
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names() {
        assert_eq!(host_of("127.0.0.1:5696"), "127.0.0.1");
        assert_eq!(host_of("[::1]:5696"), "::1");
        assert_eq!(host_of("kms.example.com:5696"), "kms.example.com");
    }

    fn server(address: String, dir: &Path) -> KmipServer {
        KmipServer {
            address,
            priority: 1,
            ca: dir.join("ca.pem"),
            cert: dir.join("kmsfs.pem"),
            key: dir.join("kmsfs.key"),
            server_name: None,
        }
    }

    /// A server that accepts and never answers: the exchange ends at the
    /// I/O timeout instead of hanging.
    #[test]
    fn a_silent_server_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let made = std::process::Command::new(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kmip/make-certs.sh"),
        )
        .arg(dir.path())
        .status()
        .unwrap();
        assert!(made.success());
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let hold = std::thread::spawn(move || l.accept().map(|(s, _)| s));
        let c = Conn::new(
            server(addr, dir.path()),
            Duration::from_millis(500),
            Duration::from_millis(300),
        );
        let t = std::time::Instant::now();
        let e = c.exchange(&[0u8; 8]).unwrap_err();
        assert!(matches!(e, ConnError::Io(_)), "{e}");
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        drop(hold);
    }

    #[test]
    fn missing_files_are_named() {
        let s = KmipServer {
            address: "127.0.0.1:1".into(),
            priority: 1,
            ca: "/nonexistent/ca.pem".into(),
            cert: "/nonexistent/c.pem".into(),
            key: "/nonexistent/c.key".into(),
            server_name: None,
        };
        let c = Conn::new(s, Duration::from_millis(100), Duration::from_millis(100));
        let e = c.exchange(b"x").unwrap_err().to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }
}
