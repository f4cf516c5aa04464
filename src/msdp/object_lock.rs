//! S3 Object Lock retention of a cloud LSU's objects: the containers and
//! recipe object of an image under a retention lock (WORM) are retained
//! by the object store in the same mode until at least the image's unlock
//! time, so not even the bucket's credentials delete them early. Only
//! ever extended: a retention is read first and set only if it ends
//! sooner. object_store does not make these calls; they are signed here.

use std::time::Duration;

use base64::Engine;
use md5::Md5;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::MsdpError;
use super::sigv4::{Request, Signer, uri_encode};
use crate::catalog::WormMode;

/// The retention endpoint of one bucket.
pub struct ObjectLock {
    client: reqwest::Client,
    /// `http://host:port` of the endpoint, no trailing slash.
    endpoint: String,
    host: String,
    bucket: String,
    region: String,
    key_id: String,
    secret: Zeroizing<String>,
    describe: String,
}

/// An object's retention: its mode and until when (ns since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub mode: WormMode,
    pub until_ns: i64,
}

/// The longest retention answer read (a hostile store sends no more).
const MAX_ANSWER: usize = 64 << 10;

impl ObjectLock {
    pub fn new(
        endpoint: &str,
        bucket: &str,
        region: &str,
        (key_id, secret): (String, Zeroizing<String>),
        timeout: Duration,
        describe: String,
    ) -> Result<Self, MsdpError> {
        let endpoint = endpoint.trim_end_matches('/').to_string();
        let host = endpoint
            .split_once("://")
            .map(|(_, h)| h.split('/').next().unwrap_or(h).to_string())
            .unwrap_or_default();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| MsdpError::Refused(format!("{describe}: {e}")))?;
        Ok(Self {
            client,
            endpoint,
            host,
            bucket: bucket.to_string(),
            region: region.to_string(),
            key_id,
            secret,
            describe,
        })
    }

    /// The retention of object `key`, if it has one (read from a HEAD,
    /// as HeadObject reports it: every S3-compatible store answers that).
    pub fn retention(&self, key: &str) -> Result<Option<Retention>, MsdpError> {
        let a = self.call("HEAD", key, "", Vec::new())?;
        match a.status {
            200 => parse_retention(a.mode.as_deref(), a.until.as_deref())
                .map_err(|why| self.bad(key, &why)),
            s => Err(self.refusal(key, s, &a.body)),
        }
    }

    /// Retains object `key` in `mode` until at least `until_ns` (left as
    /// it is if it is retained as long already).
    pub fn retain(&self, key: &str, mode: WormMode, until_ns: i64) -> Result<(), MsdpError> {
        if let Some(r) = self.retention(key)?
            && r.until_ns >= until_ns
        {
            return Ok(());
        }
        let until = chrono::DateTime::from_timestamp_nanos(until_ns)
            .format("%Y-%m-%dT%H:%M:%S%.3fZ")
            .to_string();
        let mode = match mode {
            WormMode::Governance => "GOVERNANCE",
            WormMode::Compliance => "COMPLIANCE",
        };
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>{mode}</Mode><RetainUntilDate>{until}</RetainUntilDate></Retention>"
        );
        let a = self.call("PUT", key, "retention", body.into_bytes())?;
        if a.status == 200 {
            tracing::debug!(object = key, mode, until, "object retained");
            Ok(())
        } else {
            Err(self.refusal(key, a.status, &a.body))
        }
    }

    /// A signed request of object `key` (`sub`: a subresource such as
    /// `retention`, or none).
    fn call(&self, method: &str, key: &str, sub: &str, body: Vec<u8>) -> Result<Answer, MsdpError> {
        let path = format!(
            "/{}/{}",
            uri_encode(&self.bucket),
            key.split('/').map(uri_encode).collect::<Vec<_>>().join("/")
        );
        let amz_date = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
        let payload = hex::encode(Sha256::digest(&body));
        let mut headers = vec![
            ("host", self.host.clone()),
            ("x-amz-content-sha256", payload.clone()),
            ("x-amz-date", amz_date.clone()),
        ];
        if method == "PUT" {
            let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(&body));
            headers.push(("content-md5", md5));
        }
        let auth = Signer {
            key_id: &self.key_id,
            secret: &self.secret,
            region: &self.region,
            service: "s3",
        }
        .authorization(&Request {
            method,
            path: &path,
            query: &if sub.is_empty() {
                String::new()
            } else {
                format!("{sub}=")
            },
            headers: &headers,
            payload_sha256: &payload,
            amz_date: &amz_date,
        });
        let url = if sub.is_empty() {
            format!("{}{path}", self.endpoint)
        } else {
            format!("{}{path}?{sub}", self.endpoint)
        };
        let mut req = self
            .client
            .request(method.parse().expect("HEAD or PUT"), url)
            .header("authorization", auth);
        for (k, v) in headers.iter().filter(|h| h.0 != "host") {
            req = req.header(*k, v.as_str());
        }
        let unreachable = |e: reqwest::Error| MsdpError::Unreachable {
            store: self.describe.clone(),
            what: format!("retention of object {key}"),
            why: e.without_url().to_string(),
        };
        super::net::runtime().block_on(async {
            let mut r = req.body(body).send().await.map_err(unreachable)?;
            let header = |name: &str| {
                r.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.chars().take(64).collect::<String>())
            };
            let mut a = Answer {
                status: r.status().as_u16(),
                mode: header("x-amz-object-lock-mode"),
                until: header("x-amz-object-lock-retain-until-date"),
                body: Vec::new(),
            };
            while let Some(c) = r.chunk().await.map_err(unreachable)? {
                if a.body.len() + c.len() > MAX_ANSWER {
                    break;
                }
                a.body.extend_from_slice(&c);
            }
            Ok(a)
        })
    }

    fn bad(&self, key: &str, why: &str) -> MsdpError {
        MsdpError::Refused(format!(
            "{}: retention of object {key}: {why}",
            self.describe
        ))
    }

    /// A refusal, with the store's error code (never its whole answer).
    fn refusal(&self, key: &str, status: u16, body: &[u8]) -> MsdpError {
        let text = String::from_utf8_lossy(body);
        let code = between(&text, "<Code>", "</Code>").unwrap_or("no code");
        let hint = if code == "InvalidRequest" || code == "ObjectLockConfigurationNotFoundError" {
            " (the bucket must be made with Object Lock enabled)"
        } else {
            ""
        };
        let e = format!(
            "{}: retention of object {key}: HTTP {status} {}{hint}",
            self.describe,
            code.chars().take(64).collect::<String>()
        );
        if status >= 500 {
            MsdpError::Unreachable {
                store: self.describe.clone(),
                what: format!("retention of object {key}"),
                why: format!("HTTP {status}"),
            }
        } else {
            MsdpError::Refused(e)
        }
    }
}

