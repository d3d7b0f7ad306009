//! Remote image URLs, fetched by the gateway on an operator's opt-in.
//!
//! The pinned Codex CLI accepts only inline (`data:`) images (measured:
//! `turn/start` and `thread/inject_items` both refuse http(s) URLs). With
//! `PROXY_FETCH_IMAGE_URLS=true` the gateway downloads such images and
//! inlines them. Fetching URLs a client names is a server-side request
//! forgery risk, so: off by default; only public addresses unless
//! `PROXY_FETCH_IMAGE_ALLOW_PRIVATE=true`; image content types only; a size
//! cap and a deadline. (The address check resolves the host before the
//! connection does; a hostile DNS server could still answer differently the
//! second time: keep the switch off where that matters.)

use std::net::IpAddr;

use base64::Engine;
use bytes::Bytes;
use http::{header, Request, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::error::ApiError;

pub use crate::config::ImageFetchConfig;

/// An HTTP(S) client for image downloads. Cheap to clone.
#[derive(Clone)]
pub struct ImageFetcher {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    config: ImageFetchConfig,
}

impl ImageFetcher {
    pub fn new(config: ImageFetchConfig) -> Result<ImageFetcher, String> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| format!("cannot load the system's CA certificates: {e}"))?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(ImageFetcher {
            client: Client::builder(TokioExecutor::new()).build(https),
            config,
        })
    }

    /// Downloads `url` and returns it as a `data:` URL. `param` names the
    /// request field for errors.
    pub async fn inline(&self, url: &str, param: &str) -> Result<String, ApiError> {
        let bad = |msg: String| ApiError::invalid(param, msg).code("invalid_image_url");
        let uri: Uri = url
            .parse()
            .map_err(|_| bad(format!("`{url}` is not a valid URL.")))?;
        let host = uri
            .host()
            .ok_or_else(|| bad("The image URL has no host.".into()))?
            .to_owned();
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        if !self.config.allow_private {
            let addrs = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
                .await
                .map_err(|e| bad(format!("Cannot resolve the image host: {e}.")))?;
            for addr in addrs {
                if !is_public(addr.ip()) {
                    return Err(bad("Image URLs must point to public addresses.".into()));
                }
            }
        }
        let req = Request::get(uri)
            .header(header::ACCEPT, "image/*")
            .body(Empty::new())
            .map_err(|e| bad(format!("Bad image URL: {e}.")))?;
        let fetch = async {
            let res = self
                .client
                .request(req)
                .await
                .map_err(|e| bad(format!("Could not fetch the image: {e}.")))?;
            if !res.status().is_success() {
                return Err(bad(format!(
                    "Fetching the image returned HTTP {}.",
                    res.status().as_u16()
                )));
            }
            let content_type = res
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|v| {
                    v.split(';')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_ascii_lowercase()
                })
                .unwrap_or_default();
            if !content_type.starts_with("image/") {
                return Err(bad(format!(
                    "The URL is not an image (content-type `{content_type}`)."
                )));
            }
            let body = Limited::new(res.into_body(), self.config.max_bytes)
                .collect()
                .await
                .map_err(|_| {
                    bad(format!(
                        "The image is larger than {} bytes or broke off.",
                        self.config.max_bytes
                    ))
                })?
                .to_bytes();
            let encoded = base64::engine::general_purpose::STANDARD.encode(&body);
            Ok(format!("data:{content_type};base64,{encoded}"))
        };
        tokio::time::timeout(self.config.timeout, fetch)
            .await
            .map_err(|_| bad("Fetching the image timed out.".into()))?
    }
}

/// Not loopback, private, link-local, unspecified, shared or documentation space.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || (o[0] == 100 && (64..128).contains(&o[1])))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| !is_public(IpAddr::V4(v4))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_pass() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "192.168.1.1",
            "172.16.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "0.0.0.0",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }
}
