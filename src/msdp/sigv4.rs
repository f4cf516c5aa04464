//! AWS Signature Version 4 for the few S3 requests kmsfs makes itself
//! (Object Lock retention, which object_store does not speak): the
//! canonical request, the string to sign and the derived signing key, as
//! the AWS documentation ("Create a signed AWS API request") defines them.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Who signs, and for which region and service.
pub struct Signer<'a> {
    pub key_id: &'a str,
    pub secret: &'a str,
    pub region: &'a str,
    pub service: &'a str,
}

/// One request to sign. `headers`: lower-case names, each once (`host`
/// among them); `query`: the canonical query string (`retention=`).
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a [(&'a str, String)],
    pub payload_sha256: &'a str,
    /// `YYYYMMDDTHHMMSSZ`.
    pub amz_date: &'a str,
}

impl Signer<'_> {
    /// The `Authorization` header of `r`.
    pub fn authorization(&self, r: &Request<'_>) -> String {
        let mut headers: Vec<&(&str, String)> = r.headers.iter().collect();
        headers.sort_by_key(|h| h.0);
        let canonical_headers: String = headers
            .iter()
            .map(|(k, v)| format!("{k}:{}\n", v.trim()))
            .collect();
        let signed: Vec<&str> = headers.iter().map(|h| h.0).collect();
        let signed = signed.join(";");
        let canonical = format!(
            "{}\n{}\n{}\n{canonical_headers}\n{signed}\n{}",
            r.method, r.path, r.query, r.payload_sha256
        );
        let date = &r.amz_date[..8];
        let scope = format!("{date}/{}/{}/aws4_request", self.region, self.service);
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
            r.amz_date,
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let k = Zeroizing::new(format!("AWS4{}", self.secret));
        let k = hmac(k.as_bytes(), date.as_bytes());
        let k = hmac(&k[..], self.region.as_bytes());
        let k = hmac(&k[..], self.service.as_bytes());
        let k = hmac(&k[..], b"aws4_request");
        let sig = hmac(&k[..], to_sign.as_bytes());
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={}",
            self.key_id,
            hex::encode(&sig[..])
        )
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key");
    m.update(data);
    Zeroizing::new(m.finalize().into_bytes().into())
}

/// A path segment URI-encoded as SigV4 wants it (unreserved kept).
pub fn uri_encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signature AWS's example credentials give a GET of `/` (the
    /// vector object_store's own signer is checked against).
    #[test]
    fn a_known_request_signs_to_the_known_signature() {
        let empty = hex::encode(Sha256::digest(b""));
        let s = Signer {
            key_id: "AKIAIOSFODNN7EXAMPLE",
            secret: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            region: "us-east-1",
            service: "ec2",
        };
        let auth = s.authorization(&Request {
            method: "GET",
            path: "/",
            query: "",
            headers: &[
                ("x-amz-date", "20220806T180134Z".into()),
                ("host", "ec2.amazon.com".into()),
                ("x-amz-content-sha256", empty.clone()),
            ],
            payload_sha256: &empty,
            amz_date: "20220806T180134Z",
        });
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20220806/us-east-1/ec2/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=a3c787a7ed37f7fdfbfd2d7056a3d7c9d85e6d52a2bfbec73793c0be6e7862d4"
        );
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(uri_encode("a b/ü~x.kct"), "a%20b%2F%C3%BC~x.kct");
    }
}
