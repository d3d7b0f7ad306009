use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing_subscriber::fmt::format::DefaultFields;
use tracing_subscriber::fmt::MakeWriter;

use super::*;

/// What a subscriber wrote, shared with the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

#[derive(Debug)]
struct Outer(Inner);
#[derive(Debug)]
struct Inner;

impl fmt::Display for Outer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("worker \"gone\"")
    }
}
impl fmt::Display for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("pipe closed")
    }
}
impl std::error::Error for Outer {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}
impl std::error::Error for Inner {}

/// Every field shape the gateway logs, and a few it might: inside spans
/// (whose fields are formatted by the same formatter), recorded late, with
/// the message, errors, raw and `log.` names, strings that need escaping.
fn log_everything() {
    let request = tracing::info_span!("request", method = %"POST", path = %"/v1/chat/completions", request_id = %"req_0f");
    let _entered = request.enter();
    tracing::info!(
        target: "access",
        request_id = %"req_0f",
        method = %http::Method::POST,
        route = "/v1/chat/completions",
        status = 200u16,
        duration_ms = 12u64,
        key = "-",
        model = "codex \"offline\"\n\u{1b}[31m",
        prompt_tokens = 0u64,
        completion_tokens = u64::MAX,
        total_tokens = 7u64,
        completed = true,
        "request"
    );
    tracing::warn!(
        delta = -3i64,
        ratio = 0.25f64,
        ok = false,
        "stream {} of {}",
        1,
        2
    );
    let err = Outer(Inner);
    tracing::error!(
        error = &err as &(dyn std::error::Error + 'static),
        "turn failed"
    );
    tracing::error!(error = &Inner as &(dyn std::error::Error + 'static));
    tracing::info!(r#type = "function", list = ?vec!["a", "b"], "message with \u{1b}[1m escape");
    tracing::info!(
        "log.target" = "hyper",
        "log.line" = 3u64,
        after = 1u64,
        "from log"
    );
    tracing::info!("log.target" = "hyper", first = "after a skipped field");
    tracing::info!(only = 1u64);
    let empty = tracing::info_span!("turn", thread = tracing::field::Empty);
    let _turn = empty.enter();
    tracing::debug!("in an empty span");
    empty.record("thread", "thr_1");
    tracing::debug!(n = 2u64, "after record");
    let turn2 = tracing::info_span!("turn", id = 1u64);
    turn2.record("id", 2u64);
    turn2.in_scope(|| tracing::info!("recorded twice"));
    let kinds = tracing::info_span!(
        "kinds",
        z = "last key",
        a = -1i64,
        big = 1u128 << 100,
        f = 1.5f64,
        inf = f64::INFINITY,
        yes = true,
        r#type = ?Some("x"),
        "log.file" = ?"skipped",
        bytes = &b"\x01\xff"[..],
        text = "tab\tquote\" \u{2028}",
        shown = %"display \"quoted\""
    );
    kinds.in_scope(|| tracing::info!("every kind of span field"));
    tracing::info_span!("bare").in_scope(|| tracing::info!("a span without fields"));
}

fn with_fields<N>(fields: N, ansi: bool) -> String
where
    N: for<'w> tracing_subscriber::fmt::FormatFields<'w> + Send + Sync + 'static,
{
    let out = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(ansi)
        .without_time()
        .fmt_fields(fields)
        .with_writer(out.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, log_everything);
    out.text()
}

#[test]
fn plain_fields_print_what_the_default_formatter_prints() {
    let default = with_fields(DefaultFields::new(), false);
    let plain = with_fields(PlainFields, false);
    // The comparison covers what matters: the access line, the span
    // context and the special shapes are all there.
    assert!(
        default.contains(r#"request{method=POST path=/v1/chat/completions request_id=req_0f}: access: request request_id=req_0f method=POST route="/v1/chat/completions" status=200 duration_ms=12"#),
        "{default}"
    );
    assert!(
        default.contains("total_tokens=7 completed=true"),
        "{default}"
    );
    assert!(default.contains("error.sources="), "{default}");
    assert!(default.contains("turn{thread=\"thr_1\"}"), "{default}");
    assert!(default.contains("turn{id=1 id=2}"), "{default}");
    assert_eq!(plain, default);
}

#[test]
fn with_colours_every_field_is_the_default_formatters() {
    let default = with_fields(DefaultFields::new(), true);
    assert!(default.contains('\u{1b}'), "colours on: {default}");
    assert_eq!(with_fields(PlainFields, true), default);
}

fn at(secs: u64, micros: u32) -> String {
    let line = timestamp(UNIX_EPOCH + Duration::new(secs, micros * 1000)).expect("in range");
    String::from_utf8(line.to_vec()).unwrap()
}

#[test]
fn timestamps_print_as_tracing_subscribers_do() {
    assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
    assert_eq!(at(1_796_027_471, 861_900), "2026-11-30T08:31:11.861900Z");
    // The same second again comes from the cache, with its own microseconds.
    assert_eq!(at(1_796_027_471, 7), "2026-11-30T08:31:11.000007Z");
    // A second earlier (another thread's clock, a step back) is recomputed.
    assert_eq!(at(1_796_027_470, 999_999), "2026-11-30T08:31:10.999999Z");
    assert_eq!(at(951_782_400, 1), "2000-02-29T00:00:00.000001Z");
    assert_eq!(at(1_709_251_199, 500_000), "2024-02-29T23:59:59.500000Z");
    assert_eq!(at(1_709_251_200, 0), "2024-03-01T00:00:00.000000Z");
    assert_eq!(at(253_402_300_799, 0), "9999-12-31T23:59:59.000000Z");
    // Beyond four-digit years the general path prints it.
    assert!(timestamp(UNIX_EPOCH + Duration::from_secs(253_402_300_800)).is_none());
    assert!(timestamp(UNIX_EPOCH - Duration::from_secs(1)).is_none());
}

#[test]
fn the_timer_writes_now_in_the_same_shape() {
    let mut ours = String::new();
    UtcMicros.format_time(&mut Writer::new(&mut ours)).unwrap();
    let mut theirs = String::new();
    tracing_subscriber::fmt::time::SystemTime
        .format_time(&mut Writer::new(&mut theirs))
        .unwrap();
    assert_eq!(ours.len(), theirs.len(), "{ours} vs {theirs}");
    // Same date (the two clock reads are a day apart only at midnight).
    assert!(
        ours[..10] == theirs[..10] || ours[11..13] == *"00",
        "{ours} vs {theirs}"
    );
}

/// Events outside any span, the ones the JSON formatter's short path takes.
fn log_outside_spans() {
    tracing::info!(
        target: "access",
        request_id = %"req_0f",
        method = %http::Method::POST,
        route = "/v1/chat/completions",
        status = 503u16,
        duration_ms = 12u64,
        key = "-",
        model = "codex \"offline\"\n\u{1b}[31m\u{2028}",
        prompt_tokens = 0u64,
        completion_tokens = u64::MAX,
        total_tokens = 7u64,
        completed = false,
        "request"
    );
    tracing::warn!(
        delta = -3i64,
        ratio = 0.25f64,
        nan = f64::NAN,
        ok = false,
        "stream {} of {}",
        1,
        2
    );
    tracing::error!(
        error = &Outer(Inner) as &(dyn std::error::Error + 'static),
        "turn failed"
    );
    tracing::info!(r#type = "function", list = ?vec!["a", "b"], "with a raw name");
    tracing::info!(
        "log.target" = "hyper",
        "log.line" = 3u64,
        after = 1u64,
        "from log"
    );
    tracing::info!(only = 1u64);
    tracing::info!("");
    // An explicit parent outside the current span.
    let parent = tracing::info_span!("turn", id = 1u64);
    tracing::info!(parent: &parent, "explicit parent");
    tracing::info!(parent: None, "explicit root");
}

/// A clock that always says the same, so two formatters can be compared.
#[derive(Clone, Copy)]
struct Fixed;

impl FormatTime for Fixed {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        w.write_str("2026-11-30T08:31:11.861900Z")
    }
}

fn json_with<N, E>(fields: N, events: E) -> String
where
    N: for<'w> tracing_subscriber::fmt::FormatFields<'w> + Send + Sync + 'static,
    E: tracing_subscriber::fmt::FormatEvent<tracing_subscriber::Registry, N>
        + Send
        + Sync
        + 'static,
{
    let out = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .json()
        .fmt_fields(fields)
        .event_format(events)
        .with_writer(out.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        log_outside_spans();
        log_everything();
    });
    out.text()
}

#[test]
fn json_lines_are_what_the_default_json_formatter_writes() {
    let default = json_with(
        tracing_subscriber::fmt::format::JsonFields::new(),
        tracing_subscriber::fmt::format().json().with_timer(Fixed),
    );
    let ours = json_with(JsonSpanFields, JsonLines::new(Fixed));
    let lines: Vec<serde_json::Value> = default
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The comparison covers both paths: lines outside and inside spans.
    assert_eq!(lines[0]["target"], "access", "{default}");
    assert_eq!(lines[0]["fields"]["completed"], false, "{default}");
    assert!(
        lines.iter().any(|l| l["span"]["request_id"] == "req_0f"),
        "{default}"
    );
    assert!(
        lines.iter().any(|l| l["span"]["name"] == "turn"),
        "{default}"
    );
    assert!(lines.iter().any(|l| l["span"]["id"] == 2), "{default}");
    let kinds = lines.iter().find(|l| l["span"]["name"] == "kinds").unwrap();
    assert_eq!(kinds["span"]["type"], "Some(\"x\")", "{default}");
    assert!(kinds["span"].get("log.file").is_none(), "{default}");
    assert_eq!(ours, default);
}
