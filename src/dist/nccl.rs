//! NCCL communicators for the CUDA engine, one process per GPU.
//!
//! The world communicator comes from the one NCCL id that the rendezvous hands out
//! (`ncclCommInitRank`, what cudarc's `Comm::from_rank` wraps); the sub-groups a deployment
//! needs (attention-TP, DP peers, expert-parallel) are split from it with `ncclCommSplit`.
//! Splitting rather than one id per group: one rendezvous round whatever the deployment,
//! no ids to pair with groups, and NCCL builds the sub-communicators from the parent's
//! topology itself. A group that spans the whole world reuses the world communicator.
//!
//! The handles are raw `ncclComm_t` rather than cudarc's `Comm`, whose handle is private:
//! the split and the collectives on raw device addresses (the engine's arena) need it.
//! Every collective only enqueues on the engine's stream, never syncs the host, so a
//! forward with its collectives can be captured into a CUDA graph (NCCL >= 2.9).

use std::ffi::CStr;
use std::sync::{Arc, Once};

use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};
use cudarc::nccl::{result, sys};
use thiserror::Error;

use super::comm_model::CommOp;
use super::rendezvous::NCCL_ID_BYTES;
use crate::plan::{DType, Group, RankLayout};

#[derive(Debug, Error)]
pub enum NcclError {
    #[error("libnccl.so.2 could not be loaded: runs on NCCL need it; install NCCL 2.28 or newer (e.g. the nvidia-nccl-cu13 wheel) and put its lib directory on LD_LIBRARY_PATH")]
    LibraryMissing,
    #[error("rank {rank}: {call} failed: {code} ({text}); set NCCL_DEBUG=INFO for NCCL's own account")]
    Call { rank: usize, call: &'static str, code: String, text: String },
    #[error("rank {1}: CUDA failed while setting up NCCL: {0}")]
    Cuda(cudarc::driver::DriverError, usize),
    #[error("rank {rank}: the rendezvous served {count} NCCL id(s) of {lens:?} bytes where one {NCCL_ID_BYTES}-byte id was expected; run the same fwdbench build on every rank")]
    BadId { rank: usize, count: usize, lens: Vec<usize> },
    #[error("rank {rank}: NCCL_NVLS_ENABLE is `{value}`, but NVLink multicast must stay off on these machines; unset it or set it to 0")]
    NvlsEnabled { rank: usize, value: String },
    #[error("rank {rank}: {op} of {count} {dtype:?} elements over {ranks} ranks {what}")]
    Buffer { rank: usize, op: &'static str, count: usize, dtype: DType, ranks: usize, what: String },
}

type Result<T> = std::result::Result<T, NcclError>;

/// The groups a deployment communicates over: the plan's groups plus expert parallelism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommGroup {
    Plan(Group),
    /// One rank per expert shard, with the same rank inside the MoE tensor-parallel group
    /// (DeepEP-style dispatch and combine run over it).
    Expert,
}

impl CommGroup {
    pub const ALL: [CommGroup; 4] = [
        CommGroup::Plan(Group::World),
        CommGroup::Plan(Group::AttnTp),
        CommGroup::Plan(Group::DpPeers),
        CommGroup::Expert,
    ];

    /// Global ranks of this rank's group, in rank order.
    pub fn members(self, layout: &RankLayout) -> Vec<usize> {
        match self {
            CommGroup::Plan(g) => layout.group_ranks(g),
            CommGroup::Expert => (0..layout.ep).map(|e| e * layout.moe_tp + layout.moe_tp_rank()).collect(),
        }
    }

    /// `ncclCommSplit`'s (color, key): the group's lowest rank names it, the position in
    /// it orders it, so NCCL's group rank equals the index in `members`.
    pub fn split_color_key(self, layout: &RankLayout) -> (i32, i32) {
        let members = self.members(layout);
        let key = members.iter().position(|&r| r == layout.rank).expect("a rank is in its own group");
        (members[0] as i32, key as i32)
    }

