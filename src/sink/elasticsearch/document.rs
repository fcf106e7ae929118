//! Documents: an event written as an ECS or raw JSON document, straight from its record
//! and line bytes, with each key once.

use super::index::IndexTemplate;
use super::settings::Action;
use crate::msgpack::{self, Cursor};
use crate::sink::export::Ref;
use crate::sink::jsonl::{self, Shape};

/// Encoding state of one request, reused from event to event.
#[derive(Default)]
pub(super) struct Encoder {
    pub(super) times: jsonl::TimeCache,
    /// The action line up to the index name's closing quote, for names from `start` on.
    pub(super) action: Option<(i64, Vec<u8>)>,
    pub(super) members: Vec<Member>,
    /// Members scanned from a line enrichment did not record them for.
    pub(super) found: Vec<crate::event::Member>,
    pub(super) seen: Seen,
    pub(super) scratch: Vec<u8>,
}

/// Top-level keys already in the document: Elasticsearch refuses a document that has one key
/// twice (`json_parse_exception`), so each source of fields skips what an earlier one wrote.
/// Documents have a few dozen keys, so a list beats hashing.
#[derive(Default)]
pub(super) struct Seen {
    pub(super) arena: Vec<u8>,
    pub(super) ends: Vec<usize>,
}

impl Seen {
    pub(super) fn clear(&mut self) {
        self.arena.clear();
        self.ends.clear();
    }

    pub(super) fn contains(&self, key: &[u8]) -> bool {
        let mut start = 0;
        self.ends.iter().any(|&end| {
            let hit = &self.arena[start..end] == key;
            start = end;
            hit
        })
    }

    /// Whether some key satisfies `f`.
    pub(super) fn any(&self, mut f: impl FnMut(&[u8]) -> bool) -> bool {
        let mut start = 0;
        self.ends.iter().any(|&end| {
            let hit = f(&self.arena[start..end]);
            start = end;
            hit
        })
    }

    pub(super) fn insert(&mut self, key: &[u8]) {
        self.arena.extend_from_slice(key);
        self.ends.push(self.arena.len());
    }
}

/// One member of a JSON object, as ranges of its text: the key between its quotes (still
/// escaped), and the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Member {
    pub(super) key: std::ops::Range<usize>,
    pub(super) value: std::ops::Range<usize>,
}

