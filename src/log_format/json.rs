//! [`JsonLines`]: see the parent module's docs.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;

use serde::ser::{SerializeMap, Serializer as _};
use tracing::field::{Field, Visit};
use tracing::{span, Event, Subscriber};
use tracing_serde::fields::AsMap;
use tracing_serde::AsSerde;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{self, Format, Json, Writer};
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::FormattedFields;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Beyond this, a thread's line buffer is not kept (one huge line must not
/// pin its memory).
const KEEP_BUFFER: usize = 64 * 1024;

thread_local! {
    /// The timestamp and the line being serialized.
    static LINE: RefCell<(String, Vec<u8>)> = const { RefCell::new((String::new(), Vec::new())) };
}

/// The JSON event formatter, with tracing-subscriber's default settings
/// (timestamp, level, fields, target, then `span` and `spans` inside a
/// span) and its output, byte for byte.
#[derive(Debug)]
pub struct JsonLines<T> {
    timer: T,
    /// Events inside a span, or from the `log` crate (whose metadata it
    /// rewrites): their span fields are stored as JSON text, which only this
    /// formatter knows how to read back.
    general: Format<Json, T>,
}

impl<T: FormatTime + Clone> JsonLines<T> {
    pub fn new(timer: T) -> JsonLines<T> {
        JsonLines {
            general: format::format().json().with_timer(timer.clone()),
            timer,
        }
    }
}

impl<S, N, T> FormatEvent<S, N> for JsonLines<T>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
    T: FormatTime,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let general = event.parent().is_some()
            || ctx.lookup_current().is_some()
            || meta.fields().iter().any(|f| f.name().starts_with("log."));
        if general {
            return self.general.format_event(ctx, writer, event);
        }
        LINE.with(|line| {
            // A field's `Debug` that logs lands here again: that line takes
            // the general path.
            let Ok(mut line) = line.try_borrow_mut() else {
                return self.general.format_event(ctx, writer.by_ref(), event);
            };
            let (timestamp, out) = &mut *line;
            timestamp.clear();
            out.clear();
            self.timer.format_time(&mut Writer::new(timestamp))?;
            let mut serializer = serde_json::Serializer::new(&mut *out);
            let serialized = (|| {
                let mut map = serializer.serialize_map(None)?;
                map.serialize_entry("timestamp", timestamp)?;
                map.serialize_entry("level", &meta.level().as_serde())?;
                map.serialize_entry("fields", &event.field_map())?;
                map.serialize_entry("target", meta.target())?;
                map.end()
            })();
            serialized.map_err(|_| fmt::Error)?;
            // serde_json writes UTF-8 only.
            let text = std::str::from_utf8(out).map_err(|_| fmt::Error)?;
            let result = writer
                .write_str(text)
                .and_then(|()| writer.write_char('\n'));
            if out.capacity() > KEEP_BUFFER {
                *out = Vec::new();
            }
            result
        })
    }
}

/// The JSON span fields formatter: the text tracing-subscriber's
/// `JsonFields` stores for a span (an object with the keys sorted, the last
/// value of a repeated key), written without building a map of
/// `serde_json::Value`s first. [`JsonLines`] (and tracing-subscriber's own
/// JSON formatter) reads it back for the lines inside the span.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonSpanFields;

/// A field's name and where its serialized value lies in the bytes.
type Entry = (&'static str, usize, usize);

thread_local! {
    /// Each field's serialized value, one after the other.
    static VALUES: RefCell<(Vec<u8>, Vec<Entry>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

impl<'w> FormatFields<'w> for JsonSpanFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        VALUES.with(|values| match values.try_borrow_mut() {
            Ok(mut values) => {
                let (bytes, entries) = &mut *values;
                bytes.clear();
                entries.clear();
                let result = write_object(&mut writer, bytes, entries, fields);
                if bytes.capacity() > KEEP_BUFFER {
                    *bytes = Vec::new();
                }
                result
            }
            // Re-entered from a field's `Debug`: buffers of its own.
            Err(_) => write_object(&mut writer, &mut Vec::new(), &mut Vec::new(), fields),
        })
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &span::Record<'_>,
    ) -> fmt::Result {
        if current.is_empty() {
            return self.format_fields(current.as_writer(), fields);
        }
        // Fields recorded after the span was made: merged into the object,
        // as `JsonFields` does (rare; the gateway's spans are made whole).
        let mut map: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(current).map_err(|_| fmt::Error)?;
        let mut added = String::new();
        self.format_fields(Writer::new(&mut added), fields)?;
        let added: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(&added).map_err(|_| fmt::Error)?;
        map.extend(added);
        current.fields = serde_json::to_string(&map).map_err(|_| fmt::Error)?;
        Ok(())
    }
}

/// Records `fields` into `bytes` and `entries`, then writes the object.
fn write_object<R: RecordFields>(
    writer: &mut Writer<'_>,
    bytes: &mut Vec<u8>,
    entries: &mut Vec<Entry>,
    fields: R,
) -> fmt::Result {
    let mut visitor = JsonValues {
        bytes,
        entries,
        result: Ok(()),
    };
    fields.record(&mut visitor);
    visitor.result?;
    // Sorted by key as a BTreeMap is; of a repeated key the last value wins
    // (the sort is stable, so the last of a run is the last recorded).
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = Vec::with_capacity(bytes.len() + 16 * entries.len() + 2);
    out.push(b'{');
    let mut first = true;
    for (i, (name, start, end)) in entries.iter().enumerate() {
        if entries.get(i + 1).is_some_and(|next| next.0 == *name) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        serde_json::to_writer(&mut out, name).map_err(|_| fmt::Error)?;
        out.push(b':');
        out.extend_from_slice(&bytes[*start..*end]);
    }
    out.push(b'}');
    writer.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
}

/// Serializes each value as `JsonFields`' visitor converts it: the same
/// methods overridden, the same names skipped or shortened.
struct JsonValues<'a> {
    bytes: &'a mut Vec<u8>,
    entries: &'a mut Vec<Entry>,
    result: fmt::Result,
}

impl JsonValues<'_> {
    fn push(&mut self, name: &'static str, value: &(impl serde::Serialize + ?Sized)) {
        let start = self.bytes.len();
        if serde_json::to_writer(&mut *self.bytes, value).is_err() {
            self.result = Err(fmt::Error);
        }
        self.entries.push((name, start, self.bytes.len()));
    }
}

impl Visit for JsonValues<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // Not finite: `null`, as `serde_json::Value::from` makes it.
        self.push(field.name(), &value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field.name(), &value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field.name(), &value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field.name(), &value);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field.name(), value);
    }

    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        self.push(field.name(), value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        if name.starts_with("log.") {
            return;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        let start = self.bytes.len();
        let mut serializer = serde_json::Serializer::new(&mut *self.bytes);
        if serializer.collect_str(&format_args!("{value:?}")).is_err() {
            self.result = Err(fmt::Error);
        }
        self.entries.push((name, start, self.bytes.len()));
    }
}