/// What a request was answered: status, the retention headers of a
/// HEAD, and the (bounded) body.
struct Answer {
    status: u16,
    mode: Option<String>,
    until: Option<String>,
    body: Vec<u8>,
}

/// The retention an object's headers give; none without a date.
fn parse_retention(mode: Option<&str>, until: Option<&str>) -> Result<Option<Retention>, String> {
    let Some(until) = until else {
        return Ok(None);
    };
    let until = chrono::DateTime::parse_from_rfc3339(until.trim())
        .map_err(|e| format!("retain-until date {until:?}: {e}"))?
        .timestamp_nanos_opt()
        .ok_or("a retain-until date past 2262")?;
    let mode = match mode.map(str::trim) {
        Some("COMPLIANCE") => WormMode::Compliance,
        Some("GOVERNANCE") => WormMode::Governance,
        m => return Err(format!("retention mode {m:?}")),
    };
    Ok(Some(Retention {
        mode,
        until_ns: until,
    }))
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let len = text[start..].find(close)?;
    Some(&text[start..start + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_answers_are_read_and_checked() {
        let r = parse_retention(Some("COMPLIANCE"), Some("2030-01-02T03:04:05.000Z"))
            .unwrap()
            .unwrap();
        assert_eq!(r.mode, WormMode::Compliance);
        assert_eq!(r.until_ns, 1_893_553_445_000_000_000);
        assert_eq!(parse_retention(None, None).unwrap(), None);
        assert!(parse_retention(Some("X"), Some("2030-01-02T03:04:05Z")).is_err());
        assert!(parse_retention(Some("GOVERNANCE"), Some("soon")).is_err());
    }
}
