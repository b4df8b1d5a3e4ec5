//! The TCP rendezvous over loopback: rank threads, rank processes (this test binary
//! re-executed as one rank), and the failures a user can cause, each a clear error well
//! within its timeout.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use fwdbench::dist::rendezvous::{join, Host, RendezvousError, NCCL_ID_BYTES, TAG_IDS};

const LONG: Duration = Duration::from_secs(20);
const SHORT: Duration = Duration::from_millis(400);

/// Set in a child process: the rank it plays, and rank 0's address and the world size.
const ENV_RANK: &str = "FWDBENCH_RDZV_TEST_RANK";
const ENV_ADDR: &str = "FWDBENCH_RDZV_TEST_ADDR";
const ENV_WORLD: &str = "FWDBENCH_RDZV_TEST_WORLD";

fn test_id(seed: u8) -> Vec<u8> {
    (0..NCCL_ID_BYTES).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
}

fn loopback() -> (Host, String) {
    let host = Host::bind("127.0.0.1:0").unwrap();
    let addr = host.local_addr().to_string();
    (host, addr)
}

#[test]
fn rank_threads_get_the_ids_then_gather_and_barrier() {
    let world = 4;
    let (host, addr) = loopback();
    let ids = vec![test_id(1), test_id(2)];
    let gathered = std::thread::scope(|s| {
        for rank in 1..world {
            let addr = addr.clone();
            let ids = ids.clone();
            s.spawn(move || {
                let (mut r, got) = join(&addr, world, rank, LONG).unwrap();
                assert_eq!(got, ids);
                assert_eq!((r.rank(), r.world()), (rank, world));
                assert_eq!(r.gather(format!("rank {rank}").as_bytes(), LONG).unwrap(), None);
                r.barrier(LONG).unwrap();
                r.barrier(LONG).unwrap();
            });
        }
        let mut r = host.serve(world, &ids, LONG).unwrap();
        let gathered = r.gather(b"rank 0", LONG).unwrap().unwrap();
        r.barrier(LONG).unwrap();
        r.barrier(LONG).unwrap();
        gathered
    });
    let texts: Vec<String> = gathered.into_iter().map(|g| String::from_utf8(g).unwrap()).collect();
    assert_eq!(texts, ["rank 0", "rank 1", "rank 2", "rank 3"]);
}

#[test]
fn world_of_one_needs_no_peers() {
    let (host, _) = loopback();
    let mut r = host.serve(1, &[test_id(0)], SHORT).unwrap();
    assert_eq!(r.gather(b"alone", SHORT).unwrap().unwrap(), vec![b"alone".to_vec()]);
    r.barrier(SHORT).unwrap();
}

/// One rank of `rank_processes_...`: does nothing unless the parent set `ENV_RANK`.
#[test]
fn rank_process_worker() {
    let Ok(rank) = std::env::var(ENV_RANK) else { return };
    let rank: usize = rank.parse().unwrap();
    let world: usize = std::env::var(ENV_WORLD).unwrap().parse().unwrap();
    let (mut r, ids) = join(&std::env::var(ENV_ADDR).unwrap(), world, rank, LONG).unwrap();
    assert_eq!(ids, vec![test_id(9)]);
    r.barrier(LONG).unwrap();
    // The last rank reports a failure the way a worker would: as text for rank 0.
    let report =
        if rank == world - 1 { format!("rank {rank} failed: out of memory") } else { format!("rank {rank} ok") };
    r.gather(report.as_bytes(), LONG).unwrap();
    r.barrier(LONG).unwrap();
}

