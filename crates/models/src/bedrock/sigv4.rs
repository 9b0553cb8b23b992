//! AWS Signature Version 4, as Bedrock (and every non-S3 service) checks it.
//!
//! The canonical request is built as botocore builds it: the method; the URL path as sent
//! (already percent-encoded once: `/model/us.anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse`)
//! percent-encoded a second time (`%3A` → `%253A`), as SigV4 requires for every service but S3;
//! the query pairs sorted; every header given, lowercased, values trimmed with inner runs of
//! spaces collapsed, sorted; the signed header names; the hex SHA-256 of the payload. The
//! signing key is derived with HMAC-SHA256 (ring) from the secret key, the date, the region and
//! the service.

use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use ring::{digest, hmac};

use super::credentials::Credentials;

/// What a signature covers besides the request (the region, the service and the time), and
/// whether the payload's hash is sent as a header.
#[derive(Clone, Copy, Debug)]
pub struct Scope<'a> {
    /// The region (`us-gov-west-1`).
    pub region: &'a str,
    /// The signing name of the service (`bedrock`).
    pub service: &'a str,
    /// When the request is signed.
    pub time: SystemTime,
    /// Whether to send `x-amz-content-sha256`.
    pub content_hash: ContentHashHeader,
}

/// Whether to send `x-amz-content-sha256` (optional for Bedrock; S3 requires it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentHashHeader {
    /// Send it (and sign it).
    Include,
    /// Leave it out.
    Omit,
}

/// Signs a request in place: adds `x-amz-date`, `x-amz-security-token` when the credentials
/// carry a session token, optionally `x-amz-content-sha256`, and `authorization`. Every header
/// already in `headers` (which must include `host`) is signed; `path` is the URL path as sent
/// and `query` the query string as sent (without `?`).
pub fn sign(
    method: &Method,
    path: &str,
    query: &str,
    headers: &mut HeaderMap,
    body: &[u8],
    credentials: &Credentials,
    scope: Scope<'_>,
) {
    let amz_date = amz_date(scope.time);
    let payload_hash = hex(digest::digest(&digest::SHA256, body).as_ref());
    headers.remove(http::header::AUTHORIZATION);
    insert(headers, "x-amz-date", &amz_date, false);
    if let Some(token) = credentials.session_token() {
        // SECURITY: marked sensitive so that hyper and Debug never show it.
        insert(headers, "x-amz-security-token", token, true);
    }
    if scope.content_hash == ContentHashHeader::Include {
        insert(headers, "x-amz-content-sha256", &payload_hash, false);
    }
    let (canonical, signed_headers) =
        canonical_request(method, path, query, headers, &payload_hash);
    let date = amz_date.get(..8).unwrap_or_default();
    let credential_scope = format!("{date}/{}/{}/aws4_request", scope.region, scope.service);
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{credential_scope}\n{}",
        hex(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
    );
    let key = signing_key(
        credentials.secret_access_key(),
        date,
        scope.region,
        scope.service,
    );
    let signature = hex(hmac::sign(&key, string_to_sign.as_bytes()).as_ref());
    let authorization = format!(
        "AWS4-HMAC-SHA256 Credential={}/{credential_scope}, SignedHeaders={signed_headers}, Signature={signature}",
        credentials.access_key_id()
    );
    insert(headers, "authorization", &authorization, true);
}

