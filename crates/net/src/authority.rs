//! Accepting the `:authority` etcd's Go clients send.
//!
//! etcd 3.4's client, talking to one endpoint (`etcdctl --endpoints=http://…` for
//! `endpoint status`, `defrag`, `move-leader`, `endpoint hashkv`), sends the whole URL
//! as `:authority`: `http://127.0.0.1:2379`. grpc-go's server takes it; h2 (under
//! tonic) resets the stream with `PROTOCOL_ERROR`, as the value is not an authority.
//!
//! [`AuthorityFix`] sits between a client connection and h2 and reads the
//! connection's first header block. If its `:authority` carries a scheme, every header
//! block of the connection is decoded and encoded again (HPACK, with `loona-hpack`),
//! with the scheme dropped from `:authority`. A Go client uses one authority for all
//! the streams of a connection, so a connection whose first block is fine is passed
//! through untouched from then on, at no cost.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What every HTTP/2 connection starts with.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const PREFACE_LEN: usize = PREFACE.len();
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// HTTP/2's initial maximum frame size, which h2 keeps for what it receives.
const MAX_FRAME: usize = 16_384;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Before the first header block: frames are read whole.
    Deciding,
    /// Every header block is rewritten.
    Rewriting,
    /// Bytes go through untouched.
    Passing,
}

/// A client connection whose header blocks get a plain `:authority`.
pub struct AuthorityFix<S> {
    inner: S,
    mode: Mode,
    /// Bytes read and not yet parsed.
    input: Vec<u8>,
    /// Bytes ready for h2.
    output: Vec<u8>,
    /// The frames of a header block that has not ended yet.
    pending: Vec<u8>,
    /// The header block fragments collected so far, and the first frame's stream,
    /// flags and priority fields.
    block: Vec<u8>,
    first: Option<(u32, u8, Vec<u8>)>,
    preface_seen: bool,
    /// The client's and h2's HPACK state, while header blocks are read; dropped once
    /// the connection passes through.
    hpack: Option<Box<(loona_hpack::Decoder<'static>, loona_hpack::Encoder<'static>)>>,
}