/// What the log line contributes to the document.
#[derive(Clone, Copy)]
pub(super) enum Line<'a> {
    None,
    Text(&'a [u8]),
    /// A JSON object kept whole under the nest key.
    Nested(&'a [u8]),
    /// A JSON object whose members are in [`Encoder::members`].
    Top(&'a [u8]),
}

impl Encoder {
    pub(super) fn action_line(
        &mut self,
        out: &mut Vec<u8>,
        action: Action,
        index: &IndexTemplate,
        r: Ref<'_>,
        hash_ids: bool,
    ) {
        let period = index.period();
        let start = r.event.time.secs.div_euclid(period);
        if self.action.as_ref().is_none_or(|(s, _)| *s != start) {
            let mut line = Vec::with_capacity(64);
            line.extend_from_slice(match action {
                Action::Create => b"{\"create\":{\"_index\":\"",
                Action::Index => b"{\"index\":{\"_index\":\"",
            });
            index.render(&mut line, r.event.time.secs);
            line.push(b'"');
            self.action = Some((start, line));
        }
        if let Some((_, line)) = &self.action {
            out.extend_from_slice(line);
        }
        if hash_ids {
            out.extend_from_slice(b",\"_id\":\"");
            out.extend_from_slice(&doc_id(r));
            out.push(b'"');
        }
        out.extend_from_slice(b"}}\n");
    }

    /// The `stdout` shape with `@timestamp` in front.
    pub(super) fn raw(
        &mut self,
        out: &mut Vec<u8>,
        r: Ref<'_>,
        shape: &Shape,
    ) -> Result<(), msgpack::Error> {
        self.seen.clear();
        out.extend_from_slice(b"{\"@timestamp\":\"");
        self.times.write(out, r.event.time);
        out.push(b'"');
        let at = out.len();
        jsonl::event(out, &mut self.times, r.batch, r.event, shape)?;
        // `{"@timestamp":"…"` + `{"tag":…}` → `{"@timestamp":"…","tag":…}`
        out[at] = b',';
        Ok(())
    }

    /// Whether the document just written has no field `key` and no field that `key`'s
    /// dotted path would turn into an object (`log` for `log.sequence`). The raw mapping
    /// writes only its own top-level keys, none of them dotted.
    pub(super) fn key_free(&self, key: &[u8]) -> bool {
        // One pass over the keys written: `key` itself, or a key that is one of its dotted
        // prefixes.
        !self.seen.any(|k| {
            k.len() <= key.len()
                && k.first() == key.first()
                && key.starts_with(k)
                && (k.len() == key.len() || key[k.len()] == b'.')
        })
    }

    /// Writes `,"key":` unless `key` is already in the document; says whether it wrote.
    pub(super) fn key(&mut self, out: &mut Vec<u8>, key: &[u8]) -> bool {
        if self.seen.contains(key) {
            return false;
        }
        self.seen.insert(key);
        out.push(b',');
        jsonl::string(out, key);
        out.push(b':');
        true
    }

    /// `,"key":` for one of Outrigger's own keys, which come first and are all different, so
    /// need no check.
    pub(super) fn own_key(&mut self, out: &mut Vec<u8>, key: &'static [u8]) {
        self.seen.insert(key);
        out.extend_from_slice(b",\"");
        out.extend_from_slice(key);
        out.extend_from_slice(b"\":");
    }

    /// `,"key":"value"` for one of Outrigger's own keys.
    pub(super) fn own(&mut self, out: &mut Vec<u8>, key: &'static [u8], value: &[u8]) {
        self.own_key(out, key);
        jsonl::string(out, value);
    }

    /// `,"key":"value"`, unless `key` is already in the document.
    pub(super) fn pair(&mut self, out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
        if self.key(out, key) {
            jsonl::string(out, value);
        }
    }

    /// The ECS document (see the module documentation for the fields and their order).
    pub(super) fn ecs(
        &mut self,
        out: &mut Vec<u8>,
        r: Ref<'_>,
        shape: &Shape,
        data_stream: &[u8],
    ) -> Result<(), msgpack::Error> {
        let (batch, e) = (r.batch, r.event);
        let m = &e.meta;
        self.seen.clear();
        out.extend_from_slice(b"{\"@timestamp\":\"");
        self.times.write(out, e.time);
        out.push(b'"');
        self.seen.insert(b"@timestamp");

        let line = match m.line.map(|s| e.slice(s)) {
            None => Line::None,
            Some(l) if !m.json => Line::Text(l),
            Some(l) if shape.nest_key.is_some() => Line::Nested(l.trim_ascii()),
            Some(l) => match crate::pipeline::json::members_of(batch, e, &mut self.found) {
                // Enrichment found the members ([`crate::event::Batch::members`]); here they
                // are ranges of the object.
                Some(found) => {
                    let obj = l.trim_ascii();
                    let base = obj.as_ptr() as usize - e.record.as_ptr() as usize;
                    let range = |s: crate::event::Span| {
                        s.start as usize - base..(s.start + s.len) as usize - base
                    };
                    self.members.clear();
                    self.members.extend(found.iter().map(|mb| Member {
                        key: range(mb.key),
                        value: range(mb.value),
                    }));
                    Line::Top(obj)
                }
                // Cannot happen for a line the pipeline parsed; if it does, keep the text.
                None => Line::Text(l),
            },
        };

        // The member of a top-level JSON line that became `message`.
        let mut renamed = None;
        // Where the value of the record field that became `message` starts, for a record
        // that carries the application's fields itself.
        let mut renamed_field = None;
        match line {
            Line::None => {
                if let Some(s) = m.message.filter(|_| m.message_in_record) {
                    self.own(out, b"message", e.slice(s));
                    renamed_field = Some(s.start as usize);
                }
            }
            Line::Text(t) => self.own(out, b"message", t),
            Line::Nested(_) => {
                if let Some(s) = m.message {
                    self.own_key(out, b"message");
                    out.extend_from_slice(e.slice(s));
                }
            }
            Line::Top(obj) => {
                let has_message = self
                    .members
                    .iter()
                    .any(|mb| &obj[mb.key.clone()] == b"message");
                if let Some(s) = m.message.filter(|_| !has_message) {
                    let base = obj.as_ptr() as usize - e.record.as_ptr() as usize;
                    renamed = self.members.iter().position(|mb| {
                        mb.value.start + base == s.start as usize
                            && mb.value.len() == s.len as usize
                    });
                    self.own_key(out, b"message");
                    out.extend_from_slice(e.slice(s));
                }
            }
        }

        if m.severity > 0 {
            match m.severity_text {
                Some(s) => self.own(out, b"log.level", e.slice(s)),
                None => self.own(out, b"log.level", level_name(m.severity).as_bytes()),
            }
        }
        if let Some(s) = m.stream {
            self.own(out, b"log.iostream", e.slice(s));
        }
        if m.incomplete {
            self.own_key(out, b"log.flags");
            out.extend_from_slice(b"[\"truncated\"]");
        }
        if let Some(t) = m.trace_id {
            let mut buf = [0u8; 32];
            self.own(out, b"trace.id", hex_str(&t, &mut buf));
            if let Some(s) = m.span_id {
                self.own(out, b"span.id", hex_str(&s, &mut buf));
            }
        }
        let tag = batch.tag(e);
        let k8s = batch.k8s.get(e.tag as usize).copied().flatten();
        let in_tag = |s: crate::event::Span| &tag[s.start as usize..(s.start + s.len) as usize];
        if let Some(s) = m.container_id {
            self.own(out, b"container.id", e.slice(s));
        } else if let Some(k) = k8s
            && k.container_id.len > 0
        {
            self.own(out, b"container.id", in_tag(k.container_id));
        }
        if let Some(s) = m.container_name {
            self.own(out, b"container.name", e.slice(s));
        }
        if let Some(k) = k8s {
            self.own(out, b"kubernetes.pod.name", in_tag(k.pod));
            self.own(out, b"kubernetes.namespace", in_tag(k.namespace));
            self.own(out, b"kubernetes.container.name", in_tag(k.container));
            if k.pod_uid.len > 0 {
                self.own(out, b"kubernetes.pod.uid", in_tag(k.pod_uid));
            }
            if k.restart_count.len > 0 {
                self.own(
                    out,
                    b"kubernetes.container.restart_count",
                    in_tag(k.restart_count),
                );
            }
            self.own(out, b"orchestrator.type", b"kubernetes");
        }
        self.own(out, b"fluent.tag", tag);
        if !data_stream.is_empty() {
            out.extend_from_slice(data_stream);
            for k in [
                "data_stream.type",
                "data_stream.dataset",
                "data_stream.namespace",
            ] {
                self.seen.insert(k.as_bytes());
            }
        }

        // The application's fields.
        match line {
            Line::Nested(obj) => {
                let key = shape.nest_key.as_deref().unwrap_or_default();
                if self.key(out, key) {
                    out.extend_from_slice(obj);
                }
            }
            Line::Top(obj) => {
                for i in 0..self.members.len() {
                    if Some(i) == renamed {
                        continue;
                    }
                    let Member { key, value } = self.members[i].clone();
                    let raw = &obj[key.clone()];
                    if raw == b"@timestamp" {
                        continue;
                    }
                    let fresh = if raw.contains(&b'\\') {
                        unescape(&obj[key.start - 1..key.end + 1], &mut self.scratch)
                            && !self.seen.contains(&self.scratch)
                            && {
                                let k = std::mem::take(&mut self.scratch);
                                self.seen.insert(&k);
                                self.scratch = k;
                                true
                            }
                    } else if self.seen.contains(raw) {
                        false
                    } else {
                        self.seen.insert(raw);
                        true
                    };
                    if fresh {
                        out.push(b',');
                        out.extend_from_slice(&obj[key.start - 1..value.end]);
                    }
                }
            }
            Line::None | Line::Text(_) => {}
        }

        for (k, v) in batch.resource.iter() {
            if ecs_labels(k, &mut self.scratch) {
                let name = std::mem::take(&mut self.scratch);
                self.pair(out, &name, v);
                self.scratch = name;
            } else {
                self.pair(out, ecs_name(k), v);
            }
        }

        // The rest of the record.
        let skip = |k: &[u8]| match k {
            b"container_id" => m.container_id.is_some(),
            b"container_name" => m.container_name.is_some(),
            b"source" => m.stream.is_some(),
            k => m.line.is_some() && k == shape.line_key.as_slice(),
        };
        let mut c = Cursor::new(e.map());
        let (h, _) = c.read()?;
        if h.kind != msgpack::Kind::Map {
            return Err(msgpack::Error::Truncated);
        }
        for _ in 0..h.children / 2 {
            let key = match c.bytes()? {
                Some(k) if skip(k) || renamed_field == Some(value_start(&c)?) => {
                    c.skip()?;
                    continue;
                }
                Some(k) => k,
                None => {
                    // A non-string key: its JSON text becomes the key.
                    self.scratch.clear();
                    jsonl::value(&mut self.scratch, &mut c, 1)?;
                    let k = std::mem::take(&mut self.scratch);
                    let fresh = self.key(out, &k);
                    self.scratch = k;
                    if fresh {
                        jsonl::value(out, &mut c, 1)?;
                    } else {
                        c.skip()?;
                    }
                    continue;
                }
            };
            if self.key(out, key) {
                jsonl::value(out, &mut c, 1)?;
            } else {
                c.skip()?;
            }
        }
        for (k, v) in batch.fields.iter() {
            self.pair(out, k, v);
        }
        if let (Line::Top(obj) | Line::Nested(obj), true) = (line, shape.keep_line) {
            self.pair(out, b"event.original", obj);
        }
        out.push(b'}');
        Ok(())
    }
}

/// Where the payload of the value at `c` starts (after its header).
pub(super) fn value_start(c: &Cursor<'_>) -> Result<usize, msgpack::Error> {
    Ok(c.pos() + c.peek()?.head_len)
}

/// `bytes` as lowercase hex, in `buf`.
pub(super) fn hex_str<'a>(bytes: &[u8], buf: &'a mut [u8; 32]) -> &'a [u8] {
    let out = &mut buf[..bytes.len() * 2];
    hex::encode_to_slice(bytes, out).expect("buffer sized for 16 bytes");
    out
}