/// Percent-encodes one path segment as a URL carries it: everything but the unreserved
/// characters `A-Z a-z 0-9 - _ . ~` (so a model id's `:` is `%3A` and an ARN's `/` is `%2F`).
pub fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The canonical request and the signed header names (`host;x-amz-date`).
fn canonical_request(
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    payload_hash: &str,
) -> (String, String) {
    // The path as sent, encoded once more: botocore's `quote(path, safe='/~')`.
    let mut uri = String::with_capacity(path.len() + 8);
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            uri.push(char::from(b));
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    if uri.is_empty() {
        uri.push('/');
    }
    let mut pairs: Vec<(&str, &str)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    pairs.sort_unstable();
    let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
    names.sort_unstable();
    names.dedup();
    let mut canonical_headers = String::new();
    for name in &names {
        let values: Vec<String> = headers
            .get_all(*name)
            .iter()
            .map(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        canonical_headers.push_str(name);
        canonical_headers.push(':');
        canonical_headers.push_str(&values.join(","));
        canonical_headers.push('\n');
    }
    let signed = names.join(";");
    let canonical = format!(
        "{method}\n{uri}\n{}\n{canonical_headers}\n{signed}\n{payload_hash}",
        query.join("&")
    );
    (canonical, signed)
}

fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> hmac::Key {
    let step = |key: &[u8], data: &str| {
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
    };
    let k_date = step(format!("AWS4{secret}").as_bytes(), date);
    let k_region = step(k_date.as_ref(), region);
    let k_service = step(k_region.as_ref(), service);
    let k_signing = step(k_service.as_ref(), "aws4_request");
    hmac::Key::new(hmac::HMAC_SHA256, k_signing.as_ref())
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: &str, sensitive: bool) {
    // The values are hex, digits, an access key id and a token from the credentials file:
    // one with characters not allowed in a header is left out, and the signature then fails
    // at AWS (with an error the operator sees) rather than here.
    if let Ok(mut v) = HeaderValue::from_str(value) {
        v.set_sensitive(sensitive);
        headers.insert(HeaderName::from_static(name), v);
    }
}

/// `YYYYMMDDTHHMMSSZ` in UTC.
pub fn amz_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn example_credentials(token: Option<&str>) -> Credentials {
        Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            token.map(str::to_owned),
        )
    }

    /// 2015-08-30T12:36:00Z, the time of AWS's SigV4 test suite.
    fn suite_time() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_440_938_160)
    }

    #[test]
    fn the_date_is_formatted_in_utc() {
        assert_eq!(amz_date(suite_time()), "20150830T123600Z");
        assert_eq!(amz_date(UNIX_EPOCH), "19700101T000000Z");
        // A leap day.
        assert_eq!(
            amz_date(UNIX_EPOCH + Duration::from_secs(1_709_208_000)),
            "20240229T120000Z"
        );
    }

    /// AWS's published SigV4 test suite, case `get-vanilla`.
    #[test]
    fn aws_test_suite_get_vanilla() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("example.amazonaws.com"));
        sign(
            &Method::GET,
            "/",
            "",
            &mut headers,
            b"",
            &example_credentials(None),
            Scope {
                region: "us-east-1",
                service: "service",
                time: suite_time(),
                content_hash: ContentHashHeader::Omit,
            },
        );
        assert_eq!(
            headers["authorization"],
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
        assert_eq!(headers["x-amz-date"], "20150830T123600Z");
        assert!(headers["authorization"].is_sensitive());
    }

    #[test]
    fn the_path_is_encoded_twice_in_the_canonical_request() {
        let id = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.meta.llama3:0";
        let path = format!("/model/{}/converse", encode_segment(id));
        assert_eq!(
            path,
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.meta.llama3%3A0/converse"
        );
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("h"));
        headers.insert("x-amz-date", HeaderValue::from_static("20150830T123600Z"));
        headers.insert("content-type", HeaderValue::from_static("  a   b "));
        let (canonical, signed) =
            canonical_request(&Method::POST, &path, "b=2&a=1", &headers, "abc");
        assert_eq!(
            canonical,
            "POST\n/model/arn%253Aaws%253Abedrock%253Aus-east-1%253A123456789012%253Ainference-profile%252Fus.meta.llama3%253A0/converse\na=1&b=2\ncontent-type:a b\nhost:h\nx-amz-date:20150830T123600Z\n\ncontent-type;host;x-amz-date\nabc"
        );
        assert_eq!(signed, "content-type;host;x-amz-date");
        assert_eq!(encode_segment("héllo wörld"), "h%C3%A9llo%20w%C3%B6rld");
    }

    #[test]
    fn a_session_token_and_the_content_hash_are_signed_when_present() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("example.amazonaws.com"));
        sign(
            &Method::POST,
            "/",
            "",
            &mut headers,
            b"{}",
            &example_credentials(Some("session-token-value")),
            Scope {
                region: "us-gov-west-1",
                service: "bedrock",
                time: suite_time(),
                content_hash: ContentHashHeader::Include,
            },
        );
        let auth = headers["authorization"].to_str().unwrap();
        assert!(
            auth.contains(
                "SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token,"
            ),
            "{auth}"
        );
        assert!(auth.contains("/20150830/us-gov-west-1/bedrock/aws4_request"));
        assert_eq!(headers["x-amz-security-token"], "session-token-value");
        assert!(headers["x-amz-security-token"].is_sensitive());
        assert_eq!(
            headers["x-amz-content-sha256"],
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }
}
