//! Reading Server-Sent Events (`text/event-stream`): the client's side of the
//! coordinator's streams.
//!
//! A push parser: feed it the body's chunks as they come, take the events they
//! completed. It follows the WHATWG rules that matter for a stream of states:
//! lines end in LF, CRLF or CR (a CRLF split across two chunks counts once); a line
//! starting with `:` is a comment (our keep-alives); `data` lines join with `\n`;
//! `id` sets the last event id, which every later event carries until another
//! `id`; a blank line dispatches the event, and one without `data` is not
//! dispatched; other fields (`event`, `retry`) are ignored.
//!
//! **Bounded.** One event (its lines together) or one unfinished line holds at most
//! `max` bytes; past that, [`Parser::feed`] fails and the stream is to be dropped.
//! The SSE crates found either buffer without a bound or come inside much larger
//! frameworks, hence these few lines.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `id` field, if the event had one.
    pub id: Option<String>,
    /// The `data` lines, joined with `\n`.
    pub data: Vec<u8>,
}

/// An event (or a line) larger than the parser's bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an event larger than {max} bytes")]
pub struct TooLarge {
    /// The bound.
    pub max: usize,
}

/// The parser's state between chunks.
#[derive(Debug)]
pub struct Parser {
    max: usize,
    /// The line read so far.
    line: Vec<u8>,
    /// The last chunk ended in CR: an LF first in the next one ends nothing.
    after_cr: bool,
    /// The last event id, and the event read so far.
    id: Option<String>,
    data: Vec<u8>,
    has_data: bool,
}

impl Parser {
    /// A parser holding at most `max` bytes of one event.
    pub fn new(max: usize) -> Self {
        Parser {
            max,
            line: Vec::new(),
            after_cr: false,
            id: None,
            data: Vec::new(),
            has_data: false,
        }
    }

    /// Reads `chunk`, pushing the events it completed onto `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Event>) -> Result<(), TooLarge> {
        let mut rest = chunk;
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if let Some(tail) = rest.strip_prefix(b"\n") {
                rest = tail;
            }
        }
        while let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.push(&rest[..end])?;
            let line = std::mem::take(&mut self.line);
            self.take_line(&line, out);
            self.line = line;
            self.line.clear();
            let cr = rest[end] == b'\r';
            rest = &rest[end + 1..];
            if cr {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
        }
        self.push(rest)
    }

    fn push(&mut self, bytes: &[u8]) -> Result<(), TooLarge> {
        if self.data.len() + self.line.len() + bytes.len() > self.max {
            self.line.clear();
            self.data.clear();
            return Err(TooLarge { max: self.max });
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn take_line(&mut self, line: &[u8], out: &mut Vec<Event>) {
        if line.is_empty() {
            if self.has_data {
                out.push(Event {
                    id: self.id.clone(),
                    data: std::mem::take(&mut self.data),
                });
            }
            self.data.clear();
            self.has_data = false;
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"id" if !value.contains(&0) => {
                self.id = Some(String::from_utf8_lossy(value).into_owned());
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(chunks: &[&[u8]]) -> Vec<Event> {
        let mut parser = Parser::new(1024);
        let mut out = Vec::new();
        for chunk in chunks {
            parser.feed(chunk, &mut out).unwrap();
        }
        out
    }

    fn event(id: Option<&str>, data: &str) -> Event {
        Event {
            id: id.map(str::to_owned),
            data: data.as_bytes().to_vec(),
        }
    }

    #[test]
    fn events_comments_and_line_ends() {
        let events = parse(&[b": keep-alive\n\nid: 7\ndata: [1]\n\n"]);
        assert_eq!(events, [event(Some("7"), "[1]")]);
        // CRLF split across chunks, CR alone, several data lines, no space.
        let events = parse(&[b"id:8\r", b"\ndata: a\rdata:b\r\n\r\n", b"data: c\n"]);
        assert_eq!(events, [event(Some("8"), "a\nb")]);
        // An empty chunk between the CR and the LF of a CRLF.
        let events = parse(&[b"data: a\r", b"", b"\nid: 1\ndata: b\n\n"]);
        assert_eq!(events, [event(Some("1"), "a\nb")]);
        // An event without data is not dispatched; other fields are ignored; the
        // last id carries over.
        let events = parse(&[b"id: 9\nevent: x\nretry: 5\n\ndata\n\n"]);
        assert_eq!(events, [event(Some("9"), "")]);
    }

    #[test]
    fn an_event_past_the_bound_fails() {
        let mut parser = Parser::new(16);
        let mut out = Vec::new();
        assert!(parser.feed(b"data: 0123456789\n", &mut out).is_ok());
        assert_eq!(
            parser.feed(b"data: 0123456789\n", &mut out),
            Err(TooLarge { max: 16 })
        );
        // A line that never ends, likewise.
        let mut parser = Parser::new(16);
        assert!(parser.feed(&[b'x'; 17], &mut out).is_err());
        assert!(out.is_empty());
    }

    proptest! {
        /// However the bytes are cut into chunks, the events are the same.
        #[test]
        fn chunking_changes_nothing(
            datas in proptest::collection::vec("[a-z\\[\\]0-9,]{0,20}", 0..6),
            cuts in proptest::collection::vec(0usize..200, 0..8),
            crlf in any::<bool>(),
        ) {
            let nl = if crlf { "\r\n" } else { "\n" };
            let text: String = datas
                .iter()
                .enumerate()
                .map(|(i, d)| format!(": c{nl}id: {i}{nl}data: {d}{nl}{nl}"))
                .collect();
            let bytes = text.as_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut start = 0;
            for cut in cuts {
                chunks.push(&bytes[start..cut]);
                start = cut;
            }
            chunks.push(&bytes[start..]);
            let expected: Vec<Event> = datas
                .iter()
                .enumerate()
                .map(|(i, d)| event(Some(&i.to_string()), d))
                .collect();
            prop_assert_eq!(parse(&chunks), expected);
        }
    }
}