    /// Every rank's group: equal for two groups only if they partition the world alike,
    /// which every rank computes the same way (the split is collective, so the choice to
    /// skip one must be the same on all ranks).
    fn partition(self, layout: &RankLayout) -> Vec<Vec<usize>> {
        (0..layout.world).map(|rank| self.members(&RankLayout { rank, ..*layout })).collect()
    }
}

impl From<Group> for CommGroup {
    fn from(g: Group) -> CommGroup {
        CommGroup::Plan(g)
    }
}

/// NCCL's version code as (major, minor, patch): `X*10000 + Y*100 + Z` from 2.9 on,
/// `X*1000 + Y*100 + Z` before.
pub fn decode_version(code: i32) -> (i32, i32, i32) {
    if code >= 10000 {
        (code / 10000, code % 10000 / 100, code % 100)
    } else {
        (code / 1000, code % 1000 / 100, code % 100)
    }
}

fn require_library() -> Result<()> {
    // SAFETY: probing only dlopens the library.
    if unsafe { sys::is_culib_present() } {
        Ok(())
    } else {
        Err(NcclError::LibraryMissing)
    }
}

fn nccl_error(rank: usize, call: &'static str, result::NcclError(code): result::NcclError) -> NcclError {
    // SAFETY: NCCL returns a static NUL-terminated string for every result code.
    let text = unsafe { CStr::from_ptr(sys::ncclGetErrorString(code)) }.to_string_lossy().into_owned();
    NcclError::Call { rank, call, code: format!("{code:?}"), text }
}

fn check(rank: usize, call: &'static str, r: std::result::Result<result::NcclStatus, result::NcclError>) -> Result<()> {
    r.map(|_| ()).map_err(|e| nccl_error(rank, call, e))
}

/// NVLink multicast (NVLS) can take a shared host's GPUs out of service, so it stays off:
/// set to 0 when absent (before NCCL reads it at init), refused when set otherwise.
pub fn ensure_nvls_disabled(rank: usize) -> Result<()> {
    match std::env::var(NVLS_ENV) {
        Ok(v) if v.trim() == "0" => Ok(()),
        Ok(v) => Err(NcclError::NvlsEnabled { rank, value: v }),
        Err(_) => {
            std::env::set_var(NVLS_ENV, "0");
            Ok(())
        }
    }
}

pub const NVLS_ENV: &str = "NCCL_NVLS_ENABLE";

/// A fresh NCCL unique id for rank 0 to serve (checks that libnccl loads first).
pub fn unique_id() -> Result<Vec<u8>> {
    require_library()?;
    let id = result::get_uniqueid().map_err(|e| nccl_error(0, "ncclGetUniqueId", e))?;
    Ok(id.internal.iter().map(|&c| c as u8).collect())
}

fn log_version_once() {
    static LOGGED: Once = Once::new();
    LOGGED.call_once(|| match result::get_nccl_version() {
        Ok(code) => {
            let (major, minor, patch) = decode_version(code);
            eprintln!("NCCL {major}.{minor}.{patch}");
        }
        Err(e) => eprintln!("NCCL version unknown (ncclGetVersion failed: {:?})", e.0),
    });
}

fn nccl_dtype(dtype: DType) -> sys::ncclDataType_t {
    match dtype {
        DType::BF16 => sys::ncclDataType_t::ncclBfloat16,
        DType::F32 => sys::ncclDataType_t::ncclFloat32,
        DType::I32 => sys::ncclDataType_t::ncclInt32,
        DType::F8E4M3 => sys::ncclDataType_t::ncclUint8,
    }
}

/// (send, receive) buffer bytes of `op` with `count` elements per rank (all-reduce: the
/// whole buffer; all-to-all: per peer), over `ranks` ranks.
pub fn buffer_bytes(op: CommOp, count: usize, dtype: DType, ranks: usize) -> Option<(usize, usize)> {
    let piece = count.checked_mul(dtype.bytes())?;
    let whole = piece.checked_mul(ranks)?;
    Some(match op {
        CommOp::AllReduce => (piece, piece),
        CommOp::AllGather => (piece, whole),
        CommOp::ReduceScatter => (whole, piece),
        CommOp::AllToAll => (whole, whole),
    })
}

/// Checks the addresses of one collective: non-null, sizes that fit, and buffers that are
/// either disjoint or placed the way NCCL's in-place forms expect (all-reduce: the same
/// buffer; all-gather: send at this rank's slot of recv; reduce-scatter: recv at this
/// rank's slot of send). All-to-all from send/recv pairs cannot run in place.
pub fn check_buffers(
    op: CommOp,
    send: u64,
    recv: u64,
    count: usize,
    dtype: DType,
    ranks: usize,
    rank: usize,
) -> Result<()> {
    let fail = |what: String| Err(NcclError::Buffer { rank, op: op.name(), count, dtype, ranks, what });
    let Some((send_bytes, recv_bytes)) = buffer_bytes(op, count, dtype, ranks) else {
        return fail("overflows the address space".into());
    };
    if send == 0 || recv == 0 {
        return fail("got a null device address: the plan tensor has no place in the arena".into());
    }
    let piece = (count * dtype.bytes()) as u64;
    let in_place = match op {
        CommOp::AllReduce => send == recv,
        CommOp::AllGather => send == recv + rank as u64 * piece,
        CommOp::ReduceScatter => recv == send + rank as u64 * piece,
        CommOp::AllToAll => false,
    };
    let disjoint = send.saturating_add(send_bytes as u64) <= recv || recv.saturating_add(recv_bytes as u64) <= send;
    if in_place || disjoint || count == 0 {
        Ok(())
    } else {
        fail(format!("has overlapping buffers (send {send:#x} + {send_bytes} B, receive {recv:#x} + {recv_bytes} B) that are not NCCL's in-place layout"))
    }
}

/// One communicator: a raw NCCL handle on the engine's stream.
pub struct NcclComm {
    comm: sys::ncclComm_t,
    /// This rank's index in the group, the group's size, and its global rank (for errors).
    rank: usize,
    size: usize,
    global_rank: usize,
    stream: Arc<CudaStream>,
    /// One f32 that `barrier` all-reduces, and its address.
    barrier_addr: u64,
    _barrier_word: CudaSlice<f32>,
}

impl NcclComm {
    /// Wraps a fresh handle; on failure the handle is aborted, not leaked.
    fn new(
        comm: sys::ncclComm_t,
        rank: usize,
        size: usize,
        global_rank: usize,
        stream: &Arc<CudaStream>,
    ) -> Result<Self> {
        let word = match stream.alloc_zeros::<f32>(1) {
            Ok(word) => word,
            Err(e) => {
                // SAFETY: the handle came from NCCL and is not used again.
                let _ = unsafe { result::comm_abort(comm) };
                return Err(NcclError::Cuda(e, global_rank));
            }
        };
        // The address is taken once, here, so that `barrier` makes no cudarc call that
        // could record events inside a graph capture.
        let barrier_addr = word.device_ptr(stream).0;
        Ok(NcclComm { comm, rank, size, global_rank, stream: stream.clone(), barrier_addr, _barrier_word: word })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }
    pub fn size(&self) -> usize {
        self.size
    }

