//! [`JsonLines`]: see the parent module's docs.

use std::cell::RefCell;
use std::fmt;

use serde::ser::{SerializeMap, Serializer as _};
use tracing::{Event, Subscriber};
use tracing_serde::fields::AsMap;
use tracing_serde::AsSerde;
use tracing_subscriber::fmt::format::{self, Format, Json, Writer};
use tracing_subscriber::fmt::time::FormatTime;
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
