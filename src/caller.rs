//! Who is calling, decided once, right after auth.
//!
//! The stack's `map_request` under the auth layer puts a [`Caller`] into
//! every request's extensions. The rate limit (bucket and quota), `/admin/*`
//! (may this caller administer?), `/metrics` (is the peer loopback?) and the
//! API handlers (the per-client stream limit) read it instead of looking at
//! `AuthenticatedKey`, `PeerAddr` or `X-Forwarded-For` themselves.

use std::net::IpAddr;

use codex_auth::AuthenticatedKey;
use http::Request;

use crate::access::AccessPolicy;
use crate::route::Route;
use crate::server::PeerAddr;

/// The caller of one request, as everything below auth sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub route: Route,
    /// The name of the key the request was authenticated with (never the secret).
    pub key: Option<String>,
    /// May call `/admin/*`: a key marked admin (every `PROXY_API_KEY` key
    /// is), or, when the gateway has no keys at all, a loopback peer.
    pub admin: bool,
    /// `key:<name>` with a key, else `ip:<address>`; `None` when the address
    /// is unknown. Rate-limit buckets and stream limits are kept per client.
    pub client: Option<String>,
    /// The TCP peer is a loopback address. This is the peer, not
    /// `X-Forwarded-For`: a header cannot make a remote client local.
    pub loopback: bool,
}

impl Caller {
    /// Decides the caller of `req`: its [`Route`] extension (or its path),
    /// the `AuthenticatedKey` the auth layer left, and the peer address.
    pub fn of<B>(req: &Request<B>, access: &AccessPolicy) -> Caller {
        let route = req
            .extensions()
            .get::<Route>()
            .copied()
            .unwrap_or_else(|| Route::of(req.uri().path()));
        let key = req
            .extensions()
            .get::<AuthenticatedKey>()
            .map(|k| k.name().to_owned());
        let loopback = req
            .extensions()
            .get::<PeerAddr>()
            .is_some_and(|p| p.0.ip().is_loopback());
        let (admin, client) = match &key {
            Some(name) => (access.is_admin(name), Some(format!("key:{name}"))),
            None => (
                access.keys.is_empty() && loopback,
                client_ip(req, access.trust_proxy.then_some(access.proxy_hops))
                    .map(|ip| format!("ip:{ip}")),
            ),
        };
        Caller {
            route,
            key,
            admin,
            client,
            loopback,
        }
    }
}