#[test]
fn rank_processes_over_loopback() {
    let world = 3;
    let (host, addr) = loopback();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (1..world)
        .map(|rank| {
            Command::new(&exe)
                .args(["--exact", "rank_process_worker", "--quiet"])
                .env(ENV_RANK, rank.to_string())
                .env(ENV_ADDR, &addr)
                .env(ENV_WORLD, world.to_string())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut r = host.serve(world, &[test_id(9)], LONG).unwrap();
    r.barrier(LONG).unwrap();
    let reports = r.gather(b"rank 0 ok", LONG).unwrap().unwrap();
    r.barrier(LONG).unwrap();
    let reports: Vec<String> = reports.into_iter().map(|g| String::from_utf8(g).unwrap()).collect();
    assert_eq!(reports, ["rank 0 ok", "rank 1 ok", "rank 2 failed: out of memory"]);
    for mut c in children {
        assert!(c.wait().unwrap().success(), "a rank process failed");
    }
}

#[test]
fn a_rank_that_never_shows_up_is_named_and_the_others_hear_why() {
    let (host, addr) = loopback();
    let start = Instant::now();
    let (host_err, member_err) = std::thread::scope(|s| {
        let member = s.spawn(|| join(&addr, 3, 1, LONG).err().unwrap());
        (host.serve(3, &[test_id(0)], SHORT).err().unwrap(), member.join().unwrap())
    });
    assert!(start.elapsed() < Duration::from_secs(3), "took {:?}", start.elapsed());
    let text = host_err.to_string();
    assert!(matches!(host_err, RendezvousError::MissingRanks { .. }), "{text}");
    assert!(text.contains("rank(s) 2 of 3 never joined") && text.contains(&addr), "{text}");
    let text = member_err.to_string();
    assert!(
        matches!(member_err, RendezvousError::Aborted { rank: 1, .. }) && text.contains("rank(s) 2 of 3"),
        "{text}"
    );
}

#[test]
fn rank_zero_unreachable_fails_at_the_deadline() {
    // A port that was free a moment ago and has no listener now.
    let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let start = Instant::now();
    let err = join(&addr, 2, 1, SHORT).err().unwrap();
    assert!(start.elapsed() < Duration::from_secs(3));
    let text = err.to_string();
    assert!(matches!(err, RendezvousError::Unreachable { rank: 1, .. }) && text.contains(&addr), "{text}");
}

#[test]
fn wrong_id_length_is_refused_on_both_sides() {
    let (host, addr) = loopback();
    let err = host.serve(2, &[vec![0u8; 100]], LONG).err().unwrap();
    assert!(matches!(err, RendezvousError::WrongIdLength { rank: 0, len: 100, .. }), "{err}");
    assert!(err.to_string().contains("100-byte NCCL id") && err.to_string().contains(&addr));

    // A rank 0 from another build that serves a 64-byte id (wire format: rendezvous.rs).
    let fake = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = fake.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        let (mut s, _) = fake.accept().unwrap();
        let mut hello = [0u8; 20];
        s.read_exact(&mut hello).unwrap();
        let mut body = 1u32.to_le_bytes().to_vec();
        body.extend_from_slice(&64u32.to_le_bytes());
        body.extend_from_slice(&[0u8; 64]);
        let mut frame = vec![TAG_IDS];
        frame.extend_from_slice(&0u32.to_le_bytes());
        frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
        frame.extend_from_slice(&body);
        s.write_all(&frame).unwrap();
    });
    let err = join(&addr, 2, 1, LONG).err().unwrap();
    server.join().unwrap();
    assert!(matches!(err, RendezvousError::WrongIdLength { rank: 1, len: 64, .. }), "{err}");
}

#[test]
fn world_size_mismatch_fails_both_ranks() {
    let (host, addr) = loopback();
    let (host_err, member_err) = std::thread::scope(|s| {
        let member = s.spawn(|| join(&addr, 4, 1, LONG).err().unwrap());
        (host.serve(2, &[test_id(0)], LONG).err().unwrap(), member.join().unwrap())
    });
    assert!(matches!(host_err, RendezvousError::WorldMismatch { rank: 1, theirs: 4, ours: 2, .. }), "{host_err}");
    assert!(member_err.to_string().contains("world of 4 ranks but rank 0"), "{member_err}");
}

#[test]
fn duplicate_rank_is_refused() {
    let (host, addr) = loopback();
    let err = std::thread::scope(|s| {
        let a = s.spawn(|| join(&addr, 3, 1, LONG));
        let b = s.spawn(|| join(&addr, 3, 1, LONG));
        let err = host.serve(3, &[test_id(0)], LONG).err().unwrap();
        assert!(a.join().unwrap().is_err() && b.join().unwrap().is_err());
        err
    });
    assert!(matches!(err, RendezvousError::DuplicateRank { rank: 1, .. }), "{err}");
}

#[test]
fn barrier_names_a_stalled_rank_and_a_crashed_one() {
    let (host, addr) = loopback();
    let start = Instant::now();
    let err = std::thread::scope(|s| {
        let stalled = s.spawn(|| {
            let (r, _) = join(&addr, 3, 1, LONG).unwrap();
            // Never enters the barrier; keeps the connection until rank 0 has given up.
            std::thread::sleep(SHORT * 3);
            drop(r);
        });
        let crashed = s.spawn(|| drop(join(&addr, 3, 2, LONG).unwrap()));
        let mut r = host.serve(3, &[test_id(0)], LONG).unwrap();
        crashed.join().unwrap();
        let err = r.barrier(SHORT).err().unwrap();
        // A failed rendezvous stays failed.
        assert!(matches!(r.gather(b"", SHORT), Err(RendezvousError::Aborted { rank: 0, .. })));
        stalled.join().unwrap();
        err
    });
    assert!(start.elapsed() < Duration::from_secs(5));
    let text = err.to_string();
    assert!(text.contains("rank(s) 1 did not arrive and rank(s) 2 disconnected"), "{text}");
}

#[test]
fn ranks_running_different_steps_are_caught() {
    let (host, addr) = loopback();
    let err = std::thread::scope(|s| {
        let member = s.spawn(|| {
            let (mut r, _) = join(&addr, 2, 1, LONG).unwrap();
            r.gather(b"early", LONG).unwrap();
            r.barrier(LONG).err().unwrap()
        });
        let mut r = host.serve(2, &[test_id(0)], LONG).unwrap();
        let err = r.barrier(LONG).err().unwrap();
        assert!(matches!(member.join().unwrap(), RendezvousError::Aborted { rank: 1, .. }));
        err
    });
    assert!(err.to_string().contains("while rank 0 was in barrier #1: the ranks ran different steps"), "{err}");
}