    fn stream_handle(&self) -> sys::cudaStream_t {
        self.stream.cu_stream() as sys::cudaStream_t
    }

    fn call(&self, name: &'static str, r: std::result::Result<result::NcclStatus, result::NcclError>) -> Result<()> {
        check(self.global_rank, name, r)
    }

    fn validate(&self, op: CommOp, send: u64, recv: u64, count: usize, dtype: DType) -> Result<()> {
        check_buffers(op, send, recv, count, dtype, self.size, self.rank).map_err(|e| match e {
            NcclError::Buffer { op, count, dtype, ranks, what, .. } => {
                NcclError::Buffer { rank: self.global_rank, op, count, dtype, ranks, what }
            }
            other => other,
        })
    }

    /// Sums `count` elements at `buf` over the group, in place.
    pub fn all_reduce_in_place(&self, buf: u64, count: usize, dtype: DType) -> Result<()> {
        self.validate(CommOp::AllReduce, buf, buf, count, dtype)?;
        let p = buf as *mut std::ffi::c_void;
        // SAFETY: the caller's arena holds `count` elements at `buf` on this stream's device.
        let r = unsafe {
            result::all_reduce(
                p,
                p,
                count,
                nccl_dtype(dtype),
                sys::ncclRedOp_t::ncclSum,
                self.comm,
                self.stream_handle(),
            )
        };
        self.call("ncclAllReduce", r)
    }

