//! Partition state in the state topic. A state that fits in one message is the value of
//! key `<topic>:<partition>`. A larger one (many symbols, long spans) is cut into chunks
//! under keys of their own, `<topic>:<partition>~<generation>~<i>`, and the partition's key
//! holds a header naming the generation and the chunk count. Chunks are made durable before
//! the header that points to them, so a crash in between leaves the previous checkpoint
//! whole; a generation's chunks are deleted (tombstones) once a newer header is saved.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The largest value written in one message: well within Kafka's default 1 MB limit.
pub const CHUNK_BYTES: usize = 512 * 1024;

/// The value of a partition's key when its state is in chunks.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Chunked {
    pub generation: u64,
    pub chunks: usize,
}

#[derive(Serialize, Deserialize)]
struct Header {
    chunked: Chunked,
}

const HEADER_START: &str = "{\"chunked\":";

/// One message to the state topic; `None` is a tombstone.
pub type Record = (String, Option<Vec<u8>>);

/// How one partition's state is saved: `chunks` (to be durable first), then `header`.
pub struct Saved {
    pub chunks: Vec<Record>,
    pub header: Record,
    /// `Some` when the state went out in chunks.
    pub chunked: Option<Chunked>,
}

/// The messages that save `body` (a state's JSON) under `key`, as generation `generation`
/// if it needs chunks.
pub fn save(key: &str, body: Vec<u8>, generation: u64) -> Saved {
    if body.len() <= CHUNK_BYTES {
        return Saved {
            chunks: Vec::new(),
            header: (key.to_string(), Some(body)),
            chunked: None,
        };
    }
    // Cut at character boundaries: the state topic is read back as text.
    let text = String::from_utf8_lossy(&body);
    let mut chunks = Vec::new();
    let mut rest: &str = &text;
    while !rest.is_empty() {
        let mut end = rest.len().min(CHUNK_BYTES);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (chunk, tail) = rest.split_at(end);
        chunks.push((
            chunk_key(key, generation, chunks.len()),
            Some(chunk.as_bytes().to_vec()),
        ));
        rest = tail;
    }
    let chunked = Chunked {
        generation,
        chunks: chunks.len(),
    };
    let header = serde_json::to_vec(&Header { chunked }).unwrap_or_default();
    Saved {
        chunks,
        header: (key.to_string(), Some(header)),
        chunked: Some(chunked),
    }
}

/// Tombstones for a generation's chunks, once a newer state is saved.
pub fn forget(key: &str, old: Chunked) -> Vec<Record> {
    (0..old.chunks)
        .map(|i| (chunk_key(key, old.generation, i), None))
        .collect()
}

fn chunk_key(key: &str, generation: u64, i: usize) -> String {
    format!("{key}~{generation}~{i}")
}

/// The latest state JSON of each key in `keys`, from the state topic's messages in order
/// (`(key, value)`, `None` values being tombstones), with how it was chunked if it was.
pub fn load<'a>(
    messages: impl Iterator<Item = (&'a str, Option<&'a str>)>,
    keys: impl Fn(&str) -> bool,
    topic: &str,
) -> Result<HashMap<String, (String, Option<Chunked>)>> {
    let mut latest: HashMap<&str, &str> = HashMap::new();
    for (key, value) in messages {
        match value {
            Some(v) => latest.insert(key, v),
            None => latest.remove(key),
        };
    }
    let mut states = HashMap::new();
    for (&key, &value) in latest.iter().filter(|(k, _)| keys(k)) {
        if !value.starts_with(HEADER_START) {
            states.insert(key.to_string(), (value.to_string(), None));
            continue;
        }
        let damaged = |why: String| {
            Error::schema(format!(
                "the checkpoint of {key:?} in topic {topic:?} is damaged: {why}"
            ))
        };
        let header: Header = serde_json::from_str(value).map_err(|e| damaged(e.to_string()))?;
        let Chunked { generation, chunks } = header.chunked;
        let mut body = String::new();
        for i in 0..chunks {
            let chunk = latest
                .get(chunk_key(key, generation, i).as_str())
                .ok_or_else(|| damaged(format!("chunk {i} of {chunks} is missing")))?;
            body.push_str(chunk);
        }
        states.insert(key.to_string(), (body, Some(header.chunked)));
    }
    Ok(states)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay(records: &[Record]) -> Vec<(String, Option<String>)> {
        records
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_ref().map(|v| String::from_utf8(v.clone()).unwrap()),
                )
            })
            .collect()
    }

    fn load_all(log: &[(String, Option<String>)]) -> HashMap<String, (String, Option<Chunked>)> {
        load(
            log.iter().map(|(k, v)| (k.as_str(), v.as_deref())),
            |k| !k.contains('~'),
            "state",
        )
        .unwrap()
    }

    #[test]
    fn a_large_state_goes_in_chunks_and_comes_back_whole() {
        let body: String = (0..200_000).map(|i| format!("é{i},")).collect();
        let saved = save("t:0", body.clone().into_bytes(), 7);
        assert!(saved.chunks.len() > 2);
        assert!(saved
            .chunks
            .iter()
            .all(|(_, v)| v.as_ref().unwrap().len() <= CHUNK_BYTES));
        let mut log = replay(&saved.chunks);
        log.extend(replay(&[saved.header]));
        let states = load_all(&log);
        assert_eq!(states["t:0"].0, body);
        assert_eq!(states["t:0"].1.unwrap().generation, 7);
    }

    #[test]
    fn a_crash_before_the_header_leaves_the_previous_checkpoint_and_old_chunks_are_deleted() {
        let old: String = "a".repeat(3 * CHUNK_BYTES);
        let first = save("t:0", old.clone().into_bytes(), 1);
        let mut log = replay(&first.chunks);
        log.extend(replay(&[first.header]));
        // The next checkpoint's chunks are written, then the process dies.
        let next = save("t:0", "b".repeat(2 * CHUNK_BYTES).into_bytes(), 2);
        log.extend(replay(&next.chunks));
        assert_eq!(load_all(&log)["t:0"].0, old);
        // Completed: the new header, then the old chunks' tombstones.
        log.extend(replay(&[next.header]));
        log.extend(replay(&forget("t:0", first.chunked.unwrap())));
        let states = load_all(&log);
        assert_eq!(states["t:0"].0, "b".repeat(2 * CHUNK_BYTES));
        // A small state replaces a chunked one.
        log.extend(replay(&[save("t:0", b"{}".to_vec(), 3).header]));
        assert_eq!(load_all(&log)["t:0"], ("{}".to_string(), None));
    }

    #[test]
    fn a_missing_chunk_is_reported_not_glued_over() {
        let saved = save("t:1", "x".repeat(2 * CHUNK_BYTES + 1).into_bytes(), 5);
        let mut log = replay(&saved.chunks[1..]);
        log.extend(replay(&[saved.header]));
        let err = load(
            log.iter().map(|(k, v)| (k.as_str(), v.as_deref())),
            |k| !k.contains('~'),
            "state",
        )
        .unwrap_err();
        assert!(err.to_string().contains("chunk 0 of 3 is missing"), "{err}");
    }
}
