//! The trace directory: one file per request, pruned by age and by count.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What one prune removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pruned {
    pub(crate) by_age: u64,
    pub(crate) by_count: u64,
}

/// `{timestamp}-{requestId}.json`: the timestamp first (UTC, to the
/// millisecond) so names sort by time; the request id reduced to
/// `[A-Za-z0-9_-]` (a client may send its own `x-request-id`, and it must
/// not name a path).
pub(crate) fn file_name(started: SystemTime, request_id: &str) -> String {
    let id: String = request_id
        .chars()
        .take(96)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{}-{id}.json", compact_utc(started))
}

/// `20261129T213402.123Z`.
pub(crate) fn compact_utc(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let t = crate::calendar::Utc::of(d.as_secs());
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z",
        t.year,
        t.month,
        t.day,
        t.hour,
        t.minute,
        t.second,
        d.subsec_millis()
    )
}

/// Writes `bytes` to `dir/name` through a temporary file, so a reader never
/// sees half a trace. The file is private to the gateway's user (0600).
pub(crate) fn write(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    drop(f);
    let path = dir.join(name);
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Removes traces older than `max_age` (by modification time), then the
/// oldest beyond `max_files`. Only `*.json` files are touched.
pub(crate) fn prune(
    dir: &Path,
    max_age: Duration,
    max_files: usize,
    now: SystemTime,
) -> io::Result<Pruned> {
    let mut pruned = Pruned::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(pruned),
        Err(e) => return Err(e),
    };
    let mut kept: Vec<(SystemTime, PathBuf)> = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let is_trace = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(".json") && !n.starts_with('.'));
        if !is_trace {
            continue;
        }
        let Ok(modified) = entry.metadata().and_then(|m| m.modified()) else {
            continue;
        };
        let age = now.duration_since(modified).unwrap_or_default();
        if age > max_age {
            if std::fs::remove_file(&path).is_ok() {
                pruned.by_age += 1;
            }
        } else {
            kept.push((modified, path));
        }
    }
    if kept.len() > max_files {
        // Newest first; ties broken by name, which starts with the time.
        kept.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
        for (_, path) in kept.drain(max_files..) {
            if std::fs::remove_file(&path).is_ok() {
                pruned.by_count += 1;
            }
        }
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("trace-files-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn names_sort_by_time_and_never_name_a_path() {
        let t = UNIX_EPOCH + Duration::from_millis(1_796_074_442_123);
        assert_eq!(compact_utc(t), "20261130T213402.123Z");
        assert_eq!(
            file_name(t, "req_0a1b"),
            "20261130T213402.123Z-req_0a1b.json"
        );
        assert_eq!(
            file_name(t, "../../etc/passwd"),
            "20261130T213402.123Z-______etc_passwd.json"
        );
        assert_eq!(compact_utc(UNIX_EPOCH), "19700101T000000.000Z");
    }

    #[test]
    fn prunes_by_age_then_by_count() {
        let dir = scratch();
        let now = SystemTime::now();
        let mut names = Vec::new();
        for i in 0..6u64 {
            let name = format!("2026112{i}T000000.000Z-req_{i}.json");
            let path = write(&dir, &name, b"{}").unwrap();
            // Files 0 and 1 are two days old; the rest a minute apart.
            let age = if i < 2 {
                Duration::from_secs(48 * 3600)
            } else {
                Duration::from_secs(60 * (10 - i))
            };
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(now - age)
                .unwrap();
            names.push(name);
        }
        std::fs::write(dir.join("notes.txt"), "not a trace").unwrap();

        let p = prune(&dir, Duration::from_secs(24 * 3600), 3, now).unwrap();
        assert_eq!(
            p,
            Pruned {
                by_age: 2,
                by_count: 1
            }
        );
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            vec![
                names[3].clone(),
                names[4].clone(),
                names[5].clone(),
                "notes.txt".into()
            ]
        );
        assert_eq!(
            prune(&dir, Duration::from_secs(24 * 3600), 3, now).unwrap(),
            Pruned::default()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