    /// `recv` = every rank's `count` elements at `send`, in group-rank order.
    pub fn all_gather(&self, send: u64, recv: u64, count: usize, dtype: DType) -> Result<()> {
        self.validate(CommOp::AllGather, send, recv, count, dtype)?;
        let (s, r) = (send as *const std::ffi::c_void, recv as *mut std::ffi::c_void);
        // SAFETY: sizes and placement checked above; the memory is the caller's arena.
        let res = unsafe { result::all_gather(s, r, count, nccl_dtype(dtype), self.comm, self.stream_handle()) };
        self.call("ncclAllGather", res)
    }

    /// Sums the group's `size * count` elements at `send`; this rank keeps its block of
    /// `count` at `recv`.
    pub fn reduce_scatter(&self, send: u64, recv: u64, count: usize, dtype: DType) -> Result<()> {
        self.validate(CommOp::ReduceScatter, send, recv, count, dtype)?;
        let (s, r) = (send as *const std::ffi::c_void, recv as *mut std::ffi::c_void);
        let op = sys::ncclRedOp_t::ncclSum;
        // SAFETY: as for all_gather.
        let res =
            unsafe { result::reduce_scatter(s, r, count, nccl_dtype(dtype), op, self.comm, self.stream_handle()) };
        self.call("ncclReduceScatter", res)
    }

    /// Block `p` of `send` (`count` elements) goes to group rank `p`, which stores it as
    /// block `self.rank` of its `recv`. Grouped send/recv pairs: one NCCL launch, and no
    /// dependence on `ncclAlltoAll` (NCCL 2.28+).
    pub fn all_to_all(&self, send: u64, recv: u64, count: usize, dtype: DType) -> Result<()> {
        self.validate(CommOp::AllToAll, send, recv, count, dtype)?;
        let block = (count * dtype.bytes()) as u64;
        self.call("ncclGroupStart", result::group_start())?;
        let mut first_err = Ok(());
        for peer in 0..self.size {
            let (s, r) = ((send + peer as u64 * block) as *const _, (recv + peer as u64 * block) as *mut _);
            let (t, st) = (nccl_dtype(dtype), self.stream_handle());
            // SAFETY: block `peer` lies inside the buffers checked above.
            let sent = unsafe { result::send(s, count, t, peer as i32, self.comm, st) };
            let got = unsafe { result::recv(r, count, t, peer as i32, self.comm, st) };
            if first_err.is_ok() {
                first_err = self.call("ncclSend", sent).and_then(|_| self.call("ncclRecv", got));
            }
        }
        // The group is closed even after an error so that NCCL's group state is not left open.
        let end = self.call("ncclGroupEnd", result::group_end());
        first_err.and(end)
    }

