//! [`HttpMetrics`]: the metric families, registered once and shared by every clone.
//!
//! Latency buckets are sized for LLM traffic, where a completion takes from a few
//! milliseconds (a cached error) to minutes (a long stream), not for a typical web API:
//!
//! - `http_request_duration_seconds`: [`DURATION_BUCKETS`], 5 ms … 600 s;
//! - `http_time_to_first_byte_seconds`: [`TTFB_BUCKETS`], 1 ms … 60 s.

use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Upper bounds (seconds) of `http_request_duration_seconds`.
pub const DURATION_BUCKETS: [f64; 17] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0,
    600.0,
];

/// Upper bounds (seconds) of `http_time_to_first_byte_seconds`.
pub const TTFB_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
];

/// The HTTP metric families. Cloning is one `Arc` increment; clones update the same series.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    pub(crate) families: Arc<Families>,
}

#[derive(Debug)]
pub(crate) struct Families {
    pub(crate) requests: Family<RequestLabels, Counter>,
    pub(crate) duration: Family<RouteMethodLabels, Histogram, fn() -> Histogram>,
    pub(crate) ttfb: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub(crate) streams_open: Family<RouteLabels, Gauge>,
    pub(crate) rejections: Family<CauseLabels, Counter>,
}

impl HttpMetrics {
    /// Creates the families and registers them in `registry`:
    ///
    /// | name | type | labels |
    /// |---|---|---|
    /// | `http_requests_total` | counter | route, method, status |
    /// | `http_request_duration_seconds` | histogram | route, method |
    /// | `http_time_to_first_byte_seconds` | histogram | route |
    /// | `http_streams_open` | gauge | route |
    /// | `http_rejections_total` | counter | cause |
    pub fn register(registry: &mut Registry) -> Self {
        let families = Families {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS)),
            ttfb: Family::new_with_constructor(|| Histogram::new(TTFB_BUCKETS)),
            streams_open: Family::default(),
            rejections: Family::default(),
        };
        registry.register(
            "http_requests",
            "HTTP responses by route, method and status (\"error\": the service failed, \
             \"canceled\": the client left before the response headers)",
            families.requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time from request to the end of the response body (a stream counts whole)",
            Unit::Seconds,
            families.duration.clone(),
        );
        registry.register_with_unit(
            "http_time_to_first_byte",
            "Time from request to the first non-empty data frame of the response body \
             (time to first token for streams)",
            Unit::Seconds,
            families.ttfb.clone(),
        );
        registry.register(
            "http_streams_open",
            "text/event-stream responses whose body has not ended yet",
            families.streams_open.clone(),
        );
        registry.register(
            "http_rejections",
            "Responses produced by a rejecting layer (auth, rate limit, maintenance), by cause",
            families.rejections.clone(),
        );
        Self {
            families: Arc::new(families),
        }
    }
}

// === labels ===
//
// Every label value is `&'static str` or a number: building a label set never
// allocates, and the set of values is bounded by the code, not by clients.

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub(crate) route: &'static str,
    pub(crate) method: &'static str,
    pub(crate) status: Status,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteMethodLabels {
    pub(crate) route: &'static str,
    pub(crate) method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    pub(crate) route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CauseLabels {
    pub(crate) cause: &'static str,
}

/// The `status` label: the response code, or what happened instead of a response.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) enum Status {
    Code(u16),
    Error,
    Canceled,
}

impl EncodeLabelValue for Status {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        match self {
            Status::Code(code) => EncodeLabelValue::encode(code, encoder),
            Status::Error => EncodeLabelValue::encode(&"error", encoder),
            Status::Canceled => EncodeLabelValue::encode(&"canceled", encoder),
        }
    }
}

/// The method as a bounded label: the nine standard methods, else `"other"`.
pub(crate) fn method_label(method: &http::Method) -> &'static str {
    use http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// The registry in the OpenMetrics text format, for a `/metrics` handler.
///
/// Serve it with [`CONTENT_TYPE`].
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)
        .expect("writing to a String cannot fail");
    out
}

/// The `content-type` of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