impl<S> AuthorityFix<S> {
    /// Wraps a connection just accepted, before h2 reads anything from it.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            mode: Mode::Deciding,
            input: Vec::new(),
            output: Vec::new(),
            pending: Vec::new(),
            block: Vec::new(),
            first: None,
            preface_seen: false,
            hpack: Some(Box::new((loona_hpack::Decoder::new(), loona_hpack::Encoder::new()))),
        }
    }

    /// From now on bytes go through untouched: what only the parsing needed goes.
    fn pass_through(&mut self) {
        self.mode = Mode::Passing;
        self.hpack = None;
        self.pending = Vec::new();
        self.block = Vec::new();
    }

    /// Parses what `input` holds, moving what is ready to `output`.
    fn process(&mut self) -> io::Result<()> {
        if !self.preface_seen {
            let seen = self.input.len().min(PREFACE_LEN);
            if self.input[..seen] != PREFACE[..seen] {
                // Not HTTP/2 (an HTTP/1.1 request for the JSON gateway): nothing to fix.
                self.output.append(&mut self.input);
                self.pass_through();
                return Ok(());
            }
            if seen < PREFACE_LEN {
                return Ok(());
            }
            self.output.extend(self.input.drain(..PREFACE_LEN));
            self.preface_seen = true;
        }
        while self.mode != Mode::Passing && self.input.len() >= FRAME_HEADER {
            let length = usize::from(self.input[0]) << 16
                | usize::from(self.input[1]) << 8
                | usize::from(self.input[2]);
            if self.input.len() < FRAME_HEADER + length {
                return Ok(());
            }
            let frame: Vec<u8> = self.input.drain(..FRAME_HEADER + length).collect();
            let (kind, flags) = (frame[3], frame[4]);
            let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
            let payload = &frame[FRAME_HEADER..];
            match kind {
                HEADERS => {
                    let mut at = 0;
                    let mut end = payload.len();
                    if flags & PADDED != 0 {
                        let pad = usize::from(*payload.first().ok_or_else(malformed)?);
                        at = 1;
                        end = end.checked_sub(pad).filter(|end| *end >= at).ok_or_else(malformed)?;
                    }
                    let mut priority = Vec::new();
                    if flags & PRIORITY != 0 {
                        priority = payload.get(at..at + 5).ok_or_else(malformed)?.to_vec();
                        at += 5;
                    }
                    let fragment = payload.get(at..end).ok_or_else(malformed)?;
                    self.block = fragment.to_vec();
                    self.first = Some((stream, flags, priority));
                    self.pending = frame.clone();
                }
                CONTINUATION if self.first.is_some() => {
                    self.block.extend_from_slice(payload);
                    self.pending.extend_from_slice(&frame);
                }
                _ => {
                    self.output.extend_from_slice(&frame);
                    continue;
                }
            }
            if flags & END_HEADERS != 0 {
                self.end_block()?;
            }
        }
        if self.mode == Mode::Passing {
            self.output.append(&mut self.input);
        }
        Ok(())
    }

    /// A header block is complete: decide, or rewrite it.
    fn end_block(&mut self) -> io::Result<()> {
        let (stream, flags, priority) = self.first.take().ok_or_else(malformed)?;
        let mut headers = Vec::new();
        let mut needs_fix = false;
        let (decoder, _) = &mut **self.hpack.as_mut().ok_or_else(malformed)?;
        decoder
            .decode_with_cb(&self.block, |name, value| {
                let value = if &*name == b":authority" {
                    match fixed_authority(&value) {
                        Some(fixed) => {
                            needs_fix = true;
                            fixed
                        }
                        None => value.into_owned(),
                    }
                } else {
                    value.into_owned()
                };
                headers.push((name.into_owned(), value));
            })
            .map_err(|_| malformed())?;
        if self.mode == Mode::Deciding && !needs_fix {
            self.output.append(&mut self.pending);
            self.pass_through();
            return Ok(());
        }
        self.mode = Mode::Rewriting;
        self.pending.clear();
        let mut block = priority;
        let (_, encoder) = &mut **self.hpack.as_mut().ok_or_else(malformed)?;
        encoder.encode_into(headers.iter().map(|(n, v)| (&n[..], &v[..])), &mut block)?;
        let mut flags = flags & !(PADDED | END_HEADERS);
        let mut rest = &block[..];
        let mut kind = HEADERS;
        loop {
            let take = rest.len().min(MAX_FRAME);
            let (chunk, after) = rest.split_at(take);
            if after.is_empty() {
                flags |= END_HEADERS;
            }
            self.output.extend_from_slice(&(chunk.len() as u32).to_be_bytes()[1..]);
            self.output.push(kind);
            self.output.push(flags);
            self.output.extend_from_slice(&stream.to_be_bytes());
            self.output.extend_from_slice(chunk);
            rest = after;
            if rest.is_empty() {
                break;
            }
            // The rest goes in CONTINUATION frames, which carry no flags of their own
            // but END_HEADERS; the priority fields stay in the first.
            kind = CONTINUATION;
            flags = 0;
        }
        Ok(())
    }
}

fn malformed() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "malformed HTTP/2 header frame")
}