    /// A one-element all-reduce: on the stream it completes only after every rank's
    /// earlier work was enqueued and reached it.
    pub fn barrier(&self) -> Result<()> {
        self.all_reduce_in_place(self.barrier_addr, 1, DType::F32)
    }
}

impl Drop for NcclComm {
    fn drop(&mut self) {
        // Abort, not finalize + destroy: it never blocks on peers, so a failing rank can
        // tear down; a finished run has passed its last barrier, so nothing is in flight.
        // SAFETY: the handle came from NCCL and is dropped once.
        let _ = unsafe { result::comm_abort(self.comm) };
    }
}

/// This rank's communicators: the world and one per `CommGroup`.
pub struct Communicators {
    comms: Vec<NcclComm>,
    /// Index into `comms` for each of `CommGroup::ALL`.
    slot: [usize; 4],
}

impl Communicators {
    /// Builds the world communicator from the rendezvous' `ids` and splits the groups of
    /// `layout` from it. Collective: every rank calls it, with the same layout shape.
    pub fn new(stream: &Arc<CudaStream>, layout: &RankLayout, ids: &[Vec<u8>]) -> Result<Self> {
        let rank = layout.rank;
        require_library()?;
        ensure_nvls_disabled(rank)?;
        log_version_once();
        let [id] = ids else {
            return Err(NcclError::BadId { rank, count: ids.len(), lens: ids.iter().map(Vec::len).collect() });
        };
        let Ok(bytes) = <[u8; NCCL_ID_BYTES]>::try_from(id.as_slice()) else {
            return Err(NcclError::BadId { rank, count: 1, lens: vec![id.len()] });
        };
        let id = sys::ncclUniqueId { internal: bytes.map(|b| b as std::ffi::c_char) };
        // NCCL uses the thread's current device.
        stream.context().bind_to_thread().map_err(|e| NcclError::Cuda(e, rank))?;
        let mut world = std::ptr::null_mut();
        // SAFETY: `world` receives a new handle; rank and size come from a validated layout.
        let r = unsafe { result::comm_init_rank(&mut world, layout.world as i32, id, rank as i32) };
        check(rank, "ncclCommInitRank", r)?;
        let mut comms = vec![NcclComm::new(world, rank, layout.world, rank, stream)?];
        let mut slot = [0; 4];
        let world_partition = CommGroup::Plan(Group::World).partition(layout);
        for (i, group) in CommGroup::ALL.into_iter().enumerate().skip(1) {
            if group.partition(layout) == world_partition {
                continue;
            }
            let (color, key) = group.split_color_key(layout);
            let mut sub = std::ptr::null_mut();
            // SAFETY: splits the live world handle; a null config inherits the parent's.
            let r = unsafe { sys::ncclCommSplit(comms[0].comm, color, key, &mut sub, std::ptr::null_mut()).result() };
            check(rank, "ncclCommSplit", r)?;
            let size = group.members(layout).len();
            comms.push(NcclComm::new(sub, key as usize, size, rank, stream)?);
            slot[i] = comms.len() - 1;
        }
        Ok(Communicators { comms, slot })
    }

    pub fn get(&self, group: CommGroup) -> &NcclComm {
        let i = CommGroup::ALL.iter().position(|g| *g == group).expect("every group is in CommGroup::ALL");
        &self.comms[self.slot[i]]
    }

