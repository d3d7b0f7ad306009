//! The text log's field and timestamp formatting, written to cost less per
//! line than tracing-subscriber's defaults while printing the same bytes.
//!
//! Every request costs the log a span (its fields formatted once, when it is
//! made) and an access line of a dozen fields (`crate::access_log`). With
//! the defaults, each field goes through `core::fmt` twice over: its name is
//! wrapped in an ANSI style even when colours are off (an empty style still
//! runs nu-ansi-term's `Display`), and numbers and booleans go through
//! `Debug`. [`PlainFields`] writes `name=value` directly and hands everything
//! with a special shape (the message, errors, `r#` names, `log.` metadata,
//! and any line bound for a terminal with colours) to tracing-subscriber's
//! own [`DefaultVisitor`], so the output is the same byte for byte (the
//! tests below compare the two).
//!
//! [`JsonLines`] is the JSON log's event formatter: an event outside any
//! span (the access line, start-up and worker lines) is serialized straight
//! into one buffer, where tracing-subscriber's JSON formatter pushes each of
//! serde_json's small writes through UTF-8 validation and a `dyn` writer;
//! the rest goes to tracing-subscriber's formatter unchanged.
//!
//! [`UtcMicros`] prints the timestamp as tracing-subscriber's `SystemTime`
//! timer does (`2026-11-30T08:31:11.861900Z`), with the part up to the
//! second computed once per second per thread instead of on every line.

use std::cell::Cell;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::fmt::time::FormatTime;

use crate::calendar::Utc;

/// The text log's field formatter; see the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct PlainFields;

impl<'a> MakeVisitor<Writer<'a>> for PlainFields {
    type Visitor = PlainVisitor<'a>;

    fn make_visitor(&self, writer: Writer<'a>) -> PlainVisitor<'a> {
        PlainVisitor {
            writer,
            is_empty: true,
            result: Ok(()),
        }
    }
}

/// The visitor of [`PlainFields`]: `name=value`, space-separated.
#[derive(Debug)]
pub struct PlainVisitor<'a> {
    writer: Writer<'a>,
    is_empty: bool,
    result: fmt::Result,
}

impl PlainVisitor<'_> {
    /// Whether `field` is written here; if not, [`Self::delegate`] writes it.
    fn plain(&self, field: &Field) -> bool {
        let name = field.name();
        !(self.writer.has_ansi_escapes()
            || name == "message"
            || name.starts_with("r#")
            || name.starts_with("log."))
    }

    /// Lets tracing-subscriber's own visitor write one field, in its shape.
    fn delegate(&mut self, field: &Field, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        if self.result.is_err() {
            return;
        }
        let mut v = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut v);
        self.result = v.finish();
        // `log.` fields are metadata the default visitor skips unwritten.
        if !field.name().starts_with("log.") {
            self.is_empty = false;
        }
    }

    /// `name=`, after a space unless it is the first field.
    fn name(&mut self, field: &Field) -> bool {
        if self.result.is_err() {
            return false;
        }
        if self.is_empty {
            self.is_empty = false;
        } else if let Err(e) = self.writer.write_char(' ') {
            self.result = Err(e);
            return false;
        }
        self.result = self
            .writer
            .write_str(field.name())
            .and_then(|()| self.writer.write_char('='));
        self.result.is_ok()
    }
}

impl Visit for PlainVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if !self.plain(field) {
            return self.delegate(field, |v| v.record_debug(field, value));
        }
        if self.name(field) {
            self.result = write!(self.writer, "{value:?}");
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if !self.plain(field) {
            return self.delegate(field, |v| v.record_str(field, value));
        }
        if self.name(field) {
            self.result = write!(self.writer, "{value:?}");
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if !self.plain(field) {
            return self.delegate(field, |v| v.record_u64(field, value));
        }
        if self.name(field) {
            self.result = self.writer.write_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if !self.plain(field) {
            return self.delegate(field, |v| v.record_i64(field, value));
        }
        if self.name(field) {
            self.result = self.writer.write_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if !self.plain(field) {
            return self.delegate(field, |v| v.record_bool(field, value));
        }
        if self.name(field) {
            self.result = self.writer.write_str(if value { "true" } else { "false" });
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // An error's sources and its escaping are the default visitor's.
        self.delegate(field, |v| v.record_error(field, value));
    }
}

impl VisitOutput<fmt::Result> for PlainVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for PlainVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

/// The log's timestamp, in UTC with microseconds; see the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct UtcMicros;

/// `YYYY-MM-DDTHH:MM:SS.` (20 bytes) of the second a thread last logged in.
const PREFIX_LEN: usize = 20;
/// The prefix, six digits of microseconds and `Z`.
const LINE_LEN: usize = PREFIX_LEN + 7;

thread_local! {
    static PREFIX: Cell<(u64, [u8; PREFIX_LEN])> = const { Cell::new((u64::MAX, [0; PREFIX_LEN])) };
}

impl FormatTime for UtcMicros {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        match timestamp(SystemTime::now()) {
            // Only ASCII digits and separators were written.
            Some(line) => w.write_str(std::str::from_utf8(&line).map_err(|_| fmt::Error)?),
            // Before 1970 or after 9999: tracing-subscriber's own timer,
            // which prints those as it likes (and reads the clock again).
            None => tracing_subscriber::fmt::time::SystemTime.format_time(w),
        }
    }
}

/// `at` as `2026-11-30T08:31:11.861900Z`, for the years 1970-9999.
fn timestamp(at: SystemTime) -> Option<[u8; LINE_LEN]> {
    let since = at.duration_since(UNIX_EPOCH).ok()?;
    let secs = since.as_secs();
    let prefix = PREFIX.with(|cached| {
        let (at_sec, prefix) = cached.get();
        if at_sec == secs {
            return Some(prefix);
        }
        let prefix = date_prefix(secs)?;
        cached.set((secs, prefix));
        Some(prefix)
    })?;
    let mut line = [0u8; LINE_LEN];
    line[..PREFIX_LEN].copy_from_slice(&prefix);
    put_digits(
        &mut line[PREFIX_LEN..PREFIX_LEN + 6],
        u64::from(since.subsec_micros()),
    );
    line[PREFIX_LEN + 6] = b'Z';
    Some(line)
}

/// `n`'s last `out.len()` decimal digits, zero-padded.
fn put_digits(out: &mut [u8], mut n: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// The date and time up to the second as ASCII, for the years 1970-9999.
fn date_prefix(secs: u64) -> Option<[u8; PREFIX_LEN]> {
    let t = Utc::of(secs);
    let year = u64::try_from(t.year).ok().filter(|y| *y <= 9999)?;
    let mut out = [0u8; PREFIX_LEN];
    put_digits(&mut out[0..4], year);
    put_digits(&mut out[5..7], u64::from(t.month));
    put_digits(&mut out[8..10], u64::from(t.day));
    put_digits(&mut out[11..13], t.hour);
    put_digits(&mut out[14..16], t.minute);
    put_digits(&mut out[17..19], t.second);
    for (at, sep) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
    ] {
        out[at] = sep;
    }
    Some(out)
}

mod json;
pub use json::{JsonLines, JsonSpanFields};

#[cfg(test)]
mod tests;