/// The severity's OpenTelemetry short name without its step digit (`WARN2` → `WARN`): a
/// level name that Kibana and people recognise.
pub(super) fn level_name(severity: u8) -> &'static str {
    crate::pipeline::severity::Severity(severity)
        .text()
        .trim_end_matches(|c: char| c.is_ascii_digit())
}

/// A pod label or annotation (`k8s.pod.label.<key>`) under ECS's `kubernetes.labels.` or
/// `kubernetes.annotations.`, into `out`: true when `key` is one. Dots and slashes in the key
/// become `_`, as Beats write them: `app` and `app.kubernetes.io/name` would otherwise be a
/// value and an object at one path, which the mapping refuses.
pub(super) fn ecs_labels(key: &[u8], out: &mut Vec<u8>) -> bool {
    let (to, rest): (&[u8], &[u8]) = if let Some(r) = key.strip_prefix(b"k8s.pod.label.") {
        (b"kubernetes.labels.", r)
    } else if let Some(r) = key.strip_prefix(b"k8s.pod.annotation.") {
        (b"kubernetes.annotations.", r)
    } else {
        return false;
    };
    out.clear();
    out.extend_from_slice(to);
    out.extend(
        rest.iter()
            .map(|b| if matches!(b, b'.' | b'/') { b'_' } else { *b }),
    );
    true
}