    pub fn world(&self) -> &NcclComm {
        &self.comms[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::rank_layouts;

    #[test]
    fn split_colors_partition_the_world_into_the_groups() {
        for (tp, ep, dp) in [(1, 1, 1), (8, 1, 1), (8, 8, 1), (8, 8, 8), (8, 8, 2), (16, 16, 1), (8, 2, 4)] {
            let layouts = rank_layouts(tp, ep, dp).unwrap();
            for group in CommGroup::ALL {
                for l in &layouts {
                    let members = group.members(l);
                    let (color, key) = group.split_color_key(l);
                    assert_eq!(members[key as usize], l.rank);
                    // Ranks of one color are exactly this rank's group.
                    let same: Vec<usize> =
                        layouts.iter().filter(|m| group.split_color_key(m).0 == color).map(|m| m.rank).collect();
                    assert_eq!(same, members, "tp{tp} ep{ep} dp{dp} {group:?} rank {}", l.rank);
                }
            }
        }
    }

    #[test]
    fn expert_groups_hold_one_rank_per_expert_shard() {
        let l = rank_layouts(8, 4, 1).unwrap();
        // moe_tp = 2: ranks 0,1 share expert shard 0; rank 5 is MoE-TP rank 1 of shard 2.
        assert_eq!(CommGroup::Expert.members(&l[5]), vec![1, 3, 5, 7]);
        assert_eq!(CommGroup::Expert.members(&rank_layouts(8, 8, 8).unwrap()[3]), (0..8).collect::<Vec<_>>());
        // Groups that span the world reuse the world communicator: tp8ep8 has no split
        // for attention-TP or experts, and a one-rank DP-peer group per rank.
        let l = &rank_layouts(8, 8, 1).unwrap()[0];
        let world = CommGroup::Plan(Group::World).partition(l);
        assert_eq!(CommGroup::Plan(Group::AttnTp).partition(l), world);
        assert_eq!(CommGroup::Expert.partition(l), world);
        assert_ne!(CommGroup::Plan(Group::DpPeers).partition(l), world);
    }

    #[test]
    fn buffer_bytes_follow_each_collective() {
        let b = |op| buffer_bytes(op, 1024, DType::BF16, 8).unwrap();
        assert_eq!(b(CommOp::AllReduce), (2048, 2048));
        assert_eq!(b(CommOp::AllGather), (2048, 16384));
        assert_eq!(b(CommOp::ReduceScatter), (16384, 2048));
        assert_eq!(b(CommOp::AllToAll), (16384, 16384));
        assert_eq!(buffer_bytes(CommOp::AllGather, usize::MAX / 2, DType::F32, 8), None);
    }

    #[test]
    fn buffers_are_disjoint_or_in_nccl_place() {
        let ok = |op, send, recv| check_buffers(op, send, recv, 256, DType::F32, 4, 2).is_ok();
        let base = 0x7000_0000u64;
        assert!(ok(CommOp::AllReduce, base, base));
        assert!(!ok(CommOp::AllReduce, base, base + 4));
        // All-gather in place: rank 2's 1 KiB sits at byte 2048 of the 4 KiB output.
        assert!(ok(CommOp::AllGather, base + 2048, base));
        assert!(!ok(CommOp::AllGather, base + 1024, base));
        assert!(ok(CommOp::AllGather, base + 4096, base));
        assert!(ok(CommOp::ReduceScatter, base, base + 2048));
        assert!(!ok(CommOp::ReduceScatter, base, base + 1024));
        assert!(!ok(CommOp::AllToAll, base, base));
        assert!(ok(CommOp::AllToAll, base, base + 4096));
        let e = check_buffers(CommOp::AllGather, 0, base, 256, DType::BF16, 4, 2).unwrap_err().to_string();
        assert!(e.starts_with("rank 2: all_gather of 256 BF16 elements over 4 ranks got a null device address"), "{e}");
    }

    #[test]
    fn version_codes_decode_both_schemes() {
        assert_eq!(decode_version(22809), (2, 28, 9));
        assert_eq!(decode_version(22902), (2, 29, 2));
        assert_eq!(decode_version(2804), (2, 8, 4));
    }

    #[test]
    fn a_missing_library_is_a_sentence_not_a_panic() {
        match unique_id() {
            Ok(id) => assert_eq!(id.len(), NCCL_ID_BYTES),
            Err(e @ NcclError::LibraryMissing) => assert!(e.to_string().contains("LD_LIBRARY_PATH")),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn nvlink_multicast_stays_off() {
        // The only test that touches this variable.
        std::env::set_var(NVLS_ENV, "1");
        let e = ensure_nvls_disabled(3).unwrap_err().to_string();
        assert!(e.starts_with("rank 3: NCCL_NVLS_ENABLE is `1`"), "{e}");
        std::env::remove_var(NVLS_ENV);
        ensure_nvls_disabled(3).unwrap();
        assert_eq!(std::env::var(NVLS_ENV).unwrap(), "0");
        ensure_nvls_disabled(3).unwrap();
    }
}
