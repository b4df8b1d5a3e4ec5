//! A small TCP rendezvous for one process per GPU, on one node or several: global rank 0
//! listens, hands every other rank the NCCL unique id(s), and afterwards serves a CPU
//! `gather` (per-rank results or error texts reach rank 0) and a CPU `barrier`. Every wait
//! has a deadline, so a rank that never shows up is an error naming it, never a hang.
//!
//! Wire format (little endian). A joining rank first sends a hello: the 8 bytes
//! `fwdbrdzv`, then u32 protocol version, u32 world size, u32 rank. From then on both sides
//! exchange frames: u8 tag, u32 sequence number, u32 body length, body. Rank 0 answers the
//! hello, once every rank has joined, with an `IDS` frame (body: u32 count, then per id a u32
//! length and the bytes) or an `ERROR` frame (body: the reason, UTF-8). Collectives after
//! that carry the same sequence number on every rank, so ranks that run different steps are
//! caught instead of pairing unrelated messages.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use thiserror::Error;

/// Size of an `ncclUniqueId`.
pub const NCCL_ID_BYTES: usize = 128;
pub const MAGIC: [u8; 8] = *b"fwdbrdzv";
pub const PROTOCOL_VERSION: u32 = 1;
pub const TAG_IDS: u8 = 1;
pub const TAG_ERROR: u8 = 2;
const TAG_GATHER: u8 = 3;
const TAG_BARRIER: u8 = 4;
const TAG_RELEASE: u8 = 5;
/// Larger frames are garbage or a misuse: gather is for timings and error texts.
const MAX_FRAME_BYTES: usize = 64 << 20;
const CONNECT_RETRY: Duration = Duration::from_millis(50);
const ACCEPT_POLL: Duration = Duration::from_millis(5);

/// Ranks in an error message: "1, 3" (or "none").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankList(pub Vec<usize>);

impl fmt::Display for RankList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        let names: Vec<String> = self.0.iter().map(|r| r.to_string()).collect();
        f.write_str(&names.join(", "))
    }
}