/// `:authority` without a scheme (`http://host:port/` → `host:port`); `None` when
/// there is none to drop.
fn fixed_authority(value: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(value).ok()?;
    let (_, rest) = text.rsplit_once("://")?;
    Some(rest.trim_end_matches('/').as_bytes().to_vec())
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output[..n]);
                this.output.drain(..n);
                return Poll::Ready(Ok(()));
            }
            if this.mode == Mode::Passing && this.input.is_empty() {
                if this.output.capacity() > 0 || this.input.capacity() > 0 {
                    // Idle connections are many: keep no buffer for them.
                    this.output = Vec::new();
                    this.input = Vec::new();
                }
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                    // End of stream: whatever is left goes as it is.
                    this.output.append(&mut this.pending);
                    this.output.append(&mut this.input);
                    if this.output.is_empty() {
                        return Poll::Ready(Ok(()));
                    }
                }
                Poll::Ready(Ok(())) => {
                    this.input.extend_from_slice(read.filled());
                    this.process()?;
                }
                other => return other,
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for AuthorityFix<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt as _;

    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut bytes = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        bytes.extend_from_slice(&[kind, flags]);
        bytes.extend_from_slice(&stream.to_be_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    /// The header blocks of what `AuthorityFix` hands on, decoded.
    async fn through(input: Vec<u8>) -> (Vec<u8>, Vec<Vec<(String, String)>>) {
        let mut fixed = AuthorityFix::new(&input[..]);
        let mut out = Vec::new();
        fixed.read_to_end(&mut out).await.unwrap();
        let mut decoder = loona_hpack::Decoder::new();
        let mut blocks = Vec::new();
        let mut at = PREFACE.len();
        let mut block = Vec::new();
        while at < out.len() {
            let length =
                usize::from(out[at]) << 16 | usize::from(out[at + 1]) << 8 | usize::from(out[at + 2]);
            let (kind, flags) = (out[at + 3], out[at + 4]);
            let payload = &out[at + 9..at + 9 + length];
            if kind == HEADERS || kind == CONTINUATION {
                let skip = if kind == HEADERS && flags & PRIORITY != 0 { 5 } else { 0 };
                block.extend_from_slice(&payload[skip..]);
                if flags & END_HEADERS != 0 {
                    let headers = decoder.decode(&block).unwrap();
                    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
                    blocks.push(headers.into_iter().map(|(n, v)| (text(n), text(v))).collect());
                    block.clear();
                }
            }
            at += 9 + length;
        }
        (out, blocks)
    }

    fn request(encoder: &mut loona_hpack::Encoder<'_>, authority: &str, path: &str) -> Vec<u8> {
        let headers: [(&[u8], &[u8]); 4] = [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", path.as_bytes()),
            (b":authority", authority.as_bytes()),
        ];
        encoder.encode(headers)
    }

    #[tokio::test]
    async fn a_scheme_in_the_authority_is_dropped_from_every_block_of_the_connection() {
        let mut encoder = loona_hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[]));
        let first = request(&mut encoder, "http://127.0.0.1:2379", "/etcdserverpb.Maintenance/Status");
        // The first block split over HEADERS (padded, with priority) and CONTINUATION.
        let (head, tail) = first.split_at(3);
        let mut padded = vec![2u8];
        padded.extend_from_slice(&[0, 0, 0, 0, 16]);
        padded.extend_from_slice(head);
        padded.extend_from_slice(&[0, 0]);
        input.extend(frame(HEADERS, PADDED | PRIORITY, 1, &padded));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, tail));
        input.extend(frame(0x0, 0x1, 1, b"data"));
        // The second block refers to the client's table; the rewrite keeps up.
        let second = request(&mut encoder, "http://127.0.0.1:2379", "/etcdserverpb.KV/Range");
        input.extend(frame(HEADERS, END_HEADERS | 0x1, 3, &second));
        let (out, blocks) = through(input).await;
        assert_eq!(blocks.len(), 2);
        for (block, path) in blocks.iter().zip(["/etcdserverpb.Maintenance/Status", "/etcdserverpb.KV/Range"])
        {
            assert!(block.contains(&(":authority".into(), "127.0.0.1:2379".into())), "{block:?}");
            assert!(block.contains(&(":path".into(), path.into())), "{block:?}");
        }
        assert!(out.windows(4).any(|w| w == b"data"), "other frames pass");
    }

    #[tokio::test]
    async fn http_1_passes_untouched() {
        let request = b"POST /v3/kv/range HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}".to_vec();
        let mut fixed = AuthorityFix::new(&request[..]);
        let mut out = Vec::new();
        fixed.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, request);
    }

    #[tokio::test]
    async fn a_connection_with_a_plain_authority_passes_untouched() {
        let mut encoder = loona_hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[]));
        input.extend(frame(HEADERS, END_HEADERS, 1, &request(&mut encoder, "127.0.0.1:2379", "/a")));
        input.extend(frame(HEADERS, END_HEADERS, 3, &request(&mut encoder, "http://x:1", "/b")));
        let (out, blocks) = through(input.clone()).await;
        assert_eq!(out, input);
        assert_eq!(blocks[1][3], (":authority".into(), "http://x:1".into()));
    }
}