/// The ECS name of an OpenTelemetry resource attribute, when ECS has one.
pub(super) fn ecs_name(key: &[u8]) -> &[u8] {
    match key {
        b"k8s.node.name" => b"kubernetes.node.name",
        b"k8s.namespace.name" => b"kubernetes.namespace",
        b"k8s.pod.name" => b"kubernetes.pod.name",
        b"k8s.pod.uid" => b"kubernetes.pod.uid",
        b"k8s.container.name" => b"kubernetes.container.name",
        b"k8s.deployment.name" => b"kubernetes.deployment.name",
        b"k8s.statefulset.name" => b"kubernetes.statefulset.name",
        b"k8s.daemonset.name" => b"kubernetes.daemonset.name",
        b"k8s.replicaset.name" => b"kubernetes.replicaset.name",
        b"k8s.job.name" => b"kubernetes.job.name",
        b"k8s.cronjob.name" => b"kubernetes.cronjob.name",
        b"k8s.container.restart_count" => b"kubernetes.container.restart_count",
        b"k8s.cluster.name" => b"orchestrator.cluster.name",
        b"deployment.environment" | b"deployment.environment.name" => b"service.environment",
        k => k,
    }
}

/// `key` (a JSON string literal, quotes included) decoded into `out`. Rare: only keys with
/// escapes need it.
pub(super) fn unescape(key: &[u8], out: &mut Vec<u8>) -> bool {
    use simd_json::prelude::*;
    let mut copy = key.to_vec();
    out.clear();
    match simd_json::to_borrowed_value(&mut copy) {
        Ok(v) => match v.as_str() {
            Some(s) => {
                out.extend_from_slice(s.as_bytes());
                true
            }
            None => false,
        },
        Err(_) => false,
    }
}

/// The `_id` for `id = "hash"`: SHA-256 of tag, time and record, first 16 bytes, base64url
/// (22 characters). The same event always gets the same ID, whichever request carries it.
pub(super) fn doc_id(r: Ref<'_>) -> [u8; 22] {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let tag = r.batch.tag(r.event);
    let mut h = Sha256::new();
    h.update((tag.len() as u64).to_le_bytes());
    h.update(tag);
    h.update(r.event.time.secs.to_le_bytes());
    h.update(r.event.time.nanos.to_le_bytes());
    h.update(&r.event.record);
    let digest = h.finalize();
    let mut id = [0u8; 22];
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode_slice(&digest[..16], &mut id)
        .expect("16 bytes are 22 base64 characters");
    id
}