#[derive(Debug, Error)]
pub enum RendezvousError {
    #[error("rank 0 could not listen on {addr} ({source}); pick a free port (another run may hold this one) and an address of this host")]
    Bind { addr: String, source: io::Error },
    #[error("rank {rank} could not reach rank 0 at {addr} within {waited_s:.1} s ({source}); start rank 0, and check that the address and port name it and that no firewall blocks the port")]
    Unreachable { rank: usize, addr: String, waited_s: f64, source: io::Error },
    #[error("rank 0 at {addr} waited {waited_s:.1} s but rank(s) {missing} of {world} never joined; start them with this address and world size, or raise the rendezvous timeout")]
    MissingRanks { addr: String, world: usize, missing: RankList, waited_s: f64 },
    #[error("rank {rank} (rendezvous at {addr}) holds a {len}-byte NCCL id, but NCCL ids are {NCCL_ID_BYTES} bytes; run the same fwdbench build on every rank")]
    WrongIdLength { rank: usize, addr: String, len: usize },
    #[error("rank {rank} was started for a world of {theirs} ranks but rank 0 at {addr} for {ours}; give every rank the same world size (the same deploy and node count)")]
    WorldMismatch { rank: usize, addr: String, theirs: usize, ours: usize },
    #[error("rank {rank} joined rank 0 at {addr} twice (from {first} and {second}); give every process its own rank (on several nodes, check that no two use the same node rank)")]
    DuplicateRank { rank: usize, addr: String, first: SocketAddr, second: SocketAddr },
    #[error("rank {rank} is not in a world of {world} ranks (rendezvous at {addr}); ranks run from 0 to world size - 1, and the world has at least one")]
    BadRank { rank: usize, world: usize, addr: String },
    #[error("the peer {peer} of the rendezvous at {addr} {what}; make sure only this run's ranks use the port and that they all run the same fwdbench build")]
    Protocol { peer: String, addr: String, what: String },
    #[error("rank {rank}: rank 0 at {addr} gave up: {reason}")]
    Aborted { rank: usize, addr: String, reason: String },
    #[error("rank 0 at {addr} gave up on {op} after {waited_s:.1} s: rank(s) {missing} did not arrive and rank(s) {lost} disconnected; read those ranks' logs (a crashed rank disconnects, a slow one may need a longer timeout)")]
    PeersFailed { addr: String, op: &'static str, waited_s: f64, missing: RankList, lost: RankList },
    #[error("rank {rank} waited {waited_s:.1} s for rank 0 at {addr} in {op}; rank 0 or another rank is stuck or slower than the timeout: read rank 0's log or raise the timeout")]
    Timeout { rank: usize, addr: String, op: &'static str, waited_s: f64 },
    #[error("rank {rank} lost its connection to rank 0 at {addr} during {op} ({source}); rank 0 probably failed: read its log")]
    Lost { rank: usize, addr: String, op: &'static str, source: io::Error },
}

type Result<T> = std::result::Result<T, RendezvousError>;

/// Rank 0's listening socket, bound before the other ranks start (tests bind port 0 and
/// pass the chosen port on).
pub struct Host {
    listener: TcpListener,
    addr: String,
}

/// A joined rendezvous: rank 0 holds one connection per other rank, the others one to rank 0.
pub struct Rendezvous {
    rank: usize,
    world: usize,
    addr: String,
    seq: u32,
    link: Link,
}

enum Link {
    Host(Vec<Peer>),
    Member(TcpStream),
    /// Rank 0 after a failed collective: the connections are closed, this is why.
    Broken(String),
}

struct Peer {
    rank: usize,
    from: SocketAddr,
    stream: TcpStream,
}

struct Frame {
    tag: u8,
    seq: u32,
    body: Vec<u8>,
}

impl Host {
    /// Listens on `addr` (`host:port`; port 0 picks a free one).
    pub fn bind(addr: &str) -> Result<Host> {
        let listener = TcpListener::bind(addr).map_err(|source| RendezvousError::Bind { addr: addr.into(), source })?;
        let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| addr.to_string());
        Ok(Host { listener, addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Waits up to `timeout` for ranks 1..world to join, then hands each of them `ids`.
    /// If a rank is missing or misconfigured, the ranks that did join are told why.
    pub fn serve(self, world: usize, ids: &[Vec<u8>], timeout: Duration) -> Result<Rendezvous> {
        let addr = self.addr.clone();
        if world == 0 {
            return Err(RendezvousError::BadRank { rank: 0, world, addr });
        }
        if let Some(id) = ids.iter().find(|id| id.len() != NCCL_ID_BYTES) {
            return Err(RendezvousError::WrongIdLength { rank: 0, addr, len: id.len() });
        }
        let start = Instant::now();
        let deadline = start + timeout;
        let mut peers: Vec<Option<Peer>> = (0..world).map(|_| None).collect();
        let io_err = |source: io::Error| RendezvousError::Bind { addr: addr.clone(), source };
        self.listener.set_nonblocking(true).map_err(io_err)?;
        while peers.iter().skip(1).any(Option::is_none) {
            let (stream, from) = match self.listener.accept() {
                Ok(conn) => conn,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {
                    if Instant::now() >= deadline {
                        let missing = (1..world).filter(|&r| peers[r].is_none()).collect();
                        let waited_s = start.elapsed().as_secs_f64();
                        let e = RendezvousError::MissingRanks {
                            addr: addr.clone(),
                            world,
                            missing: RankList(missing),
                            waited_s,
                        };
                        return Err(abort(peers.into_iter().flatten().map(|p| p.stream), e));
                    }
                    std::thread::sleep(ACCEPT_POLL);
                    continue;
                }
                Err(source) => return Err(abort(peers.into_iter().flatten().map(|p| p.stream), io_err(source))),
            };
            match admit(stream, from, world, &addr, &peers, deadline) {
                Ok(peer) => {
                    let rank = peer.rank;
                    peers[rank] = Some(peer);
                }
                Err((stream, e)) => return Err(abort(peers.into_iter().flatten().map(|p| p.stream).chain(stream), e)),
            }
        }
        let peers: Vec<Peer> = peers.into_iter().flatten().collect();
        let body = encode_ids(ids);
        for p in &peers {
            write_frame(&p.stream, TAG_IDS, 0, &body, deadline).map_err(|source| RendezvousError::Protocol {
                peer: format!("rank {} ({})", p.rank, p.from),
                addr: addr.clone(),
                what: format!("could not be sent the NCCL ids ({source})"),
            })?;
        }
        Ok(Rendezvous { rank: 0, world, addr, seq: 0, link: Link::Host(peers) })
    }
}

/// Reads and checks one joining rank's hello. On failure, hands back the stream (if the
/// peer should hear why) with the error.
fn admit(
    stream: TcpStream,
    from: SocketAddr,
    world: usize,
    addr: &str,
    peers: &[Option<Peer>],
    deadline: Instant,
) -> std::result::Result<Peer, (Option<TcpStream>, RendezvousError)> {
    let protocol = |what: String| RendezvousError::Protocol { peer: from.to_string(), addr: addr.into(), what };
    let mut hello = [0u8; 20];
    let read = stream.set_nonblocking(false).and_then(|_| read_full(&stream, &mut hello, deadline));
    if let Err(e) = read {
        return Err((None, protocol(format!("connected but sent no complete greeting ({e})"))));
    }
    if hello[..8] != MAGIC {
        return Err((None, protocol("did not greet with the fwdbench rendezvous magic".into())));
    }
    let word = |i: usize| u32::from_le_bytes(hello[i..i + 4].try_into().expect("4 bytes")) as usize;
    let (version, theirs, rank) = (word(8), word(12), word(16));
    let err = if version != PROTOCOL_VERSION as usize {
        protocol(format!("speaks rendezvous protocol {version}, this rank 0 speaks {PROTOCOL_VERSION}"))
    } else if theirs != world {
        RendezvousError::WorldMismatch { rank, addr: addr.into(), theirs, ours: world }
    } else if rank == 0 || rank >= world {
        RendezvousError::BadRank { rank, world, addr: addr.into() }
    } else if let Some(first) = &peers[rank] {
        RendezvousError::DuplicateRank { rank, addr: addr.into(), first: first.from, second: from }
    } else {
        // Small frames: send them now rather than wait for more bytes.
        let _ = stream.set_nodelay(true);
        return Ok(Peer { rank, from, stream });
    };
    Err((Some(stream), err))
}

/// Tells every given peer why rank 0 gives up (best effort: they may be gone), then returns
/// the error.
fn abort(streams: impl IntoIterator<Item = TcpStream>, e: RendezvousError) -> RendezvousError {
    let reason = e.to_string();
    let deadline = Instant::now() + Duration::from_millis(500);
    for s in streams {
        let _ = write_frame(&s, TAG_ERROR, 0, reason.as_bytes(), deadline);
    }
    e
}

/// Joins the rendezvous of rank 0 at `addr` as `rank` of `world`, retrying the connection
/// until `timeout`, and returns it with the ids rank 0 served.
pub fn join(addr: &str, world: usize, rank: usize, timeout: Duration) -> Result<(Rendezvous, Vec<Vec<u8>>)> {
    if rank == 0 || rank >= world {
        return Err(RendezvousError::BadRank { rank, world, addr: addr.into() });
    }
    let start = Instant::now();
    let deadline = start + timeout;
    let stream = connect(addr, deadline).map_err(|source| RendezvousError::Unreachable {
        rank,
        addr: addr.into(),
        waited_s: start.elapsed().as_secs_f64(),
        source,
    })?;
    let _ = stream.set_nodelay(true);
    let rdzv = Rendezvous { rank, world, addr: addr.into(), seq: 0, link: Link::Member(stream) };
    let mut hello = MAGIC.to_vec();
    for v in [PROTOCOL_VERSION, world as u32, rank as u32] {
        hello.extend_from_slice(&v.to_le_bytes());
    }
    write_deadline(rdzv.member_stream(), &hello, deadline).map_err(|source| rdzv.lost("join", source))?;
    let frame = rdzv.member_read("join", 0, TAG_IDS, start, deadline)?;
    let ids = decode_ids(&frame.body).ok_or_else(|| RendezvousError::Protocol {
        peer: format!("rank 0 ({addr})"),
        addr: addr.into(),
        what: "sent a malformed list of NCCL ids".into(),
    })?;
    if let Some(id) = ids.iter().find(|id| id.len() != NCCL_ID_BYTES) {
        return Err(RendezvousError::WrongIdLength { rank, addr: addr.into(), len: id.len() });
    }
    Ok((rdzv, ids))
}

fn connect(addr: &str, deadline: Instant) -> io::Result<TcpStream> {
    loop {
        let attempt = addr.to_socket_addrs().and_then(|mut addrs| {
            let target = addrs.next().ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?;
            let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
            TcpStream::connect_timeout(&target, left.min(Duration::from_secs(1)))
        });
        match attempt {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() + CONNECT_RETRY >= deadline => return Err(e),
            // Rank 0 may not listen yet, or its name not resolve yet: try again.
            Err(_) => std::thread::sleep(CONNECT_RETRY),
        }
    }
}

impl Rendezvous {
    pub fn rank(&self) -> usize {
        self.rank
    }
    pub fn world(&self) -> usize {
        self.world
    }
    /// Rank 0's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `payload` to rank 0. Rank 0 gets every rank's payload in rank order (its own
    /// first); the others get `None`. Rank 0 waits at most `timeout` for them.
    pub fn gather(&mut self, payload: &[u8], timeout: Duration) -> Result<Option<Vec<Vec<u8>>>> {
        self.seq += 1;
        let deadline = Instant::now() + timeout;
        if let Link::Member(stream) = &self.link {
            let sent = write_frame(stream, TAG_GATHER, self.seq, payload, deadline);
            return sent.map(|_| None).map_err(|source| self.lost("gather", source));
        }
        let frames = self.host_collect("gather", TAG_GATHER, deadline)?;
        Ok(Some(std::iter::once(payload.to_vec()).chain(frames.into_iter().map(|f| f.body)).collect()))
    }

    /// Like [`gather`](Self::gather), but every rank gets every payload (rank order): how
    /// ranks agree on a decision (e.g. "every rank could prepare this shape") before
    /// entering NCCL collectives that would hang if one of them stayed out.
    pub fn all_gather(&mut self, payload: &[u8], timeout: Duration) -> Result<Vec<Vec<u8>>> {
        self.seq += 1;
        let start = Instant::now();
        let deadline = start + timeout;
        let seq = self.seq;
        if let Link::Member(stream) = &self.link {
            write_frame(stream, TAG_GATHER, seq, payload, deadline)
                .map_err(|source| self.lost("all_gather", source))?;
            let frame = self.member_read("all_gather", seq, TAG_RELEASE, start, deadline)?;
            return decode_ids(&frame.body).ok_or_else(|| RendezvousError::Protocol {
                peer: format!("rank 0 ({})", self.addr),
                addr: self.addr.clone(),
                what: "answered all_gather with a truncated list".into(),
            });
        }
        let frames = self.host_collect("all_gather", TAG_GATHER, deadline)?;
        let all: Vec<Vec<u8>> = std::iter::once(payload.to_vec()).chain(frames.into_iter().map(|f| f.body)).collect();
        if let Link::Host(peers) = &self.link {
            let body = encode_ids(&all);
            for p in peers {
                // A peer gone by now fails at its next collective; rank 0 goes on.
                let _ = write_frame(&p.stream, TAG_RELEASE, seq, &body, deadline);
            }
        }
        Ok(all)
    }

    /// Returns once every rank has entered the barrier, or fails after `timeout`.
    pub fn barrier(&mut self, timeout: Duration) -> Result<()> {
        self.seq += 1;
        let start = Instant::now();
        let deadline = start + timeout;
        let seq = self.seq;
        if let Link::Member(stream) = &self.link {
            write_frame(stream, TAG_BARRIER, seq, &[], deadline).map_err(|source| self.lost("barrier", source))?;
            return self.member_read("barrier", seq, TAG_RELEASE, start, deadline).map(|_| ());
        }
        self.host_collect("barrier", TAG_BARRIER, deadline)?;
        if let Link::Host(peers) = &self.link {
            for p in peers {
                // A peer gone by now fails at its next collective; rank 0 goes on.
                let _ = write_frame(&p.stream, TAG_RELEASE, seq, &[], deadline);
            }
        }
        Ok(())
    }

    fn lost(&self, op: &'static str, source: io::Error) -> RendezvousError {
        RendezvousError::Lost { rank: self.rank, addr: self.addr.clone(), op, source }
    }

    fn member_stream(&self) -> &TcpStream {
        match &self.link {
            Link::Member(stream) => stream,
            Link::Host(_) | Link::Broken(_) => unreachable!("only ranks other than 0 talk to rank 0"),
        }
    }

    /// A member's wait for rank 0's answer `want` (or its `ERROR`).
    fn member_read(&self, op: &'static str, seq: u32, want: u8, start: Instant, deadline: Instant) -> Result<Frame> {
        let frame = match read_frame(self.member_stream(), deadline) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                let waited_s = start.elapsed().as_secs_f64();
                return Err(RendezvousError::Timeout { rank: self.rank, addr: self.addr.clone(), op, waited_s });
            }
            Err(source) => return Err(self.lost(op, source)),
        };
        match frame.tag {
            TAG_ERROR => Err(RendezvousError::Aborted {
                rank: self.rank,
                addr: self.addr.clone(),
                reason: String::from_utf8_lossy(&frame.body).into_owned(),
            }),
            tag if tag == want && frame.seq == seq => Ok(frame),
            tag => Err(RendezvousError::Protocol {
                peer: format!("rank 0 ({})", self.addr),
                addr: self.addr.clone(),
                what: format!("answered {op} #{seq} with message {tag} #{}: the ranks ran different steps", frame.seq),
            }),
        }
    }

    /// Rank 0 reads one `tag` frame from every other rank, all in parallel so that every
    /// missing rank is named, not only the first. On failure the others are told why and
    /// the connections are closed: a rendezvous that failed once is not reused.
    fn host_collect(&mut self, op: &'static str, tag: u8, deadline: Instant) -> Result<Vec<Frame>> {
        let start = Instant::now();
        let seq = self.seq;
        let peers = match &self.link {
            Link::Host(peers) => peers,
            Link::Broken(reason) => {
                return Err(RendezvousError::Aborted { rank: 0, addr: self.addr.clone(), reason: reason.clone() })
            }
            Link::Member(_) => unreachable!("only rank 0 collects"),
        };
        let results: Vec<io::Result<Frame>> = std::thread::scope(|s| {
            let reads: Vec<_> = peers.iter().map(|p| s.spawn(move || read_frame(&p.stream, deadline))).collect();
            reads.into_iter().map(|h| h.join().expect("rendezvous reader thread")).collect()
        });
        let (mut missing, mut lost, mut frames) = (Vec::new(), Vec::new(), Vec::new());
        let mut mismatch = None;
        for (p, r) in peers.iter().zip(results) {
            match r {
                Ok(f) if f.tag == tag && f.seq == seq => frames.push(f),
                Ok(f) => mismatch = Some((p.rank, f.tag, f.seq)),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => missing.push(p.rank),
                Err(_) => lost.push(p.rank),
            }
        }
        let err = if let Some((rank, got, got_seq)) = mismatch {
            RendezvousError::Protocol {
                peer: format!("rank {rank}"),
                addr: self.addr.clone(),
                what: format!(
                    "sent message {got} #{got_seq} while rank 0 was in {op} #{seq}: the ranks ran different steps"
                ),
            }
        } else if missing.is_empty() && lost.is_empty() {
            return Ok(frames);
        } else {
            let waited_s = start.elapsed().as_secs_f64();
            let (missing, lost) = (RankList(missing), RankList(lost));
            RendezvousError::PeersFailed { addr: self.addr.clone(), op, waited_s, missing, lost }
        };
        let reason = err.to_string();
        let Link::Host(peers) = std::mem::replace(&mut self.link, Link::Broken(reason)) else { unreachable!() };
        Err(abort(peers.into_iter().map(|p| p.stream), err))
    }
}

fn encode_ids(ids: &[Vec<u8>]) -> Vec<u8> {
    let mut body = (ids.len() as u32).to_le_bytes().to_vec();
    for id in ids {
        body.extend_from_slice(&(id.len() as u32).to_le_bytes());
        body.extend_from_slice(id);
    }
    body
}

/// The ids of an `IDS` body, or `None` when it is truncated or has bytes left over.
fn decode_ids(body: &[u8]) -> Option<Vec<Vec<u8>>> {
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let head = rest.get(..n)?;
        *rest = &rest[n..];
        Some(head)
    }
    fn word(rest: &mut &[u8]) -> Option<usize> {
        Some(u32::from_le_bytes(take(rest, 4)?.try_into().ok()?) as usize)
    }
    let mut rest = body;
    let count = word(&mut rest)?;
    let mut ids = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let len = word(&mut rest)?;
        ids.push(take(&mut rest, len)?.to_vec());
    }
    rest.is_empty().then_some(ids)
}

fn write_frame(stream: &TcpStream, tag: u8, seq: u32, body: &[u8], deadline: Instant) -> io::Result<()> {
    let mut frame = Vec::with_capacity(9 + body.len());
    frame.push(tag);
    frame.extend_from_slice(&seq.to_le_bytes());
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(body);
    write_deadline(stream, &frame, deadline)
}

fn write_deadline(stream: &TcpStream, bytes: &[u8], deadline: Instant) -> io::Result<()> {
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    stream.set_write_timeout(Some(left))?;
    let mut s = stream;
    s.write_all(bytes)
}

fn read_frame(stream: &TcpStream, deadline: Instant) -> io::Result<Frame> {
    let mut head = [0u8; 9];
    read_full(stream, &mut head, deadline)?;
    let len = u32::from_le_bytes(head[5..9].try_into().expect("4 bytes")) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a {len}-byte message exceeds the 64 MiB limit"),
        ));
    }
    let mut body = vec![0u8; len];
    read_full(stream, &mut body, deadline)?;
    Ok(Frame { tag: head[0], seq: u32::from_le_bytes(head[1..5].try_into().expect("4 bytes")), body })
}

/// `read_exact` that gives up at `deadline` (a socket read timeout alone restarts on every
/// partial read, so a trickling peer could stretch it).
fn read_full(mut stream: &TcpStream, buf: &mut [u8], deadline: Instant) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf[done..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => done += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_lists_round_trip_and_truncation_is_caught() {
        let ids = vec![vec![7u8; NCCL_ID_BYTES], vec![1, 2, 3]];
        let body = encode_ids(&ids);
        assert_eq!(decode_ids(&body), Some(ids));
        assert_eq!(decode_ids(&body[..body.len() - 1]), None);
        assert_eq!(decode_ids(&[]), None);
    }

    #[test]
    fn rank_lists_read_as_a_sentence() {
        assert_eq!(RankList(vec![1, 3]).to_string(), "1, 3");
        assert_eq!(RankList(vec![]).to_string(), "none");
    }
}