/// The client's address: the peer, or behind `hops` trusted proxies the
/// `X-Forwarded-For` entry that many from the right.
///
/// Each proxy appends the address it got the request from, so only the
/// right-most `hops` entries were written by proxies the operator trusts;
/// anything to their left the client wrote itself (taking the left-most
/// entry let a client pick a fresh identity per request and dodge its rate
/// limit). A header shorter than the chain means the client reached a later
/// proxy directly: its left-most entry is then the trusted one.
fn client_ip<B>(req: &Request<B>, hops: Option<usize>) -> Option<IpAddr> {
    if let Some(hops) = hops {
        // Several headers count as one list, in order (RFC 9110 §5.3).
        let entries: Vec<&str> = req
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        if !entries.is_empty() {
            let at = entries.len().saturating_sub(hops);
            if let Ok(ip) = entries[at].parse() {
                return Some(ip);
            }
        }
    }
    req.extensions().get::<PeerAddr>().map(|p| p.0.ip())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{KeyEntry, Secret};
    use crate::config::{Config, Env};

    /// The policy of an empty environment, with these `(name, admin)` keys.
    fn policy(keys: &[(&str, bool)]) -> AccessPolicy {
        policy_in(&[], keys)
    }

    fn policy_in(env: &[(&'static str, &'static str)], keys: &[(&str, bool)]) -> AccessPolicy {
        let env = env.to_vec();
        let lookup = move |k: &str| {
            env.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        let mut access = Config::from_env(&Env::new(lookup)).unwrap().access;
        access
            .keys
            .extend(keys.iter().map(|(name, admin)| KeyEntry {
                name: (*name).to_owned(),
                secret: Secret(format!("sk-{name}")),
                admin: *admin,
                quota: None,
                output_mode: None,
                reasoning_format: None,
            }));
        access
    }

    fn request(
        path: &str,
        peer: Option<&str>,
        key: Option<&str>,
        xff: Option<&str>,
    ) -> Request<()> {
        let mut req = Request::get(path);
        if let Some(xff) = xff {
            req = req.header("x-forwarded-for", xff);
        }
        let mut req = req.body(()).unwrap();
        if let Some(peer) = peer {
            req.extensions_mut().insert(PeerAddr(peer.parse().unwrap()));
        }
        if let Some(key) = key {
            req.extensions_mut()
                .insert(AuthenticatedKey { name: key.into() });
        }
        req
    }

    #[test]
    fn a_key_names_the_client_and_decides_admin() {
        let access = policy(&[("ops", true), ("app", false)]);
        let ops = Caller::of(
            &request("/admin/maintenance", Some("10.0.0.1:5"), Some("ops"), None),
            &access,
        );
        assert_eq!(
            ops,
            Caller {
                route: Route::AdminMaintenance,
                key: Some("ops".into()),
                admin: true,
                client: Some("key:ops".into()),
                loopback: false,
            }
        );
        // A key that is not admin stays not admin, even from loopback.
        let app = Caller::of(
            &request("/v1/models", Some("127.0.0.1:5"), Some("app"), None),
            &access,
        );
        assert_eq!((app.admin, app.loopback), (false, true));
        assert_eq!(app.client.as_deref(), Some("key:app"));
        assert_eq!(app.route, Route::ListModels);
    }

    #[test]
    fn without_a_key_the_client_is_its_address() {
        let access = policy(&[("ops", true)]);
        let c = Caller::of(
            &request("/v1/chat/completions", Some("10.1.2.3:9"), None, None),
            &access,
        );
        assert_eq!(c.client.as_deref(), Some("ip:10.1.2.3"));
        assert_eq!((c.key, c.admin, c.loopback), (None, false, false));
        // No peer address (a request that did not come through the server): no client id.
        let c = Caller::of(&request("/v1/chat/completions", None, None, None), &access);
        assert_eq!(c.client, None);
    }

    #[test]
    fn loopback_administers_only_a_gateway_without_keys() {
        let local = request("/admin/maintenance", Some("127.0.0.1:1"), None, None);
        assert!(Caller::of(&local, &policy(&[])).admin);
        assert!(!Caller::of(&local, &policy(&[("ops", true)])).admin);
        let remote = request("/admin/maintenance", Some("192.0.2.1:1"), None, None);
        assert!(!Caller::of(&remote, &policy(&[])).admin);
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let access = policy(&[]);
        let trusting = policy_in(&[("PROXY_TRUST_PROXY", "true")], &[]);
        let req = request(
            "/v1/models",
            Some("127.0.0.1:1"),
            None,
            Some(" 203.0.113.7 , 10.0.0.2"),
        );
        assert_eq!(
            Caller::of(&req, &access).client.as_deref(),
            Some("ip:127.0.0.1")
        );
        let trusted = Caller::of(&req, &trusting);
        // The entry the (one) trusted proxy appended: the right-most.
        assert_eq!(trusted.client.as_deref(), Some("ip:10.0.0.2"));
        // Loopback is the peer's: the header does not change it.
        assert!(trusted.loopback && trusted.admin);
        // A malformed header falls back to the peer.
        let bad = request("/v1/models", Some("10.0.0.9:1"), None, Some("not-an-ip"));
        assert_eq!(
            Caller::of(&bad, &trusting).client.as_deref(),
            Some("ip:10.0.0.9")
        );
    }

    #[test]
    fn a_client_cannot_pick_its_address_by_writing_forwarded_for() {
        let one_hop = policy_in(&[("PROXY_TRUST_PROXY", "true")], &[]);
        let two_hops = policy_in(
            &[
                ("PROXY_TRUST_PROXY", "true"),
                ("PROXY_TRUSTED_PROXY_HOPS", "2"),
            ],
            &[],
        );
        // Whatever the client puts first, the proxy's own entry decides.
        for spoof in ["1.1.1.1", "2.2.2.2, 3.3.3.3", "garbage"] {
            let req = request(
                "/v1/models",
                Some("10.0.0.1:1"),
                None,
                Some(&format!("{spoof}, 198.51.100.4")),
            );
            assert_eq!(
                Caller::of(&req, &one_hop).client.as_deref(),
                Some("ip:198.51.100.4"),
                "{spoof}"
            );
        }
        // Two proxies: the client, then the first proxy's address.
        let req = request(
            "/v1/models",
            Some("10.0.0.1:1"),
            None,
            Some("6.6.6.6, 198.51.100.4, 10.0.0.7"),
        );
        assert_eq!(
            Caller::of(&req, &two_hops).client.as_deref(),
            Some("ip:198.51.100.4")
        );
        // A chain shorter than configured: the left-most entry was a proxy's.
        let req = request("/v1/models", Some("10.0.0.1:1"), None, Some("198.51.100.9"));
        assert_eq!(
            Caller::of(&req, &two_hops).client.as_deref(),
            Some("ip:198.51.100.9")
        );
    }

    #[test]
    fn the_route_decided_at_the_top_is_carried() {
        let mut req = request("/v1/models", Some("127.0.0.1:1"), None, None);
        req.extensions_mut().insert(Route::Metrics);
        assert_eq!(Caller::of(&req, &policy(&[])).route, Route::Metrics);
    }
}
